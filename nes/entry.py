"""The captured entry: one row of a run's log.

Contract: `seq` is contiguous from 1 and is the only replay-order authority; `ts_init` is the
domain time, `ts_publish` the time the writer accepted the entry. An entry's stored value is
`entry_hash || canonical frame` (nes.codec); `decode_stored_value` and `decode_stored_rows`
check the hash before they return anything, so no read path hands out an entry whose bytes were
damaged.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

import msgspec

from nes.codec import HASH_DOMAIN, HASH_LEN, FrameError, decode_frame, encode_frame, key_seq, seq_key
from nes.errors import Corrupted, Gap, HashMismatch, InvalidArgument
from nes.hash import EntryHash, compute_entry_hash, frame_hasher, hash_frame
from nes.headers import Headers

__all__ = [
    "EventStoreEntry",
    "Topic",
    "PayloadType",
    "validate_topic",
    "encode_stored_value",
    "decode_stored_value",
    "decode_stored_rows",
    "decode_contiguous_values",
]

Topic = str
PayloadType = str
_TOPIC_WILDCARDS = ("*", "?")


def validate_topic(topic: object) -> str:
    """A bus topic: a non-blank string without the wildcard characters `*` and `?`."""
    if not isinstance(topic, str):
        raise InvalidArgument(f"topic must be a str, got {type(topic).__name__}")
    if not topic.strip():
        raise InvalidArgument("topic must not be empty or whitespace")
    for ch in _TOPIC_WILDCARDS:
        if ch in topic:
            raise InvalidArgument(f"topic {topic!r} must not contain wildcard {ch!r}")
    return topic


class EventStoreEntry(msgspec.Struct, frozen=True, gc=False):
    """One captured entry. Not tracked by the cyclic GC (`gc=False`): it is frozen and holds only
    ints, text, bytes and `Headers`, so it can never be part of a reference cycle, and a scan
    that materialises a million of them does not make every GC pass walk them."""

    seq: int
    ts_init: int
    ts_publish: int
    topic: Topic
    payload_type: PayloadType
    payload: bytes
    headers: Headers
    entry_hash: EntryHash

    def recompute_hash(self) -> EntryHash:
        """The BLAKE3 entry hash of this entry's fields (compare with entry_hash)."""
        return compute_entry_hash(
            self.seq,
            self.ts_init,
            self.ts_publish,
            self.topic,
            self.payload_type,
            self.payload,
            self.headers,
        )

    @classmethod
    def build(
        cls,
        seq: int,
        ts_init: int,
        ts_publish: int,
        topic: str,
        payload_type: str,
        payload: bytes,
        headers: Headers | None = None,
    ) -> EventStoreEntry:
        """An entry with its hash computed (the writer's job; handy in tests and tools)."""
        headers = headers or Headers.empty()
        validate_topic(topic)
        entry_hash = compute_entry_hash(
            seq, ts_init, ts_publish, topic, payload_type, bytes(payload), headers
        )
        return cls(seq, ts_init, ts_publish, topic, payload_type, bytes(payload), headers, entry_hash)

    def frame(self) -> bytes:
        """The canonical frame bytes (what the entry hash covers)."""
        return encode_frame(
            self.seq,
            self.ts_init,
            self.ts_publish,
            self.topic.encode("utf-8"),
            self.payload_type.encode("utf-8"),
            self.payload,
            self.headers.correlation_id,
            self.headers.causation_id,
        )


def encode_stored_value(entry: EventStoreEntry) -> bytes:
    """`entry_hash || frame`: the stored hash is whatever the entry carries (not re-verified)."""
    return bytes(entry.entry_hash) + entry.frame()


_EMPTY_HEADERS = Headers.empty()


def decode_stored_value(value: bytes | memoryview, key_seq: int) -> EventStoreEntry:
    """Verify then decode a stored value read under key `key_seq`.

    Raises Corrupted ("decode entry seq=<key>: ...") for structural damage and
    HashMismatch(embedded seq) when the stored hash differs from BLAKE3 over the frame.
    The key-vs-embedded-seq check belongs to the verifier, not here.
    """
    if len(value) < HASH_LEN:
        raise Corrupted(f"decode entry seq={key_seq}: value of {len(value)} bytes is shorter than its hash")
    if isinstance(value, memoryview):
        value = value.tobytes()
    try:
        seq, ts_init, ts_publish, topic, ptype, payload, corr, caus = decode_frame(value, HASH_LEN)
    except FrameError as exc:
        raise Corrupted(f"decode entry seq={key_seq}: {exc}") from None
    stored = value[:HASH_LEN]
    if hash_frame(value[HASH_LEN:]) != stored:
        raise HashMismatch(seq)
    headers = _EMPTY_HEADERS if corr is None and caus is None else _headers_or_corrupt(corr, caus, key_seq)
    return EventStoreEntry(seq, ts_init, ts_publish, topic, ptype, payload, headers, EntryHash(stored))


def _headers_or_corrupt(corr, caus, key_seq: int) -> Headers:  # noqa: ANN001
    try:
        return Headers(corr, caus)
    except (TypeError, ValueError) as exc:
        raise Corrupted(f"decode entry seq={key_seq}: {exc}") from None


_SEQ_AT = slice(HASH_LEN, HASH_LEN + 8)  # a value's embedded seq: the frame's first field
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">QQQQ")  # seq, ts_init, ts_publish, len(topic), at HASH_LEN
_TOPIC_LEN_AT = HASH_LEN + 24  # value offset of len(topic)
_TOPIC_AT = HASH_LEN + 32
_NO_HEADERS = b"\x00\x00"
# A run's rows carry few distinct (topic, payload_type) pairs: the bytes
# `topic || len(payload_type) || payload_type` of each pair seen are kept, per length pair,
# with their decoded texts, so a row is recognised by one `startswith` and its texts are not
# decoded again. Payload lengths vary freely. The cache is bounded (files are untrusted input)
# and starts over when full; a cached pair is only a guess that every row re-proves (lengths,
# tail, hash).
_MAX_NAMES = 4096
# len(topic) << 64 | len(payload_type) -> [(names bytes, offset of len(payload), topic,
# payload_type, one-call unpacker of seq/ts_init/ts_publish/len(topic)/len(payload_type)/len(payload),
# len(topic), len(payload_type), shortest such row)]
_Names = tuple[bytes, int, str, str, Callable[[bytes, int], tuple[Any, ...]], int, int, int]
_names_by_lengths: dict[int, list[_Names]] = {}
_names_count = 0
_last_names: list[_Names | None] = [None]  # the pair of the last decoded row: tried first


def _learn_row(value: bytes) -> bool:
    """Cache the (topic, payload_type) of a row; False if it has none to learn (the per-field
    path then decides what it is)."""
    global _names_count
    end = len(value)
    if end < _TOPIC_AT + 8:
        return False
    (topic_len,) = _U64.unpack_from(value, _TOPIC_LEN_AT)
    ptype_len_at = _TOPIC_AT + topic_len
    if ptype_len_at + 8 > end:
        return False
    (ptype_len,) = _U64.unpack_from(value, ptype_len_at)
    payload_len_at = ptype_len_at + 8 + ptype_len
    if payload_len_at + 8 + 2 > end:
        return False
    names_raw = value[_TOPIC_AT:payload_len_at]
    try:
        topic, ptype = str(names_raw[:topic_len], "utf-8"), str(names_raw[topic_len + 8 :], "utf-8")
    except UnicodeDecodeError:
        return False
    lengths = (topic_len << 64) | ptype_len
    known = _names_by_lengths.setdefault(lengths, [])
    if any(known_names[0] == names_raw for known_names in known):
        return False  # already known: the row differs elsewhere
    if _names_count >= _MAX_NAMES:
        _names_by_lengths.clear()
        _last_names[0] = None
        _names_count = 0
        known = _names_by_lengths.setdefault(lengths, [])
    unpack = struct.Struct(f">QQQQ{topic_len}xQ{ptype_len}xQ").unpack_from
    known.append((names_raw, payload_len_at, topic, ptype, unpack, topic_len, ptype_len, payload_len_at + 8 + 2))
    _names_count += 1
    return True


_MAX_UUIDS = 8192
_uuids: dict[bytes, uuid.UUID] = {}  # correlation ids repeat across a workflow's entries
_new_object, _set_attribute, _UUID, _UNKNOWN_SAFETY = object.__new__, object.__setattr__, uuid.UUID, uuid.SafeUUID.unknown
_copy_empty_headers: Callable[[], Headers] = getattr(_EMPTY_HEADERS, "__copy__")
_force_setattr = msgspec.structs.force_setattr


def _uuid4_at(value: bytes, at: int) -> uuid.UUID | None:
    """The version-4 RFC 4122 UUID in `value[at:at + 16]`, or None when it is not one (the
    careful path then reports it). Built without `UUID.__init__`'s argument parsing: the
    bytes are already checked here."""
    raw = value[at : at + 16]
    known = _uuids.get(raw)
    if known is not None:
        return known
    if len(raw) != 16 or raw[6] >> 4 != 4 or raw[8] >> 6 != 2:
        return None
    made = _new_object(_UUID)
    _set_attribute(made, "int", int.from_bytes(raw, "big"))
    _set_attribute(made, "is_safe", _UNKNOWN_SAFETY)
    if len(_uuids) >= _MAX_UUIDS:
        _uuids.clear()
    _uuids[raw] = made
    return made


def _headers_at(value: bytes, at: int) -> Headers | None:
    """The headers encoded from `value[at]` to the end (tags 0/1, v4 UUIDs, nothing after),
    or None when they are not well formed (the careful path then reports them)."""
    end = len(value)
    ids: list[uuid.UUID | None] = []
    for _ in range(2):
        if at >= end:
            return None
        tag = value[at]
        if tag == 0:
            ids.append(None)
            at += 1
        elif tag == 1:
            made = _uuid4_at(value, at + 1)
            if made is None:
                return None
            ids.append(made)
            at += 17
        else:
            return None
    if at != end:
        return None
    if ids[0] is None and ids[1] is None:
        return _EMPTY_HEADERS
    headers = _copy_empty_headers()  # validated above: skip Headers.__post_init__
    _force_setattr(headers, "correlation_id", ids[0])
    _force_setattr(headers, "causation_id", ids[1])
    return headers


# A run's header-less rows often repeat one exact shape: the same (topic, payload_type) and
# payload length, so the same total length. A row of that length is unpacked whole by one
# struct call: hash, seq, ts_init, ts_publish, the shape's prefix
# `len(topic) || topic || len(payload_type) || payload_type || len(payload)` (the bytes after
# ts_publish up to the payload, compared with the cached one), payload, and the two header
# tags as one u16 (zero: no headers). The shape in use is only a guess that every row re-proves.
# (size, prefix, unpack, topic, payload_type)
_Shape = tuple[int, bytes, Callable[[bytes], tuple[Any, ...]], str, str]
_shape_unpackers: dict[int, Callable[[bytes], tuple[Any, ...]]] = {}  # prefix_len << 64 | payload_len
_last_shape: list[_Shape | None] = [None]


def _shape_of(value: bytes, payload_at: int, topic: str, ptype: str) -> _Shape:
    """The exact shape of `value`, a header-less row whose fields were just checked: its
    payload starts at `payload_at` and runs to the two header tags at the end."""
    prefix = value[_TOPIC_LEN_AT:payload_at]
    payload_len = len(value) - payload_at - 2
    lengths = (len(prefix) << 64) | payload_len
    unpack = _shape_unpackers.get(lengths)
    if unpack is None:
        if len(_shape_unpackers) >= _MAX_NAMES:
            _shape_unpackers.clear()
        unpack = _shape_unpackers[lengths] = struct.Struct(f">{HASH_LEN}sQQQ{len(prefix)}s{payload_len}sH").unpack
    return len(value), prefix, unpack, topic, ptype


def _decode_plain_values(values: list[bytes], pos: int, first_seq: int, out: list[EventStoreEntry]) -> int:
    """The scan's hot loop from `values[pos]`, over values whose keys are known to be
    `first_seq + their index`: a row of the exact shape in use (see `_Shape`) is unpacked and
    recognised by one struct call; another row whose (topic, payload_type) is cached is checked
    (embedded seq, lengths, header tags and UUID versions) and decoded with two struct calls.
    Either way its hash is checked before it is appended to `out`. Returns the index of the
    first value it does not recognise (a new topic or payload type, damage), or len(values)."""
    append = out.append
    hasher = frame_hasher()  # this call's own: reset per row
    reset, update, digest, domain = hasher.reset, hasher.update, hasher.digest, HASH_DOMAIN
    entry_type, hash_type, no_headers, no_header_bytes = EventStoreEntry, EntryHash, _EMPTY_HEADERS, _NO_HEADERS
    head: Callable[[bytes, int], tuple[Any, ...]] = _HEAD.unpack_from
    u64, names_for, headers_at = _U64.unpack_from, _names_by_lengths.get, _headers_at
    hash_len, topic_at = HASH_LEN, _TOPIC_AT
    expected = first_seq + pos
    last = _last_names[0]
    # The previous row's pair, unpacked into locals (most rows repeat it: one unpack then).
    if last is None:
        l_names, l_len_at, l_topic, l_ptype, l_unpack, l_topic_len, l_ptype_len, l_min = b"", 0, "", "", head, -1, -1, 1 << 62
    else:
        l_names, l_len_at, l_topic, l_ptype, l_unpack, l_topic_len, l_ptype_len, l_min = last
    shape = _last_shape[0]
    s_unpack: Callable[[bytes], tuple[Any, ...]]
    if shape is None:
        s_size, s_prefix, s_unpack, s_topic, s_ptype = -1, b"", _U64.unpack, "", ""
    else:
        s_size, s_prefix, s_unpack, s_topic, s_ptype = shape
    plain_size = -1  # length of the last header-less row decoded field by field
    try:
        for value in islice(values, pos, None):
            if len(value) == s_size and (row := s_unpack(value))[4] == s_prefix:
                stored, seq, ts_init, ts_publish, _, payload, tags = row
                if seq != expected or tags:
                    break  # moved or damaged: the careful path names it
                reset()
                update(domain)
                update(value[hash_len:])
                if digest() != stored:
                    raise HashMismatch(seq)
                append(entry_type(seq, ts_init, ts_publish, s_topic, s_ptype, payload, no_headers, hash_type(stored)))
                expected += 1
                continue
            # `startswith` proves the names and len(payload_type) (they are inside l_names);
            # len(topic) sits before them and is compared on its own.
            if (
                len(value) >= l_min
                and (fields := l_unpack(value, hash_len))[3] == l_topic_len
                and value.startswith(l_names, topic_at)
            ):
                seq, ts_init, ts_publish, _, _, payload_len = fields
                payload_len_at, topic, ptype = l_len_at, l_topic, l_ptype
            else:
                seq, ts_init, ts_publish, topic_len = head(value, hash_len)
                for candidate in names_for((topic_len << 64) | u64(value, topic_at + topic_len)[0], ()):
                    if value.startswith(candidate[0], topic_at):
                        break
                else:
                    break  # a topic / payload_type not cached yet
                last = candidate
                l_names, l_len_at, l_topic, l_ptype, l_unpack, l_topic_len, l_ptype_len, l_min = candidate
                payload_len_at, topic, ptype = l_len_at, l_topic, l_ptype
                payload_len = u64(value, payload_len_at)[0]
            if seq != expected:
                break
            payload_at = payload_len_at + 8
            payload_end = payload_at + payload_len
            headers: Headers | None
            if payload_end + 2 == len(value) and value.endswith(no_header_bytes):
                headers = no_headers
                if len(value) == plain_size:  # a second row of this shape in a row: use it
                    s_size, s_prefix, s_unpack, s_topic, s_ptype = shape = _shape_of(value, payload_at, topic, ptype)
                plain_size = len(value)
            else:
                headers = headers_at(value, payload_end)
                if headers is None:
                    break
            stored = value[:hash_len]
            reset()
            update(domain)
            update(value[hash_len:])
            if digest() != stored:
                raise HashMismatch(seq)
            append(entry_type(seq, ts_init, ts_publish, topic, ptype, value[payload_at:payload_end], headers, hash_type(stored)))
            expected += 1
    except (struct.error, OverflowError):
        pass  # a row too short for its fields, or a length past any offset: the careful path names it
    _last_names[0] = last
    _last_shape[0] = shape
    return expected - first_seq


def decode_contiguous_values(values: list[bytes], first_seq: int) -> list[EventStoreEntry]:
    """Verify and decode `values`, known to be stored under keys `first_seq, first_seq + 1, ...`
    (a backend proved it: ascending unique keys whose first and last are those seqs). Same
    checks and errors as `decode_stored_rows`; the backends' scan path."""
    out: list[EventStoreEntry] = []
    count = len(values)
    pos = 0
    learned_at = -1
    while pos < count:
        pos = _decode_plain_values(values, pos, first_seq, out)
        if pos == count:
            break
        value = values[pos]
        if learned_at != pos and _learn_row(value):
            learned_at = pos  # a new shape or name: one more try on the fast path
            continue
        _decode_row_carefully((seq_key(first_seq + pos), value), first_seq + pos, first_seq + count - 1, out)
        pos += 1
    return out


def _decode_row_carefully(row: tuple[bytes, bytes], expected: int, last_seq: int, out: list[EventStoreEntry]) -> None:
    """One row by the per-field decode (rows with headers), or the careful path that names
    the first problem: a bad key, a gap, damage, or a value stored under another seq's key."""
    key, value = row
    if key == value[_SEQ_AT]:
        try:
            seq, ts_init, ts_publish, topic, ptype, payload, corr, caus = decode_frame(value, HASH_LEN)
        except FrameError:
            seq = -1  # damaged: the careful path reports it
        if seq == expected:
            stored = value[:HASH_LEN]
            if hash_frame(value[HASH_LEN:]) != stored:
                raise HashMismatch(seq)
            headers = _EMPTY_HEADERS if corr is None and caus is None else _headers_or_corrupt(corr, caus, seq)
            out.append(EventStoreEntry(seq, ts_init, ts_publish, topic, ptype, payload, headers, EntryHash(stored)))
            return
    try:
        seq = key_seq(key)
    except FrameError as exc:
        raise Corrupted(f"entries table: {exc}") from None
    if seq > last_seq:
        raise _PastWindow
    if seq != expected:
        raise Gap(expected - 1, seq, expected)
    entry = decode_stored_value(value, seq)  # raises for damage; if not, the row was moved:
    raise Corrupted(f"decode entry seq={seq}: value carries embedded seq {entry.seq}")


class _PastWindow(Exception):
    """The next key is past the window: the rows before it were all there is."""


def decode_stored_rows(rows: Iterable[tuple[bytes, bytes]], first_seq: int, last_seq: int) -> list[EventStoreEntry]:
    """Verify and decode the rows `(key, value)` a backend read for seqs `first_seq ..= last_seq`:
    ascending 8-byte big-endian keys from the first key >= `first_seq` (only the first
    `last_seq - first_seq + 1` rows are looked at).

    Raises `Gap` for a missing seq (also at the end of the window), `Corrupted` for a bad key,
    a damaged value, or a value stored under another seq's key (a copied row hashes clean),
    and `HashMismatch` when the stored hash is not BLAKE3 over the frame. The scan path: when
    the first and last keys are `first_seq` and `first_seq + len - 1` (ascending unique keys,
    so every key in between is its position's seq), header-less rows decode in
    `_decode_plain_values`; a row with headers takes the per-field decode; any other row takes
    the careful path, which names the first problem in that order.
    """
    wanted = max(0, last_seq - first_seq + 1)
    batch = rows[:wanted] if isinstance(rows, list) else list(islice(rows, wanted))
    count = len(batch)
    if count > 0 and batch[0][0] == seq_key(first_seq) and batch[-1][0] == seq_key(first_seq + count - 1):
        out = decode_contiguous_values([value for _, value in batch], first_seq)
    else:
        out = []
        for pos, row in enumerate(batch):
            try:
                _decode_row_carefully(row, first_seq + pos, last_seq, out)
            except _PastWindow:
                break
    expected = first_seq + len(out)
    if expected <= last_seq:
        raise Gap(expected - 1, last_seq + 1, expected)
    return out
