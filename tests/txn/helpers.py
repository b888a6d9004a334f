"""Shared pieces of the transaction tests: topics, and reading them back with each client."""
from __future__ import annotations

import asyncio
import subprocess
import time

from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import require_tool

PARTITIONS = 4


def create_topics(bootstrap: str, names: list[str], partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(10)


def read_confluent(bootstrap: str, topics: list[str], isolation: str, partitions: int = PARTITIONS,
                   timeout: float = 30) -> list[bytes]:
    """Every value of the topics up to their end (the last stable offset for read_committed)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "isolation.level": isolation, "enable.partition.eof": True,
                         "fetch.wait.max.ms": 50})
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)])
    values: list[bytes] = []
    eof: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(eof) < len(topics) * partitions:
            assert time.monotonic() < deadline, f"did not reach the end of {topics} ({len(eof)} partitions did)"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                eof.add((msg.topic(), msg.partition()))
                continue
            eof.discard((msg.topic(), msg.partition()))
            values.append(msg.value())
    finally:
        consumer.close()
    return values


def read_kafka_python(bootstrap: str, topics: list[str], isolation: str, partitions: int = PARTITIONS,
                      timeout: float = 30) -> list[bytes]:
    """Every value up to the end offsets the client itself asks for (ListOffsets with its
    isolation level: the last stable offset under read_committed)."""
    import kafka

    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                                   enable_auto_commit=False, group_id=None)
    tps = [kafka.TopicPartition(t, p) for t in topics for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(tps)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "did not reach the end offsets"
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records]
    finally:
        consumer.close()
    return values


def read_aiokafka(bootstrap: str, topics: list[str], isolation: str, partitions: int = PARTITIONS,
                  timeout: float = 30) -> list[bytes]:
    import aiokafka

    async def main() -> list[bytes]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                                             enable_auto_commit=False)
        await consumer.start()
        tps = [aiokafka.TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(tps)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps)):
                    return values
                assert time.monotonic() < deadline, "did not reach the end offsets"
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    values += [r.value for r in records]
        finally:
            await consumer.stop()

    return asyncio.run(main())


def read_kcat(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    out = subprocess.run([require_tool("kcat"), "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
                          "-q", "-f", "%s\n", "-X", f"isolation.level={isolation}"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.split(b"\n") if line]
