"""The operator's commands on real run files: `nes runs`, `nes show`, `nes trace`, `nes export`,
the correlation index they rely on, and the bad inputs each must refuse with one line."""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from pathlib import Path

import duckdb
import pytest

from nes.backend.base import AppendEntry, IndexKey, IndexKind, correlation_index_rows
from nes.backend.lmdb import LmdbBackend
from nes.backend.memory import MemoryBackend
from nes.codec import seq_key
from nes.demo import DEMO_INSTANCE_ID, run_demo
from nes.entry import EventStoreEntry, encode_stored_value
from nes.headers import Headers
from nes.manifest import RunManifest, RunStatus
from nes.ops.export import ExportRefused, export_run
from nes.ops.render import ENTRY_FIELDS, message_id
from nes.ops.runfile import RunFile, RunFileError
from nes.ops.runs import list_runs
from nes.ops.show import EntryFilter, InvalidRange, UnknownOrderId, iter_entries
from nes.ops.trace import UnknownSeq, causation_chain, trace_order
from tests.operator_helpers import assert_one_line_error, cli, foreign_lmdb
from tests.runfile_helpers import flip_byte_in_payload, make_run_file


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run written by the real pipeline (writer sidecar, ring, LMDB), sealed Ended."""
    base = tmp_path_factory.mktemp("demo")
    result = run_demo(base, orders=40)
    assert result["verify_clean"]
    return Path(str(result["run_file"]))


# ---- the correlation index -----------------------------------------------------------------
def _entry(seq: int, payload: bytes, headers: Headers) -> EventStoreEntry:
    return EventStoreEntry.build(seq, 1000 + seq, 2000 + seq, "t.x", "X", payload, headers)


def test_correlation_index_lists_every_entry_of_a_workflow_in_both_backends(tmp_path: Path) -> None:
    flow_a, flow_b = uuid.uuid4(), uuid.uuid4()
    entries = [
        _entry(1, b"p", Headers(flow_a, None)),
        _entry(2, b"p", Headers()),
        _entry(3, b"p", Headers(flow_b, uuid.uuid4())),
        _entry(4, b"p", Headers(flow_a, uuid.uuid4())),
        _entry(5, b"p", Headers(None, uuid.uuid4())),  # a cause but no workflow: not indexed
    ]
    manifest = RunManifest("1-00000001", "trader-001", 1)
    lmdb_backend = LmdbBackend(tmp_path)
    memory = MemoryBackend()
    for backend in (lmdb_backend, memory):
        backend.open_run(manifest)
        backend.append_batch([AppendEntry(entries[0]), AppendEntry(entries[1])])
        backend.append_batch([AppendEntry(e) for e in entries[2:]])
        assert backend.lookup_correlation(flow_a) == [1, 4]
        assert backend.lookup_correlation(flow_b) == [3]
        assert backend.lookup_correlation(uuid.uuid4()) == []
    lmdb_backend.seal(RunStatus.Ended)
    lmdb_backend.close()
    with RunFile(tmp_path / "trader-001" / "1-00000001.lmdb") as run_file:
        assert run_file.lookup_correlation(flow_a) == [1, 4]


def test_correlation_index_ignores_payload_bytes_that_look_like_header_tags() -> None:
    decoy = b"\x01" + bytes(range(16)) + b"\x01" + bytes(range(16)) + b"\x00"
    plain = _entry(1, decoy, Headers())
    caused = _entry(2, decoy, Headers(None, uuid.uuid4()))
    flow = uuid.uuid4()
    real = _entry(3, decoy, Headers(flow, None))
    rows = correlation_index_rows([(seq_key(e.seq), encode_stored_value(e)) for e in (plain, caused, real)])
    assert rows == [(flow.bytes, seq_key(3))]


def test_correlation_index_is_written_by_the_real_pipeline(demo: Path) -> None:
    with RunFile(demo) as run_file:
        entry = run_file.get(5)
        assert entry is not None and entry.headers.correlation_id is not None
        seqs = run_file.lookup_correlation(entry.headers.correlation_id)
        assert 5 in seqs and seqs == sorted(seqs)
        for seq in seqs:
            member = run_file.get(seq)
            assert member is not None and member.headers.correlation_id == entry.headers.correlation_id


# ---- nes runs ------------------------------------------------------------------------------
def test_runs_lists_every_file_newest_last_and_unreadable_files_as_rows(demo: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    inst = base / DEMO_INSTANCE_ID
    inst.mkdir(parents=True)
    shutil.copy(demo, inst / demo.name)
    truncated = inst / "1000000000000000000-00000001.lmdb"
    shutil.copy(demo, truncated)
    os.truncate(truncated, truncated.stat().st_size // 2)
    foreign_lmdb(inst / "1100000000000000000-00000002.lmdb")
    (inst / "1200000000000000000-00000003.lmdb").write_bytes(b"not a run file at all")
    rows = list_runs(base)
    assert [r.status for r in rows] == ["Unreadable", "Unreadable", "Unreadable", "Ended"]
    assert "truncated" in (rows[0].error or "")
    assert "not a nes run file" in (rows[1].error or "")
    assert "not an LMDB file" in (rows[2].error or "")
    good = rows[-1]
    assert good.high_watermark is not None and good.high_watermark > 100
    assert good.latest_anchor_high_watermark is not None and good.end_ts_init is not None
    done = cli("runs", "--base-dir", str(base), "--json")
    assert done.returncode == 0, done.stderr
    parsed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [p["run_id"] for p in parsed] == [r.run_id for r in rows]
    assert set(parsed[0]) == {
        "instance_id", "run_id", "path", "status", "parent_run_id", "high_watermark", "start_ts_init", "start_time",
        "end_ts_init", "end_time", "size_bytes", "latest_anchor_high_watermark", "error",
    }
    human = cli("runs", "--base-dir", str(base), "--instance", DEMO_INSTANCE_ID)
    assert human.returncode == 0 and "Unreadable" in human.stdout and "Ended" in human.stdout


def test_runs_refuses_a_missing_base_dir_and_a_bad_instance_id(tmp_path: Path) -> None:
    assert_one_line_error(cli("runs", "--base-dir", str(tmp_path / "nope")), 2, "no such base directory")
    assert_one_line_error(cli("runs", "--base-dir", str(tmp_path), "--instance", "../x"), 2, "invalid instance_id")


# ---- nes show ------------------------------------------------------------------------------
def test_show_filters_by_range_topic_type_and_order_ids(demo: Path) -> None:
    with RunFile(demo) as run_file:
        window = list(iter_entries(run_file, 2, 9))
        assert [e.seq for e in window] == list(range(2, 10))
        fills = list(iter_entries(run_file, flt=EntryFilter(topic_glob="exec.event.*", payload_type="OrderFilled")))
        assert fills and all(e.payload_type == "OrderFilled" for e in fills)
        order = list(iter_entries(run_file, flt=EntryFilter(client_order_id="O-000002")))
        assert order and all(b"O-000002" in e.payload for e in order)
        venue = order[1].payload.split(b"V-")[1][:9].decode()
        both = list(iter_entries(run_file, flt=EntryFilter(client_order_id="O-000002", venue_order_id="V-" + venue)))
        assert [e.seq for e in both] == [e.seq for e in order[1:]]
        with pytest.raises(UnknownOrderId):
            list(iter_entries(run_file, flt=EntryFilter(client_order_id="O-999999")))
        with pytest.raises(InvalidRange):
            list(iter_entries(run_file, 5, 4))


def test_show_json_has_stable_fields_msgpack_as_json_and_other_payloads_as_hex(demo: Path, tmp_path: Path) -> None:
    done = cli("show", str(demo), "--to-seq", "3", "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert all(tuple(r) == ENTRY_FIELDS for r in records)
    assert records[1]["payload_encoding"] == "msgpack" and records[1]["payload"]["client_order_id"] == "O-000001"
    raw = make_run_file(tmp_path / "raw.lmdb", entries=2)
    records = [json.loads(line) for line in cli("show", str(raw), "--json").stdout.splitlines()]
    assert records[0]["payload_encoding"] == "hex" and bytes.fromhex(records[0]["payload"]).startswith(b"PAYLOAD-")


def test_show_bad_inputs_exit_2_with_one_line(demo: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("show", str(tmp_path / "missing.lmdb")), 2, "no such run file")
    truncated = tmp_path / "t.lmdb"
    shutil.copy(demo, truncated)
    os.truncate(truncated, 8192 + 100)
    assert_one_line_error(cli("show", str(truncated)), 2, "truncated")
    assert_one_line_error(cli("show", str(foreign_lmdb(tmp_path / "f.lmdb"))), 2, "not a nes run file")
    assert_one_line_error(cli("show", str(demo), "--from-seq", "9", "--to-seq", "3"), 2, "window is empty")
    assert_one_line_error(cli("show", str(demo), "--from-seq", "0"), 2, "at least 1")
    assert_one_line_error(cli("show", str(demo), "--client-order-id", "O-424242"), 2, "O-424242")


def test_show_of_a_damaged_entry_exits_1_after_printing_the_entries_before_it(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "d.lmdb", entries=6)
    flip_byte_in_payload(path, 4)
    done = cli("show", str(path), "--json")
    assert done.returncode == 1 and "damaged" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stdout.splitlines()) == 3


# ---- nes trace -----------------------------------------------------------------------------
def test_trace_order_gives_the_whole_workflow_in_seq_order_with_causation_depths(demo: Path) -> None:
    with RunFile(demo) as run_file:
        trace = trace_order(run_file, "O-000003")
        seqs = [n.entry.seq for n in trace.nodes]
        assert seqs == sorted(seqs)
        assert trace.nodes[0].entry.payload_type == "SubmitOrder" and trace.nodes[0].depth == 0
        kinds = {n.entry.payload_type for n in trace.nodes}
        assert {"SubmitOrder", "OrderAccepted", "OrderFilled", "AccountState"} <= kinds
        assert len(trace.correlation_ids) == 1
        assert all(n.depth >= 1 and n.parent_seq is not None for n in trace.nodes[1:])
        assert all(n.entry.headers.correlation_id == trace.nodes[0].entry.headers.correlation_id for n in trace.nodes)
        # seq chain: the last entry of the trail walks back to the SubmitOrder
        last = trace.nodes[-1].entry
        chain = causation_chain(run_file, last.seq)
        assert chain.entries[0].seq == trace.nodes[0].entry.seq and chain.entries[-1].seq == last.seq
        assert chain.missing_cause is None and not chain.cycle
        for parent, child in zip(chain.entries, chain.entries[1:]):
            assert child.headers.causation_id == message_id(parent)
        with pytest.raises(UnknownSeq):
            causation_chain(run_file, run_file.high_watermark() + 1)
    done = cli("trace", str(demo), "--client-order-id", "O-000003")
    assert done.returncode == 0 and done.stdout.splitlines()[1].startswith("  ")
    done = cli("trace", str(demo), "--seq", str(last.seq), "--json")
    depths = [json.loads(line)["depth"] for line in done.stdout.splitlines()]
    assert depths == list(range(len(chain.entries)))


def test_trace_follows_a_cause_outside_the_workflow_and_reports_a_missing_one(tmp_path: Path) -> None:
    import msgspec

    enc = msgspec.msgpack.encode
    root_id, other_id, flow = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    entries = [
        _entry(1, enc({"command_id": str(root_id)}), Headers(None, None)),  # a cause without a workflow
        _entry(2, enc({"event_id": str(other_id)}), Headers(flow, root_id)),
        _entry(3, enc({"event_id": str(uuid.uuid4())}), Headers(flow, other_id)),
        _entry(4, enc({"event_id": str(uuid.uuid4())}), Headers(flow, uuid.uuid4())),  # cause nobody carries
    ]
    backend = LmdbBackend(tmp_path)
    backend.open_run(RunManifest("1-00000001", "trader-001", 1))
    backend.append_batch([AppendEntry(e, (IndexKey(IndexKind.ClientOrderId, "O-1"),)) for e in entries])
    backend.seal(RunStatus.Ended)
    backend.close()
    with RunFile(tmp_path / "trader-001" / "1-00000001.lmdb") as run_file:
        assert [e.seq for e in causation_chain(run_file, 3).entries] == [1, 2, 3]
        missing = causation_chain(run_file, 4)
        assert [e.seq for e in missing.entries] == [4] and missing.missing_cause is not None


def test_trace_bad_inputs_exit_2_with_one_line(demo: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("trace", str(demo), "--client-order-id", "O-777777"), 2, "O-777777")
    assert_one_line_error(cli("trace", str(demo), "--seq", "999999999"), 2, "no entry at seq")
    assert_one_line_error(cli("trace", str(demo)), 2, "exactly one of")
    assert_one_line_error(cli("trace", str(tmp_path / "gone.lmdb"), "--seq", "1"), 2, "no such run file")


# ---- nes export ----------------------------------------------------------------------------
def test_export_parquet_is_queryable_with_duckdb(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cli("export", str(demo), "--format", "parquet", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    files = list(out.rglob("*"))
    assert all(not f.name.endswith(".tmp") for f in files)
    data = Path(result["file"])
    assert stat.S_IMODE(data.stat().st_mode) == 0o600 and stat.S_IMODE(data.parent.stat().st_mode) == 0o700
    with RunFile(demo) as run_file:
        high_watermark = run_file.high_watermark()
    con = duckdb.connect()
    glob = f"{out}/**/*.parquet"
    count, instance = con.execute(
        f"select count(*), any_value(instance_id) from read_parquet('{glob}', hive_partitioning=1)").fetchone()
    assert count == high_watermark == result["rows"] and instance == DEMO_INSTANCE_ID
    by_type = dict(con.execute(f"select payload_type, count(*) from read_parquet('{glob}') group by 1").fetchall())
    assert by_type["SubmitOrder"] == 40 and by_type["OrderAccepted"] == 40 and by_type["RunStarted"] == 1
    joined = con.execute(
        f"""select s.client_order_id, count(*) from read_parquet('{glob}') s
            join read_parquet('{glob}') f on f.client_order_id = s.client_order_id and f.payload_type = 'OrderFilled'
            where s.payload_type = 'SubmitOrder' group by 1 order by 1""").fetchall()
    assert len(joined) == 40 and joined[0][0] == "O-000001" and all(n >= 1 for _, n in joined)
    qty = con.execute(
        f"select sum(json_extract(payload_json, '$.last_qty')::BIGINT) from read_parquet('{glob}') "
        f"where payload_type = 'OrderFilled' and client_order_id = 'O-000001'").fetchone()[0]
    submitted = con.execute(
        f"select json_extract(payload_json, '$.quantity')::BIGINT from read_parquet('{glob}') "
        f"where payload_type = 'SubmitOrder' and client_order_id = 'O-000001'").fetchone()[0]
    assert qty == submitted


def test_export_jsonl_writes_one_object_per_entry(demo: Path, tmp_path: Path) -> None:
    result = export_run(demo, tmp_path, "jsonl")
    lines = Path(result.file).read_text().splitlines()
    assert len(lines) == result.rows
    first = json.loads(lines[1])
    assert first["seq"] == 2 and first["client_order_id"] == "O-000001" and json.loads(first["payload_json"])["side"]


def test_export_refuses_a_run_that_does_not_verify_unless_forced(tmp_path: Path) -> None:
    path = make_run_file(tmp_path / "bad.lmdb", entries=5)
    flip_byte_in_payload(path, 2)
    out = tmp_path / "out"
    done = cli("export", str(path), "--format", "jsonl", "--out", str(out))
    assert done.returncode == 1 and "does not verify clean" in done.stderr and "--force" in done.stderr
    assert not list(out.rglob("data.*"))
    with pytest.raises(ExportRefused):
        export_run(path, out, "jsonl", verify=lambda p: "hash mismatch")
    # forced: the damage is still found while reading, and nothing half-written is left
    forced = cli("export", str(path), "--format", "jsonl", "--out", str(out), "--force")
    assert forced.returncode == 1 and "damaged" in forced.stderr
    assert not [f for f in out.rglob("*") if f.is_file()]


def test_export_interrupted_leaves_the_previous_export_and_no_temp_file(demo: Path, tmp_path: Path) -> None:
    first = export_run(demo, tmp_path, "parquet")
    before = Path(first.file).read_bytes()

    class Interrupt:
        def update(self, n: int = 1) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_run(demo, tmp_path, "parquet", progress=Interrupt())
    assert Path(first.file).read_bytes() == before
    assert [f.name for f in Path(first.file).parent.iterdir()] == ["data.parquet"]


def test_export_bad_inputs_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(cli("export", str(tmp_path / "x.lmdb"), "--format", "jsonl", "--out", str(tmp_path)), 2,
                          "no such run file")
    with pytest.raises(RunFileError):
        export_run(tmp_path / "x.lmdb", tmp_path, "jsonl")


def test_ctrl_c_during_a_cli_export_exits_130_and_leaves_no_file(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.operator_helpers import ROOT

    path = make_run_file(tmp_path / "big.lmdb", entries=150_000, payload_size=64, map_size=256 << 20)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nes", "export", str(path), "--format", "jsonl", "--out", str(out), "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        deadline = time.monotonic() + 30
        while not list(out.rglob(".data.jsonl.*.tmp")):  # the export has started writing rows
            assert proc.poll() is None and time.monotonic() < deadline, "export ended before it could be interrupted"
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and err.strip().endswith(b"interrupted")
    assert not [f for f in out.rglob("*") if f.is_file()]


def test_runs_lists_a_file_that_crashes_the_reader_as_unreadable_and_the_others_normally(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inst = tmp_path / DEMO_INSTANCE_ID
    inst.mkdir()
    shutil.copy(demo, inst / demo.name)
    poison = inst / "1000000000000000000-0000000a.lmdb"
    shutil.copy(demo, poison)
    monkeypatch.setenv("NES_RUNS_WORKER_FAULT", poison.name)  # the worker aborts on this file
    rows = list_runs(tmp_path)
    assert [r.status for r in rows] == ["Unreadable", "Ended"]
    assert "crashed the reader" in (rows[0].error or "") and "SIGABRT" in (rows[0].error or "")
    assert list_runs(tmp_path, isolated=False)[0].status == "Ended"  # in-process, no fault hook


_GROWING_WRITER = """
import sys, uuid
from pathlib import Path
from nes.backend.base import AppendEntry
from nes.backend.lmdb import LmdbBackend
from nes.entry import EventStoreEntry
from nes.headers import Headers
from nes.manifest import RunManifest
backend = LmdbBackend(Path(sys.argv[1]), map_size=1 << 16)
backend.open_run(RunManifest("1-00000001", "grow", 1))
def batch(lo, hi):
    return [AppendEntry(EventStoreEntry.build(s, s, s, "t.x", "X", b"x" * 500, Headers(uuid.uuid4(), None)))
            for s in range(lo, hi)]
backend.append_batch(batch(1, 20))
print("ready", flush=True)
sys.stdin.readline()
backend.append_batch(batch(20, 5000))
print(backend.path.stat().st_size, flush=True)
sys.stdin.readline()
"""


def test_a_reader_keeps_reading_a_live_run_whose_writer_grew_its_map_past_the_readers(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.operator_helpers import ROOT

    writer = subprocess.Popen([sys.executable, "-c", _GROWING_WRITER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        with RunFile(tmp_path / "grow" / "1-00000001.lmdb") as run_file:
            assert run_file.manifest().status is RunStatus.Running and len(run_file.read(1, 100)) == 19
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert int(writer.stdout.readline()) > (1 << 16) * 4
            assert run_file.high_watermark() == 4999
            assert [e.seq for e in run_file.iter_range(1, 10_000)] == list(range(1, 5000))
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.wait(timeout=30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


@pytest.mark.parametrize("bad", ["missing", "truncated", "foreign", "garbage", "directory"])
@pytest.mark.parametrize("command", [("show",), ("tail",), ("trace", "--seq", "1"),
                                     ("export", "--format", "jsonl", "--out", "OUT")])
def test_every_run_command_refuses_a_bad_run_file_with_one_line_and_exit_2(
    demo: Path, tmp_path: Path, command: tuple[str, ...], bad: str
) -> None:
    path = tmp_path / f"{bad}.lmdb"
    expected = {"missing": "no such run file", "truncated": "truncated", "foreign": "not a nes run file",
                "garbage": "not an LMDB file", "directory": "is a directory"}[bad]
    if bad == "truncated":
        shutil.copy(demo, path)
        os.truncate(path, path.stat().st_size - 4096)
    elif bad == "foreign":
        foreign_lmdb(path)
    elif bad == "garbage":
        path.write_bytes(os.urandom(20_000))
    elif bad == "directory":
        path.mkdir()
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    assert_one_line_error(cli(args[0], str(path), *args[1:]), 2, expected)
