"""The `nes` command line: one module per command group, the work in library functions.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`handler=<callable(argparse.Namespace) -> int>` as a default. `main` parses, dispatches and
returns the exit code. Exit codes shared by every command: 0 success / clean, 1 corrupt (verify),
2 cannot run (bad input, missing file), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from nes.cli import demo, replay, retention, verify

__all__ = ["main", "EXIT_OK", "EXIT_CORRUPT", "EXIT_ERROR", "EXIT_INTERRUPTED"]

EXIT_OK, EXIT_CORRUPT, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

# Command groups, in the order `nes --help` lists them. Add a module here to add a command.
COMMAND_MODULES = (demo, verify, retention, replay)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nes", description="nes event store tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "demo":  # pass everything after `demo` through untouched
        return demo.run(args[1:])
    ns = _parser().parse_args(args)
    return int(ns.handler(ns))
