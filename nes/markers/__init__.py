"""The data-marker sidecar (spec/markers.md): the order in which market data was observed.

Contract: opt-in, best effort, never blocks or halts trading. A sidecar stores no prices or
payloads: only cursor snapshots, hi-fi record fingerprints, gaps and a slot dictionary, in its
own `marker_seq` sequence linked to the entry log by `event_seq_before`. It is an LMDB file
beside the run file (`<run_id>.markers.lmdb`), sealed independently of the entry run. Replay and
restart never read it.

Modules: `model` (schema), `hash` (canonical BLAKE3 hashes), `cursor` (in-memory CursorState),
`store` (the LMDB sidecar), `verifier` (read-only checks). Capture, extractors, the writer
thread, kernel wiring, the reader fold and the catalog join are not implemented here yet.
"""

from nes.markers.cursor import CursorState
from nes.markers.hash import compute_dict_hash, compute_gap_hash, compute_hifi_hash, compute_marker_hash
from nes.markers.model import (
    DataClass,
    DataCursorSnapshot,
    HiFiMarker,
    MarkerCountKind,
    MarkerGap,
    MarkerGapReason,
    MarkerManifest,
    MarkerRecordKind,
    StoredMarkerRecord,
    StreamCursor,
    StreamDictEntry,
    StreamSlot,
)
from nes.markers.store import MarkerStore, marker_file_path
from nes.markers.verifier import MarkerFinding, MarkerVerifyReport, audit_markers, verify_marker_file

__all__ = [
    "CursorState",
    "compute_dict_hash",
    "compute_gap_hash",
    "compute_hifi_hash",
    "compute_marker_hash",
    "DataClass",
    "DataCursorSnapshot",
    "HiFiMarker",
    "MarkerCountKind",
    "MarkerGap",
    "MarkerGapReason",
    "MarkerManifest",
    "MarkerRecordKind",
    "StoredMarkerRecord",
    "StreamCursor",
    "StreamDictEntry",
    "StreamSlot",
    "MarkerStore",
    "marker_file_path",
    "MarkerFinding",
    "MarkerVerifyReport",
    "audit_markers",
    "verify_marker_file",
]
