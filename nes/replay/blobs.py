"""Content-addressed snapshot blobs beside the run files, and the session's snapshot anchorer.

Contract:
- Where: `<base>/<instance_id>/snapshots/<hex>`, where `<hex>` is the BLAKE3 of the blob (the
  anchor's `content_hash` is `"blake3:" + hex`). The anchor's `blob_ref` is the path relative
  to the instance directory, `snapshots/<hex>`, so a run file finds its blobs beside it.
- Durable before anchored: `put` writes a temporary file (0600, in the 0700 `snapshots`
  directory), fsyncs it, renames it into place and fsyncs the directory, and only then returns;
  the anchorer records the anchor after that. A crash leaves at worst an unreferenced blob or
  a temporary file, never an anchor without its blob.
- Content-addressed: storing the same bytes twice is one file; an existing file whose bytes
  no longer hash to its name is replaced.
- Untrusted references: a `blob_ref` is accepted only in the exact form `snapshots/<64 hex>`
  (no other path can be reached through it); a blob file larger than `max_blob_bytes` is
  refused before it is read.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from blake3 import blake3

from nes.backend import layout
from nes.errors import InvalidArgument
from nes.replay.errors import BlobStoreError
from nes.snapshot import CONTENT_HASH_PREFIX, SnapshotAnchor, compute_snapshot_content_hash

if TYPE_CHECKING:
    from nes.kernel import EventStoreSession

__all__ = [
    "BLOB_DIR_NAME",
    "DEFAULT_MAX_BLOB_BYTES",
    "SnapshotAnchorer",
    "SnapshotBlobStore",
    "blob_problem",
    "check_run_file_blobs",
]

BLOB_DIR_NAME = "snapshots"
DEFAULT_MAX_BLOB_BYTES = 4 << 30
_REF = re.compile(r"^snapshots/([0-9a-f]{64})$")


class SnapshotBlobStore:
    """The blob directory of one instance: `<instance_dir>/snapshots/`."""

    def __init__(self, instance_dir: str | os.PathLike[str], max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        if max_blob_bytes < 1:
            raise InvalidArgument(f"max_blob_bytes must be >= 1, got {max_blob_bytes}")
        self.instance_dir = Path(instance_dir)
        self.directory = self.instance_dir / BLOB_DIR_NAME
        self.max_blob_bytes = max_blob_bytes

    @classmethod
    def for_instance(cls, base_dir: str | os.PathLike[str], instance_id: str) -> SnapshotBlobStore:
        """The store of `<base_dir>/<instance_id>` (the id is validated as a path component)."""
        return cls(layout.instance_dir(Path(base_dir), instance_id))

    @classmethod
    def beside_run_file(cls, run_file: str | os.PathLike[str]) -> SnapshotBlobStore:
        """The store in the directory that holds `run_file`."""
        return cls(Path(run_file).parent)

    def exists(self) -> bool:
        """True when the `snapshots` directory is there."""
        return self.directory.is_dir()

    def path_for(self, blob_ref: str) -> Path:
        """The file a reference names; `BlobStoreError` unless it is `snapshots/<64 hex>`."""
        if not isinstance(blob_ref, str) or _REF.match(blob_ref) is None:
            raise BlobStoreError(f"blob_ref {blob_ref!r} is not of the form snapshots/<64 hex digits>")
        return self.instance_dir / blob_ref

    def put(self, blob: bytes) -> tuple[str, str]:
        """Store `blob` durably; returns `(blob_ref, content_hash)`."""
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"a snapshot blob must be bytes, got {type(blob).__name__}")
        data = bytes(blob)
        if len(data) > self.max_blob_bytes:
            raise BlobStoreError(f"blob of {len(data)} bytes exceeds max_blob_bytes {self.max_blob_bytes}")
        digest = blake3(data).hexdigest()
        blob_ref = f"{BLOB_DIR_NAME}/{digest}"
        content_hash = CONTENT_HASH_PREFIX + digest
        target = self.instance_dir / blob_ref
        if target.is_file() and self._hash_of(target) == content_hash:
            return blob_ref, content_hash
        self._ensure_directory()
        temp = self.directory / f".tmp-{digest[:16]}-{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, layout.FILE_MODE)
        try:
            with os.fdopen(fd, "wb", closefd=True) as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        layout.fsync_dir(self.directory)
        return blob_ref, content_hash

    def get(self, blob_ref: str) -> bytes | None:
        """The blob's bytes, or None when no such file exists."""
        path = self.path_for(blob_ref)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BlobStoreError(f"cannot open {blob_ref}: {exc}") from exc
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > self.max_blob_bytes:
                raise BlobStoreError(f"blob {blob_ref} of {size} bytes exceeds max_blob_bytes {self.max_blob_bytes}")
            return handle.read(self.max_blob_bytes + 1)

    def _hash_of(self, path: Path) -> str | None:
        try:
            if path.stat().st_size > self.max_blob_bytes:
                return None
            return compute_snapshot_content_hash(path.read_bytes())
        except OSError:
            return None

    def _ensure_directory(self) -> None:
        if self.directory.is_dir():
            return
        created = not self.instance_dir.exists()
        self.instance_dir.mkdir(mode=layout.DIR_MODE, parents=True, exist_ok=True)
        self.directory.mkdir(mode=layout.DIR_MODE, exist_ok=True)
        layout.fsync_dir(self.instance_dir)
        if created:
            layout.fsync_dir(self.instance_dir.parent)


def blob_problem(store: SnapshotBlobStore, anchor: SnapshotAnchor) -> str | None:
    """Why `anchor`'s blob is not usable (None when it is there and hashes to the anchor):
    "snapshot blob not found", a content_hash mismatch, or the store's refusal."""
    try:
        blob = store.get(anchor.blob_ref)
    except BlobStoreError as exc:
        return exc.message
    if blob is None:
        return "snapshot blob not found"
    actual = compute_snapshot_content_hash(blob)
    if actual != anchor.content_hash:
        return f"content_hash mismatch: expected {anchor.content_hash}, actual {actual}"
    return None


def check_run_file_blobs(run_file: str | os.PathLike[str], anchors: list[SnapshotAnchor]) -> list[tuple[SnapshotAnchor, str]]:
    """The anchors of `run_file` whose blob is missing or does not match, when the blob store
    lies beside the file (no `snapshots` directory there: nothing to check, empty list).
    Anchors whose `blob_ref` is not a store reference point elsewhere and are not checked."""
    store = SnapshotBlobStore.beside_run_file(run_file)
    if not store.exists():
        return []
    problems = []
    for anchor in anchors:
        if _REF.match(anchor.blob_ref) is None:
            continue
        problem = blob_problem(store, anchor)
        if problem is not None:
            problems.append((anchor, problem))
    return problems


class SnapshotAnchorer:
    """`session.snapshot_anchorer()`: `anchorer(blob)` stores the blob (durable), then records
    the anchor at the durable high-watermark covering every entry submitted before the call."""

    def __init__(self, session: EventStoreSession, store: SnapshotBlobStore) -> None:
        self._session = session
        self.store = store

    def __call__(self, blob: bytes) -> SnapshotAnchor:
        blob_ref, content_hash = self.store.put(blob)
        return self._session.record_snapshot_anchor(blob_ref, content_hash)
