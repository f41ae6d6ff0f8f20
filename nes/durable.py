"""The exact durable high-watermark of a run file whose writer is gone.

Contract: the writer publishes its durable high-watermark in the ring header only after a
commit returned, so a writer killed between a commit and that store leaves the ring's value
behind the disk (a lower bound). Once the writer process has exited, the run file holds the
exact value: the largest well-formed entry key of its last committed transaction.
`durable_high_watermark_in_worker` reads it in a `workers.hwm` child (a damaged file can crash
only that child) and returns None if the worker fails; `read_durable_high_watermark` is what
the worker runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
import msgspec

from nes.backend import layout
from nes.backend.lmdb import last_entry_seq
from nes.isolation import WorkerCrash, run_json_worker

__all__ = ["DurableHighWatermark", "read_durable_high_watermark", "durable_high_watermark_in_worker"]


class DurableHighWatermark(msgspec.Struct, frozen=True):
    """The worker's report."""

    high_watermark: int


def read_durable_high_watermark(path: str | os.PathLike[str]) -> int:
    """The largest 8-byte entry key in the run file (0 if it has no entries). Opens the file
    read-only, without LMDB's lock file: call it only once no writer has the file open, or in a
    worker (it maps the file)."""
    env = layout.open_read_only(Path(path))
    try:
        with env.begin() as txn:
            entries = env.open_db(layout.DB_ENTRIES, txn=txn, create=False)
            return last_entry_seq(txn.cursor(db=entries))
    finally:
        env.close()


def durable_high_watermark_in_worker(path: str | os.PathLike[str], timeout_s: float) -> int | None:
    """`read_durable_high_watermark` in a `workers.hwm` child; None if it gave no answer."""
    try:
        return run_json_worker("workers.hwm", [str(path)], timeout_s, DurableHighWatermark).high_watermark
    except WorkerCrash:
        return None


def main_report(path: str) -> bytes:
    """The worker's output line (raises on a file it cannot read)."""
    try:
        value = read_durable_high_watermark(path)
    except lmdb.Error as exc:
        raise OSError(f"cannot read {path}: {exc}") from exc
    return msgspec.json.encode(DurableHighWatermark(value))
