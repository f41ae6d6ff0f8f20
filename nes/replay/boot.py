"""Restore at boot: the kernel's hook that rebuilds the parent run's cache before a new run opens.

Contract: with `EventStoreLifecycleOptions(restore_cache=target)`, boot restores `target` from
the new run's parent (`replay_from_run_id` when configured, else the newest predecessor the
recovery sweep just sealed CrashedRecovered) after the recovery sweep and the replay-source
preflight, and before the run file, the ring or the writer process exist. A restore failure
raises `CacheRestoreAtBootError` (a `BootError` and a `CacheReplayError`), so the boot stops
with nothing opened. Without a parent there is nothing to restore (no report).
"""

from __future__ import annotations

import os

from nes.kernel import BootError
from nes.replay.errors import CacheReplayError
from nes.replay.restore import CacheReplayTarget, EventStoreReplayReport, restore_cache_from_sealed_run

__all__ = ["CacheRestoreAtBootError", "restore_parent_cache"]


class CacheRestoreAtBootError(CacheReplayError, BootError):
    """Boot refused: the parent run's cache could not be restored; no run was opened."""

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(run_id, message)
        self.run_id, self.message = run_id, message

    def __str__(self) -> str:
        return f"restore cache from parent run {self.run_id}: {self.message}"


def restore_parent_cache(
    target: CacheReplayTarget | None,
    base_dir: str | os.PathLike[str],
    instance_id: str,
    parent_run_id: str | None,
) -> EventStoreReplayReport | None:
    """Restore `target` from the parent run (None when there is no target or no parent)."""
    if target is None or parent_run_id is None:
        return None
    try:
        return restore_cache_from_sealed_run(target, base_dir, instance_id, parent_run_id)
    except Exception as exc:  # noqa: BLE001 - every failure refuses the boot, typed
        raise CacheRestoreAtBootError(parent_run_id, f"{type(exc).__name__}: {exc}") from exc
