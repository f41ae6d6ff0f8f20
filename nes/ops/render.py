"""How an entry is shown: one stable JSON object, or one human line.

Contract: `entry_record` is the `--json` form of an entry (one object per line); its field names
are stable (`ENTRY_FIELDS`) and change only with a version bump. A payload that decodes as
MessagePack (a map or an array, every byte used) is shown as JSON (`payload_encoding` =
"msgpack"); any other payload as lowercase hex (`payload_encoding` = "hex"). Bytes inside a
MessagePack payload become hex strings; map keys become strings.
"""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

import msgspec

from nes.entry import EventStoreEntry

__all__ = [
    "ENTRY_FIELDS",
    "entry_fields",
    "entry_record",
    "entry_line",
    "format_ns",
    "payload_as_json",
    "payload_json_text",
    "message_id",
    "MESSAGE_ID_FIELDS",
]

ENTRY_FIELDS = (
    "seq",
    "ts_init",
    "ts_publish",
    "topic",
    "payload_type",
    "correlation_id",
    "causation_id",
    "entry_hash",
    "payload_encoding",
    "payload",
)
# The payload fields that carry a message's own id, in the order they are tried.
MESSAGE_ID_FIELDS = ("command_id", "event_id", "id")
_MAX_DEPTH = 64


def format_ns(ns: int | None) -> str:
    """Nanoseconds since the epoch as UTC ISO-8601 with nanoseconds ('-' for None)."""
    if ns is None:
        return "-"
    seconds, frac = divmod(ns, 1_000_000_000)
    try:
        stamp = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{ns}ns"
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _jsonable(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError("payload nests too deeply")
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, msgspec.msgpack.Ext):
        return {"ext": value.code, "data": bytes(value.data).hex()}
    if isinstance(value, float) and value != value:  # NaN has no JSON form
        return None
    return value


# MessagePack type bytes of bin and ext values: a payload with none of these bytes anywhere holds
# no bytes/ext value, so its decoded form is JSON-ready as it is (the common, fast case).
_BIN_OR_EXT = re.compile(rb"[\xc4-\xc9\xd4-\xd8]")


def payload_as_json(payload: bytes) -> Any | None:
    """The payload as a JSON-ready value if it is MessagePack (a map or an array using every
    byte), else None."""
    try:
        value = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, (dict, list)):
        return None
    if _BIN_OR_EXT.search(payload) is None and _plain_keys(value):
        return value
    try:
        return _jsonable(value)
    except (ValueError, RecursionError):
        return None


def _plain_keys(value: Any) -> bool:
    """Top-level map keys are all text (nested maps are rare; _jsonable handles them when not)."""
    return not isinstance(value, dict) or all(type(k) is str for k in value)


def payload_json_text(payload: bytes) -> str | None:
    """`payload_as_json` encoded as compact JSON text, or None."""
    value = payload_as_json(payload)
    if value is None:
        return None
    try:
        return _json_encoder.encode(value).decode()
    except (TypeError, ValueError, msgspec.EncodeError):
        try:
            return _json_encoder.encode(_jsonable(value)).decode()
        except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
            return None


_json_encoder = msgspec.json.Encoder()


def message_id(entry: EventStoreEntry) -> uuid.UUID | None:
    """An entry's own message id: the UUID in its MessagePack payload's `command_id`,
    `event_id` or `id` field (the first present), or None."""
    try:
        value = msgspec.msgpack.decode(entry.payload)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    for field in MESSAGE_ID_FIELDS:
        raw = value.get(field)
        if isinstance(raw, str):
            try:
                return uuid.UUID(raw)
            except ValueError:
                continue
        if isinstance(raw, bytes) and len(raw) == 16:
            return uuid.UUID(bytes=raw)
    return None


def entry_fields(entry: EventStoreEntry) -> dict[str, Any]:
    """An entry's fields before its order ids and payload, as `show` and `export` name them
    (headers as UUID text or None)."""
    headers = entry.headers
    return {
        "seq": entry.seq,
        "ts_init": entry.ts_init,
        "ts_publish": entry.ts_publish,
        "topic": entry.topic,
        "payload_type": entry.payload_type,
        "correlation_id": None if headers.correlation_id is None else str(headers.correlation_id),
        "causation_id": None if headers.causation_id is None else str(headers.causation_id),
    }


def entry_record(entry: EventStoreEntry) -> dict[str, Any]:
    """The stable JSON object of an entry (see the module contract)."""
    decoded = payload_as_json(entry.payload)
    return {
        **entry_fields(entry),
        "entry_hash": bytes(entry.entry_hash).hex(),
        "payload_encoding": "hex" if decoded is None else "msgpack",
        "payload": entry.payload.hex() if decoded is None else decoded,
    }


def entry_line(entry: EventStoreEntry, indent: str = "") -> str:
    """One human-readable line for an entry (this form may change; scripts use `--json`)."""
    text = payload_json_text(entry.payload)
    payload = entry.payload.hex() if text is None else text
    headers = entry.headers
    corr = "-" if headers.correlation_id is None else str(headers.correlation_id)[:8]
    caus = "-" if headers.causation_id is None else str(headers.causation_id)[:8]
    return (
        f"{indent}{entry.seq:>8}  {format_ns(entry.ts_init)}  {entry.topic}  {entry.payload_type}  "
        f"corr={corr} caus={caus}  {payload}"
    )
