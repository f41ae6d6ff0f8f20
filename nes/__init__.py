"""nes: an embedded, append-only event store for Python trading engines."""

from nes.backend import (
    AppendEntry,
    EncodedEntry,
    EventStore,
    IndexKey,
    IndexKind,
    MemoryBackend,
    ScanDirection,
)
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
from nes.snapshot import SnapshotAnchor, compute_snapshot_content_hash

__all__ = [
    "AppendEntry",
    "Backend",
    "Closed",
    "Corrupted",
    "CrashedPredecessor",
    "Disk",
    "EncodedEntry",
    "EntryHash",
    "EventStore",
    "EventStoreEntry",
    "EventStoreError",
    "Gap",
    "HashMismatch",
    "Headers",
    "IndexKey",
    "IndexKind",
    "MemoryBackend",
    "OutOfOrder",
    "PayloadType",
    "RegisteredComponents",
    "RunManifest",
    "RunStatus",
    "ScanDirection",
    "SnapshotAnchor",
    "Topic",
    "build_run_id",
    "compute_entry_hash",
    "compute_snapshot_content_hash",
]
