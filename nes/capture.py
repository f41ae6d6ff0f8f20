"""Capture: turn bus messages into entry drafts (payload type, MessagePack payload, indices).

Contract: an encoder is registered per message type; `BusCaptureAdapter.capture(topic, msg,
ts_init, headers)` submits exactly one entry for a registered type and returns its seq, or
returns None for an unregistered type (nothing is written). Payloads are msgspec MessagePack
with named fields; the index keys an encoder emits (client / venue order ids) are the only
index rows the store records. An encoder error is raised to the caller and does not halt the
writer; a submit failure halts the adapter (every later capture raises).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from nes.backend.base import IndexKey, IndexKind
from nes.errors import EventStoreError
from nes.headers import Headers
from nes.writer import EntryDraft, EventStoreWriter, SubmitError

__all__ = [
    "SubmitOrder",
    "OrderAccepted",
    "OrderFilled",
    "AccountState",
    "PAYLOAD_TYPE_SUBMIT_ORDER",
    "PAYLOAD_TYPE_ORDER_ACCEPTED",
    "PAYLOAD_TYPE_ORDER_FILLED",
    "PAYLOAD_TYPE_ACCOUNT_STATE",
    "EncodedPayload",
    "EncoderRegistry",
    "EncodeError",
    "default_registry",
    "decode_payload",
    "BusCaptureAdapter",
]

PAYLOAD_TYPE_SUBMIT_ORDER = "SubmitOrder"
PAYLOAD_TYPE_ORDER_ACCEPTED = "OrderAccepted"
PAYLOAD_TYPE_ORDER_FILLED = "OrderFilled"
PAYLOAD_TYPE_ACCOUNT_STATE = "AccountState"


class SubmitOrder(msgspec.Struct, frozen=True):
    client_order_id: str
    instrument_id: str
    side: str  # "BUY" | "SELL"
    quantity: int
    price: float
    command_id: str


class OrderAccepted(msgspec.Struct, frozen=True):
    client_order_id: str
    venue_order_id: str
    event_id: str


class OrderFilled(msgspec.Struct, frozen=True):
    client_order_id: str
    venue_order_id: str
    instrument_id: str
    side: str
    last_qty: int
    last_px: float
    event_id: str


class AccountState(msgspec.Struct, frozen=True):
    account_id: str
    balance: float
    event_id: str


class EncodedPayload(msgspec.Struct, frozen=True):
    payload_type: str
    payload: bytes
    index_keys: tuple[IndexKey, ...] = ()


class EncodeError(EventStoreError, ValueError):
    """No encoder is registered for a captured message, or its encoder failed."""


Encoder = Callable[[Any], EncodedPayload]
_encoder = msgspec.msgpack.Encoder()


def _client(msg: Any) -> IndexKey:
    return IndexKey(IndexKind.ClientOrderId, msg.client_order_id)


def _venue(msg: Any) -> IndexKey:
    return IndexKey(IndexKind.VenueOrderId, msg.venue_order_id)


class EncoderRegistry:
    """Message type -> encoder (payload type, payload bytes, index keys) used by BusCaptureAdapter."""

    def __init__(self) -> None:
        self._encoders: dict[type, Encoder] = {}

    def register(self, message_type: type, encoder: Encoder) -> None:
        """Register the encoder for a message type (replaces an earlier one)."""
        self._encoders[message_type] = encoder

    def encode(self, message: object) -> EncodedPayload | None:
        """Encode a message with its type's encoder; None when none is registered, EncodeError
        when the encoder fails."""
        encoder = self._encoders.get(type(message))
        if encoder is None:
            return None
        try:
            return encoder(message)
        except (msgspec.EncodeError, TypeError, ValueError, AttributeError) as exc:
            raise EncodeError(f"encode {type(message).__name__}: {exc}") from exc

    def __len__(self) -> int:
        return len(self._encoders)


def _typed(payload_type: str, keys: Callable[[Any], tuple[IndexKey, ...]]) -> Encoder:
    return lambda msg: EncodedPayload(payload_type, _encoder.encode(msg), keys(msg))


def default_registry() -> EncoderRegistry:
    """A registry with the builtin encoders: SubmitOrder, OrderAccepted, OrderFilled, AccountState."""
    registry = EncoderRegistry()
    registry.register(SubmitOrder, _typed(PAYLOAD_TYPE_SUBMIT_ORDER, lambda m: (_client(m),)))
    registry.register(OrderAccepted, _typed(PAYLOAD_TYPE_ORDER_ACCEPTED, lambda m: (_client(m), _venue(m))))
    registry.register(OrderFilled, _typed(PAYLOAD_TYPE_ORDER_FILLED, lambda m: (_client(m), _venue(m))))
    registry.register(AccountState, _typed(PAYLOAD_TYPE_ACCOUNT_STATE, lambda m: ()))
    return registry


_DECODERS: dict[str, msgspec.msgpack.Decoder[Any]] = {
    PAYLOAD_TYPE_SUBMIT_ORDER: msgspec.msgpack.Decoder(SubmitOrder),
    PAYLOAD_TYPE_ORDER_ACCEPTED: msgspec.msgpack.Decoder(OrderAccepted),
    PAYLOAD_TYPE_ORDER_FILLED: msgspec.msgpack.Decoder(OrderFilled),
    PAYLOAD_TYPE_ACCOUNT_STATE: msgspec.msgpack.Decoder(AccountState),
}


def decode_payload(payload_type: str, payload: bytes) -> object | None:
    """The message of a builtin payload type, or None for a type this module does not own."""
    decoder = _DECODERS.get(payload_type)
    return None if decoder is None else decoder.decode(payload)


class BusCaptureAdapter:
    """The seam between a message bus and the writer."""

    def __init__(self, writer: EventStoreWriter, registry: EncoderRegistry | None = None) -> None:
        self._writer = writer
        self._registry = registry if registry is not None else default_registry()
        self._failed: SubmitError | None = None
        self.submitted = 0

    def capture(self, topic: str, message: object, ts_init: int, headers: Headers | None = None) -> int | None:
        """Encode a bus message with its registered encoder and submit it; returns the seq, or
        None for a message type with no encoder (not captured). After a failed submit every
        later capture raises that error again."""
        if self._failed is not None:
            raise self._failed
        encoded = self._registry.encode(message)
        if encoded is None:
            return None
        draft = EntryDraft(topic, encoded.payload_type, encoded.payload, ts_init, headers, encoded.index_keys)
        try:
            seq = self._writer.submit(draft)
        except SubmitError as exc:
            self._failed = exc
            raise
        self.submitted += 1
        return seq
