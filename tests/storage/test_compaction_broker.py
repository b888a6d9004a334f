"""Compaction in a live broker with confluent-kafka (librdkafka): a cleanup.policy=compact topic
keeps the latest value per key for consumers, keyless records are refused with INVALID_RECORD,
and `__consumer_offsets` shrinks under many commits and still gives the latest committed offsets
after a restart."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.storage.compaction import read_cleaner_checkpoint
from tests.conftest import wait_for as shared_wait_for

FAST = {"socket.timeout.ms": 5000, "message.timeout.ms": 10000}


def broker_config(tmp_path, **topic_defaults) -> BrokerConfig:
    # the cleaner runs on every retention check: make it frequent
    return BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), retention_check_interval_ms=100,
                        topic_defaults=topic_defaults,
                        offsets_topic_segment_bytes=int(topic_defaults.get("segment.bytes", 100 * 1024 * 1024)))


def log_state(b: BrokerThread, topic: str, partition: int = 0) -> dict:
    async def read():
        plog = b.broker.partition_log(topic, partition)
        ckpt = read_cleaner_checkpoint(plog.directory)
        return {"size": plog.size_bytes, "leo": plog.log_end_offset, "segments": plog.segment_count(),
                "active_base": plog.active_segment.base_offset,
                "first_dirty": ckpt.first_dirty_offset if ckpt else 0}
    return b.call(read)


def wait_for(predicate, timeout: float = 20.0):
    return shared_wait_for(predicate, "the condition", timeout, 0.1)


def consume_all(bootstrap: str, topic: str, end: int) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 50, "socket.timeout.ms": 5000})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not got or got[-1].offset() < end - 1):
            for msg in c.consume(num_messages=1000, timeout=0.2):
                if msg.error():
                    raise KafkaException(msg.error())
                got.append(msg)
        return got
    finally:
        c.close()


def test_compacted_topic_keeps_latest_per_key(tmp_path) -> None:
    with BrokerThread(broker_config(tmp_path)) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        fut = admin.create_topics([NewTopic("table", 1, 1, config={
            "cleanup.policy": "compact", "segment.bytes": "2048", "min.cleanable.dirty.ratio": "0.1"})])
        fut["table"].result(10)
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 2, "compression.type": "lz4", **FAST})
        latest: dict[bytes, bytes | None] = {}
        for i in range(3000):
            key = b"key-%d" % (i % 12)
            value = None if i % 97 == 0 else b"value-%d" % i
            latest[key] = value
            p.produce("table", key=key, value=value, partition=0)
            if i % 100 == 99:
                # separate writes, so segments roll at segment.bytes (a roll happens on append)
                assert p.flush(20) == 0
        assert p.flush(20) == 0
        # a record without a key is refused on a compacted topic (Kafka's INVALID_RECORD)
        errors = []
        p.produce("table", value=b"no key", partition=0, on_delivery=lambda err, msg: errors.append(err))
        assert p.flush(20) == 0
        assert errors and errors[0] is not None and errors[0].code() == KafkaError.INVALID_RECORD

        state = wait_for(lambda: (s := log_state(b, "table"))["first_dirty"] >= s["active_base"] - 1 and
                         s["first_dirty"] > 2000 and s)
        msgs = consume_all(b.bootstrap, "table", state["leo"])
        offsets = [m.offset() for m in msgs]
        assert offsets == sorted(set(offsets)) and offsets[-1] == 2999
        assert len(msgs) < 3000 // 3, len(msgs)
        # below the cleaned end: one record per key (the latest among them), original offsets
        cleaned = [m for m in msgs if m.offset() < state["first_dirty"]]
        assert len({m.key() for m in cleaned}) == len(cleaned)
        for m in msgs:
            assert m.value() is None or m.value() == b"value-%d" % m.offset()
        table: dict[bytes, bytes | None] = {}
        for m in msgs:
            table[m.key()] = m.value()
        assert table == latest


def test_consumer_offsets_shrinks_and_survives_restart(tmp_path) -> None:
    config = broker_config(tmp_path, **{"segment.bytes": "4096"})
    commits = 600
    with BrokerThread(config) as b:
        p = Producer({"bootstrap.servers": b.bootstrap, **FAST})
        p.produce("src", key=b"k", value=b"v", partition=0)
        assert p.flush(20) == 0
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "committer", "enable.auto.commit": False,
                      "socket.timeout.ms": 5000})
        try:
            for i in range(1, commits + 1):
                c.commit(offsets=[TopicPartition("src", 0, i)], asynchronous=False)
        finally:
            c.close()
        # every commit is one record batch of well over 60 bytes; once cleaned only the latest
        # offset (plus the active segment's records) is left
        # (4096-byte segments: about 20 rolls; cleaned ones merge into one)
        state = wait_for(lambda: (s := log_state(b, "__consumer_offsets"))["first_dirty"] > commits // 2
                         and s["size"] < s["leo"] * 60 // 3 and s["segments"] <= 4 and s)
        assert state["leo"] >= commits
    with BrokerThread(config) as b:
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "committer", "enable.auto.commit": False,
                      "socket.timeout.ms": 5000})
        try:
            [tp] = c.committed([TopicPartition("src", 0)], timeout=10)
            assert tp.offset == commits
        finally:
            c.close()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
