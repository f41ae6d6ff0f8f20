"""Benchmark LmdbBackend appends and hash-checked scans against bare py-lmdb on the same bytes.

    python tools/bench_backend.py [--quick] [--entries N] [--payload-bytes B] [--dir D]

Pre-builds N entries (default 200,000; --quick 50,000) with B-byte payloads (default 200), then
for batch sizes 100, 1000 and 10000 times, in this same run and each into a fresh file:
- `append_encoded`: `LmdbBackend.append_encoded` with pre-built `EncodedEntry` values (the
  default backend: one write transaction per batch, sync=True, metasync=True);
- `append_batch_api`: `LmdbBackend.append_batch` with `AppendEntry` objects (includes encoding);
- `raw_lmdb`: py-lmdb `putmulti(append=True)` of the same key/value bytes, one write
  transaction per batch, env opened with sync=True, metasync=True.
Then over the batch-1000 file: `scan_verify` (`scan_range` over everything in chunks of 1024:
decode + BLAKE3 check per entry) against `raw_iter` (a cursor touching every key and value),
three passes each, each from a fresh open; the figure is the median pass (all are listed).
Then one cold pass of each, after `posix_fadvise(DONTNEED)` evicted the file from the page
cache (`*_cold_entries_per_s`: what a replay right after a restart sees).
Each append config has a time budget; a config that hits it reports the rate over what it wrote.
The last line is one JSON object with the figures (entries per second) and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lmdb  # noqa: E402

from nes.backend import layout  # noqa: E402
from nes.backend.base import AppendEntry, EncodedEntry, ScanDirection  # noqa: E402
from nes.backend.lmdb import LmdbBackend  # noqa: E402
from nes.codec import seq_key  # noqa: E402
from nes.entry import EventStoreEntry  # noqa: E402
from nes.headers import Headers  # noqa: E402
from nes.manifest import RunManifest, RunStatus  # noqa: E402

INSTANCE_ID = "bench"
START_TS = 1_700_000_000_000_000_000
TOPIC = "data.quotes.BINANCE.BTCUSDT"
PTYPE = "QuoteTick"
BATCH_SIZES = (100, 1000, 10000)
SCAN_CHUNK = 1024
SCAN_PASSES = 3


def build_entries(count: int, payload_bytes: int) -> list[EventStoreEntry]:
    base = bytes(range(256)) * (payload_bytes // 256 + 2)
    out = []
    for seq in range(1, count + 1):
        offset = seq % 256
        ts = START_TS + seq * 1_000
        out.append(EventStoreEntry.build(seq, ts, ts + 7, TOPIC, PTYPE, base[offset:offset + payload_bytes], Headers.empty()))
    return out


def _manifest(run_id: str) -> RunManifest:
    return RunManifest(run_id=run_id, instance_id=INSTANCE_ID, start_ts_init=START_TS)


def _batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def time_backend(base: Path, run_id: str, batches: list[list], use_encoded: bool, budget_s: float) -> tuple[float, int, float]:
    """Append batches through LmdbBackend; returns (entries/s, entries written, seconds)."""
    with LmdbBackend(base) as backend:
        backend.open_run(_manifest(run_id))
        append = backend.append_encoded if use_encoded else backend.append_batch
        written = 0
        started = time.perf_counter()
        for batch in batches:
            append(batch)
            written += len(batch)
            if time.perf_counter() - started > budget_s:
                break
        elapsed = time.perf_counter() - started
        assert backend.high_watermark() == written
        backend.seal(RunStatus.Ended)
    return written / elapsed, written, elapsed


def time_raw(path: Path, batches: list[list[tuple[bytes, bytes]]], budget_s: float) -> tuple[float, int, float]:
    """putmulti(append=True) of the same bytes, one synced write transaction per batch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), subdir=False, map_size=1 << 30, max_dbs=layout.MAX_DBS, sync=True, metasync=True,
                    mode=layout.FILE_MODE, meminit=False, readahead=False)
    try:
        entries_db = env.open_db(layout.DB_ENTRIES)
        written = 0
        started = time.perf_counter()
        for batch in batches:
            with env.begin(write=True, db=entries_db) as txn:
                txn.cursor().putmulti(batch, append=True)
            written += len(batch)
            if time.perf_counter() - started > budget_s:
                break
        elapsed = time.perf_counter() - started
    finally:
        env.close()
    return written / elapsed, written, elapsed


def time_scan_verify(path: Path, expected: int) -> float:
    with LmdbBackend.open_sealed_file(path) as backend:
        hwm = backend.high_watermark()
        started = time.perf_counter()
        count = 0
        for lo in range(1, hwm + 1, SCAN_CHUNK):
            count += len(backend.scan_range(lo, min(lo + SCAN_CHUNK - 1, hwm), ScanDirection.Forward))
        elapsed = time.perf_counter() - started
    assert count == expected == hwm, (count, expected, hwm)
    return count / elapsed


def evict_from_page_cache(path: Path) -> None:
    """Drop the file's (clean, unmapped) pages from the page cache: the next read is cold."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def time_raw_iter(path: Path, expected: int) -> float:
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=layout.MAX_DBS)
    try:
        entries_db = env.open_db(layout.DB_ENTRIES, create=False)
        started = time.perf_counter()
        count = 0
        total = 0
        with env.begin(db=entries_db) as txn:
            for key, value in txn.cursor().iternext(keys=True, values=True):
                count += 1
                total += len(value) + len(key)
        elapsed = time.perf_counter() - started
    finally:
        env.close()
    assert count == expected and total > 0
    return count / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k entries per config instead of 200k")
    parser.add_argument("--entries", type=int, default=None)
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the run files (default: a temp dir)")
    parser.add_argument("--budget-s", type=float, default=None, help="time cap per append config")
    args = parser.parse_args(argv)
    entries = args.entries or (50_000 if args.quick else 200_000)
    budget_s = args.budget_s if args.budget_s is not None else (3.0 if args.quick else 9.0)

    work = Path(tempfile.mkdtemp(prefix="bench_backend-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        built = build_entries(entries, args.payload_bytes)
        appends = [AppendEntry.without_indices(e) for e in built]
        encoded: list[EncodedEntry] = [a.encoded() for a in appends]
        raw_items = [(seq_key(e.seq), e.value) for e in encoded]
        stored_value_bytes = len(encoded[0].value)
        print(f"built {entries} entries of {args.payload_bytes}-byte payload "
              f"(stored value {stored_value_bytes} bytes) in {time.perf_counter() - t0:.2f}s; dir {work}")

        per_batch: dict[str, dict[str, float | int]] = {}
        scan_path: Path | None = None
        scan_count = 0
        for size in BATCH_SIZES:
            enc_rate, enc_n, _ = time_backend(work, f"enc-{size}", _batches(encoded, size), True, budget_s)
            api_rate, api_n, _ = time_backend(work, f"api-{size}", _batches(appends, size), False, budget_s)
            raw_rate, raw_n, _ = time_raw(work / "raw" / f"raw-{size}.lmdb", _batches(raw_items, size), budget_s)
            per_batch[str(size)] = {
                "append_entries_per_s": round(enc_rate),
                "append_batch_api_entries_per_s": round(api_rate),
                "raw_lmdb_entries_per_s": round(raw_rate),
                "append_vs_raw": round(enc_rate / raw_rate, 3),
                "append_batch_api_vs_raw": round(api_rate / raw_rate, 3),
                "entries_written": {"append_encoded": enc_n, "append_batch_api": api_n, "raw_lmdb": raw_n},
            }
            print(f"batch {size:>5}: append_encoded {enc_rate:>10,.0f}/s ({enc_n} entries)  "
                  f"append_batch {api_rate:>10,.0f}/s ({api_n})  raw putmulti {raw_rate:>10,.0f}/s ({raw_n})  "
                  f"ratio {enc_rate / raw_rate:.2f}")
            if size == 1000:
                scan_path = layout.run_file_path(work, INSTANCE_ID, f"enc-{size}")
                scan_count = enc_n

        assert scan_path is not None
        del built, appends, encoded, raw_items  # bench scaffolding, not part of a reader's heap
        scan_passes = [time_scan_verify(scan_path, scan_count) for _ in range(SCAN_PASSES)]
        raw_iter_passes = [time_raw_iter(scan_path, scan_count) for _ in range(SCAN_PASSES)]
        scan_rate, raw_iter_rate = statistics.median(scan_passes), statistics.median(raw_iter_passes)
        evict_from_page_cache(scan_path)
        scan_cold_rate = time_scan_verify(scan_path, scan_count)
        evict_from_page_cache(scan_path)
        raw_iter_cold_rate = time_raw_iter(scan_path, scan_count)
        print(f"scan {scan_count} entries: scan_range+hash check {scan_rate:,.0f}/s  raw cursor {raw_iter_rate:,.0f}/s  "
              f"ratio {scan_rate / raw_iter_rate:.3f}")

        b1000 = per_batch["1000"]
        result = {
            "bench": "backend",
            "entries_per_config": entries,
            "payload_bytes": args.payload_bytes,
            "stored_value_bytes": stored_value_bytes,
            "fsync": True,
            "budget_s_per_config": budget_s,
            "append_entries_per_s": b1000["append_entries_per_s"],
            "append_batch_api_entries_per_s": b1000["append_batch_api_entries_per_s"],
            "raw_lmdb_entries_per_s": b1000["raw_lmdb_entries_per_s"],
            "append_vs_raw": b1000["append_vs_raw"],
            "scan_verify_entries_per_s": round(scan_rate),
            "scan_verify_passes_entries_per_s": [round(r) for r in scan_passes],
            "raw_iter_entries_per_s": round(raw_iter_rate),
            "scan_verify_vs_raw_iter": round(scan_rate / raw_iter_rate, 4),
            "scan_verify_cold_entries_per_s": round(scan_cold_rate),
            "raw_iter_cold_entries_per_s": round(raw_iter_cold_rate),
            "scan_entries": scan_count,
            "per_batch_size": per_batch,
            "total_s": round(time.perf_counter() - t0, 2),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
