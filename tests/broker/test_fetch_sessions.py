"""Incremental fetch sessions (KIP-227, broker/fetch_sessions.py) on a live broker with raw
requests: a session's answers list only what changed, the session errors, and eviction when the
cache (max.incremental.fetch.session.cache.slots) is full. Their answers are compared with Apache
Kafka's in tests/compat/test_differential.py (fetch_sessions)."""
from __future__ import annotations

import time

import pytest
from kio.schema.errors import ErrorCode

from ringlog.broker import fetch_sessions
from ringlog.broker.config import BrokerConfig
from ringlog.broker.fetch_sessions import FetchSessionCache
from ringlog.broker.testing import BrokerThread

from ..compat.diff_requests import batch, fetch, produce
from .conftest import RawClient


@pytest.fixture
def b(tmp_path):
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"),
                                   max_incremental_fetch_session_cache_slots=2)) as bt:
        bt.call(bt.broker.create_topic, "t", 3)
        yield bt


def session_fetch(c: RawClient, parts, session_id: int, epoch: int, forgotten=()):
    return c.call(fetch("t", parts, session={"session_id": session_id, "session_epoch": epoch}, forgotten=forgotten)
                  if parts or forgotten else fetch(None, [], session={"session_id": session_id, "session_epoch": epoch}))


def listed(r) -> list[tuple[int, int]]:
    return [(p.partition_index, len(p.records) > 0) for t in r.responses for p in t.partitions]


def test_incremental_answers_list_what_changed(b) -> None:
    c = RawClient(b.host, b.port)
    c.call(produce("t", 0, batch([b"a"])))
    r = session_fetch(c, [(0, 0), (1, 0), (2, 0)], 0, 0)
    sid = r.session_id
    assert sid != 0 and r.error_code == 0 and [p for p, _ in listed(r)] == [0, 1, 2]
    # p0 moved past its record: nothing changed anywhere -> an empty answer
    r = session_fetch(c, [(0, 1)], sid, 1)
    assert (r.error_code, r.session_id, listed(r)) == (0, sid, [])
    # new records in p2 (cached fetch offset 0): only p2, with its records
    c.call(produce("t", 2, batch([b"b", b"c"])))
    r = session_fetch(c, [], sid, 2)
    assert listed(r) == [(2, True)] and r.responses[0].partitions[0].high_watermark == 2
    # p2 forgotten: a write to it is not answered any more
    r = session_fetch(c, [], sid, 3, forgotten=[("t", [2])])
    c.call(produce("t", 2, batch([b"d"])))
    assert listed(session_fetch(c, [], sid, 4)) == []
    # an unknown partition added to the session is answered (its error) every time
    r = session_fetch(c, [(7, 0)], sid, 5)
    assert [(p.partition_index, p.error_code) for p in r.responses[0].partitions] == [
        (7, ErrorCode.unknown_topic_or_partition)]
    assert [p.partition_index for p in session_fetch(c, [], sid, 6).responses[0].partitions] == [7]
    c.close()


def test_session_errors_and_close(b) -> None:
    c = RawClient(b.host, b.port)
    sid = session_fetch(c, [(0, 0)], 0, 0).session_id
    assert session_fetch(c, [], sid, 2).error_code == ErrorCode.invalid_fetch_session_epoch
    assert session_fetch(c, [], sid + 1, 1).error_code == ErrorCode.fetch_session_id_not_found
    assert session_fetch(c, [], 0, 1).error_code == ErrorCode.fetch_session_id_not_found
    # the right epoch still works after the errors, also over another connection
    other = RawClient(b.host, b.port)
    assert session_fetch(other, [], sid, 1).error_code == 0
    # epoch -1 closes it: a full answer without a session, then the id is unknown
    r = session_fetch(c, [(0, 0)], sid, -1)
    assert (r.error_code, r.session_id, [p for p, _ in listed(r)]) == (0, 0, [0])
    assert session_fetch(c, [], sid, 2).error_code == ErrorCode.fetch_session_id_not_found
    # a fetch with no partitions opens no session
    assert session_fetch(c, [], 0, 0).session_id == 0
    c.close()
    other.close()


def test_full_cache_evicts_the_smaller_session_or_declines(b) -> None:
    c = RawClient(b.host, b.port)
    one = session_fetch(c, [(0, 0)], 0, 0).session_id
    two = session_fetch(c, [(0, 0), (1, 0)], 0, 0).session_id
    assert 0 not in (one, two) and one != two
    # cache full (2 slots), neither session idle: a one-partition session is declined...
    assert session_fetch(c, [(2, 0)], 0, 0).session_id == 0
    # ...a three-partition one takes the place of the smallest (one)
    three = session_fetch(c, [(0, 0), (1, 0), (2, 0)], 0, 0).session_id
    assert three != 0
    assert session_fetch(c, [], one, 1).error_code == ErrorCode.fetch_session_id_not_found
    assert session_fetch(c, [], two, 1).error_code == 0
    c.close()


def test_idle_session_is_evicted_first() -> None:
    now = [0.0]
    cache = FetchSessionCache(slots=1, eviction_ms=120_000, clock=lambda: now[0])

    class Slice:
        def __init__(self, index: int) -> None:
            self.index, self.error, self.high_watermark, self.log_start_offset, self.size = index, 0, 0, 0, 0

    request = fetch("t", [(0, 0), (1, 0)], session={"session_id": 0, "session_epoch": 0})
    plan = cache.begin(request, 12)
    _, big = cache.finish(plan, [("t", [Slice(0), Slice(1)])])
    small = fetch("t", [(0, 0)], session={"session_id": 0, "session_epoch": 0})
    # the big session is in use: a smaller one gets no session
    assert cache.finish(cache.begin(small, 12), [("t", [Slice(0)])])[1] == 0
    now[0] = 121.0  # idle past the eviction time: the smaller one takes its place
    assert cache.finish(cache.begin(small, 12), [("t", [Slice(0)])])[1] not in (0, big)
    assert big not in cache.sessions


def test_no_slots_declines_every_session(tmp_path) -> None:
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"),
                                   max_incremental_fetch_session_cache_slots=0)) as bt:
        bt.call(bt.broker.create_topic, "t", 1)
        c = RawClient(bt.host, bt.port)
        r = session_fetch(c, [(0, 0)], 0, 0)
        assert (r.error_code, r.session_id) == (0, 0)
        c.close()


def test_kafka_python_consumes_through_an_incremental_session(b) -> None:
    """kafka-python (3.x) opens a fetch session once granted and then fetches incrementally: every
    record still arrives once, in order, including those written while it polls."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=b.bootstrap)
    for i in range(30):
        producer.send("t", key=b"k", value=b"v%d" % i, partition=i % 3)
    producer.flush()
    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                             fetch_max_wait_ms=100)
    parts = [TopicPartition("t", p) for p in range(3)]
    consumer.assign(parts)
    seen: dict[int, list[bytes]] = {0: [], 1: [], 2: []}

    def poll_until(total: int) -> None:
        deadline = time.monotonic() + 20
        while sum(map(len, seen.values())) < total and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                seen[tp.partition] += [r.value for r in records]

    poll_until(30)
    for i in range(30, 45):  # written while the session is open: only the changed partitions come back
        producer.send("t", value=b"v%d" % i, partition=i % 3)
    producer.flush()
    poll_until(45)

    async def epochs() -> list[int]:
        return [s.epoch for s in fetch_sessions.cache_for(b.broker).sessions.values()]

    open_epochs = b.call(epochs)  # before close(), which may end the session
    consumer.close()
    producer.close()
    assert {p: v for p, v in seen.items()} == {p: [b"v%d" % i for i in range(45) if i % 3 == p] for p in range(3)}
    # epoch 2 or more: at least one incremental fetch (epoch 1) was answered in the session
    assert any(epoch >= 2 for epoch in open_epochs), f"kafka-python never fetched incrementally: {open_epochs}"
