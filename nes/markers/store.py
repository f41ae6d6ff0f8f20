"""`MarkerStore`: the on-disk data-marker sidecar, one LMDB file beside each run file.

Path `<base>/<instance_id>/<run_id>.markers.lmdb` (`subdir=False`, created 0600 in a 0700
directory). Named databases (keys big-endian so LMDB order is numeric order):

| db          | key                       | value                                       |
| ----------- | ------------------------- | ------------------------------------------- |
| `snapshots` | marker_seq, u64 BE        | `hash[32] || msgpack(DataCursorSnapshot)`   |
| `hifi`      | marker_seq, u64 BE        | `hash[32] || msgpack(HiFiMarker)`           |
| `gaps`      | from_marker_seq, u64 BE   | `hash[32] || msgpack(MarkerGap)`            |
| `dict`      | slot, u32 BE              | `hash[32] || msgpack(StreamDictEntry)`      |
| `manifest`  | `current`                 | msgpack(MarkerManifest)                     |
| `meta`      | `format`                  | store format version, u32 BE (= 1)          |

Contract:
- Durable when the call returns: every mutation is one LMDB write transaction committed with
  `sync=True, metasync=True`, and it writes the row **and** the manifest with its count + 1
  together, so the counts on disk are right even for an unsealed file.
- marker_seq order: snapshots, hi-fi markers and gaps share one sequence that must be appended
  contiguously from 1: a snapshot or hi-fi marker must carry the next seq, a gap must start at
  the next seq and covers `from..to` (from <= to). Anything else is refused (`OutOfOrder` /
  `Backend`) and nothing is written. Dict entries are write-once by slot (the first mapping wins;
  a re-put is a no-op that returns False and leaves `dict_count` unchanged).
- `open_run` on a new path creates the file (Running, zero counts). On an existing file it checks
  the format and run_id and never resumes writing: a Running file is sealed CrashedRecovered (a
  crash predecessor), a sealed file keeps its status; later writes are `Closed`.
- `open_read_only` takes any status as it is (no recovery, no mutation); writes and seal on it
  are `Closed`. Scans (`scan_*`) iterate ascending keys and recompute every hash: a mismatch or
  an undecodable row is `Corrupted`. The verifier (nes.markers.verifier) reports instead.
- One writer per file: the data file is `flock`ed exclusively while open writable.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgspec

from nes.backend import layout
from nes.backend.lmdb import classify_lmdb_error, durable_write  # shared with the run-file backend
from nes.errors import Backend, Closed, Corrupted, EventStoreError, OutOfOrder
from nes.ids import validate_path_id
from nes.manifest import RunStatus, check_seal_transition
from nes.markers.hash import (
    MARKER_HASH_LEN,
    compute_dict_hash,
    compute_gap_hash,
    compute_hifi_hash,
    compute_marker_hash,
)
from nes.markers.model import (
    DataCursorSnapshot,
    HiFiMarker,
    MarkerGap,
    MarkerManifest,
    MarkerRecordKind,
    StoredMarkerRecord,
    StreamDictEntry,
)

__all__ = [
    "MarkerStore",
    "marker_file_path",
    "encode_stored",
    "decode_stored",
    "encode_marker_manifest",
    "decode_marker_manifest",
    "record_hash",
    "RECORD_TYPES",
    "DB_NAMES",
    "NO_MARKER_RUN_OPEN",
    "MARKER_FORMAT_VERSION",
]

NO_MARKER_RUN_OPEN = "no marker run open"
MARKER_FORMAT_VERSION = 1
DEFAULT_MAP_SIZE = 1 << 28  # address space only; grown on MapFullError
_MAX_DBS = 8
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")

DB_NAMES: dict[MarkerRecordKind, bytes] = {
    MarkerRecordKind.Snapshot: b"snapshots",
    MarkerRecordKind.HiFi: b"hifi",
    MarkerRecordKind.Gap: b"gaps",
    MarkerRecordKind.Dict: b"dict",
}
DB_MANIFEST = b"manifest"
DB_META = b"meta"
MANIFEST_KEY = b"current"
FORMAT_KEY = b"format"

RECORD_TYPES: dict[MarkerRecordKind, type] = {
    MarkerRecordKind.Snapshot: DataCursorSnapshot,
    MarkerRecordKind.HiFi: HiFiMarker,
    MarkerRecordKind.Gap: MarkerGap,
    MarkerRecordKind.Dict: StreamDictEntry,
}
_HASHERS: dict[MarkerRecordKind, Callable[[Any], bytes]] = {
    MarkerRecordKind.Snapshot: compute_marker_hash,
    MarkerRecordKind.HiFi: compute_hifi_hash,
    MarkerRecordKind.Gap: compute_gap_hash,
    MarkerRecordKind.Dict: compute_dict_hash,
}
_DECODERS: dict[MarkerRecordKind, msgspec.msgpack.Decoder[Any]] = {kind: msgspec.msgpack.Decoder(cls) for kind, cls in RECORD_TYPES.items()}
_MANIFEST_DECODER = msgspec.msgpack.Decoder(MarkerManifest)
_ENCODER = msgspec.msgpack.Encoder()

T = TypeVar("T")


# ---- value codec (shared with the verifier) ------------------------------------------------------
def record_hash(kind: MarkerRecordKind, record: Any) -> bytes:
    return _HASHERS[kind](record)


def encode_stored(record: Any, hash_: bytes) -> bytes:
    if len(hash_) != MARKER_HASH_LEN:
        raise ValueError(f"a marker hash is {MARKER_HASH_LEN} bytes, got {len(hash_)}")
    return bytes(hash_) + _ENCODER.encode(record)


def decode_stored(kind: MarkerRecordKind, value: bytes) -> StoredMarkerRecord:
    """Split `hash || msgpack` and decode; raises `Corrupted` on any malformed value."""
    if len(value) <= MARKER_HASH_LEN:
        raise Corrupted(f"decode {kind.value}: value of {len(value)} bytes is too short")
    try:
        record = _DECODERS[kind].decode(value[MARKER_HASH_LEN:])
    except (msgspec.MsgspecError, ValueError) as exc:
        raise Corrupted(f"decode {kind.value}: {exc}") from exc
    return StoredMarkerRecord(record=record, hash=bytes(value[:MARKER_HASH_LEN]))


def encode_marker_manifest(manifest: MarkerManifest) -> bytes:
    return _ENCODER.encode(manifest)


def decode_marker_manifest(raw: bytes) -> MarkerManifest:
    try:
        return _MANIFEST_DECODER.decode(raw)
    except (msgspec.MsgspecError, ValueError) as exc:
        raise Corrupted(f"decode marker manifest: {exc}") from exc


def marker_file_path(base_dir: str | os.PathLike[str], instance_id: str, run_id: str) -> Path:
    """`<base>/<instance_id>/<run_id>.markers.lmdb`, beside the run file `<run_id>.lmdb`."""
    return layout.marker_sidecar_path(layout.run_file_path(base_dir, instance_id, run_id))


def _record_key(kind: MarkerRecordKind, record: Any) -> bytes:
    if kind is MarkerRecordKind.Dict:
        return _U32.pack(record.slot)
    if kind is MarkerRecordKind.Gap:
        return _U64.pack(record.from_marker_seq)
    return _U64.pack(record.marker_seq)


_COUNT_FIELD = {
    MarkerRecordKind.Snapshot: "snapshot_count",
    MarkerRecordKind.HiFi: "hifi_count",
    MarkerRecordKind.Gap: "gap_count",
    MarkerRecordKind.Dict: "dict_count",
}


# ---- the store -----------------------------------------------------------------------------------
class MarkerStore:
    """One sidecar file; one owner. Use as a context manager, or call `close()`."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self._path = Path(path)
        self._map_size = map_size
        self._env: lmdb.Environment | None = None
        self._dbs: dict[bytes, Any] = {}
        self._lock_fd: int | None = None
        self._manifest: MarkerManifest | None = None
        self._writable = False
        self._next_marker_seq = 1

    @classmethod
    def for_run(cls, base_dir: str | os.PathLike[str], instance_id: str, run_id: str) -> MarkerStore:
        return cls(marker_file_path(base_dir, instance_id, run_id))

    @classmethod
    def open_read_only(cls, path: str | os.PathLike[str]) -> MarkerStore:
        """Open a sidecar as it is (any status, no recovery, no mutation)."""
        store = cls(path)
        if not store._path.is_file():
            raise Backend(f"no marker run file at {store._path}")
        try:
            store._env = lmdb.open(
                str(store._path), subdir=False, readonly=True, lock=False, max_dbs=_MAX_DBS, create=False,
                readahead=False,
            )
            store._open_dbs(create=False)
            store._check_format()
            store._manifest = store._read_manifest("missing marker manifest in run file at")
        except BaseException as exc:
            store.close()
            if isinstance(exc, lmdb.Error):
                raise classify_lmdb_error(exc, f"open {store._path}") from exc
            raise
        return store

    def __enter__(self) -> MarkerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the environment and the writer lock. Does not seal."""
        if self._env is not None:
            self._env.close()
            self._env = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._dbs = {}
        self._manifest = None
        self._writable = False

    @property
    def path(self) -> Path:
        return self._path

    def current_path(self) -> Path:
        self._require_run()
        return self._path

    def manifest(self) -> MarkerManifest:
        return self._require_run()

    @property
    def next_marker_seq(self) -> int:
        """The marker_seq the next snapshot, hi-fi marker or gap must start at."""
        return self._next_marker_seq

    # -- open ---------------------------------------------------------------------------------
    def open_run(self, manifest: MarkerManifest) -> MarkerManifest:
        """Create the sidecar for `manifest.run_id`, or adopt an existing one (see module doc).
        Returns the manifest now in force. A failed open leaves no run open."""
        self.close()
        validate_path_id(manifest.run_id, "run_id")
        existed = self._path.exists()
        try:
            if not existed:
                layout.create_private_file(self._path)
            # Lock before LMDB touches the file: a refused second writer must not write to it.
            self._lock()
            self._env = lmdb.open(
                str(self._path), subdir=False, map_size=self._map_size, max_dbs=_MAX_DBS, sync=True,
                metasync=True, mode=layout.FILE_MODE, meminit=False, readahead=False, create=False,
            )
            if existed:
                self._adopt(manifest.run_id)
            else:
                self._create(manifest)
            self._writable = True
        except BaseException as exc:
            self.close()
            if not existed:  # leave no half-made file behind (a later open would call it corrupt)
                self._path.unlink(missing_ok=True)
                Path(f"{self._path}-lock").unlink(missing_ok=True)
            if isinstance(exc, (lmdb.Error, OSError)):
                raise classify_lmdb_error(exc, f"open marker run file {self._path}") from exc
            raise
        return self._manifest  # type: ignore[return-value]

    def _lock(self) -> None:
        fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Backend(f"marker run file is held by another writer: {self._path}") from None
        self._lock_fd = fd

    def _create(self, manifest: MarkerManifest) -> None:
        fresh = msgspec.structs.replace(
            manifest, status=RunStatus.Running, snapshot_count=0, hifi_count=0, gap_count=0, dict_count=0
        )
        self._open_dbs(create=True)

        def body(txn: lmdb.Transaction) -> None:
            txn.put(FORMAT_KEY, _U32.pack(MARKER_FORMAT_VERSION), db=self._dbs[DB_META])
            txn.put(MANIFEST_KEY, encode_marker_manifest(fresh), db=self._dbs[DB_MANIFEST])

        self._write(body)
        self._manifest = fresh
        self._next_marker_seq = 1

    def _adopt(self, run_id: str) -> None:
        self._open_dbs(create=False)
        self._check_format()
        on_disk = self._read_manifest("missing marker manifest in existing run file at")
        if on_disk.run_id != run_id:
            raise Backend(f"marker run file at {self._path} belongs to run_id {on_disk.run_id}, not {run_id}")
        if on_disk.status is RunStatus.Running:  # a crash predecessor: seal, never resume
            recovered = msgspec.structs.replace(on_disk, status=RunStatus.CrashedRecovered)
            self._write(lambda txn: txn.put(MANIFEST_KEY, encode_marker_manifest(recovered), db=self._dbs[DB_MANIFEST]))
            on_disk = recovered
        self._manifest = on_disk

    def _open_dbs(self, *, create: bool) -> None:
        env = self._env
        assert env is not None
        try:
            if not create:
                with env.begin() as txn:  # named dbs are keys of the main db
                    if txn.get(DB_META) is None:
                        raise Corrupted(f"missing store format marker in {self._path}; the marker run file must be regenerated")
            names = [*DB_NAMES.values(), DB_MANIFEST, DB_META]
            if create:
                with env.begin(write=True) as txn:
                    self._dbs = {name: env.open_db(name, txn=txn) for name in names}
            else:
                self._dbs = {name: env.open_db(name, create=False) for name in names}
        except EventStoreError:
            raise
        except lmdb.Error as exc:
            raise Corrupted(f"open databases of {self._path}: {exc}") from exc

    def _check_format(self) -> None:
        with self._env.begin(db=self._dbs[DB_META]) as txn:  # type: ignore[union-attr]
            raw = txn.get(FORMAT_KEY)
        if raw is None:
            raise Corrupted(f"missing store format marker in {self._path}; the marker run file must be regenerated")
        version = _U32.unpack(raw)[0] if len(raw) == 4 else -1
        if version != MARKER_FORMAT_VERSION:
            raise Corrupted(
                f"unsupported event store on-disk format version {version}; supported version is {MARKER_FORMAT_VERSION}"
            )

    def _read_manifest(self, missing_text: str) -> MarkerManifest:
        with self._env.begin(db=self._dbs[DB_MANIFEST]) as txn:  # type: ignore[union-attr]
            raw = txn.get(MANIFEST_KEY)
        if raw is None:
            raise Corrupted(f"{missing_text} {self._path}")
        return decode_marker_manifest(raw)

    # -- writes -------------------------------------------------------------------------------
    def _require_run(self) -> MarkerManifest:
        if self._manifest is None:
            raise Backend(NO_MARKER_RUN_OPEN)
        return self._manifest

    def _require_writable(self) -> MarkerManifest:
        manifest = self._require_run()
        if not self._writable or manifest.is_sealed():
            raise Closed()
        return manifest

    def _write(self, body: Callable[[lmdb.Transaction], T]) -> T:
        """Run `body(txn)` in one durable write transaction; grow the map when it is full."""
        assert self._env is not None
        return durable_write(self._env, self._path, body)

    def _append(self, kind: MarkerRecordKind, record: Any) -> bytes:
        manifest = self._require_writable()
        hash_ = record_hash(kind, record)
        field = _COUNT_FIELD[kind]
        updated = msgspec.structs.replace(manifest, **{field: getattr(manifest, field) + 1})
        value = encode_stored(record, hash_)
        key = _record_key(kind, record)
        db = self._dbs[DB_NAMES[kind]]

        def body(txn: lmdb.Transaction) -> bool:
            if not txn.put(key, value, db=db, overwrite=False):
                return False
            txn.put(MANIFEST_KEY, encode_marker_manifest(updated), db=self._dbs[DB_MANIFEST])
            return True

        if not self._write(body):
            raise Backend(f"marker {kind.value} key {key.hex()} already stored")
        self._manifest = updated
        return hash_

    def _check_next(self, marker_seq: int) -> None:
        if marker_seq != self._next_marker_seq:
            raise OutOfOrder(self._next_marker_seq - 1, marker_seq)

    def append_snapshot(self, snapshot: DataCursorSnapshot) -> bytes:
        """Durably append a cursor snapshot at the next marker_seq; returns its hash."""
        self._require_writable()
        self._check_next(snapshot.marker_seq)
        hash_ = self._append(MarkerRecordKind.Snapshot, snapshot)
        self._next_marker_seq = snapshot.marker_seq + 1
        return hash_

    def append_hifi(self, marker: HiFiMarker) -> bytes:
        """Durably append a hi-fi marker at the next marker_seq; returns its hash."""
        self._require_writable()
        self._check_next(marker.marker_seq)
        hash_ = self._append(MarkerRecordKind.HiFi, marker)
        self._next_marker_seq = marker.marker_seq + 1
        return hash_

    def append_gap(self, gap: MarkerGap) -> bytes:
        """Durably record that marker_seqs from..to were dropped; from must be the next seq."""
        self._require_writable()
        if gap.from_marker_seq > gap.to_marker_seq:
            raise Backend(f"invalid marker gap from={gap.from_marker_seq} to={gap.to_marker_seq}")
        self._check_next(gap.from_marker_seq)
        hash_ = self._append(MarkerRecordKind.Gap, gap)
        self._next_marker_seq = gap.to_marker_seq + 1
        return hash_

    def put_dict_entry(self, entry: StreamDictEntry) -> bool:
        """Durably record slot -> (class, identifier) once. False (and no write) if the slot is known."""
        self._require_writable()
        with self._env.begin(db=self._dbs[DB_NAMES[MarkerRecordKind.Dict]]) as txn:  # type: ignore[union-attr]
            if txn.get(_U32.pack(entry.slot)) is not None:
                return False
        self._append(MarkerRecordKind.Dict, entry)
        return True

    def seal(self, status: RunStatus) -> MarkerManifest:
        """Move the sidecar to a terminal status, durably. Running -> Backend; sealed -> Closed."""
        manifest = self._require_run()
        check_seal_transition(manifest.status, status)
        if not self._writable:
            raise Closed()
        sealed = msgspec.structs.replace(manifest, status=status)
        self._write(lambda txn: txn.put(MANIFEST_KEY, encode_marker_manifest(sealed), db=self._dbs[DB_MANIFEST]))
        self._manifest = sealed
        return sealed

    # -- reads --------------------------------------------------------------------------------
    def raw_rows(self, kind: MarkerRecordKind, limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) copies in ascending key order, at most `limit` of them."""
        self._require_run()
        with self._env.begin(db=self._dbs[DB_NAMES[kind]]) as txn:  # type: ignore[union-attr]
            for n, (key, value) in enumerate(txn.cursor()):
                if limit is not None and n >= limit:
                    return
                yield bytes(key), bytes(value)

    def scan_records(self, kind: MarkerRecordKind) -> list[StoredMarkerRecord]:
        """Stored records with their stored hashes, ascending key; decode failures are Corrupted."""
        try:
            return [decode_stored(kind, value) for _, value in self.raw_rows(kind)]
        except lmdb.Error as exc:
            raise classify_lmdb_error(exc, f"scan {kind.value} of {self._path}") from exc

    def _scan_checked(self, kind: MarkerRecordKind) -> list[Any]:
        records = []
        for stored in self.scan_records(kind):
            if record_hash(kind, stored.record) != stored.hash:
                raise Corrupted(f"marker hash mismatch {kind.value} at key {_record_key(kind, stored.record).hex()}")
            records.append(stored.record)
        return records

    def scan_snapshots(self) -> list[DataCursorSnapshot]:
        return self._scan_checked(MarkerRecordKind.Snapshot)

    def scan_hifi(self) -> list[HiFiMarker]:
        return self._scan_checked(MarkerRecordKind.HiFi)

    def scan_gaps(self) -> list[MarkerGap]:
        return self._scan_checked(MarkerRecordKind.Gap)

    def scan_dict(self) -> list[StreamDictEntry]:
        return self._scan_checked(MarkerRecordKind.Dict)
