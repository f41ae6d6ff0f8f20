"""The writer sidecar: turns ring records into fsynced LMDB batches.

Contract:
- Seqs arrive assigned by the trader and must be contiguous from the durable high-watermark + 1;
  anything else is a producer bug and halts the writer (nothing out of order is ever stored).
- Each entry's hash is BLAKE3 over the domain and its canonical frame; the stored value is
  `hash || frame` (no re-encoding).
- Group commit: a batch is what is waiting in the ring, up to `max_batch_entries`; it is
  committed when it is full, when its oldest entry has waited `max_batch_latency_s`, or when
  the ring has been drained and `min_commit_interval_s` has passed since the last commit began
  (at once if a trader thread waits in `wait_durable`) (`should_flush`, a pure rule). One write
  transaction per batch. A batch held back by the interval waits in `Ring.doze`, which
  submits do not interrupt; a thread that starts to wait for durability or for ring space
  does, and so does a control record (anchor, close: the trader awaits its ack).
- The durable high-watermark is published (ring header) only after the commit returned.
- ANCHOR and CLOSE records first commit everything before them. Close seals the run Ended.
- Idle: until `idle_linger_s` after the last record it popped, the writer polls the ring (short
  naps, no flag raised, so submits make no syscall); after that it parks on the data semaphore.
- Any backend failure becomes one `Halt(reason)` on the control channel; the writer then stops
  committing and exits. Trader gone (control EOF): drain and commit what was pushed, exit, and
  leave the run Running for the next boot's recovery sweep.

`WriterCore` holds the logic with no I/O besides the backend, so the in-process writer and the
sidecar process share it; `run_sidecar` is the process loop around it.
"""

from __future__ import annotations

import operator
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from nes.backend.base import IndexKey, IndexKind, PreparedBatch, RunStoreBase
from nes.codec import HASH_DOMAIN, MIN_FRAME_LEN, key_seq, seq_key
from nes.control import AnchorAck, ControlChannel, CloseAck, Halt, Ready
from nes.halt import BackendCorrupted, HaltReason, from_backend_error
from nes.hash import frame_hasher
from nes.manifest import RunStatus
from nes.record import (
    KIND_ANCHOR,
    KIND_CLOSE,
    KIND_ENTRY,
    KIND_FRAME,
    RecordError,
    decode_anchor_request,
    decode_entry_record,
)
from nes.snapshot import SnapshotAnchor

_U64_BE = struct.Struct(">Q")
_RECORD_KIND = operator.itemgetter(0)
_RECORD_DATA = operator.itemgetter(1)
_FRAME_SEQ = operator.itemgetter(slice(0, 8))
_FRAME_TS_INIT = operator.itemgetter(slice(8, 16))  # u64 BE: bytes order is number order

__all__ = ["WriterCore", "should_flush", "run_sidecar", "ConsumerRing", "HALT_CODES"]

# Ring-header halt codes (0 = running); the control channel carries the full reason.
HALT_CODES: dict[str, int] = {
    "BackpressureStall": 1,
    "BackendDisk": 2,
    "BackendCorrupted": 3,
    "BackendError": 4,
    "WriterDied": 5,
}


def should_flush(
    pending: int,
    max_batch_entries: int,
    ring_drained: bool,
    now: float,
    deadline: float,
    commit_in_flight: bool = False,
    not_before: float = 0.0,
    durable_wanted: bool = False,
) -> bool:
    """The batcher's flush rule (pure): the batch is full, or its oldest entry is due, or nothing
    more is waiting, no commit is in flight and the commit interval has passed (`not_before`)
    or someone waits for durability. While a commit's fsync runs, the batch keeps growing
    (group commit): flushing it would only wait for that commit."""
    if pending == 0:
        return False
    if pending >= max_batch_entries or now >= deadline:
        return True
    return ring_drained and not commit_in_flight and (now >= not_before or durable_wanted)


class _CommitThread:
    """Runs staged commits, one at a time, on its own thread.

    The caller stages a batch (LMDB puts, on its thread) only after the previous commit has
    finished (`wait_idle`), so at most one write transaction exists and commits land in order.
    The commit itself (pwrite + fsync, GIL released by py-lmdb) then overlaps with decoding and
    hashing the next batch. Puts stay on the caller's thread on purpose: py-lmdb drops and
    re-takes the GIL around every put of a `putmulti`, which would stall a second thread."""

    def __init__(self, on_done: Callable[[int], None], wake: Callable[[], None]) -> None:
        self._on_done = on_done
        self._wake = wake
        self._queue: queue.SimpleQueue[Callable[[], int] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nes-writer-commit", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def submit(self, commit: Callable[[], int]) -> None:
        self._idle.clear()
        self._queue.put(commit)

    def wait_idle(self) -> None:
        """Wait for the commit in flight; raise its failure (after one, nothing more commits)."""
        self._idle.wait()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (commit := self._queue.get()) is not None:
            try:
                self._on_done(commit())  # durable high-watermark updated and published first
            except BaseException as err:  # noqa: BLE001 - handed to the main thread as a halt
                self.error = err
            finally:
                self._idle.set()
            self._wake()  # after idle: a woken main thread must see the commit finished


class WriterCore:
    """Record -> batch -> commit, over one backend that holds the open run.

    Commits are synchronous unless `start_pipeline` was called; then each batch is staged on
    this thread and committed on a `_CommitThread` while the next batch is decoded and hashed.
    `on_durable` is called with the new high-watermark after each commit, on the committing
    thread."""

    def __init__(self, backend: RunStoreBase, on_durable: Callable[[int], None] | None = None) -> None:
        self.backend = backend
        self.durable_high_watermark = backend.high_watermark()
        self._next_seq = self.durable_high_watermark + 1
        self._first_seq = self._next_seq
        self._items: list[tuple[bytes, bytes]] = []
        self._index_rows: list[tuple[IndexKind, str, int]] = []
        self._max_ts_init = b"\x00" * 8  # big-endian u64 bytes order like the numbers
        self._on_durable = on_durable
        self._committer: _CommitThread | None = None
        self._hasher = frame_hasher()  # used by the thread that adds records, the only one that hashes

    def start_pipeline(self, wake: Callable[[], None]) -> None:
        """Commit on a separate thread from now on; `wake` is called there after each commit
        (done or failed). Needs a backend whose staged commits may finish on another thread."""
        if not self.backend.cross_thread_commit:
            raise ValueError(f"{type(self.backend).__name__} cannot commit on another thread (open it exclusive)")
        self._committer = _CommitThread(self._committed, wake)

    def stop_pipeline(self) -> None:
        if self._committer is not None:
            self._committer.stop()
            self._committer = None

    @property
    def pending(self) -> int:
        return len(self._items)

    @property
    def commit_in_flight(self) -> bool:
        return self._committer is not None and self._committer.busy

    def add_entry(self, record: bytes) -> None:
        """One ENTRY record (with its index-key trailer)."""
        self.add_entries([(KIND_ENTRY, record)])

    def add_entries(self, records: Sequence[tuple[int, bytes]], start: int = 0) -> int:
        """Add `records[start:]` up to the first one that is not FRAME / ENTRY: check their seqs
        are the next ones, hash each frame, batch `hash || frame`. Returns the index it stopped
        at. The writer's hot path: one short loop per record (kind dispatch, then the hash),
        everything else as whole-list operations. A bad record adds nothing of this call."""
        keyed: list[tuple[int, tuple[IndexKey, ...]]] = []  # (position, keys) of ENTRY records
        pending = records[start:] if start else records
        if list(map(_RECORD_KIND, pending)).count(KIND_FRAME) == len(pending):
            frames = list(map(_RECORD_DATA, pending))  # the usual pop: FRAME records only, kept as they came
        else:
            frames = []
            for kind, record in pending:
                if kind == KIND_FRAME:
                    frames.append(record)
                elif kind == KIND_ENTRY:
                    _, frame, keys = decode_entry_record(record)
                    if keys:
                        keyed.append((len(frames), keys))
                    frames.append(frame)
                else:
                    break  # a control record: the caller applies it after these entries
        index = start + len(frames)
        if not frames:
            return index
        first = self._next_seq
        keys_expected = list(map(seq_key, range(first, first + len(frames))))
        if min(map(len, frames)) < MIN_FRAME_LEN or list(map(_FRAME_SEQ, frames)) != keys_expected:
            raise _bad_frame(frames, first)
        digests: list[bytes] = []
        digest_append = digests.append
        hasher = self._hasher
        reset, update, digest = hasher.reset, hasher.update, hasher.digest
        for frame in frames:  # hash_frame, inlined on one reset hasher (nes.hash.frame_hasher)
            reset()
            update(HASH_DOMAIN)
            update(frame)
            digest_append(digest())
        self._items.extend(zip(keys_expected, map(operator.add, digests, frames)))
        for position, keys in keyed:
            self._index_rows.extend((kind, key, first + position) for kind, key in keys)
        self._max_ts_init = max(self._max_ts_init, max(map(_FRAME_TS_INIT, frames)))
        self._next_seq = first + len(frames)
        return index

    def _take_batch(self) -> PreparedBatch:
        batch = PreparedBatch(self._first_seq, self._items, self._index_rows, _U64_BE.unpack(self._max_ts_init)[0])
        self._first_seq = self._next_seq
        self._items, self._index_rows = [], []
        return batch

    def _committed(self, high_watermark: int) -> None:
        self.durable_high_watermark = high_watermark
        if self._on_durable is not None:
            self._on_durable(high_watermark)

    def flush(self) -> int:
        """Commit the pending batch in one transaction (pipelined: once the commit in flight
        is done, stage it and hand its commit over); returns the durable high-watermark."""
        committer = self._committer
        if committer is not None:
            committer.wait_idle()  # also raises the failure of the commit before
        if self._items:
            batch = self._take_batch()
            if committer is None:
                self._committed(self.backend.append_prepared(batch))
            else:
                committer.submit(self.backend.begin_append(batch))
        return self.durable_high_watermark

    def sync(self) -> int:
        """Everything added so far committed; returns the durable high-watermark."""
        self.flush()
        if self._committer is not None:
            self._committer.wait_idle()
        return self.durable_high_watermark

    def check(self) -> None:
        """Raise the failure of a pipelined commit, if there was one."""
        if self._committer is not None and self._committer.error is not None:
            raise self._committer.error

    def settle(self, err: BaseException) -> BaseException:
        """After a failure on this thread: wait for the commit in flight, so the halt states
        the final durable high-watermark. Returns the error to report: that commit's own
        failure if it had one (it came first), else `err`."""
        if self._committer is not None:
            try:
                self._committer.wait_idle()
            except BaseException as commit_err:  # noqa: BLE001 - reported as the halt's cause
                return commit_err
        return err

    def record_anchor(self, blob_ref: str, content_hash: str) -> SnapshotAnchor:
        self.sync()
        anchor = SnapshotAnchor(self.durable_high_watermark, blob_ref, content_hash)
        self.backend.record_snapshot_anchor(anchor)
        return anchor

    def close(self) -> int:
        self.sync()
        self.backend.seal(RunStatus.Ended)
        return self.durable_high_watermark

    def halt_reason(self, err: BaseException) -> HaltReason:
        """The halt reason for a failure: a malformed or corrupt ring record is BackendCorrupted."""
        from shm.ring import RingError  # raised by the ring's pop only for a corrupt record

        if isinstance(err, (RecordError, RingError)):
            return BackendCorrupted(self.durable_high_watermark, f"malformed ring record: {err}")
        return from_backend_error(err, self.durable_high_watermark)


def _bad_frame(frames: list[bytes], first_seq: int) -> RecordError:
    """The first frame of a batch that is too short or does not carry its expected seq."""
    for seq, frame in enumerate(frames, first_seq):
        if len(frame) < MIN_FRAME_LEN:
            return RecordError(f"entry frame of {len(frame)} bytes is too short")
        if frame[:8] != seq_key(seq):
            return RecordError(f"producer sent seq {key_seq(frame[:8])}, expected {seq}")
    raise AssertionError("no bad frame in the batch")


class ConsumerRing(Protocol):
    """What the sidecar needs from the consumer side of the shm ring."""

    def pop(self, max_records: int) -> list[tuple[int, bytes]]: ...
    def wait_for_data(self, timeout_s: float, linger_s: float = 0.0) -> bool: ...
    def doze(self, timeout_s: float) -> bool: ...
    def durable_wanted(self) -> bool: ...
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
    idle_linger_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    min_commit_interval_s: float = 0.0,
) -> int:
    """The writer process loop. Returns the process exit code (0 clean, 3 halted)."""
    core = WriterCore(backend, on_durable=ring.publish_durable)
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
    core.start_pipeline(wake=ring.wake_consumer)  # a batch may wait for the commit in flight
    deadline = 0.0
    linger_until = 0.0  # keep polling (no park) until `idle_linger_s` after the last record
    not_before = 0.0  # no drained batch is committed before this (`min_commit_interval_s`)

    def flush() -> None:
        nonlocal not_before
        not_before = clock() + min_commit_interval_s
        core.flush()

    try:
        while True:
            records = ring.pop(max(1, max_batch_entries - core.pending))  # never more than fits
            index = 0
            while index < len(records):
                if core.pending == 0:
                    deadline = clock() + max_batch_latency_s
                index = core.add_entries(records, index)
                if core.pending >= max_batch_entries:
                    flush()
                if index == len(records):
                    break
                kind, data = records[index]  # a control record, after the entries before it
                index += 1
                if kind == KIND_ANCHOR:
                    not_before = clock() + min_commit_interval_s  # it commits everything before it
                    request = decode_anchor_request(data)
                    send(AnchorAck(anchor=core.record_anchor(request.blob_ref, request.content_hash)))
                elif kind == KIND_CLOSE:
                    send(CloseAck(high_watermark=core.close()))
                    return 0
                else:
                    raise RecordError(f"unknown ring record kind {kind}")
            drained = not records
            now = clock()
            if not drained:
                linger_until = now + idle_linger_s
            in_flight = core.commit_in_flight
            wanted = drained and core.pending > 0 and now < not_before and ring.durable_wanted()
            if should_flush(core.pending, max_batch_entries, drained, now, deadline, in_flight, not_before, wanted):
                flush()
            else:
                core.check()
            if drained:
                if trader_gone.is_set():
                    core.sync()
                    return 0  # everything pushed before the trader died is committed
                if core.pending and not in_flight:  # held back by the commit interval
                    ring.doze(max(0.0, min(deadline, not_before) - now))
                else:
                    ring.wait_for_data(max(0.0, deadline - now) if core.pending else IDLE_WAIT_S, max(0.0, linger_until - now))
    except Exception as err:  # noqa: BLE001 - every failure is a fail-stop halt with its reason
        reason = core.halt_reason(core.settle(err))
        ring.set_halt(HALT_CODES[type(reason).__name__])
        send(Halt(reason))
        return 3
    finally:
        core.stop_pipeline()
