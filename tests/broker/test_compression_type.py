"""The topic config compression.type (Kafka's): `producer` stores batches as sent; a codec
recompresses every batch in another one on produce, keeping its records, timestamps, headers,
producer id, epoch and sequence (so idempotent retries are still recognised)."""
from __future__ import annotations

import datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

from ringlog.storage.batch import CODEC_GZIP, CODEC_LZ4, CODEC_NONE, CODEC_ZSTD
from ringlog.storage.records import build_batch
from tests.broker.conftest import RawClient
from tests.compat.harness import stored_batches, stored_records


def create(bootstrap: str, topic: str, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # referenced until the result is in
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(10)


def raw_produce(client: RawClient, topic: str, batch: bytes):
    request = ProduceRequest(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10), topic_data=(
        TopicProduceData(name=topic, partition_data=(PartitionProduceData(index=0, records=batch),)),))
    return client.call(request).responses[0].partition_responses[0]


@pytest.mark.parametrize("codec", ["none", "lz4", "gzip"])
def test_a_zstd_topic_stores_zstd_whatever_the_producer_sent(live_broker, codec) -> None:
    topic = f"zstd-from-{codec}"
    create(live_broker.bootstrap, topic, **{"compression.type": "zstd"})
    p = Producer({"bootstrap.servers": live_broker.bootstrap, "compression.type": codec, "linger.ms": 20,
                  "enable.idempotence": True})
    sent = [(b"k%d" % i, b"value %d " % i * 20, [("h", b"%d" % i)], 1_700_000_000_000 + i) for i in range(300)]
    for key, value, headers, ts in sent:
        p.produce(topic, key=key, value=value, headers=headers, timestamp=ts, partition=0)
    assert p.flush(20) == 0
    batches = stored_batches(live_broker, topic, 0)
    assert {h.compression for h in batches} == {CODEC_ZSTD}
    assert len({h.producer_id for h in batches}) == 1 and batches[0].producer_id >= 0
    # sequences run on without gaps: each batch kept its own
    assert [h.base_sequence for h in batches] == [sum(b.records_count for b in batches[:i]) for i in range(len(batches))]
    stored = stored_records(live_broker, topic, 0)
    assert [(r.key, r.value, [(k, v) for k, v in r.headers], r.timestamp) for r in stored] == \
        [(k, v, h, ts) for k, v, h, ts in sent]
    c = Consumer({"bootstrap.servers": live_broker.bootstrap, "group.id": "g", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        while len(got) < len(sent):
            for m in c.consume(num_messages=len(sent) - len(got), timeout=5):
                assert m.error() is None, m.error()
                got.append((m.key(), m.value()))
        assert got == [(k, v) for k, v, _, _ in sent]
    finally:
        c.close()


def test_uncompressed_topic_and_idempotent_retries(live_broker) -> None:
    create(live_broker.bootstrap, "plain", **{"compression.type": "uncompressed"})
    c = RawClient(live_broker.host, live_broker.port)
    try:
        from kio.schema.init_producer_id.v4.request import InitProducerIdRequest

        init = c.call(InitProducerIdRequest(transactional_id=None, transaction_timeout=datetime.timedelta(seconds=60),
                                            producer_id=-1, producer_epoch=-1))
        pid, epoch = int(init.producer_id), int(init.producer_epoch)
        batch = build_batch([(b"k", b"v" * 1000, (), 1_700_000_000_000)] * 3, compression=CODEC_GZIP,
                            producer_id=pid, producer_epoch=epoch, base_sequence=0)
        first = raw_produce(c, "plain", batch)
        assert (first.error_code, first.base_offset) == (ErrorCode.none, 0)
        # the same batch again (a retry): recognised by its sequence, not written twice
        again = raw_produce(c, "plain", batch)
        assert (again.error_code, again.base_offset) == (ErrorCode.none, 0)
        [header] = stored_batches(live_broker, "plain", 0)
        assert (header.compression, header.producer_id, header.producer_epoch, header.base_sequence,
                header.records_count) == (CODEC_NONE, pid, epoch, 0, 3)
    finally:
        c.close()


def test_recompressed_past_the_limit_is_too_large(live_broker) -> None:
    # 50 KB of zeros is a few hundred bytes in lz4, and 50 KB again once uncompressed
    create(live_broker.bootstrap, "small", **{"compression.type": "uncompressed", "max.message.bytes": "10000"})
    c = RawClient(live_broker.host, live_broker.port)
    try:
        p = raw_produce(c, "small", build_batch([(b"k", bytes(50_000), (), 1_700_000_000_000)], compression=CODEC_LZ4))
        assert p.error_code == ErrorCode.message_too_large
        assert stored_batches(live_broker, "small", 0) == []
    finally:
        c.close()
