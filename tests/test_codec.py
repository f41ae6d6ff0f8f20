"""The canonical frame (nes.codec): layout pinned byte-for-byte, strict bounded decoding."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nes.codec import (
    FRAME_FIXED_LEN,
    HASH_DOMAIN,
    HASH_LEN,
    FrameError,
    decode_frame,
    encode_frame,
    frame_seq,
    u64_be,
)
from nes.headers import uuid4_from_bytes

U64_MAX = (1 << 64) - 1
TS_INIT = 1_700_000_000_000_000_000
CORRELATION = uuid4_from_bytes(bytes(range(0x01, 0x11)))

# Written out by hand from the layout in nes/codec.py's docstring (all integers u64 BE).
KNOWN_FRAME_HEX = "".join(
    [
        "000000000000002a",  # seq 42
        "17979cfe362a0000",  # ts_init 1_700_000_000_000_000_000
        "17979cfe362a0001",  # ts_publish = ts_init + 1
        "000000000000000c",  # len(topic) 12
        "657865632e636f6d6d616e64",  # "exec.command"
        "000000000000000b",  # len(payload_type) 11
        "5375626d69744f72646572",  # "SubmitOrder"
        "0000000000000003",  # len(payload) 3
        "010203",  # payload
        "01",  # correlation_id: Some
        "0102030405064708890a0b0c0d0e0f10",  # its 16 raw bytes (v4/variant bits forced)
        "00",  # causation_id: None
    ]
)
KNOWN_FIELDS = (42, TS_INIT, TS_INIT + 1, "exec.command", "SubmitOrder", b"\x01\x02\x03", CORRELATION, None)


def encode(
    seq: int = 42,
    ts_init: int = TS_INIT,
    ts_publish: int = TS_INIT + 1,
    topic: str = "exec.command",
    payload_type: str = "SubmitOrder",
    payload: bytes = b"\x01\x02\x03",
    correlation_id: uuid.UUID | None = CORRELATION,
    causation_id: uuid.UUID | None = None,
) -> bytes:
    return encode_frame(
        seq, ts_init, ts_publish, topic.encode(), payload_type.encode(), payload, correlation_id, causation_id
    )


def test_known_vector_encodes_byte_for_byte() -> None:
    assert encode().hex() == KNOWN_FRAME_HEX
    assert len(encode()) == 24 + 8 + 12 + 8 + 11 + 8 + 3 + 17 + 1


def test_known_vector_decodes_to_its_fields() -> None:
    assert decode_frame(bytes.fromhex(KNOWN_FRAME_HEX)) == KNOWN_FIELDS


def test_empty_headers_frame_ends_with_two_none_tags() -> None:
    frame = encode(correlation_id=None)
    assert frame[-2:] == b"\x00\x00"
    assert frame == bytes.fromhex(KNOWN_FRAME_HEX)[:-18] + b"\x00\x00"


def test_both_headers_in_correlation_then_causation_order() -> None:
    causation = uuid4_from_bytes(bytes(range(0x11, 0x21)))
    frame = encode(causation_id=causation)
    assert frame[-34:] == b"\x01" + CORRELATION.bytes + b"\x01" + causation.bytes
    assert decode_frame(frame)[6:] == (CORRELATION, causation)


def test_layout_constants() -> None:
    assert HASH_DOMAIN == b"nautilus-event-store/entry/v1"
    assert HASH_LEN == 32
    assert FRAME_FIXED_LEN == 24
    assert u64_be(42) == bytes.fromhex("000000000000002a")
    assert u64_be(U64_MAX) == b"\xff" * 8


def test_encoding_is_deterministic() -> None:
    assert encode() == encode()


def test_frame_seq_reads_the_leading_u64() -> None:
    assert frame_seq(encode(seq=7)) == 7
    assert frame_seq(memoryview(encode(seq=U64_MAX))) == U64_MAX
    with pytest.raises(FrameError):
        frame_seq(b"\x00" * 7)


def test_decode_at_an_offset_skips_the_stored_hash() -> None:
    frame = encode()
    assert decode_frame(b"\xee" * HASH_LEN + frame, HASH_LEN) == KNOWN_FIELDS
    assert decode_frame(memoryview(b"\xee" * HASH_LEN + frame), HASH_LEN) == KNOWN_FIELDS


@pytest.mark.parametrize("field", ["seq", "ts_init", "ts_publish"])
@pytest.mark.parametrize("value", [-1, U64_MAX + 1])
def test_encode_refuses_integers_outside_u64(field: str, value: int) -> None:
    with pytest.raises(ValueError, match="u64"):
        encode(**{field: value})


def test_encode_accepts_u64_extremes() -> None:
    frame = encode(seq=U64_MAX, ts_init=0, ts_publish=U64_MAX)
    assert decode_frame(frame)[:3] == (U64_MAX, 0, U64_MAX)


# ---- strict decoding -----------------------------------------------------------------------


@pytest.mark.parametrize("correlation_id", [CORRELATION, None], ids=["with_header", "empty_headers"])
def test_every_truncation_raises_frame_error(correlation_id: uuid.UUID | None) -> None:
    frame = encode(correlation_id=correlation_id)
    for cut in range(len(frame)):
        with pytest.raises(FrameError):
            decode_frame(frame[:cut])
        with pytest.raises(FrameError):
            decode_frame(b"\x00" * HASH_LEN + frame[:cut], HASH_LEN)


# Offsets of the three length fields in the known frame.
TOPIC_LEN_AT = 24
PTYPE_LEN_AT = TOPIC_LEN_AT + 8 + 12
PAYLOAD_LEN_AT = PTYPE_LEN_AT + 8 + 11


@pytest.mark.parametrize("at", [TOPIC_LEN_AT, PTYPE_LEN_AT, PAYLOAD_LEN_AT], ids=["topic", "payload_type", "payload"])
@pytest.mark.parametrize("claimed", [U64_MAX, 1 << 63, 10_000])
def test_forged_length_raises_frame_error(at: int, claimed: int) -> None:
    frame = bytearray(encode())
    frame[at : at + 8] = u64_be(claimed)
    with pytest.raises(FrameError, match="overruns"):
        decode_frame(bytes(frame))


@pytest.mark.parametrize("tag", [2, 0x80, 0xFF])
def test_invalid_option_tag_raises_frame_error(tag: int) -> None:
    corr_tag_at = len(encode()) - 18
    frame = bytearray(encode())
    frame[corr_tag_at] = tag
    with pytest.raises(FrameError, match=f"invalid option tag {tag} for correlation_id"):
        decode_frame(bytes(frame))
    frame = bytearray(encode())
    frame[-1] = tag
    with pytest.raises(FrameError, match=f"invalid option tag {tag} for causation_id"):
        decode_frame(bytes(frame))
    empty = bytearray(encode(correlation_id=None))
    empty[-2] = tag
    with pytest.raises(FrameError, match="invalid option tag"):
        decode_frame(bytes(empty))


@pytest.mark.parametrize("field", ["topic", "payload_type"])
@pytest.mark.parametrize("raw", [b"\xff", b"\xc3", b"ok\xed\xa0\x80"], ids=["ff", "lone_lead", "surrogate"])
def test_invalid_utf8_raises_frame_error(field: str, raw: bytes) -> None:
    parts = {"topic": b"t", "payload_type": b"p", field: raw}
    frame = encode_frame(1, 2, 3, parts["topic"], parts["payload_type"], b"", None, None)
    with pytest.raises(FrameError, match="UTF-8"):
        decode_frame(frame)


@pytest.mark.parametrize("extra", [b"\x00", b"\x01", b"\x00" * 17])
@pytest.mark.parametrize("correlation_id", [CORRELATION, None], ids=["with_header", "empty_headers"])
def test_trailing_bytes_raise_frame_error(extra: bytes, correlation_id: uuid.UUID | None) -> None:
    with pytest.raises(FrameError, match="trailing"):
        decode_frame(encode(correlation_id=correlation_id) + extra)


def test_frame_error_is_a_value_error() -> None:
    assert issubclass(FrameError, ValueError)


# ---- round trip ----------------------------------------------------------------------------

u64s = st.integers(min_value=0, max_value=U64_MAX)
maybe_uuid = st.none() | st.uuids()


@settings(max_examples=300, deadline=None)
@given(
    seq=u64s,
    ts_init=u64s,
    ts_publish=u64s,
    topic=st.text(max_size=40),
    payload_type=st.text(max_size=40),
    payload=st.binary(max_size=300),
    correlation_id=maybe_uuid,
    causation_id=maybe_uuid,
)
def test_round_trip_over_random_fields(
    seq: int,
    ts_init: int,
    ts_publish: int,
    topic: str,
    payload_type: str,
    payload: bytes,
    correlation_id: uuid.UUID | None,
    causation_id: uuid.UUID | None,
) -> None:
    fields = (seq, ts_init, ts_publish, topic, payload_type, payload, correlation_id, causation_id)
    frame = encode(*fields)
    assert decode_frame(frame) == fields
    assert frame_seq(frame) == seq
    # Any strict prefix is refused, never mis-decoded.
    with pytest.raises(FrameError):
        decode_frame(frame[:-1])
