"""`nes trace`: an order's audit trail and an entry's causation chain.

Rules (documented in docs/operator.md):
- An entry's workflow is its `correlation_id` (the capture layer sets it to the order's
  SubmitOrder command id). `idx_correlation_id`, written in the same transaction as the
  entries, maps a correlation id to every seq that carries it, so a trace reads only the
  workflow's entries, whatever the run's length.
- An order's trail (`trace_order`): the entries indexed under its client order id, plus every
  entry that shares a correlation id with one of them (events such as AccountState carry the
  workflow but not the order id), in seq order.
- An entry's own message id is the UUID in its MessagePack payload's `command_id`, `event_id`
  or `id` field (`nes.ops.render.message_id`); the frame has no field for it. An entry's parent
  is the entry whose message id equals its `causation_id`: looked up first among the entries of
  its workflow, then (rarely: a cause outside the workflow) by one backward scan of the run for
  a payload that contains that id. A causation id no entry carries ends the chain (reported as
  `missing_cause`); a cycle ends it too.
"""

from __future__ import annotations

import uuid
import msgspec

from nes.backend.base import IndexKind
from nes.entry import EventStoreEntry
from nes.errors import EventStoreError
from nes.ops.render import message_id
from nes.ops.runfile import RunFile
from nes.ops.show import UnknownOrderId

__all__ = ["UnknownSeq", "TraceNode", "OrderTrace", "CausationChain", "trace_order", "causation_chain"]

MAX_CHAIN = 10_000
_SCAN_CHUNK = 4096


class UnknownSeq(EventStoreError):
    """The seq asked for is not in the run (0, or past its committed high-watermark)."""


class TraceNode(msgspec.Struct, frozen=True):
    """One entry of a trail with its depth in the causation tree (0 = a root)."""

    entry: EventStoreEntry
    depth: int
    parent_seq: int | None


class OrderTrace(msgspec.Struct, frozen=True):
    """Every entry of an order's workflow, in seq order."""

    client_order_id: str
    correlation_ids: list[str]
    nodes: list[TraceNode]


class CausationChain(msgspec.Struct, frozen=True):
    """An entry's causation chain, root first, the asked-for entry last."""

    entries: list[EventStoreEntry]
    missing_cause: str | None  # a causation id that names no entry of the run, if the chain ends on one
    cycle: bool = False


class _Workflows:
    """Message id -> entry, filled a workflow at a time from the correlation index."""

    def __init__(self, run_file: RunFile) -> None:
        self.run_file = run_file
        self.by_id: dict[uuid.UUID, EventStoreEntry] = {}
        self.loaded: set[uuid.UUID] = set()

    def load(self, correlation_id: uuid.UUID | None) -> list[EventStoreEntry]:
        if correlation_id is None or correlation_id in self.loaded:
            return []
        self.loaded.add(correlation_id)
        entries = [e for e in map(self.run_file.get, self.run_file.lookup_correlation(correlation_id)) if e is not None]
        for entry in entries:
            own = message_id(entry)
            if own is not None:
                self.by_id.setdefault(own, entry)
        return entries

    def parent(self, entry: EventStoreEntry, scan: bool) -> EventStoreEntry | None:
        cause = entry.headers.causation_id
        if cause is None:
            return None
        self.load(entry.headers.correlation_id)
        found = self.by_id.get(cause)
        if found is None and scan:
            found = _scan_for_message(self.run_file, cause, entry.seq - 1)
            if found is not None:
                self.by_id[cause] = found
                self.load(found.headers.correlation_id)
        return found


def _scan_for_message(run_file: RunFile, wanted: uuid.UUID, below: int) -> EventStoreEntry | None:
    """The newest entry before `below` whose own message id is `wanted` (backward scan; a cheap
    byte test picks the payloads worth decoding)."""
    text, raw = str(wanted).encode(), wanted.bytes
    hi = below
    while hi >= 1:
        lo = max(1, hi - _SCAN_CHUNK + 1)
        for entry in reversed(run_file.read(lo, hi)):
            if (text in entry.payload or raw in entry.payload) and message_id(entry) == wanted:
                return entry
        hi = lo - 1
    return None


def trace_order(run_file: RunFile, client_order_id: str) -> OrderTrace:
    """The audit trail of one order (see the module rules). Raises UnknownOrderId."""
    seqs = run_file.lookup(IndexKind.ClientOrderId, client_order_id)
    if not seqs:
        raise UnknownOrderId(f"no entry of run {run_file.path.name} carries client order id {client_order_id!r}")
    workflows = _Workflows(run_file)
    entries: dict[int, EventStoreEntry] = {}
    correlation_ids: list[str] = []
    for seq in seqs:
        entry = run_file.get(seq)
        if entry is None:
            continue
        entries[seq] = entry
        corr = entry.headers.correlation_id
        if corr is not None and corr not in workflows.loaded:
            correlation_ids.append(str(corr))
            for member in workflows.load(corr):
                entries[member.seq] = member
    nodes: list[TraceNode] = []
    depth_of: dict[int, int] = {}
    for seq in sorted(entries):
        entry = entries[seq]
        cause = entry.headers.causation_id
        parent = None if cause is None else workflows.by_id.get(cause)
        if parent is not None and parent.seq in depth_of:
            depth_of[seq] = depth_of[parent.seq] + 1
            nodes.append(TraceNode(entry, depth_of[seq], parent.seq))
        else:
            depth_of[seq] = 0
            nodes.append(TraceNode(entry, 0, None))
    return OrderTrace(client_order_id, correlation_ids, nodes)


def causation_chain(run_file: RunFile, seq: int, scan: bool = True) -> CausationChain:
    """The chain of causes of the entry at `seq`, back to its root command. Raises UnknownSeq."""
    entry = run_file.get(seq) if seq >= 1 else None
    if entry is None:
        raise UnknownSeq(f"run {run_file.path.name} has no entry at seq {seq} (high-watermark {run_file.high_watermark()})")
    workflows = _Workflows(run_file)
    chain = [entry]
    seen = {entry.seq}
    missing: str | None = None
    cycle = False
    while len(chain) < MAX_CHAIN:
        current = chain[-1]
        if current.headers.causation_id is None:
            break
        parent = workflows.parent(current, scan)
        if parent is None:
            missing = str(current.headers.causation_id)
            break
        if parent.seq in seen:
            cycle = True
            break
        seen.add(parent.seq)
        chain.append(parent)
    chain.reverse()
    return CausationChain(chain, missing, cycle)
