"""Benchmark the shared-memory SPSC ring against multiprocessing.Queue and a plain pipe.

    python tools/bench_ring.py [--quick] [--records N] [--record-bytes B] [--capacity BYTES]

Producer in this process, consumer in a spawned child process, B-byte records (default 200); the
consumer idles like the writer sidecar (lingers `DEFAULT_IDLE_LINGER_S`, then parks).
Measured in this same run:
- `ring_records_per_s`: N records pushed through a `capacity`-byte ring (producer sleeps in
  `wait_for_space` when full), timed from the first push until the child reports it popped all N;
- `push_p50_us` / `push_p99_us` / `push_p999_us`: `time.perf_counter_ns` around each `try_push`
  in a second run whose ring holds every record, so the consumer always keeps up and no push is
  refused (refusals are counted and reported);
- `mpqueue_records_per_s`: the same N records through `multiprocessing.Queue` (put bytes / get);
- `pipe_records_per_s`: the same N records through `os.pipe`, one `os.write` of a 4-byte length
  prefix plus payload per record, parsed by the child.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from nes.writer import DEFAULT_IDLE_LINGER_S  # noqa: E402
from shm.ring import Ring, RingNames  # noqa: E402

CTX = multiprocessing.get_context("spawn")
KIND = 1


# -- children -------------------------------------------------------------------------------------


def ring_consumer(names_json: bytes, count: int, conn) -> None:
    ring = Ring.attach(msgspec.json.decode(names_json, type=RingNames))
    try:
        conn.send("attached")
        got = 0
        total = 0
        while got < count:
            batch = ring.pop(4096)
            if not batch:
                ring.wait_for_data(1.0, DEFAULT_IDLE_LINGER_S)  # idle like the writer sidecar
                continue
            got += len(batch)
            for _, payload in batch:
                total += len(payload)
        conn.send(("done", got, total))
    finally:
        ring.close()


def mpqueue_consumer(queue, count: int, conn) -> None:
    conn.send("ready")
    total = 0
    for _ in range(count):
        total += len(queue.get())
    conn.send(("done", count, total))


def pipe_consumer(read_fd: int, count: int) -> None:
    """Runs in a subprocess (the fd is passed with pass_fds); reports on stdout."""
    print("ready", flush=True)
    buf = bytearray()
    got = 0
    total = 0
    while got < count:
        chunk = os.read(read_fd, 1 << 20)
        if not chunk:
            break
        buf += chunk
        off = 0
        end = len(buf)
        while end - off >= 4:
            n = int.from_bytes(buf[off : off + 4], "little")
            if end - off - 4 < n:
                break
            total += n
            off += 4 + n
            got += 1
        del buf[:off]
    print(json.dumps({"got": got, "total": total}), flush=True)


# -- producers ------------------------------------------------------------------------------------


def _start_ring_consumer(ring: Ring, count: int):
    parent_conn, child_conn = CTX.Pipe()
    proc = CTX.Process(target=ring_consumer, args=(msgspec.json.encode(ring.names), count, child_conn))
    proc.start()
    if not parent_conn.poll(60) or parent_conn.recv() != "attached":
        raise RuntimeError("ring consumer did not attach")
    ring.unlink_names()
    return proc, parent_conn


def _finish(proc, conn, count: int, record_bytes: int) -> None:
    if not conn.poll(300):
        proc.kill()
        raise RuntimeError("consumer did not finish")
    tag, got, total = conn.recv()
    proc.join(60)
    if got != count or total != count * record_bytes:
        raise RuntimeError(f"consumer got {got} records / {total} bytes, expected {count} / {count * record_bytes}")


def bench_ring_throughput(count: int, record: bytes, capacity: int) -> float:
    ring = Ring.create(capacity, len(record))
    try:
        proc, conn = _start_ring_consumer(ring, count)
        push = ring.try_push
        wait = ring.wait_for_space
        t0 = time.perf_counter()
        for _ in range(count):
            while not push(KIND, record):
                wait(0.01)
        _finish(proc, conn, count, len(record))
        return count / (time.perf_counter() - t0)
    finally:
        ring.close()


def bench_push_latency(count: int, record: bytes) -> dict:
    capacity = (count + 16) * (8 + ((len(record) + 7) & ~7))  # holds every record: never full
    capacity += -capacity % 8
    ring = Ring.create(capacity, len(record))
    try:
        proc, conn = _start_ring_consumer(ring, count)
        push = ring.try_push
        clock = time.perf_counter_ns
        samples = [0] * count
        refused = 0
        for i in range(count):
            t = clock()
            ok = push(KIND, record)
            samples[i] = clock() - t
            if not ok:
                refused += 1
                while not push(KIND, record):
                    ring.wait_for_space(0.01)
        _finish(proc, conn, count, len(record))
    finally:
        ring.close()
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))] / 1000.0

    return {"push_p50_us": pct(0.50), "push_p99_us": pct(0.99), "push_p999_us": pct(0.999), "push_refused": refused}


def bench_mpqueue(count: int, record: bytes) -> float:
    queue = CTX.Queue()
    parent_conn, child_conn = CTX.Pipe()
    proc = CTX.Process(target=mpqueue_consumer, args=(queue, count, child_conn))
    proc.start()
    if not parent_conn.poll(60) or parent_conn.recv() != "ready":
        raise RuntimeError("queue consumer did not start")
    put = queue.put
    t0 = time.perf_counter()
    for _ in range(count):
        put(record)
    _finish(proc, parent_conn, count, len(record))
    rate = count / (time.perf_counter() - t0)
    queue.close()
    queue.join_thread()
    return rate


def bench_pipe(count: int, record: bytes) -> float:
    read_fd, write_fd = os.pipe()
    child = subprocess.Popen(
        [sys.executable, __file__, "--pipe-child", str(read_fd), str(count)],
        pass_fds=[read_fd],
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(read_fd)
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("pipe consumer did not start")
        framed = len(record).to_bytes(4, "little") + record
        write = os.write
        t0 = time.perf_counter()
        for _ in range(count):
            write(write_fd, framed)
        result = json.loads(child.stdout.readline())
        rate = count / (time.perf_counter() - t0)
    finally:
        os.close(write_fd)
        child.wait(60)
    if result["got"] != count or result["total"] != count * len(record):
        raise RuntimeError(f"pipe consumer got {result}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300k records (default 2M)")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--record-bytes", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=1 << 20, help="ring data bytes for the throughput run")
    parser.add_argument("--pipe-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipe_child:
        pipe_consumer(*args.pipe_child)
        return
    count = args.records or (300_000 if args.quick else 2_000_000)
    latency_count = min(count, 200_000)
    record = bytes(range(256))[: args.record_bytes] * (args.record_bytes // 256 + 1)
    record = record[: args.record_bytes]

    results: dict = {"records": count, "record_bytes": len(record), "ring_capacity": args.capacity}
    results["ring_records_per_s"] = round(bench_ring_throughput(count, record, args.capacity))
    print(f"ring      {results['ring_records_per_s']:>12,} records/s", file=sys.stderr)
    results["mpqueue_records_per_s"] = round(bench_mpqueue(count, record))
    print(f"mp.Queue  {results['mpqueue_records_per_s']:>12,} records/s", file=sys.stderr)
    results["pipe_records_per_s"] = round(bench_pipe(count, record))
    print(f"os.pipe   {results['pipe_records_per_s']:>12,} records/s", file=sys.stderr)
    latency = bench_push_latency(latency_count, record)
    results.update({k: round(v, 3) if isinstance(v, float) else v for k, v in latency.items()})
    results["latency_records"] = latency_count
    results["ring_vs_mpqueue"] = round(results["ring_records_per_s"] / results["mpqueue_records_per_s"], 2)
    results["ring_vs_pipe"] = round(results["ring_records_per_s"] / results["pipe_records_per_s"], 2)
    print(
        f"try_push  p50 {results['push_p50_us']} us  p99 {results['push_p99_us']} us  "
        f"p99.9 {results['push_p999_us']} us  (refused {results['push_refused']})",
        file=sys.stderr,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
