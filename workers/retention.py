"""Retention worker: `python -m workers.retention PATH`.

Prints the run file's `nes.retention.RetentionRun` as one JSON line and exits 0; exits 2 with
the reason on stderr when the file cannot be read (the planner then skips it), 3 when the file
lacks this nes's format marker (the planner stops). Thin by design;
it exists so that a damaged file can crash only this process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from nes.errors import UnsupportedFormat
from nes.retention import UNSUPPORTED_FORMAT_EXIT, read_retention_run


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m workers.retention PATH", file=sys.stderr)
        return 2
    try:
        run = read_retention_run(Path(args[0]))
    except UnsupportedFormat as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return UNSUPPORTED_FORMAT_EXIT
    except Exception as exc:  # noqa: BLE001 - every unreadable file is reported the same way
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(msgspec.json.encode(run) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
