"""`nes tail RUN | --base-dir D --instance I [-n N] [-f] [--json]`: the last entries of a run;
with `-f`, follow it as the writer commits and move on to the instance's next run when it is
sealed (a `# run ... sealed ...; following ...` line on stderr). Runs until Ctrl-C (exit 130).
While following it runs at a lower CPU priority (nice +10): on a loaded machine the trader and
its writer come first.

Exit codes: 0 done; 1 damage read; 2 cannot run (missing file, no run, bad arguments); 130
interrupted (the normal end of `-f`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nes.cli._common import EXIT_OK, emit_json, fail, run_guarded

__all__ = ["register", "FOLLOW_NICENESS"]

FOLLOW_NICENESS = 10  # `-f` lowers its own priority by this much


def _cmd(ns: argparse.Namespace) -> int:
    from nes.ops.render import entry_line, entry_record
    from nes.ops.runfile import RunFile
    from nes.ops.tail import RunSwitch, follow, last_entries, newest_run_file

    if (ns.run is None) == (ns.instance is None):
        return fail("give a run file or --instance (with --base-dir), not both")
    if ns.instance is not None and ns.base_dir is None:
        return fail("--instance needs --base-dir")
    if ns.n < 0:
        return fail(f"-n must be >= 0, got {ns.n}")

    def show(entry: object) -> None:
        if ns.json:
            emit_json(entry_record(entry))  # type: ignore[arg-type]
        else:
            sys.stdout.write(entry_line(entry) + "\n")  # type: ignore[arg-type]

    def body() -> int:
        path = Path(ns.run) if ns.run is not None else newest_run_file(ns.base_dir, ns.instance)
        with RunFile(path, isolated=True) as run_file:
            entries = last_entries(run_file, ns.n)
        for entry in entries:
            show(entry)
        sys.stdout.flush()
        if not ns.follow:
            return EXIT_OK
        # An observer: yield the CPU to the trader and its writer on a busy machine.
        try:
            os.nice(FOLLOW_NICENESS)
        except OSError:
            pass
        after = entries[-1].seq if entries else 0
        if not entries:
            with RunFile(path, isolated=True) as run_file:
                after = run_file.high_watermark()
        for item in follow(path, after, poll_s=ns.poll_ms / 1000, isolated=True):
            if isinstance(item, RunSwitch):
                print(f"# run {item.sealed_run_id} sealed {item.status}; following {item.path.name}", file=sys.stderr)
                continue
            show(item)
            sys.stdout.flush()
        return EXIT_OK

    return run_guarded(body)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `nes tail`."""
    parser = sub.add_parser("tail", help="the last entries of a run; -f follows it live")
    parser.add_argument("run", nargs="?", help="the run file (or use --base-dir and --instance)")
    parser.add_argument("--base-dir", help="the store's base directory (with --instance)")
    parser.add_argument("--instance", help="the instance whose newest run to tail")
    parser.add_argument("-n", type=int, default=10, help="how many last entries (default 10)")
    parser.add_argument("-f", "--follow", action="store_true", help="follow new entries as they become durable")
    parser.add_argument("--poll-ms", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="one JSON object per entry")
    parser.set_defaults(handler=_cmd)
