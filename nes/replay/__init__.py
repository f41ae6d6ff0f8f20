"""Replay: rebuild state and replay incidents from the log, engine-neutral.

- `inputs`: seq/time ranges, forensics and catalog-joined input plans and loads, the
  read-only `ReplayCatalog` protocol.
- `parquet`: a `ReplayCatalog` over NautilusTrader's `ParquetDataCatalog` layout (pyarrow).
- `blobs`: the content-addressed snapshot blob store and the session's snapshot anchorer.
- `restore`: snapshot + tail restore of any `CacheReplayTarget` from a sealed run.
- `boot`: the kernel's restore-at-boot hook.
- `errors`: the typed error set.
The NautilusTrader cache target lives in `nes.integrations.nautilus.replay`. One ordering rule
everywhere: entries apply in seq order; timestamps never reorder them.
"""

from nes.replay.blobs import SnapshotAnchorer, SnapshotBlobStore, check_run_file_blobs
from nes.replay.boot import CacheRestoreAtBootError, restore_parent_cache
from nes.replay.errors import (
    BlobStoreError,
    CacheReplayError,
    CatalogError,
    EmptyCatalogSelection,
    InvalidCatalogTimeRange,
    InvalidSeqRange,
    MissingCatalogSlice,
    MissingCatalogTimeBounds,
    ReplayApplyError,
    ReplayDecodeError,
    ReplayInputError,
    ScopeMismatch,
    SnapshotHashMismatch,
    SnapshotRestore,
    UnexpectedSeq,
)
from nes.replay.inputs import (
    CatalogReplayRecord,
    CatalogReplaySlice,
    CatalogSliceCoverage,
    CatalogSlicePlan,
    CatalogSliceQuery,
    CatalogSliceSelector,
    CatalogSliceStatus,
    ReplayCatalog,
    ReplayInputPlan,
    ReplayInputs,
    ReplayScope,
    ReplaySeqRange,
    ReplayTimeRange,
    load_catalog_replay_inputs,
    load_forensics_replay_inputs,
    plan_catalog_replay_inputs,
    plan_forensics_replay_inputs,
)
from nes.replay.parquet import BarRecord, ParquetReplayCatalog, QuoteRecord, TradeRecord
from nes.replay.restore import (
    CacheReplayReport,
    CacheReplayTarget,
    EventStoreReplayReport,
    ReplayReport,
    open_event_store_replay_source,
    restore_cache_from_sealed_run,
    restore_cache_snapshot_and_replay_tail,
    restore_snapshot_and_replay_tail,
    validate_event_store_replay_source,
)

__all__ = [
    "BarRecord",
    "BlobStoreError",
    "CacheReplayError",
    "CacheReplayReport",
    "CacheReplayTarget",
    "CacheRestoreAtBootError",
    "CatalogError",
    "CatalogReplayRecord",
    "CatalogReplaySlice",
    "CatalogSliceCoverage",
    "CatalogSlicePlan",
    "CatalogSliceQuery",
    "CatalogSliceSelector",
    "CatalogSliceStatus",
    "check_run_file_blobs",
    "EmptyCatalogSelection",
    "EventStoreReplayReport",
    "InvalidCatalogTimeRange",
    "InvalidSeqRange",
    "load_catalog_replay_inputs",
    "load_forensics_replay_inputs",
    "MissingCatalogSlice",
    "MissingCatalogTimeBounds",
    "open_event_store_replay_source",
    "ParquetReplayCatalog",
    "plan_catalog_replay_inputs",
    "plan_forensics_replay_inputs",
    "QuoteRecord",
    "ReplayApplyError",
    "ReplayCatalog",
    "ReplayDecodeError",
    "ReplayInputError",
    "ReplayInputPlan",
    "ReplayInputs",
    "ReplayReport",
    "ReplayScope",
    "ReplaySeqRange",
    "ReplayTimeRange",
    "restore_cache_from_sealed_run",
    "restore_cache_snapshot_and_replay_tail",
    "restore_parent_cache",
    "restore_snapshot_and_replay_tail",
    "ScopeMismatch",
    "SnapshotAnchorer",
    "SnapshotBlobStore",
    "SnapshotHashMismatch",
    "SnapshotRestore",
    "TradeRecord",
    "UnexpectedSeq",
    "validate_event_store_replay_source",
]
