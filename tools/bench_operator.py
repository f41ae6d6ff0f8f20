"""Benchmark the operator's commands against same-run baselines.

    python tools/bench_operator.py [--quick]

Figures (the last output line is one JSON object):
- `scan_entries_per_s`: the reader (`RunFile.iter_range`, hash-checked decode) over a run of
  N entries (1M; 200k with --quick) with headers and order-id indexes; `export_entries_per_s`:
  `export_run(..., "parquet")` of the same run (verification skipped; it is `nes verify`'s
  figure), so `export_vs_scan` is the export's cost over reading.
- `trace_1m_s`: one `nes trace --client-order-id` (library call: order index, correlation
  index, causation depths) plus one `--seq` causation chain, on the N-entry run; baseline
  `trace_by_scan_s`: finding the same order's entries by a full scan (no correlation index).
- `writer_with_follower_ratio`: durable throughput of the real pipeline (trader -> ring ->
  writer sidecar -> LMDB, entries with correlation headers) with a `nes tail -f` child
  following the run, divided by the same without a follower; runs alternate, best of each.
- `tail_follow_p50_ms` / `p99`: from `wait_durable` returning in the trader to the entry's
  line arriving on `nes tail -f --json`'s stdout, one entry every 5 ms.
- `correlation_index_us_per_entry` (entries with headers) and `..._no_headers_us_per_entry`:
  what deriving the `idx_correlation_id` rows adds to the writer's commit path, beside
  `blake3_us_per_entry`, hashing the same frames (the writer's own per-entry work).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from nes.backend.base import AppendEntry, IndexKey, IndexKind  # noqa: E402
from nes.backend.lmdb import LmdbBackend  # noqa: E402
from nes.entry import EventStoreEntry  # noqa: E402
from nes.headers import Headers  # noqa: E402
from nes.ids import build_run_id  # noqa: E402
from nes.manifest import RunManifest, RunStatus  # noqa: E402
from nes.ops.export import export_run  # noqa: E402
from nes.ops.runfile import RunFile  # noqa: E402
from nes.ops.trace import causation_chain, trace_order  # noqa: E402
from nes.writer import EntryDraft, EventStoreWriter, WriterConfig  # noqa: E402

INSTANCE = "bench"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
_enc = msgspec.msgpack.Encoder()


def manifest() -> RunManifest:
    return RunManifest(run_id=build_run_id(time.time_ns()), instance_id=INSTANCE, start_ts_init=1)


def build_run(base: Path, entries: int) -> tuple[Path, str]:
    """A sealed run of workflows of 5 entries (SubmitOrder, Accepted, Filled x2, AccountState)
    with correlation/causation headers and client order ids. Returns (path, a middle order id)."""
    backend = LmdbBackend(base)
    m = manifest()
    backend.open_run(m)
    seq, batch, order = 1, [], 0
    middle = ""
    while seq <= entries:
        order += 1
        coid = f"O-{order:07d}"
        if seq >= entries // 2 and not middle:
            middle = coid
        flow, parent = uuid.uuid4(), None
        for kind in ("SubmitOrder", "OrderAccepted", "OrderFilled", "OrderFilled", "AccountState"):
            if seq > entries:
                break
            own = uuid.uuid4()
            field = "command_id" if kind == "SubmitOrder" else "event_id"
            payload = _enc.encode({"client_order_id": coid, "qty": 10, "px": 101.5, field: str(own)})
            entry = EventStoreEntry.build(seq, seq * 1000, seq * 1000 + 1, f"exec.{kind}", kind, payload,
                                          Headers(flow, parent))
            keys = () if kind == "AccountState" else (IndexKey(IndexKind.ClientOrderId, coid),)
            batch.append(AppendEntry(entry, keys))
            parent, seq = own, seq + 1
        if len(batch) >= 10_000:
            backend.append_batch(batch)
            batch = []
    if batch:
        backend.append_batch(batch)
    backend.seal(RunStatus.Ended)
    path = backend.path
    backend.close()
    assert path is not None
    return path, middle


def scan_rate(path: Path) -> float:
    start = time.perf_counter()
    with RunFile(path) as run_file:
        n = sum(1 for _ in run_file.iter_range(1, run_file.high_watermark(), 4096))
    return n / (time.perf_counter() - start)


def export_rate(path: Path, out: Path) -> float:
    start = time.perf_counter()
    result = export_run(path, out, "parquet")
    return result.rows / (time.perf_counter() - start)


def trace_seconds(path: Path, coid: str) -> tuple[float, float]:
    start = time.perf_counter()
    with RunFile(path) as run_file:
        trail = trace_order(run_file, coid)
        chain = causation_chain(run_file, trail.nodes[-1].entry.seq)
        assert len(trail.nodes) == 5 and len(chain.entries) == 5, (len(trail.nodes), len(chain.entries))
    traced = time.perf_counter() - start
    start = time.perf_counter()
    needle = coid.encode()
    with RunFile(path) as run_file:
        found = [e.seq for e in run_file.iter_range(1, run_file.high_watermark(), 4096) if needle in e.payload]
    assert len(found) == 5
    return traced, time.perf_counter() - start


def _draft(n: int) -> EntryDraft:
    flow = uuid.uuid4()
    return EntryDraft("exec.OrderFilled", "OrderFilled", b"p" * 200, 1_700_000_000_000_000_000 + n,
                      Headers(flow, uuid.uuid4()))


def _follower(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "nes", "tail", str(path), "-n", "0", "-f", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV)


def writer_rate(base: Path, count: int, with_follower: bool) -> float:
    writer = EventStoreWriter.spawn(base, m := manifest(), WriterConfig())
    follower = None
    drain = None
    try:
        drafts = [_draft(n) for n in range(1000)]
        path = base / INSTANCE / f"{m.run_id}.lmdb"
        if with_follower:
            follower = _follower(path)
            assert follower.stdout is not None
            first = follower.stdout  # consume everything it prints, as a terminal would
            drain = threading.Thread(target=lambda: [None for _ in iter(lambda: first.read(1 << 16), b"")], daemon=True)
            drain.start()
            time.sleep(0.5)  # let the follower start polling before the clock starts
        submit = writer.submit
        start = time.perf_counter()
        for n in range(count):
            last = submit(drafts[n % 1000])
        assert writer.wait_durable(last, 600)
        rate = count / (time.perf_counter() - start)
        writer.close()
        return rate
    finally:
        if not writer._closed:  # noqa: SLF001
            writer.abandon()
        if follower is not None:
            follower.terminate()
            follower.wait()


def follow_latency(base: Path, entries: int) -> tuple[float, float]:
    writer = EventStoreWriter.spawn(base, m := manifest(), WriterConfig())
    follower = None
    try:
        path = base / INSTANCE / f"{m.run_id}.lmdb"
        durable_at: dict[int, int] = {}
        printed_at: dict[int, int] = {}
        follower = _follower(path)
        assert follower.stdout is not None
        out = follower.stdout

        def read() -> None:
            for line in iter(out.readline, b""):
                printed_at[json.loads(line)["seq"]] = time.monotonic_ns()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.5)
        for n in range(entries):
            seq = writer.submit(_draft(n))
            assert writer.wait_durable(seq, 5)
            durable_at[seq] = time.monotonic_ns()
            time.sleep(0.005)
        deadline = time.monotonic() + 5
        while len(printed_at) < len(durable_at) and time.monotonic() < deadline:
            time.sleep(0.01)
        lat = sorted(max(0, printed_at[s] - durable_at[s]) / 1e6 for s in durable_at if s in printed_at)
        assert len(lat) == len(durable_at), f"{len(lat)} of {len(durable_at)} entries printed"
        writer.close()
        return lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    finally:
        if not writer._closed:  # noqa: SLF001
            writer.abandon()
        if follower is not None:
            follower.terminate()
            follower.wait()


def correlation_cost(count: int = 200_000) -> tuple[float, float, float]:
    from nes.backend.base import correlation_index_rows
    from nes.codec import seq_key
    from nes.entry import encode_stored_value
    from nes.hash import DOMAIN_HASH_STATE

    def rows(headers: Headers) -> list[tuple[bytes, bytes]]:
        entry = EventStoreEntry.build(1, 1, 2, "exec.OrderFilled", "OrderFilled", b"p" * 200, headers)
        value = encode_stored_value(entry)
        return [(seq_key(n), value) for n in range(1, count + 1)]

    with_headers, without = rows(Headers(uuid.uuid4(), uuid.uuid4())), rows(Headers())
    start = time.perf_counter()
    assert len(correlation_index_rows(with_headers)) == count
    t_with = (time.perf_counter() - start) / count * 1e6
    start = time.perf_counter()
    assert correlation_index_rows(without) == []
    t_without = (time.perf_counter() - start) / count * 1e6
    new = DOMAIN_HASH_STATE.copy
    start = time.perf_counter()
    for _, value in with_headers:
        hasher = new()
        hasher.update(value[32:])
        hasher.digest()
    t_hash = (time.perf_counter() - start) / count * 1e6
    return t_with, t_without, t_hash


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    args = parser.parse_args()
    n_entries = 200_000 if args.quick else 1_000_000
    writer_count = 200_000 if args.quick else 500_000
    with tempfile.TemporaryDirectory(prefix="nes-bench-op-") as tmp:
        base = Path(tmp)
        rates: dict[bool, list[float]] = {False: [], True: []}
        for with_follower in (False, True, False, True):
            rates[with_follower].append(writer_rate(base / f"w{len(rates[False]) + len(rates[True])}", writer_count,
                                                    with_follower))
            print(f"writer {'with' if with_follower else 'without'} follower: {rates[with_follower][-1]:,.0f} entries/s")
        corr_with, corr_without, blake3_us = correlation_cost()
        print(f"correlation index rows: {corr_with:.3f} us/entry with headers, {corr_without:.3f} without; "
              f"BLAKE3 of the frame {blake3_us:.3f} us")
        p50, p99 = follow_latency(base / "lat", 300 if args.quick else 1000)
        print(f"tail -f durable -> printed: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        path, coid = build_run(base / "big", n_entries)
        scan = scan_rate(path)
        print(f"scan (reader) {scan:,.0f} entries/s")
        export = export_rate(path, base / "export")
        print(f"export parquet {export:,.0f} entries/s")
        traced, by_scan = trace_seconds(path, coid)
        print(f"trace on {n_entries:,} entries: {traced:.4f} s (by full scan: {by_scan:.2f} s)")
    result = {
        "entries": n_entries,
        "scan_entries_per_s": round(scan),
        "export_entries_per_s": round(export),
        "export_vs_scan": round(export / scan, 3),
        "trace_1m_s": round(traced, 4),
        "trace_by_scan_s": round(by_scan, 3),
        "writer_entries_per_s": round(max(rates[False])),
        "writer_with_follower_entries_per_s": round(max(rates[True])),
        "writer_with_follower_ratio": round(max(rates[True]) / max(rates[False]), 3),
        "tail_follow_p50_ms": round(p50, 2),
        "tail_follow_p99_ms": round(p99, 2),
        "correlation_index_us_per_entry": round(corr_with, 3),
        "correlation_index_no_headers_us_per_entry": round(corr_without, 3),
        "blake3_us_per_entry": round(blake3_us, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
