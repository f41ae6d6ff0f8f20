"""Worker processes: reading untrusted files out of process, and starting `workers.*` children.

Contract: a corrupted LMDB file can crash the process that maps it (SIGBUS on a truncated map,
a segfault on a damaged page). Everything that opens a run file it did not just write itself
(verifier, recovery scan, retention planner) does it in a `python -m workers.<name>` child,
which prints its result as one JSON line. `run_json_worker` runs the child with a timeout and
decodes that line with msgspec (never pickle); a crash, a timeout, a non-zero exit or an
unreadable line raises `WorkerCrash` with a one-line status the caller reports.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from nes.errors import check_timeout_s

__all__ = ["WorkerCrash", "run_json_worker", "run_progress_worker", "worker_command", "worker_env", "describe_exit"]

T = TypeVar("T")
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class WorkerCrash(Exception):
    """The worker gave no result: `status` says why (signal, exit status, timeout)."""

    def __init__(self, status: str, returncode: int | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.returncode = returncode


def worker_command(module: str, *args: str) -> list[str]:
    """The command line of a `workers.<name>` child. `-P`: the caller's working directory is
    not put on the child's `sys.path`, so a trader started in a directory that holds a package
    of the same name (`workers` is a common one) still runs nes's worker, not that code."""
    return [sys.executable, "-P", "-m", module, *args]


def worker_env() -> dict[str, str]:
    """The environment of every `python -m workers.<name>` child (writer, recovery, verify,
    retention)."""
    env = dict(os.environ)
    # Make `workers` importable even when nes is used from a source tree, not installed.
    if (_PROJECT_ROOT / "workers" / "__init__.py").is_file():
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_PROJECT_ROOT) + (os.pathsep + existing if existing else "")
    return env


def describe_exit(returncode: int, stderr: bytes) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    last = stderr.decode("utf-8", errors="replace").strip().splitlines()[-1:] if stderr else []
    suffix = f": {last[0][:200]}" if last else ""
    return f"exited with status {returncode} without a report{suffix}".replace('"', "'")


def run_json_worker(module: str, args: list[str], timeout_s: float, result_type: type[T]) -> T:
    """Run `python -m <module> <args>` and decode its last stdout line as `result_type`."""
    check_timeout_s(timeout_s, "timeout_s")
    try:
        done = subprocess.run(
            worker_command(module, *args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            env=worker_env(),
            process_group=0,  # a terminal's Ctrl-C goes to the caller, which kills us (no stray traceback)
            check=False,
        )
    except subprocess.TimeoutExpired:  # run() has killed and reaped the child
        raise WorkerCrash(f"timed out after {timeout_s:g}s") from None
    if done.returncode != 0:
        raise WorkerCrash(describe_exit(done.returncode, done.stderr), done.returncode)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise WorkerCrash("exited with status 0 without a report")
    try:
        return msgspec.json.decode(lines[-1], type=result_type)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise WorkerCrash(f"unreadable report: {exc}".replace('"', "'")) from None


PROGRESS_KEY = b'{"progress"'
_MAX_LINE = 64 << 20  # a report larger than this is not a report


def _timeout_text(timeout_s: float) -> str:
    return f"timeout after {timeout_s:g}s"


def run_progress_worker(
    module: str,
    args: list[str],
    stall_timeout_s: float,
    result_type: type[T],
    progress: Callable[[str, int], None] | None = None,
) -> T:
    """Like `run_json_worker`, but the child may print `{"progress": [phase, count]}` lines
    before its result, and `stall_timeout_s` bounds the time between two lines (lack of
    progress), not the total time. A stall raises `WorkerCrash("timeout after Ns")`."""
    check_timeout_s(stall_timeout_s, "timeout_s")
    proc = subprocess.Popen(
        worker_command(module, *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=worker_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
    selector.register(proc.stderr.fileno(), selectors.EVENT_READ, "err")
    out = b""
    err = b""
    last: bytes | None = None
    open_streams = 2
    deadline = time.monotonic() + stall_timeout_s
    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerCrash(_timeout_text(stall_timeout_s))
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fd)
                    open_streams -= 1
                    continue
                if key.data == "err":
                    err = (err + chunk)[-4096:]
                    continue
                out += chunk
                if len(out) > _MAX_LINE:
                    raise WorkerCrash("report too large")
                while b"\n" in out:
                    line, out = out.split(b"\n", 1)
                    if line.startswith(PROGRESS_KEY):
                        deadline = time.monotonic() + stall_timeout_s
                        if progress is not None:
                            try:
                                phase, count = msgspec.json.decode(line, type=dict[str, tuple[str, int]])["progress"]
                            except (msgspec.DecodeError, msgspec.ValidationError, KeyError):
                                continue
                            progress(phase, count)
                    elif line.strip():
                        last = line
        returncode = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise WorkerCrash(_timeout_text(stall_timeout_s)) from None
    finally:
        selector.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if out.strip():
        last = out.strip()
    if returncode != 0:
        raise WorkerCrash(describe_exit(returncode, err), returncode)
    if last is None:
        raise WorkerCrash("exited with status 0 without a report")
    try:
        return msgspec.json.decode(last, type=result_type)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise WorkerCrash(f"unreadable report: {exc}".replace('"', "'")) from None
