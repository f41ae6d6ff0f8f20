"""`nes runs`: one row per run file of a base directory.

Contract: every `*.lmdb` run file under `<base>/<instance>/` is listed (data-marker sidecars
are not run files), newest last (by start time, then instance and run id). A file that cannot
be read (missing manifest, truncated, not LMDB, foreign LMDB) is listed with `error` set and
the fields the file name gives (run id, start time), never skipped and never fatal. The
high-watermark is the last committed entry key on disk, so a live (Running) run shows its
progress. Files are opened read-only and lockless (`RunFile`), in a `workers.runs` child
process (one for all files; if it crashes, one per file, so the file that crashed it is listed
as `Unreadable` with the crash, and the others normally).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from nes.backend import layout
from nes.errors import EventStoreError
from nes.ids import validate_path_id
from nes.ops.render import format_ns
from nes.ops.runfile import RunFile, RunFileError

__all__ = ["RunRow", "list_runs", "run_row", "RUNS_WORKER_FAULT_ENV", "DEFAULT_RUNS_TIMEOUT_S"]

RUNS_WORKER_FAULT_ENV = "NES_RUNS_WORKER_FAULT"
DEFAULT_RUNS_TIMEOUT_S = 30.0


class RunRow(msgspec.Struct, frozen=True):
    """One run file as `nes runs` shows it (stable `--json` field names)."""

    instance_id: str
    run_id: str
    path: str
    status: str  # RunStatus value, or "Unreadable"
    parent_run_id: str | None
    high_watermark: int | None  # last committed entry key on disk
    start_ts_init: int | None
    start_time: str
    end_ts_init: int | None
    end_time: str
    size_bytes: int | None
    latest_anchor_high_watermark: int | None
    error: str | None = None


def _start_from_name(run_id: str) -> int | None:
    head = run_id.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def run_row(path: Path, instance_id: str, *, isolated: bool = False) -> RunRow:
    """The row of one run file; an unreadable file gives a row with `error` set. `isolated`:
    called in a worker process (`RunFile` contract)."""
    run_id = path.name[: -len(layout.RUN_FILE_SUFFIX)]
    try:
        size: int | None = path.stat().st_blocks * 512
    except OSError:
        size = None
    try:
        with RunFile(path, isolated=isolated) as run_file:
            manifest = run_file.manifest()
            high_watermark = run_file.high_watermark()
            try:
                anchor = run_file.latest_anchor()
                anchor_hwm = None if anchor is None else anchor.high_watermark
                anchor_error = None
            except EventStoreError as exc:
                anchor_hwm, anchor_error = None, f"latest anchor unreadable: {exc}"
    except (EventStoreError, OSError) as exc:
        start = _start_from_name(run_id)
        return RunRow(instance_id, run_id, str(path), "Unreadable", None, None, start, format_ns(start), None, "-",
                      size, None, str(exc))
    return RunRow(
        instance_id=instance_id,
        run_id=manifest.run_id,
        path=str(path),
        status=str(manifest.status),
        parent_run_id=manifest.parent_run_id,
        high_watermark=high_watermark,
        start_ts_init=manifest.start_ts_init,
        start_time=format_ns(manifest.start_ts_init),
        end_ts_init=manifest.end_ts_init,
        end_time=format_ns(manifest.end_ts_init),
        size_bytes=size,
        latest_anchor_high_watermark=anchor_hwm,
        error=anchor_error,
    )


def _rows_in_worker(files: list[tuple[str, Path]], timeout_s: float) -> list[RunRow]:
    from nes.isolation import WorkerCrash, run_json_worker

    if not files:
        return []
    args = [part for instance, path in files for part in (instance, str(path))]
    try:
        return run_json_worker("workers.runs", args, timeout_s, list[RunRow])
    except WorkerCrash:
        if len(files) == 1:
            raise
    rows = []
    for instance, path in files:  # find the file that crashes the reader; list the others
        try:
            rows.extend(_rows_in_worker([(instance, path)], timeout_s))
        except WorkerCrash as crash:
            run_id = path.name[: -len(layout.RUN_FILE_SUFFIX)]
            start = _start_from_name(run_id)
            rows.append(RunRow(instance, run_id, str(path), "Unreadable", None, None, start, format_ns(start), None,
                               "-", None, None, f"reading it crashed the reader: {crash.status}"))
    return rows


def list_runs(
    base_dir: str | Path, instance_id: str | None = None, *, isolated: bool = True,
    timeout_s: float = DEFAULT_RUNS_TIMEOUT_S,
) -> list[RunRow]:
    """Rows for every run file under `base_dir` (or of one instance), newest last; with
    `isolated` (the default) the files are read in a worker process (see the module contract).
    Raises RunFileError when `base_dir` (or the instance directory) does not exist and
    ValueError for an instance id that is not a path component."""
    base = Path(base_dir)
    if not base.is_dir():
        raise RunFileError(f"{base}: no such base directory")
    if instance_id is not None:
        validate_path_id(instance_id, "instance_id")
        if not (base / instance_id).is_dir():
            raise RunFileError(f"{base / instance_id}: no such instance directory")
        instances = [instance_id]
    else:
        instances = sorted(p.name for p in base.iterdir() if p.is_dir())
    files: list[tuple[str, Path]] = []
    for instance in instances:
        try:
            files.extend((instance, path) for path in layout.list_run_files(base, instance))
        except ValueError:
            continue  # a directory whose name is not an instance id holds no runs
    if isolated:
        rows = _rows_in_worker(files, timeout_s)
    else:
        rows = [run_row(path, instance) for instance, path in files]
    return sorted(rows, key=lambda r: (r.start_ts_init or 0, r.instance_id, r.run_id))
