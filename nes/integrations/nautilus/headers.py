"""Correlation / causation headers for NautilusTrader messages, derived at capture time.

NautilusTrader's Python commands and events carry no correlation or causation fields, so the
tap derives them from what it has already captured (ids are the messages' own UUID4 ids):

- Workflow (correlation_id) of an order = the id of the `SubmitOrder` command that submitted
  it (for orders of a `SubmitOrderList`, that list command's id). The `SubmitOrder` itself
  carries `correlation_id = its own command id`.
- `OrderInitialized` is dispatched before its `SubmitOrder` exists: it is the root of the
  workflow and carries empty headers; the `SubmitOrder` names it as its causation
  (`causation_id = the order's init event id`).
- `ModifyOrder` / `CancelOrder` / `QueryOrder`: correlation = the order's workflow, no
  causation (a strategy decision is not a message). A `BatchCancelOrders` or
  `CancelAllOrders` has no single workflow: empty correlation.
- Order event: correlation = the order's workflow; causation = the command that last acted
  on that client order id (SubmitOrder, SubmitOrderList, Modify, Cancel, Query, the batch
  cancel naming it, or a `CancelAllOrders` for the order's strategy and instrument captured
  after that, for the cancel-family events).
- Position event: correlation = the workflow of the order whose fill produced it; causation
  = that `OrderFilled` event's id. NautilusTrader's execution engine emits the position event
  while it handles that fill, so it is the last fill captured for the same strategy and
  instrument.
- Execution reports: correlation = the workflow of their client order id when known.
- Data request: correlation = its request id; data response: correlation = its
  correlation id (the request's id). Other messages (AccountState, TimeEvent, subscriptions)
  carry empty headers.

So "everything in this order's workflow" is the entries whose correlation_id is the
SubmitOrder's id plus the OrderInitialized its causation names, and "why did this happen" is
the causation chain (position event -> fill -> command -> order's init event).

The deriver is stateful (per order) and bounded: it remembers the last `max_orders` orders; older ones fall back to empty headers. Use one deriver per trader.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from nautilus_trader.data import messages as data_messages
from nautilus_trader.execution.messages import (
    BatchCancelOrders,
    CancelAllOrders,
    CancelOrder,
    ModifyOrder,
    QueryOrder,
    SubmitOrder,
    SubmitOrderList,
)
from nautilus_trader.execution.reports import FillReport, OrderStatusReport
from nautilus_trader.model.events import (
    OrderCanceled,
    OrderCancelRejected,
    OrderEvent,
    OrderFilled,
    OrderPendingCancel,
    PositionEvent,
)

from nes.headers import Headers, is_uuid4_int
from nes.errors import InvalidArgument

__all__ = ["HeaderDeriver", "DEFAULT_MAX_ORDERS"]

DEFAULT_MAX_ORDERS = 65_536
_EMPTY = Headers.empty()
_CANCEL_FAMILY = (OrderCanceled, OrderPendingCancel, OrderCancelRejected)


def _uuid(value: Any) -> uuid.UUID | None:
    """A NautilusTrader UUID4 as a version-4 `uuid.UUID` (None if it is not one).

    On the capture hot path: the canonical text is checked and converted here, and the UUID is
    built the way `uuid.UUID.__setstate__` builds one (its `int` and `is_safe` slots), instead of
    through `uuid.UUID(text)` and its `version` / `variant` properties (about 1.5 times the cost)."""
    if value is None:
        return None
    try:
        text = value.value
    except AttributeError:
        return None
    if type(text) is not str or len(text) != 36:
        return None
    digits = text.replace("-", "")
    if len(digits) != 32 or not digits.isascii() or not digits.isalnum():  # int() also takes "_", "+", non-ASCII digits
        return None
    try:
        number = int(digits, 16)
    except ValueError:
        return None
    if not is_uuid4_int(number):
        return None
    converted = _new_uuid(uuid.UUID)
    _set_slot(converted, "int", number)
    _set_slot(converted, "is_safe", _SAFE_UNKNOWN)
    return converted


_new_uuid = object.__new__
_set_slot = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown  # an enum member lookup costs ~0.5 us


def _headers(correlation: uuid.UUID | None, causation: uuid.UUID | None) -> Headers:
    if correlation is None and causation is None:
        return _EMPTY
    return Headers(correlation, causation)


class _OrderState:
    __slots__ = ("workflow", "headers", "command_seq")

    def __init__(self, workflow: uuid.UUID | None, headers: Headers, command_seq: int) -> None:
        self.workflow = workflow
        self.headers = headers  # what this order's next event carries
        self.command_seq = command_seq


class HeaderDeriver:
    """Derives headers for captured NautilusTrader messages (rule in the module docstring)."""

    def __init__(self, max_orders: int = DEFAULT_MAX_ORDERS) -> None:
        if max_orders < 1:
            raise InvalidArgument(f"max_orders must be >= 1, got {max_orders}")
        self.max_orders = max_orders
        self._orders: dict[str, _OrderState] = {}
        # (strategy, instrument) -> (workflow, event id) of the last fill; Headers built on demand
        self._fills: dict[tuple[str, str], tuple[uuid.UUID | None, Any]] = {}
        self._cancel_all: dict[tuple[str, str], tuple[int, uuid.UUID | None]] = {}
        self._command_seq = 0

    # -- state ------------------------------------------------------------------------------------
    def workflow_of(self, client_order_id: str) -> uuid.UUID | None:
        """The workflow (SubmitOrder command id) of a client order id, if remembered."""
        state = self._orders.get(client_order_id)
        return None if state is None else state.workflow

    def _remember(self, table: dict[str, Any], key: str, value: Any) -> None:
        if key not in table and len(table) >= self.max_orders:
            del table[next(iter(table))]  # the oldest insertion
        table[key] = value

    def _acted_on(self, client_order_id: str, command_id: uuid.UUID | None, workflow: uuid.UUID | None = None) -> None:
        self._command_seq += 1
        state = self._orders.get(client_order_id)
        if workflow is None and state is not None:
            workflow = state.workflow
        self._remember(
            self._orders, client_order_id, _OrderState(workflow, _headers(workflow, command_id), self._command_seq)
        )

    # -- extractors -------------------------------------------------------------------------------
    def extractor_for(self, message_type: type) -> Callable[[Any], Headers]:
        """The headers extractor the registry uses for `message_type`."""
        if message_type is SubmitOrder:
            return self._submit_order
        if message_type is SubmitOrderList:
            return self._submit_order_list
        if message_type in (ModifyOrder, CancelOrder, QueryOrder):
            return self._order_command
        if message_type is BatchCancelOrders:
            return self._batch_cancel
        if message_type is CancelAllOrders:
            return self._cancel_all_orders
        if issubclass(message_type, OrderEvent):
            if message_type is OrderFilled:
                return self._order_filled
            if issubclass(message_type, _CANCEL_FAMILY):
                return self._cancel_family_event
            return self._order_event
        if issubclass(message_type, PositionEvent):
            return self._position_event
        if message_type in (OrderStatusReport, FillReport):
            return self._report
        if issubclass(message_type, data_messages.RequestData):
            return self._data_request
        if issubclass(message_type, data_messages.DataResponse):
            return self._data_response
        return self._empty

    def _empty(self, msg: Any) -> Headers:  # noqa: ARG002
        return _EMPTY

    def _submit_order(self, msg: Any) -> Headers:
        workflow = _uuid(msg.id)
        self._acted_on(msg.order.client_order_id.value, workflow, workflow)
        return _headers(workflow, _uuid(msg.order.init_id))

    def _submit_order_list(self, msg: Any) -> Headers:
        workflow = _uuid(msg.id)
        for order in msg.order_list.orders:
            self._acted_on(order.client_order_id.value, workflow, workflow)
        return _headers(workflow, None)

    def _order_command(self, msg: Any) -> Headers:
        client_order_id = msg.client_order_id.value
        workflow = self.workflow_of(client_order_id)
        self._acted_on(client_order_id, _uuid(msg.id))
        return _headers(workflow, None)

    def _batch_cancel(self, msg: Any) -> Headers:
        command_id = _uuid(msg.id)
        for cancel in msg.cancels:
            self._acted_on(cancel.client_order_id.value, command_id)
        return _EMPTY

    def _cancel_all_orders(self, msg: Any) -> Headers:
        self._command_seq += 1
        key = (msg.strategy_id.value, msg.instrument_id.value)
        self._cancel_all[key] = (self._command_seq, _uuid(msg.id))
        return _EMPTY

    def _order_event(self, msg: Any) -> Headers:
        state = self._orders.get(msg.client_order_id.value)
        return _EMPTY if state is None else state.headers

    def _cancel_family_event(self, msg: Any) -> Headers:
        state = self._orders.get(msg.client_order_id.value)
        cancel_all = self._cancel_all.get((msg.strategy_id.value, msg.instrument_id.value))
        if cancel_all is not None and (state is None or cancel_all[0] > state.command_seq):
            return _headers(None if state is None else state.workflow, cancel_all[1])
        return _EMPTY if state is None else state.headers

    def _order_filled(self, msg: Any) -> Headers:
        state = self._orders.get(msg.client_order_id.value)
        workflow = None if state is None else state.workflow
        self._fills[(msg.strategy_id.value, msg.instrument_id.value)] = (workflow, msg.id)
        return _EMPTY if state is None else state.headers

    def _position_event(self, msg: Any) -> Headers:
        fill = self._fills.get((msg.strategy_id.value, msg.instrument_id.value))
        return _EMPTY if fill is None else _headers(fill[0], _uuid(fill[1]))

    def _report(self, msg: Any) -> Headers:
        if msg.client_order_id is None:
            return _EMPTY
        return _headers(self.workflow_of(msg.client_order_id.value), None)

    def _data_request(self, msg: Any) -> Headers:
        return _headers(_uuid(msg.id), None)

    def _data_response(self, msg: Any) -> Headers:
        return _headers(_uuid(msg.correlation_id), None)
