"""librdkafka (confluent-kafka) with `group.protocol=consumer` (KIP-848) against a live broker:
two members share the partitions, every record is consumed exactly once while one of them leaves,
and a later member resumes at the committed offsets."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ringlog.broker.config import BrokerConfig


@pytest.fixture
def broker_config(tmp_path) -> BrokerConfig:
    # members learn of new assignments at their next heartbeat: 500 ms apart instead of 5 s
    return BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), group_consumer_heartbeat_interval_ms=500)


def _produce(bootstrap: str, topic: str, start: int, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(start, start + n):
        p.produce(topic, key=str(i).encode(), value=b"v%d" % i)
    assert p.flush(30) == 0


def _consumer(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "kip848", "group.protocol": "consumer",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})


def _drain(consumers, got: list, want: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for c in consumers:
            m = c.poll(0.1)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.append((m.partition(), m.offset()))
            c.commit(m, asynchronous=False)


def test_librdkafka_consumer_protocol(live_broker) -> None:
    bootstrap = live_broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic("k848", 4, 1)]).values():
        f.result(30)
    _produce(bootstrap, "k848", 0, 40)
    a, b = _consumer(bootstrap), _consumer(bootstrap)
    got: list = []
    try:
        for c in (a, b):
            c.subscribe(["k848"])
        _drain((a, b), got, 40)
        assert sorted(got) == sorted(set(got)) and len(got) == 40
        # the broker split the partitions between them (uniform: two each)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sorted(len(c.assignment()) for c in (a, b)) != [2, 2]:
            for c in (a, b):
                c.poll(0.1)
        assert sorted(tp.partition for c in (a, b) for tp in c.assignment()) == [0, 1, 2, 3]
        b.close()
        _produce(bootstrap, "k848", 40, 20)
        _drain((a,), got, 60)
        assert len(got) == 60 and len(set(got)) == 60  # nothing lost, nothing twice
        assert sorted(tp.partition for tp in a.assignment()) == [0, 1, 2, 3]
    finally:
        a.close()
    _produce(bootstrap, "k848", 60, 8)
    d = _consumer(bootstrap)
    later: list = []
    try:
        d.subscribe(["k848"])
        _drain((d,), later, 8)
    finally:
        d.close()
    assert len(later) == 8 and not set(later) & set(got)  # resumed at the committed offsets
