"""`nes demo`: a synthetic trading session captured, verified and replayed.

What it proves, end to end, with the real parts (writer sidecar process, shared-memory ring,
fsynced LMDB run file, verifier worker process): every captured message is durable and
hash-chained to its seq; a snapshot anchor taken midway plus the tail after it rebuild exactly
the state the live session ended with.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from nes.backend.base import IndexKey, IndexKind
from nes.capture import BusCaptureAdapter, EncodedPayload, EncoderRegistry
from nes.config import EventStoreConfig, RunIdentity
from nes.entry import EventStoreEntry
from nes.headers import Headers
from nes.errors import EventStoreError, InvalidArgument
from nes.kernel import EventStoreLifecycle, EventStoreSession
from nes.manifest import RegisteredComponents
from nes.replay import SnapshotBlobStore, open_event_store_replay_source, restore_snapshot_and_replay_tail

__all__ = ["DemoCache", "demo_registry", "decode_demo_payload", "run_demo", "run_nautilus_demo", "main"]

DEMO_INSTANCE_ID = "demo-trader"
INSTRUMENTS = ("BTCUSDT.BINANCE", "ETHUSDT.BINANCE", "AAPL.XNAS")


# ---- the synthetic session's own messages (the --nautilus job captures a real engine) ---------
class SubmitOrder(msgspec.Struct, frozen=True):
    """The synthetic session's order command."""

    client_order_id: str
    instrument_id: str
    side: str  # "BUY" | "SELL"
    quantity: int
    price: float
    command_id: str


class OrderAccepted(msgspec.Struct, frozen=True):
    """The synthetic venue accepted an order."""

    client_order_id: str
    venue_order_id: str
    event_id: str


class OrderFilled(msgspec.Struct, frozen=True):
    """A (partial) fill of a synthetic order."""

    client_order_id: str
    venue_order_id: str
    instrument_id: str
    side: str
    last_qty: int
    last_px: float
    event_id: str


class AccountState(msgspec.Struct, frozen=True):
    """The synthetic account's balance after a fill."""

    account_id: str
    balance: float
    event_id: str


_DEMO_TYPES: dict[str, type[msgspec.Struct]] = {
    "SubmitOrder": SubmitOrder,
    "OrderAccepted": OrderAccepted,
    "OrderFilled": OrderFilled,
    "AccountState": AccountState,
}
_struct_encoder = msgspec.msgpack.Encoder()
_DEMO_DECODERS = {name: msgspec.msgpack.Decoder(cls) for name, cls in _DEMO_TYPES.items()}


def _demo_encoder(with_venue: bool, with_client: bool = True):  # noqa: ANN202
    def encode(msg: Any) -> EncodedPayload:
        keys = []
        if with_client:
            keys.append(IndexKey(IndexKind.ClientOrderId, msg.client_order_id))
        if with_venue:
            keys.append(IndexKey(IndexKind.VenueOrderId, msg.venue_order_id))
        return EncodedPayload(_struct_encoder.encode(msg), tuple(keys))

    return encode


def demo_registry() -> EncoderRegistry:
    """The allow-list of the synthetic session's four message structs."""
    registry = EncoderRegistry()
    registry.register(SubmitOrder, "SubmitOrder", _demo_encoder(with_venue=False))
    registry.register(OrderAccepted, "OrderAccepted", _demo_encoder(with_venue=True))
    registry.register(OrderFilled, "OrderFilled", _demo_encoder(with_venue=True))
    registry.register(AccountState, "AccountState", _demo_encoder(with_venue=False, with_client=False))
    return registry


def decode_demo_payload(payload_type: str, payload: bytes) -> object | None:
    """The synthetic session's message for a payload, or None for a type it does not own."""
    decoder = _DEMO_DECODERS.get(payload_type)
    return None if decoder is None else decoder.decode(payload)


class OrderState(msgspec.Struct):
    instrument_id: str
    side: str
    quantity: int
    status: str = "SUBMITTED"
    venue_order_id: str | None = None
    filled_qty: int = 0


class DemoCache(msgspec.Struct):
    """The trading state the log must be able to rebuild."""

    orders: dict[str, OrderState] = {}
    positions: dict[str, int] = {}
    balance: float = 0.0
    last_seq: int = 0

    def apply(self, message: object) -> bool:
        if isinstance(message, SubmitOrder):
            self.orders[message.client_order_id] = OrderState(message.instrument_id, message.side, message.quantity)
        elif isinstance(message, OrderAccepted):
            order = self.orders[message.client_order_id]
            order.status, order.venue_order_id = "ACCEPTED", message.venue_order_id
        elif isinstance(message, OrderFilled):
            order = self.orders[message.client_order_id]
            order.filled_qty += message.last_qty
            order.status = "FILLED" if order.filled_qty >= order.quantity else "PARTIALLY_FILLED"
            signed = message.last_qty if message.side == "BUY" else -message.last_qty
            self.positions[message.instrument_id] = self.positions.get(message.instrument_id, 0) + signed
        elif isinstance(message, AccountState):
            self.balance = message.balance
        else:
            return False
        return True

    def apply_entry(self, entry: EventStoreEntry) -> bool:
        self.last_seq = entry.seq
        message = decode_demo_payload(entry.payload_type, entry.payload)
        return message is not None and self.apply(message)


_cache_encoder = msgspec.msgpack.Encoder()
_cache_decoder = msgspec.msgpack.Decoder(DemoCache)


def run_demo(base_dir: Path, orders: int = 2000, seed: int = 7) -> dict[str, object]:
    """The first demo job: a synthetic session of `orders` orders captured through the ring and
    the writer sidecar, a snapshot anchored midway, verified, then rebuilt from the snapshot plus
    the tail and compared with the live state; returns the figures. Raises InvalidArgument for
    `orders` < 1. Interrupted (Ctrl-C), the run is left to the writer, which commits what was
    submitted; the next boot's recovery seals it."""
    if isinstance(orders, bool) or not isinstance(orders, int) or orders < 1:
        raise InvalidArgument(f"orders must be an int >= 1, got {orders!r}")
    rng = random.Random(seed)
    config = EventStoreConfig(base_dir=str(base_dir), identity=RunIdentity(instance_id=DEMO_INSTANCE_ID, seed=seed))
    lifecycle = EventStoreLifecycle(config)
    components = RegisteredComponents(strategies={"EMACross-001": "demo"}, subscriptions=list(INSTRUMENTS))
    session = lifecycle.open(components)
    try:
        return _drive(session, orders, rng, config.verifier_timeout_s)
    except BaseException:
        session.abandon()  # the writer commits what was pushed; the run stays Running for recovery
        raise


def _drive(session: EventStoreSession, orders: int, rng: random.Random, verify_timeout_s: float) -> dict[str, object]:
    from nes.verifier import verify_in_worker

    capture = BusCaptureAdapter(session.writer, demo_registry())
    live = DemoCache(balance=1_000_000.0)
    anchor = None
    ts = time.time_ns()
    started = time.perf_counter()

    def emit(topic: str, message: object, headers: Headers) -> None:
        nonlocal ts
        ts += 1_000
        capture.capture(topic, message, ts, headers)
        live.apply(message)

    for n in range(orders):
        workflow = uuid.uuid4()
        coid, void = f"O-{n + 1:06d}", f"V-{rng.randrange(10**9):09d}"
        instrument, side = rng.choice(INSTRUMENTS), rng.choice(("BUY", "SELL"))
        qty, px = rng.randrange(1, 10) * 10, round(rng.uniform(10, 1000), 2)
        command_id = uuid.uuid4()
        emit("exec.command.SubmitOrder", SubmitOrder(coid, instrument, side, qty, px, str(command_id)), Headers(workflow, None))
        accepted_id = uuid.uuid4()
        emit("exec.event.OrderAccepted", OrderAccepted(coid, void, str(accepted_id)), Headers(workflow, command_id))
        parent, left = accepted_id, qty
        while left:
            fill = min(left, rng.randrange(1, 3) * 10)
            left -= fill
            fill_id = uuid.uuid4()
            emit("exec.event.OrderFilled", OrderFilled(coid, void, instrument, side, fill, px, str(fill_id)), Headers(workflow, parent))
            balance = live.balance - (fill * px if side == "BUY" else -fill * px)
            emit("exec.event.AccountState", AccountState("DEMO-001", round(balance, 2), str(uuid.uuid4())), Headers(workflow, fill_id))
            parent = fill_id
        if n == orders // 2:
            anchor = session.snapshot_anchorer()(_cache_encoder.encode(live))  # blob durable, then anchored
            if anchor.high_watermark != session.writer.next_seq - 1:
                raise AssertionError("snapshot anchor does not cover every entry submitted before it")
    submitted = session.writer.next_seq - 1
    submit_s = time.perf_counter() - started
    final = session.close()
    durable_s = time.perf_counter() - started

    verdict = verify_in_worker(session.path, verify_timeout_s)

    reader = open_event_store_replay_source(session.path)
    try:
        rebuilt = DemoCache()
        report = restore_snapshot_and_replay_tail(
            reader,
            load_blob=SnapshotBlobStore.beside_run_file(session.path).get,
            restore=lambda blob: _restore(rebuilt, blob),
            apply=rebuilt.apply_entry,
        )
    finally:
        reader.into_inner().close()
    matches = (rebuilt.orders, rebuilt.positions, rebuilt.balance) == (live.orders, live.positions, live.balance)
    return {
        "run_file": str(session.path),
        "run_id": session.run_id,
        "entries": final,
        "durable_high_watermark": final,
        "submitted_before_close": submitted,
        "submit_entries_per_s": round(submitted / submit_s),
        "durable_entries_per_s": round((final or 0) / durable_s),
        "snapshot_anchor_high_watermark": None if anchor is None else anchor.high_watermark,
        "verify": verdict.summary_line(),
        "verify_clean": verdict.is_clean(),
        "replay_applied": report.applied,
        "replay_ignored": report.ignored,
        "replay_matches_live_state": matches,
        "orders": len(live.orders),
    }


def _restore(cache: DemoCache, blob: bytes) -> None:
    restored = _cache_decoder.decode(blob)
    cache.orders, cache.positions, cache.balance = restored.orders, restored.positions, restored.balance


NAUTILUS_INSTANCE_ID = "demo-nautilus"


def run_nautilus_demo(base_dir: Path, quotes: int = 8000, seed: int = 7) -> dict[str, object]:
    """The second demo job: NautilusTrader's EMA-cross example strategies backtested over
    seeded synthetic quotes, captured by the bus tap into a run through the ring and the
    writer sidecar, then verified. Raises `IntegrationUnavailable` without the extra."""
    from nes.integrations.nautilus.backtest import run_ema_cross_backtest
    from nes.integrations.nautilus.registry import COMMAND_TYPES, DATA_MESSAGE_TYPES
    from nes.reader import EventStoreReader
    from nes.verifier import verify_in_worker

    from nes.backend.lmdb import LmdbBackend

    config = EventStoreConfig(base_dir=str(base_dir), identity=RunIdentity(instance_id=NAUTILUS_INSTANCE_ID, seed=seed))
    components = RegisteredComponents(strategies={"EMACross-000": "EMACross", "EMACrossBracket-001": "EMACrossBracket"})
    session = EventStoreLifecycle(config).open(components)
    try:
        _, result = run_ema_cross_backtest(session, quotes=quotes, seed=seed)
    except BaseException:
        session.abandon()
        raise
    final = session.close()
    verdict = verify_in_worker(session.path, config.verifier_timeout_s)
    command_names = {t.__name__ for t in COMMAND_TYPES}
    data_names = {t.__name__ for t in DATA_MESSAGE_TYPES}
    kinds: dict[str, int] = {"commands": 0, "events": 0, "data_messages": 0}
    by_type: dict[str, int] = {}
    backend = LmdbBackend.open_sealed_file(session.path)
    try:
        reader = EventStoreReader(backend)
        for entry in reader.scan_range(1, reader.high_watermark()):
            if entry.payload_type in ("RunStarted", "RunEnded"):
                continue
            kind = "commands" if entry.payload_type in command_names else "data_messages" if entry.payload_type in data_names else "events"
            kinds[kind] += 1
            by_type[entry.payload_type] = by_type.get(entry.payload_type, 0) + 1
    finally:
        backend.close()
    return {
        "nautilus_run_file": str(session.path),
        "nautilus_backtest_wall_s": round(result.wall_s, 3),
        "nautilus_orders": result.orders,
        "nautilus_fills": result.fills,
        "nautilus_orders_accepted": by_type.get("OrderAccepted", 0),
        "nautilus_positions_opened": by_type.get("PositionOpened", 0),
        "nautilus_positions_closed": by_type.get("PositionClosed", 0),
        "nautilus_account_states": by_type.get("AccountState", 0),
        "nautilus_captured": result.captured,
        "nautilus_captured_commands": kinds["commands"],
        "nautilus_captured_events": kinds["events"],
        "nautilus_captured_data_messages": kinds["data_messages"],
        "nautilus_entries": final,
        "nautilus_verify": verdict.summary_line(),
        "nautilus_verify_clean": verdict.is_clean(),
    }


def main(argv: list[str] | None = None) -> int:
    """`nes demo [--dir D] [--orders N] [--nautilus] [--quotes N]`: exit 0 when every job
    verifies clean (and the synthetic replay matches), 1 otherwise, 2 when it cannot run."""
    parser = argparse.ArgumentParser(prog="nes demo", description=__doc__)
    parser.add_argument("--dir", type=Path, help="base directory (default: a fresh temporary one)")
    parser.add_argument("--orders", type=int, default=2000, help="order workflows to capture (>= 1, default 2000)")
    parser.add_argument(
        "--nautilus", action="store_true", help="also backtest NautilusTrader's EMA-cross strategies with the bus tap"
    )
    parser.add_argument("--quotes", type=int, default=8000, help="synthetic quotes of the --nautilus backtest (>= 1)")
    ns = parser.parse_args(argv)
    if ns.orders < 1:
        print(f"nes demo: --orders must be >= 1, got {ns.orders}", file=sys.stderr)
        return 2
    if ns.quotes < 1:
        print(f"nes demo: --quotes must be >= 1, got {ns.quotes}", file=sys.stderr)
        return 2
    if ns.nautilus:
        try:
            import nes.integrations.nautilus  # noqa: F401 - fail before the first job, with a clear line
        except ImportError as exc:
            print(f"nes demo: {exc}", file=sys.stderr)
            return 2
    base = ns.dir or Path(tempfile.mkdtemp(prefix="nes-demo-"))
    try:
        result = run_demo(base, ns.orders)
        ok = bool(result["verify_clean"]) and bool(result["replay_matches_live_state"])
        if ns.nautilus:
            nautilus = run_nautilus_demo(base, ns.quotes)
            ok = ok and bool(nautilus["nautilus_verify_clean"])
            result.update(nautilus)
    except EventStoreError as exc:
        print(f"nes demo: {exc}", file=sys.stderr)
        return 2
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print("demo: OK" if ok else "demo: FAILED")
    print(f"run file left at {result['run_file']} (check it: nes verify {result['run_file']})")
    if ns.nautilus:
        print(f"nautilus run file left at {result['nautilus_run_file']}")
    return 0 if ok else 1
