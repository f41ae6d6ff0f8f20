"""Snapshot blob store, session.snapshot_anchorer() and `nes verify` over the blobs beside a run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nes import EntryDraft, EventStoreConfig, EventStoreLifecycle, EventStoreLifecycleOptions, RunIdentity
from nes.replay import BlobStoreError, SnapshotBlobStore
from nes.snapshot import compute_snapshot_content_hash
from nes.verifier import SnapshotBlobProblem, Verifier

INSTANCE = "blob-trader"


def _session(tmp_path: Path, in_process: bool = True):  # noqa: ANN202
    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id=INSTANCE))
    return EventStoreLifecycle(config, options=EventStoreLifecycleOptions(in_process=in_process)).open()


def test_put_stores_the_blob_content_addressed_private_and_returns_ref_and_hash(tmp_path: Path) -> None:
    store = SnapshotBlobStore.for_instance(tmp_path, INSTANCE)
    blob_ref, content_hash = store.put(b"cache state")
    assert content_hash == compute_snapshot_content_hash(b"cache state")
    assert blob_ref == "snapshots/" + content_hash.removeprefix("blake3:")
    path = tmp_path / INSTANCE / blob_ref
    assert path.read_bytes() == b"cache state"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.get(blob_ref) == b"cache state"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_putting_the_same_blob_twice_is_one_file(tmp_path: Path) -> None:
    store = SnapshotBlobStore.for_instance(tmp_path, INSTANCE)
    assert store.put(b"x") == store.put(bytearray(b"x"))
    assert len(list(store.directory.iterdir())) == 1


def test_a_damaged_blob_file_is_replaced_on_put(tmp_path: Path) -> None:
    store = SnapshotBlobStore.for_instance(tmp_path, INSTANCE)
    blob_ref, _ = store.put(b"good")
    (tmp_path / INSTANCE / blob_ref).write_bytes(b"bad!")
    store.put(b"good")
    assert store.get(blob_ref) == b"good"


def test_get_of_a_missing_blob_is_none(tmp_path: Path) -> None:
    store = SnapshotBlobStore.for_instance(tmp_path, INSTANCE)
    assert store.get("snapshots/" + "0" * 64) is None


@pytest.mark.parametrize(
    "blob_ref", ["../etc/passwd", "snapshots/../../x", "snapshots/" + "A" * 64, "snapshots/abc", "/abs", "", "snapshots/" + "0" * 64 + "/x"]
)
def test_references_other_than_snapshots_hex_are_refused(tmp_path: Path, blob_ref: str) -> None:
    with pytest.raises(BlobStoreError, match="not of the form"):
        SnapshotBlobStore.for_instance(tmp_path, INSTANCE).get(blob_ref)


def test_oversized_blobs_are_refused_on_put_and_on_get(tmp_path: Path) -> None:
    small = SnapshotBlobStore(tmp_path / INSTANCE, max_blob_bytes=4)
    with pytest.raises(BlobStoreError, match="exceeds max_blob_bytes"):
        small.put(b"12345")
    blob_ref, _ = SnapshotBlobStore(tmp_path / INSTANCE).put(b"123456")
    with pytest.raises(BlobStoreError, match="exceeds max_blob_bytes"):
        small.get(blob_ref)


def test_a_symlinked_blob_is_refused(tmp_path: Path) -> None:
    store = SnapshotBlobStore.for_instance(tmp_path, INSTANCE)
    store.put(b"seed")  # creates the directory
    target = tmp_path / "secret"
    target.write_bytes(b"secret")
    link = store.directory / ("1" * 64)
    os.symlink(target, link)
    with pytest.raises(BlobStoreError, match="cannot open"):
        store.get("snapshots/" + "1" * 64)


def test_instance_ids_that_are_not_path_components_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SnapshotBlobStore.for_instance(tmp_path, "../escape")


def test_anchorer_stores_the_blob_then_anchors_it_at_the_durable_high_watermark(tmp_path: Path) -> None:
    session = _session(tmp_path, in_process=False)
    try:
        for i in range(5):
            session.submit(EntryDraft("t.topic", "T", bytes([i]), 1_000 + i))
        anchor = session.snapshot_anchorer()(b"state after 6 entries")
        assert anchor.high_watermark == 6  # RunStarted + 5, all covered
        assert anchor.content_hash == compute_snapshot_content_hash(b"state after 6 entries")
        assert SnapshotBlobStore.beside_run_file(session.path).get(anchor.blob_ref) == b"state after 6 entries"
    finally:
        session.close()
    assert Verifier(session.path).verify().is_clean()


def _anchored_run(tmp_path: Path, blob: bytes) -> tuple[Path, str]:
    session = _session(tmp_path)
    anchor = session.snapshot_anchorer()(blob)
    session.close()
    return session.path, anchor.blob_ref


def test_verify_reports_an_anchor_whose_blob_is_missing(tmp_path: Path) -> None:
    path, blob_ref = _anchored_run(tmp_path, b"snapshot")
    (path.parent / blob_ref).unlink()
    report = Verifier(path).verify()
    assert not report.is_clean()
    assert report.findings == [SnapshotBlobProblem(1, blob_ref, "snapshot blob not found")]
    result = subprocess.run([sys.executable, "-m", "nes", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"- snapshot anchor 1 blob {blob_ref}: snapshot blob not found" in result.stdout


def test_verify_reports_an_anchor_whose_blob_hash_does_not_match(tmp_path: Path) -> None:
    path, blob_ref = _anchored_run(tmp_path, b"snapshot")
    (path.parent / blob_ref).write_bytes(b"tampered")
    (finding,) = Verifier(path).verify().findings
    assert isinstance(finding, SnapshotBlobProblem) and "content_hash mismatch" in finding.detail
    result = subprocess.run(
        [sys.executable, "-m", "nes", "verify", "--json", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and '"type":"SnapshotBlobProblem"' in result.stdout


def test_verify_checks_no_blobs_when_no_store_lies_beside_the_run(tmp_path: Path) -> None:
    path, blob_ref = _anchored_run(tmp_path, b"snapshot")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for suffix in ("", "-lock"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(moved / source.name)
    assert Verifier(moved / path.name).verify().is_clean()
