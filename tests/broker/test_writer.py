"""The group-commit writer driven without sockets: real partition logs in a temporary directory,
real Partition objects, rounds run by hand (`await writer.commit_round()`)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from kio.schema.errors import ErrorCode

from ringlog.broker.errors import KafkaError
from ringlog.broker.idempotence import DuplicateBatch, PartitionProducerState, ProducerStateManager, list_snapshots
from ringlog.broker.ingest import PartitionRing, PendingAppend, RingFull, Writer
from ringlog.broker.metrics import BrokerMetrics
from ringlog.broker.partition import Partition
from ringlog.broker.config import BrokerConfig
from ringlog.storage.batch import validate_batch
from ringlog.storage.log import LogConfig, PartitionLog
from ringlog.storage.records import build_batch, iter_records

NOW = 1_700_000_000_000


class Setup:
    def __init__(self, tmp_path: Path, *, ring_bytes: int = 1 << 20, snapshots: bool = False, **log_config) -> None:
        self.tmp_path = tmp_path
        self.config = attrs.evolve(LogConfig(), **log_config)
        self.metrics = BrokerMetrics(str(tmp_path), 0)
        self.parts: list[Partition] = []
        manager = None
        if snapshots:
            manager = ProducerStateManager(BrokerConfig(data_dir=str(tmp_path)), 0, lambda: self.parts,
                                           snapshot_interval_ms=0)
        self.manager = manager
        self.writer = Writer(trio.Lock(), self.metrics, now_ms=lambda: NOW, snapshots=manager)
        self.ring_bytes = ring_bytes

    def partition(self, index: int = 0) -> Partition:
        directory = self.tmp_path / f"t-{index}"
        plog = PartitionLog.open(directory, self.config, now_ms=NOW)
        plog.defer_io = True
        part = Partition("t", index, plog, PartitionProducerState(directory), PartitionRing(self.ring_bytes), self.writer)
        self.parts.append(part)
        return part


def entry(part: Partition, *values: bytes, pid: int = -1, seq: int = -1) -> PendingAppend:
    raw = bytearray(build_batch([(None, v, (), NOW) for v in values], producer_id=pid, producer_epoch=0,
                                base_sequence=seq))
    return PendingAppend(part.tp, [raw], [validate_batch(raw)], len(raw))


def test_a_round_writes_every_pending_partition_and_advances_their_high_watermarks(tmp_path) -> None:
    s = Setup(tmp_path)

    p0, p1 = s.partition(0), s.partition(1)

    async def main():
        woken = trio.Event()
        p1.waiters.add(woken)
        first = entry(p0, b"a", b"b")
        second = entry(p0, b"c")
        third = entry(p1, b"x")
        for part, e in ((p0, first), (p0, second), (p1, third)):
            await part.submit(e, block=True)
        assert (p0.high_watermark, p1.high_watermark) == (0, 0)  # nothing committed yet
        await s.writer.commit_round()
        assert [i.base_offset for i in first.infos] == [0] and first.infos[0].last_offset == 1
        assert [i.base_offset for i in second.infos] == [2]
        assert [i.base_offset for i in third.infos] == [0]
        assert (p0.high_watermark, p1.high_watermark) == (3, 1)
        assert woken.is_set()
        assert s.writer.rounds == 1 and not s.writer.pending
        data = p0.read(0, 1 << 20).read_bytes()
        assert [r.value for r in iter_records(data)] == [b"a", b"b", b"c"]

    trio.run(main)


def test_reads_stop_at_the_high_watermark(tmp_path) -> None:
    s = Setup(tmp_path)

    p = s.partition()

    async def main():
        await p.submit(entry(p, b"one"), block=True)
        await s.writer.commit_round()
        # Appended behind the partition's back (as a round in progress would): not yet visible.
        p.log.append_batches([bytearray(build_batch([(None, b"two", (), NOW)]))], now_ms=NOW)
        assert p.log.log_end_offset == 2 and p.high_watermark == 1
        assert p.read(0, 1 << 20).read_bytes() == p.log.read(0, 1 << 20, upper_bound=1).read_bytes()
        assert b"two" not in p.read(0, 1 << 20).read_bytes()

    trio.run(main)


def test_idempotent_batches_are_checked_on_submit_and_recorded_by_the_round(tmp_path) -> None:
    s = Setup(tmp_path)

    p = s.partition()

    async def main():
        e = entry(p, b"v0", b"v1", pid=7, seq=0)
        assert p.check_producers(e.headers) is None
        await p.submit(e, block=True)
        # A retry of the same batch while it waits in the ring: retriable, not a second copy.
        assert p.check_producers(entry(p, b"v0", b"v1", pid=7, seq=0).headers) == ErrorCode.not_enough_replicas
        await s.writer.commit_round()
        assert p.check_producers(entry(p, b"v0", b"v1", pid=7, seq=0).headers) == DuplicateBatch(0, 1)
        assert p.check_producers(entry(p, b"v3", pid=7, seq=3).headers) == ErrorCode.out_of_order_sequence_number
        assert p.check_producers(entry(p, b"v2", pid=7, seq=2).headers) is None

    trio.run(main)


def test_a_full_ring_refuses_in_reject_mode_and_waits_in_block_mode(tmp_path) -> None:
    s = Setup(tmp_path, ring_bytes=100)

    p = s.partition()

    async def main():
        await p.submit(entry(p, b"x" * 80), block=True)
        with pytest.raises(RingFull):
            await p.submit(entry(p, b"y" * 80), block=False)
        assert s.writer.rejected == 1
        late = entry(p, b"z" * 80)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(p.submit, late, block=True))
            await trio.testing.wait_all_tasks_blocked()
            assert p.ring.used < 200 and late not in p.ring.queue  # waiting for room
            await s.writer.commit_round()  # frees the ring
        assert late in p.ring.queue
        await s.writer.commit_round()
        assert p.high_watermark == 2

    trio.run(main)


def test_closing_a_partition_fails_what_waits_in_its_ring(tmp_path) -> None:
    s = Setup(tmp_path)

    p = s.partition()

    async def main():
        e = entry(p, b"v", pid=9, seq=0)
        assert p.check_producers(e.headers) is None
        await p.submit(e, block=True)
        p.close("topic 't' was deleted")
        await s.writer.commit_round()
        assert isinstance(e.error, KafkaError) and e.error.code == ErrorCode.unknown_topic_or_partition
        assert p.log.log_end_offset == 0
        with pytest.raises(KafkaError):
            await p.submit(entry(p, b"w"), block=True)

    trio.run(main)


def test_rolls_create_the_next_segment_in_a_worker_thread(tmp_path) -> None:
    """Small segments roll on nearly every round; the blocking-call guard (tests/conftest.py)
    fails this test if a segment's files are made on the Trio thread."""
    s = Setup(tmp_path, segment_bytes=1024)

    p = s.partition()

    async def main():
        for i in range(20):
            await p.submit(entry(p, b"%d" % i + b"x" * 300), block=True)
            await s.writer.commit_round()
        assert p.high_watermark == 20
        assert p.log.segment_count() >= 6
        assert p.log.read(0, 1 << 30, upper_bound=20).size > 20 * 300

    trio.run(main)


def test_producer_snapshots_are_written_off_the_trio_thread(tmp_path) -> None:
    s = Setup(tmp_path, snapshots=True)

    p = s.partition()

    async def main():
        for seq in range(3):
            e = entry(p, b"v", pid=11, seq=seq)
            assert p.check_producers(e.headers) is None
            await p.submit(e, block=True)
            await s.writer.commit_round()
        assert [offset for offset, _ in list_snapshots(p.log.directory)] == [2, 3]
        assert s.manager.snapshots_written == 3

    trio.run(main)


def test_a_storage_failure_fails_that_partition_only(tmp_path) -> None:
    s = Setup(tmp_path)

    bad, good = s.partition(0), s.partition(1)

    async def main():
        broken = entry(bad, b"v")
        await bad.submit(broken, block=True)
        bad.log.abandon()  # its files are gone from under it: the append raises
        fine = entry(good, b"w")
        await good.submit(fine, block=True)
        await s.writer.commit_round()
        assert broken.error is not None and bad.high_watermark == 0
        assert fine.error is None and good.high_watermark == 1

    trio.run(main)
