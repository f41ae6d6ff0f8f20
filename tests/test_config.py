"""nes.config: loading (TOML, JSON, mappings), defaults, and errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from nes.config import (
    Bounded,
    ConfigError,
    EventStoreConfig,
    Full,
    RunIdentity,
    SnapshotAnchored,
    parse_retention_mode,
)
from nes.writer import WriterConfig

TOML = """
base_dir = "/var/lib/nes"
replay_from_run_id = "1700000000-0a1b2c3d"
run_started_timeout_s = 2
verifier_timeout_s = 12.5

[identity]
instance_id = "trader-001"
binary_hash = "deadbeef"
feature_flags = ["live"]
config_hash = "cafe"
seed = 42

[identity.package_versions]
nes = "0.1.0"

[identity.adapter_versions]
binance = "1.2"

[retention]
mode = "bounded"
keep_last = 5

[writer]
max_batch_entries = 500
ring_bytes = 1048576
max_record_bytes = 65536
"""


def minimal(**extra: object) -> dict[str, object]:
    return {"base_dir": "/tmp/nes", "identity": {"instance_id": "trader-001"}, **extra}


def test_toml_file_loads_every_section(tmp_path: Path) -> None:
    path = tmp_path / "nes.toml"
    path.write_text(TOML)
    config = EventStoreConfig.load(path)
    assert config.base_dir == "/var/lib/nes"
    assert config.identity == RunIdentity(
        instance_id="trader-001",
        binary_hash="deadbeef",
        package_versions={"nes": "0.1.0"},
        feature_flags=["live"],
        adapter_versions={"binance": "1.2"},
        config_hash="cafe",
        seed=42,
    )
    assert config.retention == Bounded(5)
    assert config.retention.label() == "bounded:5"
    assert config.replay_from_run_id == "1700000000-0a1b2c3d"
    assert config.writer == WriterConfig(max_batch_entries=500, ring_bytes=1 << 20, max_record_bytes=1 << 16)
    assert config.run_started_timeout_s == 2.0
    assert config.verifier_timeout_s == 12.5


def test_json_file_loads_and_matches_toml(tmp_path: Path) -> None:
    toml_path = tmp_path / "nes.toml"
    toml_path.write_text(TOML)
    from_toml = EventStoreConfig.load(toml_path)
    json_path = tmp_path / "nes.json"
    json_path.write_bytes(msgspec.json.encode(from_toml))
    assert EventStoreConfig.load(json_path) == from_toml


def test_minimal_config_takes_documented_defaults() -> None:
    config = EventStoreConfig.from_mapping(minimal())
    assert config.retention == Full()
    assert config.retention.label() == "full"
    assert config.replay_from_run_id is None
    assert config.writer == WriterConfig()
    assert config.run_started_timeout_s == 5.0
    assert config.verifier_timeout_s == 30.0
    identity = config.identity
    assert (identity.binary_hash, identity.package_versions, identity.feature_flags) == ("", {}, [])
    assert (identity.adapter_versions, identity.config_hash, identity.seed) == ({}, "", 0)


def test_constructor_matches_from_mapping() -> None:
    built = EventStoreConfig(base_dir="/tmp/nes", identity=RunIdentity(instance_id="trader-001"))
    assert built == EventStoreConfig.from_mapping(minimal())


def test_config_is_frozen() -> None:
    config = EventStoreConfig.from_mapping(minimal())
    with pytest.raises(AttributeError):
        config.base_dir = "/elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("retention", "expected"),
    [
        ({"mode": "full"}, Full()),
        ({"mode": "bounded", "keep_last": 3}, Bounded(3)),
        ({"mode": "snapshot-anchored"}, SnapshotAnchored()),
        ("bounded:7", Bounded(7)),
        ("snapshot-anchored", SnapshotAnchored()),
    ],
)
def test_retention_accepts_tables_and_labels(retention: object, expected: object) -> None:
    assert EventStoreConfig.from_mapping(minimal(retention=retention)).retention == expected


@pytest.mark.parametrize("mode", [Full(), Bounded(1), Bounded(12), SnapshotAnchored()])
def test_parse_retention_mode_round_trips_labels(mode: object) -> None:
    assert parse_retention_mode(mode.label()) == mode  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["", "bounded", "bounded:-1", "bounded:x", "keep-all"])
def test_parse_retention_mode_rejects_unknown_labels(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^retention"):
        parse_retention_mode(text)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (minimal(identity={"instance_id": "../escape"}), "identity.instance_id"),
        (minimal(identity={"instance_id": ""}), "identity.instance_id"),
        (minimal(identity={"instance_id": 7}), "identity.instance_id"),
        (minimal(identity={}), "identity.instance_id"),
        (minimal(identity={"instance_id": "t", "seed": "x"}), "identity.seed"),
        (minimal(identity={"instance_id": "t", "package_versions": {"a": 1}}), "identity.package_versions"),
        (minimal(identity={"instance_id": "t", "typo": 1}), "identity.typo"),
        (minimal(retention={"mode": "bounded", "keep_last": -1}), "retention.keep_last"),
        (minimal(retention={"mode": "bounded"}), "retention.keep_last"),
        (minimal(retention={"mode": "forever"}), "retention"),
        (minimal(replay_from_run_id="a/b"), "replay_from_run_id"),
        (minimal(run_started_timeout_s=0), "run_started_timeout_s"),
        (minimal(verifier_timeout_s=-1.0), "verifier_timeout_s"),
        (minimal(verifier_timeout_s="soon"), "verifier_timeout_s"),
        (minimal(writer={"ring_bytes": 5000}), "writer"),
        (minimal(writer={"max_batch_entries": 0}), "writer"),
        (minimal(writer={"unknown": 1}), "writer.unknown"),
        (minimal(base_dir=""), "base_dir"),
        ({"identity": {"instance_id": "t"}}, "base_dir"),
        (minimal(extra_key=1), "extra_key"),
    ],
)
def test_invalid_value_raises_config_error_naming_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        EventStoreConfig.from_mapping(data)
    assert str(info.value).startswith(field), str(info.value)
    assert isinstance(info.value, ValueError)


def test_constructor_validates_like_from_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^identity\.instance_id: "):
        RunIdentity(instance_id="..")
    with pytest.raises(ConfigError, match=r"^retention\.keep_last: "):
        Bounded(-1)
    identity = RunIdentity(instance_id="trader-001")
    with pytest.raises(ConfigError, match=r"^run_started_timeout_s: "):
        EventStoreConfig(base_dir="/tmp/nes", identity=identity, run_started_timeout_s=0.0)
    with pytest.raises(ConfigError, match=r"^replay_from_run_id: "):
        EventStoreConfig(base_dir="/tmp/nes", identity=identity, replay_from_run_id=".hidden")


def test_load_reports_bad_files_as_config_errors(tmp_path: Path) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("base_dir = \n")
    with pytest.raises(ConfigError, match="cannot parse"):
        EventStoreConfig.load(bad_toml)
    not_object = tmp_path / "list.json"
    not_object.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="expected a table"):
        EventStoreConfig.load(not_object)
    with pytest.raises(ConfigError, match="unsupported file type"):
        EventStoreConfig.load(tmp_path / "nes.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        EventStoreConfig.load(tmp_path / "missing.toml")


def test_load_field_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "nes.toml"
    path.write_text('base_dir = "/tmp/nes"\n[identity]\ninstance_id = "bad id"\n')
    with pytest.raises(ConfigError, match=r"^identity\.instance_id: "):
        EventStoreConfig.load(path)
