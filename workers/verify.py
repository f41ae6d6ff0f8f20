"""Verifier worker: `python -m workers.verify PATH [--tail]`.

Prints the `VerifyReport` (or, with `--tail`, the recovery `TailScan`) as one JSON line on
stdout and exits 0; exits 2 with a message on stderr if the file cannot be verified at all.
Thin by design: the scan lives in `nes.verifier`. It runs in its own process so a file that
crashes LMDB (SIGBUS on a truncated map) kills only this worker.

Fault hook for tests: `NES_VERIFY_WORKER_FAULT=abort` aborts before scanning, `=hang` sleeps
forever (the parent's timeout path), `=slow` reports progress every 0.4 s for 3.2 s before
scanning (the timeout is on lack of progress, not total time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import BinaryIO

import msgspec

from nes.verifier import WORKER_FAULT_ENV, LiveRunChurn, Verifier, VerifyOpenError, scan_tail


def _apply_fault_hook() -> None:
    fault = os.environ.get(WORKER_FAULT_ENV, "")
    if fault == "abort":
        os.abort()
    if fault == "hang":
        while True:
            time.sleep(3600)
    if fault == "slow":  # slow but steady: progress every 0.4 s for 3.2 s, then the real scan
        for tick in range(8):
            sys.stdout.buffer.write(msgspec.json.encode({"progress": ["entries", tick]}) + b"\n")
            sys.stdout.buffer.flush()
            time.sleep(0.4)


class _Progress:
    """Prints `{"progress": [phase, count]}` at most every `PROGRESS_INTERVAL_S` (the parent
    times out on lack of progress, not on total time)."""

    PROGRESS_INTERVAL_S = 0.25

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._next = time.monotonic() + self.PROGRESS_INTERVAL_S

    def __call__(self, phase: str, count: int) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.PROGRESS_INTERVAL_S
        self._out.write(msgspec.json.encode({"progress": [phase, count]}) + b"\n")
        self._out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.verify")
    parser.add_argument("path")
    parser.add_argument("--tail", action="store_true", help="print the crash-recovery TailScan instead")
    ns = parser.parse_args(argv)
    _apply_fault_hook()
    out = sys.stdout.buffer
    try:
        result = scan_tail(ns.path) if ns.tail else Verifier(ns.path).verify(_Progress(out))
    except (VerifyOpenError, LiveRunChurn) as exc:
        print(f"error path={ns.path} error=\"{exc}\"", file=sys.stderr)
        return 2
    out.write(msgspec.json.encode(result) + b"\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
