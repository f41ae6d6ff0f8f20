"""Build real LMDB run files directly with py-lmdb, following nes.backend.layout.

These write the layout by hand (not through LmdbBackend) so tests and tools can produce states
a real writer refuses to: gaps, swapped values, anchors past the watermark, broken markers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import lmdb

from nes.backend import integrity, layout
from nes.codec import seq_key
from nes.entry import EventStoreEntry, encode_stored_value
from nes.headers import Headers
from nes.manifest import RunManifest, RunStatus, encode_manifest
from nes.snapshot import SnapshotAnchor, encode_anchor

MAP_SIZE = 64 * 1024 * 1024
INSTANCE_ID = "trader-001"
RUN_ID = "1700000000000000000-0badcafe"
START_TS_INIT = 1_700_000_000_000_000_000


def payload_for(seq: int, size: int = 48) -> bytes:
    """A distinctive payload, easy to find in the raw file bytes."""
    tag = f"PAYLOAD-{seq:08d}-".encode()
    return (tag * (size // len(tag) + 1))[:size]


def build_entry(seq: int, payload_size: int = 48) -> EventStoreEntry:
    ts_init = START_TS_INIT + seq * 1_000
    return EventStoreEntry.build(
        seq, ts_init, ts_init + 7, "exec.event.OrderFilled", "OrderFilled", payload_for(seq, payload_size), Headers.empty()
    )


def make_run_file(
    path: str | os.PathLike[str],
    entries: int = 10,
    status: RunStatus = RunStatus.Ended,
    anchor: SnapshotAnchor | None = None,
    *,
    skip_seqs: Iterable[int] = (),
    index: dict[layout.IndexKind, dict[bytes, list[int]]] | None = None,
    payload_size: int = 48,
    run_id: str = RUN_ID,
    manifest_overrides: dict[str, object] | None = None,
    format_version: int | None = layout.FORMAT_VERSION,
    raw_anchors: dict[bytes, bytes] | None = None,
    map_size: int = MAP_SIZE,
    digests: bool = True,
) -> Path:
    """Write a run file with entries 1..`entries` (minus `skip_seqs`) and return its path.

    A sealed status gets the manifest a real seal writes (high_watermark = last seq,
    end_ts_init = max ts_init, or None for an empty run). With `digests` (the default) the file
    carries what a real writer adds (`nes.backend.integrity`): one commit record over all the
    entries and index rows, the manifest digest and each anchor's digest.
    """
    path = Path(path)
    skip = set(skip_seqs)
    built = [build_entry(seq, payload_size) for seq in range(1, entries + 1) if seq not in skip]
    sealed = status.is_terminal()
    fields: dict[str, object] = dict(
        run_id=run_id,
        instance_id=INSTANCE_ID,
        start_ts_init=START_TS_INIT,
        binary_hash="deadbeef",
        config_hash="cafebabe",
        status=status,
        high_watermark=(built[-1].seq if built else 0) if sealed else 0,
        end_ts_init=(max(e.ts_init for e in built) if built else None) if sealed else None,
    )
    fields.update(manifest_overrides or {})
    manifest = RunManifest(**fields)  # type: ignore[arg-type]

    env = lmdb.open(str(path), subdir=False, map_size=map_size, max_dbs=layout.MAX_DBS, mode=layout.FILE_MODE)
    try:
        entries_db = env.open_db(layout.DB_ENTRIES)
        manifest_db = env.open_db(layout.DB_MANIFEST)
        anchors_db = env.open_db(layout.DB_ANCHORS)
        meta_db = env.open_db(layout.DB_META)
        digests_db = env.open_db(integrity.DB_DIGESTS)
        index_dbs = {
            kind: env.open_db(name, dupsort=True, dupfixed=True) for kind, name in layout.INDEX_DBS.items()
        }
        with env.begin(write=True) as txn:
            if format_version is not None:
                txn.put(layout.FORMAT_KEY, layout.encode_format_version(format_version), db=meta_db)
            txn.put(layout.MANIFEST_KEY, encode_manifest(manifest), db=manifest_db)
            if digests:
                txn.put(integrity.MANIFEST_DIGEST_KEY, integrity.manifest_digest(encode_manifest(manifest)), db=digests_db)
            row_sum = integrity.IndexRowSum()
            with txn.cursor(entries_db) as cursor:
                cursor.putmulti(
                    ((seq_key(e.seq), encode_stored_value(e)) for e in built), append=True
                )
            for kind, rows in (index or {}).items():
                for key, seqs in rows.items():
                    for seq in seqs:
                        txn.put(key, seq_key(seq), db=index_dbs[kind], dupdata=True)
                        row_sum.add(layout.INDEX_DBS[kind], key, seq_key(seq))
            anchors = {} if anchor is None else {seq_key(anchor.high_watermark): encode_anchor(anchor)}
            anchors.update(raw_anchors or {})
            for key, value in anchors.items():
                txn.put(key, value, db=anchors_db)
                if digests:
                    txn.put(integrity.anchor_key(key), integrity.anchor_digest(key, value), db=digests_db)
            if digests and built:
                txn.put(integrity.commit_key(1), integrity.encode_commit(built[-1].seq, row_sum), db=digests_db)
        env.sync(True)
    finally:
        env.close()
    return path


def edit_run_file(path: str | os.PathLike[str], body) -> None:  # noqa: ANN001 - body(env, txn)
    """Open an existing run file writable, call `body(env, txn)` in one write transaction, fsync,
    and remove the lock file LMDB leaves beside it (nes itself never makes one)."""
    env = lmdb.open(str(path), subdir=False, max_dbs=layout.MAX_DBS, map_size=1 << 30, create=False)
    try:
        with env.begin(write=True) as txn:
            body(env, txn)
        env.sync(True)
    finally:
        env.close()
    Path(f"{path}-lock").unlink(missing_ok=True)


def rewrite_entries(path: str | os.PathLike[str], edit) -> None:  # noqa: ANN001
    """Open the run file writable and call `edit(txn, entries_db)` in one write transaction."""
    edit_run_file(path, lambda env, txn: edit(txn, env.open_db(layout.DB_ENTRIES, txn=txn)))


def seal_as_is(path: str | os.PathLike[str]) -> None:
    """Write the seal record a real seal writes (replacing any) for the file as it is now: its
    bytes, damage included, are then the sealed ones, so an in-process reader maps it and the
    entry-level checks (hash, seq, gap) are what must refuse the damage. Stands for damage done
    before the seal, which the seal record cannot see."""
    from nes.backend.lmdb import LmdbBackend
    from nes.backend.seal_record import seal_record_path

    seal_record_path(path).unlink(missing_ok=True)
    assert LmdbBackend.write_missing_seal_record(path)


def flip_byte_in_payload(path: str | os.PathLike[str], seq: int, offset: int = 5) -> int:
    """Flip one byte inside entry `seq`'s payload in the raw file; returns the file offset."""
    data = bytearray(Path(path).read_bytes())
    needle = f"PAYLOAD-{seq:08d}-".encode()
    at = data.find(needle)
    if at < 0:
        raise AssertionError(f"payload of seq {seq} not found in {path}")
    pos = at + offset
    data[pos] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    return pos
