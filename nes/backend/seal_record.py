"""The seal record: a small file outside the LMDB run file that remembers how a run was sealed.

Contract: LMDB keeps two meta pages and no checksums, so one flipped byte in the older meta
page can make a file open at the commit before its last one: a sealed run would read as
Running again, with its last commit gone, and verify clean. At seal, after the sealed manifest
is durable, the backend writes `<run_id>.seal` beside the run file: run id, status,
high-watermark, end_ts_init, the manifest digest, the last entry's hash, and the size and
BLAKE3 digest of the whole file as it was sealed (version 2). It is written to a
temporary name (0600, `O_EXCL | O_NOFOLLOW`), fsynced, renamed into place, and the directory
is fsynced. An existing record is never overwritten (it is the evidence of an earlier seal).
A seal record is untrusted input when read: at most `MAX_SEAL_RECORD_BYTES`, a regular file
opened without following symlinks, strict JSON with no unknown fields, every field checked;
anything else is `SealRecordInvalid`. A run file that LMDB cannot seal (unreadable manifest, a refused write) is quarantined by a
record alone (`outside_only`): it is never a parent and later sweeps leave it. A sealed run
without a record is not damage (a crash between the seal commit and the record leaves that;
the next boot's sweep writes it, if the file verifies clean).

A sealed file never changes again, so its file digest is the proof that makes mapping it safe:
LMDB has no page checksums and aborts or faults on a damaged page, and `check_before_mapping`
(called before any in-process open of an existing run file) hashes the file with plain reads
and refuses one that differs from its seal (`SealedFileChanged`) before LMDB maps a byte. For
a file the record cannot prove (Running, live or crashed; sealed Quarantined, whose record
vouches for damaged bytes; a version 1 record; a record lost in a crash) the same call checks
by hand the pages on the way to its manifest (`layout.check_manifest_pages`); the backend and
`RunFile` read more of such a file only after a clean verify in a worker (docs/integrity.md).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import blake3
import msgspec

from nes.backend.layout import FILE_MODE, RUN_FILE_SUFFIX, check_manifest_pages, check_run_file_shape, fsync_dir
from nes.errors import Corrupted, UnsupportedFormat
from nes.ids import validate_path_id

__all__ = [
    "SEAL_RECORD_SUFFIX",
    "SEAL_RECORD_VERSION",
    "MAX_SEAL_RECORD_BYTES",
    "SealRecord",
    "SealRecordInvalid",
    "seal_record_path",
    "read_seal_record",
    "write_seal_record",
    "SealedFileChanged",
    "FutureSealRecord",
    "file_digest",
    "check_before_mapping",
]

SEAL_RECORD_SUFFIX = ".seal"
MAX_SEAL_RECORD_BYTES = 4096
SEAL_RECORD_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # version 1: no file digest
_HASH_CHUNK = 4 << 20
_U64_MAX = (1 << 64) - 1
_SEALED = ("Ended", "CrashedRecovered", "Quarantined")


class SealRecordInvalid(Corrupted):
    """A seal record exists but is not a valid record for its run file."""


class FutureSealRecord(SealRecordInvalid, UnsupportedFormat):
    """A seal record of a newer nes: like a future format marker, it stops listing, recovery
    and retention instead of being skipped."""


class SealedFileChanged(Corrupted):
    """A sealed run file's bytes differ from the digest its seal record took at seal."""


class SealRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a run was sealed (see the module contract)."""

    version: int
    run_id: str
    status: str
    high_watermark: int
    end_ts_init: int | None
    manifest_digest: str  # hex BLAKE3 (nes.backend.integrity.manifest_digest)
    last_entry_hash: str  # hex of the last entry's stored hash, "" for an empty run
    # True: recovery quarantined a run whose file LMDB could not seal; only this record says so.
    outside_only: bool = False
    # Version 2: the whole file at seal (see `file_digest`); 0 and "" for outside_only records.
    file_size: int = 0
    file_digest: str = ""


def seal_record_path(run_file: str | os.PathLike[str]) -> Path:
    """`<dir>/<run_id>.lmdb` -> `<dir>/<run_id>.seal`."""
    run_file = Path(run_file)
    name = run_file.name
    stem = name[: -len(RUN_FILE_SUFFIX)] if name.endswith(RUN_FILE_SUFFIX) else name
    return run_file.with_name(stem + SEAL_RECORD_SUFFIX)


def _check_hex(name: str, value: str, allow_empty: bool) -> None:
    if allow_empty and value == "":
        return
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise SealRecordInvalid(f"seal record field {name} is not 64 lowercase hex digits")


def _validate(record: SealRecord, run_id: str | None) -> SealRecord:
    if record.version > SEAL_RECORD_VERSION:
        raise FutureSealRecord(f"seal record version {record.version} is from a newer nes (this one reads "
                               f"{_READABLE_VERSIONS}); upgrade nes to read this run")
    if record.version not in _READABLE_VERSIONS:
        raise SealRecordInvalid(f"seal record version {record.version} is not one of {_READABLE_VERSIONS}")
    try:
        validate_path_id(record.run_id, "run_id")
    except ValueError as exc:
        raise SealRecordInvalid(f"seal record run_id: {exc}") from None
    if run_id is not None and record.run_id != run_id:
        raise SealRecordInvalid(f"seal record names run {record.run_id!r}, not {run_id!r}")
    if record.status not in _SEALED:
        raise SealRecordInvalid(f"seal record status {record.status!r} is not a sealed status")
    if not 0 <= record.high_watermark <= _U64_MAX:
        raise SealRecordInvalid(f"seal record high_watermark {record.high_watermark} is out of range")
    if record.end_ts_init is not None and not 0 <= record.end_ts_init <= _U64_MAX:
        raise SealRecordInvalid(f"seal record end_ts_init {record.end_ts_init} is out of range")
    _check_hex("manifest_digest", record.manifest_digest, False)
    _check_hex("last_entry_hash", record.last_entry_hash, record.high_watermark == 0 or record.outside_only)
    if record.outside_only and record.status != "Quarantined":
        raise SealRecordInvalid("a seal record written outside the run file can only say Quarantined")
    if not 0 <= record.file_size <= _U64_MAX:
        raise SealRecordInvalid(f"seal record file_size {record.file_size} is out of range")
    _check_hex("file_digest", record.file_digest, record.version == 1 or record.outside_only)
    if record.version == 1 and (record.file_digest or record.file_size):
        raise SealRecordInvalid("a version 1 seal record has no file digest")
    return record


def read_seal_record(run_file: str | os.PathLike[str], run_id: str | None = None) -> SealRecord | None:
    """The seal record beside `run_file`, None if there is none; `SealRecordInvalid` if there
    is something that is not a valid record (for `run_id`, when given)."""
    path = seal_record_path(run_file)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SealRecordInvalid(f"seal record {path.name} cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SealRecordInvalid(f"seal record {path.name} is not a regular file")
        if info.st_size > MAX_SEAL_RECORD_BYTES:
            raise SealRecordInvalid(f"seal record {path.name} is {info.st_size} bytes (at most {MAX_SEAL_RECORD_BYTES})")
        raw = os.read(fd, MAX_SEAL_RECORD_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_SEAL_RECORD_BYTES:
        raise SealRecordInvalid(f"seal record {path.name} is longer than {MAX_SEAL_RECORD_BYTES} bytes")
    try:
        record = msgspec.json.decode(raw, type=SealRecord, strict=True)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise SealRecordInvalid(f"seal record {path.name} does not decode: {exc}") from None
    return _validate(record, run_id)


def write_seal_record(run_file: str | os.PathLike[str], record: SealRecord) -> bool:
    """Write the record durably beside `run_file` unless one exists; True if written."""
    _validate(record, None)
    path = seal_record_path(run_file)
    if os.path.lexists(path):
        return False
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink()  # a leftover of a crash mid-write: never trusted, never followed
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, msgspec.json.encode(record))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces an existing record (a concurrent seal wins)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, hex BLAKE3) of the file's bytes, read with plain reads (never mapped: a file
    truncated under us cannot fault the caller)."""
    hasher = blake3.blake3()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while True:
            n = os.readv(fd, [buffer])
            if not n:
                break
            hasher.update(view[:n])
            size += n
    finally:
        os.close(fd)
    return size, hasher.hexdigest()


# Files already proven in this process, by identity and change times: a later write changes them.
_PROVEN: dict[tuple[int, int, int, int, int, str], None] = {}
_PROVEN_MAX = 256


def check_before_mapping(path: str | os.PathLike[str]) -> bool:
    """Check an existing run file before LMDB maps it; True when the whole file is proven, so
    that no read of it can fault: a sealed Ended / CrashedRecovered run whose bytes match its
    version 2 seal record. False when the record cannot prove it (no record, a version 1 record,
    a run sealed Quarantined): then only the path to its format marker and manifest is proven
    (`layout.check_manifest_pages`). Raises `Corrupted`: not LMDB or truncated
    (`layout.check_run_file_shape`), quarantined by its record alone (LMDB could not seal it),
    bytes changed since the seal (`SealedFileChanged`), an invalid record (`SealRecordInvalid`,
    or `FutureSealRecord` from a newer nes), a damaged page on the way to its manifest."""
    path = Path(path)
    check_run_file_shape(path)
    if _proven_by_seal_record(path):
        return True
    check_manifest_pages(path)
    return False


def _proven_by_seal_record(path: Path) -> bool:
    record = read_seal_record(path)  # its file digest ties it to this file, whatever its name
    if record is None:
        return False
    if record.outside_only:
        raise Corrupted(f"run file {path} was quarantined by its seal record: LMDB could not seal it; "
                        "only `nes verify` reads it")
    if not record.file_digest:
        return False
    info = os.stat(path, follow_symlinks=False)
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, record.file_digest)
    if key not in _PROVEN:
        size, digest = file_digest(path)
        if size != record.file_size or digest != record.file_digest:
            raise SealedFileChanged(
                f"run file {path} changed after it was sealed ({size} bytes, sealed at {record.file_size}; "
                "its BLAKE3 differs from its seal record's): run `nes verify` on it"
            )
        if len(_PROVEN) >= _PROVEN_MAX:
            _PROVEN.pop(next(iter(_PROVEN)))
        _PROVEN[key] = None
    return record.status != "Quarantined"  # unchanged, but sealed so because it is damaged
