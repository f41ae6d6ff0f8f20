"""The LMDB run-file layout, written down once (ARCHITECTURE.md "Storage").

One file per run, `<base>/<instance_id>/<run_id>.lmdb` (`subdir=False`, LMDB keeps `-lock`
beside it), created 0600 in a 0700 directory. Named databases:

| db                    | key                      | value                                  |
| --------------------- | ------------------------ | -------------------------------------- |
| `entries`             | seq, u64 big-endian      | `entry_hash[32] || canonical frame`    |
| `idx_client_order_id` | id, UTF-8 (dupsort,      | every seq that carried the id, u64 BE  |
| `idx_venue_order_id`  |  dupfixed)               |                                        |
| `idx_correlation_id`  | correlation id, 16 raw   | every seq whose frame carries it, u64 BE |
|                       | UUID bytes (dupsort, dupfixed) | (derived from the frame at append) |
| `manifest`            | `current`                | the run manifest (msgpack)             |
| `anchors`             | high-watermark, u64 BE   | snapshot anchor (msgpack); last = latest |
| `meta`                | `format`                 | store format version, u32 BE           |
| `digests`             | `manifest`, `anchor`+key,| digests over the manifest, each anchor |
|                       | `commit`+first seq       | and each commit's index rows           |

Format version 2 added `digests` (`nes.backend.integrity`); a version-1 file is refused with a
clear `Corrupted`, as is a future version. Every index database is listed in `ALL_INDEX_DBS`
(the order-id kinds of `INDEX_DBS`, plus the correlation index): the verifier walks every one
of them, and `LmdbBackend._stage` sums every row it puts into any of them into the commit's
digest. A new index is covered by listing it there and summing its rows where `_stage` puts
them (as the correlation rows are). Run files are listed without following symlinks (`list_run_files`), and a
run file is checked against its LMDB meta page before it is mapped (`check_run_file_shape`),
so a truncated file is refused instead of faulting (SIGBUS) the process that maps it.

The reader, verifier and retention planner all open files through these names. Seq keys are
encoded and decoded by `nes.codec.seq_key` / `key_seq` (the same u64 BE as the frame's seq).
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO

import lmdb

from nes.backend.base import IndexKind
from nes.ids import validate_path_id

DB_ENTRIES = b"entries"
DB_MANIFEST = b"manifest"
DB_ANCHORS = b"anchors"
DB_META = b"meta"
INDEX_DBS: dict[IndexKind, bytes] = {
    IndexKind.ClientOrderId: b"idx_client_order_id",
    IndexKind.VenueOrderId: b"idx_venue_order_id",
}
# Derived from each entry's frame (not from encoder index keys), in the same write transaction
# as the entry: correlation id (16 raw UUID bytes) -> seq.
DB_IDX_CORRELATION = b"idx_correlation_id"
# Every index database (all dupsort + dupfixed, value = seq u64 BE), name -> label.
ALL_INDEX_DBS: dict[bytes, str] = {
    **{name: kind.value for kind, name in INDEX_DBS.items()},
    DB_IDX_CORRELATION: "CorrelationId",
}
MANIFEST_KEY = b"current"
FORMAT_KEY = b"format"
FORMAT_VERSION = 2
MAX_DBS = 16
RUN_FILE_SUFFIX = ".lmdb"
MARKER_FILE_SUFFIX = ".markers.lmdb"  # the data-marker sidecar beside a run file
FILE_MODE = 0o600
DIR_MODE = 0o700

U64 = struct.Struct(">Q")
U64_LE = struct.Struct("<Q")
U32 = struct.Struct(">I")


def open_read_only(path: str | Path) -> lmdb.Environment:
    """A run file opened read-only and without LMDB's lock file: a reader never writes, never
    creates a missing file and never registers with (or waits on) a writer. The file's meta
    page is checked first (`check_run_file_shape`: a truncated file raises `Corrupted` rather
    than faulting the process on first read). The OS readahead
    stays on (LMDB's default): run files are read in seq order (replay, verify), and a cold
    full scan without it ran 3.6x slower here (98k vs 353k entries/s)."""
    check_run_file_shape(path)
    return lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=MAX_DBS, create=False)


def encode_format_version(version: int = FORMAT_VERSION) -> bytes:
    """The `meta/format` value."""
    return U32.pack(version)


def format_version_problem(raw: bytes | None) -> str | None:
    """Why a `meta/format` value is not this nes's format (None if it is)."""
    if raw is None:
        return "missing store format marker; the run file must be regenerated"
    if len(raw) != U32.size:
        return f"unsupported event store on-disk format version (a marker of {len(raw)} bytes, expected {U32.size})"
    (version,) = U32.unpack(raw)
    if version == 1:
        return (
            "run file format version 1 predates the index, manifest and anchor digests of version "
            f"{FORMAT_VERSION}; this nes cannot vouch for it: regenerate the run"
        )
    if version != FORMAT_VERSION:
        return f"unsupported event store on-disk format version {version}; supported version is {FORMAT_VERSION}"
    return None


# LMDB meta pages (pages 0 and 1): MDB_meta follows a 16-byte page header; little-endian here.
_META_MAGIC = 0xBEEFC0DE
_META_HEAD = struct.Struct("<II")  # mm_magic, mm_version at +16
_META_PSIZE = struct.Struct("<I")  # mm_dbs[FREE_DBI].md_pad = page size, at +40
_META_TAIL = struct.Struct("<QQ")  # mm_last_pg, mm_txnid at +136
_META_END = 152
_MIN_PAGE, _MAX_PAGE = 512, 1 << 16


class RunFileShape(tuple[int, int, int]):
    """(page_size, last_page, txnid) of the meta page LMDB will use."""

    __slots__ = ()

    @property
    def txnid(self) -> int:
        """The last committed transaction (0: none ever committed)."""
        return self[2]


def _current_meta(handle: BinaryIO, path: str | Path) -> tuple[bytes, int]:
    """The first `_META_END` bytes of the meta page LMDB will use, and the file size; plain
    reads. `Corrupted` if there is none."""
    from nes.errors import Corrupted

    info = os.fstat(handle.fileno())
    if not stat.S_ISREG(info.st_mode):
        raise Corrupted(f"run file {path} is not a regular file")
    handle.seek(0)
    first = handle.read(_META_END)
    metas = []
    if len(first) == _META_END:
        metas.append(first)
        magic, _ = _META_HEAD.unpack_from(first, 16)
        (page_size,) = _META_PSIZE.unpack_from(first, 40)
        if magic == _META_MAGIC and _MIN_PAGE <= page_size <= _MAX_PAGE and page_size & (page_size - 1) == 0:
            handle.seek(page_size)
            second = handle.read(_META_END)
            if len(second) == _META_END:
                metas.append(second)
    best: tuple[int, bytes] | None = None
    for meta in metas:
        magic, version = _META_HEAD.unpack_from(meta, 16)
        (page_size,) = _META_PSIZE.unpack_from(meta, 40)
        _, txnid = _META_TAIL.unpack_from(meta, 136)
        if magic != _META_MAGIC or version != 1 or not _MIN_PAGE <= page_size <= _MAX_PAGE:
            continue
        if best is None or txnid > best[0]:
            best = (txnid, meta)
    if best is None:
        raise Corrupted(f"run file {path} is not an LMDB file: no valid LMDB meta page ({info.st_size} bytes)")
    # The size after the meta pages were read: a live writer grows the file before it commits
    # the meta page that uses the new pages, so a size taken first can lag a newer meta page.
    return best[1], os.fstat(handle.fileno()).st_size


def check_run_file_shape(path: str | Path) -> RunFileShape:
    """Read the two LMDB meta pages with plain reads and refuse a file that mapping would fault
    on: no valid meta page, or shorter than the pages its current meta page says are in use
    (`Corrupted`). A missing file raises `FileNotFoundError`."""
    with open(path, "rb", buffering=0) as handle:
        return _shape(*_current_meta(handle, path), path)


def _shape(meta: bytes, size: int, path: str | Path) -> RunFileShape:
    """The shape `meta` (the current meta page) gives; `Corrupted` if the file, `size` bytes, is
    shorter than the pages it says are in use."""
    from nes.errors import Corrupted

    (page_size,) = _META_PSIZE.unpack_from(meta, 40)
    last_page, txnid = _META_TAIL.unpack_from(meta, 136)
    needed = (last_page + 1) * page_size
    if size < needed:
        raise Corrupted(f"run file {path} is truncated: {size} bytes, its last commit uses {needed} bytes")
    return RunFileShape((page_size, last_page, txnid))


# What LMDB reads to open a run's databases and get its format marker and manifest: the main
# database (every named database is a node of it) and the meta and manifest databases, each
# one leaf page in a run file, plus any overflow page a value spills into. Layouts of lmdb.h's
# MDB_page, MDB_node and MDB_db (little-endian, 64-bit page numbers).
_PAGE_HEAD = struct.Struct("<QHHHH")  # mp_pgno, mp_pad, mp_flags, mp_lower, mp_upper
_PAGE_HEAD_SIZE = 16
_NODE_HEAD = struct.Struct("<HHHH")  # mn_lo, mn_hi (a leaf node's data size), mn_flags, mn_ksize
_DB_RECORD = struct.Struct("<IHHQQQQQ")  # md_pad, md_flags, md_depth, branch/leaf/overflow pages, entries, md_root
_MAIN_DB_AT = 16 + 24 + _DB_RECORD.size  # mm_dbs[MAIN_DBI] in a meta page
_P_LEAF, _P_OVERFLOW = 0x02, 0x04
_F_BIGDATA, _F_SUBDATA = 0x01, 0x02
_NO_PAGE = (1 << 64) - 1
_LIVE_RECHECKS = 5


def check_manifest_pages(path: str | Path) -> None:
    """Prove with plain reads that opening a run file's databases and reading its format marker
    and manifest cannot make LMDB fault (it has no page checksums, and a damaged page can trip an
    assertion that aborts the process): every page on that path must be in the file, of the
    kind its reference says, with its nodes inside it. Anything else raises `Corrupted`: a file
    whose main, meta or manifest database is not one leaf page is not a run file. A live writer
    may reuse a page between two of these reads (it keeps no reader table): a failure is checked
    again while the file's last committed transaction moves meanwhile."""
    from nes.errors import Corrupted

    with open(path, "rb", buffering=0) as handle:
        for attempt in range(_LIVE_RECHECKS):
            meta, size = _current_meta(handle, path)
            shape = _shape(meta, size, path)
            try:
                _check_manifest_path(handle, path, meta, shape)
                return
            except Corrupted:
                moved = _shape(*_current_meta(handle, path), path).txnid != shape.txnid
                if attempt + 1 == _LIVE_RECHECKS or not moved:
                    raise


def _check_manifest_path(handle: BinaryIO, path: str | Path, meta: bytes, shape: RunFileShape) -> None:
    """One walk of `check_manifest_pages` over the commit `meta` (its current meta page) names."""
    from nes.errors import Corrupted

    page_size, last_page, _ = shape

    def page(pgno: int, what: str) -> bytes:
        if not 2 <= pgno <= last_page:
            raise Corrupted(f"run file {path}: the {what} names page {pgno}, outside pages 2..{last_page}")
        handle.seek(pgno * page_size)
        raw = handle.read(page_size)
        if len(raw) != page_size or _PAGE_HEAD.unpack_from(raw)[0] != pgno:
            raise Corrupted(f"run file {path}: page {pgno} ({what}) is not the page its reference names")
        return raw

    def leaf(record: bytes, what: str) -> list[tuple[bytes, int, bytes]]:
        """The (key, flags, data) nodes of a database record's single leaf page."""
        _, _, depth, _, _, _, _, root = _DB_RECORD.unpack(record)
        if depth == 0 and root == _NO_PAGE:
            return []
        if depth != 1:
            raise Corrupted(f"run file {path}: the {what} database is {depth} pages deep, not one leaf")
        raw = page(root, f"{what} database root")
        _, _, flags, lower, upper = _PAGE_HEAD.unpack_from(raw)
        if flags & ~0x10 != _P_LEAF or not _PAGE_HEAD_SIZE <= lower <= upper <= page_size or lower % 2:
            raise Corrupted(f"run file {path}: the {what} database root (page {root}) is not a leaf page")
        nodes = []
        for at in range(_PAGE_HEAD_SIZE, lower, 2):
            (offset,) = struct.unpack_from("<H", raw, at)
            if not upper <= offset <= page_size - _NODE_HEAD.size:
                raise Corrupted(f"run file {path}: a node of page {root} lies outside it")
            lo, hi, node_flags, key_size = _NODE_HEAD.unpack_from(raw, offset)
            data_size = lo | hi << 16
            key_at = offset + _NODE_HEAD.size
            inline = 8 if node_flags & _F_BIGDATA else data_size
            if key_at + key_size + inline > page_size:
                raise Corrupted(f"run file {path}: a node of page {root} runs past its end")
            data = raw[key_at + key_size : key_at + key_size + inline]
            if node_flags & _F_BIGDATA:
                (first,) = U64_LE.unpack(data)
                head = page(first, f"{what} value")
                (pages,) = struct.unpack_from("<I", head, 12)
                if _PAGE_HEAD.unpack_from(head)[2] & ~0x10 != _P_OVERFLOW or first + pages - 1 > last_page \
                        or data_size > pages * page_size - _PAGE_HEAD_SIZE:
                    raise Corrupted(f"run file {path}: the {what} value's overflow pages are damaged")
            nodes.append((raw[key_at : key_at + key_size], node_flags, data))
        return nodes

    named = {}
    for key, flags, data in leaf(meta[_MAIN_DB_AT : _MAIN_DB_AT + _DB_RECORD.size], "main"):
        if flags & _F_SUBDATA:
            if len(data) != _DB_RECORD.size:
                raise Corrupted(f"run file {path}: the record of database {key!r} is damaged")
            named[key] = data
    for name in (DB_META, DB_MANIFEST):
        if name in named:
            leaf(named[name], name.decode())


def check_private_dir(directory: Path, *, follow_symlink: bool) -> None:
    """A base or instance directory must not be open to others: a looser one owned by this user
    is tightened to 0700; one owned by someone else is refused (`PermissionError` saying what to
    do), and so is a symlink where `follow_symlink` is False (an instance directory: a symlink
    there would send run files, and recovery's writes, outside the base directory). Something
    that is not a directory is left to the caller's own error."""
    info = os.stat(directory) if follow_symlink else os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        raise PermissionError(f"{directory} is a symlink; an instance directory must be a real directory")
    if not stat.S_ISDIR(info.st_mode):
        return
    if info.st_mode & 0o077:
        if info.st_uid != os.geteuid():
            raise PermissionError(
                f"{directory} is mode {stat.S_IMODE(info.st_mode):o} and owned by uid {info.st_uid}; "
                "it must be 0700 and ours"
            )
        os.chmod(directory, DIR_MODE)


def run_file_path(base_dir: str | os.PathLike[str], instance_id: str, run_id: str) -> Path:
    validate_path_id(instance_id, "instance_id")
    validate_path_id(run_id, "run_id")
    return Path(base_dir) / instance_id / f"{run_id}{RUN_FILE_SUFFIX}"


def make_private_dirs(directory: Path, *, durable: bool = False) -> None:
    """Create `directory` and its missing parents, each 0700 (existing ones are left as they
    are). With `durable`, the new directory entries are fsynced (the directory itself and the
    parent of every directory created), so they survive a power loss."""
    missing = []
    parent = directory
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for created in reversed(missing):
        created.mkdir(mode=DIR_MODE, exist_ok=True)
    if durable:
        for changed in {directory, *(created.parent for created in missing)}:
            fsync_dir(changed)


def create_private_file(path: Path) -> None:
    """Create `path` empty, 0600, failing if it exists (FileExistsError); missing parent
    directories are created 0700. The new directory entries are fsynced (file's directory and
    every directory created), so a file whose contents LMDB later fsyncs cannot vanish with a
    power loss."""
    make_private_dirs(path.parent, durable=True)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, FILE_MODE))
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so the entries created, renamed or removed in it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def marker_sidecar_path(run_file: str | Path) -> Path:
    """The data-marker sidecar beside a run file: `<run_id>.lmdb` -> `<run_id>.markers.lmdb`."""
    run_file = Path(run_file)
    stem = run_file.name[: -len(RUN_FILE_SUFFIX)] if run_file.name.endswith(RUN_FILE_SUFFIX) else run_file.name
    return run_file.with_name(stem + MARKER_FILE_SUFFIX)


def instance_dir(base_dir: str | os.PathLike[str], instance_id: str) -> Path:
    return Path(base_dir) / validate_path_id(instance_id, "instance_id")


def list_run_files(base_dir: str | os.PathLike[str], instance_id: str) -> list[Path]:
    """Run files of an instance (not marker sidecars), sorted by name (= by start time).

    Symlinks are never followed: only regular files count (a symlink in the instance directory
    could point outside the base directory, and recovery writes to what it finds)."""
    directory = instance_dir(base_dir, instance_id)
    if not directory.is_dir() or directory.is_symlink():
        return []
    out = []
    for p in directory.iterdir():
        if not p.name.endswith(RUN_FILE_SUFFIX) or p.name.endswith(MARKER_FILE_SUFFIX):
            continue
        try:
            if stat.S_ISREG(os.lstat(p).st_mode):
                out.append(p)
        except FileNotFoundError:
            continue
    return sorted(out)
