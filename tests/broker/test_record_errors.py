"""KIP-467 record errors on Produce: a batch refused for some of its records names them (their
index in the batch, Kafka's message) in `record_errors` (v8+) and `error_message`, and nothing
of it is written. The record checks are Kafka's LogValidator ones: a key on every record of a
compacted topic, timestamps within message.timestamp.before/after.max.ms (CreateTime topics)."""
from __future__ import annotations

import datetime
import time

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.produce.v7.request import PartitionProduceData as PartitionV7
from kio.schema.produce.v7.request import ProduceRequest as ProduceV7
from kio.schema.produce.v7.request import TopicProduceData as TopicV7
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

from ringlog.storage.records import build_batch
from tests.broker.conftest import RawClient


def produce(client: RawClient, topic: str, batch: bytes, version: int = 9):
    if version == 7:
        request = ProduceV7(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10), topic_data=(
            TopicV7(name=topic, partition_data=(PartitionV7(index=0, records=batch),)),))
    else:
        request = ProduceRequest(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10), topic_data=(
            TopicProduceData(name=topic, partition_data=(PartitionProduceData(index=0, records=batch),)),))
    return client.call(request).responses[0].partition_responses[0]


def create(bootstrap: str, topic: str, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(10)


def log_end(broker, topic: str) -> int:
    async def read():
        return broker.broker.partition_log(topic, 0).log_end_offset
    return broker.call(read)


@pytest.fixture
def client(live_broker):
    c = RawClient(live_broker.host, live_broker.port)
    yield c
    c.close()


def test_keyless_records_of_a_compacted_topic_are_named(live_broker, client) -> None:
    create(live_broker.bootstrap, "table", **{"cleanup.policy": "compact"})
    now = int(time.time() * 1000)
    batch = build_batch([(b"k0", b"v", (), now), (None, b"v", (), now), (b"k2", b"v", (), now), (None, None, (), now)])
    p = produce(client, "table", batch)
    assert p.error_code == ErrorCode.invalid_record
    message = "Compacted topic cannot accept message without key in topic partition table-0"
    assert [(int(e.batch_index), e.batch_index_error_message) for e in p.record_errors] == [(1, message), (3, message)]
    assert p.error_message == (
        "One or more records have been rejected due to 2 record errors in total, and only showing the first three "
        f"errors at most: [RecordError(batchIndex=1, message='{message}'), RecordError(batchIndex=3, "
        f"message='{message}')]")
    # Produce v7 has no record_errors: the same refusal, its code alone
    assert produce(client, "table", batch, version=7).error_code == ErrorCode.invalid_record
    assert log_end(live_broker, "table") == 0
    keyed = build_batch([(b"k", b"v", (), now)])
    assert produce(client, "table", keyed).error_code == ErrorCode.none
    assert log_end(live_broker, "table") == 1


def test_timestamps_outside_the_topic_limits_are_refused(live_broker, client) -> None:
    create(live_broker.bootstrap, "recent", **{"message.timestamp.before.max.ms": "60000",
                                               "message.timestamp.after.max.ms": "5000"})
    now = int(time.time() * 1000)
    hour_ago, soon, tomorrow = now - 3_600_000, now + 1000, now + 86_400_000
    p = produce(client, "recent", build_batch([(b"a", b"v", (), now), (b"b", b"v", (), hour_ago),
                                               (b"c", b"v", (), soon), (b"d", b"v", (), tomorrow)]))
    assert p.error_code == ErrorCode.invalid_timestamp
    assert p.error_message == "One or more records have been rejected due to invalid timestamp"
    errors = [(int(e.batch_index), e.batch_index_error_message) for e in p.record_errors]
    assert [i for i, _ in errors] == [1, 3]
    assert errors[0][1].startswith(f"Timestamp {hour_ago} of message with offset 1 is out of range. "
                                   "The timestamp should be within [")
    assert log_end(live_broker, "recent") == 0
    assert produce(client, "recent", build_batch([(b"a", b"v", (), now), (b"c", b"v", (), soon)])).error_code == 0
    assert log_end(live_broker, "recent") == 2

    # the deprecated difference is the limit both ways where before/after are unset
    create(live_broker.bootstrap, "diff", **{"message.timestamp.difference.max.ms": "60000"})
    assert produce(client, "diff", build_batch([(b"a", b"v", (), tomorrow)])).error_code == ErrorCode.invalid_timestamp
    assert produce(client, "diff", build_batch([(b"a", b"v", (), hour_ago)])).error_code == ErrorCode.invalid_timestamp
    assert produce(client, "diff", build_batch([(b"a", b"v", (), now)])).error_code == ErrorCode.none
    # LogAppendTime topics take any timestamp (the broker's clock replaces it)
    create(live_broker.bootstrap, "stamped", **{"message.timestamp.type": "LogAppendTime",
                                                "message.timestamp.before.max.ms": "60000"})
    assert produce(client, "stamped", build_batch([(b"a", b"v", (), hour_ago)])).error_code == ErrorCode.none


def test_librdkafka_sees_invalid_timestamp(live_broker) -> None:
    create(live_broker.bootstrap, "recent-rd", **{"message.timestamp.before.max.ms": "60000"})
    errors = []
    p = Producer({"bootstrap.servers": live_broker.bootstrap, "message.timeout.ms": 10000})
    p.produce("recent-rd", key=b"k", value=b"old", timestamp=int(time.time() * 1000) - 3_600_000,
              on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(20) == 0  # (one batch fails as a whole: the next record goes alone)
    p.produce("recent-rd", key=b"k", value=b"new", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(20) == 0
    assert [e.code() if e is not None else None for e in errors] == [KafkaError.INVALID_TIMESTAMP, None]
