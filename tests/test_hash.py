"""The canonical entry hash (crate hash.rs: HS1-HS5), pinned by the crate's two known vectors."""

from __future__ import annotations

import uuid

import pytest

from nes.hash import EntryHash, compute_entry_hash, hash_frame
from nes.headers import Headers, uuid4_from_bytes

SEQ = 42
TS_INIT = 1_700_000_000_000_000_000
TS_PUBLISH = TS_INIT + 1
TOPIC = "exec.command"
PAYLOAD_TYPE = "SubmitOrder"
PAYLOAD = bytes([0x01, 0x02, 0x03])
CORRELATION = uuid4_from_bytes(bytes(range(0x01, 0x11)))
CAUSATION = uuid4_from_bytes(bytes(range(0x11, 0x21)))

BASELINE_HEX = "06b08d9615241ccdee4c21303e8d5a21682ceb085eb4eaf170365c700836e620"
POPULATED_HEADERS_HEX = "69be87a947cbfb61dd445908ae5825ada0b679bb3c9dd7e8cb14dcc0baf74eaa"

BASE = dict(
    seq=SEQ,
    ts_init=TS_INIT,
    ts_publish=TS_PUBLISH,
    topic=TOPIC,
    payload_type=PAYLOAD_TYPE,
    payload=PAYLOAD,
    headers=Headers(CORRELATION, CAUSATION),
)


def h(**changes: object) -> EntryHash:
    return compute_entry_hash(**{**BASE, **changes})  # type: ignore[arg-type]


def test_hash_is_deterministic() -> None:
    assert h() == h()
    assert compute_entry_hash(1, 2, 3, "t", "p", b"", Headers()) == compute_entry_hash(1, 2, 3, "t", "p", b"", Headers())


OTHER_UUID = uuid.UUID("a3c1d1b2-5e6f-4a7b-8c9d-0e1f2a3b4c5d")


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": SEQ + 1},
        {"ts_init": TS_INIT + 1},
        {"ts_publish": TS_PUBLISH + 1},
        {"topic": TOPIC + "x"},
        {"payload_type": PAYLOAD_TYPE + "x"},
        {"payload": PAYLOAD + b"\x00"},
        {"headers": Headers(OTHER_UUID, CAUSATION)},
        {"headers": Headers(CORRELATION, OTHER_UUID)},
    ],
    ids=["seq", "ts_init", "ts_publish", "topic", "payload_type", "payload", "correlation_id", "causation_id"],
)
def test_every_input_changes_the_hash(changes: dict[str, object]) -> None:
    assert h(**changes) != h()


def test_absent_header_differs_from_present_header() -> None:
    assert h(headers=Headers(None, CAUSATION)) != h()
    assert h(headers=Headers(CORRELATION, None)) != h()
    # Field order is part of the hash: swapping correlation and causation changes it.
    assert h(headers=Headers(CAUSATION, CORRELATION)) != h()
    assert h(headers=Headers(CORRELATION, None)) != h(headers=Headers(None, CORRELATION))


def test_length_prefixes_separate_adjacent_strings() -> None:
    assert h(topic="ab", payload_type="c") != h(topic="a", payload_type="bc")
    assert h(payload_type="ab", payload=b"c") != h(payload_type="a", payload=b"bc")


def test_known_vector_baseline_empty_headers() -> None:
    got = compute_entry_hash(SEQ, TS_INIT, TS_PUBLISH, TOPIC, PAYLOAD_TYPE, PAYLOAD, Headers.empty())
    assert got.to_hex() == BASELINE_HEX


def test_known_vector_populated_headers() -> None:
    # uuid4_from_bytes forces the version/variant bits, as the crate's UUID4::from_bytes does.
    assert str(CORRELATION) == "01020304-0506-4708-890a-0b0c0d0e0f10"
    assert str(CAUSATION) == "11121314-1516-4718-991a-1b1c1d1e1f20"
    assert h().to_hex() == POPULATED_HEADERS_HEX


def test_entry_hash_is_32_bytes_and_hex_is_lowercase_high_nibble_first() -> None:
    digest = h()
    assert isinstance(digest, EntryHash)
    assert len(digest) == 32
    assert bytes(digest) == bytes.fromhex(POPULATED_HEADERS_HEX)
    assert digest.bytes == bytes.fromhex(POPULATED_HEADERS_HEX)


def test_entry_hash_to_hex_of_ab_repeated() -> None:
    assert EntryHash.of(bytes([0xAB] * 32)).to_hex() == "ab" * 32
    assert EntryHash(bytes([0x0F] + [0] * 31)).to_hex() == "0f" + "00" * 31
    assert repr(EntryHash.of(bytes(32))) == f"EntryHash({'00' * 32})"


@pytest.mark.parametrize("n", [0, 31, 33])
def test_entry_hash_of_refuses_wrong_length(n: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EntryHash.of(bytes(n))


def test_hash_frame_is_blake3_over_domain_then_frame() -> None:
    from blake3 import blake3

    from nes.codec import HASH_DOMAIN, encode_frame

    assert HASH_DOMAIN == b"nautilus-event-store/entry/v1"
    frame = encode_frame(SEQ, TS_INIT, TS_PUBLISH, TOPIC.encode(), PAYLOAD_TYPE.encode(), PAYLOAD, None, None)
    assert hash_frame(frame) == blake3(HASH_DOMAIN + frame).digest()
    assert hash_frame(memoryview(frame)).hex() == BASELINE_HEX


def test_non_ascii_text_is_hashed_as_utf8_bytes() -> None:
    # The length prefix counts UTF-8 bytes, not characters.
    assert h(topic="é") != h(topic="e")
    from blake3 import blake3

    from nes.codec import HASH_DOMAIN

    manual = blake3(HASH_DOMAIN)
    for n in (1, 2, 3):
        manual.update(n.to_bytes(8, "big"))
    for field in ("é".encode(), b"p", b""):
        manual.update(len(field).to_bytes(8, "big") + field)
    manual.update(b"\x00\x00")
    assert compute_entry_hash(1, 2, 3, "é", "p", b"", Headers()) == manual.digest()
