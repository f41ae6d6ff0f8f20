"""The writer sidecar process: `python -m workers.writer --control-fd N` (arguments as JSON on stdin).

Thin by design: parse arguments, open the run (`LmdbBackend.open_run`), attach the ring, run
`nes.sidecar.run_sidecar`. A failure to open is reported as a `Halt` before READY. Its stdout
is /dev/null and its stderr the log file `log_path` (never the trader's own stdout/stderr),
which it removes on a normal exit if nothing was written to it.

Fault hook for tests: `NES_WRITER_FAULT=stop-before-publish:N` stops this process (SIGSTOP)
after the first commit that makes seq N durable, before that high-watermark is published in
the ring (the moment when the disk is ahead of what the trader was told).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import threading

import msgspec

from nes.backend.lmdb import LmdbBackend
from nes.control import ControlChannel, Halt
from nes.halt import from_backend_error
from nes.manifest import RunManifest
from nes.sidecar import run_sidecar
from shm.ring import Ring, RingNames


WRITER_FAULT_ENV = "NES_WRITER_FAULT"
SWITCH_INTERVAL_S = 0.0005
GC_GEN0_THRESHOLD = 10_000


class WriterArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    base_dir: str
    manifest: RunManifest
    ring: RingNames
    max_batch_entries: int
    max_batch_latency_s: float
    idle_linger_s: float
    min_commit_interval_s: float
    log_path: str | None = None  # our stderr (the trader's is not ours to hold); removed if empty


def main(argv: list[str] | None = None) -> int:
    """Run the sidecar; on a normal exit, remove our stderr log file if nothing was written."""
    code, log_path = _main(argv)
    if log_path is not None:
        try:
            if os.fstat(2).st_size == 0 and os.path.samestat(os.fstat(2), os.stat(log_path)):
                os.unlink(log_path)
        except OSError:
            pass
    return code


def _main(argv: list[str] | None) -> tuple[int, str | None]:
    parser = argparse.ArgumentParser(prog="nes-writer")
    parser.add_argument("--control-fd", type=int, required=True)
    ns = parser.parse_args(argv)
    # Ctrl-C in the trader's terminal must not kill the writer mid-batch: the trader's EOF
    # (it exits or closes) is what ends this process, after it committed what was pushed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nor a hangup: orphaned while stopped (its trader died), the kernel sends it SIGHUP then
    # SIGCONT; it must go on to drain and exit on the EOF like any orphan.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A file-size limit must surface as EFBIG (a BackendDisk halt), not kill the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # The commit thread must get the GIL back soon after an fsync returns, not after the
    # default 5 ms switch interval behind the decode/hash loop.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Each entry allocates a few short-lived tuples; at the default gen-0 threshold (700) the
    # cyclic GC would run several times per batch, about 5 % of the writer's time. Freeze what
    # start-up allocated and collect the young generation every 10k allocations instead.
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)
    channel = ControlChannel.from_fd(ns.control_fd)
    args = msgspec.json.decode(sys.stdin.buffer.read(), type=WriterArgs)
    return _run(channel, args), args.log_path


class _StopBeforePublish:
    """The ring, except that the first publication of a high-watermark >= `at` is preceded by
    a SIGSTOP of this process (the fault hook; see the module docstring)."""

    def __init__(self, ring: Ring, at: int) -> None:
        self._ring = ring
        self._at = at

    def __getattr__(self, name: str) -> object:
        return getattr(self._ring, name)

    def publish_durable(self, high_watermark: int) -> None:
        if self._at and high_watermark >= self._at:
            self._at = 0
            # Directed at this thread: it stops before it returns (a process-directed signal may
            # be taken by another thread, and this one would publish before the stop).
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        self._ring.publish_durable(high_watermark)


def _with_fault_hook(ring: Ring) -> Ring | _StopBeforePublish:
    fault = os.environ.get(WRITER_FAULT_ENV, "")
    if fault.startswith("stop-before-publish:"):
        return _StopBeforePublish(ring, int(fault.split(":", 1)[1]))
    return ring


def _run(channel: ControlChannel, args: WriterArgs) -> int:
    backend = LmdbBackend(args.base_dir, exclusive=True)  # commits run on the sidecar's commit thread
    try:
        try:
            backend.open_run(args.manifest)
            ring = Ring.attach(args.ring)
        except Exception as err:  # noqa: BLE001 - reported to the trader, which raises it
            channel.send(Halt(from_backend_error(err, 0)))
            return 2
        with ring:
            try:
                return run_sidecar(
                    _with_fault_hook(ring),
                    channel,
                    backend,
                    args.max_batch_entries,
                    args.max_batch_latency_s,
                    args.idle_linger_s,
                    min_commit_interval_s=args.min_commit_interval_s,
                )
            finally:
                ring.unlink_names()  # normally already done by the trader; covers its early death
    finally:
        backend.close()
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
