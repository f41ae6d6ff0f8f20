"""`nes retention plan` prints the retention plan as JSON (it deletes nothing).
`nes retention apply --base-dir D --instance I --mode M (--archive DIR | --delete) [--json]
[--quiet]` carries it out (`nes.ops.retention_apply`): exit 0 every candidate archived or
deleted; 1 a candidate did not verify clean and was kept in place; 2 cannot run."""

from __future__ import annotations

import argparse
import sys

import msgspec

from nes.cli._common import add_quiet

__all__ = ["register"]

EXIT_CLEAN, EXIT_ERROR = 0, 2


def _cmd_retention_plan(ns: argparse.Namespace) -> int:
    from nes.config import parse_retention_mode
    from nes.retention import plan_lmdb_retention

    try:
        mode = parse_retention_mode(ns.mode)
    except (ValueError, TypeError) as exc:
        print(f'error mode={ns.mode} error="{exc}"', file=sys.stderr)
        return EXIT_ERROR
    try:
        plan = plan_lmdb_retention(ns.base_dir, ns.instance, mode)
    except (ValueError, TypeError, OSError) as exc:  # e.g. an instance id that is not a path component
        print(f'error base_dir={ns.base_dir} instance={ns.instance} error="{exc}"', file=sys.stderr)
        return EXIT_ERROR
    print(msgspec.json.encode(plan).decode())
    return EXIT_CLEAN


def _cmd_retention_apply(ns: argparse.Namespace) -> int:
    from nes.cli._common import emit_json, fail, run_guarded, verify_reason
    from nes.config import parse_retention_mode
    from nes.ops.progress import progress
    from nes.ops.retention_apply import apply_retention

    if (ns.archive is None) == (not ns.delete):
        return fail("give exactly one of --archive DIR (move runs there) or --delete")

    def body() -> int:
        mode = parse_retention_mode(ns.mode)
        with progress(None, "retention apply", ns.quiet) as bar:
            report = apply_retention(
                ns.base_dir, ns.instance, mode, archive_dir=ns.archive, delete=ns.delete,
                verify=verify_reason(), progress=bar,
            )
        if ns.json:
            emit_json(report)
        else:
            print(f"mode={report.mode} restore_point={report.restore_point or '-'} newest_run={report.newest_run or '-'}")
            for outcome in report.outcomes:
                print(f"{outcome.action} {outcome.run_id} {outcome.detail}")
            for skipped in report.skipped:
                print(f"skipped {skipped}")
        return EXIT_CLEAN if report.is_clean() else 1

    return run_guarded(body)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    retention = sub.add_parser("retention", help="retention tools")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    plan = retention_sub.add_parser("plan", help="print the retention plan as JSON (deletes nothing)")
    plan.add_argument("--base-dir", required=True)
    plan.add_argument("--instance", required=True)
    plan.add_argument("--mode", required=True, help="full | bounded:N | snapshot-anchored")
    plan.set_defaults(handler=_cmd_retention_plan)
    apply = retention_sub.add_parser("apply", help="archive (or delete) the plan's candidates, verified, crash-safely")
    apply.add_argument("--base-dir", required=True)
    apply.add_argument("--instance", required=True)
    apply.add_argument("--mode", required=True, help="full | bounded:N | snapshot-anchored")
    apply.add_argument("--archive", help="move candidates to DIR/<instance>/")
    apply.add_argument("--delete", action="store_true", help="delete candidates instead of archiving them")
    apply.add_argument("--json", action="store_true", help="the report as one JSON object")
    add_quiet(apply)
    apply.set_defaults(handler=_cmd_retention_apply)
