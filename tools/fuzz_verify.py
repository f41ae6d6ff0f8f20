"""Fuzz verify and recovery with byte flips anywhere in a run file; nothing may go unnoticed.

    python tools/fuzz_verify.py N [--seed S] [--entries E] [--timeout T] [--crashed M]

Builds a real run file through `LmdbBackend` (entries in several commits, two index databases,
snapshot anchors, sealed with its seal record), records what a reader returns from it (manifest,
every entry, every index row, every anchor: the "reader view", read in a worker process), then
for each of N trials flips one byte of a copy and runs `verify_in_worker` on it. Half of the
flips are uniform over the file; the other half aim at the pages that hold the meta pages,
index rows, the manifest, anchors and digests. A trial is:
- detected: verify reports corrupt (findings or a worker crash/stall);
- invisible: verify says clean and the reader view is unchanged (the flip hit unused bytes);
- undetected: verify says clean but the reader view changed, or the reader fails (the goal is 0);
- parent_error: the parent raised (the goal is 0).
Every sealed trial also runs the public in-process read API (`LmdbBackend.open_sealed_file`,
its scans, index lookups and anchors) over the damaged copy in a child process, which must end
either with the intact view or with a typed `EventStoreError`: `reader_crashes` counts the
children killed by a signal or by an untyped exception (the goal is 0; a sealed file whose bytes
differ from its seal record is refused before LMDB maps it).
With `--crashed M`, M more trials flip a byte in a crashed (Running, never sealed) file and
then boot (`recover_predecessors`, as the next boot's sweep): a sealed CrashedRecovered/Ended
run must verify clean and read back what the intact crashed run reads back once sealed; a
Quarantined one is counted (a clean verdict after it means the seal rewrote the damaged page);
a flipped format marker stops the boot with UnsupportedFormat, by contract. A crashed file rolled back one
commit by a meta-page flip cannot be told from one that crashed a commit earlier (LMDB has no
page checksums, and a Running run has no seal record yet): those are counted apart, as
`running_rollbacks`. The last line is one JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

INSTANCE = "fuzz-001"
START = 1_700_000_000_000_000_000
PAGE_FLAGS = {0x01: "branch", 0x02: "leaf", 0x04: "overflow", 0x08: "meta", 0x20: "leaf2", 0x40: "subpage"}


# ---- the run file --------------------------------------------------------------------------------
def build_run(base: Path, entries: int, seal: bool) -> Path:
    from nes.backend.base import AppendEntry, IndexKey, IndexKind
    from nes.backend.lmdb import LmdbBackend
    from nes.entry import EventStoreEntry
    from nes.headers import Headers
    from nes.manifest import RunManifest, RunStatus
    from nes.snapshot import SnapshotAnchor

    run_id = f"{START}-0f0f0f0f"
    with LmdbBackend(base) as backend:
        backend.open_run(RunManifest(run_id=run_id, instance_id=INSTANCE, start_ts_init=START, binary_hash="feed"))
        seq = 0
        while seq < entries:
            batch = []
            for s in range(seq + 1, min(seq + 25, entries) + 1):
                ts = START + s * 1_000
                entry = EventStoreEntry.build(s, ts, ts + 1, "exec.event.OrderFilled", "OrderFilled", b"PAYLOAD-%06d" % s, Headers.empty())
                keys = (IndexKey(IndexKind.ClientOrderId, f"O-{s:05d}"), IndexKey(IndexKind.VenueOrderId, f"V-{s % 7}"))
                batch.append(AppendEntry(entry, keys))
            seq = backend.append_batch(batch)
            if seq % 100 == 0:
                backend.record_snapshot_anchor(SnapshotAnchor(seq, f"snapshots/{seq}.bin", "blake3:" + "cd" * 32))
        if seal:
            backend.seal(RunStatus.Ended)
        path = backend.path
    assert path is not None
    Path(f"{path}-lock").unlink(missing_ok=True)
    return path


def reader_view(path: str) -> dict[str, object]:
    """What the public read API returns from a sealed run (in a worker: may crash)."""
    from nes.backend.base import IndexKind, ScanDirection
    from nes.backend.lmdb import LmdbBackend
    from nes.backend.layout import DB_ANCHORS, open_read_only

    h = hashlib.sha256()
    with LmdbBackend.open_sealed_file(path) as backend:
        manifest = backend.manifest()
        h.update(repr(manifest).encode())
        hwm = backend.high_watermark()
        for entry in backend.scan_range(1, hwm, ScanDirection.Forward):
            h.update(repr(entry).encode())
        for kind in IndexKind:
            for key, _first in backend.iter_index_keys(kind):
                h.update(repr((kind, key, backend.lookup_all(kind, key))).encode())
        h.update(repr(backend.latest_snapshot_anchor()).encode())
    env = open_read_only(path)  # every anchor, as replay and retention may pick any
    try:
        with env.begin() as txn:
            db = env.open_db(DB_ANCHORS, txn=txn, create=False)
            for key, value in txn.cursor(db):
                h.update(bytes(key) + bytes(value))
    finally:
        env.close()
    return {"digest": h.hexdigest(), "high_watermark": hwm, "status": str(manifest.status)}


def typed_reader_view(path: str) -> dict[str, object]:
    """`reader_view`, with a typed error as the outcome (what an in-process caller may get)."""
    from nes.errors import EventStoreError

    try:
        return reader_view(path)
    except EventStoreError as exc:
        return {"typed_error": type(exc).__name__}


def view_in_worker(path: Path, timeout: float) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--view", str(path)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}", "crash": True}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- where to flip -------------------------------------------------------------------------------
def page_size(data: bytes) -> int:
    return struct.unpack_from("<I", data, 40)[0]


def page_kind(data: bytes, offset: int) -> str:
    size = page_size(data)
    page = offset // size
    if page < 2:
        return "meta"
    flags = struct.unpack_from("<H", data, page * size + 10)[0]
    return "+".join(name for bit, name in PAGE_FLAGS.items() if flags & bit) or "free"


def targets(data: bytes) -> dict[str, list[int]]:
    """Pages worth aiming at, by what they hold."""
    size = page_size(data)
    groups: dict[str, list[int]] = {"meta": [0, 1], "index": [], "manifest": [], "anchor": [], "digests": []}
    needles = {"index": (b"O-0", b"V-"), "manifest": (b"run_id",), "anchor": (b"snapshots/",), "digests": (b"commit", b"anchor\x00")}
    for page in range(2, len(data) // size):
        chunk = data[page * size:(page + 1) * size]
        for group, marks in needles.items():
            if any(mark in chunk for mark in marks):
                groups[group].append(page)
    return {k: v for k, v in groups.items() if v}


def pick_offset(rng: random.Random, data: bytes, aimed: dict[str, list[int]]) -> tuple[int, str]:
    if rng.random() < 0.5:
        offset = rng.randrange(len(data))
        return offset, "uniform"
    group = rng.choice(sorted(aimed))
    page = rng.choice(aimed[group])
    size = page_size(data)
    if group == "meta":  # the meta fields: magic .. txnid
        return page * size + rng.randrange(16, 152), group
    return page * size + rng.randrange(size), group


# ---- trials --------------------------------------------------------------------------------------
def sealed_trials(ns: argparse.Namespace, rng: random.Random, workdir: Path, counts: Counter[str], failures: list) -> int:
    from nes.backend.seal_record import seal_record_path
    from nes.verifier import verify_in_worker

    clean = build_run(workdir / "sealed", ns.entries, seal=True)
    data = clean.read_bytes()
    record = seal_record_path(clean).read_bytes()
    baseline = view_in_worker(clean, ns.timeout)
    if "error" in baseline or not verify_in_worker(clean, ns.timeout).is_clean():
        raise SystemExit(f"baseline run file is not clean: {baseline}")
    aimed = targets(data)
    trial_dir = workdir / "trial" / INSTANCE
    trial_dir.mkdir(parents=True)
    for trial in range(ns.trials):
        offset, aim = pick_offset(rng, data, aimed)
        mask = rng.randrange(1, 256)
        damaged = bytearray(data)
        damaged[offset] ^= mask
        path = trial_dir / clean.name
        path.write_bytes(bytes(damaged))
        seal_record_path(path).write_bytes(record)
        kind = page_kind(data, offset)
        counts[f"aim_{aim}"] += 1
        try:
            verdict = verify_in_worker(path, ns.timeout)
            view = view_in_worker(path, ns.timeout)
            if view.get("crash"):
                counts["reader_crash"] += 1
                failures.append({"trial": trial, "offset": offset, "mask": mask, "page": kind, "reader": view["error"]})
            elif "typed_error" in view:
                counts["reader_typed_error_" + str(view["typed_error"])] += 1
            if verdict.is_clean():
                if view == baseline:
                    outcome = "invisible"
                else:
                    outcome = "undetected"
                    failures.append({"trial": trial, "offset": offset, "mask": mask, "page": kind, "aim": aim, "view": view})
            else:
                outcome = "detected"
                if hasattr(verdict, "worker_status"):
                    counts["worker_failure"] += 1
                for finding in getattr(verdict, "findings", []):
                    counts["finding_" + type(finding).__name__] += 1
        except Exception as exc:  # noqa: BLE001 - the property under test: never reached
            outcome = "parent_error"
            failures.append({"trial": trial, "offset": offset, "mask": mask, "error": repr(exc)})
        counts[outcome] += 1
        counts[f"page_{kind}_{outcome}"] += 1
        for leftover in (path, seal_record_path(path), Path(f"{path}-lock")):
            leftover.unlink(missing_ok=True)
    return len(data)


def crashed_trials(ns: argparse.Namespace, rng: random.Random, workdir: Path, counts: Counter[str], failures: list) -> None:
    from nes.backend.lmdb import read_manifest
    from nes.errors import UnsupportedFormat
    from nes.kernel import recover_predecessors
    from nes.verifier import verify_in_worker

    crashed = build_run(workdir / "crashed", ns.entries, seal=False)
    data = crashed.read_bytes()
    # The reader view of the intact crashed run, as a boot would seal it.
    reference_dir = workdir / "reference"
    shutil.copytree(workdir / "crashed", reference_dir)
    recover_predecessors(reference_dir, INSTANCE, ns.timeout)
    reference = view_in_worker(reference_dir / INSTANCE / crashed.name, ns.timeout)
    aimed = targets(data)
    for trial in range(ns.crashed):
        offset, aim = pick_offset(rng, data, aimed)
        mask = rng.randrange(1, 256)
        damaged = bytearray(data)
        damaged[offset] ^= mask
        base = workdir / f"boot-{trial}"
        (base / INSTANCE).mkdir(parents=True, mode=0o700)
        path = base / INSTANCE / crashed.name
        path.write_bytes(bytes(damaged))
        try:
            try:
                outcome_run = recover_predecessors(base, INSTANCE, ns.timeout)
            except UnsupportedFormat:
                counts["crashed_boot_refused_unsupported_format"] += 1  # by contract: the boot stops
                shutil.rmtree(base, ignore_errors=True)
                continue
            status = {r.run_id: r.status for r in outcome_run.recovered}
            if not status:
                outcome = "left_for_next_boot"
            elif str(next(iter(status.values()))) == "Quarantined":
                verdict = verify_in_worker(path, ns.timeout)
                # Clean after a Quarantined seal: the seal's own write replaced the damaged page
                # (e.g. the manifest's). Conservative, not a disagreement at decision time.
                outcome = "quarantined" if not verdict.is_clean() else "quarantined_damage_rewritten_by_seal"
            else:
                verdict = verify_in_worker(path, ns.timeout)
                view = view_in_worker(path, ns.timeout)
                if not verdict.is_clean():
                    outcome = "sealed_but_verify_disagrees"
                    failures.append({"crashed_trial": trial, "offset": offset, "mask": mask, "lines": verdict.lines()[:3]})
                elif view == reference:
                    outcome = "recovered_intact"
                elif "error" not in view and page_kind(data, offset) == "meta":
                    outcome = "running_rollback"  # the older meta page made current: one commit undone
                else:
                    outcome = "undetected"
                    failures.append({"crashed_trial": trial, "offset": offset, "mask": mask, "page": page_kind(data, offset), "view": view,
                                     "status": str(read_manifest(path).status)})
        except Exception as exc:  # noqa: BLE001 - the boot must never raise on a damaged predecessor
            outcome = "parent_error"
            failures.append({"crashed_trial": trial, "offset": offset, "mask": mask, "error": repr(exc)})
        counts["crashed_" + outcome] += 1
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--view"]:
        print(json.dumps(typed_reader_view(args[1])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--entries", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--crashed", type=int, default=0, help="trials on a crashed file followed by a boot")
    ns = parser.parse_args(args)
    logging.getLogger("nes").setLevel(logging.ERROR)  # each quarantine is logged; the summary counts them
    rng = random.Random(ns.seed)
    workdir = Path(tempfile.mkdtemp(prefix="nes-fuzz-verify-"))
    counts: Counter[str] = Counter()
    failures: list[dict[str, object]] = []
    started = time.perf_counter()
    try:
        file_bytes = sealed_trials(ns, rng, workdir, counts, failures)
        if ns.crashed:
            crashed_trials(ns, rng, workdir, counts, failures)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    undetected = counts["undetected"] + counts["crashed_undetected"] + counts["crashed_sealed_but_verify_disagrees"]
    parent_errors = counts["parent_error"] + counts["crashed_parent_error"]
    summary = {
        "trials": ns.trials,
        "crashed_trials": ns.crashed,
        "seed": ns.seed,
        "file_bytes": file_bytes,
        "detected": counts["detected"],
        "invisible": counts["invisible"],
        "undetected": undetected,
        "parent_errors": parent_errors,
        "worker_failure": counts["worker_failure"],
        "reader_crashes": counts["reader_crash"],
        "running_rollbacks": counts["crashed_running_rollback"],
        "details": {k: v for k, v in sorted(counts.items()) if k not in ("detected", "invisible", "undetected", "parent_error")},
        "failures": failures[:10],
        "elapsed_s": round(time.perf_counter() - started, 2),
        "ok": undetected == 0 and parent_errors == 0 and not failures,
    }
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
