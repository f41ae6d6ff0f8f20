"""Shared builders for the replay tests: sealed run files and a NautilusTrader Parquet catalog."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from runfile_helpers import START_TS_INIT, make_run_file

from nes.backend.lmdb import LmdbBackend
from nes.reader import EventStoreReader

INSTRUMENT = "AUD/USD.SIM"
BAR_TYPE = "AUD/USD.SIM-1-MINUTE-BID-EXTERNAL"


def entry_ts(seq: int) -> int:
    """The ts_init `runfile_helpers.build_entry` gives seq."""
    return START_TS_INIT + seq * 1_000


def sealed_reader(tmp_path: Path, entries: int) -> EventStoreReader[LmdbBackend]:
    path = make_run_file(tmp_path / f"run-{entries}.lmdb", entries=entries)
    return EventStoreReader(LmdbBackend.open_sealed_file(path))


def write_nautilus_catalog(root: Path, quote_ts: list[int], bar_ts: list[int], trade_ts: list[int] = ()) -> None:  # type: ignore[assignment]
    """Write quotes, bars (and trades) with NautilusTrader's own ParquetDataCatalog, one file
    per timestamp, so the directory is exactly the layout NautilusTrader produces."""
    from nautilus_trader.model.data import Bar, BarType, QuoteTick, TradeTick
    from nautilus_trader.model.enums import AggressorSide
    from nautilus_trader.model.identifiers import InstrumentId, TradeId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.persistence.catalog import ParquetDataCatalog

    catalog = ParquetDataCatalog(str(root))
    instrument_id = InstrumentId.from_str(INSTRUMENT)
    for i, ts in enumerate(quote_ts):
        bid = Price.from_str(f"1.{1000 + i:04d}0")
        ask = Price.from_str(f"1.{1001 + i:04d}0")
        catalog.write_data([QuoteTick(instrument_id, bid, ask, Quantity.from_int(100 + i), Quantity.from_int(200 + i), ts, ts)])
    bar_type = BarType.from_str(BAR_TYPE)
    for i, ts in enumerate(bar_ts):
        px = Price.from_str(f"1.{2000 + i:04d}0")
        catalog.write_data([Bar(bar_type, px, px, px, px, Quantity.from_int(10 + i), ts, ts)])
    for i, ts in enumerate(trade_ts):
        trade = TradeTick(
            instrument_id, Price.from_str("1.50000"), Quantity.from_int(5), AggressorSide.SELLER, TradeId(f"T-{i}"), ts, ts
        )
        catalog.write_data([trade])


def quote_bid(i: int) -> Decimal:
    return Decimal(f"1.{1000 + i:04d}0")
