"""Durable high-watermark worker: `python -m workers.hwm PATH`.

Prints `{"high_watermark": N}` (the largest entry key in the run file) and exits 0; exits 2 with
a message on stderr if the file cannot be read. Run by the trader after its writer died
(`nes.durable`), in its own process so a damaged file crashes only this worker.
"""

from __future__ import annotations

import sys

from nes.durable import main_report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m workers.hwm PATH", file=sys.stderr)
        return 2
    try:
        line = main_report(args[0])
    except OSError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    sys.stdout.buffer.write(line + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
