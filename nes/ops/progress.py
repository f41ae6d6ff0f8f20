"""Progress bars for long operator commands (tqdm), on stderr, only on a terminal.

Contract: `progress(total, desc, quiet)` is a context manager yielding an object with
`update(n)`. A bar is drawn only when `quiet` is False and stderr is a terminal; otherwise the
object does nothing, so data on stdout and anything piped or logged stays clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["Progress", "progress", "wants_progress"]


class Progress(Protocol):
    """What a command reports progress through."""

    def update(self, n: int = 1) -> object: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        return None


def wants_progress(quiet: bool) -> bool:
    """A bar is drawn only on a terminal, and never with --quiet."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def progress(total: int | None, desc: str, quiet: bool = False) -> Iterator[Progress]:
    """A progress bar over `total` units (see the module contract)."""
    if not wants_progress(quiet):
        yield _Silent()
        return
    from tqdm import tqdm  # type: ignore[import-untyped]

    bar = tqdm(total=total, desc=desc, file=sys.stderr, unit="entry", unit_scale=True, leave=False, mininterval=0.2)
    try:
        yield bar
    finally:
        bar.close()
