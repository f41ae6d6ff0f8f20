"""Shared set-up for the operator command tests: real run files and the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lmdb

from nes.backend import layout
from nes.snapshot import SnapshotAnchor
from tests.runfile_helpers import INSTANCE_ID, START_TS_INIT, make_run_file

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`python -m nes <args>` in a child process (stdin closed, not a terminal)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "nes", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL, check=False)


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and needle in lines[0], lines


def retention_run(base: Path, n: int, status, entries: int = 4, anchor: int | None = 3) -> Path:  # noqa: ANN001
    """Run file n of INSTANCE_ID (ids sort by n), with an anchor at `anchor`."""
    run_id = f"{START_TS_INIT + n}-{n:08x}"
    path = layout.run_file_path(base, INSTANCE_ID, run_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    anchor_obj = None if anchor is None else SnapshotAnchor(anchor, f"snap-{n}", "blake3:" + "0" * 64)
    return make_run_file(path, entries, status, anchor_obj, run_id=run_id,
                         manifest_overrides={"start_ts_init": START_TS_INIT + n})


def foreign_lmdb(path: Path) -> Path:
    """A valid LMDB file that is not a nes run file."""
    env = lmdb.open(str(path), subdir=False, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"hello", b"world")
    env.close()
    return path
