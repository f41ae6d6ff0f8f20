"""ParquetReplayCatalog over catalogs NautilusTrader's own ParquetDataCatalog wrote."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from replay_helpers import BAR_TYPE, INSTRUMENT, quote_bid, write_nautilus_catalog

from nes.replay import (
    BarRecord,
    CatalogError,
    CatalogSliceCoverage,
    CatalogSlicePlan,
    CatalogSliceQuery,
    CatalogSliceStatus,
    ParquetReplayCatalog,
    QuoteRecord,
    ReplayTimeRange,
    TradeRecord,
)
from nes.replay.parquet import parse_filename_interval

S = 1_000_000_000  # one second in ns: distinct file names per write


def _plan(catalog: ParquetReplayCatalog, data_cls: str, identifiers: tuple[str, ...], start: int, end: int) -> CatalogSlicePlan:
    query = CatalogSliceQuery(data_cls, identifiers, start, end, False)
    coverage = catalog.plan_slice(query)
    return CatalogSlicePlan(query, coverage, CatalogSliceStatus.Missing if coverage.is_missing() else CatalogSliceStatus.Available)


def test_filename_intervals_parse_nautilus_and_plain_forms() -> None:
    assert parse_filename_interval("1970-01-01T00-00-01-000000002Z_1970-01-01T00-00-03-5Z.parquet") == (S + 2, 3 * S + 500_000_000)
    assert parse_filename_interval("1000_2000.parquet") == (1000, 2000)
    assert parse_filename_interval("data.parquet") is None
    assert parse_filename_interval("2024-13-01T00-00-00-0Z_x.parquet") is None


def test_plan_selects_the_files_whose_interval_intersects_the_window(tmp_path: Path) -> None:
    write_nautilus_catalog(tmp_path, quote_ts=[1 * S, 5 * S, 10 * S], bar_ts=[])
    catalog = ParquetReplayCatalog(tmp_path)
    coverage = catalog.plan_slice(CatalogSliceQuery("quotes", (INSTRUMENT,), 4 * S, 10 * S, False))
    assert [r for r in coverage.intervals] == [ReplayTimeRange(5 * S, 5 * S), ReplayTimeRange(10 * S, 10 * S)]
    assert all("data/quote_tick/AUDUSD.SIM/" in f for f in coverage.files)
    assert catalog.plan_slice(CatalogSliceQuery("quote_tick", (), 0, 2 * S, False)).intervals == (ReplayTimeRange(S, S),)
    assert catalog.plan_slice(CatalogSliceQuery("quotes", ("EUR/USD.SIM",), 0, 20 * S, False)).is_missing()
    assert catalog.plan_slice(CatalogSliceQuery("quotes", (INSTRUMENT,), 11 * S, 20 * S, False)).is_missing()


def test_load_returns_typed_quotes_inside_the_window_only(tmp_path: Path) -> None:
    write_nautilus_catalog(tmp_path, quote_ts=[1 * S, 5 * S, 10 * S], bar_ts=[])
    catalog = ParquetReplayCatalog(tmp_path)
    records = catalog.load_slice(_plan(catalog, "quotes", (INSTRUMENT,), 2 * S, 10 * S))
    assert [r.ts_init for r in records] == [5 * S, 10 * S]
    first = records[0].data
    assert isinstance(first, QuoteRecord)
    assert first == QuoteRecord(INSTRUMENT, quote_bid(1), Decimal("1.10020"), Decimal("101"), Decimal("201"), 5 * S, 5 * S)
    assert records[0].identifier == INSTRUMENT and records[0].data_cls == "quotes"


def test_load_returns_typed_trades_and_bars(tmp_path: Path) -> None:
    write_nautilus_catalog(tmp_path, quote_ts=[], bar_ts=[3 * S, 4 * S], trade_ts=[7 * S])
    catalog = ParquetReplayCatalog(tmp_path)
    (trade,) = catalog.load_slice(_plan(catalog, "trades", (INSTRUMENT,), 0, 10 * S))
    assert trade.data == TradeRecord(INSTRUMENT, Decimal("1.50000"), Decimal("5"), "SELLER", "T-0", 7 * S, 7 * S)
    bars = catalog.load_slice(_plan(catalog, "bars", (BAR_TYPE,), 0, 10 * S))
    assert [b.data for b in bars] == [
        BarRecord(BAR_TYPE, *(Decimal("1.20000"),) * 4, Decimal("10"), 3 * S, 3 * S),
        BarRecord(BAR_TYPE, *(Decimal("1.20010"),) * 4, Decimal("11"), 4 * S, 4 * S),
    ]


def test_an_instrument_id_selects_its_bar_types(tmp_path: Path) -> None:
    write_nautilus_catalog(tmp_path, quote_ts=[], bar_ts=[3 * S])
    catalog = ParquetReplayCatalog(tmp_path)
    assert len(catalog.plan_slice(CatalogSliceQuery("bars", (INSTRUMENT,), 0, 10 * S, False)).files) == 1


def test_unsupported_data_class_fails_to_load(tmp_path: Path) -> None:
    catalog = ParquetReplayCatalog(tmp_path)
    plan = CatalogSlicePlan(
        CatalogSliceQuery("order_book_deltas", (INSTRUMENT,), 0, 1, True),
        CatalogSliceCoverage(("data/order_book_deltas/AUDUSD.SIM/1000_2000.parquet",)),
        CatalogSliceStatus.Available,
    )
    with pytest.raises(CatalogError) as info:
        catalog.load_slice(plan)
    assert (info.value.data_cls, info.value.message) == ("order_book_deltas", "catalog replay loading for order_book_deltas is not supported")


def test_rust_layout_with_plain_nanosecond_file_names_is_planned(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "quotes" / "AUDUSD.SIM"
    directory.mkdir(parents=True)
    (directory / "1000_2000.parquet").write_bytes(b"")
    (directory / "10000_11000.parquet").write_bytes(b"")
    coverage = ParquetReplayCatalog(tmp_path).plan_slice(CatalogSliceQuery("quotes", (INSTRUMENT,), 1500, 2500, True))
    assert coverage.intervals == (ReplayTimeRange(1000, 2000),) and len(coverage.files) == 1


def test_a_damaged_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "quote_tick" / "AUDUSD.SIM"
    directory.mkdir(parents=True)
    (directory / "1000_2000.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    catalog = ParquetReplayCatalog(tmp_path)
    with pytest.raises(CatalogError, match="cannot read 1000_2000.parquet"):
        catalog.load_slice(_plan(catalog, "quotes", (INSTRUMENT,), 0, 5000))


def test_a_file_with_missing_columns_is_an_error(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = tmp_path / "data" / "quote_tick" / "AUDUSD.SIM"
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"ts_init": pa.array([1], pa.uint64())}), directory / "0_10.parquet")
    catalog = ParquetReplayCatalog(tmp_path)
    with pytest.raises(CatalogError, match="lacks columns"):
        catalog.load_slice(_plan(catalog, "quotes", (INSTRUMENT,), 0, 10))


def test_planned_files_outside_the_catalog_root_are_refused(tmp_path: Path) -> None:
    write_nautilus_catalog(tmp_path / "other", quote_ts=[S], bar_ts=[])
    (tmp_path / "root").mkdir()
    catalog = ParquetReplayCatalog(tmp_path / "root")
    outside = next(str(p) for p in (tmp_path / "other").rglob("*.parquet"))
    plan = CatalogSlicePlan(CatalogSliceQuery("quotes", (), 0, 2 * S, False), CatalogSliceCoverage((outside,)), CatalogSliceStatus.Available)
    with pytest.raises(CatalogError, match="outside the catalog root"):
        catalog.load_slice(plan)


def test_identifiers_that_are_not_one_path_component_are_refused(tmp_path: Path) -> None:
    (tmp_path / "data" / "quotes").mkdir(parents=True)
    with pytest.raises(CatalogError, match="not a catalog directory name"):
        ParquetReplayCatalog(tmp_path).plan_slice(CatalogSliceQuery("quotes", ("..",), 0, 1, False))


def test_max_records_bounds_a_load(tmp_path: Path) -> None:
    write_nautilus_catalog(tmp_path, quote_ts=[1 * S, 2 * S, 3 * S], bar_ts=[])
    catalog = ParquetReplayCatalog(tmp_path, max_records=2)
    with pytest.raises(CatalogError, match="max_records"):
        catalog.load_slice(_plan(catalog, "quotes", (INSTRUMENT,), 0, 10 * S))


def test_the_catalog_is_never_written(tmp_path: Path) -> None:
    write_nautilus_catalog(tmp_path, quote_ts=[1 * S, 2 * S], bar_ts=[S])
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}
    catalog = ParquetReplayCatalog(tmp_path)
    for data_cls in ("quotes", "bars"):
        catalog.load_slice(_plan(catalog, data_cls, (), 0, 10 * S))
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")} == before
    assert os.access(tmp_path, os.W_OK)  # not read-only by accident: the test proves no writes


def test_a_catalog_root_that_is_not_a_directory_is_an_invalid_argument(tmp_path: Path) -> None:
    from nes import InvalidArgument

    with pytest.raises(InvalidArgument, match="not a directory"):
        ParquetReplayCatalog(tmp_path / "missing")
