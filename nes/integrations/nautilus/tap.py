"""The bus tap: capture a running NautilusTrader kernel's state-affecting traffic before any
handler sees it.

Contract:
- `attach_tap(engine_or_kernel, adapter)` taps the kernel's `MessageBus` at its boundaries:
  - send / request / response to an endpoint: each registered endpoint's handler is replaced
    by a wrapper that captures the message (topic = the endpoint name) and only then calls the
    original handler. Data responses reach the `DataEngine.response` endpoint before the bus
    routes them to the requester, so they are captured there.
  - publish: a subscription to every topic (`*`) at the highest priority, so it runs before
    every other subscriber. Its handler is not told the topic, so the topic is the one
    NautilusTrader publishes that type on (`events.order.<strategy_id>`,
    `events.position.<strategy_id>`, `events.account.<account_id>`, else
    `events.<TypeName>`).
  `ts_init` = the kernel clock's time at capture; headers come from the registry.
- Dedup: the adapter's identity window makes a message that crosses several boundaries (an
  order event sent to `ExecEngine.process`, then `Portfolio.update_order`, then published;
  a command hopping `RiskEngine.execute` -> `ExecEngine.execute`) one entry, at its first hop.
- Fail-stop: a capture that raises (`CaptureHalted`, `CaptureSubmitError`,
  `CaptureEncodeError`) propagates and the message is NOT handed on: after the writer halted
  (ring stalled, disk full, writer died) no order command reaches the risk engine, the
  execution engine or the venue. Unregistered traffic (market data) still flows.
- Events the engine applies without dispatching them: `Strategy.cancel_all_orders` applies an
  `OrderPendingCancel` to each open order of its scope in place and only sends the
  `CancelAllOrders` command. When that command reaches its first endpoint, the tap captures it,
  then those orders' not-yet-captured `OrderPendingCancel` events (topic
  `events.order.<strategy_id>`, where `Strategy.cancel_order` publishes its own), then hands the
  command on; so every order event the strategy produced is in the run.
- Endpoints whose owner the tap cannot resolve are listed in `untapped_endpoints` (in a
  backtest: `BacktestEngine.execute`, which repeats data commands already captured at
  `DataEngine.execute`, and the simulated exchange's spread-quote feed); pass their handlers in
  `endpoint_handlers` to tap them too. `detach()` restores the bus.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nautilus_trader.execution.messages import CancelAllOrders
from nautilus_trader.model.events import AccountState, OrderEvent, OrderPendingCancel, PositionEvent

from nes.capture import BusCaptureAdapter, TapAttachError
from nes.errors import InvalidArgument

__all__ = ["NautilusBusTap", "attach_tap", "TAP_PRIORITY", "LOCAL_EVENT_MEMORY"]

TAP_PRIORITY = 2**31 - 1  # the bus's highest subscription priority (a C int)
LOCAL_EVENT_MEMORY = 65_536  # OrderPendingCancel ids remembered (never captured twice)

# endpoint prefix -> the kernel attribute that owns the endpoint's handler (method = suffix)
_ENDPOINT_OWNERS = {
    "RiskEngine": "risk_engine",
    "ExecEngine": "exec_engine",
    "DataEngine": "data_engine",
    "Portfolio": "portfolio",
    "OrderEmulator": "emulator",
}


def _kernel_of(engine: Any) -> Any:
    kernel = getattr(engine, "kernel", engine)
    if not hasattr(kernel, "msgbus") or not hasattr(kernel, "clock"):
        raise InvalidArgument(f"expected a BacktestEngine, TradingNode or NautilusKernel, got {type(engine).__name__}")
    return kernel


def _publish_topic_maker(message_type: type) -> Callable[[Any], str]:
    if issubclass(message_type, OrderEvent):
        return lambda msg: "events.order." + msg.strategy_id.value
    if issubclass(message_type, PositionEvent):
        return lambda msg: "events.position." + msg.strategy_id.value
    if message_type is AccountState:
        return lambda msg: "events.account." + msg.account_id.value
    topic = "events." + message_type.__name__
    return lambda msg: topic


class NautilusBusTap:
    """A tap on one kernel's message bus feeding one `BusCaptureAdapter`."""

    def __init__(
        self,
        engine: Any,
        adapter: BusCaptureAdapter,
        endpoint_handlers: Mapping[str, Callable[[Any], None]] | None = None,
    ) -> None:
        self._kernel = _kernel_of(engine)
        self._bus = self._kernel.msgbus
        self._clock = self._kernel.clock
        self.adapter = adapter
        self._extra = dict(endpoint_handlers or {})
        self._wrapped: dict[str, tuple[Callable[[Any], None], Callable[[Any], None]]] = {}
        self._untapped: list[str] = []
        self._subscriber: Callable[[Any], None] | None = None
        self._topic_for: dict[type, Callable[[Any], str]] = {}
        self._pending_cancels: dict[Any, None] = {}  # ordered set: OrderPendingCancel ids captured

    @property
    def attached(self) -> bool:
        """True between `attach()` and `detach()`."""
        return self._subscriber is not None

    @property
    def tapped_endpoints(self) -> list[str]:
        """The endpoints whose messages are captured before their handler runs."""
        return list(self._wrapped)

    @property
    def untapped_endpoints(self) -> list[str]:
        """Registered endpoints the tap could not wrap (their owner is unknown)."""
        return list(self._untapped)

    def attach(self) -> NautilusBusTap:
        """Wrap every endpoint and subscribe to every topic. Raises `TapAttachError` if already
        attached or if a handler given in `endpoint_handlers` is not the registered one."""
        if self.attached:
            raise TapAttachError("the tap is already attached")
        bus = self._bus
        for endpoint in bus.endpoints():
            handler = self._resolve(endpoint)
            if handler is None:
                self._untapped.append(endpoint)
                continue
            try:
                bus.deregister(endpoint, handler)
            except (KeyError, ValueError) as exc:
                if endpoint in self._extra:
                    self.detach()
                    raise TapAttachError(f"endpoint {endpoint!r}: the given handler is not the registered one") from exc
                self._untapped.append(endpoint)
                continue
            wrapper = self._wrap(endpoint, handler)
            bus.register(endpoint, wrapper)
            self._wrapped[endpoint] = (handler, wrapper)
        self._subscriber = self._make_subscriber()
        bus.subscribe("*", self._subscriber, priority=TAP_PRIORITY)
        return self

    def detach(self) -> None:
        """Restore the original endpoint handlers and drop the subscription."""
        bus = self._bus
        for endpoint, (handler, wrapper) in self._wrapped.items():
            bus.deregister(endpoint, wrapper)
            bus.register(endpoint, handler)
        self._wrapped.clear()
        self._untapped.clear()
        if self._subscriber is not None:
            bus.unsubscribe("*", self._subscriber)
            self._subscriber = None

    def _resolve(self, endpoint: str) -> Callable[[Any], None] | None:
        if endpoint in self._extra:
            return self._extra[endpoint]
        owner_name, _, method = endpoint.partition(".")
        attribute = _ENDPOINT_OWNERS.get(owner_name)
        owner = None if attribute is None else getattr(self._kernel, attribute, None)
        if owner is None or not method:
            return None
        return getattr(owner, method, None)

    def _wrap(self, endpoint: str, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        registered = self.adapter.registry.registered
        capture = self.adapter.capture
        now = self._clock.timestamp_ns

        after_capture = self._capture_local_pending_cancels

        remember = self._remember_pending_cancel

        def tapped(msg: Any) -> None:
            message_type = type(msg)
            if message_type in registered:
                capture(endpoint, msg, now())  # raises on failure: the handler never sees msg
                if message_type is CancelAllOrders:
                    after_capture(msg)
                elif message_type is OrderPendingCancel:
                    remember(msg.id)
            handler(msg)

        return tapped

    def _capture_local_pending_cancels(self, command: Any) -> None:
        """Capture the OrderPendingCancel events `Strategy.cancel_all_orders` applied to the
        orders of `command`'s scope without dispatching them (see the module docstring)."""
        if OrderPendingCancel not in self.adapter.registry.registered:
            return
        orders = self._kernel.cache.orders_open(None, command.instrument_id, command.strategy_id, command.order_side)
        for order in orders:
            event = order.last_event
            if type(event) is not OrderPendingCancel or event.id in self._pending_cancels:
                continue
            self._remember_pending_cancel(event.id)
            self.adapter.capture("events.order." + event.strategy_id.value, event, self._clock.timestamp_ns())

    def _remember_pending_cancel(self, event_id: Any) -> None:
        """Note a captured OrderPendingCancel (dispatched or not), so the scan above never takes
        an order's older pending-cancel for one `cancel_all_orders` applied in place."""
        remembered = self._pending_cancels
        if len(remembered) >= LOCAL_EVENT_MEMORY:
            del remembered[next(iter(remembered))]
        remembered[event_id] = None

    def _make_subscriber(self) -> Callable[[Any], None]:
        topic_for = self._topic_for
        remember = self._remember_pending_cancel
        registered = self.adapter.registry.registered
        capture = self.adapter.capture
        now = self._clock.timestamp_ns

        def on_publish(msg: Any) -> None:
            message_type = type(msg)
            if message_type in registered:
                make_topic = topic_for.get(message_type)
                if make_topic is None:
                    make_topic = topic_for[message_type] = _publish_topic_maker(message_type)
                capture(make_topic(msg), msg, now())
                if message_type is OrderPendingCancel:
                    remember(msg.id)

        return on_publish


def attach_tap(
    engine: Any, adapter: BusCaptureAdapter, endpoint_handlers: Mapping[str, Callable[[Any], None]] | None = None
) -> NautilusBusTap:
    """Build a `NautilusBusTap` on `engine` (BacktestEngine, TradingNode or kernel) and attach it."""
    return NautilusBusTap(engine, adapter, endpoint_handlers).attach()
