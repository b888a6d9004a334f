"""Transactions with real clients: confluent-kafka's, kafka-python's and aiokafka's transactional
producers commit and abort across 3 topics x 4 partitions; read_committed consumers of every
client (and kcat) see exactly the committed records, read_uncommitted ones see everything; a
zombie producer is fenced and its writes never become visible."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from confluent_kafka import KafkaException, Producer

from ringlog.broker.testing import BrokerThread

from .helpers import PARTITIONS, create_topics, read_aiokafka, read_confluent, read_kafka_python, read_kcat

TOPICS = ["txa", "txb", "txc"]
PER_TOPIC = 40  # records per topic and transaction, spread over the 4 partitions


def records(tag: str) -> list[tuple[str, int, bytes]]:
    return [(t, i % PARTITIONS, f"{tag}-{t}-{i}".encode()) for t in TOPICS for i in range(PER_TOPIC)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A broker holding: committed, aborted, committed, and a still-open transaction from
    confluent-kafka; returns (broker, committed values, every value)."""
    with BrokerThread(data_dir=str(tmp_path_factory.mktemp("txn") / "data"), listen_port=0) as b:
        create_topics(b.bootstrap, TOPICS)
        producer = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "ck-1", "linger.ms": 5})
        producer.init_transactions(10)
        everything: list[bytes] = []
        committed: list[bytes] = []
        for tag, commit in (("c1", True), ("a1", False), ("c2", True)):
            producer.begin_transaction()
            for topic, partition, value in records(tag):
                producer.produce(topic, value=value, partition=partition)
            assert producer.flush(10) == 0  # on the broker before the end (abort purges queued ones)
            if commit:
                producer.commit_transaction(10)
                committed += [v for _, _, v in records(tag)]
            else:
                producer.abort_transaction(10)
            everything += [v for _, _, v in records(tag)]
        # an open transaction: after the committed ones, never visible to read_committed
        open_producer = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "ck-open"})
        open_producer.init_transactions(10)
        open_producer.begin_transaction()
        for topic, partition, value in records("open"):
            open_producer.produce(topic, value=value, partition=partition)
        assert open_producer.flush(10) == 0
        everything += [v for _, _, v in records("open")]
        yield b, committed, everything
        open_producer.abort_transaction(10)


def test_confluent_read_committed_sees_exactly_the_committed(written) -> None:
    b, committed, everything = written
    got = read_confluent(b.bootstrap, TOPICS, "read_committed")
    assert Counter(got) == Counter(committed)
    got = read_confluent(b.bootstrap, TOPICS, "read_uncommitted")
    assert Counter(got) == Counter(everything)


def test_kafka_python_and_aiokafka_read_committed(written) -> None:
    b, committed, everything = written
    assert Counter(read_kafka_python(b.bootstrap, TOPICS, "read_committed")) == Counter(committed)
    assert Counter(read_aiokafka(b.bootstrap, TOPICS, "read_committed")) == Counter(committed)
    assert Counter(read_aiokafka(b.bootstrap, TOPICS, "read_uncommitted")) == Counter(everything)


def test_kcat_read_committed(written) -> None:
    b, committed, everything = written
    for topic in TOPICS:
        got = read_kcat(b.bootstrap, topic, "read_committed")
        assert Counter(got) == Counter(v for v in committed if v.split(b"-")[1] == topic.encode())
        got = read_kcat(b.bootstrap, topic, "read_uncommitted")
        assert Counter(got) == Counter(v for v in everything if v.split(b"-")[1] == topic.encode())


def test_list_offsets_read_committed_answers_the_last_stable_offset(written) -> None:
    import kafka

    b, committed, everything = written
    tps = [kafka.TopicPartition(t, p) for t in TOPICS for p in range(PARTITIONS)]
    ends = {}
    for iso in ("read_committed", "read_uncommitted"):
        consumer = kafka.KafkaConsumer(bootstrap_servers=b.bootstrap, isolation_level=iso)
        ends[iso] = consumer.end_offsets(tps)
        consumer.close()
    for tp in tps:
        part = b.broker.partition(tp.topic, tp.partition)
        assert ends["read_uncommitted"][tp] == part.high_watermark
        assert ends["read_committed"][tp] == part.last_stable_offset < part.high_watermark


def _kafka_python_transactions(bootstrap: str) -> list[bytes]:
    import kafka

    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-1")
    producer.init_transactions()
    committed = []
    for tag, commit in (("kc", True), ("ka", False)):
        producer.begin_transaction()
        for topic, partition, value in records(tag):
            producer.send(topic, value=value, partition=partition)
        producer.flush()
        if commit:
            producer.commit_transaction()
            committed += [v for _, _, v in records(tag)]
        else:
            producer.abort_transaction()
    producer.close()
    return committed


def _aiokafka_transactions(bootstrap: str) -> list[bytes]:
    import aiokafka

    async def main() -> list[bytes]:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="ai-1")
        await producer.start()
        committed = []
        try:
            async with producer.transaction():
                for topic, partition, value in records("ic"):
                    await producer.send(topic, value=value, partition=partition)
            committed += [v for _, _, v in records("ic")]
            await producer.begin_transaction()
            futures = [await producer.send(t, value=v, partition=p) for t, p, v in records("ia")]
            await asyncio.gather(*futures)
            await producer.abort_transaction()
        finally:
            await producer.stop()
        return committed

    return asyncio.run(main())


@pytest.mark.parametrize("client", ["kafka-python", "aiokafka"])
def test_python_clients_transactional_producers(tmp_path, client: str) -> None:
    with BrokerThread(data_dir=str(tmp_path / "data"), listen_port=0) as b:
        create_topics(b.bootstrap, TOPICS)
        run = _kafka_python_transactions if client == "kafka-python" else _aiokafka_transactions
        committed = run(b.bootstrap)
        assert Counter(read_confluent(b.bootstrap, TOPICS, "read_committed")) == Counter(committed)
        uncommitted = read_confluent(b.bootstrap, TOPICS, "read_uncommitted")
        assert len(uncommitted) == 2 * len(committed)


def test_zombie_producer_is_fenced_and_never_visible(tmp_path) -> None:
    with BrokerThread(data_dir=str(tmp_path / "data"), listen_port=0) as b:
        create_topics(b.bootstrap, ["zombie"])
        conf = {"bootstrap.servers": b.bootstrap, "transactional.id": "same-id", "linger.ms": 1}
        zombie = Producer(conf)
        zombie.init_transactions(10)
        zombie.begin_transaction()
        for i in range(20):
            zombie.produce("zombie", value=b"zombie-%d" % i, partition=i % PARTITIONS)
        assert zombie.flush(10) == 0
        # the same transactional id starts again elsewhere: the zombie's transaction is aborted
        fresh = Producer(conf)
        fresh.init_transactions(10)
        fresh.begin_transaction()
        for i in range(20):
            fresh.produce("zombie", value=b"fresh-%d" % i, partition=i % PARTITIONS)
        # the zombie goes on writing and tries to commit: fenced
        for i in range(20, 30):
            zombie.produce("zombie", value=b"zombie-%d" % i, partition=i % PARTITIONS)
        with pytest.raises(KafkaException) as err:  # at the flush or at the commit
            zombie.flush(5)
            zombie.commit_transaction(10)
        assert err.value.args[0].fatal() and err.value.args[0].code() == -144  # _FENCED
        fresh.commit_transaction(10)
        got = read_confluent(b.bootstrap, ["zombie"], "read_committed")
        assert sorted(got) == sorted(b"fresh-%d" % i for i in range(20))
