"""confluent-kafka (librdkafka 2.16): produce with every codec, acks=all, keys/values/headers/
timestamps; consume back with assign() byte-exact and in order; offsets_for_times; watermarks."""
from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
FAST = {"socket.timeout.ms": 5000, "message.timeout.ms": 10000}


def produce_all(bootstrap: str, topic: str, records, **conf) -> list:
    reports = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **FAST, **conf})

    def on_delivery(err, msg) -> None:
        reports.append((err, msg.partition(), msg.offset()))

    for key, value, headers, ts in records:
        p.produce(topic, value=value, key=key, headers=headers, timestamp=ts or 0, partition=0,
                  on_delivery=on_delivery)
    assert p.flush(20) == 0
    return reports


def consume_exactly(bootstrap: str, topic: str, n: int, partition: int = 0, offset: int = 0) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100, **{k: v for k, v in FAST.items() if k == "socket.timeout.ms"}})
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        got = []
        for _ in range(200):
            if len(got) >= n:
                break
            for msg in c.consume(num_messages=n - len(got), timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                got.append(msg)
        return got
    finally:
        c.close()


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip_each_codec(live_broker, codec: str) -> None:
    topic = f"ck-{codec}"
    records = [
        (f"k{i}".encode() if i % 5 else None,
         (bytes([i % 256]) * (i * 7 % 300)) if i % 11 else None,
         [("h1", f"v{i}".encode()), ("empty", b""), ("none", None)] if i % 3 == 0 else None,
         1_700_000_000_000 + i * 10)
        for i in range(300)
    ]
    reports = produce_all(live_broker.bootstrap, topic, records, **{"compression.type": codec})
    assert all(err is None for err, _, _ in reports), reports[:3]
    assert sorted(off for _, _, off in reports) == list(range(300))
    msgs = consume_exactly(live_broker.bootstrap, topic, 300)
    assert [m.offset() for m in msgs] == list(range(300))
    for msg, (key, value, headers, ts) in zip(msgs, records):
        assert msg.key() == key
        assert msg.value() == value
        assert msg.timestamp()[1] == ts
        want = [(k, v) for k, v in headers] if headers else None
        assert (msg.headers() or None) == want


def test_offsets_for_times_and_watermarks(live_broker) -> None:
    topic = "ck-times"
    records = [(None, f"v{i}".encode(), None, 1_000_000 + i * 1000) for i in range(20)]
    produce_all(live_broker.bootstrap, topic, records, **{"batch.num.messages": 4})
    c = Consumer({"bootstrap.servers": live_broker.bootstrap, "group.id": "unused"})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 20)
        found = c.offsets_for_times([TopicPartition(topic, 0, 1_000_000 + 7500)], timeout=10)
        assert found[0].offset == 8
        exact = c.offsets_for_times([TopicPartition(topic, 0, 1_000_000 + 3000)], timeout=10)
        assert exact[0].offset == 3
        after = c.offsets_for_times([TopicPartition(topic, 0, 9_999_999_999)], timeout=10)
        assert after[0].offset in (-1, 20)  # librdkafka reports "end" for no such record
    finally:
        c.close()


def test_consume_from_middle_and_tail(live_broker) -> None:
    topic = "ck-tail"
    produce_all(live_broker.bootstrap, topic, [(None, b"x%d" % i, None, None) for i in range(10)])
    msgs = consume_exactly(live_broker.bootstrap, topic, 4, offset=6)
    assert [m.value() for m in msgs] == [b"x6", b"x7", b"x8", b"x9"]
