"""`nes runs` reader worker: `python -m workers.runs INSTANCE PATH [INSTANCE PATH ...]`.

Prints the `RunRow` of each run file, as one JSON list on one stdout line, and exits 0. Thin by
design (the reading lives in `nes.ops.runs.run_row`); it runs in its own process so a run file
that crashes LMDB kills only this worker, never `nes runs`.

Fault hook for tests: `NES_RUNS_WORKER_FAULT=<file name>` aborts when that file comes up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import msgspec

from nes.ops.runs import RUNS_WORKER_FAULT_ENV, run_row


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) % 2:
        print("usage: python -m workers.runs INSTANCE PATH [INSTANCE PATH ...]", file=sys.stderr)
        return 2
    fault = os.environ.get(RUNS_WORKER_FAULT_ENV, "")
    rows = []
    for instance, path in zip(args[::2], args[1::2]):
        if fault and Path(path).name == fault:
            os.abort()
        rows.append(run_row(Path(path), instance, isolated=True))
    sys.stdout.buffer.write(msgspec.json.encode(rows) + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
