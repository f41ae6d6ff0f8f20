"""Non-destructive retention planning for sealed run files.

Contract (the crate's `retention.rs`, plus: a restore point must verify clean): planning
never deletes, moves or writes anything; it names the runs an operator could reclaim. Runs are
ordered by (start_ts_init, run_id). `Running` runs are dropped before anything else: never
considered, never candidates. A run's latest snapshot anchor has a status: `Missing`,
`Valid(anchor)` (it decodes, sits under its own high-watermark key and at or below the durable
high-watermark on disk; an anchor at high-watermark 0 is valid) or `Invalid(reason)`. The
known-good restore point is the newest sealed, non-Quarantined run with a Valid anchor that
verifies clean (`verified_clean` not False; `plan_lmdb_retention` runs the full verifier on
candidates, newest first). Without one, no mode reclaims anything.
- Full: no candidates.
- Bounded(keep_last): keeps the last `keep_last` sealed runs (0 allowed) plus the latest
  restore point, and nothing else: every other sealed run is a candidate.
- SnapshotAnchored: candidates are the runs strictly older than the restore point.
`plan_lmdb_retention` reads each run file in a worker process (a damaged file can crash only
that worker); a file that cannot be read is reported in `skipped` and never reclaimed, and a
file without this nes's format marker (missing, older or future version) stops the planning
with `UnsupportedFormat`.
"""

from __future__ import annotations

import enum
from pathlib import Path

import lmdb
import msgspec

from nes.backend import layout
from nes.codec import key_seq
from nes.config import Bounded, Full, RetentionMode, SnapshotAnchored
from nes.errors import InvalidArgument, UnsupportedFormat
from nes.isolation import WorkerCrash, run_json_worker
from nes.manifest import RunStatus, decode_manifest
from nes.snapshot import SnapshotAnchor, decode_anchor

__all__ = [
    "AnchorState",
    "SnapshotAnchorStatus",
    "RetentionRun",
    "RetentionPlan",
    "anchor_is_restore_point",
    "snapshot_anchor_status",
    "plan_retention",
    "read_retention_run",
    "plan_lmdb_retention",
    "UNSUPPORTED_FORMAT_EXIT",
]

UNSUPPORTED_FORMAT_EXIT = 3  # the retention worker's exit status for UnsupportedFormat


class AnchorState(enum.Enum):
    """The crate's SnapshotAnchorStatus variants."""

    Missing = "Missing"
    Valid = "Valid"
    Invalid = "Invalid"


class SnapshotAnchorStatus(msgspec.Struct, frozen=True):
    """Missing, Valid(anchor) or Invalid(reason): the latest anchor as retention sees it."""

    state: AnchorState
    anchor: SnapshotAnchor | None = None
    reason: str | None = None

    @classmethod
    def missing(cls) -> SnapshotAnchorStatus:
        """No anchor recorded."""
        return cls(AnchorState.Missing)

    @classmethod
    def valid(cls, anchor: SnapshotAnchor) -> SnapshotAnchorStatus:
        """An anchor retention may rely on."""
        return cls(AnchorState.Valid, anchor)

    @classmethod
    def invalid(cls, reason: str) -> SnapshotAnchorStatus:
        """An anchor that exists but must not be relied on, and why."""
        return cls(AnchorState.Invalid, None, reason)


def snapshot_anchor_status(durable_high_watermark: int, anchor: SnapshotAnchor | None) -> SnapshotAnchorStatus:
    """The crate's rule: Missing without an anchor; Valid at or below the durable
    high-watermark (0 included); Invalid past it."""
    if anchor is None:
        return SnapshotAnchorStatus.missing()
    if anchor.high_watermark <= durable_high_watermark:
        return SnapshotAnchorStatus.valid(anchor)
    return SnapshotAnchorStatus.invalid(
        f"snapshot anchor high_watermark {anchor.high_watermark} exceeds durable high_watermark {durable_high_watermark}"
    )


class RetentionRun(msgspec.Struct, frozen=True):
    """One run file as the planner sees it."""

    run_id: str
    start_ts_init: int
    status: RunStatus
    durable_high_watermark: int  # key of the last entry on disk
    anchor: SnapshotAnchorStatus = SnapshotAnchorStatus.missing()
    # None: not verified (the pure planner trusts it); False: the verifier found damage.
    verified_clean: bool | None = None

    def is_known_good_restore_point(self) -> bool:
        """Sealed, not Quarantined, a Valid anchor (re-checked against the durable
        high-watermark: a caller's status alone is not trusted to reclaim), not known corrupt."""
        anchor = self.anchor
        return (
            self.status not in (RunStatus.Running, RunStatus.Quarantined)
            and anchor.state is AnchorState.Valid
            and anchor.anchor is not None
            and anchor.anchor.high_watermark <= self.durable_high_watermark
            and self.verified_clean is not False
        )


class RetentionPlan(msgspec.Struct, frozen=True):
    """Which sealed runs a retention mode would reclaim (a plan only: nothing is deleted)."""

    mode: str  # RetentionMode.label()
    runs_considered: list[str]  # sealed runs, oldest first
    restore_point: str | None
    candidates: list[str]  # reclaimable runs, oldest first
    reason: str
    skipped: list[str] = []  # "<file>: <error>" for files that could not be read


def anchor_is_restore_point(anchor: SnapshotAnchor | None, durable_high_watermark: int) -> bool:
    """An anchor restores if it exists and covers nothing past the durable tail (0 included)."""
    return snapshot_anchor_status(durable_high_watermark, anchor).state is AnchorState.Valid


def _restore_index(sealed: list[RetentionRun]) -> int | None:
    return next((i for i in range(len(sealed) - 1, -1, -1) if sealed[i].is_known_good_restore_point()), None)


def plan_retention(mode: RetentionMode, runs: list[RetentionRun]) -> RetentionPlan:
    """Pure: which sealed runs could be reclaimed under `mode` (see the module contract)."""
    if not isinstance(mode, (Full, Bounded, SnapshotAnchored)):
        raise InvalidArgument(f"mode must be Full(), Bounded(n) or SnapshotAnchored(), got {mode!r}")
    sealed = sorted(
        (run for run in runs if run.status is not RunStatus.Running),
        key=lambda run: (run.start_ts_init, run.run_id),
    )
    ids = [run.run_id for run in sealed]
    restore_index = _restore_index(sealed)
    restore_point = None if restore_index is None else ids[restore_index]

    def plan(candidates: list[str], reason: str) -> RetentionPlan:
        return RetentionPlan(mode.label(), ids, restore_point, candidates, reason)

    if isinstance(mode, Full):
        return plan([], "full retention keeps every run")
    if restore_index is None:
        return plan([], "no known-good restore point; nothing is reclaimed")
    if isinstance(mode, Bounded):
        keep = set(range(max(len(sealed) - mode.keep_last, 0), len(sealed))) | {restore_index}
        return plan(
            [run_id for i, run_id in enumerate(ids) if i not in keep],
            f"keeps the last {mode.keep_last} sealed runs and restore point {restore_point}",
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
    """Read one run file read-only. Raises `UnsupportedFormat` for a file without this nes's
    format marker, and on any open/decode failure of the manifest or the entries; an unreadable
    anchor makes the status Invalid(reason)."""
    env = layout.open_read_only(path)
    try:
        with env.begin() as txn:
            try:
                meta = env.open_db(layout.DB_META, txn=txn, create=False)
                raw_format = txn.get(layout.FORMAT_KEY, db=meta)
            except lmdb.NotFoundError:
                raw_format = None
            problem = layout.format_version_problem(raw_format)
            if problem is not None:
                raise UnsupportedFormat(problem)
            raw = txn.get(layout.MANIFEST_KEY, db=env.open_db(layout.DB_MANIFEST, txn=txn, create=False))
            if raw is None:
                raise ValueError("manifest/current is missing")
            manifest = decode_manifest(raw)
            if manifest.run_id + layout.RUN_FILE_SUFFIX != path.name:
                raise ValueError(f"manifest run_id {manifest.run_id!r} does not match the file name")
            last_entry = _last_key(txn, env.open_db(layout.DB_ENTRIES, txn=txn, create=False))
            durable = 0 if last_entry is None else key_seq(last_entry[0])
            try:
                last_anchor = _last_key(txn, env.open_db(layout.DB_ANCHORS, txn=txn, create=False))
                if last_anchor is None:
                    status = SnapshotAnchorStatus.missing()
                else:
                    anchor = decode_anchor(last_anchor[1])
                    if len(last_anchor[0]) != 8 or key_seq(last_anchor[0]) != anchor.high_watermark:
                        status = SnapshotAnchorStatus.invalid(
                            f"snapshot anchor for high_watermark {anchor.high_watermark} is stored under another key"
                        )
                    else:
                        status = snapshot_anchor_status(durable, anchor)
            except (lmdb.Error, msgspec.MsgspecError, ValueError) as exc:
                status = SnapshotAnchorStatus.invalid(f"snapshot anchor unreadable: {exc}")
    finally:
        env.close()
    return RetentionRun(
        run_id=manifest.run_id,
        start_ts_init=manifest.start_ts_init,
        status=manifest.status,
        durable_high_watermark=durable,
        anchor=status,
    )


def plan_lmdb_retention(
    base_dir: str | Path, instance_id: str, mode: RetentionMode, timeout_s: float = DEFAULT_READ_TIMEOUT_S
) -> RetentionPlan:
    """Plan over `<base>/<instance_id>/*.lmdb`. Each file is read by a `workers.retention`
    child (a damaged file can crash only that child); unreadable files are listed in `skipped`
    and are never reclaimed. The restore point is proven: candidates are verified in a verifier
    worker, newest first, until one verifies clean (those that do not are never a restore
    point). A file without this nes's format marker raises `UnsupportedFormat`."""
    from nes.verifier import verify_in_worker

    runs: list[RetentionRun] = []
    paths: dict[str, Path] = {}
    skipped: list[str] = []
    for path in layout.list_run_files(base_dir, instance_id):
        try:
            run = run_json_worker("workers.retention", [str(path)], timeout_s, RetentionRun)
        except WorkerCrash as crash:
            if crash.returncode == UNSUPPORTED_FORMAT_EXIT:
                raise UnsupportedFormat(f"run file {path.name}: {crash.status}") from None
            skipped.append(f"{path.name}: {crash.status}")
            continue
        runs.append(run)
        paths[run.run_id] = path
    while True:
        sealed = sorted((r for r in runs if r.status is not RunStatus.Running), key=lambda r: (r.start_ts_init, r.run_id))
        index = _restore_index(sealed)
        if index is None or sealed[index].verified_clean is True:
            break
        candidate = sealed[index]
        verdict = verify_in_worker(paths[candidate.run_id], timeout_s)
        clean = verdict.is_clean()
        if not clean:
            skipped.append(f"{paths[candidate.run_id].name}: not a restore point: {verdict.summary_line()}")
        runs = [msgspec.structs.replace(r, verified_clean=clean) if r.run_id == candidate.run_id else r for r in runs]
    plan = plan_retention(mode, runs)
    return msgspec.structs.replace(plan, skipped=skipped)
