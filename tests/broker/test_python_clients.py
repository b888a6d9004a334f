"""kafka-python and aiokafka against a live broker (manual assignment, no groups)."""
from __future__ import annotations

import asyncio

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ringlog.broker.handlers import HANDLERS

N = 200


def _records():
    return [(f"k{i}".encode(), b"v" * (i % 50) + str(i).encode(), [("h", str(i).encode())]) for i in range(N)]


def _kafka_python_roundtrip(bootstrap: str, topic: str, **producer_conf) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10000, linger_ms=5, **producer_conf)
    futures = [producer.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h in _records()]
    producer.flush(20)
    offsets = [f.get(timeout=10).offset for f in futures]
    producer.close(5)
    assert offsets == list(range(N))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=5000, fetch_max_wait_ms=100, request_timeout_ms=10000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        got = []
        for msg in consumer:
            got.append(msg)
            if len(got) == N:
                break
    finally:
        consumer.close()
    assert [(m.offset, m.key, m.value, list(m.headers)) for m in got] == [
        (i, k, v, h) for i, (k, v, h) in enumerate(_records())
    ]


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_acks_all(live_broker, codec) -> None:
    import kafka.codec

    if codec and not getattr(kafka.codec, f"has_{codec}")():
        pytest.skip(f"kafka-python has no {codec} library here")
    _kafka_python_roundtrip(live_broker.bootstrap, f"kp-{codec}", acks="all", enable_idempotence=False,
                            compression_type=codec)


def test_kafka_python_defaults_idempotent(live_broker) -> None:
    if 22 not in HANDLERS:
        pytest.skip("InitProducerId (22) is not implemented in this build")
    _kafka_python_roundtrip(live_broker.bootstrap, "kp-defaults")


def test_aiokafka_roundtrip(live_broker) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as ATP

    async def main() -> list:
        producer = AIOKafkaProducer(bootstrap_servers=live_broker.bootstrap, acks="all",
                                    request_timeout_ms=10000, linger_ms=5)
        await producer.start()
        try:
            futs = [await producer.send("aio", key=k, value=v, headers=h, partition=0) for k, v, h in _records()]
            metas = [await f for f in futs]
        finally:
            await producer.stop()
        assert [m.offset for m in metas] == list(range(N))
        consumer = AIOKafkaConsumer(bootstrap_servers=live_broker.bootstrap, enable_auto_commit=False,
                                    group_id=None, fetch_max_wait_ms=100, request_timeout_ms=10000)
        await consumer.start()
        try:
            tp = ATP("aio", 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got = []
            while len(got) < N:
                batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=500), 10)
                got.extend(batch.get(tp, []))
            return got
        finally:
            await consumer.stop()

    got = asyncio.run(main())
    assert [(m.offset, m.key, m.value, list(m.headers)) for m in got] == [
        (i, k, v, h) for i, (k, v, h) in enumerate(_records())
    ]
