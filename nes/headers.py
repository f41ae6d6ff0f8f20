"""Correlation headers carried by every entry.

Contract: `correlation_id` is the workflow (level 1), `causation_id` the direct parent message
(level 2); both are version-4 RFC 4122 UUIDs or None. The field order (correlation, then
causation) is part of the canonical hash. A header that is not a v4 UUID is refused at
construction, so nothing that cannot be hashed byte-compatibly ever reaches the ring.
"""

from __future__ import annotations

import uuid

import msgspec

from nes.errors import InvalidArgument

__all__ = ["Headers", "is_uuid4_int", "uuid4_from_bytes"]


def is_uuid4_int(number: int) -> bool:
    """True when a UUID's 128-bit value is an RFC 4122 (variant bits 10) version-4 UUID."""
    return (number >> 62) & 0x3 == 0x2 and (number >> 76) & 0xF == 4


def _check_uuid4(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, uuid.UUID):
        raise InvalidArgument(f"Headers.{name} must be a uuid.UUID or None, got {type(value).__name__}")
    if not is_uuid4_int(value.int):  # the bits `variant` / `version` read, without their calls
        raise InvalidArgument(f"Headers.{name} must be a version-4 RFC 4122 UUID, got {value}")


class Headers(msgspec.Struct, frozen=True, gc=False):
    """First-class correlation headers (level 1 and 2 identity). Not tracked by the cyclic GC:
    frozen and holding only UUIDs, it can never be part of a reference cycle."""

    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        _check_uuid4("correlation_id", self.correlation_id)
        _check_uuid4("causation_id", self.causation_id)

    @classmethod
    def empty(cls) -> Headers:
        """Headers with neither correlation_id nor causation_id."""
        return _EMPTY

    def is_empty(self) -> bool:
        """True when neither id is set."""
        return self.correlation_id is None and self.causation_id is None


_EMPTY = Headers()


def uuid4_from_bytes(raw: bytes) -> uuid.UUID:
    """A v4 UUID from 16 bytes, forcing the version and variant bits (the crate's UUID4::from_bytes)."""
    if len(raw) != 16:
        raise InvalidArgument(f"a UUID is 16 bytes, got {len(raw)}")
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(b))
