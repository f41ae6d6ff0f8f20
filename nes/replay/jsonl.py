"""Stable JSON forms of replay plans and loaded inputs (what `nes replay` prints).

One object per line; field names are stable (a change is a version bump):
- an entry: `{"kind": "entry", "seq", "ts_init", "ts_publish", "topic", "payload_type",
  "payload_b64", "correlation_id", "causation_id", "entry_hash"}` (ids as UUID text or null,
  the hash as 64 hex digits), in seq order;
- a catalog record: `{"kind": "catalog_record", "slice", "data_cls", "identifier", "ts_init",
  "data"}` (`slice` is the slice's index in the plan; decimals as text), after the entries.
- a plan: the `ReplayInputPlan` struct as JSON (one object).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import msgspec

from nes.entry import EventStoreEntry
from nes.replay.inputs import ReplayInputPlan, ReplayInputs

__all__ = ["entry_json", "plan_json", "replay_inputs_json_lines"]

_encoder = msgspec.json.Encoder()


def entry_json(entry: EventStoreEntry) -> dict[str, Any]:
    """The JSON object of one entry."""
    headers = entry.headers
    return {
        "kind": "entry",
        "seq": entry.seq,
        "ts_init": entry.ts_init,
        "ts_publish": entry.ts_publish,
        "topic": entry.topic,
        "payload_type": entry.payload_type,
        "payload_b64": base64.b64encode(entry.payload).decode("ascii"),
        "correlation_id": None if headers.correlation_id is None else str(headers.correlation_id),
        "causation_id": None if headers.causation_id is None else str(headers.causation_id),
        "entry_hash": bytes(entry.entry_hash).hex(),
    }


def plan_json(plan: ReplayInputPlan) -> str:
    """The plan as one JSON object."""
    return _encoder.encode(plan).decode()


def replay_inputs_json_lines(inputs: ReplayInputs) -> Iterator[str]:
    """Entries (seq order), then every slice's records, one JSON object per line."""
    for entry in inputs.entries:
        yield _encoder.encode(entry_json(entry)).decode()
    for index, catalog_slice in enumerate(inputs.catalog_slices):
        for record in catalog_slice.records:
            yield _encoder.encode(
                {
                    "kind": "catalog_record",
                    "slice": index,
                    "data_cls": record.data_cls,
                    "identifier": record.identifier,
                    "ts_init": record.ts_init,
                    "data": record.data,
                }
            ).decode()
