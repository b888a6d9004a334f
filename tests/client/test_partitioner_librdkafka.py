"""Key -> partition equals librdkafka's murmur2_random: confluent-kafka produces keyed messages to
an N-partition topic and reports the partitions it chose; ours must agree for every key."""
from __future__ import annotations

import pytest
import trio

from ringlog.client import NewTopic, open_admin, open_producer
from ringlog.client.partitioner import murmur2_partition

from .helpers import topic_name

N_KEYS = 3000
N_PARTITIONS = 7


def _librdkafka_partitions(bootstrap: str, topic: str, keys: list[bytes]) -> dict[bytes, int]:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                                  "linger.ms": 20, "enable.idempotence": False})
    chosen: dict[bytes, int] = {}

    def report(err, msg):
        assert err is None, err
        chosen[msg.key()] = msg.partition()

    for k in keys:
        p.produce(topic, b"", key=k, on_delivery=report)
        p.poll(0)
    assert p.flush(30) == 0
    return chosen


async def test_key_partitions_match_librdkafka(tansu_bootstrap):
    topic = topic_name("murmur")
    async with open_admin(tansu_bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, N_PARTITIONS, 1)])
    keys = [b"key-%d" % i for i in range(N_KEYS)] + [bytes([i % 256]) * (i % 13) for i in range(1, 200)]
    keys = list(dict.fromkeys(k for k in keys if k))
    theirs = await trio.to_thread.run_sync(_librdkafka_partitions, tansu_bootstrap, topic, keys)
    assert len(theirs) == len(keys)
    assert {k: murmur2_partition(k, N_PARTITIONS) for k in keys} == theirs
    # and the producer uses it: a few keys through our own producer land where librdkafka put them
    async with open_producer(tansu_bootstrap) as producer:
        for k in keys[:50]:
            md = await producer.send_and_wait(topic, b"", key=k)
            assert md.partition == theirs[k]
