"""Benchmark tail replay into a NautilusTrader cache beside the reader's scan and the verifier.

    python tools/bench_replay.py [--quick] [--quotes N] [--synthetic S] [--passes P] [--dir D]

Captures a real EMA-cross backtest (NautilusTrader's example strategies on N seeded quotes,
default 60,000; --quick 12,000) through the writer sidecar into one sealed run file, then times,
in this same run and over that same file (each pass from a fresh open, median of P passes,
default 5; --quick 3), in CPU seconds of this process (the machine is shared; wall-clock rates
swing with other load, CPU time much less):
- `replay`: `restore_cache_from_sealed_run` with no snapshot anchor (the whole run is the
  tail) into a fresh `NautilusCacheReplay`: decode every captured payload, apply it by its
  replay rule to NautilusTrader's `Cache`, count the rest ignored;
- `scan`: `EventStoreReader.scan_range` over every entry (decode + BLAKE3 check per entry);
- `verify`: `Verifier(path).verify()` (the full integrity scan, in this process);
- the engine's share (`time_engine_floor`): NautilusTrader's own `from_dict` of the payloads a
  replay decodes (`engine_decode_entries_per_s`) and the replay rules on objects built
  beforehand (`engine_apply_entries_per_s`). `replay_ceiling_vs_scan` is the replay/scan ratio
  a replay would reach if nes added nothing to the scan but the engine's decode and apply.
Then the same scan and verify over a synthetic run like `tools/bench_backend.py`'s (S entries,
default 200,000, --quick 50,000; 200-byte payloads, no headers): `synthetic_*`.
The last line is one JSON object: `replay_entries_per_s`, `scan_entries_per_s`,
`verify_entries_per_s`, the ratios `replay_vs_scan` (goal >= 0.25) and `scan_vs_verify`
(goal >= 0.8; the median of the per-pass ratios; `*_best` divides the fastest pass of each,
which on a host whose speed drifts between passes compares like with like), the synthetic
pair, and every pass. The
replay applies as it would at a restart; each restore is checked against the live cache
(`replay_matches_live`).
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

import msgspec

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nautilus_trader.model.identifiers import Venue  # noqa: E402
from nautilus_trader.test_kit.providers import TestInstrumentProvider  # noqa: E402

from nes import (  # noqa: E402
    AppendEntry,
    EventStoreConfig,
    EventStoreEntry,
    EventStoreLifecycle,
    EventStoreReader,
    RunIdentity,
    RunManifest,
    RunStatus,
)
from nes.backend.lmdb import LmdbBackend  # noqa: E402
from nes.integrations.nautilus.backtest import INSTRUMENT_SYMBOL, VENUE, run_ema_cross_backtest  # noqa: E402
from nes.integrations.nautilus.registry import _DICT_TYPES  # noqa: E402
from nes.integrations.nautilus.replay import _LIGHT_RULES, REPLAY_RULES, NautilusCacheReplay, cache_fingerprint  # noqa: E402
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


def build_synthetic(base: Path, entries: int) -> Path:
    """A sealed run of `entries` 200-byte, header-less entries (bench_backend's shape)."""
    backend = LmdbBackend(base)
    manifest = RunManifest(
        run_id="1700000000000000000-0badcafe", instance_id="synthetic", start_ts_init=1, binary_hash="b",
        crate_versions="", config_hash="c",
    )
    backend.open_run(manifest)
    payload = bytes(range(200))
    for lo in range(1, entries + 1, 10_000):
        batch = [
            AppendEntry.without_indices(EventStoreEntry.build(seq, seq, seq, "data.quotes.BINANCE.BTCUSDT", "QuoteTick", payload))
            for seq in range(lo, min(lo + 10_000, entries + 1))
        ]
        backend.append_batch(batch)
    backend.seal(RunStatus.Ended)
    path = backend.path
    backend.close()
    assert path is not None
    return path


def time_replay(base: Path, run_id: str) -> tuple[float, int, NautilusCacheReplay]:
    instrument = TestInstrumentProvider.default_fx_ccy(INSTRUMENT_SYMBOL, Venue(VENUE))
    target = NautilusCacheReplay([instrument])
    started = time.process_time()
    report = restore_cache_from_sealed_run(target, base, INSTANCE, run_id)
    elapsed = time.process_time() - started
    entries = report.cache.applied + report.cache.ignored
    return entries / elapsed, entries, target


def time_engine_floor(path: Path, run_id: str, live: dict) -> tuple[float, float]:
    """(decode, apply) entries/s of NautilusTrader's own work in a replay of the run at `path`:
    - decode: the engine's `from_dict` of every payload a full replay rule decodes, from maps
      already decoded and checked (light rules read the map: no engine decode, counted free);
    - apply: every replay rule on objects (or maps) built beforehand, into a fresh cache
      (NautilusTrader's order construction, state machines and cache indexes).
    Both are per entry of the whole run (ignored entries cost nothing), so
    1 / (1/scan + 1/decode + 1/apply) is the fastest a replay could be if nes's own reading,
    payload decoding and checks cost nothing beyond the scan."""
    reader = EventStoreReader(LmdbBackend.open_sealed_file(path))
    try:
        entries = list(reader.scan_range(1, reader.high_watermark()))
    finally:
        reader.close()
    maps = []
    for entry in entries:
        rule = REPLAY_RULES.get(entry.payload_type)
        if rule is not None:
            light = _LIGHT_RULES.get(entry.payload_type)
            maps.append((entry.payload_type, rule[1], light, msgspec.msgpack.decode(entry.payload)))
    started = time.process_time()
    built = [(light, body) if light is not None else (rule, _DICT_TYPES[name].from_dict(body)) for name, rule, light, body in maps]
    decode_s = time.process_time() - started
    target = NautilusCacheReplay([TestInstrumentProvider.default_fx_ccy(INSTRUMENT_SYMBOL, Venue(VENUE))])
    rules = target._rules
    started = time.process_time()
    for apply, item in built:
        apply(rules, item)
    apply_s = time.process_time() - started
    if cache_fingerprint(target.cache) != live:
        raise SystemExit("the engine-only replay does not match the live cache")
    return len(entries) / decode_s, len(entries) / apply_s


def time_scan(path: Path) -> tuple[float, int]:
    reader = EventStoreReader(LmdbBackend.open_sealed_file(path))
    try:
        started = time.process_time()
        count = 0
        for _ in reader.scan_range(1, reader.high_watermark()):
            count += 1
        return count / (time.process_time() - started), count
    finally:
        reader.close()


def time_verify(path: Path) -> tuple[float, int]:
    started = time.process_time()
    report = Verifier(path).verify()
    elapsed = time.process_time() - started
    if not report.is_clean():
        raise SystemExit(f"verify found damage: {report.summary_line()}")
    return report.entries_scanned / elapsed, report.entries_scanned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--quotes", type=int)
    parser.add_argument("--synthetic", type=int)
    parser.add_argument("--passes", type=int)
    parser.add_argument("--dir", type=Path)
    ns = parser.parse_args(argv)
    quotes = ns.quotes or (12_000 if ns.quick else 60_000)
    passes = ns.passes or (3 if ns.quick else 5)
    synthetic_entries = ns.synthetic or (50_000 if ns.quick else 200_000)
    work = Path(tempfile.mkdtemp(prefix="nes-bench-replay-", dir=ns.dir))
    try:
        path, run_id, live, capture_s = capture(work, quotes)
        replay_rates, scan_rates, verify_rates, decode_rates, apply_rates = [], [], [], [], []
        matches = True
        entries = 0
        for _ in range(passes):  # interleaved, so drift in machine load hits all three alike
            rate, entries, target = time_replay(work, run_id)
            replay_rates.append(rate)
            matches = matches and cache_fingerprint(target.cache) == live
            scan_rates.append(time_scan(path)[0])
            verify_rates.append(time_verify(path)[0])
            decode_rate, apply_rate = time_engine_floor(path, run_id, live)
            decode_rates.append(decode_rate)
            apply_rates.append(apply_rate)
        engine_decode, engine_apply = statistics.median(decode_rates), statistics.median(apply_rates)
        replay, scan, verify = (statistics.median(r) for r in (replay_rates, scan_rates, verify_rates))
        scan_vs_verify = statistics.median(s / v for s, v in zip(scan_rates, verify_rates))
        synthetic = build_synthetic(work / "synthetic", synthetic_entries)
        synthetic_scan, synthetic_verify = [], []
        for _ in range(passes):
            synthetic_scan.append(time_scan(synthetic)[0])
            synthetic_verify.append(time_verify(synthetic)[0])
        synthetic_ratio = statistics.median(s / v for s, v in zip(synthetic_scan, synthetic_verify))
        print(
            f"{entries} captured entries ({quotes} quotes, captured in {capture_s:.1f}s): replay {replay:,.0f}/s  "
            f"scan {scan:,.0f}/s  verify {verify:,.0f}/s  replay/scan {replay / scan:.3f}  scan/verify {scan_vs_verify:.3f}; "
            f"synthetic {synthetic_entries}: scan {statistics.median(synthetic_scan):,.0f}/s  "
            f"verify {statistics.median(synthetic_verify):,.0f}/s  scan/verify {synthetic_ratio:.3f}",
            file=sys.stderr,
        )
        print(
            json.dumps(
                {
                    "entries": entries,
                    "quotes": quotes,
                    "passes": passes,
                    "clock": "process_time",
                    "replay_entries_per_s": round(replay),
                    "scan_entries_per_s": round(scan),
                    "verify_entries_per_s": round(verify),
                    "replay_vs_scan": round(replay / scan, 4),
                    "engine_decode_entries_per_s": round(engine_decode),
                    "engine_apply_entries_per_s": round(engine_apply),
                    "replay_ceiling_vs_scan": round(1 / (1 / scan + 1 / engine_decode + 1 / engine_apply) / scan, 4),
                    "scan_vs_verify": round(scan_vs_verify, 4),
                    "scan_vs_verify_best": round(max(scan_rates) / max(verify_rates), 4),
                    "synthetic_entries": synthetic_entries,
                    "synthetic_scan_entries_per_s": round(statistics.median(synthetic_scan)),
                    "synthetic_verify_entries_per_s": round(statistics.median(synthetic_verify)),
                    "synthetic_scan_vs_verify": round(synthetic_ratio, 4),
                    "synthetic_scan_vs_verify_best": round(max(synthetic_scan) / max(synthetic_verify), 4),
                    "replay_passes_entries_per_s": [round(r) for r in replay_rates],
                    "scan_passes_entries_per_s": [round(r) for r in scan_rates],
                    "verify_passes_entries_per_s": [round(r) for r in verify_rates],
                    "synthetic_scan_passes_entries_per_s": [round(r) for r in synthetic_scan],
                    "synthetic_verify_passes_entries_per_s": [round(r) for r in synthetic_verify],
                    "replay_matches_live": matches,
                }
            )
        )
        return 0 if matches else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
