"""Shared builders for backend contract tests, plus a disk-full child-process entry point.

`python tests/backend_helpers.py diskfull <base_dir> <fsize_limit_bytes>` (with the repo root on
PYTHONPATH) lowers RLIMIT_FSIZE, ignores SIGXFSZ, appends batches to an LmdbBackend until one
fails, and prints one JSON line: the acknowledged high-watermark and the error type/text.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable

from nes.backend.base import AppendEntry, IndexKey, IndexKind
from nes.entry import EventStoreEntry
from nes.headers import Headers
from nes.manifest import RunManifest

INSTANCE_ID = "trader-001"
RUN_ID = "1700000000-0000abcd"
START_TS_INIT = 1_700_000_000


def manifest(run_id: str = RUN_ID, instance_id: str = INSTANCE_ID, start_ts_init: int = START_TS_INIT) -> RunManifest:
    return RunManifest(
        run_id=run_id,
        instance_id=instance_id,
        start_ts_init=start_ts_init,
        binary_hash="deadbeef",
        crate_versions="feedface",
        config_hash="cafebabe",
    )


def build_entry(
    seq: int,
    ts_init: int | None = None,
    payload: bytes = b"\x01\x02\x03\x04",
    headers: Headers | None = None,
    topic: str = "exec.command.SubmitOrder",
) -> EventStoreEntry:
    ts_init = 10 + seq - 1 if ts_init is None else ts_init
    return EventStoreEntry.build(seq, ts_init, ts_init + 1, topic, "SubmitOrder", payload, headers or Headers.empty())


def appends(lo: int, hi: int, *, payload_size: int | None = None) -> list[AppendEntry]:
    out = []
    for seq in range(lo, hi + 1):
        payload = b"\x01\x02\x03\x04" if payload_size is None else (seq.to_bytes(8, "big") * (payload_size // 8 + 1))[:payload_size]
        out.append(AppendEntry.without_indices(build_entry(seq, payload=payload)))
    return out


def with_keys(entry: EventStoreEntry, *keys: tuple[IndexKind, str]) -> AppendEntry:
    return AppendEntry(entry, tuple(IndexKey(kind, key) for kind, key in keys))


def seqs(entries: Iterable[EventStoreEntry]) -> list[int]:
    return [e.seq for e in entries]


BackendFactory = Callable[[], object]


def _diskfull_child(base_dir: str, limit: int) -> None:
    import resource
    import signal

    from nes.backend.lmdb import LmdbBackend
    from nes.errors import EventStoreError

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    backend = LmdbBackend(base_dir, map_size=1 << 20)
    backend.open_run(manifest())
    # Only limit file growth after the fresh file exists, so creation itself succeeds.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    acknowledged = 0
    result: dict[str, object] = {}
    batch = 50
    try:
        for _ in range(100_000):
            lo = acknowledged + 1
            acknowledged = backend.append_batch(appends(lo, lo + batch - 1, payload_size=500))
        result["error_type"] = None
    except EventStoreError as exc:
        result["error_type"] = type(exc).__name__
        result["error"] = str(exc)
        result["hwm_after_error"] = backend.high_watermark()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        result["error_type"] = "unexpected:" + type(exc).__name__
        result["error"] = repr(exc)
    result["acknowledged"] = acknowledged
    result["batch"] = batch
    print(json.dumps(result), flush=True)
    backend.close()
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "diskfull":
        _diskfull_child(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(f"usage: {sys.argv[0]} diskfull <base_dir> <limit>")
