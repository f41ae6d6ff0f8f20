"""Read-only access to one run: point reads, index lookups, chunked range scans, replay plans.

Contract:
- What is read: only what the backend reports as durable (seq 1 ..= its high-watermark). Every
  entry handed out has had its stored hash checked by the backend; `HashMismatch`, `Gap` and
  `Corrupted` propagate to the caller unchanged and end the scan. The reader never writes.
- In what order: `scan_range` yields ascending seq (`Forward`) or descending seq (`Reverse`)
  over the inclusive window `[from_seq, to_seq]`, clipped to the high-watermark; seq is the
  only order. `from_seq == 0` or `from_seq > to_seq` yields nothing, without a backend call.
- Memory bound: a `RangeScan` holds at most one chunk (`chunk_size` entries, default
  `DEFAULT_SCAN_CHUNK_SIZE`), fetched by one `backend.scan_range` call per chunk, so a scan
  of a run of any length costs constant memory and holds no transaction between chunks.
- Live runs: a forward scan re-reads the high-watermark before each chunk, so entries
  committed while it runs are included up to `to_seq`; it ends when it catches up with the
  high-watermark. A reverse scan clips its start to the high-watermark once, when it begins.
- Replay: `snapshot_replay_plan()` gives the window after the latest snapshot anchor
  (`anchor.high_watermark + 1 ..= high-watermark`, or `1 ..= high-watermark` without one); a
  stored anchor past the durable high-watermark is damage and raises `Corrupted`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

import msgspec

from nes.backend.base import EventStore, IndexKind, ScanDirection
from nes.entry import EventStoreEntry
from nes.errors import Corrupted, InvalidArgument
from nes.manifest import RunManifest
from nes.snapshot import SnapshotAnchor

__all__ = [
    "DEFAULT_SCAN_CHUNK_SIZE",
    "EventStoreReader",
    "RangeScan",
    "ReplayTailScan",
    "SnapshotReplayPlan",
]

DEFAULT_SCAN_CHUNK_SIZE = 1_024
U64_MAX = (1 << 64) - 1

B = TypeVar("B", bound=EventStore)


def _check_u64(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= U64_MAX:
        raise InvalidArgument(f"{name} must be in [0, 2**64-1], got {value}")
    return value


class SnapshotReplayPlan(msgspec.Struct, frozen=True):
    """Replay bounds after a cache-snapshot restore: apply seqs `from_seq ..= to_seq`."""

    anchor: SnapshotAnchor | None  # None: no snapshot, replay from seq 1
    from_seq: int
    to_seq: int  # the durable high-watermark when the plan was made

    def is_empty(self) -> bool:
        """True when there is nothing to replay."""
        return self.from_seq > self.to_seq


class RangeScan(Iterator[EventStoreEntry]):
    """Lazy, chunked iterator over an inclusive seq window (see the module contract).

    Each chunk is one fresh `backend.scan_range` call. After it raises, the scan is finished.
    """

    __slots__ = ("_backend", "_direction", "_chunk_size", "_cursor", "_end", "_buffer", "_pos", "_more", "_clamped")

    def __init__(
        self,
        backend: EventStore,
        from_seq: int,
        to_seq: int,
        direction: ScanDirection = ScanDirection.Forward,
        chunk_size: int = DEFAULT_SCAN_CHUNK_SIZE,
    ) -> None:
        _check_u64("from_seq", from_seq)
        _check_u64("to_seq", to_seq)
        if not isinstance(direction, ScanDirection):
            raise InvalidArgument(f"direction must be a ScanDirection, got {direction!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
            raise InvalidArgument(f"chunk_size must be an int >= 0, got {chunk_size!r}")
        self._backend = backend
        self._direction = direction
        self._chunk_size = max(chunk_size, 1)  # 0 would never advance
        self._more = from_seq != 0 and from_seq <= to_seq
        # Forward walks cursor up to end; Reverse walks cursor down to end.
        forward = direction is ScanDirection.Forward
        self._cursor = from_seq if forward else to_seq
        self._end = to_seq if forward else from_seq
        self._clamped = False
        self._buffer: list[EventStoreEntry] = []
        self._pos = 0

    def __iter__(self) -> RangeScan:
        return self

    def __next__(self) -> EventStoreEntry:
        while self._pos >= len(self._buffer):
            if not self._more:
                raise StopIteration
            self._buffer, self._pos = [], 0  # drop the spent chunk before fetching the next
            try:
                self._fetch()
            except BaseException:
                self._more = False
                raise
        entry = self._buffer[self._pos]
        self._pos += 1
        return entry

    def _fetch(self) -> None:
        if self._direction is ScanDirection.Forward:
            # Re-read the high-watermark every chunk: a live run may have grown since the last.
            hi = min(self._end, self._backend.high_watermark(), self._cursor + self._chunk_size - 1)
            if self._cursor > hi:
                self._more = False
                return
            entries = self._backend.scan_range(self._cursor, hi, ScanDirection.Forward)
            if not entries:
                self._more = False
                return
            # Advance past what was returned (a window clipped by the high-watermark may be
            # short); count rows rather than trust embedded seqs, which the verifier checks.
            last = self._cursor + len(entries) - 1
            if last >= self._end:
                self._more = False
            else:
                self._cursor = last + 1
        else:
            if not self._clamped:
                # Start below the durable rows: a window wholly above the high-watermark
                # would come back empty and end the scan before reaching them.
                self._cursor = min(self._cursor, self._backend.high_watermark())
                self._clamped = True
            hi = self._cursor
            lo = max(self._end, hi - self._chunk_size + 1)
            if hi < lo:  # nothing durable at or above `end`
                self._more = False
                return
            entries = self._backend.scan_range(lo, hi, ScanDirection.Reverse)
            if not entries:
                self._more = False
                return
            last = hi - len(entries) + 1
            if last <= self._end:
                self._more = False
            else:
                self._cursor = last - 1
        self._buffer = entries

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(direction={self._direction.name}, chunk_size={self._chunk_size}, "
            f"cursor={self._cursor}, end={self._end}, buffered={len(self._buffer) - self._pos}, "
            f"has_more={self._more})"
        )


class ReplayTailScan(RangeScan):
    """The forward scan of a snapshot replay tail; `plan` says which window it walks."""

    __slots__ = ("plan",)

    def __init__(self, backend: EventStore, plan: SnapshotReplayPlan, chunk_size: int) -> None:
        # An empty plan (anchor == high-watermark) has from_seq > to_seq: it yields nothing.
        super().__init__(backend, plan.from_seq, plan.to_seq, ScanDirection.Forward, chunk_size)
        self.plan = plan


class EventStoreReader(Generic[B]):
    """Read-only handle over one backend (a live run's or a sealed file's).

    The reader owns the backend: `into_inner()` hands it back; `close()` (or `with`) closes
    it when the backend has a `close()`.
    """

    __slots__ = ("_backend",)

    def __init__(self, backend: B) -> None:
        self._backend = backend

    # ---- delegation ----------------------------------------------------------------------
    @property
    def backend(self) -> B:
        """The backend this reader reads."""
        return self._backend

    def into_inner(self) -> B:
        """Hand the backend back (the reader is done with it)."""
        return self._backend

    def manifest(self) -> RunManifest:
        """The run's manifest."""
        return self._backend.manifest()

    def high_watermark(self) -> int:
        """The last durable seq (0 for an empty run)."""
        return self._backend.high_watermark()

    def latest_snapshot_anchor(self) -> SnapshotAnchor | None:
        """The newest snapshot anchor, or None."""
        return self._backend.latest_snapshot_anchor()

    # ---- point reads and index lookups ---------------------------------------------------
    def get(self, seq: int) -> EventStoreEntry | None:
        """The entry at `seq`, or None when `seq` is 0 or above the high-watermark."""
        return self._backend.scan_seq(seq)

    scan_seq = get  # the crate's spelling

    def lookup(self, kind: IndexKind, key: str) -> int | None:
        """The first seq recorded under (kind, key), or None."""
        _check_kind(kind)
        return self._backend.lookup(kind, key)

    def lookup_all(self, kind: IndexKind, key: str) -> list[int]:
        """Every seq recorded under (kind, key), ascending."""
        _check_kind(kind)
        return self._backend.lookup_all(kind, key)

    # ---- scans -----------------------------------------------------------------------------
    def scan_range(
        self,
        from_seq: int,
        to_seq: int,
        direction: ScanDirection = ScanDirection.Forward,
        chunk_size: int = DEFAULT_SCAN_CHUNK_SIZE,
    ) -> RangeScan:
        """Entries with `from_seq <= seq <= to_seq` (clipped to the high-watermark), chunked."""
        return RangeScan(self._backend, from_seq, to_seq, direction, chunk_size)

    def snapshot_replay_plan(self) -> SnapshotReplayPlan:
        """The seq window to replay after restoring the latest snapshot (all of the run without one)."""
        anchor = self._backend.latest_snapshot_anchor()
        to_seq = self._backend.high_watermark()
        if anchor is None:
            return SnapshotReplayPlan(None, 1, to_seq)
        if anchor.high_watermark > to_seq:
            # Backends refuse such an anchor on record, so a stored one is damage.
            raise Corrupted(
                f"snapshot anchor high_watermark {anchor.high_watermark} exceeds durable "
                f"high_watermark {to_seq}"
            )
        return SnapshotReplayPlan(anchor, anchor.high_watermark + 1, to_seq)

    def scan_snapshot_replay_tail(self, chunk_size: int = DEFAULT_SCAN_CHUNK_SIZE) -> ReplayTailScan:
        """The entries after the latest snapshot anchor (all of them without one), ascending.

        The returned iterator carries its `plan`; it is empty when the anchor covers every
        durable entry.
        """
        return ReplayTailScan(self._backend, self.snapshot_replay_plan(), chunk_size)

    # ---- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the backend (if it has a close())."""
        close = getattr(self._backend, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> EventStoreReader[B]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_kind(kind: object) -> None:
    if not isinstance(kind, IndexKind):
        raise InvalidArgument(f"kind must be an IndexKind, got {kind!r}")
