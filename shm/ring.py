"""A single-producer single-consumer ring over POSIX shared memory (layout: `shm.layout`).

Contract:
- One producer (the trader's `EventStoreWriter`) calls `try_push`; one consumer (the writer
  sidecar) calls `pop`. No locks: each header field has one writer.
- `try_push` never blocks and makes no syscall unless the consumer said it is asleep: it returns
  False when the ring is full, raises `RecordTooLarge` before writing anything when the payload
  exceeds `max_record`, and the ring stays usable either way.
- Wake-ups use three POSIX semaphores, each posted only when its sleeper raised its waiting flag:
  data (consumer sleeps when empty), space (producer sleeps when full), durable (producer threads
  sleep in `wait_durable_at_least`: one on the semaphore, the others on an in-process condition
  it notifies). A sleeper raises its flag, issues a full memory barrier (an
  uncontended lock round trip: a locked instruction on x86-64), then re-checks its condition.
  The consumer side also fences between its store (tail, durable) and its flag load. The
  producer's `try_push` does not (it would add ~0.25 us to every push), so x86 store-load
  reordering can, rarely, make it miss a consumer that is just going to sleep: that wake-up is
  late, never lost, because the consumer polls every `CONSUMER_POLL_S` while it sleeps. Producer
  sleeps are bounded by `SAFETY_WAIT_S`.
- The consumer's flag holds a park number (a new one per park), and the producer posts once per
  park, not on every push made while the parked consumer is being woken.
- A consumer holding a batch back (the writer's commit interval) `doze`s: it sleeps on the data
  semaphore without raising its flag, so pushes stay syscall-free; a producer thread that
  starts to wait (for space, or in `wait_durable_at_least`) posts it, so neither waits for the
  doze to end (the writer client also posts it after a control record). `durable_wanted` tells the consumer someone waits for durability.
- Idle strategy (consumer): `wait_for_data(timeout_s, linger_s)` lingers for `linger_s` first,
  napping `CONSUMER_NAP_S` at a time without raising its flag, and only then parks. A trader that
  submits in bursts (every millisecond, say) then never pays for waking a parked process (a
  futex wake and a cross-CPU interrupt: several microseconds inside `try_push`), and a writer
  with nothing to do still parks after the linger and burns no CPU.
- Names are unguessable (`/nes-<24 hex>-…`), created O_EXCL with mode 0600. The creator owns them
  and unlinks them as soon as the consumer is attached (`unlink_names`); the writer process also
  calls `unlink_names` (idempotent) when it exits, so nothing stays in /dev/shm whichever side
  dies. If both die before that (a process-group kill during boot), the creator's boot record
  (`nes.bootrecord`) lets the next boot reclaim them.
- Memory ordering relies on x86-64 total store order (records are written before `head`, popped
  bytes are copied before `tail`); that is the platform nes supports.
"""

from __future__ import annotations

import ctypes
import mmap
import re
import secrets
import threading
import time

import msgspec
import posix_ipc

from shm import layout

__all__ = [
    "Ring",
    "RingNames",
    "RecordTooLarge",
    "RingError",
    "is_ring_token",
    "SAFETY_WAIT_S",
    "CONSUMER_POLL_S",
    "CONSUMER_NAP_S",
]

SAFETY_WAIT_S = 0.05
CONSUMER_POLL_S = 0.02  # bounds a wake-up made late by the producer's unfenced flag load
CONSUMER_NAP_S = 0.00005  # one nap while lingering (~0.1 ms with the kernel's timer slack)
_RECORD = layout.RECORD_HEADER
_HDR = _RECORD.size


class RingError(Exception):
    """The segment is not a ring of ours (bad magic, sizes) or cannot be created/attached."""


class RecordTooLarge(ValueError):
    def __init__(self, size: int, max_record: int) -> None:
        super().__init__(f"record of {size} bytes exceeds the ring's max_record of {max_record} bytes")
        self.size = size
        self.max_record = max_record


class RingNames(msgspec.Struct, frozen=True):
    """Everything the consumer needs to attach (sent to the writer process as JSON)."""

    segment: str
    data_sem: str
    space_sem: str
    durable_sem: str

    @classmethod
    def fresh(cls) -> RingNames:
        return cls.for_token(secrets.token_hex(TOKEN_BYTES))

    @classmethod
    def for_token(cls, token: str) -> RingNames:
        """The four names of the ring `token` (24 lowercase hex digits; ValueError otherwise).
        Reclaiming a dead boot's ring goes through here, so a record can only ever name
        segments of this shape."""
        if not is_ring_token(token):
            raise ValueError(f"not a ring token: {token!r}")
        return cls(f"/nes-{token}-ring", f"/nes-{token}-data", f"/nes-{token}-space", f"/nes-{token}-durable")

    @property
    def token(self) -> str:
        """The random part shared by the four names."""
        return self.segment.split("-")[1]

    def semaphores(self) -> tuple[str, str, str]:
        return (self.data_sem, self.space_sem, self.durable_sem)


TOKEN_BYTES = 12
_TOKEN_RE = re.compile(r"[0-9a-f]{24}")


def is_ring_token(token: object) -> bool:
    """True for a string that `RingNames.fresh` could have made (24 lowercase hex digits)."""
    return isinstance(token, str) and _TOKEN_RE.fullmatch(token) is not None


_fence_lock = threading.Lock()


def _full_fence() -> None:
    """A full memory barrier: an uncontended lock acquire is a locked RMW on x86-64."""
    _fence_lock.acquire()
    _fence_lock.release()


def _timed_acquire(sem: posix_ipc.Semaphore, timeout_s: float) -> bool:
    try:
        sem.acquire(max(0.0, timeout_s))
    except posix_ipc.BusyError:
        return False
    return True


def _drain(sem: posix_ipc.Semaphore) -> None:
    """Swallow posts that accumulated while we were waking up (they would be spurious wakes)."""
    while _timed_acquire(sem, 0):
        pass


class Ring:
    """Both ends of the ring; a process uses it as producer (`create`) or consumer (`attach`)."""

    def __init__(self, names: RingNames, shm: posix_ipc.SharedMemory, sems: list[posix_ipc.Semaphore]) -> None:
        self.names = names
        self._owner = False
        self.segment_bytes = shm.size
        self._mm: mmap.mmap | None = mmap.mmap(shm.fd, self.segment_bytes)
        shm.close_fd()
        self._data_sem, self._space_sem, self._durable_sem = sems
        mm = self._mm
        u64 = ctypes.c_uint64
        self._magic = u64.from_buffer(mm, layout.OFF_MAGIC)
        self._capacity_field = u64.from_buffer(mm, layout.OFF_CAPACITY)
        self._max_record_field = u64.from_buffer(mm, layout.OFF_MAX_RECORD)
        self._head = u64.from_buffer(mm, layout.OFF_HEAD)
        self._tail = u64.from_buffer(mm, layout.OFF_TAIL)
        self._durable = u64.from_buffer(mm, layout.OFF_DURABLE)
        self._halt = u64.from_buffer(mm, layout.OFF_HALT)
        self._consumer_waiting = u64.from_buffer(mm, layout.OFF_CONSUMER_WAITING)
        self._producer_waiting = u64.from_buffer(mm, layout.OFF_PRODUCER_WAITING)
        self._durable_waiting = u64.from_buffer(mm, layout.OFF_DURABLE_WAITING)
        self.capacity = 0
        self.max_record = 0
        self._producer_head = 0  # the producer's own copy of `head` (it is its only writer)
        self._tail_seen = 0  # the producer's last read of `tail` (refreshed when space looks short)
        self._park_posted = 0  # the producer: the consumer park it last posted for
        self._parks = 0  # the consumer: how many times it parked (its flag holds the current one)
        # producer threads in `wait_durable_at_least`: one sleeps on the semaphore, others here
        self._durable_changed = threading.Condition(threading.Lock())
        self._durable_sleeper = False

    # -- lifetime -----------------------------------------------------------------------------
    @classmethod
    def create(cls, capacity: int, max_record: int, names: RingNames | None = None) -> Ring:
        """Create a fresh segment and semaphores (0600) and become their owner (`names`: ones
        the caller recorded first, see `nes.bootrecord`; default `RingNames.fresh()`)."""
        if max_record <= 0 or max_record > 0xFFFFFFF0:
            raise ValueError(f"max_record must be in 1..{0xFFFFFFF0}, got {max_record}")
        if capacity % layout.ALIGN or capacity < layout.min_capacity(max_record):
            raise ValueError(
                f"capacity must be a multiple of {layout.ALIGN} and at least {layout.min_capacity(max_record)} "
                f"bytes for max_record {max_record}, got {capacity}"
            )
        names = names or RingNames.fresh()
        created: list[posix_ipc.Semaphore] = []
        shm = None
        try:
            shm = posix_ipc.SharedMemory(
                names.segment, posix_ipc.O_CREX, mode=0o600, size=layout.HEADER_BYTES + capacity
            )
            for name in names.semaphores():
                created.append(posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=0))
            ring = cls(names, shm, created)
        except BaseException:
            for sem in created:
                sem.unlink()
                sem.close()
            if shm is not None:
                shm.unlink()
                shm.close_fd()
            raise
        ring._owner = True
        ring._capacity_field.value = capacity
        ring._max_record_field.value = max_record
        ring._magic.value = layout.MAGIC  # last: a consumer checks it to know the header is set
        ring.capacity = capacity
        ring.max_record = max_record
        return ring

    @classmethod
    def attach(cls, names: RingNames) -> Ring:
        """Attach to an existing ring as its consumer."""
        shm = None
        sems: list[posix_ipc.Semaphore] = []
        try:
            shm = posix_ipc.SharedMemory(names.segment)
            for name in names.semaphores():
                sems.append(posix_ipc.Semaphore(name))
            if shm.size < layout.HEADER_BYTES:
                raise RingError(f"segment {names.segment} is too small to be a ring")
        except (posix_ipc.Error, RingError) as exc:
            # release what was opened: a failed attach must not leak the fd or semaphore handles
            if shm is not None:
                shm.close_fd()
            for sem in sems:
                sem.close()
            if isinstance(exc, RingError):
                raise
            raise RingError(f"cannot attach ring {names.segment}: {exc}") from exc
        ring = cls(names, shm, sems)
        capacity = ring._capacity_field.value
        max_record = ring._max_record_field.value
        if (
            ring._magic.value != layout.MAGIC
            or layout.HEADER_BYTES + capacity > ring.segment_bytes
            or capacity % layout.ALIGN
            or max_record <= 0
            or capacity < layout.min_capacity(max_record)
        ):
            ring.close()
            raise RingError(f"segment {names.segment} is not an nes ring")
        ring.capacity = capacity
        ring.max_record = max_record
        ring._producer_head, ring._tail_seen = ring._head.value, ring._tail.value  # if it ever produces
        return ring

    def unlink_names(self) -> None:
        """Remove the names from /dev/shm (the mappings stay valid). Idempotent."""
        for unlink, name in [(posix_ipc.unlink_shared_memory, self.names.segment)] + [
            (posix_ipc.unlink_semaphore, n) for n in self.names.semaphores()
        ]:
            try:
                unlink(name)
            except posix_ipc.ExistentialError:
                pass

    def close(self) -> None:
        """Unmap and close; the owner also unlinks. Idempotent."""
        if self._mm is None:
            return
        if self._owner:
            self.unlink_names()
        for attr in ("_magic", "_capacity_field", "_max_record_field", "_head", "_tail", "_durable", "_halt",
                     "_consumer_waiting", "_producer_waiting", "_durable_waiting"):
            setattr(self, attr, None)  # release the buffer exports before unmapping
        self._mm.close()
        self._mm = None
        for sem in (self._data_sem, self._space_sem, self._durable_sem):
            sem.close()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared state -------------------------------------------------------------------------
    @property
    def durable_high_watermark(self) -> int:
        return self._durable.value

    @property
    def halt_code(self) -> int:
        return self._halt.value

    def used_bytes(self) -> int:
        return self._head.value - self._tail.value

    # -- producer -----------------------------------------------------------------------------
    def try_push(self, kind: int, data: bytes) -> bool:
        """Publish one record; False if the ring has no room for it right now.

        The producer keeps its own copy of `head` (it is the only writer) and a cached `tail`
        it refreshes only when the cached free space looks too small, so a steady-state push
        reads one shared field (`consumer_waiting`) and writes one (`head`)."""
        n = len(data)
        if n > self.max_record:
            raise RecordTooLarge(n, self.max_record)
        if not 0 <= kind < layout.WRAP_KIND:  # WRAP_KIND in a record would desynchronise the consumer
            raise ValueError(f"record kind must be in 0..{layout.WRAP_KIND - 1}, got {kind}")
        size = _HDR + ((n + 7) & ~7)
        capacity = self.capacity
        head = self._producer_head
        pos = head % capacity
        to_end = capacity - pos
        needed = size + to_end if size > to_end else size
        if needed > capacity - (head - self._tail_seen):
            self._tail_seen = self._tail.value
            if needed > capacity - (head - self._tail_seen):
                return False
        mm: mmap.mmap = self._mm  # type: ignore[assignment]  # open while pushing
        base = layout.HEADER_BYTES
        if size > to_end:
            _RECORD.pack_into(mm, base + pos, 0, layout.WRAP_KIND)
            head += to_end
            pos = 0
        start = base + pos
        _RECORD.pack_into(mm, start, n, kind)
        mm[start + _HDR : start + _HDR + n] = data
        head += size
        self._head.value = head
        self._producer_head = head
        park = self._consumer_waiting.value
        if park and park != self._park_posted:
            self._park_posted = park
            self._data_sem.release()
        return True

    def wait_for_space(self, timeout_s: float) -> None:
        """Sleep until the consumer frees space (or `timeout_s`, at most `SAFETY_WAIT_S`); the
        caller retries the push. Space freed since the push that failed (measured against the
        tail that push saw, not a fresh read) returns at once: the consumer posts only for a
        producer whose flag was up when it popped."""
        tail = self._tail_seen
        self._producer_waiting.value = 1
        _full_fence()
        self._data_sem.release()  # a consumer dozing through its commit interval: pop now
        try:
            _drain(self._space_sem)  # posts for space we already saw
            if self._tail.value != tail:
                return
            _timed_acquire(self._space_sem, min(timeout_s, SAFETY_WAIT_S))
        finally:
            self._producer_waiting.value = 0

    def wait_durable_at_least(self, seq: int, timeout_s: float) -> bool:
        """True once the durable high-watermark reaches `seq`, False after `timeout_s`. Safe from
        several threads: one of them (the sleeper) waits on the semaphore (a post wakes one
        waiter) until the high-watermark changes at all, then wakes the others through
        `_durable_changed`; every thread re-checks its own `seq`."""
        deadline = time.monotonic() + timeout_s
        changed = self._durable_changed
        while True:
            seen = self._durable.value
            if seen >= seq:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with changed:
                if self._durable_sleeper:
                    if self._durable.value == seen:  # else it moved since we read it: re-check
                        changed.wait(min(remaining, SAFETY_WAIT_S))  # the sleeper wakes us all
                    continue
                self._durable_sleeper = True
            try:
                self._durable_waiting.value = 1
                _full_fence()
                if self._durable.value == seen:
                    self._data_sem.release()  # a consumer holding a batch back: commit it now
                    _timed_acquire(self._durable_sem, min(remaining, SAFETY_WAIT_S))
            finally:
                self._durable_waiting.value = 0
                with changed:
                    self._durable_sleeper = False
                    changed.notify_all()

    # -- consumer -----------------------------------------------------------------------------
    def pop(self, max_records: int) -> list[tuple[int, bytes]]:
        """Up to `max_records` records (kind, payload copy), oldest first; frees their space."""
        tail = self._tail.value
        head = self._head.value
        if tail == head:
            return []
        capacity, max_record, wrap = self.capacity, self.max_record, layout.WRAP_KIND
        mm: mmap.mmap = self._mm  # type: ignore[assignment]  # open while popping
        base = layout.HEADER_BYTES
        unpack = _RECORD.unpack_from
        out: list[tuple[int, bytes]] = []
        append = out.append
        room = max_records
        while tail != head and room:
            pos = tail % capacity
            n, kind = unpack(mm, base + pos)
            if kind == wrap:
                tail += capacity - pos
                continue
            if n > max_record:
                raise RingError(f"corrupt ring: record of {n} bytes at offset {pos} exceeds max_record")
            start = base + pos + _HDR
            append((kind, mm[start : start + n]))
            tail += _HDR + ((n + 7) & ~7)
            room -= 1
        self._tail.value = tail
        _full_fence()
        if self._producer_waiting.value:
            self._space_sem.release()
        return out

    def wait_for_data(self, timeout_s: float, linger_s: float = 0.0) -> bool:
        """Sleep until a record is published or `wake_consumer` is called (bounded): linger for
        `linger_s` first, then park (see the module's idle strategy)."""
        head, tail = self._head, self._tail
        if head.value != tail.value:
            return True
        deadline = time.monotonic() + timeout_s
        linger_until = min(deadline, time.monotonic() + linger_s)
        data_sem = self._data_sem
        while time.monotonic() < linger_until:
            if _timed_acquire(data_sem, CONSUMER_NAP_S) or head.value != tail.value:
                return True  # a wake_consumer post, or data
        self._parks += 1
        self._consumer_waiting.value = self._parks
        _full_fence()
        try:
            if head.value != tail.value:
                return True
            while True:
                woke = _timed_acquire(data_sem, min(deadline - time.monotonic(), CONSUMER_POLL_S))
                if woke or head.value != tail.value:
                    return True
                if time.monotonic() >= deadline:
                    return False
        finally:
            self._consumer_waiting.value = 0
            _drain(self._data_sem)

    def doze(self, timeout_s: float) -> bool:
        """Sleep up to `timeout_s` without raising the consumer's flag: pushes do not wake it
        (they make no syscall), only a post does (`wake_consumer`, a producer that waits for
        space or for durability). True if a post ended it early (posts that piled up meanwhile
        are swallowed: the caller re-checks everything anyway)."""
        if not _timed_acquire(self._data_sem, timeout_s):
            return False
        _drain(self._data_sem)
        return True

    def durable_wanted(self) -> bool:
        """True while a producer thread sleeps in `wait_durable_at_least`."""
        return bool(self._durable_waiting.value)

    def wake_consumer(self) -> None:
        """Wake a sleeping consumer (safe to call from another thread, also after close)."""
        if self._mm is None:
            return
        try:
            self._data_sem.release()
        except posix_ipc.ExistentialError:
            pass  # closed concurrently: nobody is waiting any more

    def publish_durable(self, high_watermark: int) -> None:
        if high_watermark == self._durable.value:
            return
        self._durable.value = high_watermark
        _full_fence()
        if self._durable_waiting.value:
            self._durable_sem.release()

    def wake_durable_waiters(self) -> None:
        """Post the durable semaphore once (the producer side, before it closes the ring): a
        thread asleep in `wait_durable_at_least` returns at once instead of after its slice."""
        if self._mm is None:
            return
        self._durable_sem.release()
        with self._durable_changed:
            self._durable_changed.notify_all()

    def set_halt(self, code: int) -> None:
        self._halt.value = code
        self._data_sem.release()
        self._space_sem.release()
        self._durable_sem.release()
