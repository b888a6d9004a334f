"""Recovery after unclean shutdowns, kill -9, and disk-full / I/O errors."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ringlog.storage.index as index_module
import ringlog.storage.segment as segment_module
from ringlog.storage import LogConfig, LogManager, PartitionLog, StorageIOError
from ringlog.storage.batch import split_batches, validate_batch
from ringlog.storage.records import build_batch, iter_records

NOW = 1_700_000_000_000
ROOT = Path(__file__).resolve().parents[2]


def batch(i: int, size: int = 40) -> bytes:
    return build_batch([(b"k", f"{i:06d}".encode() + b"." * size, [], NOW + i)])


def log_file(log: PartitionLog, base: int) -> Path:
    return log.directory / f"{base:020d}.log"


def all_values(log: PartitionLog) -> list[int]:
    data = log.read(log.log_start_offset, 1 << 30).read_bytes()
    for _h, raw in split_batches(data):
        validate_batch(raw, from_client=False)  # never a corrupt batch
    return [int(r.value[:6]) for r in iter_records(data)]  # type: ignore[index]


def fill(tmp_path: Path, n: int, **cfg: object) -> tuple[PartitionLog, list[int]]:
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(**cfg), now_ms=NOW)  # type: ignore[arg-type]
    positions = []
    for i in range(n):
        positions.append(log.size_bytes)
        log.append(batch(i), now_ms=NOW)
    return log, positions


def test_torn_tail_is_cut(tmp_path: Path) -> None:
    log, _ = fill(tmp_path, 10)
    path = log_file(log, 0)
    size = log.size_bytes
    one = len(batch(0))
    log.abandon()  # a crash: no flush, no checkpoint
    os.truncate(path, size - 5)
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(), now_ms=NOW)
    report = log.recovery_report
    assert report is not None and report.truncated
    assert report.truncated_bytes == one - 5
    assert report.truncated_position == 9 * one and report.truncated_offset == 9
    assert "torn" in (report.reason or "")
    assert log.log_end_offset == 9 and all_values(log) == list(range(9))
    assert path.stat().st_size == 9 * one
    log.append(batch(9), now_ms=NOW)
    assert all_values(log) == list(range(10))


def test_flipped_byte_truncates_there_and_drops_later_segments(tmp_path: Path) -> None:
    one = len(batch(0))
    log, _ = fill(tmp_path, 12, segment_bytes=4 * one)
    assert log.segment_base_offsets() == [0, 4, 8]
    log.abandon()
    path = tmp_path / "t-0" / f"{4:020d}.log"
    data = bytearray(path.read_bytes())
    data[2 * one + 70] ^= 0x01  # inside the third batch of the middle segment (offset 6)
    path.write_bytes(bytes(data))
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=4 * one), now_ms=NOW)
    report = log.recovery_report
    assert report is not None
    assert report.truncated_segment == 4 and report.truncated_position == 2 * one
    assert report.truncated_offset == 6 and "CRC" in (report.reason or "")
    assert report.segments_deleted == 1 and report.bytes_deleted == 4 * one
    assert not (tmp_path / "t-0" / f"{8:020d}.log").exists()
    assert not (tmp_path / "t-0" / f"{8:020d}.index").exists()
    assert log.segment_base_offsets() == [0, 4]
    assert all_values(log) == list(range(6))
    log.append(batch(6), now_ms=NOW)
    assert all_values(log) == list(range(7))


def test_recovery_scans_only_from_the_recovery_point(tmp_path: Path) -> None:
    one = len(batch(0))
    log, _ = fill(tmp_path, 12, segment_bytes=4 * one)
    log.flush()  # everything below 12 is durable
    log.append(batch(12), now_ms=NOW)
    log.abandon()
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=4 * one), now_ms=NOW)
    report = log.recovery_report
    assert report is not None and report.recovery_point == 12
    assert report.segments_scanned == 1 and not report.truncated  # the active segment only
    assert all_values(log) == list(range(13))


def test_repaired_tells_a_routine_scan_from_a_repair(tmp_path: Path) -> None:
    log, _ = fill(tmp_path, 10)
    path = log_file(log, 0)
    log.abandon()  # kill -9 with nothing damaged: the scan finds the log whole
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(), now_ms=NOW)
    report = log.recovery_report
    assert report is not None and report.segments_scanned == 1 and report.batches_scanned == 10
    assert report.indexes_rebuilt == 0 and not report.truncated and not report.repaired
    size = log.size_bytes
    log.close()
    os.truncate(path, size - 5)  # a torn tail that a clean start finds while walking the last batches
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(), now_ms=NOW, clean=True)
    report = log.recovery_report
    assert report is not None and report.clean and report.truncated and report.repaired
    assert report.truncated_offset == 9 and report.segments_scanned == 1
    assert report.indexes_rebuilt == 0  # the cut explains the failed load; the index was fine
    assert log.log_end_offset == 9
    log.close()


def test_missing_or_corrupt_index_is_rebuilt(tmp_path: Path) -> None:
    one = len(batch(0))
    cfg = LogConfig(segment_bytes=6 * one, index_interval_bytes=one)
    log, _ = fill(tmp_path, 18, segment_bytes=6 * one, index_interval_bytes=one)
    expected_ts = log.offset_for_timestamp(NOW + 3)
    log.close()
    d = tmp_path / "t-0"
    (d / f"{0:020d}.index").unlink()
    (d / f"{6:020d}.timeindex").write_bytes(b"garbage!")
    (d / f"{12:020d}.index").write_bytes(bytes.fromhex("00000009 00000010 00000001 00000020"))
    log = PartitionLog.open(d, cfg, now_ms=NOW, clean=True)
    report = log.recovery_report
    assert report is not None and report.indexes_rebuilt == 3 and not report.truncated and report.repaired
    assert report.segments_scanned == 3  # the damaged ones only, read in full to rebuild them
    assert all_values(log) == list(range(18))
    assert log.offset_for_timestamp(NOW + 3) == expected_ts == (3, NOW + 3)
    assert log.offset_for_timestamp(NOW + 8) == (8, NOW + 8)
    for i in range(18):
        assert [r.offset for r in iter_records(log.read(i, 1).read_bytes())] == [i]
    assert (d / f"{0:020d}.index").stat().st_size > 0


def test_clean_marker_skips_scanning(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    manager = LogManager.open(data_dir, LogConfig(), now_ms=NOW)
    log = manager.create("orders", 0)
    for i in range(20):
        log.append(batch(i), now_ms=NOW)
    manager.close()
    assert (data_dir / ".clean_shutdown").exists()

    manager = LogManager.open(data_dir, LogConfig(), now_ms=NOW)
    assert manager.had_clean_shutdown and not (data_dir / ".clean_shutdown").exists()
    [report] = manager.recovery_reports
    assert report.clean and report.segments_scanned == 0 and report.bytes_scanned == 0
    log = manager.get("orders", 0)
    assert log is not None and all_values(log) == list(range(20))
    log.append(batch(20), now_ms=NOW)
    manager.abandon()  # crash: no marker

    manager = LogManager.open(data_dir, LogConfig(), now_ms=NOW)
    [report] = manager.recovery_reports
    assert not report.clean and report.segments_scanned == 1 and report.batches_scanned == 21
    assert all_values(manager.get("orders", 0)) == list(range(21))  # type: ignore[arg-type]
    manager.close()


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ringlog.storage import LogConfig, PartitionLog
    from ringlog.storage.records import build_batch

    log = PartitionLog.open(Path(sys.argv[1]), LogConfig(flush_policy="never", segment_bytes=20000),
                            now_ms=1)
    i = 0
    while True:
        info = log.append(build_batch([(b"k", b"%06d" % i + b"x" * 100, [], 1000 + i)]), now_ms=2)
        print(i, info[0].base_offset, flush=True)
        i += 1
    """
)


def test_kill_minus_9_loses_no_returned_append(tmp_path: Path) -> None:
    d = tmp_path / "crash-0"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(d)], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    acked: list[tuple[int, int]] = []
    try:
        assert proc.stdout is not None
        while len(acked) < 1500:
            line = proc.stdout.readline()
            if not line:
                break
            i, off = map(int, line.split())
            acked.append((i, off))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(acked) == 1500, "child died early"
    log = PartitionLog.open(d, LogConfig(segment_bytes=20000), now_ms=NOW)
    assert log.segment_count() > 3
    values = all_values(log)
    # every acknowledged append survived, at its offset; at most a few later ones exist too
    assert values[: len(acked)] == [i for i, _ in acked]
    assert [off for _, off in acked] == list(range(len(acked)))
    assert values == list(range(len(values)))


def _short_then_enospc(real: object, allow: int) -> object:
    """A pwrite that writes `allow` bytes, then fails with ENOSPC (a disk filling up mid-write)."""
    state = {"left": allow}

    def fake(fd: int, data: memoryview, pos: int) -> int:
        if state["left"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), state["left"])
        state["left"] -= n
        return real(fd, bytes(data[:n]), pos)  # type: ignore[operator]

    return fake


def test_disk_full_mid_write_leaves_log_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, _ = fill(tmp_path, 5)
    size, leo = log.size_bytes, log.log_end_offset
    path = log_file(log, 0)
    monkeypatch.setattr(segment_module, "_pwrite", _short_then_enospc(os.pwrite, 30))
    with pytest.raises(StorageIOError, match="No space left"):
        log.append(batch(5) + batch(6), now_ms=NOW)
    # nothing of the failed append is visible, in memory or on disk
    assert (log.size_bytes, log.log_end_offset) == (size, leo)
    assert path.stat().st_size == size
    assert all_values(log) == list(range(5))
    # space is back: the same append works, at the same offsets
    monkeypatch.undo()
    infos = log.append(batch(5) + batch(6), now_ms=NOW)
    assert [i.base_offset for i in infos] == [5, 6]
    log.abandon()
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(), now_ms=NOW)
    assert not log.recovery_report.truncated  # type: ignore[union-attr]
    assert all_values(log) == list(range(7))


def test_disk_full_when_cut_back_fails_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if the file cannot be cut back, the garbage is never served and is overwritten/cut."""
    log, _ = fill(tmp_path, 3)
    size = log.size_bytes
    monkeypatch.setattr(segment_module, "_pwrite", _short_then_enospc(os.pwrite, 50))

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(segment_module, "_ftruncate", no_truncate)
    with pytest.raises(StorageIOError):
        log.append(batch(3), now_ms=NOW)
    assert log_file(log, 0).stat().st_size == size + 50  # garbage past the end...
    assert log.size_bytes == size and all_values(log) == [0, 1, 2]  # ...never read
    log.abandon()
    monkeypatch.undo()
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(), now_ms=NOW)
    report = log.recovery_report
    assert report is not None and report.truncated and report.truncated_bytes == 50
    assert all_values(log) == [0, 1, 2]


def test_disk_full_on_roll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = len(batch(0))
    log, _ = fill(tmp_path, 2, segment_bytes=2 * one)

    def full(fd: int, start: int, end: int) -> bool:
        return False  # what allocate() answers on ENOSPC

    monkeypatch.setattr(index_module, "allocate", full)
    with pytest.raises(StorageIOError):
        log.append(batch(2), now_ms=NOW)  # needs a new segment, whose index cannot be allocated
    assert log.segment_count() == 1 and log.log_end_offset == 2
    assert sorted(p.name for p in (tmp_path / "t-0").glob("*.log")) == [f"{0:020d}.log"]
    monkeypatch.undo()
    log.append(batch(2), now_ms=NOW)
    assert log.segment_count() == 2 and all_values(log) == [0, 1, 2]
    log.close()
    assert all_values(PartitionLog.open(tmp_path / "t-0", LogConfig(), now_ms=NOW)) == [0, 1, 2]
