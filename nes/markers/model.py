"""The data-marker schema (spec/markers.md §1): plain frozen msgspec Structs, no I/O.

Contract:
- `marker_seq` is run-local, starts at 1 and is shared by snapshots and hi-fi markers; a
  `MarkerGap` stands in for the seqs `from_marker_seq..to_marker_seq` (inclusive) that were
  dropped. Markers never use entry `seq` values; `event_seq_before` links them to the entry log.
- No record carries its own hash: the hash is stored beside it (`StoredMarkerRecord`).
- `MarkerManifest` is separate from the entry `RunManifest` (the sidecar is sealed on its own);
  `is_sealed()` is `status != Running`. `dict_count` counts distinct slots.
- Timestamps are UnixNanos (int, u64). Serialized with msgspec MessagePack (enums by name).
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from nes.manifest import RunStatus

__all__ = [
    "StreamSlot",
    "DataClass",
    "StreamCursor",
    "DataCursorSnapshot",
    "HiFiMarker",
    "MarkerGapReason",
    "MarkerGap",
    "StreamDictEntry",
    "MarkerManifest",
    "StoredMarkerRecord",
    "MarkerRecordKind",
    "MarkerCountKind",
    "FINGERPRINT_LEN",
]

StreamSlot = int  # u32: dense index assigned per bus topic in first-seen order
FINGERPRINT_LEN = 32
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1


class DataClass(enum.Enum):
    """The market-data classes markers can track; definition order is the codec variant index."""

    BookDeltas = "BookDeltas"
    BookDepth10 = "BookDepth10"
    Quote = "Quote"
    Trade = "Trade"
    Bar = "Bar"

    def as_str(self) -> str:
        return self.value

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_str(cls, text: str) -> DataClass:
        """Exact, case-sensitive parse of the canonical names."""
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown DataClass, was `{text}`") from None

    @property
    def codec_index(self) -> int:
        return _DATA_CLASS_INDEX[self]


_DATA_CLASS_INDEX = {cls: i for i, cls in enumerate(DataClass)}


class MarkerGapReason(enum.Enum):
    Overflow = "Overflow"  # dropped: the writer channel was full
    WriterClosed = "WriterClosed"  # dropped: pending when the writer closed or was dropped

    @property
    def hash_byte(self) -> int:
        return 0 if self is MarkerGapReason.Overflow else 1


class MarkerRecordKind(enum.Enum):
    Snapshot = "Snapshot"
    HiFi = "HiFi"
    Gap = "Gap"
    Dict = "Dict"


class MarkerCountKind(enum.Enum):
    Snapshot = "Snapshot"
    HiFi = "HiFi"
    Gap = "Gap"
    Dict = "Dict"


def _check_uint(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} out of range: {value}")


class StreamCursor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    slot: int
    ts_init_hi: int  # running max of ts_init seen in this slot
    count: int  # cumulative records seen in this slot since the run started

    def __post_init__(self) -> None:
        _check_uint("slot", self.slot, _U32_MAX)
        _check_uint("ts_init_hi", self.ts_init_hi, _U64_MAX)
        _check_uint("count", self.count, _U64_MAX)


class DataCursorSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Cumulative cursors of the slots that advanced since the previous snapshot, slot order."""

    marker_seq: int
    event_seq_before: int
    ts_init: int  # capture-side clock at flush, not a data timestamp
    advanced: tuple[StreamCursor, ...] = ()

    def __post_init__(self) -> None:
        _check_uint("marker_seq", self.marker_seq, _U64_MAX)
        _check_uint("event_seq_before", self.event_seq_before, _U64_MAX)
        _check_uint("ts_init", self.ts_init, _U64_MAX)


class HiFiMarker(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One per observed record of a high-fidelity instrument."""

    marker_seq: int
    event_seq_before: int
    slot: int
    ts_event: int  # the record's own timestamps
    ts_init: int
    same_ts_ordinal: int
    record_fingerprint: bytes

    def __post_init__(self) -> None:
        _check_uint("marker_seq", self.marker_seq, _U64_MAX)
        _check_uint("event_seq_before", self.event_seq_before, _U64_MAX)
        _check_uint("slot", self.slot, _U32_MAX)
        _check_uint("ts_event", self.ts_event, _U64_MAX)
        _check_uint("ts_init", self.ts_init, _U64_MAX)
        _check_uint("same_ts_ordinal", self.same_ts_ordinal, _U32_MAX)
        if len(self.record_fingerprint) != FINGERPRINT_LEN:
            raise ValueError(f"record_fingerprint must be {FINGERPRINT_LEN} bytes, got {len(self.record_fingerprint)}")


class MarkerGap(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """marker_seqs `from_marker_seq..to_marker_seq` (inclusive) were dropped. Valid iff from <= to;
    the model accepts the reverse so the verifier can read and report it."""

    from_marker_seq: int
    to_marker_seq: int
    reason: MarkerGapReason

    def __post_init__(self) -> None:
        _check_uint("from_marker_seq", self.from_marker_seq, _U64_MAX)
        _check_uint("to_marker_seq", self.to_marker_seq, _U64_MAX)


class StreamDictEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """slot -> (class, identifier). Written once per slot; the first mapping wins."""

    slot: int
    data_cls: DataClass
    identifier: str  # instrument id, or the full bar type string for Bar

    def __post_init__(self) -> None:
        _check_uint("slot", self.slot, _U32_MAX)


class MarkerManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    run_id: str
    enabled_classes: tuple[DataClass, ...] = ()
    high_fidelity: bool = False
    snapshot_count: int = 0
    hifi_count: int = 0
    gap_count: int = 0
    dict_count: int = 0  # distinct slots
    status: RunStatus = RunStatus.Running

    def is_sealed(self) -> bool:
        return self.status is not RunStatus.Running

    def count_of(self, kind: MarkerCountKind) -> int:
        return {
            MarkerCountKind.Snapshot: self.snapshot_count,
            MarkerCountKind.HiFi: self.hifi_count,
            MarkerCountKind.Gap: self.gap_count,
            MarkerCountKind.Dict: self.dict_count,
        }[kind]


class StoredMarkerRecord(msgspec.Struct, frozen=True):
    """A record with the 32-byte hash stored beside it (as read back from a sidecar)."""

    record: Any
    hash: bytes
