"""The SPSC shared-memory ring (shm.ring) over real POSIX shared memory and real processes.

Synchronisation in these tests is by events, pipes, joins and observable ring flags, never sleeps.
Wake-up tests raise `SAFETY_WAIT_S` and `CONSUMER_POLL_S` so that only the semaphore can wake a sleeper in time.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import stat
import threading
import time

import posix_ipc
import psutil
import pytest

import ring_child
from shm import layout
from shm import ring as ring_mod
from shm.ring import RecordTooLarge, Ring, RingError, RingNames

CTX = multiprocessing.get_context("spawn")
DEV_SHM = "/dev/shm"


def token_of(names: RingNames) -> str:
    return names.segment.split("-")[1]


def shm_entries(token: str) -> set[str]:
    return {e for e in os.listdir(DEV_SHM) if token in e}


def expected_entries(token: str) -> set[str]:
    return {f"nes-{token}-ring", f"sem.nes-{token}-data", f"sem.nes-{token}-space", f"sem.nes-{token}-durable"}


@pytest.fixture
def ring():
    r = Ring.create(4096, 256)
    yield r
    r.close()


def spin_until(predicate, timeout_s: float = 5.0) -> None:
    """Busy-wait on observable shared state (not a sleep): fail if it never becomes true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0)


def recv(conn, timeout_s: float = 60.0):
    assert conn.poll(timeout_s), "child did not answer in time"
    return conn.recv()


def join_or_kill(proc, timeout_s: float = 60.0) -> None:
    proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise AssertionError("child did not exit in time")


# -- single-process round trips ------------------------------------------------------------------


def test_round_trip_varied_sizes_including_empty_and_max_preserves_order(ring):
    sizes = [0, 1, 7, 8, 9, 15, 16, 100, 255, 256, 0]
    records = [(i, bytes([i + 1]) * n) for i, n in enumerate(sizes)]
    pushed = []
    for kind, data in records:
        while not ring.try_push(kind, data):
            pushed.extend(ring.pop(1000))
    pushed.extend(ring.pop(1000))
    assert pushed == records
    assert ring.pop(10) == []
    assert ring.used_bytes() == 0


def test_exactly_max_record_and_empty_record_round_trip():
    r = Ring.create(layout.min_capacity(64), 64)
    try:
        assert r.try_push(1, b"\xab" * 64)
        assert r.try_push(2, b"")
        assert r.pop(5) == [(1, b"\xab" * 64), (2, b"")]
    finally:
        r.close()


def test_pop_respects_max_records(ring):
    for i in range(5):
        assert ring.try_push(i, b"x" * i)
    assert ring.pop(2) == [(0, b""), (1, b"x")]
    assert ring.pop(0) == []
    assert ring.pop(10) == [(2, b"xx"), (3, b"xxx"), (4, b"xxxx")]


def test_wraps_around_many_times_with_random_sizes_and_content_intact():
    capacity, max_record = 1024, 200
    r = Ring.create(capacity, max_record)
    rng = random.Random(1234)
    try:
        expected: list[tuple[int, bytes]] = []
        received: list[tuple[int, bytes]] = []
        total_bytes = 0
        for i in range(20_000):
            n = rng.choice([0, max_record, rng.randrange(0, max_record + 1)])
            data = rng.randbytes(n)
            kind = rng.randrange(0, 1 << 31)
            while not r.try_push(kind, data):
                got = r.pop(rng.randrange(1, 5))
                assert got, "ring full but pop returned nothing"
                received.extend(got)
            expected.append((kind, data))
            total_bytes += layout.record_size(n)
            if rng.random() < 0.3:
                received.extend(r.pop(rng.randrange(1, 4)))
        received.extend(r.pop(1 << 30))
        assert received == expected
        assert total_bytes > 100 * capacity  # wrapped well over a hundred times
        assert r.used_bytes() == 0
    finally:
        r.close()


def test_full_ring_refuses_push_without_corruption_then_resumes():
    r = Ring.create(1024, 100)
    try:
        pushed = []
        i = 0
        while True:
            data = bytes([i % 251]) * (i % 101)
            if not r.try_push(i, data):
                break
            pushed.append((i, data))
            i += 1
        used = r.used_bytes()
        head_before = r._head.value
        for _ in range(3):  # repeated refusals change nothing
            assert not r.try_push(i, data)
        assert r._head.value == head_before and r.used_bytes() == used
        first = r.pop(10)  # records 0..9 hold 8*10 + 48 = 128 bytes (record 35 needs 48)
        assert first == pushed[:10]
        assert r.try_push(i, data)  # space freed: pushes resume
        pushed.append((i, data))
        assert r.pop(1000) == pushed[10:]
    finally:
        r.close()


def test_full_ring_refuses_push_that_fits_in_free_space_but_not_before_the_end():
    # capacity 288 = 4 records of 72; a 48-byte record first, then three of 72: head 264, 24 to the end.
    r = Ring.create(layout.min_capacity(64) * 2, 64)
    try:
        assert r.capacity == 288
        assert r.try_push(0, b"a" * 40)  # 48 bytes
        for k in (1, 2, 3):
            assert r.try_push(k, bytes([k]) * 64)  # 72 bytes each
        assert r.pop(1) == [(0, b"a" * 40)]  # free = 72 = one max record, but 24 of it is at the end
        head = r._head.value
        assert not r.try_push(4, b"e" * 64)  # needs 24 (wrap) + 72 > 72 free
        assert r._head.value == head and r.used_bytes() == 216
        assert r.try_push(5, b"s" * 8)  # a 16-byte record still fits before the end
        assert r.pop(1) == [(1, b"\x01" * 64)]  # free = 128, 8 bytes to the end
        assert r.try_push(4, b"e" * 64)  # wrap marker + record at offset 0
        assert r.pop(10) == [(2, b"\x02" * 64), (3, b"\x03" * 64), (5, b"s" * 8), (4, b"e" * 64)]
        assert r.used_bytes() == 0
    finally:
        r.close()


def test_record_too_large_raises_before_writing_and_ring_stays_usable(ring):
    assert ring.try_push(1, b"ok")
    head = ring._head.value
    with pytest.raises(RecordTooLarge) as info:
        ring.try_push(2, b"x" * 257)
    assert info.value.size == 257 and info.value.max_record == 256
    assert isinstance(info.value, ValueError)
    assert ring._head.value == head
    assert ring.try_push(3, b"y" * 256)
    assert ring.pop(10) == [(1, b"ok"), (3, b"y" * 256)]


def test_kind_reserved_for_wrap_marker_is_rejected(ring):
    # A user record whose kind equals the wrap marker would make the consumer skip to the end of
    # the ring and silently drop records.
    with pytest.raises(ValueError):
        ring.try_push(layout.WRAP_KIND, b"x")
    with pytest.raises(ValueError):
        ring.try_push(-1, b"x")
    assert ring.try_push(layout.WRAP_KIND - 1, b"ok")
    assert ring.try_push(1, b"after")
    assert ring.pop(10) == [(layout.WRAP_KIND - 1, b"ok"), (1, b"after")]


@pytest.mark.parametrize(
    "capacity,max_record",
    [
        (layout.min_capacity(256) - 8, 256),  # too small for two max records
        (layout.min_capacity(256) + 4, 256),  # not a multiple of 8
        (1001, 8),  # not a multiple of 8
        (0, 8),
        (4096, 0),  # max_record must be positive
    ],
)
def test_create_validates_capacity(capacity, max_record):
    with pytest.raises(ValueError):
        Ring.create(capacity, max_record)


def test_create_accepts_exact_minimum_capacity():
    r = Ring.create(layout.min_capacity(256), 256)
    try:
        assert r.capacity == layout.min_capacity(256) and r.max_record == 256
    finally:
        r.close()


# -- names, permissions, attach -------------------------------------------------------------------


def test_segment_and_semaphores_are_private_mode_0600(ring):
    token = token_of(ring.names)
    entries = shm_entries(token)
    assert entries == expected_entries(token)
    for entry in entries:
        mode = stat.S_IMODE(os.stat(os.path.join(DEV_SHM, entry)).st_mode)
        assert mode == 0o600, (entry, oct(mode))


def test_names_are_unguessable_and_distinct():
    a = Ring.create(4096, 256)
    b = Ring.create(4096, 256)
    try:
        ta, tb = token_of(a.names), token_of(b.names)
        assert ta != tb
        for t in (ta, tb):
            assert len(t) >= 24 and all(c in "0123456789abcdef" for c in t)
        for names in (a.names, b.names):
            t = token_of(names)
            assert all(t in n for n in (names.segment, *names.semaphores()))
    finally:
        a.close()
        b.close()


def test_attach_to_bogus_name_raises_ring_error():
    bogus = RingNames.fresh()
    with pytest.raises(RingError):
        Ring.attach(bogus)
    assert shm_entries(token_of(bogus)) == set()


def test_attach_to_a_segment_that_is_not_a_ring_raises_ring_error():
    names = RingNames.fresh()
    shm = posix_ipc.SharedMemory(names.segment, posix_ipc.O_CREX, mode=0o600, size=layout.HEADER_BYTES + 4096)
    sems = [posix_ipc.Semaphore(n, posix_ipc.O_CREX, mode=0o600) for n in names.semaphores()]
    try:
        with pytest.raises(RingError):  # all zeros: no magic
            Ring.attach(names)
    finally:
        shm.close_fd()
        shm.unlink()
        for s in sems:
            s.unlink()
            s.close()


def test_attach_to_a_tiny_segment_raises_ring_error():
    names = RingNames.fresh()
    shm = posix_ipc.SharedMemory(names.segment, posix_ipc.O_CREX, mode=0o600, size=64)
    sems = [posix_ipc.Semaphore(n, posix_ipc.O_CREX, mode=0o600) for n in names.semaphores()]
    try:
        with pytest.raises(RingError):
            Ring.attach(names)
    finally:
        shm.close_fd()
        shm.unlink()
        for s in sems:
            s.unlink()
            s.close()


def test_attach_sees_creator_geometry_and_shared_state(ring):
    consumer = Ring.attach(ring.names)
    try:
        assert (consumer.capacity, consumer.max_record) == (4096, 256)
        assert ring.try_push(9, b"hello")
        assert consumer.pop(10) == [(9, b"hello")]
        assert ring.used_bytes() == 0
        consumer.publish_durable(41)
        assert ring.durable_high_watermark == 41
        consumer.set_halt(3)
        assert ring.halt_code == 3
    finally:
        consumer.close()


# -- cross-process transfer -----------------------------------------------------------------------

N_RECORDS = 200_000


def test_child_consumer_receives_200k_records_with_matching_checksum():
    capacity, max_record, seed = 64 * 1024, 512, 42
    ring = Ring.create(capacity, max_record)
    parent_conn, child_conn = CTX.Pipe()
    proc = CTX.Process(
        target=ring_child.consume_checksum, args=(ring_child.names_to_json(ring.names), N_RECORDS, child_conn)
    )
    proc.start()
    try:
        assert recv(parent_conn) == ("attached", None)
        ring.unlink_names()
        h = ring_child.new_checksum()
        deadline = time.monotonic() + 90
        for kind, payload in ring_child.record_stream(seed, N_RECORDS, max_record):
            while not ring.try_push(kind, payload):
                assert time.monotonic() < deadline, "consumer stopped draining"
                assert proc.is_alive(), "consumer died"
                ring.wait_for_space(1.0)
            ring_child.checksum_update(h, kind, payload)
        status, digest, extra = recv(parent_conn, 90)
        assert status == "ok"
        assert digest == h.hexdigest()
        assert extra == 0
        join_or_kill(proc)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        ring.close()


def test_child_producer_and_parent_consumer_200k_records_with_matching_checksum():
    capacity, max_record, seed = 16 * 1024, 300, 7
    parent_conn, child_conn = CTX.Pipe()
    proc = CTX.Process(target=ring_child.produce_stream, args=(capacity, max_record, seed, N_RECORDS, child_conn))
    proc.start()
    try:
        kind, names_json = recv(parent_conn)
        assert kind == "names"
        ring = Ring.attach(ring_child.names_from_json(names_json))
        try:
            parent_conn.send("attached")
            h = ring_child.new_checksum()
            got = 0
            deadline = time.monotonic() + 90
            while got < N_RECORDS:
                batch = ring.pop(1024)
                if not batch:
                    assert time.monotonic() < deadline, "producer stopped"
                    ring.wait_for_data(1.0)
                    continue
                for k, payload in batch:
                    ring_child.checksum_update(h, k, payload)
                got += len(batch)
            assert got == N_RECORDS
            status, digest = recv(parent_conn, 90)
            assert status == "ok"
            assert digest == h.hexdigest()
            assert ring.pop(10) == []
            parent_conn.send("done")
        finally:
            ring.close()
        join_or_kill(proc)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


# -- wake-ups -------------------------------------------------------------------------------------


@pytest.fixture
def semaphore_only_wakeups(monkeypatch):
    """Make the safety poll so long that only a semaphore post can wake a sleeper within 1 s."""
    monkeypatch.setattr(ring_mod, "SAFETY_WAIT_S", 30.0)
    monkeypatch.setattr(ring_mod, "CONSUMER_POLL_S", 30.0)


def run_in_thread(fn):
    result: dict = {}

    def body():
        t0 = time.monotonic()
        result["value"] = fn()
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, result


def test_wait_for_data_wakes_promptly_on_push(ring, semaphore_only_wakeups):
    consumer = Ring.attach(ring.names)
    try:
        t, result = run_in_thread(lambda: consumer.wait_for_data(5.0))
        spin_until(lambda: ring._consumer_waiting.value != 0)
        assert ring.try_push(1, b"wake")
        t.join(5.0)
        assert not t.is_alive()
        assert result["value"] is True
        assert result["elapsed"] < 1.0
        assert consumer.pop(10) == [(1, b"wake")]
    finally:
        consumer.close()


def test_wait_for_data_returns_immediately_when_data_present(ring):
    assert ring.try_push(1, b"x")
    t0 = time.monotonic()
    assert ring.wait_for_data(5.0) is True
    assert time.monotonic() - t0 < 1.0


def test_wait_for_data_times_out_false_when_nothing_pushed(ring):
    t0 = time.monotonic()
    assert ring.wait_for_data(0.2) is False
    elapsed = time.monotonic() - t0
    assert 0.19 <= elapsed < 1.0
    assert ring._consumer_waiting.value == 0


def test_wake_consumer_wakes_a_sleeping_consumer(ring, semaphore_only_wakeups):
    consumer = Ring.attach(ring.names)
    try:
        t, result = run_in_thread(lambda: consumer.wait_for_data(5.0))
        spin_until(lambda: ring._consumer_waiting.value != 0)
        ring.wake_consumer()
        t.join(5.0)
        assert not t.is_alive()
        assert result["value"] is True and result["elapsed"] < 1.0
        assert consumer.pop(10) == []
        # the wake-up was consumed: the next wait sleeps for its full timeout
        assert consumer.wait_for_data(0.2) is False
    finally:
        consumer.close()


def test_set_halt_wakes_sleeping_consumer_and_is_visible_to_producer(ring, semaphore_only_wakeups):
    consumer = Ring.attach(ring.names)
    try:
        t, result = run_in_thread(lambda: consumer.wait_for_data(5.0))
        spin_until(lambda: ring._consumer_waiting.value != 0)
        consumer.set_halt(5)
        t.join(5.0)
        assert not t.is_alive()
        assert result["value"] is True and result["elapsed"] < 1.0
        assert ring.halt_code == 5 and consumer.halt_code == 5
    finally:
        consumer.close()


def test_wait_durable_at_least_wakes_on_publish_durable(ring, semaphore_only_wakeups):
    consumer = Ring.attach(ring.names)
    try:
        t, result = run_in_thread(lambda: ring.wait_durable_at_least(10, 5.0))
        spin_until(lambda: ring._durable_waiting.value == 1)
        consumer.publish_durable(10)
        t.join(5.0)
        assert not t.is_alive()
        assert result["value"] is True and result["elapsed"] < 1.0
        assert ring.durable_high_watermark == 10
    finally:
        consumer.close()


def test_producer_posts_once_per_park_not_once_per_push(ring):
    """While a parked consumer is being woken, further pushes make no syscall: the flag holds a
    park number and the producer posts once for each."""
    consumer = Ring.attach(ring.names)
    try:
        consumer._consumer_waiting.value = 7  # as a consumer that parked for the 7th time
        for i in range(5):
            assert ring.try_push(1, bytes([i]))
        assert consumer._data_sem.value == 1
        consumer._consumer_waiting.value = 8  # woke up, drained, parked again
        assert ring.try_push(1, b"again")
        assert consumer._data_sem.value == 2
        consumer._consumer_waiting.value = 0  # awake: no posts at all
        assert ring.try_push(1, b"awake")
        assert consumer._data_sem.value == 2
    finally:
        consumer.close()


@pytest.mark.parametrize("how", ["push", "wake_consumer"])
def test_a_push_or_a_wake_ends_a_linger_without_a_park(ring, semaphore_only_wakeups, how):
    consumer = Ring.attach(ring.names)
    try:
        t, result = run_in_thread(lambda: consumer.wait_for_data(5.0, linger_s=1.0))
        if how == "push":
            assert ring.try_push(1, b"during linger")
        else:
            ring.wake_consumer()
        t.join(5.0)
        assert not t.is_alive()
        assert result["value"] is True and result["elapsed"] < 1.0
        assert consumer._parks == 0 and ring._consumer_waiting.value == 0  # never raised its flag
        assert consumer._data_sem.value == 0  # a push made no post; a wake's post was taken
        assert consumer.pop(10) == ([(1, b"during linger")] if how == "push" else [])
    finally:
        consumer.close()


def test_consumer_parks_after_its_linger(ring):
    t0 = time.monotonic()
    assert ring.wait_for_data(0.3, linger_s=0.05) is False
    assert 0.29 <= time.monotonic() - t0 < 1.5
    assert ring._parks == 1 and ring._consumer_waiting.value == 0


def test_linger_never_outlasts_the_timeout(ring):
    t0 = time.monotonic()
    assert ring.wait_for_data(0.05, linger_s=1.0) is False
    assert time.monotonic() - t0 < 0.5
    assert ring._parks == 1  # the (empty) park after the clipped linger


def test_several_threads_waiting_for_durability_are_all_woken_promptly(ring, semaphore_only_wakeups):
    """One post wakes one semaphore sleeper; the others must still hear of every publish (before,
    the first waiter to return cleared the shared flag and the rest slept out the safety poll)."""
    consumer = Ring.attach(ring.names)
    try:
        waiters = [run_in_thread(lambda s=s: ring.wait_durable_at_least(s, 10.0)) for s in (5, 10, 10)]
        spin_until(lambda: ring._durable_waiting.value != 0)
        consumer.publish_durable(5)
        waiters[0][0].join(5.0)
        assert waiters[0][1]["value"] is True and waiters[0][1]["elapsed"] < 2.0
        assert all(t.is_alive() for t, _ in waiters[1:])  # 5 is not enough for them
        spin_until(lambda: ring._durable_waiting.value != 0)
        consumer.publish_durable(10)
        for t, result in waiters[1:]:
            t.join(5.0)
            assert not t.is_alive()
            assert result["value"] is True and result["elapsed"] < 2.0
    finally:
        consumer.close()


def test_a_publish_just_before_the_sleeper_raises_its_flag_still_wakes_the_other_waiters(
    ring, semaphore_only_wakeups
):
    """A sleeper waiting for 10 has taken the role; another thread waits for 5 on the condition;
    5 is published just before the sleeper raises its flag, so nothing is posted. The sleeper
    must notice the change and wake the others, not sleep on until 10 or its timeout."""
    consumer = Ring.attach(ring.names)
    sleeper_has_role = threading.Event()
    follower_waiting = threading.Event()

    class PublishBeforeRaise:  # the ring's flag, with the race held open
        def __init__(self, real):
            self.real = real

        @property
        def value(self):
            return self.real.value

        @value.setter
        def value(self, v):
            if v == 1 and threading.current_thread().name == "sleeper" and not sleeper_has_role.is_set():
                sleeper_has_role.set()
                assert follower_waiting.wait(5.0)
                consumer.publish_durable(5)  # the flag is still down: no post
            self.real.value = v

    real_wait = ring._durable_changed.wait

    def follower_wait(timeout):
        follower_waiting.set()  # called with the condition's lock held: the sleeper cannot notify before we wait
        return real_wait(timeout)

    flag = PublishBeforeRaise(ring._durable_waiting)
    try:
        ring._durable_waiting = flag
        ring._durable_changed.wait = follower_wait
        sleeper = threading.Thread(target=lambda: ring.wait_durable_at_least(10, 3.0), name="sleeper", daemon=True)
        sleeper.start()
        assert sleeper_has_role.wait(5.0)
        follower_t, follower = run_in_thread(lambda: ring.wait_durable_at_least(5, 10.0))
        follower_t.join(5.0)
        assert not follower_t.is_alive()
        assert follower["value"] is True and follower["elapsed"] < 2.0
        consumer.publish_durable(10)  # the sleeper's turn
        sleeper.join(5.0)
        assert not sleeper.is_alive()
    finally:
        ring._durable_waiting, flag.real = flag.real, None  # no stray reference into the segment
        consumer.close()


def test_wait_durable_at_least_ignores_lower_watermark_and_times_out(ring):
    consumer = Ring.attach(ring.names)
    try:
        consumer.publish_durable(4)
        t0 = time.monotonic()
        assert ring.wait_durable_at_least(5, 0.2) is False
        assert 0.19 <= time.monotonic() - t0 < 1.0
        assert ring.wait_durable_at_least(4, 0.2) is True
    finally:
        consumer.close()


def test_wait_for_space_returns_at_once_for_space_freed_since_the_failed_push(semaphore_only_wakeups):
    """The consumer popped between the producer's failed push and its wait, with no flag up to
    post for: the wait must see that space, not sleep until the next pop (or the safety poll)."""
    r = Ring.create(1024, 100)
    consumer = Ring.attach(r.names)
    try:
        while r.try_push(1, b"z" * 100):
            pass  # the last, failed push read the consumer's tail
        assert len(consumer.pop(1)) == 1  # frees space; the producer is not waiting yet
        t0 = time.monotonic()
        r.wait_for_space(5.0)
        assert time.monotonic() - t0 < 1.0
        assert r.try_push(1, b"z" * 100)
    finally:
        consumer.close()
        r.close()


def test_wait_for_space_wakes_after_pop(semaphore_only_wakeups):
    r = Ring.create(1024, 100)
    consumer = Ring.attach(r.names)
    try:
        while r.try_push(1, b"z" * 100):
            pass
        t, result = run_in_thread(lambda: r.wait_for_space(5.0))
        spin_until(lambda: r._producer_waiting.value == 1)
        assert len(consumer.pop(1)) == 1
        t.join(5.0)
        assert not t.is_alive()
        assert result["elapsed"] < 1.0
        assert r.try_push(1, b"z" * 100)
    finally:
        consumer.close()
        r.close()


def test_cross_process_wakeups_are_not_lost_in_ping_pong():
    """A consumer in another process must see every push promptly (no lost wake-up)."""
    ring = Ring.create(4096, 64)
    parent_conn, child_conn = CTX.Pipe()
    proc = CTX.Process(
        target=ring_child.consume_checksum, args=(ring_child.names_to_json(ring.names), 2000, child_conn)
    )
    proc.start()
    try:
        assert recv(parent_conn) == ("attached", None)
        h = ring_child.new_checksum()
        t0 = time.monotonic()
        for i in range(2000):
            payload = i.to_bytes(8, "little")
            # push only after the consumer has gone to sleep, so every record needs a wake-up
            spin_until(lambda: ring._consumer_waiting.value != 0 and ring.used_bytes() == 0, 10.0)
            assert time.monotonic() - t0 < 30.0, f"only {i} wake-ups in 30 s"
            assert ring.try_push(3, payload)
            ring_child.checksum_update(h, 3, payload)
        status, digest, _ = recv(parent_conn)
        assert status == "ok" and digest == h.hexdigest()
        # 2000 wake-ups; with the 50 ms safety poll as the only wake source this would take ~100 s
        assert time.monotonic() - t0 < 30.0
        join_or_kill(proc)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        ring.close()


# -- idle CPU -------------------------------------------------------------------------------------


def test_idle_consumer_uses_little_cpu():
    ring = Ring.create(4096, 256)
    parent_conn, child_conn = CTX.Pipe()
    proc = CTX.Process(target=ring_child.idle_consumer, args=(ring_child.names_to_json(ring.names), 2.0, child_conn))
    proc.start()
    try:
        assert recv(parent_conn) == "ready"
        ps = psutil.Process(proc.pid)
        before = ps.cpu_times()
        t0 = time.monotonic()
        parent_conn.send("go")
        results = recv(parent_conn, 30)
        after = ps.cpu_times()
        wall = time.monotonic() - t0
        parent_conn.send("bye")
        join_or_kill(proc)
        assert results and not any(results), "wait_for_data reported data that was never pushed"
        cpu = (after.user - before.user) + (after.system - before.system)
        assert wall >= 2.0
        assert cpu / wall < 0.05, f"idle consumer used {cpu:.3f}s CPU in {wall:.2f}s"
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        ring.close()


# -- /dev/shm cleanup -----------------------------------------------------------------------------


def test_clean_close_by_owner_leaves_nothing_in_dev_shm():
    ring = Ring.create(4096, 256)
    token = token_of(ring.names)
    consumer = Ring.attach(ring.names)
    assert shm_entries(token) == expected_entries(token)
    consumer.close()
    assert shm_entries(token) == expected_entries(token)  # a consumer close does not remove the owner's names
    ring.close()
    assert shm_entries(token) == set()
    ring.close()  # idempotent


def test_owner_sigkilled_after_unlink_names_leaves_nothing_and_mapping_stays_valid():
    parent_conn, child_conn = CTX.Pipe()
    proc = CTX.Process(target=ring_child.owner_then_block, args=(4096, 256, child_conn))
    proc.start()
    try:
        names = ring_child.names_from_json(recv(parent_conn))
        token = token_of(names)
        assert shm_entries(token) == expected_entries(token)
        consumer = Ring.attach(names)
        try:
            parent_conn.send("attached")
            assert recv(parent_conn) == "unlinked"
            os.kill(proc.pid, signal.SIGKILL)
            join_or_kill(proc, 10)
            assert proc.exitcode == -signal.SIGKILL
            assert shm_entries(token) == set()
            # the consumer's mapping outlives the owner and its names
            assert consumer.pop(10) == [(7, b"rec0"), (7, b"rec1"), (7, b"rec2")]
            consumer.publish_durable(3)
        finally:
            consumer.close()
        assert shm_entries(token) == set()
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


def test_consumer_sigkilled_then_owner_closes_leaves_nothing():
    ring = Ring.create(4096, 256)
    token = token_of(ring.names)
    parent_conn, child_conn = CTX.Pipe()
    proc = CTX.Process(target=ring_child.attach_then_block, args=(ring_child.names_to_json(ring.names), child_conn))
    proc.start()
    try:
        assert ring.try_push(1, b"first")
        assert recv(parent_conn) == [(1, b"first")]
        os.kill(proc.pid, signal.SIGKILL)
        join_or_kill(proc, 10)
        assert proc.exitcode == -signal.SIGKILL
        assert shm_entries(token) == expected_entries(token)
        assert ring.try_push(2, b"after the consumer died")  # the producer is unaffected
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        ring.close()
    assert shm_entries(token) == set()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_failed_attach_does_not_leak_the_segment_descriptor():
    names = RingNames.fresh()
    shm = posix_ipc.SharedMemory(names.segment, posix_ipc.O_CREX, mode=0o600, size=layout.HEADER_BYTES + 4096)
    try:  # the segment exists but its semaphores do not
        before = _open_fds()
        for _ in range(5):
            with pytest.raises(RingError):
                Ring.attach(names)
        assert _open_fds() == before
    finally:
        shm.close_fd()
        shm.unlink()


@pytest.mark.parametrize("capacity,max_record", [(0, 8), (64, 256), (4096, 0)])
def test_attach_rejects_a_header_with_impossible_geometry(capacity, max_record):
    names = RingNames.fresh()
    shm = posix_ipc.SharedMemory(names.segment, posix_ipc.O_CREX, mode=0o600, size=layout.HEADER_BYTES + 4096)
    sems = [posix_ipc.Semaphore(n, posix_ipc.O_CREX, mode=0o600) for n in names.semaphores()]
    try:
        with open(os.path.join(DEV_SHM, names.segment.lstrip("/")), "r+b") as f:
            f.write(layout.MAGIC.to_bytes(8, "little") + capacity.to_bytes(8, "little") + max_record.to_bytes(8, "little"))
        with pytest.raises(RingError):
            Ring.attach(names)
    finally:
        shm.close_fd()
        shm.unlink()
        for s in sems:
            s.unlink()
            s.close()
