"""Child-process entry points for tests/test_ring.py and tools/bench_ring.py (spawned, so importable).

Each function talks to the parent over a `multiprocessing` Connection; ring names travel as JSON.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time

import msgspec

from shm.ring import Ring, RingNames

_KL = struct.Struct("<II")


def names_to_json(names: RingNames) -> bytes:
    return msgspec.json.encode(names)


def names_from_json(raw: bytes) -> RingNames:
    return msgspec.json.decode(raw, type=RingNames)


def record_stream(seed: int, count: int, max_record: int):
    """Deterministic (kind, payload) records of random sizes, 0 and max_record included."""
    rng = random.Random(seed)
    for i in range(count):
        r = rng.random()
        if r < 0.02:
            n = 0
        elif r < 0.04:
            n = max_record
        else:
            n = rng.randrange(0, max_record + 1)
        payload = i.to_bytes(8, "little")[: n] + rng.randbytes(max(0, n - 8))
        yield i % 1000, payload


def checksum_update(h, kind: int, payload: bytes) -> None:
    h.update(_KL.pack(kind, len(payload)))
    h.update(payload)


def new_checksum():
    return hashlib.blake2b(digest_size=16)


def consume_checksum(names_json: bytes, count: int, conn, timeout_s: float = 120.0) -> None:
    """Attach, pop `count` records, send ("ok", hexdigest) or ("error", text)."""
    try:
        ring = Ring.attach(names_from_json(names_json))
    except Exception as exc:  # report instead of dying silently
        conn.send(("error", repr(exc)))
        return
    conn.send(("attached", None))
    try:
        h = new_checksum()
        got = 0
        deadline = time.monotonic() + timeout_s
        while got < count:
            batch = ring.pop(1024)
            if not batch:
                if time.monotonic() > deadline:
                    conn.send(("error", f"timed out after {got} records"))
                    return
                ring.wait_for_data(1.0)
                continue
            for kind, payload in batch:
                checksum_update(h, kind, payload)
            got += len(batch)
        if got != count:
            conn.send(("error", f"popped {got} records, expected {count}"))
            return
        extra = ring.pop(10)
        conn.send(("ok", h.hexdigest(), len(extra)))
    finally:
        ring.close()


def produce_stream(capacity: int, max_record: int, seed: int, count: int, conn, timeout_s: float = 120.0) -> None:
    """Create a ring, send its names, wait for "attached", unlink, push the record stream, report."""
    ring = Ring.create(capacity, max_record)
    try:
        conn.send(("names", names_to_json(ring.names)))
        if conn.recv() != "attached":
            return
        ring.unlink_names()
        h = new_checksum()
        deadline = time.monotonic() + timeout_s
        for kind, payload in record_stream(seed, count, max_record):
            while not ring.try_push(kind, payload):
                if time.monotonic() > deadline:
                    conn.send(("error", "timed out pushing"))
                    return
                ring.wait_for_space(1.0)
            checksum_update(h, kind, payload)
        conn.send(("ok", h.hexdigest()))
        conn.recv()  # keep the mapping until the parent has drained the ring
    finally:
        ring.close()


def idle_consumer(names_json: bytes, duration_s: float, conn) -> None:
    """Attach, loop wait_for_data(1.0) for `duration_s` with nothing pushed; report the results."""
    ring = Ring.attach(names_from_json(names_json))
    try:
        conn.send("ready")
        conn.recv()  # "go": the parent has sampled our CPU time
        results = []
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            results.append(ring.wait_for_data(1.0))
        conn.send(results)
        conn.recv()  # stay alive until the parent has sampled CPU time again
    finally:
        ring.close()


def owner_then_block(capacity: int, max_record: int, conn) -> None:
    """Create a ring, push 3 records, send names; on "attached" unlink and report; then block forever."""
    ring = Ring.create(capacity, max_record)
    for i in range(3):
        assert ring.try_push(7, b"rec%d" % i)
    conn.send(names_to_json(ring.names))
    if conn.recv() == "attached":
        ring.unlink_names()
        conn.send("unlinked")
    conn.recv()  # blocks until SIGKILLed


def attach_then_block(names_json: bytes, conn) -> None:
    """Attach as consumer, pop one record, report it, then block until SIGKILLed."""
    ring = Ring.attach(names_from_json(names_json))
    ring.wait_for_data(5.0)
    conn.send(ring.pop(1))
    conn.recv()
