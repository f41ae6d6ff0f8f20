"""The closed set of event-store errors.

Contract: every failure of a backend, reader or writer surfaces as exactly one of the
`EventStoreError` subclasses below, carrying its fields. Callers match on the type (and read
the fields), never on the text. The messages are the reference crate's Display strings.

    Backend(msg)                 unclassified failure, invariant violation, "no run open"
    Corrupted(msg)               structural damage, decode failure, format-marker problem
    Disk(msg)                    disk pressure: ENOSPC, EFBIG (RLIMIT_FSIZE), EDQUOT
    HashMismatch(seq)            stored entry hash differs from the recomputed one
    OutOfOrder(high_watermark, seq)  append not contiguous after the durable high-watermark
    Closed()                     the run is sealed (or the writer is closed)
    Gap(prev, next, missing)     a seq is missing inside the durable high-watermark
    CrashedPredecessor()         open found a Running run that must be sealed first
"""

from __future__ import annotations

import errno

__all__ = [
    "EventStoreError",
    "Backend",
    "Corrupted",
    "UnsupportedFormat",
    "Disk",
    "HashMismatch",
    "OutOfOrder",
    "Closed",
    "Gap",
    "CrashedPredecessor",
    "NO_RUN_OPEN",
    "DISK_PRESSURE_ERRNOS",
    "is_disk_pressure",
]

NO_RUN_OPEN = "no run open"
DISK_PRESSURE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class EventStoreError(Exception):
    """Base of the closed error set; never raised directly."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.args == other.args  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self), self.args))


class _MessageError(EventStoreError):
    prefix = ""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg

    def __str__(self) -> str:
        return f"{self.prefix}{self.msg}"


class Backend(_MessageError):
    prefix = "backend error: "


class Corrupted(_MessageError):
    prefix = "corrupted run: "


class UnsupportedFormat(Corrupted):
    """A run file without this nes's format marker (missing, malformed, an older or a future
    version). Listing, recovery and retention stop on it instead of skipping the file."""


class Disk(_MessageError):
    prefix = "disk error: "


class HashMismatch(EventStoreError):
    def __init__(self, seq: int) -> None:
        super().__init__(seq)
        self.seq = seq

    def __str__(self) -> str:
        return f"entry hash mismatch at seq {self.seq}"


class OutOfOrder(EventStoreError):
    def __init__(self, high_watermark: int, seq: int) -> None:
        super().__init__(high_watermark, seq)
        self.high_watermark = high_watermark
        self.seq = seq

    def __str__(self) -> str:
        return (
            f"out-of-order seq: received {self.seq}, expected contiguous after "
            f"high-watermark {self.high_watermark}"
        )


class Closed(EventStoreError):
    def __init__(self) -> None:
        super().__init__()

    def __str__(self) -> str:
        return "run is closed"


class Gap(EventStoreError):
    def __init__(self, prev: int, next: int, missing: int) -> None:  # noqa: A002 - crate field name
        super().__init__(prev, next, missing)
        self.prev = prev
        self.next = next
        self.missing = missing

    def __str__(self) -> str:
        return f"gap detected: missing seq {self.missing} between {self.prev} and {self.next}"


class CrashedPredecessor(EventStoreError):
    def __init__(self) -> None:
        super().__init__()

    def __str__(self) -> str:
        return "crashed predecessor run requires sealing"


def is_disk_pressure(exc: BaseException) -> bool:
    """True for OS errors that mean the disk (or the file-size limit) is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_PRESSURE_ERRNOS


# The crate spells these EventStoreError::Variant; allow the same spelling here.
EventStoreError.Backend = Backend  # type: ignore[attr-defined]
EventStoreError.Corrupted = Corrupted  # type: ignore[attr-defined]
EventStoreError.Disk = Disk  # type: ignore[attr-defined]
EventStoreError.HashMismatch = HashMismatch  # type: ignore[attr-defined]
EventStoreError.OutOfOrder = OutOfOrder  # type: ignore[attr-defined]
EventStoreError.Closed = Closed  # type: ignore[attr-defined]
EventStoreError.Gap = Gap  # type: ignore[attr-defined]
EventStoreError.CrashedPredecessor = CrashedPredecessor  # type: ignore[attr-defined]
