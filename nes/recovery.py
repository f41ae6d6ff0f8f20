"""Boot recovery rules: how a `Running` predecessor is sealed, and which run becomes the parent.

Contract (pure: values in, values out; no files, no processes; the kernel does the I/O):
- `decide_recovery_status(scan)` seals a predecessor by its durable tail, first matching rule
  wins (`RECOVERY_RULES`): any damage -> Quarantined; no entries -> CrashedRecovered; last
  entry is RunEnded -> Ended; anything else -> CrashedRecovered.
- `choose_parent(runs, replay_from_run_id)`: a configured replay source must exist, be sealed
  and not be Quarantined (ValueError otherwise) and wins; without one, the parent is the newest
  run (by start_ts_init) that this sweep sealed CrashedRecovered, or None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from nes.manifest import RunStatus
from nes.writer import RUN_ENDED_TOPIC, RUN_ENDED_TYPE

__all__ = [
    "RUN_STARTED_TOPIC",
    "RUN_STARTED_TYPE",
    "RUN_ENDED_TOPIC",
    "RUN_ENDED_TYPE",
    "TailScan",
    "RECOVERY_RULES",
    "decide_recovery_status",
    "decide_recovery",
    "RecoveredRun",
    "RecoveryOutcome",
    "ParentCandidate",
    "choose_parent",
]

# The crate's lifecycle topics. Files written before nes 0.1.0 carry RunStarted under
# "event_store.run_started"; nothing reads that topic back (recovery only looks for RunEnded).
RUN_STARTED_TOPIC = "run.lifecycle.RunStarted"
RUN_STARTED_TYPE = "RunStarted"


class TailScan(msgspec.Struct, frozen=True):
    """What a read-only scan of a run file's durable tail found."""

    high_watermark: int  # key of the last entry on disk; 0 if there is none
    entries_scanned: int
    damaged: bool  # hash mismatch, gap, key/seq mismatch, undecodable value, structural damage
    last_topic: str | None
    last_payload_type: str | None
    detail: str = ""

    def ends_with_run_ended(self) -> bool:
        return self.last_topic == RUN_ENDED_TOPIC and self.last_payload_type == RUN_ENDED_TYPE


# (why, predicate, status): evaluated in order, the first match decides.
RECOVERY_RULES: tuple[tuple[str, Callable[[TailScan], bool], RunStatus], ...] = (
    ("damaged tail", lambda scan: scan.damaged, RunStatus.Quarantined),
    ("no durable entries", lambda scan: scan.high_watermark == 0, RunStatus.CrashedRecovered),
    ("tail ends with RunEnded", TailScan.ends_with_run_ended, RunStatus.Ended),
    ("clean tail without RunEnded", lambda scan: True, RunStatus.CrashedRecovered),
)


def decide_recovery_status(scan: TailScan) -> RunStatus:
    """The terminal status a Running predecessor is sealed with, given its durable tail."""
    return decide_recovery(scan)[1]


def decide_recovery(scan: TailScan) -> tuple[str, RunStatus]:
    """The first matching rule of `RECOVERY_RULES`: (why, status)."""
    for why, matches, status in RECOVERY_RULES:
        if matches(scan):
            return why, status
    raise AssertionError("RECOVERY_RULES ends with a catch-all")  # pragma: no cover


class RecoveredRun(msgspec.Struct, frozen=True):
    """A predecessor this sweep sealed."""

    run_id: str
    status: RunStatus
    high_watermark: int


class RecoveryOutcome(msgspec.Struct, frozen=True):
    """What a boot's recovery sweep did: the runs it sealed, and the new run's parent."""

    recovered: list[RecoveredRun]
    parent_run_id: str | None


# (run_id, start_ts_init, status, recovered_now): recovered_now = this sweep sealed it.
ParentCandidate = tuple[str, int, RunStatus, bool]


def choose_parent(runs: Sequence[ParentCandidate], replay_from_run_id: str | None) -> str | None:
    """The new run's parent_run_id (see the module contract)."""
    if replay_from_run_id is not None:
        status = next((status for run_id, _, status, _ in runs if run_id == replay_from_run_id), None)
        if status is None:
            raise ValueError(f"replay_from_run_id {replay_from_run_id} not found")
        if status is RunStatus.Quarantined:
            raise ValueError(f"replay_from_run_id {replay_from_run_id} is Quarantined")
        if status is RunStatus.Running:
            raise ValueError(f"replay_from_run_id {replay_from_run_id} is Running (not sealed)")
        return replay_from_run_id
    crashed = [
        (start_ts_init, run_id)
        for run_id, start_ts_init, status, recovered_now in runs
        if recovered_now and status is RunStatus.CrashedRecovered
    ]
    return max(crashed)[1] if crashed else None
