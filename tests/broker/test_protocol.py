"""Wire-level behaviour with a raw client: per-partition produce errors, acks=0, pipelining order,
the long-poll woken by a commit, fetch limits (KIP-74), ListOffsets, OffsetForLeaderEpoch,
ApiVersions, and a clean shutdown."""
from __future__ import annotations

import datetime
import os
import time

import pytest
from kio.schema.errors import ErrorCode

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.client.wire import request_class
from ringlog.storage.records import build_batch

from .conftest import RawClient


def _mod(cls):
    return __import__(cls.__module__, fromlist=["x"])


def produce(topic: str, partition: int, records: bytes, acks: int = -1, version: int = 9):
    Req = request_class(0, version)
    m = _mod(Req)
    return Req(transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=5), topic_data=(
        m.TopicProduceData(name=topic, partition_data=(m.PartitionProduceData(index=partition, records=records),)),))


def fetch(topic: str, partitions, *, version: int = 12, max_wait_ms: int = 0, min_bytes: int = 1,
          max_bytes: int = 1 << 20, partition_max_bytes: int = 1 << 20):
    Req = request_class(1, version)
    m = _mod(Req)
    extra = {"forgotten_topics_data": ()} if version >= 7 else {}
    return Req(**extra, max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=min_bytes, max_bytes=max_bytes,
               topics=(m.FetchTopic(topic=topic, partitions=tuple(
                   m.FetchPartition(partition=p, fetch_offset=o, partition_max_bytes=partition_max_bytes)
                   for p, o in partitions)),))


def part(resp):
    return resp.responses[0].partition_responses[0]


@pytest.fixture
def b(tmp_path):
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"), message_max_bytes=4096)) as bt:
        bt.call(bt.broker.create_topic, "t", 2)
        yield bt


def test_produce_errors_are_per_partition(b) -> None:
    c = RawClient(b.host, b.port)
    good = build_batch([(b"k", b"v", (), 1)])
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    big = build_batch([(None, os.urandom(5000), (), 1)])
    cases = [("t", 0, good, ErrorCode.none), ("t", 7, good, ErrorCode.unknown_topic_or_partition),
             ("nope", 0, good, ErrorCode.unknown_topic_or_partition), ("t", 1, bytes(bad_crc), ErrorCode.corrupt_message),
             ("t", 1, big, ErrorCode.message_too_large), ("t", 1, good[:30], ErrorCode.corrupt_message)]
    for topic, p, records, want in cases:
        assert part(c.call(produce(topic, p, records))).error_code == want, (topic, p, want)
    # the broker keeps serving this connection and the good batch is readable
    r = c.call(fetch("t", [(0, 0)]))
    assert bytes(r.responses[0].partitions[0].records)[8:] == good[8:]
    c.close()


def test_acks0_no_response_and_close_on_error(b) -> None:
    c = RawClient(b.host, b.port)
    c.send(produce("t", 0, build_batch([(None, b"a", (), 1)]), acks=0))
    # the next answer on this connection belongs to the next request: acks=0 got none
    Md = request_class(3, 12)
    md = Md(topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    corr = c.send(md)
    assert c.receive(md)[0] == corr
    c.send(produce("t", 9, build_batch([(None, b"a", (), 1)]), acks=0))
    assert c.is_closed()


def test_pipelined_answers_in_order_and_longpoll_woken_by_commit(b) -> None:
    consumer = RawClient(b.host, b.port)
    producer = RawClient(b.host, b.port)
    long_poll = fetch("t", [(1, 0)], max_wait_ms=5000)
    c1 = consumer.send(long_poll)
    md = request_class(18, 3)(client_software_name="x", client_software_version="1")
    c2 = consumer.send(md)  # queued behind the long poll: must come second
    time.sleep(0.2)
    start = time.monotonic()
    assert part(producer.call(produce("t", 1, build_batch([(None, b"wake", (), 1)])))).error_code == 0
    got1, r1 = consumer.receive(long_poll)
    elapsed = time.monotonic() - start
    got2, _ = consumer.receive(md)
    assert (got1, got2) == (c1, c2)
    assert elapsed < 2.0, "the fetch was not woken by the commit"
    p = r1.responses[0].partitions[0]
    assert p.high_watermark == 1 and p.last_stable_offset == 1 and len(p.records) > 0


def test_fetch_limits_kip74(b) -> None:
    c = RawClient(b.host, b.port)
    big = build_batch([(None, b"x" * 3000, (), 1)])
    for _ in range(3):
        c.call(produce("t", 0, big))
        c.call(produce("t", 1, big))
    # max_bytes below one batch: the first partition still gets one whole batch, the second none
    r = c.call(fetch("t", [(0, 0), (1, 0)], max_bytes=100, partition_max_bytes=100))
    p0, p1 = r.responses[0].partitions
    assert len(p0.records) == len(big) and len(p1.records) == 0
    assert p0.error_code == p1.error_code == ErrorCode.none
    # out of range and unknown partition answered per partition, in request order
    r = c.call(fetch("t", [(1, 99), (5, 0), (0, 3)]))
    codes = [p.error_code for p in r.responses[0].partitions]
    assert codes == [ErrorCode.offset_out_of_range, ErrorCode.unknown_topic_or_partition, ErrorCode.none]
    assert [p.partition_index for p in r.responses[0].partitions] == [1, 5, 0]
    for v in (4, 7, 11):
        r = c.call(fetch("t", [(0, 0)], version=v))
        assert len(r.responses[0].partitions[0].records) == 3 * len(big)


def test_list_offsets_and_epochs(b) -> None:
    c = RawClient(b.host, b.port)
    for i in range(5):
        c.call(produce("t", 0, build_batch([(None, b"r%d" % i, (), 1000 + i * 10)])))
    Req = request_class(2, 7)
    m = _mod(Req)
    # one query per request: a partition named twice in one request is answered INVALID_REQUEST
    parts = [c.call(Req(replica_id=-1, isolation_level=1, topics=(m.ListOffsetsTopic(name="t", partitions=(
        m.ListOffsetsPartition(partition_index=0, timestamp=ts),)),))).topics[0].partitions[0]
        for ts in (-2, -1, -3, 1015, 99999)]
    assert [(p.offset, p.timestamp) for p in parts] == [(0, -1), (5, -1), (4, 1040), (2, 1020), (-1, -1)]
    twice = Req(replica_id=-1, isolation_level=1, topics=(m.ListOffsetsTopic(name="t", partitions=tuple(
        m.ListOffsetsPartition(partition_index=0, timestamp=ts) for ts in (-2, -1))),))
    assert [(p.partition_index, p.error_code) for p in c.call(twice).topics[0].partitions] == [
        (0, ErrorCode.invalid_request)]
    Req = request_class(23, 4)
    m = _mod(Req)
    req = Req(topics=(m.OffsetForLeaderTopic(topic="t", partitions=(
        m.OffsetForLeaderPartition(partition=0, leader_epoch=0, current_leader_epoch=0),)),))
    p = c.call(req).topics[0].partitions[0]
    assert (p.error_code, p.leader_epoch, p.end_offset) == (ErrorCode.none, 0, 5)


def test_api_versions_lists_registry(b) -> None:
    c = RawClient(b.host, b.port)
    for v in range(4):
        Req = request_class(18, v)
        req = Req(client_software_name="x", client_software_version="1") if v >= 3 else Req()
        keys = {k.api_key: (k.min_version, k.max_version) for k in c.call(req).api_keys}
        assert keys[0] == (0, 9) and keys[1] == (4, 12) and keys[3] == (1, 12)


def test_clean_shutdown_marker_and_restart(tmp_path) -> None:
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"))
    with BrokerThread(config) as bt:
        bt.call(bt.broker.create_topic, "keep", 1, {"retention.ms": "86400000"})
        c = RawClient(bt.host, bt.port)
        c.call(produce("keep", 0, build_batch([(None, b"x", (), 1)])))
        topic_id = bt.broker.metadata.get("keep").topic_id
    assert os.path.exists(tmp_path / "d" / ".clean_shutdown")
    with BrokerThread(config) as bt:
        info = bt.broker.metadata.get("keep")
        assert info.topic_id == topic_id and info.configs == {"retention.ms": "86400000"}
        assert bt.broker.high_watermark("keep", 0) == 1


def test_retention_runs_in_background(tmp_path) -> None:
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"), retention_check_interval_ms=100)
    with BrokerThread(config) as bt:
        bt.call(bt.broker.create_topic, "short", 1, {"retention.ms": "1", "segment.bytes": "200"})
        c = RawClient(bt.host, bt.port)
        for i in range(6):
            c.call(produce("short", 0, build_batch([(None, b"y" * 150, (), 1)])))
        deadline = time.monotonic() + 5
        plog = bt.broker.partition_log("short", 0)
        while plog.log_start_offset == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert plog.log_start_offset > 0
