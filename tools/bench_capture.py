"""Benchmark the NautilusTrader bus tap: the same backtest with and without capture, one run.

    python tools/bench_capture.py [--quick] [--quotes N] [--repeats R] [--dir D]

The backtest is `nes.integrations.nautilus.backtest.run_ema_cross_backtest` (NautilusTrader's
EMACross and EMACrossBracket example strategies over N seeded synthetic AUD/USD quotes;
default 40,000, --quick 8,000). Each of the R repeats runs, back to back so machine noise hits
them alike, and every wall time is `engine.run()` only (engine built before, session opened
before and closed after):
1. baseline: no tap;
2. tapped: the tap on a real nes session (shared-memory ring, writer sidecar process, fsynced
   LMDB run file). This is the whole cost: every capture, the tap's dispatch of uncaptured
   traffic (market data reaches the `*` subscription too), and the writer process running
   beside the trader;
3. tap only: the tap and adapter over a sink that drops the drafts (no ring, no writer
   process): the in-trader cost alone (`tap_only_overhead_ratio`);
4. timed: the tapped run again, whose adapter reads `perf_counter_ns` around every
   `BusCaptureAdapter.capture` call;
5. encoder timed: the tap over the dropping sink, timing the registered encoder alone (the
   engine's `to_dict`, MessagePack, the index keys) on each message just before it is
   captured, as the capture would meet it (`encoder_us_per_message_p50`): the floor under the
   per-message figure that no capture path can go below while the payload is the engine's own
   `to_dict` map.
`capture_overhead_ratio` is the median over the repeats of tapped / baseline, each tapped run
over the baseline run just before it (on a host whose speed drifts, adjacent runs share the
drift); `capture_overhead_ratio_of_medians` divides the medians instead, and
`capture_overhead_ratio_cpu` uses this process's CPU time (the writer's own CPU is apart).
Per message (`capture_us_per_message_p50` / `_p99`, pooled over the R timed runs) is the wall
time of one `capture` call that stored an entry: the identity check, the encoder, the derived
headers, the `EntryDraft` and the submit into the ring (with any wait for ring space). It
leaves out the tap's own dispatch (type test, topic, clock read; about 0.5 us), duplicate hops
(`duplicate_hop_us_p50`, counted in `duplicate_hops`) and the writer's work, which happens in
its own process. Being wall time, it includes what other processes do to the trader meanwhile;
`tap_only_us_per_message_p50` is the same call over the dropping sink, without the writer.
`load_average_1m` (at the start) and `baseline_wall_spread` (slowest / fastest baseline) say
how noisy the machine was: compare ratios from runs with a similar load.
Goals (issue #10): `capture_overhead_ratio` <= 1.30 and `capture_us_per_message_p50` < 5. The
last line is one JSON object.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nes.capture import BusCaptureAdapter  # noqa: E402
from nes.config import EventStoreConfig, RunIdentity  # noqa: E402
from nes.headers import Headers  # noqa: E402
from nes.kernel import EventStoreLifecycle  # noqa: E402
from nes.integrations.nautilus import default_registry  # noqa: E402
from nes.integrations.nautilus.backtest import BacktestResult, run_ema_cross_backtest  # noqa: E402


_capture = BusCaptureAdapter.capture


class TimedAdapter(BusCaptureAdapter):
    """The real adapter, timing each capture call that submitted an entry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.captured_ns: list[int] = []
        self.skipped_ns: list[int] = []

    def capture(self, topic: str, message: object, ts_init: int, headers: Headers | None = None) -> int | None:
        started = time.perf_counter_ns()
        seq = _capture(self, topic, message, ts_init, headers)  # no super() lookup inside the timing
        elapsed = time.perf_counter_ns() - started
        (self.skipped_ns if seq is None else self.captured_ns).append(elapsed)
        return seq


class EncoderTimedAdapter(BusCaptureAdapter):
    """The real adapter that first times the registered encoder alone on each message it
    then stores (run over the dropping sink: the encoder runs twice per message there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.encoder_ns: list[int] = []

    def capture(self, topic: str, message: object, ts_init: int, headers: Headers | None = None) -> int | None:
        registration = self._by_type.get(type(message))
        elapsed = None
        if registration is not None:
            started = time.perf_counter_ns()
            registration.encode(message)
            elapsed = time.perf_counter_ns() - started
        seq = _capture(self, topic, message, ts_init, headers)
        if seq is not None and elapsed is not None:
            self.encoder_ns.append(elapsed)
        return seq


class DroppingSink:
    """Takes every draft and keeps nothing: the tap's in-trader cost without a writer."""

    high_watermark = 0

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, draft: object) -> int:
        self.submitted += 1
        return self.submitted


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


def tapped_run(base: Path, quotes: int, index: int, timed: bool = False) -> tuple[BacktestResult, TimedAdapter | None]:
    config = EventStoreConfig(base_dir=str(base), identity=RunIdentity(instance_id=f"bench-{index}"))
    session = EventStoreLifecycle(config).open()
    try:
        adapter = (TimedAdapter if timed else BusCaptureAdapter)(session, default_registry())
        _, result = run_ema_cross_backtest(adapter=adapter, quotes=quotes)
        if result.error is not None:
            raise SystemExit(f"tapped backtest failed: {result.error}")
    finally:
        session.close()
    return result, adapter if timed else None  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8,000 quotes, 3 repeats")
    parser.add_argument("--quotes", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--dir", type=Path, help="where the run files go (default: a temporary directory)")
    ns = parser.parse_args(argv)
    quotes = ns.quotes or (8_000 if ns.quick else 40_000)
    repeats = ns.repeats or (3 if ns.quick else 5)
    workdir = Path(tempfile.mkdtemp(prefix="nes-bench-capture-", dir=ns.dir))
    try:
        load_average_1m = os.getloadavg()[0]
        run_ema_cross_backtest(quotes=quotes)  # warm-up: imports, JIT-free but cold caches
        baseline: list[BacktestResult] = []
        tapped: list[BacktestResult] = []
        tap_only_s: list[float] = []
        captured_ns: list[int] = []
        skipped_ns: list[int] = []
        tap_only_ns: list[int] = []
        encoder_ns: list[int] = []
        for i in range(repeats):
            baseline.append(run_ema_cross_backtest(quotes=quotes)[1])
            tapped.append(tapped_run(workdir, quotes, 2 * i)[0])
            _, dropped = run_ema_cross_backtest(adapter=BusCaptureAdapter(DroppingSink(), default_registry()), quotes=quotes)
            tap_only_s.append(dropped.wall_s)
            timed_result, timed = tapped_run(workdir, quotes, 2 * i + 1, timed=True)
            assert timed is not None and len(timed.captured_ns) == timed_result.captured == tapped[-1].captured
            captured_ns += timed.captured_ns
            skipped_ns += timed.skipped_ns
            timed_drop = TimedAdapter(DroppingSink(), default_registry())
            run_ema_cross_backtest(adapter=timed_drop, quotes=quotes)
            tap_only_ns += timed_drop.captured_ns
            encoder_timed = EncoderTimedAdapter(DroppingSink(), default_registry())
            run_ema_cross_backtest(adapter=encoder_timed, quotes=quotes)
            encoder_ns += encoder_timed.encoder_ns
        messages = tapped[-1].captured
        baseline_s = [r.wall_s for r in baseline]
        base_wall, tapped_wall = statistics.median(baseline_s), statistics.median(r.wall_s for r in tapped)
        result = {
            "quotes": quotes,
            "repeats": repeats,
            "messages_captured": messages,
            "baseline_wall_s": round(base_wall, 4),
            "tapped_wall_s": round(tapped_wall, 4),
            "capture_overhead_ratio": round(statistics.median(t.wall_s / b.wall_s for t, b in zip(tapped, baseline)), 4),
            "capture_overhead_ratio_of_medians": round(tapped_wall / base_wall, 4),
            "capture_overhead_ratio_cpu": round(statistics.median(t.cpu_s / b.cpu_s for t, b in zip(tapped, baseline)), 4),
            "tap_only_wall_s": round(statistics.median(tap_only_s), 4),
            "tap_only_overhead_ratio": round(statistics.median(d / b for d, b in zip(tap_only_s, baseline_s)), 4),
            "capture_added_us_per_message": round((tapped_wall - base_wall) / messages * 1e6, 3),
            "capture_us_per_message_p50": round(percentile(captured_ns, 0.50), 3),
            "capture_us_per_message_p99": round(percentile(captured_ns, 0.99), 3),
            "tap_only_us_per_message_p50": round(percentile(tap_only_ns, 0.50), 3),
            "encoder_us_per_message_p50": round(percentile(encoder_ns, 0.50), 3),
            "duplicate_hop_us_p50": round(percentile(skipped_ns, 0.50), 3) if skipped_ns else None,
            "duplicate_hops": len(skipped_ns) // repeats,
            "load_average_1m": round(load_average_1m, 2),
            "baseline_wall_spread": round(max(baseline_s) / min(baseline_s), 3),
            "goal_overhead_ratio_max": 1.30,
            "goal_p50_us_max": 5.0,
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
