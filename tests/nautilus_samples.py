"""One real NautilusTrader instance of every type the default capture registry captures."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pandas as pd
from nautilus_trader.common.component import TimeEvent
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import BatchCancelOrders, CancelAllOrders, QueryAccount, QueryOrder
from nautilus_trader.execution.reports import ExecutionMassStatus, FillReport, OrderStatusReport, PositionStatusReport
from nautilus_trader.model.data import BarType, DataType, OrderBookDelta, QuoteTick
from nautilus_trader.model.enums import (
    BookType,
    LiquiditySide,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    TimeInForce,
)
from nautilus_trader.model.events import (
    OrderCancelRejected,
    OrderDenied,
    OrderEmulated,
    OrderModifyRejected,
    OrderPendingCancel,
    OrderPendingUpdate,
    OrderTriggered,
)
from nautilus_trader.model.identifiers import (
    AccountId,
    ClientId,
    ClientOrderId,
    PositionId,
    StrategyId,
    TradeId,
    TraderId,
    Venue,
    VenueOrderId,
)
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.model.orders import OrderList
from nautilus_trader.model.position import Position
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.commands import TestCommandStubs
from nautilus_trader.test_kit.stubs.events import TestEventStubs
from nautilus_trader.test_kit.stubs.execution import TestExecStubs

from nes.integrations.nautilus.registry import DATA_MESSAGE_TYPES

INSTRUMENT = TestInstrumentProvider.default_fx_ccy("AUD/USD", Venue("SIM"))
TRADER = TraderId("TESTER-001")
STRATEGY = StrategyId("S-001")
ACCOUNT = AccountId("SIM-001")
USD_ = INSTRUMENT.quote_currency


def _order_event_fields(coid: ClientOrderId, venue_order_id: VenueOrderId | None = VenueOrderId("V-1")) -> dict[str, Any]:
    return {
        "trader_id": TRADER,
        "strategy_id": STRATEGY,
        "instrument_id": INSTRUMENT.id,
        "client_order_id": coid,
        "venue_order_id": venue_order_id,
        "account_id": ACCOUNT,
        "event_id": UUID4(),
        "ts_event": 1,
        "ts_init": 2,
    }


def _data_kwargs_pool() -> dict[str, Any]:
    bar_type = BarType.from_str("AUD/USD.SIM-1-MINUTE-BID-EXTERNAL")
    start = pd.Timestamp("2024-01-02", tz="UTC")
    quote = QuoteTick(INSTRUMENT.id, Price.from_str("0.70000"), Price.from_str("0.70002"), Quantity.from_int(1), Quantity.from_int(1), 1, 1)
    return {
        "instrument_id": INSTRUMENT.id,
        "bar_type": bar_type,
        "data_type": DataType(QuoteTick),
        "book_data_type": OrderBookDelta,
        "book_type": BookType.L2_MBP,
        "depth": 10,
        "client_id": ClientId("SIM"),
        "venue": Venue("SIM"),
        "command_id": UUID4(),
        "request_id": UUID4(),
        "correlation_id": UUID4(),
        "response_id": UUID4(),
        "ts_init": 123,
        "params": {"k": "v"},
        "start": start,
        "end": start + pd.Timedelta(hours=1),
        "limit": 5,
        "callback": lambda _: None,
        "data": [quote, quote],  # matches data_type
    }


_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def _construct(cls: type, pool: dict[str, Any]) -> Any:
    """Build a Cython data message from a pool of keyword arguments, dropping the ones its
    `__init__` does not take (Cython classes expose no signature)."""
    kwargs = dict(pool)
    if cls.__name__ in {"SubscribeData", "UnsubscribeData", "RequestData"} or cls.__name__.endswith("OrderBook"):
        kwargs.pop("bar_type")
    for _ in range(len(pool)):
        try:
            return cls(**kwargs)
        except TypeError as exc:
            match = _UNEXPECTED.search(str(exc))
            if match is None:
                raise
            kwargs.pop(match.group(1))
    raise AssertionError(f"cannot construct {cls.__name__}")


def sample_messages() -> dict[type, Any]:
    """Every captured type -> one instance (fresh ids on every call)."""
    samples: dict[type, Any] = {}

    def add(obj: Any) -> None:
        samples[type(obj)] = obj

    market = TestExecStubs.market_order(instrument=INSTRUMENT)
    limit = TestExecStubs.limit_order(instrument=INSTRUMENT)
    accepted = TestExecStubs.make_accepted_order(instrument=INSTRUMENT)
    filled_order = TestExecStubs.make_filled_order(instrument=INSTRUMENT)
    add(TestCommandStubs.submit_order_command(market))
    add(TestCommandStubs.submit_order_list_command(OrderList(limit.order_list_id or _order_list_id(), [limit, market])))
    add(TestCommandStubs.modify_order_command(order=accepted, quantity=Quantity.from_int(200_000)))
    add(TestCommandStubs.cancel_order_command(order=accepted))
    add(CancelAllOrders(TRADER, STRATEGY, INSTRUMENT.id, OrderSide.NO_ORDER_SIDE, UUID4(), 3))
    add(BatchCancelOrders(TRADER, STRATEGY, INSTRUMENT.id, [TestCommandStubs.cancel_order_command(order=accepted)], UUID4(), 3))
    add(QueryOrder(TRADER, STRATEGY, INSTRUMENT.id, accepted.client_order_id, accepted.venue_order_id, UUID4(), 3))
    add(QueryAccount(TRADER, ACCOUNT, UUID4(), 3))

    coid = accepted.client_order_id
    add(market.init_event)
    add(OrderDenied(TRADER, STRATEGY, INSTRUMENT.id, coid, "denied for a test", UUID4(), 4))
    add(OrderEmulated(TRADER, STRATEGY, INSTRUMENT.id, coid, UUID4(), 4))
    add(TestEventStubs.order_released(limit))
    add(TestEventStubs.order_submitted(market))
    add(TestEventStubs.order_accepted(limit))
    add(TestEventStubs.order_rejected(market))
    add(TestEventStubs.order_canceled(accepted))
    add(TestEventStubs.order_expired(accepted))
    add(OrderTriggered(**_order_event_fields(coid)))
    add(OrderPendingUpdate(**_order_event_fields(coid)))
    add(OrderPendingCancel(**_order_event_fields(coid)))
    add(OrderModifyRejected(**_order_event_fields(coid), reason="modify rejected for a test"))
    add(OrderCancelRejected(**_order_event_fields(coid), reason="cancel rejected for a test"))
    add(TestEventStubs.order_updated(accepted, quantity=Quantity.from_int(150_000)))
    fill = TestEventStubs.order_filled(accepted, instrument=INSTRUMENT, position_id=PositionId("P-1"))
    add(fill)

    position = Position(INSTRUMENT, fill)
    add(TestEventStubs.position_opened(position))
    add(TestEventStubs.position_changed(position))
    close_order = TestExecStubs.market_order(
        instrument=INSTRUMENT, order_side=OrderSide.SELL, client_order_id=ClientOrderId("O-CLOSE")
    )
    close_order.apply(TestEventStubs.order_submitted(close_order))
    close_order.apply(TestEventStubs.order_accepted(close_order))
    close_fill = TestEventStubs.order_filled(close_order, instrument=INSTRUMENT, position_id=PositionId("P-1"), trade_id=TradeId("T-2"))
    position.apply(close_fill)
    add(TestEventStubs.position_closed(position))
    add(TestEventStubs.margin_account_state(ACCOUNT))

    report_args = {"account_id": ACCOUNT, "instrument_id": INSTRUMENT.id, "ts_init": 5}
    status = OrderStatusReport(
        **report_args,
        venue_order_id=VenueOrderId("V-7"),
        order_side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        order_status=OrderStatus.ACCEPTED,
        quantity=Quantity.from_int(100_000),
        filled_qty=Quantity.from_int(0),
        report_id=UUID4(),
        ts_accepted=1,
        ts_last=2,
        client_order_id=ClientOrderId("O-7"),
        price=Price.from_str("0.70000"),
    )
    fill_report = FillReport(
        **report_args,
        venue_order_id=VenueOrderId("V-7"),
        trade_id=TradeId("T-7"),
        order_side=OrderSide.BUY,
        last_qty=Quantity.from_int(100_000),
        last_px=Price.from_str("0.70000"),
        commission=Money(Decimal("1.5"), USD_),
        liquidity_side=LiquiditySide.MAKER,
        report_id=UUID4(),
        ts_event=3,
        client_order_id=ClientOrderId("O-7"),
    )
    position_report = PositionStatusReport(
        **report_args,
        position_side=PositionSide.LONG,
        quantity=Quantity.from_int(100_000),
        report_id=UUID4(),
        ts_last=4,
        venue_position_id=PositionId("P-7"),
    )
    add(status)
    add(fill_report)
    add(position_report)
    mass = ExecutionMassStatus(ClientId("SIM"), ACCOUNT, Venue("SIM"), UUID4(), 6)
    mass.add_order_reports([status])
    mass.add_fill_reports([fill_report])
    mass.add_position_reports([position_report])
    add(mass)
    add(TimeEvent("timer-1", UUID4(), 7, 8))

    pool = _data_kwargs_pool()
    for cls in DATA_MESSAGE_TYPES:
        samples[cls] = _construct(cls, pool)
    return samples


def _order_list_id() -> Any:
    from nautilus_trader.model.identifiers import OrderListId

    return OrderListId("OL-1")


def payload_with(payload: bytes, path: list[Any], value: Any = None, key: str | None = None) -> Any:
    """A fresh decode of the MessagePack `payload` with the value at `path` replaced by `value`,
    or (with `key`) that map entry renamed to `key` (hostile-payload tests)."""
    import msgspec

    variant = msgspec.msgpack.decode(payload)
    node = variant
    for step in path[:-1]:
        node = node[step]
    if key is None:
        node[path[-1]] = value
    else:
        node[key] = node.pop(path[-1])
    return variant
