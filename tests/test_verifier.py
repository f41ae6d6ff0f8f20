"""The verifier over real LMDB run files (built by hand in tmp_path), in-process and via the CLI.

Damage is manufactured directly: raw byte flips in the file (LMDB has no checksums, so only the
entry hash catches them), values moved under other keys, deleted keys, bad anchors, truncation.
CLI tests run `python -m nes.cli verify` as a real subprocess and pin stdout and exit codes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from nes.backend import layout
from nes.backend.base import IndexKind
from nes.codec import seq_key
from nes.manifest import RunStatus
from nes.snapshot import SnapshotAnchor
from nes.verifier import (
    AnchorPastWatermark,
    CorruptedIndex,
    CorruptSnapshotAnchor,
    DanglingIndex,
    Gap,
    HashMismatch,
    KeySeqMismatch,
    ManifestMismatch,
    OpenError,
    Verifier,
    VerifyOpenError,
    VerifyReport,
    WorkerFailure,
    verify_in_worker,
)
from runfile_helpers import RUN_ID, flip_byte_in_payload, make_run_file, rewrite_entries

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def clean_line(hwm: int, scanned: int | None = None, status: str = "Ended") -> str:
    scanned = hwm if scanned is None else scanned
    return f"clean run_id={RUN_ID} status={status} high_watermark={hwm} entries_scanned={scanned} markers=absent"


def corrupt_line(hwm: int, scanned: int, findings: int) -> str:
    return (
        f"corrupt run_id={RUN_ID} status=Ended high_watermark={hwm} entries_scanned={scanned} "
        f"findings={findings} marker_findings=0 markers=absent quarantine=not-performed"
    )


def anchor_at(hwm: int) -> SnapshotAnchor:
    return SnapshotAnchor(hwm, f"snapshots/{RUN_ID}-{hwm}.msgpack", "blake3:" + "ab" * 32)


# ---- in-process verdicts -----------------------------------------------------------------------
def test_clean_run_reports_no_findings(tmp_path: Path) -> None:
    path = make_run_file(
        tmp_path / "run.lmdb",
        entries=50,
        anchor=anchor_at(20),
        index={IndexKind.ClientOrderId: {b"O-000001": [1, 7]}, IndexKind.VenueOrderId: {b"V-1": [7]}},
    )
    report = Verifier(path).verify()
    assert report.is_clean(), report.lines()
    assert report.findings == []
    assert (report.run_id, report.status, report.high_watermark, report.entries_scanned) == (RUN_ID, "Ended", 50, 50)
    assert report.summary_line() == clean_line(50)
    assert report.lines() == [clean_line(50)]


def test_empty_run_reports_no_findings(tmp_path: Path) -> None:
    report = Verifier(make_run_file(tmp_path / "run.lmdb", entries=0)).verify()
    assert report.is_clean(), report.lines()
    assert report.summary_line() == clean_line(0)


def test_running_run_without_seal_fields_is_clean(tmp_path: Path) -> None:
    report = Verifier(make_run_file(tmp_path / "run.lmdb", entries=5, status=RunStatus.Running)).verify()
    assert report.is_clean(), report.lines()
    assert report.summary_line() == clean_line(5, status="Running")


def test_flipped_entry_byte_reports_hash_mismatch(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=10)
    flip_byte_in_payload(path, 2)
    report = Verifier(path).verify()
    assert report.findings == [HashMismatch(2)]
    assert report.lines() == [corrupt_line(10, 10, 1), "- hash mismatch at seq 2"]


def test_manufactured_seq_swap_surfaces_as_finding(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=6)

    def swap(txn, db) -> None:  # noqa: ANN001
        two, four = txn.get(seq_key(2), db=db), txn.get(seq_key(4), db=db)
        txn.put(seq_key(2), four, db=db)
        txn.put(seq_key(4), two, db=db)

    rewrite_entries(path, swap)
    report = Verifier(path).verify()
    assert report.findings == [KeySeqMismatch(2, 4), KeySeqMismatch(4, 2)]
    assert report.lines()[1:] == [
        "- seq mismatch at table key 2: embedded seq was 4",
        "- seq mismatch at table key 4: embedded seq was 2",
    ]


def test_value_moved_under_a_missing_key_surfaces_as_finding(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=5, skip_seqs=[3])

    def move(txn, db) -> None:  # noqa: ANN001
        txn.put(seq_key(3), txn.get(seq_key(5), db=db), db=db)
        txn.delete(seq_key(5), db=db)

    rewrite_entries(path, move)
    report = Verifier(path).verify()
    assert KeySeqMismatch(3, 5) in report.findings
    assert not report.is_clean()


def test_manufactured_gap_surfaces_as_finding(tmp_path: Path) -> None:
    # Sealed by a writer that saw all 10: the manifest agrees, only the gap is wrong.
    path = make_run_file(tmp_path / "run.lmdb", entries=10, skip_seqs=[4, 5, 6])
    report = Verifier(path).verify()
    assert report.findings == [Gap(4, 6)]
    assert report.lines() == [corrupt_line(10, 7, 1), "- gap from seq 4 to 6"]


def test_manufactured_multi_gap_surfaces_two_findings(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=12, skip_seqs=[1, 2, 8])
    report = Verifier(path).verify()
    assert report.findings == [Gap(1, 2), Gap(8, 8)]
    assert report.lines()[1:] == ["- gap from seq 1 to 2", "- gap from seq 8 to 8"]


def test_corrupt_snapshot_anchor_is_a_finding_not_clean(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=10, raw_anchors={seq_key(5): b"\xc1not msgpack"})
    report = Verifier(path).verify()
    assert not report.is_clean()
    assert len(report.findings) == 1
    finding = report.findings[0]
    assert isinstance(finding, CorruptSnapshotAnchor) and finding.key == "5"
    assert report.lines()[1].startswith("- snapshot anchor invalid: anchor at key 5 unreadable")


def test_snapshot_anchor_past_durable_watermark_is_a_finding(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=10, anchor=anchor_at(12))
    report = Verifier(path).verify()
    assert report.findings == [AnchorPastWatermark(12, 10)]
    assert report.lines()[1] == "- snapshot anchor invalid: snapshot anchor high_watermark 12 exceeds durable high_watermark 10"


def test_sealed_manifest_disagreeing_with_entries_is_a_finding(tmp_path: Path) -> None:
    path = make_run_file(
        tmp_path / "run.lmdb", entries=10, manifest_overrides={"high_watermark": 9, "end_ts_init": 1}
    )
    report = Verifier(path).verify()
    assert [type(f) for f in report.findings] == [ManifestMismatch, ManifestMismatch]
    assert report.findings[0] == ManifestMismatch("high_watermark", "10", "9")
    assert report.findings[1].field == "end_ts_init"


def test_dangling_and_corrupted_index_rows_are_findings(tmp_path: Path) -> None:
    path = make_run_file(
        tmp_path / "run.lmdb",
        entries=10,
        skip_seqs=[4],
        index={IndexKind.ClientOrderId: {b"O-1": [2, 4, 11]}},
        manifest_overrides={"high_watermark": 10},
    )
    report = Verifier(path).verify()
    assert Gap(4, 4) in report.findings
    assert DanglingIndex("ClientOrderId", "O-1", 4) in report.findings
    assert DanglingIndex("ClientOrderId", "O-1", 11) in report.findings
    assert not any(isinstance(f, CorruptedIndex) for f in report.findings)


def test_missing_format_marker_is_a_finding(tmp_path: Path) -> None:
    report = Verifier(make_run_file(tmp_path / "run.lmdb", entries=3, format_version=None)).verify()
    assert report.findings == [OpenError("missing store format marker; the run file must be regenerated")]
    report = Verifier(make_run_file(tmp_path / "run2.lmdb", entries=3, format_version=99)).verify()
    assert isinstance(report.findings[0], OpenError) and "version 99" in report.findings[0].detail


def test_missing_run_file_is_an_open_error_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(VerifyOpenError):
        Verifier(tmp_path / "absent.lmdb").verify()
    with pytest.raises(VerifyOpenError):
        verify_in_worker(tmp_path / "absent.lmdb", 10)
    assert list(tmp_path.iterdir()) == []


def test_verifier_opens_read_only_run_file(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=100)
    lock = Path(str(path) + "-lock")
    lock.unlink()
    past = 1_600_000_000
    os.utime(path, (past, past))
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    path.chmod(0o400)
    try:
        report = Verifier(path).verify()
        assert report.is_clean(), report.lines()
        worker = verify_in_worker(path, 30)
        assert isinstance(worker, VerifyReport) and worker.is_clean()
        assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.lmdb"]  # no -lock created
    finally:
        path.chmod(0o600)


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=10, skip_seqs=[3], anchor=anchor_at(11))
    flip_byte_in_payload(path, 5)
    report = Verifier(path).verify()
    assert msgspec.json.decode(report.to_json(), type=VerifyReport) == report


# ---- crash recovery scan -----------------------------------------------------------------------
def test_scan_tail_reports_last_entry_and_damage(tmp_path: Path) -> None:
    pytest.importorskip("nes.recovery")
    from nes.verifier import scan_tail

    path = make_run_file(tmp_path / "run.lmdb", entries=10, status=RunStatus.Running)
    scan = scan_tail(path)
    assert (scan.high_watermark, scan.entries_scanned, scan.damaged) == (10, 10, False)
    assert (scan.last_topic, scan.last_payload_type) == ("exec.event.OrderFilled", "OrderFilled")
    flip_byte_in_payload(path, 3)
    scan = scan_tail(path)
    assert scan.damaged and "hash mismatch at seq 3" in scan.detail
    empty = scan_tail(make_run_file(tmp_path / "empty.lmdb", entries=0, status=RunStatus.Running))
    assert (empty.high_watermark, empty.entries_scanned, empty.damaged, empty.last_topic) == (0, 0, False, None)


# ---- damaged files (through the worker: a damaged map may crash the reader) -----------------
def _assert_corrupt_verdict(verdict: VerifyReport | WorkerFailure) -> None:
    assert not verdict.is_clean()
    assert verdict.summary_line().startswith("corrupt ")
    assert verdict.summary_line().endswith("quarantine=not-performed")


def test_truncated_run_file_reports_corrupt(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=2000, payload_size=200)
    size = path.stat().st_size
    os.truncate(path, size // 2)
    _assert_corrupt_verdict(verify_in_worker(path, 30))
    done = run_cli("verify", str(path))
    assert done.returncode == 1, done
    assert done.stdout.splitlines()[0].startswith("corrupt ")


def test_zero_tail_truncated_run_file_reports_corrupt(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=2000, payload_size=200)
    size = path.stat().st_size
    zeroed = min(size // 4, 8 * 4096)
    with open(path, "r+b") as fh:
        fh.seek(size - zeroed)
        fh.write(b"\x00" * zeroed)
    _assert_corrupt_verdict(verify_in_worker(path, 30))


# ---- the binary ---------------------------------------------------------------------------------
def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("NES_VERIFY_WORKER_FAULT", None)
    full_env.pop("NES_VERIFY_TIMEOUT_SECS", None)
    full_env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nes.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=PROJECT_ROOT,
    )


def test_binary_clean_run_exits_zero(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=25)
    done = run_cli("verify", str(path))
    assert (done.returncode, done.stdout, done.stderr) == (0, clean_line(25) + "\n", "")


def test_binary_hash_mismatch_exits_corrupt_without_quarantine(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=10)
    flip_byte_in_payload(path, 7)
    before = path.read_bytes()
    done = run_cli("verify", str(path))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [corrupt_line(10, 10, 1), "- hash mismatch at seq 7"]
    assert path.read_bytes() == before  # nothing moved or rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.lmdb", "run.lmdb-lock"]


def test_binary_worker_abort_exits_corrupt_without_quarantine(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=10)
    done = run_cli("verify", str(path), env={"NES_VERIFY_WORKER_FAULT": "abort"})
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f'corrupt path={path} worker_status="killed by signal 6 (SIGABRT)" quarantine=not-performed'
    ]


def test_binary_worker_timeout_exits_corrupt_without_quarantine(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=10)
    done = run_cli(
        "verify", str(path), env={"NES_VERIFY_WORKER_FAULT": "hang", "NES_VERIFY_TIMEOUT_SECS": "1"}, timeout=30
    )
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f'corrupt path={path} worker_status="timeout after 1s" quarantine=not-performed'
    ]


def test_binary_missing_run_file_exits_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.lmdb"
    done = run_cli("verify", str(path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f'error path={path} error="no run file"\n'
    assert list(tmp_path.iterdir()) == []


def test_binary_invalid_timeout_exits_error(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=1)
    done = run_cli("verify", str(path), env={"NES_VERIFY_TIMEOUT_SECS": "soon"})
    assert done.returncode == 2
    assert done.stderr.startswith(f"error path={path} error=")


def test_binary_json_output_is_one_object(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=10, skip_seqs=[4, 5, 6])
    done = run_cli("verify", "--json", str(path))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    report = msgspec.json.decode(lines[0], type=VerifyReport)
    assert report.findings == [Gap(4, 6)]
    assert msgspec.json.decode(lines[0])["findings"][0] == {"type": "Gap", "from_seq": 4, "to_seq": 6}

    clean = run_cli("verify", str(make_run_file(tmp_path / "clean.lmdb", entries=3)), "--json")
    assert clean.returncode == 0
    assert msgspec.json.decode(clean.stdout)["findings"] == []


def test_fuzzed_byte_flips_never_crash_the_parent(tmp_path: Path) -> None:
    import random

    clean = make_run_file(tmp_path / "clean.lmdb", entries=50)
    data = clean.read_bytes()
    rng = random.Random(20240601)
    for trial in range(8):
        damaged = bytearray(data)
        damaged[rng.randrange(len(damaged))] ^= rng.randrange(1, 256)
        path = tmp_path / f"trial-{trial}.lmdb"
        path.write_bytes(bytes(damaged))
        verdict = verify_in_worker(path, 30)
        assert isinstance(verdict, (VerifyReport, WorkerFailure))
        if not verdict.is_clean():
            _assert_corrupt_verdict(verdict)


def test_damaged_last_entry_reports_only_the_hash_mismatch(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=10)
    flip_byte_in_payload(path, 10)
    assert Verifier(path).verify().findings == [HashMismatch(10)]


# ---- the data-marker sidecar beside the run file ---------------------------------------------------
def _write_marker_sidecar(run_file: Path, snapshots: int) -> Path:
    from nes.markers import DataCursorSnapshot, MarkerManifest, MarkerStore, StreamCursor

    sidecar = layout.marker_sidecar_path(run_file)
    with MarkerStore(sidecar) as store:
        store.open_run(MarkerManifest(run_id=RUN_ID))
        for seq in range(1, snapshots + 1):
            store.append_snapshot(DataCursorSnapshot(seq, seq, 100 + seq, (StreamCursor(0, 100 + seq, seq),)))
        store.seal(RunStatus.Ended)
    return sidecar


def test_binary_missing_marker_sidecar_reports_absent_without_error(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / f"{RUN_ID}.lmdb", entries=5)
    done = run_cli("verify", str(path))
    assert (done.returncode, done.stdout, done.stderr) == (0, clean_line(5) + "\n", "")


def test_binary_clean_marker_sidecar_reports_clean_without_error(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / f"{RUN_ID}.lmdb", entries=5)
    _write_marker_sidecar(path, snapshots=3)
    done = run_cli("verify", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == (
        f"{clean_line(5).removesuffix(' markers=absent')} markers=clean marker_run_id={RUN_ID} marker_status=Ended "
        "marker_snapshots_scanned=3 marker_hifi_scanned=0 marker_gaps_scanned=0 marker_dict_entries_scanned=0\n"
    )


def test_binary_marker_hash_mismatch_exits_corrupt_without_quarantine(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / f"{RUN_ID}.lmdb", entries=5)
    sidecar = _write_marker_sidecar(path, snapshots=3)
    import lmdb

    env = lmdb.open(str(sidecar), subdir=False, max_dbs=16)
    try:
        with env.begin(write=True) as txn:
            db = env.open_db(b"snapshots", txn=txn, create=False)
            key = (2).to_bytes(8, "big")
            value = bytearray(txn.get(key, db=db))
            value[0] ^= 0xFF  # the stored hash in front of the record
            txn.put(key, bytes(value), db=db)
    finally:
        env.close()
    before = sidecar.read_bytes()
    done = run_cli("verify", str(path))
    assert done.returncode == 1
    first, *rest = done.stdout.splitlines()
    assert first.startswith(
        f"corrupt run_id={RUN_ID} status=Ended high_watermark=5 entries_scanned=5 findings=1 marker_findings=1 markers=corrupt"
    )
    assert first.endswith("marker_findings=1 quarantine=not-performed")
    assert rest == ["- marker hash mismatch snapshot marker_seq=2"]
    assert sidecar.read_bytes() == before
