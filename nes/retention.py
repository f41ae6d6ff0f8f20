"""Non-destructive retention planning for sealed run files.

Contract: planning never deletes, moves or writes anything; it names the runs an operator
could reclaim. Runs are ordered by (start_ts_init, run_id). `Running` runs are dropped before
anything else: never considered, never candidates. The known-good restore point is the newest
sealed, non-Quarantined run whose latest snapshot anchor is usable (decodes, and
0 < anchor.high_watermark <= the durable high-watermark on disk). Without one, no mode
reclaims anything.
- Full: no candidates.
- Bounded(keep_last): keeps the last `keep_last` sealed runs and the restore point with
  everything newer; candidates are the older rest.
- SnapshotAnchored: candidates are the runs strictly older than the restore point.
`plan_lmdb_retention` reads run files read-only (`nes.backend.layout`); a file that cannot be
opened or decoded is skipped: reported in `skipped`, never a restore point or a candidate.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import msgspec

from nes.backend import layout
from nes.codec import key_seq
from nes.config import Bounded, Full, RetentionMode, SnapshotAnchored
from nes.errors import InvalidArgument
from nes.isolation import WorkerCrash, run_json_worker
from nes.manifest import RunStatus, decode_manifest
from nes.snapshot import SnapshotAnchor, decode_anchor

__all__ = [
    "RetentionRun",
    "RetentionPlan",
    "anchor_is_restore_point",
    "plan_retention",
    "read_retention_run",
    "plan_lmdb_retention",
]

class RetentionRun(msgspec.Struct, frozen=True):
    """One run file as the planner sees it."""

    run_id: str
    start_ts_init: int
    status: RunStatus
    durable_high_watermark: int  # key of the last entry on disk
    anchor_valid: bool  # the latest anchor is a usable restore point (anchor_is_restore_point)
    anchor_high_watermark: int | None = None


class RetentionPlan(msgspec.Struct, frozen=True):
    """Which sealed runs a retention mode would reclaim (a plan only: nothing is deleted)."""

    mode: str  # RetentionMode.label()
    runs_considered: list[str]  # sealed runs, oldest first
    restore_point: str | None
    candidates: list[str]  # reclaimable runs, oldest first
    reason: str
    skipped: list[str] = []  # "<file>: <error>" for files that could not be read


def anchor_is_restore_point(anchor: SnapshotAnchor | None, durable_high_watermark: int) -> bool:
    """An anchor restores only if it covers at least one entry and none past the durable tail."""
    return anchor is not None and 0 < anchor.high_watermark <= durable_high_watermark


def _is_restore_point(run: RetentionRun) -> bool:
    # Re-check the watermarks: a caller's `anchor_valid` alone is not trusted to reclaim.
    return (
        run.status is not RunStatus.Quarantined
        and run.anchor_valid
        and run.anchor_high_watermark is not None
        and 0 < run.anchor_high_watermark <= run.durable_high_watermark
    )


def plan_retention(mode: RetentionMode, runs: list[RetentionRun]) -> RetentionPlan:
    """Pure: which sealed runs could be reclaimed under `mode` (see the module contract)."""
    if not isinstance(mode, (Full, Bounded, SnapshotAnchored)):
        raise InvalidArgument(f"mode must be Full(), Bounded(n) or SnapshotAnchored(), got {mode!r}")
    sealed = sorted(
        (run for run in runs if run.status is not RunStatus.Running),
        key=lambda run: (run.start_ts_init, run.run_id),
    )
    ids = [run.run_id for run in sealed]
    restore_index = next((i for i in range(len(sealed) - 1, -1, -1) if _is_restore_point(sealed[i])), None)
    restore_point = None if restore_index is None else ids[restore_index]

    def plan(candidates: list[str], reason: str) -> RetentionPlan:
        return RetentionPlan(mode.label(), ids, restore_point, candidates, reason)

    if isinstance(mode, Full):
        return plan([], "full retention keeps every run")
    if restore_index is None:
        return plan([], "no known-good restore point; nothing is reclaimed")
    if isinstance(mode, Bounded):
        keep_from = min(max(len(sealed) - mode.keep_last, 0), restore_index)
        return plan(
            ids[:keep_from],
            f"keeps the last {mode.keep_last} sealed runs and restore point {restore_point} onwards",
        )
    if isinstance(mode, SnapshotAnchored):
        return plan(ids[:restore_index], f"reclaims runs older than restore point {restore_point}")
    raise InvalidArgument(f"unknown retention mode {mode!r}")


DEFAULT_READ_TIMEOUT_S = 30.0


# ---- LMDB run files (read-only) -------------------------------------------------------------------
def _last_key(txn: lmdb.Transaction, db: lmdb._Database) -> tuple[bytes, bytes] | None:
    cursor = txn.cursor(db)
    return (bytes(cursor.key()), bytes(cursor.value())) if cursor.last() else None


def read_retention_run(path: Path) -> RetentionRun:
    """Read one run file read-only. Raises on any open/decode failure of the manifest or the
    entries; an unreadable anchor only makes `anchor_valid` False."""
    env = layout.open_read_only(path)
    try:
        with env.begin() as txn:
            raw = txn.get(layout.MANIFEST_KEY, db=env.open_db(layout.DB_MANIFEST, txn=txn, create=False))
            if raw is None:
                raise ValueError("manifest/current is missing")
            manifest = decode_manifest(raw)
            if manifest.run_id + layout.RUN_FILE_SUFFIX != path.name:
                raise ValueError(f"manifest run_id {manifest.run_id!r} does not match the file name")
            last_entry = _last_key(txn, env.open_db(layout.DB_ENTRIES, txn=txn, create=False))
            durable = 0 if last_entry is None else key_seq(last_entry[0])
            anchor: SnapshotAnchor | None = None
            try:
                last_anchor = _last_key(txn, env.open_db(layout.DB_ANCHORS, txn=txn, create=False))
                if last_anchor is not None:
                    anchor = decode_anchor(last_anchor[1])
                    if key_seq(last_anchor[0]) != anchor.high_watermark:
                        anchor = None  # stored under the wrong key: not trusted as a restore point
            except (lmdb.Error, msgspec.MsgspecError, ValueError):
                anchor = None
    finally:
        env.close()
    return RetentionRun(
        run_id=manifest.run_id,
        start_ts_init=manifest.start_ts_init,
        status=manifest.status,
        durable_high_watermark=durable,
        anchor_valid=anchor_is_restore_point(anchor, durable),
        anchor_high_watermark=None if anchor is None else anchor.high_watermark,
    )


def plan_lmdb_retention(
    base_dir: str | Path, instance_id: str, mode: RetentionMode, timeout_s: float = DEFAULT_READ_TIMEOUT_S
) -> RetentionPlan:
    """Plan over `<base>/<instance_id>/*.lmdb`. Each file is read by a `workers.retention`
    child (a damaged file can crash only that child); unreadable files are listed in `skipped`
    and are never reclaimed."""
    runs: list[RetentionRun] = []
    skipped: list[str] = []
    for path in layout.list_run_files(base_dir, instance_id):
        try:
            runs.append(run_json_worker("workers.retention", [str(path)], timeout_s, RetentionRun))
        except WorkerCrash as crash:
            skipped.append(f"{path.name}: {crash.status}")
    plan = plan_retention(mode, runs)
    return msgspec.structs.replace(plan, skipped=skipped)
