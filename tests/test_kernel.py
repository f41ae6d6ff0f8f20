"""The run lifecycle with real LMDB run files and real writer / recovery worker processes.

Boot on an empty directory, close and context-manager exit, the recovery matrix over files left
behind by real sessions (then damaged with py-lmdb), parent selection and replay_from, a file
that cannot be opened, the RunStarted timeout, re-open in one lifecycle, and short crash trials
(SIGKILL of the trader or of the writer at a random point, then boot).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import psutil
import pytest

from nes.backend import integrity, layout
from nes.backend.seal_record import seal_record_path
from nes.backend.base import ScanDirection
from nes.backend.lmdb import LmdbBackend, read_manifest
from nes.codec import seq_key
from nes.config import Bounded, EventStoreConfig, RunIdentity
from nes.halt import WriterDied
from nes.ids import RUN_ID_RE
from nes.manifest import RegisteredComponents, RunStatus
from nes.recovery import RUN_STARTED_TOPIC, RUN_STARTED_TYPE
from nes.writer import RUN_ENDED_TOPIC, RUN_ENDED_TYPE, EntryDraft, WriterHalted

from nes.kernel import (
    EventStoreLifecycle,
    EventStoreLifecycleOptions,
    ReplaySourceError,
    RunStartedHalted,
    RunStartedTimeout,
    open_run,
    recover_predecessors,
)
from runfile_helpers import edit_run_file

INSTANCE = "trader-001"
IN_PROCESS = EventStoreLifecycleOptions(in_process=True)


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Every writer / recovery worker a test starts has exited by the end of the test."""
    yield
    deadline = time.monotonic() + 10.0
    while True:
        alive = [c for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for child in alive:
        child.kill()
    assert alive == [], f"processes left running: {[c.cmdline() for c in alive]}"


def make_config(base: Path, **kw) -> EventStoreConfig:
    identity = kw.pop("identity", None) or RunIdentity(
        instance_id=INSTANCE,
        binary_hash="bin-abc",
        package_versions={"nes": "0.1.0", "msgspec": "0.18"},
        feature_flags=["fast-path"],
        config_hash="cfg-1",
        seed=42,
    )
    return EventStoreConfig(base_dir=str(base), identity=identity, **kw)


def draft(i: int) -> EntryDraft:
    return EntryDraft("exec.event.OrderFilled", "OrderFilled", b"fill-%06d" % i, 1_000 + i)


def run_files(base: Path) -> list[Path]:
    return layout.list_run_files(base, INSTANCE)


def sealed_entries(path: Path) -> list:
    backend = LmdbBackend.open_sealed_file(path)
    try:
        return backend.scan_range(1, backend.high_watermark(), ScanDirection.Forward)
    finally:
        backend.close()


def set_status_running(path: Path) -> None:
    """Put a sealed file's manifest back to Running (with its digest, and without the seal
    record), as if its process had crashed just before the seal."""
    manifest = read_manifest(path)
    running = msgspec.structs.replace(manifest, status=RunStatus.Running, end_ts_init=None, high_watermark=0)
    raw = msgspec.msgpack.encode(running)
    edit_run_file(path, lambda env, txn: (
        txn.put(layout.MANIFEST_KEY, raw, db=env.open_db(layout.DB_MANIFEST, txn=txn)),
        txn.put(integrity.MANIFEST_DIGEST_KEY, integrity.manifest_digest(raw), db=env.open_db(integrity.DB_DIGESTS, txn=txn)),
    ))
    seal_record_path(path).unlink(missing_ok=True)


def leave_running(base: Path, entries: int, *, end: bool = False) -> Path:
    """A real session (writer process) that wrote RunStarted + `entries`; left Running.

    end=True closes it (RunEnded + Ended) and then sets it back to Running. The session boots in
    a staging directory (so its own recovery sweep does not touch `base`) and its file is then
    moved into `base`."""
    stage = base / f"stage-{time.monotonic_ns()}"
    session = open_run(make_config(stage))
    for i in range(entries):
        session.submit(draft(i))
    if entries:
        assert session.wait_durable(entries + 1, 10.0)
    if end:
        assert session.close() == entries + 2
        set_status_running(session.path)
    else:
        session.abandon()
    assert read_manifest(session.path).status is RunStatus.Running
    target = base / INSTANCE / session.path.name
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    session.path.rename(target)
    Path(f"{session.path}-lock").unlink(missing_ok=True)
    return target


# ---- boot, close --------------------------------------------------------------------------------
def test_boot_on_empty_dir_makes_run_started_seq_1_durable(tmp_path):
    components = RegisteredComponents(strategies={"EMACross-001": "ema"}, subscriptions=["BTCUSDT.BINANCE"])
    config = make_config(tmp_path, retention=Bounded(3))
    session = open_run(config, components)
    try:
        assert session.writer.writer_pid is not None  # a real sidecar
        assert session.high_watermark >= 1
        assert session.recovery.recovered == [] and session.recovery.parent_run_id is None
        manifest = read_manifest(session.path)
        assert manifest.status is RunStatus.Running
        assert manifest.instance_id == INSTANCE
        assert manifest.parent_run_id is None
        assert manifest.run_id == session.run_id
        assert session.path == tmp_path / INSTANCE / f"{session.run_id}.lmdb"
        assert "retention=bounded:3" in manifest.feature_flags and "fast-path" in manifest.feature_flags
        assert manifest.binary_hash == "bin-abc" and manifest.config_hash == "cfg-1" and manifest.seed == 42
        assert manifest.crate_versions == "msgspec=0.18,nes=0.1.0"
        assert RUN_ID_RE.fullmatch(manifest.run_id)
        assert manifest.run_id.split("-")[0] == str(manifest.start_ts_init)
        assert manifest.registered_components == components
    finally:
        final = session.close()
    assert final == 2
    entries = sealed_entries(session.path)
    assert [(e.seq, e.topic, e.payload_type) for e in entries] == [
        (1, RUN_STARTED_TOPIC, RUN_STARTED_TYPE),
        (2, RUN_ENDED_TOPIC, RUN_ENDED_TYPE),
    ]
    assert msgspec.msgpack.decode(entries[0].payload, type=RegisteredComponents) == components
    manifest = read_manifest(session.path)
    assert manifest.status is RunStatus.Ended and manifest.high_watermark == 2


def test_close_appends_run_ended_and_seals_ended(tmp_path):
    session = open_run(make_config(tmp_path))
    seqs = [session.submit(draft(i)) for i in range(10)]
    assert seqs == list(range(2, 12))
    assert session.close() == 12
    assert session.closed and session.close() == 12  # idempotent
    manifest = read_manifest(session.path)
    assert manifest.status is RunStatus.Ended and manifest.high_watermark == 12
    assert manifest.end_ts_init is not None
    entries = sealed_entries(session.path)
    assert [e.seq for e in entries] == list(range(1, 13))
    assert entries[-1].topic == RUN_ENDED_TOPIC


def test_context_manager_exit_closes_the_run(tmp_path):
    with open_run(make_config(tmp_path)) as session:
        session.submit(draft(0))
        pid = session.writer.writer_pid
    assert session.closed
    assert read_manifest(session.path).status is RunStatus.Ended
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# ---- recovery matrix ----------------------------------------------------------------------------
def drop_all_entries(path: Path) -> None:
    """As if the writer died before its first commit: no entries, no commit records."""
    def body(env, txn) -> None:  # noqa: ANN001
        txn.drop(env.open_db(layout.DB_ENTRIES, txn=txn), delete=False)
        digests = env.open_db(integrity.DB_DIGESTS, txn=txn)
        for key in [k for k, _ in txn.cursor(digests) if k.startswith(integrity.COMMIT_PREFIX)]:
            txn.delete(key, db=digests)
        for db in layout.INDEX_DBS.values():
            txn.drop(env.open_db(db, txn=txn, dupsort=True, dupfixed=True), delete=False)

    edit_run_file(path, body)


def flip_payload_byte(path: Path, seq: int) -> None:
    def edit(env, txn):  # noqa: ANN001
        db = env.open_db(layout.DB_ENTRIES, txn=txn)
        value = bytearray(txn.get(seq_key(seq), db=db))
        at = value.find(b"fill-")
        assert at > 32, "payload not found in the stored value"
        value[at + 2] ^= 0x01
        txn.put(seq_key(seq), bytes(value), db=db)

    edit_run_file(path, edit)


def delete_entry(path: Path, seq: int) -> None:
    edit_run_file(path, lambda env, txn: txn.delete(seq_key(seq), db=env.open_db(layout.DB_ENTRIES, txn=txn)))


def recovered_status(outcome, path: Path) -> RunStatus:
    run_id = path.name.removesuffix(".lmdb")
    return next(r.status for r in outcome.recovered if r.run_id == run_id)


def test_running_predecessor_without_entries_is_crashed_recovered(tmp_path):
    path = leave_running(tmp_path, 0)
    drop_all_entries(path)
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert recovered_status(outcome, path) is RunStatus.CrashedRecovered
    manifest = read_manifest(path)
    assert manifest.status is RunStatus.CrashedRecovered
    assert manifest.high_watermark == 0 and manifest.end_ts_init is None
    assert outcome.parent_run_id == manifest.run_id


def test_running_predecessor_whose_tail_ends_in_run_ended_is_ended(tmp_path):
    path = leave_running(tmp_path, 3, end=True)
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert recovered_status(outcome, path) is RunStatus.Ended
    manifest = read_manifest(path)
    assert manifest.status is RunStatus.Ended and manifest.high_watermark == 5
    assert outcome.parent_run_id is None  # only a CrashedRecovered run becomes the parent


def test_running_predecessor_with_clean_tail_without_run_ended_is_crashed_recovered(tmp_path):
    path = leave_running(tmp_path, 7)
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert recovered_status(outcome, path) is RunStatus.CrashedRecovered
    manifest = read_manifest(path)
    assert manifest.status is RunStatus.CrashedRecovered and manifest.high_watermark == 8
    assert manifest.end_ts_init is not None
    assert [e.seq for e in sealed_entries(path)] == list(range(1, 9))
    assert outcome.parent_run_id == manifest.run_id


def put_raw_entry(path: Path, key: bytes, value: bytes) -> None:
    edit_run_file(path, lambda env, txn: txn.put(key, value, db=env.open_db(layout.DB_ENTRIES, txn=txn)))


@pytest.mark.parametrize("damage", ["flipped_byte", "gap", "truncated_value", "malformed_key"])
def test_running_predecessor_with_damaged_tail_is_quarantined(tmp_path, damage):
    path = leave_running(tmp_path, 6)
    if damage == "flipped_byte":
        flip_payload_byte(path, 4)
    elif damage == "gap":
        delete_entry(path, 4)
    elif damage == "truncated_value":
        put_raw_entry(path, seq_key(4), b"\x00" * 10)
    else:
        put_raw_entry(path, b"abc", b"\x00" * 100)  # sorts after every 8-byte big-endian seq key
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert recovered_status(outcome, path) is RunStatus.Quarantined
    assert read_manifest(path).status is RunStatus.Quarantined
    assert outcome.parent_run_id is None  # a Quarantined run is never the parent


def test_recovery_is_done_once_and_boot_links_the_newest_crashed_predecessor(tmp_path):
    older = leave_running(tmp_path, 2)
    ended = leave_running(tmp_path, 1, end=True)
    newer = leave_running(tmp_path, 4)
    quarantined = leave_running(tmp_path, 3)
    delete_entry(quarantined, 2)
    with open_run(make_config(tmp_path)) as session:
        statuses = {r.run_id: r.status for r in session.recovery.recovered}
        assert statuses == {
            older.stem: RunStatus.CrashedRecovered,
            ended.stem: RunStatus.Ended,
            newer.stem: RunStatus.CrashedRecovered,
            quarantined.stem: RunStatus.Quarantined,
        }
        assert [r.run_id for r in session.recovery.recovered] == [older.stem, ended.stem, newer.stem, quarantined.stem]
        assert session.recovery.parent_run_id == newer.stem
        assert read_manifest(session.path).parent_run_id == newer.stem
    # Next boot: every predecessor is sealed; nothing recovered, no parent.
    with open_run(make_config(tmp_path)) as again:
        assert again.recovery.recovered == []
        assert read_manifest(again.path).parent_run_id is None


def test_replay_from_run_id_overrides_the_recovered_parent(tmp_path):
    source = leave_running(tmp_path, 2, end=True)
    recover_predecessors(tmp_path, INSTANCE)  # seal it Ended
    crashed = leave_running(tmp_path, 3)
    with open_run(make_config(tmp_path, replay_from_run_id=source.stem)) as session:
        assert [r.run_id for r in session.recovery.recovered] == [crashed.stem]
        assert session.recovery.parent_run_id == source.stem
        assert read_manifest(session.path).parent_run_id == source.stem
    assert read_manifest(crashed).status is RunStatus.CrashedRecovered


def test_missing_replay_source_refuses_boot_and_opens_no_run(tmp_path):
    leave_running(tmp_path, 1)
    before = run_files(tmp_path)
    with pytest.raises(ReplaySourceError, match="not found"):
        open_run(make_config(tmp_path, replay_from_run_id="1700000000000000000-deadbeef"))
    assert run_files(tmp_path) == before


def test_quarantined_replay_source_refuses_boot_and_opens_no_run(tmp_path):
    bad = leave_running(tmp_path, 3)
    flip_payload_byte(bad, 2)
    before = run_files(tmp_path)
    with pytest.raises(ReplaySourceError, match="Quarantined"):
        open_run(make_config(tmp_path, replay_from_run_id=bad.stem))
    assert run_files(tmp_path) == before
    assert read_manifest(bad).status is RunStatus.Quarantined  # the sweep still sealed it


def test_corrupt_sealed_replay_source_is_quarantined_by_its_seal_record_and_opens_no_run(tmp_path):
    """Sealed Ended long ago, damaged since: its bytes no longer match its seal record, so the
    sweep calls it Quarantined (without writing to it) and the boot refuses to replay it."""
    source = leave_running(tmp_path, 3, end=True)
    recover_predecessors(tmp_path, INSTANCE)  # sealed Ended while intact
    flip_payload_byte(source, 2)
    damaged = source.read_bytes()
    before = run_files(tmp_path)
    with pytest.raises(ReplaySourceError, match="is Quarantined"):
        open_run(make_config(tmp_path, replay_from_run_id=source.stem))
    assert run_files(tmp_path) == before
    assert source.read_bytes() == damaged  # read-only: nothing is written to a damaged sealed file


def test_a_sealed_run_without_its_seal_record_gets_one_only_if_it_verifies_clean(tmp_path):
    """A crash between the seal commit and the record leaves a sealed file without one: the
    sweep writes it, but never over damage, which it would certify."""
    intact = leave_running(tmp_path, 3, end=True)
    damaged = leave_running(tmp_path, 3, end=True)
    recover_predecessors(tmp_path, INSTANCE)
    for path in (intact, damaged):
        seal_record_path(path).unlink()
    flip_payload_byte(damaged, 2)
    damaged_bytes = damaged.read_bytes()
    with pytest.raises(ReplaySourceError, match="is Quarantined"):
        open_run(make_config(tmp_path, replay_from_run_id=damaged.stem))
    assert seal_record_path(intact).exists()  # written by that sweep
    assert not seal_record_path(damaged).exists() and damaged.read_bytes() == damaged_bytes


def test_corrupt_sealed_replay_source_with_a_legacy_seal_record_fails_preflight_and_opens_no_run(tmp_path):
    """A version 1 seal record (an older nes) has no file digest, so the sweep has no proof to
    compare: the preflight verifier is what refuses to replay the damaged source."""
    source = leave_running(tmp_path, 3, end=True)
    recover_predecessors(tmp_path, INSTANCE)  # sealed Ended while intact
    record = seal_record_path(source)
    legacy = {k: v for k, v in msgspec.json.decode(record.read_bytes()).items() if not k.startswith("file_")}
    record.write_bytes(msgspec.json.encode({**legacy, "version": 1}))
    flip_payload_byte(source, 2)
    before = run_files(tmp_path)
    with pytest.raises(ReplaySourceError, match="failed verification: corrupt .*findings=1"):
        open_run(make_config(tmp_path, replay_from_run_id=source.stem))
    assert run_files(tmp_path) == before
    assert read_manifest(source).status is RunStatus.Ended  # read-only: not quarantined by us


def test_unopenable_run_file_is_skipped_with_logged_error_and_boot_succeeds(tmp_path, caplog):
    crashed = leave_running(tmp_path, 2)
    garbage = tmp_path / INSTANCE / "1600000000000000000-0badf00d.lmdb"
    garbage.write_bytes(os.urandom(3000))
    caplog.set_level(logging.ERROR, logger="nes.kernel")
    with open_run(make_config(tmp_path)) as session:
        assert session.recovery.parent_run_id == crashed.stem
        assert session.high_watermark >= 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and garbage.name in r.getMessage()]
    assert len(errors) == 1
    assert garbage.exists()  # left alone; retried next boot
    caplog.clear()
    with open_run(make_config(tmp_path)):
        pass
    assert any(garbage.name in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


# ---- RunStarted timeout / halt --------------------------------------------------------------------
def _kill_quietly(pid: int) -> None:
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


def wait_gone(pid: int, deadline_s: float = 10.0) -> bool:
    """True once `pid` has exited (gone or a zombie nobody reaped yet)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def spawned_writers(monkeypatch):
    """Wrap EventStoreWriter.spawn: record each writer's pid and apply `action(pid)` right after
    READY (before the kernel submits RunStarted). Every recorded pid is killed at teardown."""
    from nes.writer import EventStoreWriter

    original = EventStoreWriter.spawn.__func__
    state = {"pids": [], "action": None}

    def spawn(cls, *args, **kwargs):  # noqa: ANN001
        writer = original(cls, *args, **kwargs)
        state["pids"].append(writer.writer_pid)
        if state["action"] is not None:
            state["action"](writer.writer_pid)
        return writer

    monkeypatch.setattr(EventStoreWriter, "spawn", classmethod(spawn))
    try:
        yield state
    finally:
        for pid in state["pids"]:
            _kill_quietly(pid)


def test_run_started_timeout_when_the_writer_cannot_commit(tmp_path, spawned_writers):
    from nes.writer import WriterConfig

    spawned_writers["action"] = lambda pid: os.kill(pid, signal.SIGSTOP)
    config = make_config(tmp_path, run_started_timeout_s=0.3, writer=WriterConfig(close_timeout_s=1.0))
    started = time.monotonic()
    with pytest.raises(RunStartedTimeout, match="RunStarted not durable"):
        open_run(config)
    assert time.monotonic() - started < 10.0
    (pid,) = spawned_writers["pids"]
    assert wait_gone(pid), "the stopped writer was left behind"
    (path,) = run_files(tmp_path)
    assert read_manifest(path).status is RunStatus.Running  # abandoned, not sealed
    # The next boot recovers it: nothing reached the disk, so it is CrashedRecovered and the parent.
    spawned_writers["action"] = None
    with open_run(make_config(tmp_path)) as session:
        assert session.recovery.parent_run_id == path.stem
    assert read_manifest(path).status is RunStatus.CrashedRecovered


def test_writer_killed_before_run_started_is_durable_refuses_boot(tmp_path, spawned_writers):
    spawned_writers["action"] = lambda pid: os.kill(pid, signal.SIGKILL)
    with pytest.raises(RunStartedHalted, match="writer died"):
        open_run(make_config(tmp_path, run_started_timeout_s=2.0))
    (path,) = run_files(tmp_path)
    assert read_manifest(path).status is RunStatus.Running


# ---- one lifecycle, several runs ------------------------------------------------------------------
def test_second_open_seals_the_current_run_first(tmp_path):
    lifecycle = EventStoreLifecycle(make_config(tmp_path))
    first = lifecycle.open()
    first.submit(draft(1))
    second = lifecycle.open()
    try:
        assert first.closed and first.final_high_watermark == 3
        assert read_manifest(first.path).status is RunStatus.Ended
        assert sealed_entries(first.path)[-1].topic == RUN_ENDED_TOPIC
        assert second.recovery.recovered == []  # first was sealed before the sweep
        assert read_manifest(second.path).parent_run_id is None
        assert lifecycle.session is second
    finally:
        assert lifecycle.close() == 2
    assert read_manifest(second.path).status is RunStatus.Ended


def test_a_halt_is_scoped_to_its_run(tmp_path):
    reasons: list = []
    lifecycle = EventStoreLifecycle(make_config(tmp_path), halt=reasons.append)
    first = lifecycle.open()
    first.submit(draft(1))
    assert first.wait_durable(2, 5.0)
    os.kill(first.writer.writer_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while not first.halted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.halted and isinstance(first.halt_reason, WriterDied)
    with pytest.raises(WriterHalted):
        first.submit(draft(2))
    second = lifecycle.open()  # the halted run is not sealed by close; the sweep recovers it
    try:
        assert first.closed and first.final_high_watermark is None
        assert not second.halted and second.halt_reason is None
        assert second.submit(draft(3)) == 2
        assert second.wait_durable(2, 5.0)
        assert [(r.run_id, r.status) for r in second.recovery.recovered] == [(first.run_id, RunStatus.CrashedRecovered)]
        assert second.recovery.parent_run_id == first.run_id
        assert read_manifest(first.path).high_watermark == 2
    finally:
        assert lifecycle.close() == 3
    assert len(reasons) == 1 and isinstance(reasons[0], WriterDied)


def test_in_process_lifecycle_sequencing(tmp_path):
    """Pure sequencing with the writer in-process: boot -> RunStarted 1 -> entries -> RunEnded."""
    lifecycle = EventStoreLifecycle(make_config(tmp_path), options=IN_PROCESS)
    session = lifecycle.open()
    assert session.writer.writer_pid is None and session.high_watermark == 1
    assert [session.submit(draft(i)) for i in range(3)] == [2, 3, 4]
    session.abandon()
    again = lifecycle.open()
    assert again.recovery.parent_run_id == session.run_id
    assert again.close() == 2
    assert read_manifest(session.path).status is RunStatus.CrashedRecovered
    assert [e.seq for e in sealed_entries(session.path)] == [1, 2, 3, 4]


# ---- crash trials ---------------------------------------------------------------------------------
def _load_crash_trials():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "tools" / "crash_trials.py"
    spec = importlib.util.spec_from_file_location("nes_tools_crash_trials", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


crash_trials = _load_crash_trials()


@pytest.mark.parametrize(
    ("seed", "target"),
    [(11, "trader"), (12, "writer"), (13, "trader"), (14, "writer"), (15, "trader")],
)
def test_crash_trial_sigkill_then_boot_loses_no_durable_entry(tmp_path, seed, target):
    import random

    result = crash_trials.run_trial(tmp_path, random.Random(seed), target)
    assert result.problems == []
    assert result.status == "CrashedRecovered"
    assert result.reported_durable >= 1  # at least RunStarted was reported durable
    assert result.on_disk >= result.reported_durable
    assert result.lost_durable_entries == 0
    # Boot succeeded and sealed its own run; nothing is left Running.
    assert all(read_manifest(p).status is not RunStatus.Running for p in layout.list_run_files(tmp_path, crash_trials.INSTANCE_ID))


@pytest.mark.parametrize(("seed", "target"), [(31, "group"), (32, "close"), (33, "close"), (34, "group-boot")])
def test_crash_trial_group_and_close_kills_lose_nothing_leak_nothing_and_keep_the_lineage(tmp_path, seed, target):
    """SIGKILL of the whole process group (after or during the boot) or of the trader / group
    during its close: no confirmed entry lost, no segment left in /dev/shm, lineage intact."""
    import random

    result = crash_trials.run_trial(tmp_path, random.Random(seed), target)
    assert result.problems == [] and result.leaked_segments == 0
    assert result.lost_durable_entries == 0
    files = layout.list_run_files(tmp_path, crash_trials.INSTANCE_ID)
    assert files and all(read_manifest(p).status is not RunStatus.Running for p in files)


@pytest.mark.parametrize("seed", [21])
def test_crash_trial_trader_killed_during_boot_then_boot_succeeds(tmp_path, seed):
    """SIGKILL the trader at a random point of its own boot (sweep, writer spawn, RunStarted):
    the next boot succeeds and seals whatever run file it left CrashedRecovered."""
    import random

    result = crash_trials.run_trial(tmp_path, random.Random(seed), "boot")
    assert result.problems == []
    assert result.status in ("CrashedRecovered", "no-run-file")
    files = layout.list_run_files(tmp_path, crash_trials.INSTANCE_ID)
    assert files and all(read_manifest(p).status is not RunStatus.Running for p in files)


# ---- a live run is never recovered by someone else's boot ------------------------------------------
def test_boot_does_not_seal_a_run_another_live_writer_holds(tmp_path, caplog):
    """A writer alive without a session of this instance (an orphan still draining after its
    trader died, or one started with EventStoreWriter.spawn) holds its run file: a boot skips
    it and leaves it undisturbed."""
    from nes.manifest import RunManifest
    from nes.writer import EventStoreWriter

    caplog.set_level(logging.ERROR, logger="nes.kernel")
    manifest = RunManifest(run_id="1700000000000000000-0000abcd", instance_id=INSTANCE, start_ts_init=1)
    live = EventStoreWriter.spawn(tmp_path, manifest)
    path = layout.run_file_path(tmp_path, INSTANCE, manifest.run_id)
    try:
        assert live.wait_durable(live.submit(draft(1)), 5.0)
        with open_run(make_config(tmp_path)) as other:
            assert other.recovery.recovered == [] and other.recovery.parent_run_id is None
        assert read_manifest(path).status is RunStatus.Running
        assert any(path.name in r.getMessage() for r in caplog.records)
        assert live.submit(draft(2)) == 2 and live.wait_durable(2, 5.0)  # undisturbed
    finally:
        assert live.close() == 3
    assert read_manifest(path).status is RunStatus.Ended


def test_renamed_run_file_is_skipped_and_no_file_is_created(tmp_path, caplog):
    """Recovery seals through the backend, which derives the path from the manifest: a file whose
    name does not match its manifest must be skipped, not 'recovered' into a new empty file."""
    caplog.set_level(logging.ERROR, logger="nes.kernel")
    original = leave_running(tmp_path, 2)
    renamed = original.with_name("1600000000000000000-00000000.lmdb")
    original.rename(renamed)
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert outcome.recovered == [] and outcome.parent_run_id is None
    assert run_files(tmp_path) == [renamed]
    assert read_manifest(renamed).status is RunStatus.Running
    assert any(renamed.name in r.getMessage() and "not this file" in r.getMessage() for r in caplog.records)


def test_recovery_worker_timeout_skips_the_file_and_boot_succeeds(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="nes.kernel")
    crashed = leave_running(tmp_path, 2)
    with open_run(make_config(tmp_path, verifier_timeout_s=0.001)) as session:
        assert session.recovery.recovered == [] and session.recovery.parent_run_id is None
    assert any(crashed.name in r.getMessage() and "timed out" in r.getMessage() for r in caplog.records)
    assert read_manifest(crashed).status is RunStatus.Running  # retried next boot
    with open_run(make_config(tmp_path)) as session:
        assert session.recovery.parent_run_id == crashed.stem
    assert read_manifest(crashed).status is RunStatus.CrashedRecovered


def test_runstarted_refused_is_a_boot_error_and_leaves_no_writer_behind(tmp_path: Path) -> None:
    """A RunStarted that cannot be submitted (here: larger than max_record_bytes) fails the boot
    with BootError; the sidecar it started is stopped (the autouse fixture checks) and the new
    run is left Running for the next boot, which seals it as an empty crash."""
    from nes.kernel import BootError
    from nes.writer import WriterConfig

    config = make_config(tmp_path, writer=WriterConfig(ring_bytes=1 << 16, max_record_bytes=4096))
    components = RegisteredComponents(strategies={f"strategy-{i}": "x" * 40 for i in range(200)})
    with pytest.raises(BootError, match="RunStarted was refused"):
        EventStoreLifecycle(config).open(components)
    [left] = run_files(tmp_path)
    assert read_manifest(left).status is RunStatus.Running
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert [(r.status, r.high_watermark) for r in outcome.recovered] == [(RunStatus.CrashedRecovered, 0)]


# ---- one live session per instance (issue 8, item 12) ----------------------------------------------
BOOT_CHILD = Path(__file__).resolve().parent / "boot_child.py"


def _start_child(base: Path, mode: str = "hold", **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(BOOT_CHILD), str(base), INSTANCE, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=BOOT_CHILD.parent.parent,
        **kw,
    )


def _listing(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*"))


def test_second_lifecycle_on_a_held_instance_fails_naming_the_holder_pid_and_opens_nothing(tmp_path):
    from nes import InstanceLocked

    holder = _start_child(tmp_path)
    try:
        line = holder.stdout.readline().decode().split()
        assert line[:1] == ["ready"], line
        before = _listing(tmp_path)
        with pytest.raises(InstanceLocked, match=f"pid {holder.pid}") as info:
            open_run(make_config(tmp_path))
        assert info.value.pid == holder.pid
        assert _listing(tmp_path) == before  # no run file, no recovery, no ring record
        assert [c.pid for c in psutil.Process().children()] == [holder.pid]  # no worker, no writer
    finally:
        holder.stdin.close()
        assert holder.wait(30) == 0
        holder.stdout.close()
    # the holder closed: the instance is free again
    with open_run(make_config(tmp_path)) as session:
        assert session.recovery.recovered == []


def test_a_second_lifecycle_in_the_same_process_is_refused_until_the_first_session_closes(tmp_path):
    from nes import InstanceLocked

    first = EventStoreLifecycle(make_config(tmp_path)).open()
    try:
        with pytest.raises(InstanceLocked, match=f"pid {os.getpid()}"):
            EventStoreLifecycle(make_config(tmp_path)).open()
        assert run_files(tmp_path) == [first.path]
    finally:
        first.close()
    second = EventStoreLifecycle(make_config(tmp_path), options=IN_PROCESS).open()
    second.close()
    lock = tmp_path / INSTANCE / "instance.lock"
    assert oct(lock.stat().st_mode & 0o777) == "0o600"


def test_the_writer_holds_the_instance_lock_and_the_next_boot_after_a_killed_holder_recovers_its_run(tmp_path):
    """The session's writer holds the instance lock too (an orphan keeps the instance until it
    has drained); a boot right after the trader was killed waits for it, then seals the run
    and continues from it."""
    holder = _start_child(tmp_path)
    line = holder.stdout.readline().decode().split()
    assert line[:1] == ["ready"], line
    writer_fds = [os.readlink(f"/proc/{line[2]}/fd/{fd}") for fd in os.listdir(f"/proc/{line[2]}/fd")]
    assert str(tmp_path / INSTANCE / "instance.lock") in writer_fds
    holder.kill()
    holder.wait()
    holder.stdout.close()
    holder.stdin.close()
    with open_run(make_config(tmp_path)) as session:  # no wait for the writer here
        assert session.recovery.parent_run_id == line[3]
        assert [r.status for r in session.recovery.recovered] == [RunStatus.CrashedRecovered]
    assert wait_gone(int(line[2]))


# ---- shared memory of a boot that died (issue 8, item 3) -------------------------------------------
def _ring_tokens_mapped_by(pid: int) -> set[str]:
    tokens = set()
    with open(f"/proc/{pid}/maps") as maps:
        for row in maps:
            if "/dev/shm/nes-" in row:
                tokens.add(row.rsplit("/dev/shm/nes-", 1)[1].split("-")[0])
    return tokens


def _shm_left(token: str) -> list[str]:
    return sorted(name for name in os.listdir("/dev/shm") if token in name)


def _boot_child_at_writer_spawn(base: Path) -> tuple[subprocess.Popen, str]:
    """A trader in its own process group, caught booting: its writer process exists (so its
    ring does). Returns it and its ring token."""
    child = _start_child(base, "boot", start_new_session=True)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        writers = []
        for process in psutil.Process(child.pid).children():
            try:
                if "workers.writer" in " ".join(process.cmdline()):
                    writers.append(process)
            except psutil.NoSuchProcess:
                continue  # a recovery worker that just finished
        if writers:
            tokens = _ring_tokens_mapped_by(child.pid)
            if tokens:
                (token,) = tokens
                return child, token
    child.kill()
    raise AssertionError("the trader never reached its writer spawn")


def _kill_process_group(child, tmp_path) -> None:
    """SIGKILL the boot child's whole process group and wait until every process of it
    (the trader and a writer it spawned for `tmp_path`) is gone."""
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    child.stdin.close()
    for proc in psutil.process_iter(["cmdline"]):
        if str(tmp_path) in " ".join(proc.info["cmdline"] or []):
            proc.wait(10)


@pytest.mark.parametrize("attempt", range(3))
def test_kill_of_the_process_group_during_boot_leaks_nothing_after_the_next_boot(tmp_path, attempt):
    child, token = _boot_child_at_writer_spawn(tmp_path)
    _kill_process_group(child, tmp_path)
    with open_run(make_config(tmp_path)):
        assert _shm_left(token) == []
    assert not list((tmp_path / INSTANCE).glob("*.boot"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_boot_cleans_up_before_the_trader_exits(tmp_path, signum):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM to the
    trader while it waits for its writer: when it has exited, its ring is gone from /dev/shm,
    no writer is left and the instance is free."""
    child, token = _boot_child_at_writer_spawn(tmp_path)
    if signum == signal.SIGINT:
        os.killpg(child.pid, signum)
    else:
        os.kill(child.pid, signum)
    code = child.wait(30)
    child.stdout.close()
    child.stdin.close()
    assert code != 0
    if signum == signal.SIGTERM:
        assert code == -signal.SIGTERM  # it still dies by the signal, after cleaning up
    assert _shm_left(token) == []
    assert not list((tmp_path / INSTANCE).glob("*.boot"))
    for proc in psutil.process_iter(["cmdline"]):
        if str(tmp_path) in " ".join(proc.info["cmdline"] or []):
            assert wait_gone(proc.pid), "a writer of the interrupted boot was left running"
    with open_run(make_config(tmp_path)):
        pass


# ---- lineage survives a kill at any point of boot (issue 8, item 5) ---------------------------------
def test_a_crashed_run_sealed_by_a_boot_that_died_before_its_run_existed_is_still_the_parent(tmp_path):
    crashed = leave_running(tmp_path, 3)
    # What a boot killed right after its recovery sweep leaves: the crashed run sealed, no new run.
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert [(r.run_id, r.status) for r in outcome.recovered] == [(crashed.stem, RunStatus.CrashedRecovered)]
    assert run_files(tmp_path) == [crashed]
    with open_run(make_config(tmp_path)) as session:
        assert session.recovery.recovered == []
        assert session.recovery.parent_run_id == crashed.stem
        assert read_manifest(session.path).parent_run_id == crashed.stem
    # adopted once: the boot after that has no parent (nothing crashed since)
    with open_run(make_config(tmp_path)) as session:
        assert session.recovery.parent_run_id is None


def test_a_boot_killed_after_creating_its_run_passes_the_lineage_on(tmp_path):
    """Killed after the sweep and after its own run file exists (RunStarted not yet durable):
    that run names the crashed one, and the next boot continues from it."""
    crashed = leave_running(tmp_path, 2)
    child, _token = _boot_child_at_writer_spawn(tmp_path)
    _kill_process_group(child, tmp_path)
    assert read_manifest(crashed).status is RunStatus.CrashedRecovered  # its sweep had run
    with open_run(make_config(tmp_path)) as session:
        parent = session.recovery.parent_run_id
        chain = [session.run_id]
        while parent is not None:
            chain.append(parent)
            parent = read_manifest(layout.run_file_path(tmp_path, INSTANCE, parent)).parent_run_id
    assert chain[-1] == crashed.stem and len(chain) in (2, 3)


def test_a_trader_started_beside_a_package_named_workers_still_runs_nes_workers(tmp_path: Path) -> None:
    """Every child nes starts is `python -P -m workers.<name>`: a `workers` package in the
    trader's working directory (a common name) must not replace nes's writer, recovery or
    verify worker. Without -P the writer exits before READY and nothing boots."""
    shadow = tmp_path / "project"
    (shadow / "workers").mkdir(parents=True)
    (shadow / "workers" / "__init__.py").write_text('raise SystemExit("the trader\'s own workers package ran")\n')
    base = tmp_path / "runs"
    code = f"""
from nes import EventStoreConfig, EventStoreLifecycle, RunIdentity, verify_in_worker
from nes.writer import EntryDraft
config = EventStoreConfig(base_dir={str(base)!r}, identity=RunIdentity(instance_id="shadowed"))
session = EventStoreLifecycle(config).open()
session.submit(EntryDraft("t", "P", b"x", 1))
session.close()
print(verify_in_worker(session.path, timeout_s=60).summary_line())
crashed = EventStoreLifecycle(config).open()
crashed.abandon()  # a Running file: the next boot's recovery worker seals it
EventStoreLifecycle(config).open().close()
print("booted")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=shadow, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("clean ") and done.stdout.rstrip().endswith("booted"), done.stdout
    statuses = sorted(read_manifest(p).status.name for p in (base / "shadowed").glob("*.lmdb"))
    assert statuses == ["CrashedRecovered", "Ended", "Ended"], statuses
