"""The backend contract (`EventStore`) and the checks every backend shares.

Contract (spec section 4): one backend instance holds at most one run. `append_batch` is
atomic and contiguous: the i-th entry must carry seq `hwm + 1 + i`, else `OutOfOrder` with the
DURABLE high-watermark and nothing lands. The high-watermark advances only after the batch is
committed. Hashes are not checked on append (a tampered entry is accepted) and are checked on
every read. A sealed run refuses appends and anchors with `Closed`; "no run open" is `Backend`.

`RunStoreBase` implements those rules once; a backend supplies the storage primitives
(`_stage`, `_get_value`, `_read_rows`, index and anchor access). Entries travel to storage as
`EncodedEntry` (seq, `entry_hash || canonical frame`, index keys) so the writer sidecar can
append bytes it never decoded; every append path ends in one `PreparedBatch` (storage-ready key
and value bytes), which the writer sidecar builds directly on its hot path.
"""

from __future__ import annotations

import enum
import operator
import struct
import uuid
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import msgspec

from nes.codec import HASH_LEN, MIN_FRAME_LEN, frame_correlation_key, seq_key
from nes.entry import EventStoreEntry, decode_stored_rows, encode_stored_value
from nes.errors import NO_RUN_OPEN, Backend, Closed, Gap, OutOfOrder
from nes.manifest import RunManifest, RunStatus, check_seal_transition
from nes.snapshot import SnapshotAnchor, validate_new_anchor

__all__ = [
    "IndexKind",
    "IndexKey",
    "MAX_INDEX_KEY_BYTES",
    "index_key_problem",
    "AppendEntry",
    "EncodedEntry",
    "PreparedBatch",
    "ScanDirection",
    "EventStore",
    "RunStoreBase",
    "value_ts_init",
    "correlation_index_rows",
    "normalized_for_open",
]


class IndexKind(enum.Enum):
    """The secondary indexes an entry can be filed under (a key maps to the seqs carrying it)."""

    ClientOrderId = "ClientOrderId"
    VenueOrderId = "VenueOrderId"


class IndexKey(NamedTuple):
    kind: IndexKind
    key: str


MAX_INDEX_KEY_BYTES = 511  # LMDB's key size limit; both backends enforce it so they agree


def index_key_problem(key: object) -> str | None:
    """Why `key` cannot be an order-id index key (None if it can)."""
    if not isinstance(key, str):
        return f"index key must be a str, got {type(key).__name__}"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return f"index key is not valid UTF-8 text: {exc}"
    if not 1 <= size <= MAX_INDEX_KEY_BYTES:
        return f"index key must be 1..{MAX_INDEX_KEY_BYTES} UTF-8 bytes, got {size}"
    return None


class AppendEntry(NamedTuple):
    entry: EventStoreEntry
    index_keys: tuple[IndexKey, ...] = ()

    @classmethod
    def without_indices(cls, entry: EventStoreEntry) -> AppendEntry:
        """An append of `entry` with no index keys."""
        return cls(entry, ())

    def encoded(self) -> EncodedEntry:
        """The stored form: (seq, hash || frame, index keys)."""
        return EncodedEntry(self.entry.seq, encode_stored_value(self.entry), tuple(self.index_keys))


class EncodedEntry(NamedTuple):
    """An entry as stored: `value = entry_hash || canonical frame`."""

    seq: int
    value: bytes
    index_keys: tuple[IndexKey, ...] = ()


class PreparedBatch(NamedTuple):
    """A storage-ready batch: `items[i]` is (seq u64 BE, value) for seq `first_seq + i`.

    Whoever builds one vouches for that contiguity (`append_encoded` checks it; the writer core
    checks each ring record's seq as it arrives)."""

    first_seq: int
    items: list[tuple[bytes, bytes]]
    index_rows: list[tuple[IndexKind, str, int]]
    max_ts_init: int


class ScanDirection(enum.Enum):
    """Order of a range scan: ascending (Forward) or descending (Reverse) seq."""

    Forward = "Forward"
    Reverse = "Reverse"


_TS_INIT_AT = HASH_LEN + 8  # value = hash[32] || seq[8] || ts_init[8] || ...
_U64 = struct.Struct(">Q")
MIN_VALUE_LEN = HASH_LEN + MIN_FRAME_LEN
_get_seq = operator.attrgetter("seq")
_get_value = operator.attrgetter("value")
_ts_init_bytes = operator.itemgetter(slice(_TS_INIT_AT, _TS_INIT_AT + 8))


def value_ts_init(value: bytes | memoryview) -> int:
    return _U64.unpack_from(value, _TS_INIT_AT)[0]


def correlation_index_rows(items: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The `idx_correlation_id` rows (16 raw UUID bytes, seq key) of a batch's stored rows,
    derived from each frame, so every backend writes them with the entries, atomically.
    A frame with a correlation id ends in `0x01 id[16] 0x00` or `0x01 id[16] 0x01 id[16]`, so
    a value with no 0x01 at 18 or 34 bytes from its end carries none: the common header-less
    entry costs two byte reads on the writer's commit path."""
    rows = []
    for key, value in items:
        if value[-18] == 1 or value[-34] == 1:
            correlation = frame_correlation_key(value, HASH_LEN)
            if correlation is not None:
                rows.append((correlation, key))
    return rows


@runtime_checkable
class EventStore(Protocol):
    """What every backend offers (memory for simulation and tests, LMDB for real runs)."""

    def open_run(self, manifest: RunManifest) -> None:
        """Start the run `manifest` names (Running); CrashedPredecessor if a Running run is in the way."""

    def append_batch(self, entries: Sequence[AppendEntry]) -> int:
        """Append entries contiguous after the high-watermark in one commit; returns the new
        high-watermark."""

    def append_encoded(self, entries: Sequence[EncodedEntry]) -> int:
        """Like append_batch, for entries already encoded as stored (hash || frame)."""

    def append_prepared(self, batch: PreparedBatch) -> int:
        """Commit a batch prepared (hashed, checked) beforehand; returns the new high-watermark."""

    def scan_range(self, from_seq: int, to_seq: int, direction: ScanDirection) -> list[EventStoreEntry]:
        """Entries with from_seq <= seq <= to_seq (clipped to the high-watermark), hashes checked."""

    def scan_seq(self, seq: int) -> EventStoreEntry | None:
        """The entry at `seq`, hash checked, or None past the high-watermark."""

    def lookup(self, kind: IndexKind, key: str) -> int | None:
        """The first seq filed under (kind, key), or None."""

    def lookup_all(self, kind: IndexKind, key: str) -> list[int]:
        """Every seq filed under (kind, key), ascending."""

    def lookup_correlation(self, correlation_id: uuid.UUID) -> list[int]:
        """Every seq whose entry carries `correlation_id`, ascending."""

    def iter_index_keys(self, kind: IndexKind) -> list[tuple[str, int]]:
        """Every (key, seq) pair of one index, in key order."""

    def record_snapshot_anchor(self, anchor: SnapshotAnchor) -> None:
        """Store a snapshot anchor (its high-watermark must be durable)."""

    def latest_snapshot_anchor(self) -> SnapshotAnchor | None:
        """The newest snapshot anchor, or None."""

    def seal(self, status: RunStatus) -> None:
        """Give the run its terminal status; later appends raise Closed."""

    def manifest(self) -> RunManifest:
        """The run manifest as stored."""

    def high_watermark(self) -> int:
        """The last durable seq (0 for an empty run)."""


class _Run:
    """The open run's in-memory state. `read_only` runs are sealed handles."""

    __slots__ = ("manifest", "high_watermark", "max_ts_init", "read_only")

    def __init__(self, manifest: RunManifest, high_watermark: int, max_ts_init: int, read_only: bool) -> None:
        self.manifest = manifest
        self.high_watermark = high_watermark
        self.max_ts_init = max_ts_init
        self.read_only = read_only


class RunStoreBase:
    """Shared contract checks; subclasses provide storage."""

    _run: _Run | None = None
    # May the commit returned by `begin_append` run on another thread than the one that
    # staged it? (An LMDB env with its lock file ties a write transaction to its thread.)
    cross_thread_commit = True

    # ---- storage primitives (subclass) -------------------------------------------------
    def _stage(self, batch: PreparedBatch) -> Callable[[], None]:
        """Prepare the whole batch; the returned callable stores it atomically (all or nothing)."""
        raise NotImplementedError

    def _get_value(self, seq: int) -> bytes | None:
        raise NotImplementedError

    def _read_rows(self, lo: int, hi: int) -> Sequence[tuple[bytes, bytes]]:
        """Up to `hi - lo + 1` stored rows (8-byte key, value), ascending from the first key
        >= lo (past hi if keys are missing: `decode_stored_rows` sorts that out)."""
        raise NotImplementedError

    def _index_seqs(self, kind: IndexKind, key: str) -> list[int]:
        raise NotImplementedError

    def _index_pairs(self, kind: IndexKind) -> list[tuple[str, int]]:
        raise NotImplementedError

    def _correlation_seqs(self, correlation_key: bytes) -> list[int]:
        """Seqs under one 16-byte key of `idx_correlation_id`, ascending."""
        raise NotImplementedError

    def _load_latest_anchor(self) -> SnapshotAnchor | None:
        raise NotImplementedError

    def _store_anchor(self, anchor: SnapshotAnchor) -> None:
        raise NotImplementedError

    def _store_manifest(self, manifest: RunManifest) -> None:
        raise NotImplementedError

    # ---- contract ----------------------------------------------------------------------
    def _require_run(self) -> _Run:
        run = self._run
        if run is None:
            raise Backend(NO_RUN_OPEN)
        return run

    def _require_writable(self) -> _Run:
        run = self._require_run()
        if run.read_only or run.manifest.is_sealed():
            raise Closed()
        return run

    def manifest(self) -> RunManifest:
        run = self._require_run()
        if run.manifest.high_watermark != run.high_watermark and not run.manifest.is_sealed():
            # The stored manifest is written at open and seal only; report live progress.
            run.manifest = _with(run.manifest, high_watermark=run.high_watermark)
        return run.manifest

    def high_watermark(self) -> int:
        return self._require_run().high_watermark

    def append_batch(self, entries: Sequence[AppendEntry]) -> int:
        self._require_writable()
        return self.append_encoded([e.encoded() for e in entries])

    def append_encoded(self, entries: Sequence[EncodedEntry]) -> int:
        """Check and commit pre-encoded entries (contiguous seqs from the high-watermark + 1,
        valid index keys). Written as whole-list operations: it is the append hot path."""
        run = self._require_writable()
        if not entries:
            return run.high_watermark
        first = run.high_watermark + 1
        seqs = list(map(_get_seq, entries))
        bad_at = None  # position of the first out-of-order seq
        if seqs != list(range(first, first + len(seqs))):
            bad_at = next(offset for offset, seq in enumerate(seqs) if seq != first + offset)
        # Entry by entry, its seq comes before its index keys: the keys of the entries before
        # a bad seq are checked (and reported) first.
        in_order = entries if bad_at is None else entries[:bad_at]
        index_rows = [(kind, key, e.seq) for e in in_order if e.index_keys for kind, key in e.index_keys]
        for _, key, seq in index_rows:
            problem = index_key_problem(key)
            if problem is not None:
                raise Backend(f"seq {seq}: {problem}")
        if bad_at is not None:
            raise OutOfOrder(run.high_watermark, seqs[bad_at])
        values = list(map(_get_value, entries))
        if min(map(len, values)) < MIN_VALUE_LEN:
            raise Backend(f"a stored value is shorter than {MIN_VALUE_LEN} bytes (hash and frame)")
        keys = map(seq_key, range(first, first + len(seqs)))
        max_ts_init = _U64.unpack(max(map(_ts_init_bytes, values)))[0]  # u64 BE: bytes order = number order
        return self.append_prepared(PreparedBatch(first, list(zip(keys, values)), index_rows, max_ts_init))

    def append_prepared(self, batch: PreparedBatch) -> int:
        """Commit a storage-ready batch in one transaction; returns the new high-watermark."""
        return self.begin_append(batch)()

    def begin_append(self, batch: PreparedBatch) -> Callable[[], int]:
        """Check and stage `batch`; the returned `commit()` makes it durable and returns the new
        high-watermark. Where `cross_thread_commit` holds, `commit` may run on another thread
        (the writer sidecar fsyncs there, GIL released, while it hashes the next batch);
        nothing else may touch the run between the two calls."""
        run = self._require_writable()
        if batch.items and batch.first_seq != run.high_watermark + 1:
            raise OutOfOrder(run.high_watermark, batch.first_seq)
        staged = self._stage(batch) if batch.items else None

        def commit() -> int:
            if staged is None:
                return run.high_watermark
            staged()
            run.high_watermark = batch.first_seq + len(batch.items) - 1
            run.max_ts_init = max(run.max_ts_init, batch.max_ts_init)
            return run.high_watermark

        return commit

    def scan_range(self, from_seq: int, to_seq: int, direction: ScanDirection) -> list[EventStoreEntry]:
        run = self._require_run()
        hi = min(to_seq, run.high_watermark)
        if from_seq == 0 or from_seq > hi:
            return []
        out = decode_stored_rows(self._read_rows(from_seq, hi), from_seq, hi)
        if direction is ScanDirection.Reverse:
            out.reverse()
        return out

    def scan_seq(self, seq: int) -> EventStoreEntry | None:
        run = self._require_run()
        if seq == 0 or seq > run.high_watermark:
            return None
        value = self._get_value(seq)
        if value is None:
            raise Gap(seq - 1, seq + 1, seq)
        return decode_stored_rows(((seq_key(seq), value),), seq, seq)[0]

    def lookup(self, kind: IndexKind, key: str) -> int | None:
        seqs = self.lookup_all(kind, key)
        return seqs[0] if seqs else None

    def lookup_all(self, kind: IndexKind, key: str) -> list[int]:
        """Every seq that carried (kind, key), ascending: an improvement on the crate's first-only."""
        self._require_run()
        if index_key_problem(key) is not None:
            return []  # such a key can never have been stored (both backends refuse it)
        return self._index_seqs(kind, key)

    def lookup_correlation(self, correlation_id: uuid.UUID) -> list[int]:
        """Every seq whose entry carries `correlation_id` (the workflow), ascending, from the
        correlation index written with the entries."""
        self._require_run()
        if not isinstance(correlation_id, uuid.UUID):
            raise TypeError(f"correlation_id must be a uuid.UUID, got {type(correlation_id).__name__}")
        return self._correlation_seqs(correlation_id.bytes)

    def iter_index_keys(self, kind: IndexKind) -> list[tuple[str, int]]:
        """(key, first seq) for every key of `kind`, in key byte order."""
        self._require_run()
        return self._index_pairs(kind)

    def record_snapshot_anchor(self, anchor: SnapshotAnchor) -> None:
        run = self._require_writable()
        validate_new_anchor(anchor, run.high_watermark, self._load_latest_anchor())
        self._store_anchor(anchor)

    def latest_snapshot_anchor(self) -> SnapshotAnchor | None:
        self._require_run()
        return self._load_latest_anchor()

    def seal(self, status: RunStatus) -> None:
        run = self._require_run()
        check_seal_transition(run.manifest.status, status)  # a read-only handle is always sealed
        sealed = _with(
            run.manifest,
            status=status,
            high_watermark=run.high_watermark,
            end_ts_init=run.max_ts_init if run.high_watermark > 0 else None,
        )
        self._store_manifest(sealed)
        run.manifest = sealed


def _with(manifest: RunManifest, **changes: object) -> RunManifest:
    return msgspec.structs.replace(manifest, **changes)


def normalized_for_open(manifest: RunManifest) -> RunManifest:
    """open_run always starts a run Running, at high-watermark 0, with no end time."""
    return _with(manifest, status=RunStatus.Running, end_ts_init=None, high_watermark=0)
