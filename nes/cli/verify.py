"""`nes verify`.

Contract for `nes verify PATH [--json]` (read-only; it never quarantines or modifies a file):
exit 0 and the `clean ...` line when the run verifies; exit 1 and the `corrupt ...` line plus
one `- <finding>` line each when it does not, or when the verifier worker crashed or timed out
(its own `corrupt path=...` line); exit 2 with `error path=<p> error="..."` on stderr when the
file cannot be verified at all (missing, bad `NES_VERIFY_TIMEOUT_SECS`). The scan always runs
in a worker process with a timeout (`NES_VERIFY_TIMEOUT_SECS`, default 30 seconds).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

__all__ = ["register", "DEFAULT_VERIFY_TIMEOUT_SECS", "VERIFY_TIMEOUT_ENV"]

VERIFY_TIMEOUT_ENV = "NES_VERIFY_TIMEOUT_SECS"
DEFAULT_VERIFY_TIMEOUT_SECS = 30.0
EXIT_CLEAN, EXIT_CORRUPT, EXIT_ERROR = 0, 1, 2


def _error(path: str, message: str) -> int:
    message = message.replace('"', "'")
    print(f'error path={path} error="{message}"', file=sys.stderr)
    return EXIT_ERROR


def _verify_timeout() -> float:
    raw = os.environ.get(VERIFY_TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_VERIFY_TIMEOUT_SECS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{VERIFY_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{VERIFY_TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return value


def _cmd_verify(ns: argparse.Namespace) -> int:
    from nes.verifier import VerifyOpenError, verify_in_worker

    path: str = ns.path
    try:
        timeout_s = _verify_timeout()
    except ValueError as exc:
        return _error(path, str(exc))
    if not os.path.isfile(path):
        return _error(path, "run file not found" if not os.path.exists(path) else "not a regular file")
    try:
        verdict = verify_in_worker(path, timeout_s)
    except (VerifyOpenError, OSError) as exc:
        return _error(path, f"cannot run verifier: {exc}")
    if ns.json:
        print(verdict.to_json())
    else:
        for line in verdict.lines():
            print(line)
    return EXIT_CLEAN if verdict.is_clean() else EXIT_CORRUPT


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    verify = sub.add_parser("verify", help="verify a run file (read-only)")
    verify.add_argument("path", help="the run file (<base>/<instance>/<run_id>.lmdb)")
    verify.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    verify.set_defaults(handler=_cmd_verify)
