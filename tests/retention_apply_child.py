"""Child for the retention-apply crash tests: apply, and SIGKILL ourselves right after STEP
(of the first candidate it happens to). argv: base archive_or_- mode step"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from nes.config import parse_retention_mode
from nes.ops.retention_apply import apply_retention
from tests.runfile_helpers import INSTANCE_ID


def main() -> None:
    base, archive, mode, kill_step = sys.argv[1:5]

    def on_step(step: str, run_id: str) -> None:
        print(f"step {step} {run_id}", flush=True)
        if step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    apply_retention(
        Path(base), INSTANCE_ID, parse_retention_mode(mode),
        archive_dir=None if archive == "-" else Path(archive), delete=archive == "-",
        verify=lambda path: None, on_step=on_step,
    )
    print("done", flush=True)


if __name__ == "__main__":
    main()
