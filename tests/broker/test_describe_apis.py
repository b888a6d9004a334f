"""DescribeLogDirs (35), DescribeProducers (61) and DescribeTopicPartitions (75) on the wire."""
from __future__ import annotations

import importlib
import os
import uuid

from kio.schema.errors import ErrorCode



def req(api: str, version: int, cls: str, /, **fields):
    return getattr(importlib.import_module(f"kio.schema.{api}.v{version}.request"), cls)(**fields)


async def _create(broker, name: str, partitions: int) -> None:
    await broker.broker.create_topic(name, partitions)


def _produce(broker, topic: str, partition: int, values: list[bytes], producer_id: int = -1) -> None:
    """Records through confluent-kafka (idempotent when asked), so the producer state is real."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": producer_id >= 0, "linger.ms": 0})
    for v in values:
        p.produce(topic, value=v, partition=partition)
    assert p.flush(10) == 0


def test_describe_log_dirs(live_broker, raw_client) -> None:
    live_broker.call(_create, live_broker, "dirs", 2)
    _produce(live_broker, "dirs", 1, [b"x" * 100] * 5)
    client = raw_client()
    for version in (1, 4):
        r = client.call(req("describe_log_dirs", version, "DescribeLogDirsRequest", topics=None))
        (result,) = r.results
        assert result.error_code == ErrorCode.none
        assert result.log_dir == os.path.abspath(live_broker.config.data_dir)
        sizes = {(t.name, p.partition_index): p.partition_size for t in result.topics for p in t.partitions}
        assert sizes[("dirs", 0)] == 0 and sizes[("dirs", 1)] > 500
        assert all(p.offset_lag == 0 and not p.is_future_key for t in result.topics for p in t.partitions)
        if version >= 4:
            assert result.total_bytes > 0 and 0 <= result.usable_bytes <= result.total_bytes
    # only what was asked for; partitions that do not exist are left out
    wanted = req("describe_log_dirs", 4, "DescribableLogDirTopic", topic="dirs", partitions=(1, 7))
    nope = req("describe_log_dirs", 4, "DescribableLogDirTopic", topic="nope", partitions=(0,))
    r = client.call(req("describe_log_dirs", 4, "DescribeLogDirsRequest", topics=(wanted, nope)))
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in r.results[0].topics] == [("dirs", [1])]


def test_describe_producers(live_broker, raw_client) -> None:
    live_broker.call(_create, live_broker, "prods", 2)
    _produce(live_broker, "prods", 0, [b"a", b"b", b"c"], producer_id=0)
    _produce(live_broker, "prods", 1, [b"plain"])  # not idempotent: no producer state
    client = raw_client()
    topic = req("describe_producers", 0, "TopicRequest", name="prods", partition_indexes=(0, 1, 9))
    unknown = req("describe_producers", 0, "TopicRequest", name="nope", partition_indexes=(0,))
    r = client.call(req("describe_producers", 0, "DescribeProducersRequest", topics=(topic, unknown)))
    prods, nope = r.topics
    p0, p1, p9 = prods.partitions
    assert p0.error_code == ErrorCode.none
    (state,) = p0.active_producers
    batches = live_broker.call(_headers, live_broker, "prods", 0)
    assert state.producer_id == batches[0].producer_id > 0 and state.producer_epoch == 0
    assert state.last_sequence == 2 and state.last_timestamp == batches[-1].max_timestamp
    assert (state.coordinator_epoch, state.current_txn_start_offset) == (-1, -1)
    assert p1.error_code == ErrorCode.none and p1.active_producers == ()
    assert p9.error_code == ErrorCode.unknown_topic_or_partition
    assert nope.partitions[0].error_code == ErrorCode.unknown_topic_or_partition


async def _headers(broker, topic, partition):
    return list(broker.broker.partition_log(topic, partition).iter_batch_headers(0))


def _dtp(client, names, limit=2000, cursor=None):
    Cursor = importlib.import_module("kio.schema.describe_topic_partitions.v0.request").Cursor
    return client.call(req("describe_topic_partitions", 0, "DescribeTopicPartitionsRequest",
                           topics=tuple(req("describe_topic_partitions", 0, "TopicRequest", name=n) for n in names),
                           response_partition_limit=limit,
                           cursor=None if cursor is None else Cursor(topic_name=cursor[0], partition_index=cursor[1])))


def test_describe_topic_partitions(live_broker, raw_client) -> None:
    live_broker.call(_create, live_broker, "dtp-a", 3)
    live_broker.call(_create, live_broker, "dtp-b", 2)
    client = raw_client()
    r = _dtp(client, ["dtp-b", "dtp-a", "missing"])
    assert [(t.name, t.error_code) for t in r.topics] == [
        ("dtp-a", ErrorCode.none), ("dtp-b", ErrorCode.none), ("missing", ErrorCode.unknown_topic_or_partition)]
    a = r.topics[0]
    assert a.topic_id == live_broker.broker.metadata.get("dtp-a").topic_id and a.topic_id != uuid.UUID(int=0)
    assert [(p.partition_index, p.leader_id, p.replica_nodes, p.isr_nodes) for p in a.partitions] == \
        [(i, 0, (0,), (0,)) for i in range(3)]
    # empty lists, never null: the Java AdminClient dereferences them
    assert all(p.eligible_leader_replicas == () and p.last_known_elr == () for p in a.partitions)
    assert a.topic_authorized_operations != -(2**31) and r.next_cursor is None
    assert live_broker.broker.metadata.get("missing") is None  # never auto-creates
    # pages of two partitions: a0 a1 | a2 b0 | b1
    pages, cursor = [], None
    while True:
        r = _dtp(client, ["dtp-a", "dtp-b"], limit=2, cursor=cursor)
        pages.append([(t.name, p.partition_index) for t in r.topics for p in t.partitions])
        if r.next_cursor is None:
            break
        cursor = (r.next_cursor.topic_name, r.next_cursor.partition_index)
    assert pages == [[("dtp-a", 0), ("dtp-a", 1)], [("dtp-a", 2), ("dtp-b", 0)], [("dtp-b", 1)]]
    # no topics named: all of them (here with __consumer_offsets possibly among them)
    names = [t.name for t in _dtp(client, []).topics]
    assert {"dtp-a", "dtp-b"} <= set(names) and names == sorted(names)
    r = _dtp(client, ["dtp-a"], cursor=("dtp-b", 0))
    assert [t.error_code for t in r.topics] == [ErrorCode.invalid_request]
