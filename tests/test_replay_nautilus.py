"""Cache restore on NautilusTrader: the crate's pinned property on real captured backtests, restore at
boot and its refusals, the forensics join with a Parquet catalog, and the restore error cases."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import psutil
import pytest
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from replay_helpers import write_nautilus_catalog
from runfile_helpers import rewrite_entries

from nes import (
    EventStoreConfig,
    EventStoreLifecycle,
    EventStoreLifecycleOptions,
    EventStoreReader,
    MemoryBackend,
    RunIdentity,
    RunManifest,
    RunStatus,
)
from nes.backend import layout
from nes.backend.lmdb import LmdbBackend, read_manifest
from nes.codec import seq_key
from nes.entry import EventStoreEntry
from nes.errors import Backend, Corrupted
from nes.integrations.nautilus.backtest import INSTRUMENT_SYMBOL, VENUE, run_ema_cross_backtest
from nes.integrations.nautilus.replay import (
    REPLAY_RULES,
    NautilusCacheReplay,
    apply_cache_replay_entry,
    cache_fingerprint,
    snapshot_cache,
)
from nes.kernel import BootError, ReplaySourceError
from nes.replay import (
    CacheRestoreAtBootError,
    CatalogSliceSelector,
    ParquetReplayCatalog,
    QuoteRecord,
    ReplayApplyError,
    ReplayDecodeError,
    ReplaySeqRange,
    SnapshotBlobStore,
    SnapshotHashMismatch,
    SnapshotRestore,
    UnexpectedSeq,
    load_catalog_replay_inputs,
    plan_catalog_replay_inputs,
    restore_cache_from_sealed_run,
    restore_cache_snapshot_and_replay_tail,
)
from nes.snapshot import SnapshotAnchor

INSTANCE = "nautilus-trader"
QUOTES = 3000  # 750 one-minute bars, ~60 fills, orders of every lifecycle
PROPERTY_CASES = 22


def instrument():  # noqa: ANN201
    return TestInstrumentProvider.default_fx_ccy(INSTRUMENT_SYMBOL, Venue(VENUE))


def config(base: Path, **kw) -> EventStoreConfig:  # noqa: ANN003
    return EventStoreConfig(base_dir=str(base), identity=RunIdentity(instance_id=INSTANCE), **kw)


def lifecycle(base: Path, in_process: bool = True, restore=None, **kw) -> EventStoreLifecycle:  # noqa: ANN001, ANN003
    return EventStoreLifecycle(config(base, **kw), options=EventStoreLifecycleOptions(in_process=in_process, restore_cache=restore))


def captured_backtest(base: Path, seed: int, anchor_bars: set[int] = frozenset(), anchor_at_start: bool = False):  # noqa: ANN001, ANN201
    """A captured EMA-cross backtest with cache snapshots anchored after the given bars; the
    session is returned open (the caller closes or abandons it) with the live engine."""
    session = lifecycle(base, in_process=False).open()  # the writer sidecar batches its fsyncs
    anchorer = session.snapshot_anchorer()
    anchors = []
    if anchor_at_start:
        anchors.append(anchorer(snapshot_cache(NautilusCacheReplay().cache)))

    def on_snapshot(engine, index: int) -> None:  # noqa: ANN001
        if index in anchor_bars:
            anchors.append(anchorer(snapshot_cache(engine.cache)))

    engine, result = run_ema_cross_backtest(
        session, quotes=QUOTES, seed=seed, dispose=False, snapshot_every=1, on_snapshot=on_snapshot
    )
    assert result.error is None and result.fills > 0
    return session, engine, anchors


# ---- the pinned property ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", range(PROPERTY_CASES))
def test_cache_rebuilt_from_latest_anchor_and_tail_equals_the_live_cache(tmp_path: Path, case: int) -> None:
    """Case 0: no anchor (replay of the whole run); case 1: an anchor of the empty cache at the
    start; case 2: an anchor at the last seq (empty tail, restored at boot from the crashed
    run); the rest: 1-3 anchors after random bars, restore from the latest."""
    rng = random.Random(20_240_102 + case)
    seed = rng.randrange(1, 1_000_000)
    bars = set() if case < 3 else set(rng.sample(range(1, 740), rng.randint(1, 3)))
    session, engine, anchors = captured_backtest(tmp_path, seed, bars, anchor_at_start=case == 1)
    live = cache_fingerprint(engine.cache)
    assert live["orders"] and live["positions"] and live["accounts"]
    if case == 2:
        last = session.snapshot_anchorer()(snapshot_cache(engine.cache))
        assert last.high_watermark == session.high_watermark
        session.abandon()  # a crash: no RunEnded, the next boot seals it CrashedRecovered
        target = NautilusCacheReplay([instrument()])
        rebooted = lifecycle(tmp_path, restore=target).open()
        try:
            report = rebooted.cache_restore
            assert report.manifest.run_id == session.run_id and report.manifest.status is RunStatus.CrashedRecovered
            assert report.cache.plan.anchor == last and report.cache.plan.is_empty()
            assert (report.cache.applied, report.cache.ignored) == (0, 0)
        finally:
            rebooted.close()
    else:
        session.close()
        target = NautilusCacheReplay([instrument()])
        report = restore_cache_from_sealed_run(target, tmp_path, INSTANCE, session.run_id).cache
        assert report.plan.anchor == (anchors[-1] if anchors else None)
        assert report.plan.from_seq == (anchors[-1].high_watermark + 1 if anchors else 1)
        assert report.applied > 0 and report.applied + report.ignored == report.plan.to_seq - report.plan.from_seq + 1
    engine.dispose()
    assert cache_fingerprint(target.cache) == live


# ---- restore at boot --------------------------------------------------------------------------------
def shm_held_by_this_process() -> list[str]:
    """Shared-memory segments this process maps or holds open (other test processes on the
    machine create their own segments, so /dev/shm as a whole says nothing about us)."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    held = [line.split()[-1] for line in maps if "/dev/shm/" in line]
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/dev/shm/"):
            held.append(target)
    return held


def assert_boot_refused_cleanly(base: Path, make_lifecycle, error: type[Exception], match: str) -> None:  # noqa: ANN001
    runs_before = sorted(p.name for p in layout.list_run_files(base, INSTANCE))
    shm_before = shm_held_by_this_process()
    with pytest.raises(error, match=match):
        make_lifecycle().open()
    assert sorted(p.name for p in layout.list_run_files(base, INSTANCE)) == runs_before  # no run file created
    assert shm_held_by_this_process() == shm_before
    deadline = time.monotonic() + 10
    while [c for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]:
        assert time.monotonic() < deadline, "a process was left behind"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sealed_backtest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    base = tmp_path_factory.mktemp("sealed")
    session, engine, anchors = captured_backtest(base, seed=11, anchor_bars={200})
    session.close()
    live = cache_fingerprint(engine.cache)
    engine.dispose()
    return base, session.run_id, {"live": live, "anchor": anchors[-1]}


def rewrite_manifest(path: Path, drop_last_entry: bool = False, **changes) -> None:  # noqa: ANN003
    """Rewrite a closed run file's manifest (and optionally drop its last entry) by hand. Its
    seal record, whose file digest refuses any hand edit before mapping, is dropped: the file
    stands for one sealed so (a crash between the seal commit and the record leaves that)."""
    import lmdb
    import msgspec

    from nes.backend.seal_record import seal_record_path
    from nes.manifest import encode_manifest

    manifest = read_manifest(path)
    seal_record_path(path).unlink(missing_ok=True)
    env = lmdb.open(str(path), subdir=False, max_dbs=layout.MAX_DBS)
    try:
        with env.begin(write=True) as txn:
            db = env.open_db(layout.DB_MANIFEST, txn=txn)
            txn.put(layout.MANIFEST_KEY, encode_manifest(msgspec.structs.replace(manifest, **changes)), db=db)
            if drop_last_entry:
                txn.delete(seq_key(manifest.high_watermark), db=env.open_db(layout.DB_ENTRIES, txn=txn))
    finally:
        env.close()


def copy_instance(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source / INSTANCE, target / INSTANCE)
    return target


def test_boot_restores_the_configured_replay_source_before_the_run_opens(tmp_path: Path, sealed_backtest) -> None:  # noqa: ANN001
    base, run_id, expected = sealed_backtest
    base = copy_instance(base, tmp_path)
    target = NautilusCacheReplay([instrument()])
    session = lifecycle(base, in_process=False, restore=target, replay_from_run_id=run_id).open()
    try:
        assert session.manifest.parent_run_id == run_id
        assert session.cache_restore.cache.plan.anchor == expected["anchor"]
        assert cache_fingerprint(target.cache) == expected["live"]
    finally:
        session.close()


def test_boot_refuses_a_missing_replay_source(tmp_path: Path, sealed_backtest) -> None:  # noqa: ANN001
    base = copy_instance(sealed_backtest[0], tmp_path)
    assert_boot_refused_cleanly(
        base,
        lambda: lifecycle(base, False, NautilusCacheReplay([instrument()]), replay_from_run_id="1700000000000000000-deadbeef"),
        ReplaySourceError,
        "not found",
    )


def test_boot_refuses_a_corrupt_replay_source(tmp_path: Path, sealed_backtest) -> None:  # noqa: ANN001
    base, run_id, _ = sealed_backtest
    base = copy_instance(base, tmp_path)
    path = layout.run_file_path(base, INSTANCE, run_id)

    def damage(txn, db) -> None:  # noqa: ANN001
        value = bytearray(txn.get(seq_key(300), db=db))
        value[-3] ^= 0xFF
        txn.put(seq_key(300), bytes(value), db=db)

    rewrite_entries(path, damage)
    assert_boot_refused_cleanly(  # its bytes no longer match its seal record: the sweep says so
        base,
        lambda: lifecycle(base, False, NautilusCacheReplay([instrument()]), replay_from_run_id=run_id),
        ReplaySourceError,
        "is Quarantined",
    )


def test_boot_refuses_a_quarantined_replay_source(tmp_path: Path, sealed_backtest) -> None:  # noqa: ANN001
    base, run_id, _ = sealed_backtest
    base = copy_instance(base, tmp_path)
    rewrite_manifest(layout.run_file_path(base, INSTANCE, run_id), status=RunStatus.Quarantined)
    assert_boot_refused_cleanly(
        base,
        lambda: lifecycle(base, False, NautilusCacheReplay([instrument()]), replay_from_run_id=run_id),
        ReplaySourceError,
        "Quarantined",
    )


def test_boot_refuses_a_source_whose_snapshot_blob_hash_does_not_match(tmp_path: Path, sealed_backtest) -> None:  # noqa: ANN001
    base, run_id, expected = sealed_backtest
    base = copy_instance(base, tmp_path)
    (base / INSTANCE / expected["anchor"].blob_ref).write_bytes(b"not the snapshot")
    assert_boot_refused_cleanly(
        base,
        lambda: lifecycle(base, False, NautilusCacheReplay([instrument()]), replay_from_run_id=run_id),
        BootError,
        "failed verification",  # the preflight verifier already sees the blob mismatch
    )


class _FailingRule(NautilusCacheReplay):
    """A target whose replay rule for fills fails (a cache apply step that raises)."""

    def apply_entry(self, entry) -> bool:  # noqa: ANN001
        if entry.payload_type == "OrderFilled":
            raise ValueError("cannot apply OrderFilled")
        return super().apply_entry(entry)


def crashed_backtest(base: Path) -> tuple[str, SnapshotAnchor]:
    """A captured backtest anchored after bar 200 whose session is abandoned (a crash)."""
    session, engine, anchors = captured_backtest(base, seed=11, anchor_bars={200})
    session.abandon()  # no RunEnded: the next boot recovers it
    engine.dispose()
    return session.run_id, anchors[-1]


def test_a_restore_failure_at_boot_refuses_the_boot_and_opens_no_run(tmp_path: Path) -> None:
    parent, _ = crashed_backtest(tmp_path)
    assert_boot_refused_cleanly(
        tmp_path, lambda: lifecycle(tmp_path, False, _FailingRule([instrument()])), CacheRestoreAtBootError, "cannot apply OrderFilled"
    )
    # the refused boot still sealed the crashed run; the next boot restores from it
    assert read_manifest(layout.run_file_path(tmp_path, INSTANCE, parent)).status is RunStatus.CrashedRecovered
    session = lifecycle(tmp_path, False, NautilusCacheReplay([instrument()])).open()
    try:
        assert session.manifest.parent_run_id == parent and session.cache_restore.cache.applied > 0
    finally:
        session.close()


def test_a_crashed_run_whose_snapshot_blob_is_gone_is_quarantined_and_not_restored(tmp_path: Path) -> None:
    """Recovery runs the full verifier, blob store included: the run is Quarantined, so it is
    no parent and nothing is restored from it (the crate's rule: only a recovered parent or a
    configured replay source is restored)."""
    crashed, anchor = crashed_backtest(tmp_path)
    (tmp_path / INSTANCE / anchor.blob_ref).unlink()
    session = lifecycle(tmp_path, False, NautilusCacheReplay([instrument()])).open()
    try:
        assert session.manifest.parent_run_id is None and session.cache_restore is None
    finally:
        session.close()
    assert read_manifest(layout.run_file_path(tmp_path, INSTANCE, crashed)).status is RunStatus.Quarantined


# ---- restore error cases ------------------------------------------------------------------------------
def test_restore_from_a_running_source_is_refused(tmp_path: Path) -> None:
    session = lifecycle(tmp_path, in_process=False).open()  # the writer process holds it Running
    try:
        with pytest.raises(Backend, match="still Running"):
            restore_cache_from_sealed_run(NautilusCacheReplay(), tmp_path, INSTANCE, session.run_id)
    finally:
        session.close()


def test_restore_from_a_quarantined_source_is_refused(tmp_path: Path) -> None:
    session = lifecycle(tmp_path).open()
    session.close()
    rewrite_manifest(session.path, status=RunStatus.Quarantined)
    # A Quarantined run has no seal proof and does not verify clean: it is never mapped in-process.
    with pytest.raises(Corrupted, match=r"\(Quarantined\) has no seal record that proves its file"):
        restore_cache_from_sealed_run(NautilusCacheReplay(), tmp_path, INSTANCE, session.run_id)


def test_missing_snapshot_blob_is_a_snapshot_restore_error(tmp_path: Path, sealed_backtest) -> None:  # noqa: ANN001
    base, run_id, expected = sealed_backtest
    base = copy_instance(base, tmp_path)
    (base / INSTANCE / expected["anchor"].blob_ref).unlink()
    with pytest.raises(SnapshotRestore) as info:
        restore_cache_from_sealed_run(NautilusCacheReplay([instrument()]), base, INSTANCE, run_id)
    assert (info.value.blob_ref, info.value.message) == (expected["anchor"].blob_ref, "snapshot blob not found")


def test_snapshot_blob_with_another_hash_is_a_snapshot_restore_error(tmp_path: Path, sealed_backtest) -> None:  # noqa: ANN001
    base, run_id, expected = sealed_backtest
    base = copy_instance(base, tmp_path)
    (base / INSTANCE / expected["anchor"].blob_ref).write_bytes(b"other bytes")
    with pytest.raises(SnapshotHashMismatch, match="content_hash mismatch") as info:
        restore_cache_from_sealed_run(NautilusCacheReplay([instrument()]), base, INSTANCE, run_id)
    assert isinstance(info.value, SnapshotRestore) and info.value.expected == expected["anchor"].content_hash


def test_a_blob_that_hashes_right_but_is_no_cache_snapshot_is_a_snapshot_restore_error(tmp_path: Path) -> None:
    session = lifecycle(tmp_path).open()
    session.snapshot_anchorer()(b"\x81\xa3not\xa1a")  # stored and anchored: the hash matches
    session.close()
    with pytest.raises(SnapshotRestore, match="not a NautilusTrader cache snapshot"):
        restore_cache_from_sealed_run(NautilusCacheReplay(), tmp_path, INSTANCE, session.run_id)


def _entry(seq: int, payload_type: str, payload: bytes) -> EventStoreEntry:
    return EventStoreEntry.build(seq, seq, seq, f"events.{payload_type}", payload_type, payload)


def test_a_payload_that_does_not_decode_is_a_replay_decode_error() -> None:
    with pytest.raises(ReplayDecodeError) as info:
        apply_cache_replay_entry(NautilusCacheReplay().cache, _entry(7, "OrderFilled", b"\xc1garbage"))
    assert (info.value.seq, info.value.payload_type) == (7, "OrderFilled")


def test_an_event_for_an_order_the_cache_does_not_know_is_a_replay_apply_error(sealed_backtest) -> None:  # noqa: ANN001
    base, run_id, _ = sealed_backtest
    reader = EventStoreReader(LmdbBackend.open_sealed_file(layout.run_file_path(base, INSTANCE, run_id)))
    try:
        accepted = next(e for e in reader.scan_range(1, 10**9) if e.payload_type == "OrderAccepted")
    finally:
        reader.close()
    with pytest.raises(ReplayApplyError, match="apply_order_event: .* is not in the cache") as info:
        apply_cache_replay_entry(NautilusCacheReplay().cache, accepted)
    assert info.value.seq == accepted.seq


def test_types_without_a_rule_are_counted_as_ignored() -> None:
    assert "SubmitOrder" in REPLAY_RULES and "TimeEvent" not in REPLAY_RULES and "RunStarted" not in REPLAY_RULES
    assert apply_cache_replay_entry(NautilusCacheReplay().cache, _entry(1, "RunStarted", b"\x80")) is False
    assert apply_cache_replay_entry(NautilusCacheReplay().cache, _entry(1, "RequestBars", b"\x80")) is False


class SkippingBackend(MemoryBackend):
    """A backend that breaks the scan contract: it hands out the entry before the window."""

    def scan_range(self, from_seq, to_seq, direction):  # noqa: ANN001, ANN201
        return super().scan_range(max(1, from_seq - 1), to_seq, direction)


def test_an_entry_below_the_replay_start_is_unexpected_seq(tmp_path: Path) -> None:
    backend = SkippingBackend()
    backend.open_run(RunManifest(run_id="1-00000000", instance_id=INSTANCE, start_ts_init=0, binary_hash="b", crate_versions="", config_hash="c"))
    from nes.backend.base import AppendEntry

    backend.append_batch([AppendEntry.without_indices(_entry(seq, "RunStarted", b"\x80")) for seq in (1, 2, 3)])
    store = SnapshotBlobStore(tmp_path / INSTANCE)
    blob_ref, content_hash = store.put(snapshot_cache(NautilusCacheReplay().cache))
    from nes.snapshot import SnapshotAnchor

    backend.record_snapshot_anchor(SnapshotAnchor(2, blob_ref, content_hash))
    with pytest.raises(UnexpectedSeq) as info:
        restore_cache_snapshot_and_replay_tail(NautilusCacheReplay(), EventStoreReader(backend), store)
    assert (info.value.seq, info.value.from_seq) == (2, 3)
    assert str(info.value) == "entry seq 2 is before replay start seq 3"


# ---- forensics ----------------------------------------------------------------------------------------
def test_forensics_plan_and_load_of_a_sealed_run_joined_with_quote_and_bar_slices(tmp_path: Path, sealed_backtest) -> None:  # noqa: ANN001
    base, run_id, _ = sealed_backtest
    reader = EventStoreReader(LmdbBackend.open_sealed_file(layout.run_file_path(base, INSTANCE, run_id)))
    try:
        window = list(reader.scan_range(100, 160))
        lo, hi = min(e.ts_init for e in window), max(e.ts_init for e in window)
        # The catalog: quotes inside, before and after the window; bars inside it.
        quote_ts = [lo - 10**9, lo, (lo + hi) // 2, hi, hi + 10**9]
        bar_ts = [lo + 1, hi - 1]
        write_nautilus_catalog(tmp_path / "catalog", quote_ts=quote_ts, bar_ts=bar_ts)
        catalog = ParquetReplayCatalog(tmp_path / "catalog")
        selectors = [
            CatalogSliceSelector("quotes").with_identifier("AUD/USD.SIM").require_coverage(),
            CatalogSliceSelector("bars").with_identifier("AUD/USD.SIM"),
        ]
        plan = plan_catalog_replay_inputs(reader, catalog, ReplaySeqRange(100, 160), selectors)
        assert plan.event_range == ReplaySeqRange(100, 160) and plan.event_count == 61
        assert (plan.event_time_range.start, plan.event_time_range.end) == (lo, hi)
        assert plan.missing_catalog_slices() == []
        assert [len(s.coverage.files) for s in plan.catalog_slices] == [3, 2]
        inputs = load_catalog_replay_inputs(reader, catalog, plan)
    finally:
        reader.close()
    assert [e.seq for e in inputs.entries] == list(range(100, 161))
    assert [e.payload_type for e in inputs.entries] == [e.payload_type for e in window]
    quotes, bars = inputs.catalog_slices
    assert [r.ts_init for r in quotes.records] == [lo, (lo + hi) // 2, hi]
    assert all(isinstance(r.data, QuoteRecord) and r.identifier == "AUD/USD.SIM" for r in quotes.records)
    assert [r.ts_init for r in bars.records] == bar_ts


def test_a_submit_command_missing_its_fields_is_a_replay_decode_error() -> None:
    import msgspec

    payload = msgspec.msgpack.encode({"type": "SubmitOrder", "client_id": None})
    with pytest.raises(ReplayDecodeError, match="KeyError"):
        apply_cache_replay_entry(NautilusCacheReplay().cache, _entry(3, "SubmitOrder", payload))


def test_a_position_event_for_a_position_the_cache_does_not_know_is_a_replay_apply_error() -> None:
    import msgspec

    payload = msgspec.msgpack.encode({"type": "PositionClosed", "position_id": "AUD/USD.SIM-EMACross-000"})
    with pytest.raises(ReplayApplyError, match="check_position_event: .*is not in the cache"):
        apply_cache_replay_entry(NautilusCacheReplay().cache, _entry(4, "PositionClosed", payload))


def test_a_payload_naming_another_type_is_a_replay_decode_error() -> None:
    import msgspec

    payload = msgspec.msgpack.encode({"type": "PositionOpened", "position_id": "X"})
    with pytest.raises(ReplayDecodeError, match="payload names type 'PositionOpened'"):
        apply_cache_replay_entry(NautilusCacheReplay().cache, _entry(5, "PositionClosed", payload))


def test_the_python_blocks_of_docs_replay_md_run_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    monkeypatch.chdir(tmp_path)
    text = (Path(__file__).parent.parent / "docs" / "replay.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, "docs/replay.md", "exec"), {})


HOSTILE_CHILD = r"""
import sys, msgspec
from nes.entry import EventStoreEntry
from nes.integrations.nautilus.replay import NautilusCacheReplay, apply_cache_replay_entry, restore_cache_snapshot
from nes.replay import ReplayDecodeError, SnapshotRestore
which = sys.argv[1]
try:
    if which == "snapshot-order-id":
        init = {"type": "OrderInitialized", "trader_id": "T-1", "client_order_id": "O-\u00e9", "strategy_id": "S-1"}
        blob = msgspec.msgpack.encode({"format": "nes.nautilus.cache/v1", "instruments": [], "accounts": [],
                                       "orders": [{"events": [init]}], "positions": []})
        restore_cache_snapshot(blob)
    elif which == "snapshot-enum":
        instrument = {"type": "CurrencyPair", "id": "AUD/USD.SIM", "asset_class": "NOT_A_CLASS"}
        blob = msgspec.msgpack.encode({"format": "nes.nautilus.cache/v1", "instruments": [instrument], "accounts": [],
                                       "orders": [], "positions": []})
        restore_cache_snapshot(blob)
    else:
        payload = msgspec.msgpack.encode({"type": "SubmitOrder", "client_id": None, "position_id": None,
                                          "order": {"client_order_id": "O-\x01"}})
        entry = EventStoreEntry.build(1, 1, 1, "t", "SubmitOrder", payload)
        apply_cache_replay_entry(NautilusCacheReplay().cache, entry)
except (SnapshotRestore, ReplayDecodeError) as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize(
    ("which", "expected"),
    [("snapshot-order-id", "SnapshotRestore"), ("snapshot-enum", "SnapshotRestore"), ("submit-light", "ReplayDecodeError")],
)
def test_hostile_identifiers_and_enums_are_refused_before_nautilus_trader_sees_them(which: str, expected: str) -> None:
    """NautilusTrader's Rust side aborts the process on them: a child process shows it did not."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HOSTILE_CHILD, which], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(expected), done.stdout
    assert "printable ASCII" in done.stdout or "names no member" in done.stdout
