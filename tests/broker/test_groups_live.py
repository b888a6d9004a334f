"""Consumer groups with real clients against a live ringlog broker.

Short timeouts keep the suite quick: session.timeout.ms 6000 (the broker's minimum) and
group.initial.rebalance.delay.ms 0.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerProcess, BrokerThread
from tests.conftest import require_tool

TOPIC = "groups6"
N = 120


def _config(tmp_path, **kw) -> BrokerConfig:
    return BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), group_initial_rebalance_delay_ms=0, **kw)


def _create_and_fill(bootstrap: str, topic: str = TOPIC, partitions: int = 6, n: int = N, start: int = 0) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(start, start + n):
        p.produce(topic, value=str(i).encode(), partition=i % partitions)
    assert p.flush(10) == 0


def _consumer(bootstrap: str, group: str, **extra):
    from confluent_kafka import Consumer

    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "enable.auto.commit": False,
    }
    conf.update(extra)
    return Consumer(conf)


@pytest.fixture
def broker(tmp_path):
    with BrokerThread(_config(tmp_path)) as b:
        yield b


def test_three_confluent_consumers_share_six_partitions(broker) -> None:
    _create_and_fill(broker.bootstrap)
    assignments: dict[int, list] = {}
    consumers = []
    for i in range(3):
        c = _consumer(broker.bootstrap, "three")

        def on_assign(consumer, parts, i=i):
            assignments[i] = [p.partition for p in parts]

        def on_revoke(consumer, parts, i=i):
            assignments[i] = []

        c.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke)
        consumers.append(c)
    seen: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    deadline = time.time() + 30
    while time.time() < deadline:
        for i, c in enumerate(consumers):
            m = c.poll(0.05)
            if m is not None and not m.error():
                seen[i].add(int(m.value()))
                c.commit(m, asynchronous=False)
        owned = [p for parts in assignments.values() for p in parts]
        if len(assignments) == 3 and sorted(owned) == list(range(6)) and all(assignments.values()) \
                and sum(len(s) for s in seen.values()) >= N and len(set().union(*seen.values())) == N:
            break
    owned = [p for parts in assignments.values() for p in parts]
    assert sorted(owned) == list(range(6)), assignments  # every partition, each to exactly one member
    assert all(len(parts) == 2 for parts in assignments.values()), assignments
    assert set().union(*seen.values()) == set(range(N))
    # the group is described as Stable with three members; lag is zero after the commits
    state = broker.broker.coordinator.state.describe("three")
    assert state.state == "Stable" and len(state.members) == 3
    for c in consumers:
        c.close()
    lag = broker.broker.coordinator.lag("three")
    assert [row[4] for row in lag] == [0] * 6


def test_member_leaving_or_dying_triggers_rebalance(broker) -> None:
    _create_and_fill(broker.bootstrap, n=12)
    # a consumer in another process that we can kill
    script = textwrap.dedent(f"""
        import sys, time
        from confluent_kafka import Consumer
        c = Consumer({{"bootstrap.servers": "{broker.bootstrap}", "group.id": "dying",
                      "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                      "auto.offset.reset": "earliest"}})
        c.subscribe(["{TOPIC}"], on_assign=lambda c, ps: print("ASSIGNED", len(ps), flush=True))
        while True:
            c.poll(0.2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert "ASSIGNED" in proc.stdout.readline()
        mine: list[int] = []
        c = _consumer(broker.bootstrap, "dying")
        c.subscribe([TOPIC], on_assign=lambda _c, ps: mine.__setitem__(slice(None), [p.partition for p in ps]))
        deadline = time.time() + 20
        while time.time() < deadline and len(mine) != 3:
            c.poll(0.1)
        assert len(mine) == 3  # shared with the other process
        proc.kill()
        proc.wait()
        killed = time.time()
        while time.time() - killed < 15 and len(mine) != 6:
            c.poll(0.1)
        took = time.time() - killed
        assert len(mine) == 6, "the dead member's partitions were never reassigned"
        # session timeout 6 s, plus the rebalance itself
        assert took < 6 + 4, took
        # a second consumer joins, then leaves cleanly: the rebalance is immediate (LeaveGroup)
        other = _consumer(broker.bootstrap, "dying")
        other.subscribe([TOPIC])
        deadline = time.time() + 20
        while time.time() < deadline and len(mine) != 3:
            c.poll(0.05)
            other.poll(0.05)
        assert len(mine) == 3
        other.close()
        left = time.time()
        while time.time() - left < 10 and len(mine) != 6:
            c.poll(0.05)
        assert len(mine) == 6 and time.time() - left < 3
        c.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_static_member_restarts_without_rebalance(broker) -> None:
    _create_and_fill(broker.bootstrap, n=12)
    a = _consumer(broker.bootstrap, "static", **{"group.instance.id": "a"})
    b = _consumer(broker.bootstrap, "static", **{"group.instance.id": "b"})
    a.subscribe([TOPIC])
    b.subscribe([TOPIC])
    state = broker.broker.coordinator.state
    deadline = time.time() + 20
    while time.time() < deadline:
        a.poll(0.05)
        b.poll(0.05)
        g = state.group("static")
        if g is not None and g.state == "Stable" and len(g.members) == 2 and len(a.assignment()) == 3 \
                and len(b.assignment()) == 3:
            break
    g = state.group("static")
    generation = g.generation
    before = sorted(p.partition for p in b.assignment())
    assert len(before) == 3
    b.close()  # a static member does not leave the group on close
    b2 = _consumer(broker.bootstrap, "static", **{"group.instance.id": "b"})
    b2.subscribe([TOPIC])
    deadline = time.time() + 15
    while time.time() < deadline and len(b2.assignment()) != 3:
        b2.poll(0.05)
        a.poll(0.05)
    assert sorted(p.partition for p in b2.assignment()) == before
    g = state.group("static")
    assert g.generation == generation and g.state == "Stable"  # no rebalance happened
    a.close()
    b2.close()


def test_kill9_broker_resumes_from_committed_offsets(tmp_path) -> None:
    data = str(tmp_path / "data")
    args = ["--set", "group.initial.rebalance.delay.ms=0"]
    bp = BrokerProcess(data, *args).start()
    try:
        _create_and_fill(bp.bootstrap, n=60)
        c = _consumer(bp.bootstrap, "crash")
        c.subscribe([TOPIC])
        first: list[int] = []
        deadline = time.time() + 20
        while time.time() < deadline and len(first) < 40:
            m = c.poll(0.1)
            if m is not None and not m.error():
                first.append(int(m.value()))
                if len(first) <= 30:
                    c.commit(m, asynchronous=False)  # synchronous: acknowledged = committed
        committed = {p.partition: p.offset for p in c.committed(c.assignment(), timeout=5)}
        bp.kill()  # SIGKILL while the consumer still has uncommitted records
        c.close()
        bp = BrokerProcess(data, *args).start()
        _create_and_fill(bp.bootstrap, n=60, start=60)
        c = _consumer(bp.bootstrap, "crash")
        c.subscribe([TOPIC])
        second: list[int] = []
        deadline = time.time() + 30
        while time.time() < deadline and len(set(first) | set(second)) < 120:
            m = c.poll(0.1)
            if m is not None and not m.error():
                second.append(int(m.value()))
        c2 = c.committed([__import__("confluent_kafka").TopicPartition(TOPIC, p) for p in range(6)], timeout=5)
        c.close()
        assert set(first) | set(second) == set(range(120)), "a record was skipped"
        # nothing below a committed offset comes again: duplicates only from the uncommitted tail
        for v in second:
            p, pos = v % 6, v // 6
            assert pos >= committed.get(p, 0), (v, committed)
        assert len(second) == len(set(second))
        assert c2 is not None
    finally:
        bp.kill()


def test_kcat_balanced_consumer(broker, tmp_path) -> None:
    kcat = require_tool("kcat")
    _create_and_fill(broker.bootstrap, n=30)
    proc = subprocess.run(
        [kcat, "-b", broker.bootstrap, "-G", "kcatgroup", TOPIC, "-o", "beginning", "-e", "-q",
         "-X", "session.timeout.ms=6000", "-f", "%s\n"],
        capture_output=True, text=True, timeout=60,
    )
    values = sorted(int(x) for x in proc.stdout.split())
    assert values == list(range(30)), proc.stderr[-2000:]
    state = broker.broker.coordinator.state
    assert state.group("kcatgroup") is not None


def test_kafka_python_group_consumer(broker) -> None:
    from kafka import KafkaConsumer

    _create_and_fill(broker.bootstrap, n=30)
    c = KafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, group_id="kp", auto_offset_reset="earliest",
                      session_timeout_ms=6000, heartbeat_interval_ms=500, enable_auto_commit=False,
                      consumer_timeout_ms=10000)
    values = []
    for m in c:
        values.append(int(m.value))
        if len(values) == 30:
            break
    c.commit()
    assert sorted(values) == list(range(30))
    _, committed = broker.broker.coordinator.state.fetch_offsets("kp")
    assert sum(o.offset for o in committed.values()) == 30
    c.close()


async def test_aiokafka_group_consumer(tmp_path) -> None:
    import trio

    # aiokafka runs on asyncio: drive it in a thread against a broker in another thread
    with BrokerThread(_config(tmp_path)) as b:
        _create_and_fill(b.bootstrap, n=30)

        def run() -> list[int]:
            import asyncio

            from aiokafka import AIOKafkaConsumer

            async def main() -> list[int]:
                c = AIOKafkaConsumer(TOPIC, bootstrap_servers=b.bootstrap, group_id="aio",
                                     auto_offset_reset="earliest", session_timeout_ms=6000,
                                     heartbeat_interval_ms=500, enable_auto_commit=False)
                await c.start()
                values: list[int] = []
                try:
                    while len(values) < 30:
                        batch = await asyncio.wait_for(c.getmany(timeout_ms=500), 20)
                        for msgs in batch.values():
                            values.extend(int(m.value) for m in msgs)
                    await c.commit()
                finally:
                    await c.stop()
                return values

            return asyncio.run(main())

        values = await trio.to_thread.run_sync(run)
        assert sorted(values) == list(range(30))
        _, committed = b.broker.coordinator.state.fetch_offsets("aio")
        assert sum(o.offset for o in committed.values()) == 30
