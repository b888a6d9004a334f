"""The Trio client's transactional producer: begin/commit/abort, `async with transaction()`
(abort on exception), send_offsets; checked with confluent-kafka's read_committed consumer."""
from __future__ import annotations

from collections import Counter

import pytest
import trio
from confluent_kafka import Consumer, TopicPartition

from ringlog.broker.testing import BrokerThread
from ringlog.client.producer import Producer

from .helpers import PARTITIONS, create_topics, read_confluent


def test_trio_producer_transactions(tmp_path) -> None:
    with BrokerThread(data_dir=str(tmp_path / "data"), listen_port=0) as b:
        create_topics(b.bootstrap, ["ta", "tb"])

        async def main() -> None:
            async with Producer(b.bootstrap, transactional_id="trio-1") as producer:
                async with producer.transaction():
                    for i in range(40):
                        await producer.send("ta" if i % 2 else "tb", b"commit-%d" % i, partition=i % PARTITIONS)
                    await producer.send_offsets({("ta", 0): 17}, "trio-group")
                with pytest.raises(RuntimeError):
                    async with producer.transaction():
                        for i in range(40):
                            await producer.send("ta", b"abort-%d" % i, partition=i % PARTITIONS)
                        await producer.flush()
                        raise RuntimeError("the application failed")
                producer.begin()
                await producer.send("tb", b"explicit", partition=0)
                await producer.commit()

        trio.run(main)
        got = read_confluent(b.bootstrap, ["ta", "tb"], "read_committed")
        assert Counter(got) == Counter([b"commit-%d" % i for i in range(40)] + [b"explicit"])
        assert len(read_confluent(b.bootstrap, ["ta", "tb"], "read_uncommitted")) == 81
        consumer = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "trio-group"})
        [committed] = consumer.committed([TopicPartition("ta", 0)], timeout=10)
        consumer.close()
        assert committed.offset == 17
