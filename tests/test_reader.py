"""EventStoreReader: the crate's src/reader/mod.rs behaviours, over every backend.

Tests that take `make_reader` run once over MemoryBackend and once over LmdbBackend (ids
`memory` / `lmdb`); a few use hand-made backends to reach states a real backend refuses to
produce (an anchor past the durable high-watermark, a gap, a damaged row).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import msgspec
import pytest

from nes.backend.base import AppendEntry, IndexKey, IndexKind, ScanDirection
from nes.backend.memory import MemoryBackend
from nes.codec import seq_key
from nes.entry import EventStoreEntry
from nes.errors import Backend, Corrupted, Gap, HashMismatch
from nes.headers import Headers
from nes.manifest import RunManifest, RunStatus
from nes.reader import (
    DEFAULT_SCAN_CHUNK_SIZE,
    EventStoreReader,
    RangeScan,
    SnapshotReplayPlan,
)
from nes.snapshot import SnapshotAnchor

U64_MAX = (1 << 64) - 1
INSTANCE_ID = "trader-001"


def manifest(run_id: str) -> RunManifest:
    return RunManifest(
        run_id=run_id,
        instance_id=INSTANCE_ID,
        start_ts_init=0,
        binary_hash="deadbeef",
        crate_versions="feedface",
        config_hash="cafebabe",
    )


def build_entry(seq: int, ts_init: int | None = None) -> EventStoreEntry:
    ts_init = 100 + seq if ts_init is None else ts_init
    return EventStoreEntry.build(
        seq, ts_init, ts_init + 1, "exec.command.SubmitOrder", "SubmitOrder", b"\x01\x02\x03\x04", Headers.empty()
    )


def appends(lo: int, hi: int) -> list[AppendEntry]:
    return [AppendEntry.without_indices(build_entry(seq)) for seq in range(lo, hi + 1)]


# ---- backends ------------------------------------------------------------------------------

_run_counter = iter(range(1, 1 << 30))


def _next_run_id() -> str:
    return f"1700000000-{next(_run_counter):08x}"


@pytest.fixture(params=["memory", "lmdb"])
def make_backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[], object]]:  # noqa: ANN001
    """A factory of fresh backends, each holding a freshly opened Running run."""
    opened: list[object] = []

    def factory() -> object:
        if request.param == "memory":
            backend: object = MemoryBackend()
        else:
            from nes.backend.lmdb import LmdbBackend

            backend = LmdbBackend(tmp_path)
        backend.open_run(manifest(_next_run_id()))  # type: ignore[attr-defined]
        opened.append(backend)
        return backend

    yield factory
    for backend in opened:
        close = getattr(backend, "close", None)
        if close is not None:
            close()


@pytest.fixture
def make_reader(make_backend: Callable[[], object]) -> Callable[[int], EventStoreReader]:
    def populated(count: int) -> EventStoreReader:
        backend = make_backend()
        if count:
            backend.append_batch(appends(1, count))  # type: ignore[attr-defined]
        return EventStoreReader(backend)

    return populated


def seqs(scan: Iterator[EventStoreEntry]) -> list[int]:
    return [entry.seq for entry in scan]


class SpyBackend:
    """Delegates to a real backend and records every scan_range window it is asked for."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.windows: list[tuple[int, int, ScanDirection]] = []
        self.hwm_reads = 0

    def scan_range(self, from_seq: int, to_seq: int, direction: ScanDirection) -> list[EventStoreEntry]:
        self.windows.append((from_seq, to_seq, direction))
        return self.inner.scan_range(from_seq, to_seq, direction)  # type: ignore[attr-defined]

    def high_watermark(self) -> int:
        self.hwm_reads += 1
        return self.inner.high_watermark()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


# ---- delegation ----------------------------------------------------------------------------


def test_manifest_delegates_to_backend(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(3)
    m = reader.manifest()
    assert m.run_id.startswith("1700000000-")
    assert m.instance_id == INSTANCE_ID
    assert m.high_watermark == 3
    assert m.status is RunStatus.Running


def test_high_watermark_delegates_to_backend(make_reader) -> None:  # noqa: ANN001
    assert make_reader(3).high_watermark() == 3
    assert make_reader(0).high_watermark() == 0


def test_latest_snapshot_anchor_delegates_to_backend(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    reader = EventStoreReader(backend)
    assert reader.latest_snapshot_anchor() is None
    backend.append_batch(appends(1, 1))
    anchor = SnapshotAnchor(1, "cache://snapshots/run-anchor/1", "blake3:abc")
    backend.record_snapshot_anchor(anchor)
    assert reader.latest_snapshot_anchor() == anchor


def test_into_inner_returns_backend(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(3)
    backend = reader.into_inner()
    assert backend is reader.backend
    assert backend.high_watermark() == 3


def test_reader_without_open_run_raises_no_run_open() -> None:
    reader = EventStoreReader(MemoryBackend())
    with pytest.raises(Backend, match="no run open"):
        reader.high_watermark()
    with pytest.raises(Backend, match="no run open"):
        reader.snapshot_replay_plan()
    scan = reader.scan_range(1, 3)  # lazy: the error surfaces on the first pull
    with pytest.raises(Backend, match="no run open"):
        next(scan)
    assert list(scan) == []


def test_reverse_scan_without_open_run_raises_no_run_open() -> None:
    scan = EventStoreReader(MemoryBackend()).scan_range(1, 3, ScanDirection.Reverse)
    with pytest.raises(Backend, match="no run open"):
        next(scan)


# ---- snapshot replay plans -----------------------------------------------------------------


def test_snapshot_replay_plan_without_anchor_replays_from_start(make_reader) -> None:  # noqa: ANN001
    plan = make_reader(3).snapshot_replay_plan()
    assert plan == SnapshotReplayPlan(anchor=None, from_seq=1, to_seq=3)
    assert not plan.is_empty()


def test_snapshot_replay_plan_on_empty_run_is_empty(make_reader) -> None:  # noqa: ANN001
    plan = make_reader(0).snapshot_replay_plan()
    assert plan == SnapshotReplayPlan(None, 1, 0)
    assert plan.is_empty()


def test_snapshot_replay_plan_with_anchor_starts_after_anchor_watermark(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    backend.append_batch(appends(1, 3))
    anchor = SnapshotAnchor(2, "cache://snapshots/run-anchor/2", "blake3:abc")
    backend.record_snapshot_anchor(anchor)
    plan = EventStoreReader(backend).snapshot_replay_plan()
    assert plan == SnapshotReplayPlan(anchor=anchor, from_seq=3, to_seq=3)
    assert not plan.is_empty()


def test_snapshot_replay_plan_is_frozen() -> None:
    plan = SnapshotReplayPlan(None, 1, 3)
    with pytest.raises(AttributeError):
        plan.from_seq = 2  # type: ignore[misc]


class AnchorPastWatermarkBackend(MemoryBackend):
    """Reports an anchor at hwm 2 over a run whose durable hwm is 1 (a damaged store)."""

    def latest_snapshot_anchor(self) -> SnapshotAnchor | None:
        return SnapshotAnchor(2, "cache://snapshots/run-reader/2", "blake3:abc")


def test_snapshot_replay_plan_rejects_anchor_past_watermark() -> None:
    backend = AnchorPastWatermarkBackend()
    backend.open_run(manifest(_next_run_id()))
    backend.append_batch(appends(1, 1))
    reader = EventStoreReader(backend)
    with pytest.raises(Corrupted) as info:
        reader.snapshot_replay_plan()
    assert "exceeds durable high_watermark" in str(info.value)
    assert info.value.msg == "snapshot anchor high_watermark 2 exceeds durable high_watermark 1"
    with pytest.raises(Corrupted):
        reader.scan_snapshot_replay_tail()


def test_scan_snapshot_replay_tail_yields_entries_after_anchor(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    backend.append_batch(appends(1, 3))
    backend.record_snapshot_anchor(SnapshotAnchor(2, "cache://snapshots/run-anchor/2", "blake3:abc"))
    tail = EventStoreReader(backend).scan_snapshot_replay_tail()
    assert tail.plan.from_seq == 3
    assert tail.plan.to_seq == 3
    assert seqs(tail) == [3]


def test_scan_snapshot_replay_tail_without_anchor_yields_every_entry(make_reader) -> None:  # noqa: ANN001
    tail = make_reader(5).scan_snapshot_replay_tail(chunk_size=2)
    assert tail.plan == SnapshotReplayPlan(None, 1, 5)
    assert seqs(tail) == [1, 2, 3, 4, 5]


def test_scan_snapshot_replay_tail_is_empty_when_anchor_matches_watermark(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    backend.append_batch(appends(1, 2))
    backend.record_snapshot_anchor(SnapshotAnchor(2, "cache://snapshots/run-anchor/2", "blake3:abc"))
    tail = EventStoreReader(backend).scan_snapshot_replay_tail()
    assert tail.plan.from_seq == 3
    assert tail.plan.to_seq == 2
    assert tail.plan.is_empty()
    assert seqs(tail) == []


# ---- point reads and lookups ---------------------------------------------------------------


def test_scan_seq_returns_committed_entry(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(3)
    entry = reader.get(2)
    assert entry is not None
    assert entry.seq == 2
    assert entry.ts_init == 102
    assert entry == build_entry(2)
    assert reader.scan_seq(2) == entry


def test_scan_seq_returns_none_outside_watermark(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(3)
    assert reader.get(0) is None
    assert reader.get(4) is None
    assert reader.get(99) is None


def test_lookup_finds_recorded_index_key(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    backend.append_batch(
        [
            AppendEntry(build_entry(1), (IndexKey(IndexKind.ClientOrderId, "O-1"),)),
            AppendEntry(build_entry(2), (IndexKey(IndexKind.VenueOrderId, "V-1"),)),
            AppendEntry(build_entry(3), (IndexKey(IndexKind.ClientOrderId, "O-1"), IndexKey(IndexKind.VenueOrderId, "V-1"))),
            AppendEntry(build_entry(4), (IndexKey(IndexKind.ClientOrderId, "O-2"),)),
        ]
    )
    reader = EventStoreReader(backend)
    assert reader.lookup(IndexKind.ClientOrderId, "O-1") == 1  # first write wins
    assert reader.lookup(IndexKind.VenueOrderId, "V-1") == 2
    assert reader.lookup(IndexKind.ClientOrderId, "O-2") == 4
    assert reader.lookup(IndexKind.ClientOrderId, "missing") is None
    assert reader.lookup_all(IndexKind.ClientOrderId, "O-1") == [1, 3]
    assert reader.lookup_all(IndexKind.VenueOrderId, "V-1") == [2, 3]
    assert reader.lookup_all(IndexKind.ClientOrderId, "missing") == []


def test_lookup_uses_distinct_kinds(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    key = str(uuid.uuid4())
    backend.append_batch([AppendEntry(build_entry(1), (IndexKey(IndexKind.ClientOrderId, key),))])
    reader = EventStoreReader(backend)
    assert reader.lookup(IndexKind.ClientOrderId, key) == 1
    assert reader.lookup(IndexKind.VenueOrderId, key) is None
    assert reader.lookup_all(IndexKind.VenueOrderId, key) == []


# ---- range scans -----------------------------------------------------------------------------


def test_scan_range_returns_a_lazy_range_scan(make_reader) -> None:  # noqa: ANN001
    scan = make_reader(3).scan_range(1, 3)
    assert isinstance(scan, RangeScan)
    assert iter(scan) is scan
    assert DEFAULT_SCAN_CHUNK_SIZE == 1024


def test_scan_range_forward_yields_entries_in_order(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(3)
    entries = list(reader.scan_range(1, 3, ScanDirection.Forward))
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries == [build_entry(1), build_entry(2), build_entry(3)]
    assert all(e.recompute_hash() == e.entry_hash for e in entries)


def test_scan_range_reverse_yields_entries_in_reverse(make_reader) -> None:  # noqa: ANN001
    assert seqs(make_reader(3).scan_range(1, 3, ScanDirection.Reverse)) == [3, 2, 1]


def test_scan_range_window_clips_to_request(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(10)
    assert seqs(reader.scan_range(4, 7, ScanDirection.Forward)) == [4, 5, 6, 7]
    assert seqs(reader.scan_range(4, 7, ScanDirection.Reverse)) == [7, 6, 5, 4]
    assert seqs(reader.scan_range(5, 5)) == [5]


def test_scan_range_chunked_forward_walks_full_range(make_reader) -> None:  # noqa: ANN001
    # 7 entries in chunks of 2: four backend calls (2, 2, 2, 1), no boundary seq dropped.
    reader = make_reader(7)
    spy = SpyBackend(reader.backend)
    assert seqs(EventStoreReader(spy).scan_range(1, 7, ScanDirection.Forward, chunk_size=2)) == [1, 2, 3, 4, 5, 6, 7]
    assert [w[:2] for w in spy.windows] == [(1, 2), (3, 4), (5, 6), (7, 7)]


def test_scan_range_chunked_reverse_walks_full_range(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(7)
    spy = SpyBackend(reader.backend)
    assert seqs(EventStoreReader(spy).scan_range(1, 7, ScanDirection.Reverse, chunk_size=2)) == [7, 6, 5, 4, 3, 2, 1]
    assert [w[:2] for w in spy.windows] == [(6, 7), (4, 5), (2, 3), (1, 1)]
    assert {w[2] for w in spy.windows} == {ScanDirection.Reverse}


def test_forward_chunked_scan_includes_entries_committed_between_chunks(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    backend.append_batch(appends(1, 3))
    scan = EventStoreReader(backend).scan_range(1, U64_MAX, ScanDirection.Forward, chunk_size=2)
    assert [next(scan).seq, next(scan).seq] == [1, 2]  # chunk [1, 2] is spent
    backend.append_batch(appends(4, 5))  # committed before the next chunk is fetched
    assert next(scan).seq == 3  # chunk [3, 4]: the high-watermark is re-read
    backend.append_batch(appends(6, 6))  # committed while chunk [3, 4] is buffered
    assert seqs(scan) == [4, 5, 6]


def test_forward_chunked_scan_after_a_clipped_chunk_does_not_skip_new_entries(make_backend) -> None:  # noqa: ANN001
    # The chunk [3, 4] is clipped to [3] by hwm 3; seq 4, committed afterwards, must still come.
    backend = make_backend()
    backend.append_batch(appends(1, 3))
    scan = EventStoreReader(backend).scan_range(1, 10, ScanDirection.Forward, chunk_size=2)
    assert [next(scan).seq for _ in range(3)] == [1, 2, 3]
    backend.append_batch(appends(4, 12))
    assert seqs(scan) == [4, 5, 6, 7, 8, 9, 10]  # and stops at `to`, not at the new hwm


def test_forward_scan_ends_when_it_catches_up_with_the_high_watermark(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    backend.append_batch(appends(1, 2))
    scan = EventStoreReader(backend).scan_range(1, U64_MAX, chunk_size=2)
    assert seqs(scan) == [1, 2]
    backend.append_batch(appends(3, 3))
    assert list(scan) == []  # a finished scan stays finished; it is not a tail-follow


def test_reverse_scan_clips_its_start_once(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    backend.append_batch(appends(1, 4))
    scan = EventStoreReader(backend).scan_range(1, U64_MAX, ScanDirection.Reverse, chunk_size=2)
    assert next(scan).seq == 4
    backend.append_batch(appends(5, 6))
    assert seqs(scan) == [3, 2, 1]


def test_scan_range_clips_to_high_watermark(make_reader) -> None:  # noqa: ANN001
    # A `to` beyond the watermark ends the scan cleanly, with no Gap.
    reader = make_reader(3)
    assert seqs(reader.scan_range(1, 99, ScanDirection.Forward, chunk_size=2)) == [1, 2, 3]
    assert seqs(reader.scan_range(2, 99)) == [2, 3]


def test_scan_range_reverse_clips_to_high_watermark(make_reader) -> None:  # noqa: ANN001
    # `to` sits more than one chunk above the watermark: the rows below it are still walked.
    reader = make_reader(3)
    spy = SpyBackend(reader.backend)
    assert seqs(EventStoreReader(spy).scan_range(1, 99, ScanDirection.Reverse, chunk_size=2)) == [3, 2, 1]
    assert all(hi <= 3 for _, hi, _ in spy.windows)


def test_scan_range_reverse_with_to_at_u64_max(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(3)
    assert seqs(reader.scan_range(1, U64_MAX, ScanDirection.Reverse, chunk_size=1)) == [3, 2, 1]
    assert seqs(reader.scan_range(1, U64_MAX, ScanDirection.Forward, chunk_size=1)) == [1, 2, 3]


def test_scan_range_reverse_above_watermark_yields_nothing(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(3)
    assert seqs(reader.scan_range(10, 20, ScanDirection.Reverse)) == []
    assert seqs(reader.scan_range(10, 20, ScanDirection.Forward)) == []
    assert seqs(reader.scan_range(4, U64_MAX, ScanDirection.Reverse, chunk_size=1)) == []


def test_scan_range_over_empty_run_yields_nothing(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(0)
    for direction in ScanDirection:
        assert seqs(reader.scan_range(1, U64_MAX, direction)) == []


@pytest.mark.parametrize(
    ("from_seq", "to_seq", "direction"),
    [
        (5, 1, ScanDirection.Forward),
        (0, 5, ScanDirection.Forward),
        (0, 0, ScanDirection.Forward),
        (5, 1, ScanDirection.Reverse),
        (0, 5, ScanDirection.Reverse),
        (0, 0, ScanDirection.Reverse),
    ],
    ids=["inverted", "zero_from", "zero_zero", "inverted_reverse", "zero_from_reverse", "zero_zero_reverse"],
)
def test_scan_range_empty_bounds_yield_no_entries(make_reader, from_seq, to_seq, direction) -> None:  # noqa: ANN001
    reader = make_reader(3)
    spy = SpyBackend(reader.backend)
    assert seqs(EventStoreReader(spy).scan_range(from_seq, to_seq, direction)) == []
    assert spy.windows == [] and spy.hwm_reads == 0  # a degenerate window never reaches the backend


def test_scan_range_propagates_hash_mismatch_error(make_backend) -> None:  # noqa: ANN001
    # The stored hash covers the original payload; the row carries another one.
    backend = make_backend()
    tampered = msgspec.structs.replace(build_entry(1), payload=b"\xff\xff")
    backend.append_batch([AppendEntry.without_indices(tampered), *appends(2, 3)])
    reader = EventStoreReader(backend)
    scan = reader.scan_range(1, 3, ScanDirection.Forward)
    with pytest.raises(HashMismatch) as info:
        next(scan)
    assert info.value.seq == 1
    assert list(scan) == []  # the scan ends after surfacing the error
    with pytest.raises(HashMismatch):
        list(reader.scan_range(1, 3, ScanDirection.Reverse))
    with pytest.raises(HashMismatch):
        reader.get(1)
    assert reader.get(2) == build_entry(2)


def test_scan_range_error_in_a_later_chunk_follows_the_good_entries(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    tampered = msgspec.structs.replace(build_entry(5), payload=b"\x00")
    backend.append_batch([*appends(1, 4), AppendEntry.without_indices(tampered), *appends(6, 6)])
    scan = EventStoreReader(backend).scan_range(1, 6, chunk_size=2)
    assert [next(scan).seq for _ in range(4)] == [1, 2, 3, 4]
    with pytest.raises(HashMismatch) as info:
        next(scan)
    assert info.value.seq == 5
    assert list(scan) == []


def test_scan_range_propagates_corrupted_row() -> None:
    backend = MemoryBackend()
    backend.open_run(manifest(_next_run_id()))
    backend.append_batch(appends(1, 3))
    backend.corrupt_value(2, b"\x00" * 10)
    scan = EventStoreReader(backend).scan_range(1, 3, chunk_size=1)
    assert next(scan).seq == 1
    with pytest.raises(Corrupted, match="decode entry seq=2"):
        next(scan)
    assert list(scan) == []


class GapBackend(MemoryBackend):
    """A run whose row 3 is missing inside the high-watermark (as a damaged file would be)."""

    def _read_rows(self, lo: int, hi: int):  # noqa: ANN202
        return [(key, value) for key, value in super()._read_rows(lo, hi) if key != seq_key(3)]


def test_scan_range_propagates_gap() -> None:
    backend = GapBackend()
    backend.open_run(manifest(_next_run_id()))
    backend.append_batch(appends(1, 5))
    with pytest.raises(Gap) as info:
        list(EventStoreReader(backend).scan_range(1, 5, chunk_size=2))
    assert (info.value.prev, info.value.next, info.value.missing) == (2, 4, 3)
    with pytest.raises(Gap):
        list(EventStoreReader(backend).scan_range(1, 5, ScanDirection.Reverse, chunk_size=2))


def test_scan_range_chunk_size_zero_normalizes_to_one(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(3)
    spy = SpyBackend(reader.backend)
    assert seqs(EventStoreReader(spy).scan_range(1, 3, ScanDirection.Forward, chunk_size=0)) == [1, 2, 3]
    assert [w[:2] for w in spy.windows] == [(1, 1), (2, 2), (3, 3)]
    assert seqs(reader.scan_range(1, 3, ScanDirection.Reverse, chunk_size=0)) == [3, 2, 1]


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_scan_range_rejects_bounds_outside_u64(bad: int) -> None:
    reader = EventStoreReader(MemoryBackend())
    with pytest.raises(ValueError, match="2\\*\\*64-1"):
        reader.scan_range(bad, 3)
    with pytest.raises(ValueError, match="2\\*\\*64-1"):
        reader.scan_range(1, bad)
    with pytest.raises(ValueError, match="chunk_size"):
        reader.scan_range(1, 3, chunk_size=-1)


def test_chunked_scan_over_10k_entries_yields_every_seq_once_in_order(make_backend) -> None:  # noqa: ANN001
    count, chunk = 10_000, 7
    backend = make_backend()
    backend.append_batch(appends(1, count))
    spy = SpyBackend(backend)
    reader = EventStoreReader(spy)

    assert seqs(reader.scan_range(1, U64_MAX, ScanDirection.Forward, chunk_size=chunk)) == list(range(1, count + 1))
    assert len(spy.windows) == -(-count // chunk)
    assert max(hi - lo + 1 for lo, hi, _ in spy.windows) <= chunk  # memory bound: one chunk at a time

    spy.windows.clear()
    assert seqs(reader.scan_range(1, count, ScanDirection.Reverse, chunk_size=chunk)) == list(range(count, 0, -1))
    assert max(hi - lo + 1 for lo, hi, _ in spy.windows) <= chunk


def test_range_scan_buffers_at_most_one_chunk(make_reader) -> None:  # noqa: ANN001
    reader = make_reader(50)
    scan = reader.scan_range(1, 50, chunk_size=8)
    next(scan)
    assert "buffered=7" in repr(scan)
    for _ in range(7):
        next(scan)
    assert "buffered=0" in repr(scan)
    next(scan)
    assert "buffered=7" in repr(scan)


def test_reader_reads_sealed_run(make_backend) -> None:  # noqa: ANN001
    backend = make_backend()
    backend.append_batch(appends(1, 4))
    backend.seal(RunStatus.Ended)
    reader = EventStoreReader(backend)
    assert reader.manifest().status is RunStatus.Ended
    assert reader.manifest().end_ts_init == 104
    assert seqs(reader.scan_range(1, U64_MAX)) == [1, 2, 3, 4]
    assert reader.snapshot_replay_plan() == SnapshotReplayPlan(None, 1, 4)


def test_reader_close_closes_backend_that_has_close() -> None:
    class Closable(MemoryBackend):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    backend = Closable()
    with EventStoreReader(backend) as reader:
        assert reader.backend is backend
    assert backend.closed == 1
    EventStoreReader(MemoryBackend()).close()  # a backend without close() is fine
