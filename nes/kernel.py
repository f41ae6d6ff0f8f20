"""Run lifecycle: the supervisor's boot sequence, the open session, and close.

Contract (boot, in this order; nothing is opened if an earlier step fails):
1. Recovery sweep over `<base>/<instance_id>/*.lmdb`, in worker processes: every `Running`
   predecessor is scanned read-only and sealed by its durable tail (`nes.recovery`'s pure rule:
   damage -> Quarantined, empty -> CrashedRecovered, tail RunEnded -> Ended, else
   CrashedRecovered). A file that cannot be opened, or that crashes or hangs its worker, is
   skipped with a logged error and retried next boot: one bad file never blocks a boot.
2. The parent run: the newest run recovered as CrashedRecovered, unless `replay_from_run_id`
   names a sealed, non-Quarantined run that verifies clean in a verifier worker (a missing,
   Quarantined or corrupt one refuses the boot).
3. Open the new run (Running, parent link), start the writer sidecar, submit `RunStarted`
   (payload: the registered components) and wait until it is durable
   (`RunStartedTimeout` otherwise, `RunStartedHalted` if the writer halts meanwhile).
Close appends `RunEnded` and seals `Ended`. A halted session is not sealed (the next boot's
sweep owns it). Opening again in the same lifecycle closes the current session first; a halt
belongs to the session (run) it happened in.
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from nes.backend import layout
from nes.backend.lmdb import LmdbBackend, read_manifest
from nes.config import EventStoreConfig
from nes.errors import CrashedPredecessor, EventStoreError, InvalidArgument, check_timeout_s
from nes.halt import HaltCallback, HaltReason, noop_halt
from nes.ids import build_run_id, validate_path_id
from nes.isolation import worker_env
from nes.manifest import RegisteredComponents, RunManifest, RunStatus
from nes.recovery import (
    RUN_STARTED_TOPIC,
    RUN_STARTED_TYPE,
    RecoveredRun,
    RecoveryOutcome,
    choose_parent,
    decide_recovery,
)
from nes.snapshot import SnapshotAnchor
from nes.writer import EntryDraft, EventStoreWriter, SubmitError, WriterHalted

__all__ = [
    "BootError",
    "RunStartedTimeout",
    "RunStartedHalted",
    "ReplaySourceError",
    "RunFileState",
    "EventStoreLifecycleOptions",
    "EventStoreLifecycle",
    "EventStoreSession",
    "open_run",
    "recover_predecessors",
    "recover_run_file",
    "sweep_run_files",
]

log = logging.getLogger("nes.kernel")


ABANDON_HUNG_WRITER_S = 1.0

# ---- errors -----------------------------------------------------------------------------------
class BootError(EventStoreError):
    """The boot sequence could not open a new run; nothing was opened."""


class RunStartedTimeout(BootError):
    """RunStarted was not durable within `run_started_timeout_s`."""


class RunStartedHalted(BootError):
    """The writer halted before RunStarted was durable."""


class ReplaySourceError(BootError):
    """`replay_from_run_id` names no usable run, or that run fails verification."""


# ---- recovery sweep -----------------------------------------------------------------------------
class RunFileState(msgspec.Struct, frozen=True):
    """One run file as the sweep left it (sent from the recovery worker as JSON)."""

    file: str
    run_id: str | None = None
    start_ts_init: int = 0
    status: RunStatus | None = None
    recovered: bool = False  # it was Running and the sweep sealed it
    high_watermark: int = 0
    error: str | None = None
    rule: str = ""  # the recovery rule that decided `status` (when `recovered`)


def recover_run_file(base_dir: str | os.PathLike[str], instance_id: str, file_name: str) -> RunFileState:
    """Inside a worker: read one run file; if Running, scan its tail and seal it by the rule."""
    from nes.verifier import scan_tail

    path = Path(base_dir) / instance_id / file_name
    try:
        manifest = read_manifest(path)
        if manifest.instance_id != instance_id or file_name != f"{manifest.run_id}{layout.RUN_FILE_SUFFIX}":
            # Sealing goes through the backend, which derives the path from the manifest: a
            # renamed or misplaced file would make it create (and seal) a new, empty file.
            return RunFileState(
                file_name,
                error=f"manifest names run {manifest.instance_id}/{manifest.run_id}, which is not this file",
            )
        if manifest.is_sealed():
            return RunFileState(
                file_name, manifest.run_id, manifest.start_ts_init, manifest.status, False, manifest.high_watermark
            )
        scan = scan_tail(path)
        rule, status = decide_recovery(scan)
        backend = LmdbBackend(base_dir)
        try:
            try:
                backend.open_run(manifest)
            except CrashedPredecessor:
                pass  # expected: the backend now holds the predecessor, writable
            backend.seal(status)
        finally:
            backend.close()
        return RunFileState(
            file_name, manifest.run_id, manifest.start_ts_init, status, True, scan.high_watermark, rule=rule
        )
    except EventStoreError as err:
        return RunFileState(file_name, error=f"{type(err).__name__}: {err}")


def sweep_run_files(base_dir: str | os.PathLike[str], instance_id: str, timeout_s: float) -> list[RunFileState]:
    """Survey (and recover) every run file of the instance in worker processes.

    One worker walks the files in order; if it crashes or exceeds `timeout_s` on a file, that
    file is recorded with an error and a fresh worker continues with the rest."""
    validate_path_id(instance_id, "instance_id")
    check_timeout_s(timeout_s, "timeout_s")
    remaining = [p.name for p in layout.list_run_files(base_dir, instance_id)]
    states: list[RunFileState] = []
    while remaining:
        done, failed = _sweep_worker(str(base_dir), instance_id, remaining, timeout_s)
        states += done
        if failed is None:
            break
        states.append(failed)
        remaining = remaining[remaining.index(failed.file) + 1 :]
    for state in states:
        if state.error is not None:
            log.error("run file %s skipped this boot (retried next boot): %s", state.file, state.error)
        elif state.recovered:
            log.warning(
                "recovery: sealed run %s %s (%s) [high-watermark %d]",
                state.run_id,
                state.status.value if state.status is not None else None,
                state.rule,
                state.high_watermark,
            )
    return states


def _sweep_worker(
    base_dir: str, instance_id: str, files: Sequence[str], timeout_s: float
) -> tuple[list[RunFileState], RunFileState | None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.recover", base_dir, instance_id, *files],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=worker_env(),
        process_group=0,  # a terminal's Ctrl-C goes to us; we kill the worker (no stray traceback)
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    states: list[RunFileState] = []
    current: str | None = None
    buffer = b""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                proc.wait()
                if current is None and len(states) == len(files):
                    return states, None  # every file was reported; only the exit was slow
                failed = current or files[len(states)]
                return states, RunFileState(failed, error=f"recovery worker timed out after {timeout_s}s")
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = proc.wait()
                if current is None:
                    if code == 0 or len(states) == len(files):
                        return states, None
                    return states, RunFileState(files[len(states)], error=f"recovery worker exit {code}")
                return states, RunFileState(current, error=f"recovery worker died on this file (exit {code})")
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = msgspec.json.decode(line)
                if isinstance(message, dict) and "begin" in message:
                    current = message["begin"]
                    deadline = time.monotonic() + timeout_s
                else:
                    states.append(msgspec.convert(message, RunFileState))
                    current = None
    finally:
        selector.close()
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def recover_predecessors(
    base_dir: str | os.PathLike[str], instance_id: str, timeout_s: float = 30.0
) -> RecoveryOutcome:
    """Seal every Running predecessor by its durable tail; the newest CrashedRecovered one
    becomes the parent."""
    states = sweep_run_files(base_dir, instance_id, timeout_s)
    return _outcome(states, None)


def _outcome(states: Sequence[RunFileState], replay_from_run_id: str | None) -> RecoveryOutcome:
    recovered = [
        RecoveredRun(s.run_id, s.status, s.high_watermark)
        for s in sorted((s for s in states if s.recovered), key=lambda s: s.start_ts_init)
        if s.run_id is not None and s.status is not None
    ]
    known = {s.run_id: s for s in states if s.run_id is not None and s.status is not None}
    try:
        parent = choose_parent(
            [
                (s.run_id, s.start_ts_init, s.status, s.recovered)
                for s in known.values()
                if s.run_id is not None and s.status is not None
            ],
            replay_from_run_id,
        )
    except ValueError as exc:
        raise ReplaySourceError(str(exc)) from None
    return RecoveryOutcome(recovered, parent)


def _preflight_replay_source(base_dir: Path, instance_id: str, run_id: str, timeout_s: float) -> None:
    """A configured replay source was sealed long ago: prove it intact (verifier worker) before
    the new run links to it. A corrupt file, or one that crashes the verifier, refuses the boot."""
    from nes.verifier import verify_in_worker

    verdict = verify_in_worker(layout.run_file_path(base_dir, instance_id, run_id), timeout_s)
    if not verdict.is_clean():
        raise ReplaySourceError(f"replay_from_run_id {run_id} failed verification: {verdict.summary_line()}")


# ---- session ------------------------------------------------------------------------------------
class EventStoreLifecycleOptions(msgspec.Struct, frozen=True):
    """`in_process=True` runs the writer in the caller (no ring, no sidecar): deterministic,
    for tests and simulation. The default is the sidecar process."""

    in_process: bool = False


class EventStoreSession:
    """One open run: submit entries, anchor snapshots, close."""

    def __init__(
        self,
        manifest: RunManifest,
        path: Path,
        writer: EventStoreWriter,
        recovery: RecoveryOutcome,
        backend: LmdbBackend | None,
    ) -> None:
        self.manifest = manifest
        self.path = path
        self.writer = writer
        self.recovery = recovery
        self._backend = backend  # only in in-process mode: the session owns it
        self.final_high_watermark: int | None = None

    @property
    def run_id(self) -> str:
        """This run's id (`<start_ts_init>-<8 hex>`), the run file's name."""
        return self.manifest.run_id

    @property
    def halted(self) -> bool:
        """True once the writer halted (fail-stop): every later submit raises WriterHalted."""
        return self.writer.halted

    @property
    def halt_reason(self) -> HaltReason | None:
        """Why the writer halted (the first reason), or None."""
        return self.writer.halt_reason

    @property
    def high_watermark(self) -> int:
        """The durable high-watermark: every seq at or below it is on disk."""
        return self.writer.high_watermark

    @property
    def closed(self) -> bool:
        """True once the session was closed (sealed) or abandoned."""
        return self.final_high_watermark is not None or self._abandoned

    _abandoned = False

    def submit(self, draft: EntryDraft) -> int:
        """Append one entry; returns its seq (user entries start at 2). See EventStoreWriter.submit."""
        return self.writer.submit(draft)

    def wait_durable(self, seq: int, timeout: float) -> bool:
        """True once `seq` is durable; False on timeout (seconds) or after a halt."""
        return self.writer.wait_durable(seq, timeout)

    def record_snapshot_anchor(self, blob_ref: str, content_hash: str) -> SnapshotAnchor:
        """Anchor a snapshot blob (stored by the caller) at the current high-watermark; returns the anchor."""
        return self.writer.record_snapshot_anchor(blob_ref, content_hash)

    def close(self) -> int | None:
        """RunEnded + seal Ended; returns the final high-watermark. A halted session is left
        Running for the next boot (returns None)."""
        if self.closed:
            return self.final_high_watermark
        try:
            if self.writer.halted:
                self.writer.abandon()
                self._abandoned = True
                log.warning("run %s halted: left Running for the next boot's recovery", self.run_id)
                return None
            self.final_high_watermark = self.writer.close()
            log.info("run %s sealed Ended [high-watermark %d] at %s", self.run_id, self.final_high_watermark, self.path)
            return self.final_high_watermark
        except WriterHalted:
            self._abandoned = True
            log.warning("run %s halted: left Running for the next boot's recovery", self.run_id)
            return None
        except BaseException:
            self.writer.abandon(wait_s=ABANDON_HUNG_WRITER_S)  # never leave the sidecar behind
            self._abandoned = True
            raise
        finally:
            if self._backend is not None:
                self._backend.close()

    def abandon(self, wait_s: float | None = None) -> None:
        """Stop without sealing, as a crash would (the next boot recovers the run); a writer
        still running after `wait_s` (default: the writer's close timeout) is killed."""
        if not self.closed:
            self.writer.abandon(wait_s)
            self._abandoned = True
            if self._backend is not None:
                self._backend.close()

    def __enter__(self) -> EventStoreSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventStoreLifecycle:
    """The supervisor: boots runs for one instance, one open session at a time."""

    def __init__(
        self,
        config: EventStoreConfig,
        halt: HaltCallback = noop_halt,
        clock_ns: Callable[[], int] = time.time_ns,
        options: EventStoreLifecycleOptions | None = None,
    ) -> None:
        if not isinstance(config, EventStoreConfig):
            raise InvalidArgument(f"config must be an EventStoreConfig, got {type(config).__name__}")
        if not callable(halt):
            raise InvalidArgument(f"halt must be callable (called with a HaltReason), got {type(halt).__name__}")
        self.config = config
        self._halt = halt
        self._clock_ns = clock_ns
        self._options = options or EventStoreLifecycleOptions()
        self.session: EventStoreSession | None = None

    def open(self, components: RegisteredComponents | None = None) -> EventStoreSession:
        """Boot (see the module contract): recovery sweep, parent choice, new run, writer sidecar;
        returns the session once RunStarted is durable."""
        if components is not None and not isinstance(components, RegisteredComponents):
            raise InvalidArgument(f"components must be RegisteredComponents or None, got {type(components).__name__}")
        if self.session is not None and not self.session.closed:
            self.session.close()  # seals it (or leaves a halted one for recovery)
        config = self.config
        identity = config.identity
        base_dir = Path(config.base_dir)
        log.info("boot: instance %s in %s", identity.instance_id, base_dir)
        states = sweep_run_files(base_dir, identity.instance_id, config.verifier_timeout_s)
        recovery = _outcome(states, config.replay_from_run_id)
        log.info(
            "boot: %d run files swept, %d recovered, parent run %s",
            len(states),
            len(recovery.recovered),
            recovery.parent_run_id,
        )
        if config.replay_from_run_id is not None:
            _preflight_replay_source(base_dir, identity.instance_id, config.replay_from_run_id, config.verifier_timeout_s)
        components = components or RegisteredComponents()
        start_ts = self._clock_ns()
        manifest = RunManifest(
            run_id=build_run_id(start_ts),
            instance_id=identity.instance_id,
            start_ts_init=start_ts,
            parent_run_id=recovery.parent_run_id,
            binary_hash=identity.binary_hash,
            crate_versions=",".join(f"{name}={version}" for name, version in sorted(identity.package_versions.items())),
            feature_flags=[*identity.feature_flags, f"retention={config.retention.label()}"],
            adapter_versions=dict(identity.adapter_versions),
            config_hash=identity.config_hash,
            registered_components=components,
            seed=identity.seed,
        )
        backend: LmdbBackend | None = None
        if self._options.in_process:
            backend = LmdbBackend(base_dir)
            backend.open_run(manifest)
            writer = EventStoreWriter.in_process(backend, config.writer, self._halt, self._clock_ns)
        else:
            writer = EventStoreWriter.spawn(base_dir, manifest, config.writer, self._halt, self._clock_ns)
        path = layout.run_file_path(base_dir, identity.instance_id, manifest.run_id)
        session = EventStoreSession(manifest, path, writer, recovery, backend)
        started = EntryDraft(RUN_STARTED_TOPIC, RUN_STARTED_TYPE, msgspec.msgpack.encode(components), start_ts)
        try:
            seq = writer.submit(started)
            durable = writer.wait_durable(seq, config.run_started_timeout_s)
        except WriterHalted as exc:
            session.abandon(wait_s=ABANDON_HUNG_WRITER_S)
            raise RunStartedHalted(f"writer halted before RunStarted was durable: {exc.reason}") from exc
        except BaseException as exc:
            session.abandon(wait_s=ABANDON_HUNG_WRITER_S)  # nothing of a failed boot stays alive
            if isinstance(exc, SubmitError):
                raise BootError(f"RunStarted was refused: {exc}") from exc
            raise
        if not durable:
            reason = writer.halt_reason
            session.abandon(wait_s=ABANDON_HUNG_WRITER_S)  # a hung writer must not stretch the boot
            if reason is not None:
                raise RunStartedHalted(f"writer halted before RunStarted was durable: {reason}")
            raise RunStartedTimeout(f"RunStarted not durable within {config.run_started_timeout_s}s")
        log.info("boot: run %s open, RunStarted durable at seq %d, file %s", manifest.run_id, seq, path)
        self.session = session
        return session

    def close(self) -> int | None:
        """Close the current session (RunEnded, sealed Ended); returns its final high-watermark."""
        if self.session is None:
            return None
        return self.session.close()


def open_run(
    config: EventStoreConfig,
    components: RegisteredComponents | None = None,
    halt: HaltCallback = noop_halt,
    options: EventStoreLifecycleOptions | None = None,
) -> EventStoreSession:
    """Boot one run: recovery sweep, open, RunStarted durable."""
    return EventStoreLifecycle(config, halt, options=options).open(components)
