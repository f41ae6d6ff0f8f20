"""Canonical marker hashes (spec/markers.md §2), byte-compatible with the reference crate.

Contract: BLAKE3-256, unkeyed, over the ASCII domain string (no length prefix) followed by the
fields in a fixed order with no separators. Integers are **big-endian** (u64be / u32be); strings
are a u64be byte length then UTF-8 bytes. The pinned vectors live in tests/test_markers.py.
"""

from __future__ import annotations

import struct

from blake3 import blake3

from nes.markers.model import DataCursorSnapshot, HiFiMarker, MarkerGap, StreamDictEntry

__all__ = [
    "MARKER_DOMAIN",
    "HIFI_DOMAIN",
    "DICT_DOMAIN",
    "GAP_DOMAIN",
    "MARKER_HASH_LEN",
    "compute_marker_hash",
    "compute_hifi_hash",
    "compute_dict_hash",
    "compute_gap_hash",
]

MARKER_DOMAIN = b"nautilus-event-store/marker/v1"
HIFI_DOMAIN = b"nautilus-event-store/hifi/v1"
DICT_DOMAIN = b"nautilus-event-store/dict/v1"
GAP_DOMAIN = b"nautilus-event-store/gap/v1"
MARKER_HASH_LEN = 32

_U64 = struct.Struct(">Q")
_SNAPSHOT_HEAD = struct.Struct(">QQQQ")  # marker_seq, event_seq_before, ts_init, len(advanced)
_CURSOR = struct.Struct(">IQQ")  # slot, ts_init_hi, count
_HIFI = struct.Struct(">QQIQQI")  # marker_seq, esb, slot, ts_event, ts_init, same_ts_ordinal
_GAP = struct.Struct(">QQB")  # from, to, reason byte


def compute_marker_hash(snapshot: DataCursorSnapshot) -> bytes:
    h = blake3(MARKER_DOMAIN)
    h.update(_SNAPSHOT_HEAD.pack(snapshot.marker_seq, snapshot.event_seq_before, snapshot.ts_init, len(snapshot.advanced)))
    for cursor in snapshot.advanced:  # list order matters
        h.update(_CURSOR.pack(cursor.slot, cursor.ts_init_hi, cursor.count))
    return h.digest()


def compute_hifi_hash(marker: HiFiMarker) -> bytes:
    h = blake3(HIFI_DOMAIN)
    h.update(_HIFI.pack(marker.marker_seq, marker.event_seq_before, marker.slot, marker.ts_event, marker.ts_init,
                        marker.same_ts_ordinal))
    h.update(marker.record_fingerprint)
    return h.digest()


def compute_dict_hash(entry: StreamDictEntry) -> bytes:
    cls_bytes = entry.data_cls.as_str().encode("ascii")
    ident = entry.identifier.encode("utf-8")
    h = blake3(DICT_DOMAIN)
    h.update(struct.pack(">I", entry.slot))
    h.update(_U64.pack(len(cls_bytes)) + cls_bytes)
    h.update(_U64.pack(len(ident)) + ident)
    return h.digest()


def compute_gap_hash(gap: MarkerGap) -> bytes:
    h = blake3(GAP_DOMAIN)
    h.update(_GAP.pack(gap.from_marker_seq, gap.to_marker_seq, gap.reason.hash_byte))
    return h.digest()
