"""Capture: the engine-neutral front door between a message bus and the writer.

Contract (reference: the crate's `capture/registry.rs` and `capture/adapter.rs`):
- `EncoderRegistry` is an allow-list keyed by a message's exact runtime type (`type(msg)`, no
  subclass lookup). A registration holds the payload-type tag, an encoder
  (`msg -> EncodedPayload`), a headers extractor (default: empty headers) and an optional
  identity extractor (`msg -> hashable identity | None`). `register` replaces the encoder and
  tag and keeps the type's headers and identity extractors; `register_headers` /
  `register_identity` do nothing for an unregistered type. Any failure of an encoder or
  extractor surfaces as `CaptureEncodeError`.
- `BusCaptureAdapter.capture(topic, msg, ts_init, headers=None)` runs, in order: a halted
  adapter raises `CaptureHalted` without touching the writer; an identity already in the
  window of the last 128 identities returns None (the identity is recorded before encoding,
  so one logical message crossing several bus boundaries is one entry); an unregistered type
  returns None; an encode failure raises `CaptureEncodeError`, forgets the identity again (so
  the message's next hop is refused too, never passed on as a duplicate) and the adapter stays
  live; the draft is submitted and its seq returned, bumping the shared `SubmitCounter`. The first
  submit failure fires the halt callback exactly once and raises `CaptureSubmitError`; every
  later capture raises `CaptureHalted`.
- Nothing here knows a trading engine: `nes.integrations.nautilus` builds the registry and
  the bus tap for NautilusTrader.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from nes.backend.base import IndexKey
from nes.errors import EventStoreError, InvalidArgument
from nes.halt import BackendError, BackpressureStall, HaltCallback, HaltReason, noop_halt
from nes.headers import Headers
from nes.writer import EntryDraft, HaltSignaled, InvalidDraft, SubmitError, WriterHalted

__all__ = [
    "RECENT_IDENTITY_CAPACITY",
    "BusCaptureAdapter",
    "CaptureEncodeError",
    "CaptureError",
    "CaptureHalted",
    "CaptureSink",
    "CaptureSubmitError",
    "EncodedPayload",
    "Encoder",
    "EncoderRegistry",
    "HeadersExtractor",
    "IdentityExtractor",
    "IntegrationUnavailable",
    "PayloadDecodeError",
    "SubmitCounter",
    "TapAttachError",
    "UnknownPayloadType",
    "halt_reason_from_submit",
]

RECENT_IDENTITY_CAPACITY = 128  # one engine cycle's duplicate hops land well within it


# ---- errors ---------------------------------------------------------------------------------
class CaptureError(EventStoreError):
    """Base of what `BusCaptureAdapter.capture` raises."""


class CaptureEncodeError(CaptureError):
    """The registered encoder (or headers / identity extractor) rejected the message, or the
    encoded entry cannot be stored (bad index key, too large). Nothing was written and the
    adapter stays live."""

    def __init__(self, message_type: str, detail: str) -> None:
        super().__init__(message_type, detail)
        self.message_type = message_type
        self.detail = detail

    def __str__(self) -> str:
        return f"encode failure for {self.message_type}: {self.detail}"


class CaptureSubmitError(CaptureError):
    """The writer refused the submit. The adapter's halt callback has already fired with
    `reason`; the adapter is halted."""

    def __init__(self, reason: HaltReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"writer submit failed: {self.detail}"


class CaptureHalted(CaptureError):
    """A capture after the adapter fail-stopped: the writer was not touched."""

    def __init__(self, reason: HaltReason | None) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return "capture adapter halted" + ("" if self.reason is None else f": {self.reason}")


class TapAttachError(CaptureError):
    """A bus tap could not be attached as asked."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class PayloadDecodeError(EventStoreError):
    """A stored payload could not be decoded back into its message."""

    def __init__(self, payload_type: str, detail: str) -> None:
        super().__init__(payload_type, detail)
        self.payload_type = payload_type
        self.detail = detail

    def __str__(self) -> str:
        return f"cannot decode payload of type {self.payload_type!r}: {self.detail}"


class UnknownPayloadType(PayloadDecodeError):
    """The payload type is not one the decoder knows."""

    def __init__(self, payload_type: str) -> None:
        super().__init__(payload_type, "unknown payload type")


class IntegrationUnavailable(EventStoreError, ImportError):
    """An optional integration was imported without its extra installed."""

    def __init__(self, integration: str, extra: str) -> None:
        super().__init__(integration, extra)
        self.integration = integration
        self.extra = extra

    def __str__(self) -> str:
        return f"the {self.integration} integration needs the '{self.extra}' extra: pip install 'nes-eventstore[{self.extra}]'"


# ---- the registry ---------------------------------------------------------------------------
class EncodedPayload:
    """What an encoder returns: the MessagePack payload, the index keys, and optionally a
    payload type that overrides the registered tag (for envelope types)."""

    __slots__ = ("payload", "index_keys", "payload_type")

    def __init__(self, payload: bytes, index_keys: Sequence[IndexKey] = (), payload_type: str | None = None) -> None:
        self.payload = payload
        self.index_keys = index_keys
        self.payload_type = payload_type

    def __repr__(self) -> str:
        return (
            f"EncodedPayload(payload=<{len(self.payload)} bytes>, index_keys={self.index_keys!r}, "
            f"payload_type={self.payload_type!r})"
        )


Encoder = Callable[[Any], EncodedPayload]
HeadersExtractor = Callable[[Any], Headers]
IdentityExtractor = Callable[[Any], Hashable | None]

_EMPTY_HEADERS = Headers.empty()


def _empty_headers(message: object) -> Headers:  # noqa: ARG001 - the extractor signature
    return _EMPTY_HEADERS


class _Registration:
    __slots__ = ("payload_type", "encode", "headers", "identity")

    def __init__(
        self, payload_type: str, encode: Encoder, headers: HeadersExtractor, identity: IdentityExtractor | None
    ) -> None:
        self.payload_type = payload_type
        self.encode = encode
        self.headers = headers
        self.identity = identity


def _check_registration(message_type: object, payload_type: object, fn: object, what: str) -> None:
    if not isinstance(message_type, type):
        raise InvalidArgument(f"message_type must be a type, got {message_type!r}")
    if not isinstance(payload_type, str) or not payload_type.strip():
        raise InvalidArgument(f"payload_type must be a non-blank str, got {payload_type!r}")
    if not callable(fn):
        raise InvalidArgument(f"{what} must be callable, got {fn!r}")


class EncoderRegistry:
    """The capture allow-list: one registration per exact message type."""

    def __init__(self) -> None:
        self._by_type: dict[type, _Registration] = {}
        self._view = MappingProxyType(self._by_type)

    def register(self, message_type: type, payload_type: str, encode: Encoder) -> None:
        """Register (or replace) the encoder and tag of `message_type`; a re-registration keeps
        the type's headers and identity extractors."""
        _check_registration(message_type, payload_type, encode, "encode")
        prior = self._by_type.get(message_type)
        if prior is None:
            self._by_type[message_type] = _Registration(payload_type, encode, _empty_headers, None)
        else:
            prior.payload_type, prior.encode = payload_type, encode

    def register_with_headers(
        self, message_type: type, payload_type: str, encode: Encoder, headers: HeadersExtractor
    ) -> None:
        """Register (or replace) the encoder, tag and headers extractor of `message_type`."""
        _check_registration(message_type, payload_type, encode, "encode")
        if not callable(headers):
            raise InvalidArgument(f"headers must be callable, got {headers!r}")
        self.register(message_type, payload_type, encode)
        self._by_type[message_type].headers = headers

    def register_headers(self, message_type: type, headers: HeadersExtractor) -> bool:
        """Set the headers extractor of a registered type; False (nothing done) if unregistered."""
        if not callable(headers):
            raise InvalidArgument(f"headers must be callable, got {headers!r}")
        registration = self._by_type.get(message_type)
        if registration is None:
            return False
        registration.headers = headers
        return True

    def register_identity(self, message_type: type, identity: IdentityExtractor) -> bool:
        """Set the identity extractor of a registered type; False (nothing done) if unregistered."""
        if not callable(identity):
            raise InvalidArgument(f"identity must be callable, got {identity!r}")
        registration = self._by_type.get(message_type)
        if registration is None:
            return False
        registration.identity = identity
        return True

    def __len__(self) -> int:
        return len(self._by_type)

    def __contains__(self, message_type: object) -> bool:
        return message_type in self._by_type

    def contains(self, message_type: type) -> bool:
        """True if `message_type` (exactly) is registered."""
        return message_type in self._by_type

    @property
    def registered(self) -> Mapping[type, object]:
        """A live read-only view keyed by the registered types (`type(msg) in registry.registered`
        is the cheapest allow-list test, for bus taps)."""
        return self._view

    def types(self) -> list[type]:
        """The registered types, in registration order."""
        return list(self._by_type)

    def payload_type_of(self, message_type: type) -> str | None:
        """The registered tag of `message_type`, or None."""
        registration = self._by_type.get(message_type)
        return None if registration is None else registration.payload_type

    def encode(self, message: object) -> tuple[str, EncodedPayload] | None:
        """`(payload_type, encoded)` for a registered type, None for an unregistered one.
        Raises `CaptureEncodeError` when the encoder fails or returns something else."""
        registration = self._by_type.get(type(message))
        if registration is None:
            return None
        return _encode(registration, message)

    def headers_for(self, message: object) -> Headers | None:
        """The message's headers, or None for an unregistered type."""
        registration = self._by_type.get(type(message))
        if registration is None:
            return None
        return _headers(registration, message)

    def identity_for(self, message: object) -> Hashable | None:
        """The message's identity, or None (unregistered type or no identity extractor)."""
        registration = self._by_type.get(type(message))
        if registration is None or registration.identity is None:
            return None
        return _identity(registration.identity, message)


def _encode(registration: _Registration, message: object) -> tuple[str, EncodedPayload]:
    try:
        encoded = registration.encode(message)
    except Exception as exc:  # noqa: BLE001 - an encoder is foreign code: any failure is an encode failure
        raise CaptureEncodeError(type(message).__name__, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(encoded, EncodedPayload) or not isinstance(encoded.payload, (bytes, bytearray)):
        raise CaptureEncodeError(type(message).__name__, f"encoder returned {encoded!r}, not an EncodedPayload with bytes")
    return encoded.payload_type or registration.payload_type, encoded


def _headers(registration: _Registration, message: object) -> Headers:
    try:
        headers = registration.headers(message)
    except Exception as exc:  # noqa: BLE001
        raise CaptureEncodeError(type(message).__name__, f"headers: {type(exc).__name__}: {exc}") from exc
    if not isinstance(headers, Headers):
        raise CaptureEncodeError(type(message).__name__, f"headers extractor returned {headers!r}, not nes.Headers")
    return headers


def _identity(extract: IdentityExtractor, message: object) -> Hashable | None:
    try:
        return extract(message)
    except Exception as exc:  # noqa: BLE001
        raise CaptureEncodeError(type(message).__name__, f"identity: {type(exc).__name__}: {exc}") from exc


# ---- the adapter ----------------------------------------------------------------------------
class CaptureSink(Protocol):
    """What the adapter submits to: an `EventStoreWriter` or an `EventStoreSession`."""

    def submit(self, draft: EntryDraft) -> int:
        """Accept the entry and return its seq, or raise a `SubmitError`."""
        ...

    @property
    def high_watermark(self) -> int:
        """The durable high-watermark."""
        ...


class SubmitCounter:
    """A count of entries submitted, shared by every adapter of a trader (the marker sidecar
    reads it as `event_seq_before`). Bumped on the engine thread only."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"SubmitCounter({self.value})"


class _RecentIdentities:
    """Insertion-ordered set of the last `capacity` identities (FIFO eviction)."""

    __slots__ = ("order", "seen", "capacity")

    def __init__(self, capacity: int) -> None:
        self.order: deque[Hashable] = deque()
        self.seen: set[Hashable] = set()
        self.capacity = capacity

    def note_fresh(self, identity: Hashable) -> bool:
        """False if `identity` is in the window; else record it (evicting the oldest when full)."""
        seen = self.seen
        if identity in seen:
            return False
        order = self.order
        if len(order) == self.capacity:
            seen.discard(order.popleft())
        order.append(identity)
        seen.add(identity)
        return True


def halt_reason_from_submit(
    err: SubmitError, high_watermark: int, writer_reason: HaltReason | None = None
) -> HaltReason:
    """The halt reason a submit failure stands for: the writer's own reason when it halted,
    `BackpressureStall` for a stalled submit (the writer's, which knows the accepted
    high-watermark, when given), `BackendError("event store writer closed")` for a writer that
    was closed under the adapter."""
    if isinstance(err, WriterHalted):
        return err.reason
    if isinstance(err, HaltSignaled):
        if isinstance(writer_reason, BackpressureStall):
            return writer_reason
        return BackpressureStall(high_watermark, err.stalled_for_s, err.threshold_s, high_watermark)
    return BackendError(high_watermark, "event store writer closed")


class BusCaptureAdapter:
    """The seam between a message bus and the writer (see the module docstring for the rules)."""

    def __init__(
        self,
        writer: CaptureSink,
        registry: EncoderRegistry,
        halt: HaltCallback = noop_halt,
        submit_counter: SubmitCounter | None = None,
        identity_capacity: int = RECENT_IDENTITY_CAPACITY,
    ) -> None:
        if not isinstance(registry, EncoderRegistry):
            raise InvalidArgument(f"registry must be an EncoderRegistry, got {type(registry).__name__}")
        if identity_capacity < 1:
            raise InvalidArgument(f"identity_capacity must be >= 1, got {identity_capacity}")
        self._writer = writer
        self._registry = registry
        self._by_type = registry._by_type  # the hot path's one lookup
        self._halt = halt
        self._halt_lock = threading.Lock()
        self._halted = False
        self._halt_reason: HaltReason | None = None
        self._recent = _RecentIdentities(identity_capacity)
        self._seen, self._order, self._capacity = self._recent.seen, self._recent.order, identity_capacity
        self._submit = writer.submit
        self.submit_counter = submit_counter if submit_counter is not None else SubmitCounter()

    @property
    def is_halted(self) -> bool:
        """True once a submit failed: every later capture raises `CaptureHalted`."""
        return self._halted

    @property
    def halt_reason(self) -> HaltReason | None:
        """Why the adapter halted (None while live)."""
        return self._halt_reason

    @property
    def registry(self) -> EncoderRegistry:
        """The allow-list this adapter consults."""
        return self._registry

    @property
    def high_watermark(self) -> int:
        """The writer's durable high-watermark."""
        return self._writer.high_watermark

    def capture(self, topic: str, message: object, ts_init: int, headers: Headers | None = None) -> int | None:
        """Capture one bus message: its seq when submitted, None when not captured (duplicate
        identity or unregistered type). `headers=None` takes them from the registry."""
        if self._halted:
            raise CaptureHalted(self._halt_reason)
        registration = self._by_type.get(type(message))
        if registration is None:
            return None
        identify = registration.identity
        if identify is not None:
            try:
                identity = identify(message)
            except Exception as exc:  # noqa: BLE001 - foreign code: any failure is an encode failure
                raise CaptureEncodeError(type(message).__name__, f"identity: {type(exc).__name__}: {exc}") from exc
            if identity is not None:  # the recent-identity window, inlined (hot path)
                seen = self._seen
                if identity in seen:
                    return None
                order = self._order
                if len(order) == self._capacity:
                    seen.discard(order.popleft())
                order.append(identity)
                seen.add(identity)
        try:
            encoded = registration.encode(message)
            payload_type = encoded.payload_type or registration.payload_type
            if headers is None:
                headers = registration.headers(message)
        except Exception as exc:  # noqa: BLE001
            self._forget(identify, message)
            raise CaptureEncodeError(type(message).__name__, f"{type(exc).__name__}: {exc}") from exc
        try:
            # EntryDraft checks the payload is bytes and the headers are Headers
            draft = EntryDraft(topic, payload_type, encoded.payload, ts_init, headers, encoded.index_keys)
            seq = self._submit(draft)
        except InvalidDraft as exc:  # the message's own content cannot be stored: not a writer failure
            self._forget(identify, message)
            raise CaptureEncodeError(type(message).__name__, str(exc)) from exc
        except SubmitError as exc:
            writer_reason = getattr(self._writer, "halt_reason", None)
            reason = halt_reason_from_submit(exc, self._safe_high_watermark(), writer_reason)
            self.fail_stop(reason)
            raise CaptureSubmitError(reason, str(exc)) from exc
        self.submit_counter.value += 1
        return seq

    def _forget(self, identify: IdentityExtractor | None, message: object) -> None:
        """Drop the identity a failed capture just recorded: the message was not stored, so its
        next hop must be refused again, never let through as a duplicate."""
        if identify is None:
            return
        identity = identify(message)
        order = self._order
        if identity is not None and order and order[-1] == identity:
            order.pop()
            self._seen.discard(identity)

    def fail_stop(self, reason: HaltReason) -> bool:
        """Halt the adapter; the halt callback fires on the first call only (returns True then).
        Used by `capture` on a submit failure and by integrations that learn of a writer halt
        from the writer's own hook."""
        with self._halt_lock:
            if self._halted:
                return False
            self._halted = True
            self._halt_reason = reason
        self._halt(reason)
        return True

    def _safe_high_watermark(self) -> int:
        try:
            return int(self._writer.high_watermark)
        except Exception:  # noqa: BLE001 - a released writer: the reason still needs a number
            return 0

    def __repr__(self) -> str:
        return f"BusCaptureAdapter(registered_encoders={len(self._registry)}, halted={self._halted})"
