"""The writer's contract in its in-process (synchronous) mode, and the shared record path."""

from __future__ import annotations

import os

import uuid

import pytest

from nes import Headers, IndexKey, IndexKind, MemoryBackend, RunManifest, RunStatus, ScanDirection
from nes.backend.base import MAX_INDEX_KEY_BYTES
from nes.errors import Disk
from nes.halt import BackendDisk, BackendCorrupted, BackendError, from_backend_error, noop_halt
from nes.errors import Closed, Corrupted
from nes.record import KIND_CLOSE, KIND_ENTRY, KIND_FRAME, RecordError, decode_entry_record, encode_entry_record, entry_template
from nes.sidecar import WriterCore, should_flush
from nes.writer import (
    EntryDraft,
    EventStoreWriter,
    InvalidDraft,
    RecordTooLarge,
    WriterClosed,
    WriterConfig,
    WriterHalted,
)


def open_memory(run_id: str = "run-1") -> MemoryBackend:
    backend = MemoryBackend()
    backend.open_run(RunManifest(run_id, "trader-001", 1))
    return backend


def draft(i: int, **kw) -> EntryDraft:
    return EntryDraft("exec.command", "SubmitOrder", b"p%d" % i, 10 + i, **kw)


class Recorder:
    def __init__(self) -> None:
        self.reasons: list = []

    def __call__(self, reason) -> None:
        self.reasons.append(reason)


def test_five_submits_plus_close_give_six_and_seal_ended():
    backend = open_memory()
    hook = Recorder()
    writer = EventStoreWriter.in_process(backend, halt=hook)
    assert [writer.submit(draft(i)) for i in range(5)] == [1, 2, 3, 4, 5]
    assert writer.close() == 6
    manifest = backend.manifest()
    assert (manifest.status, manifest.high_watermark) == (RunStatus.Ended, 6)
    assert backend.scan_seq(6).payload_type == "RunEnded"
    assert hook.reasons == []


def test_anchor_covers_every_entry_submitted_before_it_and_tail_follows():
    backend = open_memory()
    writer = EventStoreWriter.in_process(backend)
    writer.submit(draft(1))
    writer.submit(draft(2))
    anchor = writer.record_snapshot_anchor("cache://run/2", "blake3:ab")
    assert anchor.high_watermark == 2
    writer.submit(draft(3))
    writer.submit(draft(4))
    final = writer.close()
    assert backend.latest_snapshot_anchor() == anchor
    tail = backend.scan_range(anchor.high_watermark + 1, final, ScanDirection.Forward)
    assert [e.seq for e in tail] == [3, 4, 5]


def test_end_ts_init_is_the_max_ts_init_not_the_last():
    backend = open_memory()
    writer = EventStoreWriter.in_process(backend)
    for ts in (50, 120, 80):
        writer.submit(EntryDraft("t", "P", b"", ts))
    assert writer.close(EntryDraft("run.lifecycle.RunEnded", "RunEnded", b"", 9999)) == 4
    assert backend.manifest().end_ts_init == 9999


def test_ts_publish_is_strictly_increasing_even_with_a_frozen_clock():
    backend = open_memory()
    writer = EventStoreWriter.in_process(backend, clock_ns=lambda: 1_000)
    for i in range(3):
        writer.submit(draft(i))
    writer.close()
    stamps = [e.ts_publish for e in backend.scan_range(1, 4, ScanDirection.Forward)]
    assert stamps == [1_000, 1_001, 1_002, 1_003]


def test_every_stored_hash_verifies_and_headers_and_keys_round_trip():
    backend = open_memory()
    writer = EventStoreWriter.in_process(backend)
    headers = Headers(uuid.uuid4(), uuid.uuid4())
    keys = [IndexKey(IndexKind.ClientOrderId, "O-1"), IndexKey(IndexKind.VenueOrderId, "V-1")]
    writer.submit(EntryDraft("exec.command", "SubmitOrder", b"alpha", 1, headers, keys))
    writer.submit(EntryDraft("exec.event", "OrderFilled", b"", 2, None, keys[:1]))
    writer.close()
    first = backend.scan_seq(1)
    assert first.headers == headers and first.payload == b"alpha"
    assert all(e.recompute_hash() == e.entry_hash for e in backend.scan_range(1, 3, ScanDirection.Forward))
    assert backend.lookup_all(IndexKind.ClientOrderId, "O-1") == [1, 2]
    assert backend.lookup(IndexKind.VenueOrderId, "V-1") == 1


def test_without_indices_sets_every_field_and_no_keys():
    d = EntryDraft.without_indices("t.x", "P", b"abc", 7, Headers(uuid.uuid4(), None))
    assert (d.topic, d.payload_type, d.payload, d.ts_init, d.index_keys) == ("t.x", "P", b"abc", 7, ())


@pytest.mark.parametrize(
    "make",
    [
        lambda: EntryDraft("", "P", b"", 1),
        lambda: EntryDraft("  ", "P", b"", 1),
        lambda: EntryDraft("a.*", "P", b"", 1),
        lambda: EntryDraft("a.?", "P", b"", 1),
        lambda: EntryDraft("bad\udcff", "P", b"", 1),
        lambda: EntryDraft("t", "bad\udcff", b"", 1),
        lambda: EntryDraft("t", "P", "not bytes", 1),  # type: ignore[arg-type]
        lambda: EntryDraft("t", "P", b"", -1),
        lambda: EntryDraft("t", "P", b"", 1 << 64),
        lambda: EntryDraft("t", "P", b"", 1, headers="x"),  # type: ignore[arg-type]
        lambda: EntryDraft("t", "P", b"", 1, index_keys=[("ClientOrderId", "O-1")]),
        lambda: EntryDraft("t", "P", b"", 1, index_keys=None),  # type: ignore[arg-type]
        lambda: EntryDraft("t", "P", b"", 1, index_keys="O-1"),  # type: ignore[arg-type]
        lambda: EntryDraft("t", "P", b"", 1, index_keys=7),  # type: ignore[arg-type]
    ],
)
def test_bad_drafts_are_refused_with_a_clear_error(make):
    with pytest.raises(InvalidDraft):
        make()


def test_a_topic_or_payload_type_seen_before_is_still_checked_on_every_draft():
    """EntryDraft memoises checked text by exact str: what was refused stays refused, a str
    subclass equal to a known topic is stored as given, and past the memo's bound every text is
    still checked."""
    import nes.writer as writer_module

    assert EntryDraft("t.memo", "P", b"", 1).topic == "t.memo"
    for _ in range(2):  # the second time after anything was memoised
        with pytest.raises(InvalidDraft):
            EntryDraft("t.*", "P", b"", 1)
        with pytest.raises(InvalidDraft):
            EntryDraft("t.memo", "bad\udcff", b"", 1)
        with pytest.raises(InvalidDraft):
            EntryDraft(b"t.memo", "P", b"", 1)  # type: ignore[arg-type]

    class Topic(str):
        pass

    subclassed = EntryDraft(Topic("t.memo"), "P", b"", 1)
    assert type(subclassed.topic) is Topic and subclassed.record(1, 2)[32:38] == b"t.memo"
    long_topic = "t." + "x" * writer_module._TEXT_MEMO_CHARS
    assert EntryDraft(long_topic, "P", b"", 1).topic == long_topic and long_topic not in writer_module._topics
    keys = (IndexKey(IndexKind.ClientOrderId, "O-1"),)
    assert EntryDraft("t", "P", b"", 1, index_keys=iter(keys)).index_keys == keys  # any iterable of keys
    for i in range(writer_module._TEXT_MEMO_MAX + 10):
        EntryDraft(f"t.many.{i}", f"P{i}", b"", 1)
    assert len(writer_module._topics) <= writer_module._TEXT_MEMO_MAX
    assert len(writer_module._payload_types) <= writer_module._TEXT_MEMO_MAX
    with pytest.raises(InvalidDraft):
        EntryDraft("t.many.*", "P", b"", 1)
    assert EntryDraft("t.late", "P", b"", 1).record(1, 2) == EntryDraft("t.late", "P", b"", 1).record(1, 2)


@pytest.mark.parametrize(
    "key, accepted",
    [
        ("O-1", True),
        ("x" * MAX_INDEX_KEY_BYTES, True),
        ("é" * (MAX_INDEX_KEY_BYTES // 2), True),  # 2 UTF-8 bytes each: the full check decides
        ("x" * (MAX_INDEX_KEY_BYTES + 1), False),
        ("é" * (MAX_INDEX_KEY_BYTES // 2 + 1), False),
        ("", False),
        ("bad\udcff", False),
        (7, False),
    ],
)
def test_index_keys_are_checked_as_utf8_byte_lengths(key: object, accepted: bool) -> None:
    make = lambda: EntryDraft("t", "P", b"", 1, index_keys=[IndexKey(IndexKind.ClientOrderId, key)])  # type: ignore[arg-type]  # noqa: E731
    if accepted:
        assert make().index_keys[0].key == key
    else:
        with pytest.raises(InvalidDraft):
            make()


def test_non_v4_uuid_header_is_refused_at_construction():
    with pytest.raises(ValueError, match="version-4"):
        Headers(uuid.uuid1(), None)


def test_oversize_record_is_refused_without_consuming_a_seq():
    backend = open_memory()
    writer = EventStoreWriter.in_process(backend, WriterConfig(ring_bytes=1 << 16, max_record_bytes=1024))
    assert writer.submit(draft(1)) == 1
    with pytest.raises(RecordTooLarge):
        writer.submit(EntryDraft("t", "P", b"x" * 2000, 1))
    assert writer.submit(draft(2)) == 2
    assert writer.close() == 3


class FailingBackend(MemoryBackend):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def _stage(self, batch):  # noqa: ANN001
        def fail() -> None:
            raise self.error  # at commit, where a real disk fills up

        return fail


def test_backend_disk_error_halts_once_and_refuses_later_submits():
    backend = FailingBackend(Disk("ENOSPC"))
    backend.open_run(RunManifest("run-1", "trader-001", 1))
    hook = Recorder()
    writer = EventStoreWriter.in_process(backend, halt=hook)
    with pytest.raises(WriterHalted) as info:
        writer.submit(draft(1))
    assert isinstance(info.value.reason, BackendDisk) and "ENOSPC" in info.value.reason.msg
    assert info.value.reason.durable_high_watermark == 0
    with pytest.raises(WriterHalted):
        writer.submit(draft(2))
    assert writer.halted and len(hook.reasons) == 1
    assert os.read(writer.control_fd, 16) == b"H"  # what an event loop watching the fd sees
    with pytest.raises(WriterHalted):
        writer.close()
    assert backend.manifest().status is RunStatus.Running  # a halted run is not sealed
    assert writer.control_fd == -1  # released with the writer, exactly once
    with pytest.raises(WriterClosed):
        writer.close()


def test_submit_after_close_is_closed():
    writer = EventStoreWriter.in_process(open_memory())
    writer.close()
    with pytest.raises(WriterClosed):
        writer.submit(draft(1))
    with pytest.raises(WriterClosed):
        writer.close()


def test_writer_attached_to_a_recovered_run_continues_from_its_high_watermark():
    backend = open_memory()
    first = EventStoreWriter.in_process(backend)
    first.submit(draft(1))
    second = EventStoreWriter.in_process(backend)  # e.g. after adopting the same open run
    assert second.submit(draft(2)) == 2


def test_halt_mapping():
    assert isinstance(from_backend_error(Disk("ENOSPC"), 3), BackendDisk)
    corrupted = from_backend_error(Corrupted("bad page"), 3)
    assert isinstance(corrupted, BackendCorrupted) and "bad page" in corrupted.msg
    closed = from_backend_error(Closed(), 3)
    assert isinstance(closed, BackendError) and closed.msg == "run is closed"
    noop_halt(closed)


# ---- the shared core ----------------------------------------------------------------------------
def test_flush_rule():
    assert not should_flush(0, 10, True, 5.0, 1.0)
    assert should_flush(10, 10, False, 0.0, 1.0)  # full
    assert should_flush(1, 10, True, 0.0, 1.0)  # nothing more waiting
    assert should_flush(1, 10, False, 1.0, 1.0)  # oldest entry due
    assert not should_flush(5, 10, False, 0.5, 1.0)
    # the commit interval holds a drained batch back, unless someone waits for durability
    assert not should_flush(1, 10, True, 0.0, 1.0, not_before=0.5)
    assert should_flush(1, 10, True, 0.0, 1.0, not_before=0.5, durable_wanted=True)
    assert should_flush(1, 10, True, 0.5, 1.0, not_before=0.5)
    assert should_flush(10, 10, False, 0.0, 1.0, not_before=0.5)  # full: at once
    assert should_flush(1, 10, True, 1.0, 1.0, not_before=2.0)  # due: the interval never delays past the deadline
    assert not should_flush(1, 10, True, 0.6, 1.0, commit_in_flight=True, not_before=0.5, durable_wanted=True)


def test_core_refuses_a_producer_seq_that_is_not_next():
    core = WriterCore(open_memory())
    record = encode_entry_record(2, 1, 1, b"t", b"P", b"", Headers(), ())
    with pytest.raises(RecordError, match="expected 1"):
        core.add_entry(record)
    assert isinstance(core.halt_reason(RecordError("x")), BackendCorrupted)


def _frame_record(seq: int, ts_init: int) -> tuple[int, bytes]:
    template = entry_template(b"t.x", b"P", b"payload", Headers(), ())
    return template.kind, template.record(seq, ts_init, ts_init + 1)


def test_core_batches_mixed_records_up_to_a_control_record():
    core = WriterCore(open_memory())
    keys = (IndexKey(IndexKind.ClientOrderId, "O-2"), IndexKey(IndexKind.VenueOrderId, "V-2"))
    records = [
        _frame_record(1, 50),
        (KIND_ENTRY, encode_entry_record(2, 1 << 60, 7, b"t.y", b"P", b"", Headers(), keys)),
        _frame_record(3, 9),
        (KIND_CLOSE, b""),
        _frame_record(4, 9),
    ]
    assert core.add_entries(records) == 3  # stops at the control record
    assert core.pending == 3
    assert core.add_entries(records, 4) == 5
    assert core.sync() == 4
    backend = core.backend
    assert [e.seq for e in backend.scan_range(1, 4, ScanDirection.Forward)] == [1, 2, 3, 4]
    assert backend.lookup(IndexKind.ClientOrderId, "O-2") == 2 and backend.lookup(IndexKind.VenueOrderId, "V-2") == 2
    backend.seal(RunStatus.Ended)
    assert backend.manifest().end_ts_init == 1 << 60  # the largest ts_init, not the last


@pytest.mark.parametrize("bad", ["seq", "short"])
def test_core_refuses_a_bad_record_inside_a_pop_and_adds_nothing_of_it(bad):
    core = WriterCore(open_memory())
    core.add_entries([_frame_record(1, 5)])
    kind, record = _frame_record(3, 5)
    broken = (kind, _frame_record(9, 5)[1]) if bad == "seq" else (kind, record[:20])
    with pytest.raises(RecordError, match="expected 3" if bad == "seq" else "too short"):
        core.add_entries([_frame_record(2, 5), broken, _frame_record(4, 5)])
    assert core.pending == 1  # seq 1 only: nothing of the refused pop was batched
    assert core.add_entries([_frame_record(2, 5)]) == 1 and core.sync() == 2


def test_entry_record_round_trip_and_strictness():
    keys = (IndexKey(IndexKind.ClientOrderId, "O-1"), IndexKey(IndexKind.VenueOrderId, "V-é"))
    record = encode_entry_record(9, 1, 2, b"t", b"P", b"xyz", Headers(), keys)
    seq, frame, decoded = decode_entry_record(record)
    assert (seq, decoded) == (9, keys)
    for cut in range(len(record)):
        with pytest.raises(RecordError):
            decode_entry_record(record[:cut])
    with pytest.raises(RecordError):
        decode_entry_record(record + b"\x00")



def test_snapshot_anchor_references_are_bounded():
    writer = EventStoreWriter.in_process(open_memory())
    writer.submit(draft(1))
    with pytest.raises(InvalidDraft, match="blob_ref must be 1..4096"):
        writer.record_snapshot_anchor("b" * 4097, "blake3:" + "0" * 64)
    with pytest.raises(InvalidDraft, match="content_hash"):
        writer.record_snapshot_anchor("snap-1", "")
    anchor = writer.record_snapshot_anchor("snap-1", "blake3:" + "0" * 64)
    assert anchor.high_watermark == 1 and not writer.halted


# ---- the sidecar loop, over a scripted ring ------------------------------------------------------
class _ScriptedRing:
    """ConsumerRing over a fixed list of pops; records what the loop publishes, in order."""

    def __init__(self, pops):  # noqa: ANN001
        self.pops = list(pops)
        self.events: list[tuple[str, int]] = []

    def pop(self, max_records: int):  # noqa: ANN201
        return self.pops.pop(0) if self.pops else []

    def wait_for_data(self, timeout_s: float, linger_s: float = 0.0) -> bool:
        return False

    def wake_consumer(self) -> None:
        pass

    def publish_durable(self, high_watermark: int) -> None:
        self.events.append(("durable", high_watermark))

    def set_halt(self, code: int) -> None:
        self.events.append(("halt", code))


def test_a_halt_waits_for_the_commit_in_flight_and_states_its_high_watermark():
    """A producer bug detected while a batch is still being committed: the halt is sent only
    after that commit finished, and carries its high-watermark (never a stale one)."""
    import socket
    import threading

    from nes.control import ControlChannel, Halt
    from nes.record import entry_template
    from nes.sidecar import run_sidecar

    release = threading.Event()

    class SlowCommits(MemoryBackend):
        def _stage(self, batch):  # noqa: ANN001
            store = super()._stage(batch)

            def commit() -> None:
                release.wait(5.0)  # a slow fsync
                store()

            return commit

    def record(seq: int):  # noqa: ANN202
        template = entry_template(b"t", b"p", b"x", Headers(), ())
        return template.kind, template.record(seq, seq, seq)

    backend = SlowCommits()
    backend.open_run(RunManifest("run-1", "trader-001", 1))
    ring = _ScriptedRing([[record(1), record(2), record(3)], [record(7)]])  # then a wrong seq
    ours, theirs = socket.socketpair()
    threading.Timer(0.2, release.set).start()
    assert run_sidecar(ring, ControlChannel(ours), backend, max_batch_entries=3, max_batch_latency_s=0.001) == 3
    peer = ControlChannel(theirs)
    peer.recv()  # READY
    halt = peer.recv()
    assert isinstance(halt, Halt) and isinstance(halt.reason, BackendCorrupted)
    assert halt.reason.durable_high_watermark == 3 == backend.high_watermark()
    assert ring.events == [("durable", 3), ("halt", 3)]  # durable published before the halt


def test_pipelined_commits_need_a_backend_that_may_commit_on_another_thread(tmp_path):
    from nes.backend.lmdb import LmdbBackend

    with LmdbBackend(tmp_path) as shared:  # LMDB's lock file ties a write txn to its thread
        shared.open_run(RunManifest("1-00000000", "trader-001", 1))
        with pytest.raises(ValueError, match="cannot commit on another thread"):
            WriterCore(shared).start_pipeline(lambda: None)
    with LmdbBackend(tmp_path, exclusive=True) as exclusive:
        exclusive.open_run(RunManifest("1-00000001", "trader-001", 1))
        core = WriterCore(exclusive)
        core.start_pipeline(lambda: None)
        core.add_entries([(KIND_FRAME, entry_template(b"t", b"p", b"x", Headers(), ()).record(1, 1, 1))])
        assert core.sync() == 1 and exclusive.high_watermark() == 1
        core.stop_pipeline()
