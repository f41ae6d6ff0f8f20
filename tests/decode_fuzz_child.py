"""Child process of the decode fuzz test: decode every registered type's payload with each text
field (and key) replaced by hostile values. A NautilusTrader panic aborts this process; the
parent sees the abort and the last variant printed on stderr."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).parent))
from nautilus_samples import payload_with, sample_messages  # noqa: E402

from nes import PayloadDecodeError  # noqa: E402
from nes.integrations.nautilus import CAPTURED_TYPES, decode_payload, default_registry  # noqa: E402

HOSTILE: list[Any] = ["", "bad", "\x00", "é-é", "x" * 5000, "a-b", None, 12345, -1, True]


def leaves(obj: Any, path: list[Any]) -> Any:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, [*path, key])
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from leaves(value, [*path, index])
    else:
        yield path


def main() -> int:
    samples, registry = sample_messages(), default_registry()
    decoded = 0
    for message_type in CAPTURED_TYPES:
        payload_type, encoded = registry.encode(samples[message_type])
        body = msgspec.msgpack.decode(encoded.payload)
        for path in list(leaves(body, [])):
            if path == ["type"]:
                continue
            for hostile in HOSTILE:
                variant = payload_with(encoded.payload, path, hostile)
                print(payload_type, path, repr(hostile)[:12], file=sys.stderr, flush=True)
                try:
                    decode_payload(payload_type, msgspec.msgpack.encode(variant))
                except PayloadDecodeError:
                    pass
                decoded += 1
        if isinstance(body, dict):  # hostile keys (mass status keys become venue order ids)
            for key in list(body):
                for hostile in ("\x00", "é-é"):
                    if isinstance(body[key], dict) and body[key]:
                        variant = payload_with(encoded.payload, [key, next(iter(body[key]))], key=hostile)
                        print(payload_type, key, "key", repr(hostile), file=sys.stderr, flush=True)
                        try:
                            decode_payload(payload_type, msgspec.msgpack.encode(variant))
                        except PayloadDecodeError:
                            pass
                        decoded += 1
    print(f"decoded {decoded} variants")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
