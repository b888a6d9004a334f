"""The offline tools read what the storage engine writes (they share no code with it: this is the
check that both sides agree on the files), and agree with its crash recovery about torn tails."""
from __future__ import annotations

from ringlog.storage.log import LogConfig, PartitionLog
from ringlog.storage.records import build_batch
from ringlog.storage.replay import iter_data_dir, list_segments, partition_stats
from ringlog.storage.verify import TORN_TAIL, verify_data_dir, verify_partition


def _fill(directory, batches: int) -> int:
    log = PartitionLog.open(directory, LogConfig(segment_bytes=2000), now_ms=1_000)
    n = 0
    try:
        for i in range(batches):
            items = [(b"k%d" % (n + j), b"v" * 40, [("i", b"%d" % i)], 10_000 + n + j) for j in range(3)]
            log.append(build_batch(items, compression=i % 5), now_ms=2_000 + i)
            n += 3
    finally:
        log.close()
    return n


def test_engine_written_partitions_replay_and_verify(tmp_path):
    n0 = _fill(tmp_path / "orders.v1-0", 40)
    n1 = _fill(tmp_path / "orders.v1-1", 3)
    assert len(list_segments(tmp_path / "orders.v1-0")) > 1  # the roll happened
    got = [(r.partition, r.offset, r.key) for r in iter_data_dir(tmp_path)]
    assert got == [(0, o, b"k%d" % o) for o in range(n0)] + [(1, o, b"k%d" % o) for o in range(n1)]
    result = verify_data_dir(tmp_path)
    assert result.ok, result.problems
    assert [p.records for p in result.partitions] == [n0, n1]
    stats = partition_stats(tmp_path / "orders.v1-0")
    assert (stats.first_offset, stats.last_offset, stats.records) == (0, n0 - 1, n0)
    assert (stats.min_timestamp, stats.max_timestamp) == (10_000, 10_000 + n0 - 1)


def test_torn_tail_seen_offline_is_what_recovery_cuts(tmp_path):
    part = tmp_path / "t-0"
    n = _fill(part, 10)
    active = list_segments(part)[-1].path
    data = active.read_bytes()
    active.write_bytes(data[:-9])  # a crash in the middle of the last append
    result = verify_partition(part)
    assert result.problem is not None and result.problem.kind == TORN_TAIL
    assert result.last_offset == n - 4
    # The broker's recovery truncates exactly that batch; afterwards the log verifies clean.
    PartitionLog.open(part, LogConfig(segment_bytes=2000), now_ms=5_000, clean=False).close()
    after = verify_partition(part)
    assert after.ok and after.last_offset == n - 4
