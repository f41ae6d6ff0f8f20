"""Replay inputs: what an incident or decision replay reads, planned apart from loading it.

Contract:
- One ordering rule: entries come in `seq` order (the durable log's order). `ts_init` bounds
  the catalog lookups and places catalog records in context, but never reorders entries.
- Planning scans the requested seq range once for its summary (first/last seq, count, min/max
  `ts_init`) and asks the catalog which files cover each selected slice; it loads nothing.
  Loading re-scans the requested range and loads the planned slices through the same catalog.
- Every failure is a typed `ReplayInputError` (see `nes.replay.errors`); reader failures
  (`HashMismatch`, `Gap`, ...) propagate unchanged. A catalog is only ever read.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from nes.backend.base import ScanDirection
from nes.entry import EventStoreEntry
from nes.errors import InvalidArgument
from nes.reader import EventStoreReader
from nes.replay.errors import (
    CatalogError,
    EmptyCatalogSelection,
    InvalidCatalogTimeRange,
    InvalidSeqRange,
    MissingCatalogSlice,
    MissingCatalogTimeBounds,
    ScopeMismatch,
)

__all__ = [
    "CatalogReplayRecord",
    "CatalogReplaySlice",
    "CatalogSliceCoverage",
    "CatalogSlicePlan",
    "CatalogSliceQuery",
    "CatalogSliceSelector",
    "CatalogSliceStatus",
    "ReplayCatalog",
    "ReplayInputPlan",
    "ReplayInputs",
    "ReplayScope",
    "ReplaySeqRange",
    "ReplayTimeRange",
    "load_catalog_replay_inputs",
    "load_forensics_replay_inputs",
    "plan_catalog_replay_inputs",
    "plan_forensics_replay_inputs",
]

U64_MAX = (1 << 64) - 1


def _u64(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= U64_MAX:
        raise InvalidArgument(f"{name} must be in [0, 2**64-1], got {value}")
    return value


class ReplayScope(str, enum.Enum):
    """What a replay reads: the log only, or the log joined with catalog slices."""

    Forensics = "forensics"
    Decision = "decision"
    FullIncident = "full_incident"

    def __str__(self) -> str:
        return self.value


class ReplaySeqRange(msgspec.Struct, frozen=True):
    """Inclusive, 1-based seq bounds; validated when a plan or load uses them."""

    from_seq: int
    to_seq: int

    def validate(self) -> ReplaySeqRange:
        """Raise `InvalidSeqRange` unless `1 <= from_seq <= to_seq`."""
        _u64("from_seq", self.from_seq)
        _u64("to_seq", self.to_seq)
        if self.from_seq == 0:
            raise InvalidSeqRange(self.from_seq, self.to_seq, "seq is 1-based")
        if self.from_seq > self.to_seq:
            raise InvalidSeqRange(self.from_seq, self.to_seq, "from_seq exceeds to_seq")
        return self


class ReplayTimeRange(msgspec.Struct, frozen=True):
    """Inclusive nanosecond bounds."""

    start: int
    end: int


class CatalogSliceSelector(msgspec.Struct, frozen=True):
    """A caller's choice of catalog data, before the replay window fills missing bounds.

    `data_cls` is the catalog's data class directory (`quotes`, `trades`, `bars`, ...);
    `identifiers` are instrument ids or bar types (empty: all); a missing `start`/`end` is taken
    from the scanned entries' `ts_init` range; `required` makes loading fail when the catalog has
    no files for it."""

    data_cls: str
    identifiers: tuple[str, ...] = ()
    start: int | None = None
    end: int | None = None
    required: bool = False

    def with_identifier(self, identifier: str) -> CatalogSliceSelector:
        """A copy with one more identifier."""
        return msgspec.structs.replace(self, identifiers=(*self.identifiers, identifier))

    def with_time_bounds(self, start: int, end: int) -> CatalogSliceSelector:
        """A copy with explicit inclusive bounds."""
        return msgspec.structs.replace(self, start=_u64("start", start), end=_u64("end", end))

    def require_coverage(self) -> CatalogSliceSelector:
        """A copy whose load fails (`MissingCatalogSlice`) when the catalog has no files."""
        return msgspec.structs.replace(self, required=True)


class CatalogSliceQuery(msgspec.Struct, frozen=True):
    """A selector resolved against the replay window: what the catalog is asked for."""

    data_cls: str
    identifiers: tuple[str, ...]
    start: int
    end: int
    required: bool


class CatalogSliceCoverage(msgspec.Struct, frozen=True):
    """The catalog's answer: the files selected for a slice and the intervals they cover."""

    files: tuple[str, ...] = ()
    intervals: tuple[ReplayTimeRange, ...] = ()

    def is_missing(self) -> bool:
        """True when the catalog found no files."""
        return not self.files


class CatalogSliceStatus(str, enum.Enum):
    """Whether the catalog had files for a planned slice."""

    Available = "available"
    Missing = "missing"


class CatalogSlicePlan(msgspec.Struct, frozen=True):
    """One planned slice: its query, the catalog's coverage and the resulting status."""

    query: CatalogSliceQuery
    coverage: CatalogSliceCoverage
    status: CatalogSliceStatus

    def is_missing(self) -> bool:
        """True when the catalog found no files for this slice."""
        return self.status is CatalogSliceStatus.Missing


class CatalogReplayRecord(msgspec.Struct, frozen=True):
    """One catalog record loaded as replay context; `data` is a typed record (for the Parquet
    catalog: `QuoteRecord`, `TradeRecord` or `BarRecord`)."""

    data_cls: str
    identifier: str | None
    ts_init: int
    data: Any


class CatalogReplaySlice(msgspec.Struct, frozen=True):
    """A planned slice with its loaded records (in the catalog's `ts_init` order)."""

    plan: CatalogSlicePlan
    records: list[CatalogReplayRecord]


class ReplayInputPlan(msgspec.Struct, frozen=True):
    """What a load will read: the requested range, what the log holds inside it, the slices."""

    scope: ReplayScope
    requested_range: ReplaySeqRange
    event_range: ReplaySeqRange | None
    event_count: int
    event_time_range: ReplayTimeRange | None
    catalog_slices: tuple[CatalogSlicePlan, ...] = ()

    def missing_catalog_slices(self) -> list[CatalogSlicePlan]:
        """The planned slices the catalog had no files for."""
        return [plan for plan in self.catalog_slices if plan.is_missing()]


class ReplayInputs(msgspec.Struct, frozen=True):
    """Loaded inputs: entries in seq order, then the catalog slices."""

    scope: ReplayScope
    entries: list[EventStoreEntry]
    catalog_slices: list[CatalogReplaySlice]


@runtime_checkable
class ReplayCatalog(Protocol):
    """A read-only catalog of market data. Either method may raise `CatalogError` or any other
    exception; the replay functions wrap the others in `CatalogError(data_cls, str(exc))`."""

    def plan_slice(self, query: CatalogSliceQuery) -> CatalogSliceCoverage:
        """The files (and intervals) that cover `query`, without loading them."""
        ...

    def load_slice(self, plan: CatalogSlicePlan) -> list[CatalogReplayRecord]:
        """The records of a planned, available slice."""
        ...


# ---- planning and loading ------------------------------------------------------------------------
class _Span(msgspec.Struct, frozen=True):
    event_range: ReplaySeqRange | None
    event_count: int
    time_range: ReplayTimeRange | None


def _scan_span(reader: EventStoreReader[Any], range_: ReplaySeqRange) -> _Span:
    range_.validate()
    first = last = None
    count = 0
    lo = hi = 0
    for entry in reader.scan_range(range_.from_seq, range_.to_seq, ScanDirection.Forward):
        if first is None:
            first = entry.seq
            lo = hi = entry.ts_init
        last = entry.seq
        count += 1
        ts = entry.ts_init
        if ts < lo:
            lo = ts
        elif ts > hi:
            hi = ts
    if first is None or last is None:
        return _Span(None, 0, None)
    return _Span(ReplaySeqRange(first, last), count, ReplayTimeRange(lo, hi))


def _load_entries(reader: EventStoreReader[Any], range_: ReplaySeqRange) -> list[EventStoreEntry]:
    range_.validate()
    return list(reader.scan_range(range_.from_seq, range_.to_seq, ScanDirection.Forward))


def _check_scope(plan: ReplayInputPlan, expected: ReplayScope) -> None:
    if plan.scope is not expected:
        raise ScopeMismatch(str(expected), str(plan.scope))


def plan_forensics_replay_inputs(reader: EventStoreReader[Any], range_: ReplaySeqRange) -> ReplayInputPlan:
    """Summarise the entries of `range_` (one forward scan); no catalog is involved.

    Raises `InvalidSeqRange`, or the reader's error."""
    span = _scan_span(reader, range_)
    return ReplayInputPlan(ReplayScope.Forensics, range_, span.event_range, span.event_count, span.time_range, ())


def load_forensics_replay_inputs(reader: EventStoreReader[Any], plan: ReplayInputPlan) -> ReplayInputs:
    """The entries of the plan's requested range, in seq order.

    Raises `ScopeMismatch` for a catalog-joined plan, `InvalidSeqRange`, or the reader's error."""
    _check_scope(plan, ReplayScope.Forensics)
    return ReplayInputs(ReplayScope.Forensics, _load_entries(reader, plan.requested_range), [])


def _resolve(selector: CatalogSliceSelector, window: ReplayTimeRange | None) -> CatalogSliceQuery:
    start = selector.start if selector.start is not None else (window.start if window is not None else None)
    end = selector.end if selector.end is not None else (window.end if window is not None else None)
    if start is None or end is None:
        raise MissingCatalogTimeBounds(selector.data_cls)
    if start > end:
        raise InvalidCatalogTimeRange(selector.data_cls, start, end)
    return CatalogSliceQuery(selector.data_cls, tuple(selector.identifiers), start, end, selector.required)


def plan_catalog_replay_inputs(
    reader: EventStoreReader[Any],
    catalog: ReplayCatalog,
    range_: ReplaySeqRange,
    selectors: Sequence[CatalogSliceSelector],
    scope: ReplayScope = ReplayScope.Decision,
) -> ReplayInputPlan:
    """Summarise `range_` and plan each selected catalog slice over the replay window.

    Raises `EmptyCatalogSelection` (no selectors), `InvalidSeqRange`,
    `MissingCatalogTimeBounds` (an unbounded selector over a range without entries),
    `InvalidCatalogTimeRange` (start > end), `CatalogError` (the catalog's `plan_slice` failed),
    or the reader's error."""
    if scope is ReplayScope.Forensics:
        raise InvalidArgument("a catalog-joined plan needs the Decision or FullIncident scope")
    if not selectors:
        raise EmptyCatalogSelection(str(scope))
    span = _scan_span(reader, range_)
    slices = []
    for selector in selectors:
        query = _resolve(selector, span.time_range)
        try:
            coverage = catalog.plan_slice(query)
        except CatalogError:
            raise
        except Exception as exc:  # noqa: BLE001 - any catalog failure becomes the typed error
            raise CatalogError(query.data_cls, str(exc)) from exc
        status = CatalogSliceStatus.Missing if coverage.is_missing() else CatalogSliceStatus.Available
        slices.append(CatalogSlicePlan(query, coverage, status))
    return ReplayInputPlan(scope, range_, span.event_range, span.event_count, span.time_range, tuple(slices))


def load_catalog_replay_inputs(
    reader: EventStoreReader[Any],
    catalog: ReplayCatalog,
    plan: ReplayInputPlan,
    scope: ReplayScope | None = None,
) -> ReplayInputs:
    """The plan's entries (seq order) and the records of every planned slice.

    A missing required slice raises `MissingCatalogSlice`; a missing optional one loads as no
    records without asking the catalog. `scope`, when given, must be the plan's
    (`ScopeMismatch`). A `load_slice` failure raises `CatalogError`."""
    if scope is not None:
        _check_scope(plan, scope)
    if plan.scope is ReplayScope.Forensics:
        raise ScopeMismatch(str(ReplayScope.Decision), str(plan.scope))
    entries = _load_entries(reader, plan.requested_range)
    slices = []
    for slice_plan in plan.catalog_slices:
        if slice_plan.is_missing():
            if slice_plan.query.required:
                raise MissingCatalogSlice(slice_plan.query.data_cls, list(slice_plan.query.identifiers))
            slices.append(CatalogReplaySlice(slice_plan, []))
            continue
        try:
            records = catalog.load_slice(slice_plan)
        except CatalogError:
            raise
        except Exception as exc:  # noqa: BLE001 - any catalog failure becomes the typed error
            raise CatalogError(slice_plan.query.data_cls, str(exc)) from exc
        slices.append(CatalogReplaySlice(slice_plan, list(records)))
    return ReplayInputs(plan.scope, entries, slices)

