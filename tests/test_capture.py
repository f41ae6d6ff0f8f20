"""The engine-neutral capture surface (spec §2-§3): EncoderRegistry rules and BusCaptureAdapter
rules, against real writers (in-process over a real LMDB file, and the spawned sidecar)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from nes import (
    BusCaptureAdapter,
    CaptureEncodeError,
    CaptureHalted,
    CaptureSubmitError,
    EncodedPayload,
    EncoderRegistry,
    EventStoreError,
    Headers,
    IndexKey,
    IndexKind,
    LmdbBackend,
    RunManifest,
    SubmitCounter,
)
from nes.capture import RECENT_IDENTITY_CAPACITY
from nes.halt import BackendError, BackpressureStall, WriterDied
from nes.writer import EntryDraft, EventStoreWriter, WriterConfig

INSTANCE = "cap"


class Order(msgspec.Struct, frozen=True):
    id: str
    client_order_id: str
    note: str = ""


class Fill(msgspec.Struct, frozen=True):
    id: str
    client_order_id: str
    venue_order_id: str


class SubOrder(Order, frozen=True):
    """A subclass: the registry is keyed by exact type, so it is not captured."""


class Broken(msgspec.Struct, frozen=True):
    id: str


class Unknown(msgspec.Struct, frozen=True):
    id: str


_enc = msgspec.msgpack.Encoder()


def encode_order(msg: Order) -> EncodedPayload:
    return EncodedPayload(_enc.encode(msg), (IndexKey(IndexKind.ClientOrderId, msg.client_order_id),))


def encode_fill(msg: Fill) -> EncodedPayload:
    keys = (IndexKey(IndexKind.ClientOrderId, msg.client_order_id), IndexKey(IndexKind.VenueOrderId, msg.venue_order_id))
    return EncodedPayload(_enc.encode(msg), keys)


def encode_broken(msg: Broken) -> EncodedPayload:
    raise RuntimeError(f"cannot encode {msg.id}")


WORKFLOW = uuid.uuid4()


def order_headers(msg: Order) -> Headers:
    return Headers(WORKFLOW, None)


def message_id(msg: object) -> str:
    return msg.id  # type: ignore[attr-defined, no-any-return]


def make_registry() -> EncoderRegistry:
    registry = EncoderRegistry()
    registry.register_with_headers(Order, "Order", encode_order, order_headers)
    registry.register_identity(Order, message_id)
    registry.register(Fill, "Fill", encode_fill)
    registry.register_identity(Fill, message_id)
    registry.register(Broken, "Broken", encode_broken)
    registry.register_identity(Broken, message_id)
    return registry


class HaltRecorder:
    def __init__(self) -> None:
        self.reasons: list[object] = []

    def __call__(self, reason: object) -> None:
        self.reasons.append(reason)


class CountingSink:
    """The real writer, with a count of the submits that reached it."""

    def __init__(self, writer: EventStoreWriter) -> None:
        self.writer = writer
        self.submits = 0

    def submit(self, draft: EntryDraft) -> int:
        self.submits += 1
        return self.writer.submit(draft)

    @property
    def high_watermark(self) -> int:
        return self.writer.high_watermark

    @property
    def halt_reason(self) -> object:
        return self.writer.halt_reason


def manifest(run_id: str = "1700000000-0000cafe") -> RunManifest:
    return RunManifest(run_id=run_id, instance_id=INSTANCE, start_ts_init=1)


@pytest.fixture
def lmdb_writer(tmp_path: Path) -> Iterator[tuple[EventStoreWriter, LmdbBackend]]:
    backend = LmdbBackend(tmp_path)
    backend.open_run(manifest())
    writer = EventStoreWriter.in_process(backend)
    try:
        yield writer, backend
    finally:
        backend.close()


def oid(n: int) -> str:
    return f"id-{n}"


# ---- registry ---------------------------------------------------------------------------------
def test_unregistered_type_encodes_to_none_and_has_no_headers_or_identity() -> None:
    registry = make_registry()
    assert registry.encode(Unknown("u")) is None
    assert registry.headers_for(Unknown("u")) is None
    assert registry.identity_for(Unknown("u")) is None
    assert not registry.contains(Unknown) and Unknown not in registry


def test_registered_type_encodes_to_its_tag_payload_and_index_keys() -> None:
    registry = make_registry()
    tag, encoded = registry.encode(Fill("f1", "O-1", "V-1"))  # type: ignore[misc]
    assert tag == "Fill"
    assert msgspec.msgpack.decode(encoded.payload, type=Fill) == Fill("f1", "O-1", "V-1")
    assert [k.key for k in encoded.index_keys] == ["O-1", "V-1"]
    assert len(registry) == 3 and registry.contains(Fill)
    assert registry.headers_for(Fill("f1", "O-1", "V-1")) == Headers.empty()  # default extractor
    assert registry.identity_for(Fill("f1", "O-1", "V-1")) == "f1"


def test_lookup_is_by_exact_type_so_a_subclass_is_not_captured() -> None:
    registry = make_registry()
    assert registry.encode(SubOrder("s", "O-1")) is None
    assert not registry.contains(SubOrder)


def test_re_register_replaces_encoder_and_tag_but_keeps_headers_and_identity() -> None:
    registry = make_registry()
    registry.register(Order, "OrderV2", lambda m: EncodedPayload(b"v2"))
    tag, encoded = registry.encode(Order("o1", "O-1"))  # type: ignore[misc]
    assert (tag, encoded.payload) == ("OrderV2", b"v2")
    assert registry.headers_for(Order("o1", "O-1")) == Headers(WORKFLOW, None)
    assert registry.identity_for(Order("o1", "O-1")) == "o1"
    assert len(registry) == 3


def test_register_with_headers_replaces_the_headers_extractor() -> None:
    registry = make_registry()
    other = uuid.uuid4()
    registry.register_with_headers(Order, "Order", encode_order, lambda m: Headers(other, other))
    assert registry.headers_for(Order("o1", "O-1")) == Headers(other, other)
    assert registry.identity_for(Order("o1", "O-1")) == "o1"  # identity kept


def test_register_headers_and_identity_do_nothing_for_an_unregistered_type() -> None:
    registry = make_registry()
    assert registry.register_headers(Unknown, lambda m: Headers(WORKFLOW, None)) is False
    assert registry.register_identity(Unknown, message_id) is False
    assert not registry.contains(Unknown) and len(registry) == 3
    assert registry.register_headers(Fill, lambda m: Headers(WORKFLOW, None)) is True
    assert registry.headers_for(Fill("f", "O", "V")) == Headers(WORKFLOW, None)


def test_encoder_payload_type_overrides_the_registered_tag() -> None:
    registry = EncoderRegistry()
    registry.register(Order, "Envelope", lambda m: EncodedPayload(b"x", (), payload_type="Inner"))
    assert registry.encode(Order("o", "O"))[0] == "Inner"  # type: ignore[index]


def test_encoder_failures_and_bad_results_are_capture_encode_errors() -> None:
    registry = make_registry()
    with pytest.raises(CaptureEncodeError) as failed:
        registry.encode(Broken("b"))
    assert failed.value.message_type == "Broken" and "cannot encode b" in str(failed.value)
    registry.register(Unknown, "Unknown", lambda m: b"not an EncodedPayload")
    with pytest.raises(CaptureEncodeError):
        registry.encode(Unknown("u"))
    registry.register_headers(Unknown, lambda m: "not headers")
    with pytest.raises(CaptureEncodeError):
        registry.headers_for(Unknown("u"))
    assert issubclass(CaptureEncodeError, EventStoreError)


@pytest.mark.parametrize(
    ("message_type", "tag", "encoder", "error"),
    [("Order", "Order", encode_order, TypeError), (Order, " ", encode_order, ValueError), (Order, "Order", None, TypeError)],
    ids=["not-a-type", "blank-tag", "not-callable"],
)
def test_registration_refuses_a_non_type_a_blank_tag_and_a_non_callable(message_type, tag, encoder, error) -> None:  # noqa: ANN001
    with pytest.raises(error):
        EncoderRegistry().register(message_type, tag, encoder)


# ---- adapter ----------------------------------------------------------------------------------
def test_capture_submits_one_entry_with_registry_headers_and_index_keys(lmdb_writer) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    adapter = BusCaptureAdapter(writer, make_registry())
    seq = adapter.capture("exec.command", Order("o1", "O-1", "hello"), 42)
    assert seq == 1 and adapter.high_watermark == 1
    entry = backend.scan_seq(1)
    assert (entry.topic, entry.payload_type, entry.ts_init) == ("exec.command", "Order", 42)
    assert entry.headers == Headers(WORKFLOW, None)
    assert msgspec.msgpack.decode(entry.payload, type=Order) == Order("o1", "O-1", "hello")
    assert backend.lookup_all(IndexKind.ClientOrderId, "O-1") == [1]
    assert adapter.submit_counter.value == 1


def test_explicit_headers_override_the_registry_headers(lmdb_writer) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    adapter = BusCaptureAdapter(writer, make_registry())
    given = Headers(uuid.uuid4(), uuid.uuid4())
    adapter.capture("t", Order("o1", "O-1"), 1, given)
    assert backend.scan_seq(1).headers == given


def test_unregistered_message_is_not_captured_and_nothing_is_written(lmdb_writer) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    adapter = BusCaptureAdapter(writer, make_registry())
    assert adapter.capture("t", Unknown("u"), 1) is None
    assert adapter.capture("t", SubOrder("s", "O-1"), 1) is None
    assert backend.high_watermark() == 0 and adapter.submit_counter.value == 0


def test_one_message_crossing_three_boundaries_is_one_entry(lmdb_writer) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    adapter = BusCaptureAdapter(writer, make_registry())
    fill = Fill("f1", "O-1", "V-1")
    assert adapter.capture("ExecEngine.process", fill, 1) == 1
    assert adapter.capture("Portfolio.update_order", fill, 2) is None
    assert adapter.capture("events.order.S-1", fill, 3) is None
    assert backend.high_watermark() == 1 and backend.lookup_all(IndexKind.VenueOrderId, "V-1") == [1]


def test_identity_window_holds_128_and_the_129th_evicts_the_oldest(lmdb_writer) -> None:  # noqa: ANN001
    writer, _ = lmdb_writer
    adapter = BusCaptureAdapter(writer, make_registry())
    assert RECENT_IDENTITY_CAPACITY == 128
    for n in range(128):
        assert adapter.capture("t", Order(oid(n), "O"), 1) is not None
    assert all(adapter.capture("t", Order(oid(n), "O"), 1) is None for n in range(128))  # all 128 remembered
    assert adapter.capture("t", Order(oid(128), "O"), 1) is not None  # the 129th evicts id-0
    assert adapter.capture("t", Order(oid(0), "O"), 1) is not None  # forgotten: captured again (evicts id-1)
    assert adapter.capture("t", Order(oid(2), "O"), 1) is None  # still in the window
    assert adapter.capture("t", Order(oid(1), "O"), 1) is not None  # evicted by id-0's return
    assert adapter.submit_counter.value == 128 + 3


def test_the_identity_is_recorded_before_encoding_so_duplicate_hops_are_not_encoded(lmdb_writer) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    registry = make_registry()
    calls: list[str] = []

    def counting(msg: Order) -> EncodedPayload:
        calls.append(msg.id)
        return encode_order(msg)

    registry.register(Order, "Order", counting)
    adapter = BusCaptureAdapter(writer, registry)
    for hop in ("RiskEngine.execute", "ExecEngine.execute", "events.order.S-1"):
        adapter.capture(hop, Order("o1", "O-1"), 1)
    assert calls == ["o1"] and backend.high_watermark() == 1


def test_a_failed_capture_forgets_the_identity_so_every_hop_is_refused(lmdb_writer) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    adapter = BusCaptureAdapter(writer, make_registry())
    for hop in ("hop-1", "hop-2", "hop-3"):  # never "not captured": a handler must not see it
        with pytest.raises(CaptureEncodeError):
            adapter.capture(hop, Broken("b1"), 1)
    for hop in ("hop-1", "hop-2"):  # the same for content the store refuses (an empty index key)
        with pytest.raises(CaptureEncodeError):
            adapter.capture(hop, Order("o-bad", ""), 1)
    assert backend.high_watermark() == 0 and not adapter.is_halted
    assert adapter.capture("hop-1", Order("o1", "O-1"), 1) == 1
    assert adapter.capture("hop-2", Order("o1", "O-1"), 1) is None


def test_an_encode_error_leaves_the_adapter_live_and_fires_no_halt(lmdb_writer) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    halts = HaltRecorder()
    adapter = BusCaptureAdapter(writer, make_registry(), halt=halts)
    with pytest.raises(CaptureEncodeError):
        adapter.capture("t", Broken("b1"), 1)
    assert not adapter.is_halted and halts.reasons == []
    assert adapter.capture("t", Order("o1", "O-1"), 2) == 1
    assert adapter.submit_counter.value == 1 and backend.high_watermark() == 1


@pytest.mark.parametrize("bad_key", ["", "k" * 10_000], ids=["empty", "too-long"])
def test_content_the_store_cannot_hold_is_an_encode_error_not_a_halt(lmdb_writer, bad_key: str) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    halts = HaltRecorder()
    adapter = BusCaptureAdapter(writer, make_registry(), halt=halts)
    with pytest.raises(CaptureEncodeError):
        adapter.capture("t", Order("o1", bad_key), 1)
    with pytest.raises(CaptureEncodeError):
        adapter.capture("bad*topic", Order("o2", "O-2"), 1)
    assert not adapter.is_halted and halts.reasons == [] and backend.high_watermark() == 0
    assert adapter.capture("t", Order("o3", "O-3"), 1) == 1


def test_a_closed_writer_halts_once_with_backend_error_and_later_captures_raise_halted(lmdb_writer) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    sink = CountingSink(writer)
    halts = HaltRecorder()
    adapter = BusCaptureAdapter(sink, make_registry(), halt=halts)
    assert adapter.capture("t", Order("o1", "O-1"), 1) == 1
    writer.close()  # closed under the adapter
    with pytest.raises(CaptureSubmitError) as failed:
        adapter.capture("t", Order("o2", "O-2"), 2)
    assert failed.value.reason == BackendError(2, "event store writer closed")  # RunEnded made it 2
    assert adapter.is_halted and halts.reasons == [failed.value.reason]
    submits = sink.submits
    for n in range(3):
        with pytest.raises(CaptureHalted) as halted:
            adapter.capture("t", Order(f"later-{n}", "O-3"), 3)
        assert halted.value.reason == failed.value.reason
    with pytest.raises(CaptureHalted):
        adapter.capture("t", Unknown("u"), 3)  # halted comes first, even for an unregistered type
    assert sink.submits == submits  # the writer was not touched again
    assert halts.reasons == [failed.value.reason]  # exactly once
    assert adapter.submit_counter.value == 1


def test_fail_stop_fires_the_halt_callback_only_on_the_first_call(lmdb_writer) -> None:  # noqa: ANN001
    writer, _ = lmdb_writer
    halts = HaltRecorder()
    adapter = BusCaptureAdapter(writer, make_registry(), halt=halts)
    first, second = WriterDied(0, "gone"), BackendError(0, "other")
    assert adapter.fail_stop(first) is True
    assert adapter.fail_stop(second) is False
    assert halts.reasons == [first] and adapter.halt_reason == first


def test_the_submit_counter_is_shared_and_counts_only_submitted_entries(lmdb_writer) -> None:  # noqa: ANN001
    writer, backend = lmdb_writer
    counter = SubmitCounter()
    orders = BusCaptureAdapter(writer, make_registry(), submit_counter=counter)
    fills = BusCaptureAdapter(writer, make_registry(), submit_counter=counter)
    orders.capture("t", Order("o1", "O-1"), 1)
    orders.capture("t", Order("o1", "O-1"), 1)  # duplicate
    orders.capture("t", Unknown("u"), 1)  # unregistered
    with pytest.raises(CaptureEncodeError):
        orders.capture("t", Broken("b"), 1)
    fills.capture("t", Fill("f1", "O-1", "V-1"), 2)
    assert counter.value == 2 == backend.high_watermark()
    assert orders.submit_counter is fills.submit_counter is counter


def test_accessors_report_registry_halt_state_and_durable_high_watermark(lmdb_writer) -> None:  # noqa: ANN001
    writer, _ = lmdb_writer
    registry = make_registry()
    adapter = BusCaptureAdapter(writer, registry)
    assert adapter.registry is registry and not adapter.is_halted and adapter.high_watermark == 0
    adapter.capture("t", Order("o1", "O-1"), 1)
    assert adapter.high_watermark == 1
    with pytest.raises(TypeError):
        BusCaptureAdapter(writer, object())  # type: ignore[arg-type]


# ---- adapter over the spawned writer ----------------------------------------------------------
def test_a_stopped_writer_halts_the_adapter_with_backpressure_stall_exactly_once(tmp_path: Path) -> None:
    config = WriterConfig(ring_bytes=1 << 16, max_record_bytes=4096, halt_threshold_s=0.2)
    writer_halts = HaltRecorder()
    writer = EventStoreWriter.spawn(tmp_path, manifest(), config, writer_halts)
    halts = HaltRecorder()
    adapter = BusCaptureAdapter(writer, make_registry(), halt=halts)
    pid = writer.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    captured = 0
    try:
        with pytest.raises(CaptureSubmitError) as failed:
            for n in range(100_000):
                adapter.capture("t", Order(oid(n), "O-1", "x" * 200), n)
                captured += 1
        reason = failed.value.reason
        assert isinstance(reason, BackpressureStall) and reason.accepted_high_watermark == captured
        assert halts.reasons == [reason]
        with pytest.raises(CaptureHalted):
            adapter.capture("t", Order("after", "O-1"), 1)
        assert halts.reasons == [reason]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert writer.wait_durable(captured, 15.0)  # nothing accepted before the halt is lost
    assert adapter.submit_counter.value == captured
    writer.abandon()


def test_a_killed_writer_halts_the_adapter_with_writer_died(tmp_path: Path) -> None:
    writer = EventStoreWriter.spawn(tmp_path, manifest(), None)
    halts = HaltRecorder()
    adapter = BusCaptureAdapter(writer, make_registry(), halt=halts)
    assert adapter.capture("t", Order("o1", "O-1"), 1) == 1
    assert writer.wait_durable(1, 15.0)
    pid = writer.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    import select

    ready, _, _ = select.select([writer.control_fd], [], [], 15.0)
    assert ready and writer.halted
    with pytest.raises(CaptureSubmitError) as failed:
        adapter.capture("t", Order("o2", "O-2"), 2)
    assert isinstance(failed.value.reason, WriterDied) and failed.value.reason.durable_high_watermark == 1
    with pytest.raises(CaptureHalted):
        adapter.capture("t", Order("o3", "O-3"), 3)
    assert len(halts.reasons) == 1
    writer.abandon()
