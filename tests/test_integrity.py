"""Issue #8 items 6-11, 13: what verify covers, rollback, recovery agreeing with verify, live
runs, in-process readers on damaged files, symlinks and directory modes.

Files are written through the real `LmdbBackend` (so they carry what a writer stores) and then
damaged with raw py-lmdb edits or raw byte edits, as a flipped byte on disk would.
"""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lmdb
import msgspec
import pytest

from nes.backend import integrity, layout
from nes.backend.base import AppendEntry, IndexKey, IndexKind, PreparedBatch
from nes.backend.lmdb import LmdbBackend, read_manifest
from nes.backend.seal_record import MAX_SEAL_RECORD_BYTES, read_seal_record, seal_record_path
from nes.codec import seq_key
from nes.entry import EventStoreEntry
from nes.errors import Corrupted
from nes.headers import Headers
from nes.kernel import BootError, recover_predecessors
from nes.manifest import RunManifest, RunStatus, encode_manifest
from nes.snapshot import SnapshotAnchor, encode_anchor
from nes.verifier import (
    CorruptSnapshotAnchor,
    DanglingIndex,
    IndexDigestMismatch,
    IndexTargetCorrupted,
    ManifestDigestMismatch,
    SealRecordMismatch,
    Verifier,
    verify_in_worker,
)
from runfile_helpers import edit_run_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE = "trader-001"
START = 1_700_000_000_000_000_000


def run_id(n: int = 1) -> str:
    return f"{START + n}-0000abc{n}"


def entry(seq: int) -> EventStoreEntry:
    ts = START + 10 * seq
    return EventStoreEntry.build(seq, ts, ts + 1, "exec.event.OrderFilled", "OrderFilled", b"PAY%08d" % seq, Headers.empty())


def appends(lo: int, hi: int) -> list[AppendEntry]:
    return [
        AppendEntry(entry(s), (IndexKey(IndexKind.ClientOrderId, f"O-{s:04d}"), IndexKey(IndexKind.VenueOrderId, f"V-{s % 3}")))
        for s in range(lo, hi + 1)
    ]


def write_run(base: Path, n: int = 20, *, seal: bool = True, anchor: int | None = 10, rid: str | None = None) -> Path:
    rid = rid or run_id()
    with LmdbBackend(base) as backend:
        backend.open_run(RunManifest(run_id=rid, instance_id=INSTANCE, start_ts_init=START))
        for lo in range(1, n + 1, 5):
            backend.append_batch(appends(lo, min(lo + 4, n)))
        if anchor is not None:
            backend.record_snapshot_anchor(SnapshotAnchor(anchor, f"snapshots/{anchor}.bin", "blake3:" + "ab" * 32))
        if seal:
            backend.seal(RunStatus.Ended)
        path = backend.path
    assert path is not None
    return path


def index_db(env: lmdb.Environment, txn: lmdb.Transaction, kind: IndexKind):  # noqa: ANN201
    return env.open_db(layout.INDEX_DBS[kind], txn=txn, dupsort=True, dupfixed=True)


def findings(path: Path) -> list:
    report = Verifier(path).verify()
    return list(report.findings)


# ---- item 6: index rows, manifest and anchors are covered ---------------------------------------------
def test_clean_run_written_by_the_backend_verifies_clean(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    report = Verifier(path).verify()
    assert report.is_clean(), report.lines()
    assert (report.status, report.high_watermark, report.entries_scanned) == ("Ended", 20, 20)


def test_renamed_index_key_is_reported(tmp_path: Path) -> None:
    path = write_run(tmp_path)

    def rename(env, txn) -> None:  # noqa: ANN001
        db = index_db(env, txn, IndexKind.ClientOrderId)
        txn.delete(b"O-0007", seq_key(7), db=db)
        txn.put(b"O-0009x", seq_key(7), db=db)  # a reader now finds seq 7 under another id

    edit_run_file(path, rename)
    found = findings(path)
    assert any(isinstance(f, IndexDigestMismatch) and f.first_seq <= 7 <= f.last_seq for f in found), found


def test_index_row_repointed_at_another_existing_entry_is_reported(tmp_path: Path) -> None:
    path = write_run(tmp_path)

    def repoint(env, txn) -> None:  # noqa: ANN001
        db = index_db(env, txn, IndexKind.ClientOrderId)
        txn.delete(b"O-0003", seq_key(3), db=db)
        txn.put(b"O-0003", seq_key(12), db=db)

    edit_run_file(path, repoint)
    found = findings(path)
    assert sum(isinstance(f, IndexDigestMismatch) for f in found) == 2, found  # seq 3's commit and seq 12's


def test_changed_manifest_run_id_is_reported(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    stored = read_manifest(path)
    forged = msgspec.structs.replace(stored, run_id=run_id(2))
    edit_run_file(path, lambda env, txn: txn.put(layout.MANIFEST_KEY, encode_manifest(forged), db=env.open_db(layout.DB_MANIFEST, txn=txn)))
    found = findings(path)
    assert ManifestDigestMismatch("the manifest is not the one the writer stored") in found


def test_changed_anchor_blob_reference_is_reported(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    forged = SnapshotAnchor(10, "snapshots/other.bin", "blake3:" + "ab" * 32)
    edit_run_file(path, lambda env, txn: txn.put(seq_key(10), encode_anchor(forged), db=env.open_db(layout.DB_ANCHORS, txn=txn)))
    found = findings(path)
    assert CorruptSnapshotAnchor("10", "is not the anchor that was recorded (digest mismatch)") in found


def test_index_row_pointing_at_a_damaged_entry_is_a_corrupted_target(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    data = bytearray(path.read_bytes())
    needle = b"PAY%08d" % 5
    at = data.find(needle)
    while at >= 0:  # copy-on-write leaves older copies of the page: flip them all
        data[at + 4] ^= 0x01
        at = data.find(needle, at + 1)
    path.write_bytes(bytes(data))
    found = findings(path)
    assert IndexTargetCorrupted("ClientOrderId", "O-0005", 5) in found
    line = f"- {IndexTargetCorrupted('ClientOrderId', 'O-0005', 5).describe()}"
    assert line == "- index drift ClientOrderId key=O-0005: corrupted target seq 5"


def test_an_index_database_added_to_the_layout_is_covered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An order-id kind added to `layout.INDEX_DBS` (and so to `ALL_INDEX_DBS`): its rows enter
    the commit digest on write and the verifier checks them."""

    class Extra:
        value = "CorrelationId"

    extra = Extra()
    monkeypatch.setitem(layout.INDEX_DBS, extra, b"idx_extra_for_test")  # type: ignore[index]
    monkeypatch.setitem(layout.ALL_INDEX_DBS, b"idx_extra_for_test", "CorrelationId")
    rid = run_id()
    with LmdbBackend(tmp_path) as backend:
        backend.open_run(RunManifest(run_id=rid, instance_id=INSTANCE, start_ts_init=START))
        items = [(seq_key(s), AppendEntry(entry(s)).encoded().value) for s in range(1, 4)]
        rows = [(extra, f"C-{s}", s) for s in range(1, 4)]
        backend.append_prepared(PreparedBatch(1, items, rows, START + 30))  # type: ignore[arg-type]
        backend.seal(RunStatus.Ended)
        path = backend.path
    assert path is not None
    assert Verifier(path).verify().is_clean()

    def repoint(env, txn) -> None:  # noqa: ANN001
        db = env.open_db(b"idx_extra_for_test", txn=txn, dupsort=True, dupfixed=True)
        txn.delete(b"C-2", seq_key(2), db=db)
        txn.put(b"C-2", seq_key(3), db=db)

    edit_run_file(path, repoint)
    assert any(isinstance(f, IndexDigestMismatch) for f in findings(path))


def test_correlation_index_rows_are_covered(tmp_path: Path) -> None:
    import uuid

    workflow = uuid.uuid4()
    rid = run_id()
    with LmdbBackend(tmp_path) as backend:
        backend.open_run(RunManifest(run_id=rid, instance_id=INSTANCE, start_ts_init=START))
        batch = [
            AppendEntry(EventStoreEntry.build(s, START + s, START + s, "t", "T", b"p", Headers(correlation_id=workflow)))
            for s in range(1, 5)
        ]
        backend.append_batch(batch)
        backend.seal(RunStatus.Ended)
        path = backend.path
    assert path is not None and Verifier(path).verify().is_clean()
    assert LmdbBackend.open_sealed_file(path).lookup_correlation(workflow) == [1, 2, 3, 4]

    def repoint(env, txn) -> None:  # noqa: ANN001
        db = env.open_db(layout.DB_IDX_CORRELATION, txn=txn, dupsort=True, dupfixed=True)
        txn.delete(workflow.bytes, seq_key(4), db=db)  # seq 4 silently drops out of the workflow

    edit_run_file(path, repoint)
    assert any(isinstance(f, IndexDigestMismatch) for f in findings(path))


# ---- item 7: rollback of the last commit --------------------------------------------------------------
def roll_back_one_commit(path: Path) -> None:
    """Raise the older meta page's txnid above the newer one, as one flipped byte can: LMDB then
    opens the file at the commit before its last."""
    data = bytearray(path.read_bytes())
    page = struct.unpack_from("<I", data, 40)[0]
    txn0, txn1 = (struct.unpack_from("<Q", data, off + 144)[0] for off in (0, page))
    older = 0 if txn0 < txn1 else page
    struct.pack_into("<Q", data, older + 144, max(txn0, txn1) + 1)
    path.write_bytes(bytes(data))


def test_seal_writes_a_private_seal_record(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    record_path = seal_record_path(path)
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600
    record = read_seal_record(path, run_id())
    assert record is not None and (record.status, record.high_watermark) == ("Ended", 20)


def test_sealed_run_rolled_back_one_commit_is_reported(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    roll_back_one_commit(path)
    report = Verifier(path).verify()
    assert report.status == "Running"  # the rollback undid the seal
    assert [type(f) for f in report.findings] == [SealRecordMismatch], report.lines()
    assert "rolled back" in report.findings[0].describe()


@pytest.mark.parametrize("content", [b"{not json", b"x" * (MAX_SEAL_RECORD_BYTES + 1), b'{"version":1}'])
def test_damaged_seal_record_is_a_finding_not_a_crash(tmp_path: Path, content: bytes) -> None:
    path = write_run(tmp_path)
    seal_record_path(path).write_bytes(content)
    assert [type(f) for f in findings(path)] == [SealRecordMismatch]


def test_seal_record_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    record = seal_record_path(path)
    target = tmp_path / "elsewhere.json"
    record.rename(target)
    record.symlink_to(target)
    assert [type(f) for f in findings(path)] == [SealRecordMismatch]


# ---- item 8: recovery and verify agree -----------------------------------------------------------------
def test_crashed_run_whose_only_damage_is_a_corrupt_anchor_is_quarantined_not_parent(tmp_path: Path) -> None:
    path = write_run(tmp_path, seal=False)
    forged = SnapshotAnchor(10, "snapshots/other.bin", "blake3:" + "ab" * 32)
    edit_run_file(path, lambda env, txn: txn.put(seq_key(10), encode_anchor(forged), db=env.open_db(layout.DB_ANCHORS, txn=txn)))
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert [(r.run_id, r.status) for r in outcome.recovered] == [(run_id(), RunStatus.Quarantined)]
    assert outcome.parent_run_id is None
    assert read_manifest(path).status is RunStatus.Quarantined


def damage_a_leaf_page(path: Path, needle: bytes) -> None:
    """Garble the header (mp_lower) of the leaf page holding `needle`: LMDB reports
    MDB_CORRUPTED ("Located page was wrong type") on reaching it."""
    data = bytearray(path.read_bytes())
    page = struct.unpack_from("<I", data, 40)[0]
    at = data.find(needle)
    assert at > 0
    start = at - at % page
    struct.pack_into("<H", data, start + 12, 0xFFFF)
    path.write_bytes(bytes(data))


def test_crashed_run_that_lmdb_cannot_read_is_sealed_quarantined_not_skipped_forever(tmp_path: Path) -> None:
    path = write_run(tmp_path, 400, seal=False, anchor=None)
    damage_a_leaf_page(path, b"PAY%08d" % 200)
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert [(r.run_id, r.status) for r in outcome.recovered] == [(run_id(), RunStatus.Quarantined)]
    assert read_manifest(path).status is RunStatus.Quarantined
    assert recover_predecessors(tmp_path, INSTANCE).recovered == []  # sealed: not looked at again


def test_sealed_run_without_seal_record_gets_one_at_the_next_sweep(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    seal_record_path(path).unlink()  # as a crash between the seal commit and the record leaves it
    recover_predecessors(tmp_path, INSTANCE)
    assert read_seal_record(path, run_id()) is not None


def test_a_new_run_file_holds_its_marker_and_manifest_in_its_first_commit(tmp_path: Path) -> None:
    """A kill during creation leaves either no commit at all or a whole first commit, never
    databases without the format marker (which would stop every later boot)."""
    path = write_run(tmp_path, 0, seal=False, anchor=None)
    assert layout.check_run_file_shape(path).txnid == 1
    assert read_manifest(path).status is RunStatus.Running


def test_a_run_file_whose_creation_was_interrupted_is_quarantined_and_does_not_stop_the_boot(tmp_path: Path) -> None:
    from nes.config import EventStoreConfig, RunIdentity
    from nes.kernel import EventStoreLifecycleOptions, open_run

    instance = tmp_path / INSTANCE
    instance.mkdir(mode=0o700)
    path = instance / f"{run_id()}.lmdb"
    layout.create_private_file(path)
    lmdb.open(str(path), subdir=False, lock=False).close()  # meta pages only: killed before the first commit
    assert layout.check_run_file_shape(path).txnid == 0
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert [(r.run_id, r.status) for r in outcome.recovered] == [(run_id(), RunStatus.Quarantined)]
    assert outcome.parent_run_id is None
    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id=INSTANCE))
    with open_run(config, options=EventStoreLifecycleOptions(in_process=True)) as session:
        assert session.recovery.parent_run_id is None  # nothing was ever durable in it


# ---- item 9: verify on a live run ------------------------------------------------------------------------
WRITER_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from test_integrity import INSTANCE, START, appends, run_id
    from nes.backend.lmdb import LmdbBackend
    from nes.manifest import RunManifest
    backend = LmdbBackend(sys.argv[1], exclusive=True)
    backend.open_run(RunManifest(run_id=run_id(), instance_id=INSTANCE, start_ts_init=START))
    seq = 0
    while True:
        seq = backend.append_batch(appends(seq + 1, seq + 20))
        if seq == 200:
            print("ready", flush=True)
    """
)


def test_verify_of_a_live_run_is_a_clean_consistent_snapshot(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=f"{PROJECT_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER_CHILD, str(tmp_path), str(PROJECT_ROOT / "tests")],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        path = layout.run_file_path(tmp_path, INSTANCE, run_id())
        seen = []
        for _ in range(5):
            verdict = verify_in_worker(path, 60)
            assert verdict.is_clean(), verdict.lines()
            assert verdict.status == "Running"  # type: ignore[union-attr]
            seen.append(verdict.high_watermark)  # type: ignore[union-attr]
        assert seen == sorted(seen) and seen[-1] > 200  # the writer kept committing meanwhile
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_the_shape_and_manifest_checks_of_a_live_run_never_call_it_truncated(tmp_path: Path) -> None:
    """A live writer grows the file, then commits the meta page that uses the new pages: the
    checks must take the file's size after reading the meta page, or a commit in between makes
    a healthy live run look truncated (about one check in eight, measured)."""
    import threading

    from nes.config import EventStoreConfig, RunIdentity
    from nes.kernel import open_run
    from nes.writer import EntryDraft

    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id=INSTANCE))
    stop = threading.Event()
    with open_run(config) as session:
        def pump() -> None:
            ts = 1
            while not stop.is_set():
                session.submit(EntryDraft("t.live", "P", b"y" * 100, ts))
                ts += 1

        pumping = threading.Thread(target=pump)
        pumping.start()
        try:
            commits_before = layout.check_run_file_shape(session.path).txnid
            checks = 0
            # At least 300 checks, and 50 commits during them (the pump shares the GIL with us).
            while checks < 300 or layout.check_run_file_shape(session.path).txnid <= commits_before + 50:
                assert checks < 100_000, "the writer stopped committing"
                layout.check_run_file_shape(session.path)
                layout.check_manifest_pages(session.path)
                checks += 1
        finally:
            stop.set()
            pumping.join()


# ---- item 10: in-process readers on damaged files ---------------------------------------------------------
def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=f"{PROJECT_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_list_runs_skips_a_truncated_run_file_instead_of_faulting(tmp_path: Path) -> None:
    write_run(tmp_path, 20, rid=run_id(1))
    damaged = write_run(tmp_path, 3000, rid=run_id(2), anchor=None)
    os.truncate(damaged, damaged.stat().st_size // 2)
    done = run_python(f"from nes.backend.lmdb import LmdbBackend; print([m.run_id for m in LmdbBackend({str(tmp_path)!r}).list_runs({INSTANCE!r})])")
    assert done.returncode == 0, done.stderr  # SIGBUS before: returncode -7
    assert done.stdout.strip() == str([run_id(1)])


def test_opening_a_truncated_sealed_run_raises_corrupted(tmp_path: Path) -> None:
    damaged = write_run(tmp_path, 3000, anchor=None)
    os.truncate(damaged, damaged.stat().st_size // 2)
    with pytest.raises(Corrupted, match="truncated"):
        LmdbBackend.open_sealed_file(damaged)


def test_operator_reads_raise_corrupted_not_raw_lmdb_errors_on_a_damaged_page(tmp_path: Path) -> None:
    from nes.ops.runfile import RunFile

    path = write_run(tmp_path, 400, anchor=None)
    damage_a_leaf_page(path, b"PAY%08d" % 200)
    seal_record_path(path).unlink()  # no proof beside it (a crash between seal and record)
    with RunFile(path, isolated=True) as run_file:  # an operator's command reads it as it is
        with pytest.raises(Corrupted):
            run_file.read(1, 400)


def test_a_run_file_handle_reads_an_unproven_file_only_once_it_verifies_clean(tmp_path: Path) -> None:
    from nes.ops.runfile import RunFile, RunFileError

    damaged = write_run(tmp_path / "damaged", 400, seal=False, anchor=None)
    damage_a_leaf_page(damaged, b"PAY%08d" % 200)
    with RunFile(damaged) as run_file:  # a crashed run: no live writer, no seal record
        assert run_file.manifest().status is RunStatus.Running  # its manifest path is proven by hand
        with pytest.raises(RunFileError, match="does not verify clean"):
            run_file.read(1, 400)
    intact = write_run(tmp_path / "intact", 40, seal=False, anchor=None)
    with RunFile(intact) as run_file:  # verified clean in a worker first, then read here
        assert [e.seq for e in run_file.read(1, 40)] == list(range(1, 41))


def test_a_run_file_handle_reads_a_live_writer_s_running_file_without_verifying_it(tmp_path: Path) -> None:
    from nes.config import EventStoreConfig, RunIdentity
    from nes.kernel import open_run
    from nes.ops.runfile import RunFile

    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id=INSTANCE))
    with open_run(config) as session:  # the writer sidecar holds the instance lock
        anchor = session.snapshot_anchorer()(b"a cache snapshot")
        (tmp_path / INSTANCE / anchor.blob_ref).unlink()  # now it would not verify clean
        assert not Verifier(session.path).verify().is_clean()
        with RunFile(session.path) as run_file:  # a live writer's file: read without a verify
            assert [e.seq for e in run_file.read(1, 1)] == [1]
    with RunFile(session.path) as run_file:  # no writer any more: sealed, and its record proves it
        assert [e.seq for e in run_file.read(1, 1)] == [1]


def test_a_sealed_file_its_seal_record_does_not_prove_is_read_in_process_only_if_it_verifies_clean(
    tmp_path: Path,
) -> None:
    from nes.backend.base import ScanDirection

    intact = write_run(tmp_path / "intact", 40, anchor=None)
    seal_record_path(intact).unlink()  # a crash between the seal commit and the record
    with LmdbBackend.open_sealed_file(intact) as backend:  # verified clean in a worker first
        assert len(backend.scan_range(1, 40, ScanDirection.Forward)) == 40
    damaged = write_run(tmp_path / "damaged", 400, anchor=None)
    damage_a_leaf_page(damaged, b"PAY%08d" % 200)
    seal_record_path(damaged).unlink()
    with pytest.raises(Corrupted, match="does not verify clean"):
        LmdbBackend.open_sealed_file(damaged)


def test_a_run_sealed_quarantined_is_not_read_in_process(tmp_path: Path) -> None:
    path = write_run(tmp_path, 400, seal=False, anchor=None)
    damage_a_leaf_page(path, b"PAY%08d" % 200)
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert [r.status for r in outcome.recovered] == [RunStatus.Quarantined]
    record = read_seal_record(path, run_id())
    assert record is not None and record.status == "Quarantined"
    with pytest.raises(Corrupted, match=r"\(Quarantined\) has no seal record that proves its file"):
        LmdbBackend.open_sealed_file(path)


def test_listing_never_maps_more_than_a_damaged_running_file_s_manifest_path(tmp_path: Path) -> None:
    """A crashed run's file has no seal record: listing reads its manifest only after the
    pages on the way to it are proven, so a damaged main-database page is skipped, in-process."""
    write_run(tmp_path, 20, rid=run_id(1))
    damaged = write_run(tmp_path, 20, seal=False, anchor=None, rid=run_id(2))
    data = bytearray(damaged.read_bytes())
    page_size = struct.unpack_from("<I", data, 40)[0]
    meta = max((0, page_size), key=lambda at: struct.unpack_from("<Q", data, at + 144)[0])
    main_root = struct.unpack_from("<Q", data, meta + 128)[0] * page_size
    struct.pack_into("<H", data, main_root + 16, page_size - 2)  # its first node now lies past the page
    damaged.write_bytes(bytes(data))
    with pytest.raises(Corrupted, match="lies outside it"):
        layout.check_manifest_pages(damaged)
    assert [m.run_id for m in LmdbBackend(tmp_path).list_runs(INSTANCE)] == [run_id(1)]


def test_a_sealed_file_changed_after_its_seal_is_refused_before_it_is_mapped(tmp_path: Path) -> None:
    from nes.backend.seal_record import SealedFileChanged
    from nes.ops.runfile import RunFile, RunFileError

    path = write_run(tmp_path, 400, anchor=None)
    with LmdbBackend.open_sealed_file(path):
        pass  # intact: it opens
    damage_a_leaf_page(path, b"PAY%08d" % 200)
    with pytest.raises(SealedFileChanged, match="changed after it was sealed"):
        LmdbBackend.open_sealed_file(path)
    with pytest.raises(SealedFileChanged):
        read_manifest(path)
    with pytest.raises(RunFileError, match="changed after it was sealed"):
        RunFile(path)
    assert LmdbBackend(tmp_path).list_runs(INSTANCE) == []  # skipped, as unreadable files are
    assert not Verifier(path).verify().is_clean()


def test_a_seal_record_of_a_newer_nes_stops_listing_like_a_future_format_marker(tmp_path: Path) -> None:
    from nes.errors import UnsupportedFormat

    path = write_run(tmp_path, 10, anchor=None)
    record = seal_record_path(path)
    raw = msgspec.json.decode(record.read_bytes())
    record.chmod(0o600)
    record.write_bytes(msgspec.json.encode({**raw, "version": 3}))
    with pytest.raises(UnsupportedFormat, match="newer nes"):
        LmdbBackend(tmp_path).list_runs(INSTANCE)
    with pytest.raises(UnsupportedFormat, match="newer nes"):
        LmdbBackend.open_sealed_file(path)
    (finding,) = findings(path)
    assert isinstance(finding, SealRecordMismatch) and "newer nes" in finding.describe()


def test_a_change_no_reader_would_see_still_breaks_the_seal_for_reader_and_verifier_alike(tmp_path: Path) -> None:
    from nes.backend.seal_record import SealedFileChanged

    path = write_run(tmp_path, 40, anchor=None)
    with open(path, "ab") as handle:
        handle.write(b"\0" * 4096)  # past every page LMDB uses: no read returns it
    with pytest.raises(SealedFileChanged):
        LmdbBackend.open_sealed_file(path)
    (finding,) = findings(path)
    assert isinstance(finding, SealRecordMismatch) and "changed after its seal" in finding.describe()


# ---- item 13: symlinks and directory modes ------------------------------------------------------------------
def test_recovery_sweep_does_not_follow_a_symlink_out_of_the_base_dir(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    target = write_run(outside, seal=False)
    before = target.read_bytes()
    base = tmp_path / "base"
    (base / INSTANCE).mkdir(parents=True, mode=0o700)
    (base / INSTANCE / target.name).symlink_to(target)
    outcome = recover_predecessors(base, INSTANCE)
    assert outcome.recovered == []
    assert target.read_bytes() == before and read_manifest(target).status is RunStatus.Running


def test_loose_base_and_instance_dirs_are_tightened_to_0700_at_boot(tmp_path: Path) -> None:
    from nes.config import EventStoreConfig, RunIdentity
    from nes.kernel import EventStoreLifecycleOptions, open_run

    base = tmp_path / "base"
    (base / INSTANCE).mkdir(parents=True)
    os.chmod(base, 0o755)
    os.chmod(base / INSTANCE, 0o777)
    config = EventStoreConfig(base_dir=str(base), identity=RunIdentity(instance_id=INSTANCE))
    with open_run(config, options=EventStoreLifecycleOptions(in_process=True)):
        pass
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert stat.S_IMODE((base / INSTANCE).stat().st_mode) == 0o700


def test_a_symlinked_instance_dir_is_refused_at_boot(tmp_path: Path) -> None:
    from nes.config import EventStoreConfig, RunIdentity
    from nes.kernel import EventStoreLifecycleOptions, open_run

    base = tmp_path / "base"
    base.mkdir(mode=0o700)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (base / INSTANCE).symlink_to(tmp_path / "elsewhere")
    config = EventStoreConfig(base_dir=str(base), identity=RunIdentity(instance_id=INSTANCE))
    with pytest.raises(BootError, match="symlink"):
        open_run(config, options=EventStoreLifecycleOptions(in_process=True))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_retention_apply_takes_the_seal_record_with_its_run(tmp_path: Path) -> None:
    from nes.config import SnapshotAnchored
    from nes.ops.retention_apply import apply_retention

    old = write_run(tmp_path, rid=run_id(1))
    write_run(tmp_path, rid=run_id(2))
    archive = tmp_path / "archive"
    report = apply_retention(tmp_path, INSTANCE, SnapshotAnchored(), archive_dir=archive, verify=lambda _p: None)
    assert [o.action for o in report.outcomes if o.run_id == run_id(1)] == ["archived"]
    assert not seal_record_path(old).exists()
    assert read_seal_record(archive / INSTANCE / old.name, run_id(1)) is not None


def test_chunked_snapshot_reads_see_every_row_exactly_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunks: every chunk boundary falls inside runs of duplicate index keys and entries,
    and the resumed reads must neither skip nor repeat a row (else the digests would disagree)."""
    import nes.verifier as verifier_module

    path = write_run(tmp_path, 203)
    monkeypatch.setattr(verifier_module, "_CHUNK_ROWS", 7)
    report = Verifier(path).verify()
    assert report.is_clean(), report.lines()
    assert report.entries_scanned == 203

    def drop(env, txn) -> None:  # noqa: ANN001
        txn.delete(b"V-1", seq_key(100), db=index_db(env, txn, IndexKind.VenueOrderId))

    edit_run_file(path, drop)
    assert any(isinstance(f, IndexDigestMismatch) and f.first_seq <= 100 <= f.last_seq for f in findings(path))


def test_a_session_closed_by_the_writer_sidecar_leaves_a_seal_record_and_verifies_clean(tmp_path: Path) -> None:
    from nes.config import EventStoreConfig, RunIdentity
    from nes.kernel import open_run
    from nes.writer import EntryDraft

    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id=INSTANCE))
    with open_run(config) as session:
        seq = session.submit(EntryDraft("exec.event.OrderFilled", "OrderFilled", b"x", time.time_ns()))
        assert session.wait_durable(seq, 10.0)
        path = session.path
    record = read_seal_record(path, path.name.removesuffix(".lmdb"))
    assert record is not None and record.status == "Ended" and record.high_watermark == seq + 1
    assert stat.S_IMODE(seal_record_path(path).stat().st_mode) == 0o600
    verdict = verify_in_worker(path, 60)
    assert verdict.is_clean(), verdict.lines()


def test_a_seal_that_damages_the_crashed_file_quarantines_it_instead_of_making_it_parent(tmp_path: Path) -> None:
    """A flipped byte in LMDB's free list verifies clean (nothing reads it) until the seal's
    write transaction reuses a page still in use: recovery re-verifies after sealing. The
    file is the fuzz tool's; the flip (found by its crashed trials) makes the newest free-list
    record's first page number name the lowest page in use."""
    sys.path.insert(0, str(PROJECT_ROOT / "tools"))
    import fuzz_verify

    path = fuzz_verify.build_run(tmp_path, 300, seal=False)
    data = bytearray(path.read_bytes())
    page_size = struct.unpack_from("<I", data, 40)[0]
    # The newest meta page names the free-list database's root (MDB_meta: mm_dbs[0].md_root at +80).
    meta = max((0, page_size), key=lambda at: struct.unpack_from("<Q", data, at + 144)[0])
    root = struct.unpack_from("<Q", data, meta + 80)[0] * page_size
    assert struct.unpack_from("<H", data, root + 10)[0] == 0x02  # a leaf page
    node = root + struct.unpack_from("<H", data, root + 16)[0]  # its first node: key, then an IDL
    ids = node + 8 + struct.unpack_from("<H", data, node + 6)[0]
    count = struct.unpack_from("<Q", data, ids)[0]
    free = {struct.unpack_from("<Q", data, ids + 8 * (1 + i))[0] for i in range(count)}
    in_use = min(p for p in range(2, len(data) // page_size) if p not in free and p * page_size != root)
    struct.pack_into("<Q", data, ids + 8, in_use)
    path.write_bytes(bytes(data))
    outcome = recover_predecessors(tmp_path, fuzz_verify.INSTANCE)
    assert [r.status for r in outcome.recovered] == [RunStatus.Quarantined]
    assert outcome.parent_run_id is None
    report = Verifier(path).verify()
    assert report.status == "Quarantined" and not report.is_clean()
    assert any(f.describe().startswith("gap from seq ") for f in report.findings), report.lines()


def test_a_crashed_file_that_opens_but_cannot_be_sealed_is_quarantined_once_not_skipped_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    path = write_run(tmp_path, seal=False)
    edit_run_file(path, lambda env, txn: txn.put(layout.MANIFEST_KEY, b"\xc1 not a manifest", db=env.open_db(layout.DB_MANIFEST, txn=txn)))
    outcome = recover_predecessors(tmp_path, INSTANCE)
    assert [(r.run_id, r.status) for r in outcome.recovered] == [(run_id(), RunStatus.Quarantined)]
    assert outcome.parent_run_id is None
    record = read_seal_record(path, run_id())
    assert record is not None and record.status == "Quarantined" and record.outside_only
    caplog.set_level(logging.ERROR, logger="nes")
    caplog.clear()
    again = recover_predecessors(tmp_path, INSTANCE)
    assert again.recovered == [] and not [r for r in caplog.records if path.name in r.getMessage()]
    assert not Verifier(path).verify().is_clean()
