"""Snapshot anchors: the link between a cache snapshot and the entry log.

Contract: an anchor says "the cache snapshot `blob_ref` (content `content_hash`) covers every
entry with seq <= high_watermark". It is recorded only at or below the durable high-watermark,
never older than the latest anchor; an equal high-watermark replaces it. Replay starts at
`high_watermark + 1`. Anchors are stored as msgspec MessagePack keyed by high-watermark.
"""

from __future__ import annotations

import msgspec
from blake3 import blake3

from nes.errors import Backend

__all__ = [
    "SnapshotAnchor",
    "compute_snapshot_content_hash",
    "validate_new_anchor",
    "encode_anchor",
    "decode_anchor",
]

CONTENT_HASH_PREFIX = "blake3:"


class SnapshotAnchor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Links a cache snapshot blob (`blob_ref`, `content_hash`) to the high-watermark it covers."""

    high_watermark: int
    blob_ref: str
    content_hash: str


def compute_snapshot_content_hash(blob: bytes) -> str:
    """`"blake3:" + hex(BLAKE3(blob))`: plain BLAKE3, no domain prefix."""
    return CONTENT_HASH_PREFIX + blake3(blob).hexdigest()


def validate_new_anchor(
    anchor: SnapshotAnchor, durable_high_watermark: int, latest: SnapshotAnchor | None
) -> None:
    if anchor.high_watermark > durable_high_watermark:
        raise Backend(
            f"snapshot anchor high_watermark {anchor.high_watermark} exceeds durable "
            f"high_watermark {durable_high_watermark}"
        )
    if latest is not None and anchor.high_watermark < latest.high_watermark:
        raise Backend(
            f"snapshot anchor high_watermark {anchor.high_watermark} is older than latest "
            f"anchor {latest.high_watermark}"
        )


_anchor_encoder = msgspec.msgpack.Encoder()
_anchor_decoder = msgspec.msgpack.Decoder(SnapshotAnchor)


def encode_anchor(anchor: SnapshotAnchor) -> bytes:
    return _anchor_encoder.encode(anchor)


def decode_anchor(raw: bytes) -> SnapshotAnchor:
    """Raises msgspec errors; storage wraps them in Corrupted("decode snapshot anchor: ...")."""
    return _anchor_decoder.decode(raw)
