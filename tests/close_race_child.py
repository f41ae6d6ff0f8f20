"""Threads inside `wait_durable()` while the main thread closes or abandons the writer:
`python tests/close_race_child.py BASE_DIR ITERATIONS MODE` (MODE `close` or `stalled`).

Each iteration spawns a real writer sidecar, submits a few entries, starts waiter threads on a
seq that never becomes durable and on one that does, and closes (`close`) or, after a
backpressure-stall halt with the writer SIGSTOPped, closes the halted writer (`stalled`) while
they wait. Prints `ok <iterations>` if every waiter returned its result (no exception); a
segfault shows as the process dying by SIGSEGV.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

from nes.manifest import RunManifest
from nes.writer import EntryDraft, EventStoreWriter, HaltSignaled, WriterConfig, WriterHalted

DRAFT = EntryDraft("orders.submit", "SubmitOrder", b"x" * 64, 7)
WAITERS = 4


def one(base: Path, i: int, mode: str, rng: random.Random) -> None:
    manifest = RunManifest(run_id=f"{1700000000 + i}-{i:08x}", instance_id="race", start_ts_init=1)
    config = WriterConfig(ring_bytes=1 << 16, max_record_bytes=1024, halt_threshold_s=0.05, close_timeout_s=0.5)
    writer = EventStoreWriter.spawn(base, manifest, config)
    last = writer.submit(DRAFT)
    assert writer.wait_durable(last, 5.0)
    if mode == "stalled":
        os.kill(writer.writer_pid, signal.SIGSTOP)
        try:
            while True:
                writer.submit(DRAFT)
        except (HaltSignaled, WriterHalted):
            pass
    results: list[object] = []
    barrier = threading.Barrier(WAITERS + 1)

    def wait(seq: int) -> None:
        barrier.wait()
        try:
            results.append(writer.wait_durable(seq, 10.0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=wait, args=(10**9 if k % 2 else last,)) for k in range(WAITERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    end = time.perf_counter() + rng.uniform(0, 0.003)
    while time.perf_counter() < end:  # vary where the waiters are when close starts
        pass
    try:
        if mode == "close":
            writer.close()
        else:
            try:
                writer.close()
            except WriterHalted:
                pass
    finally:
        if mode == "stalled":
            try:
                os.kill(writer.writer_pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    for thread in threads:
        thread.join(15.0)
        assert not thread.is_alive(), "a waiter hung"
    bad = [r for r in results if not isinstance(r, bool)]
    assert not bad, bad
    assert sorted(results) == [False, False, True, True], results


def main(argv: list[str]) -> int:
    base, iterations, mode = Path(argv[0]), int(argv[1]), argv[2]
    rng = random.Random(iterations)
    for i in range(iterations):
        one(base, i, mode, rng)
    print(f"ok {iterations}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
