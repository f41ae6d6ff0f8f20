"""The run-file verifier: a full, read-only integrity scan of one LMDB run file.

Contract:
- Read-only. The file is opened with `readonly=True, lock=False` after an `os.path.isfile`
  check and a meta-page check (a truncated file is an open error, not a fault), so verifying
  never creates, locks, writes or touches a file. Nothing here quarantines: the verdict says
  `quarantine=not-performed`, and acting on it is the caller's business.
- Every byte a reader can return, or that recovery, retention or replay decide on, is covered
  (`nes.backend.integrity`): each entry by its hash (BLAKE3 over `HASH_DOMAIN || frame`, the
  crate's) plus key == embedded seq and no gaps; every row of every index database in
  `layout.ALL_INDEX_DBS` (order ids and the correlation index) by its commit's digest, and it must point at a stored, intact entry
  (`DanglingIndex` / `IndexTargetCorrupted`); commit records tile `1..high-watermark`; the
  manifest by its digest and against the entries (high_watermark, start_ts_init, end_ts_init);
  each snapshot anchor by its digest, its key and the high-watermark; the format marker; and a
  sealed run's seal record (outside LMDB) against the file, which catches a rollback.
- A live run is verified as one consistent snapshot (see `_Snapshot`): clean, status Running.
- Damage is reported as typed findings (msgspec tagged Structs), never as text to parse. Only
  a file that cannot be opened at all raises (`VerifyOpenError`, e.g. a missing file).
- LMDB has no checksums and a damaged file can crash the process that maps it (SIGBUS,
  SIGSEGV), so callers that must survive any file use `verify_in_worker`: the scan runs in
  `python -m workers.verify`, the report comes back as one JSON line (msgspec, never pickle),
  and a crash or a stall (no progress for the timeout) becomes a `WorkerFailure` verdict.
"""

from __future__ import annotations

import bisect
import os
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union

import lmdb
import msgspec

from nes.backend.integrity import (
    ANCHOR_PREFIX,
    COMMIT_PREFIX,
    DB_DIGESTS,
    MANIFEST_DIGEST_KEY,
    CommitRecord,
    anchor_digest,
    decode_commit,
    digest_bytes,
    index_row_hash,
    manifest_digest,
)
from nes.backend.layout import (
    MARKER_FILE_SUFFIX,
    RUN_FILE_SUFFIX,
    DB_ANCHORS,
    DB_ENTRIES,
    DB_MANIFEST,
    DB_META,
    FORMAT_KEY,
    ALL_INDEX_DBS,
    DB_IDX_CORRELATION,
    MANIFEST_KEY,
    format_version_problem,
    check_run_file_shape,
    marker_sidecar_path,
    open_read_only,
)
from nes.backend.seal_record import SealRecordInvalid, file_digest, read_seal_record
from nes.errors import Corrupted
from nes.codec import HASH_DOMAIN, HASH_LEN, FrameError, decode_frame
from nes.errors import EventStoreError
from nes.hash import frame_hasher
from nes.isolation import WorkerCrash, run_progress_worker
from nes.markers.verifier import MarkerVerifyReport
from nes.manifest import RunManifest, decode_manifest
from nes.snapshot import SnapshotAnchor, decode_anchor

if TYPE_CHECKING:
    from nes.recovery import TailScan

__all__ = [
    "HashMismatch",
    "Gap",
    "IndexTargetCorrupted",
    "IndexDigestMismatch",
    "CommitRecordMismatch",
    "ManifestDigestMismatch",
    "SealRecordMismatch",
    "LiveRunChurn",
    "VerifyOutcome",
    "VerifySummary",
    "expand_verify_paths",
    "verify_path",
    "KeySeqMismatch",
    "UndecodableEntry",
    "DanglingIndex",
    "CorruptedIndex",
    "CorruptManifest",
    "ManifestMismatch",
    "CorruptSnapshotAnchor",
    "AnchorPastWatermark",
    "SnapshotBlobProblem",
    "OpenError",
    "Finding",
    "VerifyReport",
    "WorkerFailure",
    "VerifyOpenError",
    "Verifier",
    "scan_tail",
    "verify_in_worker",
    "WORKER_FAULT_ENV",
    "QUARANTINE_NOT_PERFORMED",
]

QUARANTINE_NOT_PERFORMED = "quarantine=not-performed"
WORKER_FAULT_ENV = "NES_VERIFY_WORKER_FAULT"
_MIN_VALUE_LEN = HASH_LEN + 24  # hash, then seq, ts_init, ts_publish
_SEQ_TS = struct.Struct(">QQ")  # frame offsets 0 (seq) and 8 (ts_init)
_U64 = struct.Struct(">Q")
T = TypeVar("T")


# ---- findings -----------------------------------------------------------------------------------
# Each finding's `describe()` is the crate's line where the crate has the finding
# (`src/bin/verify.rs`), and nes's own wording for the findings only nes has.
class _Finding(msgspec.Struct, frozen=True, tag=True):
    def describe(self) -> str:  # pragma: no cover - every finding overrides it
        raise NotImplementedError


class HashMismatch(_Finding, frozen=True, tag=True):
    """The stored hash differs from BLAKE3 over the stored frame (under key `seq`)."""

    seq: int

    def describe(self) -> str:
        return f"hash mismatch at seq {self.seq}"


class Gap(_Finding, frozen=True, tag=True):
    """Seqs `from_seq..to_seq` (inclusive) are missing inside the durable high-watermark."""

    from_seq: int
    to_seq: int

    def describe(self) -> str:
        return f"gap from seq {self.from_seq} to {self.to_seq}"


class KeySeqMismatch(_Finding, frozen=True, tag=True):
    """The entry stored under `key_seq` carries `embedded_seq` in its frame (the crate's SeqMismatch)."""

    key_seq: int
    embedded_seq: int

    def describe(self) -> str:
        return f"seq mismatch at table key {self.key_seq}: embedded seq was {self.embedded_seq}"


class UndecodableEntry(_Finding, frozen=True, tag=True):
    """An entries row that is not `hash || frame` at all (short value, bad key, bad frame)."""

    seq: int
    detail: str

    def describe(self) -> str:
        return f"undecodable entry at seq {self.seq}: {self.detail}"


class DanglingIndex(_Finding, frozen=True, tag=True):
    """An index row pointing past the durable high-watermark or at a missing entry."""

    kind: str
    key: str
    seq: int

    def describe(self) -> str:
        return f"index drift {self.kind} key={self.key}: dangling target seq {self.seq}"


class IndexTargetCorrupted(_Finding, frozen=True, tag=True):
    """An index row pointing at an entry that is stored but damaged (the crate's TargetCorrupted)."""

    kind: str
    key: str
    seq: int

    def describe(self) -> str:
        return f"index drift {self.kind} key={self.key}: corrupted target seq {self.seq}"


class CorruptedIndex(_Finding, frozen=True, tag=True):
    """An index row whose value is not an 8-byte seq."""

    kind: str
    key: str
    detail: str

    def describe(self) -> str:
        return f"corrupted {self.kind} index key {self.key!r}: {self.detail}"


class IndexDigestMismatch(_Finding, frozen=True, tag=True):
    """The index rows of the commit that appended seqs `first_seq..last_seq` are not the rows
    that commit wrote (a key renamed, a row re-pointed, added or lost)."""

    first_seq: int
    last_seq: int
    detail: str

    def describe(self) -> str:
        return f"index rows of commit seqs {self.first_seq}..{self.last_seq} do not match their digest: {self.detail}"


class CommitRecordMismatch(_Finding, frozen=True, tag=True):
    """The commit records (one per write transaction) do not tile `1..high_watermark`, or one
    does not decode."""

    detail: str

    def describe(self) -> str:
        return f"commit records disagree with the entries: {self.detail}"


class CorruptManifest(_Finding, frozen=True, tag=True):
    """The manifest is missing or does not decode."""

    detail: str

    def describe(self) -> str:
        return f"corrupt manifest: {self.detail}"


_MANIFEST_KIND = {"high_watermark": "HighWatermark", "start_ts_init": "StartTsInit", "end_ts_init": "EndTsInit"}


class ManifestMismatch(_Finding, frozen=True, tag=True):
    """A manifest field disagrees with the entries (`expected` is what the entries say)."""

    field: str
    expected: str
    actual: str

    def describe(self) -> str:
        kind = _MANIFEST_KIND.get(self.field, self.field)
        if self.field == "high_watermark":
            reason = f"manifest high_watermark {self.actual} disagrees with durable high_watermark {self.expected}"
        elif self.field == "start_ts_init":
            reason = f"manifest start_ts_init {self.actual} sits above first entry ts_init {self.expected}"
        elif self.field == "end_ts_init" and self.actual == "None":
            reason = f"sealed manifest is missing end_ts_init while entries up to ts_init {self.expected} exist"
        elif self.field == "end_ts_init" and self.expected == "None":
            reason = f"sealed manifest carries end_ts_init {self.actual} despite empty entry table"
        elif self.field == "end_ts_init" and self.expected == "None while Running":
            reason = f"running manifest carries end_ts_init {self.actual}"
        elif self.field == "end_ts_init":
            reason = f"manifest end_ts_init {self.actual} disagrees with last observed ts_init {self.expected}"
        else:
            reason = f"expected {self.expected}, found {self.actual}"
        return f"manifest mismatch {kind}: {reason}"


class ManifestDigestMismatch(_Finding, frozen=True, tag=True):
    """The manifest bytes are not the ones the writer stored (its digest disagrees or is gone)."""

    detail: str

    def describe(self) -> str:
        return f"manifest digest mismatch: {self.detail}"


class CorruptSnapshotAnchor(_Finding, frozen=True, tag=True):
    """An anchors row that does not decode, whose key is not its high-watermark, or whose bytes
    are not the ones the writer stored (anchor digest)."""

    key: str
    detail: str

    def describe(self) -> str:
        return f"snapshot anchor invalid: anchor at key {self.key} {self.detail}"


class AnchorPastWatermark(_Finding, frozen=True, tag=True):
    """A snapshot anchor claims entries beyond the durable high-watermark."""

    anchor_high_watermark: int
    durable_high_watermark: int

    def describe(self) -> str:
        return (
            f"snapshot anchor invalid: snapshot anchor high_watermark {self.anchor_high_watermark} exceeds "
            f"durable high_watermark {self.durable_high_watermark}"
        )


class SealRecordMismatch(_Finding, frozen=True, tag=True):
    """The seal record beside the file (written at seal, outside LMDB) disagrees with the file:
    the file was rolled back (e.g. a sealed run reads Running again) or the record is damaged."""

    detail: str

    def describe(self) -> str:
        return f"seal record mismatch: {self.detail}"


class SnapshotBlobProblem(_Finding, frozen=True, tag=True):
    """A snapshot anchor whose blob, in the blob store beside the run file, is missing or does
    not hash to the anchor's content_hash (`nes.replay.blobs.check_run_file_blobs`)."""

    anchor_high_watermark: int
    blob_ref: str
    detail: str

    def describe(self) -> str:
        return f"snapshot anchor {self.anchor_high_watermark} blob {self.blob_ref}: {self.detail}"


class OpenError(_Finding, frozen=True, tag=True):
    """The file exists but is not a readable run file (LMDB refused it, format marker wrong)."""

    detail: str

    def describe(self) -> str:
        return f"cannot open run file: {self.detail}"


Finding = Union[
    HashMismatch,
    Gap,
    KeySeqMismatch,
    UndecodableEntry,
    DanglingIndex,
    IndexTargetCorrupted,
    CorruptedIndex,
    IndexDigestMismatch,
    CommitRecordMismatch,
    CorruptManifest,
    ManifestMismatch,
    ManifestDigestMismatch,
    CorruptSnapshotAnchor,
    AnchorPastWatermark,
    SealRecordMismatch,
    SnapshotBlobProblem,
    OpenError,
]

# msgspec raises UnicodeDecodeError (a ValueError) for invalid UTF-8 inside MessagePack.
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, ValueError)

# Findings that mean the entry log itself is damaged.
_ENTRY_DAMAGE = (HashMismatch, Gap, KeySeqMismatch, UndecodableEntry, OpenError)


# ---- verdicts -----------------------------------------------------------------------------------
def _quote(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")


class VerifyReport(msgspec.Struct, frozen=True):
    """The verdict on one run file: clean when there are no findings (and the marker sidecar,
    when present, is clean)."""

    path: str
    run_id: str | None
    status: str
    high_watermark: int  # durable: the last key of `entries` (of the snapshot verified)
    entries_scanned: int
    findings: list[Finding] = []
    # The data-marker sidecar `<run_id>.markers.lmdb`, when one lies beside the run file.
    markers: MarkerVerifyReport | None = None

    def is_clean(self) -> bool:
        """No findings in the run file nor in its marker sidecar."""
        return not self.findings and (self.markers is None or self.markers.is_clean())

    def open_error(self) -> str | None:
        """The reason, when the file failed to open as a run at all (no manifest was read)."""
        if self.run_id is None and len(self.findings) == 1 and isinstance(self.findings[0], OpenError):
            return self.findings[0].detail
        return None

    def _marker_summary(self) -> str:
        markers = self.markers
        if markers is None:
            return "markers=absent"
        state = "clean" if markers.is_clean() else "corrupt"
        text = (
            f"markers={state} marker_run_id={markers.run_id or 'unknown'} marker_status={markers.status}"
            f" marker_snapshots_scanned={markers.snapshots_scanned} marker_hifi_scanned={markers.hifi_scanned}"
            f" marker_gaps_scanned={markers.gaps_scanned}"
            f" marker_dict_entries_scanned={markers.dict_entries_scanned}"
        )
        if not markers.is_clean():
            text += f" marker_findings={len(markers.findings)}"
        return text

    def summary_line(self) -> str:
        """The first output line, as the crate's `verify` prints it."""
        opened = self.open_error()
        if opened is not None:
            return f'corrupt path={self.path} error="{_quote(opened)}" {QUARANTINE_NOT_PERFORMED}'
        common = (
            f"run_id={self.run_id or 'unknown'} status={self.status} "
            f"high_watermark={self.high_watermark} entries_scanned={self.entries_scanned}"
        )
        if self.is_clean():
            return f"clean {common} {self._marker_summary()}"
        marker_findings = 0 if self.markers is None else len(self.markers.findings)
        return (
            f"corrupt {common} findings={len(self.findings) + marker_findings} marker_findings={marker_findings} "
            f"{self._marker_summary()} {QUARANTINE_NOT_PERFORMED}"
        )

    def lines(self) -> list[str]:
        """Every output line: the summary, then one `- <finding>` line each."""
        if self.open_error() is not None:
            return [self.summary_line()]
        marker_lines = [] if self.markers is None else self.markers.describe()
        return [self.summary_line(), *(f"- {f.describe()}" for f in self.findings), *(f"- {m}" for m in marker_lines)]

    def to_json(self) -> str:
        """The report as one JSON object (msgspec)."""
        return msgspec.json.encode(self).decode()


class WorkerFailure(msgspec.Struct, frozen=True):
    """The verifier worker died (signal, exit without a report) or ran out of time."""

    path: str
    worker_status: str

    def is_clean(self) -> bool:
        """Never: a worker that gave no verdict is reported corrupt (as the crate does)."""
        return False

    def summary_line(self) -> str:
        """`corrupt path=P worker_status="..." quarantine=not-performed`."""
        return f'corrupt path={self.path} worker_status="{_quote(self.worker_status)}" {QUARANTINE_NOT_PERFORMED}'

    def lines(self) -> list[str]:
        """The one output line."""
        return [self.summary_line()]

    def to_json(self) -> str:
        """The failure as one JSON object (msgspec)."""
        return msgspec.json.encode(self).decode()


class VerifyOpenError(EventStoreError, OSError):
    """The path cannot be verified at all (missing, not a regular file)."""


class LiveRunChurn(Corrupted):
    """A live run changed faster than a consistent snapshot of it could be read (retry)."""


# ---- consistent reads of a file that may be live ------------------------------------------------
# A run file is read without LMDB's lock file, and the writer sidecar writes without one, so a
# reader is invisible to the writer: LMDB reuses the pages freed by commit T from commit T+2 on.
# Every read is therefore done in chunks, each in its own short read transaction, and a chunk is
# kept only if the file's last committed transaction id is still at most `txn.id() + 1` after it
# was read (no page of the chunk's snapshot can have been reused yet). Everything a run file
# holds is append-only and keyed by seq, so chunks read in later transactions are cut at the
# high-watermark of the first one: the report describes that first snapshot.
_CHUNK_ROWS = 1_024
_MIN_CHUNK_ROWS = 16
_MAX_RETRIES = 1_000  # per chunk: each try is one short read transaction


class _Snapshot:
    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.txnid: int | None = None
        self.later = False  # some chunk was read after a newer commit than the snapshot's
        self._dbs: dict[bytes, lmdb._Database | None] = {}
        # Handles must exist before a transaction begins to be usable in it.
        for name in (DB_META, DB_MANIFEST, DB_ENTRIES, DB_ANCHORS, DB_DIGESTS):
            self._open(name, False)
        for name in ALL_INDEX_DBS:
            self._open(name, True)

    def _open(self, name: bytes, dupsort: bool) -> None:
        for _attempt in range(_MAX_RETRIES):
            try:
                self._dbs[name] = self.env.open_db(name, create=False, dupsort=dupsort, dupfixed=dupsort)
                return
            except lmdb.NotFoundError:
                self._dbs[name] = None
                return
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)  # a live writer grew the map: adopt its size
        raise LiveRunChurn("the run file's map kept growing while it was opened; verify again")

    def db(self, txn: lmdb.Transaction, name: bytes, dupsort: bool = False) -> lmdb._Database | None:
        """The handle of named database `name`, None if the file has none (all are opened once,
        up front, outside any transaction)."""
        return self._dbs.get(name)

    def _moved(self, txnid: int) -> bool:
        return int(self.env.info()["last_txnid"]) > txnid + 1

    def read(self, body: Callable[[lmdb.Transaction, int], T], rows: int = _CHUNK_ROWS) -> T:
        """`body(txn, max_rows)` in a consistent read transaction (see above)."""
        for _attempt in range(_MAX_RETRIES):
            txnid = -1
            try:
                with self.env.begin() as txn:
                    txnid = txn.id()
                    result = body(txn, rows)
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)  # the writer grew the map: adopt its size
                continue
            except lmdb.Error:
                if txnid >= 0 and self._moved(txnid):
                    rows = max(_MIN_CHUNK_ROWS, rows // 2)
                    continue  # the writer reused a page under us: read it again
                raise
            if self._moved(txnid):
                rows = max(_MIN_CHUNK_ROWS, rows // 2)
                continue
            if self.txnid is None:
                self.txnid = txnid
            elif txnid != self.txnid:
                self.later = True
            return result
        raise LiveRunChurn("the run file changed faster than a consistent snapshot could be read; verify again")

    def rows(self, name: bytes, dupsort: bool = False, prefix: bytes = b"") -> Iterator[tuple[list[tuple[bytes, bytes]], bool]]:
        """All rows of db `name` (those starting with `prefix`), chunk by chunk, each chunk with
        whether it was read after a newer commit than the snapshot's."""
        after: tuple[bytes, bytes] | None = None
        while True:
            def body(txn: lmdb.Transaction, limit: int) -> tuple[list[tuple[bytes, bytes]], bool]:
                db = self.db(txn, name, dupsort)
                if db is None:
                    return [], True
                out: list[tuple[bytes, bytes]] = []
                with txn.cursor(db) as cursor:
                    if after is None:
                        positioned = cursor.set_range(prefix) if prefix else cursor.first()
                    else:
                        positioned = _seek_after(cursor, after, dupsort)
                    if not positioned:
                        return out, True
                    for raw_key, raw_value in cursor.iternext(keys=True, values=True):
                        key, value = bytes(raw_key), bytes(raw_value)
                        if prefix and not key.startswith(prefix):
                            return out, True
                        out.append((key, value))
                        if len(out) >= limit:
                            return out, False
                return out, True

            chunk, done = self.read(body)
            if chunk:
                yield chunk, self.later
                after = chunk[-1]
            if done or not chunk:
                return


def _seek_after(cursor: lmdb.Cursor, after: tuple[bytes, bytes], dupsort: bool) -> bool:
    key, value = after
    if dupsort:
        if cursor.set_range_dup(key, value):
            if cursor.key() == key and cursor.value() == value:
                return cursor.next()
            return True
        if cursor.set_key(key):
            return cursor.next_nodup()
        return cursor.set_range(key)
    if not cursor.set_range(key):
        return False
    if cursor.key() == key:
        return cursor.next()
    return True


# ---- the scan -----------------------------------------------------------------------------------
class _EntryScan(msgspec.Struct):
    entries_scanned: int = 0
    high_watermark: int = 0
    max_ts_init: int | None = None
    min_ts_init: int | None = None  # ts_init of seq 1 (RunStarted), when intact
    findings: list = []
    gaps: list = []  # (from_seq, to_seq), ascending
    damaged: set = set()  # seqs stored but damaged (hash, key/seq, undecodable)
    last_hash: bytes = b""  # the stored hash of the last entry


def _scan_entries(txn: lmdb.Transaction, db: lmdb._Database) -> _EntryScan:
    """Hash, key-vs-embedded-seq and gap check of every entry, in key order (one transaction)."""
    scan = _EntryScan(0, 0, None, None, [], [], set(), b"")
    _scan_chunk(txn, db, scan, None, 1 << 64, 1 << 62)
    return scan


def _scan_entries_range(txn: lmdb.Transaction, db: lmdb._Database, first: int, last: int | None) -> _EntryScan:
    """The checks of `_scan_entries` over keys `first..last` (None: to the end), in one
    transaction (tools/bench_verify.py splits a file into ranges with it)."""
    scan = _EntryScan(0, first - 1, None, None, [], [], set(), b"")
    _scan_chunk(txn, db, scan, _U64.pack(first - 1) if first > 1 else None, (1 << 64) if last is None else last, 1 << 62)
    return scan


def _scan_chunk(
    txn: lmdb.Transaction, db: lmdb._Database, scan: _EntryScan, after: bytes | None, stop: int, limit: int
) -> tuple[bytes | None, bool]:
    """Scan up to `limit` entry rows after raw key `after` (from the first without), up to seq
    `stop`, into `scan`, straight off a cursor. Returns (last raw key read, finished)."""
    with txn.cursor(db) as cursor:
        positioned = cursor.first() if after is None else _seek_after(cursor, (after, b""), False)
        if not positioned:
            return after, True
        return _scan_rows(cursor.iternext(keys=True, values=True), scan, after, stop, limit)


def _read_rows(txn: lmdb.Transaction, db: lmdb._Database, after: bytes | None, limit: int) -> list[tuple[Any, Any]]:
    """Up to `limit` raw (key, value) rows after raw key `after`, copied out of the map (the
    read transaction can then end before anything is hashed: a live writer gets less time to
    reuse a page under it)."""
    with txn.cursor(db) as cursor:
        positioned = cursor.first() if after is None else _seek_after(cursor, (after, b""), False)
        if not positioned:
            return []
        return list(islice(cursor.iternext(keys=True, values=True), limit))


def _scan_rows(
    items: Iterable[tuple[Any, Any]], scan: _EntryScan, after: bytes | None, stop: int, limit: int
) -> tuple[bytes | None, bool]:
    """The entry checks over `items` (raw rows in key order), into `scan`; stops after `limit`
    rows or past seq `stop`. Returns (last raw key consumed, finished).

    Written flat: this loop is the verifier's throughput (tools/bench_verify.py). Measured
    choices: values as bytes (`buffers=False`) iterate faster than memoryviews here, and
    copying a hasher pre-seeded with the domain beats building a fresh one or hashing
    `domain + frame`.
    """
    findings = scan.findings
    gaps = scan.gaps
    damaged = scan.damaged
    count = 0
    expected = scan.high_watermark + 1
    max_ts = -1 if scan.max_ts_init is None else scan.max_ts_init
    min_ts = 1 << 64 if scan.min_ts_init is None else scan.min_ts_init
    unpack_key = _U64.unpack
    unpack_head = _SEQ_TS.unpack_from
    hash_len = HASH_LEN
    min_len = _MIN_VALUE_LEN
    hasher = frame_hasher()  # this scan's own, reset per row
    reset, update, digest, domain = hasher.reset, hasher.update, hasher.digest, HASH_DOMAIN
    last_key: Any = after
    last_value: Any = None
    finished = True
    for key, value in items:
        if count >= limit:
            finished = False
            break
        if len(key) != 8:
            count += 1
            last_key = key
            findings.append(UndecodableEntry(expected, f"entry key of {len(key)} bytes (expected 8)"))
            continue
        (seq,) = unpack_key(key)
        if seq > stop:
            break
        count += 1
        last_key = key
        last_value = value
        if seq != expected:
            if seq > expected:
                gaps.append((expected, seq - 1))
                findings.append(Gap(expected, seq - 1))
            else:  # only seq 0 sorts before 1 among 8-byte keys
                findings.append(UndecodableEntry(seq, "seq 0 is not a valid entry key"))
        expected = seq + 1
        if len(value) < min_len:
            damaged.add(seq)
            findings.append(UndecodableEntry(seq, f"value of {len(value)} bytes is shorter than hash and frame header"))
            continue
        reset()
        update(domain)
        update(value[hash_len:])
        if digest() != value[:hash_len]:
            damaged.add(seq)
            findings.append(HashMismatch(seq))
            continue
        embedded, ts_init = unpack_head(value, hash_len)
        if embedded != seq:
            damaged.add(seq)
            findings.append(KeySeqMismatch(seq, embedded))
            continue
        if ts_init > max_ts:
            max_ts = ts_init
        if seq == 1:
            min_ts = ts_init
    scan.entries_scanned += count
    if expected - 1 > scan.high_watermark:
        scan.high_watermark = expected - 1
    if last_value is not None:
        scan.last_hash = bytes(last_value[:hash_len])
    scan.max_ts_init = max_ts if max_ts >= 0 else None
    scan.min_ts_init = min_ts if min_ts < 1 << 64 else None
    return last_key, finished


def _is_missing(seq: int, high_watermark: int, gaps: list, gap_starts: list[int]) -> bool:
    if seq < 1 or seq > high_watermark:
        return True
    i = bisect.bisect_right(gap_starts, seq) - 1
    return i >= 0 and gaps[i][0] <= seq <= gaps[i][1]


def _key_text(key: bytes | memoryview) -> str:
    return bytes(key).decode("utf-8", errors="backslashreplace")


def _index_key_text(db_name: bytes, key: bytes) -> str:
    """Order ids as text; a correlation id (16 raw bytes) as its UUID."""
    if db_name == DB_IDX_CORRELATION and len(key) == 16:
        return str(uuid.UUID(bytes=bytes(key)))
    return _key_text(key)


class _Commits:
    """The commit records of the snapshot, and the index-row sums recomputed against them."""

    def __init__(self) -> None:
        self.records: list[CommitRecord] = []
        self.firsts: list[int] = []
        self.crc_sums: list[int] = []
        self.adler_sums: list[int] = []
        self.counts: list[int] = []

    def add_row(self, db_name: bytes, key: bytes, value: bytes, seq: int) -> None:
        i = bisect.bisect_right(self.firsts, seq) - 1
        if i >= 0 and seq <= self.records[i].last_seq:
            crc, adler = index_row_hash(db_name, key, value)
            self.crc_sums[i] += crc
            self.adler_sums[i] += adler
            self.counts[i] += 1


def _read_commits(snap: _Snapshot, high_watermark: int, findings: list) -> _Commits:
    commits = _Commits()
    expected_first = 1
    for chunk, later in snap.rows(DB_DIGESTS, prefix=COMMIT_PREFIX):
        for key, value in chunk:
            record = decode_commit(key, value)
            if record is None:
                findings.append(CommitRecordMismatch(f"malformed commit record under key {bytes(key).hex()}"))
                continue
            if record.first_seq > high_watermark:
                if not later:
                    findings.append(CommitRecordMismatch(
                        f"commit record for seqs {record.first_seq}..{record.last_seq} lies past the last entry {high_watermark}"
                    ))
                continue
            if record.first_seq != expected_first or not record.first_seq <= record.last_seq <= high_watermark:
                findings.append(CommitRecordMismatch(
                    f"commit record for seqs {record.first_seq}..{record.last_seq} where seq {expected_first} was expected next"
                ))
            expected_first = max(expected_first, record.last_seq + 1)
            commits.records.append(record)
            commits.firsts.append(record.first_seq)
            commits.crc_sums.append(0)
            commits.adler_sums.append(0)
            commits.counts.append(0)
    if high_watermark and expected_first != high_watermark + 1:
        findings.append(CommitRecordMismatch(
            f"commit records cover seqs up to {expected_first - 1}, the entries go to {high_watermark}"
        ))
    return commits


def _check_indexes(snap: _Snapshot, scan: _EntryScan, commits: _Commits, progress: _Progress) -> list:
    """Every row of every index database the layout lists: an 8-byte seq pointing at a stored,
    intact entry, and summed into its commit's digest."""
    findings: list = []
    gap_starts = [g[0] for g in scan.gaps]
    hwm = scan.high_watermark
    damaged = scan.damaged
    rows_seen = 0
    for name, label in ALL_INDEX_DBS.items():
        for chunk, later in snap.rows(name, dupsort=True):
            rows_seen += len(chunk)
            progress("index rows", rows_seen)
            for key, value in chunk:
                if len(value) != 8:
                    findings.append(CorruptedIndex(label, _index_key_text(name, key), f"value of {len(value)} bytes (expected 8)"))
                    continue
                (seq,) = _U64.unpack(value)
                if seq > hwm and later:
                    continue  # appended after the snapshot this report describes
                if seq in damaged:
                    findings.append(IndexTargetCorrupted(label, _index_key_text(name, key), seq))
                elif _is_missing(seq, hwm, scan.gaps, gap_starts):
                    findings.append(DanglingIndex(label, _index_key_text(name, key), seq))
                commits.add_row(name, key, value, seq)
    for record, crc_sum, adler_sum, count in zip(commits.records, commits.crc_sums, commits.adler_sums, commits.counts):
        if digest_bytes(crc_sum, adler_sum) != record[3] or count != record[2]:
            findings.append(IndexDigestMismatch(
                record.first_seq, record.last_seq, f"the commit wrote {record[2]} index rows, {count} found"
                + ("" if count != record[2] else " with different contents")
            ))
    return findings


def _check_anchors(snap: _Snapshot, durable_high_watermark: int) -> tuple[list, list[SnapshotAnchor]]:
    """The anchor findings, and every anchor that decodes (for the blob-store check)."""
    def body(txn: lmdb.Transaction, _limit: int) -> tuple[list[tuple[bytes, bytes]], dict[bytes, bytes], bool]:
        anchors_db = snap.db(txn, DB_ANCHORS)
        digests_db = snap.db(txn, DB_DIGESTS)
        later = txn.id() != snap.txnid
        anchors = [] if anchors_db is None else [
            (bytes(key), bytes(value)) for key, value in txn.cursor(anchors_db).iternext(keys=True, values=True)
        ]
        digests: dict[bytes, bytes] = {}
        if digests_db is not None:
            with txn.cursor(digests_db) as cursor:
                if cursor.set_range(ANCHOR_PREFIX):
                    for key, value in cursor.iternext(keys=True, values=True):
                        if not bytes(key).startswith(ANCHOR_PREFIX):
                            break
                        digests[bytes(key[len(ANCHOR_PREFIX):])] = bytes(value)
        return anchors, digests, later

    anchors, digests, later = snap.read(body)  # anchors and their digests: one transaction
    findings: list = []
    decoded: list[SnapshotAnchor] = []
    for key, value in anchors:
        key_label = str(_U64.unpack(key)[0]) if len(key) == 8 else bytes(key).hex()
        stored = digests.pop(bytes(key), None)
        if stored is None:
            findings.append(CorruptSnapshotAnchor(key_label, "has no digest"))
        elif stored != anchor_digest(key, value):
            findings.append(CorruptSnapshotAnchor(key_label, "is not the anchor that was recorded (digest mismatch)"))
        try:
            anchor = decode_anchor(bytes(value))
        except _DECODE_ERRORS as exc:
            findings.append(CorruptSnapshotAnchor(key_label, f"unreadable: {exc}"))
            continue
        decoded.append(anchor)
        if len(key) != 8 or _U64.unpack(key)[0] != anchor.high_watermark:
            findings.append(CorruptSnapshotAnchor(key_label, f"holds an anchor for high_watermark {anchor.high_watermark}"))
        if anchor.high_watermark > durable_high_watermark and not later:
            findings.append(AnchorPastWatermark(anchor.high_watermark, durable_high_watermark))
    for key in digests:
        label = str(_U64.unpack(key)[0]) if len(key) == 8 else key.hex()
        findings.append(CorruptSnapshotAnchor(label, "has a digest but no anchor row"))
    return findings, decoded


def _check_manifest(manifest: RunManifest, scan: _EntryScan) -> list:
    findings: list = []
    # The crate compares with the earliest ts_init; nes compares with the first entry in replay
    # order (RunStarted, stamped with start_ts_init itself): later entries may carry engine
    # time older than the wall-clock start (a backtest), which is not damage.
    if scan.min_ts_init is not None and manifest.start_ts_init > scan.min_ts_init:
        findings.append(ManifestMismatch("start_ts_init", str(scan.min_ts_init), str(manifest.start_ts_init)))
    if not manifest.is_sealed():
        if manifest.end_ts_init is not None:
            findings.append(ManifestMismatch("end_ts_init", "None while Running", str(manifest.end_ts_init)))
        return findings
    if manifest.high_watermark != scan.high_watermark:
        findings.append(ManifestMismatch("high_watermark", str(scan.high_watermark), str(manifest.high_watermark)))
    # A damaged entry's ts_init is unknown, so max ts_init is too: report the damage, not a guess.
    if not scan.damaged and manifest.end_ts_init != scan.max_ts_init:
        findings.append(ManifestMismatch("end_ts_init", str(scan.max_ts_init), str(manifest.end_ts_init)))
    return findings


def _check_seal_record(path: Path, manifest: RunManifest | None, raw_manifest: bytes | None, scan: _EntryScan) -> list:
    """Compare the seal record (outside LMDB) with what the file says now."""
    try:
        record = read_seal_record(path, None if manifest is None else manifest.run_id)
    except SealRecordInvalid as exc:
        return [SealRecordMismatch(str(exc))]
    if record is None:
        return []
    if manifest is None or raw_manifest is None:
        return [SealRecordMismatch(f"the run was sealed {record.status} but its manifest is unreadable")]
    if not manifest.is_sealed():
        return [SealRecordMismatch(
            f"the run was sealed {record.status} at high_watermark {record.high_watermark} but the file reads "
            f"Running at high_watermark {scan.high_watermark}: it was rolled back"
        )]
    problems = []
    if str(manifest.status) != record.status:
        problems.append(f"status {manifest.status} (sealed {record.status})")
    if scan.high_watermark != record.high_watermark:
        problems.append(f"high_watermark {scan.high_watermark} (sealed at {record.high_watermark})")
    if manifest_digest(raw_manifest).hex() != record.manifest_digest:
        problems.append("manifest bytes differ from the sealed manifest")
    if scan.last_hash.hex() != record.last_entry_hash and scan.high_watermark == record.high_watermark:
        problems.append("last entry differs from the sealed one")
    if record.file_digest:
        size, digest = file_digest(path)
        if size != record.file_size or digest != record.file_digest:
            problems.append(f"the file's bytes changed after its seal ({size} bytes, sealed at {record.file_size})")
    if record.status == "Quarantined" and not problems:
        return []
    return [SealRecordMismatch("; ".join(problems))] if problems else []


_Progress = Callable[[str, int], None]


def _no_progress(_phase: str, _count: int) -> None:
    return None


def _open_env(path: Path) -> lmdb.Environment:
    if not os.path.isfile(path):  # before lmdb, which would create a missing file
        raise VerifyOpenError(f"run file not found: {path}")
    return open_read_only(path)


class Verifier:
    """Full integrity scan of one run file, in this process; `verify()` may be called more than
    once. It maps the file as it is: for a file that may be damaged, call `verify_in_worker`
    (the same scan in a child process, whose crash becomes a verdict) unless losing this
    process to an LMDB assertion is acceptable.

    A live run (a writer appending meanwhile) is verified as the consistent snapshot of its
    first read: status Running, high-watermark and findings as of that commit."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._last_scan: _EntryScan | None = None  # the entry scan of the last verify (recovery)

    def verify(self, progress: _Progress | None = None) -> VerifyReport:
        """The run file's report, plus its data-marker sidecar's when one lies beside it.
        `progress(phase, count)` is called as the scan advances (entries, then index rows)."""
        report = self._verify_run_file(progress or _no_progress)
        marker_path = marker_sidecar_path(self.path)
        if not marker_path.exists():
            return report
        from nes.markers.verifier import verify_marker_file

        markers = verify_marker_file(marker_path, entry_high_watermark=report.high_watermark)
        return msgspec.structs.replace(report, markers=markers)

    def _verify_run_file(self, progress: _Progress) -> VerifyReport:
        path = str(self.path)
        try:
            env = _open_env(self.path)
        except (lmdb.Error, Corrupted) as exc:
            return VerifyReport(path, None, "unknown", 0, 0, [OpenError(_error_text(exc))])
        try:
            return self._verify_env(env, progress)
        except LiveRunChurn:
            raise
        except Exception as exc:  # noqa: BLE001 - a scan that cannot finish is never "clean"
            return VerifyReport(path, None, "unknown", 0, 0, [OpenError(f"verifier failed: {_error_text(exc)}")])
        finally:
            env.close()

    def _verify_env(self, env: lmdb.Environment, progress: _Progress) -> VerifyReport:
        path = str(self.path)
        snap = _Snapshot(env)
        try:
            head = snap.read(lambda txn, _rows: _read_head(snap, txn))
            if isinstance(head, str):
                return VerifyReport(path, None, "unknown", 0, 0, [OpenError(head)])
            raw_manifest, stored_digest, last_seq = head
            findings: list = []
            manifest: RunManifest | None = None
            if raw_manifest is None:
                findings.append(CorruptManifest("missing manifest/current"))
            else:
                try:
                    manifest = decode_manifest(raw_manifest)
                except _DECODE_ERRORS as exc:
                    findings.append(CorruptManifest(f"does not decode: {exc}"))
                if stored_digest is None:
                    findings.append(ManifestDigestMismatch("the manifest digest is missing"))
                elif stored_digest != manifest_digest(raw_manifest):
                    findings.append(ManifestDigestMismatch("the manifest is not the one the writer stored"))
            scan = _EntryScan(0, 0, None, None, [], [], set(), b"")
            after: bytes | None = None
            while True:
                def body(txn: lmdb.Transaction, limit: int, after: bytes | None = after) -> tuple[list[tuple[Any, Any]], int]:
                    db = snap.db(txn, DB_ENTRIES)
                    if db is None:
                        raise lmdb.NotFoundError("entries")
                    return _read_rows(txn, db, after, limit), limit

                rows, limit = snap.read(body)  # copied out, consistent: now check them
                consumed = scan.entries_scanned
                after, _ = _scan_rows(rows, scan, after, last_seq, len(rows))
                finished = len(rows) < limit or scan.high_watermark >= last_seq or scan.entries_scanned == consumed
                progress("entries", scan.entries_scanned)
                if finished:
                    break
            if scan.high_watermark < last_seq:
                # The last key is past where a forward scan ended: the tree does not reach it
                # (damage), so those seqs cannot be read in order: a gap up to the last key.
                scan.gaps.append((scan.high_watermark + 1, last_seq))
                scan.findings.append(Gap(scan.high_watermark + 1, last_seq))
                scan.high_watermark = last_seq
            findings.extend(scan.findings)
            commits = _read_commits(snap, scan.high_watermark, findings)
            findings.extend(_check_indexes(snap, scan, commits, progress))
            anchor_findings, anchors = _check_anchors(snap, scan.high_watermark)
            findings.extend(anchor_findings)
            if manifest is not None:
                findings.extend(_check_manifest(manifest, scan))
            findings.extend(_check_seal_record(self.path, manifest, raw_manifest, scan))
            findings.extend(_snapshot_blob_findings(self.path, anchors))
        except lmdb.NotFoundError as exc:
            return VerifyReport(path, None, "unknown", 0, 0, [OpenError(f"missing database: {exc}")])
        except lmdb.Error as exc:
            return VerifyReport(path, None, "unknown", 0, 0, [OpenError(_error_text(exc))])
        self._last_scan = scan
        return VerifyReport(
            path,
            None if manifest is None else manifest.run_id,
            "unknown" if manifest is None else str(manifest.status),
            scan.high_watermark,
            scan.entries_scanned,
            findings,
        )


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _snapshot_blob_findings(path: Path, anchors: list[SnapshotAnchor]) -> list[SnapshotBlobProblem]:
    """Blob-store findings for the run file's decodable anchors (its own checks report the
    rest); nothing when no blob store lies beside the file."""
    from nes.replay.blobs import check_run_file_blobs

    return [SnapshotBlobProblem(a.high_watermark, a.blob_ref, problem) for a, problem in check_run_file_blobs(path, anchors)]


def _read_head(snap: _Snapshot, txn: lmdb.Transaction) -> tuple[bytes | None, bytes | None, int] | str:
    """(manifest bytes, manifest digest, last entry seq) of the snapshot, or why the file is not
    a run file of this format."""
    meta = snap.db(txn, DB_META)
    if meta is None:
        return "missing meta database"
    raw_format = txn.get(FORMAT_KEY, db=meta)
    problem = format_version_problem(None if raw_format is None else bytes(raw_format))
    if problem is not None:
        return problem
    manifest_db = snap.db(txn, DB_MANIFEST)
    entries_db = snap.db(txn, DB_ENTRIES)
    if manifest_db is None or entries_db is None:
        return "missing database: " + ("manifest" if manifest_db is None else "entries")
    digests_db = snap.db(txn, DB_DIGESTS)
    raw = txn.get(MANIFEST_KEY, db=manifest_db)
    digest = None if digests_db is None else txn.get(MANIFEST_DIGEST_KEY, db=digests_db)
    last_seq = 0
    with txn.cursor(entries_db) as cursor:
        if cursor.last():
            for key in cursor.iterprev(keys=True, values=False):
                if len(key) == 8:
                    last_seq = _U64.unpack(key)[0]
                    break
    return (None if raw is None else bytes(raw)), (None if digest is None else bytes(digest)), last_seq


def scan_tail(path: str | os.PathLike[str], progress: _Progress | None = None) -> TailScan:
    """The crash-recovery scan of a (Running) run file: the full verifier's findings decide.

    `damaged` is True if the verifier reports anything at all (entries, index rows, anchors,
    manifest, seal record) or the file fails to open: recovery quarantines exactly what
    `nes verify` calls corrupt. The last entry's topic and payload_type come from its frame;
    `max_ts_init` is the largest ts_init of the intact entries (the sealed end_ts_init).
    """
    from nes.recovery import TailScan

    verifier = Verifier(path)
    report = verifier.verify(progress)
    damage = list(report.findings)
    if report.markers is not None and not report.markers.is_clean():
        damage.append(OpenError("marker sidecar is corrupt"))
    last_topic = last_payload_type = None
    scan = verifier._last_scan
    max_ts = None if scan is None else scan.max_ts_init
    if report.open_error() is None and report.entries_scanned:
        try:  # only the last entry is read again: its topic decides Ended vs CrashedRecovered
            env = _open_env(Path(path))
        except (lmdb.Error, Corrupted) as exc:
            return TailScan(0, 0, True, None, None, _error_text(exc))
        try:
            with env.begin() as txn:
                entries_db = env.open_db(DB_ENTRIES, txn=txn, create=False)
                with txn.cursor(entries_db) as cursor:
                    value = bytes(cursor.value()) if cursor.last() else b""
            try:
                _, _, _, last_topic, last_payload_type, _, _, _ = decode_frame(value, HASH_LEN)
            except FrameError as exc:
                if not damage:
                    damage.append(UndecodableEntry(report.high_watermark, str(exc)))
        except lmdb.Error as exc:
            damage.append(OpenError(_error_text(exc)))
        finally:
            env.close()
    detail = "; ".join(f.describe() for f in damage[:5])
    if len(damage) > 5:
        detail += f"; and {len(damage) - 5} more"
    return TailScan(
        report.high_watermark, report.entries_scanned, bool(damage), last_topic, last_payload_type, detail, max_ts
    )


# ---- the worker boundary ------------------------------------------------------------------------
PROOF_STALL_TIMEOUT_S = 30.0


def unproven_file_problem(path: str | os.PathLike[str]) -> str | None:
    """For a run file its seal record does not prove (`seal_record.check_before_mapping`):
    None when it verifies clean in a worker, so it can be mapped in-process; else why not, one
    line (its verdict, or why it could not be verified)."""
    try:
        verdict = verify_in_worker(path, PROOF_STALL_TIMEOUT_S)
    except VerifyOpenError as exc:
        return f"cannot verify it: {exc}"
    return None if verdict.is_clean() else verdict.summary_line()


def verify_in_worker(
    path: str | os.PathLike[str], timeout_s: float, progress: Callable[[str, int], None] | None = None
) -> VerifyReport | WorkerFailure:
    """Verify in a `python -m workers.verify` child; a crash or a stall is a WorkerFailure.

    `timeout_s` bounds the time without progress, not the total: the worker reports progress
    as it scans, so a large clean run is never called corrupt for its size. `progress(phase,
    count)` sees those reports. Raises VerifyOpenError for a missing file (nothing to verify,
    not a verdict).
    """
    path_str = str(path)
    if not os.path.isfile(path_str):
        raise VerifyOpenError(f"run file not found: {path_str}")
    before = _last_txnid(path_str)
    for _attempt in range(_LIVE_WORKER_RETRIES):
        try:
            return run_progress_worker("workers.verify", [path_str], timeout_s, VerifyReport, progress)
        except WorkerCrash as crash:
            if crash.returncode == 2:  # the worker's own "cannot verify" (e.g. a live run churning)
                raise VerifyOpenError(crash.status.split(": ", 1)[-1]) from None
            after = _last_txnid(path_str)
            if crash.returncode is not None and crash.returncode < 0 and after is not None and after != before:
                # Killed by a signal while a writer committed: LMDB reused a page under a read
                # (a live run's reader is invisible to its writer). Not damage: read it again.
                before = after
                continue
            return WorkerFailure(path_str, crash.status)
    raise VerifyOpenError("the run file changed faster than a consistent snapshot could be read; verify again")


_LIVE_WORKER_RETRIES = 20


def _last_txnid(path: str) -> int | None:
    try:
        return check_run_file_shape(path).txnid
    except (OSError, Corrupted):
        return None


# ---- several paths, one outcome shape -----------------------------------------------------------
EXIT_CLEAN, EXIT_CORRUPT, EXIT_ERROR = 0, 1, 2


class VerifyOutcome(msgspec.Struct, frozen=True):
    """One path's outcome in one shape for every case (`nes verify --json` prints these):
    `verdict` is clean, corrupt (findings, a file that is not a run, a worker crash or
    stall) or error (nothing could be verified: no run file, bad settings)."""

    path: str
    verdict: str  # "clean" | "corrupt" | "error"
    exit_code: int  # 0 | 1 | 2
    run_id: str | None = None
    status: str | None = None
    high_watermark: int | None = None
    entries_scanned: int | None = None
    findings: list[Finding] = []
    markers: MarkerVerifyReport | None = None
    worker_status: str | None = None
    error: str | None = None
    lines: list[str] = []  # the human output lines (stdout for clean/corrupt, stderr for error)

    @classmethod
    def of(cls, verdict: VerifyReport | WorkerFailure) -> VerifyOutcome:
        """The outcome of a verdict."""
        clean = verdict.is_clean()
        kind, code = ("clean", EXIT_CLEAN) if clean else ("corrupt", EXIT_CORRUPT)
        if isinstance(verdict, WorkerFailure):
            return cls(verdict.path, kind, code, worker_status=verdict.worker_status, lines=verdict.lines())
        return cls(
            verdict.path, kind, code, verdict.run_id, verdict.status, verdict.high_watermark, verdict.entries_scanned,
            list(verdict.findings), verdict.markers, error=verdict.open_error(), lines=verdict.lines(),
        )

    @classmethod
    def failed(cls, path: str, error: str) -> VerifyOutcome:
        """Nothing could be verified at `path`."""
        return cls(path, "error", EXIT_ERROR, error=error, lines=[f'error path={path} error="{_quote(error)}"'])


class VerifySummary(msgspec.Struct, frozen=True):
    """Counts over several paths; `exit_code` is 1 if any is corrupt, else 2 if any could not
    be verified, else 0."""

    paths: int
    clean: int
    corrupt: int
    errors: int
    exit_code: int

    @classmethod
    def of(cls, outcomes: list[VerifyOutcome]) -> VerifySummary:
        """The summary of `outcomes`."""
        counts = {kind: sum(o.verdict == kind for o in outcomes) for kind in ("clean", "corrupt", "error")}
        code = EXIT_CORRUPT if counts["corrupt"] else EXIT_ERROR if counts["error"] else EXIT_CLEAN
        return cls(len(outcomes), counts["clean"], counts["corrupt"], counts["error"], code)

    def line(self) -> str:
        """`summary paths=N clean=C corrupt=K errors=E`."""
        return f"summary paths={self.paths} clean={self.clean} corrupt={self.corrupt} errors={self.errors}"


def expand_verify_paths(paths: list[str]) -> list[str]:
    """Each path as given, a directory replaced by its run files (sorted, marker sidecars and
    symlinks left out)."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            names = sorted(os.listdir(path))
            out.extend(
                os.path.join(path, name) for name in names
                if name.endswith(RUN_FILE_SUFFIX) and not name.endswith(MARKER_FILE_SUFFIX)
                and os.path.isfile(os.path.join(path, name)) and not os.path.islink(os.path.join(path, name))
            )
        else:
            out.append(path)
    return out


def verify_path(path: str, timeout_s: float, progress: Callable[[str, int], None] | None = None) -> VerifyOutcome:
    """Verify one path in a worker (stall timeout `timeout_s`) into its outcome."""
    if not os.path.lexists(path):
        return VerifyOutcome.failed(path, "no run file")
    if not os.path.isfile(path):
        return VerifyOutcome.failed(path, "not a regular file")
    try:
        return VerifyOutcome.of(verify_in_worker(path, timeout_s, progress))
    except OSError as exc:
        return VerifyOutcome.failed(path, str(exc) or type(exc).__name__)
