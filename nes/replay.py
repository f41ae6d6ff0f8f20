"""Snapshot + tail replay: rebuild state from a cache snapshot and the entries after it.

Contract: replay reads a SEALED, non-Quarantined run (or a live reader) through
`EventStoreReader`. If the run has a snapshot anchor, the snapshot blob is loaded through the
caller's `load_blob(blob_ref)` and must hash to the anchor's `content_hash`
(`compute_snapshot_content_hash`) before it is restored; then every entry with
`anchor.high_watermark < seq <= durable high-watermark` is applied in seq order, exactly once.
Without an anchor, replay starts at seq 1. Entries at or below the anchor are never applied.
The caller's `apply(entry) -> bool` says whether the entry changed state (True) or was ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

from nes.entry import EventStoreEntry
from nes.errors import Backend, Corrupted
from nes.manifest import RunStatus
from nes.reader import EventStoreReader
from nes.snapshot import SnapshotAnchor, compute_snapshot_content_hash

__all__ = [
    "ReplayReport",
    "SnapshotHashMismatch",
    "restore_snapshot_and_replay_tail",
    "open_event_store_replay_source",
]


class SnapshotHashMismatch(Corrupted):
    """The snapshot blob is not the one the anchor names: a `Corrupted` restore source."""

    def __init__(self, blob_ref: str, expected: str, actual: str) -> None:
        super().__init__(f"snapshot {blob_ref} content hash {actual} does not match anchor {expected}")
        self.blob_ref, self.expected, self.actual = blob_ref, expected, actual


class ReplayReport(msgspec.Struct, frozen=True):
    """What `restore_snapshot_and_replay_tail` did: anchor used, seq range replayed, applied/ignored counts."""

    anchor: SnapshotAnchor | None
    from_seq: int
    to_seq: int
    applied: int
    ignored: int


def restore_snapshot_and_replay_tail(
    reader: EventStoreReader,
    load_blob: Callable[[str], bytes],
    restore: Callable[[bytes], None],
    apply: Callable[[EventStoreEntry], bool],
) -> ReplayReport:
    """Rebuild state from a run: restore the latest snapshot (its blob's hash is checked against
    the anchor, SnapshotHashMismatch otherwise), then apply every entry after it in seq order;
    `apply` returns False for the entries it ignores."""
    plan = reader.snapshot_replay_plan()
    if plan.anchor is not None:
        blob = load_blob(plan.anchor.blob_ref)
        actual = compute_snapshot_content_hash(blob)
        if actual != plan.anchor.content_hash:
            raise SnapshotHashMismatch(plan.anchor.blob_ref, plan.anchor.content_hash, actual)
        restore(blob)
    applied = ignored = 0
    for entry in reader.scan_range(plan.from_seq, plan.to_seq):
        if apply(entry):
            applied += 1
        else:
            ignored += 1
    return ReplayReport(plan.anchor, plan.from_seq, plan.to_seq, applied, ignored)


def open_event_store_replay_source(path: str | Path) -> EventStoreReader:
    """A reader over a sealed run file; Running runs (not yet recovered) and Quarantined runs
    (failed integrity) are refused."""
    from nes.backend.lmdb import LmdbBackend

    backend = LmdbBackend.open_sealed_file(path)
    status = backend.manifest().status
    if status is RunStatus.Quarantined:
        backend.close()
        raise Backend(f"run file at {path} is Quarantined and cannot be a replay source")
    return EventStoreReader(backend)
