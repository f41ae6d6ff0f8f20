"""`CursorState`: the in-memory stream cursors of one run (spec/markers.md §1.13, §3.2).

Contract (pure, single-threaded, no I/O):
- Slots are assigned lazily per bus **topic**, 0, 1, 2, ... in first-seen order; the first
  sighting queues one `StreamDictEntry` (later data_cls/identifier arguments are ignored).
- `advance` returns `(slot, same_ts_ordinal)`: the 0-based position inside the current
  contiguous run of equal `ts_init` in that slot (100,100,200 -> 0,1,0; 100,200,100 -> 0,0,0).
  `count` is cumulative and `ts_init_hi` a running max; the slot becomes dirty.
- `build_snapshot` emits the full cumulative cursor of every dirty slot in ascending slot order
  and clears the flags; with nothing dirty it returns None, so a quiet interval consumes no
  marker_seq.
"""

from __future__ import annotations

from nes.markers.model import DataClass, DataCursorSnapshot, StreamCursor, StreamDictEntry

__all__ = ["CursorState"]

_MAX_SLOTS = 1 << 32


class _SlotState:
    __slots__ = ("ts_init_hi", "count", "last_ts_init", "same_ts_count", "dirty")

    def __init__(self) -> None:
        self.ts_init_hi = 0
        self.count = 0
        self.last_ts_init = 0
        self.same_ts_count = 0
        self.dirty = False


class CursorState:
    def __init__(self) -> None:
        self._slot_by_topic: dict[str, int] = {}
        self._slots: list[_SlotState] = []
        self._new_dict_entries: list[StreamDictEntry] = []

    def advance(self, topic: str, data_cls: DataClass, identifier: str, ts_init: int) -> tuple[int, int]:
        slot = self._slot_by_topic.get(topic)
        if slot is None:
            slot = len(self._slots)
            if slot >= _MAX_SLOTS:
                raise OverflowError("stream slot space (u32) exhausted")
            self._slot_by_topic[topic] = slot
            self._slots.append(_SlotState())
            self._new_dict_entries.append(StreamDictEntry(slot=slot, data_cls=data_cls, identifier=identifier))
        state = self._slots[slot]
        if state.count == 0 or ts_init != state.last_ts_init:
            state.last_ts_init = ts_init
            state.same_ts_count = 0
        else:
            state.same_ts_count += 1
        ordinal = state.same_ts_count
        state.count += 1
        state.ts_init_hi = max(state.ts_init_hi, ts_init)
        state.dirty = True
        return slot, ordinal

    def slot_of(self, topic: str) -> int | None:
        return self._slot_by_topic.get(topic)

    def cursor(self, slot: int) -> StreamCursor:
        state = self._slots[slot]
        return StreamCursor(slot=slot, ts_init_hi=state.ts_init_hi, count=state.count)

    def is_dirty(self, slot: int) -> bool:
        return self._slots[slot].dirty

    def take_new_dict_entries(self) -> list[StreamDictEntry]:
        """Drain the queued dict entries; each entry is produced exactly once."""
        entries, self._new_dict_entries = self._new_dict_entries, []
        return entries

    def build_snapshot(self, marker_seq: int, event_seq_before: int, ts_init: int) -> DataCursorSnapshot | None:
        advanced = []
        for slot, state in enumerate(self._slots):
            if state.dirty:
                advanced.append(StreamCursor(slot=slot, ts_init_hi=state.ts_init_hi, count=state.count))
                state.dirty = False
        if not advanced:
            return None
        return DataCursorSnapshot(
            marker_seq=marker_seq, event_seq_before=event_seq_before, ts_init=ts_init, advanced=tuple(advanced)
        )
