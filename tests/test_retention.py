"""nes.retention: the crate's tests/retention.rs behaviours.

The pure planner is tested on values; `plan_lmdb_retention` on real LMDB run files made here
with py-lmdb, following nes.backend.layout.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import lmdb
import msgspec
import pytest

from nes.backend import layout
from nes.codec import seq_key
from nes.config import Bounded, Full, SnapshotAnchored
from nes.manifest import RunManifest, RunStatus, encode_manifest
from nes.errors import UnsupportedFormat
from nes.retention import (
    AnchorState,
    RetentionPlan,
    RetentionRun,
    SnapshotAnchorStatus,
    anchor_is_restore_point,
    plan_lmdb_retention,
    plan_retention,
    snapshot_anchor_status,
)
from runfile_helpers import flip_byte_in_payload
from runfile_helpers import make_run_file as make_valid_run_file
from nes.snapshot import SnapshotAnchor, encode_anchor

INSTANCE_ID = "trader-001"
Ended, Crashed, Quarantined, Running = (
    RunStatus.Ended,
    RunStatus.CrashedRecovered,
    RunStatus.Quarantined,
    RunStatus.Running,
)


def run(ts: int, status: RunStatus = Ended, hwm: int = 10, anchor: int | None = 5) -> RetentionRun:
    found = None if anchor is None else SnapshotAnchor(anchor, f"snap-{anchor}", "blake3:" + "00" * 32)
    return RetentionRun(f"{ts}-0000000{ts % 10}", ts, status, hwm, snapshot_anchor_status(hwm, found))


def claimed(run_id: str, ts: int, hwm: int, anchor: int | None, valid: bool) -> RetentionRun:
    """A run whose anchor status a caller asserts (possibly contradicting the watermarks)."""
    if anchor is None:
        return RetentionRun(run_id, ts, Ended, hwm, SnapshotAnchorStatus.missing())
    if not valid:
        return RetentionRun(run_id, ts, Ended, hwm, SnapshotAnchorStatus.invalid("undecodable"))
    return RetentionRun(run_id, ts, Ended, hwm, SnapshotAnchorStatus.valid(SnapshotAnchor(anchor, "b", "blake3:x")))


def rid(ts: int) -> str:
    return f"{ts}-0000000{ts % 10}"


# ---- pure planner ----------------------------------------------------------------------------------
def test_full_mode_returns_no_reclaim_candidates() -> None:
    plan = plan_retention(Full(), [run(1), run(2), run(3)])
    assert plan.mode == "full"
    assert plan.candidates == []
    assert plan.runs_considered == [rid(1), rid(2), rid(3)]
    assert plan.restore_point == rid(3)


def test_plan_retention_sorts_runs_before_selecting_candidates() -> None:
    shuffled = [run(4), run(1), run(3, anchor=None), run(2)]
    plan = plan_retention(Bounded(2), shuffled)
    assert plan.runs_considered == [rid(1), rid(2), rid(3), rid(4)]
    assert plan.candidates == [rid(1), rid(2)]
    assert plan.restore_point == rid(4)
    plan = plan_retention(SnapshotAnchored(), list(reversed(shuffled)))
    assert plan.candidates == [rid(1), rid(2), rid(3)]


def test_plan_retention_breaks_start_time_ties_by_run_id() -> None:
    a = claimed("5-bbbbbbbb", 5, 10, 5, True)
    b = claimed("5-aaaaaaaa", 5, 10, None, False)
    plan = plan_retention(SnapshotAnchored(), [a, b])
    assert plan.runs_considered == ["5-aaaaaaaa", "5-bbbbbbbb"]
    assert plan.candidates == ["5-aaaaaaaa"]


def test_plan_retention_filters_running_runs_before_selecting_candidates() -> None:
    runs = [run(1), run(2), run(3), run(4, Running), run(5, Running)]
    plan = plan_retention(Bounded(1), runs)
    assert rid(4) not in plan.runs_considered and rid(5) not in plan.runs_considered
    # keep_last counts sealed runs only: the Running ones do not push sealed ones out.
    assert plan.restore_point == rid(3)
    assert plan.candidates == [rid(1), rid(2)]
    plan = plan_retention(SnapshotAnchored(), runs)
    assert plan.candidates == [rid(1), rid(2)]
    assert plan_retention(Bounded(1), [run(1, Running), run(2, Running)]).candidates == []


def test_bounded_mode_keeps_known_good_restore_point_when_latest_is_quarantined() -> None:
    runs = [run(1), run(2), run(3), run(4, Quarantined)]
    plan = plan_retention(Bounded(1), runs)
    assert plan.restore_point == rid(3)
    assert plan.candidates == [rid(1), rid(2)]
    assert rid(3) not in plan.candidates and rid(4) not in plan.candidates


def test_bounded_mode_keeps_last_n_even_when_older_than_restore_point() -> None:
    plan = plan_retention(Bounded(3), [run(1), run(2), run(3), run(4), run(5)])
    assert plan.restore_point == rid(5)
    assert plan.candidates == [rid(1), rid(2)]
    assert plan_retention(Bounded(10), [run(1), run(2)]).candidates == []


def test_bounded_mode_returns_no_candidates_without_known_good_restore_point() -> None:
    runs = [run(1, anchor=None), run(2, Crashed, anchor=None), run(3, Quarantined), run(4, anchor=None)]
    plan = plan_retention(Bounded(1), runs)
    assert plan.restore_point is None
    assert plan.candidates == []
    assert "restore point" in plan.reason


def test_snapshot_anchored_mode_reclaims_only_before_latest_valid_restore_point() -> None:
    runs = [run(1), run(2, Crashed), run(3), run(4, anchor=None), run(5, Quarantined)]
    plan = plan_retention(SnapshotAnchored(), runs)
    assert plan.mode == "snapshot-anchored"
    assert plan.restore_point == rid(3)
    assert plan.candidates == [rid(1), rid(2)]


def test_snapshot_anchored_mode_handles_unusable_snapshot_anchors_conservatively() -> None:
    runs = [
        run(1),
        run(2),
        run(3, hwm=4, anchor=9),  # anchor past the durable tail
        run(4, anchor=None),
        claimed(rid(5), 5, 10, 5, False),  # anchor present but undecodable/unusable
        claimed(rid(6), 6, 3, 7, True),  # claims valid, contradicts the watermarks
    ]
    plan = plan_retention(SnapshotAnchored(), runs)
    assert plan.restore_point == rid(2)
    assert plan.candidates == [rid(1)]
    only_unusable = [run(1, anchor=None), runs[2], runs[3], runs[4], runs[5]]
    assert plan_retention(SnapshotAnchored(), only_unusable).candidates == []
    assert plan_retention(SnapshotAnchored(), []).candidates == []


def test_snapshot_anchor_status_rejects_anchor_past_durable_watermark() -> None:
    assert anchor_is_restore_point(SnapshotAnchor(5, "blob", "blake3:x"), 5)
    assert not anchor_is_restore_point(SnapshotAnchor(6, "blob", "blake3:x"), 5)
    assert not anchor_is_restore_point(None, 5)
    status = snapshot_anchor_status(1, SnapshotAnchor(2, "cache://snapshots/2", "blake3:abc"))
    assert status.state is AnchorState.Invalid
    assert status.reason == "snapshot anchor high_watermark 2 exceeds durable high_watermark 1"


def test_snapshot_anchor_status_is_missing_valid_or_invalid_and_zero_is_valid() -> None:
    assert snapshot_anchor_status(5, None) == SnapshotAnchorStatus(AnchorState.Missing)
    at_zero = SnapshotAnchor(0, "blob", "blake3:x")
    assert snapshot_anchor_status(0, at_zero) == SnapshotAnchorStatus(AnchorState.Valid, at_zero)
    assert anchor_is_restore_point(at_zero, 5)
    plan = plan_retention(SnapshotAnchored(), [run(1), run(2, anchor=0)])
    assert plan.restore_point == rid(2) and plan.candidates == [rid(1)]


def test_bounded_keeps_the_last_n_plus_the_restore_point_and_nothing_else() -> None:
    runs = [run(1), run(2, anchor=None), run(3, anchor=None), run(4, anchor=None)]
    plan = plan_retention(Bounded(1), runs)
    assert plan.restore_point == rid(1)
    assert plan.candidates == [rid(2), rid(3)]  # between the restore point and the last one
    assert plan_retention(Bounded(0), runs).candidates == [rid(2), rid(3), rid(4)]


def test_a_run_known_to_fail_verification_is_never_the_restore_point() -> None:
    corrupt = msgspec.structs.replace(run(2), verified_clean=False)
    plan = plan_retention(SnapshotAnchored(), [run(1), corrupt])
    assert plan.restore_point == rid(1) and plan.candidates == []


def test_plan_is_pure_and_never_mutates_input() -> None:
    runs = [run(3), run(1), run(2)]
    before = list(runs)
    assert plan_retention(Bounded(1), runs) == plan_retention(Bounded(1), runs)
    assert runs == before


# ---- LMDB run files ------------------------------------------------------------------------------
def make_run_file(
    base: Path,
    ts: int,
    status: RunStatus,
    entries: int,
    anchor: SnapshotAnchor | bytes | None = None,
    run_id: str | None = None,
) -> Path:
    """A valid run file (tests/runfile_helpers) of `entries` entries started at `ts`."""
    run_id = run_id or rid(ts)
    path = layout.run_file_path(base, INSTANCE_ID, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_valid_run_file(
        path,
        entries=entries,
        status=status,
        anchor=anchor if isinstance(anchor, SnapshotAnchor) else None,
        raw_anchors={seq_key(max(entries, 1)): anchor} if isinstance(anchor, bytes) else None,
        run_id=run_id,
        manifest_overrides={"start_ts_init": ts, "instance_id": INSTANCE_ID},
        map_size=1 << 22,
    )


def anchor_at(hwm: int) -> SnapshotAnchor:
    return SnapshotAnchor(hwm, f"snap-{hwm}", "blake3:" + "00" * 32)


def file_state(base: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((base / INSTANCE_ID).iterdir())}


def test_lmdb_planner_lists_sealed_runs_and_never_selects_running_runs(tmp_path: Path) -> None:
    make_run_file(tmp_path, 1, Ended, 4, anchor_at(3))
    make_run_file(tmp_path, 2, Crashed, 6, anchor_at(6))
    make_run_file(tmp_path, 3, Ended, 5, anchor_at(5))
    make_run_file(tmp_path, 4, Running, 7, anchor_at(7))
    before = file_state(tmp_path)

    plan = plan_lmdb_retention(tmp_path, INSTANCE_ID, SnapshotAnchored())
    assert plan.runs_considered == [rid(1), rid(2), rid(3)]
    assert plan.restore_point == rid(3)
    assert plan.candidates == [rid(1), rid(2)]
    assert plan.skipped == []
    assert plan_lmdb_retention(tmp_path, INSTANCE_ID, Bounded(1)).candidates == [rid(1), rid(2)]
    assert plan_lmdb_retention(tmp_path, INSTANCE_ID, Full()).candidates == []
    assert file_state(tmp_path) == before  # planning never writes, moves or deletes


def test_lmdb_planner_treats_corrupt_snapshot_anchor_as_invalid(tmp_path: Path) -> None:
    make_run_file(tmp_path, 1, Ended, 4, anchor_at(4))
    make_run_file(tmp_path, 2, Ended, 4, b"\xc1 not msgpack")
    make_run_file(tmp_path, 3, Ended, 4, anchor_at(9))  # past the durable tail
    plan = plan_lmdb_retention(tmp_path, INSTANCE_ID, SnapshotAnchored())
    assert plan.runs_considered == [rid(1), rid(2), rid(3)]
    assert plan.restore_point == rid(1)
    assert plan.candidates == []
    assert plan.skipped == []


def test_lmdb_planner_skips_unreadable_files_and_never_reclaims_them(tmp_path: Path) -> None:
    make_run_file(tmp_path, 2, Ended, 3, anchor_at(3))
    make_run_file(tmp_path, 3, Ended, 3, anchor_at(3))
    run_dir = tmp_path / INSTANCE_ID
    (run_dir / f"{rid(1)}.lmdb").write_bytes(b"not an lmdb file" * 512)
    make_run_file(tmp_path, 4, Ended, 3, anchor_at(3), run_id="4-00000004").rename(run_dir / "9-99999999.lmdb")
    plan = plan_lmdb_retention(tmp_path, INSTANCE_ID, SnapshotAnchored())
    assert plan.runs_considered == [rid(2), rid(3)]
    assert plan.candidates == [rid(2)]
    assert [line.split(":")[0] for line in plan.skipped] == [f"{rid(1)}.lmdb", "9-99999999.lmdb"]
    assert (run_dir / f"{rid(1)}.lmdb").exists()


def test_lmdb_planner_skips_file_without_manifest(tmp_path: Path) -> None:
    path = layout.run_file_path(tmp_path, INSTANCE_ID, rid(1))
    path.parent.mkdir(parents=True)
    env = lmdb.open(str(path), subdir=False, max_dbs=layout.MAX_DBS, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(seq_key(1), b"x", db=env.open_db(layout.DB_ENTRIES, txn=txn))
        txn.put(layout.FORMAT_KEY, layout.encode_format_version(), db=env.open_db(layout.DB_META, txn=txn))
    env.close()
    plan = plan_lmdb_retention(tmp_path, INSTANCE_ID, Full())
    assert plan.runs_considered == []
    assert len(plan.skipped) == 1 and plan.skipped[0].startswith(f"{rid(1)}.lmdb: ")


@pytest.mark.parametrize("marker", [None, layout.encode_format_version(1), layout.encode_format_version(9)])
def test_lmdb_planner_stops_on_a_file_without_this_format_marker(tmp_path: Path, marker: bytes | None) -> None:
    make_run_file(tmp_path, 1, Ended, 3, anchor_at(3))
    path = make_run_file(tmp_path, 2, Ended, 3, anchor_at(3))
    env = lmdb.open(str(path), subdir=False, max_dbs=layout.MAX_DBS, map_size=1 << 22)
    with env.begin(write=True) as txn:
        meta = env.open_db(layout.DB_META, txn=txn)
        if marker is None:
            txn.delete(layout.FORMAT_KEY, db=meta)
        else:
            txn.put(layout.FORMAT_KEY, marker, db=meta)
    env.close()
    with pytest.raises(UnsupportedFormat, match=rid(2)):
        plan_lmdb_retention(tmp_path, INSTANCE_ID, SnapshotAnchored())


def test_lmdb_planner_never_picks_a_run_that_fails_verification_as_restore_point(tmp_path: Path) -> None:
    make_run_file(tmp_path, 1, Ended, 4, anchor_at(3))
    newest = make_run_file(tmp_path, 2, Ended, 5, anchor_at(5))
    flip_byte_in_payload(newest, 2)
    plan = plan_lmdb_retention(tmp_path, INSTANCE_ID, SnapshotAnchored())
    assert plan.restore_point == rid(1)
    assert plan.candidates == []
    assert any(line.startswith(f"{rid(2)}.lmdb: not a restore point: corrupt") for line in plan.skipped)
    assert plan_lmdb_retention(tmp_path, INSTANCE_ID, Bounded(0)).candidates == [rid(2)]


def test_lmdb_planner_ignores_marker_sidecars_and_empty_instances(tmp_path: Path) -> None:
    assert plan_lmdb_retention(tmp_path, INSTANCE_ID, Full()) == RetentionPlan(
        "full", [], None, [], "full retention keeps every run", []
    )
    make_run_file(tmp_path, 1, Ended, 2, anchor_at(2))
    (tmp_path / INSTANCE_ID / f"{rid(1)}.markers.lmdb").write_bytes(b"\0" * 4096)
    plan = plan_lmdb_retention(tmp_path, INSTANCE_ID, Full())
    assert plan.runs_considered == [rid(1)]
    assert not any(line.startswith(f"{rid(1)}.markers.lmdb") for line in plan.skipped)


def test_lmdb_planner_reads_empty_run_as_not_a_restore_point(tmp_path: Path) -> None:
    make_run_file(tmp_path, 1, Ended, 3, anchor_at(3))
    make_run_file(tmp_path, 2, Crashed, 0)
    plan = plan_lmdb_retention(tmp_path, INSTANCE_ID, SnapshotAnchored())
    assert plan.restore_point == rid(1)
    assert plan.candidates == []


@pytest.mark.parametrize("bad_instance", ["../up", ".hidden"])
def test_lmdb_planner_refuses_bad_instance_id(tmp_path: Path, bad_instance: str) -> None:
    with pytest.raises(ValueError):
        plan_lmdb_retention(tmp_path, bad_instance, Full())


def test_lmdb_planner_survives_a_file_that_crashes_its_reader(tmp_path: Path) -> None:
    """A truncated run file makes LMDB fault (SIGBUS) in whatever process maps it: the planner
    reads every file in a worker, so only that worker dies and the file is skipped."""
    make_run_file(tmp_path, 1, Ended, 4, anchor_at(3))
    damaged = make_run_file(tmp_path, 2, Ended, 2000, anchor_at(2000))
    make_run_file(tmp_path, 3, Ended, 5, anchor_at(5))
    with open(damaged, "r+b") as handle:
        handle.truncate(damaged.stat().st_size // 2)
    plan = plan_lmdb_retention(tmp_path, INSTANCE_ID, SnapshotAnchored())
    assert [line.split(":")[0] for line in plan.skipped] == [f"{rid(2)}.lmdb"]
    assert plan.runs_considered == [rid(1), rid(3)]
    assert plan.restore_point == rid(3) and plan.candidates == [rid(1)]


def test_retention_plan_command_prints_the_plan_and_refuses_bad_input(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    make_run_file(tmp_path, 1, Ended, 4, anchor_at(3))
    make_run_file(tmp_path, 2, Ended, 5, anchor_at(5))

    def nes(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nes.cli", *args], capture_output=True, text=True, timeout=60)

    done = nes("retention", "plan", "--base-dir", str(tmp_path), "--instance", INSTANCE_ID, "--mode", "snapshot-anchored")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["restore_point"] == rid(2) and plan["candidates"] == [rid(1)]
    bad_id = nes("retention", "plan", "--base-dir", str(tmp_path), "--instance", "../x", "--mode", "full")
    assert bad_id.returncode == 2 and "invalid instance_id" in bad_id.stderr and bad_id.stdout == ""
    bad_mode = nes("retention", "plan", "--base-dir", str(tmp_path), "--instance", INSTANCE_ID, "--mode", "sometimes")
    assert bad_mode.returncode == 2 and bad_mode.stdout == ""
