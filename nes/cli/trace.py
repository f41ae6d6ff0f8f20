"""`nes trace RUN --client-order-id X | --seq N [--json]`: an order's audit trail (every entry
of its workflow in seq order, indented by causation depth) or one entry's causation chain back
to its root command (an indented tree, root first). Rules: docs/operator.md, "nes trace".

Exit codes: 0 traced; 1 damage read; 2 cannot run (missing/unreadable file, unknown client
order id, unknown seq, a file without the correlation index).
"""

from __future__ import annotations

import argparse
import sys

from nes.cli._common import EXIT_OK, emit_json, fail, run_guarded

__all__ = ["register"]


def _cmd(ns: argparse.Namespace) -> int:
    from nes.ops.render import entry_line, entry_record
    from nes.ops.runfile import RunFile
    from nes.ops.trace import causation_chain, trace_order

    if (ns.client_order_id is None) == (ns.seq is None):
        return fail("give exactly one of --client-order-id or --seq")

    def body() -> int:
        with RunFile(ns.run, isolated=True) as run_file:
            if ns.client_order_id is not None:
                trace = trace_order(run_file, ns.client_order_id)
                for node in trace.nodes:
                    if ns.json:
                        emit_json({**entry_record(node.entry), "depth": node.depth, "parent_seq": node.parent_seq})
                    else:
                        sys.stdout.write(entry_line(node.entry, "  " * node.depth) + "\n")
                return EXIT_OK
            chain = causation_chain(run_file, ns.seq)
            for depth, entry in enumerate(chain.entries):
                if ns.json:
                    emit_json({**entry_record(entry), "depth": depth})
                else:
                    sys.stdout.write(entry_line(entry, "  " * depth) + "\n")
            if chain.missing_cause is not None:
                print(f"# the chain starts at a cause no entry of this run carries: {chain.missing_cause}", file=sys.stderr)
            if chain.cycle:
                print("# the causation headers form a cycle; the chain stops there", file=sys.stderr)
            return EXIT_OK

    return run_guarded(body)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `nes trace`."""
    parser = sub.add_parser("trace", help="an order's audit trail, or an entry's causation chain")
    parser.add_argument("run", help="the run file")
    parser.add_argument("--client-order-id", help="trace every entry of this order's workflow")
    parser.add_argument("--seq", type=int, help="the causation chain of the entry at this seq")
    parser.add_argument("--json", action="store_true", help="one JSON object per entry (with depth)")
    parser.set_defaults(handler=_cmd)
