"""The NautilusTrader integration: every registered type round-trips, index keys and derived
headers follow their rules, and a real backtest (EMACross + EMACrossBracket shipped with
NautilusTrader) captured through the ring and the writer sidecar lands in the run file exactly
once, in dispatch order, before any handler sees it; a writer killed mid-run stops every later
order command before the venue."""

from __future__ import annotations

import select
import signal
import os
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nautilus_trader.common.component import TimeEvent
from nautilus_trader.core.uuid import UUID4
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
from nautilus_trader.execution.reports import ExecutionMassStatus, FillReport, OrderStatusReport, PositionStatusReport
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.events import (
    AccountState,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderInitialized,
    PositionClosed,
    PositionOpened,
)

from nes import (
    CaptureError,
    EventStoreConfig,
    EventStoreLifecycle,
    Headers,
    IndexKind,
    PayloadDecodeError,
    RunIdentity,
    UnknownPayloadType,
    verify_in_worker,
)
from nes.integrations.nautilus import (
    CAPTURED_TYPES,
    DataMessageMetadata,
    HeaderDeriver,
    decode_payload,
    default_registry,
    index_rule,
)
from nes.integrations.nautilus.backtest import run_ema_cross_backtest
from nes.integrations.nautilus.registry import DATA_MESSAGE_TYPES
from nes.halt import WriterDied
from nes.manifest import RunStatus
from nes.reader import EventStoreReader
from nes.backend.lmdb import LmdbBackend
from nes.writer import EntryDraft

sys.path.insert(0, str(Path(__file__).parent))
from nautilus_samples import payload_with, sample_messages  # noqa: E402

SAMPLES = sample_messages()
REGISTRY = default_registry()


def _u(value: Any) -> uuid.UUID:
    return uuid.UUID(value.value)


# ---- payloads -----------------------------------------------------------------------------------
@pytest.mark.parametrize("message_type", CAPTURED_TYPES, ids=lambda t: t.__name__)
def test_every_registered_type_round_trips_through_decode_payload(message_type: type) -> None:
    message = SAMPLES[message_type]
    payload_type, encoded = REGISTRY.encode(message)  # type: ignore[misc]
    assert payload_type == message_type.__name__
    decoded = decode_payload(payload_type, encoded.payload)
    assert type(decoded) is (DataMessageMetadata if message_type in DATA_MESSAGE_TYPES else message_type)
    if hasattr(message_type, "from_dict"):
        body = msgspec.msgpack.decode(encoded.payload)
        assert body == message_type.to_dict(message)  # named fields: the engine's own dict form
        assert decoded == message
        assert message_type.to_dict(decoded) == message_type.to_dict(message)
    elif message_type is TimeEvent:
        assert (decoded.name, decoded.id, decoded.ts_event, decoded.ts_init) == (
            message.name,
            message.id,
            message.ts_event,
            message.ts_init,
        )
    else:
        assert decoded.message_type == message_type.__name__ and decoded.id == message.id.value
        assert decoded.ts_init == message.ts_init
    assert REGISTRY.identity_for(message) == message.id


def test_decode_payload_refuses_unknown_types_and_damaged_payloads() -> None:
    with pytest.raises(UnknownPayloadType):
        decode_payload("NotAType", b"\x80")
    payload_type, encoded = REGISTRY.encode(SAMPLES[OrderFilled])  # type: ignore[misc]
    with pytest.raises(PayloadDecodeError):
        decode_payload(payload_type, encoded.payload[:-3])
    with pytest.raises(PayloadDecodeError):
        decode_payload("OrderAccepted", encoded.payload)  # another type's fields
    _, data = REGISTRY.encode(SAMPLES[DATA_MESSAGE_TYPES[0]])  # type: ignore[misc]
    with pytest.raises(PayloadDecodeError):
        decode_payload(DATA_MESSAGE_TYPES[1].__name__, data.payload)  # names another type
    with pytest.raises(PayloadDecodeError):
        decode_payload("TimeEvent", msgspec.msgpack.encode({"name": "x"}))


def _keys(message: Any) -> list[tuple[IndexKind, str]]:
    _, encoded = REGISTRY.encode(message)  # type: ignore[misc]
    return [(key.kind, key.key) for key in encoded.index_keys]


C, V = IndexKind.ClientOrderId, IndexKind.VenueOrderId


def test_index_keys_follow_the_spec_rules() -> None:
    submit = SAMPLES[SubmitOrder]
    assert _keys(submit) == [(C, submit.order.client_order_id.value)]
    order_list = SAMPLES[SubmitOrderList]
    assert _keys(order_list) == [(C, o.client_order_id.value) for o in order_list.order_list.orders]
    for command_type in (ModifyOrder, CancelOrder, QueryOrder):
        command = SAMPLES[command_type]
        assert _keys(command) == [(C, command.client_order_id.value), (V, command.venue_order_id.value)]
    batch = SAMPLES[BatchCancelOrders]
    assert _keys(batch) == [(C, batch.cancels[0].client_order_id.value), (V, batch.cancels[0].venue_order_id.value)]
    for no_keys in (CancelAllOrders, QueryAccount, AccountState, PositionStatusReport, TimeEvent, *DATA_MESSAGE_TYPES):
        assert _keys(SAMPLES[no_keys]) == [], no_keys.__name__
    accepted = SAMPLES[OrderAccepted]
    assert _keys(accepted) == [(C, accepted.client_order_id.value), (V, accepted.venue_order_id.value)]
    initialized = SAMPLES[OrderInitialized]
    assert _keys(initialized) == [(C, initialized.client_order_id.value)]
    opened, closed = SAMPLES[PositionOpened], SAMPLES[PositionClosed]
    assert _keys(opened) == [(C, opened.opening_order_id.value)]
    assert _keys(closed) == [(C, closed.opening_order_id.value), (C, closed.closing_order_id.value)]
    for report_type in (OrderStatusReport, FillReport):
        assert _keys(SAMPLES[report_type]) == [(V, "V-7"), (C, "O-7")]
    assert _keys(SAMPLES[ExecutionMassStatus]) == [(V, "V-7"), (C, "O-7")]  # deduplicated
    assert all(isinstance(index_rule(t), str) for t in CAPTURED_TYPES)


# ---- headers ------------------------------------------------------------------------------------
def _headers(registry: Any, message: Any) -> Headers:
    headers = registry.headers_for(message)
    assert headers is not None
    return headers  # type: ignore[no-any-return]


def test_headers_follow_an_orders_workflow_and_causes() -> None:
    from nautilus_trader.model.events import OrderPendingCancel
    from nautilus_trader.test_kit.stubs.commands import TestCommandStubs
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from nautilus_trader.test_kit.stubs.execution import TestExecStubs
    from nautilus_samples import INSTRUMENT

    registry = default_registry()
    order = TestExecStubs.limit_order(instrument=INSTRUMENT)
    assert _headers(registry, order.init_event) == Headers.empty()  # the root of the workflow
    submit = TestCommandStubs.submit_order_command(order)
    workflow = _u(submit.id)
    assert _headers(registry, submit) == Headers(workflow, _u(order.init_id))
    submitted = TestEventStubs.order_submitted(order)
    assert _headers(registry, submitted) == Headers(workflow, workflow)
    order.apply(submitted)
    accepted = TestEventStubs.order_accepted(order)
    order.apply(accepted)
    assert _headers(registry, accepted) == Headers(workflow, workflow)
    cancel = TestCommandStubs.cancel_order_command(order=order)
    assert _headers(registry, cancel) == Headers(workflow, None)
    assert _headers(registry, TestEventStubs.order_canceled(order)) == Headers(workflow, _u(cancel.id))
    from nautilus_trader.model.identifiers import PositionId

    fill = TestEventStubs.order_filled(order, instrument=INSTRUMENT, position_id=PositionId("P-1"))
    assert _headers(registry, fill) == Headers(workflow, _u(cancel.id))
    from nautilus_trader.model.position import Position

    position_event = TestEventStubs.position_opened(Position(INSTRUMENT, fill))
    assert _headers(registry, position_event) == Headers(workflow, _u(fill.id))
    cancel_all = CancelAllOrders(order.trader_id, order.strategy_id, order.instrument_id, order.side, UUID4(), 9)
    assert _headers(registry, cancel_all) == Headers.empty()
    pending = OrderPendingCancel(
        order.trader_id, order.strategy_id, order.instrument_id, order.client_order_id, order.venue_order_id,
        order.account_id, UUID4(), 10, 10,
    )
    assert _headers(registry, pending) == Headers(workflow, _u(cancel_all.id))


def test_headers_of_data_requests_and_responses_link_them() -> None:
    registry = default_registry()
    from nautilus_trader.data.messages import DataResponse, RequestBars

    request, response = SAMPLES[RequestBars], SAMPLES[DataResponse]
    assert _headers(registry, request) == Headers(_u(request.id), None)
    assert _headers(registry, response) == Headers(_u(response.correlation_id), None)
    assert _headers(registry, SAMPLES[AccountState]) == Headers.empty()


def test_the_header_deriver_forgets_the_oldest_orders_beyond_its_bound() -> None:
    from nautilus_trader.test_kit.stubs.commands import TestCommandStubs
    from nautilus_trader.test_kit.stubs.execution import TestExecStubs
    from nautilus_samples import INSTRUMENT

    deriver = HeaderDeriver(max_orders=2)
    registry = default_registry(deriver)
    orders = [TestExecStubs.limit_order(instrument=INSTRUMENT, client_order_id=_coid(n)) for n in range(3)]
    commands = [TestCommandStubs.submit_order_command(order) for order in orders]
    for command in commands:
        registry.headers_for(command)
    assert deriver.workflow_of("O-0") is None
    assert deriver.workflow_of("O-2") == _u(commands[2].id)
    with pytest.raises(ValueError):
        HeaderDeriver(max_orders=0)


def test_header_uuids_equal_the_standard_librarys_and_odd_ids_give_no_header() -> None:
    """The deriver builds header UUIDs from the engine's UUID4 text without `uuid.UUID(text)`:
    the result must be the same UUID in every respect, and text that is not a canonical
    version-4 UUID must give None (an empty header), never a wrong one."""
    import pickle

    from nes.integrations.nautilus.headers import _uuid

    for _ in range(500):
        engine_id = UUID4()
        converted, expected = _uuid(engine_id), uuid.UUID(engine_id.value)
        assert converted == expected and hash(converted) == hash(expected) and str(converted) == str(expected)
        assert converted.version == 4 and converted.variant == uuid.RFC_4122 and converted.is_safe == expected.is_safe
        assert pickle.loads(pickle.dumps(converted)) == expected and Headers(converted, None).correlation_id == expected

    class Text:
        def __init__(self, value: object) -> None:
            self.value = value

    good = "12345678-1234-4234-8234-123456789abc"
    assert _uuid(Text(good)) == uuid.UUID(good)
    for bad in (
        "",
        good[:-1],
        good + "0",
        "12345678-1234-1234-8234-123456789abc",  # version 1
        "12345678-1234-4234-c234-123456789abc",  # not the RFC 4122 variant
        "+2345678-1234-4234-8234-123456789abc",  # int() takes a sign
        "1_345678-1234-4234-8234-123456789abc",  # and underscores
        "\u0661" + good[1:],  # and non-ASCII digits
        "g2345678-1234-4234-8234-123456789abc",
        "12345678123442348234123456789abc----",  # dashes moved: still 32 hex digits, as uuid.UUID reads it
        None,
        12345,
    ):
        expected = None
        if isinstance(bad, str) and bad.replace("-", "").isalnum() and bad.isascii() and len(bad) == 36:
            try:
                parsed = uuid.UUID(bad)
                expected = parsed if parsed.version == 4 and parsed.variant == uuid.RFC_4122 else None
            except ValueError:
                pass
        assert _uuid(Text(bad)) == expected, bad
    assert _uuid(None) is None and _uuid(object()) is None


def _coid(n: int) -> Any:
    from nautilus_trader.model.identifiers import ClientOrderId

    return ClientOrderId(f"O-{n}")


# ---- a real backtest ------------------------------------------------------------------------------
class RecordingSession:
    """The real session, recording which message ids reached `submit` (the payload's own id)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.submitted: dict[str, int] = {}

    def submit(self, draft: EntryDraft) -> int:
        seq = self.session.submit(draft)
        body = msgspec.msgpack.decode(draft.payload)
        ident = body.get("event_id") or body.get("command_id") or body.get("report_id") or body.get("id")
        self.submitted[ident] = seq
        return seq  # type: ignore[no-any-return]

    @property
    def high_watermark(self) -> int:
        return self.session.high_watermark  # type: ignore[no-any-return]

    @property
    def halt_reason(self) -> Any:
        return self.session.halt_reason


def _open(tmp_path: Path, instance: str = "bt") -> tuple[EventStoreConfig, Any]:
    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id=instance))
    return config, EventStoreLifecycle(config).open()


def _entries(path: Path) -> list[Any]:
    backend = LmdbBackend.open_sealed_file(path)
    try:
        reader = EventStoreReader(backend)
        return list(reader.scan_range(1, reader.high_watermark()))
    finally:
        backend.close()


def test_a_captured_backtest_lands_every_command_and_event_once_in_dispatch_order(tmp_path: Path) -> None:
    config, session = _open(tmp_path)
    recording = RecordingSession(session)
    observed: list[tuple[str, bool]] = []

    def observer(msg: Any) -> None:  # a subscriber: the store must already hold the message
        observed.append((type(msg).__name__, msg.id.value in recording.submitted))

    def on_engine(engine: Any) -> None:
        for pattern in ("events.order.*", "events.position.*", "events.account.*", "events.fills.*"):
            engine.kernel.msgbus.subscribe(pattern, observer)

    from nes.capture import BusCaptureAdapter

    adapter = BusCaptureAdapter(recording, default_registry())
    engine, result = run_ema_cross_backtest(adapter=adapter, on_engine=on_engine, dispose=False)
    final = session.close()
    assert final is not None and result.error is None

    # the backtest traded for real
    cache = engine.cache
    orders = cache.orders()
    assert result.fills > 20 and result.positions_closed >= 1
    event_kinds = Counter(type(e).__name__ for o in orders for e in o.events)
    assert event_kinds["OrderAccepted"] > 0 and event_kinds["OrderCanceled"] > 0 and event_kinds["OrderFilled"] > 20

    # every observed message had been submitted before the subscriber saw it
    assert len(observed) > 100 and all(seen for _, seen in observed), [o for o in observed if not o[1]][:5]

    entries = _entries(session.path)
    assert entries[0].payload_type == "RunStarted" and entries[-1].payload_type == "RunEnded"
    captured = entries[1:-1]
    assert len(captured) == result.captured == adapter.submit_counter.value
    stamps = [e.ts_init for e in captured]  # the engine clock at capture: dispatch order is time order
    assert stamps == sorted(stamps) and stamps[0] < stamps[-1]
    decoded = [(e, decode_payload(e.payload_type, e.payload)) for e in captured]
    seq_of: dict[str, list[int]] = {}
    for entry, message in decoded:
        seq_of.setdefault(message.id if isinstance(message, DataMessageMetadata) else message.id.value, []).append(
            entry.seq
        )
    assert all(len(seqs) == 1 for seqs in seq_of.values()), "a message was captured twice"

    # every order event of every order, once, in the order's own event order
    # every order event of every order, once (Strategy.cancel_all_orders' in-place
    # OrderPendingCancel events too: the tap captures them right after their CancelAllOrders)
    missing = [e for o in orders for e in o.events if e.id.value not in seq_of]
    assert missing == []
    cancel_alls = {_u(m.id) for _, m in decoded if isinstance(m, CancelAllOrders)}
    pending = [(e, m) for e, m in decoded if type(m).__name__ == "OrderPendingCancel"]
    assert pending and all(e.headers.causation_id in cancel_alls for e, _ in pending)
    for order in orders:
        seqs = [seq_of[event.id.value][0] for event in order.events]
        assert seqs == sorted(seqs), order.client_order_id
        by_client = set(recording_lookup(session.path, IndexKind.ClientOrderId, order.client_order_id.value))
        assert set(seqs) <= by_client
        if order.venue_order_id is not None:
            by_venue = recording_lookup(session.path, IndexKind.VenueOrderId, order.venue_order_id.value)
            assert by_venue and set(by_venue) <= by_client
    # every order arrived with exactly one submit command, after its OrderInitialized
    submitted_orders: Counter[str] = Counter()
    for entry, message in decoded:
        if isinstance(message, SubmitOrder):
            submitted_orders[message.order.client_order_id.value] += 1
            assert seq_of[message.order.init_id.value][0] < entry.seq
            assert entry.topic == "RiskEngine.execute"  # captured at its first hop
        elif isinstance(message, SubmitOrderList):
            for order in message.order_list.orders:
                submitted_orders[order.client_order_id.value] += 1
    assert submitted_orders == Counter({o.client_order_id.value: 1 for o in orders})
    assert any(isinstance(m, CancelAllOrders) for _, m in decoded)

    # position and account events: the ones the engine published, each once
    position_events = [m for _, m in decoded if isinstance(m, (PositionOpened, PositionClosed))]
    assert sum(isinstance(m, PositionOpened) for m in position_events) >= 2
    assert sum(isinstance(m, PositionClosed) for m in position_events) >= 2
    account = cache.account_for_venue(orders[0].instrument_id.venue)
    assert all(len(seq_of[e.id.value]) == 1 for e in account.events)
    observed_kinds = Counter(kind for kind, _ in observed)
    assert observed_kinds["AccountState"] > 0 and observed_kinds["PositionClosed"] > 0

    # headers answer "this order's workflow" and "why"
    by_correlation: dict[uuid.UUID, set[int]] = {}
    for entry, _ in decoded:
        if entry.headers.correlation_id is not None:
            by_correlation.setdefault(entry.headers.correlation_id, set()).add(entry.seq)
    for entry, message in decoded:
        if isinstance(message, SubmitOrder):
            order = cache.order(message.order.client_order_id)
            workflow = by_correlation[_u(message.id)]
            assert entry.headers == Headers(_u(message.id), _u(order.init_id))  # caused by its init event
            later = {seq_of[e.id.value][0] for e in order.events[1:] if e.id.value in seq_of}
            assert later and later <= workflow  # every event after the init event is in the workflow
    for entry, message in decoded:
        if isinstance(message, PositionClosed):
            cause = [m for e, m in decoded if e.seq < entry.seq and isinstance(m, OrderFilled) and m.id.value == str(entry.headers.causation_id)]
            assert len(cause) == 1 and isinstance(cause[0], OrderFilled)
            assert entry.headers.correlation_id is not None
    verdict = verify_in_worker(session.path, config.verifier_timeout_s)
    assert verdict.is_clean(), verdict.summary_line()
    engine.dispose()


def recording_lookup(path: Path, kind: IndexKind, key: str) -> list[int]:
    backend = LmdbBackend.open_sealed_file(path)
    try:
        return EventStoreReader(backend).lookup_all(kind, key)
    finally:
        backend.close()


def test_a_writer_killed_mid_backtest_stops_every_later_order_before_the_venue(tmp_path: Path) -> None:
    config, session = _open(tmp_path, "halt")
    halts: list[Any] = []
    state: dict[str, Any] = {"fills": 0, "at_halt": None}

    def venue_orders(engine: Any) -> set[str]:
        """Client order ids that reached the execution client (it emits OrderSubmitted)."""
        return {
            o.client_order_id.value
            for o in engine.cache.orders()
            if any(type(e).__name__ == "OrderSubmitted" for e in o.events)
        }

    def kill_writer_on_tenth_fill(engine: Any) -> Any:
        def on_fill(msg: Any) -> None:
            if type(msg) is OrderFilled:
                state["fills"] += 1
                if state["fills"] == 10:
                    os.kill(session.writer.writer_pid, signal.SIGKILL)
                    ready, _, _ = select.select([session.writer.control_fd], [], [], 15.0)
                    assert ready and session.halted
                    state["at_halt"] = venue_orders(engine)
                    state["orders_at_halt"] = len(engine.cache.orders())
                    # the engine's own call path: a strategy submitting after the halt is refused
                    strategy = engine.trader.strategies()[0]
                    for attempt in ("first", "second"):
                        order = strategy.order_factory.market(
                            instrument_id=msg.instrument_id, order_side=OrderSide.BUY, quantity=Quantity.from_int(100_000)
                        )
                        try:
                            strategy.submit_order(order)
                        except CaptureError as exc:
                            state[attempt] = (type(exc).__name__, order.status_string())

        return on_fill

    from nes.capture import BusCaptureAdapter

    adapter = BusCaptureAdapter(session, default_registry(), halt=halts.append)

    def on_engine(engine: Any) -> None:
        engine.kernel.msgbus.subscribe("events.fills.*", kill_writer_on_tenth_fill(engine))

    engine, result = run_ema_cross_backtest(adapter=adapter, on_engine=on_engine, dispose=False, raise_errors=False)
    try:
        assert state["at_halt"] is not None, "the backtest never reached its tenth fill"
        assert result.error is not None and "Capture" in result.error
        assert adapter.is_halted and len(halts) == 1 and isinstance(halts[0], WriterDied)
        assert venue_orders(engine) == state["at_halt"], "an order reached the venue after the halt"
        assert state["first"] == ("CaptureSubmitError", "INITIALIZED")  # the submit that met the halt
        assert state["second"] == ("CaptureHalted", "INITIALIZED")  # every later one
        assert result.fills >= 10
    finally:
        engine.dispose()
        session.close()
    # the run was left Running; the next boot seals it, and what was durable verifies clean
    recovered = EventStoreLifecycle(config).open()
    recovered.close()
    assert _status(session.path) is RunStatus.CrashedRecovered
    verdict = verify_in_worker(session.path, config.verifier_timeout_s)
    assert verdict.is_clean(), verdict.summary_line()


def _status(path: Path) -> RunStatus:
    backend = LmdbBackend.open_sealed_file(path)
    try:
        return backend.manifest().status
    finally:
        backend.close()


def test_capture_errors_are_event_store_errors() -> None:
    from nes import EventStoreError

    assert issubclass(CaptureError, EventStoreError)
    assert issubclass(PayloadDecodeError, EventStoreError)


# ---- the demo and the optional extra ------------------------------------------------------------
def test_nes_demo_nautilus_runs_the_captured_backtest_and_verifies_it_clean(tmp_path: Path, capsys: Any) -> None:
    from nes.cli import main

    assert main(["demo", "--dir", str(tmp_path), "--orders", "50", "--nautilus", "--quotes", "4000"]) == 0
    out = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if "  " in line)
    assert int(out["nautilus_captured_commands"]) > 0 and int(out["nautilus_captured_events"]) > 0
    assert int(out["nautilus_positions_closed"]) > 0 and out["nautilus_verify_clean"].strip() == "True"


_BLOCK_NAUTILUS = "import sys; sys.modules['nautilus_trader'] = None; "


def _python(code: str) -> Any:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    return subprocess.run([sys.executable, "-c", _BLOCK_NAUTILUS + code], capture_output=True, text=True, env=env, timeout=60)


def test_the_core_imports_without_the_nautilus_extra() -> None:
    done = _python("import nes, nes.capture, nes.demo, nes.cli, nes.kernel; print('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    missing = _python("import nes.integrations.nautilus")
    assert missing.returncode == 1 and "IntegrationUnavailable" in missing.stderr and "nes-eventstore[nautilus]" in missing.stderr


def test_nes_demo_nautilus_without_the_extra_exits_2_with_one_line() -> None:
    done = _python("from nes.cli import main; sys.exit(main(['demo', '--nautilus']))")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "pip install 'nes-eventstore[nautilus]'" in done.stderr


def test_snapshot_anchors_taken_mid_backtest_cover_every_entry_captured_before_them(tmp_path: Path) -> None:
    from nes import compute_snapshot_content_hash

    config, session = _open(tmp_path, "anchors")
    anchors: list[tuple[Any, int, int]] = []

    def on_snapshot(engine: Any, index: int) -> None:  # on the engine thread, mid-run
        submitted = session.writer.next_seq - 1
        blob = f"cache at bar {index} with {len(engine.cache.orders())} orders".encode()
        anchor = session.record_snapshot_anchor(f"snapshots/{index}.bin", compute_snapshot_content_hash(blob))
        anchors.append((anchor, submitted, len(engine.cache.orders())))

    _, result = run_ema_cross_backtest(session, quotes=4000, snapshot_every=300, on_snapshot=on_snapshot)
    final = session.close()
    assert result.error is None and final is not None
    assert len(anchors) == 3  # 1000 one-minute bars
    assert all(anchor.high_watermark == submitted for anchor, submitted, _ in anchors)
    assert anchors[0][1] < anchors[1][1] < anchors[2][1] < final
    backend = LmdbBackend.open_sealed_file(session.path)
    try:
        plan = EventStoreReader(backend).snapshot_replay_plan()
        assert (plan.from_seq, plan.to_seq) == (anchors[-1][1] + 1, final)
    finally:
        backend.close()


def test_the_python_blocks_of_docs_capture_md_run_verbatim(tmp_path: Path, monkeypatch: Any) -> None:
    import re

    monkeypatch.chdir(tmp_path)
    text = (Path(__file__).parent.parent / "docs" / "capture.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/capture.md", "exec"), {})


# ---- the tap on a live node ----------------------------------------------------------------------
def test_the_tap_attaches_to_a_live_trading_node_captures_reports_and_detaches(tmp_path: Path) -> None:
    from nautilus_trader.config import LoggingConfig, TradingNodeConfig
    from nautilus_trader.live.node import TradingNode
    from nautilus_trader.model.identifiers import TraderId

    from nes import EventStoreLifecycleOptions, TapAttachError
    from nes.capture import BusCaptureAdapter
    from nes.integrations.nautilus import attach_tap

    node = TradingNode(config=TradingNodeConfig(trader_id=TraderId("LIVE-001"), logging=LoggingConfig(log_level="ERROR")))
    node.build()
    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id="live"))
    session = EventStoreLifecycle(config, options=EventStoreLifecycleOptions(in_process=True)).open()
    try:
        adapter = BusCaptureAdapter(session, default_registry())
        tap = attach_tap(node, adapter)
        assert {"ExecEngine.reconcile_execution_report", "ExecEngine.reconcile_execution_mass_status"} <= set(
            tap.tapped_endpoints
        )
        assert tap.untapped_endpoints == []
        with pytest.raises(TapAttachError):
            tap.attach()
        bus = node.kernel.msgbus
        bus.send("ExecEngine.reconcile_execution_report", SAMPLES[OrderStatusReport])
        bus.send("ExecEngine.reconcile_execution_mass_status", SAMPLES[ExecutionMassStatus])
        assert adapter.submit_counter.value == 2
        tap.detach()
        assert not tap.attached and set(bus.endpoints()) >= {"RiskEngine.execute", "ExecEngine.execute"}
        bus.send("ExecEngine.reconcile_execution_report", sample_messages()[OrderStatusReport])
        assert adapter.submit_counter.value == 2  # detached: the original handler only
        with pytest.raises(TapAttachError):
            attach_tap(node, adapter, endpoint_handlers={"RiskEngine.execute": lambda msg: None})
        assert set(bus.endpoints()) >= {"RiskEngine.execute", "ExecEngine.execute"}  # a failed attach restores
    finally:
        session.close()
        node.dispose()
    entries = _entries(session.path)
    assert [e.payload_type for e in entries[1:-1]] == ["OrderStatusReport", "ExecutionMassStatus"]
    assert [e.topic for e in entries[1:-1]] == ["ExecEngine.reconcile_execution_report", "ExecEngine.reconcile_execution_mass_status"]


def test_headers_of_order_lists_and_batch_cancels() -> None:
    from nautilus_trader.model.orders import OrderList
    from nautilus_trader.test_kit.stubs.commands import TestCommandStubs
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from nautilus_trader.test_kit.stubs.execution import TestExecStubs
    from nautilus_trader.model.identifiers import OrderListId
    from nautilus_samples import INSTRUMENT

    registry = default_registry()
    first = TestExecStubs.limit_order(instrument=INSTRUMENT, client_order_id=_coid(1))
    second = TestExecStubs.limit_order(instrument=INSTRUMENT, client_order_id=_coid(2))
    submit_list = TestCommandStubs.submit_order_list_command(OrderList(OrderListId("OL-9"), [first, second]))
    workflow = _u(submit_list.id)
    assert _headers(registry, submit_list) == Headers(workflow, None)
    for order in (first, second):
        assert _headers(registry, TestEventStubs.order_submitted(order)) == Headers(workflow, workflow)
        order.apply(TestEventStubs.order_submitted(order))
        order.apply(TestEventStubs.order_accepted(order))
    batch = BatchCancelOrders(
        first.trader_id, first.strategy_id, first.instrument_id,
        [TestCommandStubs.cancel_order_command(order=first), TestCommandStubs.cancel_order_command(order=second)],
        UUID4(), 5,
    )
    assert _headers(registry, batch) == Headers.empty()  # two workflows: none of its own
    for order in (first, second):
        assert _headers(registry, TestEventStubs.order_canceled(order)) == Headers(workflow, _u(batch.id))


def test_a_message_the_tap_cannot_capture_never_reaches_the_endpoint_handler_or_subscriber(tmp_path: Path) -> None:
    from nes import CaptureEncodeError, EncodedPayload, EventStoreLifecycleOptions
    from nes.capture import BusCaptureAdapter
    from nes.integrations.nautilus import attach_tap
    from nes.integrations.nautilus.backtest import build_ema_cross_engine

    engine = build_ema_cross_engine(quotes=10, bracket=False)
    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id="refuse"))
    session = EventStoreLifecycle(config, options=EventStoreLifecycleOptions(in_process=True)).open()
    registry = default_registry()
    registry.register(OrderCanceled, "OrderCanceled", lambda msg: EncodedPayload(b"", ({"not": "an IndexKey"},)))  # type: ignore[arg-type]
    adapter = BusCaptureAdapter(session, registry)
    seen: list[tuple[str, Any, int]] = []
    bus = engine.kernel.msgbus

    def handler(msg: Any) -> None:  # records what the store held when the handler ran
        seen.append(("endpoint", msg, adapter.submit_counter.value))

    def subscriber(msg: Any) -> None:
        seen.append(("subscriber", msg, adapter.submit_counter.value))

    bus.register("Test.endpoint", handler)
    bus.subscribe("test.topic", subscriber)
    tap = attach_tap(engine, adapter, endpoint_handlers={"Test.endpoint": handler})
    try:
        bad, good = SAMPLES[OrderCanceled], SAMPLES[OrderAccepted]
        for send in (lambda m: bus.send("Test.endpoint", m), lambda m: bus.publish("test.topic", m)):
            with pytest.raises(CaptureEncodeError):
                send(bad)
        assert seen == [] and not adapter.is_halted  # refused, and the adapter is still live
        bus.send("Test.endpoint", good)
        bus.publish("test.topic", good)  # the same message again: a duplicate hop
        bus.publish("test.topic", SAMPLES[OrderFilled])
        assert [(kind, count) for kind, _, count in seen] == [("endpoint", 1), ("subscriber", 1), ("subscriber", 2)]
    finally:
        tap.detach()
        session.close()
        engine.dispose()
    entries = _entries(session.path)
    assert [(e.topic, e.payload_type) for e in entries[1:-1]] == [
        ("Test.endpoint", "OrderAccepted"),
        ("events.order." + SAMPLES[OrderFilled].strategy_id.value, "OrderFilled"),
    ]


def test_data_requests_and_responses_are_captured_at_their_endpoints_with_linked_headers(tmp_path: Path) -> None:
    from nautilus_trader.data.messages import DataResponse, RequestBars

    from nes import EventStoreLifecycleOptions
    from nes.capture import BusCaptureAdapter
    from nes.integrations.nautilus import attach_tap
    from nes.integrations.nautilus.backtest import build_ema_cross_engine

    engine = build_ema_cross_engine(quotes=10, bracket=False)
    config = EventStoreConfig(base_dir=str(tmp_path), identity=RunIdentity(instance_id="data"))
    session = EventStoreLifecycle(config, options=EventStoreLifecycleOptions(in_process=True)).open()
    adapter = BusCaptureAdapter(session, default_registry())
    tap = attach_tap(engine, adapter)
    request, response = SAMPLES[RequestBars], SAMPLES[DataResponse]
    try:
        engine.kernel.msgbus.request("DataEngine.request", request)
        engine.kernel.msgbus.send("DataEngine.response", response)
    finally:
        tap.detach()
        session.close()
        engine.dispose()
    entries = _entries(session.path)[1:-1]
    assert [(e.topic, e.payload_type) for e in entries] == [
        ("DataEngine.request", "RequestBars"),
        ("DataEngine.response", "DataResponse"),
    ]
    assert entries[0].headers == Headers(_u(request.id), None)
    assert entries[1].headers == Headers(_u(response.correlation_id), None)
    metadata = decode_payload("DataResponse", entries[1].payload)
    assert metadata.data_count == 2 and metadata.correlation_id == response.correlation_id.value


def test_decode_payload_of_damaged_bytes_raises_only_payload_decode_error() -> None:
    import random

    rng = random.Random(10)
    for message_type in CAPTURED_TYPES:
        payload_type, encoded = REGISTRY.encode(SAMPLES[message_type])  # type: ignore[misc]
        payload = bytearray(encoded.payload)
        for _ in range(30):
            damaged = bytearray(payload)
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            cut = bytes(damaged[: rng.randint(0, len(damaged))]) if rng.random() < 0.3 else bytes(damaged)
            try:
                decode_payload(payload_type, cut)
            except PayloadDecodeError:
                pass
    with pytest.raises(PayloadDecodeError):
        decode_payload("OrderFilled", b"\x91" * 100_000 + b"\xc0")  # deeply nested arrays


def test_hostile_payload_fields_never_abort_the_decoding_process() -> None:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    child = Path(__file__).parent / "decode_fuzz_child.py"
    done = subprocess.run([sys.executable, str(child)], capture_output=True, text=True, env=env, timeout=300)
    last = done.stderr.strip().splitlines()[-3:] if done.stderr else []
    assert done.returncode == 0, f"decoding aborted (rc={done.returncode}) at {last}"
    assert done.stdout.startswith("decoded ") and int(done.stdout.split()[1]) > 3000


def test_every_enum_field_of_the_captured_payloads_is_checked_before_from_dict() -> None:
    import enum

    from nautilus_trader.model import enums as nautilus_enums

    from nes.integrations.nautilus.registry import _ENUM_FIELDS, _FREE_TEXT_KEYS, _OPAQUE_KEYS

    names = {m.name for e in vars(nautilus_enums).values() if isinstance(e, type) and issubclass(e, enum.Enum) for m in e}

    def walk(obj: Any, key: str | None) -> Any:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k not in _OPAQUE_KEYS:
                    yield from walk(v, k)
        elif isinstance(obj, list):
            for v in obj:
                yield from walk(v, key)
        elif isinstance(obj, str) and key not in _FREE_TEXT_KEYS and key != "type":
            yield key, obj

    unchecked = set()
    for message_type in CAPTURED_TYPES:
        if hasattr(message_type, "to_dict"):
            for key, value in walk(message_type.to_dict(SAMPLES[message_type]), None):
                if value in names and key not in _ENUM_FIELDS:
                    unchecked.add((message_type.__name__, key, value))
    assert unchecked == set()


def test_nes_trace_answers_why_and_which_workflow_on_a_captured_backtest(tmp_path: Path) -> None:
    from nes import RunFile, causation_chain, trace_order

    _, session = _open(tmp_path, "trace")
    run_ema_cross_backtest(session, quotes=2000, bracket=False)
    session.close()
    entries = _entries(session.path)
    closed = next(e for e in entries if e.payload_type == "PositionClosed")
    with RunFile(session.path) as run_file:
        chain = causation_chain(run_file, closed.seq)
        assert [e.payload_type for e in chain.entries] == ["OrderInitialized", "SubmitOrder", "OrderFilled", "PositionClosed"]
        assert chain.missing_cause is None and not chain.cycle
        closing = decode_payload("PositionClosed", closed.payload).closing_order_id.value
        trace = trace_order(run_file, closing)
        kinds = [node.entry.payload_type for node in trace.nodes]
        assert kinds[:2] == ["OrderInitialized", "SubmitOrder"] and "OrderFilled" in kinds and "PositionClosed" in kinds


def _refusal(check: Any, body: Any) -> str | None:
    try:
        check(body)
    except ValueError as exc:
        return str(exc) or "refused"
    return None


def test_the_fast_payload_check_refuses_exactly_what_the_careful_walk_refuses() -> None:
    """`_check_untrusted` vouches for most payloads from one JSON encoding; whatever it accepts
    the careful field-by-field walk must accept too, and what the walk refuses it must refuse:
    every text leaf and key of every registered type's sample, replaced by hostile values."""
    from nes.integrations.nautilus.registry import MAX_FIELD_CHARS, _check_untrusted, _check_value

    hostile: list[Any] = [
        "", "ok", "a-b", "bad", "\x00", "\x7f", "\t", 'q"uote', "back\\slash", "é", "x" * MAX_FIELD_CHARS,
        "x" * (MAX_FIELD_CHARS + 1), None, 7, 1.5, True, b"raw", [1, "\x01"], ["BUY", "NOPE"], {"k": "\x02"}, {1: "v"},
        {"order_side": "SIDEWAYS"}, {"trader_id": "nohyphen"}, {"x" * (MAX_FIELD_CHARS + 1): 1},
    ]
    samples, registry = sample_messages(), default_registry()
    compared = refused = 0
    for message_type in CAPTURED_TYPES:
        _, encoded = registry.encode(samples[message_type])
        body = msgspec.msgpack.decode(encoded.payload)
        assert _refusal(_check_untrusted, body) is None and _refusal(_check_value, body) is None

        def paths(obj: Any, path: list[Any]) -> Any:
            if isinstance(obj, dict):
                for key, value in obj.items():
                    yield [*path, key]
                    yield from paths(value, [*path, key])
            elif isinstance(obj, list):
                for index, value in enumerate(obj):
                    yield [*path, index]
                    yield from paths(value, [*path, index])

        variants = [(path, value, payload_with(encoded.payload, path, value)) for path in paths(body, []) for value in hostile]
        variants += [  # the key itself: control character, quote, non-ASCII, too long
            (path, key, payload_with(encoded.payload, path, key=key))
            for path in paths(body, [])
            if isinstance(path[-1], str)
            for key in ("k\x00", 'k"', "ké", "k" * (MAX_FIELD_CHARS + 1))
        ]
        for path, change, variant in variants:
            fast, careful = _refusal(_check_untrusted, variant), _refusal(_check_value, variant)
            assert (fast is None) == (careful is None), (message_type.__name__, path, change, fast, careful)
            compared += 1
            refused += fast is not None
    for levels in range(13, 20):  # around the careful walk's depth bound, as maps and as lists
        nested_map: Any = {"x": 1}
        nested_list: Any = [1]
        for _ in range(levels):
            nested_map, nested_list = {"a": nested_map}, [nested_list]
        for deep in ({"type": "OrderFilled", "d": nested_map}, {"type": "OrderFilled", "d": nested_list}):
            fast, careful = _refusal(_check_untrusted, deep), _refusal(_check_value, deep)
            assert (fast is None) == (careful is None), (levels, fast, careful)
    assert _refusal(_check_untrusted, {1: "x"}) is not None  # a map with a key that is not text
    assert compared > 5000 and refused > 1000
