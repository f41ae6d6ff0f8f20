"""Issue 9 items 7 and 8: logging through `logging.getLogger("nes...")` (boot, each recovery
decision, halts with reason and high-watermark, seal), and the crate's lifecycle topics
`run.lifecycle.RunStarted` / `run.lifecycle.RunEnded` (recovery still recognises RunEnded, and
files written with the old RunStarted topic still recover and read). Real writer processes and
LMDB files."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from nes import (
    EntryDraft,
    EventStoreConfig,
    EventStoreLifecycle,
    EventStoreReader,
    EventStoreWriter,
    LmdbBackend,
    RunIdentity,
    RunManifest,
    RunStatus,
    WriterConfig,
    WriterDied,
    recover_predecessors,
)
from nes.backend.lmdb import read_manifest
from nes.recovery import RUN_ENDED_TOPIC, RUN_ENDED_TYPE, RUN_STARTED_TOPIC, RUN_STARTED_TYPE

INSTANCE = "logs"
DRAFT = EntryDraft("orders.submit", "SubmitOrder", b"x" * 32, 7)


def config(base: Path) -> EventStoreConfig:
    writer = WriterConfig(ring_bytes=1 << 16, max_record_bytes=1 << 12)
    return EventStoreConfig(base_dir=str(base), identity=RunIdentity(INSTANCE), writer=writer)


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[str]:
    return [f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records if r.levelno >= level]


def crashed_run(base: Path, extra: list[EntryDraft] = ()) -> tuple[str, int]:  # type: ignore[assignment]
    """A run left Running as a crash leaves it: returns (run_id, durable high-watermark)."""
    session = EventStoreLifecycle(config(base)).open()
    seq = session.submit(DRAFT)
    for draft in extra:
        seq = session.submit(draft)
    assert session.wait_durable(seq, 10.0)
    session.abandon(wait_s=10.0)
    return session.run_id, seq


# ---- item 8: lifecycle topics ------------------------------------------------------------------
def test_a_run_starts_with_run_lifecycle_run_started_and_ends_with_run_lifecycle_run_ended(tmp_path: Path) -> None:
    assert (RUN_STARTED_TOPIC, RUN_STARTED_TYPE) == ("run.lifecycle.RunStarted", "RunStarted")
    assert (RUN_ENDED_TOPIC, RUN_ENDED_TYPE) == ("run.lifecycle.RunEnded", "RunEnded")
    with EventStoreLifecycle(config(tmp_path)).open() as session:
        assert session.wait_durable(session.submit(DRAFT), 10.0)
    with EventStoreReader(LmdbBackend.open_sealed_file(session.path)) as reader:
        entries = list(reader.scan_range(1, reader.high_watermark()))
    assert [(e.topic, e.payload_type) for e in entries] == [
        ("run.lifecycle.RunStarted", "RunStarted"),
        ("orders.submit", "SubmitOrder"),
        ("run.lifecycle.RunEnded", "RunEnded"),
    ]


def test_recovery_seals_ended_a_crashed_run_whose_durable_tail_is_run_ended(tmp_path: Path) -> None:
    run_id, hw = crashed_run(tmp_path, [EntryDraft(RUN_ENDED_TOPIC, RUN_ENDED_TYPE, b"", 9)])
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert [(r.run_id, r.status, r.high_watermark) for r in outcome.recovered] == [(run_id, RunStatus.Ended, hw)]
    assert outcome.parent_run_id is None  # an Ended run is not a crashed parent


def test_a_file_with_the_old_run_started_topic_recovers_and_reads(tmp_path: Path) -> None:
    manifest = RunManifest(run_id="1700000000-0000abcd", instance_id=INSTANCE, start_ts_init=1)
    writer = EventStoreWriter.spawn(tmp_path, manifest, config(tmp_path).writer)
    writer.submit(EntryDraft("event_store.run_started", "RunStarted", b"", 1))  # what nes < 0.1.0 wrote
    writer.submit(DRAFT)
    assert writer.wait_durable(writer.submit(EntryDraft(RUN_ENDED_TOPIC, RUN_ENDED_TYPE, b"", 9)), 10.0)
    writer.abandon(10.0)
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert [(r.status, r.high_watermark) for r in outcome.recovered] == [(RunStatus.Ended, 3)]
    with EventStoreReader(LmdbBackend.open_sealed_file(tmp_path / INSTANCE / f"{manifest.run_id}.lmdb")) as reader:
        assert reader.get(1).topic == "event_store.run_started"  # type: ignore[union-attr]


# ---- item 7: logging ---------------------------------------------------------------------------
def test_boot_recovery_decision_and_seal_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    crashed_id, crashed_hw = crashed_run(tmp_path)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="nes")
    with EventStoreLifecycle(config(tmp_path)).open() as session:
        pass
    lines = messages(caplog)
    assert f"nes.kernel INFO boot: instance {INSTANCE} in {tmp_path}" in lines
    assert (
        f"nes.kernel WARNING recovery: sealed run {crashed_id} CrashedRecovered (clean tail without RunEnded) "
        f"[high-watermark {crashed_hw}]" in lines
    )
    assert f"nes.kernel INFO boot: 1 run files swept, 1 recovered, parent run {crashed_id}" in lines
    assert f"nes.kernel INFO boot: run {session.run_id} open, RunStarted durable at seq 1, file {session.path}" in lines
    assert f"nes.kernel INFO run {session.run_id} sealed Ended [high-watermark 2] at {session.path}" in lines


def test_a_damaged_predecessor_is_logged_as_quarantined(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import lmdb

    from nes.codec import seq_key

    crashed_id, _ = crashed_run(tmp_path)
    env = lmdb.open(str(tmp_path / INSTANCE / f"{crashed_id}.lmdb"), subdir=False, max_dbs=16, lock=False)
    with env.begin(write=True) as txn:
        entries = env.open_db(b"entries", txn=txn, create=False)
        value = bytearray(txn.get(seq_key(2), db=entries))
        value[-3] ^= 0xFF
        txn.put(seq_key(2), bytes(value), db=entries)
    env.close()
    caplog.set_level(logging.INFO, logger="nes")
    recover_predecessors(tmp_path, INSTANCE)
    assert any(
        line.startswith(f"nes.kernel WARNING recovery: sealed run {crashed_id} Quarantined (damaged tail)")
        for line in messages(caplog)
    ), messages(caplog)


def test_a_writer_that_dies_without_a_halt_hook_is_logged_with_reason_and_high_watermark(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nes")
    manifest = RunManifest(run_id="1700000000-0000abcd", instance_id=INSTANCE, start_ts_init=1)
    writer = EventStoreWriter.spawn(tmp_path, manifest, config(tmp_path).writer)  # no halt hook
    try:
        assert writer.wait_durable(writer.submit(DRAFT), 10.0)
        os.kill(writer.writer_pid, signal.SIGKILL)  # type: ignore[arg-type]
        assert writer._writer_exited.wait(15.0)
    finally:
        writer.abandon(5.0)
    assert isinstance(writer.halt_reason, WriterDied)
    halts = [r for r in caplog.records if r.name == "nes.writer" and r.levelno == logging.ERROR]
    assert len(halts) == 1
    text = halts[0].getMessage()
    assert text.startswith("writer halted (WriterDied): writer died: control channel EOF")
    assert text.endswith("[high-watermark 1]")
    assert read_manifest(tmp_path / INSTANCE / f"{manifest.run_id}.lmdb").status is RunStatus.Running


def test_a_halted_session_close_is_logged_as_left_for_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nes")
    session = EventStoreLifecycle(config(tmp_path)).open()
    os.kill(session.writer.writer_pid, signal.SIGKILL)  # type: ignore[arg-type]
    assert session.writer._writer_exited.wait(15.0)
    assert session.close() is None
    assert f"nes.kernel WARNING run {session.run_id} halted: left Running for the next boot's recovery" in messages(
        caplog
    )
