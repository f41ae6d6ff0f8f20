"""In-memory backend for simulation and focused tests.

Contract: the same checks, errors and read-side hash verification as the LMDB backend (both
inherit them from `RunStoreBase`); nothing is durable beyond the object. An unsealed run held
when `open_run` is called again is a `CrashedPredecessor` and stays readable and sealable.
"""

from __future__ import annotations

from collections.abc import Callable

from nes.backend.base import IndexKind, PreparedBatch, RunStoreBase, _Run, correlation_index_rows, normalized_for_open
from nes.codec import key_seq, seq_key
from nes.errors import CrashedPredecessor
from nes.manifest import RunManifest
from nes.snapshot import SnapshotAnchor

__all__ = ["MemoryBackend"]


class MemoryBackend(RunStoreBase):
    """The storage contract in memory (tests and simulation); nothing is durable."""

    def __init__(self) -> None:
        self._run = None
        self._values: list[bytes] = []  # index = seq - 1
        self._index: dict[IndexKind, dict[str, list[int]]] = {}
        self._correlation: dict[bytes, list[int]] = {}
        self._anchor: SnapshotAnchor | None = None

    def open_run(self, manifest: RunManifest) -> None:
        """Start the run in memory; CrashedPredecessor if a Running run is held."""
        if self._run is not None and not self._run.manifest.is_sealed():
            raise CrashedPredecessor()
        self._values = []
        self._index = {kind: {} for kind in IndexKind}
        self._correlation = {}
        self._anchor = None
        self._run = _Run(normalized_for_open(manifest), 0, 0, read_only=False)

    def _stage(self, batch: PreparedBatch) -> Callable[[], None]:
        correlation_rows = correlation_index_rows(batch.items)

        def store() -> None:
            for correlation, seq_bytes in correlation_rows:
                self._correlation.setdefault(correlation, []).append(key_seq(seq_bytes))
            for kind, key, seq in batch.index_rows:
                seqs = self._index[kind].setdefault(key, [])
                if not seqs or seqs[-1] != seq:
                    seqs.append(seq)
            self._values.extend(value for _, value in batch.items)

        return store

    def _get_value(self, seq: int) -> bytes | None:
        return self._values[seq - 1] if 0 < seq <= len(self._values) else None

    def _read_rows(self, lo: int, hi: int) -> list[tuple[bytes, bytes]]:
        return [(seq_key(seq), self._values[seq - 1]) for seq in range(lo, min(hi, len(self._values)) + 1)]

    def _index_seqs(self, kind: IndexKind, key: str) -> list[int]:
        return list(self._index.get(kind, {}).get(key, ()))

    def _index_pairs(self, kind: IndexKind) -> list[tuple[str, int]]:
        pairs = self._index.get(kind, {})
        return [(key, pairs[key][0]) for key in sorted(pairs, key=lambda k: k.encode("utf-8"))]

    def _correlation_seqs(self, correlation_key: bytes) -> list[int]:
        return list(self._correlation.get(correlation_key, ()))

    def _load_latest_anchor(self) -> SnapshotAnchor | None:
        return self._anchor

    def _store_anchor(self, anchor: SnapshotAnchor) -> None:
        self._anchor = anchor

    def _store_manifest(self, manifest: RunManifest) -> None:
        pass  # the in-memory manifest is the only copy

    # Test support: damage the stored state the way a faulty disk would.
    def corrupt_value(self, seq: int, value: bytes) -> None:
        """Test hook: overwrite the stored value of `seq` (simulated corruption)."""
        self._values[seq - 1] = value


