"""The captured entry: one row of a run's log.

Contract: `seq` is contiguous from 1 and is the only replay-order authority; `ts_init` is the
domain time, `ts_publish` the time the writer accepted the entry. An entry's stored value is
`entry_hash || canonical frame` (nes.codec); `decode_stored_value` and `decode_stored_rows`
check the hash before they return anything, so no read path hands out an entry whose bytes were
damaged.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import msgspec

from nes.codec import HASH_LEN, FrameError, decode_frame, encode_frame, key_seq
from nes.errors import Corrupted, Gap, HashMismatch, InvalidArgument
from nes.hash import DOMAIN_HASH_STATE, EntryHash, compute_entry_hash, hash_frame
from nes.headers import Headers

__all__ = [
    "EventStoreEntry",
    "Topic",
    "PayloadType",
    "validate_topic",
    "encode_stored_value",
    "decode_stored_value",
    "decode_stored_rows",
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


def decode_stored_rows(rows: Iterable[tuple[bytes, bytes]], first_seq: int, last_seq: int) -> list[EventStoreEntry]:
    """Verify and decode the rows `(key, value)` a backend read for seqs `first_seq ..= last_seq`:
    ascending 8-byte big-endian keys from the first key >= `first_seq` (only the first
    `last_seq - first_seq + 1` rows are looked at).

    Raises `Gap` for a missing seq (also at the end of the window), `Corrupted` for a bad key,
    a damaged value, or a value stored under another seq's key (a copied row hashes clean),
    and `HashMismatch` when the stored hash is not BLAKE3 over the frame. The scan path: a row
    whose key is the next seq and whose value embeds that key decodes in one flat loop; any
    other row takes the careful path, which names the first problem in that order.
    """
    out: list[EventStoreEntry] = []
    append = out.append
    expected = first_seq
    new_hasher = DOMAIN_HASH_STATE.copy
    entry_type, hash_type, no_headers = EventStoreEntry, EntryHash, _EMPTY_HEADERS
    for key, value in islice(rows, max(0, last_seq - first_seq + 1)):
        if key == value[_SEQ_AT]:
            try:
                seq, ts_init, ts_publish, topic, ptype, payload, corr, caus = decode_frame(value, HASH_LEN)
            except FrameError:
                seq = -1  # damaged: the careful path reports it
            if seq == expected:
                stored = value[:HASH_LEN]
                hasher = new_hasher()
                hasher.update(value[HASH_LEN:])
                if hasher.digest() != stored:
                    raise HashMismatch(seq)
                if corr is None and caus is None:
                    headers = no_headers
                else:
                    headers = _headers_or_corrupt(corr, caus, seq)
                append(entry_type(seq, ts_init, ts_publish, topic, ptype, payload, headers, hash_type(stored)))
                expected += 1
                continue
        try:
            seq = key_seq(key)
        except FrameError as exc:
            raise Corrupted(f"entries table: {exc}") from None
        if seq > last_seq:
            break
        if seq != expected:
            raise Gap(expected - 1, seq, expected)
        entry = decode_stored_value(value, seq)  # raises for damage; if not, the row was moved:
        raise Corrupted(f"decode entry seq={seq}: value carries embedded seq {entry.seq}")
    if expected <= last_seq:
        raise Gap(expected - 1, last_seq + 1, expected)
    return out
