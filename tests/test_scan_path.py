"""The reader's fast scan path (shape-cached one-call unpack over values-only reads) keeps every
check of the careful path: real LMDB run files, rows mixed and damaged on purpose."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from nes.backend.base import ScanDirection
from nes.backend.lmdb import LmdbBackend
from nes.codec import HASH_LEN, seq_key
from nes.entry import EventStoreEntry, decode_contiguous_values, decode_stored_rows, decode_stored_value, encode_stored_value
from nes.errors import Corrupted, Gap, HashMismatch
from nes.hash import EntryHash, hash_frame
from nes.headers import Headers
from nes.reader import EventStoreReader
from runfile_helpers import build_entry, make_run_file, rewrite_entries, seal_as_is

HEADERS = Headers(uuid.uuid4(), uuid.uuid4())


def _mixed_entries(count: int) -> list[EventStoreEntry]:
    """Rows of several shapes: payload sizes, topics, payload types, with and without headers."""
    out = []
    for seq in range(1, count + 1):
        headers = HEADERS if seq % 7 == 0 else Headers.empty()
        topic = ("exec.event.OrderFilled", "data.quotes.X", "t")[seq % 3]
        ptype = ("OrderFilled", "QuoteTick")[seq % 2]
        out.append(EventStoreEntry.build(seq, 1000 + seq, 2000 + seq, topic, ptype, bytes([seq % 256]) * (seq % 50), headers))
    return out


def _write(path: Path, entries: list[EventStoreEntry]) -> Path:
    make_run_file(path, entries=0)

    def edit(txn, db) -> None:  # noqa: ANN001
        for entry in entries:
            txn.put(seq_key(entry.seq), encode_stored_value(entry), db=db)

    rewrite_entries(path, edit)
    return path


def _scan(path: Path, lo: int = 1, hi: int = 10**6, chunk_size: int = 16) -> list[EventStoreEntry]:
    seal_as_is(path)  # hand-built rows, damage included, as sealed: the scan's own checks are under test
    backend = LmdbBackend.open_sealed_file(path)
    try:
        return list(EventStoreReader(backend).scan_range(lo, hi, chunk_size=chunk_size))
    finally:
        backend.close()


def test_scan_of_mixed_shapes_and_headers_returns_every_entry_exactly(tmp_path: Path) -> None:
    entries = _mixed_entries(300)
    path = _write(tmp_path / "r.lmdb", entries)
    seal_as_is(path)
    backend = LmdbBackend.open_sealed_file(path)
    try:
        reader = EventStoreReader(backend)
        assert list(reader.scan_range(1, 300, chunk_size=16)) == entries
        assert list(reader.scan_range(1, 300, ScanDirection.Reverse, chunk_size=64)) == entries[::-1]
        assert list(reader.scan_range(17, 33)) == entries[16:33]
    finally:
        backend.close()


def test_fast_path_and_careful_path_agree_on_the_same_rows() -> None:
    entries = _mixed_entries(120)
    values = [encode_stored_value(e) for e in entries]
    rows = [(seq_key(e.seq), v) for e, v in zip(entries, values)]
    assert decode_contiguous_values(values, 1) == entries
    assert decode_stored_rows(rows, 1, 120) == entries


def test_fast_path_reports_a_tampered_payload_as_hash_mismatch(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "r.lmdb", entries=50)
    value = bytearray(encode_stored_value(build_entry(30)))
    value[-5] ^= 0x01  # inside the payload; the shape stays the same

    rewrite_entries(path, lambda txn, db: txn.put(seq_key(30), bytes(value), db=db))
    with pytest.raises(HashMismatch) as info:
        _scan(path)
    assert info.value.seq == 30


def test_fast_path_refuses_a_clean_row_copied_under_another_key(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "r.lmdb", entries=50)
    rewrite_entries(path, lambda txn, db: txn.put(seq_key(31), encode_stored_value(build_entry(30)), db=db))
    with pytest.raises(Corrupted, match="embedded seq 30"):
        _scan(path)


def test_fast_path_reports_a_missing_row_as_gap(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "r.lmdb", entries=50)
    rewrite_entries(path, lambda txn, db: txn.delete(seq_key(20), db=db))
    with pytest.raises(Gap) as info:
        _scan(path)
    assert info.value.missing == 20


def _rehashed(frame: bytes) -> bytes:
    return hash_frame(frame) + frame


def test_fast_path_refuses_a_bad_header_tag_even_with_a_matching_hash() -> None:
    entries = [build_entry(seq) for seq in range(1, 6)]
    values = [encode_stored_value(e) for e in entries]
    frame = bytearray(values[2][HASH_LEN:])
    frame[-2] = 0x02  # correlation tag must be 0 or 1
    values[2] = _rehashed(bytes(frame))
    with pytest.raises(Corrupted, match="invalid option tag"):
        decode_contiguous_values(values, 1)


def test_fast_path_refuses_invalid_utf8_topic_even_with_a_matching_hash() -> None:
    entry = EventStoreEntry.build(1, 1, 1, "abc", "T", b"x", Headers.empty())
    frame = bytearray(encode_stored_value(entry)[HASH_LEN:])
    at = bytes(frame).index(b"abc")
    frame[at] = 0xFF
    with pytest.raises(Corrupted, match="UTF-8"):
        decode_contiguous_values([_rehashed(bytes(frame))], 1)


def test_fast_path_refuses_lengths_that_overrun_the_value() -> None:
    entry = EventStoreEntry.build(1, 1, 1, "abc", "T", b"payload", Headers.empty())
    frame = bytearray(encode_stored_value(entry)[HASH_LEN:])
    frame[24:32] = (10**9).to_bytes(8, "big")  # topic length far past the end
    with pytest.raises(Corrupted, match="overruns"):
        decode_contiguous_values([_rehashed(bytes(frame))], 1)


def test_many_distinct_shapes_keep_decoding_after_the_shape_cache_starts_over() -> None:
    entries = [
        EventStoreEntry.build(seq, seq, seq, f"topic.{seq}", f"Type{seq}", b"p" * seq, Headers.empty())
        for seq in range(1, 1500)
    ]
    assert decode_contiguous_values([encode_stored_value(e) for e in entries], 1) == entries


def test_fast_path_refuses_a_header_that_is_not_a_version_4_uuid() -> None:
    entry = EventStoreEntry.build(1, 1, 1, "abc", "T", b"x", HEADERS)
    frame = bytearray(encode_stored_value(entry)[HASH_LEN:])
    at = len(frame) - 34 + 1 + 6  # correlation id bytes start after its tag; byte 6 holds the version
    frame[at] = (frame[at] & 0x0F) | 0x10  # version 1
    with pytest.raises(Corrupted, match="version-4"):
        decode_contiguous_values([_rehashed(bytes(frame))], 1)


def test_fast_path_refuses_trailing_bytes_after_the_headers() -> None:
    entry = EventStoreEntry.build(1, 1, 1, "abc", "T", b"x", HEADERS)
    frame = encode_stored_value(entry)[HASH_LEN:] + b"\x00"
    with pytest.raises(Corrupted, match="trailing bytes"):
        decode_contiguous_values([_rehashed(frame)], 1)


def test_headers_decoded_on_the_fast_path_equal_constructed_ones() -> None:
    entries = [EventStoreEntry.build(seq, seq, seq, "t", "T", b"p", HEADERS if seq % 2 else Headers(None, HEADERS.causation_id)) for seq in range(1, 50)]
    decoded = decode_contiguous_values([encode_stored_value(e) for e in entries], 1)
    assert decoded == entries
    assert all(d.headers == e.headers and hash(d.headers) == hash(e.headers) for d, e in zip(decoded, entries))
    assert str(decoded[0].headers.correlation_id) == str(HEADERS.correlation_id)


def test_fast_path_refuses_a_topic_length_past_any_offset() -> None:
    entry = EventStoreEntry.build(1, 1, 1, "abc", "T", b"payload", Headers.empty())
    decode_contiguous_values([encode_stored_value(entry)], 1)  # the shape is cached now
    frame = bytearray(encode_stored_value(entry)[HASH_LEN:])
    frame[24:32] = (1 << 63).to_bytes(8, "big")  # len(topic) beyond what an offset can hold
    with pytest.raises(Corrupted, match="overruns"):
        decode_contiguous_values([_rehashed(bytes(frame))], 1)


def _one_shape(count: int, first: int = 1, payload_size: int = 40) -> list[EventStoreEntry]:
    """Header-less rows of one exact shape (names and payload length): the exact-shape path."""
    return [
        EventStoreEntry.build(seq, seq, seq + 1, "data.quotes.X", "QuoteTick", bytes([seq % 256]) * payload_size, Headers.empty())
        for seq in range(first, first + count)
    ]


def _careful(values: list[bytes], first_seq: int) -> list[EventStoreEntry]:
    """The per-row decode of the careful path, row by row (no shape cache)."""
    return [decode_stored_value(value, first_seq + pos) for pos, value in enumerate(values)]


def test_exact_shape_path_and_careful_path_agree_on_interleaved_shapes() -> None:
    same = _one_shape(40)
    entries = list(same)
    # Same names, another payload length; other names, same total length; headers; then back.
    entries[10] = EventStoreEntry.build(11, 11, 12, "data.quotes.X", "QuoteTick", b"\x07" * 41, Headers.empty())
    entries[11] = EventStoreEntry.build(12, 12, 13, "data.quotes.Y", "QuoteTick", b"\x07" * 40, Headers.empty())
    entries[12] = EventStoreEntry.build(13, 13, 14, "data.quotes.X", "QuoteTick", b"\x07" * 40, HEADERS)
    values = [encode_stored_value(e) for e in entries]
    assert len(values[11]) == len(values[0])
    decoded = decode_contiguous_values(values, 1)
    assert decoded == entries == _careful(values, 1)
    assert all(type(d.entry_hash) is EntryHash for d in decoded)
    rows = [(seq_key(e.seq), v) for e, v in zip(entries, values)]
    assert decode_stored_rows(rows, 1, 40) == entries
    assert decode_contiguous_values(values[20:], 21) == entries[20:]  # the shape is cached now


@pytest.mark.parametrize("at", [HASH_LEN - 1, HASH_LEN + 3, HASH_LEN + 60, -3, -1])
def test_exact_shape_path_and_careful_path_raise_the_same_error_on_a_tampered_row(at: int) -> None:
    entries = _one_shape(30)
    values = [encode_stored_value(e) for e in entries]
    decode_contiguous_values(values, 1)  # the shape is cached now
    tampered = bytearray(values[20])
    tampered[at] ^= 0x01
    values[20] = bytes(tampered)
    with pytest.raises((HashMismatch, Corrupted)) as fast:
        decode_contiguous_values(values, 1)
    with pytest.raises((HashMismatch, Corrupted)) as careful:
        _careful(values, 1)
    assert type(fast.value) is type(careful.value)
    assert str(fast.value) == str(careful.value)


def test_exact_shape_path_refuses_header_tags_with_a_matching_hash() -> None:
    entries = _one_shape(10)
    values = [encode_stored_value(e) for e in entries]
    frame = bytearray(values[6][HASH_LEN:])
    frame[-1] = 0x02  # causation tag must be 0 or 1; the length and names still match the shape
    values[6] = _rehashed(bytes(frame))
    with pytest.raises(Corrupted, match="invalid option tag"):
        decode_contiguous_values(values, 1)


def test_exact_shape_path_refuses_a_clean_row_copied_under_another_key() -> None:
    entries = _one_shape(10)
    values = [encode_stored_value(e) for e in entries]
    values[7] = values[6]
    with pytest.raises(Corrupted, match="embedded seq 7"):
        decode_contiguous_values(values, 1)
