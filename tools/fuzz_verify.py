"""Fuzz the verifier with single-byte flips: the parent must never crash.

    python tools/fuzz_verify.py N [--seed S] [--entries E] [--timeout T]

Builds one small clean run file, then for each of N trials copies it, flips one random byte
(seeded, reproducible), and runs `nes.verifier.verify_in_worker` on the copy. Every verdict
must be one of: clean (the flip hit unused space), corrupt (findings), or a worker failure
(LMDB crashed or hung on the damaged map). An exception in the parent is a failure. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from runfile_helpers import make_run_file  # noqa: E402

from nes.verifier import VerifyReport, WorkerFailure, verify_in_worker  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=20.0)
    ns = parser.parse_args(argv)
    rng = random.Random(ns.seed)
    workdir = Path(tempfile.mkdtemp(prefix="nes-fuzz-verify-"))
    counts: Counter[str] = Counter()
    failures: list[dict[str, object]] = []
    started = time.perf_counter()
    try:
        clean = make_run_file(workdir / "clean.lmdb", entries=ns.entries, payload_size=64)
        data = clean.read_bytes()
        baseline = verify_in_worker(clean, ns.timeout)
        if not baseline.is_clean():
            raise SystemExit(f"baseline run file is not clean: {baseline.lines()}")
        for trial in range(ns.trials):
            offset = rng.randrange(len(data))
            mask = rng.randrange(1, 256)
            damaged = bytearray(data)
            damaged[offset] ^= mask
            path = workdir / f"trial-{trial}.lmdb"
            path.write_bytes(bytes(damaged))
            try:
                verdict = verify_in_worker(path, ns.timeout)
            except Exception as exc:  # noqa: BLE001 - the property under test: never reached
                counts["parent_error"] += 1
                failures.append({"trial": trial, "offset": offset, "mask": mask, "error": repr(exc)})
                continue
            finally:
                path.unlink(missing_ok=True)
            if isinstance(verdict, WorkerFailure):
                counts["worker_failure"] += 1
                counts["status_" + verdict.worker_status.split(" (")[0].replace(" ", "_")] += 1
            elif isinstance(verdict, VerifyReport) and verdict.is_clean():
                counts["clean"] += 1
            elif isinstance(verdict, VerifyReport):
                counts["corrupt"] += 1
                for finding in verdict.findings:
                    counts["finding_" + type(finding).__name__] += 1
            else:  # pragma: no cover - verify_in_worker returns only the two verdicts
                counts["unexpected"] += 1
                failures.append({"trial": trial, "offset": offset, "mask": mask, "verdict": repr(verdict)})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        "trials": ns.trials,
        "seed": ns.seed,
        "file_bytes": len(data),
        "clean": counts["clean"],
        "corrupt": counts["corrupt"],
        "worker_failure": counts["worker_failure"],
        "parent_error": counts["parent_error"],
        "details": {k: v for k, v in sorted(counts.items()) if k.startswith(("finding_", "status_"))},
        "failures": failures[:10],
        "elapsed_s": round(time.perf_counter() - started, 2),
        "ok": not failures,
    }
    print(json.dumps(summary))
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
