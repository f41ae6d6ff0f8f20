"""Validation of names that become path components (instance ids, run ids).

Contract: an id is 1-128 characters from [A-Za-z0-9._-], not starting with '.' or '-', so it
is always a single path component inside the base directory and never `.`/`..`/hidden.
"""

from __future__ import annotations

import re
import secrets

from nes.errors import InvalidArgument

__all__ = ["validate_path_id", "build_run_id", "RUN_ID_RE"]

_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
RUN_ID_RE = re.compile(r"(\d+)-([0-9a-f]{8})")


def validate_path_id(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a str, got {type(value).__name__}")
    if not _ID_RE.fullmatch(value):
        raise InvalidArgument(
            f"invalid {what} {value!r}: use 1-128 characters from [A-Za-z0-9._-], "
            "not starting with '.' or '-'"
        )
    return value


def build_run_id(start_ts_init: int) -> str:
    """`<start_ts_init>-<8 hex chars>`: run ids sort by start time."""
    if start_ts_init < 0:
        raise InvalidArgument(f"start_ts_init must be >= 0, got {start_ts_init}")
    return f"{start_ts_init}-{secrets.token_hex(4)}"
