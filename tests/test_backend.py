"""The EventStore backend contract (spec sections 4, 5, 8.B/8.D) over MemoryBackend and
LmdbBackend, then LMDB-specific behaviours: file layout and modes, id validation, the format
marker, crash adoption, sealed read-only handles, map growth, disk full, the single-writer lock,
raw-file corruption, and a round-trip property.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend_helpers import (
    INSTANCE_ID,
    RUN_ID,
    appends,
    build_entry,
    manifest,
    seqs,
    with_keys,
)
from runfile_helpers import seal_as_is
from nes.backend import layout
from nes.backend.base import AppendEntry, EncodedEntry, IndexKey, IndexKind, PreparedBatch, ScanDirection
from nes.backend.lmdb import LmdbBackend, read_manifest
from nes.backend.seal_record import seal_record_path
from nes.backend.memory import MemoryBackend
from nes.codec import key_seq, seq_key
from nes.entry import EventStoreEntry, encode_stored_value
from nes.errors import Backend, Closed, Corrupted, CrashedPredecessor, Gap, HashMismatch, OutOfOrder, UnsupportedFormat
from nes.headers import Headers
from nes.manifest import RunStatus
from nes.snapshot import SnapshotAnchor

F = ScanDirection.Forward
R = ScanDirection.Reverse
CID = IndexKind.ClientOrderId
VID = IndexKind.VenueOrderId
TERMINAL = [RunStatus.Ended, RunStatus.CrashedRecovered, RunStatus.Quarantined]
REPO_ROOT = Path(__file__).resolve().parent.parent


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "lmdb"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_backend(kind: str, tmp_path: Path) -> Iterator[Callable[[], object]]:
    """A factory of fresh, unopened backends of the parametrized kind (closed at teardown)."""
    made: list[object] = []

    def factory() -> object:
        backend: object = MemoryBackend() if kind == "memory" else LmdbBackend(tmp_path)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        close = getattr(backend, "close", None)
        if close is not None:
            close()


@pytest.fixture
def backend(new_backend: Callable[[], object]) -> object:
    """A backend holding a freshly opened Running run."""
    b = new_backend()
    b.open_run(manifest())  # type: ignore[attr-defined]
    return b


def tampered(entry: EventStoreEntry) -> EventStoreEntry:
    """The entry with its payload changed after hashing (the hash no longer matches)."""
    return EventStoreEntry(
        entry.seq, entry.ts_init, entry.ts_publish, entry.topic, entry.payload_type,
        entry.payload + b"!", entry.headers, entry.entry_hash,
    )


# ---- no run open (R6, R7, R45) -------------------------------------------------------------


def test_every_method_without_open_run_is_backend_no_run_open(new_backend) -> None:  # noqa: ANN001
    b = new_backend()
    anchor = SnapshotAnchor(1, "cache://x", "blake3:abc")
    calls = [
        lambda: b.manifest(),
        lambda: b.high_watermark(),
        lambda: b.append_batch([]),
        lambda: b.append_encoded([]),
        lambda: b.scan_range(1, 1, F),
        lambda: b.scan_seq(1),
        lambda: b.lookup(CID, "O-1"),
        lambda: b.lookup_all(CID, "O-1"),
        lambda: b.iter_index_keys(CID),
        lambda: b.record_snapshot_anchor(anchor),
        lambda: b.latest_snapshot_anchor(),
        lambda: b.seal(RunStatus.Ended),
    ]
    for call in calls:
        with pytest.raises(Backend, match="no run open"):
            call()


# ---- open / append (R9-R14) ----------------------------------------------------------------


def test_open_run_starts_running_at_zero_with_no_end(new_backend) -> None:  # noqa: ANN001
    b = new_backend()
    b.open_run(msgspec.structs.replace(manifest(), status=RunStatus.Ended, high_watermark=7, end_ts_init=99))
    m = b.manifest()
    assert m.status is RunStatus.Running
    assert m.high_watermark == 0
    assert m.end_ts_init is None
    assert m.run_id == RUN_ID and m.instance_id == INSTANCE_ID and m.binary_hash == "deadbeef"
    assert b.high_watermark() == 0


def test_contiguous_appends_advance_high_watermark(backend) -> None:  # noqa: ANN001
    assert backend.append_batch(appends(1, 3)) == 3
    assert backend.high_watermark() == 3
    assert backend.manifest().high_watermark == 3
    assert backend.append_batch(appends(4, 4)) == 4
    assert backend.append_batch(appends(5, 9)) == 9
    assert seqs(backend.scan_range(1, 9, F)) == list(range(1, 10))


def test_append_encoded_accepts_prebuilt_values(backend) -> None:  # noqa: ANN001
    encoded = [a.encoded() for a in appends(1, 4)]
    assert all(isinstance(e, EncodedEntry) for e in encoded)
    assert backend.append_encoded(encoded) == 4
    assert backend.scan_seq(4) == build_entry(4)


def test_append_encoded_refuses_a_value_too_short_to_be_an_entry_and_lands_nothing(backend) -> None:  # noqa: ANN001
    encoded = [a.encoded() for a in appends(1, 3)]
    encoded[1] = EncodedEntry(2, encoded[1].value[:40])  # cut inside the frame's fixed fields
    with pytest.raises(Backend, match="shorter than"):
        backend.append_encoded(encoded)
    assert backend.high_watermark() == 0
    assert backend.append_encoded([a.encoded() for a in appends(1, 3)]) == 3


def test_append_encoded_reports_the_first_problem_entry_by_entry(backend) -> None:  # noqa: ANN001
    """Seq, then index keys, entry by entry: a bad key before a bad seq is what is reported."""
    good, bad_key, out_of_order = [a.encoded() for a in appends(1, 3)]
    bad_key = EncodedEntry(2, bad_key.value, (IndexKey(CID, ""),))
    with pytest.raises(Backend, match="seq 2: index key must be 1..511"):
        backend.append_encoded([good, bad_key, EncodedEntry(5, out_of_order.value)])
    with pytest.raises(OutOfOrder) as info:
        backend.append_encoded([good, EncodedEntry(5, out_of_order.value, (IndexKey(CID, ""),))])
    assert info.value == OutOfOrder(0, 5)  # its own keys come after its seq
    assert backend.high_watermark() == 0


def test_append_encoded_max_ts_init_is_the_batch_maximum_not_the_last(backend) -> None:  # noqa: ANN001
    entries = [EventStoreEntry.build(s, ts, ts, "t.x", "T", b"p") for s, ts in ((1, 50), (2, 1 << 60), (3, 7))]
    backend.append_encoded([AppendEntry.without_indices(e).encoded() for e in entries])
    backend.seal(RunStatus.Ended)
    assert backend.manifest().end_ts_init == 1 << 60


def test_first_batch_not_starting_at_one_is_out_of_order(backend) -> None:  # noqa: ANN001
    with pytest.raises(OutOfOrder) as info:
        backend.append_batch(appends(2, 2))
    assert (info.value.high_watermark, info.value.seq) == (0, 2)
    assert backend.high_watermark() == 0


def test_out_of_order_inside_batch_carries_durable_hwm_and_nothing_lands(backend) -> None:  # noqa: ANN001
    backend.append_batch(appends(1, 2))
    batch = appends(3, 5) + appends(7, 7)  # 3,4,5 valid, then a gap
    with pytest.raises(OutOfOrder) as info:
        backend.append_batch(batch)
    assert info.value == OutOfOrder(2, 7)  # the DURABLE hwm, not the in-batch cursor (5)
    assert backend.high_watermark() == 2
    assert backend.scan_seq(3) is None
    assert seqs(backend.scan_range(1, 99, F)) == [1, 2]
    # and the run continues normally from the durable hwm
    assert backend.append_batch(appends(3, 3)) == 3


def test_batch_with_gap_from_empty_run_lands_nothing(backend) -> None:  # noqa: ANN001
    with pytest.raises(OutOfOrder) as info:
        backend.append_batch(appends(1, 1) + appends(3, 3))
    assert info.value == OutOfOrder(0, 3)
    assert backend.high_watermark() == 0
    assert backend.scan_seq(1) is None


def test_already_committed_seq_is_out_of_order(backend) -> None:  # noqa: ANN001
    backend.append_batch(appends(1, 3))
    with pytest.raises(OutOfOrder) as info:
        backend.append_batch(appends(3, 3))
    assert info.value == OutOfOrder(3, 3)
    with pytest.raises(OutOfOrder):
        backend.append_batch(appends(4, 4) + appends(4, 4))
    assert backend.high_watermark() == 3


def test_empty_batch_is_a_noop(backend) -> None:  # noqa: ANN001
    assert backend.append_batch([]) == 0
    assert backend.high_watermark() == 0
    backend.append_batch(appends(1, 2))
    assert backend.append_batch([]) == 2
    assert backend.append_encoded([]) == 2
    assert backend.high_watermark() == 2


def prepared(lo: int, hi: int, keys: dict[int, str] | None = None) -> PreparedBatch:
    encoded = [a.encoded() for a in appends(lo, hi)]
    return PreparedBatch(
        lo,
        [(seq_key(e.seq), e.value) for e in encoded],
        [(CID, key, seq) for seq, key in (keys or {}).items()],
        max(build_entry(s).ts_init for s in range(lo, hi + 1)),
    )


def test_append_prepared_commits_contiguous_batch(backend) -> None:  # noqa: ANN001
    assert backend.append_prepared(prepared(1, 3, {2: "O-2"})) == 3
    assert backend.append_prepared(prepared(4, 5)) == 5
    assert backend.scan_range(1, 5, F) == [build_entry(s) for s in range(1, 6)]
    assert backend.lookup(CID, "O-2") == 2
    backend.seal(RunStatus.Ended)
    assert backend.manifest().end_ts_init == build_entry(5).ts_init


def test_append_prepared_wrong_first_seq_is_out_of_order_and_nothing_lands(backend) -> None:  # noqa: ANN001
    backend.append_prepared(prepared(1, 2))
    for lo in (2, 4):
        with pytest.raises(OutOfOrder) as info:
            backend.append_prepared(prepared(lo, lo + 1, {lo: "O-x"}))
        assert info.value == OutOfOrder(2, lo)
    assert backend.high_watermark() == 2
    assert backend.lookup(CID, "O-x") is None
    assert backend.scan_seq(3) is None


def test_append_prepared_empty_is_noop_and_sealed_is_closed(backend) -> None:  # noqa: ANN001
    assert backend.append_prepared(PreparedBatch(1, [], [], 0)) == 0
    assert backend.append_prepared(PreparedBatch(7, [], [], 0)) == 0
    backend.seal(RunStatus.Ended)
    with pytest.raises(Closed):
        backend.append_prepared(prepared(1, 1))
    with pytest.raises(Closed):
        backend.append_prepared(PreparedBatch(1, [], [], 0))


# ---- scans (R21-R23) -----------------------------------------------------------------------


def test_scan_seq_returns_entry_and_none_outside_hwm(backend) -> None:  # noqa: ANN001
    backend.append_batch(appends(1, 3))
    e = backend.scan_seq(2)
    assert e.seq == 2 and e.ts_init == 11
    assert e == build_entry(2)
    assert backend.scan_seq(0) is None
    assert backend.scan_seq(4) is None
    assert backend.scan_seq(10**9) is None


def test_scan_range_both_directions(backend) -> None:  # noqa: ANN001
    backend.append_batch(appends(1, 3))
    cases = {
        (1, 3, F): [1, 2, 3],
        (1, 3, R): [3, 2, 1],
        (2, 3, F): [2, 3],
        (2, 3, R): [3, 2],
        (2, 99, F): [2, 3],
        (2, 99, R): [3, 2],
        (3, 1, F): [],
        (3, 1, R): [],
        (0, 0, F): [],
        (0, 3, F): [],
        (4, 9, F): [],
        (3, 3, R): [3],
    }
    for (lo, hi, direction), expected in cases.items():
        assert seqs(backend.scan_range(lo, hi, direction)) == expected, (lo, hi, direction)


def test_scan_on_empty_run_is_empty(backend) -> None:  # noqa: ANN001
    assert backend.scan_range(1, 10, F) == []
    assert backend.scan_range(1, 10, R) == []
    assert backend.scan_seq(1) is None


def test_scanned_entries_equal_appended_entries(backend) -> None:  # noqa: ANN001
    h = Headers(uuid.uuid4(), uuid.uuid4())
    built = [build_entry(1, headers=h), build_entry(2, payload=b""), build_entry(3, payload=b"x" * 1000)]
    backend.append_batch([AppendEntry.without_indices(e) for e in built])
    assert backend.scan_range(1, 3, F) == built
    assert backend.scan_range(1, 3, R) == built[::-1]
    assert [backend.scan_seq(i) for i in (1, 2, 3)] == built


# ---- hashes (R34) --------------------------------------------------------------------------


def test_tampered_entry_is_accepted_on_append_but_fails_hash_check_on_read(backend) -> None:  # noqa: ANN001
    bad = tampered(build_entry(1))
    assert backend.append_batch([AppendEntry.without_indices(bad)]) == 1
    assert backend.high_watermark() == 1
    with pytest.raises(HashMismatch) as info:
        backend.scan_seq(1)
    assert info.value.seq == 1
    with pytest.raises(HashMismatch):
        backend.scan_range(1, 1, F)
    with pytest.raises(HashMismatch):
        backend.scan_range(1, 1, R)


def test_tampered_entry_in_the_middle_fails_whole_window_both_directions(backend) -> None:  # noqa: ANN001
    batch = appends(1, 2) + [AppendEntry.without_indices(tampered(build_entry(3)))] + appends(4, 5)
    backend.append_batch(batch)
    for direction in (F, R):
        with pytest.raises(HashMismatch) as info:
            backend.scan_range(1, 5, direction)
        assert info.value.seq == 3
    assert seqs(backend.scan_range(4, 5, F)) == [4, 5]


# ---- gaps inside the high-watermark (R35, R36 via memory corruption; LMDB raw below) -------


def test_memory_gap_inside_hwm_is_detected() -> None:
    b = MemoryBackend()
    b.open_run(manifest())
    b.append_batch(appends(1, 3))
    del b._values[1:]  # simulate lost rows 2,3 while hwm says 3
    with pytest.raises(Gap) as info:
        b.scan_seq(2)
    assert info.value == Gap(1, 3, 2)
    with pytest.raises(Gap) as info:
        b.scan_range(1, 3, F)
    assert info.value == Gap(1, 4, 2)  # rows ran out before hi: next = hi + 1


# ---- seal (R13, R27-R31) -------------------------------------------------------------------


@pytest.mark.parametrize("status", TERMINAL, ids=[s.value for s in TERMINAL])
def test_seal_records_status_hwm_and_max_ts_init(backend, status: RunStatus) -> None:  # noqa: ANN001
    backend.append_batch([AppendEntry.without_indices(build_entry(s, ts)) for s, ts in ((1, 10), (2, 25), (3, 17))])
    backend.seal(status)
    m = backend.manifest()
    assert m.status is status
    assert m.high_watermark == 3
    assert m.end_ts_init == 25  # the max, not the last
    assert backend.high_watermark() == 3
    with pytest.raises(Closed):
        backend.seal(status)
    for other in TERMINAL:
        with pytest.raises(Closed):
            backend.seal(other)


def test_seal_transition_table(new_backend) -> None:  # noqa: ANN001
    """Running -> any terminal is allowed; terminal -> anything is Closed; -> Running is Backend."""
    for first in TERMINAL:
        b = new_backend()
        b.open_run(manifest(run_id=f"run-{first.value}"))
        b.seal(first)
        with pytest.raises(Backend, match="Running"):
            b.seal(RunStatus.Running)  # the terminal-target check comes first
        for second in TERMINAL:
            with pytest.raises(Closed):
                b.seal(second)
        assert b.manifest().status is first


def test_seal_running_is_backend_and_leaves_run_writable(backend) -> None:  # noqa: ANN001
    with pytest.raises(Backend, match="seal status must be a terminal state, was Running"):
        backend.seal(RunStatus.Running)
    assert not backend.manifest().is_sealed()
    assert backend.append_batch(appends(1, 1)) == 1


def test_seal_empty_run_keeps_end_ts_init_none(backend) -> None:  # noqa: ANN001
    backend.seal(RunStatus.Ended)
    m = backend.manifest()
    assert (m.status, m.high_watermark, m.end_ts_init) == (RunStatus.Ended, 0, None)


def test_sealed_run_refuses_append_and_anchor_but_reads(backend) -> None:  # noqa: ANN001
    backend.append_batch(appends(1, 2))
    backend.record_snapshot_anchor(SnapshotAnchor(1, "cache://a/1", "blake3:1"))
    backend.seal(RunStatus.Ended)
    with pytest.raises(Closed):
        backend.append_batch(appends(3, 3))
    with pytest.raises(Closed):
        backend.append_batch([])  # sealed is checked before the empty-batch no-op
    with pytest.raises(Closed):
        backend.append_encoded([a.encoded() for a in appends(3, 3)])
    with pytest.raises(Closed):
        backend.record_snapshot_anchor(SnapshotAnchor(2, "cache://a/2", "blake3:2"))
    assert seqs(backend.scan_range(1, 2, F)) == [1, 2]
    assert backend.scan_seq(2) == build_entry(2)
    assert backend.latest_snapshot_anchor() == SnapshotAnchor(1, "cache://a/1", "blake3:1")
    assert backend.high_watermark() == 2


def test_open_after_unsealed_run_is_crashed_predecessor_and_keeps_state(new_backend) -> None:  # noqa: ANN001
    b = new_backend()
    b.open_run(manifest(run_id="run-1"))
    b.append_batch(appends(1, 1))
    with pytest.raises(CrashedPredecessor):
        b.open_run(manifest(run_id="run-2"))
    assert b.scan_seq(1) == build_entry(1)
    assert b.manifest().run_id == "run-1"
    b.seal(RunStatus.CrashedRecovered)
    b.open_run(manifest(run_id="run-2"))
    m = b.manifest()
    assert (m.run_id, m.high_watermark, m.status) == ("run-2", 0, RunStatus.Running)
    assert b.high_watermark() == 0
    assert b.scan_seq(1) is None


def test_open_after_sealed_run_starts_new_run(new_backend) -> None:  # noqa: ANN001
    b = new_backend()
    b.open_run(manifest(run_id="run-1"))
    b.append_batch(appends(1, 2))
    b.seal(RunStatus.Ended)
    b.open_run(manifest(run_id="run-2"))
    assert b.manifest().run_id == "run-2"
    assert b.high_watermark() == 0
    assert b.latest_snapshot_anchor() is None
    assert b.lookup(CID, "anything") is None


# ---- snapshot anchors (R15-R19, M1) --------------------------------------------------------


def test_anchor_none_before_record_then_roundtrips(backend) -> None:  # noqa: ANN001
    assert backend.latest_snapshot_anchor() is None
    backend.append_batch(appends(1, 2))
    anchor = SnapshotAnchor(2, "cache://snapshots/run-1/2", "blake3:abc")
    backend.record_snapshot_anchor(anchor)
    assert backend.latest_snapshot_anchor() == anchor


def test_anchor_past_durable_hwm_is_refused(backend) -> None:  # noqa: ANN001
    with pytest.raises(Backend, match="exceeds durable high_watermark"):
        backend.record_snapshot_anchor(SnapshotAnchor(1, "cache://a/1", "blake3:1"))
    backend.append_batch(appends(1, 2))
    with pytest.raises(Backend, match="exceeds durable high_watermark"):
        backend.record_snapshot_anchor(SnapshotAnchor(3, "cache://a/3", "blake3:3"))
    assert backend.latest_snapshot_anchor() is None


def test_anchor_older_than_latest_is_refused_equal_replaces_latest_returned(backend) -> None:  # noqa: ANN001
    backend.append_batch(appends(1, 4))
    backend.record_snapshot_anchor(SnapshotAnchor(2, "cache://a/2", "blake3:2"))
    with pytest.raises(Backend, match="older than latest anchor"):
        backend.record_snapshot_anchor(SnapshotAnchor(1, "cache://a/1", "blake3:1"))
    assert backend.latest_snapshot_anchor() == SnapshotAnchor(2, "cache://a/2", "blake3:2")
    backend.record_snapshot_anchor(SnapshotAnchor(2, "cache://a/2b", "blake3:2b"))
    assert backend.latest_snapshot_anchor() == SnapshotAnchor(2, "cache://a/2b", "blake3:2b")
    backend.record_snapshot_anchor(SnapshotAnchor(4, "cache://a/4", "blake3:4"))
    assert backend.latest_snapshot_anchor() == SnapshotAnchor(4, "cache://a/4", "blake3:4")


# ---- indices (R24-R26, R37, R38, R44) ------------------------------------------------------


def test_lookup_returns_first_seq_and_lookup_all_every_seq_in_order(backend) -> None:  # noqa: ANN001
    backend.append_batch([
        with_keys(build_entry(1), (CID, "O-1"), (VID, "V-1"), (CID, "O-1")),  # dup within an entry
        with_keys(build_entry(2), (CID, "O-1"), (VID, "V-1")),
        with_keys(build_entry(3), (CID, "O-2")),
    ])
    backend.append_batch([with_keys(build_entry(4), (CID, "O-1")), with_keys(build_entry(5))])
    assert backend.lookup(CID, "O-1") == 1
    assert backend.lookup(VID, "V-1") == 1
    assert backend.lookup_all(CID, "O-1") == [1, 2, 4]
    assert backend.lookup_all(VID, "V-1") == [1, 2]
    assert backend.lookup_all(CID, "O-2") == [3]
    assert backend.lookup(CID, "missing") is None
    assert backend.lookup_all(CID, "missing") == []


def test_index_kinds_are_isolated(backend) -> None:  # noqa: ANN001
    backend.append_batch([with_keys(build_entry(1), (CID, "shared"))])
    assert backend.lookup(CID, "shared") == 1
    assert backend.lookup(VID, "shared") is None


def test_headers_without_index_keys_record_no_index_rows(backend) -> None:  # noqa: ANN001
    backend.append_batch([AppendEntry.without_indices(build_entry(1, headers=Headers(uuid.uuid4(), None)))])
    assert backend.lookup(CID, "any") is None
    assert backend.iter_index_keys(CID) == []
    assert backend.iter_index_keys(VID) == []


def test_iter_index_keys_in_key_byte_order_with_first_seq(backend) -> None:  # noqa: ANN001
    keys = ["O-2", "O-1", "b", "B", "O-10", "é", "z", "Z-\u4e2d"]
    backend.append_batch([with_keys(build_entry(i + 1), (CID, k)) for i, k in enumerate(keys)])
    backend.append_batch([with_keys(build_entry(len(keys) + 1), (CID, "O-1"), (VID, "V-1"))])
    expected = sorted(((k, i + 1) for i, k in enumerate(keys)), key=lambda p: p[0].encode("utf-8"))
    assert backend.iter_index_keys(CID) == expected
    assert backend.iter_index_keys(VID) == [("V-1", len(keys) + 1)]


def test_failed_batch_records_no_index_rows(backend) -> None:  # noqa: ANN001
    with pytest.raises(OutOfOrder):
        backend.append_batch([with_keys(build_entry(1), (CID, "O-1")), with_keys(build_entry(3), (CID, "O-3"))])
    assert backend.iter_index_keys(CID) == []


@pytest.mark.parametrize("key", ["", "k" * 512, "\udcff"], ids=["empty", "512-bytes", "not-utf8"])
def test_index_key_outside_lmdb_key_size_is_refused_by_both_backends(backend, key: str) -> None:  # noqa: ANN001
    """LMDB keys are 1..511 bytes: both backends refuse other order ids before anything lands."""
    with pytest.raises(Backend, match="index key"):
        backend.append_batch([with_keys(build_entry(1), (CID, key))])
    assert backend.high_watermark() == 0
    backend.append_batch([with_keys(build_entry(1), (CID, "k" * 511))])
    assert backend.lookup(CID, "k" * 511) == 1
    assert backend.lookup_all(CID, key) == []  # a key that can never be stored is simply absent


def test_memory_and_lmdb_agree_on_lookups(tmp_path: Path) -> None:
    batch = [
        with_keys(build_entry(1), (CID, "O-1"), (VID, "V-1")),
        with_keys(build_entry(2), (CID, "O-2"), (VID, "V-1")),
        with_keys(build_entry(3), (CID, "O-1")),
    ]
    mem, disk = MemoryBackend(), LmdbBackend(tmp_path)
    with disk:
        for b in (mem, disk):
            b.open_run(manifest())
            b.append_batch(batch)
        for k in (CID, VID):
            assert mem.iter_index_keys(k) == disk.iter_index_keys(k)
            for key in ("O-1", "O-2", "V-1", "nope"):
                assert mem.lookup(k, key) == disk.lookup(k, key)
                assert mem.lookup_all(k, key) == disk.lookup_all(k, key)
        assert mem.scan_range(1, 3, F) == disk.scan_range(1, 3, F)


# ---- manifest after seal -------------------------------------------------------------------


def test_manifest_high_watermark_tracks_appends_and_seal(backend) -> None:  # noqa: ANN001
    assert backend.manifest().high_watermark == 0
    backend.append_batch([AppendEntry.without_indices(build_entry(1, 500)), AppendEntry.without_indices(build_entry(2, 300))])
    assert backend.manifest().high_watermark == 2
    assert backend.manifest().end_ts_init is None
    backend.seal(RunStatus.Ended)
    m = backend.manifest()
    assert (m.high_watermark, m.end_ts_init, m.status) == (2, 500, RunStatus.Ended)


def test_memory_corrupt_value_is_hash_checked() -> None:
    b = MemoryBackend()
    b.open_run(manifest())
    b.append_batch(appends(1, 2))
    good = build_entry(2)
    b.corrupt_value(2, b"\xff" * 8)
    with pytest.raises(Corrupted, match="decode entry seq=2"):
        b.scan_seq(2)
    raw = bytearray(AppendEntry.without_indices(good).encoded().value)
    raw[-1] ^= 0xFF
    b.corrupt_value(2, bytes(raw))
    with pytest.raises((HashMismatch, Corrupted)):
        b.scan_range(1, 2, F)


# =============================================================================================
# LMDB-specific
# =============================================================================================


def run_path(base: Path, run_id: str = RUN_ID, instance_id: str = INSTANCE_ID) -> Path:
    return base / instance_id / f"{run_id}.lmdb"


class RawFile:
    """A raw py-lmdb handle on a run file (only while no backend holds it in this process).

    A hand edit of a sealed file is what its seal record's file digest refuses before any
    mapping (pinned in test_integrity); the tests here pin the checks below that proof, so the
    record is dropped, as a crash between the seal commit and the record leaves a sealed file."""

    def __init__(self, path: Path) -> None:
        seal_record_path(path).unlink(missing_ok=True)
        self.env = lmdb.open(str(path), subdir=False, max_dbs=layout.MAX_DBS, create=False, map_size=1 << 30)
        self.entries = self.env.open_db(layout.DB_ENTRIES)
        self.meta = self.env.open_db(layout.DB_META)
        self.manifest = self.env.open_db(layout.DB_MANIFEST)
        self.anchors = self.env.open_db(layout.DB_ANCHORS)

    def __enter__(self) -> RawFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.env.close()

    def get(self, seq: int) -> bytes:
        with self.env.begin(db=self.entries) as txn:
            return bytes(txn.get(seq_key(seq)))

    def put(self, seq: int, value: bytes) -> None:
        with self.env.begin(write=True, db=self.entries) as txn:
            txn.put(seq_key(seq), value)

    def delete(self, seq: int) -> None:
        with self.env.begin(write=True, db=self.entries) as txn:
            assert txn.delete(seq_key(seq))

    def keys(self) -> list[int]:
        with self.env.begin(db=self.entries) as txn:
            return [key_seq(k) for k in txn.cursor().iternext(keys=True, values=False)]


def write_run(base: Path, count: int, *, seal: RunStatus | None = RunStatus.Ended, run_id: str = RUN_ID,
              start_ts_init: int = 1_700_000_000, ts: list[int] | None = None) -> Path:
    """A run file with entries 1..count written through LmdbBackend, optionally sealed, closed."""
    with LmdbBackend(base) as b:
        b.open_run(manifest(run_id=run_id, start_ts_init=start_ts_init))
        if count:
            entries = [build_entry(s, None if ts is None else ts[s - 1]) for s in range(1, count + 1)]
            b.append_batch([AppendEntry.without_indices(e) for e in entries])
        if seal is not None:
            b.seal(seal)
        return b.path  # type: ignore[return-value]


# ---- layout and permissions ----------------------------------------------------------------


def test_lmdb_path_layout_and_modes(tmp_path: Path) -> None:
    base = tmp_path / "store"
    b = LmdbBackend(base)
    assert not base.exists()  # the constructor creates nothing
    with b:
        b.open_run(manifest())
        path = run_path(base)
        assert b.path == path
        assert path.is_file()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        lock = Path(f"{path}-lock")
        assert lock.is_file()
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert stat.S_IMODE((base / INSTANCE_ID).stat().st_mode) == 0o700
        assert sorted(p.name for p in (base / INSTANCE_ID).iterdir()) == [f"{RUN_ID}.lmdb", f"{RUN_ID}.lmdb-lock"]


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "..", ".", "-x", "a\x00b", "x" * 129])
@pytest.mark.parametrize("which", ["instance_id", "run_id"])
def test_lmdb_invalid_ids_rejected_before_any_file_is_created(tmp_path: Path, bad: str, which: str) -> None:
    base = tmp_path / "store"
    b = LmdbBackend(base)
    ids = {"instance_id": INSTANCE_ID, "run_id": RUN_ID, which: bad}
    with pytest.raises(ValueError, match=which):
        b.open_run(manifest(run_id=ids["run_id"], instance_id=ids["instance_id"]))
    assert not base.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(Backend, match="no run open"):
        b.high_watermark()


def test_lmdb_invalid_ids_rejected_by_open_sealed_and_list_runs(tmp_path: Path) -> None:
    b = LmdbBackend(tmp_path)
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            b.open_sealed(bad, RUN_ID)
        with pytest.raises(ValueError):
            b.open_sealed(INSTANCE_ID, bad)
        with pytest.raises(ValueError):
            b.list_runs(bad)
    assert list(tmp_path.iterdir()) == []


def test_lmdb_map_size_below_64k_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LmdbBackend(tmp_path, map_size=1 << 15)


# ---- format marker -------------------------------------------------------------------------


def test_lmdb_missing_format_marker_must_be_regenerated(tmp_path: Path) -> None:
    path = write_run(tmp_path, 3)
    with RawFile(path) as raw, raw.env.begin(write=True, db=raw.meta) as txn:
        assert txn.delete(layout.FORMAT_KEY)
    with pytest.raises(Corrupted, match="regenerated"):
        read_manifest(path)
    with pytest.raises(Corrupted, match="regenerated"):
        LmdbBackend.open_sealed_file(path)
    with LmdbBackend(tmp_path) as b, pytest.raises(Corrupted, match="regenerated"):
        b.open_run(manifest())  # R1 for an existing file


def test_lmdb_manifest_with_invalid_utf8_is_corrupted_not_a_crash(tmp_path: Path) -> None:
    import msgspec

    path = write_run(tmp_path, 2)
    broken = msgspec.msgpack.encode({"run_id": "x"}).replace(b"x", b"\xff")  # a str of invalid UTF-8
    with RawFile(path) as raw, raw.env.begin(write=True) as txn:
        txn.put(layout.MANIFEST_KEY, broken, db=raw.manifest)
    with pytest.raises(Corrupted, match="decode manifest"):
        read_manifest(path)
    with LmdbBackend(tmp_path) as b:
        assert b.list_runs(INSTANCE_ID) == []  # skipped, not a crash


def test_lmdb_missing_meta_db_must_be_regenerated(tmp_path: Path) -> None:
    path = write_run(tmp_path, 2)
    with RawFile(path) as raw:
        with raw.env.begin(write=True) as txn:
            txn.drop(raw.meta, delete=True)
    with pytest.raises(Corrupted, match="regenerated"):
        read_manifest(path)
    with pytest.raises(Corrupted, match="regenerated"):
        LmdbBackend.open_sealed_file(path)


@pytest.mark.parametrize("raw_version", [layout.encode_format_version(3), layout.encode_format_version(0), b"\x01"])
def test_lmdb_wrong_format_version_is_unsupported(tmp_path: Path, raw_version: bytes) -> None:
    path = write_run(tmp_path, 1)
    with RawFile(path) as raw, raw.env.begin(write=True, db=raw.meta) as txn:
        txn.put(layout.FORMAT_KEY, raw_version)
    with pytest.raises(Corrupted, match="unsupported event store on-disk format version"):
        read_manifest(path)
    with pytest.raises(Corrupted, match="unsupported event store on-disk format version"):
        LmdbBackend.open_sealed_file(path)
    with LmdbBackend(tmp_path) as b, pytest.raises(Corrupted, match="unsupported event store on-disk format version"):
        b.open_run(manifest())


def test_lmdb_fresh_file_carries_format_marker_and_manifest(tmp_path: Path) -> None:
    path = write_run(tmp_path, 0, seal=None)
    with RawFile(path) as raw, raw.env.begin() as txn:
        assert txn.get(layout.FORMAT_KEY, db=raw.meta) == layout.encode_format_version(2)
        assert txn.get(layout.MANIFEST_KEY, db=raw.manifest) is not None
    m = read_manifest(path)
    assert (m.status, m.high_watermark, m.end_ts_init) == (RunStatus.Running, 0, None)


# ---- crash adoption (R32, R35, R36, R39, R40) ----------------------------------------------


def test_lmdb_reopen_running_file_is_crashed_predecessor_then_sealable(tmp_path: Path) -> None:
    write_run(tmp_path, 3, seal=None, ts=[10, 25, 17])
    assert read_manifest(run_path(tmp_path)).high_watermark == 0  # the stored manifest is written at open/seal only
    with LmdbBackend(tmp_path) as b:
        with pytest.raises(CrashedPredecessor):
            b.open_run(manifest())
        assert b.high_watermark() == 3
        m = b.manifest()
        assert (m.status, m.high_watermark, m.run_id) == (RunStatus.Running, 3, RUN_ID)
        assert seqs(b.scan_range(1, 3, F)) == [1, 2, 3]
        assert b.append_batch(appends(4, 4)) == 4  # held writable
        b.seal(RunStatus.CrashedRecovered)
        m = b.manifest()
        assert (m.status, m.high_watermark, m.end_ts_init) == (RunStatus.CrashedRecovered, 4, 25)
    m = read_manifest(run_path(tmp_path))
    assert (m.status, m.high_watermark, m.end_ts_init) == (RunStatus.CrashedRecovered, 4, 25)
    with LmdbBackend(tmp_path) as b, pytest.raises(Backend, match="already sealed"):
        b.open_run(manifest())


def test_lmdb_adoption_keeps_on_disk_manifest_not_the_argument(tmp_path: Path) -> None:
    write_run(tmp_path, 1, seal=None)
    other = msgspec.structs.replace(manifest(), binary_hash="other")
    with LmdbBackend(tmp_path) as b:
        with pytest.raises(CrashedPredecessor):
            b.open_run(other)
        assert b.manifest().binary_hash == "deadbeef"


def test_lmdb_reopen_with_missing_middle_row_reports_gap(tmp_path: Path) -> None:
    path = write_run(tmp_path, 3, seal=None)
    with RawFile(path) as raw:
        raw.delete(2)
    with LmdbBackend(tmp_path) as b:
        with pytest.raises(CrashedPredecessor):
            b.open_run(manifest())
        assert b.high_watermark() == 3
        with pytest.raises(Gap) as info:
            b.scan_seq(2)
        assert info.value == Gap(1, 3, 2)
        for direction in (F, R):
            with pytest.raises(Gap) as info:
                b.scan_range(1, 3, direction)
            assert info.value == Gap(1, 3, 2)


def test_lmdb_tail_gap_inside_window(tmp_path: Path) -> None:
    path = write_run(tmp_path, 5, seal=None)
    with RawFile(path) as raw:
        raw.delete(3)
        raw.delete(4)
    with LmdbBackend(tmp_path) as b:
        with pytest.raises(CrashedPredecessor):
            b.open_run(manifest())
        assert b.high_watermark() == 5
        with pytest.raises(Gap) as info:
            b.scan_range(1, 4, F)
        assert info.value == Gap(2, 5, 3)


def test_lmdb_undecodable_row_does_not_prevent_adoption(tmp_path: Path) -> None:
    path = write_run(tmp_path, 3, seal=None)
    with RawFile(path) as raw:
        raw.put(2, b"\xff" * 8)
    with LmdbBackend(tmp_path) as b:
        with pytest.raises(CrashedPredecessor):
            b.open_run(manifest())
        assert b.high_watermark() == 3
        with pytest.raises(Corrupted, match="decode entry seq=2"):
            b.scan_seq(2)
        with pytest.raises(Corrupted, match="decode entry seq=2"):
            b.scan_range(1, 3, F)
        b.seal(RunStatus.Quarantined)
        assert b.manifest().end_ts_init == 12  # max over the decodable rows (ts 10, 12)


@pytest.mark.parametrize("bad_key", [b"abc", b"\xff" * 9], ids=["short", "long"])
def test_lmdb_malformed_entry_key_does_not_prevent_adoption(tmp_path: Path, bad_key: bytes) -> None:
    path = write_run(tmp_path, 3, seal=None, ts=[10, 30, 20])
    with RawFile(path) as raw, raw.env.begin(write=True, db=raw.entries) as txn:
        txn.put(bad_key, b"\x00" * 100)  # sorts after every 8-byte big-endian seq key
    with LmdbBackend(tmp_path) as b:
        with pytest.raises(CrashedPredecessor):
            b.open_run(manifest())
        assert b.high_watermark() == 3  # the last well-formed key
        assert seqs(b.scan_range(1, 2, F)) == [1, 2]
        b.seal(RunStatus.Quarantined)
        m = b.manifest()
        assert (m.status, m.high_watermark, m.end_ts_init) == (RunStatus.Quarantined, 3, 30)


def test_lmdb_missing_manifest_on_reopen_is_corrupted(tmp_path: Path) -> None:
    path = write_run(tmp_path, 1, seal=None)
    with RawFile(path) as raw, raw.env.begin(write=True, db=raw.manifest) as txn:
        txn.delete(layout.MANIFEST_KEY)
    with LmdbBackend(tmp_path) as b:
        with pytest.raises(Corrupted, match="manifest"):
            b.open_run(manifest())
        with pytest.raises(Backend, match="no run open"):
            b.high_watermark()


# ---- sealed read-only handles (R16, R20) ---------------------------------------------------


def test_lmdb_open_sealed_file_reads_and_refuses_writes(tmp_path: Path) -> None:
    with LmdbBackend(tmp_path) as b:
        b.open_run(manifest())
        b.append_batch([with_keys(build_entry(1), (CID, "O-1")), with_keys(build_entry(2), (VID, "V-1"))])
        anchor = SnapshotAnchor(2, "cache://snapshots/run-1/2", "blake3:abc")
        b.record_snapshot_anchor(anchor)
        b.seal(RunStatus.Ended)
        path = b.path
    with LmdbBackend.open_sealed_file(path) as h:
        flags = h._f().env.flags()
        assert flags["readonly"] and not flags["lock"]
        assert flags["readahead"]  # replay scans cold files in seq order: 3.6x slower without it
        assert h.high_watermark() == 2
        assert h.manifest().status is RunStatus.Ended
        assert h.scan_range(1, 2, F) == [build_entry(1), build_entry(2)]
        assert h.lookup(CID, "O-1") == 1 and h.lookup(VID, "V-1") == 2
        assert h.iter_index_keys(CID) == [("O-1", 1)]
        assert h.latest_snapshot_anchor() == anchor
        with pytest.raises(Closed):
            h.append_batch(appends(3, 3))
        with pytest.raises(Closed):
            h.append_batch([])
        with pytest.raises(Closed):
            h.record_snapshot_anchor(SnapshotAnchor(2, "cache://x", "blake3:x"))
        with pytest.raises(Closed):
            h.seal(RunStatus.Ended)
    with LmdbBackend(tmp_path).open_sealed(INSTANCE_ID, RUN_ID) as h:
        assert h.latest_snapshot_anchor() == anchor


def test_lmdb_open_sealed_refuses_running_file(tmp_path: Path) -> None:
    path = write_run(tmp_path, 2, seal=None)
    with pytest.raises(Backend, match="Running"):
        LmdbBackend.open_sealed_file(path)


def test_lmdb_open_sealed_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(Backend):
        LmdbBackend.open_sealed_file(run_path(tmp_path))
    with pytest.raises(Backend):
        LmdbBackend(tmp_path).open_sealed(INSTANCE_ID, RUN_ID)
    assert list(tmp_path.iterdir()) == []


def test_lmdb_sealed_handle_rejects_open_run_reuse(tmp_path: Path) -> None:
    path = write_run(tmp_path, 1)
    with LmdbBackend.open_sealed_file(path) as h:
        with pytest.raises(Closed):
            h.open_run(manifest(run_id="run-2"))
        assert not run_path(tmp_path, "run-2").exists()


def test_lmdb_sealed_handle_reads_are_hash_checked(tmp_path: Path) -> None:
    path = write_run(tmp_path, 3)
    with RawFile(path) as raw:
        value = bytearray(raw.get(2))
        value[-3] ^= 0x01
        raw.put(2, bytes(value))
    seal_as_is(path)  # damaged before the seal: the read's own checks must refuse it
    with LmdbBackend.open_sealed_file(path) as h:
        with pytest.raises(HashMismatch) as info:
            h.scan_seq(2)
        assert info.value.seq == 2
        with pytest.raises(HashMismatch):
            h.scan_range(1, 3, R)
        assert h.scan_seq(3) == build_entry(3)


def test_lmdb_undecodable_anchor_is_corrupted(tmp_path: Path) -> None:
    with LmdbBackend(tmp_path) as b:
        b.open_run(manifest())
        b.append_batch(appends(1, 2))
        b.record_snapshot_anchor(SnapshotAnchor(2, "cache://a", "blake3:a"))
        b.seal(RunStatus.Ended)
        path = b.path
    with RawFile(path) as raw, raw.env.begin(write=True, db=raw.anchors) as txn:
        txn.put(seq_key(2), b"\xff" * 8)
    seal_as_is(path)  # damaged before the seal: the read's own checks must refuse it
    with LmdbBackend.open_sealed_file(path) as h, pytest.raises(Corrupted, match="decode snapshot anchor"):
        h.latest_snapshot_anchor()


# ---- list_runs -----------------------------------------------------------------------------


def test_lmdb_list_runs_sorted_by_start_ts_init(tmp_path: Path) -> None:
    # run ids deliberately sort by name in the opposite order to their start times
    write_run(tmp_path, 1, run_id="c-run", start_ts_init=100)
    write_run(tmp_path, 2, run_id="b-run", start_ts_init=300, seal=None)
    write_run(tmp_path, 0, run_id="a-run", start_ts_init=200)
    runs = LmdbBackend(tmp_path).list_runs(INSTANCE_ID)
    assert [(m.run_id, m.start_ts_init) for m in runs] == [("c-run", 100), ("a-run", 200), ("b-run", 300)]
    assert [m.status for m in runs] == [RunStatus.Ended, RunStatus.Ended, RunStatus.Running]


def test_lmdb_list_runs_empty_when_dir_missing(tmp_path: Path) -> None:
    assert LmdbBackend(tmp_path / "nowhere").list_runs(INSTANCE_ID) == []
    assert not (tmp_path / "nowhere").exists()


def test_lmdb_list_runs_skips_manifestless_file_and_markers(tmp_path: Path) -> None:
    write_run(tmp_path, 1, run_id="good", start_ts_init=5)
    broken = write_run(tmp_path, 1, run_id="broken", start_ts_init=1)
    with RawFile(broken) as raw, raw.env.begin(write=True, db=raw.manifest) as txn:
        txn.delete(layout.MANIFEST_KEY)
    write_run(tmp_path, 0, run_id="x")  # then rename it into a marker sidecar name
    (tmp_path / INSTANCE_ID / "x.lmdb").rename(tmp_path / INSTANCE_ID / "good.markers.lmdb")
    assert [m.run_id for m in LmdbBackend(tmp_path).list_runs(INSTANCE_ID)] == ["good"]


def test_lmdb_list_runs_aborts_on_a_file_without_format_marker(tmp_path: Path) -> None:
    write_run(tmp_path, 1, run_id="good", start_ts_init=5)
    empty_env = lmdb.open(str(tmp_path / INSTANCE_ID / "empty.lmdb"), subdir=False, map_size=1 << 20)
    empty_env.close()
    with pytest.raises(UnsupportedFormat, match="missing store format marker"):
        LmdbBackend(tmp_path).list_runs(INSTANCE_ID)


# ---- map growth ----------------------------------------------------------------------------


def test_lmdb_map_grows_instead_of_failing(tmp_path: Path) -> None:
    total, batch, size = 0, 500, 2000  # ~5 MB of payload
    with LmdbBackend(tmp_path, map_size=1 << 16) as b:
        b.open_run(manifest())
        while total * size < 5_000_000:
            total = b.append_batch(appends(total + 1, total + batch, payload_size=size))
        assert b.high_watermark() == total
        got = b.scan_range(1, total, F)
        assert seqs(got) == list(range(1, total + 1))
        assert got[-1] == appends(total, total, payload_size=size)[0].entry
        b.seal(RunStatus.Ended)
        path = b.path
    assert path.stat().st_size > 5_000_000
    with LmdbBackend.open_sealed_file(path) as h:
        assert h.high_watermark() == total
        assert len(h.scan_range(1, total, R)) == total


def test_lmdb_map_grows_for_a_single_oversized_batch(tmp_path: Path) -> None:
    with LmdbBackend(tmp_path, map_size=1 << 16) as b:
        b.open_run(manifest())
        assert b.append_batch(appends(1, 300, payload_size=10_000)) == 300
        assert b.scan_seq(300) == appends(300, 300, payload_size=10_000)[0].entry


# ---- disk full -----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [2 * 1024 * 1024, 2 * 1024 * 1024 + 1001, 1_500_123], ids=["page-aligned", "short-write", "short-write-2"])
def test_lmdb_disk_full_is_disk_and_keeps_exactly_acknowledged_batches(tmp_path: Path, limit: int) -> None:
    """A limit off a page boundary makes LMDB's flush come up short (it reports EIO): that is
    still `Disk`, with nothing of the failed batch visible."""
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "backend_helpers.py"), "diskfull", str(tmp_path), str(limit)],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["error_type"] == "Disk", report
    acknowledged = report["acknowledged"]
    assert acknowledged > 0 and acknowledged % report["batch"] == 0
    assert report["hwm_after_error"] == acknowledged  # the hwm did not move for the failed batch
    path = run_path(tmp_path)
    assert path.stat().st_size <= limit
    with RawFile(path) as raw:
        assert raw.keys() == list(range(1, acknowledged + 1))
    with LmdbBackend(tmp_path) as b:
        with pytest.raises(CrashedPredecessor):
            b.open_run(manifest())
        assert b.high_watermark() == acknowledged
        assert seqs(b.scan_range(1, acknowledged, F)) == list(range(1, acknowledged + 1))


# ---- single writer -------------------------------------------------------------------------


def test_lmdb_second_writer_on_held_run_is_refused(tmp_path: Path) -> None:
    with LmdbBackend(tmp_path) as first:
        first.open_run(manifest())
        first.append_batch(appends(1, 2))
        second = LmdbBackend(tmp_path)
        with pytest.raises(Backend, match="held by another writer"):
            second.open_run(manifest())
        with pytest.raises(Backend, match="no run open"):
            second.high_watermark()
        # the first writer is unaffected
        assert first.append_batch(appends(3, 3)) == 3
        assert seqs(first.scan_range(1, 3, F)) == [1, 2, 3]
    # once released, the run can be adopted
    with LmdbBackend(tmp_path) as third:
        with pytest.raises(CrashedPredecessor):
            third.open_run(manifest())
        assert third.high_watermark() == 3


def test_lmdb_second_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    code = (
        "import sys; from nes.backend.lmdb import LmdbBackend; from nes.errors import Backend;"
        "from backend_helpers import manifest\n"
        "b = LmdbBackend(sys.argv[1])\n"
        "try:\n    b.open_run(manifest())\nexcept Backend as e:\n    print('REFUSED', e)\nelse:\n    print('OPENED')\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}"}
    with LmdbBackend(tmp_path) as first:
        first.open_run(manifest())
        first.append_batch(appends(1, 1))
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             timeout=60, env=env).stdout
        assert "REFUSED" in out and "held by another writer" in out
        assert first.append_batch(appends(2, 2)) == 2


# ---- raw corruption ------------------------------------------------------------------------


def _adopt(base: Path) -> LmdbBackend:
    b = LmdbBackend(base)
    with pytest.raises(CrashedPredecessor):
        b.open_run(manifest())
    return b


def test_lmdb_flipped_payload_byte_is_hash_mismatch(tmp_path: Path) -> None:
    path = write_run(tmp_path, 3, seal=None)
    with RawFile(path) as raw:
        value = bytearray(raw.get(2))
        value[-3] ^= 0x40  # inside the payload
        raw.put(2, bytes(value))
    with _adopt(tmp_path) as b:
        with pytest.raises(HashMismatch) as info:
            b.scan_seq(2)
        assert info.value.seq == 2
        with pytest.raises(HashMismatch):
            b.scan_range(1, 3, F)
        assert b.scan_seq(1) == build_entry(1)


def test_lmdb_flipped_hash_byte_is_hash_mismatch(tmp_path: Path) -> None:
    path = write_run(tmp_path, 2, seal=None)
    with RawFile(path) as raw:
        value = bytearray(raw.get(1))
        value[0] ^= 0xFF
        raw.put(1, bytes(value))
    with _adopt(tmp_path) as b, pytest.raises(HashMismatch):
        b.scan_seq(1)


@pytest.mark.parametrize("keep", [0, 10, 31, 32, 40, 60, -1])
def test_lmdb_truncated_value_is_corrupted(tmp_path: Path, keep: int) -> None:
    path = write_run(tmp_path, 3, seal=None)
    with RawFile(path) as raw:
        value = raw.get(2)
        raw.put(2, value[:keep] if keep >= 0 else value[:-1])
    with _adopt(tmp_path) as b:
        with pytest.raises(Corrupted, match="decode entry seq=2"):
            b.scan_seq(2)
        with pytest.raises(Corrupted, match="decode entry seq=2"):
            b.scan_range(1, 3, R)


def test_lmdb_value_copied_under_another_key_is_never_a_clean_read(tmp_path: Path) -> None:
    path = write_run(tmp_path, 5, seal=None)
    with RawFile(path) as raw:
        raw.put(5, raw.get(3))
    with _adopt(tmp_path) as b:
        assert b.high_watermark() == 5
        with pytest.raises((Corrupted, HashMismatch), match="5"):
            b.scan_seq(5)
        for direction in (F, R):
            with pytest.raises((Corrupted, HashMismatch)):
                b.scan_range(1, 5, direction)
        assert b.scan_seq(3) == build_entry(3)


def test_lmdb_sealed_file_with_swapped_values_is_never_a_clean_read(tmp_path: Path) -> None:
    path = write_run(tmp_path, 4)
    with RawFile(path) as raw:
        two, four = raw.get(2), raw.get(4)
        raw.put(2, four)
        raw.put(4, two)
    seal_as_is(path)  # damaged before the seal: the read's own checks must refuse it
    with LmdbBackend.open_sealed_file(path) as h:
        with pytest.raises((Corrupted, HashMismatch)):
            h.scan_range(1, 4, F)
        with pytest.raises((Corrupted, HashMismatch)):
            h.scan_seq(2)


# ---- property: random batches round-trip ---------------------------------------------------

_topic = st.text(
    alphabet=st.characters(blacklist_characters="*?", blacklist_categories=("Cs",)), min_size=1, max_size=24
).filter(lambda t: t.strip() != "")
_uuid4 = st.uuids(version=4)
_headers = st.one_of(
    st.just(Headers.empty()),
    st.builds(Headers, st.one_of(st.none(), _uuid4), st.one_of(st.none(), _uuid4)),
)
_draft = st.tuples(
    st.integers(min_value=0, max_value=(1 << 64) - 2),  # ts_init (ts_publish = ts_init + 1)
    _topic,
    st.text(max_size=16),
    st.binary(max_size=256),
    _headers,
)
_batches = st.lists(st.lists(_draft, min_size=0, max_size=12), min_size=1, max_size=6)


@pytest.mark.parametrize("backend_kind", ["memory", "lmdb"])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=_batches)
def test_random_batches_round_trip_and_scan_identically(backend_kind: str, batches) -> None:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        b = MemoryBackend() if backend_kind == "memory" else LmdbBackend(tmp)
        try:
            b.open_run(manifest())
            expected: list[EventStoreEntry] = []
            for batch in batches:
                built = [
                    EventStoreEntry.build(len(expected) + i + 1, ts, ts + 1, topic, ptype, payload, headers)
                    for i, (ts, topic, ptype, payload, headers) in enumerate(batch)
                ]
                assert b.append_batch([AppendEntry.without_indices(e) for e in built]) == len(expected) + len(built)
                expected.extend(built)
            n = len(expected)
            assert b.high_watermark() == n
            forward = b.scan_range(1, n, F)
            assert forward == expected
            assert b.scan_range(1, n, R) == expected[::-1]
            assert [b.scan_seq(s) for s in range(1, n + 1)] == expected
            for e in forward:
                assert e.recompute_hash() == e.entry_hash
            b.seal(RunStatus.Ended)
            assert b.manifest().end_ts_init == (max(e.ts_init for e in expected) if n else None)
            if backend_kind == "lmdb":
                path = b.path
                b.close()
                with LmdbBackend.open_sealed_file(path) as h:
                    assert h.scan_range(1, n, F) == expected
                    assert h.manifest().high_watermark == n
        finally:
            close = getattr(b, "close", None)
            if close is not None:
                close()


@settings(max_examples=300, deadline=None)
@given(
    damage=st.lists(
        st.tuples(st.integers(1, 6), st.integers(0, 400), st.integers(0, 255), st.sampled_from(["flip", "cut", "move"])),
        min_size=1,
        max_size=3,
    )
)
def test_damaged_values_never_read_back_as_a_different_entry(damage) -> None:  # noqa: ANN001
    """Whatever bytes are flipped, cut or moved, a scan either raises (HashMismatch, Corrupted,
    Gap) or hands out exactly the entries that were written: the fast decode path must never
    turn damage into a clean read."""
    backend = MemoryBackend()
    backend.open_run(manifest())
    headers = Headers(uuid.UUID("12345678-1234-4234-8234-123456789abc"), None)
    written = [build_entry(s, headers=headers if s % 2 else None) for s in range(1, 7)]
    backend.append_batch([AppendEntry.without_indices(e) for e in written])
    values = [encode_stored_value(e) for e in written]
    for seq, offset, byte, how in damage:
        value = bytearray(values[seq - 1])
        if not value:
            continue  # cut to nothing already
        if how == "flip":
            value[offset % len(value)] ^= byte or 1
        elif how == "cut":
            del value[offset % len(value):]
        else:
            value[:] = values[(seq + offset) % 6]
        values[seq - 1] = bytes(value)
        backend.corrupt_value(seq, bytes(value))
    for direction in (F, R):
        try:
            got = backend.scan_range(1, 6, direction)
        except (HashMismatch, Corrupted, Gap):
            continue
        assert sorted(got, key=lambda e: e.seq) == written
    for seq in range(1, 7):
        try:
            assert backend.scan_seq(seq) == written[seq - 1]
        except (HashMismatch, Corrupted, Gap):
            pass
