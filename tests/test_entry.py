"""The entry model (crate entry.rs EN1/EN2, envelope E1/E2) and its stored value."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from nes.codec import HASH_LEN
from nes.entry import EventStoreEntry, decode_stored_value, encode_stored_value, validate_topic
from nes.errors import Corrupted, HashMismatch
from nes.hash import EntryHash, compute_entry_hash
from nes.headers import Headers, uuid4_from_bytes

TS_INIT = 1_700_000_000_000_000_000
POPULATED = Headers(uuid.uuid4(), uuid.uuid4())


def entry(seq: int = 42, payload: bytes = b"\x01\x02\x03", headers: Headers | None = None) -> EventStoreEntry:
    return EventStoreEntry.build(seq, TS_INIT, TS_INIT + 1, "exec.command", "SubmitOrder", payload, headers)


def test_recomputed_hash_equals_stored_hash() -> None:
    e = entry()
    assert e.recompute_hash() == e.entry_hash
    assert isinstance(e.entry_hash, EntryHash)


def test_build_hash_is_the_canonical_hash() -> None:
    e = entry(headers=POPULATED)
    assert e.entry_hash == compute_entry_hash(42, TS_INIT, TS_INIT + 1, "exec.command", "SubmitOrder", b"\x01\x02\x03", POPULATED)
    assert entry().entry_hash.to_hex() == "06b08d9615241ccdee4c21303e8d5a21682ceb085eb4eaf170365c700836e620"


def test_changing_the_payload_changes_the_hash() -> None:
    assert entry(payload=b"\x01\x02\x04").entry_hash != entry().entry_hash
    tampered = msgspec.structs.replace(entry(), payload=b"\x01\x02\x04")
    assert tampered.recompute_hash() != tampered.entry_hash


def test_build_fills_every_field() -> None:
    e = EventStoreEntry.build(7, 10, 11, "t.x", "P", bytearray(b"ab"), POPULATED)
    assert (e.seq, e.ts_init, e.ts_publish, e.topic, e.payload_type, e.payload, e.headers) == (
        7,
        10,
        11,
        "t.x",
        "P",
        b"ab",
        POPULATED,
    )
    assert type(e.payload) is bytes  # bytearray copied to immutable bytes


def test_build_defaults_to_empty_headers() -> None:
    assert entry().headers == Headers.empty()
    assert entry().headers.is_empty()


def test_entry_is_frozen() -> None:
    with pytest.raises(AttributeError):
        entry().seq = 1  # type: ignore[misc]


@pytest.mark.parametrize("headers", [Headers.empty(), POPULATED, Headers(None, POPULATED.causation_id)], ids=["empty", "both", "causation_only"])
def test_stored_value_round_trip(headers: Headers) -> None:
    e = entry(headers=headers)
    value = encode_stored_value(e)
    assert value[:HASH_LEN] == bytes(e.entry_hash)
    assert value[HASH_LEN:] == e.frame()
    decoded = decode_stored_value(value, e.seq)
    assert decoded == e
    assert decoded.recompute_hash() == decoded.entry_hash
    assert decode_stored_value(memoryview(value), e.seq) == e


def test_round_trip_preserves_empty_payload_and_unicode() -> None:
    e = EventStoreEntry.build(1, 0, 0, "ordres.café", "Ünïcode", b"", Headers.empty())
    assert decode_stored_value(encode_stored_value(e), 1) == e


def test_tampered_payload_byte_raises_hash_mismatch_with_embedded_seq() -> None:
    value = bytearray(encode_stored_value(entry(seq=9)))
    value[-3] ^= 0x01  # inside the payload (then the two header tags)
    with pytest.raises(HashMismatch) as info:
        decode_stored_value(bytes(value), 9)
    assert info.value.seq == 9


def test_hash_mismatch_reports_embedded_seq_not_key() -> None:
    value = bytearray(encode_stored_value(entry(seq=9)))
    value[0] ^= 0xFF  # the stored hash itself
    with pytest.raises(HashMismatch) as info:
        decode_stored_value(bytes(value), 1234)
    assert info.value == HashMismatch(9)


def test_entry_carrying_a_wrong_hash_is_stored_as_is_and_flagged_on_read() -> None:
    tampered = msgspec.structs.replace(entry(), payload=b"\xff\xff")
    value = encode_stored_value(tampered)  # not re-verified on encode
    assert value[:HASH_LEN] == bytes(entry().entry_hash)
    with pytest.raises(HashMismatch):
        decode_stored_value(value, 42)


@pytest.mark.parametrize("keep", [0, 1, 31, 32, 33, 60, -1])
def test_truncated_value_raises_corrupted(keep: int) -> None:
    value = encode_stored_value(entry(seq=5, headers=POPULATED))
    with pytest.raises(Corrupted) as info:
        decode_stored_value(value[:keep], 5)
    assert info.value.msg.startswith("decode entry seq=5: ")
    assert str(info.value).startswith("corrupted run: decode entry seq=5: ")


def test_every_truncation_raises_corrupted_with_key_seq() -> None:
    value = encode_stored_value(entry(seq=5))
    for cut in range(len(value)):
        with pytest.raises(Corrupted, match="decode entry seq=77: "):
            decode_stored_value(value[:cut], 77)


def test_non_v4_uuid_in_stored_frame_raises_corrupted() -> None:
    # A frame can carry any 16 bytes; a header that is not a v4 UUID is damage, with a valid hash.
    from nes.codec import encode_frame
    from nes.hash import hash_frame

    frame = encode_frame(3, 1, 2, b"t", b"p", b"", uuid.UUID(int=0), None)
    with pytest.raises(Corrupted, match="decode entry seq=3: .*version-4"):
        decode_stored_value(hash_frame(frame) + frame, 3)


# ---- topics --------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["exec.command", "a", "data.quotes.BINANCE.BTCUSDT", " x "])
def test_valid_topics_pass(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("", "must not be empty or whitespace"),
        ("   ", "must not be empty or whitespace"),
        ("\t\n", "must not be empty or whitespace"),
        ("exec.*", "must not contain wildcard '\\*'"),
        ("exec.?", "must not contain wildcard '\\?'"),
        ("*", "wildcard"),
    ],
)
def test_invalid_topics_raise_value_error(topic: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_topic(topic)
    with pytest.raises(ValueError, match=message):
        EventStoreEntry.build(1, 0, 0, topic, "P", b"")


@pytest.mark.parametrize("topic", [None, b"exec.command", 42])
def test_non_str_topic_raises_type_error(topic: object) -> None:
    with pytest.raises(TypeError, match="topic must be a str"):
        validate_topic(topic)
    with pytest.raises(TypeError, match="topic must be a str"):
        EventStoreEntry.build(1, 0, 0, topic, "P", b"")  # type: ignore[arg-type]


def test_stored_value_decode_does_not_revalidate_topic() -> None:
    # The crate validates topics when they are constructed, not when they are decoded.
    from nes.codec import encode_frame
    from nes.hash import hash_frame

    frame = encode_frame(1, 0, 0, b"a.*", b"P", b"", None, None)
    assert decode_stored_value(hash_frame(frame) + frame, 1).topic == "a.*"


def test_uuid4_from_bytes_headers_round_trip() -> None:
    headers = Headers(uuid4_from_bytes(bytes(16)), uuid4_from_bytes(b"\xff" * 16))
    e = entry(headers=headers)
    assert decode_stored_value(encode_stored_value(e), 42).headers == headers
