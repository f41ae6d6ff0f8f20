"""nes: an embedded, append-only event store for Python trading engines."""

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
    Corrupted,
    CrashedPredecessor,
    Disk,
    EventStoreError,
    Gap,
    HashMismatch,
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
    open_run,
    recover_predecessors,
)
from nes.reader import DEFAULT_SCAN_CHUNK_SIZE, EventStoreReader, SnapshotReplayPlan
from nes.recovery import RecoveredRun, RecoveryOutcome
from nes.replay import ReplayReport, open_event_store_replay_source, restore_snapshot_and_replay_tail
from nes.retention import RetentionPlan, RetentionRun, plan_lmdb_retention, plan_retention
from nes.snapshot import SnapshotAnchor, compute_snapshot_content_hash
from nes.verifier import Verifier, VerifyReport, verify_in_worker
from nes.writer import EntryDraft, EventStoreWriter, WriterConfig

__all__ = [
    "AppendEntry",
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
    "Closed",
    "compute_entry_hash",
    "compute_snapshot_content_hash",
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
    "Full",
    "Gap",
    "HaltReason",
    "HashMismatch",
    "Headers",
    "IndexKey",
    "IndexKind",
    "IntegrationUnavailable",
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
    "recover_predecessors",
    "RecoveredRun",
    "RecoveryOutcome",
    "RegisteredComponents",
    "ReplayReport",
    "restore_snapshot_and_replay_tail",
    "RetentionPlan",
    "RetentionRun",
    "RunIdentity",
    "RunManifest",
    "RunStatus",
    "ScanDirection",
    "SnapshotAnchor",
    "SnapshotAnchored",
    "SnapshotReplayPlan",
    "SubmitCounter",
    "TapAttachError",
    "Topic",
    "UnknownPayloadType",
    "Verifier",
    "verify_in_worker",
    "VerifyReport",
    "WriterConfig",
    "WriterDied",
]
