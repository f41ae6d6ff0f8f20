"""Canonical entry hashing (byte-compatible with the reference crate).

Contract: `entry_hash = BLAKE3(HASH_DOMAIN || canonical frame)` where the frame (nes.codec) is
seq, ts_init, ts_publish as u64 BE, then topic, payload_type, payload each as u64 BE length +
bytes, then correlation_id and causation_id as 0x00 or 0x01 + 16 raw UUID bytes. The same
inputs give the same hash as `nautilus_event_store::compute_entry_hash`; the known vectors are
pinned in tests/test_hash.py.
"""

from __future__ import annotations

from blake3 import blake3

from nes.codec import HASH_DOMAIN, HASH_LEN, encode_frame
from nes.errors import InvalidArgument
from nes.headers import Headers

__all__ = ["EntryHash", "compute_entry_hash", "hash_frame", "frame_hasher"]


class EntryHash(bytes):
    """The 32-byte BLAKE3 hash of an entry. `hex()` is 64 lowercase characters."""

    __slots__ = ()  # no per-instance __dict__: built once per entry on every scan

    # No __new__ override: construction stays a C-level bytes copy on the scan path. Use
    # `EntryHash.of(raw)` where the length is not already guaranteed by a slice.

    @classmethod
    def of(cls, raw: bytes) -> EntryHash:
        """The EntryHash of 32 raw bytes."""
        if len(raw) != HASH_LEN:
            raise InvalidArgument(f"an entry hash is {HASH_LEN} bytes, got {len(raw)}")
        return cls(raw)

    @property
    def bytes(self) -> bytes:
        """The 32 raw hash bytes."""
        return bytes(self)

    def to_hex(self) -> str:
        """The hash as 64 lowercase hex characters."""
        return self.hex()

    def __repr__(self) -> str:
        return f"EntryHash({self.hex()})"


DOMAIN_HASH_STATE = blake3(HASH_DOMAIN)  # copied per single hash; loops reset a `frame_hasher`


def frame_hasher() -> blake3:
    """An empty hasher for a loop that checks many frames, owned by that loop (one thread):
    per frame, `reset()`, `update(HASH_DOMAIN)`, `update(frame)`, then `digest()` is
    `hash_frame(frame)`. Resetting one hasher is cheaper than copying `DOMAIN_HASH_STATE` per
    frame (each copy allocates a new hasher object)."""
    return blake3()


def hash_frame(frame: bytes | memoryview) -> bytes:
    """BLAKE3 over the domain string then the canonical frame: 32 raw bytes."""
    hasher = DOMAIN_HASH_STATE.copy()
    hasher.update(frame)
    return hasher.digest()


def compute_entry_hash(
    seq: int,
    ts_init: int,
    ts_publish: int,
    topic: str,
    payload_type: str,
    payload: bytes,
    headers: Headers,
) -> EntryHash:
    """The BLAKE3 entry hash of these fields (byte-compatible with the Rust crate's)."""
    frame = encode_frame(
        seq,
        ts_init,
        ts_publish,
        topic.encode("utf-8"),
        payload_type.encode("utf-8"),
        payload,
        headers.correlation_id,
        headers.causation_id,
    )
    return EntryHash(hash_frame(frame))
