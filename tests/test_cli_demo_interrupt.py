"""Issue 9 item 3: `nes demo --orders` is checked, `nes demo` says where it left the run file, and
Ctrl-C in a command prints one line, exits 130, no traceback, and leaves the run sealed or for
recovery (never half-written). Real processes: `python -m nes` children, the writer sidecar,
the recovery and verifier workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nes import InvalidArgument, RunStatus, recover_predecessors, verify_in_worker
from nes.backend.lmdb import read_manifest
from nes.demo import DEMO_INSTANCE_ID, run_demo

ROOT = Path(__file__).resolve().parent.parent


def nes_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "nes", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.mark.parametrize("orders", ["0", "-5"])
def test_demo_with_no_orders_is_a_one_line_error_exit_2(tmp_path: Path, orders: str) -> None:
    done = nes_cli("demo", "--orders", orders, "--dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"nes demo: --orders must be >= 1, got {orders}\n"
    assert list(tmp_path.iterdir()) == []  # nothing was booted


def test_demo_that_cannot_create_its_run_is_a_one_line_error_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    done = nes_cli("demo", "--orders", "3", "--dir", str(blocker))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nes demo: backend error: create {blocker}/"), done.stderr
    assert "Not a directory" in lines[0]


@pytest.mark.parametrize("orders", [0, -1, True, 2.5])
def test_run_demo_rejects_a_bad_order_count_before_booting(tmp_path: Path, orders: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        run_demo(tmp_path, orders)  # type: ignore[arg-type]
    assert str(info.value) == f"orders must be an int >= 1, got {orders!r}"
    assert list(tmp_path.iterdir()) == []


def test_demo_says_where_it_left_the_run_file(tmp_path: Path) -> None:
    done = nes_cli("demo", "--orders", "20", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert last.startswith("run file left at ")
    path = Path(last.removeprefix("run file left at ").split(" (", 1)[0])
    assert path.is_file() and path.parent == tmp_path / DEMO_INSTANCE_ID
    assert f"nes verify {path}" in last
    assert read_manifest(path).status is RunStatus.Ended


def test_nes_version_prints_the_package_version() -> None:
    import nes

    done = nes_cli("--version")
    assert done.returncode == 0
    assert done.stdout == f"nes {nes.__version__}\n"


def _wait_for(condition, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("min_file_bytes", [0, 256 << 10], ids=["during_boot", "while_capturing"])
def test_ctrl_c_during_demo_exits_130_with_one_line_and_the_run_recovers_clean(
    tmp_path: Path, min_file_bytes: int
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nes", "demo", "--orders", "1000000", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    instance = tmp_path / DEMO_INSTANCE_ID
    try:
        _wait_for(lambda: instance.is_dir() and any(p.suffix == ".lmdb" for p in instance.iterdir()), 60.0, "run file")
        run_file = next(p for p in instance.iterdir() if p.suffix == ".lmdb")
        _wait_for(lambda: run_file.stat().st_size >= min_file_bytes, 60.0, "entries in the run file")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        out, err = proc.communicate(timeout=60.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err == "nes: interrupted\n"
    assert "Traceback" not in out
    outcome = recover_predecessors(tmp_path, DEMO_INSTANCE_ID)
    status = read_manifest(run_file).status
    assert status in (RunStatus.Ended, RunStatus.CrashedRecovered)
    assert [r.status for r in outcome.recovered] in ([], [RunStatus.CrashedRecovered])
    verdict = verify_in_worker(run_file, 60.0)
    assert verdict.is_clean(), verdict.lines()
    if min_file_bytes:
        assert verdict.high_watermark > 1


def test_ctrl_c_during_verify_exits_130_with_one_line_and_stops_the_worker(tmp_path: Path) -> None:
    import psutil

    from nes.verifier import WORKER_FAULT_ENV

    done = nes_cli("demo", "--orders", "5", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    run_file = next((tmp_path / DEMO_INSTANCE_ID).glob("*.lmdb"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), WORKER_FAULT_ENV: "hang"}  # the worker never answers
    proc = subprocess.Popen(
        [sys.executable, "-m", "nes", "verify", str(run_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        parent = psutil.Process(proc.pid)

        def worker() -> list[psutil.Process]:
            return [c for c in parent.children() if "workers.verify" in " ".join(c.cmdline())]

        _wait_for(lambda: bool(worker()), 60.0, "the verifier worker")
        (child,) = worker()
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's foreground group: nes, not its worker
        out, err = proc.communicate(timeout=60.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err == "nes: interrupted\n"
    assert out == ""
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_an_event_store_error_no_command_reported_is_one_line_exit_2(tmp_path: Path) -> None:
    run_file = tmp_path / "x.lmdb"
    run_file.write_bytes(b"\0" * 4096)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NES_VERIFY_TIMEOUT_SECS": "1e9"}  # past the one-day cap
    done = subprocess.run(
        [sys.executable, "-m", "nes", "verify", str(run_file)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert "must be a finite number of seconds in (0, 86400]" in done.stderr
