"""`nes retention apply`: carry out a retention plan, crash-safely.

Contract:
- The plan is `nes.retention.plan_lmdb_retention` (pure rules, files read in workers). Apply
  acts only on its candidates, minus every protected run, re-checked at apply time: a Running
  run, the plan's restore point, and the instance's newest run file (whatever its status).
- Each candidate is verified in the verifier worker first; one that is not clean is kept in
  place and reported (`kept`), never archived or deleted.
- Archive: the snapshot blobs its anchors name are copied (content-addressed, fsynced; other
  runs may share them, so they stay in place too) to `<archive>/<instance_id>/snapshots/`, so
  the archived run verifies and restores on its own; then the run file moves to
  `<archive>/<instance_id>/<run_file_name>`, then its data-marker sidecar and its seal record
  (if any). On one filesystem a move is one `rename`; across filesystems the file is
  copied to a temp name in the archive, fsynced, renamed into place, and only then is the
  source unlinked. Both directories are fsynced after each step. So a crash (SIGKILL, power
  loss) at any point leaves each run either in place or complete in the archive (for a moment,
  possibly both, identical); the next apply finishes the job: a source whose archived copy is
  already complete and identical is unlinked; leftover temp files are removed; a marker
  sidecar or seal record whose run file was archived follows it.
- Delete (`delete=True`, no archive): the run file is unlinked, the directory fsynced, then the
  marker sidecar. LMDB lock files (`-lock`) of a moved or deleted run are removed.
- `on_step(step, run_id)` is called after each durable step (tests kill the process there).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec

from nes.backend import layout
from nes.backend.seal_record import seal_record_path
from nes.config import RetentionMode
from nes.errors import EventStoreError
from nes.ops.progress import Progress
from nes.ops.runfile import RunFile
from nes.replay.blobs import SnapshotBlobStore
from nes.retention import RetentionPlan, plan_lmdb_retention
from nes.snapshot import SnapshotAnchor

__all__ = ["RetentionApplyError", "RunOutcome", "ApplyReport", "apply_retention", "STEPS"]

STEPS = ("verified", "blobs_copied", "copied", "moved", "source_unlinked", "markers_moved", "deleted", "markers_deleted")
_TMP_SUFFIX = ".nes-archive.tmp"


class RetentionApplyError(EventStoreError):
    """Apply cannot run at all (bad archive directory, archive inside the instance, ...)."""


class RunOutcome(msgspec.Struct, frozen=True):
    """What apply did with one run: `archived`, `deleted` or `kept` (with why)."""

    run_id: str
    action: str
    detail: str


class ApplyReport(msgspec.Struct, frozen=True):
    """The plan apply acted on and what happened to each candidate."""

    mode: str
    restore_point: str | None
    newest_run: str | None
    protected: list[str]
    outcomes: list[RunOutcome]
    skipped: list[str]

    def is_clean(self) -> bool:
        """True when no candidate was kept for failing verification."""
        return all(o.action != "kept" for o in self.outcomes)


def _digest(path: Path) -> tuple[int, bytes]:
    sha = hashlib.blake2b()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
    return path.stat().st_size, sha.digest()


def _move(src: Path, dst_dir: Path, step: Callable[[str], None]) -> None:
    """Move one file into `dst_dir` durably (rename, or copy + rename + unlink across
    filesystems); an identical complete copy already there only unlinks the source."""
    dst = dst_dir / src.name
    if dst.exists():
        if _digest(dst) != _digest(src):
            raise RetentionApplyError(f"{dst} already exists and differs from {src}; move one of them away")
        src.unlink()
        layout.fsync_dir(src.parent)
        step("source_unlinked")
        return
    try:
        os.rename(src, dst)
        layout.fsync_dir(dst_dir)
        layout.fsync_dir(src.parent)
        step("moved")
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    temp = dst_dir / (src.name + _TMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, layout.FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if _digest(temp) != _digest(src):
            raise RetentionApplyError(f"copy of {src} to {temp} does not match its source")
        step("copied")
        os.rename(temp, dst)
        layout.fsync_dir(dst_dir)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    step("moved")
    src.unlink()
    layout.fsync_dir(src.parent)
    step("source_unlinked")


def _copy_blobs(path: Path, anchors: list[SnapshotAnchor], archive_instance: Path) -> str | None:
    """Copy the blobs `anchors` name into the archive's blob store; a reason when one cannot
    be (the run is then kept in place)."""
    source = SnapshotBlobStore.beside_run_file(path)
    if not anchors or not source.exists():
        return None  # no blob store beside the run: nothing the archived run could miss
    target = SnapshotBlobStore(archive_instance)
    for anchor in anchors:
        blob = source.get(anchor.blob_ref)
        if blob is None:
            return f"snapshot blob {anchor.blob_ref} is missing"
        blob_ref, content_hash = target.put(blob)
        if (blob_ref, content_hash) != (anchor.blob_ref, anchor.content_hash):
            return f"snapshot blob {anchor.blob_ref} does not match its anchor"
    return None


def _drop_lock_file(run_path: Path) -> None:
    Path(f"{run_path}-lock").unlink(missing_ok=True)


def _finish_interrupted(instance_dir: Path, archive_dir: Path | None) -> None:
    """Undo what an earlier, interrupted apply left: temp copies, orphaned marker sidecars."""
    if archive_dir is None or not archive_dir.is_dir():
        return
    for temp in archive_dir.glob("*" + _TMP_SUFFIX):
        temp.unlink()
    for archived in archive_dir.glob("*" + layout.RUN_FILE_SUFFIX):
        if archived.name.endswith(layout.MARKER_FILE_SUFFIX):
            continue
        if (instance_dir / archived.name).exists():
            continue
        for follower in (layout.marker_sidecar_path(instance_dir / archived.name), seal_record_path(instance_dir / archived.name)):
            if follower.exists():
                _move(follower, archive_dir, lambda _: None)
    layout.fsync_dir(archive_dir)


def apply_retention(
    base_dir: str | os.PathLike[str],
    instance_id: str,
    mode: RetentionMode,
    *,
    archive_dir: str | os.PathLike[str] | None,
    delete: bool = False,
    verify: Callable[[Path], str | None],
    on_step: Callable[[str, str], None] | None = None,
    progress: Progress | None = None,
    plan: RetentionPlan | None = None,
) -> ApplyReport:
    """Apply the retention plan of one instance (see the module contract). `verify(path)`
    returns None for a clean run, else a one-line reason."""
    if (archive_dir is None) == (not delete):
        raise RetentionApplyError("give exactly one of an archive directory or delete=True")
    base_dir = Path(base_dir)
    instance_dir = layout.instance_dir(base_dir, instance_id)
    if not instance_dir.is_dir():
        raise RetentionApplyError(f"{instance_dir}: no such instance directory")
    archive_instance: Path | None = None
    if archive_dir is not None:
        archive_root = Path(archive_dir)
        if archive_root.exists() and not archive_root.is_dir():
            raise RetentionApplyError(f"{archive_root}: archive is not a directory")
        archive_instance = archive_root / instance_id
        resolved = archive_instance.resolve()
        if resolved == instance_dir.resolve() or instance_dir.resolve() in resolved.parents:
            raise RetentionApplyError(f"{archive_root}: the archive must not lie inside the instance directory")
        layout.make_private_dirs(archive_instance, durable=True)
        _finish_interrupted(instance_dir, archive_instance)
    if plan is None:
        plan = plan_lmdb_retention(base_dir, instance_id, mode)
    files = layout.list_run_files(base_dir, instance_id)
    newest = files[-1].name[: -len(layout.RUN_FILE_SUFFIX)] if files else None
    protected = {run_id for run_id in (plan.restore_point, newest) if run_id is not None}
    outcomes: list[RunOutcome] = []
    for run_id in plan.candidates:
        path = layout.run_file_path(base_dir, instance_id, run_id)
        outcome = _apply_one(path, run_id, protected, archive_instance, verify, on_step)
        outcomes.append(outcome)
        if progress is not None:
            progress.update(1)
    return ApplyReport(mode.label(), plan.restore_point, newest, sorted(protected), outcomes, list(plan.skipped))


def _apply_one(
    path: Path, run_id: str, protected: set[str], archive_instance: Path | None,
    verify: Callable[[Path], str | None], on_step: Callable[[str, str], None] | None,
) -> RunOutcome:
    def step(name: str) -> None:
        if on_step is not None:
            on_step(name, run_id)

    if run_id in protected:
        return RunOutcome(run_id, "kept", "protected (restore point or newest run)")
    if not path.exists():
        return RunOutcome(run_id, "kept", "run file no longer in place")
    try:
        with RunFile(path) as run_file:
            status = run_file.manifest().status
    except EventStoreError as exc:
        return RunOutcome(run_id, "kept", f"unreadable: {exc}")
    if not status.is_terminal():
        return RunOutcome(run_id, "kept", "Running")
    problem = verify(path)
    if problem is not None:
        return RunOutcome(run_id, "kept", f"does not verify clean: {problem}")
    step("verified")
    markers = layout.marker_sidecar_path(path)
    if archive_instance is None:
        path.unlink()
        layout.fsync_dir(path.parent)
        step("deleted")
        _drop_lock_file(path)
        if markers.exists():
            markers.unlink()
            layout.fsync_dir(path.parent)
            step("markers_deleted")
            _drop_lock_file(markers)
        seal_record_path(path).unlink(missing_ok=True)  # the run's seal record goes with it
        return RunOutcome(run_id, "deleted", str(path))
    try:
        with RunFile(path) as run_file:  # read once it verified clean
            anchors = run_file.anchors()
        problem = _copy_blobs(path, anchors, archive_instance)
    except (EventStoreError, OSError) as exc:
        problem = f"cannot copy its snapshot blobs: {exc}"
    if problem is not None:
        return RunOutcome(run_id, "kept", problem)
    step("blobs_copied")
    _move(path, archive_instance, step)
    _drop_lock_file(path)
    if markers.exists():
        _move(markers, archive_instance, lambda _: None)
        _drop_lock_file(markers)
        step("markers_moved")
    if seal_record_path(path).exists():  # the seal record travels with its run file
        _move(seal_record_path(path), archive_instance, lambda _: None)
    return RunOutcome(run_id, "archived", str(archive_instance / path.name))
