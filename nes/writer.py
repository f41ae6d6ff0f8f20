"""The trader-side writer client: `submit()` returns a seq; durability is explicit.

Contract:
- `submit(draft)` assigns the next seq (contiguous from the writer's READY high-watermark + 1),
  stamps `ts_publish` (strictly increasing), writes the entry's canonical frame into the ring
  and returns the seq. In steady state it makes no syscall. It never blocks forever: a ring that
  stays full past `halt_threshold_s` halts the writer with `BackpressureStall` and that submit
  raises `HaltSignaled`; the entry is not accepted (its seq is not consumed).
- `high_watermark` is the DURABLE high-watermark published by the writer after each fsynced
  commit; `wait_durable(seq, timeout)` blocks until `seq` is durable.
- Halts are fail-stop. The halt hook is called (from the control thread) once per halt reason
  kind; `halted`/`halt_reason` report the first. After a halt every `submit()` raises
  `WriterHalted` at once. Entries accepted before a halt are durable up to the reason's
  `durable_high_watermark`; above it, the halt says they are not.
- `close()` appends RunEnded, seals the run Ended and returns the final high-watermark.
- Threads: `submit()`, `record_snapshot_anchor()`, `close()` and `abandon()` may be called from
  several threads. Submits are serialised by one lock (uncontended in a single-threaded
  trader), so a seq is handed out once and ring records are in seq order. A thread inside
  `wait_durable()` while another closes or abandons the writer gets its result (True if the
  seq became durable, else False), never a crash: the ring is unmapped only after every waiter
  has left it.
- Writer death: the trader refuses submits at once, then reads the run file's exact durable
  high-watermark in a worker (the ring's value can lag the disk by the commit that was in
  flight) and halts with `WriterDied` carrying it.
- The writer process does not hold the trader's stdout/stderr: its stdout is /dev/null and its
  stderr (tracebacks only; errors reach the trader as a `Halt`) goes to
  `<base>/<instance_id>/<run_id>.writer.log`, removed when it stays empty.
- Two transports share all of the above: `EventStoreWriter.spawn` (shm ring + writer sidecar
  process + control socket) and `EventStoreWriter.in_process` (commits on submit; no ring, no
  process; deterministic, for tests and simulation).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import posix_ipc

from nes.backend import layout
from nes.backend.base import MAX_INDEX_KEY_BYTES, IndexKey, IndexKind, RunStoreBase, index_key_problem
from nes.control import AnchorAck, CloseAck, ControlChannel, ControlProtocolError, Halt, Ready
from nes.entry import validate_topic
from nes.errors import MAX_TIMEOUT_S, Backend, ConfigError, Corrupted, Disk, EventStoreError, InvalidArgument
from nes.halt import (
    BackendCorrupted,
    BackendDisk,
    BackendError,
    BackpressureStall,
    HaltCallback,
    HaltReason,
    WriterDied,
    noop_halt,
)
from nes.headers import Headers
from nes.isolation import worker_command, worker_env
from nes.manifest import RunManifest
from nes.record import KIND_ANCHOR, KIND_CLOSE, MAX_INDEX_KEYS, encode_anchor_request, entry_template
from nes.sidecar import WriterCore
from nes.snapshot import SnapshotAnchor

if TYPE_CHECKING:
    from shm.ring import Ring

__all__ = [
    "EntryDraft",
    "WriterConfig",
    "EventStoreWriter",
    "SubmitError",
    "WriterClosed",
    "WriterHalted",
    "HaltSignaled",
    "InvalidDraft",
    "RecordTooLarge",
    "RUN_ENDED_TOPIC",
    "RUN_ENDED_TYPE",
    "DEFAULT_HALT_THRESHOLD_S",
    "DEFAULT_IDLE_LINGER_S",
    "DEFAULT_MIN_COMMIT_INTERVAL_S",
    "DEFAULT_MAX_BATCH_ENTRIES",
    "DEFAULT_MAX_BATCH_LATENCY_S",
    "DEFAULT_RING_BYTES",
    "DEFAULT_MAX_RECORD_BYTES",
]

log = logging.getLogger("nes.writer")

RUN_ENDED_TOPIC = "run.lifecycle.RunEnded"
RUN_ENDED_TYPE = "RunEnded"

DEFAULT_RING_BYTES = 16 << 20
DEFAULT_MAX_RECORD_BYTES = 1 << 20
DEFAULT_MAX_BATCH_ENTRIES = 2048
DEFAULT_MAX_BATCH_LATENCY_S = 0.005
DEFAULT_HALT_THRESHOLD_S = 0.25
DEFAULT_IDLE_LINGER_S = 0.0
DEFAULT_MIN_COMMIT_INTERVAL_S = 0.004
MAX_RING_BYTES = 1 << 40  # 1 TiB: far above any RAM here, below what the OS calls overflow on
MAX_BLOB_REF_BYTES = 4096  # a path or URI; bounded so an anchor and its ack stay small
DEATH_READ_TIMEOUT_S = 10.0  # reading the exact high-watermark after the writer died
WRITER_LOG_SUFFIX = ".writer.log"
SPAWN_ABORT_WAIT_S = 5.0  # an interrupted spawn lets its starting writer end by itself this long


# ---- errors ---------------------------------------------------------------------------------
class SubmitError(EventStoreError):
    """Base of what `submit()` raises; the entry was not accepted."""


class WriterClosed(SubmitError):
    """`submit()` after `close()`: the writer accepts nothing more."""

    def __str__(self) -> str:
        return "writer is closed"


class WriterHalted(WriterClosed):
    """Every submit after a halt: the writer is fail-stopped."""

    def __init__(self, reason: HaltReason) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"writer halted: {self.reason}"


class HaltSignaled(SubmitError):
    """Only the submit whose own stall crossed the halt threshold."""

    def __init__(self, stalled_for_s: float, threshold_s: float) -> None:
        super().__init__(stalled_for_s, threshold_s)
        self.stalled_for_s = stalled_for_s
        self.threshold_s = threshold_s

    def __str__(self) -> str:
        return f"submit stalled for {self.stalled_for_s * 1e3:.1f} ms, halt threshold {self.threshold_s * 1e3:.1f} ms"


class InvalidDraft(SubmitError, ValueError):
    """A draft that cannot be stored (bad topic, text, header or size); nothing was written."""


class RecordTooLarge(InvalidDraft):
    """The entry's record is larger than `WriterConfig.max_record_bytes` (1 MiB by default)."""


# ---- configuration ----------------------------------------------------------------------------
class WriterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Writer settings. Defaults suit a trading process: 16 MiB ring (~50k 300-byte entries),
    1 MiB max entry, group commit of up to 2048 entries or 5 ms, a commit at most every 4 ms
    unless someone waits for durability, halt after 250 ms of full ring.

    `min_commit_interval_s` (default 4 ms): a drained batch is committed no sooner than this
    after the previous commit began, unless a thread waits in `wait_durable` (then at once) or
    the batch is full; no entry waits longer than `max_batch_latency_s` either way, and a
    snapshot anchor or a close is handled at once. It bounds
    the writer to ~250 fsynced commits a second, however the trader's submits are spread: a
    trader that submits in bursts (a backtest, a busy market) otherwise had its writer commit
    a few entries at a time (a commit every ~6 entries in the NautilusTrader backtest of
    tools/bench_capture.py), and that writer activity slowed the trader itself on a small
    machine (tapped/untapped wall time 1.5-2.3 there on a 2-core VM, against 1.24-1.70 with
    the interval, 0.03-0.31 above the tap alone with no writer at all). The cost: an entry nobody waits for becomes durable
    up to 4 ms later. 0 commits as soon as the ring is drained. (The sidecar's rule: the
    in-process writer commits on every submit.)

    `idle_linger_s` (default 0): how long the drained writer, with nothing to commit, keeps
    polling the ring (napping ~0.1 ms at a time) before it parks on the semaphore. While it
    lingers a submit makes no syscall; once it parked, the next submit pays one wake-up (several
    microseconds). With the commit interval, a writer woken by a burst sleeps through the next
    ones until its commit (no wake-ups), so parking at once costs a wake-up per commit at most;
    lingering costs the writer's CPU (about a quarter of a core while it lingers) and, on a
    2-core machine, slowed the trader more than the wake-ups did. A positive linger suits a
    trader on a machine with cores to spare whose submits come in sparse single entries."""

    ring_bytes: int = DEFAULT_RING_BYTES
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_batch_entries: int = DEFAULT_MAX_BATCH_ENTRIES
    max_batch_latency_s: float = DEFAULT_MAX_BATCH_LATENCY_S
    halt_threshold_s: float = DEFAULT_HALT_THRESHOLD_S
    idle_linger_s: float = DEFAULT_IDLE_LINGER_S
    min_commit_interval_s: float = DEFAULT_MIN_COMMIT_INTERVAL_S
    ready_timeout_s: float = 10.0
    ack_timeout_s: float = 5.0
    close_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        """Raises ConfigError (`<field>: ...`) for a wrong type or a value out of range."""
        for name in self.__struct_fields__:
            value = getattr(self, name)
            wanted = (int,) if name in _INT_FIELDS else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise ConfigError(f"{name}: Expected `{wanted[-1].__name__}`, got `{type(value).__name__}`")
        if not 4096 <= self.ring_bytes <= MAX_RING_BYTES or self.ring_bytes & (self.ring_bytes - 1):
            raise ConfigError(f"ring_bytes: must be a power of two in [4096, {MAX_RING_BYTES}], got {self.ring_bytes}")
        if not 64 <= self.max_record_bytes <= self.ring_bytes // 4:
            raise ConfigError(
                f"max_record_bytes: must be in [64, ring_bytes/4 = {self.ring_bytes // 4}], got {self.max_record_bytes}"
            )
        if self.max_batch_entries < 1:
            raise ConfigError(f"max_batch_entries: must be >= 1, got {self.max_batch_entries}")
        if not 0 <= self.idle_linger_s <= 1.0:
            raise ConfigError(f"idle_linger_s: must be in [0, 1], got {self.idle_linger_s}")
        if not 0 <= self.min_commit_interval_s <= MAX_TIMEOUT_S:
            raise ConfigError(
                f"min_commit_interval_s: must be in [0, {MAX_TIMEOUT_S:g}] seconds, got {self.min_commit_interval_s!r}"
            )
        for name in ("max_batch_latency_s", "halt_threshold_s", "ready_timeout_s", "ack_timeout_s", "close_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
                raise ConfigError(
                    f"{name}: must be a finite number of seconds in (0, {MAX_TIMEOUT_S:g}], got {value!r}"
                )


_INT_FIELDS = frozenset({"ring_bytes", "max_record_bytes", "max_batch_entries"})


# ---- the draft --------------------------------------------------------------------------------
_U64_MAX = (1 << 64) - 1


def _utf8(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidDraft(f"{what} must be a str, got {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidDraft(f"{what} is not valid UTF-8 text: {exc}") from None


# Topics and payload types already checked and encoded, by exact str: a trader uses a few dozen
# of each, so a draft's text costs a dict lookup (bounded: at most 4,096 texts of at most 256
# characters each; other text is just checked).
_TEXT_MEMO_MAX = 4096
_TEXT_MEMO_CHARS = 256
_topics: dict[str, bytes] = {}
_payload_types: dict[str, bytes] = {}


def _text_bytes(text: object, what: str, memo: dict[str, bytes], check: Callable[[object], None] | None = None) -> bytes:
    """`text` checked (`check`, then UTF-8) and encoded, from `memo` when it was seen before."""
    if type(text) is str:
        known = memo.get(text)
        if known is not None:
            return known
    if check is not None:
        check(text)
    encoded = _utf8(text, what)
    if type(text) is str and len(text) <= _TEXT_MEMO_CHARS and len(memo) < _TEXT_MEMO_MAX:
        memo[text] = encoded
    return encoded


def _check_topic(topic: object) -> None:
    try:
        validate_topic(topic)
    except (TypeError, ValueError) as exc:
        raise InvalidDraft(str(exc)) from None


def _checked_keys(index_keys: Sequence[IndexKey]) -> tuple[IndexKey, ...]:
    if type(index_keys) is tuple:
        keys = index_keys
    else:
        try:
            if isinstance(index_keys, (str, bytes)):
                raise TypeError
            keys = tuple(index_keys)
        except TypeError:
            raise InvalidDraft(f"index keys must be a sequence of nes.IndexKey values, got {type(index_keys).__name__}") from None
    if len(keys) > MAX_INDEX_KEYS:
        raise InvalidDraft(f"an entry carries at most {MAX_INDEX_KEYS} index keys, got {len(keys)}")
    for item in keys:
        if not isinstance(item, IndexKey) or not isinstance(item.kind, IndexKind):
            raise InvalidDraft(f"index keys must be nes.IndexKey values, got {item!r}")
        key = item.key
        # printable-or-not ASCII of 1..MAX bytes is valid as it is; anything else gets the full check
        if type(key) is not str or not 0 < len(key) <= MAX_INDEX_KEY_BYTES or not key.isascii():
            problem = index_key_problem(key)
            if problem is not None:
                raise InvalidDraft(problem)
    return keys


class EntryDraft:
    """What a caller submits. Validated and pre-encoded at construction, so `submit()` only
    stamps seq and ts_publish in front of bytes that are already laid out (nes.record ENTRY)."""

    __slots__ = ("topic", "payload_type", "payload", "ts_init", "headers", "index_keys", "_template")

    def __init__(
        self,
        topic: str,
        payload_type: str,
        payload: bytes,
        ts_init: int,
        headers: Headers | None = None,
        index_keys: Sequence[IndexKey] = (),
    ) -> None:
        topic_b = _text_bytes(topic, "topic", _topics, _check_topic)
        type_b = _text_bytes(payload_type, "payload_type", _payload_types)
        if type(payload) is not bytes:
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise InvalidDraft(f"payload must be bytes, got {type(payload).__name__}")
            payload = bytes(payload)
        if not isinstance(ts_init, int) or not 0 <= ts_init <= _U64_MAX:
            raise InvalidDraft(f"ts_init must be an int in [0, 2**64), got {ts_init!r}")
        if headers is None:
            headers = Headers.empty()
        elif not isinstance(headers, Headers):
            raise InvalidDraft(f"headers must be nes.Headers, got {type(headers).__name__}")
        keys = index_keys if type(index_keys) is tuple and not index_keys else _checked_keys(index_keys)
        self.topic = topic
        self.payload_type = payload_type
        self.payload = payload
        self.ts_init = ts_init
        self.headers = headers
        self.index_keys = keys
        self._template = entry_template(topic_b, type_b, payload, headers, keys)

    @classmethod
    def without_indices(
        cls, topic: str, payload_type: str, payload: bytes, ts_init: int, headers: Headers | None = None
    ) -> EntryDraft:
        """A draft that files no index keys."""
        return cls(topic, payload_type, payload, ts_init, headers, ())

    @property
    def record_kind(self) -> int:
        """The ring record kind of `record()`: FRAME without index keys, else ENTRY."""
        return self._template.kind

    def record(self, seq: int, ts_publish: int) -> bytes:
        """The ring record for this draft at (seq, ts_publish) (kind: `record_kind`)."""
        return self._template.record(seq, self.ts_init, ts_publish)

    def __repr__(self) -> str:
        return (
            f"EntryDraft(topic={self.topic!r}, payload_type={self.payload_type!r}, "
            f"payload=<{len(self.payload)} bytes>, ts_init={self.ts_init}, headers={self.headers!r}, "
            f"index_keys={self.index_keys!r})"
        )


# ---- the writer -------------------------------------------------------------------------------
class EventStoreWriter:
    """Trader-side writer. Build with `spawn()` (ring + sidecar process) or `in_process()`."""

    def __init__(
        self,
        config: WriterConfig,
        halt: HaltCallback,
        clock_ns: Callable[[], int],
        durable_high_watermark: int,
    ) -> None:
        self.config = config
        self._halt_hook = halt
        self._clock_ns = clock_ns
        self._next_seq = durable_high_watermark + 1
        self._last_ts_publish = 0
        self._halted = False
        self._closed = False
        self._halt_reason: HaltReason | None = None
        self._fired: set[type] = set()
        self._halt_lock = threading.Lock()
        notify_r, notify_w = os.pipe()
        os.set_blocking(notify_r, False)
        self._notify_r, self._notify_w = notify_r, notify_w
        # transport (set by the constructors below)
        self._ring: Ring | None = None
        self._core: WriterCore | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: ControlChannel | None = None
        self._acks: queue.Queue[AnchorAck | CloseAck | None] = queue.Queue()
        self._control_thread: threading.Thread | None = None
        self._writer_exited = threading.Event()
        self._stopping = False  # set before we end the sidecar ourselves: its EOF is expected
        self._final_high_watermark = durable_high_watermark  # kept when the ring is released
        # threads: submits (and every other push into the ring) hold `_submit_lock` (re-entrant:
        # a halt hook may abandon the writer from inside a stalled submit); anchor and close
        # requests hold `_ack_lock` until their ack, so acks pair with their requests.
        self._submit_lock = threading.RLock()
        self._ack_lock = threading.Lock()
        self._closing = False  # close() has pushed RunEnded: later submits are refused
        # waiters in wait_durable() count themselves in `_ring_users`; `_release` sets
        # `_ring_closing`, wakes them and unmaps the ring once the count is back to 0
        self._ring_cond = threading.Condition(threading.Lock())
        self._ring_users = 0
        self._ring_closing = False
        self._reason_ready = threading.Event()  # set with the first halt reason
        self._exact_high_watermark: int | None = None  # read from the run file after a death
        self._run_path: Path | None = None
        self._writer_log: Path | None = None

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def in_process(
        cls,
        backend: RunStoreBase,
        config: WriterConfig | None = None,
        halt: HaltCallback = noop_halt,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> EventStoreWriter:
        """Synchronous mode: each submit is committed (one transaction) before it returns."""
        _check_writer_args(config, halt)
        if not isinstance(backend, RunStoreBase):
            raise InvalidArgument(f"backend must be an LmdbBackend or MemoryBackend, got {type(backend).__name__}")
        core = WriterCore(backend)
        writer = cls(config or WriterConfig(), halt, clock_ns, core.durable_high_watermark)
        writer._core = core
        return writer

    @classmethod
    def spawn(
        cls,
        base_dir: str | os.PathLike[str],
        manifest: RunManifest,
        config: WriterConfig | None = None,
        halt: HaltCallback = noop_halt,
        clock_ns: Callable[[], int] = time.time_ns,
        *,
        hold_fds: Sequence[int] = (),
    ) -> EventStoreWriter:
        """Create the ring, start the writer sidecar process, which opens the run file
        `<base>/<instance_id>/<run_id>.lmdb`, and wait for READY. `hold_fds`: descriptors the
        writer process keeps open (unused) for its whole life; the kernel passes the instance
        lock, so a writer that outlives its trader keeps the instance until it has drained."""
        from nes.bootrecord import reclaim_dead_boots, remove_boot_record, write_boot_record
        from shm.ring import Ring, RingNames  # the ring is only needed for the process transport

        _check_writer_args(config, halt)
        if not isinstance(manifest, RunManifest):
            raise InvalidArgument(f"manifest must be a RunManifest, got {type(manifest).__name__}")
        config = config or WriterConfig()
        run_path = layout.run_file_path(Path(base_dir), manifest.instance_id, manifest.run_id)
        names = RingNames.fresh()
        try:
            layout.make_private_dirs(run_path.parent)
            reclaim_dead_boots(run_path.parent)  # rings of earlier boots that died before READY
            record = write_boot_record(run_path.parent, names.token)  # before the names exist
        except OSError as exc:  # not a directory, no permission, disk full
            from nes.backend.lmdb import classify_lmdb_error

            raise classify_lmdb_error(exc, f"create {run_path.parent}") from exc
        log_path = run_path.with_name(run_path.name[: -len(layout.RUN_FILE_SUFFIX)] + WRITER_LOG_SUFFIX)
        ring: Ring | None = None
        proc: subprocess.Popen[bytes] | None = None
        channel: ControlChannel | None = None
        ours = theirs = None
        try:
            try:
                ring = Ring.create(config.ring_bytes, config.max_record_bytes, names)
            except (ValueError, OSError, posix_ipc.Error) as exc:
                raise _ring_create_error(config.ring_bytes, exc) from None
            ours, theirs = socket.socketpair()
            args = msgspec.json.encode(
                {
                    "base_dir": str(Path(base_dir)),
                    "manifest": manifest,
                    "ring": ring.names,
                    "max_batch_entries": config.max_batch_entries,
                    "max_batch_latency_s": config.max_batch_latency_s,
                    "idle_linger_s": config.idle_linger_s,
                    "min_commit_interval_s": config.min_commit_interval_s,
                    "log_path": str(log_path),
                }
            )
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                # Not the trader's stdout/stderr: an orphaned writer must not keep a
                # supervisor's pipes open (it would wait for EOF until the writer exits).
                proc = subprocess.Popen(
                    worker_command("workers.writer", "--control-fd", str(theirs.fileno())),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=log_fd,
                    pass_fds=(theirs.fileno(), *hold_fds),
                    close_fds=True,
                    env=worker_env(),
                    process_group=0,  # a terminal's Ctrl-C is the trader's; the writer drains on EOF
                )
            finally:
                os.close(log_fd)
            theirs.close()
            assert proc.stdin is not None
            proc.stdin.write(args)
            proc.stdin.close()
            channel = ControlChannel(ours)
            ours.settimeout(config.ready_timeout_s)
            try:
                first = channel.recv()
            except (TimeoutError, ControlProtocolError, OSError) as exc:
                first = None
                failure = f"no READY from writer within {config.ready_timeout_s}s: {exc}"
            else:
                failure = "writer exited before READY"
            finally:
                ours.settimeout(None)
            if not isinstance(first, Ready):
                if isinstance(first, Halt):
                    raise _open_error(first.reason)
                proc.kill()
                raise Backend(f"{failure} (exit code {proc.wait()})")
            ring.unlink_names()  # the writer is attached: nothing is left in /dev/shm whoever dies
            remove_boot_record(record)
        except BaseException:
            # Also on KeyboardInterrupt / a boot signal: nothing of a failed spawn stays behind.
            # Our end closed (EOF) and the names unlinked, a writer that is still starting ends
            # by itself (its attach fails, or it drains nothing and exits): killed mid-way, it
            # could leave a run file it had half created. A writer that failed is killed.
            for sock in (channel, ours, theirs):
                if sock is not None:
                    sock.close()
            if ring is not None:
                ring.close()  # the owner unlinks its names
            if proc is not None:
                try:
                    proc.wait(timeout=SPAWN_ABORT_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            remove_boot_record(record)
            _remove_if_empty(log_path)
            raise
        writer = cls(config, halt, clock_ns, first.high_watermark)
        writer._ring = ring
        writer._proc = proc
        writer._channel = channel
        writer._run_path = run_path
        writer._writer_log = log_path
        writer._control_thread = threading.Thread(target=writer._control_loop, name="nes-writer-control", daemon=True)
        writer._control_thread.start()
        return writer

    # -- state ---------------------------------------------------------------------------------
    @property
    def halted(self) -> bool:
        """True once a halt reason is known (`halt_reason`). Right after the writer died,
        submits are refused a moment before it is: they wait for the reason and raise it."""
        return self._halt_reason is not None

    @property
    def halt_reason(self) -> HaltReason | None:
        """The first halt reason, or None."""
        return self._halt_reason

    @property
    def control_fd(self) -> int:
        """Readable once the writer has halted (for `loop.add_reader`); read it with `os.read`."""
        return self._notify_r

    @property
    def high_watermark(self) -> int:
        """The durable high-watermark: every seq at or below it is committed and fsynced.
        After the writer died it is the run file's exact value (once read, see `halt_reason`)."""
        if self._core is not None:
            return self._core.durable_high_watermark
        with self._ring_cond:  # the ring cannot be released while we read it
            ring = self._ring
            return self._final_high_watermark if ring is None else self._durable_in(ring)

    def _durable_in(self, ring: Ring) -> int:
        """The ring's durable high-watermark, or the exact one read after the writer died."""
        exact = self._exact_high_watermark
        value = ring.durable_high_watermark
        return value if exact is None or exact < value else exact

    @property
    def next_seq(self) -> int:
        """The seq the next accepted submit will get."""
        return self._next_seq

    @property
    def writer_pid(self) -> int | None:
        """The writer sidecar's process id (None in-process)."""
        return None if self._proc is None else self._proc.pid

    def wait_durable(self, seq: int, timeout: float) -> bool:
        """True once `seq` is durable; False on timeout, or if the writer halted, died or was
        closed (by any thread) before it was. Safe from any number of threads at once.

        `seq` is an int; `timeout` a finite number of seconds (<= 0 only checks). Anything
        else raises InvalidArgument."""
        _check_wait_args(seq, timeout)
        if self._core is not None:
            return self._core.durable_high_watermark >= seq
        deadline = time.monotonic() + timeout
        with self._ring_cond:
            ring = self._ring
            if ring is None or self._ring_closing:  # released: its last value is final
                return self._final_high_watermark >= seq
            self._ring_users += 1  # the ring stays mapped until we leave
        try:
            while True:
                if self._durable_in(ring) >= seq:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._writer_exited.is_set() or self._ring_closing:
                    return self._durable_in(ring) >= seq
                ring.wait_durable_at_least(seq, min(remaining, 0.05))
        finally:
            with self._ring_cond:
                self._ring_users -= 1
                if self._ring_users == 0:
                    self._ring_cond.notify_all()

    # -- the hot path --------------------------------------------------------------------------
    def submit(self, draft: EntryDraft) -> int:
        """Stamp seq and ts_publish and push the entry; returns its seq. Raises InvalidDraft (not
        an EntryDraft), RecordTooLarge, WriterClosed, WriterHalted or HaltSignaled; nothing is
        written then. Thread-safe: concurrent submits are serialised, each gets its own seq."""
        lock = self._submit_lock
        lock.acquire()  # explicit: about half the cost of a `with` block on this path
        try:
            if self._halted:
                raise self._halted_error()
            if self._closed or self._closing:
                raise WriterClosed()
            ts_publish = self._clock_ns()
            if ts_publish <= self._last_ts_publish:
                ts_publish = self._last_ts_publish + 1
            seq = self._next_seq
            try:
                template = draft._template
            except AttributeError:
                raise InvalidDraft(f"submit expects an EntryDraft, got {type(draft).__name__}") from None
            record = template.record(seq, draft.ts_init, ts_publish)  # draft.record, inlined
            if len(record) > self.config.max_record_bytes:
                raise RecordTooLarge(
                    f"entry record of {len(record)} bytes exceeds max_record_bytes {self.config.max_record_bytes}"
                )
            core = self._core
            if core is not None:
                self._commit_in_process(core, template.kind, record)
            elif not self._ring.try_push(template.kind, record):  # type: ignore[union-attr]  # set until closed
                self._push_when_space(template.kind, record)
            self._next_seq = seq + 1
            self._last_ts_publish = ts_publish
            return seq
        finally:
            lock.release()

    def _halted_error(self) -> WriterHalted:
        """The error of a submit after a halt. Right after the writer died the reason is being
        completed (its exact high-watermark read from the run file): wait for it, bounded."""
        if self._halt_reason is None:
            self._reason_ready.wait(DEATH_READ_TIMEOUT_S + 5.0)
        reason = self._halt_reason
        if reason is None:  # pragma: no cover - the control thread always sets one
            reason = WriterDied(self.high_watermark, "writer died (exact high-watermark not read)")
        return WriterHalted(reason)

    def _commit_in_process(self, core: WriterCore, kind: int, record: bytes) -> None:
        try:
            core.add_entries([(kind, record)])
            core.flush()
        except Exception as err:  # noqa: BLE001 - a failed commit is a halt with its reason
            reason = core.halt_reason(err)
            self._halt(reason)
            raise WriterHalted(reason) from err

    def _push_when_space(self, kind: int, record: bytes) -> None:
        """The ring is full: wait for space up to the halt threshold, then halt (never drop)."""
        threshold = self.config.halt_threshold_s
        start = time.monotonic()
        ring = self._ring
        assert ring is not None
        while True:
            if self._halted:  # first: a dead writer's reason wins over the stall it causes
                raise self._halted_error()
            elapsed = time.monotonic() - start
            if elapsed >= threshold:
                self._halt(BackpressureStall(ring.durable_high_watermark, elapsed, threshold, self._next_seq - 1))
                raise HaltSignaled(elapsed, threshold)
            if ring.try_push(kind, record):
                return
            ring.wait_for_space(min(threshold - elapsed, 0.01))

    # -- control records -----------------------------------------------------------------------
    def record_snapshot_anchor(self, blob_ref: str, content_hash: str) -> SnapshotAnchor:
        """Anchor a cache snapshot at the durable high-watermark covering every entry submitted
        before this call."""
        if self._halted:
            raise self._halted_error()
        if self._closed or self._closing:
            raise WriterClosed()
        for value, what, limit in ((blob_ref, "blob_ref", MAX_BLOB_REF_BYTES), (content_hash, "content_hash", 256)):
            if not 1 <= len(_utf8(value, what)) <= limit:
                raise InvalidDraft(f"{what} must be 1..{limit} UTF-8 bytes")
        core = self._core
        if core is not None:
            with self._submit_lock:
                try:
                    return core.record_anchor(blob_ref, content_hash)
                except Exception as err:  # noqa: BLE001
                    reason = core.halt_reason(err)
                    self._halt(reason)
                    raise
        record = encode_anchor_request(blob_ref, content_hash)
        if len(record) > self.config.max_record_bytes:
            raise RecordTooLarge(
                f"anchor record of {len(record)} bytes exceeds max_record_bytes {self.config.max_record_bytes}"
            )
        with self._ack_lock:  # one request in flight at a time: the next ack is ours
            self._push_control(KIND_ANCHOR, record)
            ack = self._await_ack(self.config.ack_timeout_s, "snapshot anchor")
        if not isinstance(ack, AnchorAck) or ack.anchor is None:
            raise Backend(f"snapshot anchor failed: {ack.error if isinstance(ack, AnchorAck) else ack}")
        return ack.anchor

    def _push_control(self, kind: int, record: bytes) -> None:
        """Push a control record after every entry submitted before (under the submit lock)."""
        with self._submit_lock:
            if self._halted:
                raise self._halted_error()
            if self._closed:
                raise WriterClosed()
            ring = self._ring
            assert ring is not None
            if not ring.try_push(kind, record):
                self._push_when_space(kind, record)
            ring.wake_consumer()  # a writer dozing through its commit interval: the ack is awaited now

    def _await_ack(self, timeout_s: float, what: str) -> AnchorAck | CloseAck | None:
        start = time.monotonic()
        try:
            ack = self._acks.get(timeout=timeout_s)
        except queue.Empty:
            elapsed = time.monotonic() - start
            detail = f"{what} ack stalled for {elapsed * 1e3:.1f} ms, timeout {timeout_s * 1e3:.1f} ms"
            self._halt(BackendError(self.high_watermark, detail))
            raise Backend(detail) from None
        if ack is None:
            self._acks.put(None)  # the channel is gone for every later request too
            if self._halted:
                raise self._halted_error()
            raise WriterHalted(WriterDied(self.high_watermark, "control channel closed"))
        return ack

    def close(self, run_ended: EntryDraft | None = None) -> int:
        """Append RunEnded, seal the run Ended, stop the writer; returns the final high-watermark.

        A halted writer is not sealed (the next boot's recovery sweep owns that): the sidecar is
        told to drain and exit, and `WriterHalted` is raised. Safe against other threads: their
        later submits get `WriterClosed`, their waits their result."""
        with self._submit_lock:
            if self._closed or self._closing:
                raise WriterClosed()
            if self._halted:
                self._closed = True
                halted = True
            else:
                halted = False
                if run_ended is None:
                    run_ended = EntryDraft(RUN_ENDED_TOPIC, RUN_ENDED_TYPE, b"", self._clock_ns())
                self.submit(run_ended)
                self._closing = True  # after RunEnded: nothing may follow it
        if halted:
            self._shutdown()
            raise self._halted_error()
        core = self._core
        if core is not None:
            with self._submit_lock:
                try:
                    final = core.close()
                except Exception as err:  # noqa: BLE001
                    self._halt(core.halt_reason(err))
                    raise
                self._closed = True
            self._release()
            return final
        try:
            with self._ack_lock:
                self._push_control(KIND_CLOSE, b"")
                ack = self._await_ack(self.config.close_timeout_s, "close")
        except BaseException:
            with self._submit_lock:
                self._closed = True
            self._shutdown()
            raise
        with self._submit_lock:
            self._closed = True
        self._shutdown()
        if not isinstance(ack, CloseAck) or ack.high_watermark is None:
            raise Backend(f"close failed: {ack.error if isinstance(ack, CloseAck) else ack}")
        return ack.high_watermark

    def abandon(self, wait_s: float | None = None) -> None:
        """Stop without sealing (what a crash leaves): the sidecar commits everything pushed,
        then exits; the run stays Running for the next boot's recovery sweep. A sidecar still
        running after `wait_s` (default `close_timeout_s`) is killed."""
        with self._submit_lock:  # no submit is half-way into the ring
            if self._closed:
                return
            self._closed = True
        self._shutdown(wait_s)

    def __enter__(self) -> EventStoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            if self._halted:
                self.abandon()
            else:
                self.close()

    # -- internals -----------------------------------------------------------------------------
    def _halt(self, reason: HaltReason) -> None:
        with self._halt_lock:
            first = self._halt_reason is None
            if first:
                self._halt_reason = reason
            self._halted = True
            fire = type(reason) not in self._fired
            self._fired.add(type(reason))
        self._reason_ready.set()
        if first and self._notify_w >= 0:
            try:
                os.write(self._notify_w, b"H")
            except OSError:
                pass  # released concurrently: nobody watches control_fd any more
        if fire:
            hw = reason.durable_high_watermark
            log.error("writer halted (%s): %s [high-watermark %d]", type(reason).__name__, reason, hw)
            try:
                self._halt_hook(reason)
            except Exception:  # noqa: BLE001 - a failing hook must not take the writer's threads down
                log.exception("halt hook raised on %s", reason)

    def _control_loop(self) -> None:
        assert self._channel is not None and self._proc is not None
        detail = "control channel EOF"
        sidecar_halted = False
        try:
            while True:
                try:
                    message = self._channel.recv()
                except (OSError, ControlProtocolError) as exc:
                    message, detail = None, f"control channel failed: {exc}"
                    self._proc.kill()  # a sidecar we cannot understand must not go on committing
                if message is None:
                    break
                if isinstance(message, Halt):
                    sidecar_halted = True  # it exits next; that exit is not a death
                    self._halt(message.reason)
                elif isinstance(message, CloseAck):
                    self._stopping = True  # the sidecar exits right after a close ack
                    self._acks.put(message)
                elif isinstance(message, AnchorAck):
                    self._acks.put(message)
            died = not self._stopping and not sidecar_halted
            if died:
                self._halted = True  # refuse submits at once; the reason follows below
            try:
                code = self._proc.wait(timeout=5.0)
                detail += f", writer exit code {code}"
            except subprocess.TimeoutExpired:
                self._proc.kill()  # it must be gone before its file tells the final value
                code = self._proc.wait()
                detail += f", writer still running (killed, exit code {code})"
            if died:  # halt first: a woken waiter must see it (also if abandoned meanwhile)
                self._halt(WriterDied(self._high_watermark_after_death(), detail))
        finally:
            self._reason_ready.set()
            self._writer_exited.set()
            self._acks.put(None)

    def _high_watermark_after_death(self) -> int:
        """The writer is gone: its run file holds the exact durable high-watermark (the ring's
        can lag by the commit that was in flight). Read it in a worker; if that fails, the
        ring's value (a lower bound) is all we know."""
        from nes.durable import durable_high_watermark_in_worker

        with self._ring_cond:
            ring = self._ring
            published = self._final_high_watermark if ring is None else ring.durable_high_watermark
        exact = None
        if self._run_path is not None:
            exact = durable_high_watermark_in_worker(self._run_path, DEATH_READ_TIMEOUT_S)
        if exact is None:
            log.error("cannot read the dead writer's run file: high-watermark %d is a lower bound", published)
            return published
        self._exact_high_watermark = max(exact, published)
        return self._exact_high_watermark

    def _shutdown(self, wait_s: float | None = None) -> None:
        """Tell the sidecar we are done (EOF), wait for it, release the ring and channel."""
        self._stopping = True
        channel = self._channel
        if channel is not None:
            channel.shutdown_write()
            assert self._proc is not None
            try:
                self._proc.wait(timeout=self.config.close_timeout_s if wait_s is None else wait_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._control_thread is not None and self._control_thread is not threading.current_thread():
                self._control_thread.join(timeout=DEATH_READ_TIMEOUT_S + 10.0)
            self._channel = None
            channel.close()
        self._release()
        if self._writer_log is not None and self._proc is not None and self._proc.poll() is not None:
            _remove_if_empty(self._writer_log)

    def _release(self) -> None:
        """Idempotent: the ring is closed once, after every thread waiting in it has left (its
        last durable high-watermark kept), and the notify pipe's fds are closed once (never a
        number some later open reused)."""
        with self._ring_cond:
            ring = self._ring
            if ring is not None:
                self._ring_closing = True
                while self._ring_users:
                    ring.wake_durable_waiters()
                    self._ring_cond.wait(0.01)
                self._final_high_watermark = self._durable_in(ring)
                self._ring = None
                ring.close()
        with self._halt_lock:
            for fd in (self._notify_r, self._notify_w):
                if fd >= 0:
                    os.close(fd)
            self._notify_r = self._notify_w = -1


def _remove_if_empty(path: Path) -> None:
    try:
        if path.stat().st_size == 0:
            path.unlink()
    except FileNotFoundError:
        pass


def _open_error(reason: HaltReason) -> EventStoreError:
    """The writer could not open the run: report it as the backend error it was."""
    if isinstance(reason, BackendDisk):
        return Disk(reason.msg)
    if isinstance(reason, BackendCorrupted):
        return Corrupted(reason.msg)
    return Backend(getattr(reason, "msg", str(reason)))


def _check_wait_args(seq: object, timeout: object) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise InvalidArgument(f"wait_durable: seq must be an int, got {type(seq).__name__}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidArgument(f"wait_durable: timeout must be a number of seconds, got {type(timeout).__name__}")
    if not math.isfinite(timeout):
        raise InvalidArgument(f"wait_durable: timeout must be a finite number of seconds, got {timeout!r}")


def _ring_create_error(ring_bytes: int, exc: BaseException) -> EventStoreError:
    """Why the OS refused the ring segment: the file-size limit (Disk) or anything else (Backend)."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and ring_bytes > limit:
        return Disk(f"ring of {ring_bytes} bytes exceeds the file-size limit RLIMIT_FSIZE ({limit} bytes)")
    return Backend(f"cannot create a ring of {ring_bytes} bytes: {exc}")


def _check_writer_args(config: object, halt: object) -> None:
    if config is not None and not isinstance(config, WriterConfig):
        raise InvalidArgument(f"config must be a WriterConfig or None, got {type(config).__name__}")
    if not callable(halt):
        raise InvalidArgument(f"halt must be callable (called with a HaltReason), got {type(halt).__name__}")
