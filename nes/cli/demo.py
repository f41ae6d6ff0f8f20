"""`nes demo`: the arguments after `demo` go to `nes.demo.main` untouched."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def run(rest: list[str]) -> int:
    from nes.demo import main as demo_main

    return int(demo_main(rest) or 0)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub.add_parser("demo", help="run the demo session (remaining arguments go to it)", add_help=False)
