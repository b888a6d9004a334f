"""Group consumption with three members, and cancellation leaving no task behind."""
from __future__ import annotations

import pytest
import trio

from ringlog.client import NewTopic, open_admin, open_consumer, open_producer

from .helpers import all_tasks, topic_name

PARTITIONS = 6
RECORDS = 600


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
async def test_three_members_share_a_topic(bootstrap, strategy):
    topic = topic_name("grp")
    group = topic_name("g")
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    async with open_producer(bootstrap) as producer:
        for i in range(RECORDS):
            await producer.send(topic, b"%d" % i, key=b"k%d" % i)
    seen: dict[int, list] = {0: [], 1: [], 2: []}
    assignments: dict[int, set] = {}
    done = trio.Event()
    ready = [trio.Event() for _ in range(3)]

    def total() -> int:
        return sum(len(v) for v in seen.values())

    async def member(i: int) -> None:
        async with open_consumer(bootstrap, group_id=group, auto_offset_reset="earliest",
                                 partition_assignment_strategy=[strategy], heartbeat_interval_ms=200,
                                 session_timeout_ms=10000, max_poll_interval_ms=10000,
                                 enable_auto_commit=False) as c:
            c.subscribe([topic])
            await c.wait_for_assignment(timeout=20)
            ready[i].set()
            # wait until everybody joined, so the final assignment splits the topic three ways
            for ev in ready:
                await ev.wait()
            with trio.move_on_after(30):
                while not done.is_set():
                    batch = await c.getmany(timeout_ms=100)
                    for recs in batch.values():
                        seen[i].extend((r.partition, r.offset) for r in recs)
                    if total() >= RECORDS:
                        done.set()
                    assignments[i] = c.assignment()
            await c.commit()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(member, i)
    everything = [x for v in seen.values() for x in v]
    assert len(set(everything)) == RECORDS
    # the final assignment is disjoint and covers the topic
    owned = [tp for a in assignments.values() for tp in a]
    assert len(owned) == len(set(owned)) == PARTITIONS
    assert all(len(a) == 2 for a in assignments.values())
    # committed offsets are visible to the admin client
    async with open_admin(bootstrap) as admin:
        committed = await admin.list_group_offsets(group, [(topic, p) for p in range(PARTITIONS)])
    assert sum(committed.values()) == RECORDS


async def test_cancel_in_the_middle_of_send_leaves_no_task(bootstrap):
    topic = topic_name("cancel")
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    before = len(all_tasks())
    with trio.move_on_after(0.5) as scope:
        async with open_producer(bootstrap, buffer_memory=20_000, linger_ms=10_000, batch_size=1 << 20) as p:
            # the buffer fills (linger holds the batch), so send() parks until cancelled
            while True:
                await p.send(topic, b"x" * 1000)
    assert scope.cancelled_caught
    assert len(all_tasks()) == before
    # the cancelled send's data did not corrupt the stream: a new producer works
    async with open_producer(bootstrap) as p:
        assert (await p.send_and_wait(topic, b"after")).offset >= 0
    assert len(all_tasks()) == before


async def test_buffer_memory_is_bounded(bootstrap):
    topic = topic_name("buf")
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    async with open_producer(bootstrap, buffer_memory=50_000, linger_ms=10_000, batch_size=1 << 20) as p:
        from ringlog.client import BufferFull

        await p.partitions_for(topic)  # send_nowait never waits, not even for metadata
        with pytest.raises(BufferFull):
            for _ in range(1000):
                p.send_nowait(topic, b"x" * 1000)
        assert p.buffered_bytes <= 50_000 + 2000
        await p.flush()
        assert p.buffered_bytes == 0


async def test_cancel_in_the_middle_of_iteration_leaves_no_task(bootstrap):
    topic = topic_name("itcancel")
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    async with open_producer(bootstrap) as p:
        for i in range(50):
            await p.send(topic, b"%d" % i)
    before = len(all_tasks())
    got = []
    with trio.move_on_after(2) as scope:
        async with open_consumer(bootstrap, auto_offset_reset="earliest") as c:
            c.assign([(topic, 0), (topic, 1)])
            async for record in c:  # runs dry after 50 records and waits: cancelled there
                got.append(record)
    assert scope.cancelled_caught
    assert len(got) == 50
    assert len(all_tasks()) == before
    # and cancelling while records are still flowing
    with trio.move_on_after(0.05):
        async with open_consumer(bootstrap, auto_offset_reset="earliest") as c:
            c.assign([(topic, 0), (topic, 1)])
            async for record in c:
                await trio.sleep(0.01)
    assert len(all_tasks()) == before
