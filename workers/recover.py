"""Recovery worker: `python -m workers.recover BASE_DIR INSTANCE_ID [FILE ...]`.

For each run file (all `*.lmdb` of the instance, or the named ones, in name order) it prints
`{"begin": file}` then one `RunFileState` JSON line. Sealed files are only read; a Running
file is scanned read-only, its recovery status decided by the pure rule
(`nes.recovery.decide_recovery_status`) and then sealed. Running in a separate process, a file
that crashes LMDB kills only this worker: the kernel sees which file it was on (the last
`begin`), skips it and starts a new worker for the rest.
"""

from __future__ import annotations

import signal
import sys

import msgspec

from nes.kernel import recover_run_file


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C at a terminal reaches the whole process group: the kernel that started us decides
    # (it kills us if it stops); a seal is one LMDB transaction either way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3:
        print("usage: python -m workers.recover BASE_DIR INSTANCE_ID FILE [FILE ...]", file=sys.stderr)
        return 2
    base_dir, instance_id, files = args[0], args[1], args[2:]
    out = sys.stdout.buffer
    for name in files:
        out.write(msgspec.json.encode({"begin": name}) + b"\n")
        out.flush()
        out.write(msgspec.json.encode(recover_run_file(base_dir, instance_id, name)) + b"\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
