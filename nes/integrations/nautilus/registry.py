"""The default capture registry for NautilusTrader's message types, and the payload decoder.

Payload contract (other parts of nes rely on it): for every registered type `T`,
`payload_type == T.__name__` and `payload` is MessagePack (msgspec) of a map with named fields:
- types with `to_dict`/`from_dict` (trading commands, order / position events, AccountState,
  execution reports): the map is `T.to_dict(msg)`, and `T.from_dict(decoded)` gives back an
  equal object; `decode_payload` returns that object;
- `TimeEvent`: `{name, event_id, ts_event, ts_init}`; `decode_payload` returns a `TimeEvent`;
- data commands, requests and responses (no `to_dict` in NautilusTrader, and a response carries
  market data that the store does not keep): their metadata, the fields of
  `DataMessageMetadata`; `decode_payload` returns a `DataMessageMetadata`.

Index keys (spec §4) are listed per type by `index_rule(T)`; identities are the message's `id`
(command id, event id, report id, request / response id). Headers come from a `HeaderDeriver`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any

import msgspec
from nautilus_trader.common.component import TimeEvent
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.data import messages as data_messages
from nautilus_trader.model import enums as nautilus_enums
from nautilus_trader.execution.messages import (
    BatchCancelOrders,
    CancelAllOrders,
    CancelOrder,
    ModifyOrder,
    QueryAccount,
    QueryOrder,
    SubmitOrder,
    SubmitOrderList,
)
from nautilus_trader.execution.reports import (
    ExecutionMassStatus,
    FillReport,
    OrderStatusReport,
    PositionStatusReport,
)
from nautilus_trader.model.events import (
    AccountState,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderDenied,
    OrderEmulated,
    OrderExpired,
    OrderFilled,
    OrderInitialized,
    OrderModifyRejected,
    OrderPendingCancel,
    OrderPendingUpdate,
    OrderRejected,
    OrderReleased,
    OrderSubmitted,
    OrderTriggered,
    OrderUpdated,
    PositionChanged,
    PositionClosed,
    PositionOpened,
)

from nes.backend.base import IndexKey, IndexKind
from nes.capture import EncodedPayload, EncoderRegistry, PayloadDecodeError, UnknownPayloadType
from nes.integrations.nautilus.headers import HeaderDeriver

__all__ = [
    "CAPTURED_TYPES",
    "COMMAND_TYPES",
    "DATA_MESSAGE_TYPES",
    "ORDER_EVENT_TYPES",
    "POSITION_EVENT_TYPES",
    "REPORT_TYPES",
    "DataMessageMetadata",
    "decode_payload",
    "default_registry",
    "index_rule",
]

COMMAND_TYPES: tuple[type, ...] = (
    SubmitOrder,
    SubmitOrderList,
    ModifyOrder,
    CancelOrder,
    CancelAllOrders,
    BatchCancelOrders,
    QueryOrder,
    QueryAccount,
)
ORDER_EVENT_TYPES: tuple[type, ...] = (
    OrderInitialized,
    OrderDenied,
    OrderEmulated,
    OrderReleased,
    OrderSubmitted,
    OrderAccepted,
    OrderRejected,
    OrderCanceled,
    OrderExpired,
    OrderTriggered,
    OrderPendingUpdate,
    OrderPendingCancel,
    OrderModifyRejected,
    OrderCancelRejected,
    OrderUpdated,
    OrderFilled,
)
POSITION_EVENT_TYPES: tuple[type, ...] = (PositionOpened, PositionChanged, PositionClosed)
REPORT_TYPES: tuple[type, ...] = (OrderStatusReport, FillReport, PositionStatusReport, ExecutionMassStatus)


def _data_message_types() -> tuple[type, ...]:
    bases = (data_messages.DataCommand, data_messages.RequestData, data_messages.DataResponse)
    found = []
    for name in sorted(dir(data_messages)):
        obj = getattr(data_messages, name)
        if isinstance(obj, type) and issubclass(obj, bases) and obj.__module__ == data_messages.__name__:
            if obj not in (data_messages.DataCommand, data_messages.SubscribeData, data_messages.UnsubscribeData):
                found.append(obj)
    return tuple(found)


# Subscribe* / Unsubscribe* / Request* / DataResponse (SubscribeData, UnsubscribeData and
# RequestData are concrete too: custom data goes through them).
DATA_MESSAGE_TYPES: tuple[type, ...] = _data_message_types() + (
    data_messages.SubscribeData,
    data_messages.UnsubscribeData,
)

CAPTURED_TYPES: tuple[type, ...] = (
    COMMAND_TYPES + ORDER_EVENT_TYPES + POSITION_EVENT_TYPES + (AccountState,) + REPORT_TYPES + (TimeEvent,) + DATA_MESSAGE_TYPES
)

_msgpack = msgspec.msgpack.Encoder()
_decode_map = msgspec.msgpack.Decoder(dict[str, Any])
_CLIENT = IndexKind.ClientOrderId
_VENUE = IndexKind.VenueOrderId


# ---- index keys -------------------------------------------------------------------------------
def _order_keys(client_order_id: object, venue_order_id: object) -> list[IndexKey]:
    keys = []
    if client_order_id is not None:
        keys.append(IndexKey(_CLIENT, client_order_id.value))  # type: ignore[attr-defined]
    if venue_order_id is not None:
        keys.append(IndexKey(_VENUE, venue_order_id.value))  # type: ignore[attr-defined]
    return keys


def _keys_submit(msg: Any) -> list[IndexKey]:
    return [IndexKey(_CLIENT, msg.order.client_order_id.value)]


def _keys_client_venue(msg: Any) -> tuple[IndexKey, ...]:
    venue_order_id = msg.venue_order_id  # the hot path (every order event): no helper calls
    if venue_order_id is None:
        return (IndexKey(_CLIENT, msg.client_order_id.value),)
    return (IndexKey(_CLIENT, msg.client_order_id.value), IndexKey(_VENUE, venue_order_id.value))


def _keys_none(msg: Any) -> list[IndexKey]:  # noqa: ARG001
    return []


def _keys_order_list(msg: Any) -> list[IndexKey]:
    return [IndexKey(_CLIENT, order.client_order_id.value) for order in msg.order_list.orders]


def _keys_batch_cancel(msg: Any) -> list[IndexKey]:
    return _dedup(key for cancel in msg.cancels for key in _keys_client_venue(cancel))


def _keys_report(msg: Any) -> list[IndexKey]:
    return _order_keys(None, msg.venue_order_id) + _order_keys(msg.client_order_id, None)


def _keys_mass_status(msg: Any) -> list[IndexKey]:
    reports: list[Any] = list(msg.order_reports.values())
    for fills in msg.fill_reports.values():
        reports.extend(fills)
    return _dedup(key for report in reports for key in _keys_report(report))


def _keys_position_opening(msg: Any) -> list[IndexKey]:
    return [IndexKey(_CLIENT, msg.opening_order_id.value)]


def _keys_position_closed(msg: Any) -> list[IndexKey]:
    return _dedup([IndexKey(_CLIENT, msg.opening_order_id.value)] + _order_keys(msg.closing_order_id, None))


def _dedup(keys: Iterable[IndexKey]) -> list[IndexKey]:
    seen: set[tuple[IndexKind, str]] = set()
    out = []
    for key in keys:
        ident = (key.kind, key.key)
        if ident not in seen:
            seen.add(ident)
            out.append(key)
    return out


_INDEX_RULES: dict[type, tuple[Callable[[Any], Sequence[IndexKey]], str]] = {
    SubmitOrder: (_keys_submit, "ClientOrderId"),
    SubmitOrderList: (_keys_order_list, "ClientOrderId of every order in the list"),
    ModifyOrder: (_keys_client_venue, "ClientOrderId, VenueOrderId when present"),
    CancelOrder: (_keys_client_venue, "ClientOrderId, VenueOrderId when present"),
    QueryOrder: (_keys_client_venue, "ClientOrderId, VenueOrderId when present"),
    BatchCancelOrders: (_keys_batch_cancel, "per child cancel: ClientOrderId, VenueOrderId when present"),
    CancelAllOrders: (_keys_none, "none"),
    QueryAccount: (_keys_none, "none"),
    OrderStatusReport: (_keys_report, "VenueOrderId, ClientOrderId when present"),
    FillReport: (_keys_report, "VenueOrderId, ClientOrderId when present"),
    PositionStatusReport: (_keys_none, "none"),
    ExecutionMassStatus: (_keys_mass_status, "every order / fill report's ids, deduplicated"),
    PositionOpened: (_keys_position_opening, "ClientOrderId of the opening order"),
    PositionChanged: (_keys_position_opening, "ClientOrderId of the opening order"),
    PositionClosed: (_keys_position_closed, "ClientOrderId of the opening and of the closing order"),
    AccountState: (_keys_none, "none"),
    TimeEvent: (_keys_none, "none"),
}
for _event_type in ORDER_EVENT_TYPES:
    _INDEX_RULES[_event_type] = (_keys_client_venue, "ClientOrderId, VenueOrderId when present")
for _data_type in DATA_MESSAGE_TYPES:
    _INDEX_RULES[_data_type] = (_keys_none, "none")


def index_rule(message_type: type) -> str:
    """The index keys the default registry records for `message_type`, in words."""
    rule = _INDEX_RULES.get(message_type)
    if rule is None:
        raise KeyError(f"{message_type.__name__} is not captured by the default registry")
    return rule[1]


# ---- payloads ---------------------------------------------------------------------------------
class DataMessageMetadata(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The stored form of a data command, request or response: what was asked of which client,
    not the market data itself. `subject` is the bar type or instrument id when the message has
    one; `correlation_id` is a response's request id; `data_count` a response's item count."""

    message_type: str
    id: str
    ts_init: int
    client_id: str | None = None
    venue: str | None = None
    data_type: str | None = None
    subject: str | None = None
    correlation_id: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    limit: int | None = None
    data_count: int | None = None


_metadata_decoder = msgspec.msgpack.Decoder(DataMessageMetadata)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_ns(value: Any) -> int | None:
    return None if value is None else int(value.value)  # pandas.Timestamp / datetime with .value


def _data_metadata(msg: Any) -> DataMessageMetadata:
    subject = getattr(msg, "bar_type", None) or getattr(msg, "instrument_id", None)
    data = getattr(msg, "data", None)
    count = None
    if isinstance(msg, data_messages.DataResponse):
        count = len(data) if isinstance(data, (list, tuple)) else (0 if data is None else 1)
    limit = getattr(msg, "limit", None)
    return DataMessageMetadata(
        message_type=type(msg).__name__,
        id=msg.id.value,
        ts_init=msg.ts_init,
        client_id=_opt_str(getattr(msg, "client_id", None)),
        venue=_opt_str(getattr(msg, "venue", None)),
        data_type=_opt_str(getattr(msg, "data_type", None)),
        subject=_opt_str(subject),
        correlation_id=_opt_str(getattr(msg, "correlation_id", None)),
        start_ns=_opt_ns(getattr(msg, "start", None)),
        end_ns=_opt_ns(getattr(msg, "end", None)),
        limit=None if limit is None else int(limit),
        data_count=count,
    )


def _dict_encoder(message_type: Any) -> Callable[[Any], EncodedPayload]:
    to_dict = message_type.to_dict
    keys = _INDEX_RULES[message_type][0]
    encode = _msgpack.encode

    def encoder(msg: Any) -> EncodedPayload:
        return EncodedPayload(encode(to_dict(msg)), keys(msg))

    return encoder


def _time_event_encoder(msg: Any) -> EncodedPayload:
    body = {"name": msg.name, "event_id": msg.id.value, "ts_event": msg.ts_event, "ts_init": msg.ts_init}
    return EncodedPayload(_msgpack.encode(body))


def _data_encoder(msg: Any) -> EncodedPayload:
    return EncodedPayload(_msgpack.encode(_data_metadata(msg)))


_message_id = attrgetter("id")  # the identity: command / event / report / request id


def default_registry(deriver: HeaderDeriver | None = None) -> EncoderRegistry:
    """A registry of every type in `CAPTURED_TYPES`, headers from `deriver` (a fresh
    `HeaderDeriver` by default: it keeps per-order state, so use one registry per trader)."""
    deriver = deriver if deriver is not None else HeaderDeriver()
    registry = EncoderRegistry()
    for message_type in CAPTURED_TYPES:
        encoder: Callable[[Any], EncodedPayload]
        if message_type is TimeEvent:
            encoder = _time_event_encoder
        elif message_type in DATA_MESSAGE_TYPES:
            encoder = _data_encoder
        else:
            encoder = _dict_encoder(message_type)
        registry.register_with_headers(message_type, message_type.__name__, encoder, deriver.extractor_for(message_type))
        registry.register_identity(message_type, _message_id)
    return registry


# ---- decoding ---------------------------------------------------------------------------------
def _decode_time_event(body: dict[str, Any]) -> TimeEvent:
    return TimeEvent(body["name"], UUID4.from_str(body["event_id"]), body["ts_event"], body["ts_init"])


# ---- untrusted payloads -----------------------------------------------------------------------
# NautilusTrader's `from_dict` builds identifiers and enums in Rust, which aborts the whole process
# (a panic, not an exception) on a non-ASCII or control character in an identifier, an unknown
# enum name, or a trader id without a hyphen. A run file is untrusted input, so every decoded map
# is checked first: text outside the free-text fields must be printable ASCII of bounded length,
# enum fields must name a member, a trader id must have its hyphen.
_FREE_TEXT_KEYS = frozenset({"reason", "tags", "name"})  # kept as Python str by the engine: safe
_OPAQUE_KEYS = frozenset({"info", "params", "options", "exec_algorithm_params"})  # Python dicts
MAX_FIELD_CHARS = 1024
_ENUM_FIELDS: dict[str, frozenset[str]] = {
    key: frozenset(member.name for member in enum_type)
    for key, enum_type in {
        "order_side": nautilus_enums.OrderSide,
        "entry": nautilus_enums.OrderSide,
        "order_type": nautilus_enums.OrderType,
        "time_in_force": nautilus_enums.TimeInForce,
        "emulation_trigger": nautilus_enums.TriggerType,
        "trigger_type": nautilus_enums.TriggerType,
        "contingency_type": nautilus_enums.ContingencyType,
        "trailing_offset_type": nautilus_enums.TrailingOffsetType,
        "liquidity_side": nautilus_enums.LiquiditySide,
        "account_type": nautilus_enums.AccountType,
        "order_status": nautilus_enums.OrderStatus,
        "position_side": nautilus_enums.PositionSide,
        "side": nautilus_enums.PositionSide,
    }.items()
}


def _check_untrusted(body: dict[str, Any]) -> None:
    """Raise ValueError for anything NautilusTrader's `from_dict` could abort the process on.

    Fast path (a replay checks every payload): the map is encoded as JSON once, in C. JSON
    escapes every control character and a quote or backslash, so ASCII output without a
    backslash or DEL means every key and text is printable ASCII; the longest run between
    quotes bounds every text's length. Only the enum fields, trader ids and the containers'
    shape are then walked in Python. Anything the fast path cannot vouch for (a quote or
    non-ASCII text in a free-text field, a long text, an odd type) takes the careful walk,
    which decides."""
    if not _plainly_safe(body):
        _check_value(body)


_json_encode = msgspec.json.Encoder().encode
_SPECIAL_KEYS = frozenset(_ENUM_FIELDS) | {"trader_id"}


def _plainly_safe(body: dict[str, Any]) -> bool:
    if type(body) is not dict:
        return False
    try:
        text = _json_encode(body)
    except Exception:  # noqa: BLE001 - a type JSON cannot hold (msgpack ext): the careful walk decides
        return False
    if not text.isascii() or b"\\" in text or b"\x7f" in text:
        return False
    if len(text) > MAX_FIELD_CHARS and max(map(len, text.split(b'"'))) > MAX_FIELD_CHARS:
        return False
    return _shape_ok(body, None, 0)


def _special_ok(key: str, text: str) -> bool:
    allowed = _ENUM_FIELDS.get(key)
    return "-" in text if allowed is None else text in allowed


def _shape_ok(value: dict[str, Any] | list[Any], key: str | None, depth: int) -> bool:
    """Containers nested at most 16 deep with text keys; enum fields name a member; trader ids
    have their hyphen (the rules of `_check_value` that JSON does not show). Scans in C where it
    can (`map(type, ...)`, the key-set intersection): Python only visits special fields and
    containers."""
    if depth >= 16:  # the careful walk refuses anything below depth 16: let it decide
        return False
    if type(value) is dict:
        if not set(map(type, value)) <= _TEXT_ONLY:
            return False
        for special in value.keys() & _SPECIAL_KEYS:
            child = value[special]
            if type(child) is str and not _special_ok(special, child):
                return False
        if _CONTAINERS.isdisjoint(map(type, value.values())):
            return True
        for child_key, child in value.items():
            if type(child) in _CONTAINERS and child_key not in _OPAQUE_KEYS and not _shape_ok(child, child_key, depth + 1):
                return False
        return True
    if key is not None and key in _SPECIAL_KEYS:  # a list under a special field
        for child in value:
            if type(child) is str and not _special_ok(key, child):
                return False
    if _CONTAINERS.isdisjoint(map(type, value)):
        return True
    return all(_shape_ok(child, key, depth + 1) for child in value if type(child) is dict or type(child) is list)


_TEXT_ONLY = frozenset({str})
_CONTAINERS = frozenset({dict, list})


def _check_value(value: Any, key: str | None = None, depth: int = 0) -> None:
    """The careful walk: raise ValueError, naming the field, for what `_check_untrusted` refuses."""
    if depth > 16:
        raise ValueError("payload nested deeper than 16 levels")
    if isinstance(value, dict):
        for child_key, child in value.items():
            if not isinstance(child_key, str) or len(child_key) > MAX_FIELD_CHARS:
                raise ValueError(f"bad key {str(child_key)[:40]!r}")
            if not (child_key.isascii() and child_key.isprintable()):  # keys become ids (mass status)
                raise ValueError(f"key {child_key[:40]!r} is not printable ASCII")
            if child_key not in _OPAQUE_KEYS:
                _check_value(child, child_key, depth + 1)
    elif isinstance(value, list):
        for child in value:
            _check_value(child, key, depth + 1)
    elif isinstance(value, str) and key not in _FREE_TEXT_KEYS:
        if len(value) > MAX_FIELD_CHARS or not (value.isascii() and value.isprintable()):
            raise ValueError(f"field {key!r} is not printable ASCII of at most {MAX_FIELD_CHARS} chars")
        if key is not None and key in _SPECIAL_KEYS and not _special_ok(key, value):
            if key in _ENUM_FIELDS:
                raise ValueError(f"field {key!r} names no member: {value[:40]!r}")
            raise ValueError(f"trader id {value[:40]!r} has no hyphen")


_DICT_TYPES = {t.__name__: t for t in COMMAND_TYPES + ORDER_EVENT_TYPES + POSITION_EVENT_TYPES + (AccountState,) + REPORT_TYPES}
_DATA_TYPE_NAMES = frozenset(t.__name__ for t in DATA_MESSAGE_TYPES)


def decode_payload(payload_type: str, payload: bytes) -> object:
    """The NautilusTrader object a stored payload encodes (`DataMessageMetadata` for data
    messages). Raises `UnknownPayloadType` for a type this registry does not produce and
    `PayloadDecodeError` for a payload that does not decode."""
    try:
        if payload_type in _DATA_TYPE_NAMES:
            metadata = _metadata_decoder.decode(payload)
            if metadata.message_type != payload_type:
                raise ValueError(f"payload names {metadata.message_type}")
            return metadata
        message_type = _DICT_TYPES.get(payload_type)
        if message_type is None and payload_type != TimeEvent.__name__:
            raise UnknownPayloadType(payload_type)
        body = _decode_map.decode(payload)
        if message_type is None:
            _check_untrusted(body)
            return _decode_time_event(body)
        if body.get("type") != payload_type:  # every to_dict names its class: refuse another type's fields
            raise ValueError(f"payload names type {body.get('type')!r}")
        _check_untrusted(body)
        return message_type.from_dict(body)
    except PayloadDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a stored payload is untrusted input
        raise PayloadDecodeError(payload_type, f"{type(exc).__name__}: {exc}") from None
