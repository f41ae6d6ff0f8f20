"""The per-run manifest and the run-status state machine.

Contract: a run is `Running` from open until exactly one seal moves it to a terminal status
(`Ended`, `CrashedRecovered`, `Quarantined`); terminal statuses are final. The allowed moves are
the table `RUN_STATUS_TRANSITIONS`; nothing else changes a status. The manifest is stored as
msgspec MessagePack under `manifest/current`; `end_ts_init` is None until seal and round-trips
as None, never as 0.
"""

from __future__ import annotations

import enum

import msgspec

from nes.errors import Backend, Closed

__all__ = [
    "RunStatus",
    "RUN_STATUS_TRANSITIONS",
    "check_seal_transition",
    "RegisteredComponents",
    "RunManifest",
    "encode_manifest",
    "decode_manifest",
]


class RunStatus(enum.Enum):
    """A run's lifecycle status: Running until sealed Ended, CrashedRecovered or Quarantined."""

    Running = "Running"
    Ended = "Ended"
    CrashedRecovered = "CrashedRecovered"
    Quarantined = "Quarantined"

    def is_terminal(self) -> bool:
        """True for every status but Running."""
        return self is not RunStatus.Running

    def __str__(self) -> str:
        return self.value


# from -> the statuses a seal may move it to. Open always (re)starts at Running.
RUN_STATUS_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.Running: frozenset({RunStatus.Ended, RunStatus.CrashedRecovered, RunStatus.Quarantined}),
    RunStatus.Ended: frozenset(),
    RunStatus.CrashedRecovered: frozenset(),
    RunStatus.Quarantined: frozenset(),
}


def check_seal_transition(current: RunStatus, target: RunStatus) -> None:
    """Raise the crate's error for a seal from `current` to `target`, or return if allowed.

    The order of checks is the crate's: a non-terminal target is refused (Backend) before an
    already-sealed run is (Closed).
    """
    if not target.is_terminal():
        raise Backend(f"seal status must be a terminal state, was {target}")
    if target not in RUN_STATUS_TRANSITIONS[current]:
        raise Closed()


class RegisteredComponents(msgspec.Struct, frozen=True):
    """What the trader had registered when the run started (captured in RunStarted)."""

    actors: dict[str, str] = {}
    strategies: dict[str, str] = {}
    algorithms: dict[str, str] = {}
    subscriptions: list[str] = []
    endpoints: list[str] = []


class RunManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The per-run metadata stored in a run file: identity, parent, status, high-watermark."""

    run_id: str
    instance_id: str
    start_ts_init: int
    parent_run_id: str | None = None
    binary_hash: str = ""
    schema_version: int = 1
    crate_versions: str = ""
    feature_flags: list[str] = []
    adapter_versions: dict[str, str] = {}
    config_hash: str = ""
    registered_components: RegisteredComponents = RegisteredComponents()
    seed: int | None = None
    end_ts_init: int | None = None
    high_watermark: int = 0
    status: RunStatus = RunStatus.Running

    def is_sealed(self) -> bool:
        """True once the run has a terminal status."""
        return self.status.is_terminal()


_manifest_encoder = msgspec.msgpack.Encoder()
_manifest_decoder = msgspec.msgpack.Decoder(RunManifest)


def encode_manifest(manifest: RunManifest) -> bytes:
    return _manifest_encoder.encode(manifest)


def decode_manifest(raw: bytes) -> RunManifest:
    """Raises msgspec.DecodeError / ValidationError; storage wraps it in Corrupted."""
    return _manifest_decoder.decode(raw)
