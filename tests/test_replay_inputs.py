"""Replay inputs (spec replay.md §1-§2): ranges, forensics plan/load, catalog-joined plan/load and
every error case, over sealed LMDB run files and a Parquet catalog written by NautilusTrader."""

from __future__ import annotations

from pathlib import Path

import pytest
from replay_helpers import INSTRUMENT, entry_ts, sealed_reader, write_nautilus_catalog

from nes.errors import Gap
from nes.replay import (
    CatalogError,
    CatalogReplayRecord,
    CatalogSliceCoverage,
    CatalogSlicePlan,
    CatalogSliceQuery,
    CatalogSliceSelector,
    CatalogSliceStatus,
    EmptyCatalogSelection,
    InvalidCatalogTimeRange,
    InvalidSeqRange,
    MissingCatalogSlice,
    MissingCatalogTimeBounds,
    ParquetReplayCatalog,
    ReplayCatalog,
    ReplayInputError,
    ReplayScope,
    ReplaySeqRange,
    ReplayTimeRange,
    ScopeMismatch,
    load_catalog_replay_inputs,
    load_forensics_replay_inputs,
    plan_catalog_replay_inputs,
    plan_forensics_replay_inputs,
)
from runfile_helpers import make_run_file, rewrite_entries, seal_as_is

from nes.backend.lmdb import LmdbBackend
from nes.codec import seq_key
from nes.reader import EventStoreReader


class RecordingCatalog:
    """A real ParquetReplayCatalog that records which slices it was asked to load."""

    def __init__(self, inner: ParquetReplayCatalog) -> None:
        self.inner = inner
        self.loaded: list[CatalogSlicePlan] = []

    def plan_slice(self, query: CatalogSliceQuery) -> CatalogSliceCoverage:
        return self.inner.plan_slice(query)

    def load_slice(self, plan: CatalogSlicePlan) -> list[CatalogReplayRecord]:
        self.loaded.append(plan)
        return self.inner.load_slice(plan)


@pytest.fixture
def catalog(tmp_path: Path) -> RecordingCatalog:
    root = tmp_path / "catalog"
    write_nautilus_catalog(root, quote_ts=[entry_ts(s) for s in (2, 4, 6, 30)], bar_ts=[entry_ts(3), entry_ts(9)])
    return RecordingCatalog(ParquetReplayCatalog(root))


# ---- ranges ------------------------------------------------------------------------------------
def test_seq_range_from_zero_is_invalid_because_seq_is_one_based(tmp_path: Path) -> None:
    with pytest.raises(InvalidSeqRange) as info:
        plan_forensics_replay_inputs(sealed_reader(tmp_path, 3), ReplaySeqRange(0, 2))
    assert (info.value.from_seq, info.value.to_seq, info.value.message) == (0, 2, "seq is 1-based")
    assert str(info.value) == "invalid replay seq range 0..=2: seq is 1-based"
    assert isinstance(info.value, ReplayInputError)


def test_seq_range_with_from_above_to_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidSeqRange, match="from_seq exceeds to_seq"):
        plan_forensics_replay_inputs(sealed_reader(tmp_path, 3), ReplaySeqRange(3, 2))


def test_load_validates_the_plan_range_too(tmp_path: Path) -> None:
    reader = sealed_reader(tmp_path, 3)
    plan = plan_forensics_replay_inputs(reader, ReplaySeqRange(1, 2))
    bad = type(plan)(plan.scope, ReplaySeqRange(0, 1), None, 0, None)
    with pytest.raises(InvalidSeqRange):
        load_forensics_replay_inputs(reader, bad)


# ---- forensics -----------------------------------------------------------------------------------
def test_forensics_plan_summarises_the_requested_range(tmp_path: Path) -> None:
    plan = plan_forensics_replay_inputs(sealed_reader(tmp_path, 10), ReplaySeqRange(3, 7))
    assert plan.scope is ReplayScope.Forensics
    assert plan.requested_range == ReplaySeqRange(3, 7)
    assert plan.event_range == ReplaySeqRange(3, 7)
    assert plan.event_count == 5
    assert plan.event_time_range == ReplayTimeRange(entry_ts(3), entry_ts(7))
    assert plan.catalog_slices == ()


def test_forensics_plan_clips_to_the_durable_high_watermark(tmp_path: Path) -> None:
    plan = plan_forensics_replay_inputs(sealed_reader(tmp_path, 10), ReplaySeqRange(8, 500))
    assert (plan.event_range, plan.event_count) == (ReplaySeqRange(8, 10), 3)


def test_forensics_plan_past_the_log_is_empty(tmp_path: Path) -> None:
    plan = plan_forensics_replay_inputs(sealed_reader(tmp_path, 4), ReplaySeqRange(5, 9))
    assert (plan.event_range, plan.event_count, plan.event_time_range) == (None, 0, None)


def test_forensics_load_returns_the_entries_in_seq_order(tmp_path: Path) -> None:
    reader = sealed_reader(tmp_path, 10)
    inputs = load_forensics_replay_inputs(reader, plan_forensics_replay_inputs(reader, ReplaySeqRange(4, 8)))
    assert [e.seq for e in inputs.entries] == [4, 5, 6, 7, 8]
    assert inputs.catalog_slices == [] and inputs.scope is ReplayScope.Forensics


def test_forensics_plan_propagates_a_gap_in_the_log(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "gap.lmdb", entries=10)
    rewrite_entries(path, lambda txn, db: txn.delete(seq_key(5), db=db))
    seal_as_is(path)  # the gap was there when it was sealed: the plan itself must see it
    reader = EventStoreReader(LmdbBackend.open_sealed_file(path))
    with pytest.raises(Gap):
        plan_forensics_replay_inputs(reader, ReplaySeqRange(1, 10))


def test_loading_a_catalog_plan_as_forensics_is_a_scope_mismatch(tmp_path: Path, catalog: RecordingCatalog) -> None:
    reader = sealed_reader(tmp_path, 10)
    plan = plan_catalog_replay_inputs(reader, catalog, ReplaySeqRange(1, 10), [CatalogSliceSelector("quotes")])
    with pytest.raises(ScopeMismatch) as info:
        load_forensics_replay_inputs(reader, plan)
    assert (info.value.expected, info.value.actual) == ("forensics", "decision")


def test_loading_a_forensics_plan_with_the_catalog_loader_is_a_scope_mismatch(tmp_path: Path, catalog: RecordingCatalog) -> None:
    reader = sealed_reader(tmp_path, 10)
    plan = plan_forensics_replay_inputs(reader, ReplaySeqRange(1, 10))
    with pytest.raises(ScopeMismatch):
        load_catalog_replay_inputs(reader, catalog, plan)


def test_loading_with_an_explicit_other_scope_is_a_scope_mismatch(tmp_path: Path, catalog: RecordingCatalog) -> None:
    reader = sealed_reader(tmp_path, 10)
    plan = plan_catalog_replay_inputs(reader, catalog, ReplaySeqRange(1, 10), [CatalogSliceSelector("quotes")])
    with pytest.raises(ScopeMismatch):
        load_catalog_replay_inputs(reader, catalog, plan, scope=ReplayScope.FullIncident)


# ---- selectors --------------------------------------------------------------------------------
def test_selector_builders_return_new_selectors() -> None:
    base = CatalogSliceSelector("quotes")
    built = base.with_identifier("A").with_identifier("B").with_time_bounds(5, 9).require_coverage()
    assert built == CatalogSliceSelector("quotes", ("A", "B"), 5, 9, True)
    assert base == CatalogSliceSelector("quotes")
    assert isinstance(RecordingCatalog(ParquetReplayCatalog.__new__(ParquetReplayCatalog)), ReplayCatalog)


# ---- catalog-joined planning ----------------------------------------------------------------------
def test_catalog_plan_without_selectors_is_refused(tmp_path: Path, catalog: RecordingCatalog) -> None:
    with pytest.raises(EmptyCatalogSelection) as info:
        plan_catalog_replay_inputs(sealed_reader(tmp_path, 3), catalog, ReplaySeqRange(1, 3), [])
    assert str(info.value) == "decision replay requires at least one selected catalog slice"


def test_selector_bounds_default_to_the_event_time_range(tmp_path: Path, catalog: RecordingCatalog) -> None:
    selector = CatalogSliceSelector("quotes").with_identifier(INSTRUMENT)
    plan = plan_catalog_replay_inputs(sealed_reader(tmp_path, 10), catalog, ReplaySeqRange(3, 7), [selector])
    (slice_plan,) = plan.catalog_slices
    assert (slice_plan.query.start, slice_plan.query.end) == (entry_ts(3), entry_ts(7))
    assert slice_plan.status is CatalogSliceStatus.Available
    assert [Path(f).parent.name for f in slice_plan.coverage.files] == ["AUDUSD.SIM", "AUDUSD.SIM"]
    assert [r.start for r in slice_plan.coverage.intervals] == [entry_ts(4), entry_ts(6)]


def test_only_the_missing_bound_is_taken_from_the_events(tmp_path: Path, catalog: RecordingCatalog) -> None:
    selector = CatalogSliceSelector("quotes", start=entry_ts(1))
    plan = plan_catalog_replay_inputs(sealed_reader(tmp_path, 10), catalog, ReplaySeqRange(3, 7), [selector])
    assert (plan.catalog_slices[0].query.start, plan.catalog_slices[0].query.end) == (entry_ts(1), entry_ts(7))


def test_unbounded_selector_over_an_empty_scan_needs_explicit_bounds(tmp_path: Path, catalog: RecordingCatalog) -> None:
    with pytest.raises(MissingCatalogTimeBounds) as info:
        plan_catalog_replay_inputs(sealed_reader(tmp_path, 3), catalog, ReplaySeqRange(5, 9), [CatalogSliceSelector("bars")])
    assert info.value.data_cls == "bars"


def test_half_bounded_selector_over_an_empty_scan_needs_explicit_bounds(tmp_path: Path, catalog: RecordingCatalog) -> None:
    with pytest.raises(MissingCatalogTimeBounds):
        plan_catalog_replay_inputs(
            sealed_reader(tmp_path, 3), catalog, ReplaySeqRange(5, 9), [CatalogSliceSelector("bars", start=1)]
        )


def test_explicit_bounds_plan_an_empty_scan(tmp_path: Path, catalog: RecordingCatalog) -> None:
    selector = CatalogSliceSelector("quotes").with_time_bounds(entry_ts(1), entry_ts(5))
    plan = plan_catalog_replay_inputs(sealed_reader(tmp_path, 3), catalog, ReplaySeqRange(5, 9), [selector])
    assert plan.event_count == 0 and len(plan.catalog_slices[0].coverage.files) == 2


def test_selector_with_start_after_end_is_an_invalid_time_range(tmp_path: Path, catalog: RecordingCatalog) -> None:
    selector = CatalogSliceSelector("quotes", start=10, end=5)
    with pytest.raises(InvalidCatalogTimeRange) as info:
        plan_catalog_replay_inputs(sealed_reader(tmp_path, 3), catalog, ReplaySeqRange(1, 3), [selector])
    assert (info.value.data_cls, info.value.start, info.value.end) == ("quotes", 10, 5)


def test_catalog_plan_failure_is_a_typed_catalog_error(tmp_path: Path, catalog: RecordingCatalog) -> None:
    with pytest.raises(CatalogError) as info:
        plan_catalog_replay_inputs(sealed_reader(tmp_path, 3), catalog, ReplaySeqRange(1, 3), [CatalogSliceSelector("..")])
    assert info.value.data_cls == ".."
    assert "not a catalog directory name" in info.value.message


def test_plan_reports_missing_slices(tmp_path: Path, catalog: RecordingCatalog) -> None:
    selectors = [CatalogSliceSelector("quotes"), CatalogSliceSelector("trades"), CatalogSliceSelector("bars").with_identifier("X.Y")]
    plan = plan_catalog_replay_inputs(sealed_reader(tmp_path, 10), catalog, ReplaySeqRange(1, 10), selectors)
    assert [p.query.data_cls for p in plan.missing_catalog_slices()] == ["trades", "bars"]
    assert [p.status for p in plan.catalog_slices] == [
        CatalogSliceStatus.Available,
        CatalogSliceStatus.Missing,
        CatalogSliceStatus.Missing,
    ]


# ---- catalog-joined loading -----------------------------------------------------------------------
def test_required_missing_slice_fails_the_load(tmp_path: Path, catalog: RecordingCatalog) -> None:
    reader = sealed_reader(tmp_path, 10)
    selector = CatalogSliceSelector("trades").with_identifier(INSTRUMENT).require_coverage()
    plan = plan_catalog_replay_inputs(reader, catalog, ReplaySeqRange(1, 10), [selector])
    with pytest.raises(MissingCatalogSlice) as info:
        load_catalog_replay_inputs(reader, catalog, plan)
    assert (info.value.data_cls, info.value.identifiers) == ("trades", [INSTRUMENT])
    assert catalog.loaded == []


def test_optional_missing_slice_loads_empty_without_asking_the_catalog(tmp_path: Path, catalog: RecordingCatalog) -> None:
    reader = sealed_reader(tmp_path, 10)
    plan = plan_catalog_replay_inputs(reader, catalog, ReplaySeqRange(1, 10), [CatalogSliceSelector("trades")])
    inputs = load_catalog_replay_inputs(reader, catalog, plan)
    assert inputs.catalog_slices[0].records == [] and catalog.loaded == []
    assert [e.seq for e in inputs.entries] == list(range(1, 11))


def test_catalog_load_failure_is_a_typed_catalog_error(tmp_path: Path, catalog: RecordingCatalog) -> None:
    reader = sealed_reader(tmp_path, 10)
    query = CatalogSliceQuery("order_book_deltas", (INSTRUMENT,), 0, 10, True)
    plan = type(plan_forensics_replay_inputs(reader, ReplaySeqRange(1, 2)))(
        ReplayScope.Decision,
        ReplaySeqRange(1, 2),
        None,
        0,
        None,
        (CatalogSlicePlan(query, CatalogSliceCoverage(("x.parquet",)), CatalogSliceStatus.Available),),
    )
    with pytest.raises(CatalogError, match="catalog replay loading for order_book_deltas is not supported"):
        load_catalog_replay_inputs(reader, catalog, plan)
