"""The run-file verifier: a full, read-only integrity scan of one LMDB run file.

Contract:
- Read-only. The file is opened with `readonly=True, lock=False` after an `os.path.isfile`
  check, so verifying never creates, locks, writes or touches a file (bytes and mtime stay as
  they were; a 0400 file verifies). Nothing here quarantines: the verdict says
  `quarantine=not-performed`, and acting on it is the caller's business.
- Every entry is checked with one BLAKE3 over `HASH_DOMAIN || frame` against its stored 32
  bytes; the key is checked against the seq embedded in the frame; missing seqs inside the
  durable high-watermark (the last key) are gaps. Index values must be 8-byte seqs that point
  at a stored entry; snapshot anchors must decode and sit at or below the durable
  high-watermark; a sealed manifest must agree with the entries (high_watermark, end_ts_init).
- Damage is reported as typed findings (msgspec tagged Structs), never as text to parse. Only
  a file that cannot be opened at all raises (`VerifyOpenError`, e.g. a missing file).
- LMDB has no checksums and a damaged file can crash the process that maps it (SIGBUS,
  SIGSEGV), so callers that must survive any file use `verify_in_worker`: the scan runs in
  `python -m workers.verify`, the report comes back as one JSON line (msgspec, never pickle),
  and a crash or timeout becomes a `WorkerFailure` verdict.
"""

from __future__ import annotations

import bisect
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Union

import lmdb
import msgspec

from nes.backend.layout import (
    DB_ANCHORS,
    DB_ENTRIES,
    DB_MANIFEST,
    DB_META,
    FORMAT_KEY,
    FORMAT_VERSION,
    INDEX_DBS,
    MANIFEST_KEY,
    U32,
    marker_sidecar_path,
    open_read_only,
)
from nes.codec import HASH_LEN, FrameError, decode_frame
from nes.errors import EventStoreError
from nes.hash import DOMAIN_HASH_STATE
from nes.isolation import WorkerCrash, run_json_worker
from nes.markers.verifier import MarkerVerifyReport
from nes.manifest import decode_manifest
from nes.snapshot import decode_anchor

if TYPE_CHECKING:
    from nes.recovery import TailScan

__all__ = [
    "HashMismatch",
    "Gap",
    "KeySeqMismatch",
    "UndecodableEntry",
    "DanglingIndex",
    "CorruptedIndex",
    "CorruptManifest",
    "ManifestMismatch",
    "CorruptSnapshotAnchor",
    "AnchorPastWatermark",
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


# ---- findings -----------------------------------------------------------------------------------
class _Finding(msgspec.Struct, frozen=True, tag=True):
    def describe(self) -> str:  # pragma: no cover - every finding overrides it
        raise NotImplementedError


class HashMismatch(_Finding, frozen=True):
    """The stored hash differs from BLAKE3 over the stored frame (under key `seq`)."""

    seq: int

    def describe(self) -> str:
        return f"hash mismatch at seq {self.seq}"


class Gap(_Finding, frozen=True):
    """Seqs `from_seq..to_seq` (inclusive) are missing inside the durable high-watermark."""

    from_seq: int
    to_seq: int

    def describe(self) -> str:
        return f"gap from seq {self.from_seq} to {self.to_seq}"


class KeySeqMismatch(_Finding, frozen=True):
    """The entry stored under `key_seq` carries `embedded_seq` in its frame."""

    key_seq: int
    embedded_seq: int

    def describe(self) -> str:
        return f"key seq {self.key_seq} holds entry with embedded seq {self.embedded_seq}"


class UndecodableEntry(_Finding, frozen=True):
    """An entries row that is not `hash || frame` at all (short value, bad key, bad frame)."""

    seq: int
    detail: str

    def describe(self) -> str:
        return f"undecodable entry at seq {self.seq}: {self.detail}"


class DanglingIndex(_Finding, frozen=True):
    """An index row pointing past the durable high-watermark or at a missing entry."""

    kind: str
    key: str
    seq: int

    def describe(self) -> str:
        return f"dangling {self.kind} index key {self.key!r} points to seq {self.seq}"


class CorruptedIndex(_Finding, frozen=True):
    """An index row whose value is not an 8-byte seq."""

    kind: str
    key: str
    detail: str

    def describe(self) -> str:
        return f"corrupted {self.kind} index key {self.key!r}: {self.detail}"


class CorruptManifest(_Finding, frozen=True):
    """The manifest is missing or does not decode."""

    detail: str

    def describe(self) -> str:
        return f"corrupt manifest: {self.detail}"


class ManifestMismatch(_Finding, frozen=True):
    """A manifest field disagrees with the entries (`expected` is what the entries say)."""

    field: str
    expected: str
    actual: str

    def describe(self) -> str:
        return f"manifest {self.field} mismatch: expected {self.expected}, found {self.actual}"


class CorruptSnapshotAnchor(_Finding, frozen=True):
    """An anchors row that does not decode, or whose key is not its high-watermark."""

    key: str
    detail: str

    def describe(self) -> str:
        return f"corrupt snapshot anchor at key {self.key}: {self.detail}"


class AnchorPastWatermark(_Finding, frozen=True):
    """A snapshot anchor claims entries beyond the durable high-watermark."""

    anchor_high_watermark: int
    durable_high_watermark: int

    def describe(self) -> str:
        return (
            f"snapshot anchor high_watermark {self.anchor_high_watermark} is past durable "
            f"high_watermark {self.durable_high_watermark}"
        )


class OpenError(_Finding, frozen=True):
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
    CorruptedIndex,
    CorruptManifest,
    ManifestMismatch,
    CorruptSnapshotAnchor,
    AnchorPastWatermark,
    OpenError,
]

# msgspec raises UnicodeDecodeError (a ValueError) for invalid UTF-8 inside MessagePack.
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, ValueError)

# Findings that mean the entry log itself is damaged (crash recovery quarantines on these).
_ENTRY_DAMAGE = (HashMismatch, Gap, KeySeqMismatch, UndecodableEntry, OpenError)


# ---- verdicts -----------------------------------------------------------------------------------
class VerifyReport(msgspec.Struct, frozen=True):
    """The verifier's verdict on one run file: counts, findings, marker report, summary lines."""

    path: str
    run_id: str | None
    status: str
    high_watermark: int  # durable: the last key of `entries`
    entries_scanned: int
    findings: list[Finding] = []
    # The data-marker sidecar `<run_id>.markers.lmdb`, when one lies beside the run file.
    markers: MarkerVerifyReport | None = None

    def is_clean(self) -> bool:
        return not self.findings and (self.markers is None or self.markers.is_clean())

    def summary_line(self) -> str:
        common = (
            f"run_id={self.run_id or 'unknown'} status={self.status} "
            f"high_watermark={self.high_watermark} entries_scanned={self.entries_scanned}"
        )
        markers = self.markers
        if markers is not None:
            state = "clean" if markers.is_clean() else "corrupt"
            common += (
                f" markers={state} marker_run_id={markers.run_id or 'unknown'} marker_status={markers.status}"
                f" marker_snapshots_scanned={markers.snapshots_scanned} marker_hifi_scanned={markers.hifi_scanned}"
                f" marker_gaps_scanned={markers.gaps_scanned}"
                f" marker_dict_entries_scanned={markers.dict_entries_scanned}"
            )
        if self.is_clean():
            return f"clean {common}"
        marker_findings = 0 if markers is None else len(markers.findings)
        counts = f"findings={len(self.findings) + marker_findings}"
        if markers is not None:
            counts += f" marker_findings={marker_findings}"
        return f"corrupt {common} {counts} {QUARANTINE_NOT_PERFORMED}"

    def lines(self) -> list[str]:
        marker_lines = [] if self.markers is None else self.markers.describe()
        return [self.summary_line(), *(f"- {f.describe()}" for f in self.findings), *(f"- {m}" for m in marker_lines)]

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()


class WorkerFailure(msgspec.Struct, frozen=True):
    """The verifier worker died (signal, exit without a report) or ran out of time."""

    path: str
    worker_status: str

    def is_clean(self) -> bool:
        return False

    def summary_line(self) -> str:
        return f'corrupt path={self.path} worker_status="{self.worker_status}" {QUARANTINE_NOT_PERFORMED}'

    def lines(self) -> list[str]:
        return [self.summary_line()]

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()


class VerifyOpenError(EventStoreError, OSError):
    """The path cannot be verified at all (missing, not a regular file)."""


# ---- the scan -----------------------------------------------------------------------------------
class _EntryScan(msgspec.Struct):
    entries_scanned: int = 0
    high_watermark: int = 0
    max_ts_init: int | None = None
    findings: list = []
    gaps: list = []  # (from_seq, to_seq), ascending


def _scan_entries(txn: lmdb.Transaction, db: lmdb._Database) -> _EntryScan:
    """Hash, key-vs-embedded-seq and gap check of every entry, in key order."""
    return _scan_entries_range(txn, db, 1, None)


def _scan_entries_range(txn: lmdb.Transaction, db: lmdb._Database, first: int, last: int | None) -> _EntryScan:
    """The checks of `_scan_entries` over keys `first..last` (None: to the end).

    Written flat: this loop is the verifier's throughput (tools/bench_verify.py). Measured
    choices: values as bytes (`buffers=False`) iterate faster than memoryviews here, and
    copying a hasher pre-seeded with the domain beats building a fresh one or hashing
    `domain + frame`. Gaps are reported from `first`; one after the last key of a bounded range
    is the caller's to see (the next range starts past it).
    """
    findings: list = []
    gaps: list = []
    count = 0
    expected = first
    max_ts = -1
    unpack_key = _U64.unpack
    unpack_head = _SEQ_TS.unpack_from
    hash_len = HASH_LEN
    min_len = _MIN_VALUE_LEN
    seeded = DOMAIN_HASH_STATE
    stop = (1 << 64) if last is None else last
    with txn.cursor(db) as cursor:
        positioned = cursor.first() if first <= 1 else cursor.set_range(_U64.pack(first))
        if not positioned:
            return _EntryScan(0, 0, None, [], [])
        for key, value in cursor.iternext(keys=True, values=True):
            if len(key) != 8:
                count += 1
                findings.append(UndecodableEntry(expected, f"entry key of {len(key)} bytes (expected 8)"))
                continue
            (seq,) = unpack_key(key)
            if seq > stop:
                break
            count += 1
            if seq != expected:
                if seq > expected:
                    gaps.append((expected, seq - 1))
                    findings.append(Gap(expected, seq - 1))
                else:  # only seq 0 sorts before 1 among 8-byte keys
                    findings.append(UndecodableEntry(seq, "seq 0 is not a valid entry key"))
            expected = seq + 1
            if len(value) < min_len:
                findings.append(UndecodableEntry(seq, f"value of {len(value)} bytes is shorter than hash and frame header"))
                continue
            hasher = seeded.copy()
            hasher.update(value[hash_len:])
            if hasher.digest() != value[:hash_len]:
                findings.append(HashMismatch(seq))
                continue
            embedded, ts_init = unpack_head(value, hash_len)
            if embedded != seq:
                findings.append(KeySeqMismatch(seq, embedded))
            if ts_init > max_ts:
                max_ts = ts_init
    return _EntryScan(count, expected - 1 if count else 0, max_ts if max_ts >= 0 else None, findings, gaps)


def _is_missing(seq: int, high_watermark: int, gaps: list, gap_starts: list[int]) -> bool:
    if seq < 1 or seq > high_watermark:
        return True
    i = bisect.bisect_right(gap_starts, seq) - 1
    return i >= 0 and gaps[i][0] <= seq <= gaps[i][1]


def _key_text(key: bytes | memoryview) -> str:
    return bytes(key).decode("utf-8", errors="backslashreplace")


def _check_indexes(env: lmdb.Environment, txn: lmdb.Transaction, scan: _EntryScan) -> list:
    findings: list = []
    gap_starts = [g[0] for g in scan.gaps]
    for kind, name in INDEX_DBS.items():
        try:
            db = env.open_db(name, txn=txn, create=False, dupsort=True, dupfixed=True)
        except lmdb.NotFoundError:
            continue  # an index nobody wrote to may legitimately be absent
        with txn.cursor(db) as cursor:
            for key, value in cursor.iternext(keys=True, values=True):
                if len(value) != 8:
                    findings.append(CorruptedIndex(kind.value, _key_text(key), f"value of {len(value)} bytes (expected 8)"))
                    continue
                (seq,) = _U64.unpack(value)
                if _is_missing(seq, scan.high_watermark, scan.gaps, gap_starts):
                    findings.append(DanglingIndex(kind.value, _key_text(key), seq))
    return findings


def _check_anchors(env: lmdb.Environment, txn: lmdb.Transaction, durable_high_watermark: int) -> list:
    findings: list = []
    try:
        db = env.open_db(DB_ANCHORS, txn=txn, create=False)
    except lmdb.NotFoundError:
        return findings
    with txn.cursor(db) as cursor:
        for key, value in cursor.iternext(keys=True, values=True):
            key_label = str(_U64.unpack(key)[0]) if len(key) == 8 else bytes(key).hex()
            try:
                anchor = decode_anchor(bytes(value))
            except _DECODE_ERRORS as exc:
                findings.append(CorruptSnapshotAnchor(key_label, f"does not decode: {exc}"))
                continue
            if len(key) != 8 or _U64.unpack(key)[0] != anchor.high_watermark:
                findings.append(
                    CorruptSnapshotAnchor(key_label, f"holds an anchor for high_watermark {anchor.high_watermark}")
                )
            if anchor.high_watermark > durable_high_watermark:
                findings.append(AnchorPastWatermark(anchor.high_watermark, durable_high_watermark))
    return findings


def _check_manifest(manifest, scan: _EntryScan) -> list:  # noqa: ANN001
    if not manifest.is_sealed():
        if manifest.end_ts_init is not None:
            return [ManifestMismatch("end_ts_init", "None while Running", str(manifest.end_ts_init))]
        return []
    findings: list = []
    if manifest.high_watermark != scan.high_watermark:
        findings.append(ManifestMismatch("high_watermark", str(scan.high_watermark), str(manifest.high_watermark)))
    # A damaged entry's ts_init is unknown, so max ts_init is too: report the damage, not a guess.
    unreadable = any(isinstance(f, (HashMismatch, UndecodableEntry)) for f in scan.findings)
    if not unreadable and manifest.end_ts_init != scan.max_ts_init:
        findings.append(ManifestMismatch("end_ts_init", str(scan.max_ts_init), str(manifest.end_ts_init)))
    return findings


def _check_format(txn: lmdb.Transaction, env: lmdb.Environment) -> str | None:
    """None if the format marker is right, else why not."""
    try:
        meta = env.open_db(DB_META, txn=txn, create=False)
    except lmdb.NotFoundError:
        return "missing meta database"
    raw = txn.get(FORMAT_KEY, db=meta)
    if raw is None:
        return "missing format marker"
    if len(raw) != U32.size:
        return f"format marker of {len(raw)} bytes (expected {U32.size})"
    (version,) = U32.unpack(raw)
    if version != FORMAT_VERSION:
        return f"unsupported format version {version} (expected {FORMAT_VERSION})"
    return None


def _open_env(path: Path) -> lmdb.Environment:
    if not os.path.isfile(path):  # before lmdb, which would create a missing file
        raise VerifyOpenError(f"run file not found: {path}")
    return open_read_only(path)


class Verifier:
    """Full integrity scan of one run file; `verify()` may be called more than once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def verify(self) -> VerifyReport:
        """The run file's report, plus its data-marker sidecar's when one lies beside it."""
        report = self._verify_run_file()
        marker_path = marker_sidecar_path(self.path)
        if not marker_path.exists():
            return report
        from nes.markers.verifier import verify_marker_file

        markers = verify_marker_file(marker_path, entry_high_watermark=report.high_watermark)
        return msgspec.structs.replace(report, markers=markers)

    def _verify_run_file(self) -> VerifyReport:
        path = str(self.path)
        try:
            env = _open_env(self.path)
        except lmdb.Error as exc:
            return VerifyReport(path, None, "unknown", 0, 0, [OpenError(f"{type(exc).__name__}: {exc}")])
        try:
            return self._verify_env(env)
        except Exception as exc:  # noqa: BLE001 - a scan that cannot finish is never "clean"
            return VerifyReport(path, None, "unknown", 0, 0, [OpenError(f"verifier failed: {type(exc).__name__}: {exc}")])
        finally:
            env.close()

    def _verify_env(self, env: lmdb.Environment) -> VerifyReport:
        path = str(self.path)
        try:
            with env.begin() as txn:
                problem = _check_format(txn, env)
                if problem is not None:
                    return VerifyReport(path, None, "unknown", 0, 0, [OpenError(problem)])
                manifest_db = env.open_db(DB_MANIFEST, txn=txn, create=False)
                entries_db = env.open_db(DB_ENTRIES, txn=txn, create=False)
                findings: list = []
                manifest = None
                raw = txn.get(MANIFEST_KEY, db=manifest_db)
                if raw is None:
                    findings.append(CorruptManifest("missing manifest/current"))
                else:
                    try:
                        manifest = decode_manifest(bytes(raw))
                    except _DECODE_ERRORS as exc:
                        findings.append(CorruptManifest(f"does not decode: {exc}"))
                scan = _scan_entries(txn, entries_db)
                findings.extend(scan.findings)
                findings.extend(_check_indexes(env, txn, scan))
                findings.extend(_check_anchors(env, txn, scan.high_watermark))
                if manifest is not None:
                    findings.extend(_check_manifest(manifest, scan))
        except lmdb.NotFoundError as exc:
            return VerifyReport(path, None, "unknown", 0, 0, [OpenError(f"missing database: {exc}")])
        except lmdb.Error as exc:
            return VerifyReport(path, None, "unknown", 0, 0, [OpenError(f"{type(exc).__name__}: {exc}")])
        return VerifyReport(
            path,
            None if manifest is None else manifest.run_id,
            "unknown" if manifest is None else str(manifest.status),
            scan.high_watermark,
            scan.entries_scanned,
            findings,
        )


def scan_tail(path: str | os.PathLike[str]) -> TailScan:
    """The crash-recovery scan of a (Running) run file: durable tail plus entry-log damage.

    `damaged` is True if any entry finding (hash, gap, key/seq, undecodable) or open problem
    was found; the last entry's topic and payload_type come from decoding its frame.
    """
    from nes.recovery import TailScan

    try:
        env = _open_env(Path(path))
    except lmdb.Error as exc:
        return TailScan(0, 0, True, None, None, f"open: {type(exc).__name__}: {exc}")
    try:
        with env.begin() as txn:
            problem = _check_format(txn, env)
            if problem is not None:
                return TailScan(0, 0, True, None, None, problem)
            entries_db = env.open_db(DB_ENTRIES, txn=txn, create=False)
            scan = _scan_entries(txn, entries_db)
            damage = [f for f in scan.findings if isinstance(f, _ENTRY_DAMAGE)]
            last_topic = last_payload_type = None
            if scan.entries_scanned:
                with txn.cursor(entries_db) as cursor:
                    cursor.last()
                    value = bytes(cursor.value())
                try:
                    _, _, _, last_topic, last_payload_type, _, _, _ = decode_frame(value, HASH_LEN)
                except FrameError as exc:
                    if not damage:
                        damage.append(UndecodableEntry(scan.high_watermark, str(exc)))
            detail = "; ".join(f.describe() for f in damage[:5])
            if len(damage) > 5:
                detail += f"; and {len(damage) - 5} more"
            return TailScan(
                scan.high_watermark, scan.entries_scanned, bool(damage), last_topic, last_payload_type, detail
            )
    except lmdb.Error as exc:
        return TailScan(0, 0, True, None, None, f"{type(exc).__name__}: {exc}")
    finally:
        env.close()


# ---- the worker boundary ------------------------------------------------------------------------
def verify_in_worker(path: str | os.PathLike[str], timeout_s: float) -> VerifyReport | WorkerFailure:
    """Verify in a `python -m workers.verify` child; a crash or timeout is a WorkerFailure.

    Raises VerifyOpenError for a missing file (nothing to verify, not a verdict).
    """
    path_str = str(path)
    if not os.path.isfile(path_str):
        raise VerifyOpenError(f"run file not found: {path_str}")
    try:
        return run_json_worker("workers.verify", [path_str], timeout_s, VerifyReport)
    except WorkerCrash as crash:
        return WorkerFailure(path_str, crash.status)
