"""A read-only `ReplayCatalog` over NautilusTrader's `ParquetDataCatalog` directory layout.

Layout read (NautilusTrader writes it; this module never writes):

    <root>/data/<data class dir>/<identifier dir>/<start>_<end>.parquet

- Data class directories: NautilusTrader's Python catalog names them by class
  (`quote_tick`, `trade_tick`, `bar`); the Rust crate by data type (`quotes`, `trades`,
  `bars`). A slice's `data_cls` may be either spelling; both directories are searched.
- Identifier directories are the instrument id or bar type with `/` removed
  (`AUD/USD.SIM` -> `AUDUSD.SIM`). For bars, an instrument id also selects its bar types
  (`AUDUSD.SIM-1-MINUTE-...`) when no directory matches it exactly, as NautilusTrader does.
- File names carry the interval they cover: `2024-01-02T03-04-05-000000006Z_...` (the
  catalog's form) or plain nanoseconds `1000_2000`. A file intersects `[start, end]` when
  `file_start <= end and start <= file_end`; a file whose name does not parse is selected
  (its interval is unknown), as NautilusTrader does.
- Loading decodes `quotes`, `trades` and `bars` files with pyarrow (the `export` extra) into
  typed records (`QuoteRecord`, `TradeRecord`, `BarRecord`): prices and sizes are fixed-point
  integers (16-byte little-endian in high-precision mode, int64 otherwise) scaled into
  `Decimal` at the precision in the file's metadata. Only records with `start <= ts_init <=
  end` are returned, in `ts_init` order (stable across files). Other data classes fail with
  "catalog replay loading for <data_cls> is not supported". Files are untrusted: a missing
  column, a wrong type or more than `max_records` rows is an error, never a crash. Every
  failure of `plan_slice` / `load_slice` is a `CatalogError(data_cls, message)`.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from nes.errors import InvalidArgument
from nes.replay.errors import CatalogError
from nes.replay.inputs import (
    CatalogReplayRecord,
    CatalogSliceCoverage,
    CatalogSlicePlan,
    CatalogSliceQuery,
    ReplayTimeRange,
)

__all__ = [
    "BarRecord",
    "ParquetReplayCatalog",
    "QuoteRecord",
    "TradeRecord",
    "parse_filename_interval",
    "urisafe_identifier",
]

# Canonical data class -> the directory names NautilusTrader uses for it.
_DATA_CLASS_DIRS: dict[str, tuple[str, ...]] = {
    "quotes": ("quotes", "quote_tick"),
    "trades": ("trades", "trade_tick"),
    "bars": ("bars", "bar"),
}
_ALIASES = {alias: canonical for canonical, aliases in _DATA_CLASS_DIRS.items() for alias in aliases}
_SAFE_COMPONENT = re.compile(r"^[^/\\\x00]{1,255}$")  # one path component
_ISO_STAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2})-(\d{2})-(\d{2})-(\d{1,9})Z$")
DEFAULT_MAX_RECORDS = 10_000_000
_AGGRESSOR = {0: "NO_AGGRESSOR", 1: "BUYER", 2: "SELLER"}


class QuoteRecord(msgspec.Struct, frozen=True):
    """A quote (NautilusTrader `QuoteTick`) as read from the catalog."""

    instrument_id: str
    bid_price: Decimal
    ask_price: Decimal
    bid_size: Decimal
    ask_size: Decimal
    ts_event: int
    ts_init: int


class TradeRecord(msgspec.Struct, frozen=True):
    """A trade (NautilusTrader `TradeTick`); `aggressor_side` is BUYER, SELLER or NO_AGGRESSOR."""

    instrument_id: str
    price: Decimal
    size: Decimal
    aggressor_side: str
    trade_id: str
    ts_event: int
    ts_init: int


class BarRecord(msgspec.Struct, frozen=True):
    """A bar (NautilusTrader `Bar`)."""

    bar_type: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    ts_event: int
    ts_init: int


def urisafe_identifier(identifier: str) -> str:
    """The directory name NautilusTrader gives an instrument id or bar type (`/` removed)."""
    return identifier.replace("/", "")


def _stamp_ns(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    match = _ISO_STAMP.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, frac = match.groups()
    try:
        moment = _dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=_dt.timezone.utc)
    except ValueError:
        return None
    seconds = (moment - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)) // _dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int(frac.ljust(9, "0"))


def parse_filename_interval(file_name: str) -> tuple[int, int] | None:
    """`(start, end)` nanoseconds from a catalog file name, or None when it carries none."""
    stem = os.path.basename(file_name)
    if stem.endswith(".parquet"):
        stem = stem[: -len(".parquet")]
    first, sep, second = stem.partition("_")
    if not sep:
        return None
    start, end = _stamp_ns(first), _stamp_ns(second)
    if start is None or end is None:
        return None
    return start, end


class ParquetReplayCatalog:
    """Read-only replay catalog over a NautilusTrader `ParquetDataCatalog` root directory."""

    def __init__(self, root: str | os.PathLike[str], max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InvalidArgument(f"catalog root is not a directory: {self.root}")
        if max_records < 1:
            raise InvalidArgument(f"max_records must be >= 1, got {max_records}")
        self.max_records = max_records

    # ---- planning ---------------------------------------------------------------------------
    def _class_dirs(self, data_cls: str) -> list[Path]:
        canonical = _ALIASES.get(data_cls)
        names = _DATA_CLASS_DIRS[canonical] if canonical else (data_cls,)
        for name in names:
            if not _SAFE_COMPONENT.match(name) or name in (".", ".."):
                raise ValueError(f"data_cls {data_cls!r} is not a catalog directory name")
        return [self.root / "data" / name for name in names if (self.root / "data" / name).is_dir()]

    def _candidate_files(self, query: CatalogSliceQuery) -> list[Path]:
        files: list[Path] = []
        wanted = [urisafe_identifier(i) for i in query.identifiers]
        for name in wanted:
            if not _SAFE_COMPONENT.match(name) or name in (".", ".."):
                raise ValueError(f"identifier {name!r} is not a catalog directory name")
        is_bars = _ALIASES.get(query.data_cls) == "bars"
        for class_dir in self._class_dirs(query.data_cls):
            partitions = sorted(p for p in class_dir.iterdir() if p.is_dir() and not p.is_symlink())
            if not wanted:  # files straight under the class directory (no identifier partition)
                files += sorted(p for p in class_dir.glob("*.parquet") if p.is_file() and not p.is_symlink())
            if wanted:
                chosen = [p for p in partitions if p.name in wanted]
                if not chosen and is_bars:
                    chosen = [p for p in partitions if any(p.name.startswith(f"{w}-") for w in wanted)]
            else:
                chosen = partitions
            for partition in chosen:
                files += sorted(p for p in partition.glob("*.parquet") if p.is_file() and not p.is_symlink())
        return files

    def plan_slice(self, query: CatalogSliceQuery) -> CatalogSliceCoverage:
        """Files whose interval intersects `[query.start, query.end]`, sorted, with their intervals.
        Raises `CatalogError` (a data class or identifier that is not one path component, an
        unreadable directory)."""
        try:
            return self._plan_slice(query)
        except (ValueError, OSError) as exc:
            raise CatalogError(query.data_cls, str(exc)) from exc

    def _plan_slice(self, query: CatalogSliceQuery) -> CatalogSliceCoverage:
        selected: list[str] = []
        intervals: list[ReplayTimeRange] = []
        for path in self._candidate_files(query):
            interval = parse_filename_interval(path.name)
            if interval is not None and not (interval[0] <= query.end and query.start <= interval[1]):
                continue
            selected.append(str(path))
            if interval is not None:
                intervals.append(ReplayTimeRange(*interval))
        order = sorted(range(len(selected)), key=lambda i: selected[i])
        selected = [selected[i] for i in order]
        intervals.sort(key=lambda r: (r.start, r.end))
        return CatalogSliceCoverage(tuple(selected), tuple(intervals))

    # ---- loading ----------------------------------------------------------------------------
    def load_slice(self, plan: CatalogSlicePlan) -> list[CatalogReplayRecord]:
        """Typed records of the plan's files with `start <= ts_init <= end`, in ts_init order.
        Raises `CatalogError` for an unsupported data class and for a bad or unreadable file."""
        try:
            return self._load_slice(plan)
        except (ValueError, OSError, RuntimeError) as exc:
            raise CatalogError(plan.query.data_cls, str(exc)) from exc

    def _load_slice(self, plan: CatalogSlicePlan) -> list[CatalogReplayRecord]:
        canonical = _ALIASES.get(plan.query.data_cls)
        if canonical is None:
            raise ValueError(f"catalog replay loading for {plan.query.data_cls} is not supported")
        root = self.root.resolve()
        records: list[CatalogReplayRecord] = []
        for file_name in plan.coverage.files:
            path = Path(file_name).resolve()
            if root not in path.parents:
                raise ValueError(f"planned file {file_name} is outside the catalog root {self.root}")
            records += _read_file(path, canonical, plan.query, self.max_records - len(records))
        records.sort(key=lambda r: r.ts_init)
        return records


# ---- Parquet decoding (pyarrow) ------------------------------------------------------------------
def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - the export extra is part of the test extra
        raise RuntimeError("loading Parquet catalog slices needs pyarrow (pip install 'nes-eventstore[export]')") from exc
    return pq


_COLUMNS = {
    "quotes": ("bid_price", "ask_price", "bid_size", "ask_size"),
    "trades": ("price", "size", "aggressor_side", "trade_id"),
    "bars": ("open", "high", "low", "close", "volume"),
}
_PRICE_COLUMNS = {"bid_price", "ask_price", "price", "open", "high", "low", "close"}


def _fixed_point(column: Any, precision: int, name: str) -> list[Decimal]:
    import pyarrow as pa  # type: ignore[import-untyped]

    kind = column.type
    if pa.types.is_fixed_size_binary(kind) and kind.byte_width == 16:
        raws = [int.from_bytes(raw, "little", signed=True) for raw in column.to_pylist()]
        scale = 16
    elif pa.types.is_int64(kind):
        raws = column.to_pylist()
        scale = 9
    else:
        raise ValueError(f"column {name} has type {kind}, expected fixed_size_binary[16] or int64")
    if not 0 <= precision <= scale:
        raise ValueError(f"precision {precision} of column {name} is outside 0..{scale}")
    quantum = Decimal(1).scaleb(-precision)
    return [Decimal(raw).scaleb(-scale).quantize(quantum) for raw in raws]


def _metadata(schema: Any) -> dict[str, str]:
    raw = schema.metadata or {}
    return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()}


def _precision(meta: dict[str, str], key: str) -> int:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        raise ValueError(f"file metadata lacks an integer {key}") from None


def _read_file(path: Path, kind: str, query: CatalogSliceQuery, budget: int) -> list[CatalogReplayRecord]:
    pq = _pyarrow()
    try:
        parquet_file = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ValueError(f"cannot read {path.name}: {exc}") from None
    if parquet_file.metadata.num_rows > budget:
        raise ValueError(f"{path.name}: more than {budget} records left in this slice's max_records budget")
    needed = (*_COLUMNS[kind], "ts_event", "ts_init")
    missing = [c for c in needed if c not in parquet_file.schema_arrow.names]
    if missing:
        raise ValueError(f"{path.name} lacks columns {missing}")
    try:
        table = parquet_file.read(columns=list(needed))
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot read {path.name}: {exc}") from None
    meta = _metadata(parquet_file.schema_arrow)
    price_precision, size_precision = _precision(meta, "price_precision"), _precision(meta, "size_precision")
    identifier = meta.get("bar_type" if kind == "bars" else "instrument_id")
    if identifier is None:
        raise ValueError(f"{path.name} metadata lacks {'bar_type' if kind == 'bars' else 'instrument_id'}")
    columns: dict[str, list[Any]] = {}
    for name in _COLUMNS[kind]:
        column = table.column(name)
        if name == "aggressor_side":
            columns[name] = [_AGGRESSOR.get(v, f"UNKNOWN({v})") for v in column.to_pylist()]
        elif name == "trade_id":
            columns[name] = [str(v) for v in column.to_pylist()]
        else:
            precision = price_precision if name in _PRICE_COLUMNS else size_precision
            columns[name] = _fixed_point(column, precision, name)
    ts_event = table.column("ts_event").to_pylist()
    ts_init = table.column("ts_init").to_pylist()
    records = []
    for row in range(table.num_rows):
        ts = ts_init[row]
        if not isinstance(ts, int) or not query.start <= ts <= query.end:
            continue
        c = columns
        if kind == "quotes":
            data: Any = QuoteRecord(
                identifier, c["bid_price"][row], c["ask_price"][row], c["bid_size"][row], c["ask_size"][row], ts_event[row], ts
            )
        elif kind == "trades":
            data = TradeRecord(
                identifier, c["price"][row], c["size"][row], c["aggressor_side"][row], c["trade_id"][row], ts_event[row], ts
            )
        else:
            data = BarRecord(
                identifier, c["open"][row], c["high"][row], c["low"][row], c["close"][row], c["volume"][row], ts_event[row], ts
            )
        data_cls = kind
        records.append(CatalogReplayRecord(data_cls, identifier, ts, data))
    return records
