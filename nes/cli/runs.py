"""`nes runs --base-dir D [--instance I] [--json]`: one row per run file, newest last.

Exit codes: 0 listed (unreadable files are rows with status `Unreadable`, not failures);
2 the base or instance directory does not exist, or the instance id is invalid.
"""

from __future__ import annotations

import argparse

from nes.cli._common import EXIT_OK, emit_json, run_guarded

__all__ = ["register"]

_HEADER = ("INSTANCE", "RUN_ID", "STATUS", "PARENT", "HWM", "START", "END", "SIZE", "ANCHOR")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n}"


def _cmd(ns: argparse.Namespace) -> int:
    from nes.ops.runs import list_runs

    def body() -> int:
        rows = list_runs(ns.base_dir, ns.instance)
        if ns.json:
            for row in rows:
                emit_json(row)
            return EXIT_OK
        table: list[tuple[str, ...]] = [_HEADER]
        for r in rows:
            table.append((
                r.instance_id, r.run_id, r.status, r.parent_run_id or "-",
                "-" if r.high_watermark is None else str(r.high_watermark),
                f"{r.start_time} ({r.start_ts_init})" if r.start_ts_init is not None else "-",
                f"{r.end_time} ({r.end_ts_init})" if r.end_ts_init is not None else "-",
                _size(r.size_bytes),
                "-" if r.latest_anchor_high_watermark is None else str(r.latest_anchor_high_watermark),
            ))
        widths = [max(len(cells[i]) for cells in table) for i in range(len(_HEADER))]
        for cells in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip())
        for r in rows:
            if r.error:
                print(f"# {r.run_id}: {r.error}")
        return EXIT_OK

    return run_guarded(body)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `nes runs`."""
    parser = sub.add_parser("runs", help="list run files (newest last)")
    parser.add_argument("--base-dir", required=True, help="the store's base directory")
    parser.add_argument("--instance", help="only this instance")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    parser.set_defaults(handler=_cmd)
