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

Before step 1 the boot takes the instance lock (`nes.instancelock`), held by the session until
it is closed or abandoned, and by its writer process until that exits: a second lifecycle on the
same instance raises `InstanceLocked` naming the holder's pid and opens nothing (if that pid is
gone, the boot first waits up to `close_timeout_s` for its orphaned writer to drain). A boot interrupted by Ctrl-C (KeyboardInterrupt) or,
in the main thread with the default SIGTERM disposition, by SIGTERM stops what it started
(workers, writer, ring), releases the lock and then goes on dying as the signal asks.
Lineage survives a kill at any point of the boot: a crashed run that the sweep sealed before the
boot died is still the next run's parent (`nes.recovery.choose_parent`: the newest sealed run,
if CrashedRecovered and named as parent by no run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb
import msgspec

from nes.backend import layout
from nes.backend.lmdb import LmdbBackend, classify_lmdb_error, read_manifest
from nes.backend.seal_record import SealedFileChanged, SealRecordInvalid, read_seal_record, seal_record_path
from nes.config import EventStoreConfig
from nes.errors import Backend, Corrupted, EventStoreError, InvalidArgument, UnsupportedFormat, check_timeout_s
from nes.halt import HaltCallback, HaltReason, noop_halt
from nes.ids import build_run_id, validate_path_id
from nes.instancelock import InstanceLock, pid_alive, read_holder_pid
from nes.isolation import worker_command, worker_env
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
    "BootInterrupted",
    "InstanceLocked",
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


class InstanceLocked(BootError):
    """Another live session holds the instance (`pid`: its process, None if unknown); this
    boot opened nothing."""

    def __init__(self, instance_dir: str, pid: int | None) -> None:
        super().__init__(instance_dir, pid)
        self.instance_dir = instance_dir
        self.pid = pid

    def __str__(self) -> str:
        holder = "an unknown process" if self.pid is None else f"pid {self.pid}"
        return f"instance {self.instance_dir} is in use by {holder} (one live session per instance)"


class BootInterrupted(BootError):
    """SIGTERM arrived during the boot; what the boot started has been stopped (the process
    then terminates by that signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"boot interrupted by signal {self.signum}"


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
    parent_run_id: str | None = None  # the run's own parent link (lineage)
    fatal: bool = False  # a file of a future format: the boot stops (Corrupted)
    rule: str = ""  # the recovery rule that decided `status` (when `recovered`)


def recover_run_file(
    base_dir: str | os.PathLike[str],
    instance_id: str,
    file_name: str,
    progress: Callable[[str, int], None] | None = None,
) -> RunFileState:
    """Inside a worker: read one run file; if Running, verify it and seal it by the rule
    (`nes.recovery`): whatever the verifier reports makes it Quarantined. A sealed run
    without its seal record gets one. A file of an unknown (future) format raises `Corrupted`:
    the sweep stops the boot rather than seal what it cannot read."""
    from nes.verifier import scan_tail

    path = Path(base_dir) / instance_id / file_name
    try:
        if path.is_symlink() or not path.is_file():
            return RunFileState(file_name, error="not a regular file (symlinks are never followed)")
        recorded = _quarantined_outside(path)
        if recorded is not None:
            return recorded
        if layout.check_run_file_shape(path).txnid == 0:
            # A run file's first commit holds its databases, format marker and manifest at
            # once: none means a kill interrupted its creation. Nothing in it was ever durable.
            return _quarantine_outside(path, 0, "its creation was interrupted: it holds no committed transaction")
        try:
            manifest = read_manifest(path)
        except UnsupportedFormat:
            raise
        except (SealedFileChanged, SealRecordInvalid) as err:
            return _damaged_after_seal(path, err)
        except Corrupted as err:
            if not _lmdb_opens(path):
                raise  # not openable at all: skipped with its error, looked at again next boot
            return _quarantine_outside(path, 0, f"{type(err).__name__}: {err}")  # opens, unreadable
        if manifest.instance_id != instance_id or file_name != f"{manifest.run_id}{layout.RUN_FILE_SUFFIX}":
            # Sealing goes through the backend, which derives the path from the manifest: a
            # renamed or misplaced file would make it create (and seal) a new, empty file.
            return RunFileState(
                file_name,
                error=f"manifest names run {manifest.instance_id}/{manifest.run_id}, which is not this file",
            )
        if manifest.is_sealed():
            if not os.path.lexists(seal_record_path(path)):  # a crash between seal and record left none
                # The record certifies the file's bytes: it is written only over a file that
                # verifies clean, never over damage that came after the seal.
                if not _verifies_clean(path, progress):
                    return _damaged_after_seal(path, Corrupted("sealed without a seal record, and it does not verify"))
                LmdbBackend.write_missing_seal_record(path)
            return RunFileState(
                file_name,
                manifest.run_id,
                manifest.start_ts_init,
                manifest.status,
                False,
                manifest.high_watermark,
                parent_run_id=manifest.parent_run_id,
            )
        scan = scan_tail(path, progress)
        rule, status = decide_recovery(scan)
        try:
            LmdbBackend.seal_predecessor(path, status, scan.high_watermark, scan.max_ts_init)
        except (Corrupted, Backend) as err:
            if isinstance(err, Backend) and not scan.damaged:
                raise  # not known to be damaged: retried next boot
            # The file opens and verifies (or not), but LMDB refuses to write its seal.
            return _quarantine_outside(path, scan.high_watermark, f"{type(err).__name__}: {err}", manifest)
        if scan.damaged:
            log.warning("run %s sealed Quarantined: %s", manifest.run_id, scan.detail)
        elif not _verifies_clean(path, progress):
            # LMDB allocates the seal's pages from its free list, which nothing checksums: a
            # damaged free list can hand out a page still in use. Then the run is not a parent.
            LmdbBackend.force_quarantine(path)
            rule, status = "seal exposed damage", RunStatus.Quarantined
            log.error("run %s: sealing it damaged it (a corrupt LMDB free list); sealed Quarantined", manifest.run_id)
        return RunFileState(
            file_name,
            manifest.run_id,
            manifest.start_ts_init,
            status,
            True,
            scan.high_watermark,
            parent_run_id=manifest.parent_run_id,
            rule=rule,
        )
    except EventStoreError as err:
        return RunFileState(file_name, error=f"{type(err).__name__}: {err}", fatal=isinstance(err, UnsupportedFormat))
    except (OSError, lmdb.Error) as err:  # never escapes the worker as a crash
        return RunFileState(file_name, error=f"{type(err).__name__}: {err}")


def _lmdb_opens(path: Path) -> bool:
    try:
        layout.open_read_only(path).close()
        return True
    except (lmdb.Error, Corrupted, OSError):
        return False


def _run_id_of(path: Path) -> str:
    """The run id a run file's name carries (`<run_id>.lmdb`)."""
    return path.name[: -len(layout.RUN_FILE_SUFFIX)]


def _quarantined_outside(path: Path) -> RunFileState | None:
    """A Running (or unreadable) file that an earlier sweep quarantined with a seal record only."""
    run_id = _run_id_of(path)
    try:
        record = read_seal_record(path, run_id)
    except SealRecordInvalid:
        return None
    if record is None or record.status != str(RunStatus.Quarantined) or not record.outside_only:
        return None
    return RunFileState(path.name, run_id, 0, RunStatus.Quarantined, False, record.high_watermark)


def _damaged_after_seal(path: Path, err: Corrupted) -> RunFileState:
    """A file that was sealed once (it has a seal record) and whose bytes, or record, changed
    since: Quarantined by that rule at every sweep, never re-sealed (writing to it is what a
    damaged file must not get) and never a parent."""
    run_id = _run_id_of(path)
    log.error("run file %s is Quarantined: %s", path.name, err)
    return RunFileState(path.name, run_id, 0, RunStatus.Quarantined, False, 0, rule="damaged after its seal")


def _quarantine_outside(
    path: Path, high_watermark: int, why: str, manifest: RunManifest | None = None
) -> RunFileState:
    """Quarantine a run whose file LMDB cannot seal (its manifest cannot be read or its write
    fails) by its seal record alone: it is never a parent, and later sweeps do not retry it."""
    from nes.backend.integrity import manifest_digest
    from nes.backend.seal_record import SEAL_RECORD_VERSION, SealRecord, write_seal_record
    from nes.manifest import encode_manifest

    run_id = _run_id_of(path)
    validate_path_id(run_id, "run_id")
    raw = b"" if manifest is None else encode_manifest(manifest)
    record = SealRecord(
        SEAL_RECORD_VERSION, run_id, str(RunStatus.Quarantined), high_watermark, None, manifest_digest(raw).hex(), "",
        outside_only=True,
    )
    write_seal_record(path, record)
    log.error("run file %s quarantined by its seal record only (LMDB cannot seal it): %s", path.name, why)
    start = 0 if manifest is None else manifest.start_ts_init
    return RunFileState(path.name, run_id, start, RunStatus.Quarantined, True, high_watermark, rule="cannot be sealed")


def _verifies_clean(path: Path, progress: Callable[[str, int], None] | None) -> bool:
    from nes.verifier import Verifier

    return Verifier(path).verify(progress).is_clean()


def sweep_run_files(base_dir: str | os.PathLike[str], instance_id: str, timeout_s: float) -> list[RunFileState]:
    """Survey (and recover) every run file of the instance in worker processes.

    One worker walks the files in order; if it crashes or exceeds `timeout_s` on a file, that
    file is recorded with an error and a fresh worker continues with the rest."""
    validate_path_id(instance_id, "instance_id")
    check_timeout_s(timeout_s, "timeout_s")
    remaining = [p.name for p in layout.list_run_files(Path(base_dir), instance_id)]
    states: list[RunFileState] = []
    while remaining:
        done, failed = _sweep_worker(str(base_dir), instance_id, remaining, timeout_s)
        states += done
        if failed is None:
            break
        states.append(failed)
        remaining = remaining[remaining.index(failed.file) + 1 :]
    for state in states:
        if state.fatal:
            raise Corrupted(f"run file {state.file}: {state.error}")
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
        worker_command("workers.recover", base_dir, instance_id, *files),
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
                elif isinstance(message, dict) and "progress" in message:
                    deadline = time.monotonic() + timeout_s  # the timeout is on lack of progress
                else:
                    states.append(msgspec.convert(message, RunFileState))
                    current = None
    finally:
        selector.close()
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _check_private_dirs(base_dir: Path, instance_id: str) -> None:
    """The base and instance directories, where they exist, are 0700 and ours (a looser one we
    own is tightened; someone else's, or an instance directory that is a symlink, is refused
    with `BootError`)."""
    for directory, follow in ((base_dir, True), (layout.instance_dir(base_dir, instance_id), False)):
        if os.path.lexists(directory):
            try:
                layout.check_private_dir(directory, follow_symlink=follow)
            except PermissionError as exc:
                raise BootError(str(exc)) from None


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
            [(run_id, s.start_ts_init, s.status, s.recovered) for run_id, s in known.items() if s.status is not None],
            replay_from_run_id,
            named_parents={s.parent_run_id for s in states if s.parent_run_id is not None},
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
    for tests and simulation. The default is the sidecar process.

    `restore_cache`: a `nes.replay.CacheReplayTarget` restored at boot from the parent run
    (`nes.replay.boot`); a restore failure refuses the boot before anything is opened."""

    in_process: bool = False
    restore_cache: Any = None


class EventStoreSession:
    """One open run: submit entries, anchor snapshots, close."""

    def __init__(
        self,
        manifest: RunManifest,
        path: Path,
        writer: EventStoreWriter,
        recovery: RecoveryOutcome,
        backend: LmdbBackend | None,
        instance_lock: InstanceLock | None = None,
    ) -> None:
        self.manifest = manifest
        self.path = path
        self.writer = writer
        self.recovery = recovery
        self._backend = backend  # only in in-process mode: the session owns it
        self._instance_lock = instance_lock  # released once the writer is stopped
        self.final_high_watermark: int | None = None
        self.cache_restore: Any = None  # nes.replay.EventStoreReplayReport when restored at boot

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

    def snapshot_anchorer(self) -> Any:
        """A `nes.replay.SnapshotAnchorer`: `anchorer(blob)` stores the blob durably beside the
        run file (`snapshots/<hash>`) and records its anchor at the durable high-watermark."""
        from nes.replay.blobs import SnapshotAnchorer, SnapshotBlobStore

        return SnapshotAnchorer(self, SnapshotBlobStore.beside_run_file(self.path))

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
            self._release_instance()

    def abandon(self, wait_s: float | None = None) -> None:
        """Stop without sealing, as a crash would (the next boot recovers the run); a writer
        still running after `wait_s` (default: the writer's close timeout) is killed."""
        if not self.closed:
            try:
                self.writer.abandon(wait_s)
                self._abandoned = True
                if self._backend is not None:
                    self._backend.close()
            finally:
                self._release_instance()

    def _release_instance(self) -> None:
        if self._instance_lock is not None:  # the writer has been stopped (or killed) by now
            self._instance_lock.release()

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
        base_dir = Path(config.base_dir)
        instance_dir = base_dir / validate_path_id(config.identity.instance_id, "instance_id")
        with _boot_signals():
            _check_private_dirs(base_dir, config.identity.instance_id)  # before anything is created in it
            try:
                layout.make_private_dirs(instance_dir)
                lock = InstanceLock.try_acquire(instance_dir)
            except OSError as exc:  # not a directory, no permission, disk full
                raise classify_lmdb_error(exc, f"create {instance_dir}") from exc
            holder = None
            if lock is None:
                holder = read_holder_pid(instance_dir / "instance.lock")
                if holder is not None and not pid_alive(holder):
                    # its session's trader is gone; its writer is still draining: wait for it
                    lock = InstanceLock.acquire_within(instance_dir, config.writer.close_timeout_s)
            if lock is None:
                raise InstanceLocked(str(instance_dir), holder)
            try:
                session = self._boot(base_dir, lock, components)
            except BaseException:
                lock.release()
                raise
        self.session = session
        return session

    def _boot(self, base_dir: Path, lock: InstanceLock, components: RegisteredComponents | None) -> EventStoreSession:
        config = self.config
        identity = config.identity
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
        cache_restore = None
        if self._options.restore_cache is not None:
            from nes.replay.boot import restore_parent_cache  # before anything of the new run exists

            cache_restore = restore_parent_cache(
                self._options.restore_cache, base_dir, identity.instance_id, recovery.parent_run_id
            )
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
            try:
                backend.open_run(manifest)
                writer = EventStoreWriter.in_process(backend, config.writer, self._halt, self._clock_ns)
            except BaseException:
                backend.close()
                raise
        else:
            writer = EventStoreWriter.spawn(
                base_dir, manifest, config.writer, self._halt, self._clock_ns, hold_fds=(lock.fd,)
            )
        path = layout.run_file_path(base_dir, identity.instance_id, manifest.run_id)
        session = EventStoreSession(manifest, path, writer, recovery, backend, lock)
        session.cache_restore = cache_restore
        try:
            started = EntryDraft(RUN_STARTED_TOPIC, RUN_STARTED_TYPE, msgspec.msgpack.encode(components), start_ts)
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
        return session

    def close(self) -> int | None:
        """Close the current session (RunEnded, sealed Ended); returns its final high-watermark."""
        if self.session is None:
            return None
        return self.session.close()


@contextlib.contextmanager
def _boot_signals() -> Iterator[None]:
    """During a boot, SIGTERM (default disposition, main thread only) raises `BootInterrupted`
    so the boot's cleanup runs (workers and writer stopped, ring unlinked, lock released);
    afterwards the signal is re-delivered with its default action. Ctrl-C needs nothing: the
    KeyboardInterrupt takes the same cleanup paths."""
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    received: list[int] = []

    def interrupt(signum: int, frame: object) -> None:  # noqa: ARG001 - the handler signature
        if not received:
            received.append(signum)
            raise BootInterrupted(signum)

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if received:
            os.kill(os.getpid(), signal.SIGTERM)  # the boot has cleaned up: now terminate


def open_run(
    config: EventStoreConfig,
    components: RegisteredComponents | None = None,
    halt: HaltCallback = noop_halt,
    options: EventStoreLifecycleOptions | None = None,
) -> EventStoreSession:
    """Boot one run: recovery sweep, open, RunStarted durable."""
    return EventStoreLifecycle(config, halt, options=options).open(components)
