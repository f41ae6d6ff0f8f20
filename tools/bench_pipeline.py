"""Benchmark the write path: trader process -> shm ring -> writer process -> fsynced LMDB.

    python tools/bench_pipeline.py [--quick]

Figures, with baselines measured in the same run (ratios survive a noisy machine):
- durable throughput through the ring (`throughput_entries_per_s`), against raw py-lmdb appends of
  the same stored bytes at batch 1000 with fsync (`raw_lmdb_entries_per_s`, the physical limit
  here) and the same pipeline with `multiprocessing.Queue` in place of the ring
  (`mpqueue_entries_per_s`);
- submit latency p50/p99/p99.9/p99.99 and submit -> durable latency p50/p99 at 50k entries/s
  offered (bursts of 50 every millisecond), and the writer's CPU meanwhile (its idle linger
  polls the ring between bursts, so that submits need no wake-up syscall);
- writer memory at start, after the first runs and after the long run (5M entries; 500k with
  --quick): private RSS (`writer_rss_*`, what must stay flat from mid to end) beside total and
  file-backed RSS (LMDB page cache);
- idle writer CPU; the latency of one small fsynced raw commit (the floor under durability);
- the mean cost of building an `EntryDraft` (the runs above reuse one draft, so it is not in
  the submit latency; a trader pays it once per entry before `submit`).
The ring pipeline runs first, in a trader process that has done nothing else; the baselines run
after it (its run file deleted) on the same disk. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import shutil
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import lmdb
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nes.backend.lmdb import LmdbBackend  # noqa: E402
from nes.ids import build_run_id  # noqa: E402
from nes.manifest import RunManifest  # noqa: E402
from nes.sidecar import WriterCore, should_flush  # noqa: E402
from nes.writer import EntryDraft, EventStoreWriter, WriterConfig  # noqa: E402

PAYLOAD = b"p" * 200
DRAFT = EntryDraft("orders.submit", "SubmitOrder", PAYLOAD, 1_700_000_000_000_000_000)
INSTANCE = "bench"


def manifest() -> RunManifest:
    return RunManifest(run_id=build_run_id(time.time_ns()), instance_id=INSTANCE, start_ts_init=1)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# ---- baselines ------------------------------------------------------------------------------------
def raw_lmdb(base: Path, count: int, batch: int) -> float:
    """py-lmdb putmulti(append=True) of the bytes the writer stores (hash || frame), fsync on."""
    value = b"h" * 32 + DRAFT.record(1, 1)  # a FRAME record: the canonical frame itself
    env = lmdb.open(str(base / "raw.lmdb"), subdir=False, map_size=1 << 34, max_dbs=2, sync=True, metasync=True)
    db = env.open_db(b"entries")
    pack = struct.Struct(">Q").pack
    start = time.perf_counter()
    for first in range(1, count + 1, batch):
        items = [(pack(seq), value) for seq in range(first, min(first + batch, count + 1))]
        with env.begin(write=True, db=db) as txn:
            txn.cursor().putmulti(items, append=True)
    elapsed = time.perf_counter() - start
    env.close()
    return count / elapsed


def raw_commit_latency(base: Path, commits: int, batch: int) -> tuple[float, float]:
    """p50/p99 (ms) of one small fsynced py-lmdb commit: the floor under submit -> durable."""
    value = b"h" * 32 + DRAFT.record(1, 1)  # a FRAME record: the canonical frame itself
    env = lmdb.open(str(base / "raw-latency.lmdb"), subdir=False, map_size=1 << 32, max_dbs=2, sync=True, metasync=True)
    db = env.open_db(b"entries")
    pack = struct.Struct(">Q").pack
    times: list[float] = []
    seq = 0
    for _ in range(commits):
        items = [(pack(seq + i + 1), value) for i in range(batch)]
        seq += batch
        start = time.perf_counter()
        with env.begin(write=True, db=db) as txn:
            txn.cursor().putmulti(items, append=True)
        times.append((time.perf_counter() - start) * 1e3)
    env.close()
    times.sort()
    return percentile(times, 0.5), percentile(times, 0.99)


def memory_mb(pid: int) -> dict[str, float]:
    """Writer memory from /proc: private (anon) RSS is what must stay flat; file-backed RSS is
    the LMDB map's page cache (reclaimable) and shmem is the ring."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def _mpqueue_writer(base: str, run: RunManifest, inbox: mp.Queue, done: mp.Queue) -> None:
    backend = LmdbBackend(base)
    backend.open_run(run)
    core = WriterCore(backend)
    deadline = 0.0
    while True:
        try:
            record = inbox.get(timeout=0.001 if core.pending else 1.0)
        except queue.Empty:
            record = None
        if record == b"":
            done.put(core.flush())
            backend.close()
            return
        if record is not None:
            if core.pending == 0:
                deadline = time.monotonic() + 0.005
            core.add_entries([(DRAFT.record_kind, record)])
        if should_flush(core.pending, 1000, record is None, time.monotonic(), deadline):
            core.flush()


def mpqueue_pipeline(base: Path, count: int) -> float:
    """The same trader -> writer process -> LMDB pipeline over multiprocessing.Queue."""
    ctx = mp.get_context("spawn")
    inbox: mp.Queue = ctx.Queue(maxsize=50_000)
    done: mp.Queue = ctx.Queue()
    child = ctx.Process(target=_mpqueue_writer, args=(str(base / "mpq"), manifest(), inbox, done))
    child.start()
    record = DRAFT.record
    start = time.perf_counter()
    for seq in range(1, count + 1):
        inbox.put(record(seq, seq))
    inbox.put(b"")
    final = done.get(timeout=600)
    elapsed = time.perf_counter() - start
    child.join()
    assert final == count, final
    for q in (inbox, done):  # stop their feeder threads: they must not linger into the ring's runs
        q.close()
        q.join_thread()
    return count / elapsed


# ---- the ring pipeline ------------------------------------------------------------------------------
def throughput(writer: EventStoreWriter, count: int) -> float:
    submit = writer.submit
    start = time.perf_counter()
    for _ in range(count):
        last = submit(DRAFT)
    assert writer.wait_durable(last, 600)
    return count / (time.perf_counter() - start)


def paced(writer: EventStoreWriter, rate: float, seconds: float, burst: int = 50) -> dict[str, float]:
    """Offer `rate` entries/s in bursts of `burst` (sleeping between bursts, as a trader waiting
    for market data would); time each submit, and for the last entry of every burst the time
    until a waiting thread sees it durable (`wait_durable`, the trader's own API). Also the
    writer's CPU over the run (what its idle linger costs between bursts)."""
    writer_process = psutil.Process(writer.writer_pid)
    cpu_before, wall_before = writer_process.cpu_times(), time.perf_counter()
    interval = burst / rate
    bursts = int(rate * seconds / burst)
    submit = writer.submit
    now = time.perf_counter
    submit_us: list[float] = []
    durable_ms: list[float] = []
    submitted: queue.Queue[tuple[int, float] | None] = queue.Queue()

    def watch() -> None:
        while (item := submitted.get()) is not None:
            seq, at = item
            assert writer.wait_durable(seq, 30.0)
            durable_ms.append((now() - at) * 1e3)

    watcher = threading.Thread(target=watch)
    watcher.start()
    next_at = now()
    for _ in range(bursts):
        delay = next_at - now()
        if delay > 0:
            time.sleep(delay)
        for _ in range(burst):
            t0 = now()
            seq = submit(DRAFT)
            submit_us.append((now() - t0) * 1e6)
        submitted.put((seq, t0))
        next_at += interval
    submitted.put(None)
    watcher.join()
    cpu_after, wall = writer_process.cpu_times(), time.perf_counter() - wall_before
    writer_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    submit_us.sort()
    durable_ms.sort()
    return {
        "offered_entries_per_s": rate,
        "submit_p50_us": percentile(submit_us, 0.50),
        "submit_p99_us": percentile(submit_us, 0.99),
        "submit_p999_us": percentile(submit_us, 0.999),
        "submit_p9999_us": percentile(submit_us, 0.9999),
        "durable_p50_ms": percentile(durable_ms, 0.50),
        "durable_p99_ms": percentile(durable_ms, 0.99),
        "writer_cpu_percent_at_offered": 100.0 * writer_cpu / wall,
    }


def draft_build_us(count: int = 100_000) -> float:
    """Mean cost of building an `EntryDraft` (validation and pre-encoding: the part of a trader's
    per-entry cost that `submit` latency does not include, since the runs reuse one draft)."""
    build = EntryDraft
    start = time.perf_counter()
    for _ in range(count):
        build("orders.submit", "SubmitOrder", PAYLOAD, 1_700_000_000_000_000_000)
    return (time.perf_counter() - start) / count * 1e6


def idle_cpu_percent(pid: int, seconds: float) -> float:
    process = psutil.Process(pid)
    before = process.cpu_times()
    wall = time.perf_counter()
    time.sleep(seconds)  # the measurement window: the writer has nothing to do
    after = process.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / (time.perf_counter() - wall)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller runs (under a minute)")
    args = parser.parse_args()
    throughput_count = 300_000 if args.quick else 1_000_000
    long_count = 500_000 if args.quick else 5_000_000
    paced_seconds = 3.0 if args.quick else 10.0

    with tempfile.TemporaryDirectory(prefix="nes-bench-") as tmp:
        base = Path(tmp)
        # The ring pipeline first, in a trader process that has done nothing else yet (an
        # earlier baseline's leftovers, threads or heap, showed up in its tail latency); its run
        # file is deleted before the baselines run on the same disk.
        ring_base = base / "ring"
        writer = EventStoreWriter.spawn(ring_base, manifest(), WriterConfig())
        try:
            pid = writer.writer_pid
            idle = idle_cpu_percent(pid, 2.0)
            mem_start = memory_mb(pid)
            ring_rate = throughput(writer, throughput_count)
            print(f"shm ring pipeline:                     {ring_rate:,.0f} entries/s durable")
            latency = paced(writer, 50_000, paced_seconds)
            print(f"at 50k/s: {json.dumps(latency)}")
            done = throughput_count + int(50_000 * paced_seconds)
            mem_mid = memory_mb(pid)  # after the first runs: flat from here on means no leak
            if long_count > done:
                throughput(writer, long_count - done)
            mem_end = memory_mb(pid)
            print(f"writer memory (MiB) at start {mem_start}, after {max(long_count, done):,} entries {mem_end}")
            writer.close()
        finally:
            if not writer._closed:
                writer.abandon()
        shutil.rmtree(ring_base)

        draft_us = draft_build_us()
        print(f"EntryDraft build: {draft_us:.3f} us")
        raw = raw_lmdb(base, throughput_count, 1000)
        print(f"raw py-lmdb putmulti batch 1000 fsync: {raw:,.0f} entries/s")
        raw_p50, raw_p99 = raw_commit_latency(base, 1000, 50)
        print(f"raw fsynced commit of 50 entries: p50 {raw_p50:.3f} ms, p99 {raw_p99:.3f} ms")
        mpq = mpqueue_pipeline(base, min(throughput_count, 300_000))
        print(f"multiprocessing.Queue pipeline:        {mpq:,.0f} entries/s")

    result = {
        "throughput_entries_per_s": round(ring_rate),
        "raw_lmdb_entries_per_s": round(raw),
        "mpqueue_entries_per_s": round(mpq),
        "ring_vs_raw_lmdb": round(ring_rate / raw, 3),
        "ring_vs_mpqueue": round(ring_rate / mpq, 3),
        **{k: round(v, 3) for k, v in latency.items()},
        "draft_build_mean_us": round(draft_us, 3),
        "raw_commit_p50_ms": round(raw_p50, 3),
        "raw_commit_p99_ms": round(raw_p99, 3),
        "writer_rss_start_mb": round(mem_start["RssAnon"], 1),
        "writer_rss_mid_mb": round(mem_mid["RssAnon"], 1),
        "writer_rss_mid_entries": done,
        "writer_rss_end_mb": round(mem_end["RssAnon"], 1),
        "writer_vmrss_start_mb": round(mem_start["VmRSS"], 1),
        "writer_vmrss_end_mb": round(mem_end["VmRSS"], 1),
        "writer_rss_file_end_mb": round(mem_end["RssFile"], 1),
        "writer_rss_entries": max(long_count, done),
        "writer_idle_cpu_percent": round(idle, 3),
        "quick": args.quick,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
