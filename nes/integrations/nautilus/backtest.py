"""A deterministic EMA-cross backtest on NautilusTrader, optionally captured into an nes session.

`run_ema_cross_backtest(seed=..., quotes=...)` builds a `BacktestEngine` with one simulated FX
venue (`SIM`, netting, margin account, 1,000,000 USD), AUD/USD from NautilusTrader's
`TestInstrumentProvider`, and quote ticks generated from `seed` (a random walk with a slow
sine drift, one quote every 15 s, so the fast and slow EMAs cross often). Two example
strategies shipped with NautilusTrader trade it: `EMACross` (market orders on 1-minute bid
bars) and `EMACrossBracket` (bracket order lists on 5-minute bars: stop / limit-if-touched /
limit orders that are accepted, triggered, filled, expired, canceled and rejected). The run
trades for real: fills, positions opened and closed, account updates. Nothing is downloaded.

With `session=...` the tap is attached before the run; `on_engine(engine)` is called after
the engine is built and before the run (subscribe test handlers there); `snapshot_every`
calls `on_snapshot(engine, index)` from inside the run, on the engine thread, after every
`snapshot_every`-th 1-minute bar, between two bus dispatches (no message is half handled, so
a cache snapshot taken there matches the entries captured before it and can be anchored).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig
from nautilus_trader.examples.strategies.ema_cross import EMACross, EMACrossConfig
from nautilus_trader.examples.strategies.ema_cross_bracket import EMACrossBracket, EMACrossBracketConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType, QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import TraderId, Venue
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Money, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider

from nes.capture import BusCaptureAdapter, CaptureSink, SubmitCounter
from nes.errors import InvalidArgument
from nes.integrations.nautilus.registry import default_registry
from nes.integrations.nautilus.tap import NautilusBusTap

__all__ = [
    "BacktestResult",
    "BAR_TYPE_FAST",
    "BAR_TYPE_BRACKET",
    "INSTRUMENT_SYMBOL",
    "VENUE",
    "build_ema_cross_engine",
    "generate_quotes",
    "run_ema_cross_backtest",
]

VENUE = "SIM"
INSTRUMENT_SYMBOL = "AUD/USD"
BAR_TYPE_FAST = f"{INSTRUMENT_SYMBOL}.{VENUE}-1-MINUTE-BID-INTERNAL"
BAR_TYPE_BRACKET = f"{INSTRUMENT_SYMBOL}.{VENUE}-5-MINUTE-BID-INTERNAL"
START_NS = 1_704_153_600_000_000_000  # 2024-01-02T00:00:00Z
QUOTE_INTERVAL_NS = 15_000_000_000


class BacktestResult(msgspec.Struct):
    """What a run did (counts from the engine's own cache) and what the tap captured.
    `wall_s` / `cpu_s`: wall-clock and this process's CPU time of `engine.run()`."""

    wall_s: float
    quotes: int
    orders: int
    filled_orders: int
    fills: int
    positions: int
    positions_closed: int
    account_events: int
    captured: int
    error: str | None = None
    cpu_s: float = 0.0


def generate_quotes(instrument: Instrument, count: int, seed: int) -> list[QuoteTick]:
    """`count` bid/ask quotes, one every 15 s from 2024-01-02, a seeded random walk with drift."""
    rng = random.Random(seed)
    price = 0.70000
    ts = START_NS
    quotes = []
    size = Quantity.from_int(1_000_000)
    for i in range(count):
        price += 0.0001 * math.sin(i / 100.0) + rng.gauss(0.0, 0.00005)
        price = max(price, 0.1)
        ts += QUOTE_INTERVAL_NS
        bid = instrument.make_price(price)
        ask = instrument.make_price(price + 0.00002)
        quotes.append(QuoteTick(instrument.id, bid, ask, size, size, ts, ts))
    return quotes


class _SnapshotHook:
    """Counts the 1-minute bars and calls back every `every`-th one."""

    def __init__(self, engine: Any, every: int, callback: Callable[[Any, int], None]) -> None:
        self.engine, self.every, self.callback = engine, every, callback
        self.bars = 0
        self.calls = 0

    def __call__(self, bar: Bar) -> None:
        self.bars += 1
        if self.bars % self.every == 0:
            self.calls += 1
            self.callback(self.engine, self.calls)


def build_ema_cross_engine(quotes: int = 8000, seed: int = 7, bracket: bool = True) -> BacktestEngine:
    """The engine, venue, instrument, data and strategies of `run_ema_cross_backtest`, not run."""
    engine = BacktestEngine(
        BacktestEngineConfig(trader_id=TraderId("BACKTESTER-001"), logging=LoggingConfig(bypass_logging=True))
    )
    venue = Venue(VENUE)
    engine.add_venue(
        venue=venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USD,
        starting_balances=[Money(1_000_000, USD)],
    )
    instrument = TestInstrumentProvider.default_fx_ccy(INSTRUMENT_SYMBOL, venue)
    engine.add_instrument(instrument)
    engine.add_data(generate_quotes(instrument, quotes, seed))
    engine.add_strategy(
        EMACross(
            EMACrossConfig(
                instrument_id=instrument.id,
                bar_type=BarType.from_str(BAR_TYPE_FAST),
                trade_size=Decimal(100_000),
                subscribe_trade_ticks=False,
            )
        )
    )
    if bracket:
        engine.add_strategy(
            EMACrossBracket(
                EMACrossBracketConfig(
                    instrument_id=instrument.id, bar_type=BarType.from_str(BAR_TYPE_BRACKET), trade_size=Decimal(50_000)
                )
            )
        )
    return engine


def run_ema_cross_backtest(
    session: CaptureSink | None = None,
    *,
    quotes: int = 8000,
    seed: int = 7,
    bracket: bool = True,
    adapter: BusCaptureAdapter | None = None,
    submit_counter: SubmitCounter | None = None,
    on_engine: Callable[[BacktestEngine], None] | None = None,
    snapshot_every: int | None = None,
    on_snapshot: Callable[[BacktestEngine, int], None] | None = None,
    dispose: bool = True,
    raise_errors: bool = True,
) -> tuple[BacktestEngine, BacktestResult]:
    """Run the backtest (see the module docstring), captured into `session` (or through
    `adapter`) when given. Returns the engine (disposed unless `dispose=False`; its cache
    stays readable) and a `BacktestResult`. With `raise_errors=False` an exception out of the
    run (for example `CaptureHalted` after a writer halt) is reported in `result.error`."""
    engine = build_ema_cross_engine(quotes, seed, bracket)
    tap = None
    if adapter is None and session is not None:
        adapter = BusCaptureAdapter(session, default_registry(), submit_counter=submit_counter)
    if adapter is not None:
        tap = NautilusBusTap(engine, adapter).attach()
    if snapshot_every is not None:
        if on_snapshot is None or snapshot_every < 1:
            raise InvalidArgument("snapshot_every needs a positive period and an on_snapshot callback")
        engine.kernel.msgbus.subscribe(f"data.bars.{BAR_TYPE_FAST}", _SnapshotHook(engine, snapshot_every, on_snapshot))
    if on_engine is not None:
        on_engine(engine)
    started, started_cpu = time.perf_counter(), time.process_time()
    error: str | None = None
    try:
        engine.run()
    except Exception as exc:
        if raise_errors:
            raise
        error = f"{type(exc).__name__}: {exc}"
    wall_s, cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    if tap is not None:
        tap.detach()
    cache = engine.cache
    orders = cache.orders()
    positions = cache.positions()
    account = cache.account_for_venue(Venue(VENUE))
    result = BacktestResult(
        wall_s=wall_s,
        quotes=quotes,
        orders=len(orders),
        filled_orders=sum(1 for order in orders if order.filled_qty.as_double() > 0),
        fills=sum(len(order.trade_ids) for order in orders),
        positions=len(positions),
        positions_closed=len(cache.positions_closed()),
        account_events=0 if account is None else len(account.events),
        captured=0 if adapter is None else adapter.submit_counter.value,
        error=error,
        cpu_s=cpu_s,
    )
    if dispose:
        engine.dispose()
    return engine, result
