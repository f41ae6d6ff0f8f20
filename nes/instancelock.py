"""The instance lock: one live lifecycle per `<base>/<instance_id>`.

Contract: a session holds an exclusive `flock` on `<base>/<instance_id>/instance.lock` (0600)
from the start of its boot until it is closed or abandoned; the file holds the holder's pid. A
second lifecycle (in this process or another) fails at boot, before it opens, recovers or
creates anything, with `nes.kernel.InstanceLocked` naming that pid. The lock is tied to the
open file description: it is released when the session releases it or when the holding process
dies (SIGKILL included). The writer process inherits it on purpose (`EventStoreWriter.spawn`
`hold_fds`): a writer that outlives its trader (it drains the ring, then exits) still holds the
instance, so no new boot can sweep or start a run beside it. A boot that finds the lock held by
a pid that is gone waits for that orphaned writer (up to the writer's `close_timeout_s`).
Recovery and verifier workers never inherit it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

__all__ = ["InstanceLock", "LOCK_FILE_NAME", "read_holder_pid", "pid_alive"]

LOCK_FILE_NAME = "instance.lock"
_MAX_PID_BYTES = 32


def read_holder_pid(lock_path: Path) -> int | None:
    """The pid the holder wrote into the lock file (None if unreadable or not written yet)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, _MAX_PID_BYTES)
    finally:
        os.close(fd)
    try:
        pid = int(raw.strip() or b"x")
    except ValueError:
        return None
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    """True if `pid` is a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


class InstanceLock:
    """A held instance lock; `release()` (idempotent) or the holder's death frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def try_acquire(cls, instance_dir: Path) -> InstanceLock | None:
        """Take the lock of `instance_dir` (which must exist) without waiting; None if another
        open file description holds it (see `read_holder_pid` for who)."""
        path = instance_dir / LOCK_FILE_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)  # releases the flock
            raise
        return cls(path, fd)

    @classmethod
    def acquire_within(cls, instance_dir: Path, timeout_s: float) -> InstanceLock | None:
        """`try_acquire`, retried every 10 ms for up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            lock = cls.try_acquire(instance_dir)
            if lock is not None or time.monotonic() >= deadline:
                return lock
            time.sleep(0.01)

    @property
    def fd(self) -> int:
        """The locked descriptor (-1 once released): pass it to a child process that must
        hold the lock as long as it lives."""
        return self._fd

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Free the lock (the file stays; its pid is only meaningful while locked)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
