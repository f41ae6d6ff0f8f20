"""Why a writer halted, and how backend errors map to halt reasons.

Contract: a halt is fail-stop. Every `HaltReason` carries `durable_high_watermark`: every seq
at or below it is on disk with a valid hash; every seq the trader accepted above it is not, and
the halt says so. Reasons: `BackpressureStall` (the ring stayed full past the threshold),
`BackendDisk` (ENOSPC/EFBIG/EDQUOT), `BackendCorrupted`, `BackendError` (anything else), and
`WriterDied` (the writer process vanished: control-channel EOF without a halt).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from nes.errors import Backend, Corrupted, Disk

__all__ = [
    "HaltReason",
    "BackpressureStall",
    "BackendDisk",
    "BackendCorrupted",
    "BackendError",
    "WriterDied",
    "HaltCallback",
    "from_backend_error",
    "noop_halt",
]


class _Halt(msgspec.Struct, frozen=True, tag=True):
    durable_high_watermark: int


class BackpressureStall(_Halt, frozen=True, tag=True):
    """Raised by the trader: the ring stayed full past the threshold. The writer was not
    failing, only slow, so the entries accepted before the halt (seqs up to
    `accepted_high_watermark`) are still in the ring and the writer goes on committing them:
    `durable_high_watermark` is what was durable at the halt, a lower bound; `wait_durable`
    (or the file, after the next boot's recovery) tells which of the accepted ones landed."""

    stalled_for_s: float
    threshold_s: float
    accepted_high_watermark: int

    def __str__(self) -> str:
        return (
            f"backpressure stall: ring full for {self.stalled_for_s * 1e3:.1f} ms "
            f"(threshold {self.threshold_s * 1e3:.1f} ms); durable up to seq {self.durable_high_watermark}, "
            f"accepted up to seq {self.accepted_high_watermark} (still being committed)"
        )


class BackendDisk(_Halt, frozen=True, tag=True):
    """Halt reason: the disk (or RLIMIT_FSIZE) is full."""

    msg: str

    def __str__(self) -> str:
        return f"backend disk error: {self.msg}; durable up to seq {self.durable_high_watermark}"


class BackendCorrupted(_Halt, frozen=True, tag=True):
    """Halt reason: corruption (a damaged run file or a malformed/corrupt ring record)."""

    msg: str

    def __str__(self) -> str:
        return f"backend corrupted: {self.msg}; durable up to seq {self.durable_high_watermark}"


class BackendError(_Halt, frozen=True, tag=True):
    """Halt reason: any other backend failure (I/O error, invariant violation, stalled ack)."""

    msg: str

    def __str__(self) -> str:
        return f"backend error: {self.msg}; durable up to seq {self.durable_high_watermark}"


class WriterDied(_Halt, frozen=True, tag=True):
    """Halt reason: the writer process vanished without reporting a halt."""

    detail: str

    def __str__(self) -> str:
        return f"writer died: {self.detail}; durable up to seq {self.durable_high_watermark}"


HaltReason = BackpressureStall | BackendDisk | BackendCorrupted | BackendError | WriterDied
HaltCallback = Callable[[HaltReason], None]


def from_backend_error(err: BaseException, durable_high_watermark: int) -> HaltReason:
    if isinstance(err, Disk):
        return BackendDisk(durable_high_watermark, err.msg)
    if isinstance(err, Corrupted):
        return BackendCorrupted(durable_high_watermark, err.msg)
    if isinstance(err, Backend):  # its message, not its str(): no doubled "backend error: " prefix
        return BackendError(durable_high_watermark, err.msg)
    return BackendError(durable_high_watermark, str(err) or type(err).__name__)


def noop_halt(reason: HaltReason) -> None:  # noqa: ARG001 - the callback signature
    """A halt callback that does nothing."""
