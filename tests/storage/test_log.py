"""PartitionLog behaviour: append, read (KIP-74, upper bound, regions), timestamps, roll,
retention, DeleteRecords, truncation, flush policies, configs."""
from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from ringlog.storage import (
    BatchTooLargeError,
    CorruptBatchError,
    InvalidBatchError,
    LogConfig,
    OffsetOutOfRangeError,
    PartitionLog,
    StorageError,
)
from ringlog.storage.batch import CODEC_GZIP, parse_header, split_batches, validate_batch
from ringlog.storage.records import build_batch, decode_records, iter_records

NOW = 1_700_000_000_000


def batch(n: int = 1, ts: int = NOW, size: int = 10, *, key: bytes = b"k", **kw: object) -> bytes:
    return build_batch([(key, bytes([65 + i % 26]) * size, [], ts + i) for i in range(n)], **kw)  # type: ignore[arg-type]


def open_log(tmp_path: Path, **cfg: object) -> PartitionLog:
    return PartitionLog.open(tmp_path / "topic.a-0", LogConfig(**cfg), now_ms=NOW)  # type: ignore[arg-type]


def offsets(data: bytes) -> list[int]:
    return [r.offset for r in iter_records(data)]


def test_append_assigns_offsets_and_reads_back(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    assert (log.topic, log.partition) == ("topic.a", 0)
    assert log.log_end_offset == 0 and log.log_start_offset == 0
    infos = log.append(batch(3) + batch(2, compression=CODEC_GZIP), now_ms=NOW)
    assert [(i.base_offset, i.last_offset) for i in infos] == [(0, 2), (3, 4)]
    assert infos[0].log_append_time == -1 and infos[0].max_timestamp == NOW + 2
    assert log.log_end_offset == 5
    data = log.read(0, 1 << 20).read_bytes()
    assert offsets(data) == [0, 1, 2, 3, 4]
    # stored bytes are the wire bytes with only baseOffset rewritten: the CRC still holds
    for header, raw in split_batches(data):
        validate_batch(raw, from_client=False)
    assert log.size_bytes == len(data)


def test_append_batches_rewrites_in_place(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(batch(2), now_ms=NOW)
    bufs = [bytearray(batch(1)), bytearray(batch(4))]
    infos = log.append_batches(bufs, now_ms=NOW)
    assert [i.base_offset for i in infos] == [2, 3]
    assert parse_header(bufs[1]).base_offset == 3
    assert offsets(log.read(0, 1 << 20).read_bytes()) == list(range(7))


def test_bad_batch_rejects_the_whole_append(tmp_path: Path) -> None:
    log = open_log(tmp_path, max_message_bytes=500)
    log.append(batch(1), now_ms=NOW)
    size = log.size_bytes
    corrupt = bytearray(batch(2))
    corrupt[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError):
        log.append(batch(1) + bytes(corrupt), now_ms=NOW)
    with pytest.raises(BatchTooLargeError):
        log.append(batch(1) + batch(1, size=600), now_ms=NOW)
    with pytest.raises(CorruptBatchError):
        log.append(batch(1) + batch(1)[:-3], now_ms=NOW)  # torn second batch
    with pytest.raises(InvalidBatchError):
        log.append(batch(1, base_offset=7), now_ms=NOW)  # clients send baseOffset 0
    with pytest.raises(InvalidBatchError):
        log.append(b"", now_ms=NOW)
    assert log.size_bytes == size and log.log_end_offset == 1
    assert os.path.getsize(log.directory / f"{0:020d}.log") == size


def test_log_append_time(tmp_path: Path) -> None:
    log = open_log(tmp_path, message_timestamp_type="LogAppendTime")
    infos = log.append(batch(2, ts=5), now_ms=NOW + 7)
    assert infos[0].log_append_time == NOW + 7 and infos[0].max_timestamp == NOW + 7
    data = log.read(0, 1 << 20).read_bytes()
    header = validate_batch(data, from_client=False)  # new CRC is valid
    assert header.is_log_append_time and header.max_timestamp == NOW + 7
    assert [r.timestamp for r in decode_records(data)] == [NOW + 7, NOW + 7]


def test_read_bounds_and_kip74(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for _ in range(5):
        log.append(batch(2, size=100), now_ms=NOW)  # offsets 0-1, 2-3, ..., 8-9
    one = len(batch(2, size=100))
    with pytest.raises(OffsetOutOfRangeError):
        log.read(11, 100)
    assert log.read(10, 100).size == 0  # at the log end: empty, not an error
    # starts at the batch containing the offset
    assert offsets(log.read(3, 1 << 20).read_bytes())[0] == 2
    # whole batches only, up to max_bytes
    assert log.read(0, 2 * one + 5).size == 2 * one
    # KIP-74: first batch whole even if larger than max_bytes, unless min_one_batch=False
    assert log.read(0, 1).size == one
    assert log.read(0, 1, min_one_batch=False).size == 0
    # the upper bound (high watermark) keeps batches whose last offset >= it out
    assert offsets(log.read(0, 1 << 20, upper_bound=5).read_bytes()) == [0, 1, 2, 3]
    assert offsets(log.read(0, 1 << 20, upper_bound=6).read_bytes()) == [0, 1, 2, 3, 4, 5]
    assert log.read(4, 1 << 20, upper_bound=4).size == 0
    assert log.read(4, 1 << 20, upper_bound=5).size == 0  # batch 4-5 is not whole below 5


def test_reads_span_segments_one_region_each(tmp_path: Path) -> None:
    one = len(batch(1, size=100))
    log = open_log(tmp_path, segment_bytes=3 * one, index_interval_bytes=0)
    for _ in range(10):
        log.append(batch(1, size=100), now_ms=NOW)
    assert log.segment_count() == 4  # 3 + 3 + 3 + 1
    result = log.read(2, 1 << 20)
    assert [(r.position, r.length) for r in result.regions] == [(2 * one, one), (0, 3 * one), (0, 3 * one), (0, one)]
    assert offsets(result.read_bytes()) == list(range(2, 10))
    assert offsets(log.read(3, 4 * one).read_bytes()) == [3, 4, 5, 6]
    assert offsets(log.read(0, 1 << 20, upper_bound=7).read_bytes()) == list(range(7))


def test_region_fd_survives_segment_deletion(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=200)
    for i in range(6):
        log.append(batch(1, ts=NOW + i, size=100), now_ms=NOW)
    result = log.read(0, 150)
    first_file = result.regions[0].file
    fd = result.regions[0].fileno()
    assert log.delete_records_before(3) == 3
    assert log.segment_count() < 6
    assert not first_file.path.exists()
    # the unlinked file is still readable through the region's fd: sendfile would still work
    assert offsets(result.read_bytes()) == [0]
    del result, first_file
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed once nothing references it


def test_offset_for_timestamp(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=400, index_interval_bytes=50)
    # timestamps not monotonic across batches (CreateTime from producers)
    stamps = [100, 300, 200, 500, 400, 900, 700, 800]
    for ts in stamps:
        log.append(batch(2, ts=ts), now_ms=NOW)  # records ts, ts+1
    assert log.segment_count() > 1
    expect = {}
    for target in range(50, 1000, 7):
        expect[target] = None
        for i, ts in enumerate(stamps):
            for j in range(2):
                if ts + j >= target:
                    expect[target] = (2 * i + j, ts + j)
                    break
            if expect[target]:
                break
        assert log.offset_for_timestamp(target) == expect[target], target
    assert log.max_timestamp_and_offset() == (901, 11)
    log.delete_records_before(4)
    assert log.offset_for_timestamp(50) == (4, 200)  # below the log start never answers


def test_empty_log_timestamps(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    assert log.offset_for_timestamp(0) is None
    assert log.max_timestamp_and_offset() == (-1, -1)


def test_iter_batch_headers(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    for _ in range(6):
        log.append(batch(2, producer_id=7, producer_epoch=0, base_sequence=0), now_ms=NOW)
    assert [h.base_offset for h in log.iter_batch_headers()] == [0, 2, 4, 6, 8, 10]
    assert [h.base_offset for h in log.iter_batch_headers(5)] == [4, 6, 8, 10]
    assert all(h.producer_id == 7 for h in log.iter_batch_headers())


def test_roll_on_size_time_and_index(tmp_path: Path) -> None:
    one = len(batch(1, size=50))
    log = open_log(tmp_path, segment_bytes=2 * one, segment_ms=1000)
    log.append(batch(1, size=50), now_ms=NOW)
    log.append(batch(1, size=50), now_ms=NOW)
    assert log.segment_count() == 1
    log.append(batch(1, size=50), now_ms=NOW)
    assert log.segment_count() == 2 and log.segment_base_offsets() == [0, 2]
    log.maybe_roll(NOW + 999)
    assert log.segment_count() == 2
    log.maybe_roll(NOW + 1001)
    assert log.segment_count() == 3
    log.maybe_roll(NOW + 5000)  # empty active segment: nothing to roll
    assert log.segment_count() == 3
    # a single append larger than segment.bytes still goes in (into an empty segment)
    big = open_log(tmp_path / "b", segment_bytes=100, max_message_bytes=10_000)
    big.append(batch(1, size=500), now_ms=NOW)
    big.append(batch(1, size=500), now_ms=NOW)
    assert big.segment_count() == 2
    # index full: 24-byte offset index = 3 slots, one reserved
    small = open_log(tmp_path / "c", segment_index_bytes=24, index_interval_bytes=0)
    for _ in range(8):
        small.append(batch(1), now_ms=NOW)
    assert small.segment_count() > 2
    assert offsets(small.read(0, 1 << 20).read_bytes()) == list(range(8))
    # roll files are trimmed
    first = small.directory / f"{0:020d}.index"
    assert first.stat().st_size % 8 == 0 and first.stat().st_size <= 16


def test_retention_ms(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=200, retention_ms=1000)
    for i in range(6):
        log.append(batch(1, ts=NOW + i * 100, size=100), now_ms=NOW)
    assert log.segment_count() == 6
    assert log.apply_retention(NOW + 1000).segments_deleted == 0
    one = log.size_bytes // 6
    report = log.apply_retention(NOW + 1250)  # ts 0, 100, 200 are older than 1250-1000
    assert (report.segments_deleted, report.bytes_deleted) == (3, 3 * one)
    assert (report.base_offset, report.end_offset, report.log_start_offset) == (0, 3, 3)
    assert report.reasons == ("retention.ms",)
    assert log.log_start_offset == 3
    with pytest.raises(OffsetOutOfRangeError):
        log.read(2, 100)
    # everything expired: the active segment is rolled, then all data goes
    assert log.apply_retention(NOW + 10_000).segments_deleted == 3
    assert log.segment_count() == 1 and log.size_bytes == 0
    assert log.log_start_offset == log.log_end_offset == 6
    log.append(batch(1), now_ms=NOW)
    assert log.log_end_offset == 7
    forever = open_log(tmp_path / "f", segment_bytes=200, retention_ms=-1)
    for i in range(3):
        forever.append(batch(1, ts=0, size=100), now_ms=NOW)
    assert forever.apply_retention(NOW * 2).segments_deleted == 0


def test_retention_bytes(tmp_path: Path) -> None:
    one = len(batch(1, size=100))
    log = open_log(tmp_path, segment_bytes=one, retention_bytes=3 * one + 1, retention_ms=-1)
    # Kafka deletes a segment only while the log stays >= retention.bytes without it
    for _ in range(6):
        log.append(batch(1, size=100), now_ms=NOW)
    assert log.segment_count() == 6
    report = log.apply_retention(NOW)
    assert (report.segments_deleted, report.bytes_deleted, report.reasons) == (2, 2 * one, ("retention.bytes",))
    assert log.size_bytes == 4 * one and log.log_start_offset == 2
    log.update_config(LogConfig(segment_bytes=one, retention_bytes=0, retention_ms=-1))
    report = log.apply_retention(NOW)  # the active segment too, after a roll
    assert (report.segments_deleted, report.base_offset, report.end_offset) == (4, 2, 6)
    assert log.size_bytes == 0 and log.log_start_offset == log.log_end_offset == 6


def test_delete_records_before(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=200)
    for _ in range(6):
        log.append(batch(1, size=100), now_ms=NOW)
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(7)
    assert log.delete_records_before(3) == 3
    assert log.segment_base_offsets() == [3, 4, 5]
    assert log.delete_records_before(1) == 3  # never goes back
    assert log.delete_records_before(6) == 6
    assert log.segment_base_offsets() == [5]  # the active segment stays
    assert log.read(6, 100).size == 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(5, 100)
    log.close()
    again = PartitionLog.open(log.directory, log.config, now_ms=NOW)
    assert again.log_start_offset == 6 and again.log_end_offset == 6


def test_truncate_to(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    for _ in range(8):
        log.append(batch(2), now_ms=NOW)
    n = log.segment_count()
    assert n > 2
    log.truncate_to(9)  # falls inside batch 8-9: the whole batch goes
    assert log.log_end_offset == 8
    assert offsets(log.read(0, 1 << 20).read_bytes()) == list(range(8))
    assert log.segment_count() < n
    log.append(batch(1), now_ms=NOW)
    assert log.log_end_offset == 9
    log.truncate_to(100)  # past the end: nothing
    assert log.log_end_offset == 9
    log.truncate_to(0)
    assert log.log_end_offset == 0 and log.segment_count() == 1 and log.size_bytes == 0
    log.append(batch(1), now_ms=NOW)
    assert offsets(log.read(0, 1 << 20).read_bytes()) == [0]
    log.close()
    assert PartitionLog.open(log.directory, log.config, now_ms=NOW).log_end_offset == 1


def test_truncate_keeps_time_index_and_reopen_consistent(tmp_path: Path) -> None:
    log = open_log(tmp_path, index_interval_bytes=0)
    for i in range(10):
        log.append(batch(1, ts=NOW + 10 * i), now_ms=NOW)
    log.truncate_to(6)
    assert log.max_timestamp_and_offset() == (NOW + 50, 5)
    assert log.offset_for_timestamp(NOW + 55) is None
    log.append(batch(1, ts=NOW + 1), now_ms=NOW)
    assert log.offset_for_timestamp(NOW + 45) == (5, NOW + 50)
    log.close()
    again = PartitionLog.open(log.directory, log.config, now_ms=NOW, clean=True)
    assert again.offset_for_timestamp(NOW + 45) == (5, NOW + 50)
    assert again.log_end_offset == 7


def test_flush_policies(tmp_path: Path) -> None:
    always = open_log(tmp_path / "a", flush_policy="always")
    assert not always.needs_flush(NOW)
    always.append(batch(1), now_ms=NOW)
    assert always.needs_flush(NOW)
    assert always.recovery_point == 0
    always.flush()
    assert always.recovery_point == 1 and not always.needs_flush(NOW)

    interval = open_log(tmp_path / "i", flush_policy="interval", flush_interval_ms=100)
    interval.append(batch(1), now_ms=NOW)
    assert not interval.needs_flush(NOW + 99)
    assert interval.needs_flush(NOW + 100)

    never = open_log(tmp_path / "n", flush_policy="never", segment_bytes=100)
    never.append(batch(1, size=80), now_ms=NOW)
    assert not never.needs_flush(NOW + 10**9)
    never.append(batch(1, size=80), now_ms=NOW)  # rolls: the closed segment gets flushed once
    assert never.needs_flush(NOW)
    never.flush()
    assert not never.needs_flush(NOW) and never.recovery_point == 2


def test_flush_token_split_and_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import ringlog.storage.log as log_module

    log = open_log(tmp_path, flush_policy="always")
    log.append(batch(1), now_ms=NOW)
    token = log.flush_begin()
    log.append(batch(1), now_ms=NOW)  # lands after the capture: not covered
    t = threading.Thread(target=token.sync)
    t.start()
    t.join()
    log.flush_end(token)
    assert log.recovery_point == 1 and log.needs_flush(NOW)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(log_module, "_fdatasync", failing)
    token = log.flush_begin()
    with pytest.raises(StorageError):
        token.sync()
    log.flush_end(token)
    assert log.recovery_point == 1 and log.needs_flush(NOW)  # still dirty, retried later
    monkeypatch.undo()
    log.flush()
    assert log.recovery_point == 2


def test_config_topic_names(tmp_path: Path) -> None:
    cfg = LogConfig().with_topic_configs(
        {"retention.ms": "-1", "segment.bytes": "1048576", "cleanup.policy": "delete,compact",
         "ringlog.flush.policy": "always", "flush.ms": "5", "compression.type": "producer"}
    )
    assert cfg.retention_ms == -1 and cfg.segment_bytes == 1 << 20 and cfg.flush_policy == "always"
    assert cfg.cleanup_policy == "delete,compact" and cfg.flush_interval_ms == 5
    assert LogConfig().with_topic_configs(cfg.to_topic_configs()) == cfg
    # one line naming the config, the value and what is expected (storage.configdef)
    for configs, message in [
        ({"retention.ms": "-2"}, "invalid value -2 for configuration retention.ms: must be at least 0, or -1 (keep for ever)"),
        ({"segment.bytes": "ten"}, "invalid value ten for configuration segment.bytes: expected an integer"),
        ({"segment.bytes": "2000.9"}, "invalid value 2000.9 for configuration segment.bytes: expected an integer"),
        ({"segment.bytes": "13"}, "invalid value 13 for configuration segment.bytes: must be between 14 and 2147483647"),
        ({"message.timestamp.type": "Now"},
         "invalid value Now for configuration message.timestamp.type: expected one of CreateTime, LogAppendTime"),
        ({"compression.type": "brotli"}, "invalid value brotli for configuration compression.type: expected one of "
                                          "producer, uncompressed, gzip, snappy, lz4, zstd"),
    ]:
        with pytest.raises(ValueError) as failure:
            LogConfig().with_topic_configs(configs, strict=True)
        assert str(failure.value) == message
    # built directly, the same ranges hold
    with pytest.raises(ValueError, match="configuration segment.bytes: must be between 14 and"):
        LogConfig(segment_bytes=13)


def test_update_config_applies_live(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for _ in range(3):
        log.append(batch(1, size=100), now_ms=NOW)
    assert log.segment_count() == 1
    log.update_config(LogConfig(segment_bytes=150))
    log.append(batch(1, size=100), now_ms=NOW)
    assert log.segment_count() == 2


def test_closed_log_refuses_work(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(batch(1), now_ms=NOW)
    log.close()
    with pytest.raises(StorageError):
        log.append(batch(1), now_ms=NOW)
    with pytest.raises(StorageError):
        log.read(0, 10)


def test_unknown_files_are_left_alone_and_delete_removes_all(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(batch(1), now_ms=NOW)
    snap = log.directory / f"{1:020d}.snapshot"
    snap.write_bytes(b"producer state")
    log.close()
    log = PartitionLog.open(log.directory, log.config, now_ms=NOW)
    log.truncate_to(0)
    log.close()
    assert snap.read_bytes() == b"producer state"
    log = PartitionLog.open(log.directory, log.config, now_ms=NOW)
    log.delete()
    assert not log.directory.exists()


def test_directory_name_must_name_a_partition(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        PartitionLog.open(tmp_path / "nopartition", LogConfig(), now_ms=NOW)
    log = PartitionLog.open(tmp_path / "a-b-c-12", LogConfig(), now_ms=NOW)
    assert (log.topic, log.partition) == ("a-b-c", 12)
