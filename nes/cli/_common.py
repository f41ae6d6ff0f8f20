"""Helpers shared by the operator commands: exit codes, one-line errors, opening a run file,
verifying in the worker, writing JSON lines."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from nes.errors import Corrupted, EventStoreError, Gap, HashMismatch

__all__ = ["EXIT_OK", "EXIT_CORRUPT", "EXIT_ERROR", "EXIT_INTERRUPTED", "fail", "run_guarded", "emit_json",
           "verify_reason", "add_quiet"]

EXIT_OK, EXIT_CORRUPT, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
DAMAGE = (Corrupted, HashMismatch, Gap)
_encoder = msgspec.json.Encoder()


def fail(message: str, code: int = EXIT_ERROR) -> int:
    """Print `error: <message>` as one line on stderr and return `code`."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    return code


def run_guarded(body: Callable[[], int]) -> int:
    """Run a command body, mapping damage to exit 1 and every other store error or bad value
    to exit 2, each as one stderr line (never a traceback)."""
    try:
        return body()
    except BrokenPipeError:
        raise  # the reader of stdout left: `nes.cli.main` ends quietly
    except DAMAGE as exc:
        return fail(f"run file is damaged: {exc}", EXIT_CORRUPT)
    except (EventStoreError, ValueError, TypeError, OSError) as exc:
        return fail(str(exc))


def emit_json(value: Any) -> None:
    """One JSON object on its own stdout line."""
    sys.stdout.write(_encoder.encode(value).decode() + "\n")


def verify_reason(timeout_s: float = 30.0) -> Callable[[Path], str | None]:
    """A `verify(path)` for library calls: the verifier worker's verdict, None when clean,
    else a one-line reason (the first finding, or how the worker failed)."""
    from nes.verifier import verify_in_worker

    def verify(path: Path) -> str | None:
        verdict = verify_in_worker(path, timeout_s)
        if verdict.is_clean():
            return None
        lines = verdict.lines()
        return "; ".join(line.removeprefix("- ") for line in (lines[1:4] or lines[:1]))

    return verify


def add_quiet(parser: Any) -> None:
    """--quiet: no progress bar (bars are drawn only on a terminal anyway)."""
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar on stderr")
