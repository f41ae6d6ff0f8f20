"""How an entry is shown: one stable JSON object, or one human line.

Contract: `entry_record` is the `--json` form of an entry (one object per line); its field names
are stable (`ENTRY_FIELDS`) and change only with a version bump. A payload that decodes as
MessagePack (a map or an array, every byte used) is shown as JSON (`payload_encoding` =
"msgpack"); any other payload as lowercase hex (`payload_encoding` = "hex"). Bytes inside a
MessagePack payload become hex strings; map keys become strings.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec

from nes.entry import EventStoreEntry

__all__ = [
    "ENTRY_FIELDS",
    "entry_record",
    "entry_line",
    "format_ns",
    "payload_as_json",
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


def payload_as_json(payload: bytes) -> Any | None:
    """The payload as a JSON-ready value if it is MessagePack (a map or an array using every
    byte), else None."""
    try:
        value = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, (dict, list)):
        return None
    try:
        return _jsonable(value)
    except (ValueError, RecursionError):
        return None


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


def entry_record(entry: EventStoreEntry) -> dict[str, Any]:
    """The stable JSON object of an entry (see the module contract)."""
    decoded = payload_as_json(entry.payload)
    headers = entry.headers
    return {
        "seq": entry.seq,
        "ts_init": entry.ts_init,
        "ts_publish": entry.ts_publish,
        "topic": entry.topic,
        "payload_type": entry.payload_type,
        "correlation_id": None if headers.correlation_id is None else str(headers.correlation_id),
        "causation_id": None if headers.causation_id is None else str(headers.causation_id),
        "entry_hash": bytes(entry.entry_hash).hex(),
        "payload_encoding": "hex" if decoded is None else "msgpack",
        "payload": entry.payload.hex() if decoded is None else decoded,
    }


def entry_line(entry: EventStoreEntry, indent: str = "") -> str:
    """One human-readable line for an entry (this form may change; scripts use `--json`)."""
    decoded = payload_as_json(entry.payload)
    payload = entry.payload.hex() if decoded is None else msgspec.json.encode(decoded).decode()
    headers = entry.headers
    corr = "-" if headers.correlation_id is None else str(headers.correlation_id)[:8]
    caus = "-" if headers.causation_id is None else str(headers.causation_id)[:8]
    return (
        f"{indent}{entry.seq:>8}  {format_ns(entry.ts_init)}  {entry.topic}  {entry.payload_type}  "
        f"corr={corr} caus={caus}  {payload}"
    )
