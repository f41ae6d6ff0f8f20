"""The seal record: a small file outside the LMDB run file that remembers how a run was sealed.

Contract: LMDB keeps two meta pages and no checksums, so one flipped byte in the older meta
page can make a file open at the commit before its last one: a sealed run would read as
Running again, with its last commit gone, and verify clean. At seal, after the sealed manifest
is durable, the backend writes `<run_id>.seal` beside the run file: run id, status,
high-watermark, end_ts_init, the manifest digest and the last entry's hash. It is written to a
temporary name (0600, `O_EXCL | O_NOFOLLOW`), fsynced, renamed into place, and the directory
is fsynced. An existing record is never overwritten (it is the evidence of an earlier seal).
A seal record is untrusted input when read: at most `MAX_SEAL_RECORD_BYTES`, a regular file
opened without following symlinks, strict JSON with no unknown fields, every field checked;
anything else is `SealRecordInvalid`. A run file that LMDB cannot seal (unreadable manifest, a refused write) is quarantined by a
record alone (`outside_only`): it is never a parent and later sweeps leave it. A sealed run
without a record is not damage (a crash
between the seal commit and the record leaves that; the next boot's sweep writes it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec

from nes.backend.layout import FILE_MODE, RUN_FILE_SUFFIX, fsync_dir
from nes.errors import Corrupted
from nes.ids import validate_path_id

__all__ = [
    "SEAL_RECORD_SUFFIX",
    "MAX_SEAL_RECORD_BYTES",
    "SealRecord",
    "SealRecordInvalid",
    "seal_record_path",
    "read_seal_record",
    "write_seal_record",
]

SEAL_RECORD_SUFFIX = ".seal"
MAX_SEAL_RECORD_BYTES = 4096
SEAL_RECORD_VERSION = 1
_U64_MAX = (1 << 64) - 1
_SEALED = ("Ended", "CrashedRecovered", "Quarantined")


class SealRecordInvalid(Corrupted):
    """A seal record exists but is not a valid record for its run file."""


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
    if record.version != SEAL_RECORD_VERSION:
        raise SealRecordInvalid(f"seal record version {record.version} is not {SEAL_RECORD_VERSION}")
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
