"""Issue 9 item 9: the README (and every document under docs/) says what a new user needs, links
nothing outside the repository, and every ```python block in them runs verbatim.

Each Python block runs on its own, as a reader would paste it: a fresh interpreter in a fresh
empty working directory, with this checkout importable. ```toml blocks must load as an
`EventStoreConfig`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nes import EventStoreConfig

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)[^\n]*\n(?P<body>.*?)^```\s*$", re.M | re.S)
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def blocks(lang: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCUMENTS:
        text = doc.read_text()
        for match in _FENCE.finditer(text):
            if match.group("lang") == lang:
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{doc.relative_to(ROOT)}:{line}", match.group("body")))
    return found


def test_readme_has_runnable_python_blocks() -> None:
    readme = [where for where, _ in blocks("python") if where.startswith("README.md")]
    assert len(readme) >= 4


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=[w for w, _ in blocks("python")])
def test_python_block_runs_verbatim(tmp_path: Path, where: str, code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stderr}"


@pytest.mark.parametrize(("where", "text"), blocks("toml"), ids=[w for w, _ in blocks("toml")])
def test_toml_block_is_a_valid_config(tmp_path: Path, where: str, text: str) -> None:
    path = tmp_path / "nes.toml"
    path.write_text(text)
    EventStoreConfig.load(path)


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(doc: Path) -> None:
    text = _FENCE.sub("", doc.read_text())  # prose only: code blocks may show bad input on purpose
    assert "../" not in text, "a relative path out of the repository"
    assert "/work/" not in text and "http" not in text
    for match in _LINK.finditer(text):
        target = match.group("target").split("#", 1)[0]
        assert not re.match(r"^[a-z]+:", target), f"external link {target}"
        if target:
            assert (doc.parent / target).resolve().is_relative_to(ROOT) and (doc.parent / target).exists(), target


def test_readme_covers_what_a_new_user_needs() -> None:
    text = (ROOT / "README.md").read_text()
    setup = text.index("## Set-up")
    assert text.index("python3 -m venv .venv && . .venv/bin/activate", setup) < text.index("pip install", setup)
    for needle in (
        "first entry is seq 2",  # RunStarted is seq 1
        "nanoseconds",  # the unit of ts_init
        "wait_durable(seq, timeout=5.0)",  # its result is checked
        "1 MiB",  # the record limit
        "RecordTooLarge",
        "## Reading and replaying a run",
        "restore_snapshot_and_replay_tail",
        "## Configuration files",
        "EventStoreConfig.load",
        "docs/architecture.md",
        "nes-eventstore",
    ):
        assert needle in text, needle
