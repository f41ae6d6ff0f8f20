"""The write path with real processes: a trader-side `EventStoreWriter`, the shm ring, the writer
sidecar process and a real LMDB file. Failures are provoked for real: SIGKILL of either side,
SIGSTOP of the writer, a file-size limit on the writer."""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from nes.backend.base import IndexKey, IndexKind, ScanDirection
from nes.backend.lmdb import LmdbBackend, read_manifest
from nes.backend.seal_record import seal_record_path
from nes.errors import CrashedPredecessor
from nes.halt import BackendDisk, BackpressureStall, WriterDied
from nes.headers import Headers
from nes.manifest import RunManifest, RunStatus
from nes.snapshot import compute_snapshot_content_hash
from nes.writer import (
    RUN_ENDED_TOPIC,
    EntryDraft,
    EventStoreWriter,
    HaltSignaled,
    InvalidDraft,
    RecordTooLarge,
    SubmitError,
    WriterClosed,
    WriterConfig,
    WriterHalted,
)

INSTANCE = "proc"
TESTS_DIR = Path(__file__).parent
DRAFT = EntryDraft("orders.submit", "SubmitOrder", b"x" * 200, 7)


def make_manifest(run_id: str = "1700000000-0000abcd", instance_id: str = INSTANCE) -> RunManifest:
    return RunManifest(run_id=run_id, instance_id=instance_id, start_ts_init=1)


def spawn(base: Path, config: WriterConfig | None = None) -> tuple[EventStoreWriter, list]:
    halts: list = []
    writer = EventStoreWriter.spawn(base, make_manifest(), config, halts.append)
    return writer, halts


def adopt(base: Path, manifest: RunManifest | None = None) -> LmdbBackend:
    """Open a run left Running (what recovery does): the backend holds it at its on-disk tail."""
    backend = LmdbBackend(base)
    with pytest.raises(CrashedPredecessor):
        backend.open_run(manifest or make_manifest())
    return backend


def run_file(base: Path) -> Path:
    return base / INSTANCE / f"{make_manifest().run_id}.lmdb"


def shm_names(token: str) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if token in name]


def ring_token(writer: EventStoreWriter) -> str:
    return writer._ring.names.segment.split("-")[1]


def wait_halted(writer: EventStoreWriter, timeout_s: float = 15.0) -> None:
    """Block on the writer's control fd (what an event loop would watch) until it reports a halt."""
    ready, _, _ = select.select([writer.control_fd], [], [], timeout_s)
    assert ready, "no halt was signalled on control_fd"
    assert writer.halted


def assert_entries_intact(backend: LmdbBackend, up_to: int) -> None:
    entries = backend.scan_range(1, up_to, __import__("nes").ScanDirection.Forward)  # hash-checked
    assert [e.seq for e in entries] == list(range(1, up_to + 1))


def test_spawned_writer_commits_anchors_seals_and_leaves_no_shm(tmp_path: Path) -> None:
    writer, halts = spawn(tmp_path)
    token = ring_token(writer)
    assert shm_names(token) == []  # unlinked as soon as the writer attached
    headers = Headers(correlation_id=uuid.uuid4(), causation_id=uuid.uuid4())
    last = 0
    for i in range(5000):
        keys = (IndexKey(IndexKind.ClientOrderId, f"O-{i % 100}"),) if i % 10 == 0 else ()
        last = writer.submit(EntryDraft("orders.submit", "SubmitOrder", b"p%d" % i, 1000 + i, headers, keys))
    assert writer.wait_durable(last, 10.0)
    assert writer.high_watermark >= last
    content_hash = compute_snapshot_content_hash(b"snapshot")
    anchor = writer.record_snapshot_anchor("snap-1", content_hash)
    assert anchor.high_watermark == last  # covers every entry submitted before it
    final = writer.close()
    assert final == last + 1
    assert writer._proc.returncode == 0
    with pytest.raises(WriterClosed):
        writer.submit(DRAFT)
    assert halts == []

    backend = LmdbBackend.open_sealed_file(run_file(tmp_path))
    try:
        manifest = backend.manifest()
        assert manifest.status is RunStatus.Ended and manifest.high_watermark == final
        assert_entries_intact(backend, final)
        assert backend.scan_seq(final).topic == RUN_ENDED_TOPIC
        assert backend.scan_seq(17).headers == headers
        assert backend.lookup_all(IndexKind.ClientOrderId, "O-0") == list(range(1, 5001, 100))
        assert backend.latest_snapshot_anchor() == anchor
    finally:
        backend.close()
    assert oct(run_file(tmp_path).stat().st_mode & 0o777) == "0o600"
    # beside the run file only its seal record: no boot record, no (empty) writer log
    seal = seal_record_path(run_file(tmp_path))
    assert oct(seal.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in (tmp_path / INSTANCE).iterdir()) == sorted([run_file(tmp_path).name, seal.name])


def test_sigkill_writer_mid_stream_halts_with_writer_died_and_loses_nothing_durable(tmp_path: Path) -> None:
    writer, halts = spawn(tmp_path)
    token = ring_token(writer)
    try:
        for _ in range(20000):
            writer.submit(DRAFT)
        seen_durable = writer.high_watermark
        os.kill(writer.writer_pid, signal.SIGKILL)
        wait_halted(writer)
        with pytest.raises(WriterHalted):  # at once, without blocking
            writer.submit(DRAFT)
    finally:
        writer.abandon()
    assert len(halts) == 1 and isinstance(halts[0], WriterDied)
    durable = halts[0].durable_high_watermark
    assert durable >= seen_durable
    backend = adopt(tmp_path)
    try:
        assert backend.high_watermark() >= durable
        assert_entries_intact(backend, durable)
    finally:
        backend.close()
    assert shm_names(token) == []


def test_sigkill_trader_writer_commits_everything_pushed_and_leaves_run_running(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(TESTS_DIR / "trader_child.py"), str(tmp_path), "1700000001-0000beef", "30000"],
        capture_output=True,
        timeout=60,
        cwd=TESTS_DIR.parent,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    try:
        psutil.Process(report["writer_pid"]).wait(timeout=30)  # it drains, commits, exits
    except psutil.NoSuchProcess:
        pass
    path = tmp_path / "crash" / "1700000001-0000beef.lmdb"
    assert read_manifest(path).status is RunStatus.Running  # the next boot's recovery seals it
    manifest = make_manifest("1700000001-0000beef", "crash")
    backend = adopt(tmp_path, manifest)
    try:
        assert backend.high_watermark() == report["pushed"] == 30000
        assert_entries_intact(backend, report["pushed"])
    finally:
        backend.close()
    assert shm_names(report["segment"].split("-")[1]) == []


def test_sigstop_writer_halts_with_backpressure_stall_and_accepted_entries_commit_after_sigcont(
    tmp_path: Path,
) -> None:
    config = WriterConfig(ring_bytes=1 << 16, max_record_bytes=4096, halt_threshold_s=0.25)
    writer, halts = spawn(tmp_path, config)
    pid = writer.writer_pid
    os.kill(pid, signal.SIGSTOP)
    accepted = 0
    try:
        with pytest.raises(HaltSignaled) as stalled:
            for _ in range(100000):
                accepted = writer.submit(DRAFT)
        assert stalled.value.stalled_for_s >= 0.25
        assert len(halts) == 1 and isinstance(halts[0], BackpressureStall)
        assert halts[0].accepted_high_watermark == accepted  # in the ring, still being committed
        with pytest.raises(WriterHalted):
            writer.submit(DRAFT)
        assert 0 < accepted < 100000
    finally:
        os.kill(pid, signal.SIGCONT)
    assert writer.wait_durable(accepted, 15.0)  # nothing accepted before the halt is lost
    writer.abandon()
    backend = adopt(tmp_path)
    try:
        assert backend.high_watermark() == accepted
        assert_entries_intact(backend, accepted)
    finally:
        backend.close()


@pytest.mark.parametrize("limit", [2 << 20, (2 << 20) + 1001], ids=["page-aligned", "short-write"])
def test_disk_full_halts_with_backend_disk_and_an_exact_high_watermark(tmp_path: Path, limit: int) -> None:
    # The limit also caps ftruncate of the ring segment, so the ring stays below it.
    config = WriterConfig(max_batch_entries=100, ring_bytes=1 << 20, max_record_bytes=4096)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # inherited by the writer only
    try:
        writer, halts = spawn(tmp_path, config)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    try:
        with pytest.raises(SubmitError):
            for _ in range(200000):
                writer.submit(DRAFT)
                if writer.halted:
                    writer.submit(DRAFT)
        wait_halted(writer)
    finally:
        writer.abandon()
    assert len(halts) == 1 and isinstance(halts[0], BackendDisk), halts  # its exit is no second halt
    durable = halts[0].durable_high_watermark
    assert durable > 0
    backend = adopt(tmp_path)
    try:
        assert backend.high_watermark() == durable  # exactly: no partial batch is visible
        assert_entries_intact(backend, durable)
    finally:
        backend.close()


def test_invalid_drafts_are_refused_before_the_ring_and_it_stays_usable(tmp_path: Path) -> None:
    writer, halts = spawn(tmp_path, WriterConfig(max_record_bytes=4096))
    with pytest.raises(RecordTooLarge, match="max_record_bytes 4096"):
        writer.submit(EntryDraft("orders.submit", "SubmitOrder", b"x" * 5000, 1))
    with pytest.raises(InvalidDraft, match="UTF-8"):
        EntryDraft("orders.\udcff", "SubmitOrder", b"", 1)
    with pytest.raises(InvalidDraft):
        EntryDraft("orders.*", "SubmitOrder", b"", 1)
    with pytest.raises(ValueError, match="version-4"):
        Headers(correlation_id=uuid.uuid1())
    assert writer.submit(DRAFT) == 1  # refused drafts consumed no seq
    assert writer.close() == 2
    assert halts == []


def test_a_failing_halt_hook_that_abandons_the_writer_leaves_it_consistent(tmp_path: Path) -> None:
    calls: list = []
    writer: EventStoreWriter | None = None

    def hook(reason) -> None:  # noqa: ANN001
        calls.append(reason)
        writer.abandon()  # from the control thread itself
        raise RuntimeError("hook bug")

    writer = EventStoreWriter.spawn(tmp_path, make_manifest(), None, hook)
    assert writer.submit(DRAFT) == 1
    assert writer.wait_durable(1, 10.0)
    os.kill(writer.writer_pid, signal.SIGKILL)
    assert writer._writer_exited.wait(15.0)  # the control thread finished despite the hook
    assert len(calls) == 1 and isinstance(calls[0], WriterDied)
    with pytest.raises(WriterClosed):
        writer.submit(DRAFT)
    assert writer.high_watermark == 1 and writer.wait_durable(1, 0.1)
    assert writer.control_fd == -1


def test_an_anchor_ack_that_never_comes_halts_with_backend_error(tmp_path: Path) -> None:
    from nes.errors import Backend
    from nes.halt import BackendError

    writer, halts = spawn(tmp_path, WriterConfig(ack_timeout_s=0.3, close_timeout_s=5.0))
    pid = writer.writer_pid
    assert writer.wait_durable(writer.submit(DRAFT), 10.0)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(Backend, match="snapshot anchor ack stalled"):
            writer.record_snapshot_anchor("snap-1", "blake3:" + "0" * 64)
        assert len(halts) == 1 and isinstance(halts[0], BackendError)
        assert halts[0].durable_high_watermark == 1
        with pytest.raises(WriterHalted):
            writer.submit(DRAFT)
    finally:
        os.kill(pid, signal.SIGCONT)
        writer.abandon()


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


@pytest.mark.parametrize("linger_s", [0.0, 0.2])
def test_writer_lingers_then_parks_and_burns_no_cpu_when_idle(tmp_path: Path, linger_s: float) -> None:
    """After a burst the writer polls for `idle_linger_s` (its CPU shows it), then parks on the
    semaphore: a second of idleness after that costs it (almost) no CPU."""
    writer, halts = spawn(tmp_path, WriterConfig(idle_linger_s=linger_s))
    try:
        pid = writer.writer_pid
        seq = 0
        for _ in range(100):
            seq = writer.submit(DRAFT)
        assert writer.wait_durable(seq, 10.0)
        # the writer parks once its linger is over: its flag in the ring header says so
        deadline = time.monotonic() + 10.0
        while writer._ring._consumer_waiting.value == 0:
            assert time.monotonic() < deadline, "the writer never parked"
            time.sleep(0.01)
        before, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(1.0)  # the measurement window: the writer has nothing to do
        used = _cpu_seconds(pid) - before
        assert used / (time.monotonic() - t0) < 0.05, f"idle writer used {used:.3f} s of CPU"
        # a submit after the park still wakes it at once
        seq = writer.submit(DRAFT)
        assert writer.wait_durable(seq, 10.0)
        assert writer.close() == seq + 1
    finally:
        if not writer._closed:
            writer.abandon()
    assert halts == []


# ---- threads, writer death, inherited pipes (issue 8) -----------------------------------------
@pytest.mark.parametrize("mode", ["close", "stalled"])
def test_waiters_in_wait_durable_while_another_thread_closes_get_their_result_never_a_crash(
    tmp_path: Path, mode: str
) -> None:
    """Threads blocked in wait_durable while the main thread closes the writer (or closes it
    after a backpressure-stall halt): each gets True/False, the process never dies (SIGSEGV
    when the ring was unmapped under them). Run in a child so a crash fails the test."""
    iterations = "25" if mode == "close" else "6"
    done = subprocess.run(
        [sys.executable, str(TESTS_DIR / "close_race_child.py"), str(tmp_path), iterations, mode],
        capture_output=True,
        timeout=180,
        cwd=TESTS_DIR.parent,
    )
    assert done.returncode == 0, (done.returncode, done.stderr.decode()[-2000:])
    assert done.stdout.decode().split() == ["ok", iterations]


def test_submits_from_several_threads_never_share_a_seq_and_all_land_in_order(tmp_path: Path) -> None:
    """Four threads submitting at once (GIL switches forced often): every seq is handed out
    once, the writer never halts, and each entry on disk is the one its submit was told."""
    writer, halts = spawn(tmp_path)
    per_thread = 5000
    told: dict[int, bytes] = {}
    errors: list[BaseException] = []
    barrier = __import__("threading").Barrier(4)

    def submit_all(k: int) -> None:
        barrier.wait()
        try:
            for i in range(per_thread):
                payload = b"t%d-%06d" % (k, i)
                told[writer.submit(EntryDraft("orders.submit", "SubmitOrder", payload, 7))] = payload
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [__import__("threading").Thread(target=submit_all, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(old_interval)
    try:
        assert errors == [] and halts == []
        assert sorted(told) == list(range(1, 4 * per_thread + 1))  # no seq given twice
        assert writer.wait_durable(4 * per_thread, 15.0)
    finally:
        final = writer.close()
    assert final == 4 * per_thread + 1
    backend = LmdbBackend.open_sealed_file(run_file(tmp_path))
    try:
        entries = backend.scan_range(1, 4 * per_thread, __import__("nes").ScanDirection.Forward)
        assert {e.seq: e.payload for e in entries} == told
    finally:
        backend.close()


def _file_high_watermark(path: Path) -> int:
    from nes.durable import read_durable_high_watermark

    return read_durable_high_watermark(path)


def test_writer_death_halt_reports_the_run_files_exact_high_watermark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the writer when the disk is ahead of the high-watermark it published in the ring
    (its fault hook stops it between a commit and its publication): the WriterDied halt and the
    writer's high_watermark report the run file's value, not the ring's lower bound."""
    monkeypatch.setenv("NES_WRITER_FAULT", "stop-before-publish:1000")
    writer, halts = spawn(tmp_path, WriterConfig(halt_threshold_s=30.0))  # no stall halt while stopped
    pid = writer.writer_pid
    try:
        for _ in range(2000):
            writer.submit(DRAFT)
        stopped_by = time.monotonic() + 30.0
        while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
            assert time.monotonic() < stopped_by, "the writer did not stop at its fault hook"
            time.sleep(0.01)
        published = writer.high_watermark
        on_disk = _file_high_watermark(run_file(tmp_path))
        assert published < 1000 <= on_disk
        os.kill(pid, signal.SIGKILL)
        wait_halted(writer)
    finally:
        writer.abandon()
    assert len(halts) == 1 and isinstance(halts[0], WriterDied)
    assert halts[0].durable_high_watermark == on_disk
    assert writer.high_watermark == on_disk
    assert writer.wait_durable(on_disk, 0.0)
    assert _file_high_watermark(run_file(tmp_path)) == on_disk


def test_orphaned_writer_does_not_hold_the_traders_stdout_stderr(tmp_path: Path) -> None:
    """A supervisor reads a trader's stdout/stderr to EOF; the trader dies while its writer
    lives on (here: stopped, so it cannot exit): EOF must come with the trader's death."""
    child = subprocess.Popen(
        [sys.executable, str(TESTS_DIR / "boot_child.py"), str(tmp_path), "pipes", "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=TESTS_DIR.parent,
    )
    writer_pid = None
    try:
        line = child.stdout.readline().decode().split()
        assert line[:1] == ["ready"], line
        writer_pid = int(line[2])
        trader_out = {os.readlink(f"/proc/{child.pid}/fd/{fd}") for fd in (1, 2)}
        writer_out = {os.readlink(f"/proc/{writer_pid}/fd/{fd}") for fd in (1, 2)}
        assert not trader_out & writer_out, (trader_out, writer_out)
        os.kill(writer_pid, signal.SIGSTOP)  # an orphan that is slow to go
        child.kill()
        child.wait(10)
        deadline = time.monotonic() + 5.0
        open_fds = [child.stdout.fileno(), child.stderr.fileno()]
        while open_fds and time.monotonic() < deadline:
            ready, _, _ = select.select(open_fds, [], [], max(0.0, deadline - time.monotonic()))
            for fd in ready:
                if not os.read(fd, 65536):
                    open_fds.remove(fd)
        assert open_fds == [], "the trader's pipes stayed open after it died (held by its writer)"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if writer_pid is not None:
            try:
                os.kill(writer_pid, signal.SIGCONT)
                psutil.Process(writer_pid).wait(30)
            except psutil.NoSuchProcess:
                pass
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
    log = tmp_path / "pipes" / f"{line[3]}.writer.log"
    assert not log.exists() or oct(log.stat().st_mode & 0o777) == "0o600"


def _transactions(path: Path) -> int:
    import lmdb

    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=16)
    try:
        return int(env.info()["last_txnid"])
    finally:
        env.close()


@pytest.mark.parametrize("interval_s, most", [(0.0, None), (0.25, 12)])
def test_the_commit_interval_bounds_how_often_a_trickle_of_submits_is_committed(tmp_path: Path, interval_s: float, most: int | None) -> None:
    """~100 submits spread over ~1 s: without an interval each one is committed on its own (the
    ring drains between them); with 0.25 s the writer commits about 4 times a second (plus the
    run's creation and close: ~8 transactions in all)."""
    writer, halts = spawn(tmp_path, WriterConfig(min_commit_interval_s=interval_s, max_batch_latency_s=2.0))
    submitted = 0
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        writer.submit(DRAFT)
        submitted += 1
        time.sleep(0.01)  # spreads the submits out in time (a trickle); nothing waits on it
    assert writer.close() == submitted + 1 and not halts
    commits = _transactions(run_file(tmp_path))
    if most is None:
        assert commits > submitted // 5, (commits, submitted)  # about one each; a slow fsync merges a few
    else:
        assert commits <= most, (commits, submitted)
    with LmdbBackend.open_sealed_file(run_file(tmp_path)) as backend:
        assert [e.seq for e in backend.scan_range(1, submitted + 1, ScanDirection.Forward)] == list(range(1, submitted + 2))


def _holding_a_batch(writer: EventStoreWriter, seq: int) -> None:
    """Return once the writer has popped everything up to `seq` but not made it durable: it
    is holding that batch back for its commit interval (dozing)."""
    ring = writer._ring
    assert ring is not None
    deadline = time.monotonic() + 10.0
    while ring._tail.value != ring._producer_head:
        assert time.monotonic() < deadline, "the writer never popped the entry"
        time.sleep(0.001)
    assert writer.high_watermark < seq


def test_wait_durable_is_not_held_back_by_the_commit_interval(tmp_path: Path) -> None:
    """A thread that starts waiting for durability while the writer holds a batch back wakes
    it, and the batch is committed at once: the wait ends long before the interval (10 s) or
    the batch latency (20 s) would end it."""
    writer, halts = spawn(tmp_path, WriterConfig(min_commit_interval_s=10.0, max_batch_latency_s=20.0))
    try:
        for _ in range(3):
            writer.wait_durable(writer.submit(DRAFT), timeout=30.0)  # a commit just began: the next batch is held
            seq = writer.submit(DRAFT)
            _holding_a_batch(writer, seq)
            started = time.monotonic()
            assert writer.wait_durable(seq, timeout=5.0), "wait_durable waited for the commit interval"
            assert time.monotonic() - started < 5.0
    finally:
        writer.close()
    assert not halts


def test_an_anchor_or_close_does_not_wait_for_the_commit_interval(tmp_path: Path) -> None:
    """Control records wake a dozing writer: an anchor requested while the writer holds a batch
    back for 10 s is acknowledged well inside its 2 s ack timeout, and so is the close."""
    writer, halts = spawn(tmp_path, WriterConfig(min_commit_interval_s=10.0, max_batch_latency_s=20.0, ack_timeout_s=2.0))
    writer.wait_durable(writer.submit(DRAFT), timeout=30.0)
    seq = writer.submit(DRAFT)
    _holding_a_batch(writer, seq)
    anchor = writer.record_snapshot_anchor("snap-1", compute_snapshot_content_hash(b"snapshot"))
    assert anchor.high_watermark == seq and writer.high_watermark >= seq
    _holding_a_batch(writer, writer.submit(DRAFT))
    started = time.monotonic()
    assert writer.close() == seq + 2
    assert time.monotonic() - started < 5.0 and not halts


def test_a_producer_blocked_on_a_full_ring_wakes_the_dozing_writer(tmp_path: Path) -> None:
    """A 4 KiB ring holds about a dozen of these entries. The writer holds a batch back for 10 s;
    a producer that finds the ring full and waits for space posts it awake, so space is freed
    at once: no submit waits long enough (1 s) to halt the run as stalled."""
    config = WriterConfig(
        ring_bytes=4096, max_record_bytes=1024, min_commit_interval_s=10.0, max_batch_latency_s=20.0, halt_threshold_s=1.0
    )
    writer, halts = spawn(tmp_path, config)
    writer.wait_durable(writer.submit(DRAFT), timeout=30.0)
    _holding_a_batch(writer, writer.submit(DRAFT))
    count = 100  # ~8 ring-fulls, pushed while the writer dozes
    for _ in range(count):
        writer.submit(DRAFT)
    assert not halts and not writer.halted
    assert writer.close() == count + 3
