"""Boot records: what a writer spawn in progress holds outside the instance directory.

Contract: the shm ring and its three semaphores live in /dev/shm under names only their creator
knows, and they are unlinked as soon as the writer has attached (`EventStoreWriter.spawn`). A
boot killed before that point (SIGKILL of the process group, power loss of the trader alone)
would leave them in /dev/shm forever. So, before it creates a ring, `spawn` writes a boot record
`<base>/<instance_id>/ring-<token>.boot` (0600, JSON: the ring token, the booting pid and that
process's start time), and removes it once the names are unlinked. Every later spawn for the
same instance first calls `reclaim_dead_boots`: a record whose process is gone (no such pid, a
zombie, or a pid reused by a process that started at another time) has its ring names unlinked
and is removed. A record only ever names a ring token (24 hex digits): a tampered record can
make nes unlink nothing but `/nes-<token>-{ring,data,space,durable}`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec
import posix_ipc
import psutil  # type: ignore[import-untyped]

from shm.ring import RingNames, is_ring_token

__all__ = [
    "BootRecord",
    "BOOT_RECORD_SUFFIX",
    "write_boot_record",
    "remove_boot_record",
    "reclaim_dead_boots",
]

log = logging.getLogger("nes.bootrecord")

BOOT_RECORD_PREFIX = "ring-"
BOOT_RECORD_SUFFIX = ".boot"
MAX_BOOT_RECORD_BYTES = 4096  # a record is ~100 bytes; anything larger is not ours


class BootRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One spawn in progress: the ring it created and the process that created it."""

    token: str
    pid: int
    pid_start_time: float  # psutil create_time of `pid`: tells a reused pid from the booter


def _process_start_time(pid: int) -> float | None:
    """The start time of a live (non-zombie) process, None if there is none."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(process.create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def record_path(instance_dir: Path, token: str) -> Path:
    return instance_dir / f"{BOOT_RECORD_PREFIX}{token}{BOOT_RECORD_SUFFIX}"


def write_boot_record(instance_dir: Path, token: str) -> Path:
    """Record that this process is about to create ring `token` (complete or absent: written
    to a temporary name, then renamed). The directory must exist."""
    start = _process_start_time(os.getpid())
    body = msgspec.json.encode(BootRecord(token, os.getpid(), start if start is not None else 0.0))
    path = record_path(instance_dir, token)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, body)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return path


def remove_boot_record(path: Path) -> None:
    """Idempotent."""
    path.unlink(missing_ok=True)


def unlink_ring_names(names: RingNames) -> list[str]:
    """Unlink whichever of the ring's names still exist; returns those it removed."""
    removed = []
    pairs = [(posix_ipc.unlink_shared_memory, names.segment)] + [
        (posix_ipc.unlink_semaphore, name) for name in names.semaphores()
    ]
    for unlink, name in pairs:
        try:
            unlink(name)
            removed.append(name)
        except posix_ipc.ExistentialError:
            pass
    return removed


def _read_record(path: Path) -> BootRecord | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # reclaimed or finished meanwhile
    try:
        raw = os.read(fd, MAX_BOOT_RECORD_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_BOOT_RECORD_BYTES:
        raise ValueError(f"larger than {MAX_BOOT_RECORD_BYTES} bytes")
    return msgspec.json.decode(raw, type=BootRecord)


def reclaim_dead_boots(instance_dir: Path) -> list[str]:
    """Unlink the ring names of every boot record in `instance_dir` whose process is gone and
    remove the record; returns the tokens reclaimed. Records of live processes are left alone;
    a record that is not one of ours (bad name, bad content) is logged and left alone."""
    reclaimed: list[str] = []
    try:
        entries = list(os.scandir(instance_dir))
    except FileNotFoundError:
        return reclaimed
    for entry in entries:
        name = entry.name
        if not (name.startswith(BOOT_RECORD_PREFIX) and name.endswith(BOOT_RECORD_SUFFIX)):
            continue
        token = name[len(BOOT_RECORD_PREFIX) : -len(BOOT_RECORD_SUFFIX)]
        path = Path(entry.path)
        if not is_ring_token(token) or not entry.is_file(follow_symlinks=False):
            log.warning("ignoring %s: not a boot record of nes", path)
            continue
        try:
            record = _read_record(path)
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            log.warning("ignoring unreadable boot record %s: %s", path, exc)
            continue
        if record is None:
            continue
        if record.token != token:
            log.warning("ignoring boot record %s: it names ring %r", path, record.token)
            continue
        if record.pid > 0 and _process_start_time(record.pid) == record.pid_start_time:
            continue  # that boot is still in progress
        removed = unlink_ring_names(RingNames.for_token(token))
        remove_boot_record(path)
        reclaimed.append(token)
        log.warning("reclaimed ring %s of dead boot (pid %d): unlinked %s", token, record.pid, removed or "nothing")
    return reclaimed
