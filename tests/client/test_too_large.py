"""Batches the broker refuses as too large (MESSAGE_TOO_LARGE): the producer splits them, cuts
later batches to the topic's max.message.bytes, and fails only a record that is too large alone.
Against ringlog, which takes topic configs at creation."""
from __future__ import annotations

import random

import pytest
import trio

from ringlog.client import NewTopic, open_admin, open_consumer, open_producer
from ringlog.client.errors import MessageTooLargeError

from .helpers import topic_name, wait_until

LIMIT = 2048


async def _topic(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    topic = topic_name(prefix)
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, partitions, 1, configs={"max.message.bytes": str(LIMIT)})])
    return topic


async def _read(bootstrap: str, topic: str, count: int, partitions: int = 1) -> list:
    got = []
    async with open_consumer(bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in range(partitions)])
        with trio.fail_after(20):
            while len(got) < count:
                got.append(await c.getone())
        # and nothing else arrives
        assert await c.getmany(timeout_ms=200) == {}
    return got


@pytest.mark.parametrize(("acks", "codec"), [("all", "none"), (1, "none"), ("all", "zstd")])
async def test_a_refused_batch_is_split_and_delivered_in_order(ringlog_bootstrap, acks, codec):
    topic = await _topic(ringlog_bootstrap, "split")
    n = 300
    rnd = random.Random(7)  # values that do not compress: zstd must not get them under the limit
    # one linger window: the first batch holds all records, about 16 times the topic's limit
    async with open_producer(ringlog_bootstrap, acks=acks, compression_type=codec, linger_ms=50) as p:
        handles = [await p.send(topic, b"%04d" % i + rnd.randbytes(96), headers=[("i", b"%d" % i)])
                   for i in range(n)]
        await p.flush()
        offsets = [h.result().offset for h in handles]
    assert offsets == list(range(n))
    got = await _read(ringlog_bootstrap, topic, n)
    assert [r.offset for r in got] == list(range(n))
    assert [r.value[:4] for r in got] == [b"%04d" % i for i in range(n)]
    assert [r.headers for r in got] == [(("i", b"%d" % i),) for i in range(n)]


async def test_later_batches_are_cut_to_max_message_bytes(ringlog_bootstrap):
    topic = await _topic(ringlog_bootstrap, "learn")
    async with open_producer(ringlog_bootstrap, linger_ms=50) as p:
        assert p.batch_size > LIMIT  # the default would be refused
        first = [await p.send(topic, bytes(100)) for _ in range(40)]  # one batch, refused, split
        await p.flush()
        assert first[0]._batch.pieces is not None
        assert [h.result().offset for h in first] == list(range(40))
        # DescribeConfigs for the topic answered: its batches are now cut to the limit
        await wait_until(lambda: p._topic_limits.get(topic) == LIMIT, 5, "learning max.message.bytes")
        handles = [await p.send(topic, bytes(100)) for _ in range(200)]
        open_batches = {id(h._batch): h._batch for h in handles}
        await p.flush()
        assert all(b.pieces is None for b in open_batches.values()), "a batch was refused after learning"
        assert all(len(b.raw) <= LIMIT for b in open_batches.values())
        assert all(h.result().offset >= 0 for h in handles)


@pytest.mark.parametrize("acks", ["all", 1])
async def test_a_record_too_large_alone_fails_only_itself(ringlog_bootstrap, acks):
    topic = await _topic(ringlog_bootstrap, "alone")
    async with open_producer(ringlog_bootstrap, acks=acks, linger_ms=50) as p:
        before = [await p.send(topic, b"before-%d" % i) for i in range(30)]
        big = await p.send(topic, bytes(LIMIT * 2))
        after = [await p.send(topic, b"after-%d" % i) for i in range(30)]
        with pytest.raises(MessageTooLargeError):
            await big
        for h in before + after:
            await h
    # the records around it are delivered, in order, with no gap in the offsets
    got = await _read(ringlog_bootstrap, topic, 60)
    assert [r.value for r in got] == [b"before-%d" % i for i in range(30)] + [b"after-%d" % i for i in range(30)]
    assert [r.offset for r in got] == list(range(60))
    assert [h.result().offset for h in before + after] == list(range(60))


async def test_too_large_records_on_many_partitions_keep_the_rest_flowing(ringlog_bootstrap):
    # Several refusals (split and single-record) in one request and on every partition: the
    # sequence numbers of each partition stay usable for what follows.
    topic = await _topic(ringlog_bootstrap, "many", partitions=3)
    expected: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    async with open_producer(ringlog_bootstrap, linger_ms=20) as p:
        handles = []
        for i in range(600):
            part = i % 3
            if i % 97 == 5:
                handles.append((None, await p.send(topic, bytes(LIMIT * 3), partition=part)))
            else:
                value = b"%d" % i + bytes(150)
                expected[part].append(value)
                handles.append((value, await p.send(topic, value, partition=part)))
        await p.flush()
        for value, h in handles:
            if value is None:
                with pytest.raises(MessageTooLargeError):
                    h.result()
            else:
                assert h.result().offset >= 0
    got = await _read(ringlog_bootstrap, topic, sum(map(len, expected.values())), partitions=3)
    for part in range(3):
        assert [r.value for r in got if r.partition == part] == expected[part]
