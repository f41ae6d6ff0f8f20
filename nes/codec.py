"""The canonical frame: the bytes that are hashed, stored, and carried through the ring.

Contract (ARCHITECTURE.md, "The canonical frame is the stored value"): an entry's canonical
frame is exactly what BLAKE3 reads after the domain string
`b"nautilus-event-store/entry/v1"`, so the stored value `entry_hash[32] || frame` is verified
with one hash call over a slice and no decoding. Layout (all integers u64 big-endian):

    offset  field
    0       seq
    8       ts_init
    16      ts_publish
    24      len(topic)          then topic, UTF-8
            len(payload_type)   then payload_type, UTF-8
            len(payload)        then payload bytes
            correlation_id      0x00, or 0x01 + 16 raw UUID bytes
            causation_id        0x00, or 0x01 + 16 raw UUID bytes

Decoding is strict and bounded (files are untrusted): every claimed length is checked
against the bytes that remain, flag bytes must be 0 or 1, text must be UTF-8, and trailing
bytes are an error. Failures raise `FrameError`; the storage layer wraps it in `Corrupted`.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable

__all__ = [
    "HASH_DOMAIN",
    "HASH_LEN",
    "FRAME_FIXED_LEN",
    "FrameError",
    "FRAME_HEAD",
    "MIN_FRAME_LEN",
    "frame_head",
    "encode_frame_tail",
    "encode_frame",
    "decode_frame",
    "frame_seq",
    "frame_correlation_key",
    "u64_be",
    "seq_key",
    "key_seq",
]

HASH_DOMAIN = b"nautilus-event-store/entry/v1"
HASH_LEN = 32
FRAME_FIXED_LEN = 24  # seq, ts_init, ts_publish
MIN_FRAME_LEN = FRAME_FIXED_LEN + 3 * 8 + 2  # + three length prefixes + two header tags
U64_MAX = (1 << 64) - 1

_U64 = struct.Struct(">Q")
FRAME_HEAD = struct.Struct(">QQQQ")  # seq, ts_init, ts_publish, len(topic)
_NONE = b"\x00"
_SOME = b"\x01"


class FrameError(ValueError):
    """A canonical frame that cannot be decoded (damaged or not a frame at all)."""


def u64_be(value: int) -> bytes:
    return _U64.pack(value)


seq_key: Callable[[int], bytes] = _U64.pack  # an entry's storage key: seq as u64 BE (sorts in seq order)


def key_seq(key: bytes) -> int:
    """The seq an entry key stands for; FrameError unless it is 8 bytes."""
    if len(key) != 8:
        raise FrameError(f"entry key of {len(key)} bytes (expected 8)")
    return int.from_bytes(key, "big")


def frame_head(seq: int, ts_init: int, ts_publish: int, topic_len: int) -> bytes:
    """The frame's fixed front: seq, ts_init, ts_publish and len(topic), u64 BE each."""
    try:
        return FRAME_HEAD.pack(seq, ts_init, ts_publish, topic_len)
    except struct.error as exc:
        raise ValueError(f"seq, ts_init and ts_publish must fit in u64: {exc}") from None


def encode_frame_tail(
    topic: bytes,
    payload_type: bytes,
    payload: bytes,
    correlation_id: uuid.UUID | None,
    causation_id: uuid.UUID | None,
) -> bytes:
    """Everything after `frame_head`: known before a seq is assigned (the writer client
    pre-encodes it once per draft)."""
    return b"".join(
        (
            topic,
            _U64.pack(len(payload_type)),
            payload_type,
            _U64.pack(len(payload)),
            payload,
            _NONE if correlation_id is None else _SOME + correlation_id.bytes,
            _NONE if causation_id is None else _SOME + causation_id.bytes,
        )
    )


def encode_frame(
    seq: int,
    ts_init: int,
    ts_publish: int,
    topic: bytes,
    payload_type: bytes,
    payload: bytes,
    correlation_id: uuid.UUID | None,
    causation_id: uuid.UUID | None,
) -> bytes:
    """Encode the canonical frame; `topic` and `payload_type` are already UTF-8."""
    return frame_head(seq, ts_init, ts_publish, len(topic)) + encode_frame_tail(
        topic, payload_type, payload, correlation_id, causation_id
    )


def frame_seq(frame: bytes | memoryview) -> int:
    """The seq embedded at the front of a frame (raises FrameError if too short)."""
    if len(frame) < 8:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than its seq field")
    return _U64.unpack_from(frame, 0)[0]


def frame_correlation_key(buf: bytes | memoryview, start: int = 0) -> bytes | None:
    """The 16 raw bytes of the frame's correlation id in `buf[start:]`, or None when the frame
    carries none or is too damaged to say (a read of that entry reports the damage). Skips the
    three length-prefixed fields without decoding them: it runs on the writer's commit path."""
    try:
        (n,) = _U64.unpack_from(buf, start + 24)
        off = start + 32 + n
        (n,) = _U64.unpack_from(buf, off)
        off += 8 + n
        (n,) = _U64.unpack_from(buf, off)
        off += 8 + n
    except struct.error:
        return None
    if off + 17 > len(buf) or buf[off] != 1:
        return None
    return bytes(buf[off + 1 : off + 17])


def _take_uuid(buf: bytes | memoryview, off: int, end: int, what: str) -> tuple[uuid.UUID | None, int]:
    if off >= end:
        raise FrameError(f"unexpected end of frame reading {what} tag")
    tag = buf[off]
    if tag == 0:
        return None, off + 1
    if tag != 1:
        raise FrameError(f"invalid option tag {tag} for {what}")
    if off + 17 > end:
        raise FrameError(f"unexpected end of frame reading {what}")
    return uuid.UUID(bytes=bytes(buf[off + 1 : off + 17])), off + 17


def decode_frame(
    buf: bytes | memoryview, start: int = 0
) -> tuple[int, int, int, str, str, bytes, uuid.UUID | None, uuid.UUID | None]:
    """Decode the frame in `buf[start:]` into its fields.

    Returns (seq, ts_init, ts_publish, topic, payload_type, payload, correlation_id,
    causation_id). Raises FrameError on any damage. Written flat: it is on the scan path.
    """
    end = len(buf)
    if end - start < 32:
        raise FrameError(f"frame of {end - start} bytes is shorter than its fixed fields")
    seq, ts_init, ts_publish, n = FRAME_HEAD.unpack_from(buf, start)
    topic_start = start + 32
    topic_end = topic_start + n
    if topic_end + 8 > end:
        raise FrameError(f"topic length {n} overruns the frame")
    (n,) = _U64.unpack_from(buf, topic_end)
    ptype_start = topic_end + 8
    ptype_end = ptype_start + n
    if ptype_end + 8 > end:
        raise FrameError(f"payload_type length {n} overruns the frame")
    (n,) = _U64.unpack_from(buf, ptype_end)
    payload_start = ptype_end + 8
    payload_end = payload_start + n
    if payload_end > end:
        raise FrameError(f"payload length {n} overruns the frame")
    try:
        topic = str(buf[topic_start:topic_end], "utf-8")
        payload_type = str(buf[ptype_start:ptype_end], "utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"invalid UTF-8 in frame: {exc}") from None
    if end - payload_end == 2 and buf[payload_end] == 0 and buf[payload_end + 1] == 0:
        correlation_id = causation_id = None  # the common case, without the generic path
    else:
        correlation_id, off = _take_uuid(buf, payload_end, end, "correlation_id")
        causation_id, off = _take_uuid(buf, off, end, "causation_id")
        if off != end:
            raise FrameError(f"{end - off} trailing bytes after frame")
    return (
        seq,
        ts_init,
        ts_publish,
        topic,
        payload_type,
        bytes(buf[payload_start:payload_end]),
        correlation_id,
        causation_id,
    )
