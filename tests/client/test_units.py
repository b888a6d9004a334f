"""Pure pieces: errors, murmur2 (Java's own test vectors), sticky partitioning, fetch splitting."""
from __future__ import annotations

import struct

import pytest

from ringlog.client import errors
from ringlog.client.consumer import decode_batch_records, split_fetched
from ringlog.client.errors import CorruptRecord, KafkaError
from ringlog.client.partitioner import StickyPartitioner, murmur2, murmur2_partition
from ringlog.client.producer import ProducerBatch
from ringlog.storage.batch import CODEC_ZSTD, parse_header
from ringlog.storage.records import build_batch, decode_records


def test_kafka_error_mapping():
    e = KafkaError(6)
    assert isinstance(e, errors.NotLeaderOrFollowerError)
    assert (e.code, e.name, e.retriable) == (6, "NOT_LEADER_OR_FOLLOWER", True)
    assert KafkaError(36).name == "TOPIC_ALREADY_EXISTS" and not KafkaError(36).retriable
    assert isinstance(errors.UnknownTopicOrPartitionError(), KafkaError)
    assert errors.UnknownTopicOrPartitionError().code == 3
    assert KafkaError(12345).name == "UNKNOWN_ERROR_12345"


# Vectors from Apache Kafka's UtilsTest.testMurmur2.
@pytest.mark.parametrize(("key", "expected"), [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_murmur2_java_vectors(key, expected):
    assert murmur2(key) == expected


def test_sticky_partitioner_moves_on_when_a_batch_closes():
    sp = StickyPartitioner()
    parts = list(range(6))
    first = sp.partition("t", parts)
    assert all(sp.partition("t", parts) == first for _ in range(10))
    sp.batch_closed("t", first, parts)
    assert sp.partition("t", parts) != first


def test_producer_batch_encoding_matches_reference_decoder():
    b = ProducerBatch("t", 0, 1 << 20, 0.0)
    rows = [(b"k%d" % i if i % 2 else None, b"v" * i, [("h", b"x")] if i % 3 else [], 1000 + i) for i in range(50)]
    for key, value, headers, ts in rows:
        assert b.try_append(key, value, headers, ts) >= 0
    b.seal(CODEC_ZSTD, 7, 1, 100)
    header = parse_header(b.raw)
    assert (header.producer_id, header.producer_epoch, header.base_sequence, header.records_count) == (7, 1, 100, 50)
    recs = decode_records(bytes(b.raw))
    assert [(r.key, r.value, list(r.headers), r.timestamp) for r in recs] == [
        (k, v, [tuple(h) for h in hs], ts) for k, v, hs, ts in rows]


def _batch(base, n, **kw):
    raw = bytearray(build_batch([(None, b"%d" % i, (), 1) for i in range(n)], **kw))
    struct.pack_into(">q", raw, 0, base)
    return bytes(raw)


def test_split_fetched_skips_partial_tail_and_control_and_checks_crc():
    blob = _batch(0, 3) + _batch(3, 1, control=True, producer_id=5, base_sequence=0) + _batch(4, 2)
    batches, nxt = split_fetched(blob + _batch(6, 4)[:-5], 0)
    assert [h[0] for h, _ in batches] == [0, 4]
    assert nxt == 6  # the partial batch at 6 is fetched again
    records = [r.offset for h, raw in batches for r in decode_batch_records("t", 0, raw, h)]
    assert records == [0, 1, 2, 4, 5]
    damaged = bytearray(blob)
    damaged[70] ^= 0xFF
    with pytest.raises(CorruptRecord):
        split_fetched(bytes(damaged), 0)


def test_split_fetched_read_committed_drops_aborted_transactions():
    aborted = _batch(0, 2, producer_id=9, producer_epoch=0, base_sequence=0, transactional=True)
    marker = _batch(2, 1, producer_id=9, producer_epoch=0, base_sequence=0, transactional=True, control=True)
    committed = _batch(3, 2, producer_id=10, producer_epoch=0, base_sequence=0, transactional=True)
    blob = aborted + marker + committed
    batches, nxt = split_fetched(blob, 0, read_committed=True, aborted=[(9, 0)])
    assert [h[0] for h, _ in batches] == [3] and nxt == 5
    batches, _ = split_fetched(blob, 0, read_committed=False, aborted=[(9, 0)])
    assert [h[0] for h, _ in batches] == [0, 3]


def test_murmur2_partition_is_positive_modulo():
    assert murmur2_partition(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7
