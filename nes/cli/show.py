"""`nes show RUN [--from-seq A --to-seq B] [--topic GLOB] [--type T] [--client-order-id X]
[--venue-order-id Y] [--json] [--quiet]`: decoded entries of a run file.

MessagePack payloads are shown as JSON, others as hex; `--json` writes one object per line with
the stable fields of `nes.ops.render.ENTRY_FIELDS`. Exit codes: 0 shown; 1 the run file is
damaged in the range read (the entries before the damage were printed); 2 cannot run (missing
or unreadable file, invalid range, unknown order id).
"""

from __future__ import annotations

import argparse
import sys

from nes.cli._common import EXIT_OK, add_quiet, emit_json, run_guarded

__all__ = ["register"]


def _cmd(ns: argparse.Namespace) -> int:
    from nes.ops.progress import progress
    from nes.ops.render import entry_line, entry_record
    from nes.ops.runfile import RunFile
    from nes.ops.show import EntryFilter, check_range, iter_entries

    def body() -> int:
        lo, hi = check_range(ns.from_seq, ns.to_seq)
        flt = EntryFilter(ns.topic, ns.type, ns.client_order_id, ns.venue_order_id)
        with RunFile(ns.run, isolated=True) as run_file:
            total = max(0, min(hi, run_file.high_watermark()) - lo + 1)
            with progress(total if total > 50_000 else 0, "show", ns.quiet or total <= 50_000) as bar:
                for entry in iter_entries(run_file, lo, hi, flt):
                    if ns.json:
                        emit_json(entry_record(entry))
                    else:
                        sys.stdout.write(entry_line(entry) + "\n")
                    bar.update(1)
        return EXIT_OK

    return run_guarded(body)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `nes show`."""
    parser = sub.add_parser("show", help="print a run's decoded entries")
    parser.add_argument("run", help="the run file (<base>/<instance>/<run_id>.lmdb)")
    parser.add_argument("--from-seq", type=int, help="first seq (default 1)")
    parser.add_argument("--to-seq", type=int, help="last seq (default: the last committed)")
    parser.add_argument("--topic", help="only topics matching this glob (e.g. 'exec.event.*')")
    parser.add_argument("--type", help="only this payload type")
    parser.add_argument("--client-order-id", help="only entries indexed under this client order id")
    parser.add_argument("--venue-order-id", help="only entries indexed under this venue order id")
    parser.add_argument("--json", action="store_true", help="one JSON object per entry")
    add_quiet(parser)
    parser.set_defaults(handler=_cmd)
