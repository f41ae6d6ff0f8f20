"""Marker sidecar verifier (spec/markers.md §5.2): read-only, bounded, never raises.

Contract:
- `verify_marker_file(path, entry_high_watermark)` opens the sidecar read-only, reads at most
  `max_records` rows per table, and returns a `MarkerVerifyReport`. It never mutates the file
  and never quarantines; every problem (including an unopenable file) is a finding. Status is
  not a finding, so an unsealed (Running) sidecar can be clean.
- `audit_markers(...)` is the pure core over decoded records. Findings come in the spec's
  order: hashes (snapshot, hi-fi, gap, dict), manifest counts (Snapshot, HiFi, Gap, Dict),
  marker_seq coverage, event_seq_before, cursor monotonicity.
- Coverage: each snapshot / hi-fi marker covers [seq, seq], each valid gap [from, to]; the
  sorted intervals must tile 1.. with no hole (`MarkerSeqGap`) and no overlap
  (`MarkerSeqOverlap`). Seqs missing after the highest covered one cannot be seen.
- Beyond the spec (a keyed LMDB file can hold what the crate's types cannot): undecodable rows,
  keys that disagree with the record they hold, two dict rows claiming one slot, truncated scans
  and unreadable files are findings too.
- LMDB is memory-mapped: a maliciously corrupt file can still crash the reading process. Run
  this in a worker subprocess for untrusted files (not wired here). py-lmdb also refuses a
  second environment on a file this process already has open, which is reported as
  `SidecarUnreadable`: verify from another process, or after the writer closed.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Union, cast

import msgspec

from nes.manifest import RunStatus
from nes.markers.model import (
    DataCursorSnapshot,
    HiFiMarker,
    MarkerCountKind,
    MarkerGap,
    MarkerManifest,
    MarkerRecordKind,
    StoredMarkerRecord,
    StreamCursor,
)
from nes.markers.store import MarkerStore, decode_stored, record_hash

__all__ = [
    "ManifestCountMismatch",
    "MarkerSeqGap",
    "MarkerSeqOverlap",
    "InvalidMarkerGap",
    "EventSeqRegressed",
    "EventSeqExceedsHighWatermark",
    "CursorCountRegressed",
    "CursorTsInitRegressed",
    "MarkerHashMismatch",
    "UndecodableMarkerRecord",
    "MarkerKeyMismatch",
    "DuplicateDictSlot",
    "MarkerScanTruncated",
    "SidecarUnreadable",
    "MarkerFinding",
    "MarkerVerifyReport",
    "audit_markers",
    "verify_marker_file",
    "DEFAULT_MAX_RECORDS",
]

DEFAULT_MAX_RECORDS = 10_000_000  # per table
_KIND_TEXT = {
    MarkerRecordKind.Snapshot: "snapshot",
    MarkerRecordKind.HiFi: "hifi",
    MarkerRecordKind.Gap: "gap",
    MarkerRecordKind.Dict: "dict",
}
_COUNT_TO_RECORD = {
    MarkerCountKind.Snapshot: MarkerRecordKind.Snapshot,
    MarkerCountKind.HiFi: MarkerRecordKind.HiFi,
    MarkerCountKind.Gap: MarkerRecordKind.Gap,
    MarkerCountKind.Dict: MarkerRecordKind.Dict,
}


# ---- findings -----------------------------------------------------------------------------------
class _Finding(msgspec.Struct, frozen=True, tag=True):
    def describe(self) -> str:  # pragma: no cover - every finding overrides it
        raise NotImplementedError


class ManifestCountMismatch(_Finding, frozen=True, tag=True):
    kind: MarkerCountKind
    manifest_count: int
    scanned_count: int

    def describe(self) -> str:
        return (f"marker manifest count mismatch {_KIND_TEXT[_COUNT_TO_RECORD[self.kind]]} "
                f"manifest={self.manifest_count} scanned={self.scanned_count}")


class MarkerSeqGap(_Finding, frozen=True, tag=True):
    from_marker_seq: int
    to_marker_seq: int

    def describe(self) -> str:
        return f"marker seq gap from={self.from_marker_seq} to={self.to_marker_seq} not covered by a marker gap"


class MarkerSeqOverlap(_Finding, frozen=True, tag=True):
    from_marker_seq: int
    to_marker_seq: int

    def describe(self) -> str:
        return f"marker seq overlap from={self.from_marker_seq} to={self.to_marker_seq}"


class InvalidMarkerGap(_Finding, frozen=True, tag=True):
    from_marker_seq: int
    to_marker_seq: int

    def describe(self) -> str:
        return f"invalid marker gap from={self.from_marker_seq} to={self.to_marker_seq} (from > to)"


class EventSeqRegressed(_Finding, frozen=True, tag=True):
    marker_seq: int
    previous_event_seq_before: int
    event_seq_before: int

    def describe(self) -> str:
        return (f"marker event_seq_before regressed marker_seq={self.marker_seq} "
                f"previous={self.previous_event_seq_before} event_seq_before={self.event_seq_before}")


class EventSeqExceedsHighWatermark(_Finding, frozen=True, tag=True):
    marker_seq: int
    event_seq_before: int
    high_watermark: int

    def describe(self) -> str:
        return (f"marker event_seq_before exceeds entry high-watermark marker_seq={self.marker_seq} "
                f"event_seq_before={self.event_seq_before} high_watermark={self.high_watermark}")


class CursorCountRegressed(_Finding, frozen=True, tag=True):
    marker_seq: int
    slot: int
    previous_count: int
    count: int

    def describe(self) -> str:
        return (f"marker cursor count regressed marker_seq={self.marker_seq} slot={self.slot} "
                f"previous={self.previous_count} count={self.count}")


class CursorTsInitRegressed(_Finding, frozen=True, tag=True):
    marker_seq: int
    slot: int
    previous_ts_init_hi: int
    ts_init_hi: int

    def describe(self) -> str:
        return (f"marker cursor ts_init_hi regressed marker_seq={self.marker_seq} slot={self.slot} "
                f"previous={self.previous_ts_init_hi} ts_init_hi={self.ts_init_hi}")


class MarkerHashMismatch(_Finding, frozen=True, tag=True):
    """The crate's `HashMismatch{record, marker_seq, slot}`."""

    record: MarkerRecordKind
    marker_seq: Union[int, None] = None
    slot: Union[int, None] = None

    def describe(self) -> str:
        text = f"marker hash mismatch {_KIND_TEXT[self.record]}"
        if self.marker_seq is not None:
            text += f" marker_seq={self.marker_seq}"
        if self.slot is not None:
            text += f" slot={self.slot}"
        return text


class UndecodableMarkerRecord(_Finding, frozen=True, tag=True):
    record: MarkerRecordKind
    key: str  # hex of the LMDB key
    detail: str

    def describe(self) -> str:
        return f"undecodable marker {_KIND_TEXT[self.record]} at key {self.key}: {self.detail}"


class MarkerKeyMismatch(_Finding, frozen=True, tag=True):
    """The row under `key` holds a record whose own seq/slot is `value` (or the key is malformed)."""

    record: MarkerRecordKind
    key: str  # hex
    value: int

    def describe(self) -> str:
        return f"marker {_KIND_TEXT[self.record]} key {self.key} holds a record for {self.value}"


class DuplicateDictSlot(_Finding, frozen=True, tag=True):
    slot: int

    def describe(self) -> str:
        return f"marker dict slot {self.slot} is mapped more than once"


class MarkerScanTruncated(_Finding, frozen=True, tag=True):
    record: MarkerRecordKind
    limit: int

    def describe(self) -> str:
        return f"marker {_KIND_TEXT[self.record]} scan stopped after {self.limit} rows"


class SidecarUnreadable(_Finding, frozen=True, tag=True):
    detail: str

    def describe(self) -> str:
        return f"marker sidecar unreadable: {self.detail}"


MarkerFinding = Union[
    ManifestCountMismatch, MarkerSeqGap, MarkerSeqOverlap, InvalidMarkerGap, EventSeqRegressed,
    EventSeqExceedsHighWatermark, CursorCountRegressed, CursorTsInitRegressed, MarkerHashMismatch,
    UndecodableMarkerRecord, MarkerKeyMismatch, DuplicateDictSlot, MarkerScanTruncated, SidecarUnreadable,
]


class MarkerVerifyReport(msgspec.Struct, frozen=True):
    run_id: str
    status: Union[RunStatus, None]  # None when the manifest could not be read
    snapshots_scanned: int
    hifi_scanned: int
    gaps_scanned: int
    dict_entries_scanned: int
    findings: tuple[MarkerFinding, ...]

    def is_clean(self) -> bool:
        return not self.findings

    def describe(self) -> list[str]:
        return [f.describe() for f in self.findings]


# ---- pure core ----------------------------------------------------------------------------------
def _hash_findings(kind: MarkerRecordKind, stored: list[StoredMarkerRecord]) -> list[_Finding]:
    findings: list[_Finding] = []
    for item in stored:
        if record_hash(kind, item.record) == item.hash:
            continue
        record = item.record
        if kind is MarkerRecordKind.Snapshot:
            findings.append(MarkerHashMismatch(kind, marker_seq=record.marker_seq))
        elif kind is MarkerRecordKind.HiFi:
            findings.append(MarkerHashMismatch(kind, marker_seq=record.marker_seq, slot=record.slot))
        elif kind is MarkerRecordKind.Gap:
            findings.append(MarkerHashMismatch(kind))
        else:
            findings.append(MarkerHashMismatch(kind, slot=record.slot))
    return findings


def _coverage_findings(snapshots: list[DataCursorSnapshot], hifi: list[HiFiMarker], gaps: list[MarkerGap]) -> list[_Finding]:
    findings: list[_Finding] = []
    intervals = [(s.marker_seq, s.marker_seq) for s in snapshots] + [(m.marker_seq, m.marker_seq) for m in hifi]
    for gap in gaps:
        if gap.from_marker_seq > gap.to_marker_seq:
            findings.append(InvalidMarkerGap(gap.from_marker_seq, gap.to_marker_seq))
        else:
            intervals.append((gap.from_marker_seq, gap.to_marker_seq))
    expected = 1
    for lo, hi in sorted(intervals):
        if lo > expected:
            findings.append(MarkerSeqGap(expected, lo - 1))
            expected = hi + 1
        elif lo < expected:
            findings.append(MarkerSeqOverlap(lo, min(hi, expected - 1)))
            if hi >= expected:
                expected = hi + 1
        else:
            expected = hi + 1
    return findings


def _event_seq_findings(snapshots: list[DataCursorSnapshot], hifi: list[HiFiMarker],
                        high_watermark: int | None) -> list[_Finding]:
    findings: list[_Finding] = []
    markers: list[Any] = sorted([*snapshots, *hifi], key=lambda m: m.marker_seq)  # stable: snapshots first
    previous: int | None = None
    for marker in markers:
        esb = marker.event_seq_before
        if high_watermark is not None and esb > high_watermark:
            findings.append(EventSeqExceedsHighWatermark(marker.marker_seq, esb, high_watermark))
        if previous is not None and esb < previous:
            findings.append(EventSeqRegressed(marker.marker_seq, previous, esb))
        previous = esb
    return findings


def _cursor_findings(snapshots: list[DataCursorSnapshot]) -> list[_Finding]:
    findings: list[_Finding] = []
    last: dict[int, StreamCursor] = {}
    for snapshot in sorted(snapshots, key=lambda s: s.marker_seq):
        for cursor in snapshot.advanced:
            prev = last.get(cursor.slot)
            if prev is not None:
                if cursor.count < prev.count:
                    findings.append(CursorCountRegressed(snapshot.marker_seq, cursor.slot, prev.count, cursor.count))
                if cursor.ts_init_hi < prev.ts_init_hi:
                    findings.append(
                        CursorTsInitRegressed(snapshot.marker_seq, cursor.slot, prev.ts_init_hi, cursor.ts_init_hi)
                    )
            last[cursor.slot] = cursor
    return findings


def audit_markers(
    manifest: MarkerManifest,
    stored: dict[MarkerRecordKind, list[StoredMarkerRecord]],
    entry_high_watermark: int | None,
    row_counts: dict[MarkerRecordKind, int | None] | None = None,
) -> list[_Finding]:
    """Steps 2-6 of spec §5.2 over decoded records. `row_counts[kind]` is the number of rows on
    disk (undecodable ones included), None to skip the count check (truncated scan); it defaults
    to the number of stored records. `entry_high_watermark=None` skips the watermark check."""
    kinds = list(MarkerRecordKind)
    stored = {kind: stored.get(kind, []) for kind in kinds}
    findings: list[_Finding] = []
    for kind in kinds:
        findings += _hash_findings(kind, stored[kind])
    for count_kind in MarkerCountKind:
        kind = _COUNT_TO_RECORD[count_kind]
        scanned = len(stored[kind]) if row_counts is None else row_counts.get(kind, len(stored[kind]))
        if scanned is not None and manifest.count_of(count_kind) != scanned:
            findings.append(ManifestCountMismatch(count_kind, manifest.count_of(count_kind), scanned))
    snapshots = [s.record for s in stored[MarkerRecordKind.Snapshot]]
    hifi = [s.record for s in stored[MarkerRecordKind.HiFi]]
    gaps = [s.record for s in stored[MarkerRecordKind.Gap]]
    findings += _coverage_findings(snapshots, hifi, gaps)
    findings += _event_seq_findings(snapshots, hifi, entry_high_watermark)
    findings += _cursor_findings(snapshots)
    return findings


# ---- I/O shell ----------------------------------------------------------------------------------
def _key_value(kind: MarkerRecordKind, key: bytes) -> int | None:
    width = 4 if kind is MarkerRecordKind.Dict else 8
    if len(key) != width:
        return None
    return struct.unpack(">I" if width == 4 else ">Q", key)[0]


def _record_id(kind: MarkerRecordKind, record: Any) -> int:
    if kind is MarkerRecordKind.Dict:
        return record.slot
    if kind is MarkerRecordKind.Gap:
        return record.from_marker_seq
    return record.marker_seq


def _read_table(store: MarkerStore, kind: MarkerRecordKind, max_records: int,
                findings: list[_Finding]) -> tuple[list[StoredMarkerRecord], int | None]:
    stored: list[StoredMarkerRecord] = []
    rows = 0
    for key, value in store.raw_rows(kind, limit=max_records + 1):
        if rows == max_records:
            findings.append(MarkerScanTruncated(kind, max_records))
            return stored, None
        rows += 1
        try:
            item = decode_stored(kind, value)
        except Exception as exc:  # noqa: BLE001 - untrusted bytes: report, never raise
            findings.append(UndecodableMarkerRecord(kind, key.hex(), str(exc)))
            continue
        if _key_value(kind, key) != _record_id(kind, item.record):
            findings.append(MarkerKeyMismatch(kind, key.hex(), _record_id(kind, item.record)))
        stored.append(item)
    if kind is MarkerRecordKind.Dict:
        seen: set[int] = set()
        for item in stored:
            if item.record.slot in seen:
                findings.append(DuplicateDictSlot(item.record.slot))
            seen.add(item.record.slot)
    return stored, rows


def verify_marker_file(
    path: str | os.PathLike[str],
    entry_high_watermark: int | None = None,
    *,
    max_records: int = DEFAULT_MAX_RECORDS,
) -> MarkerVerifyReport:
    """Verify one sidecar read-only. Never raises for anything the file contains."""
    try:
        store = MarkerStore.open_read_only(path)
    except Exception as exc:  # noqa: BLE001 - an unopenable file is a finding
        return MarkerVerifyReport("", None, 0, 0, 0, 0, (SidecarUnreadable(str(exc)),))
    with store:
        manifest = store.manifest()
        read_findings: list[_Finding] = []
        stored: dict[MarkerRecordKind, list[StoredMarkerRecord]] = {}
        row_counts: dict[MarkerRecordKind, int | None] = {}
        try:
            for kind in MarkerRecordKind:
                stored[kind], row_counts[kind] = _read_table(store, kind, max_records, read_findings)
            findings = read_findings + audit_markers(manifest, stored, entry_high_watermark, row_counts)
        except Exception as exc:  # noqa: BLE001 - e.g. an LMDB error mid-scan
            findings = [*read_findings, SidecarUnreadable(f"scan failed: {exc}")]
    return MarkerVerifyReport(
        run_id=manifest.run_id,
        status=manifest.status,
        snapshots_scanned=len(stored.get(MarkerRecordKind.Snapshot, [])),
        hifi_scanned=len(stored.get(MarkerRecordKind.HiFi, [])),
        gaps_scanned=len(stored.get(MarkerRecordKind.Gap, [])),
        dict_entries_scanned=len(stored.get(MarkerRecordKind.Dict, [])),
        findings=tuple(cast("list[MarkerFinding]", findings)),
    )
