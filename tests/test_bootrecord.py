"""Boot records (nes.bootrecord) with real /dev/shm rings and real processes: a dead boot's ring
is reclaimed, a live one's is not, and a record that is not ours makes nes unlink nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec

from nes.bootrecord import BootRecord, reclaim_dead_boots, record_path, write_boot_record
from shm.ring import Ring, RingNames


def shm_left(names: RingNames) -> list[str]:
    return sorted(name for name in os.listdir("/dev/shm") if names.token in name)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_ring_of_a_dead_boot_is_unlinked_and_its_record_removed(tmp_path: Path) -> None:
    names = RingNames.fresh()
    ring = Ring.create(1 << 16, 1024, names)
    try:
        record = record_path(tmp_path, names.token)
        record.write_bytes(msgspec.json.encode(BootRecord(names.token, dead_pid(), 1.0)))
        assert len(shm_left(names)) == 4
        assert reclaim_dead_boots(tmp_path) == [names.token]
        assert shm_left(names) == [] and not record.exists()
    finally:
        ring.close()


def test_the_ring_of_a_live_boot_is_left_alone(tmp_path: Path) -> None:
    names = RingNames.fresh()
    ring = Ring.create(1 << 16, 1024, names)
    try:
        record = write_boot_record(tmp_path, names.token)  # this process: alive
        assert oct(record.stat().st_mode & 0o777) == "0o600"
        assert reclaim_dead_boots(tmp_path) == []
        assert len(shm_left(names)) == 4 and record.exists()
    finally:
        ring.close()
    assert shm_left(names) == []


def test_records_that_are_not_ours_unlink_nothing(tmp_path: Path) -> None:
    names = RingNames.fresh()
    other = RingNames.fresh()
    ring = Ring.create(1 << 16, 1024, names)
    try:
        pid = dead_pid()
        # a record whose content names another ring than its file name
        record_path(tmp_path, other.token).write_bytes(msgspec.json.encode(BootRecord(names.token, pid, 1.0)))
        # a file name that is not a ring token, with a valid record inside
        (tmp_path / "ring-notatoken.boot").write_bytes(msgspec.json.encode(BootRecord(names.token, pid, 1.0)))
        # garbage and an oversized record under the right name
        third, fourth = RingNames.fresh(), RingNames.fresh()
        record_path(tmp_path, third.token).write_bytes(b"\x00garbage")
        record_path(tmp_path, fourth.token).write_bytes(b" " * 10_000)
        # a symlink to a valid record
        target = tmp_path / "elsewhere.json"
        target.write_bytes(msgspec.json.encode(BootRecord(names.token, pid, 1.0)))
        record_path(tmp_path, names.token).symlink_to(target)
        assert reclaim_dead_boots(tmp_path) == []
        assert len(shm_left(names)) == 4
    finally:
        ring.close()


def test_a_missing_instance_directory_reclaims_nothing(tmp_path: Path) -> None:
    assert reclaim_dead_boots(tmp_path / "absent") == []
