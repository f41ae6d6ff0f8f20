"""Issue 9 item 2: `EventStoreConfig(...)` validates every field with the same messages as
`EventStoreConfig.load` / `from_mapping`, accepts `pathlib.Path` for base_dir, and no message
prints a prefix or a field name twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nes import Bounded, ConfigError, EventStoreConfig, EventStoreLifecycle, RunIdentity, SnapshotAnchored, WriterConfig

IDENTITY = {"instance_id": "trader-001"}


def _from_mapping_message(**fields: Any) -> str:
    data: dict[str, Any] = {"base_dir": "/tmp/nes", "identity": IDENTITY, **fields}
    with pytest.raises(ConfigError) as info:
        EventStoreConfig.from_mapping(data)
    return str(info.value)


def _constructor_message(**fields: Any) -> str:
    kwargs: dict[str, Any] = {"base_dir": "/tmp/nes", "identity": RunIdentity(**IDENTITY), **fields}
    with pytest.raises(ConfigError) as info:
        EventStoreConfig(**kwargs)
    return str(info.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"retention": "bounded:0"},
        {"retention": "forever"},
        {"retention": 5},
        {"writer": "nonsense"},
        {"writer": {"ring_bytes": 5000}},
        {"writer": {"max_batch_entries": "many"}},
        {"identity": {"instance_id": "../escape"}},
        {"identity": {"instance_id": "t", "seed": "x"}},
        {"identity": {"instance_id": "t", "typo": 1}},
        {"identity": "trader-001"},
        {"base_dir": 7},
        {"base_dir": ""},
        {"replay_from_run_id": "a/b"},
        {"replay_from_run_id": 5},
        {"run_started_timeout_s": "soon"},
        {"verifier_timeout_s": -1.0},
    ],
    ids=lambda f: ",".join(f"{k}={v!r}" for k, v in f.items()),
)
def test_constructor_rejects_what_load_rejects_with_the_same_message(fields: dict[str, Any]) -> None:
    assert _constructor_message(**fields) == _from_mapping_message(**fields)


def test_constructor_takes_a_retention_label_like_a_config_file() -> None:
    built = EventStoreConfig(
        base_dir="/tmp/nes", identity=RunIdentity("t"), retention="bounded:5"  # type: ignore[arg-type]
    )
    assert built.retention == Bounded(5)
    assert built == EventStoreConfig.from_mapping(
        {"base_dir": "/tmp/nes", "identity": {"instance_id": "t"}, "retention": "bounded:5"}
    )
    labelled = EventStoreConfig(
        base_dir="/tmp/nes", identity=RunIdentity("t"), retention="snapshot-anchored"  # type: ignore[arg-type]
    )
    assert labelled.retention == SnapshotAnchored()


def test_constructor_takes_identity_and_writer_tables_and_builds_the_structs() -> None:
    built = EventStoreConfig(
        base_dir="/tmp/nes",
        identity={"instance_id": "t", "seed": 3},  # type: ignore[arg-type]
        writer={"ring_bytes": 1 << 20, "max_record_bytes": 1 << 16},  # type: ignore[arg-type]
    )
    assert built.identity == RunIdentity("t", seed=3)
    assert built.writer == WriterConfig(ring_bytes=1 << 20, max_record_bytes=1 << 16)


def test_run_identity_constructor_checks_every_field() -> None:
    with pytest.raises(ConfigError) as info:
        RunIdentity("t", seed="x")  # type: ignore[arg-type]
    assert str(info.value) == "identity.seed: Expected `int`, got `str`"
    with pytest.raises(ConfigError) as info:
        RunIdentity("t", feature_flags=[1])  # type: ignore[list-item]
    assert str(info.value) == "identity.feature_flags[0]: Expected `str`, got `int`"


def test_writer_config_constructor_checks_types() -> None:
    with pytest.raises(ConfigError) as info:
        WriterConfig(ring_bytes="big")  # type: ignore[arg-type]
    assert str(info.value) == "ring_bytes: Expected `int`, got `str`"
    with pytest.raises(ConfigError) as info:
        WriterConfig(max_batch_entries=True)
    assert str(info.value) == "max_batch_entries: Expected `int`, got `bool`"


def test_base_dir_accepts_a_path(tmp_path: Path) -> None:
    config = EventStoreConfig(base_dir=tmp_path / "runs", identity=RunIdentity("t"))  # type: ignore[arg-type]
    assert config.base_dir == str(tmp_path / "runs")
    assert config == EventStoreConfig(base_dir=str(tmp_path / "runs"), identity=RunIdentity("t"))


def test_a_config_built_with_a_path_boots_a_run(tmp_path: Path) -> None:
    config = EventStoreConfig(base_dir=tmp_path, identity=RunIdentity("t"))  # type: ignore[arg-type]
    with EventStoreLifecycle(config).open() as session:
        assert session.path.parent == tmp_path / "t"
    assert session.final_high_watermark == 2


def test_no_field_name_is_printed_twice() -> None:
    with pytest.raises(ConfigError) as info:
        RunIdentity("../a")
    assert str(info.value) == (
        "identity.instance_id: invalid value '../a': use 1-128 characters from [A-Za-z0-9._-], "
        "not starting with '.' or '-'"
    )
    loaded = _from_mapping_message(writer={"ring_bytes": 5000})
    assert loaded == "writer.ring_bytes: must be a power of two in [4096, 1099511627776], got 5000"
    for text in (str(info.value), loaded, _from_mapping_message(writer={"idle_linger_s": 2.0})):
        field = text.split(":", 1)[0].rsplit(".", 1)[-1]
        assert text.count(field) == 1, text
