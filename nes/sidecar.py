"""The writer sidecar: turns ring records into fsynced LMDB batches.

Contract:
- Seqs arrive assigned by the trader and must be contiguous from the durable high-watermark + 1;
  anything else is a producer bug and halts the writer (nothing out of order is ever stored).
- Each entry's hash is BLAKE3 over the domain and its canonical frame; the stored value is
  `hash || frame` (no re-encoding).
- Group commit: a batch is what is waiting in the ring, up to `max_batch_entries`; it is
  committed when it is full, when the ring has been drained, or when its oldest entry has waited
  `max_batch_latency_s` (`should_flush`, a pure rule). One write transaction per batch.
- The durable high-watermark is published (ring header) only after the commit returned.
- ANCHOR and CLOSE records first commit everything before them. Close seals the run Ended.
- Any backend failure becomes one `Halt(reason)` on the control channel; the writer then stops
  committing and exits. Trader gone (control EOF): drain and commit what was pushed, exit, and
  leave the run Running for the next boot's recovery sweep.

`WriterCore` holds the logic with no I/O besides the backend, so the in-process writer and the
sidecar process share it; `run_sidecar` is the process loop around it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from nes.backend.base import EncodedEntry, RunStoreBase
from nes.control import AnchorAck, ControlChannel, CloseAck, Halt, Ready
from nes.halt import BackendCorrupted, HaltReason, from_backend_error
from nes.hash import hash_frame
from nes.manifest import RunStatus
from nes.record import (
    KIND_ANCHOR,
    KIND_CLOSE,
    KIND_ENTRY,
    RecordError,
    decode_anchor_request,
    decode_entry_record,
)
from nes.snapshot import SnapshotAnchor

__all__ = ["WriterCore", "should_flush", "run_sidecar", "ConsumerRing", "HALT_CODES"]

# Ring-header halt codes (0 = running); the control channel carries the full reason.
HALT_CODES: dict[str, int] = {
    "BackpressureStall": 1,
    "BackendDisk": 2,
    "BackendCorrupted": 3,
    "BackendError": 4,
    "WriterDied": 5,
}


def should_flush(pending: int, max_batch_entries: int, ring_drained: bool, now: float, deadline: float) -> bool:
    """The batcher's flush rule (pure): full, nothing more waiting, or the oldest entry is due."""
    if pending == 0:
        return False
    return pending >= max_batch_entries or ring_drained or now >= deadline


class WriterCore:
    """Record -> batch -> commit, over one backend that holds the open run."""

    def __init__(self, backend: RunStoreBase) -> None:
        self.backend = backend
        self.durable_high_watermark = backend.high_watermark()
        self._next_seq = self.durable_high_watermark + 1
        self._batch: list[EncodedEntry] = []

    @property
    def pending(self) -> int:
        return len(self._batch)

    def add_entry(self, record: bytes | memoryview) -> None:
        seq, frame, index_keys = decode_entry_record(record)
        if seq != self._next_seq:
            raise RecordError(f"producer sent seq {seq}, expected {self._next_seq}")
        self._next_seq = seq + 1
        self._batch.append(EncodedEntry(seq, hash_frame(frame) + frame, index_keys))

    def flush(self) -> int:
        """Commit the pending batch (one transaction); returns the durable high-watermark."""
        if self._batch:
            batch, self._batch = self._batch, []
            self.durable_high_watermark = self.backend.append_encoded(batch)
        return self.durable_high_watermark

    def record_anchor(self, blob_ref: str, content_hash: str) -> SnapshotAnchor:
        self.flush()
        anchor = SnapshotAnchor(self.durable_high_watermark, blob_ref, content_hash)
        self.backend.record_snapshot_anchor(anchor)
        return anchor

    def close(self) -> int:
        self.flush()
        self.backend.seal(RunStatus.Ended)
        return self.durable_high_watermark

    def halt_reason(self, err: BaseException) -> HaltReason:
        if isinstance(err, RecordError):
            return BackendCorrupted(self.durable_high_watermark, f"malformed ring record: {err}")
        return from_backend_error(err, self.durable_high_watermark)


class ConsumerRing(Protocol):
    """What the sidecar needs from the consumer side of the shm ring."""

    def pop(self, max_records: int) -> list[tuple[int, bytes]]: ...
    def wait_for_data(self, timeout_s: float) -> bool: ...
    def wake_consumer(self) -> None: ...
    def publish_durable(self, high_watermark: int) -> None: ...
    def set_halt(self, code: int) -> None: ...


IDLE_WAIT_S = 1.0  # an idle writer wakes this often at most (it is woken on data or trader EOF)


def run_sidecar(
    ring: ConsumerRing,
    channel: ControlChannel,
    backend: RunStoreBase,
    max_batch_entries: int,
    max_batch_latency_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """The writer process loop. Returns the process exit code (0 clean, 3 halted)."""
    core = WriterCore(backend)
    trader_gone = threading.Event()

    def watch_trader() -> None:
        # The trader sends nothing after start; EOF (or an error) means it is gone.
        try:
            channel.recv()
        except Exception:  # noqa: BLE001 - any failure of the channel means the same thing
            pass
        trader_gone.set()
        ring.wake_consumer()

    def send(message: Ready | Halt | AnchorAck | CloseAck) -> None:
        try:
            channel.send(message)
        except OSError:
            trader_gone.set()  # nobody to tell; keep committing what was pushed

    send(Ready(core.durable_high_watermark, os.getpid()))
    threading.Thread(target=watch_trader, name="nes-writer-lifeline", daemon=True).start()
    deadline = 0.0
    try:
        while True:
            records = ring.pop(max(1, max_batch_entries - core.pending))
            for kind, data in records:
                if kind == KIND_ENTRY:
                    if core.pending == 0:
                        deadline = clock() + max_batch_latency_s
                    core.add_entry(data)
                    if core.pending >= max_batch_entries:
                        ring.publish_durable(core.flush())
                elif kind == KIND_ANCHOR:
                    request = decode_anchor_request(data)
                    anchor = core.record_anchor(request.blob_ref, request.content_hash)
                    ring.publish_durable(core.durable_high_watermark)
                    send(AnchorAck(anchor=anchor))
                elif kind == KIND_CLOSE:
                    ring.publish_durable(core.close())
                    send(CloseAck(high_watermark=core.durable_high_watermark))
                    return 0
                else:
                    raise RecordError(f"unknown ring record kind {kind}")
            drained = not records
            if should_flush(core.pending, max_batch_entries, drained, clock(), deadline):
                ring.publish_durable(core.flush())
            if drained:
                if trader_gone.is_set():
                    # Pushed before the trader died: everything left has been popped above.
                    ring.publish_durable(core.flush())
                    return 0
                ring.wait_for_data(IDLE_WAIT_S)
    except Exception as err:  # noqa: BLE001 - every failure is a fail-stop halt with its reason
        reason = core.halt_reason(err)
        ring.set_halt(HALT_CODES[type(reason).__name__])
        send(Halt(reason))
        return 3
