"""Records that travel through the shared-memory ring, from the trader to the writer sidecar.

Contract: ring order is replay order. The trader assigns each entry's seq (contiguous from the
writer's READY high-watermark + 1) and ts_publish, and writes the entry's canonical frame
(nes.codec) so the writer only hashes and stores it: it never re-encodes an entry.

    kind  record body
    FRAME    canonical frame (an entry without index keys: the body is stored as it is)
    ENTRY    u32 LE frame_len | canonical frame | u16 LE key_count | key_count x (u8 kind, u32 LE len, UTF-8 id)
    ANCHOR   msgspec msgpack AnchorRequest(blob_ref, content_hash)
    CLOSE    empty: commit everything before it, seal the run Ended, ack, exit

Control records (ANCHOR, CLOSE) are ordered with the entries before them. Decoding is strict:
the writer treats a malformed record as a fatal producer bug (halt), never as data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import msgspec

from nes.backend.base import IndexKey, IndexKind
from nes.codec import FRAME_HEAD, encode_frame_tail, frame_seq
from nes.headers import Headers

__all__ = [
    "KIND_ENTRY",
    "KIND_FRAME",
    "KIND_ANCHOR",
    "KIND_CLOSE",
    "RecordError",
    "AnchorRequest",
    "EntryTemplate",
    "entry_template",
    "encode_entry_record",
    "decode_entry_record",
    "encode_anchor_request",
    "decode_anchor_request",
]

KIND_ENTRY = 1
KIND_ANCHOR = 2
KIND_CLOSE = 3
KIND_FRAME = 4

_U32 = struct.Struct("<I")
_FRAME_HEAD_PACK = FRAME_HEAD.pack
_U16 = struct.Struct("<H")
_KEY_HEAD = struct.Struct("<BI")
_KIND_CODE = {IndexKind.ClientOrderId: 1, IndexKind.VenueOrderId: 2}
_CODE_KIND = {code: kind for kind, code in _KIND_CODE.items()}
_CLIENT, _VENUE = IndexKind.ClientOrderId, IndexKind.VenueOrderId
_NO_KEYS = b"\x00\x00"
MAX_INDEX_KEYS = 0xFFFF


class RecordError(ValueError):
    """A ring record that does not decode (a producer bug or memory damage)."""


class AnchorRequest(msgspec.Struct, frozen=True):
    blob_ref: str
    content_hash: str


def _encode_keys(index_keys: Sequence[IndexKey]) -> bytes:
    if not index_keys:
        return _NO_KEYS
    if len(index_keys) > MAX_INDEX_KEYS:
        raise ValueError(f"an entry carries at most {MAX_INDEX_KEYS} index keys, got {len(index_keys)}")
    parts = [_U16.pack(len(index_keys))]
    for kind, key in index_keys:
        raw = key.encode("utf-8")
        # by identity: an enum member's hash is a Python-level call (this is the submit hot path)
        code = 1 if kind is _CLIENT else 2 if kind is _VENUE else _KIND_CODE[kind]
        parts.append(_KEY_HEAD.pack(code, len(raw)))
        parts.append(raw)
    return b"".join(parts)


class EntryTemplate:
    """A FRAME or ENTRY record minus the (seq, ts_init, ts_publish, len(topic)) block at the
    frame's front: everything a draft knows before submit. `record()` adds the block (on the
    submit hot path: a slots class and two concatenations, not a NamedTuple and a join)."""

    __slots__ = ("kind", "prefix", "topic_len", "tail")

    def __init__(self, kind: int, prefix: bytes, topic_len: int, tail: bytes) -> None:
        self.kind = kind  # KIND_FRAME without index keys, else KIND_ENTRY
        self.prefix = prefix  # ENTRY: u32 LE frame_len; FRAME: nothing
        self.topic_len = topic_len
        self.tail = tail  # rest of the frame, then (ENTRY) the index-key trailer

    def record(self, seq: int, ts_init: int, ts_publish: int) -> bytes:
        return self.prefix + _FRAME_HEAD_PACK(seq, ts_init, ts_publish, self.topic_len) + self.tail


def entry_template(
    topic: bytes, payload_type: bytes, payload: bytes, headers: Headers, index_keys: Sequence[IndexKey]
) -> EntryTemplate:
    frame_tail = encode_frame_tail(topic, payload_type, payload, headers.correlation_id, headers.causation_id)
    if not index_keys:
        return EntryTemplate(KIND_FRAME, b"", len(topic), frame_tail)
    frame_len = _U32.pack(FRAME_HEAD.size + len(frame_tail))
    return EntryTemplate(KIND_ENTRY, frame_len, len(topic), frame_tail + _encode_keys(index_keys))


def encode_entry_record(
    seq: int,
    ts_init: int,
    ts_publish: int,
    topic: bytes,
    payload_type: bytes,
    payload: bytes,
    headers: Headers,
    index_keys: Sequence[IndexKey],
) -> bytes:
    """The ENTRY record (with its index-key trailer, even when there are no keys)."""
    template = entry_template(topic, payload_type, payload, headers, index_keys)
    if template.kind == KIND_FRAME:
        frame_len = _U32.pack(FRAME_HEAD.size + len(template.tail))
        template = EntryTemplate(KIND_ENTRY, frame_len, template.topic_len, template.tail + _NO_KEYS)
    return template.record(seq, ts_init, ts_publish)


def decode_entry_record(record: bytes | memoryview) -> tuple[int, bytes, tuple[IndexKey, ...]]:
    """(seq, canonical frame, index keys) of an ENTRY record."""
    end = len(record)
    if end < 4:
        raise RecordError(f"entry record of {end} bytes has no frame length")
    (frame_len,) = _U32.unpack_from(record, 0)
    keys_at = 4 + frame_len
    if keys_at + 2 > end:
        raise RecordError(f"entry record frame length {frame_len} overruns the {end}-byte record")
    frame = bytes(record[4:keys_at])
    try:
        seq = frame_seq(frame)
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    if record[keys_at] == 0 and record[keys_at + 1] == 0 and keys_at + 2 == end:
        return seq, frame, ()
    return seq, frame, tuple(_decode_keys(record, keys_at, end))


def _decode_keys(record: bytes | memoryview, off: int, end: int) -> Iterable[IndexKey]:
    (count,) = _U16.unpack_from(record, off)
    off += 2
    for _ in range(count):
        if off + 5 > end:
            raise RecordError("entry record index key header overruns the record")
        code, n = _KEY_HEAD.unpack_from(record, off)
        off += 5
        if code not in _CODE_KIND or off + n > end:
            raise RecordError(f"entry record index key (kind {code}, length {n}) is malformed")
        try:
            key = str(record[off : off + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"index key is not UTF-8: {exc}") from None
        off += n
        yield IndexKey(_CODE_KIND[code], key)
    if off != end:
        raise RecordError(f"{end - off} trailing bytes after entry record")


_anchor_req_encoder = msgspec.msgpack.Encoder()
_anchor_req_decoder = msgspec.msgpack.Decoder(AnchorRequest)


def encode_anchor_request(blob_ref: str, content_hash: str) -> bytes:
    return _anchor_req_encoder.encode(AnchorRequest(blob_ref, content_hash))


def decode_anchor_request(record: bytes | memoryview) -> AnchorRequest:
    try:
        return _anchor_req_decoder.decode(record)
    except msgspec.DecodeError as exc:
        raise RecordError(f"anchor request does not decode: {exc}") from None
