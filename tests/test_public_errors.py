"""Issue 9 item 1: one exception tree under EventStoreError, importable from `nes`, and every bad
input the public API can be handed raises a typed error with an exact message (or halts with the
right reason), never a raw AttributeError / TypeError / OverflowError / posix_ipc error.

Real parts: LMDB run files in tmp dirs, a spawned writer sidecar, a real shm ring."""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import resource
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

import nes
from nes import (
    Backend,
    BootError,
    ConfigError,
    EntryDraft,
    EventStoreConfig,
    EventStoreError,
    EventStoreLifecycle,
    EventStoreWriter,
    InvalidArgument,
    InvalidDraft,
    LmdbBackend,
    RunIdentity,
    RunManifest,
    WriterConfig,
)
from nes.control import ControlChannel, Halt, Ready
from nes.halt import BackendCorrupted, BackendError, from_backend_error
from nes.sidecar import run_sidecar

INSTANCE = "errs"
DRAFT = EntryDraft("orders.submit", "SubmitOrder", b"x" * 64, 7)
LISTED_IN_ISSUE = (
    "WriterHalted",
    "WriterClosed",
    "InvalidDraft",
    "RecordTooLarge",
    "HaltSignaled",
    "SubmitError",
    "ConfigError",
    "RunStartedTimeout",
    "SnapshotHashMismatch",
    "BootError",
)


def manifest(run_id: str = "1700000000-0000abcd") -> RunManifest:
    return RunManifest(run_id=run_id, instance_id=INSTANCE, start_ts_init=1)


# Wire-level errors of internal modules, each caught and turned into a public error before it can
# reach a caller: FrameError -> Corrupted (storage), RecordError -> BackendCorrupted halt
# (sidecar), ControlProtocolError -> a halt (writer), WorkerCrash -> a verdict / an error entry.
INTERNAL_MODULES = ("nes.codec", "nes.record", "nes.control", "nes.isolation")


def _public_exception_classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(nes.__path__, "nes."):
        if info.name.startswith("nes.integrations") or info.name.endswith("__main__"):
            continue
        if info.name in INTERNAL_MODULES:
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                found[name] = obj
    return found


# ---- the tree ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LISTED_IN_ISSUE)
def test_issue_listed_exception_is_an_event_store_error_importable_from_nes(name: str) -> None:
    cls = getattr(nes, name)
    assert issubclass(cls, EventStoreError)
    assert name in nes.__all__


def test_every_exception_a_nes_module_exports_is_under_event_store_error_and_in_nes() -> None:
    classes = _public_exception_classes()
    assert len(classes) >= 24
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, EventStoreError))
    assert outside == []
    missing = sorted(name for name, cls in classes.items() if getattr(nes, name, None) is not cls)
    assert missing == []


def test_errors_module_docstring_documents_every_exception_in_the_tree() -> None:
    doc = nes.errors.__doc__ or ""
    for name in _public_exception_classes():
        assert name in doc, name


def test_crate_aligned_errors_keep_their_messages() -> None:
    assert str(nes.Backend("no run open")) == "backend error: no run open"
    assert str(nes.Corrupted("x")) == "corrupted run: x"
    assert str(nes.Disk("full")) == "disk error: full"
    assert str(nes.HashMismatch(4)) == "entry hash mismatch at seq 4"
    assert str(nes.OutOfOrder(3, 5)) == "out-of-order seq: received 5, expected contiguous after high-watermark 3"
    assert str(nes.Closed()) == "run is closed"
    assert str(nes.Gap(1, 3, 2)) == "gap detected: missing seq 2 between 1 and 3"
    assert str(nes.CrashedPredecessor()) == "crashed predecessor run requires sealing"


def test_value_and_type_error_bases_are_kept_for_existing_handlers() -> None:
    assert issubclass(ConfigError, ValueError) and issubclass(InvalidDraft, ValueError)
    assert issubclass(InvalidArgument, ValueError) and issubclass(InvalidArgument, TypeError)
    assert issubclass(nes.VerifyOpenError, OSError)


# ---- submit / wait_durable -------------------------------------------------------------------------
@pytest.fixture
def spawned(tmp_path: Path):
    writer = EventStoreWriter.spawn(tmp_path, manifest(), WriterConfig(ring_bytes=1 << 16, max_record_bytes=1 << 12))
    yield writer
    writer.abandon(5.0)


@pytest.mark.parametrize(("bad", "kind"), [(None, "NoneType"), ({}, "dict"), ("draft", "str")])
def test_submit_of_a_non_draft_raises_invalid_draft_and_accepts_nothing(spawned, bad, kind) -> None:
    with pytest.raises(InvalidDraft) as info:
        spawned.submit(bad)
    assert str(info.value) == f"submit expects an EntryDraft, got {kind}"
    assert spawned.next_seq == 1
    assert spawned.submit(DRAFT) == 1  # the writer is unharmed


def test_wait_durable_with_a_str_seq_raises_invalid_argument(spawned) -> None:
    with pytest.raises(InvalidArgument) as info:
        spawned.wait_durable("1", 1.0)
    assert str(info.value) == "wait_durable: seq must be an int, got str"


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -math.inf])
def test_wait_durable_with_a_non_finite_timeout_raises_at_once(spawned, timeout) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidArgument) as info:
        spawned.wait_durable(1, timeout)
    assert str(info.value) == f"wait_durable: timeout must be a finite number of seconds, got {timeout!r}"
    assert time.monotonic() - started < 1.0  # nan used to spin at 100% CPU forever


def test_wait_durable_with_a_str_timeout_raises_invalid_argument(spawned) -> None:
    with pytest.raises(InvalidArgument, match=r"^wait_durable: timeout must be a number of seconds, got str$"):
        spawned.wait_durable(1, "1")


def test_in_process_writer_checks_the_same_arguments(tmp_path: Path) -> None:
    backend = LmdbBackend(tmp_path)
    backend.open_run(manifest())
    writer = EventStoreWriter.in_process(backend)
    try:
        with pytest.raises(InvalidDraft, match=r"^submit expects an EntryDraft, got NoneType$"):
            writer.submit(None)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match=r"^wait_durable: timeout must be a finite"):
            writer.wait_durable(writer.submit(DRAFT), math.nan)
    finally:
        writer.close()
        backend.close()


# ---- timeouts in the configs -------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.inf, 1e300, math.nan, 0.0])
@pytest.mark.parametrize("field", ["ready_timeout_s", "ack_timeout_s", "close_timeout_s", "halt_threshold_s"])
def test_writer_timeouts_must_be_finite_and_bounded(field: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        WriterConfig(**{field: value})
    assert str(info.value) == f"{field}: must be a finite number of seconds in (0, 86400], got {value!r}"


@pytest.mark.parametrize("value", [math.inf, 1e300, math.nan])
@pytest.mark.parametrize("field", ["verifier_timeout_s", "run_started_timeout_s"])
def test_lifecycle_timeouts_must_be_finite_and_bounded(tmp_path: Path, field: str, value: float) -> None:
    expected = f"{field}: must be a finite number of seconds in (0, 86400], got {value!r}"
    with pytest.raises(ConfigError) as built:
        EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity("t"), **{field: value})
    assert str(built.value) == expected
    with pytest.raises(ConfigError) as loaded:
        EventStoreConfig.from_mapping({"base_dir": "d", "identity": {"instance_id": "t"}, field: value})
    assert str(loaded.value) == expected


def test_ready_timeout_inf_in_a_toml_file_is_refused_before_any_writer_starts(tmp_path: Path) -> None:
    path = tmp_path / "nes.toml"
    path.write_text('base_dir = "runs"\n[identity]\ninstance_id = "t"\n[writer]\nready_timeout_s = inf\n')
    with pytest.raises(ConfigError) as info:
        EventStoreConfig.load(path)
    assert str(info.value) == "writer.ready_timeout_s: must be a finite number of seconds in (0, 86400], got inf"


def test_ring_larger_than_rlimit_fsize_raises_disk_and_starts_nothing(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(nes.Disk) as info:
            EventStoreWriter.spawn(tmp_path, manifest(), WriterConfig(ring_bytes=4 << 20))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(info.value) == (
        "disk error: ring of 4194304 bytes exceeds the file-size limit RLIMIT_FSIZE (1048576 bytes)"
    )
    assert not (tmp_path / INSTANCE).exists() or not any((tmp_path / INSTANCE).iterdir())


def test_ring_larger_than_rlimit_fsize_fails_a_boot_with_disk(tmp_path: Path) -> None:
    config = EventStoreConfig(base_dir=tmp_path, identity=RunIdentity("t"), writer=WriterConfig(ring_bytes=4 << 20))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(nes.Disk, match="exceeds the file-size limit RLIMIT_FSIZE"):
            EventStoreLifecycle(config).open()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


# ---- halts -------------------------------------------------------------------------------------
def test_corrupt_ring_record_halts_backend_corrupted_not_backend_error(tmp_path: Path) -> None:
    from shm import layout
    from shm.ring import Ring

    ring = Ring.create(1 << 16, 1 << 12)
    backend = LmdbBackend(tmp_path, exclusive=True)  # as the writer process opens it
    backend.open_run(manifest())
    ours, theirs = socket.socketpair()
    theirs.settimeout(10.0)  # bounded: a sidecar that never answers fails the test, not the run
    try:
        # a record header claiming more bytes than max_record, as a stray write would leave it
        struct.pack_into("<II", ring._mm, layout.HEADER_BYTES, 1 << 20, 1)
        ring._head.value = 64
        peer = ControlChannel(theirs)
        code: list[int] = []
        worker = threading.Thread(
            target=lambda: code.append(run_sidecar(ring, ControlChannel(ours), backend, 16, 0.001)), daemon=True
        )
        worker.start()
        assert isinstance(peer.recv(), Ready)
        halt = peer.recv()
        worker.join(10.0)
    finally:
        theirs.close()
        ring.close()
        backend.close()
    assert code == [3]
    assert isinstance(halt, Halt) and isinstance(halt.reason, BackendCorrupted)
    assert halt.reason.msg.startswith("malformed ring record: corrupt ring: record of 1048576 bytes")


def test_backend_error_halt_message_has_no_doubled_prefix() -> None:
    reason = from_backend_error(Backend("snapshot anchor ack stalled"), 3)
    assert isinstance(reason, BackendError)
    assert str(reason) == "backend error: snapshot anchor ack stalled; durable up to seq 3"
    assert str(nes.WriterHalted(reason)).count("backend error:") == 1


def test_boot_errors_are_event_store_errors() -> None:
    for cls in (nes.RunStartedTimeout, nes.RunStartedHalted, nes.ReplaySourceError):
        assert issubclass(cls, BootError) and issubclass(cls, EventStoreError)


def test_public_argument_checks_raise_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^map_size must be at least 64 KiB, got 10$"):
        LmdbBackend(tmp_path, map_size=10)
    with pytest.raises(InvalidArgument, match=r"^Headers.correlation_id must be a uuid.UUID or None, got str$"):
        nes.Headers("not-a-uuid")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"^start_ts_init must be >= 0, got -1$"):
        nes.build_run_id(-1)
    with pytest.raises(InvalidArgument, match=r"^invalid instance_id '\.\./x'"):
        LmdbBackend(tmp_path).open_run(RunManifest(run_id="1-00000000", instance_id="../x", start_ts_init=1))


@pytest.mark.parametrize("timeout", [math.inf, 1e300, math.nan, 0])
def test_worker_timeouts_of_public_calls_must_be_finite(tmp_path: Path, timeout: float) -> None:
    expected = f"timeout_s must be a finite number of seconds in (0, 86400], got {timeout!r}"
    with pytest.raises(InvalidArgument) as swept:
        nes.recover_predecessors(tmp_path, INSTANCE, timeout)
    assert str(swept.value) == expected
    (tmp_path / "x.lmdb").write_bytes(b"\0" * 4096)
    with pytest.raises(InvalidArgument) as verified:
        nes.verify_in_worker(tmp_path / "x.lmdb", timeout)  # used to raise OverflowError for inf
    assert str(verified.value) == expected


def test_lifecycle_refuses_a_config_that_is_not_one() -> None:
    with pytest.raises(InvalidArgument, match=r"^config must be an EventStoreConfig, got dict$"):
        EventStoreLifecycle({"base_dir": "runs"})  # type: ignore[arg-type]
    config = EventStoreConfig(base_dir="runs", identity=RunIdentity("t"))
    with pytest.raises(InvalidArgument, match=r"^halt must be callable \(called with a HaltReason\), got str$"):
        EventStoreLifecycle(config, halt="print")  # type: ignore[arg-type]


def test_plan_retention_refuses_a_mode_that_is_not_one() -> None:
    with pytest.raises(InvalidArgument, match=r"^mode must be Full\(\), Bounded\(n\) or SnapshotAnchored\(\), got 'full'$"):
        nes.plan_retention("full", [])  # type: ignore[arg-type]


def test_an_lmdb_error_names_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "garbage.lmdb"
    path.write_bytes(b"x" * 8192)
    with pytest.raises(nes.Corrupted) as info:
        nes.open_event_store_replay_source(path)
    # Refused from its meta pages before LMDB maps it (a mapped damaged file can fault).
    assert str(info.value) == f"corrupted run: run file {path} is not an LMDB file: no valid LMDB meta page (8192 bytes)"
    assert str(info.value).count(str(path)) == 1


def test_writer_constructors_check_their_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^manifest must be a RunManifest, got str$"):
        EventStoreWriter.spawn(tmp_path, "m")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"^config must be a WriterConfig or None, got dict$"):
        EventStoreWriter.spawn(tmp_path, manifest(), {"ring_bytes": 4096})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"^backend must be an LmdbBackend or MemoryBackend, got str$"):
        EventStoreWriter.in_process("x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"^halt must be callable \(called with a HaltReason\), got int$"):
        EventStoreWriter.in_process(nes.MemoryBackend(), halt=3)  # type: ignore[arg-type]
    assert not (tmp_path / INSTANCE).exists()  # no writer was started


def test_open_and_lookups_check_their_arguments(tmp_path: Path) -> None:
    lifecycle = EventStoreLifecycle(EventStoreConfig(base_dir=tmp_path, identity=RunIdentity(INSTANCE)))
    with pytest.raises(InvalidArgument, match=r"^components must be RegisteredComponents or None, got str$"):
        lifecycle.open("x")  # type: ignore[arg-type]
    with lifecycle.open() as session:
        pass
    with nes.open_event_store_replay_source(session.path) as reader:
        with pytest.raises(InvalidArgument, match=r"^kind must be an IndexKind, got 'ClientOrderId'$"):
            reader.lookup("ClientOrderId", "O-1")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match=r"^kind must be an IndexKind, got 'ClientOrderId'$"):
            reader.lookup_all("ClientOrderId", "O-1")  # type: ignore[arg-type]
        assert reader.lookup(nes.IndexKind.ClientOrderId, "O-1") is None
