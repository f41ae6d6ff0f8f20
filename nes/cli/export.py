"""`nes export RUN... --format parquet|jsonl --out DIR [--force] [--json] [--quiet]`: runs to
`DIR/instance_id=<i>/run_id=<r>/data.<format>`, atomically (temp file + rename). Each run is
verified in the verifier worker first and refused unless clean (or `--force`).

Exit codes: 0 every run exported; 1 a run was refused because it does not verify clean, or was
found damaged while exporting even with `--force` (nothing of it is written; the others are
still exported); 2 cannot run (missing or
unreadable run file, bad arguments); 130 interrupted (no partial file is left).
"""

from __future__ import annotations

import argparse
import sys

from nes.cli._common import DAMAGE, EXIT_CORRUPT, EXIT_ERROR, EXIT_OK, add_quiet, emit_json, fail, verify_reason

__all__ = ["register"]


def _cmd(ns: argparse.Namespace) -> int:
    from nes.errors import EventStoreError
    from nes.ops.export import ExportRefused, export_run
    from nes.ops.progress import progress
    from nes.ops.runfile import RunFile

    worst = EXIT_OK
    verify = verify_reason()
    for run in ns.runs:
        try:
            with RunFile(run, isolated=True) as run_file:
                total = run_file.high_watermark()
            with progress(total, f"export {run}", ns.quiet) as bar:
                result = export_run(run, ns.out, ns.format, force=ns.force, verify=verify, progress=bar, isolated=True)
        except ExportRefused as exc:
            fail(f"{run}: {exc}", EXIT_CORRUPT)
            worst = max(worst, EXIT_CORRUPT) if worst != EXIT_ERROR else worst
            continue
        except DAMAGE as exc:  # found while reading (with --force): nothing is written
            fail(f"{run}: run file is damaged, nothing exported: {exc}", EXIT_CORRUPT)
            worst = max(worst, EXIT_CORRUPT) if worst != EXIT_ERROR else worst
            continue
        except (EventStoreError, ValueError, OSError) as exc:
            fail(f"{run}: {exc}")
            worst = EXIT_ERROR
            continue
        if ns.json:
            emit_json(result)
        else:
            print(f"exported run_id={result.run_id} rows={result.rows} file={result.file}")
        sys.stdout.flush()
    return worst


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `nes export`."""
    parser = sub.add_parser("export", help="export runs to Parquet or JSON Lines")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run files")
    parser.add_argument("--format", required=True, choices=("parquet", "jsonl"))
    parser.add_argument("--out", required=True, help="output directory (partitioned instance_id=/run_id=)")
    parser.add_argument("--force", action="store_true", help="export a run that does not verify clean")
    parser.add_argument("--json", action="store_true", help="one JSON object per exported run")
    add_quiet(parser)
    parser.set_defaults(handler=_cmd)
