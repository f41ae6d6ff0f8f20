"""The event-store exception tree: everything the public API raises is an `EventStoreError`.

Contract: every failure of a backend, reader, writer, kernel, config or CLI library function
surfaces as exactly one subclass of `EventStoreError`, carrying its fields; no raw
`AttributeError`, `TypeError`, `OverflowError`, posix_ipc or `lmdb` error reaches a caller.
Callers match on the type (and read the fields), never on the text. The crate-aligned classes
keep the reference crate's Display strings. Every class is importable from `nes`.

    EventStoreError                  base; never raised itself
    |- Backend(msg)                  unclassified failure, invariant violation, "no run open",
    |                                a ring the OS refuses to create
    |- Corrupted(msg)                structural damage, decode failure, format-marker problem
    |  |- UnsupportedFormat          a run file without this nes's format marker (missing, version
    |  |                             1, a future version): listing, recovery, retention stop on it
    |  |- SealRecordInvalid          a seal record beside a run file that is not a valid record
    |  |  `- FutureSealRecord        (also an UnsupportedFormat) a seal record of a newer nes
    |  |- SealedFileChanged          a sealed run file's bytes differ from its seal record's digest
    |  `- LiveRunChurn               a live run changed faster than a consistent snapshot was read
    |- Disk(msg)                     disk pressure: ENOSPC, EFBIG (RLIMIT_FSIZE), EDQUOT
    |- HashMismatch(seq)             stored entry hash differs from the recomputed one
    |- OutOfOrder(high_watermark, seq)  append not contiguous after the durable high-watermark
    |- Closed()                      the run is sealed (or the writer is closed)
    |- Gap(prev, next, missing)      a seq is missing inside the durable high-watermark
    |- CrashedPredecessor()          open found a Running run that must be sealed first
    |- ConfigError (ValueError)      an invalid configuration value or file; the message starts
    |                                with the dotted field path (`writer.ring_bytes: ...`)
    |- InvalidArgument (ValueError, TypeError)  a bad argument to a public call, e.g.
    |                                `wait_durable("1", 1.0)` or a NaN / infinite timeout
    |- SubmitError                   `submit()` did not accept the entry
    |  |- WriterClosed               the writer is closed
    |  |  `- WriterHalted(reason)    the writer halted (fail-stop); `reason` is the HaltReason
    |  |- HaltSignaled              this submit's own stall crossed the halt threshold
    |  `- InvalidDraft (ValueError)  not an EntryDraft, or a draft that cannot be stored
    |     `- RecordTooLarge          the entry record exceeds `max_record_bytes` (1 MiB default)
    |- BootError                     the boot sequence could not open a new run
    |  |- RunStartedTimeout          RunStarted was not durable within run_started_timeout_s
    |  |- RunStartedHalted           the writer halted before RunStarted was durable
    |  |- ReplaySourceError          replay_from_run_id is unknown, unusable or fails verification
    |  |- InstanceLocked             another live session (or its draining writer) holds the instance
    |  |- BootInterrupted            SIGTERM arrived during the boot (after its cleanup)
    |  `- CacheRestoreAtBootError    (also a CacheReplayError) restoring the parent run's cache failed
    |- CaptureError                  capture (`nes.capture`, `nes.integrations.nautilus`)
    |  |- CaptureEncodeError         an encoder / extractor failed, or content the store cannot
    |  |                             hold; nothing written, the adapter stays live
    |  |- CaptureSubmitError(reason) the writer refused a capture; the adapter halted
    |  |- CaptureHalted(reason)      a capture after the adapter halted (writer untouched)
    |  `- TapAttachError             a bus tap could not be attached as asked
    |- PayloadDecodeError            a stored payload does not decode back into its message
    |  `- UnknownPayloadType         no decoder knows that payload type
    |- IntegrationUnavailable (ImportError)  an integration imported without its extra
    |- ReplayInputError              replay inputs (`nes.replay.errors`): InvalidSeqRange,
    |                                EmptyCatalogSelection, ScopeMismatch, MissingCatalogTimeBounds,
    |                                InvalidCatalogTimeRange, MissingCatalogSlice, CatalogError
    |- CacheReplayError              snapshot + tail restore (`nes.replay.errors`)
    |  |- SnapshotRestore            blob missing / unreadable / refused by the cache
    |  |  `- SnapshotHashMismatch    a snapshot blob's content hash differs from its anchor
    |  |- UnexpectedSeq              the tail scan yielded an entry before its start
    |  |- ReplayDecodeError          a captured payload with a replay rule does not decode
    |  `- ReplayApplyError           the cache refused a decoded payload
    |- BlobStoreError                the snapshot blob store refused a reference or a blob file
    |- VerifyOpenError (OSError)     the verifier cannot open the path at all (e.g. missing)
    |- RunFileError                  operator commands: a path that is not a readable run file
    |                                (missing, not a regular file, not LMDB, truncated, foreign)
    |- InvalidRange                  `nes show`: a seq window that selects nothing (from > to, < 1)
    |- UnknownOrderId                `nes show`/`trace`: no entry carries that order id
    |- UnknownSeq                    `nes trace`: the seq is 0 or past the high-watermark
    |- ExportRefused                 `nes export`: the run does not verify clean (no `force`)
    `- RetentionApplyError           `nes retention apply` cannot run at all (bad archive dir, ...)

Halt reasons (`BackpressureStall`, `BackendDisk`, `BackendCorrupted`, `BackendError`,
`WriterDied`, in `nes.halt`) are values handed to the halt hook and carried by `WriterHalted`,
not exceptions.
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
    "ConfigError",
    "InvalidArgument",
    "MAX_TIMEOUT_S",
    "check_timeout_s",
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
    """An error carrying one message `msg`, printed after the class's prefix."""

    prefix = ""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg

    def __str__(self) -> str:
        return f"{self.prefix}{self.msg}"


class Backend(_MessageError):
    """Unclassified backend failure, invariant violation or "no run open"."""

    prefix = "backend error: "


class Corrupted(_MessageError):
    """Structural damage, a decode failure or a format-marker problem in a run file."""

    prefix = "corrupted run: "


class UnsupportedFormat(Corrupted):
    """A run file without this nes's format marker (missing, malformed, an older or a future
    version). Listing, recovery and retention stop on it instead of skipping the file."""


class Disk(_MessageError):
    """Disk pressure: ENOSPC, EFBIG (the RLIMIT_FSIZE file-size limit) or EDQUOT."""

    prefix = "disk error: "


class HashMismatch(EventStoreError):
    """The stored hash of the entry under `seq` differs from the recomputed one."""

    def __init__(self, seq: int) -> None:
        super().__init__(seq)
        self.seq = seq

    def __str__(self) -> str:
        return f"entry hash mismatch at seq {self.seq}"


class OutOfOrder(EventStoreError):
    """An append of `seq` that is not contiguous after the durable `high_watermark`."""

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
    """The run is sealed (or the writer is closed)."""

    def __init__(self) -> None:
        super().__init__()

    def __str__(self) -> str:
        return "run is closed"


class Gap(EventStoreError):
    """Seq `missing` is absent between `prev` and `next` inside the durable high-watermark."""

    def __init__(self, prev: int, next: int, missing: int) -> None:  # noqa: A002 - crate field name
        super().__init__(prev, next, missing)
        self.prev = prev
        self.next = next
        self.missing = missing

    def __str__(self) -> str:
        return f"gap detected: missing seq {self.missing} between {self.prev} and {self.next}"


class CrashedPredecessor(EventStoreError):
    """Opening a run found a `Running` predecessor that must be sealed (recovered) first."""

    def __init__(self) -> None:
        super().__init__()

    def __str__(self) -> str:
        return "crashed predecessor run requires sealing"


class ConfigError(EventStoreError, ValueError):
    """An invalid configuration value or file; the message starts with the dotted field path."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class InvalidArgument(EventStoreError, ValueError, TypeError):
    """A bad argument to a public call (wrong type, NaN, out of range); nothing was done."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


MAX_TIMEOUT_S = 86400.0  # one day: the longest timeout any nes call accepts


def check_timeout_s(value: object, what: str) -> float:
    """`value` as a timeout in seconds: a finite number in (0, MAX_TIMEOUT_S], else InvalidArgument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT_S:
        raise InvalidArgument(f"{what} must be a finite number of seconds in (0, {MAX_TIMEOUT_S:g}], got {value!r}")
    return float(value)


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
