"""Benchmark the verifier's full scan against bare LMDB iteration over the same file.

    python tools/bench_verify.py [--quick] [--entries N] [--payload-bytes B] [--dir D]

Builds a run file of N entries (default 1,000,000; --quick 200,000) with B-byte payloads by
writing the layout directly with py-lmdb (putmulti append), then times, in this same run:
- `raw_iter`: a read-only cursor over `entries` touching every key and value, no hashing;
- `raw_blake3`: the same iteration plus one domain-prefixed BLAKE3 per value (no checks);
- `verify`: `Verifier(path).verify()` (hash, key/seq, gap, index, anchor, manifest checks);
- `verify_parallel`: the key range split across worker processes (spawn), each opening the
  file read-only and scanning its half (hash + key/seq + gap within its range).
The last line is one JSON object with the figures (entries per second) and ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lmdb  # noqa: E402
from blake3 import blake3  # noqa: E402

from nes.backend import integrity, layout  # noqa: E402
from nes.codec import HASH_DOMAIN, HASH_LEN, encode_frame, seq_key  # noqa: E402
from nes.hash import hash_frame  # noqa: E402
from nes.manifest import RunManifest, RunStatus, encode_manifest  # noqa: E402
from nes.verifier import Verifier  # noqa: E402

RUN_ID = "1700000000000000000-0badcafe"
START_TS = 1_700_000_000_000_000_000
TOPIC = b"data.quotes.BINANCE.BTCUSDT"
PTYPE = b"QuoteTick"
BATCH = 100_000


def build_run_file(path: Path, entries: int, payload_bytes: int) -> float:
    """Write `entries` entries plus a sealed manifest; returns seconds taken."""
    started = time.perf_counter()
    map_size = max(64 << 20, entries * (payload_bytes + 200) * 2)
    env = lmdb.open(str(path), subdir=False, map_size=map_size, max_dbs=layout.MAX_DBS, mode=layout.FILE_MODE,
                    sync=False)
    try:
        entries_db = env.open_db(layout.DB_ENTRIES)
        meta_db = env.open_db(layout.DB_META)
        manifest_db = env.open_db(layout.DB_MANIFEST)
        env.open_db(layout.DB_ANCHORS)
        digests_db = env.open_db(integrity.DB_DIGESTS)
        for name in layout.ALL_INDEX_DBS:
            env.open_db(name, dupsort=True, dupfixed=True)
        base_payload = bytes(range(256)) * (payload_bytes // 256 + 1)
        for lo in range(1, entries + 1, BATCH):
            hi = min(entries, lo + BATCH - 1)
            rows = []
            for seq in range(lo, hi + 1):
                ts = START_TS + seq * 1000
                payload = seq.to_bytes(8, "big") + base_payload[: payload_bytes - 8]
                frame = encode_frame(seq, ts, ts + 5, TOPIC, PTYPE, payload, None, None)
                rows.append((seq_key(seq), hash_frame(frame) + frame))
            with env.begin(write=True) as txn, txn.cursor(entries_db) as cursor:
                cursor.putmulti(rows, append=True)
                txn.put(integrity.commit_key(lo), integrity.encode_commit(hi, integrity.IndexRowSum()), db=digests_db)
        manifest = RunManifest(
            run_id=RUN_ID, instance_id="bench-001", start_ts_init=START_TS, status=RunStatus.Ended,
            high_watermark=entries, end_ts_init=START_TS + entries * 1000 if entries else None,
        )
        with env.begin(write=True) as txn:
            txn.put(layout.FORMAT_KEY, layout.encode_format_version(), db=meta_db)
            txn.put(layout.MANIFEST_KEY, encode_manifest(manifest), db=manifest_db)
            txn.put(integrity.MANIFEST_DIGEST_KEY, integrity.manifest_digest(encode_manifest(manifest)), db=digests_db)
        env.sync(True)
    finally:
        env.close()
    return time.perf_counter() - started


def _open_ro(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=layout.MAX_DBS)


def raw_iter(path: Path) -> tuple[int, float]:
    env = _open_ro(path)
    try:
        started = time.perf_counter()
        n = 0
        total = 0
        with env.begin() as txn:  # bytes values, as the verifier reads them
            db = env.open_db(layout.DB_ENTRIES, txn=txn, create=False)
            with txn.cursor(db) as cursor:
                for _key, value in cursor.iternext(keys=True, values=True):
                    n += 1
                    total += len(value)
        return n, time.perf_counter() - started
    finally:
        env.close()


def raw_blake3(path: Path) -> tuple[int, float]:
    env = _open_ro(path)
    try:
        started = time.perf_counter()
        n = 0
        seeded = blake3(HASH_DOMAIN)
        with env.begin() as txn:
            db = env.open_db(layout.DB_ENTRIES, txn=txn, create=False)
            with txn.cursor(db) as cursor:
                for value in cursor.iternext(keys=False, values=True):
                    n += 1
                    hasher = seeded.copy()
                    hasher.update(value[HASH_LEN:])
                    hasher.digest()
        return n, time.perf_counter() - started
    finally:
        env.close()


def _scan_range(args: tuple[str, int, int]) -> tuple[int, int]:
    """Worker: hash + key/seq + gap check of seqs lo..hi; returns (scanned, findings)."""
    from nes.verifier import _scan_entries_range

    path, lo, hi = args
    env = _open_ro(Path(path))
    try:
        with env.begin() as txn:
            db = env.open_db(layout.DB_ENTRIES, txn=txn, create=False)
            scan = _scan_entries_range(txn, db, lo, hi)
        return scan.entries_scanned, len(scan.findings)
    finally:
        env.close()


def verify_parallel(path: Path, entries: int, workers: int) -> tuple[int, int, float]:
    ctx = multiprocessing.get_context("spawn")
    step = -(-entries // workers)
    ranges = [(str(path), lo, min(entries, lo + step - 1)) for lo in range(1, entries + 1, step)]
    with ctx.Pool(len(ranges)) as pool:
        pool.map(_scan_range, [(str(path), 1, 0)] * len(ranges))  # warm: imports done before timing
        started = time.perf_counter()
        results = pool.map(_scan_range, ranges)
        elapsed = time.perf_counter() - started
    return sum(r[0] for r in results), sum(r[1] for r in results), elapsed


def best_of(fn, repeats: int):  # noqa: ANN001, ANN201
    results = [fn() for _ in range(repeats)]
    return min(results, key=lambda r: r[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200k entries instead of 1M")
    parser.add_argument("--entries", type=int)
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parallel-workers", type=int, default=2, help="0 disables the parallel figure")
    parser.add_argument("--dir", type=Path, help="where to build the file (default: a temporary directory)")
    ns = parser.parse_args(argv)
    entries = ns.entries or (200_000 if ns.quick else 1_000_000)
    workdir = Path(tempfile.mkdtemp(prefix="nes-bench-verify-", dir=ns.dir))
    try:
        path = workdir / f"{RUN_ID}.lmdb"
        build_s = build_run_file(path, entries, ns.payload_bytes)
        print(f"built {entries} entries ({path.stat().st_size / 1e6:.1f} MB) in {build_s:.2f}s", file=sys.stderr)
        raw_iter(path)  # warm the page cache before any timing

        n_iter, iter_s = best_of(lambda: raw_iter(path), ns.repeats)
        n_hash, hash_s = best_of(lambda: raw_blake3(path), ns.repeats)

        def timed_verify():  # noqa: ANN202
            started = time.perf_counter()
            report = Verifier(path).verify()
            return report, time.perf_counter() - started

        report, verify_s = best_of(timed_verify, ns.repeats)
        if not report.is_clean() or report.entries_scanned != entries:
            raise SystemExit(f"benchmark file did not verify clean: {report.lines()[:5]}")
        result: dict[str, object] = {
            "entries": entries,
            "payload_bytes": ns.payload_bytes,
            "verify_entries_per_s": round(entries / verify_s),
            "raw_iter_entries_per_s": round(n_iter / iter_s),
            "raw_blake3_entries_per_s": round(n_hash / hash_s),
            "ratio": round((entries / verify_s) / (n_iter / iter_s), 4),
            "ratio_vs_raw_blake3": round((entries / verify_s) / (n_hash / hash_s), 4),
            "verify_s": round(verify_s, 4),
        }
        if ns.parallel_workers > 1:
            scanned, findings, par_s = best_of(lambda: verify_parallel(path, entries, ns.parallel_workers), ns.repeats)
            if scanned != entries or findings:
                raise SystemExit(f"parallel scan saw {scanned} entries and {findings} findings")
            result["verify_parallel_entries_per_s"] = round(entries / par_s)
            result["parallel_workers"] = ns.parallel_workers
            result["cpu_count"] = os.cpu_count()
        print(json.dumps(result))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
