"""`nes export`: runs to Parquet (pyarrow) or JSON Lines, for analysts.

Contract:
- One stable schema (`EXPORT_SCHEMA`): seq, ts_init, ts_publish, topic, payload_type,
  correlation_id, causation_id (UUID text or null), client_order_id, venue_order_id (from the
  order-id indexes; several ids of one entry joined by ","; null when none), entry_hash (hex),
  payload (bytes; hex text in JSON Lines), payload_json (the payload as JSON text when it is
  MessagePack, else null).
- Layout: `<out>/instance_id=<instance>/run_id=<run>/data.parquet` (or `data.jsonl`), readable
  as a hive-partitioned dataset (DuckDB `read_parquet('<out>/**/*.parquet', hive_partitioning=1)`).
- Atomic: rows go to a temp file beside the target (0600, in 0700 directories); it is fsynced
  and renamed over the target, then the directory is fsynced. An interrupted or failed export
  removes its temp file: the target is either the previous complete export or the new one.
- A run is exported only if it verifies clean in the verifier worker (`verify`), unless
  `force=True`; otherwise `ExportRefused`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import msgspec

from nes.backend import layout
from nes.backend.base import IndexKind
from nes.entry import EventStoreEntry
from nes.errors import EventStoreError
from nes.ops.progress import Progress
from nes.ops.render import entry_fields, payload_json_text
from nes.ops.runfile import RunFile

__all__ = ["ExportRefused", "ExportResult", "export_run", "EXPORT_COLUMNS", "FORMATS", "order_ids_by_seq"]

FORMATS = ("parquet", "jsonl")
EXPORT_COLUMNS = (
    "seq", "ts_init", "ts_publish", "topic", "payload_type", "correlation_id", "causation_id",
    "client_order_id", "venue_order_id", "entry_hash", "payload", "payload_json",
)
_BATCH_ROWS = 65_536


class ExportRefused(EventStoreError):
    """The run did not verify clean (and `force` was not given)."""


class ExportResult(msgspec.Struct, frozen=True):
    """One exported run."""

    instance_id: str
    run_id: str
    rows: int
    file: str


def export_schema() -> Any:
    """The Parquet schema of an export (pyarrow)."""
    import pyarrow as pa  # type: ignore[import-untyped]

    return pa.schema([
        ("seq", pa.uint64()), ("ts_init", pa.uint64()), ("ts_publish", pa.uint64()),
        ("topic", pa.string()), ("payload_type", pa.string()),
        ("correlation_id", pa.string()), ("causation_id", pa.string()),
        ("client_order_id", pa.string()), ("venue_order_id", pa.string()),
        ("entry_hash", pa.string()), ("payload", pa.binary()), ("payload_json", pa.string()),
    ])


def order_ids_by_seq(run_file: RunFile, kind: IndexKind, up_to: int) -> dict[int, str]:
    """seq -> the order ids of `kind` it carries (joined by ","), from the index."""
    out: dict[int, str] = {}
    for key, seq in run_file.index_rows(kind):
        if seq <= up_to:
            out[seq] = key if seq not in out else f"{out[seq]},{key}"
    return out


def _row(entry: EventStoreEntry, client: dict[int, str], venue: dict[int, str]) -> dict[str, Any]:
    return {
        **entry_fields(entry),
        "client_order_id": client.get(entry.seq),
        "venue_order_id": venue.get(entry.seq),
        "entry_hash": bytes(entry.entry_hash).hex(),
        "payload": entry.payload,
        "payload_json": payload_json_text(entry.payload),
    }


def export_run(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    fmt: str,
    *,
    force: bool = False,
    verify: Callable[[Path], str | None] | None = None,
    progress: Progress | None = None,
    isolated: bool = False,
) -> ExportResult:
    """Export one run (see the module contract). `verify(path)` returns None when the run is
    clean, else a one-line reason; it is skipped with `force`. `isolated` as `RunFile`'s."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(path)
    with RunFile(path, isolated=isolated) as run_file:
        manifest = run_file.manifest()
        if not force and verify is not None:
            problem = verify(path)
            if problem is not None:
                raise ExportRefused(f"run {manifest.run_id} does not verify clean ({problem}); pass --force to export it anyway")
        high_watermark = run_file.high_watermark()
        client = order_ids_by_seq(run_file, IndexKind.ClientOrderId, high_watermark)
        venue = order_ids_by_seq(run_file, IndexKind.VenueOrderId, high_watermark)
        target_dir = Path(out_dir) / f"instance_id={manifest.instance_id}" / f"run_id={manifest.run_id}"
        layout.make_private_dirs(target_dir, durable=True)
        target = target_dir / f"data.{fmt}"
        temp = target_dir / f".data.{fmt}.{secrets.token_hex(4)}.tmp"
        rows = 0
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, layout.FILE_MODE)
            if fmt == "parquet":
                os.close(fd)
                rows = _write_parquet(run_file, high_watermark, temp, client, venue, progress)
            else:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    rows = _write_jsonl(run_file, high_watermark, handle, client, venue, progress)
            fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        layout.fsync_dir(target_dir)
    return ExportResult(manifest.instance_id, manifest.run_id, rows, str(target))


def _batches(run_file: RunFile, high_watermark: int, progress: Progress | None) -> Any:
    batch: list[EventStoreEntry] = []
    for entry in run_file.iter_range(1, high_watermark, 4096):
        batch.append(entry)
        if len(batch) >= _BATCH_ROWS:
            yield batch
            if progress is not None:
                progress.update(len(batch))
            batch = []
    if batch:
        yield batch
        if progress is not None:
            progress.update(len(batch))


def _write_parquet(run_file: RunFile, high_watermark: int, temp: Path, client: dict[int, str],
                   venue: dict[int, str], progress: Progress | None) -> int:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    schema = export_schema()
    rows = 0
    with pq.ParquetWriter(str(temp), schema, compression="zstd") as writer:
        for batch in _batches(run_file, high_watermark, progress):
            corr = [e.headers.correlation_id for e in batch]
            caus = [e.headers.causation_id for e in batch]
            seqs = [e.seq for e in batch]
            columns = {
                "seq": seqs,
                "ts_init": [e.ts_init for e in batch],
                "ts_publish": [e.ts_publish for e in batch],
                "topic": [e.topic for e in batch],
                "payload_type": [e.payload_type for e in batch],
                "correlation_id": [None if c is None else str(c) for c in corr],
                "causation_id": [None if c is None else str(c) for c in caus],
                "client_order_id": [client.get(seq) for seq in seqs],
                "venue_order_id": [venue.get(seq) for seq in seqs],
                "entry_hash": [bytes(e.entry_hash).hex() for e in batch],
                "payload": [e.payload for e in batch],
                "payload_json": [payload_json_text(e.payload) for e in batch],
            }
            writer.write_table(pa.Table.from_pydict(columns, schema=schema))
            rows += len(batch)
        if rows == 0:
            writer.write_table(pa.Table.from_pydict({name: [] for name in EXPORT_COLUMNS}, schema=schema))
    return rows


def _write_jsonl(run_file: RunFile, high_watermark: int, handle: TextIO, client: dict[int, str],
                 venue: dict[int, str], progress: Progress | None) -> int:
    encoder = msgspec.json.Encoder()
    rows = 0
    for batch in _batches(run_file, high_watermark, progress):
        lines = []
        for entry in batch:
            record = _row(entry, client, venue)
            record["payload"] = entry.payload.hex()
            lines.append(encoder.encode(record).decode())
        handle.write("\n".join(lines) + "\n")
        rows += len(batch)
    handle.flush()
    return rows
