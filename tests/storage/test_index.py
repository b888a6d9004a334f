"""Offset and time index files: entries, lookups, preallocation, trimming, reload, sanity checks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ringlog.storage.index import IndexCorruptError, OffsetIndex, TimeIndex
from ringlog.storage.segment import SegmentFile


def _offset_index(path: Path, base: int = 100, max_bytes: int = 80) -> OffsetIndex:
    idx = OffsetIndex(SegmentFile.open(path, create=True), base)
    idx.reset(max_bytes=max_bytes)
    return idx


def test_offset_index_preallocates_and_looks_up(tmp_path: Path) -> None:
    path = tmp_path / "x.index"
    idx = _offset_index(path)
    assert path.stat().st_size == 80  # 10 slots of 8 bytes
    for rel, pos in [(5, 300), (9, 700), (20, 1500)]:
        idx.append(100 + rel, pos)
    assert idx.entries == 3
    assert idx.lookup(99) == (100, 0)
    assert idx.lookup(104) == (100, 0)
    assert idx.lookup(105) == (105, 300)
    assert idx.lookup(119) == (109, 700)
    assert idx.lookup(10**9) == (120, 1500)
    assert idx.lookup_position(699) == (105, 300)
    assert idx.lookup_position(700) == (109, 700)
    # position 0 and non-increasing entries are never stored (0 marks an empty slot)
    idx.append(130, 0)
    idx.append(121, 1400)
    assert idx.entries == 3


def test_offset_index_full_keeps_a_reserved_slot(tmp_path: Path) -> None:
    idx = _offset_index(tmp_path / "x.index", max_bytes=32)  # 4 slots
    for i in range(1, 10):
        idx.append(100 + i, i * 10)
    assert idx.entries == 3 and idx.is_full


def test_trim_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "x.index"
    idx = _offset_index(path)
    idx.append(101, 50)
    idx.append(102, 90)
    idx.trim()
    assert path.stat().st_size == 16
    assert idx.lookup(102) == (102, 90)
    idx.release()

    again = OffsetIndex(SegmentFile.open(path), 100)
    again.load(writable=False, max_bytes=80)
    assert again.entries == 2
    again.sanity_check(log_size=1000)
    again.make_mutable(80)
    assert path.stat().st_size == 80
    again.append(103, 120)
    assert again.all_entries() == [(1, 50), (2, 90), (3, 120)]


def test_untrimmed_preallocated_file_reloads_by_first_empty_slot(tmp_path: Path) -> None:
    """After a crash the active index is still preallocated: zeros after the entries."""
    path = tmp_path / "x.index"
    idx = _offset_index(path)
    for i in range(1, 5):
        idx.append(100 + i, i * 10)
    idx.release()
    again = OffsetIndex(SegmentFile.open(path), 100)
    again.load(writable=False, max_bytes=80)
    assert again.entries == 4


def test_sanity_check_catches_garbage(tmp_path: Path) -> None:
    path = tmp_path / "x.index"
    path.write_bytes(bytes.fromhex("00000005 00000064 00000003 000000c8"))  # offsets go backwards
    idx = OffsetIndex(SegmentFile.open(path), 0)
    idx.load(writable=False, max_bytes=80)
    with pytest.raises(IndexCorruptError):
        idx.sanity_check(log_size=10_000)
    path.write_bytes(b"\x01\x02\x03")  # not whole entries
    with pytest.raises(IndexCorruptError):
        OffsetIndex(SegmentFile.open(path), 0).load(writable=False, max_bytes=80)
    path.write_bytes(bytes.fromhex("00000005 00010000"))  # points past the log
    idx = OffsetIndex(SegmentFile.open(path), 0)
    idx.load(writable=False, max_bytes=80)
    with pytest.raises(IndexCorruptError):
        idx.sanity_check(log_size=100)


def test_offset_index_truncate(tmp_path: Path) -> None:
    idx = _offset_index(tmp_path / "x.index")
    for i in range(1, 6):
        idx.append(100 + i, i * 10)
    idx.truncate_to_position(30)
    assert idx.all_entries() == [(1, 10), (2, 20)]
    # the freed slots read as empty again, so a reload counts 2
    idx.release()
    again = OffsetIndex(SegmentFile.open(tmp_path / "x.index"), 100)
    again.load(writable=False, max_bytes=80)
    assert again.entries == 2


def test_time_index(tmp_path: Path) -> None:
    path = tmp_path / "x.timeindex"
    idx = TimeIndex(SegmentFile.open(path, create=True), 1000)
    idx.reset(max_bytes=60)  # 5 slots
    assert path.stat().st_size == 60
    idx.append(5000, 1003)
    idx.append(5000, 1004)  # timestamp did not grow: skipped
    idx.append(4000, 1005)  # went back: skipped
    idx.append(7000, 1010)
    assert idx.all_entries() == [(5000, 3), (7000, 10)]
    assert idx.lookup_below(5000) is None
    assert idx.lookup_below(5001) == (5000, 1003)
    assert idx.lookup_below(10**12) == (7000, 1010)
    assert idx.last() == (7000, 1010)
    idx.append(8000, 1011)
    idx.append(9000, 1012)
    assert idx.entries == 4 and idx.is_full
    idx.append(9500, 1013)  # only a final entry may use the reserved slot
    assert idx.entries == 4
    idx.append(9500, 1013, final=True)
    assert idx.entries == 5
    idx.truncate_to_offset(1011)
    assert idx.last() == (7000, 1010)
    idx.trim()
    assert path.stat().st_size == 24
    idx.sanity_check(last_offset=1010)
    with pytest.raises(IndexCorruptError):
        idx.sanity_check(last_offset=1005)


def test_empty_index_trims_to_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.index"
    idx = _offset_index(path)
    idx.trim()
    assert path.stat().st_size == 0
    assert idx.lookup(5) == (100, 0)
    idx.make_mutable(80)
    idx.append(101, 8)
    assert idx.entries == 1
    assert os.path.getsize(path) == 80


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_fresh_index_allocates_one_page_not_its_full_size(tmp_path: Path) -> None:
    path = tmp_path / "x.index"
    idx = _offset_index(path, max_bytes=10 * 1024 * 1024)
    assert path.stat().st_size == 10 * 1024 * 1024  # sized for segment.index.bytes ...
    assert _allocated(path) <= 8192  # ... but only a page of it has blocks (fs may round up)
    # entries past the first page get blocks ahead of them, in growing chunks
    for i in range(1, 5000):
        idx.append(100 + i, i * 10)
    assert idx.entries == 4999
    assert 4999 * 8 <= _allocated(path) <= 128 * 1024
    idx.trim()
    assert path.stat().st_size == 4999 * 8


def test_entries_are_skipped_not_written_when_no_block_can_be_had(tmp_path: Path, monkeypatch) -> None:
    from ringlog.storage import index as index_module

    idx = _offset_index(tmp_path / "x.index", max_bytes=1024 * 1024)
    for i in range(1, 400):
        idx.append(100 + i, i * 10)
    assert idx.entries == 399  # inside the first page
    monkeypatch.setattr(index_module, "allocate", lambda fd, start, end: False)  # disk full
    for i in range(400, 1000):
        idx.append(100 + i, i * 10)
    assert idx.entries == 512  # the page ended; nothing was written past allocated blocks
    assert idx.lookup(100 + 999) == (100 + 512, 5120)  # a lookup starts earlier, never wrong
    monkeypatch.undo()
    idx.append(100 + 1000, 10000)
    assert idx.entries == 513


def test_empty_partitions_take_kibibytes_not_20_mib(tmp_path: Path) -> None:
    """The disk cost documented in docs/configuration.md: with the default segment.index.bytes
    (10 MiB per index file) an empty partition allocates a page per index, not 20 MiB. 250
    partitions (creating each costs fsyncs; the per-partition figure is what is measured)."""
    from ringlog.storage import LogConfig, LogManager

    count = 250
    manager = LogManager.open(tmp_path, LogConfig(), now_ms=0)
    try:
        for p in range(count):
            manager.create("empty", p)
        used = sum(os.stat(os.path.join(root, name)).st_blocks * 512
                   for root, _dirs, names in os.walk(tmp_path) for name in names)
    finally:
        manager.close()
    print(f"\n{count} empty partitions: {used / 2**20:.1f} MiB allocated, {used / count / 1024:.1f} KiB each")
    assert used / count < 50 * 1024  # 50 KiB each (12 KiB measured), against 20 MiB if not sparse
