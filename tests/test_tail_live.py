"""`nes tail` and `nes runs` on a live run: a real writer sidecar commits while a `nes tail -f`
child follows; the follower moves to the next run when the first is sealed; Ctrl-C exits 130."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nes.config import EventStoreConfig, RunIdentity
from nes.kernel import EventStoreLifecycle
from nes.ops.runfile import RunFile
from nes.ops.runs import list_runs
from nes.ops.tail import RunSwitch, follow, last_entries
from nes.writer import EntryDraft
from tests.operator_helpers import ROOT, assert_one_line_error, cli

INSTANCE = "trader-tail"


def _draft(n: int) -> EntryDraft:
    return EntryDraft("orders.test", "Note", f"note-{n}".encode(), time.time_ns())


class _Lines:
    """Bounded-time reads of a child's stdout lines."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.sel = selectors.DefaultSelector()
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self.sel.register(proc.stdout, selectors.EVENT_READ)
        self.buf = b""

    def until(self, predicate, timeout: float = 15.0) -> list[dict]:  # noqa: ANN001
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                got.append(json.loads(line))
                if predicate(got):
                    return got
            if self.sel.select(timeout=0.2):
                assert self.proc.stdout is not None
                chunk = self.proc.stdout.read()
                if chunk:
                    self.buf += chunk
        raise AssertionError(f"timed out; got {got}")


def test_tail_follow_shows_live_entries_and_moves_to_the_next_run(tmp_path: Path) -> None:
    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id=INSTANCE))
    lifecycle = EventStoreLifecycle(config)
    session = lifecycle.open()
    proc = None
    try:
        seq = session.submit(_draft(0))
        assert session.wait_durable(seq, 5.0)
        rows = list_runs(tmp_path, INSTANCE)
        assert [(r.status, r.high_watermark) for r in rows] == [("Running", seq)]
        runs_cli = cli("runs", "--base-dir", str(tmp_path), "--json")
        assert json.loads(runs_cli.stdout)["status"] == "Running"
        proc = subprocess.Popen(
            [sys.executable, "-m", "nes", "tail", "--base-dir", str(tmp_path), "--instance", INSTANCE, "-n", "1",
             "-f", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        lines = _Lines(proc)
        first = lines.until(lambda got: len(got) >= 1)
        assert first[0]["seq"] == seq
        last = 0
        for n in range(1, 21):
            last = session.submit(_draft(n))
        assert session.wait_durable(last, 5.0)
        got = lines.until(lambda got: got and got[-1]["seq"] == last)
        assert [g["seq"] for g in got] == list(range(seq + 1, last + 1))
        assert bytes.fromhex(got[-1]["payload"]) == b"note-20"
        first_run = session.run_id
        session.close()
        ended = lines.until(lambda got: got and got[-1]["payload_type"] == "RunEnded")
        assert ended[-1]["seq"] == last + 1
        session = lifecycle.open()
        nxt = session.submit(_draft(99))
        assert session.wait_durable(nxt, 5.0)
        got = lines.until(lambda got: any(g["payload_type"] == "Note" for g in got))
        assert got[0]["seq"] == 1 and got[0]["payload_type"] == "RunStarted" and got[-1]["seq"] == nxt
        assert session.run_id != first_run
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130, err
        assert b"Traceback" not in err and f"run {first_run} sealed Ended".encode() in err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        session.close()


def test_follow_library_yields_entries_then_a_run_switch(tmp_path: Path) -> None:
    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id=INSTANCE))
    lifecycle = EventStoreLifecycle(config)
    with lifecycle.open() as session:
        seq = session.submit(_draft(1))
        assert session.wait_durable(seq, 5.0)
        path = Path(session.path)
    with lifecycle.open() as session2:
        seq2 = session2.submit(_draft(2))
        assert session2.wait_durable(seq2, 5.0)
        seen: list[object] = []
        deadline = time.monotonic() + 10
        for item in follow(path, 0, stop=lambda: time.monotonic() > deadline):
            seen.append(item)
            if not isinstance(item, RunSwitch) and item.payload == b"note-2":
                break
    switches = [s for s in seen if isinstance(s, RunSwitch)]
    assert len(switches) == 1 and switches[0].path.name == Path(session2.path).name
    assert [getattr(e, "seq", None) for e in seen[:3]] == [1, 2, 3]


def test_tail_last_entries_and_bad_inputs(tmp_path: Path) -> None:
    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id=INSTANCE))
    with EventStoreLifecycle(config).open() as session:
        for n in range(5):
            seq = session.submit(_draft(n))
        assert session.wait_durable(seq, 5.0)
        path = session.path
    with RunFile(path) as run_file:
        assert [e.seq for e in last_entries(run_file, 3)] == [5, 6, 7]
        assert len(last_entries(run_file, 100)) == 7
        with pytest.raises(ValueError):
            last_entries(run_file, -1)
    done = cli("tail", str(path), "-n", "2")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2 and "RunEnded" in done.stdout
    assert_one_line_error(cli("tail", str(tmp_path / "none.lmdb")), 2, "no such run file")
    assert_one_line_error(cli("tail", "--base-dir", str(tmp_path), "--instance", "ghost"), 2, "no run files")
    assert_one_line_error(cli("tail"), 2, "give a run file or --instance")
