"""`nes show`: the decoded entries of one run, filtered.

Contract: entries come in seq order from `from_seq ..= to_seq` (default: all committed), each
hash-checked. Filters combine with AND: `topic_glob` (fnmatch, case-sensitive), `payload_type`
(exact), `client_order_id` / `venue_order_id` (through the order-id indexes, so a filtered show
of a large run reads only the matching entries). An order id no entry carries is
`UnknownOrderId`; a window with `from_seq > to_seq` or a seq below 1 is `InvalidRange`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

from nes.backend.base import IndexKind
from nes.entry import EventStoreEntry
from nes.errors import EventStoreError
from nes.ops.runfile import DEFAULT_CHUNK, RunFile

__all__ = ["InvalidRange", "UnknownOrderId", "EntryFilter", "iter_entries", "check_range"]

U64_MAX = (1 << 64) - 1


class InvalidRange(EventStoreError):
    """A seq window that selects nothing by construction (from > to, or below 1)."""


class UnknownOrderId(EventStoreError):
    """No entry of the run carries the given client / venue order id."""


class EntryFilter:
    """The AND of the optional filters of `nes show`."""

    __slots__ = ("topic_glob", "payload_type", "client_order_id", "venue_order_id")

    def __init__(
        self,
        topic_glob: str | None = None,
        payload_type: str | None = None,
        client_order_id: str | None = None,
        venue_order_id: str | None = None,
    ) -> None:
        self.topic_glob = topic_glob
        self.payload_type = payload_type
        self.client_order_id = client_order_id
        self.venue_order_id = venue_order_id

    def matches(self, entry: EventStoreEntry) -> bool:
        """Whether an entry passes the topic and payload-type filters."""
        if self.payload_type is not None and entry.payload_type != self.payload_type:
            return False
        return self.topic_glob is None or fnmatch.fnmatchcase(entry.topic, self.topic_glob)


def check_range(from_seq: int | None, to_seq: int | None) -> tuple[int, int]:
    """The window as (from, to), defaults 1 and the largest u64; InvalidRange if empty."""
    lo = 1 if from_seq is None else from_seq
    hi = U64_MAX if to_seq is None else to_seq
    if lo < 1:
        raise InvalidRange(f"--from-seq must be at least 1, got {lo}")
    if hi < 1:
        raise InvalidRange(f"--to-seq must be at least 1, got {hi}")
    if lo > hi:
        raise InvalidRange(f"--from-seq {lo} is past --to-seq {hi}: the window is empty")
    if hi > U64_MAX:
        raise InvalidRange(f"--to-seq {hi} is past the largest seq 2**64-1")
    return lo, hi


def _indexed_seqs(run_file: RunFile, flt: EntryFilter) -> list[int] | None:
    selected: set[int] | None = None
    for kind, key, flag in (
        (IndexKind.ClientOrderId, flt.client_order_id, "client order id"),
        (IndexKind.VenueOrderId, flt.venue_order_id, "venue order id"),
    ):
        if key is None:
            continue
        seqs = run_file.lookup(kind, key)
        if not seqs:
            raise UnknownOrderId(f"no entry of run {run_file.path.name} carries {flag} {key!r}")
        selected = set(seqs) if selected is None else selected & set(seqs)
    return None if selected is None else sorted(selected)


def iter_entries(
    run_file: RunFile, from_seq: int | None = None, to_seq: int | None = None, flt: EntryFilter | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[EventStoreEntry]:
    """The entries of the run that pass `flt`, in seq order (see the module contract)."""
    lo, hi = check_range(from_seq, to_seq)
    flt = flt or EntryFilter()
    seqs = _indexed_seqs(run_file, flt)
    if seqs is not None:
        for seq in seqs:
            if lo <= seq <= hi:
                entry = run_file.get(seq)
                if entry is not None and flt.matches(entry):
                    yield entry
        return
    for entry in run_file.iter_range(lo, hi, chunk):
        if flt.matches(entry):
            yield entry
