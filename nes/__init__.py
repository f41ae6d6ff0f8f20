"""nes: an embedded, append-only event store for Python trading engines.

Everything a user needs is importable from here; every exception the public API raises is an
`EventStoreError` (the tree is in `nes.errors`). `nes.__version__` is the package version.
"""

from nes._version import __version__
from nes.backend import (
    AppendEntry,
    EncodedEntry,
    EventStore,
    IndexKey,
    IndexKind,
    MemoryBackend,
    PreparedBatch,
    ScanDirection,
)
from nes.backend.lmdb import LmdbBackend
from nes.capture import (
    BusCaptureAdapter,
    CaptureEncodeError,
    CaptureError,
    CaptureHalted,
    CaptureSubmitError,
    EncodedPayload,
    EncoderRegistry,
    IntegrationUnavailable,
    PayloadDecodeError,
    SubmitCounter,
    TapAttachError,
    UnknownPayloadType,
)
from nes.config import Bounded, EventStoreConfig, Full, RunIdentity, SnapshotAnchored
from nes.entry import EventStoreEntry, PayloadType, Topic
from nes.errors import (
    Backend,
    Closed,
    ConfigError,
    Corrupted,
    CrashedPredecessor,
    Disk,
    EventStoreError,
    Gap,
    HashMismatch,
    InvalidArgument,
    OutOfOrder,
)
from nes.hash import EntryHash, compute_entry_hash
from nes.headers import Headers
from nes.ids import build_run_id
from nes.manifest import RegisteredComponents, RunManifest, RunStatus
from nes.halt import BackendCorrupted, BackendDisk, BackendError, BackpressureStall, HaltReason, WriterDied
from nes.kernel import (
    BootError,
    EventStoreLifecycle,
    EventStoreLifecycleOptions,
    EventStoreSession,
    ReplaySourceError,
    RunStartedHalted,
    RunStartedTimeout,
    open_run,
    recover_predecessors,
)
from nes.reader import DEFAULT_SCAN_CHUNK_SIZE, EventStoreReader, SnapshotReplayPlan
from nes.recovery import RecoveredRun, RecoveryOutcome
from nes.replay import (
    ReplayReport,
    SnapshotHashMismatch,
    open_event_store_replay_source,
    restore_snapshot_and_replay_tail,
)
from nes.retention import RetentionPlan, RetentionRun, plan_lmdb_retention, plan_retention
from nes.snapshot import SnapshotAnchor, compute_snapshot_content_hash
from nes.verifier import Verifier, VerifyOpenError, VerifyReport, verify_in_worker
from nes.writer import (
    EntryDraft,
    EventStoreWriter,
    HaltSignaled,
    InvalidDraft,
    RecordTooLarge,
    SubmitError,
    WriterClosed,
    WriterConfig,
    WriterHalted,
)

from nes.ops.export import ExportRefused, export_run
from nes.ops.retention_apply import ApplyReport, RetentionApplyError, apply_retention
from nes.ops.runfile import RunFile, RunFileError
from nes.ops.runs import RunRow, list_runs
from nes.ops.show import InvalidRange, UnknownOrderId
from nes.ops.tail import follow
from nes.ops.trace import UnknownSeq, causation_chain, trace_order

__all__ = [
    "__version__",
    "AppendEntry",
    "ApplyReport",
    "apply_retention",
    "Backend",
    "BackendCorrupted",
    "BackendDisk",
    "BackendError",
    "BackpressureStall",
    "BootError",
    "Bounded",
    "build_run_id",
    "BusCaptureAdapter",
    "CaptureEncodeError",
    "CaptureError",
    "CaptureHalted",
    "CaptureSubmitError",
    "causation_chain",
    "Closed",
    "compute_entry_hash",
    "compute_snapshot_content_hash",
    "ConfigError",
    "Corrupted",
    "CrashedPredecessor",
    "DEFAULT_SCAN_CHUNK_SIZE",
    "Disk",
    "EncodedEntry",
    "EncodedPayload",
    "EncoderRegistry",
    "EntryDraft",
    "EntryHash",
    "EventStore",
    "EventStoreConfig",
    "EventStoreEntry",
    "EventStoreError",
    "EventStoreLifecycle",
    "EventStoreLifecycleOptions",
    "EventStoreReader",
    "EventStoreSession",
    "EventStoreWriter",
    "export_run",
    "ExportRefused",
    "follow",
    "Full",
    "Gap",
    "HaltReason",
    "HaltSignaled",
    "HashMismatch",
    "Headers",
    "IndexKey",
    "IndexKind",
    "IntegrationUnavailable",
    "InvalidArgument",
    "InvalidDraft",
    "InvalidRange",
    "list_runs",
    "LmdbBackend",
    "MemoryBackend",
    "open_event_store_replay_source",
    "open_run",
    "OutOfOrder",
    "PayloadDecodeError",
    "PayloadType",
    "plan_lmdb_retention",
    "plan_retention",
    "PreparedBatch",
    "RecordTooLarge",
    "recover_predecessors",
    "RecoveredRun",
    "RecoveryOutcome",
    "RegisteredComponents",
    "ReplayReport",
    "ReplaySourceError",
    "restore_snapshot_and_replay_tail",
    "RetentionApplyError",
    "RetentionPlan",
    "RetentionRun",
    "RunIdentity",
    "RunFile",
    "RunFileError",
    "RunManifest",
    "RunStartedHalted",
    "RunStartedTimeout",
    "RunRow",
    "RunStatus",
    "ScanDirection",
    "SnapshotAnchor",
    "SnapshotAnchored",
    "SnapshotHashMismatch",
    "SnapshotReplayPlan",
    "SubmitCounter",
    "SubmitError",
    "TapAttachError",
    "Topic",
    "trace_order",
    "UnknownOrderId",
    "UnknownPayloadType",
    "UnknownSeq",
    "Verifier",
    "verify_in_worker",
    "VerifyOpenError",
    "VerifyReport",
    "WriterClosed",
    "WriterConfig",
    "WriterDied",
    "WriterHalted",
]
