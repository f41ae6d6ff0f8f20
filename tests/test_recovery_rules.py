"""nes.recovery: the pure boot-recovery rules (tail -> status, parent choice). No files."""

from __future__ import annotations

import pytest

from nes.manifest import RunStatus
from nes.recovery import (
    RUN_ENDED_TOPIC,
    RUN_ENDED_TYPE,
    RUN_STARTED_TOPIC,
    RUN_STARTED_TYPE,
    RecoveredRun,
    RecoveryOutcome,
    TailScan,
    choose_parent,
    decide_recovery_status,
)
from nes import writer

Ended, Crashed, Quarantined, Running = (
    RunStatus.Ended,
    RunStatus.CrashedRecovered,
    RunStatus.Quarantined,
    RunStatus.Running,
)


def scan(
    high_watermark: int,
    *,
    damaged: bool = False,
    topic: str | None = "orders.submitted",
    payload_type: str | None = "SubmitOrder",
) -> TailScan:
    if high_watermark == 0:
        topic = payload_type = None
    return TailScan(high_watermark, high_watermark, damaged, topic, payload_type)


def test_run_ended_constants_are_the_writers() -> None:
    assert (RUN_ENDED_TOPIC, RUN_ENDED_TYPE) == (writer.RUN_ENDED_TOPIC, writer.RUN_ENDED_TYPE)
    assert (RUN_STARTED_TOPIC, RUN_STARTED_TYPE) == ("run.lifecycle.RunStarted", "RunStarted")


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        pytest.param(scan(0), Crashed, id="empty_run_is_crashed_recovered"),
        pytest.param(scan(5, topic=RUN_ENDED_TOPIC, payload_type=RUN_ENDED_TYPE), Ended, id="run_ended_tail_is_ended"),
        pytest.param(scan(5), Crashed, id="clean_tail_without_run_ended_is_crashed_recovered"),
        pytest.param(
            scan(1, topic=RUN_STARTED_TOPIC, payload_type=RUN_STARTED_TYPE), Crashed, id="only_run_started_is_crashed"
        ),
        pytest.param(scan(5, damaged=True), Quarantined, id="damaged_tail_is_quarantined"),
        pytest.param(
            scan(5, damaged=True, topic=RUN_ENDED_TOPIC, payload_type=RUN_ENDED_TYPE),
            Quarantined,
            id="damage_wins_over_run_ended",
        ),
        pytest.param(scan(0, damaged=True), Quarantined, id="damage_wins_over_empty"),
        pytest.param(
            scan(5, topic=RUN_ENDED_TOPIC, payload_type="Other"), Crashed, id="run_ended_topic_needs_run_ended_type"
        ),
        pytest.param(
            scan(5, topic="other.topic", payload_type=RUN_ENDED_TYPE), Crashed, id="run_ended_type_needs_run_ended_topic"
        ),
    ],
)
def test_recovery_decision_matrix(tail: TailScan, expected: RunStatus) -> None:
    assert decide_recovery_status(tail) is expected


def test_recovery_never_leaves_a_run_running() -> None:
    for damaged in (False, True):
        for hwm in (0, 1, 9):
            for topic in (None, RUN_ENDED_TOPIC, "x.y"):
                status = decide_recovery_status(TailScan(hwm, hwm, damaged, topic, RUN_ENDED_TYPE))
                assert status.is_terminal()


def test_recovery_outcome_structs_hold_values() -> None:
    outcome = RecoveryOutcome([RecoveredRun("1-aaaaaaaa", Crashed, 3)], "1-aaaaaaaa")
    assert outcome.recovered[0].high_watermark == 3
    assert outcome.parent_run_id == "1-aaaaaaaa"


# ---- choose_parent ---------------------------------------------------------------------------
def test_recover_picks_most_recent_crashed_recovered_as_parent() -> None:
    runs = [
        ("30-cccccccc", 30, Crashed, True),
        ("10-aaaaaaaa", 10, Crashed, True),
        ("20-bbbbbbbb", 20, Crashed, True),
    ]
    assert choose_parent(runs, None) == "30-cccccccc"


def test_parent_ignores_runs_not_recovered_in_this_sweep() -> None:
    runs = [
        ("10-aaaaaaaa", 10, Crashed, True),
        ("20-bbbbbbbb", 20, Crashed, False),  # sealed by an earlier boot
    ]
    assert choose_parent(runs, None) == "10-aaaaaaaa"


@pytest.mark.parametrize("status", [Ended, Quarantined])
def test_only_crashed_recovered_runs_become_parent(status: RunStatus) -> None:
    assert choose_parent([("10-aaaaaaaa", 10, status, True)], None) is None
    runs = [("10-aaaaaaaa", 10, Crashed, True), ("20-bbbbbbbb", 20, status, True)]
    assert choose_parent(runs, None) == "10-aaaaaaaa"


def test_no_runs_means_no_parent() -> None:
    assert choose_parent([], None) is None


@pytest.mark.parametrize("status", [Ended, Crashed])
def test_configured_replay_overrides_recovered_parent(status: RunStatus) -> None:
    runs = [("10-aaaaaaaa", 10, status, False), ("20-bbbbbbbb", 20, Crashed, True)]
    assert choose_parent(runs, "10-aaaaaaaa") == "10-aaaaaaaa"


def test_missing_configured_replay_run_is_refused() -> None:
    with pytest.raises(ValueError, match="replay_from_run_id 99-ffffffff not found"):
        choose_parent([("10-aaaaaaaa", 10, Crashed, True)], "99-ffffffff")


def test_quarantined_configured_replay_run_is_refused() -> None:
    with pytest.raises(ValueError, match="replay_from_run_id 10-aaaaaaaa is Quarantined"):
        choose_parent([("10-aaaaaaaa", 10, Quarantined, True)], "10-aaaaaaaa")


def test_running_configured_replay_run_is_refused() -> None:
    with pytest.raises(ValueError, match="replay_from_run_id 10-aaaaaaaa is Running"):
        choose_parent([("10-aaaaaaaa", 10, Running, False)], "10-aaaaaaaa")
