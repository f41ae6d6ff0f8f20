"""A trader process for crash tests: spawns a writer sidecar, pushes N entries without waiting
for durability, reports what it pushed, then SIGKILLs itself (a trader crash).

    python tests/trader_child.py BASE_DIR RUN_ID N
Prints one JSON line: {"run_id", "pushed", "writer_pid", "segment"} before dying.
"""

from __future__ import annotations

import os
import signal
import sys

import msgspec

from nes.manifest import RunManifest
from nes.writer import EntryDraft, EventStoreWriter


def main() -> None:
    base_dir, run_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    manifest = RunManifest(run_id=run_id, instance_id="crash", start_ts_init=1)
    writer = EventStoreWriter.spawn(base_dir, manifest)
    draft = EntryDraft("orders.submit", "SubmitOrder", b"x" * 200, 7)
    last = 0
    for _ in range(count):
        last = writer.submit(draft)
    line = {"run_id": run_id, "pushed": last, "writer_pid": writer.writer_pid, "segment": writer._ring.names.segment}
    sys.stdout.write(msgspec.json.encode(line).decode() + "\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
