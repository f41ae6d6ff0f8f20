"""`nes retention plan`: prints the retention plan as JSON (it deletes nothing)."""

from __future__ import annotations

import argparse
import sys

import msgspec

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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    retention = sub.add_parser("retention", help="retention tools")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    plan = retention_sub.add_parser("plan", help="print the retention plan as JSON (deletes nothing)")
    plan.add_argument("--base-dir", required=True)
    plan.add_argument("--instance", required=True)
    plan.add_argument("--mode", required=True, help="full | bounded:N | snapshot-anchored")
    plan.set_defaults(handler=_cmd_retention_plan)
