"""Snapshot + tail restore, engine-neutral: rebuild a cache from a sealed run.

Contract:
- Source: a SEALED run file, never a Running one (recover it first) nor a Quarantined one
  (failed integrity): `open_event_store_replay_source` refuses both with `Backend`.
- Snapshot: with a snapshot anchor, its blob is loaded through the blob store (missing ->
  `SnapshotRestore("snapshot blob not found")`), its content hash must equal the anchor's
  (`SnapshotHashMismatch`, a `SnapshotRestore`), and only then does the target restore it. The
  cache owns the snapshot's format; the store keeps only the anchor.
- Tail: every entry with `anchor.high_watermark < seq <= durable high-watermark` (all of
  them without an anchor) is handed to the target in seq order, exactly once; `ts_init` never
  reorders. An entry below the first seq to apply is `UnexpectedSeq` (a backend that breaks
  its scan contract), never silently applied. The target says per entry whether a replay
  rule applied it (counted `applied`) or it has none (counted `ignored`).
- Failures of the target come back typed: a restore failure as `SnapshotRestore`, an apply
  failure as `ReplayApplyError` unless the target raised a `CacheReplayError` itself.
- Replay only mutates the target: it publishes nothing, submits nothing, touches no venue.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec

from nes.backend import layout
from nes.entry import EventStoreEntry
from nes.errors import Backend
from nes.manifest import RunManifest, RunStatus
from nes.reader import EventStoreReader, SnapshotReplayPlan
from nes.replay.blobs import SnapshotBlobStore
from nes.replay.errors import (
    CacheReplayError,
    ReplayApplyError,
    SnapshotHashMismatch,
    SnapshotRestore,
    UnexpectedSeq,
)
from nes.snapshot import SnapshotAnchor, compute_snapshot_content_hash

__all__ = [
    "CacheReplayReport",
    "CacheReplayTarget",
    "EventStoreReplayReport",
    "ReplayReport",
    "open_event_store_replay_source",
    "restore_cache_from_sealed_run",
    "restore_cache_snapshot_and_replay_tail",
    "restore_snapshot_and_replay_tail",
    "validate_event_store_replay_source",
]


@runtime_checkable
class CacheReplayTarget(Protocol):
    """A cache that replay can rebuild (the NautilusTrader one is
    `nes.integrations.nautilus.replay.NautilusCacheReplay`)."""

    def restore_snapshot(self, blob: bytes) -> None:
        """Replace the cache's state with the snapshot `blob` (already hash-checked)."""
        ...

    def apply_entry(self, entry: EventStoreEntry) -> bool:
        """Apply one captured entry by its payload type's replay rule: True when a rule
        applied it, False when its type has no rule (ignored)."""
        ...


class CacheReplayReport(msgspec.Struct, frozen=True):
    """What a snapshot + tail replay did: its bounds, and how many tail entries a replay rule
    applied or no rule covered (the crate's `applied_entries` / `ignored_entries`)."""

    plan: SnapshotReplayPlan
    applied: int
    ignored: int


class EventStoreReplayReport(msgspec.Struct, frozen=True):
    """A restore from a sealed run: the source's manifest and the replay report."""

    manifest: RunManifest
    cache: CacheReplayReport


class ReplayReport(msgspec.Struct, frozen=True):
    """The callback API's report (`restore_snapshot_and_replay_tail`)."""

    anchor: SnapshotAnchor | None
    from_seq: int
    to_seq: int
    applied: int
    ignored: int


def _load_checked_blob(anchor: SnapshotAnchor, load_blob: Callable[[str], bytes | None]) -> bytes:
    try:
        blob = load_blob(anchor.blob_ref)
    except CacheReplayError:
        raise
    except FileNotFoundError:
        blob = None
    except Exception as exc:  # noqa: BLE001 - a store failure is a restore failure, typed
        raise SnapshotRestore(anchor.blob_ref, str(exc)) from exc
    if blob is None:
        raise SnapshotRestore(anchor.blob_ref, "snapshot blob not found")
    actual = compute_snapshot_content_hash(blob)
    if actual != anchor.content_hash:
        raise SnapshotHashMismatch(anchor.blob_ref, anchor.content_hash, actual)
    return blob


def _replay_tail(
    reader: EventStoreReader[Any],
    load_blob: Callable[[str], bytes | None],
    restore: Callable[[bytes], None],
    apply: Callable[[EventStoreEntry], bool],
) -> CacheReplayReport:
    tail = reader.scan_snapshot_replay_tail()
    plan = tail.plan
    if plan.anchor is not None:
        blob = _load_checked_blob(plan.anchor, load_blob)
        try:
            restore(blob)
        except SnapshotRestore as exc:
            raise SnapshotRestore(plan.anchor.blob_ref, exc.message) from exc  # name the anchor's blob
        except CacheReplayError:
            raise
        except Exception as exc:  # noqa: BLE001 - the target's failure, typed
            raise SnapshotRestore(plan.anchor.blob_ref, f"{type(exc).__name__}: {exc}") from exc
    applied = ignored = 0
    from_seq = plan.from_seq
    for entry in tail:
        if entry.seq < from_seq:
            raise UnexpectedSeq(entry.seq, from_seq)
        try:
            changed = apply(entry)
        except CacheReplayError:
            raise
        except Exception as exc:  # noqa: BLE001 - the target's failure, typed
            raise ReplayApplyError(entry.seq, entry.payload_type, f"{type(exc).__name__}: {exc}") from exc
        if changed:
            applied += 1
        else:
            ignored += 1
    return CacheReplayReport(plan, applied, ignored)


def restore_cache_snapshot_and_replay_tail(
    target: CacheReplayTarget, reader: EventStoreReader[Any], store: SnapshotBlobStore
) -> CacheReplayReport:
    """Restore `target` from the reader's latest snapshot anchor (blob from `store`), then
    apply the tail after it in seq order (see the module contract)."""
    return _replay_tail(reader, store.get, target.restore_snapshot, target.apply_entry)


def restore_snapshot_and_replay_tail(
    reader: EventStoreReader[Any],
    load_blob: Callable[[str], bytes | None],
    restore: Callable[[bytes], None],
    apply: Callable[[EventStoreEntry], bool],
) -> ReplayReport:
    """The callback form: `load_blob(blob_ref)` fetches the anchor's blob (None or
    FileNotFoundError: not found), `restore(blob)` installs it after the hash check,
    `apply(entry)` applies one tail entry (True) or ignores it (False)."""
    report = _replay_tail(reader, load_blob, restore, apply)
    plan = report.plan
    return ReplayReport(plan.anchor, plan.from_seq, plan.to_seq, report.applied, report.ignored)


def open_event_store_replay_source(path: str | os.PathLike[str]) -> EventStoreReader[Any]:
    """A reader over a sealed run file. Running runs (not yet recovered) and Quarantined runs
    (failed integrity) are refused with `Backend`; a missing file is `Backend`."""
    from nes.backend.lmdb import LmdbBackend

    backend = LmdbBackend.open_sealed_file(path)
    manifest = backend.manifest()
    if manifest.status is RunStatus.Quarantined:
        backend.close()
        raise Backend(f"replay source {manifest.run_id} is quarantined")
    return EventStoreReader(backend)


def validate_event_store_replay_source(path: str | os.PathLike[str]) -> RunManifest:
    """The manifest of a usable replay source (sealed, not Quarantined); raises like
    `open_event_store_replay_source`."""
    reader = open_event_store_replay_source(path)
    try:
        return reader.manifest()
    finally:
        reader.close()


def restore_cache_from_sealed_run(
    target: CacheReplayTarget,
    base_dir: str | os.PathLike[str],
    instance_id: str,
    run_id: str,
    store: SnapshotBlobStore | None = None,
) -> EventStoreReplayReport:
    """Restore `target` from `<base_dir>/<instance_id>/<run_id>.lmdb` and its blob store
    (`<base_dir>/<instance_id>/snapshots/` unless `store` is given)."""
    path = layout.run_file_path(Path(base_dir), instance_id, run_id)
    blob_store = store or SnapshotBlobStore.for_instance(base_dir, instance_id)
    reader = open_event_store_replay_source(path)
    try:
        manifest = reader.manifest()
        report = restore_cache_snapshot_and_replay_tail(target, reader, blob_store)
    finally:
        reader.close()
    return EventStoreReplayReport(manifest, report)
