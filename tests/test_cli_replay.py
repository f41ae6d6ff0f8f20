"""`nes replay plan|load`: output forms and exit codes, over real run files and catalogs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from replay_helpers import INSTRUMENT, entry_ts, write_nautilus_catalog
from runfile_helpers import build_entry, flip_byte_in_payload, make_run_file, seal_as_is

from nes.cli import main
from nes.manifest import RunStatus


@pytest.fixture
def run_file(tmp_path: Path) -> Path:
    return make_run_file(tmp_path / "run.lmdb", entries=20)


def nes(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nes", *args], capture_output=True, text=True, timeout=120)


def test_plan_prints_the_summary_line_of_the_whole_run(run_file: Path) -> None:
    result = nes("replay", "plan", str(run_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"scope=forensics requested=1..=20 events=1..=20 event_count=20 ts_init={entry_ts(1)}..={entry_ts(20)}\n"
    )


def test_plan_json_is_one_object_with_the_requested_range(run_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "plan", str(run_file), "--from-seq", "3", "--to-seq", "7", "--json", "--no-verify"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["requested_range"] == {"from_seq": 3, "to_seq": 7} and plan["event_count"] == 5
    assert plan["event_time_range"] == {"start": entry_ts(3), "end": entry_ts(7)}


def test_load_prints_the_entries_as_json_lines_in_seq_order(run_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "load", str(run_file), "--from-seq", "4", "--to-seq", "6"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seq"] for line in lines] == [4, 5, 6]
    expected = build_entry(5)
    assert base64.b64decode(lines[1]["payload_b64"]) == expected.payload
    assert lines[1]["entry_hash"] == bytes(expected.entry_hash).hex()
    assert lines[1]["kind"] == "entry" and lines[1]["correlation_id"] is None


def test_load_with_catalog_slices_prints_entries_then_records(run_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_nautilus_catalog(tmp_path / "cat", quote_ts=[entry_ts(2), entry_ts(9)], bar_ts=[entry_ts(3)])
    argv = ["replay", "load", str(run_file), "--to-seq", "5", "--catalog", str(tmp_path / "cat")]
    assert main([*argv, "--require-slice", f"quotes:{INSTRUMENT}", "--slice", "bars"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["kind"] for line in lines] == ["entry"] * 5 + ["catalog_record"] * 2
    quote, bar = lines[5:]
    assert (quote["slice"], quote["data_cls"], quote["ts_init"], quote["data"]["bid_price"]) == (0, "quotes", entry_ts(2), "1.10000")
    assert (bar["slice"], bar["data_cls"], bar["identifier"]) == (1, "bars", "AUD/USD.SIM-1-MINUTE-BID-EXTERNAL")


def test_missing_required_slice_exits_2(run_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cat").mkdir()
    argv = ["replay", "load", str(run_file), "--catalog", str(tmp_path / "cat"), "--require-slice", "trades:X.Y"]
    assert main(argv) == 2
    assert capsys.readouterr().err == "nes replay: required catalog slice trades is missing for identifiers ['X.Y']\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--from-seq", "0"], "seq is 1-based"),
        (["--from-seq", "9", "--to-seq", "3"], "from_seq exceeds to_seq"),
        (["--slice", "quotes"], "--slice needs --catalog DIR"),
        (["--start-ns", "5"], "--start-ns and --end-ns go together"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(run_file: Path, extra: list[str], message: str) -> None:
    result = nes("replay", "plan", str(run_file), *extra)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_run_file_exits_2(tmp_path: Path) -> None:
    result = nes("replay", "load", str(tmp_path / "nope.lmdb"))
    assert result.returncode == 2 and "run file not found" in result.stderr


def test_running_run_exits_2(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "running.lmdb", entries=3, status=RunStatus.Running)
    result = nes("replay", "plan", str(path), "--no-verify")
    assert result.returncode == 2 and "still Running" in result.stderr


def test_a_run_changed_after_its_seal_exits_1_without_the_verifier(run_file: Path) -> None:
    seal_as_is(run_file)
    flip_byte_in_payload(run_file, 7)
    result = nes("replay", "load", str(run_file), "--no-verify")
    assert result.returncode == 1 and "changed after it was sealed" in result.stderr
    assert result.stdout == ""


def test_corrupt_run_exits_1_at_the_verifier(run_file: Path) -> None:
    flip_byte_in_payload(run_file, 7)
    result = nes("replay", "load", str(run_file))
    assert result.returncode == 1 and "failed verification: corrupt" in result.stderr
    assert result.stdout == ""


def test_corrupt_run_exits_1_while_reading_without_the_verifier(run_file: Path) -> None:
    flip_byte_in_payload(run_file, 7)
    result = nes("replay", "load", str(run_file), "--no-verify")
    # No seal record proves this file: even without --no-verify's verifier, it is read only once
    # a worker verified it clean.
    assert result.returncode == 1 and "does not verify clean" in result.stderr
    seal_as_is(run_file)  # damaged before the seal: the entry hash is what refuses it
    result = nes("replay", "load", str(run_file), "--no-verify")
    assert result.returncode == 1 and "entry hash mismatch at seq 7" in result.stderr
