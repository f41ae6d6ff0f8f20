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
import signal
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import msgspec

from nes.errors import check_timeout_s

__all__ = ["WorkerCrash", "run_json_worker", "worker_env", "describe_exit"]

T = TypeVar("T")
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class WorkerCrash(Exception):
    """The worker gave no result: `status` says why (signal, exit status, timeout)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


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
            [sys.executable, "-m", module, *args],
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
        raise WorkerCrash(describe_exit(done.returncode, done.stderr))
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise WorkerCrash("exited with status 0 without a report")
    try:
        return msgspec.json.decode(lines[-1], type=result_type)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise WorkerCrash(f"unreadable report: {exc}".replace('"', "'")) from None
