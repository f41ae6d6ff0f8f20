"""`nes replay plan|load`: replay inputs of a sealed run, optionally joined with catalog slices.

    nes replay plan RUN [--from-seq N] [--to-seq M] [--catalog DIR --slice SPEC ...] [--json]
    nes replay load RUN [--from-seq N] [--to-seq M] [--catalog DIR --slice SPEC ...]

RUN is a sealed run file (`<base>/<instance>/<run_id>.lmdb`). The range defaults to the whole
run (`1 ..= durable high-watermark`). `--slice DATA_CLS[:ID[,ID...]]` selects a catalog slice
(`quotes`, `trades`, `bars`; ids like `AUD/USD.SIM`); `--require-slice` the same, failing the
load when the catalog has no files for it; `--start-ns`/`--end-ns` bound every slice (default:
the entries' ts_init range). `plan` prints the plan (`--json`: one object); `load` prints JSON
lines: the entries in seq order, then the catalog records (see `nes.replay.jsonl`).

Before reading, the run is verified in a worker process (`NES_VERIFY_TIMEOUT_SECS`, default 30;
`--no-verify` skips it): a file that is damaged, or that crashes the reader, never reaches this
process. Exit codes: 0 ok; 1 the run is corrupt (verification failed, or a damaged entry met
while reading); 2 cannot run (missing file, Running or Quarantined run, bad range or slice,
missing required slice, catalog error); 130 interrupted. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable

__all__ = ["register", "parse_slice_spec"]

EXIT_OK, EXIT_CORRUPT, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_slice_spec(spec: str, required: bool = False):  # noqa: ANN201 - CatalogSliceSelector
    """`DATA_CLS[:ID[,ID...]]` -> a `CatalogSliceSelector` (ValueError when malformed)."""
    from nes.replay import CatalogSliceSelector

    data_cls, _, ids = spec.partition(":")
    if not data_cls.strip():
        raise ValueError(f"slice {spec!r} names no data class (DATA_CLS[:ID[,ID...]])")
    identifiers = tuple(i for i in (part.strip() for part in ids.split(",")) if i) if ids else ()
    return CatalogSliceSelector(data_cls.strip(), identifiers, required=required)


def _error(message: str, code: int = EXIT_ERROR) -> int:
    print(f"nes replay: {message}".replace("\n", " "), file=sys.stderr)
    return code


def _verify_first(path: str) -> None:
    from nes.cli.verify import verify_timeout
    from nes.verifier import VerifyOpenError, verify_in_worker

    try:
        verdict = verify_in_worker(path, verify_timeout())
    except (VerifyOpenError, ValueError, OSError) as exc:
        raise _Refused(EXIT_ERROR, f"cannot verify {path}: {exc}") from None
    if not verdict.is_clean():
        raise _Refused(EXIT_CORRUPT, f"{path} failed verification: {verdict.summary_line()}")


def _emit(lines: Iterable[str]) -> None:
    write = sys.stdout.write
    for line in lines:
        write(line)
        write("\n")
    sys.stdout.flush()


def _run(ns: argparse.Namespace) -> int:
    from nes.errors import Corrupted, EventStoreError, Gap, HashMismatch
    from nes.replay import (
        ParquetReplayCatalog,
        ReplayInputError,
        ReplaySeqRange,
        load_catalog_replay_inputs,
        load_forensics_replay_inputs,
        open_event_store_replay_source,
        plan_catalog_replay_inputs,
        plan_forensics_replay_inputs,
    )
    from nes.replay.jsonl import plan_json, replay_inputs_json_lines

    path: str = ns.run
    if not os.path.isfile(path):
        return _error(f"run file not found: {path}" if not os.path.exists(path) else f"not a regular file: {path}")
    try:
        selectors = [parse_slice_spec(spec, required) for spec, required in ns.slices]  # in command-line order
    except ValueError as exc:
        return _error(str(exc))
    if (ns.start_ns is None) != (ns.end_ns is None):
        return _error("--start-ns and --end-ns go together")
    if ns.start_ns is not None:
        selectors = [s.with_time_bounds(ns.start_ns, ns.end_ns) for s in selectors]
    if selectors and ns.catalog is None:
        return _error("--slice needs --catalog DIR")
    catalog = None
    if ns.catalog is not None:
        if not selectors:
            return _error("--catalog needs at least one --slice or --require-slice")
        try:
            catalog = ParquetReplayCatalog(ns.catalog)
        except (OSError, ValueError) as exc:
            return _error(str(exc))
    try:
        if not ns.no_verify:
            _verify_first(path)
        reader = open_event_store_replay_source(path)
    except _Refused as refused:
        return _error(str(refused), refused.code)
    except Corrupted as exc:  # e.g. its bytes changed after its seal
        return _error(str(exc), EXIT_CORRUPT)
    except EventStoreError as exc:
        return _error(str(exc))
    try:
        to_seq = ns.to_seq if ns.to_seq is not None else max(reader.high_watermark(), ns.from_seq, 1)
        seq_range = ReplaySeqRange(ns.from_seq, to_seq)
        if catalog is None:
            plan = plan_forensics_replay_inputs(reader, seq_range)
        else:
            plan = plan_catalog_replay_inputs(reader, catalog, seq_range, selectors)
        if ns.replay_command == "plan":
            if ns.json:
                _emit([plan_json(plan)])
            else:
                _emit(_plan_lines(plan))
            return EXIT_OK
        if catalog is None:
            inputs = load_forensics_replay_inputs(reader, plan)
        else:
            inputs = load_catalog_replay_inputs(reader, catalog, plan)
        _emit(replay_inputs_json_lines(inputs))
        return EXIT_OK
    except (HashMismatch, Gap, Corrupted) as exc:
        return _error(str(exc), EXIT_CORRUPT)
    except (ReplayInputError, EventStoreError, ValueError, TypeError) as exc:
        return _error(str(exc))
    finally:
        reader.close()


def _plan_lines(plan) -> list[str]:  # noqa: ANN001
    event_range = "none" if plan.event_range is None else f"{plan.event_range.from_seq}..={plan.event_range.to_seq}"
    times = "none" if plan.event_time_range is None else f"{plan.event_time_range.start}..={plan.event_time_range.end}"
    lines = [
        f"scope={plan.scope} requested={plan.requested_range.from_seq}..={plan.requested_range.to_seq} "
        f"events={event_range} event_count={plan.event_count} ts_init={times}"
    ]
    for index, slice_plan in enumerate(plan.catalog_slices):
        query = slice_plan.query
        lines.append(
            f"slice={index} data_cls={query.data_cls} identifiers={','.join(query.identifiers) or '*'} "
            f"window={query.start}..={query.end} required={str(query.required).lower()} "
            f"status={slice_plan.status.value} files={len(slice_plan.coverage.files)}"
        )
    return lines


def _cmd_replay(ns: argparse.Namespace) -> int:
    try:
        return _run(ns)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `nes replay load ... | head`: the reader left, nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _seq(text: str) -> int:
    value = int(text)
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"{text} is not a seq (0 ..= 2**64-1)")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    replay = sub.add_parser("replay", help="replay inputs of a sealed run (plan, load)")
    replay_sub = replay.add_subparsers(dest="replay_command", required=True)
    for name, text in (("plan", "print the replay input plan"), ("load", "print the entries (JSON lines) and catalog records")):
        command = replay_sub.add_parser(name, help=text)
        command.add_argument("run", help="the sealed run file (<base>/<instance>/<run_id>.lmdb)")
        command.add_argument("--from-seq", type=_seq, default=1, help="first seq (default 1)")
        command.add_argument("--to-seq", type=_seq, default=None, help="last seq (default: the durable high-watermark)")
        command.add_argument("--catalog", help="a NautilusTrader ParquetDataCatalog root directory")
        command.add_argument(
            "--slice", dest="slices", action="append", default=[], type=lambda s: (s, False),
            help="DATA_CLS[:ID[,ID...]], repeatable",
        )
        command.add_argument(
            "--require-slice", dest="slices", action="append", type=lambda s: (s, True),
            help="like --slice, and the load fails when the catalog has no files for it",
        )
        command.add_argument("--start-ns", type=_seq, default=None, help="catalog window start (ns), with --end-ns")
        command.add_argument("--end-ns", type=_seq, default=None, help="catalog window end (ns)")
        command.add_argument("--no-verify", action="store_true", help="skip the verifier worker before reading")
        if name == "plan":
            command.add_argument("--json", action="store_true", help="print the plan as one JSON object")
        command.set_defaults(handler=_cmd_replay)
