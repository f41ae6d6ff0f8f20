"""Storage backends: the `EventStore` contract, the memory backend and the LMDB backend."""

from nes.backend.base import (
    AppendEntry,
    EncodedEntry,
    EventStore,
    IndexKey,
    IndexKind,
    PreparedBatch,
    ScanDirection,
)
from nes.backend.memory import MemoryBackend

__all__ = [
    "AppendEntry",
    "EncodedEntry",
    "EventStore",
    "IndexKey",
    "IndexKind",
    "PreparedBatch",
    "ScanDirection",
    "MemoryBackend",
]
