"""Read-only access to any run file, live or sealed, for the operator's commands.

Contract:
- Never writes, never creates, never takes LMDB's lock file (`layout.open_read_only`): opening
  a run has no effect on a writer that is appending to it.
- Before LMDB maps a file, its two meta pages are checked by hand (`check_lmdb_file`): a file
  that is not LMDB, or is shorter than its newest committed transaction needs (truncated), is
  refused with `RunFileError` instead of being mapped (a short map would SIGBUS the reader);
  so is a sealed file whose bytes differ from its seal record (a damaged page can abort LMDB).
  A file its seal record does not prove (Running, sealed Quarantined, a lost or version 1
  record) has the pages on the way to its manifest checked by hand. Before anything else of it
  is read, it must verify clean in a worker (once per handle), unless it is the Running file of
  a live writer (its instance lock's holder is alive), which only that writer writes. A handle
  made with `isolated=True` skips that verify and reads the file as it is: for a process of its
  own (a worker, an operator's command such as `nes show`), where a damaged page can abort
  that process and nothing else, and the entries before the damage are worth reading.
  A valid LMDB file that is not a nes run file (no format marker, no manifest) is refused too.
- Consistent reads: every read is one short read-only transaction, i.e. one committed state of
  the file (LMDB MVCC). The writer sidecar runs without a reader table, so it cannot see our
  snapshot and may recycle its pages after two more commits: reads stay short (one chunk per
  transaction), every entry is hash- and seq-checked (`decode_stored_rows`), and on a Running
  run a chunk that fails those checks is re-read in a fresh transaction (`LIVE_READ_RETRIES`
  times) before the failure is reported as damage.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import lmdb
import msgspec

from nes.backend import layout
from nes.backend.base import IndexKind, index_key_problem
from nes.backend.seal_record import check_before_mapping
from nes.codec import key_seq, seq_key
from nes.entry import EventStoreEntry, decode_stored_rows
from nes.errors import Corrupted, EventStoreError, Gap, HashMismatch
from nes.manifest import RunManifest, RunStatus, decode_manifest
from nes.snapshot import SnapshotAnchor, decode_anchor

__all__ = ["RunFileError", "RunFile", "check_lmdb_file", "DEFAULT_CHUNK", "LIVE_READ_RETRIES"]

DEFAULT_CHUNK = 1024
LIVE_READ_RETRIES = 3


class RunFileError(EventStoreError):
    """A path that cannot be read as a run file: missing, not a regular file, not LMDB,
    truncated, or an LMDB file that is not a nes run. The message names the path and why."""


def check_lmdb_file(path: Path) -> bool:
    """Refuse, without mapping it, a file that is not LMDB, is shorter than its newest
    committed transaction needs, or differs from its seal (`seal_record.check_before_mapping`);
    True when its seal record proves it whole, False when only its manifest path is proven.
    Raises RunFileError."""
    try:
        return check_before_mapping(path)
    except FileNotFoundError:
        raise RunFileError(f"{path}: no such run file") from None
    except IsADirectoryError:
        raise RunFileError(f"{path}: is a directory, not a run file") from None
    except OSError as exc:
        raise RunFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Corrupted as exc:
        raise RunFileError(exc.msg) from None


def _writer_alive(path: Path) -> bool:
    """Whether a live process holds the instance lock of the directory `path` lies in."""
    from nes.instancelock import LOCK_FILE_NAME, pid_alive, read_holder_pid

    pid = read_holder_pid(path.parent / LOCK_FILE_NAME)
    return pid is not None and pid_alive(pid)


class RunFile:
    """A read-only, lockless handle on one run file (see the module contract). Use as a
    context manager or call `close()`."""

    def __init__(self, path: str | os.PathLike[str], *, isolated: bool = False) -> None:
        self.path = Path(path)
        # True: reads beyond the manifest first need `_prove` (see the module contract).
        self._unproven = not check_lmdb_file(self.path) and not isolated
        self._env: lmdb.Environment | None = None
        self._open()
        try:
            self.manifest()  # a nes run file has a decodable manifest
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        try:
            env = layout.open_read_only(self.path)
        except lmdb.Error as exc:
            raise RunFileError(f"{self.path}: cannot open as LMDB: {exc}") from None
        try:
            with env.begin() as txn:
                if txn.get(layout.DB_META) is None or txn.get(layout.DB_ENTRIES) is None:
                    raise RunFileError(f"{self.path}: an LMDB file but not a nes run file (no format marker)")
            self._entries = env.open_db(layout.DB_ENTRIES, create=False)
            self._manifest_db = env.open_db(layout.DB_MANIFEST, create=False)
            self._anchors = env.open_db(layout.DB_ANCHORS, create=False)
            meta = env.open_db(layout.DB_META, create=False)
            with env.begin(db=meta) as txn:
                raw = txn.get(layout.FORMAT_KEY)
            if raw is None or len(raw) != 4 or layout.U32.unpack(raw)[0] != layout.FORMAT_VERSION:
                raise RunFileError(f"{self.path}: not a nes run file of format {layout.FORMAT_VERSION}")
            self._indexes: dict[IndexKind, lmdb._Database | None] = {}
            for kind, name in layout.INDEX_DBS.items():
                self._indexes[kind] = self._optional_db(env, name)
            self._correlation = self._optional_db(env, layout.DB_IDX_CORRELATION)
        except RunFileError:
            env.close()
            raise
        except lmdb.Error as exc:
            env.close()
            raise RunFileError(f"{self.path}: not a readable nes run file: {exc}") from None
        self._env = env

    @staticmethod
    def _optional_db(env: lmdb.Environment, name: bytes) -> lmdb._Database | None:
        try:
            return env.open_db(name, create=False, dupsort=True, dupfixed=True)
        except lmdb.NotFoundError:
            return None

    def _reopen(self) -> None:
        """After the writer grew its map past ours: map the file again."""
        self.close()
        check_lmdb_file(self.path)
        self._open()

    def _prove(self) -> None:
        """Before the first read beyond the manifest of an unproven file (module contract)."""
        manifest = self.manifest()
        if manifest.status is RunStatus.Running and _writer_alive(self.path):
            self._unproven = False
            return
        from nes.verifier import unproven_file_problem

        problem = unproven_file_problem(self.path)
        if problem is not None:
            raise RunFileError(
                f"{self.path}: run {manifest.run_id} ({manifest.status}) has no seal record that proves its file and "
                f"does not verify clean, so it is not read in this process ({problem}); `nes verify` lists the findings"
            )
        self._unproven = False

    def _begin(self, db: lmdb._Database | None = None) -> lmdb.Transaction:
        if self._env is None:
            raise RunFileError(f"{self.path}: run file is closed")
        if self._unproven and db is not self._manifest_db:
            self._prove()
        try:
            return self._env.begin(db=db)
        except lmdb.MapResizedError:
            self._reopen()
            assert self._env is not None
            return self._env.begin(db=db)

    # ---- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap the file (idempotent)."""
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> RunFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- metadata -------------------------------------------------------------------------
    def manifest(self) -> RunManifest:
        """The stored manifest, read now (a live run's is re-read each call)."""
        with self._begin(self._manifest_db) as txn:
            raw = txn.get(layout.MANIFEST_KEY)
        if raw is None:
            raise RunFileError(f"{self.path}: run file has no manifest")
        try:
            return decode_manifest(bytes(raw))
        except (msgspec.MsgspecError, ValueError) as exc:
            raise RunFileError(f"{self.path}: manifest does not decode: {exc}") from None

    def high_watermark(self) -> int:
        """The last committed entry key (the durable high-watermark on disk), read now."""
        with self._begin(self._entries) as txn:
            cursor = txn.cursor()
            if not cursor.last():
                return 0
            try:
                return key_seq(bytes(cursor.key()))
            except ValueError as exc:
                raise Corrupted(f"{self.path}: entries table: {exc}") from None

    def latest_anchor(self) -> SnapshotAnchor | None:
        """The latest snapshot anchor, or None; Corrupted when it does not decode."""
        with self._begin(self._anchors) as txn:
            cursor = txn.cursor()
            if not cursor.last():
                return None
            raw = cursor.value()
        try:
            return decode_anchor(bytes(raw))
        except (msgspec.MsgspecError, ValueError) as exc:
            raise Corrupted(f"{self.path}: snapshot anchor does not decode: {exc}") from None

    def anchors(self) -> list[SnapshotAnchor]:
        """Every snapshot anchor, oldest first; Corrupted when one does not decode."""
        with self._begin(self._anchors) as txn:
            raws = [bytes(raw) for raw in txn.cursor().iternext(keys=False, values=True)]
        try:
            return [decode_anchor(raw) for raw in raws]
        except (msgspec.MsgspecError, ValueError) as exc:
            raise Corrupted(f"{self.path}: snapshot anchor does not decode: {exc}") from None

    def size_bytes(self) -> int:
        """Bytes on disk (allocated blocks) of the run file."""
        st = self.path.stat()
        return st.st_blocks * 512

    # ---- entries ---------------------------------------------------------------------------
    def read(self, from_seq: int, to_seq: int) -> list[EventStoreEntry]:
        """Entries `from_seq ..= to_seq` (clipped to what is committed), verified, in one
        read transaction per attempt. Raises Corrupted / HashMismatch / Gap on damage."""
        attempts = LIVE_READ_RETRIES + 1
        for attempt in range(attempts):
            try:
                return self._read_once(from_seq, to_seq)
            except (Corrupted, HashMismatch, Gap, lmdb.Error) as exc:
                # A Running run's pages may have been recycled under a slow read: retry fresh.
                if attempt + 1 == attempts or self.manifest().status is not RunStatus.Running:
                    if isinstance(exc, lmdb.Error):
                        raise Corrupted(f"{self.path}: read seqs {from_seq}..{to_seq}: {exc}") from None
                    raise
        raise AssertionError("unreachable")

    def _read_once(self, from_seq: int, to_seq: int) -> list[EventStoreEntry]:
        with self._begin(self._entries) as txn:
            cursor = txn.cursor()
            if not cursor.last():
                return []
            hi = min(to_seq, key_seq(bytes(cursor.key())))
            lo = max(from_seq, 1)
            if lo > hi or not cursor.set_range(seq_key(lo)):
                return []
            rows: list[tuple[bytes, bytes]] = []
            for key, value in cursor.iternext(keys=True, values=True):
                rows.append((bytes(key), bytes(value)))
                if len(rows) > hi - lo:
                    break
            return decode_stored_rows(rows, lo, hi)

    def iter_range(self, from_seq: int, to_seq: int, chunk: int = DEFAULT_CHUNK) -> Iterator[EventStoreEntry]:
        """Entries `from_seq ..= to_seq` in seq order, one short transaction per chunk; a live
        run's entries committed meanwhile are included up to `to_seq`. On damage, every entry
        before the damaged one is yielded first, then the error is raised."""
        cursor = max(from_seq, 1)
        while cursor <= to_seq:
            hi = min(to_seq, cursor + chunk - 1)
            try:
                entries = self.read(cursor, hi)
            except (Corrupted, HashMismatch, Gap):
                # Hand out every good entry before the damage, then raise at the damaged one.
                for seq in range(cursor, hi + 1):
                    yield from self.read(seq, seq)
                raise
            if not entries:
                return
            yield from entries
            cursor = entries[-1].seq + 1

    def get(self, seq: int) -> EventStoreEntry | None:
        """One entry, or None above the committed high-watermark."""
        entries = self.read(seq, seq)
        return entries[0] if entries else None

    def lookup(self, kind: IndexKind, key: str) -> list[int]:
        """Every seq recorded under an order-id index key, ascending."""
        if index_key_problem(key) is not None:
            return []
        return self._dup_seqs(self._indexes.get(kind), key.encode("utf-8"))

    def lookup_correlation(self, correlation_id: uuid.UUID) -> list[int]:
        """Every seq whose entry carries `correlation_id`, from `idx_correlation_id`.
        Raises RunFileError for a file written before that index existed."""
        if self._correlation is None:
            raise RunFileError(f"{self.path}: run file has no correlation index (written by an older nes)")
        return self._dup_seqs(self._correlation, correlation_id.bytes)

    def index_rows(self, kind: IndexKind) -> list[tuple[str, int]]:
        """Every (order id, seq) row of an order-id index, in key order, read in one
        transaction (undecodable UTF-8 is shown with replacement characters)."""
        db = self._indexes.get(kind)
        if db is None:
            return []
        out = []
        with self._begin(db) as txn:
            for key, raw in txn.cursor().iternext(keys=True, values=True):
                if len(raw) != 8:
                    raise Corrupted(f"{self.path}: index value of {len(raw)} bytes (expected 8)")
                out.append((bytes(key).decode("utf-8", errors="replace"), layout.U64.unpack(raw)[0]))
        return out

    @property
    def has_correlation_index(self) -> bool:
        """Whether the file carries `idx_correlation_id`."""
        return self._correlation is not None

    def _dup_seqs(self, db: lmdb._Database | None, key: bytes) -> list[int]:
        if db is None:
            return []
        with self._begin(db) as txn:
            cursor = txn.cursor()
            if not cursor.set_key(key):
                return []
            out = []
            for raw in cursor.iternext_dup(keys=False, values=True):
                if len(raw) != 8:
                    raise Corrupted(f"{self.path}: index value of {len(raw)} bytes (expected 8)")
                out.append(layout.U64.unpack(raw)[0])
            return out
