"""Crash trials: `python tools/crash_trials.py N [--seed S] [--dir DIR]`.

Each trial starts a trader in a child process (`tests/crash_child.py`, in its own process
group: boots a session with a real writer sidecar and submits entries in a loop, printing the
durable high-watermark it saw via `wait_durable`) and kills something at a random point:

- `trader` / `writer`: SIGKILL that process after the trader's boot;
- `group`: SIGKILL the trader's process group and all its descendants (trader, writer,
  workers at once; the writer runs in a process group of its own) after the boot;
- `boot` / `group-boot`: SIGKILL the trader / the process group at a random point of a boot
  that has a crashed predecessor to recover (left by a first killed trader), so the kill lands
  before, during or after the recovery sweep, the writer spawn or RunStarted;
- `close`: the trader submits a few thousand entries and closes; SIGKILL the trader or the
  group at a random point of that close.

Then it waits for the processes to be gone and boots in this process until no file is Running.
A trial passes when boot succeeds, the killed run was sealed by the recovery rule
(CrashedRecovered, or Ended when RunEnded was durable / the close completed), every seq at or
below the last durable high-watermark the trader reported is on disk, contiguous, with a valid
hash and its own payload, the lineage holds (every CrashedRecovered run is the parent of exactly
one run), and no shared memory is left: no `nes-` segment or semaphore created during the trial
stays in /dev/shm unmapped by any process, and no boot record stays in the instance directory.
Run files the kill left that no boot can read or quarantine (`unreadable_run_files`) are
counted apart and fail the trial; a file a kill left with no commit at all (killed while the
writer created it) is quarantined by its seal record and counted as `never_committed_run_files`.
The JSON summary is the last line; exit status 1 if any trial failed, lost a durable entry or
leaked a segment.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "crash_child.py"
INSTANCE_ID = "crash-trader"
BOOT_DEADLINE_S = 30.0
EXIT_DEADLINE_S = 15.0


@dataclass
class TrialResult:
    target: str  # one of TARGETS: what was SIGKILLed, when
    kill_after_s: float
    run_id: str
    reported_durable: int  # last durable high-watermark the trader printed
    on_disk: int  # high-watermark of the recovered run file
    status: str  # the status the boot's recovery sweep sealed the predecessor with
    lost_durable_entries: int
    problems: list[str] = field(default_factory=list)
    leaked_segments: int = 0  # ring tokens left in /dev/shm, mapped by nobody
    unreadable_files: list[str] = field(default_factory=list)  # run files left that no boot can seal

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost_durable_entries == 0 and self.leaked_segments == 0 and not self.unreadable_files


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if _gone(pid):
            return True
        time.sleep(0.01)
    return _gone(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _Lines:
    """Collects the child's stdout lines in a thread; `wait_for(prefix)` blocks until one arrives."""

    def __init__(self, stream) -> None:  # noqa: ANN001
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:  # noqa: ANN001
        for raw in stream:
            with self._cond:
                self.lines.append(raw.decode().strip())
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, prefix: str, deadline_s: float) -> str | None:
        end = time.monotonic() + deadline_s
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                remaining = end - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def values(self, prefix: str) -> list[int]:
        with self._cond:
            return [int(line.split()[1]) for line in self.lines if line.startswith(prefix + " ")]


TARGETS = ("trader", "writer", "group", "boot", "group-boot", "close")
BOOT_TARGETS = ("boot", "group-boot")
CLOSE_ENTRIES = (200, 3000)  # the close trials' trader submits this many entries, then closes


def _start_child(base_dir: Path, instance_id: str, max_entries: int | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = [sys.executable, str(CHILD), str(base_dir), instance_id]
    if max_entries is not None:
        args.append(str(max_entries))
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env,
        start_new_session=True,  # its own process group: a group kill spares this driver
    )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_tree(pid: int) -> None:
    """SIGKILL the trader's process group and every descendant at once (the writer runs in a
    process group of its own, so a group kill alone would spare it): everything dies together,
    as with a container kill or a power loss of the machine's processes."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    _kill_group(pid)
    for child in descendants:
        _kill(child.pid)


def _leave_crashed_predecessor(base_dir: Path, instance_id: str, problems: list[str]) -> str | None:
    """A trader killed after its boot: its run stays Running once its writer has drained."""
    proc = _start_child(base_dir, instance_id)
    lines = _Lines(proc.stdout)
    try:
        writer_line = lines.wait_for("writer ", BOOT_DEADLINE_S)
        if writer_line is None:
            problems.append(f"predecessor trader did not boot: {lines.lines}")
            return None
        lines.wait_for("durable ", BOOT_DEADLINE_S)
        _kill(proc.pid)
        proc.wait()
        if not wait_gone(int(writer_line.split()[1]), EXIT_DEADLINE_S):
            problems.append("predecessor writer did not exit")
    finally:
        _kill_group(proc.pid)
        proc.wait()
        lines.join(5.0)
        if proc.stdout is not None:
            proc.stdout.close()
    line = lines.wait_for("run ", 0)
    return line.split()[1] if line else None


def _ring_tokens() -> set[str]:
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return set()
    return {name.split("nes-", 1)[1].split("-")[0] for name in names if "nes-" in name}


def _mapped_anywhere(token: str) -> bool:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/maps") as maps:
                if token in maps.read():
                    return True
        except OSError:
            continue
    return False


def leaked_tokens(before: set[str], settle_s: float = 1.0) -> list[str]:
    """Ring tokens that appeared since `before` and are mapped by no process (a live boot of
    someone else maps its ring until it unlinks it), still there after `settle_s`."""
    end = time.monotonic() + settle_s
    while True:
        orphans = sorted(token for token in _ring_tokens() - before if not _mapped_anywhere(token))
        if not orphans or time.monotonic() >= end:
            return orphans
        time.sleep(0.1)


def _unreadable(base_dir: Path, instance_id: str) -> list[str]:
    """Run files whose manifest cannot be read and that no seal record quarantines (the
    recovery sweep skips them at every boot)."""
    from nes.backend import layout
    from nes.backend.lmdb import read_manifest

    names = []
    for path in layout.list_run_files(base_dir, instance_id):
        if _quarantined_by_record(path):
            continue
        try:
            read_manifest(path)
        except Exception:  # noqa: BLE001
            names.append(path.name)
    return names


def _quarantined_by_record(path: Path) -> bool:
    """What the recovery sweep itself reads as quarantined by a seal record alone."""
    from nes.kernel import _quarantined_outside

    return _quarantined_outside(path) is not None


def _never_committed(base_dir: Path, instance_id: str) -> int:
    from nes.backend import layout

    return sum(
        1 for path in layout.list_run_files(base_dir, instance_id)
        if _quarantined_by_record(path) and layout.check_run_file_shape(path).txnid == 0
    )


def _lineage_problems(base_dir: Path, instance_id: str) -> list[str]:
    """Every CrashedRecovered run is the parent of exactly one run."""
    from nes.backend import layout
    from nes.backend.lmdb import read_manifest
    from nes.manifest import RunStatus

    manifests = []
    for path in layout.list_run_files(base_dir, instance_id):
        try:
            manifests.append(read_manifest(path))
        except Exception:  # noqa: BLE001 - the sweep reports unreadable files
            continue
    children = Counter(m.parent_run_id for m in manifests if m.parent_run_id is not None)
    return [
        f"crashed run {m.run_id} is the parent of {children[m.run_id]} runs, expected 1"
        for m in manifests
        if m.status is RunStatus.CrashedRecovered and children[m.run_id] != 1
    ]


def run_trial(base_dir: Path, rng: random.Random, target: str | None = None, instance_id: str = INSTANCE_ID) -> TrialResult:
    """One trial (see the module docstring). Leaves no process behind, whatever happens."""
    from nes.backend import layout
    from nes.backend.lmdb import read_manifest
    from nes.config import EventStoreConfig, RunIdentity

    target = target or rng.choice(TARGETS)
    problems: list[str] = []
    tokens_before = _ring_tokens()
    if target in BOOT_TARGETS:
        kill_after_s = round(rng.uniform(0.02, 0.45), 3)  # a boot with a predecessor to recover: ~0.3 s
        _leave_crashed_predecessor(base_dir, instance_id, problems)
    elif target == "close":
        kill_after_s = round(rng.uniform(0.0, 0.03), 4)  # a close takes a few ms
    else:
        kill_after_s = round(rng.uniform(0.0, 0.5), 3)
    proc = _start_child(base_dir, instance_id, rng.randint(*CLOSE_ENTRIES) if target == "close" else None)
    lines = _Lines(proc.stdout)
    group_kill = target.startswith("group") or (target == "close" and rng.random() < 0.5)
    writer_pid: int | None = None
    try:
        if target in BOOT_TARGETS:
            time.sleep(kill_after_s)
            (_kill_tree if group_kill else _kill)(proc.pid)
            proc.wait()
        else:
            writer_line = lines.wait_for("writer ", BOOT_DEADLINE_S)
            if writer_line is None:
                raise RuntimeError(f"trader did not boot: {lines.lines}")
            writer_pid = int(writer_line.split()[1])
            if target == "close" and lines.wait_for("closing", BOOT_DEADLINE_S) is None:
                raise RuntimeError(f"trader did not reach its close: {lines.lines}")
            time.sleep(kill_after_s)
            if group_kill:
                _kill_tree(proc.pid)
            else:
                _kill(writer_pid if target == "writer" else proc.pid)
            # The trader dead: its writer drains what was pushed and exits on the control EOF.
            # The writer dead: the trader sees the halt, leaves the run Running and exits.
            try:
                proc.wait(timeout=EXIT_DEADLINE_S)
            except subprocess.TimeoutExpired:
                problems.append("trader did not exit after its writer was killed")
        lines.join(5.0)
        line = lines.wait_for("writer ", 0)
        writer_pid = int(line.split()[1]) if line else None
        if writer_pid is not None and not wait_gone(writer_pid, EXIT_DEADLINE_S):
            problems.append("writer did not exit after the trader was killed")
        # a boot killed mid-sweep can leave a recovery worker finishing its file; let it end
        for child in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(child.info["cmdline"] or [])
            if "workers." in cmdline and str(base_dir) in cmdline:
                if not wait_gone(child.pid, EXIT_DEADLINE_S):
                    problems.append(f"process {child.info['cmdline']} outlived the kill")
    finally:
        _kill_group(proc.pid)
        for pid in (proc.pid, writer_pid):
            if pid is not None and not _gone(pid):
                _kill(pid)
        proc.wait()
        lines.join(5.0)
        if proc.stdout is not None:
            proc.stdout.close()
    line = lines.wait_for("run ", 0)
    run_id = line.split()[1] if line else None
    reported = max(lines.values("durable"), default=0)
    closed = lines.wait_for("closed ", 0) is not None

    config = EventStoreConfig(base_dir=str(base_dir), identity=RunIdentity(instance_id=instance_id))
    unreadable_before = set(_unreadable(base_dir, instance_id))
    states = _boot_until_sealed(config, base_dir, instance_id, problems)
    unreadable = sorted(set(_unreadable(base_dir, instance_id)) - unreadable_before)
    problems += _lineage_problems(base_dir, instance_id)
    leaked = leaked_tokens(tokens_before)
    if leaked:
        problems.append(f"shared memory left in /dev/shm: {leaked}")
    records = sorted(p.name for p in (base_dir / instance_id).glob("*.boot"))
    if records:
        problems.append(f"boot records left: {records}")
    if run_id is None:
        # Killed before its session was up: the run file it may have created must be sealed,
        # by the rule, CrashedRecovered (as must the predecessor a boot trial left).
        statuses = set(states.values())
        if statuses - {"CrashedRecovered"}:
            problems.append(f"a killed run was sealed {states}, expected CrashedRecovered")
        if len(states) > 2:
            problems.append(f"recovered more than the killed traders' runs: {states}")
        status = "CrashedRecovered" if states else "no-run-file"
        return TrialResult(target, kill_after_s, "", 0, 0, status, 0, problems, len(leaked), unreadable)
    if run_id in states:
        status = states[run_id]
    else:  # not recovered by our boots: sealed by its own close
        status = str(read_manifest(layout.run_file_path(base_dir, instance_id, run_id)).status)
    allowed = {"CrashedRecovered", "Ended"} if target == "close" else {"CrashedRecovered"}
    if status not in allowed or (closed and status != "Ended"):
        problems.append(f"predecessor sealed {status}, expected {sorted(allowed)}" + (" (its close completed)" if closed else ""))
    on_disk, lost = _check_durable(base_dir, instance_id, run_id, reported, problems)
    return TrialResult(target, kill_after_s, run_id, reported, on_disk, str(status), lost, problems, len(leaked), unreadable)


def _boot_until_sealed(config, base_dir: Path, instance_id: str, problems: list[str]):  # noqa: ANN001
    """Boot (and close); a predecessor still held by an orphan of the killed trader (a recovery
    worker finishing its seal) is skipped by that boot, so boot again until no file is Running.
    Returns {run_id: status} of the predecessors this trial's boots recovered (status as str),
    or for a boot-kill trial a compact label of those statuses."""
    from nes.backend import layout
    from nes.backend.lmdb import read_manifest
    from nes.kernel import open_run
    from nes.manifest import RunStatus

    before = {p.name for p in layout.list_run_files(base_dir, instance_id)}
    recovered: dict[str, str] = {}
    ours: set[str] = set()
    deadline = time.monotonic() + EXIT_DEADLINE_S
    while True:
        try:
            with open_run(config) as session:
                ours.add(session.path.name)
                recovered.update({r.run_id: str(r.status) for r in session.recovery.recovered})
        except Exception as exc:  # noqa: BLE001
            problems.append(f"boot failed: {type(exc).__name__}: {exc}")
            return recovered
        running = []
        for path in layout.list_run_files(base_dir, instance_id):
            try:
                if read_manifest(path).status is RunStatus.Running:
                    running.append(path.name)
            except Exception:  # noqa: BLE001 - an unreadable file is the sweep's business
                continue
        if not running:
            break
        if time.monotonic() > deadline:
            problems.append(f"files still Running after repeated boots: {running}")
            break
        time.sleep(0.1)
    if any(status == str(RunStatus.Quarantined) for status in recovered.values()):
        problems.append(f"a predecessor was Quarantined: {recovered}")
    new_files = {p.name for p in layout.list_run_files(base_dir, instance_id)} - before - ours
    if len(new_files) > 1:
        problems.append(f"the killed trader left more than one run file: {sorted(new_files)}")
    return recovered


def _check_durable(base_dir: Path, instance_id: str, run_id: str, reported: int, problems: list[str]) -> tuple[int, int]:
    """Every seq <= `reported` is on disk, contiguous, hash-valid, with its own payload."""
    from nes.backend import layout
    from nes.backend.base import ScanDirection
    from nes.backend.lmdb import LmdbBackend

    try:
        backend = LmdbBackend.open_sealed_file(layout.run_file_path(base_dir, instance_id, run_id))
        try:
            on_disk = backend.high_watermark()
            entries = backend.scan_range(1, on_disk, ScanDirection.Forward)  # hash-checked, gap-checked
            manifest = backend.manifest()
        finally:
            backend.close()
    except Exception as exc:  # noqa: BLE001 - a trial reports, it does not crash the driver
        problems.append(f"reading the recovered run failed: {type(exc).__name__}: {exc}")
        return 0, reported
    if [e.seq for e in entries] != list(range(1, on_disk + 1)):
        problems.append("entries are not contiguous from 1")
    from nes.writer import RUN_ENDED_TOPIC

    bad = [e.seq for e in entries[1:] if e.payload != b"crash-entry-%08d" % e.seq and e.topic != RUN_ENDED_TOPIC]
    if any(e.topic == RUN_ENDED_TOPIC for e in entries[:-1]):
        problems.append("RunEnded is not the last entry")
    if bad:
        problems.append(f"payloads do not match their seq at {bad[:5]}")
    if manifest.high_watermark != on_disk:
        problems.append(f"manifest high_watermark {manifest.high_watermark} != last seq {on_disk}")
    return on_disk, max(0, reported - on_disk)


def run_trials(n: int, seed: int, base_dir: Path) -> dict[str, object]:
    rng = random.Random(seed)
    results = []
    for i in range(n):
        result = run_trial(base_dir, rng)
        results.append(result)
        print(
            f"trial {i + 1}/{n}: kill {result.target} after {result.kill_after_s}s: confirmed durable "
            f"{result.reported_durable}, on disk {result.on_disk}, {result.status}"
            + ("" if result.ok else f" PROBLEMS {result.problems}")
            + (f" UNREADABLE RUN FILES LEFT {result.unreadable_files}" if result.unreadable_files else ""),
            flush=True,
        )
    return {
        "trials": n,
        "seed": seed,
        "kills": dict(Counter(r.target for r in results)),
        "confirmed_entries": sum(r.reported_durable for r in results),
        "lost_durable_entries": sum(r.lost_durable_entries for r in results),
        "leaked_segments": sum(r.leaked_segments for r in results),
        "unreadable_run_files": sum(len(r.unreadable_files) for r in results),
        "never_committed_run_files": _never_committed(base_dir, INSTANCE_ID),
        "statuses": dict(Counter(r.status for r in results)),
        "failed_trials": sum(not r.ok for r in results),
        "max_reported_durable": max((r.reported_durable for r in results), default=0),
        "dir": str(base_dir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="base directory (default: a fresh temporary one)")
    ns = parser.parse_args(argv)
    base = ns.dir or Path(tempfile.mkdtemp(prefix="nes-crash-"))
    summary = run_trials(ns.n, ns.seed, base)
    print(json.dumps(summary))
    ok = summary["failed_trials"] == 0 and summary["lost_durable_entries"] == 0 and summary["leaked_segments"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
