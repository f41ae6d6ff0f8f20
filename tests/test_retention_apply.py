"""`nes retention apply` on real run files: what it moves or deletes, what it never touches,
verification of each candidate, and a real SIGKILL after every durable step (same filesystem
and across filesystems) leaving each run in place or complete in the archive."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nes.backend import layout
from nes.backend.seal_record import seal_record_path
from nes.config import SnapshotAnchored
from nes.manifest import RunStatus
from nes.markers.model import MarkerManifest
from nes.markers.store import MarkerStore
from nes.ops.retention_apply import RetentionApplyError, apply_retention
from tests.operator_helpers import ROOT, assert_one_line_error, cli, retention_run
from tests.runfile_helpers import INSTANCE_ID, flip_byte_in_payload

SHM = Path("/dev/shm")


def _setup(base: Path) -> dict[str, bytes]:
    """Runs 1-4 sealed (candidates), 5 the restore point, 6 Running (newest); run 2 has a
    marker sidecar. Returns the original bytes of every file."""
    for n in range(1, 6):
        retention_run(base, n, RunStatus.Ended if n != 3 else RunStatus.CrashedRecovered)
    retention_run(base, 6, RunStatus.Running, anchor=None)
    run2 = layout.list_run_files(base, INSTANCE_ID)[1]
    with MarkerStore(layout.marker_sidecar_path(run2)) as markers:
        markers.open_run(MarkerManifest(run2.name[: -len(layout.RUN_FILE_SUFFIX)]))
        markers.seal(RunStatus.Ended)
    return {p.name: p.read_bytes() for p in (base / INSTANCE_ID).iterdir() if not p.name.endswith("-lock")}


def _names(base: Path) -> list[str]:
    return sorted(p.name for p in layout.list_run_files(base, INSTANCE_ID))


def test_apply_archives_candidates_and_never_touches_running_restore_point_or_newest(tmp_path: Path) -> None:
    base, archive = tmp_path / "base", tmp_path / "archive"
    original = _setup(base)
    names = _names(base)
    done = cli("retention", "apply", "--base-dir", str(base), "--instance", INSTANCE_ID, "--mode",
               "snapshot-anchored", "--archive", str(archive))
    assert done.returncode == 0, done.stderr
    assert _names(base) == names[4:]  # restore point (5) and the Running newest (6) stay
    archived = archive / INSTANCE_ID
    assert sorted(p.name for p in archived.iterdir()) == sorted([*names[:4], layout.marker_sidecar_path(Path(names[1])).name])
    for path in archived.iterdir():
        assert path.read_bytes() == original[path.name]
    assert stat.S_IMODE(archived.stat().st_mode) == 0o700
    assert cli("verify", str(archived / names[0])).returncode == 0
    assert done.stdout.count("archived ") == 4
    again = cli("retention", "apply", "--base-dir", str(base), "--instance", INSTANCE_ID, "--mode",
                "snapshot-anchored", "--archive", str(archive))
    assert again.returncode == 0 and "archived" not in again.stdout


def test_apply_delete_removes_only_candidates(tmp_path: Path) -> None:
    _setup(tmp_path)
    names = _names(tmp_path)
    report = apply_retention(tmp_path, INSTANCE_ID, SnapshotAnchored(), archive_dir=None, delete=True,
                             verify=lambda p: None)
    assert [o.action for o in report.outcomes] == ["deleted"] * 4
    assert _names(tmp_path) == names[4:]
    assert not any(p.name.endswith(layout.MARKER_FILE_SUFFIX) for p in (tmp_path / INSTANCE_ID).iterdir())


def test_apply_keeps_a_candidate_that_does_not_verify_and_exits_1(tmp_path: Path) -> None:
    base, archive = tmp_path / "base", tmp_path / "archive"
    _setup(base)
    names = _names(base)
    flip_byte_in_payload(base / INSTANCE_ID / names[1], 2)
    done = cli("retention", "apply", "--base-dir", str(base), "--instance", INSTANCE_ID, "--mode",
               "snapshot-anchored", "--archive", str(archive), "--json")
    assert done.returncode == 1, done.stderr
    assert _names(base) == [names[1], *names[4:]]
    assert "does not verify clean" in done.stdout


def test_apply_bad_inputs_exit_2(tmp_path: Path) -> None:
    _setup(tmp_path)
    args = ("retention", "apply", "--base-dir", str(tmp_path), "--instance", INSTANCE_ID)
    assert_one_line_error(cli(*args, "--mode", "snapshot-anchored"), 2, "exactly one of")
    assert_one_line_error(cli(*args, "--mode", "sometimes", "--delete"), 2, "")
    assert_one_line_error(cli("retention", "apply", "--base-dir", str(tmp_path), "--instance", "ghost", "--mode",
                              "full", "--delete"), 2, "no such instance directory")
    inside = tmp_path / INSTANCE_ID / "archive"
    with pytest.raises(RetentionApplyError):
        apply_retention(tmp_path, INSTANCE_ID, SnapshotAnchored(), archive_dir=inside, verify=lambda p: None)


def _kill_at(base: Path, archive: str, step: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "tests.retention_apply_child", str(base), archive,
                           "snapshot-anchored", step], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


def _assert_each_run_in_place_or_complete(base: Path, archive: Path | None, original: dict[str, bytes]) -> None:
    for name, data in original.items():
        here = base / INSTANCE_ID / name
        there = None if archive is None else archive / INSTANCE_ID / name
        in_place = here.exists() and here.read_bytes() == data
        archived = there is not None and there.exists() and there.read_bytes() == data
        deleted = archive is None and not here.exists()
        assert in_place or archived or deleted, name
        if there is not None:
            leftovers = [p for p in there.parent.iterdir() if p.name.endswith(".tmp")] if there.parent.exists() else []
            assert all(p.name.startswith(name) is False or p.name.endswith(".tmp") for p in leftovers)


# A rename (same filesystem) has no copy and no separate unlink step.
_KILL_POINTS = [("same-fs", s) for s in ("verified", "blobs_copied", "moved", "markers_moved")] + [
    ("cross-fs", s) for s in ("verified", "copied", "moved", "source_unlinked", "markers_moved")
]


@pytest.mark.parametrize(("where", "step"), _KILL_POINTS)
def test_apply_killed_after_any_step_leaves_runs_in_place_or_archived_and_the_rerun_finishes(
    tmp_path: Path, step: str, where: str
) -> None:
    base = tmp_path / "base"
    original = _setup(base)
    if where == "cross-fs":
        assert os.stat(SHM).st_dev != os.stat(tmp_path).st_dev
        archive = Path(SHM) / f"nes-test-archive-{os.getpid()}-{tmp_path.name}"
    else:
        archive = tmp_path / "archive"
    try:
        killed = _kill_at(base, str(archive), step)
        assert killed.returncode == -9, killed.stderr
        assert f"step {step}" in killed.stdout
        _assert_each_run_in_place_or_complete(base, archive, original)
        finished = _kill_at(base, str(archive), "never")
        assert finished.returncode == 0 and "done" in finished.stdout, finished.stderr
        names = sorted(original)
        run_names = [n for n in names if not n.endswith(layout.MARKER_FILE_SUFFIX)]
        assert _names(base) == run_names[4:]
        archived = archive / INSTANCE_ID
        kept = {*run_names[4:]}
        assert sorted(p.name for p in archived.iterdir()) == sorted(n for n in names if n not in kept)
        for path in archived.iterdir():
            assert path.read_bytes() == original[path.name]
    finally:
        if where == "cross-fs":
            import shutil

            shutil.rmtree(archive, ignore_errors=True)


@pytest.mark.parametrize("step", ["deleted", "markers_deleted"])
def test_apply_delete_killed_after_any_step_leaves_runs_in_place_or_gone(tmp_path: Path, step: str) -> None:
    original = _setup(tmp_path)
    killed = _kill_at(tmp_path, "-", step)
    assert killed.returncode == -9
    _assert_each_run_in_place_or_complete(tmp_path, None, original)
    finished = _kill_at(tmp_path, "-", "never")
    assert finished.returncode == 0, finished.stderr
    assert len(_names(tmp_path)) == 2


def _sessions_with_snapshots(base: Path, runs: int) -> list[tuple[str, str]]:
    """`runs` real sealed runs of one instance, each with a snapshot anchor whose blob is in
    the instance's blob store; returns (run_id, blob_ref) per run, oldest first."""
    from nes import EventStoreConfig, EventStoreLifecycle, EventStoreLifecycleOptions, RunIdentity

    out = []
    for n in range(runs):
        config = EventStoreConfig(base_dir=str(base), identity=RunIdentity(instance_id=INSTANCE_ID))
        session = EventStoreLifecycle(config, options=EventStoreLifecycleOptions(in_process=True)).open()
        anchor = session.snapshot_anchorer()(b"cache snapshot %d" % n)
        session.close()
        out.append((session.run_id, anchor.blob_ref))
    return out


def test_archived_runs_take_their_snapshot_blobs_and_seal_records_and_verify_on_their_own(tmp_path: Path) -> None:
    base, archive = tmp_path / "base", tmp_path / "archive"
    runs = _sessions_with_snapshots(base, 3)
    report = apply_retention(base, INSTANCE_ID, SnapshotAnchored(), archive_dir=archive, verify=lambda p: None)
    assert [(o.run_id, o.action) for o in report.outcomes] == [(run_id, "archived") for run_id, _ in runs[:2]]
    archived = archive / INSTANCE_ID
    for run_id, blob_ref in runs[:2]:
        run_file = archived / f"{run_id}{layout.RUN_FILE_SUFFIX}"
        assert (archived / blob_ref).read_bytes() == (base / INSTANCE_ID / blob_ref).read_bytes()  # copied, not moved
        assert stat.S_IMODE((archived / blob_ref).stat().st_mode) == 0o600
        assert seal_record_path(run_file).exists() and not seal_record_path(base / INSTANCE_ID / run_file.name).exists()
        done = cli("verify", str(run_file))
        assert done.returncode == 0 and done.stdout.startswith("clean "), done.stdout
    assert not (archived / runs[2][1]).exists()  # the restore point's blob is not the archive's


def test_an_apply_interrupted_after_the_move_is_finished_by_the_next_one(tmp_path: Path) -> None:
    """Interrupted right after the first run file moved: its seal record is still in the
    instance directory; the next apply moves it after the run."""
    base, archive = tmp_path / "base", tmp_path / "archive"
    runs = _sessions_with_snapshots(base, 2)

    class Interrupted(Exception):
        pass

    def stop_after_move(step: str, run_id: str) -> None:
        if step == "moved":
            raise Interrupted(run_id)

    with pytest.raises(Interrupted):
        apply_retention(base, INSTANCE_ID, SnapshotAnchored(), archive_dir=archive, verify=lambda p: None,
                        on_step=stop_after_move)
    moved = archive / INSTANCE_ID / f"{runs[0][0]}{layout.RUN_FILE_SUFFIX}"
    assert moved.exists() and seal_record_path(base / INSTANCE_ID / moved.name).exists()
    apply_retention(base, INSTANCE_ID, SnapshotAnchored(), archive_dir=archive, verify=lambda p: None)
    assert seal_record_path(moved).exists() and not seal_record_path(base / INSTANCE_ID / moved.name).exists()
