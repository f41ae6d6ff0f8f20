"""NautilusTrader integration: the default capture registry of its message types, the payload
decoder, the bus tap, and a deterministic EMA-cross backtest (installed by `nes[nautilus]`).

Everything in `nes` that imports `nautilus_trader` lives in this package. Importing it without
the extra raises `nes.IntegrationUnavailable` (an `ImportError`).
"""

from __future__ import annotations

from nes.capture import IntegrationUnavailable

try:
    import nautilus_trader  # noqa: F401 - the availability probe
except ImportError as _exc:  # pragma: no cover - exercised in an environment without the extra
    raise IntegrationUnavailable("nautilus", "nautilus") from _exc

from nes.integrations.nautilus.headers import HeaderDeriver
from nes.integrations.nautilus.registry import (
    CAPTURED_TYPES,
    DataMessageMetadata,
    decode_payload,
    default_registry,
    index_rule,
)
from nes.integrations.nautilus.tap import NautilusBusTap, attach_tap

__all__ = [
    "CAPTURED_TYPES",
    "DataMessageMetadata",
    "HeaderDeriver",
    "NautilusBusTap",
    "attach_tap",
    "decode_payload",
    "default_registry",
    "index_rule",
]
