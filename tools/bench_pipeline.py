"""Benchmark the write path: trader process -> shm ring -> writer process -> fsynced LMDB.

    python tools/bench_pipeline.py [--quick]

Figures, with baselines measured in the same run (ratios survive a noisy machine):
- durable throughput through the ring (`throughput_entries_per_s`), against raw py-lmdb appends of
  the same stored bytes at batch 1000 with fsync (`raw_lmdb_entries_per_s`, the physical limit
  here) and the same pipeline with `multiprocessing.Queue` in place of the ring
  (`mpqueue_entries_per_s`);
- submit latency p50/p99/p99.9/p99.99 and submit -> durable latency p50/p99 at 50k entries/s
  offered (paced in a busy loop);
- writer RSS at start and after the long run (5M entries; 500k with --quick), idle writer CPU.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import struct
import sys
import tempfile
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
    value = b"h" * 32 + DRAFT.record(1, 1)[4:-2]
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
            core.add_entry(record)
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
    return count / elapsed


# ---- the ring pipeline ------------------------------------------------------------------------------
def throughput(writer: EventStoreWriter, count: int) -> float:
    submit = writer.submit
    start = time.perf_counter()
    for _ in range(count):
        last = submit(DRAFT)
    assert writer.wait_durable(last, 600)
    return count / (time.perf_counter() - start)


def paced(writer: EventStoreWriter, rate: float, seconds: float) -> dict[str, float]:
    """Submit at `rate` entries/s; time each submit and, for every 50th entry, submit -> durable."""
    interval = 1.0 / rate
    count = int(rate * seconds)
    submit = writer.submit
    ring = writer._ring
    now = time.perf_counter
    submit_us: list[float] = []
    pending: list[tuple[int, float]] = []  # (seq, submitted at), ascending
    durable_ms: list[float] = []
    next_at = now()
    for i in range(count):
        while True:  # pace, and observe durability while waiting for the slot
            t = now()
            if pending:
                hwm = ring.durable_high_watermark
                while pending and pending[0][0] <= hwm:
                    durable_ms.append((t - pending.pop(0)[1]) * 1e3)
            if t >= next_at:
                break
        t0 = now()
        seq = submit(DRAFT)
        t1 = now()
        submit_us.append((t1 - t0) * 1e6)
        if i % 50 == 0:
            pending.append((seq, t0))
        next_at += interval
    while pending:
        t = now()
        hwm = ring.durable_high_watermark
        while pending and pending[0][0] <= hwm:
            durable_ms.append((t - pending.pop(0)[1]) * 1e3)
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
    }


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
        raw = raw_lmdb(base, throughput_count, 1000)
        print(f"raw py-lmdb putmulti batch 1000 fsync: {raw:,.0f} entries/s")
        mpq = mpqueue_pipeline(base, min(throughput_count, 300_000))
        print(f"multiprocessing.Queue pipeline:        {mpq:,.0f} entries/s")

        writer = EventStoreWriter.spawn(base, manifest(), WriterConfig())
        try:
            pid = writer.writer_pid
            idle = idle_cpu_percent(pid, 2.0)
            rss_start = psutil.Process(pid).memory_info().rss / 2**20
            ring_rate = throughput(writer, throughput_count)
            print(f"shm ring pipeline:                     {ring_rate:,.0f} entries/s durable")
            latency = paced(writer, 50_000, paced_seconds)
            print(f"at 50k/s: {json.dumps(latency)}")
            done = throughput_count + int(50_000 * paced_seconds)
            if long_count > done:
                throughput(writer, long_count - done)
            rss_end = psutil.Process(pid).memory_info().rss / 2**20
            print(f"writer RSS {rss_start:.1f} MiB at start, {rss_end:.1f} MiB after {max(long_count, done):,} entries")
            writer.close()
        finally:
            if not writer._closed:
                writer.abandon()

    result = {
        "throughput_entries_per_s": round(ring_rate),
        "raw_lmdb_entries_per_s": round(raw),
        "mpqueue_entries_per_s": round(mpq),
        "ring_vs_raw_lmdb": round(ring_rate / raw, 3),
        "ring_vs_mpqueue": round(ring_rate / mpq, 3),
        **{k: round(v, 3) for k, v in latency.items()},
        "writer_rss_start_mb": round(rss_start, 1),
        "writer_rss_end_mb": round(rss_end, 1),
        "writer_rss_entries": max(long_count, done),
        "writer_idle_cpu_percent": round(idle, 3),
        "quick": args.quick,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
