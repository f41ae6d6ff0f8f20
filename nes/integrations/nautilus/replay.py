"""NautilusTrader cache snapshot and restore, and the named replay rules per captured payload type.

Contract (on top of `nes.replay.restore`):
- Snapshot: `snapshot_cache(cache)` encodes a `Cache`'s instruments, accounts, orders and
  positions as MessagePack (msgspec, never pickle) of their event histories: every account's
  `AccountState` events, every order's events from its `OrderInitialized`, every position's
  fills. `restore_snapshot` rebuilds a fresh `Cache` by replaying those histories through
  NautilusTrader's own state machines (`OrderUnpacker.from_init` + `Order.apply`,
  `Position(instrument, fill)` + `Position.apply`, `AccountFactory.create` + `Account.apply`),
  so a restored object is the live one's state, not a copy of selected fields.
- Tail: `apply_entry` decodes a captured entry (the capture's payload contract,
  `decode_payload`) and applies it with the rule `REPLAY_RULES[payload_type]` names. The rules
  mirror what NautilusTrader's engines did live, in the same order: the strategy adding an
  order (`OrderInitialized`, `SubmitOrder`, `SubmitOrderList`), the `ExecutionEngine` applying an
  order event (an event the order's state machine refused live is refused again, as the engine
  does), `ExecutionEngine._handle_order_fill` opening / updating / flipping the position of a
  fill, and `Portfolio` applying an `AccountState`. Position events follow from their fill: their
  rule checks that the position exists. Every other type is counted as ignored.
- Reference data is not in the log: instruments come from the snapshot or, for a replay
  without one, from the `instruments` the caller gives. A fill for an instrument the cache does
  not know, or an event for an order it does not know, is a `ReplayApplyError`, never skipped.
- Position snapshots (`Cache.snapshot_position`, a pickle of the closed position kept on
  reopen) are not rebuilt: no pickle crosses replay.
- Untrusted input: snapshot maps and payload maps are checked like the capture's
  `decode_payload` checks them (printable ASCII identifiers, known enum names, ...) before any
  NautilusTrader constructor sees them: its Rust side aborts the process on such input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import msgspec
from nautilus_trader.accounting.factory import AccountFactory
from nautilus_trader.cache.cache import Cache
from nautilus_trader.core.fsm import InvalidStateTrigger
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import SubmitOrder, SubmitOrderList
from nautilus_trader.model import enums as nautilus_enums
from nautilus_trader.model import instruments as instrument_classes
from nautilus_trader.model.enums import ContingencyType, OmsType, PositionSide
from nautilus_trader.model.events import (
    AccountState,
    OrderFilled,
    OrderInitialized,
    PositionChanged,
    PositionClosed,
    PositionOpened,
)
from nautilus_trader.model.identifiers import ClientId, ClientOrderId, OrderListId, PositionId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Money, Quantity
from nautilus_trader.model.orders.list import OrderList
from nautilus_trader.model.orders.unpacker import OrderUnpacker
from nautilus_trader.model.position import Position

from nes.capture import PayloadDecodeError, UnknownPayloadType
from nes.entry import EventStoreEntry
from nes.integrations.nautilus.registry import ORDER_EVENT_TYPES, _check_untrusted, decode_payload
from nes.replay.errors import ReplayApplyError, ReplayDecodeError, SnapshotRestore

__all__ = [
    "CACHE_SNAPSHOT_FORMAT",
    "REPLAY_RULES",
    "NautilusCacheReplay",
    "apply_cache_replay_entry",
    "cache_fingerprint",
    "restore_cache_snapshot",
    "snapshot_cache",
]

CACHE_SNAPSHOT_FORMAT = "nes.nautilus.cache/v1"


# ---- snapshot -------------------------------------------------------------------------------------
class _OrderSnapshot(msgspec.Struct, frozen=True):
    events: list[dict[str, Any]]
    position_id: str | None = None
    client_id: str | None = None


class _CacheSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    instruments: list[dict[str, Any]]
    accounts: list[list[dict[str, Any]]]
    orders: list[_OrderSnapshot]
    positions: list[list[dict[str, Any]]]


_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(_CacheSnapshot)
_EVENT_TYPES: dict[str, Any] = {t.__name__: t for t in ORDER_EVENT_TYPES}


def snapshot_cache(cache: Cache) -> bytes:
    """The cache's instruments, accounts, orders and positions as a snapshot blob."""
    instruments = [type(i).to_dict(i) for i in cache.instruments()]
    accounts = [[AccountState.to_dict(e) for e in account.events] for account in cache.accounts()]
    orders = []
    for order in cache.orders():
        position_id = cache.position_id(order.client_order_id)
        client_id = cache.client_id(order.client_order_id)
        orders.append(
            _OrderSnapshot(
                [type(e).to_dict(e) for e in order.events],
                None if position_id is None else position_id.value,
                None if client_id is None else client_id.value,
            )
        )
    positions = [[OrderFilled.to_dict(f) for f in position.events] for position in cache.positions()]
    return _encoder.encode(_CacheSnapshot(CACHE_SNAPSHOT_FORMAT, instruments, accounts, orders, positions))


_INSTRUMENT_ENUMS: dict[str, frozenset[str]] = {
    key: frozenset(member.name for member in enum_type)
    for key, enum_type in {
        "asset_class": nautilus_enums.AssetClass,
        "instrument_class": nautilus_enums.InstrumentClass,
        "option_kind": nautilus_enums.OptionKind,
    }.items()
}


def _checked(values: Any) -> dict[str, Any]:
    """A snapshot's map, refused (ValueError) where NautilusTrader's from_dict could abort the
    process: the capture's checks (`registry._check_untrusted`), plus instrument enums."""
    if not isinstance(values, dict):
        raise ValueError(f"expected a map, got {type(values).__name__}")
    _check_untrusted(values)
    for key, allowed in _INSTRUMENT_ENUMS.items():
        value = values.get(key)
        if value is not None and value not in allowed:
            raise ValueError(f"field {key!r} names no member: {str(value)[:40]!r}")
    return values


def _instrument_from_dict(values: dict[str, Any]) -> Instrument:
    values = _checked(values)
    cls: Any = getattr(instrument_classes, str(values.get("type")), None)
    if not isinstance(cls, type) or not issubclass(cls, Instrument):
        raise ValueError(f"unknown instrument type {values.get('type')!r}")
    instrument: Instrument = getattr(cls, "from_dict")(values)  # every concrete instrument class has one
    return instrument


def _event_from_dict(values: dict[str, Any]) -> Any:
    values = _checked(values)
    cls = _EVENT_TYPES.get(str(values.get("type")))
    if cls is None:
        raise ValueError(f"unknown order event type {values.get('type')!r}")
    return cls.from_dict(values)


def restore_cache_snapshot(blob: bytes, cache: Cache | None = None, oms_type: OmsType = OmsType.NETTING) -> Cache:
    """A cache rebuilt from `snapshot_cache` output (into `cache`, which must be empty of the
    snapshot's orders, positions and accounts, or a fresh one). Raises `SnapshotRestore` for a
    blob that is not such a snapshot or that NautilusTrader refuses."""
    try:
        return _restore_cache_snapshot(blob, Cache() if cache is None else cache, oms_type)
    except SnapshotRestore:
        raise
    except Exception as exc:  # noqa: BLE001 - typed for the caller
        raise SnapshotRestore("<blob>", f"{type(exc).__name__}: {exc}") from exc


def _restore_cache_snapshot(blob: bytes, cache: Cache, oms_type: OmsType) -> Cache:
    try:
        snapshot = _snapshot_decoder.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise ValueError(f"not a NautilusTrader cache snapshot: {exc}") from None
    if snapshot.format != CACHE_SNAPSHOT_FORMAT:
        raise ValueError(f"snapshot format {snapshot.format!r}, expected {CACHE_SNAPSHOT_FORMAT!r}")
    for values in snapshot.instruments:
        cache.add_instrument(_instrument_from_dict(values))
    for events in snapshot.accounts:
        if not events:
            raise ValueError("an account snapshot without events")
        account = AccountFactory.create(AccountState.from_dict(_checked(events[0])))
        for values in events[1:]:
            account.apply(AccountState.from_dict(_checked(values)))
        cache.add_account(account)
    for order_snapshot in snapshot.orders:
        if not order_snapshot.events:
            raise ValueError("an order snapshot without events")
        order = OrderUnpacker.from_init(OrderInitialized.from_dict(_checked(order_snapshot.events[0])))
        for values in order_snapshot.events[1:]:
            order.apply(_event_from_dict(values))
        ids = _checked({"position_id": order_snapshot.position_id, "client_id": order_snapshot.client_id})
        position_id = None if ids["position_id"] is None else PositionId(ids["position_id"])
        client_id = None if ids["client_id"] is None else ClientId(ids["client_id"])
        cache.add_order(order, position_id, client_id)
        cache.update_order(order)
        if order.position_id is not None:
            cache.add_position_id(order.position_id, order.instrument_id.venue, order.client_order_id, order.strategy_id)
    for fills in snapshot.positions:
        if not fills:
            raise ValueError("a position snapshot without fills")
        first = OrderFilled.from_dict(_checked(fills[0]))
        instrument = cache.instrument(first.instrument_id)
        if instrument is None:
            raise ValueError(f"position of {first.instrument_id} has no instrument in the snapshot")
        position = Position(instrument, first)
        for values in fills[1:]:
            position.apply(OrderFilled.from_dict(_checked(values)))
        cache.add_position(position, oms_type)
        cache.update_position(position)
    return cache


# ---- replay rules -----------------------------------------------------------------------------------
class _Rules:
    """The replay rules, bound to one cache (see the module contract)."""

    def __init__(self, cache: Cache, oms_type: OmsType) -> None:
        self.cache = cache
        self.oms_type = oms_type

    # orders enter the cache
    def add_initialized_order(self, init: OrderInitialized) -> None:
        existing = self.cache.order(init.client_order_id)
        if existing is not None:
            if existing.init_event.id == init.id:
                return  # the same order, already known
            raise ValueError(f"order {init.client_order_id} is already in the cache with another init event")
        self.cache.add_order(OrderUnpacker.from_init(init))

    def _add_submitted(self, order: Any, position_id: PositionId | None, client_id: ClientId | None) -> None:
        known = self.cache.order(order.client_order_id)
        if known is None:
            self.cache.add_order(order, position_id, client_id)
        elif position_id is not None or client_id is not None:
            self.cache.add_order(known, position_id, client_id, overwrite=True)  # index the routing ids

    def add_submitted_order(self, command: SubmitOrder) -> None:
        self._add_submitted(command.order, command.position_id, command.client_id)

    def add_submitted_order_list(self, command: SubmitOrderList) -> None:
        for order in command.order_list.orders:
            self._add_submitted(order, command.position_id, command.client_id)
        if self.cache.order_list(command.order_list.id) is None:
            self.cache.add_order_list(command.order_list)

    # ExecutionEngine._apply_event_to_order
    def _order_for(self, event: Any) -> Any:
        order = self.cache.order(event.client_order_id)
        if order is None:
            raise ValueError(f"order {event.client_order_id} is not in the cache")
        return order

    def apply_order_event(self, event: Any) -> bool:
        order = self._order_for(event)
        try:
            order.apply(event)
        except (InvalidStateTrigger, ValueError, KeyError):
            return False  # refused live by the same state machine: the engine skipped it too
        self.cache.update_order(order)
        return True

    # ExecutionEngine: order fill, then _handle_order_fill / _handle_position_update
    def apply_fill(self, fill: OrderFilled) -> None:
        order = self._order_for(fill)
        fill = self._with_position_id(fill, order)
        if not self.apply_order_event(fill):
            return
        instrument = self.cache.instrument(fill.instrument_id)
        if instrument is None:
            raise ValueError(f"no instrument {fill.instrument_id} in the cache (restore needs reference data)")
        if fill.instrument_id.is_spread() or self.cache.account(fill.account_id) is None:
            return  # the engine does not touch positions for these
        self._update_position(instrument, fill)
        position = self.cache.position(fill.position_id)
        if order.contingency_type == ContingencyType.OTO and position is not None and position.is_open:
            for linked_id in order.linked_order_ids or []:
                contingent = self.cache.order(linked_id)
                if contingent is not None and contingent.position_id is None:
                    # The engine also sets `contingent.position_id` (not writable from Python);
                    # the cache index it adds is what later fills of that order read.
                    self.cache.add_position_id(position.id, contingent.instrument_id.venue, contingent.client_order_id, contingent.strategy_id)

    def _with_position_id(self, fill: OrderFilled, order: Any) -> OrderFilled:
        """ExecutionEngine._determine_position_id: the fill with the cached id of its order's
        position, else the netting id `<instrument>-<strategy>`, else (hedging) its own."""
        position_id = self.cache.position_id(fill.client_order_id)
        if position_id is None:
            if self.oms_type == OmsType.NETTING:
                position_id = PositionId(f"{fill.instrument_id}-{fill.strategy_id}")
            elif fill.position_id is not None:
                position_id = fill.position_id
            else:
                raise ValueError("a HEDGING fill without a position id needs the engine's position id generator")
        if fill.position_id is None or fill.position_id != position_id:
            values = OrderFilled.to_dict(fill)
            values["position_id"] = position_id.value
            fill = OrderFilled.from_dict(values)  # the engine assigns it in place; events are immutable here
        if order.exec_algorithm_id is not None and order.exec_spawn_id is not None:
            primary = self.cache.order(order.exec_spawn_id)
            if primary is not None and primary.position_id is None:
                self.cache.add_position_id(position_id, primary.instrument_id.venue, primary.client_order_id, primary.strategy_id)
        return fill

    def _update_position(self, instrument: Instrument, fill: OrderFilled) -> None:
        position = self.cache.position(fill.position_id)
        if position is None or position.is_closed:
            if position is None:
                self.cache.add_position(Position(instrument, fill), self.oms_type)
            else:
                position.apply(fill)  # reopen (the engine snapshots first; see the module contract)
                self.cache.update_position(position)
        elif position.is_opposite_side(fill.order_side) and fill.last_qty > position.quantity:
            self._flip_position(instrument, position, fill)
        else:
            position.apply(fill)
            self.cache.update_position(position)

    def _flip_position(self, instrument: Instrument, position: Position, fill: OrderFilled) -> None:
        if position.side == PositionSide.LONG:
            difference = Quantity(fill.last_qty - position.quantity, position.size_precision)
        elif position.side == PositionSide.SHORT:
            difference = Quantity(abs(position.quantity - fill.last_qty), position.size_precision)
        else:
            difference = fill.last_qty
        fill_percent: Decimal = position.quantity / fill.last_qty
        commission1 = Money(fill.commission * fill_percent, fill.commission.currency)
        commission2 = Money(fill.commission - commission1, fill.commission.currency)
        if position.is_open:
            position.apply(_split(fill, fill.position_id, position.quantity, commission1, fill.id))
            self.cache.update_position(position)
        if difference.raw == 0:
            return
        if self.oms_type == OmsType.HEDGING and fill.position_id.is_virtual():
            raise ValueError("flipping a virtual HEDGING position needs the engine's position id generator")
        self.cache.add_position(Position(instrument, _split(fill, fill.position_id, difference, commission2, UUID4())), self.oms_type)

    # positions follow from their fill
    def check_position_event(self, event: PositionOpened | PositionChanged | PositionClosed) -> None:
        if self.cache.position(event.position_id) is None:
            raise ValueError(f"position {event.position_id} is not in the cache")

    # Portfolio._update_account
    def apply_account_state(self, event: AccountState) -> None:
        account = self.cache.account(event.account_id)
        if account is None:
            self.cache.add_account(AccountFactory.create(event))
        else:
            account.apply(event)
            self.cache.update_account(account)


def _split(fill: OrderFilled, position_id: PositionId, qty: Quantity, commission: Money, event_id: UUID4) -> OrderFilled:
    return OrderFilled(
        trader_id=fill.trader_id,
        strategy_id=fill.strategy_id,
        instrument_id=fill.instrument_id,
        client_order_id=fill.client_order_id,
        venue_order_id=fill.venue_order_id,
        account_id=fill.account_id,
        trade_id=fill.trade_id,
        position_id=position_id,
        order_side=fill.order_side,
        order_type=fill.order_type,
        last_qty=qty,
        last_px=fill.last_px,
        currency=fill.currency,
        commission=commission,
        liquidity_side=fill.liquidity_side,
        event_id=event_id,
        ts_event=fill.ts_event,
        ts_init=fill.ts_init,
    )


# payload_type -> (rule name, the _Rules method that applies it)
REPLAY_RULES: dict[str, tuple[str, Callable[[_Rules, Any], object]]] = {
    "OrderInitialized": ("add_initialized_order", _Rules.add_initialized_order),
    "SubmitOrder": ("add_submitted_order", _Rules.add_submitted_order),
    "SubmitOrderList": ("add_submitted_order_list", _Rules.add_submitted_order_list),
    "OrderFilled": ("apply_fill", _Rules.apply_fill),
    "PositionOpened": ("check_position_event", _Rules.check_position_event),
    "PositionChanged": ("check_position_event", _Rules.check_position_event),
    "PositionClosed": ("check_position_event", _Rules.check_position_event),
    "AccountState": ("apply_account_state", _Rules.apply_account_state),
    **{
        t.__name__: ("apply_order_event", _Rules.apply_order_event)
        for t in ORDER_EVENT_TYPES
        if t not in (OrderInitialized, OrderFilled)
    },
}


_decode_map = msgspec.msgpack.Decoder(dict[str, Any])


def _light_submit(rules: _Rules, body: dict[str, Any]) -> bool:
    """SubmitOrder / SubmitOrderList whose orders the cache already holds (their
    OrderInitialized came first): index the routing ids from the payload's fields, without
    rebuilding the orders (NautilusTrader's from_dict of a command rebuilds every order)."""
    cache = rules.cache
    order_dicts = body["orders"] if body["type"] == "SubmitOrderList" else [body["order"]]
    orders = [cache.order(ClientOrderId(str(o["client_order_id"]))) for o in order_dicts]
    if any(order is None for order in orders):
        return False  # an order enters the cache here: the full rule builds it
    position_id = None if body["position_id"] is None else PositionId(str(body["position_id"]))
    client_id = None if body["client_id"] is None else ClientId(str(body["client_id"]))
    for order in orders:
        if position_id is not None or client_id is not None:
            cache.add_order(order, position_id, client_id, overwrite=True)
    if body["type"] == "SubmitOrderList":
        list_id = OrderListId(str(body["order_list_id"]))
        if cache.order_list(list_id) is None:
            cache.add_order_list(OrderList(list_id, orders))
    return True


def _light_position_event(rules: _Rules, body: dict[str, Any]) -> bool:
    if rules.cache.position(PositionId(str(body["position_id"]))) is None:
        raise ValueError(f"position {body['position_id']} is not in the cache")
    return True


# Rules that read a few fields of the payload map instead of the whole NautilusTrader object
# (its from_dict is most of a replay's cost); False sends the entry to the full rule.
_LIGHT_RULES: dict[str, Callable[[_Rules, dict[str, Any]], bool]] = {
    "SubmitOrder": _light_submit,
    "SubmitOrderList": _light_submit,
    "PositionOpened": _light_position_event,
    "PositionChanged": _light_position_event,
    "PositionClosed": _light_position_event,
}


def _apply(rules: _Rules, entry: EventStoreEntry) -> bool:
    rule = REPLAY_RULES.get(entry.payload_type)
    if rule is None:
        return False
    light = _LIGHT_RULES.get(entry.payload_type)
    if light is not None:
        try:
            body = _decode_map.decode(entry.payload)
            if body.get("type") != entry.payload_type:
                raise ValueError(f"payload names type {body.get('type')!r}")
            _check_untrusted(body)  # identifiers are built from it: refuse what would abort the process
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise ReplayDecodeError(entry.seq, entry.payload_type, f"{type(exc).__name__}: {exc}") from exc
        try:
            if light(rules, body):
                return True
        except (KeyError, TypeError) as exc:
            raise ReplayDecodeError(entry.seq, entry.payload_type, f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - the cache refused it: typed, with the rule's name
            raise ReplayApplyError(entry.seq, entry.payload_type, f"{rule[0]}: {type(exc).__name__}: {exc}") from exc
    try:
        message = decode_payload(entry.payload_type, entry.payload)
    except (PayloadDecodeError, UnknownPayloadType) as exc:
        raise ReplayDecodeError(entry.seq, entry.payload_type, str(exc)) from exc
    try:
        rule[1](rules, message)
    except Exception as exc:  # noqa: BLE001 - the cache refused it: typed, with the rule's name
        raise ReplayApplyError(entry.seq, entry.payload_type, f"{rule[0]}: {type(exc).__name__}: {exc}") from exc
    return True


def apply_cache_replay_entry(cache: Cache, entry: EventStoreEntry, oms_type: OmsType = OmsType.NETTING) -> bool:
    """Apply one entry to `cache` by its replay rule: True when a rule applied it, False when
    its payload type has none. Raises `ReplayDecodeError` / `ReplayApplyError`."""
    return _apply(_Rules(cache, oms_type), entry)


class NautilusCacheReplay:
    """A `nes.replay.CacheReplayTarget` over a NautilusTrader `Cache`.

    `instruments` are added to the fresh cache (reference data the log does not carry; needed
    when there is no snapshot, or when the snapshot predates an instrument)."""

    def __init__(
        self, instruments: Iterable[Instrument] = (), oms_type: OmsType = OmsType.NETTING, cache: Cache | None = None
    ) -> None:
        self.oms_type = oms_type
        self.cache = Cache() if cache is None else cache
        self._instruments = list(instruments)
        for instrument in self._instruments:
            self.cache.add_instrument(instrument)
        self._rules = _Rules(self.cache, oms_type)

    def restore_snapshot(self, blob: bytes) -> None:
        """Rebuild the cache from a `snapshot_cache` blob (a fresh cache plus `instruments`)."""
        cache = Cache()
        for instrument in self._instruments:
            cache.add_instrument(instrument)
        restore_cache_snapshot(blob, cache, self.oms_type)
        self.cache = cache
        self._rules = _Rules(cache, self.oms_type)

    def apply_entry(self, entry: EventStoreEntry) -> bool:
        """Apply one tail entry by its replay rule (True), or count it ignored (False)."""
        return _apply(self._rules, entry)


# ---- comparison -----------------------------------------------------------------------------------
def cache_fingerprint(cache: Cache) -> dict[str, Any]:
    """The state the replay property pins, as plain values: every order's status, filled
    quantity, average price and event count; every position's quantity and realized PnL;
    every account's balances (total, locked, free per currency)."""
    orders = {
        o.client_order_id.value: (o.status_string(), str(o.filled_qty), None if o.avg_px is None else repr(o.avg_px), o.event_count)
        for o in cache.orders()
    }
    positions = {
        p.id.value: (str(p.quantity), str(p.side), None if p.realized_pnl is None else str(p.realized_pnl))
        for p in cache.positions()
    }
    accounts = {
        a.id.value: sorted((str(b.currency), str(b.total), str(b.locked), str(b.free)) for b in a.balances().values())
        for a in cache.accounts()
    }
    return {"orders": orders, "positions": positions, "accounts": accounts}
