"""Crash-trial trader: `python tests/crash_child.py BASE_DIR INSTANCE_ID [MAX_ENTRIES]`.

Boots a session (real writer sidecar), prints `writer <pid>` and `run <run_id>`, then submits
entries in a loop; every few entries it waits for durability and prints `durable <hwm>`, the
durable high-watermark it observed via `wait_durable` (every seq at or below it must survive a
crash). After MAX_ENTRIES it prints `closing`, closes the session and prints `closed <final>`. Meant to be SIGKILLed (it or its writer) at a random point; if the writer dies first it
prints `halted <durable hwm>` and exits 3.
"""

from __future__ import annotations

import sys

from nes.config import EventStoreConfig, RunIdentity
from nes.kernel import open_run
from nes.writer import EntryDraft, SubmitError

DURABLE_EVERY = 25


def payload_for(seq: int) -> bytes:
    return b"crash-entry-%08d" % seq


def main(argv: list[str]) -> int:
    base_dir, instance_id = argv[0], argv[1]
    max_entries = int(argv[2]) if len(argv) > 2 else 10_000_000
    config = EventStoreConfig(base_dir=base_dir, identity=RunIdentity(instance_id=instance_id))
    session = open_run(config)
    out = sys.stdout
    out.write(f"writer {session.writer.writer_pid}\nrun {session.run_id}\ndurable {session.high_watermark}\n")
    out.flush()
    try:
        for n in range(max_entries):
            seq = session.writer.next_seq
            session.submit(EntryDraft("exec.event.OrderFilled", "OrderFilled", payload_for(seq), 1_000 + seq))
            if n % DURABLE_EVERY == DURABLE_EVERY - 1 and session.wait_durable(seq, 5.0):
                out.write(f"durable {seq}\n")
                out.flush()
    except SubmitError:
        out.write(f"halted {session.high_watermark}\n")
        out.flush()
        session.close()
        return 3
    out.write("closing\n")
    out.flush()
    final = session.close()
    out.write(f"closed {final}\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
