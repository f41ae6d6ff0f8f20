"""The captured entry: one row of a run's log.

Contract: `seq` is contiguous from 1 and is the only replay-order authority; `ts_init` is the
domain time, `ts_publish` the time the writer accepted the entry. An entry's stored value is
`entry_hash || canonical frame` (nes.codec); `from_stored_value` checks the hash before it
returns anything, so no read path hands out an entry whose bytes were damaged.
"""

from __future__ import annotations

import msgspec

from nes.codec import HASH_LEN, FrameError, decode_frame, encode_frame
from nes.errors import Corrupted, HashMismatch
from nes.hash import EntryHash, compute_entry_hash, hash_frame
from nes.headers import Headers

__all__ = [
    "EventStoreEntry",
    "Topic",
    "PayloadType",
    "validate_topic",
    "encode_stored_value",
    "decode_stored_value",
]

Topic = str
PayloadType = str
_TOPIC_WILDCARDS = ("*", "?")


def validate_topic(topic: object) -> str:
    """A bus topic: a non-blank string without the wildcard characters `*` and `?`."""
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, got {type(topic).__name__}")
    if not topic.strip():
        raise ValueError("topic must not be empty or whitespace")
    for ch in _TOPIC_WILDCARDS:
        if ch in topic:
            raise ValueError(f"topic {topic!r} must not contain wildcard {ch!r}")
    return topic


class EventStoreEntry(msgspec.Struct, frozen=True):
    seq: int
    ts_init: int
    ts_publish: int
    topic: Topic
    payload_type: PayloadType
    payload: bytes
    headers: Headers
    entry_hash: EntryHash

    def recompute_hash(self) -> EntryHash:
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
