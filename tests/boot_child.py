"""A trader process for lifecycle tests: `python tests/boot_child.py BASE_DIR INSTANCE_ID MODE`.

MODE `hold`: boot a session, print `ready <pid> <writer_pid> <run_id>`, wait for stdin EOF,
close, print `closed <final high-watermark>`. MODE `boot`: boot a session (the test signals or
kills it during the boot), then behave like `hold`.
"""

from __future__ import annotations

import sys

from nes.config import EventStoreConfig, RunIdentity
from nes.kernel import open_run


def main(argv: list[str]) -> int:
    base_dir, instance_id, _mode = argv[0], argv[1], argv[2]
    config = EventStoreConfig(base_dir=base_dir, identity=RunIdentity(instance_id=instance_id))
    session = open_run(config)
    import os

    sys.stdout.write(f"ready {os.getpid()} {session.writer.writer_pid} {session.run_id}\n")
    sys.stdout.flush()
    sys.stdin.read()
    final = session.close()
    sys.stdout.write(f"closed {final}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
