"""Replay errors: a closed set per stage, each carrying its fields (callers match on the type).

    ReplayInputError                    planning or loading replay inputs
      InvalidSeqRange(from_seq, to_seq, message)   "seq is 1-based" / "from_seq exceeds to_seq"
      EmptyCatalogSelection(scope)                 a catalog-joined plan without selectors
      ScopeMismatch(expected, actual)              a plan loaded through the wrong scope's API
      MissingCatalogTimeBounds(data_cls)           an unbounded selector over an empty scan
      InvalidCatalogTimeRange(data_cls, start, end) start > end
      MissingCatalogSlice(data_cls, identifiers)   a required slice the catalog has no files for
      CatalogError(data_cls, message)              the catalog failed (the crate's `Catalog`)
    CacheReplayError                    restoring a cache from snapshot + tail
      SnapshotRestore(blob_ref, message)           blob missing, unreadable, wrong hash, restore failed
        SnapshotHashMismatch(blob_ref, expected, actual)
      UnexpectedSeq(seq, from_seq)                 the tail scan yielded an entry before its start
      ReplayDecodeError(seq, payload_type, message) a captured payload that does not decode
      ReplayApplyError(seq, payload_type, message)  a decoded payload the cache refused
    BlobStoreError(message)             a blob reference or blob file the store refuses

Reader failures (`HashMismatch`, `Gap`, `Corrupted`, `Backend`, ...) propagate unchanged.
Messages are the reference crate's Display strings.
"""

from __future__ import annotations

from nes.errors import EventStoreError

__all__ = [
    "BlobStoreError",
    "CacheReplayError",
    "CatalogError",
    "EmptyCatalogSelection",
    "InvalidCatalogTimeRange",
    "InvalidSeqRange",
    "MissingCatalogSlice",
    "MissingCatalogTimeBounds",
    "ReplayApplyError",
    "ReplayDecodeError",
    "ReplayInputError",
    "ScopeMismatch",
    "SnapshotHashMismatch",
    "SnapshotRestore",
    "UnexpectedSeq",
]


class ReplayInputError(EventStoreError):
    """Planning or loading replay inputs failed (base of the input errors)."""


class InvalidSeqRange(ReplayInputError):
    """The requested seq range is not a valid 1-based inclusive range."""

    def __init__(self, from_seq: int, to_seq: int, message: str) -> None:
        super().__init__(from_seq, to_seq, message)
        self.from_seq, self.to_seq, self.message = from_seq, to_seq, message

    def __str__(self) -> str:
        return f"invalid replay seq range {self.from_seq}..={self.to_seq}: {self.message}"


class EmptyCatalogSelection(ReplayInputError):
    """A catalog-joined replay was planned without any catalog slice selector."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope

    def __str__(self) -> str:
        return f"{self.scope} replay requires at least one selected catalog slice"


class ScopeMismatch(ReplayInputError):
    """A plan was loaded through another scope's loader."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(expected, actual)
        self.expected, self.actual = expected, actual

    def __str__(self) -> str:
        return f"replay input plan scope {self.actual} does not match expected scope {self.expected}"


class MissingCatalogTimeBounds(ReplayInputError):
    """A selector without explicit bounds, over a seq range with no entries to take them from."""

    def __init__(self, data_cls: str) -> None:
        super().__init__(data_cls)
        self.data_cls = data_cls

    def __str__(self) -> str:
        return f"catalog slice {self.data_cls} requires explicit time bounds because the replay scan is empty"


class InvalidCatalogTimeRange(ReplayInputError):
    """A resolved catalog slice with start > end."""

    def __init__(self, data_cls: str, start: int, end: int) -> None:
        super().__init__(data_cls, start, end)
        self.data_cls, self.start, self.end = data_cls, start, end

    def __str__(self) -> str:
        return f"invalid catalog time range for {self.data_cls}: {self.start}..={self.end}"


class MissingCatalogSlice(ReplayInputError):
    """A required catalog slice for which the catalog found no files."""

    def __init__(self, data_cls: str, identifiers: list[str]) -> None:
        super().__init__(data_cls, tuple(identifiers))
        self.data_cls, self.identifiers = data_cls, list(identifiers)

    def __str__(self) -> str:
        return f"required catalog slice {self.data_cls} is missing for identifiers {self.identifiers!r}"


class CatalogError(ReplayInputError):
    """The catalog failed to plan or load a slice (the crate's `ReplayInputError::Catalog`)."""

    def __init__(self, data_cls: str, message: str) -> None:
        super().__init__(data_cls, message)
        self.data_cls, self.message = data_cls, message

    def __str__(self) -> str:
        return f"catalog slice {self.data_cls}: {self.message}"


class CacheReplayError(EventStoreError):
    """Restoring a cache from a snapshot and the tail after it failed (base)."""


class SnapshotRestore(CacheReplayError):
    """The snapshot blob could not be loaded, did not match its anchor, or did not restore."""

    def __init__(self, blob_ref: str, message: str) -> None:
        super().__init__(blob_ref, message)
        self.blob_ref, self.message = blob_ref, message

    def __str__(self) -> str:
        return f"restore cache snapshot {self.blob_ref}: {self.message}"


class SnapshotHashMismatch(SnapshotRestore):
    """The blob's content hash is not the anchor's: the blob is not the snapshot it names."""

    def __init__(self, blob_ref: str, expected: str, actual: str) -> None:
        super().__init__(blob_ref, f"content_hash mismatch: expected {expected}, actual {actual}")
        self.expected, self.actual = expected, actual


class UnexpectedSeq(CacheReplayError):
    """The replay tail yielded an entry below the first seq it may apply."""

    def __init__(self, seq: int, from_seq: int) -> None:
        super().__init__(seq, from_seq)
        self.seq, self.from_seq = seq, from_seq

    def __str__(self) -> str:
        return f"entry seq {self.seq} is before replay start seq {self.from_seq}"


class ReplayDecodeError(CacheReplayError):
    """A captured payload with a replay rule did not decode (the crate's `Decode`)."""

    def __init__(self, seq: int, payload_type: str, message: str) -> None:
        super().__init__(seq, payload_type, message)
        self.seq, self.payload_type, self.message = seq, payload_type, message

    def __str__(self) -> str:
        return f"decode seq {self.seq} payload_type {self.payload_type}: {self.message}"


class ReplayApplyError(CacheReplayError):
    """A decoded payload could not be applied to the cache (the crate's `Apply`)."""

    def __init__(self, seq: int, payload_type: str, message: str) -> None:
        super().__init__(seq, payload_type, message)
        self.seq, self.payload_type, self.message = seq, payload_type, message

    def __str__(self) -> str:
        return f"apply seq {self.seq} payload_type {self.payload_type}: {self.message}"


class BlobStoreError(EventStoreError):
    """The snapshot blob store refused a reference or a blob file (bad ref, oversized file)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"snapshot blob store: {self.message}"
