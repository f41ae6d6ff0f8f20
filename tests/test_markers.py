"""Data-marker sidecar: hashes pinned by vectors, cursor rules, LMDB store, verifier."""

from __future__ import annotations

import os
import stat

import lmdb
import msgspec
import pytest

from nes.backend.layout import MARKER_FILE_SUFFIX
from nes.errors import Backend, Closed, Corrupted, OutOfOrder
from nes.manifest import RunStatus
from nes.markers import (
    CursorState,
    DataClass,
    DataCursorSnapshot,
    HiFiMarker,
    MarkerCountKind,
    MarkerGap,
    MarkerGapReason,
    MarkerManifest,
    MarkerRecordKind,
    MarkerStore,
    StoredMarkerRecord,
    StreamCursor,
    StreamDictEntry,
    audit_markers,
    compute_dict_hash,
    compute_gap_hash,
    compute_hifi_hash,
    compute_marker_hash,
    marker_file_path,
    verify_marker_file,
)
from nes.markers.store import DB_NAMES, encode_stored
from nes.markers.verifier import (
    CursorCountRegressed,
    CursorTsInitRegressed,
    DuplicateDictSlot,
    EventSeqExceedsHighWatermark,
    EventSeqRegressed,
    InvalidMarkerGap,
    ManifestCountMismatch,
    MarkerHashMismatch,
    MarkerKeyMismatch,
    MarkerScanTruncated,
    MarkerSeqGap,
    MarkerSeqOverlap,
    SidecarUnreadable,
    UndecodableMarkerRecord,
)

RUN_ID = "1700000000000000000-abcdef01"
TS = 1_700_000_000_000_000_000
FP = b"\xab" * 32


def vector_snapshot() -> DataCursorSnapshot:
    return DataCursorSnapshot(
        marker_seq=1, event_seq_before=42, ts_init=TS,
        advanced=(StreamCursor(0, TS + 1, 7), StreamCursor(1, TS + 2, 3)),
    )


def vector_hifi() -> HiFiMarker:
    return HiFiMarker(1, 42, 0, TS, TS + 1, 0, FP)


def snap(seq: int, esb: int = 1, cursors: tuple[StreamCursor, ...] = (StreamCursor(0, 100, 1),)) -> DataCursorSnapshot:
    return DataCursorSnapshot(marker_seq=seq, event_seq_before=esb, ts_init=100 + seq, advanced=cursors)


def hifi(seq: int, esb: int = 1, slot: int = 0) -> HiFiMarker:
    return HiFiMarker(seq, esb, slot, 10, 20, 0, b"\x07" * 32)


def manifest(**kw) -> MarkerManifest:
    return MarkerManifest(run_id=RUN_ID, enabled_classes=(DataClass.Quote, DataClass.Trade), high_fidelity=True, **kw)


@pytest.fixture
def path(tmp_path):
    return marker_file_path(tmp_path, "inst-1", RUN_ID)


@pytest.fixture
def store(path):
    s = MarkerStore(path)
    s.open_run(manifest())
    yield s
    s.close()


def stored(record, hash_=None, kind=None) -> StoredMarkerRecord:
    hasher = {DataCursorSnapshot: compute_marker_hash, HiFiMarker: compute_hifi_hash, MarkerGap: compute_gap_hash,
              StreamDictEntry: compute_dict_hash}[type(record)]
    return StoredMarkerRecord(record=record, hash=hash_ if hash_ is not None else hasher(record))


def raw_put(path, kind: MarkerRecordKind, key: bytes, value: bytes) -> None:
    """Write a row behind the store's back (to build files the store refuses to write)."""
    env = lmdb.open(str(path), subdir=False, max_dbs=8)
    try:
        db = env.open_db(DB_NAMES[kind], create=False)
        with env.begin(write=True, db=db) as txn:
            txn.put(key, value)
    finally:
        env.close()


def raw_get(path, kind: MarkerRecordKind, key: bytes) -> bytes:
    env = lmdb.open(str(path), subdir=False, max_dbs=8)
    try:
        db = env.open_db(DB_NAMES[kind], create=False)
        with env.begin(db=db) as txn:
            return bytes(txn.get(key))
    finally:
        env.close()


# ---- hashes (spec §2 vectors) --------------------------------------------------------------------
def test_snapshot_hash_matches_pinned_vector():
    assert compute_marker_hash(vector_snapshot()).hex() == "898bc3efdaf0edd9167a38a1c3060c9b4dc051658ea2f6132004bed78a481c47"


def test_hifi_hash_matches_pinned_vector():
    assert compute_hifi_hash(vector_hifi()).hex() == "06542408380d8815ef783b9dbde6b3e3ffdf05605bb17e83ad48474557457517"


def test_dict_hash_matches_pinned_vector():
    entry = StreamDictEntry(3, DataClass.Quote, "ETHUSDT.BINANCE")
    assert compute_dict_hash(entry).hex() == "24e702c5ae20b832ad6907676919fa18a89b79e97dde9df7e1de454191f42fda"


def test_gap_hash_matches_pinned_vector():
    gap = MarkerGap(5, 9, MarkerGapReason.Overflow)
    assert compute_gap_hash(gap).hex() == "ec1ae0ea813e9971155c6277e95c43de72da6f22ca1832f072aadd9b91f5a3ec"


def test_every_snapshot_field_and_cursor_order_changes_the_hash():
    base = vector_snapshot()
    r = msgspec.structs.replace
    c0, c1 = base.advanced
    variants = [
        r(base, marker_seq=2), r(base, event_seq_before=43), r(base, ts_init=TS + 1),
        r(base, advanced=(r(c0, slot=256), c1)), r(base, advanced=(r(c0, ts_init_hi=1), c1)),
        r(base, advanced=(r(c0, count=8), c1)), r(base, advanced=(c0, c1, StreamCursor(2, 1, 1))),
        r(base, advanced=(c1, c0)), r(base, advanced=()),
    ]
    hashes = {compute_marker_hash(v) for v in variants} | {compute_marker_hash(base)}
    assert len(hashes) == len(variants) + 1


def test_hifi_dict_gap_mutations_change_their_hashes():
    r = msgspec.structs.replace
    h = vector_hifi()
    flipped = bytes([FP[0] ^ 1]) + FP[1:]
    hifis = [h, r(h, marker_seq=2), r(h, event_seq_before=1), r(h, slot=256), r(h, ts_event=1), r(h, ts_init=1),
             r(h, same_ts_ordinal=256), r(h, record_fingerprint=flipped)]
    assert len({compute_hifi_hash(x) for x in hifis}) == len(hifis)
    d = StreamDictEntry(3, DataClass.Quote, "ETHUSDT.BINANCE")
    dicts = [d, r(d, slot=4), r(d, data_cls=DataClass.Trade), r(d, identifier="BTCUSDT.BINANCE")]
    assert len({compute_dict_hash(x) for x in dicts}) == len(dicts)
    g = MarkerGap(5, 9, MarkerGapReason.Overflow)
    gaps = [g, r(g, from_marker_seq=6), r(g, to_marker_seq=10), r(g, reason=MarkerGapReason.WriterClosed)]
    assert len({compute_gap_hash(x) for x in gaps}) == len(gaps)


# ---- DataClass ------------------------------------------------------------------------------------
def test_data_class_round_trips_canonical_names_in_codec_order():
    names = ["BookDeltas", "BookDepth10", "Quote", "Trade", "Bar"]
    assert [c.as_str() for c in DataClass] == names
    assert [c.codec_index for c in DataClass] == [0, 1, 2, 3, 4]
    for name in names:
        cls = DataClass.from_str(name)
        assert cls.as_str() == str(cls) == name


@pytest.mark.parametrize("bad", ["quote", "", "Quotes", "BookDepth"])
def test_data_class_rejects_other_spellings_naming_the_input(bad):
    with pytest.raises(ValueError) as info:
        DataClass.from_str(bad)
    assert str(info.value) == f"unknown DataClass, was `{bad}`"


def test_model_round_trips_through_msgpack_and_rejects_bad_fingerprint():
    for value, typ in [(vector_snapshot(), DataCursorSnapshot), (vector_hifi(), HiFiMarker),
                       (MarkerGap(5, 10, MarkerGapReason.Overflow), MarkerGap),
                       (StreamDictEntry(2, DataClass.Bar, "BTCUSDT-PERP.BINANCE"), StreamDictEntry),
                       (manifest(status=RunStatus.Ended, dict_count=2), MarkerManifest)]:
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(value), type=typ) == value
    with pytest.raises(ValueError):
        HiFiMarker(1, 1, 0, 1, 1, 0, b"\x00" * 31)
    assert not manifest().is_sealed() and manifest(status=RunStatus.Quarantined).is_sealed()


# ---- CursorState ---------------------------------------------------------------------------------
def test_slots_are_assigned_per_topic_in_first_seen_order_and_dict_entries_drain_once():
    state = CursorState()
    assert state.advance("data.quotes.ETH", DataClass.Quote, "ETHUSDT.BINANCE", 1) == (0, 0)
    assert state.advance("data.trades.ETH", DataClass.Trade, "ETHUSDT.BINANCE", 1) == (1, 0)
    assert state.advance("data.quotes.ETH", DataClass.Bar, "ignored", 2) == (0, 0)
    assert state.take_new_dict_entries() == [
        StreamDictEntry(0, DataClass.Quote, "ETHUSDT.BINANCE"),
        StreamDictEntry(1, DataClass.Trade, "ETHUSDT.BINANCE"),
    ]
    assert state.take_new_dict_entries() == []


def test_cursor_count_is_cumulative_and_ts_init_hi_never_lowers():
    state = CursorState()
    for ts in (100, 200, 150):
        state.advance("t", DataClass.Quote, "X", ts)
    assert state.cursor(0) == StreamCursor(0, 200, 3)
    assert state.is_dirty(0)


def test_build_snapshot_emits_dirty_slots_in_slot_order_then_none_when_quiet():
    state = CursorState()
    for topic in ("a", "b", "c"):
        state.advance(topic, DataClass.Quote, topic, 10)
    first = state.build_snapshot(1, 3, 10)
    assert first is not None and len(first.advanced) == 3
    state.advance("c", DataClass.Quote, "c", 50)
    state.advance("a", DataClass.Quote, "a", 40)
    assert state.build_snapshot(2, 7, 50) == DataCursorSnapshot(2, 7, 50, (StreamCursor(0, 40, 2), StreamCursor(2, 50, 2)))
    assert state.build_snapshot(3, 7, 60) is None


@pytest.mark.parametrize("ts, ordinals", [([100, 100, 100, 200, 200], [0, 1, 2, 0, 1]), ([100, 200, 100], [0, 0, 0])])
def test_same_ts_ordinal_counts_only_contiguous_runs(ts, ordinals):
    state = CursorState()
    assert [state.advance("t", DataClass.Trade, "X", t)[1] for t in ts] == ordinals


# ---- store ---------------------------------------------------------------------------------------
def test_sidecar_path_sits_beside_the_run_file(tmp_path):
    assert marker_file_path(tmp_path, "inst", RUN_ID) == tmp_path / "inst" / f"{RUN_ID}{MARKER_FILE_SUFFIX}"
    with pytest.raises(ValueError):
        marker_file_path(tmp_path, "../x", RUN_ID)


def test_open_run_normalizes_manifest_and_creates_private_file(path):
    with MarkerStore(path) as s:
        opened = s.open_run(manifest(status=RunStatus.Ended, snapshot_count=99, dict_count=99))
        assert opened == manifest()
        assert s.current_path() == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_round_trip_after_seal_and_read_only_reopen(store, path):
    s1, h2, g, s6 = snap(1), hifi(2), MarkerGap(3, 5, MarkerGapReason.Overflow), snap(6, cursors=(StreamCursor(0, 300, 4),))
    assert store.append_snapshot(s1) == compute_marker_hash(s1)
    store.append_hifi(h2)
    store.append_gap(g)
    store.append_snapshot(s6)
    assert store.put_dict_entry(StreamDictEntry(0, DataClass.Quote, "ETHUSDT.BINANCE")) is True
    assert store.put_dict_entry(StreamDictEntry(0, DataClass.Trade, "BTCUSDT.BINANCE")) is False  # first wins
    assert store.put_dict_entry(StreamDictEntry(1, DataClass.Trade, "BTCUSDT.BINANCE")) is True
    assert store.next_marker_seq == 7
    sealed = store.seal(RunStatus.Ended)
    assert (sealed.snapshot_count, sealed.hifi_count, sealed.gap_count, sealed.dict_count) == (2, 1, 1, 2)
    store.close()
    with MarkerStore.open_read_only(path) as ro:
        assert ro.manifest() == sealed
        assert ro.scan_snapshots() == [s1, s6]
        assert ro.scan_hifi() == [h2]
        assert ro.scan_gaps() == [g]
        assert ro.scan_dict() == [StreamDictEntry(0, DataClass.Quote, "ETHUSDT.BINANCE"),
                                  StreamDictEntry(1, DataClass.Trade, "BTCUSDT.BINANCE")]
        with pytest.raises(Closed):
            ro.append_snapshot(snap(7))
        with pytest.raises(Closed):
            ro.put_dict_entry(StreamDictEntry(2, DataClass.Bar, "X"))


def test_counts_are_durable_before_seal(store, path):
    store.append_snapshot(snap(1))
    store.put_dict_entry(StreamDictEntry(0, DataClass.Quote, "X"))
    store.close()  # py-lmdb refuses a second environment on one file in one process
    with MarkerStore.open_read_only(path) as ro:
        m = ro.manifest()
        assert (m.snapshot_count, m.dict_count, m.status) == (1, 1, RunStatus.Running)


def test_marker_seq_must_be_contiguous_across_snapshots_hifi_and_gaps(store):
    with pytest.raises(OutOfOrder) as info:
        store.append_snapshot(snap(2))
    assert (info.value.high_watermark, info.value.seq) == (0, 2)
    store.append_snapshot(snap(1))
    with pytest.raises(OutOfOrder):
        store.append_hifi(hifi(1))  # a duplicate seq
    with pytest.raises(OutOfOrder):
        store.append_gap(MarkerGap(3, 4, MarkerGapReason.Overflow))  # leaves 2 uncovered
    with pytest.raises(Backend, match="invalid marker gap"):
        store.append_gap(MarkerGap(4, 2, MarkerGapReason.Overflow))
    store.append_gap(MarkerGap(2, 4, MarkerGapReason.WriterClosed))
    with pytest.raises(OutOfOrder):
        store.append_hifi(hifi(4))  # inside the gap
    store.append_hifi(hifi(5))
    m = store.manifest()
    assert (m.snapshot_count, m.hifi_count, m.gap_count) == (1, 1, 1)  # refused appends wrote nothing


def test_seal_rules(store):
    with pytest.raises(Backend) as info:
        store.seal(RunStatus.Running)
    assert info.value.msg == "seal status must be a terminal state, was Running"
    assert not store.manifest().is_sealed()
    store.append_snapshot(snap(1))
    store.seal(RunStatus.Ended)
    with pytest.raises(Closed):
        store.seal(RunStatus.Quarantined)
    with pytest.raises(Closed):
        store.append_snapshot(snap(2))
    with pytest.raises(Closed):
        store.put_dict_entry(StreamDictEntry(0, DataClass.Quote, "X"))
    assert store.manifest().snapshot_count == 1


def test_every_call_without_a_run_is_no_marker_run_open(path):
    s = MarkerStore(path)
    calls = [s.current_path, s.manifest, s.scan_snapshots, s.scan_hifi, s.scan_gaps, s.scan_dict,
             lambda: s.seal(RunStatus.Ended), lambda: s.append_snapshot(snap(1)), lambda: s.append_hifi(hifi(1)),
             lambda: s.append_gap(MarkerGap(1, 1, MarkerGapReason.Overflow)),
             lambda: s.put_dict_entry(StreamDictEntry(0, DataClass.Quote, "X"))]
    for call in calls:
        with pytest.raises(Backend) as info:
            call()
        assert info.value.msg == "no marker run open"


def test_reopening_a_running_sidecar_seals_it_crashed_recovered(store, path):
    store.append_snapshot(snap(1))
    store.close()
    with MarkerStore.open_read_only(path) as ro:
        assert ro.manifest().status is RunStatus.Running  # read-only: no recovery
    with MarkerStore(path) as again:
        m = again.open_run(manifest())
        assert m.status is RunStatus.CrashedRecovered and m.snapshot_count == 1
        with pytest.raises(Closed):
            again.append_snapshot(snap(2))
        assert again.scan_snapshots() == [snap(1)]


def test_reopen_with_another_run_id_is_refused(store, path):
    store.close()
    other = "1700000000000000001-00000000"
    with MarkerStore(path) as s, pytest.raises(Backend, match=f"belongs to run_id {RUN_ID}, not {other}"):
        s.open_run(MarkerManifest(run_id=other))


def test_a_second_writer_is_refused(store, path):
    with MarkerStore(path) as second, pytest.raises(Backend, match="another writer"):
        second.open_run(manifest())


def test_read_only_open_of_missing_or_foreign_files(tmp_path):
    with pytest.raises(Backend, match="no marker run file"):
        MarkerStore.open_read_only(tmp_path / "nope.markers.lmdb")
    junk = tmp_path / "junk.markers.lmdb"
    junk.write_bytes(b"not lmdb at all" * 1000)
    with pytest.raises((Corrupted, Backend)):
        MarkerStore.open_read_only(junk)


def test_scan_reports_a_tampered_hash_as_corrupted(store, path):
    store.append_snapshot(snap(1))
    store.close()
    key = (1).to_bytes(8, "big")
    value = bytearray(raw_get(path, MarkerRecordKind.Snapshot, key))
    value[0] ^= 0xFF
    raw_put(path, MarkerRecordKind.Snapshot, key, bytes(value))
    with MarkerStore.open_read_only(path) as ro, pytest.raises(Corrupted, match="hash mismatch"):
        ro.scan_snapshots()


# ---- verifier: pure core (spec §6 verifier.rs) -----------------------------------------------------
def counts_for(**stored_lists) -> MarkerManifest:
    return manifest(snapshot_count=len(stored_lists.get("s", [])), hifi_count=len(stored_lists.get("h", [])),
                    gap_count=len(stored_lists.get("g", [])), dict_count=len(stored_lists.get("d", [])))


def audit(s=(), h=(), g=(), d=(), hwm=100, m=None):
    lists = {"s": list(s), "h": list(h), "g": list(g), "d": list(d)}
    m = m or counts_for(**lists)
    return audit_markers(m, {MarkerRecordKind.Snapshot: [stored(x) for x in s], MarkerRecordKind.HiFi: [stored(x) for x in h],
                             MarkerRecordKind.Gap: [stored(x) for x in g], MarkerRecordKind.Dict: [stored(x) for x in d]}, hwm)


def test_audit_clean_cases():
    assert audit(s=[snap(1), snap(2)], hwm=2) == []
    assert audit(s=[snap(1), snap(3)], h=[hifi(2)]) == []
    assert audit(s=[snap(1), snap(3)], g=[MarkerGap(2, 2, MarkerGapReason.Overflow)]) == []


def test_audit_findings_match_the_spec():
    assert audit(s=[snap(1)], m=manifest(snapshot_count=2)) == [ManifestCountMismatch(MarkerCountKind.Snapshot, 2, 1)]
    assert audit(s=[snap(1), snap(3)]) == [MarkerSeqGap(2, 2)]
    assert audit(g=[MarkerGap(4, 2, MarkerGapReason.Overflow)]) == [InvalidMarkerGap(4, 2)]
    assert audit(s=[snap(1)], g=[MarkerGap(1, 1, MarkerGapReason.Overflow)]) == [MarkerSeqOverlap(1, 1)]
    assert audit(s=[snap(0)]) == [MarkerSeqOverlap(0, 0)]
    assert audit(s=[snap(1, cursors=(StreamCursor(0, 1, 10),)), snap(2, cursors=(StreamCursor(0, 1, 9),))]) == [
        CursorCountRegressed(2, 0, 10, 9)]
    assert audit(s=[snap(1, cursors=(StreamCursor(0, 200, 1),)), snap(2, cursors=(StreamCursor(0, 199, 2),))]) == [
        CursorTsInitRegressed(2, 0, 200, 199)]
    assert audit(s=[snap(1, esb=10), snap(2, esb=9)]) == [EventSeqRegressed(2, 10, 9)]
    assert audit(s=[snap(1, esb=11)], hwm=10) == [EventSeqExceedsHighWatermark(1, 11, 10)]


def test_audit_reports_bad_stored_hashes_per_record_kind():
    bad = b"\x00" * 32
    m = manifest(snapshot_count=1, hifi_count=1, gap_count=1, dict_count=1)
    findings = audit_markers(m, {
        MarkerRecordKind.Snapshot: [stored(snap(1), bad)],
        MarkerRecordKind.HiFi: [stored(hifi(2), bad)],
        MarkerRecordKind.Gap: [stored(MarkerGap(3, 3, MarkerGapReason.Overflow), bad)],
        MarkerRecordKind.Dict: [stored(StreamDictEntry(0, DataClass.Quote, "X"), bad)],
    }, 100)
    assert findings == [MarkerHashMismatch(MarkerRecordKind.Snapshot, 1, None), MarkerHashMismatch(MarkerRecordKind.HiFi, 2, 0),
                        MarkerHashMismatch(MarkerRecordKind.Gap, None, None), MarkerHashMismatch(MarkerRecordKind.Dict, None, 0)]
    assert findings[0].describe() == "marker hash mismatch snapshot marker_seq=1"


# ---- verifier over real files --------------------------------------------------------------------
def build_clean(store) -> None:
    store.append_snapshot(snap(1))
    store.append_hifi(hifi(2))
    store.append_gap(MarkerGap(3, 3, MarkerGapReason.Overflow))
    store.put_dict_entry(StreamDictEntry(0, DataClass.Quote, "X"))
    store.put_dict_entry(StreamDictEntry(1, DataClass.Trade, "Y"))


def test_verify_clean_unsealed_file(store, path):
    build_clean(store)
    store.close()  # (the verifier runs in another process in production; py-lmdb allows one env per file)
    report = verify_marker_file(path, 42)
    assert report.is_clean(), report.describe()
    assert (report.status, report.snapshots_scanned, report.hifi_scanned, report.gaps_scanned,
            report.dict_entries_scanned) == (RunStatus.Running, 1, 1, 1, 2)
    assert verify_marker_file(path, 42).status is RunStatus.Running  # read-only: never recovered


def test_verify_clean_sealed_file(store, path):
    build_clean(store)
    store.seal(RunStatus.Ended)
    store.close()
    report = verify_marker_file(path, 42)
    assert report.is_clean() and report.status is RunStatus.Ended and report.run_id == RUN_ID


def test_verify_flipped_hash_byte_is_a_hash_mismatch(store, path):
    build_clean(store)
    store.close()
    key = (2).to_bytes(8, "big")
    value = bytearray(raw_get(path, MarkerRecordKind.HiFi, key))
    value[5] ^= 0x01
    raw_put(path, MarkerRecordKind.HiFi, key, bytes(value))
    report = verify_marker_file(path, 42)
    assert report.findings == (MarkerHashMismatch(MarkerRecordKind.HiFi, 2, 0),)
    assert report.describe() == ["marker hash mismatch hifi marker_seq=2 slot=0"]


def test_verify_flipped_record_byte_is_reported_never_raised(store, path):
    build_clean(store)
    store.close()
    key = (1).to_bytes(8, "big")
    value = raw_get(path, MarkerRecordKind.Snapshot, key)
    for i in range(32, len(value)):  # every single-byte flip of the msgpack body
        tampered = bytearray(value)
        tampered[i] ^= 0xFF
        raw_put(path, MarkerRecordKind.Snapshot, key, bytes(tampered))
        report = verify_marker_file(path, 42)
        assert not report.is_clean()
        assert all(isinstance(f, (MarkerHashMismatch, UndecodableMarkerRecord, MarkerKeyMismatch, MarkerSeqGap,
                                  MarkerSeqOverlap, EventSeqExceedsHighWatermark, EventSeqRegressed,
                                  ManifestCountMismatch)) for f in report.findings), report.findings


def test_verify_uncovered_seq_gap_and_count_mismatch(store, path):
    store.append_snapshot(snap(1))
    store.close()
    raw_put(path, MarkerRecordKind.Snapshot, (4).to_bytes(8, "big"), encode_stored(snap(4), compute_marker_hash(snap(4))))
    report = verify_marker_file(path, 42)
    assert report.findings == (ManifestCountMismatch(MarkerCountKind.Snapshot, 1, 2), MarkerSeqGap(2, 3))
    assert report.describe()[1] == "marker seq gap from=2 to=3 not covered by a marker gap"


def test_verify_key_mismatch_and_duplicate_dict_slot(store, path):
    store.put_dict_entry(StreamDictEntry(0, DataClass.Quote, "X"))
    store.close()
    entry = StreamDictEntry(0, DataClass.Trade, "Y")
    raw_put(path, MarkerRecordKind.Dict, (5).to_bytes(4, "big"), encode_stored(entry, compute_dict_hash(entry)))
    findings = verify_marker_file(path).findings
    assert MarkerKeyMismatch(MarkerRecordKind.Dict, "00000005", 0) in findings
    assert DuplicateDictSlot(0) in findings
    assert ManifestCountMismatch(MarkerCountKind.Dict, 1, 2) in findings


def test_verify_is_bounded(store, path):
    for seq in range(1, 6):
        store.append_snapshot(snap(seq))
    store.close()
    report = verify_marker_file(path, 42, max_records=3)
    assert MarkerScanTruncated(MarkerRecordKind.Snapshot, 3) in report.findings
    assert report.snapshots_scanned == 3
    assert not any(isinstance(f, ManifestCountMismatch) for f in report.findings)


def test_verify_unreadable_files_become_findings(tmp_path):
    missing = verify_marker_file(tmp_path / "absent.markers.lmdb")
    assert isinstance(missing.findings[0], SidecarUnreadable) and missing.status is None
    junk = tmp_path / "junk.markers.lmdb"
    junk.write_bytes(os.urandom(64 * 1024))
    assert isinstance(verify_marker_file(junk).findings[0], SidecarUnreadable)


def test_findings_round_trip_as_tagged_msgpack(store, path):
    store.close()
    raw_put(path, MarkerRecordKind.Snapshot, (3).to_bytes(8, "big"), encode_stored(snap(3), b"\x00" * 32))
    report = verify_marker_file(path)
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(report), type=type(report))
    assert decoded == report and not report.is_clean()
