"""The LMDB backend: one run file per run, crash-safe without a repair pass.

Contract (on top of `RunStoreBase`, layout in `nes.backend.layout`):
- One write transaction per `append_batch`, committed with `sync=True, metasync=True`; the
  in-memory high-watermark moves only after the commit returned. A failed commit leaves no
  partial batch (LMDB aborts the whole transaction).
- The map never runs out while the disk has room: `MapFullError` doubles the map and retries the
  batch. A full disk, the file-size limit or a quota is `Disk`; LMDB structural errors are
  `Corrupted`; anything else is `Backend`.
- One writer per run file: the data file is `flock`ed exclusively while a run is open writable,
  so a second backend (or a recovery worker) cannot append to a run someone else is writing.
- A Running file found by `open_run` is adopted (high-watermark = last key on disk) and reported
  as `CrashedPredecessor`; the backend then holds it writable so it can be sealed.
- A run file's databases, format marker and manifest are its first commit (`_RunFile.create`).
- Sealed files open read-only (`open_sealed_file`, `lock=False`); a Running file is refused.
  An existing file is mapped only after `seal_record.check_before_mapping`: a sealed file its
  seal record does not prove is read only after a clean verify in a worker (docs/integrity.md).
- Run files are created 0600 in a 0700 instance directory; ids are validated path components.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import zlib
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgspec

from nes.backend import integrity, layout
from nes.backend.seal_record import (
    SEAL_RECORD_VERSION,
    SealRecord,
    check_before_mapping,
    file_digest,
    seal_record_path,
    write_seal_record,
)
from nes.codec import key_seq, seq_key
from nes.backend.base import (
    IndexKind, PreparedBatch, RunStoreBase, _Run, correlation_index_rows, normalized_for_open, value_ts_init,
)
from nes.errors import (
    Backend,
    Closed,
    Corrupted,
    CrashedPredecessor,
    Disk,
    EventStoreError,
    InvalidArgument,
    UnsupportedFormat,
    is_disk_pressure,
)
from nes.manifest import RunManifest, RunStatus, check_seal_transition, decode_manifest, encode_manifest
from nes.snapshot import SnapshotAnchor, decode_anchor, encode_anchor

__all__ = ["LmdbBackend", "read_manifest", "classify_lmdb_error", "durable_write", "DEFAULT_MAP_SIZE", "last_entry_seq"]

DEFAULT_MAP_SIZE = 1 << 30  # address space only: the file grows as pages are written
_DISK_TEXTS = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT))


def classify_lmdb_error(exc: BaseException, what: str, path: Path | None = None) -> EventStoreError:
    """Map an LMDB / OS failure to the closed error set.

    LMDB reports a write that came up short as EIO, which is what a full disk or the file-size
    limit usually produce mid-flush: with `path` known, an EIO while the file is at its size
    limit or its filesystem is nearly full is `Disk`, not a generic backend error."""
    if isinstance(exc, EventStoreError):
        return exc
    detail, subject = str(exc), what.rsplit(" ", 1)[-1]
    if detail.startswith(f"{subject}: "):  # py-lmdb names the path itself: print it once
        detail = detail[len(subject) + 2 :]
    text = f"{what}: {detail}"
    if isinstance(exc, lmdb.DiskError) or is_disk_pressure(exc) or any(t in str(exc) for t in _DISK_TEXTS):
        return Disk(text)
    if path is not None and _EIO_TEXT in str(exc) and _out_of_room(path):
        return Disk(f"{text} (no room left for the file)")
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.PanicError, lmdb.InvalidError,
                        lmdb.VersionMismatchError, lmdb.IncompatibleError)):
        return Corrupted(text)
    return Backend(text)


_EIO_TEXT = os.strerror(errno.EIO)
_NEARLY_FULL_BYTES = 64 << 20  # less free space than this: a short write means the disk is full
_LIMIT_SLACK_BYTES = 1 << 20  # within this of RLIMIT_FSIZE: a short write means the limit


def _out_of_room(path: Path) -> bool:
    try:
        size = path.stat().st_size
        fs = os.statvfs(path)
    except OSError:
        return False
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    at_limit = soft != resource.RLIM_INFINITY and size + _LIMIT_SLACK_BYTES >= soft
    return at_limit or fs.f_bavail * fs.f_frsize < _NEARLY_FULL_BYTES


T = TypeVar("T")


def durable_write(env: lmdb.Environment, path: Path, body: Callable[[lmdb.Transaction], T]) -> T:
    """Run `body(txn)` in one write transaction (fsynced on commit, as the env is opened);
    when the map is full, double it and retry: a run never fails on map size while the disk
    has room. Failures come out in the closed error set."""
    while True:
        try:
            with env.begin(write=True) as txn:
                return body(txn)
        except lmdb.MapFullError:
            grow_map(env, path)
        except Exception as exc:  # noqa: BLE001 - mapped into the closed error set
            raise classify_lmdb_error(exc, f"commit to {path}", path) from exc


def grow_map(env: lmdb.Environment, path: Path) -> None:
    """Double the map (no transaction of this process may be open): the disk, not the map
    size, is what limits a run."""
    current = env.info()["map_size"]
    try:
        env.set_mapsize(current * 2)
    except lmdb.Error as exc:
        raise classify_lmdb_error(exc, f"grow map of {path} to {current * 2} bytes") from exc


def last_entry_seq(cursor: lmdb.Cursor) -> int:
    """The largest well-formed (8-byte) key of the entries table `cursor` walks, 0 if none."""
    if not cursor.last():
        return 0
    for key in cursor.iterprev(keys=True, values=False):
        if len(key) == 8:
            return key_seq(bytes(key))
    return 0


class _RunFile:
    """An open LMDB environment with its named databases (one owner: the backend or a reader)."""

    def __init__(
        self,
        path: Path,
        *,
        writable: bool,
        map_size: int = DEFAULT_MAP_SIZE,
        exclusive: bool = False,
        initial: Callable[[lmdb.Transaction, _RunFile], None] | None = None,
    ) -> None:
        """`initial`: the file is new (just created, trusted) and `initial(txn, self)` writes its
        first contents in the same write transaction that creates its databases."""
        self.path = path
        self._lock_fd: int | None = None
        # True: no read of this file can fault (a new file, or one its seal record proves).
        self.proven = initial is not None
        if not path.is_file() or path.is_symlink():
            raise Backend(f"run file not found: {path}")
        if initial is None:  # an existing file is untrusted: refuse what mapping would fault on
            try:
                self.proven = check_before_mapping(path)
            except OSError as exc:
                raise classify_lmdb_error(exc, f"open {path}") from exc
        if writable:
            # Lock before LMDB touches the file: a refused second writer must not open the
            # environment (or run a write transaction) on a run another writer holds.
            self._lock()
        try:
            if writable:
                self.env = lmdb.open(
                    str(path), subdir=False, map_size=map_size, max_dbs=layout.MAX_DBS, sync=True,
                    metasync=True, mode=layout.FILE_MODE, meminit=False, readahead=False, create=False,
                    lock=not exclusive,
                )
            else:
                self.env = layout.open_read_only(path)
        except lmdb.Error as exc:
            self.close()
            raise classify_lmdb_error(exc, f"open {path}") from exc
        try:
            self._open_dbs(writable, initial)
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(
        cls, path: Path, map_size: int, exclusive: bool, initial: Callable[[lmdb.Transaction, _RunFile], None]
    ) -> _RunFile:
        """A new run file whose databases and `initial` contents are its first commit: a kill
        before that commit leaves a file with no transaction at all (recovery quarantines it),
        never one with databases but no format marker."""
        try:
            layout.create_private_file(path)
        except FileExistsError:
            raise Backend(f"run file already exists: {path}") from None
        except OSError as exc:
            raise classify_lmdb_error(exc, f"create {path}") from exc
        try:
            run_file = cls(path, writable=True, map_size=map_size, exclusive=exclusive, initial=initial)
        except BaseException:
            path.unlink(missing_ok=True)
            Path(f"{path}-lock").unlink(missing_ok=True)
            raise
        return run_file

    def _open_dbs(self, writable: bool, initial: Callable[[lmdb.Transaction, _RunFile], None] | None) -> None:
        env = self.env

        def open_all(**opts: Any) -> None:
            self.entries = env.open_db(layout.DB_ENTRIES, **opts)
            self.manifest_db = env.open_db(layout.DB_MANIFEST, **opts)
            self.anchors = env.open_db(layout.DB_ANCHORS, **opts)
            self.meta = env.open_db(layout.DB_META, **opts)
            self.digests = env.open_db(integrity.DB_DIGESTS, **opts)
            self.indexes = {
                kind: env.open_db(name, dupsort=True, dupfixed=True, **opts) for kind, name in layout.INDEX_DBS.items()
            }

        def open_correlation(txn: lmdb.Transaction | None = None, create: bool = True) -> None:
            # Files written before the correlation index have none: they read without it.
            try:
                self.correlation: lmdb._Database | None = env.open_db(
                    layout.DB_IDX_CORRELATION, txn=txn, create=create, dupsort=True, dupfixed=True
                )
            except lmdb.NotFoundError:
                self.correlation = None

        if initial is not None:
            def first_commit(txn: lmdb.Transaction) -> None:
                open_all(txn=txn)
                open_correlation(txn=txn)
                initial(txn, self)

            durable_write(env, self.path, first_commit)
            return
        try:
            if writable:
                with env.begin() as txn:  # an existing file must be of this format before any write
                    if txn.get(layout.DB_META) is not None:
                        self.meta = env.open_db(layout.DB_META, txn=txn, create=False)
                        self.check_format(txn)
                with env.begin(write=True) as txn:  # creates what is missing, in one write transaction
                    open_all(txn=txn)
                    open_correlation(txn=txn)
            else:  # a reader must find every database (named dbs are keys of the main db)
                with env.begin() as txn:
                    if txn.get(layout.DB_META) is None:
                        raise UnsupportedFormat("missing store format marker; the run file must be regenerated")
                    self.meta = env.open_db(layout.DB_META, txn=txn, create=False)
                    self.check_format(txn)
                open_all(create=False)
                open_correlation(create=False)
        except EventStoreError:
            raise
        except lmdb.Error as exc:
            raise Corrupted(f"open databases of {self.path}: {exc}") from exc

    def _lock(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Backend(f"run file is held by another writer: {self.path}") from None
        self._lock_fd = fd

    def close(self) -> None:
        env = getattr(self, "env", None)
        if env is not None:
            env.close()
            self.env = None  # type: ignore[assignment]
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- reads --------------------------------------------------------------------------------
    def check_format(self, txn: lmdb.Transaction | None = None) -> None:
        """`Corrupted` unless the format marker is this nes's (`layout.format_version_problem`)."""
        raw: bytes | memoryview | None
        if txn is None:
            with self.env.begin(db=self.meta) as own:
                raw = own.get(layout.FORMAT_KEY)
        else:
            raw = txn.get(layout.FORMAT_KEY, db=self.meta)
        problem = layout.format_version_problem(None if raw is None else bytes(raw))
        if problem is not None:
            raise UnsupportedFormat(problem)

    def read_manifest(self) -> RunManifest:
        with self.env.begin(db=self.manifest_db) as txn:
            raw = txn.get(layout.MANIFEST_KEY)
        if raw is None:
            raise Corrupted(f"run file has no manifest: {self.path}")
        try:
            return decode_manifest(raw)
        except (msgspec.MsgspecError, ValueError) as exc:  # invalid UTF-8 is a ValueError
            raise Corrupted(f"decode manifest: {exc}") from exc

    def last_seq(self) -> int:
        """The largest well-formed (8-byte) entry key; malformed keys never block adoption (a
        scan that reaches one reports it Corrupted)."""
        with self.env.begin(db=self.entries) as txn:
            return last_entry_seq(txn.cursor())

    def max_ts_init(self) -> int:
        """Largest ts_init on disk (the recovery path's end_ts_init); one pass over the values.
        Rows too short to carry a ts_init are skipped (spec 4.1: open never fails on them)."""
        best = 0
        with self.env.begin(db=self.entries, buffers=True) as txn:
            for value in txn.cursor().iternext(keys=False, values=True):
                if len(value) < 48:  # hash[32] || seq[8] || ts_init[8]
                    continue  # undecodable rows never block adoption; reads report them Corrupted
                best = max(best, value_ts_init(value))
        return best


def read_manifest(path: str | os.PathLike[str]) -> RunManifest:
    """The manifest of a run file, opened read-only (format marker checked)."""
    run_file = _RunFile(Path(path), writable=False)
    try:
        return run_file.read_manifest()
    except lmdb.Error as exc:
        raise classify_lmdb_error(exc, f"read manifest of {path}") from exc
    finally:
        run_file.close()


class LmdbBackend(RunStoreBase):
    """Runs stored as `<base_dir>/<instance_id>/<run_id>.lmdb`."""

    def __init__(
        self, base_dir: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE, exclusive: bool = False
    ) -> None:
        """`exclusive=True` (the writer sidecar) opens a writable run without LMDB's lock file,
        so a staged batch may be committed on another thread than the one that staged it
        (`begin_append`). The flock still keeps other writers out; readers of a Running run
        (recovery, `list_runs`) open it without the lock file in any case."""
        if map_size < 1 << 16:
            raise InvalidArgument(f"map_size must be at least 64 KiB, got {map_size}")
        self.base_dir = Path(base_dir)
        self._initial_map_size = map_size
        self._exclusive = exclusive
        self.cross_thread_commit = exclusive
        self._file: _RunFile | None = None
        self._run = None

    # -- lifetime -----------------------------------------------------------------------------
    def __enter__(self) -> LmdbBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the environment (no seal: sealing is an explicit `seal`)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._run = None

    @property
    def path(self) -> Path | None:
        """The open run's file path (None before open)."""
        return None if self._file is None else self._file.path

    def _f(self) -> _RunFile:
        self._require_run()
        assert self._file is not None
        return self._file

    def open_run(self, manifest: RunManifest) -> None:
        """Create the run file for `manifest` and hold it Running; CrashedPredecessor if it exists Running."""
        if self._run is not None and self._run.read_only:
            raise Closed()  # a sealed read-only handle is never reused for a new run
        if self._run is not None and not self._run.manifest.is_sealed():
            raise CrashedPredecessor()
        self.close()
        path = layout.run_file_path(self.base_dir, manifest.instance_id, manifest.run_id)
        if path.exists():
            self._adopt(path)
            return
        fresh = normalized_for_open(manifest)

        def start(txn: lmdb.Transaction, run_file: _RunFile) -> None:
            txn.put(layout.FORMAT_KEY, layout.encode_format_version(), db=run_file.meta)
            _put_manifest(txn, run_file, fresh)

        run_file = _RunFile.create(path, self._initial_map_size, self._exclusive, start)
        self._file = run_file
        self._run = _Run(fresh, 0, 0, read_only=False)

    def _adopt(self, path: Path) -> None:
        run_file = _open_existing_writable(path, self._initial_map_size, self._exclusive)
        try:
            run_file.check_format()
            stored = run_file.read_manifest()
            if stored.is_sealed():
                raise Backend(f"run {stored.run_id} is already sealed {stored.status}")
            high_watermark = run_file.last_seq()
            max_ts = run_file.max_ts_init()
        except lmdb.Error as exc:
            run_file.close()
            raise classify_lmdb_error(exc, f"adopt {path}") from exc
        except BaseException:
            run_file.close()
            raise
        self._file = run_file
        self._run = _Run(stored, high_watermark, max_ts, read_only=False)
        raise CrashedPredecessor()

    @classmethod
    def open_sealed_file(cls, path: str | os.PathLike[str]) -> LmdbBackend:
        """A read-only handle on a sealed run file; appends and anchors raise `Closed`."""
        path = Path(path)
        backend = cls(path.parent.parent)
        run_file = _RunFile(path, writable=False)
        try:
            run_file.check_format()
            manifest = run_file.read_manifest()
            if not manifest.is_sealed():
                raise Backend(f"run {manifest.run_id} is still Running; recover it before opening it sealed")
            if not run_file.proven:
                _prove_in_worker(path, manifest)
            high_watermark = run_file.last_seq()
        except lmdb.Error as exc:
            run_file.close()
            raise classify_lmdb_error(exc, f"open {path}") from exc
        except BaseException:
            run_file.close()
            raise
        backend._file = run_file
        backend._run = _Run(manifest, high_watermark, manifest.end_ts_init or 0, read_only=True)
        return backend

    def open_sealed(self, instance_id: str, run_id: str) -> LmdbBackend:
        """A read-only handle on a sealed run of this base directory."""
        return self.open_sealed_file(layout.run_file_path(self.base_dir, instance_id, run_id))

    def list_runs(self, instance_id: str) -> list[RunManifest]:
        """Manifests of the instance's runs sorted by start_ts_init; files without a readable
        manifest are skipped (they are the verifier's and recovery's business)."""
        manifests = []
        for path in layout.list_run_files(self.base_dir, instance_id):
            try:
                manifests.append(read_manifest(path))
            except UnsupportedFormat:
                raise  # a file from a newer nes: listing without it would mislead
            except EventStoreError:
                continue
            except (OSError, lmdb.Error):
                continue
        return sorted(manifests, key=lambda m: (m.start_ts_init, m.run_id))

    # -- writes -------------------------------------------------------------------------------
    def _write(self, run_file: _RunFile, body: Callable[[lmdb.Transaction], object]) -> None:
        durable_write(run_file.env, run_file.path, body)

    def _stage(self, batch: PreparedBatch) -> Callable[[], None]:
        """Put the batch in a write transaction now; the returned callable commits it (fsync;
        py-lmdb releases the GIL meanwhile). A full map, at put or at commit, doubles the map
        and redoes the batch."""
        run_file = self._f()
        correlation_rows = correlation_index_rows(batch.items)

        def put() -> lmdb.Transaction:
            while True:
                txn = run_file.env.begin(write=True)
                try:
                    _, added = txn.cursor(db=run_file.entries).putmulti(batch.items, append=True)
                    if added != len(batch.items):
                        raise Backend(f"appended {added} of {len(batch.items)} entries")
                    # Every row put into an index db is summed into this commit's record.
                    # (integrity.row_term, inlined: this loop is on the writer's commit path)
                    crc, adler = zlib.crc32, zlib.adler32
                    crc_sum = adler_sum = count = 0
                    if correlation_rows:
                        txn.cursor(db=run_file.correlation).putmulti(correlation_rows, dupdata=True)
                        prefix = _ROW_PREFIX_CORRELATION
                        for correlation_key, seq_value in correlation_rows:
                            row = prefix + correlation_key + seq_value
                            crc_sum += crc(row)
                            adler_sum += adler(row)
                        count = len(correlation_rows)
                    indexes, prefixes = run_file.indexes, _ROW_PREFIXES
                    for kind, key, seq in batch.index_rows:
                        key_bytes, value = key.encode("utf-8"), seq_key(seq)
                        if txn.put(key_bytes, value, db=indexes[kind], dupdata=True):  # a repeat is stored once
                            row = prefixes[kind] + key_bytes + value
                            crc_sum += crc(row)
                            adler_sum += adler(row)
                            count += 1
                    rows = integrity.IndexRowSum()
                    rows.crc_sum, rows.adler_sum, rows.rows = crc_sum, adler_sum, count
                    txn.put(
                        integrity.commit_key(batch.first_seq),
                        integrity.encode_commit(batch.first_seq + len(batch.items) - 1, rows),
                        db=run_file.digests,
                    )
                    return txn
                except lmdb.MapFullError:
                    txn.abort()
                    grow_map(run_file.env, run_file.path)
                except BaseException as exc:
                    txn.abort()
                    raise classify_lmdb_error(exc, f"stage batch in {run_file.path}", run_file.path) from exc

        txn = put()

        def commit() -> None:
            nonlocal txn
            while True:
                try:
                    txn.commit()
                    return
                except lmdb.MapFullError:  # LMDB aborted it; nothing landed
                    grow_map(run_file.env, run_file.path)
                    txn = put()
                except Exception as exc:  # noqa: BLE001 - LMDB aborted the transaction: nothing landed
                    raise classify_lmdb_error(exc, f"commit to {run_file.path}", run_file.path) from exc

        return commit


    def _store_anchor(self, anchor: SnapshotAnchor) -> None:
        run_file = self._f()
        key, value = seq_key(anchor.high_watermark), encode_anchor(anchor)
        self._write(run_file, lambda txn: (
            txn.put(key, value, db=run_file.anchors),
            txn.put(integrity.anchor_key(key), integrity.anchor_digest(key, value), db=run_file.digests),
        ))

    def _store_manifest(self, manifest: RunManifest) -> None:
        run_file = self._f()
        self._write(run_file, lambda txn: _put_manifest(txn, run_file, manifest))
        if manifest.is_sealed():  # after the sealed manifest is durable: the rollback evidence
            _write_seal_record(run_file, manifest)

    @classmethod
    def write_missing_seal_record(cls, path: str | os.PathLike[str]) -> bool:
        """Recovery only, inside its worker, for a sealed run file it has just verified clean:
        write its seal record if it has none (a crash between the seal commit and the record
        leaves that); True if one was written. (Through `open_sealed_file` the file would be
        verified a second time, as any file without a record is.)"""
        path = Path(path)
        if os.path.lexists(seal_record_path(path)):
            return False
        run_file = _RunFile(path, writable=False)
        try:
            manifest = run_file.read_manifest()
            if not manifest.is_sealed():
                return False
            _write_seal_record(run_file, manifest)
            return True
        finally:
            run_file.close()

    @classmethod
    def force_quarantine(cls, path: str | os.PathLike[str]) -> RunManifest:
        """Recovery only: re-mark a run it has just sealed as Quarantined, outside the status
        table, when the seal itself exposed damage (see `nes.kernel.recover_run_file`). The seal
        record written at the first seal is kept: it no longer matches, as it should not."""
        path = Path(path)
        run_file = _open_existing_writable(path)
        try:
            quarantined = msgspec.structs.replace(run_file.read_manifest(), status=RunStatus.Quarantined)
            durable_write(run_file.env, path, lambda txn: _put_manifest(txn, run_file, quarantined))
            return quarantined
        except lmdb.Error as exc:
            raise classify_lmdb_error(exc, f"quarantine {path}") from exc
        finally:
            run_file.close()

    @classmethod
    def seal_predecessor(
        cls, path: str | os.PathLike[str], status: RunStatus, high_watermark: int, end_ts_init: int | None
    ) -> RunManifest:
        """Seal a Running run file found by the recovery sweep with what its verified scan
        found (`high_watermark`, `end_ts_init`), without re-reading its entries: a file whose
        entries LMDB cannot read can still be sealed Quarantined. Returns the sealed manifest."""
        path = Path(path)
        backend = cls(path.parent.parent)
        run_file = _open_existing_writable(path)
        try:
            stored = run_file.read_manifest()
            check_seal_transition(stored.status, status)
            sealed = msgspec.structs.replace(
                stored, status=status, high_watermark=high_watermark, end_ts_init=end_ts_init if high_watermark else None
            )
            backend._file = run_file
            backend._run = _Run(stored, high_watermark, end_ts_init or 0, read_only=False)
            backend._store_manifest(sealed)
            return sealed
        except lmdb.Error as exc:
            raise classify_lmdb_error(exc, f"seal {path}") from exc
        finally:
            backend.close()
            run_file.close()

    # -- reads --------------------------------------------------------------------------------
    def _get_value(self, seq: int) -> bytes | None:
        with _reads_mapped(self):
            run_file = self._f()
            with run_file.env.begin(db=run_file.entries) as txn:
                return txn.get(seq_key(seq))

    def _read_rows(self, lo: int, hi: int) -> list[tuple[bytes, bytes]]:
        with _reads_mapped(self):
            run_file = self._f()
            with run_file.env.begin(db=run_file.entries) as txn:
                cursor = txn.cursor()
                if not cursor.set_range(seq_key(lo)):
                    return []
                return list(islice(cursor.iternext(keys=True, values=True), hi - lo + 1))

    def _read_values(self, lo: int, hi: int) -> list[bytes] | None:
        """Values only (no key tuples): the reader's scan path. The cursor's first and last
        keys prove the window is exactly `lo..=hi` (LMDB keys are unique and sorted)."""
        with _reads_mapped(self):
            run_file = self._f()
            first, last = seq_key(lo), seq_key(hi)
            with run_file.env.begin(db=run_file.entries) as txn:
                cursor = txn.cursor()
                if not cursor.set_range(first) or cursor.key() != first:
                    return None
                values = list(islice(cursor.iternext(keys=False, values=True), hi - lo + 1))
                if len(values) != hi - lo + 1 or cursor.key() != last:
                    return None
                return values

    def _index_seqs(self, kind: IndexKind, key: str) -> list[int]:
        with _reads_mapped(self):
            run_file = self._f()
            out: list[int] = []
            with run_file.env.begin(db=run_file.indexes[kind]) as txn:
                cursor = txn.cursor()
                if cursor.set_key(key.encode("utf-8")):
                    out = [_index_seq(raw) for raw in cursor.iternext_dup(keys=False, values=True)]
            return out

    def _index_pairs(self, kind: IndexKind) -> list[tuple[str, int]]:
        with _reads_mapped(self):
            run_file = self._f()
            with run_file.env.begin(db=run_file.indexes[kind]) as txn:
                try:
                    return [
                        (key.decode("utf-8"), _index_seq(raw))
                        for key, raw in txn.cursor().iternext_nodup(keys=True, values=True)
                    ]
                except UnicodeDecodeError as exc:
                    raise Corrupted(f"index key is not UTF-8: {exc}") from exc

    def _correlation_seqs(self, correlation_key: bytes) -> list[int]:
        run_file = self._f()
        if run_file.correlation is None:
            return []
        with run_file.env.begin(db=run_file.correlation) as txn:
            cursor = txn.cursor()
            if not cursor.set_key(correlation_key):
                return []
            return [_index_seq(raw) for raw in cursor.iternext_dup(keys=False, values=True)]

    def _load_latest_anchor(self) -> SnapshotAnchor | None:
        with _reads_mapped(self):
            run_file = self._f()
            with run_file.env.begin(db=run_file.anchors) as txn:
                cursor = txn.cursor()
                if not cursor.last():
                    return None
                raw = cursor.value()
            try:
                return decode_anchor(raw)
            except (msgspec.MsgspecError, ValueError) as exc:  # invalid UTF-8 is a ValueError
                raise Corrupted(f"decode snapshot anchor: {exc}") from exc


def _write_seal_record(run_file: _RunFile, manifest: RunManifest) -> None:
    """Write the seal record of `run_file`, sealed as `manifest` says (`nes.backend.seal_record`)."""
    try:
        with run_file.env.begin() as txn:
            last = txn.cursor(db=run_file.entries)
            last_hash = bytes(last.value()[:32]).hex() if last.last() and manifest.high_watermark else ""
        size, digest = file_digest(run_file.path)  # after the sealed commit: the file is final
        record = SealRecord(
            version=SEAL_RECORD_VERSION,
            run_id=manifest.run_id,
            status=str(manifest.status),
            high_watermark=manifest.high_watermark,
            end_ts_init=manifest.end_ts_init,
            manifest_digest=integrity.manifest_digest(encode_manifest(manifest)).hex(),
            last_entry_hash=last_hash,
            file_size=size,
            file_digest=digest,
        )
        write_seal_record(run_file.path, record)
    except (OSError, lmdb.Error) as exc:
        raise classify_lmdb_error(exc, f"write seal record of {run_file.path}", run_file.path) from exc


def _prove_in_worker(path: Path, manifest: RunManifest) -> None:
    """A sealed file its seal record does not prove (none, version 1, sealed Quarantined) is
    read in-process only after the verifier, in a worker, found it clean: a damaged page
    crashes that worker, not the caller."""
    from nes.verifier import unproven_file_problem

    problem = unproven_file_problem(path)
    if problem is not None:
        raise Corrupted(
            f"run {manifest.run_id} ({manifest.status}) has no seal record that proves its file and does not "
            f"verify clean, so it is not read in-process: {problem}"
        )


def _open_existing_writable(path: Path, map_size: int = DEFAULT_MAP_SIZE, exclusive: bool = False) -> _RunFile:
    """An existing run file, writable, mapped with room to grow (twice its size at least)."""
    return _RunFile(path, writable=True, map_size=max(map_size, path.stat().st_size * 2), exclusive=exclusive)


class _reads_mapped:
    """Raw LMDB errors of a read come out as `Corrupted` (or the closed set), never `lmdb.*`."""

    def __init__(self, backend: LmdbBackend) -> None:
        self._path = backend.path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, lmdb.Error):
            raise classify_lmdb_error(exc, f"read {self._path}") from exc




_ROW_PREFIX_CORRELATION = integrity.row_prefix(layout.DB_IDX_CORRELATION)


class _RowPrefixes(dict):  # type: ignore[type-arg]
    """`row_prefix` of each index kind's database, computed once (and for kinds added later)."""

    def __missing__(self, kind: IndexKind) -> bytes:
        self[kind] = prefix = integrity.row_prefix(layout.INDEX_DBS[kind])
        return prefix


_ROW_PREFIXES = _RowPrefixes()


def _put_manifest(txn: lmdb.Transaction, run_file: _RunFile, manifest: RunManifest) -> None:
    raw = encode_manifest(manifest)
    txn.put(layout.MANIFEST_KEY, raw, db=run_file.manifest_db)
    txn.put(integrity.MANIFEST_DIGEST_KEY, integrity.manifest_digest(raw), db=run_file.digests)


def _index_seq(raw: bytes) -> int:
    if len(raw) != 8:
        raise Corrupted(f"index value of {len(raw)} bytes (expected 8)")
    return layout.U64.unpack(raw)[0]

