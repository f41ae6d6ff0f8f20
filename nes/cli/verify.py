"""`nes verify`: the crate's `verify` binary contract, for one or several run files.

`nes verify PATH [PATH ...] [--json] [--quiet]` (read-only; it never quarantines or modifies a file). A
PATH may be a directory: its run files are verified in name order. Per path, on stdout:
- `clean run_id=... status=... high_watermark=N entries_scanned=N markers=absent|clean ...`;
- `corrupt run_id=... findings=N marker_findings=M markers=... quarantine=not-performed` and one
  `- <finding>` line each (the crate's lines where the crate has the finding);
- `corrupt path=P error="..." quarantine=not-performed` for a file that is not a run file;
- `corrupt path=P worker_status="..." quarantine=not-performed` when the verifier worker crashed
  or made no progress for the timeout (`worker_status="timeout after Ns"`);
- on stderr, `error path=P error="no run file"` (or another reason) when nothing could be verified.
With several paths, a last line `summary paths=N clean=C corrupt=K errors=E`.
Exit codes: 0 all clean; 1 some file corrupt (findings, worker crash or stall, as the crate);
2 nothing to verify at some path / bad settings (and none corrupt); 130 interrupted.
`--json`: one `VerifyOutcome` object per path, in one shape for every outcome (errors included),
then with several paths one `{"summary": ...}` object.
Timeout: `NES_VERIFY_TIMEOUT_SECS`, else the crate's `NAUTILUS_EVENT_STORE_VERIFY_TIMEOUT_SECS`,
default 30 s, bounds the time *without progress* (a large clean run is never called corrupt for
its size). On a terminal, progress is shown on stderr (`--quiet` silences it).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

import msgspec

from nes.cli._common import add_quiet
from nes.ops.progress import wants_progress

__all__ = ["register", "DEFAULT_VERIFY_TIMEOUT_SECS", "VERIFY_TIMEOUT_ENV", "CRATE_VERIFY_TIMEOUT_ENV", "verify_timeout"]

VERIFY_TIMEOUT_ENV = "NES_VERIFY_TIMEOUT_SECS"
CRATE_VERIFY_TIMEOUT_ENV = "NAUTILUS_EVENT_STORE_VERIFY_TIMEOUT_SECS"
DEFAULT_VERIFY_TIMEOUT_SECS = 30.0


def verify_timeout(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """The stall timeout from the environment (nes's variable wins over the crate's);
    ValueError naming the variable for anything but a positive finite number of seconds."""
    for name in (VERIFY_TIMEOUT_ENV, CRATE_VERIFY_TIMEOUT_ENV):
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}={raw!r} must be a positive number of seconds")
        return value
    return DEFAULT_VERIFY_TIMEOUT_SECS


def _terminal_progress(path: str, quiet: bool) -> Callable[[str, int], None] | None:
    if not wants_progress(quiet):
        return None

    def show(phase: str, count: int) -> None:
        sys.stderr.write(f"\r\x1b[Kverifying {path}: {count:,} {phase}")
        sys.stderr.flush()

    return show


def _clear_progress(quiet: bool) -> None:
    if wants_progress(quiet):
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _cmd_verify(ns: argparse.Namespace) -> int:
    from nes.verifier import VerifyOutcome, VerifySummary, expand_verify_paths, verify_path

    paths: list[str] = expand_verify_paths(list(ns.paths))
    outcomes: list[VerifyOutcome] = []
    try:
        timeout_s = verify_timeout()
    except ValueError as exc:
        outcomes = [VerifyOutcome.failed(path, str(exc)) for path in paths]
        timeout_s = 0.0
    try:
        if not outcomes:
            for path in paths:
                outcome = verify_path(path, timeout_s, _terminal_progress(path, ns.quiet))
                _clear_progress(ns.quiet)
                outcomes.append(outcome)
                _emit(outcome, ns.json)
        else:
            for outcome in outcomes:
                _emit(outcome, ns.json)
    except KeyboardInterrupt:
        _clear_progress(ns.quiet)
        raise  # `nes` main prints the one line and exits 130
    if not paths:  # a directory without run files
        outcomes = [VerifyOutcome.failed(p, "no run file") for p in ns.paths]
        for outcome in outcomes:
            _emit(outcome, ns.json)
    summary = VerifySummary.of(outcomes)
    if len(outcomes) > 1:
        if ns.json:
            print(msgspec.json.encode({"summary": summary}).decode())
        else:
            print(summary.line())
    return summary.exit_code


def _emit(outcome: object, as_json: bool) -> None:
    from nes.verifier import VerifyOutcome

    assert isinstance(outcome, VerifyOutcome)
    if as_json:
        print(msgspec.json.encode(outcome).decode(), flush=True)
        return
    stream = sys.stderr if outcome.verdict == "error" else sys.stdout
    for line in outcome.lines:
        print(line, file=stream, flush=True)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `nes verify`."""
    verify = sub.add_parser("verify", help="verify run files (read-only)")
    verify.add_argument("paths", nargs="+", metavar="PATH", help="run files (<base>/<instance>/<run_id>.lmdb) or directories")
    verify.add_argument("--json", action="store_true", help="one JSON object per path (and a summary)")
    add_quiet(verify)
    verify.set_defaults(handler=_cmd_verify)
