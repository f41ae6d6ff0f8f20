"""`nes tail`: the last entries of a run, and following a live run as its writer commits.

Contract:
- `last_entries(run_file, n)`: the last `n` committed entries, in seq order.
- `follow(...)`: yields every entry after `after_seq` as it becomes durable, forever (until the
  caller stops iterating or `stop()` returns True). Each poll is one short read-only
  transaction on a lockless handle (`RunFile`): the follower never registers with, locks or
  writes to the writer's file, so it cannot stall the writer. Polls run every `poll_s`
  (default 10 ms, so an entry shows well within 100 ms of its commit); a poll that finds new
  entries reads them in chunks and polls again at once.
- When the followed run is sealed and every entry up to its sealed high-watermark was yielded,
  the follower moves to the next run file of the same instance (the next name in start-time
  order), waiting for it to appear, and yields a `RunSwitch` first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from nes.backend import layout
from nes.entry import EventStoreEntry
from nes.ops.runfile import DEFAULT_CHUNK, RunFile, RunFileError

__all__ = ["RunSwitch", "last_entries", "follow", "newest_run_file", "next_run_file", "DEFAULT_POLL_S"]

DEFAULT_POLL_S = 0.01


class RunSwitch:
    """The follower left a sealed run (`sealed_run_id`, `status`) for `path`."""

    __slots__ = ("sealed_run_id", "status", "path")

    def __init__(self, sealed_run_id: str, status: str, path: Path) -> None:
        self.sealed_run_id = sealed_run_id
        self.status = status
        self.path = path

    def __repr__(self) -> str:
        return f"RunSwitch(sealed_run_id={self.sealed_run_id!r}, status={self.status!r}, path={str(self.path)!r})"


def last_entries(run_file: RunFile, n: int) -> list[EventStoreEntry]:
    """The last `n` committed entries (fewer if the run is shorter), in seq order."""
    if n < 0:
        raise ValueError(f"the number of entries must be >= 0, got {n}")
    high_watermark = run_file.high_watermark()
    if n == 0 or high_watermark == 0:
        return []
    return run_file.read(max(1, high_watermark - n + 1), high_watermark)


def newest_run_file(base_dir: str | Path, instance_id: str) -> Path:
    """The instance's newest run file (by name = start time). Raises RunFileError if none."""
    files = layout.list_run_files(base_dir, instance_id)
    if not files:
        raise RunFileError(f"{layout.instance_dir(base_dir, instance_id)}: instance has no run files")
    return files[-1]


def next_run_file(current: Path) -> Path | None:
    """The run file of the same instance that sorts right after `current`, if any."""
    later = [
        p for p in current.parent.iterdir()
        if p.name.endswith(layout.RUN_FILE_SUFFIX) and not p.name.endswith(layout.MARKER_FILE_SUFFIX)
        and p.name > current.name and p.is_file()
    ]
    return min(later, default=None)


def _open_when_ready(path: Path, stop: Callable[[], bool], poll_s: float, isolated: bool) -> RunFile | None:
    """Open a run file its writer may still be creating (empty, no manifest yet)."""
    while not stop():
        try:
            return RunFile(path, isolated=isolated)
        except RunFileError:
            time.sleep(poll_s)
    return None


def follow(
    path: Path, after_seq: int = 0, *, poll_s: float = DEFAULT_POLL_S, stop: Callable[[], bool] = lambda: False,
    chunk: int = DEFAULT_CHUNK, next_runs: bool = True, isolated: bool = False,
) -> Iterator[EventStoreEntry | RunSwitch]:
    """Follow `path` from `after_seq` (see the module contract); `isolated` as `RunFile`'s."""
    run_file: RunFile | None = RunFile(path, isolated=isolated)
    last = after_seq
    try:
        while not stop():
            assert run_file is not None
            high_watermark = run_file.high_watermark()
            if high_watermark > last:
                for entry in run_file.read(last + 1, min(high_watermark, last + chunk)):
                    last = entry.seq
                    yield entry
                continue
            manifest = run_file.manifest()
            if manifest.is_sealed() and next_runs:
                if run_file.high_watermark() > last:
                    continue  # committed before the seal: drain first
                successor = next_run_file(run_file.path)
                if successor is not None:
                    run_file.close()
                    yield RunSwitch(manifest.run_id, str(manifest.status), successor)
                    run_file = _open_when_ready(successor, stop, poll_s, isolated)
                    if run_file is None:
                        return
                    last = 0
                    continue
            time.sleep(poll_s)
    finally:
        if run_file is not None:
            run_file.close()
