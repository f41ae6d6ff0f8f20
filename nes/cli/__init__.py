"""The `nes` command line: one module per command group, the work in library functions.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`handler=<callable(argparse.Namespace) -> int>` as a default. `main` parses, dispatches and
returns the exit code. Exit codes shared by every command: 0 success / clean, 1 corrupt (verify),
2 cannot run (bad input, missing file), 130 interrupted: Ctrl-C in any command prints one line
(`nes: interrupted`) on stderr, no traceback; a run being written is left to the writer sidecar,
which commits what was submitted (the next boot's recovery seals it), never half-written. An
`EventStoreError` a command does not report itself is one line `nes: <error>` and exit 2.
"""

from __future__ import annotations

import argparse
import signal
import sys

from nes._version import __version__
from nes.cli import demo, export, retention, runs, show, tail, trace, verify
from nes.errors import EventStoreError

__all__ = ["main", "EXIT_OK", "EXIT_CORRUPT", "EXIT_ERROR", "EXIT_INTERRUPTED"]

EXIT_OK, EXIT_CORRUPT, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

# Command groups, in the order `nes --help` lists them. Add a module here to add a command.
COMMAND_MODULES = (demo, verify, runs, show, tail, trace, export, retention)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nes", description="nes event store tools")
    parser.add_argument("--version", action="version", version=f"nes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `nes` command; returns its exit code (130 after Ctrl-C, with one line on stderr)."""
    try:
        return _dispatch(sys.argv[1:] if argv is None else list(argv))
    except EventStoreError as exc:  # a command that did not report it itself: still one line
        print(f"nes: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the exit
        print("nes: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _dispatch(args: list[str]) -> int:
    if args and args[0] == "demo":  # pass everything after `demo` through untouched
        return demo.run(args[1:])
    try:
        ns = _parser().parse_args(args)
        return int(ns.handler(ns))
    except BrokenPipeError:  # `nes show ... | head`: the reader left; not an error
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
