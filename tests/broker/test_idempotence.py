"""The producer-state rules (Kafka's ProducerAppendInfo, client origin), snapshots, and a model test."""
from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from kio.schema.errors import ErrorCode

from ringlog.broker.idempotence import (
    IN_FLIGHT_DUPLICATE,
    DuplicateBatch,
    PartitionProducers,
    ProducerIdAllocator,
    snapshot_name,
)
from ringlog.broker.errors import KafkaError
from ringlog.broker.snowflake import MemoryHighWaterMark, SnowflakeGenerator
from ringlog.storage.batch import parse_header
from ringlog.storage.records import build_batch

PID = 1000


def header(seq: int, count: int = 1, *, pid: int = PID, epoch: int = 0, base_offset: int = 0, ts: int = 1_000):
    raw = build_batch(
        [(None, b"v%d" % i, (), ts) for i in range(count)],
        producer_id=pid, producer_epoch=epoch, base_sequence=seq, base_offset=base_offset,
    )
    return parse_header(raw)


class Log:
    """A partition: assigns offsets to accepted batches like the writer does."""

    def __init__(self) -> None:
        self.state = PartitionProducers()
        self.end = 0
        self.written: list = []

    def produce(self, h):
        verdict = self.state.check(h)
        if verdict is None:
            first = self.end
            self.end += h.last_offset_delta + 1
            self.state.update(h, first, self.end - 1)
            self.written.append((h, first))
            return first
        return verdict


def test_in_sequence_batches_are_accepted_and_offsets_assigned():
    log = Log()
    assert log.produce(header(0, 3)) == 0
    assert log.produce(header(3, 2)) == 3
    assert log.produce(header(5, 1)) == 5


def test_retried_batch_gets_its_original_offset_and_is_not_written_twice():
    log = Log()
    log.produce(header(0, 3))
    log.produce(header(3, 2))
    verdict = log.produce(header(0, 3))
    assert verdict == DuplicateBatch(0, 2)
    assert log.produce(header(3, 2)) == DuplicateBatch(3, 4)
    assert len(log.written) == 2


def test_only_the_last_five_batches_are_remembered():
    log = Log()
    for i in range(7):
        log.produce(header(i))
    assert log.produce(header(6)) == DuplicateBatch(6, 6)
    assert log.produce(header(2)) == DuplicateBatch(2, 2)
    # Batch 1 fell out of the window: no longer recognised, and it is out of order.
    assert log.produce(header(1)) == ErrorCode.out_of_order_sequence_number


def test_gap_is_out_of_order():
    log = Log()
    log.produce(header(0, 2))
    assert log.produce(header(3)) == ErrorCode.out_of_order_sequence_number
    assert log.produce(header(2)) == 2


def test_older_epoch_is_fenced_newer_epoch_restarts_at_zero():
    log = Log()
    log.produce(header(0, epoch=1))
    assert log.produce(header(1, epoch=0)) == ErrorCode.invalid_producer_epoch
    assert log.produce(header(5, epoch=2)) == ErrorCode.out_of_order_sequence_number
    assert log.produce(header(0, epoch=2)) == 1
    # The new epoch made the old batches unrecognisable as duplicates.
    assert log.produce(header(0, epoch=1)) == ErrorCode.invalid_producer_epoch


def test_unknown_producer_is_accepted_at_any_sequence():
    log = Log()
    assert log.produce(header(42, pid=7)) == 0
    assert log.produce(header(43, pid=7)) == 1


def test_sequence_wraps_at_int32_max():
    log = Log()
    log.produce(header(2**31 - 2, 2))  # covers 2**31-2 and 2**31-1
    assert log.produce(header(0)) == 2


def test_in_flight_batches_count_for_ordering_and_duplicates():
    state = PartitionProducers()
    a, b = header(0, 5), header(5, 5)
    assert state.check(a) is None
    assert state.check(b) is None  # in sequence with the queued (unwritten) batch
    assert state.check(header(0, 5)) == IN_FLIGHT_DUPLICATE
    assert state.check(header(11)) == ErrorCode.out_of_order_sequence_number
    state.update(a, 0, 4)
    state.update(b, 5, 9)
    assert state.check(header(0, 5)) == DuplicateBatch(0, 4)
    c = header(10)
    assert state.check(c) is None
    state.abort(c)  # never written: the next try is in sequence again
    assert state.check(header(10)) is None


def test_abort_of_a_new_producer_forgets_it():
    state = PartitionProducers()
    h = header(7, pid=9)
    assert state.check(h) is None
    state.abort(h)
    assert 9 not in state.producers


def test_truncate_head_forgets_producers_below_the_log_start():
    log = Log()
    log.produce(header(0, pid=1))
    log.produce(header(0, pid=2))
    assert log.state.truncate_head(1) == 1
    assert set(log.state.producers) == {2}
    # Producer 1 may now continue at any sequence.
    assert log.produce(header(17, pid=1)) == 2


def test_expiry_drops_idle_producers():
    log = Log()
    log.produce(header(0, pid=1, ts=1_000))
    log.produce(header(0, pid=2, ts=50_000))
    assert log.state.expire(now_ms=60_000, max_idle_ms=20_000) == 1
    assert set(log.state.producers) == {2}


def test_snapshot_round_trip_and_damage():
    log = Log()
    for i in range(8):
        log.produce(header(i, 2, pid=1 + i % 3, epoch=i % 2 and 0))
    data = log.state.encode_snapshot(log.end)
    offset, copy = PartitionProducers.decode_snapshot(data)
    assert offset == log.end
    for pid, entry in log.state.producers.items():
        assert list(copy.producers[pid].batches) == list(entry.batches)
        assert copy.producers[pid].epoch == entry.epoch
    # Same answers from the copy.
    last_h, last_offset = log.written[-1]
    h = header(last_h.base_sequence, 2, pid=last_h.producer_id)
    assert copy.check(h) == DuplicateBatch(last_offset, last_offset + 1)
    damaged = bytearray(data)
    damaged[-3] ^= 0xFF
    with pytest.raises(ValueError):
        PartitionProducers.decode_snapshot(bytes(damaged))
    with pytest.raises(ValueError):
        PartitionProducers.decode_snapshot(data[:-5])
    assert snapshot_name(42) == "00000000000000000042.snapshot"


def test_replay_rebuilds_the_same_state():
    log = Log()
    for i in range(6):
        log.produce(header(i, 1 + i % 3, pid=5))
    rebuilt = PartitionProducers()
    for h, first in log.written:
        rebuilt.replay(header(h.base_sequence, h.last_offset_delta + 1, pid=5, base_offset=first))
    assert list(rebuilt.producers[5].batches) == list(log.state.producers[5].batches)
    assert rebuilt.applied_offset == log.end


def test_allocator_new_ids_and_epoch_bumps():
    gen = SnowflakeGenerator(3, store=MemoryHighWaterMark())
    alloc = ProducerIdAllocator(gen)
    pid, epoch = alloc.new_id()
    assert pid > 0 and epoch == 0
    pid2, _ = alloc.new_id()
    assert pid2 > pid
    assert alloc.reinit(pid, 0, known_epoch=0) == (pid, 1)
    assert alloc.reinit(pid, 1, known_epoch=0) == (pid, 2)
    with pytest.raises(KafkaError) as info:
        alloc.reinit(pid, 0, known_epoch=0)  # epoch 2 was handed out: 0 is a zombie
    assert info.value.code == ErrorCode.producer_fenced
    with pytest.raises(KafkaError) as info:
        alloc.reinit((1 << 22) | (9 << 12), 0, known_epoch=-1)  # worker 9: not an id of this broker
    assert info.value.code == ErrorCode.invalid_producer_id_mapping
    # An exhausted epoch gets a fresh id.
    new_pid, new_epoch = alloc.reinit(pid, 32766, known_epoch=2)
    assert new_pid != pid and new_epoch == 0


class ProducerModel(RuleBasedStateMachine):
    """Against a simple model: an exactly-once log of (producer, sequence) records.

    A producer sends batches of its record sequence, sometimes retries an earlier batch, sometimes
    skips ahead; the log must hold every record at most once and in sequence order per producer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log = Log()
        self.next_seq = {1: 0, 2: 0}
        self.sent: dict[int, list[tuple[int, int, int]]] = {1: [], 2: []}  # (seq, count, offset)
        self.records: list[tuple[int, int]] = []

    @rule(pid=st.sampled_from([1, 2]), count=st.integers(1, 4))
    def send_next(self, pid, count):
        seq = self.next_seq[pid]
        result = self.log.produce(header(seq, count, pid=pid))
        assert isinstance(result, int) and not isinstance(result, ErrorCode)
        self.sent[pid].append((seq, count, result))
        self.records.extend((pid, s) for s in range(seq, seq + count))
        self.next_seq[pid] = seq + count

    @rule(pid=st.sampled_from([1, 2]), back=st.integers(1, 8))
    def retry(self, pid, back):
        if not self.sent[pid]:
            return
        index = max(0, len(self.sent[pid]) - back)
        seq, count, offset = self.sent[pid][index]
        result = self.log.produce(header(seq, count, pid=pid))
        if len(self.sent[pid]) - index <= 5:
            assert result == DuplicateBatch(offset, offset + count - 1)
        else:
            assert result == ErrorCode.out_of_order_sequence_number

    @rule(pid=st.sampled_from([1, 2]), skip=st.integers(1, 5))
    def gap(self, pid, skip):
        if not self.sent[pid]:
            return
        assert self.log.produce(header(self.next_seq[pid] + skip, pid=pid)) == ErrorCode.out_of_order_sequence_number

    @invariant()
    def log_is_exactly_once(self):
        assert self.log.end == len(self.records)


TestProducerModel = ProducerModel.TestCase
TestProducerModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
