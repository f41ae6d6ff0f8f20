"""Issue #9 items 4-5: `nes verify`'s contract (the crate's `src/bin/verify.rs` lines, exit
codes, timeouts on lack of progress, several paths, one JSON shape), run as a real subprocess."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import lmdb
import msgspec

from nes.backend import layout
from nes.backend.base import IndexKind
from nes.codec import seq_key
from nes.verifier import VerifyOutcome
from runfile_helpers import RUN_ID, START_TS_INIT, flip_byte_in_payload, make_run_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("VERIFY_TIMEOUT_SECS") and k != "NES_VERIFY_WORKER_FAULT"}
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def nes_verify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nes.cli", "verify", *args],
        capture_output=True, text=True, env=cli_env(env), timeout=120, cwd=PROJECT_ROOT,
    )


def test_index_drift_lines_are_the_crates(tmp_path: Path) -> None:
    path = make_run_file(
        tmp_path / "run.lmdb", entries=6, index={IndexKind.ClientOrderId: {b"O-1": [3, 9]}}
    )
    flip_byte_in_payload(path, 3)
    done = nes_verify(str(path))
    assert done.returncode == 1
    assert done.stdout.splitlines()[1:4] == [
        "- hash mismatch at seq 3",
        "- index drift ClientOrderId key=O-1: corrupted target seq 3",
        "- index drift ClientOrderId key=O-1: dangling target seq 9",
    ]  # then nes's own line: the row past the last entry was not written by the commit's rows


def test_start_ts_init_above_the_first_entry_is_the_crates_manifest_mismatch(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=3, manifest_overrides={"start_ts_init": START_TS_INIT + 5_000})
    done = nes_verify(str(path))
    assert done.returncode == 1
    first_ts = START_TS_INIT + 1_000
    assert done.stdout.splitlines()[1:] == [
        f"- manifest mismatch StartTsInit: manifest start_ts_init {START_TS_INIT + 5_000} sits above first entry ts_init {first_ts}"
    ]


def test_sealed_high_watermark_mismatch_is_the_crates_line(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=4, manifest_overrides={"high_watermark": 9})
    done = nes_verify(str(path))
    assert done.stdout.splitlines()[1:] == [
        "- manifest mismatch HighWatermark: manifest high_watermark 9 disagrees with durable high_watermark 4"
    ]


def test_a_file_that_is_not_a_run_prints_corrupt_path_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.lmdb"
    path.write_bytes(b"\x00" * 8192)
    done = nes_verify(str(path))
    assert done.returncode == 1
    assert done.stdout.startswith(f'corrupt path={path} error="')
    assert done.stdout.rstrip().endswith('" quarantine=not-performed') and len(done.stdout.splitlines()) == 1


def test_missing_path_is_no_run_file_exit_2(tmp_path: Path) -> None:
    done = nes_verify(str(tmp_path / "absent.lmdb"))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f'error path={tmp_path / "absent.lmdb"} error="no run file"\n'


def test_crate_timeout_variable_is_accepted_and_reports_timeout_after(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=2)
    done = nes_verify(str(path), env={"NES_VERIFY_WORKER_FAULT": "hang", "NAUTILUS_EVENT_STORE_VERIFY_TIMEOUT_SECS": "1"})
    assert done.returncode == 1
    assert done.stdout == f'corrupt path={path} worker_status="timeout after 1s" quarantine=not-performed\n'
    bad = nes_verify(str(path), env={"NAUTILUS_EVENT_STORE_VERIFY_TIMEOUT_SECS": "soon"})
    assert bad.returncode == 2 and "NAUTILUS_EVENT_STORE_VERIFY_TIMEOUT_SECS='soon'" in bad.stderr


def test_timeout_is_on_lack_of_progress_not_on_total_time(tmp_path: Path) -> None:
    """The worker takes over 3 s in all but reports progress every 0.4 s: a 1 s timeout holds."""
    path = make_run_file(tmp_path / "run.lmdb", entries=2)
    done = nes_verify(str(path), env={"NES_VERIFY_WORKER_FAULT": "slow", "NES_VERIFY_TIMEOUT_SECS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("clean ")


def _drain(leader: int) -> bytes:
    """Everything a pseudo-terminal shows until its other side is closed by every process."""
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: no process holds the terminal any more
            break
        if not chunk:
            break
        shown += chunk
    return shown


def _verify_on_a_terminal(path: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """Run `nes verify` with stderr on a pseudo-terminal: (the process, what the terminal showed)."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nes.cli", "verify", *flags, str(path)], stdout=subprocess.PIPE, stderr=follower,
            env=cli_env({"NES_VERIFY_WORKER_FAULT": "slow"}), timeout=60, cwd=PROJECT_ROOT, text=True,
        )
        os.close(follower)
        follower = -1
        shown = _drain(leader)
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    return done, shown


def test_progress_is_shown_on_a_terminal(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=2)
    done, shown = _verify_on_a_terminal(path)
    assert done.returncode == 0
    assert f"verifying {path}: ".encode() in shown
    assert b"verifying" not in done.stdout.encode()  # data on stdout, progress on stderr only


def test_quiet_silences_progress_on_a_terminal(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "run.lmdb", entries=2)
    done, shown = _verify_on_a_terminal(path, "--quiet")
    assert done.returncode == 0 and done.stdout.startswith("clean ")
    assert shown == b""


def test_several_paths_and_a_directory_with_a_summary(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    make_run_file(runs / "a.lmdb", entries=3)
    bad = make_run_file(runs / "b.lmdb", entries=3)
    flip_byte_in_payload(bad, 2)
    (runs / "a.markers.lmdb").write_bytes(b"")  # a sidecar is not a run file of its own
    done = nes_verify(str(runs), str(tmp_path / "absent.lmdb"))
    assert done.returncode == 1  # a corrupt file wins over a missing one
    lines = done.stdout.splitlines()
    assert lines[0].startswith("clean ") or lines[0].startswith("corrupt ")
    assert lines[-1] == "summary paths=3 clean=0 corrupt=2 errors=1" or lines[-1] == "summary paths=3 clean=1 corrupt=1 errors=1"
    assert 'error="no run file"' in done.stderr


def test_json_is_one_shape_for_every_outcome(tmp_path: Path) -> None:
    clean = make_run_file(tmp_path / "clean.lmdb", entries=2)
    corrupt = make_run_file(tmp_path / "corrupt.lmdb", entries=2)
    flip_byte_in_payload(corrupt, 1)
    garbage = tmp_path / "garbage.lmdb"
    garbage.write_bytes(b"\x00" * 8192)
    done = nes_verify("--json", str(clean), str(corrupt), str(garbage), str(tmp_path / "absent.lmdb"))
    *outcome_lines, summary_line = done.stdout.splitlines()
    outcomes = [msgspec.json.decode(line, type=VerifyOutcome) for line in outcome_lines]
    assert [(o.verdict, o.exit_code) for o in outcomes] == [("clean", 0), ("corrupt", 1), ("corrupt", 1), ("error", 2)]
    assert {frozenset(msgspec.json.decode(line)) for line in outcome_lines} == {frozenset(VerifyOutcome.__struct_fields__)}
    assert msgspec.json.decode(summary_line) == {
        "summary": {"paths": 4, "clean": 1, "corrupt": 2, "errors": 1, "exit_code": 1}
    }
    assert done.returncode == 1 and done.stderr == ""
    worker = nes_verify("--json", str(clean), env={"NES_VERIFY_WORKER_FAULT": "abort"})
    (line,) = worker.stdout.splitlines()
    assert frozenset(msgspec.json.decode(line)) == frozenset(VerifyOutcome.__struct_fields__)
    assert msgspec.json.decode(line, type=VerifyOutcome).worker_status == "killed by signal 6 (SIGABRT)"


def test_exit_codes_are_distinct_for_clean_corrupt_and_cannot_run(tmp_path: Path) -> None:
    clean = make_run_file(tmp_path / "clean.lmdb", entries=2)
    corrupt = make_run_file(tmp_path / "corrupt.lmdb", entries=2)
    env = lmdb.open(str(corrupt), subdir=False, max_dbs=layout.MAX_DBS)
    with env.begin(write=True) as txn:
        txn.delete(seq_key(1), db=env.open_db(layout.DB_ENTRIES, txn=txn))
    env.close()
    assert nes_verify(str(clean)).returncode == 0
    assert nes_verify(str(corrupt)).returncode == 1
    assert nes_verify(str(tmp_path / "nothing.lmdb")).returncode == 2
    assert nes_verify(str(clean), env={"NES_VERIFY_TIMEOUT_SECS": "0"}).returncode == 2
    assert RUN_ID in nes_verify(str(clean)).stdout


def test_docs_integrity_python_blocks_run() -> None:
    import re

    text = (PROJECT_ROOT / "docs" / "integrity.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/integrity.md", "exec"), {})  # noqa: S102 - our own docs


def test_ctrl_c_exits_130_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    import signal
    import time

    path = make_run_file(tmp_path / "run.lmdb", entries=2)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nes.cli", "verify", str(path)], stdout=subprocess.PIPE, stderr=follower,
        env=cli_env({"NES_VERIFY_WORKER_FAULT": "slow"}), cwd=PROJECT_ROOT, text=True,
    )
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + 60
    while b"verifying" not in shown and time.monotonic() < deadline:
        shown += os.read(leader, 4096)  # blocks until the CLI shows progress: the worker is running
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    rest = _drain(leader)
    os.close(leader)
    assert proc.returncode == 130
    assert out == ""
    assert b"Traceback" not in shown + rest and b"nes: interrupted" in rest
