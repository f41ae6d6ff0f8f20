"""Configuration of the kernel-managed run lifecycle: who the run is, how sealed runs are
retained, and the writer and boot settings.

Contract: an `EventStoreConfig` that exists is valid. Every way of building one (the
constructor, `from_mapping`, `load` from `.toml` or `.json`) validates types and ranges, and
every invalid value raises `ConfigError` (an `EventStoreError` and a `ValueError`) whose
message starts with the dotted path of the offending field, e.g. `identity.instance_id: ...` or
`writer.ring_bytes: ...`, and the constructor gives the same message as `load` for the same
value. The constructor accepts what a config file holds: `base_dir` as a `str` or any
`os.PathLike` (stored as `str`), `identity`/`writer` as mappings, `retention` as a label string
(`"bounded:5"`). Configs are frozen msgspec Structs; nothing here touches the run files.
"""

from __future__ import annotations

import math
import os
import re
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import msgspec

from nes.errors import MAX_TIMEOUT_S, ConfigError
from nes.ids import validate_path_id
from nes.writer import WriterConfig

__all__ = [
    "ConfigError",
    "RunIdentity",
    "Full",
    "Bounded",
    "SnapshotAnchored",
    "RetentionMode",
    "parse_retention_mode",
    "EventStoreConfig",
    "DEFAULT_RUN_STARTED_TIMEOUT_S",
    "DEFAULT_VERIFIER_TIMEOUT_S",
]

DEFAULT_RUN_STARTED_TIMEOUT_S = 5.0
DEFAULT_VERIFIER_TIMEOUT_S = 30.0


def _path_id(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{field}: Expected `str`, got `{type(value).__name__}`")
    try:
        return validate_path_id(value, "value")
    except ValueError as exc:
        raise ConfigError(f"{field}: {exc}") from None


def _timeout(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{field}: Expected `float`, got `{type(value).__name__}`")
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise ConfigError(f"{field}: must be a finite number of seconds in (0, {MAX_TIMEOUT_S:g}], got {value!r}")


_REVALIDATING = threading.local()


def _enc_hook(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise NotImplementedError(f"Expected a config value, got `{type(value).__name__}`")


def _revalidate(obj: msgspec.Struct, prefix: str) -> None:
    """Validate a constructed config exactly as `from_mapping` validates the same values.

    msgspec's constructor does not check types; so the fields are turned back into plain data
    and converted as a loaded file would be (same checks, same messages), and the normalised
    values (`Path` -> `str`, mapping -> struct, label -> retention mode) replace the given ones.
    The nested construction inside `msgspec.convert` is already checked, hence the guard."""
    if getattr(_REVALIDATING, "active", False):
        return
    data: dict[str, Any] = {}
    for name in obj.__struct_fields__:
        try:
            data[name] = msgspec.to_builtins(getattr(obj, name), enc_hook=_enc_hook)
        except (TypeError, NotImplementedError) as exc:
            raise ConfigError(f"{prefix}{name}: {exc}") from None
    if isinstance(data.get("retention"), str):
        data["retention"] = msgspec.to_builtins(parse_retention_mode(data["retention"]))
    _REVALIDATING.active = True
    try:
        checked = msgspec.convert(data, type(obj))
    except msgspec.ValidationError as exc:
        message = _field_message(str(exc))
        raise ConfigError(f"{prefix}{message}" if prefix and not message.startswith(prefix) else message) from None
    finally:
        _REVALIDATING.active = False
    for name in obj.__struct_fields__:
        msgspec.structs.force_setattr(obj, name, getattr(checked, name))


# ---- identity ----------------------------------------------------------------------------------
class RunIdentity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What identifies the process that produced a run (copied into each run's manifest)."""

    instance_id: str
    binary_hash: str = ""
    package_versions: dict[str, str] = {}
    feature_flags: list[str] = []
    adapter_versions: dict[str, str] = {}
    config_hash: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        _revalidate(self, "identity.")
        _path_id(self.instance_id, "identity.instance_id")


# ---- retention mode ----------------------------------------------------------------------------
class Full(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="mode", tag="full"):
    """Keep every sealed run."""

    def label(self) -> str:
        """The mode as a label: `full`."""
        return "full"


class Bounded(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="mode", tag="bounded"):
    """Keep the last `keep_last` sealed runs, and always the known-good restore point."""

    keep_last: int

    def __post_init__(self) -> None:
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int) or self.keep_last < 1:
            raise ConfigError(f"retention.keep_last: must be an int >= 1, got {self.keep_last!r}")

    def label(self) -> str:
        """The mode as a label: `bounded:<keep_last>`."""
        return f"bounded:{self.keep_last}"


class SnapshotAnchored(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="mode", tag="snapshot-anchored"
):
    """Keep the latest known-good restore point and everything newer."""

    def label(self) -> str:
        """The mode as a label: `snapshot-anchored`."""
        return "snapshot-anchored"


RetentionMode = Union[Full, Bounded, SnapshotAnchored]

_BOUNDED_RE = re.compile(r"bounded:(\d+)")


def parse_retention_mode(text: str) -> RetentionMode:
    """Parse a mode label as `label()` prints it: `full`, `bounded:<n>`, `snapshot-anchored`."""
    label = text.strip().lower()
    if label == "full":
        return Full()
    if label in ("snapshot-anchored", "snapshot_anchored"):
        return SnapshotAnchored()
    match = _BOUNDED_RE.fullmatch(label)
    if match:
        return Bounded(int(match.group(1)))
    raise ConfigError(
        f"retention: unknown mode {text!r} (expected 'full', 'bounded:<keep_last>' or 'snapshot-anchored')"
    )


# ---- the config --------------------------------------------------------------------------------
class EventStoreConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Configuration for the kernel-managed event store run lifecycle."""

    base_dir: str
    identity: RunIdentity
    retention: RetentionMode = Full()
    replay_from_run_id: str | None = None
    writer: WriterConfig = WriterConfig()
    run_started_timeout_s: float = DEFAULT_RUN_STARTED_TIMEOUT_S
    verifier_timeout_s: float = DEFAULT_VERIFIER_TIMEOUT_S

    def __post_init__(self) -> None:
        _revalidate(self, "")
        if not self.base_dir:
            raise ConfigError(f"base_dir: must be a non-empty path, got {self.base_dir!r}")
        if self.replay_from_run_id is not None:
            _path_id(self.replay_from_run_id, "replay_from_run_id")
        for name in ("run_started_timeout_s", "verifier_timeout_s"):
            _timeout(getattr(self, name), name)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EventStoreConfig:
        """Build from plain data (a parsed TOML/JSON document). `retention` may be a table
        (`{mode = "bounded", keep_last = 5}`) or a label string (`"bounded:5"`)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: expected a table/object, got {type(data).__name__}")
        data = dict(data)
        if isinstance(data.get("retention"), str):
            data["retention"] = msgspec.to_builtins(parse_retention_mode(data["retention"]))
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(_field_message(str(exc))) from None

    @classmethod
    def load(cls, path: str | Path) -> EventStoreConfig:
        """Load from a `.toml` or `.json` file."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".toml", ".json"):
            raise ConfigError(f"config: unsupported file type {path.name!r} (use .toml or .json)")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"config: cannot read {path}: {exc}") from exc
        try:
            data = tomllib.loads(raw.decode("utf-8")) if suffix == ".toml" else msgspec.json.decode(raw)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, msgspec.DecodeError) as exc:
            raise ConfigError(f"config: cannot parse {path}: {exc}") from None
        return cls.from_mapping(data)


# ---- msgspec error -> field path -----------------------------------------------------------------
_AT_RE = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_FIELD_RE = re.compile(r"^[a-z_][a-z0-9_]*: ")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def _field_message(text: str) -> str:
    """`Expected int, got str - at $.identity.seed` -> `identity.seed: Expected int, got str`."""
    match = _AT_RE.match(text)
    msg, path = (match.group("msg"), match.group("path").lstrip(".")) if match else (text, "")
    for pattern, what in ((_UNKNOWN_RE, "unknown field"), (_MISSING_RE, "missing required field")):
        found = pattern.match(msg)
        if found:
            field = found.group("field")
            return f"{path}.{field}: {what}" if path else f"{field}: {what}"
    if not path or msg.startswith((f"{path}.", f"{path}:")):
        return msg  # our own __post_init__ messages already carry the full path
    if _FIELD_RE.match(msg):
        return f"{path}.{msg}"  # a nested struct's own message names its field: `ring_bytes: ...`
    return f"{path}: {msg}"
