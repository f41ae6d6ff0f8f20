"""Benchmark tail replay into a NautilusTrader cache beside the reader's scan and the verifier.

    python tools/bench_replay.py [--quick] [--quotes N] [--passes P] [--dir D]

Captures a real EMA-cross backtest (NautilusTrader's example strategies on N seeded quotes,
default 60,000; --quick 12,000) through the writer sidecar into one sealed run file, then times,
in this same run and over that same file (each pass from a fresh open, median of P passes,
default 5; --quick 3):
- `replay`: `restore_cache_from_sealed_run` with no snapshot anchor (the whole run is the
  tail) into a fresh `NautilusCacheReplay`: decode every captured payload, apply it by its
  replay rule to NautilusTrader's `Cache`, count the rest ignored;
- `scan`: `EventStoreReader.scan_range` over every entry (decode + BLAKE3 check per entry);
- `verify`: `Verifier(path).verify()` (the full integrity scan, in this process).
The last line is one JSON object: `replay_entries_per_s`, `scan_entries_per_s`,
`verify_entries_per_s`, the ratios `replay_vs_scan` (goal >= 0.25) and `scan_vs_verify`
(goal >= 0.8), and every pass. The replay applies as it would at a restart; the same restore is
checked against the live cache (`replay_matches_live`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nautilus_trader.model.identifiers import Venue  # noqa: E402
from nautilus_trader.test_kit.providers import TestInstrumentProvider  # noqa: E402

from nes import EventStoreConfig, EventStoreLifecycle, EventStoreReader, RunIdentity  # noqa: E402
from nes.backend.lmdb import LmdbBackend  # noqa: E402
from nes.integrations.nautilus.backtest import INSTRUMENT_SYMBOL, VENUE, run_ema_cross_backtest  # noqa: E402
from nes.integrations.nautilus.replay import NautilusCacheReplay, cache_fingerprint  # noqa: E402
from nes.replay import restore_cache_from_sealed_run  # noqa: E402
from nes.verifier import Verifier  # noqa: E402

INSTANCE = "bench-replay"


def capture(base: Path, quotes: int) -> tuple[Path, str, dict, float]:
    config = EventStoreConfig(base_dir=str(base), identity=RunIdentity(instance_id=INSTANCE))
    session = EventStoreLifecycle(config).open()
    started = time.perf_counter()
    engine, result = run_ema_cross_backtest(session, quotes=quotes, seed=7, dispose=False)
    capture_s = time.perf_counter() - started
    session.close()
    live = cache_fingerprint(engine.cache)
    engine.dispose()
    if result.error is not None:
        raise SystemExit(f"backtest failed: {result.error}")
    return session.path, session.run_id, live, capture_s


def time_replay(base: Path, run_id: str) -> tuple[float, int, NautilusCacheReplay]:
    instrument = TestInstrumentProvider.default_fx_ccy(INSTRUMENT_SYMBOL, Venue(VENUE))
    target = NautilusCacheReplay([instrument])
    started = time.perf_counter()
    report = restore_cache_from_sealed_run(target, base, INSTANCE, run_id)
    elapsed = time.perf_counter() - started
    entries = report.cache.applied + report.cache.ignored
    return entries / elapsed, entries, target


def time_scan(path: Path) -> tuple[float, int]:
    reader = EventStoreReader(LmdbBackend.open_sealed_file(path))
    try:
        started = time.perf_counter()
        count = 0
        for _ in reader.scan_range(1, reader.high_watermark()):
            count += 1
        return count / (time.perf_counter() - started), count
    finally:
        reader.close()


def time_verify(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    report = Verifier(path).verify()
    elapsed = time.perf_counter() - started
    if not report.is_clean():
        raise SystemExit(f"verify found damage: {report.summary_line()}")
    return report.entries_scanned / elapsed, report.entries_scanned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--quotes", type=int)
    parser.add_argument("--passes", type=int)
    parser.add_argument("--dir", type=Path)
    ns = parser.parse_args(argv)
    quotes = ns.quotes or (12_000 if ns.quick else 60_000)
    passes = ns.passes or (3 if ns.quick else 5)
    work = Path(tempfile.mkdtemp(prefix="nes-bench-replay-", dir=ns.dir))
    try:
        path, run_id, live, capture_s = capture(work, quotes)
        replay_rates, scan_rates, verify_rates = [], [], []
        matches = True
        entries = 0
        for _ in range(passes):  # interleaved, so drift in machine load hits all three alike
            rate, entries, target = time_replay(work, run_id)
            replay_rates.append(rate)
            matches = matches and cache_fingerprint(target.cache) == live
            scan_rates.append(time_scan(path)[0])
            verify_rates.append(time_verify(path)[0])
        replay, scan, verify = (statistics.median(r) for r in (replay_rates, scan_rates, verify_rates))
        print(
            f"{entries} entries ({quotes} quotes, captured in {capture_s:.1f}s): replay {replay:,.0f}/s  "
            f"scan {scan:,.0f}/s  verify {verify:,.0f}/s  replay/scan {replay / scan:.3f}  scan/verify {scan / verify:.3f}",
            file=sys.stderr,
        )
        print(
            json.dumps(
                {
                    "entries": entries,
                    "quotes": quotes,
                    "passes": passes,
                    "replay_entries_per_s": round(replay),
                    "scan_entries_per_s": round(scan),
                    "verify_entries_per_s": round(verify),
                    "replay_vs_scan": round(replay / scan, 4),
                    "scan_vs_verify": round(scan / verify, 4),
                    "replay_passes_entries_per_s": [round(r) for r in replay_rates],
                    "scan_passes_entries_per_s": [round(r) for r in scan_rates],
                    "verify_passes_entries_per_s": [round(r) for r in verify_rates],
                    "replay_matches_live": matches,
                }
            )
        )
        return 0 if matches else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
