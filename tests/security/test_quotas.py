"""Client quotas (broker.quotas): Kafka's precedence of entities and its rate arithmetic, then a
real broker managed with DescribeClientQuotas / AlterClientQuotas, a confluent-kafka producer and
a kafka-python consumer (fetch sessions) held near their byte rates, and quotas kept by a restart."""
from __future__ import annotations

import os
import time

import pytest
import trio

from ringlog.broker.config import BrokerConfig
from ringlog.broker.quotas import (CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE, ClientQuotas,
                                   QuotaError, Rate, TaskTime, UnsupportedEntity, check_value, make_entity)
from ringlog.broker.testing import BrokerThread
from ringlog.client.admin import open_admin
from ringlog.client.errors import KafkaError

LIMIT = 200_000  # bytes/s
SECONDS = 2.5

# --- the pure core ---------------------------------------------------------------------------

# Kafka's order (ClientQuotaManager): the first of these entities that holds a value wins, and
# the bytes go into the bucket that entity covers.
LEVELS = [
    ({"user": "alice", "client-id": "app"}, ("alice", "app")),
    ({"user": "alice", "client-id": None}, ("alice", "app")),
    ({"user": "alice"}, ("alice", "")),
    ({"user": None, "client-id": "app"}, ("alice", "app")),
    ({"user": None, "client-id": None}, ("alice", "app")),
    ({"user": None}, ("alice", "")),
    ({"client-id": "app"}, ("", "app")),
    ({"client-id": None}, ("", "app")),
]


@pytest.mark.parametrize("level", range(len(LEVELS)))
def test_the_most_specific_entity_wins_in_kafkas_order(level):
    quotas = ClientQuotas()
    # every level from this one down holds a quota; each level's value is its position
    for i, (entity, _) in enumerate(LEVELS[level:], start=level):
        quotas.alter(make_entity(entity.items()), {PRODUCER_BYTE_RATE: 1000.0 + i})
    assert quotas.limit(PRODUCER_BYTE_RATE, "User:alice", "app") == 1000.0 + level
    assert quotas._resolve(PRODUCER_BYTE_RATE, "alice", "app")[0] == (PRODUCER_BYTE_RATE, *LEVELS[level][1])
    # the other key is not limited, and the flags say which handlers pay
    assert quotas.limit(CONSUMER_BYTE_RATE, "User:alice", "app") is None
    assert quotas.produce_on and not quotas.fetch_on


def test_entities_that_do_not_match_leave_a_client_unlimited():
    quotas = ClientQuotas()
    quotas.alter(make_entity([("user", "bob")]), {PRODUCER_BYTE_RATE: 10.0})
    quotas.alter(make_entity([("user", "alice"), ("client-id", "other")]), {PRODUCER_BYTE_RATE: 10.0})
    assert quotas.limit(PRODUCER_BYTE_RATE, "User:alice", "app") is None
    assert quotas.record(PRODUCER_BYTE_RATE, "User:alice", "app", 10**9, 0) == 0
    # removing the last value switches the handlers' check off again
    quotas.alter(make_entity([("user", "bob")]), {PRODUCER_BYTE_RATE: None})
    quotas.alter(make_entity([("user", "alice"), ("client-id", "other")]), {PRODUCER_BYTE_RATE: None})
    assert not quotas.produce_on and quotas.entities == {}


def test_throttle_time_brings_the_rate_back_to_the_limit():
    # Kafka's Rate: 11 samples of 1 s count as at least 10 s, so 2 MB at once against 100 KB/s
    # reads 200 KB/s, and (200 - 100) / 100 * 10 s = 10 s of throttle
    quotas = ClientQuotas(samples=11, window_seconds=1)
    quotas.alter(make_entity([("client-id", None)]), {PRODUCER_BYTE_RATE: 100_000.0})
    assert quotas.record(PRODUCER_BYTE_RATE, "User:ANONYMOUS", "c", 1_000_000, 1_000) == 0
    assert quotas.record(PRODUCER_BYTE_RATE, "User:ANONYMOUS", "c", 1_000_000, 1_000) == 10_000
    assert quotas.max_bytes_in_window(PRODUCER_BYTE_RATE, "User:ANONYMOUS", "c") == 1_000_000
    # each client id has its own bucket under a <default> client-id quota
    assert quotas.record(PRODUCER_BYTE_RATE, "User:ANONYMOUS", "d", 1_000_000, 1_000) == 0
    rate = Rate(2, 1000, 0)
    rate.record(500, 0)
    assert rate.measure(0) == 500.0            # at least one window of time
    rate.record(500, 3000)                     # the first sample expired (2 windows old)
    assert rate.measure(3000) == 500.0


def test_kafkas_refusals_of_entities_filters_and_values():
    with pytest.raises(QuotaError, match="Invalid empty client quota entity"):
        make_entity([])
    with pytest.raises(QuotaError, match="duplicate entity entry user"):
        make_entity([("user", "a"), ("user", "b")])
    with pytest.raises(QuotaError, match="Empty client-id not supported"):
        make_entity([("client-id", "")])
    with pytest.raises(QuotaError, match="Unhandled client quota entity type: topic"):
        make_entity([("topic", "t")])
    quotas = ClientQuotas()
    with pytest.raises(UnsupportedEntity):
        quotas.describe([("topic", 0, "t")], False)
    with pytest.raises(QuotaError, match="MATCH_TYPE_EXACT, but set match string to null"):
        quotas.describe([("user", 0, None)], False)
    with pytest.raises(QuotaError, match="cannot appear more than once"):
        quotas.describe([("user", 2, None), ("user", 1, None)], False)


def test_request_percentage_is_a_double_and_its_throttle_is_at_most_a_window():
    check_value(REQUEST_PERCENTAGE, 12.5)  # Kafka's DOUBLE: fractions allowed
    with pytest.raises(QuotaError, match="cannot be a fractional value"):
        check_value(PRODUCER_BYTE_RATE, 12.5)
    quotas = ClientQuotas(samples=11, window_seconds=1)
    quotas.alter(make_entity([("user", None)]), {REQUEST_PERCENTAGE: 1.0})
    assert quotas.request_on and not quotas.produce_on
    # 500 % (5 s of handler time at once) against 1 %: far over, bounded to the 1 s window
    assert quotas.record(REQUEST_PERCENTAGE, "User:alice", "c", 500.0, 1_000) == 1000


def test_task_time_counts_running_not_waiting():
    timer = TaskTime()

    async def main():
        trio.lowlevel.add_instrument(timer)
        try:
            task = trio.lowlevel.current_task()
            timer.watch(task)
            busy_until = time.perf_counter() + 0.03
            while time.perf_counter() < busy_until:  # 30 ms running, in the first step
                pass
            await trio.sleep(0.1)                    # 100 ms waiting
            ran = timer.unwatch(task)
        finally:
            trio.lowlevel.remove_instrument(timer)
        return ran

    ran_ms = trio.run(main) / 1e6
    assert 30 <= ran_ms < 80, ran_ms


# --- a real broker ---------------------------------------------------------------------------


def _config(data_dir: str, **more) -> BrokerConfig:
    # 2 samples of 1 s: a new client's first burst counts as one second's worth (Kafka's 11 x 1 s
    # would let 10 s worth through first, longer than these tests run)
    # would let 10 s worth through first, longer than these tests run)
    return BrokerConfig(data_dir=data_dir, listen_port=0, quota_window_num=2, quota_window_size_seconds=1, **more)


def _run(coro_fn, *args):
    return trio.run(coro_fn, *args)


async def _alter(bootstrap: str, alterations, validate_only: bool = False):
    async with open_admin(bootstrap) as admin:
        await admin.alter_client_quotas(alterations, validate_only=validate_only)


async def _describe(bootstrap: str, entity=None, strict: bool = False):
    async with open_admin(bootstrap) as admin:
        return await admin.describe_client_quotas(entity, strict=strict)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("quotas") / "data")
    with BrokerThread(_config(data_dir)) as b:
        _run(_create_topic, b.bootstrap)
        yield b


async def _create_topic(bootstrap: str):
    async with open_admin(bootstrap) as admin:
        await admin.create_topics(["quota-topic"], exist_ok=True)


def test_alter_and_describe_with_kafkas_rules(broker):
    bs = broker.bootstrap
    _run(_alter, bs, [({"user": "alice", "client-id": "app"}, {PRODUCER_BYTE_RATE: 1024, CONSUMER_BYTE_RATE: 2048}),
                      ({"client-id": None}, {CONSUMER_BYTE_RATE: 4096})])
    # validate_only changes nothing
    _run(_alter, bs, [({"user": "carol"}, {PRODUCER_BYTE_RATE: 1})], True)
    everything = _run(_describe, bs)
    assert ({"user": "alice", "client-id": "app"}, {PRODUCER_BYTE_RATE: 1024.0, CONSUMER_BYTE_RATE: 2048.0}) in everything
    assert ({"client-id": None}, {CONSUMER_BYTE_RATE: 4096.0}) in everything
    assert not any(e.get("user") == "carol" for e, _ in everything)
    # filters: exact name, default, any name of a type, strict
    assert _run(_describe, bs, {"user": "alice"}) == [({"user": "alice", "client-id": "app"},
                                                       {PRODUCER_BYTE_RATE: 1024.0, CONSUMER_BYTE_RATE: 2048.0})]
    assert _run(_describe, bs, {"user": "alice"}, True) == []
    assert _run(_describe, bs, {"client-id": None}, True) == [({"client-id": None}, {CONSUMER_BYTE_RATE: 4096.0})]
    # unknown keys, bad values and unenforced keys: INVALID_REQUEST with Kafka's message
    for ops, message in [({"bytes_per_second": 1}, "Invalid configuration key bytes_per_second"),
                         ({PRODUCER_BYTE_RATE: 0}, "must be greater than 0"),
                         ({PRODUCER_BYTE_RATE: 10.5}, "cannot be a fractional value"),
                         ({"controller_mutation_rate": 5}, "controller_mutation_rate is not enforced")]:
        with pytest.raises(KafkaError) as info:
            _run(_alter, bs, [({"user": "dave"}, ops)])
        assert info.value.code == 42 and message in str(info.value)
    assert not any(e.get("user") == "dave" for e, _ in _run(_describe, bs))
    # removal
    _run(_alter, bs, [({"user": "alice", "client-id": "app"}, {PRODUCER_BYTE_RATE: None, CONSUMER_BYTE_RATE: None}),
                      ({"client-id": None}, {CONSUMER_BYTE_RATE: None})])
    assert _run(_describe, bs) == []


def _produce(bootstrap: str, client_id: str, seconds: float | None = None, total: int | None = None):
    """Send 1 KiB records as fast as the producer goes; (bytes delivered per second, throttle
    events seen)."""
    from confluent_kafka import Producer

    throttles = []
    delivered = [0]

    def on_delivery(err, msg):
        if err is None:
            delivered[0] += len(msg.value())

    # a small local queue: what is measured is what the broker took, not what waits in the client
    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 2, "batch.size": 16384,
                  "queue.buffering.max.kbytes": 64,
                  "throttle_cb": lambda event: throttles.append(event.throttle_time), "acks": 1})
    value = os.urandom(1024)
    started = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - started
        if (seconds is not None and elapsed >= seconds) or (total is not None and sent >= total):
            break
        try:
            p.produce("quota-topic", value, on_delivery=on_delivery)
            sent += len(value)
        except BufferError:
            p.poll(0.01)
            continue
        p.poll(0)
    p.flush(30)
    elapsed = time.monotonic() - started
    return delivered[0] / elapsed, throttles


def test_a_producer_is_held_near_its_byte_rate(broker):
    bs = broker.bootstrap
    _run(_alter, bs, [({"client-id": "limited-producer"}, {PRODUCER_BYTE_RATE: LIMIT})])
    try:
        rate, throttles = _produce(bs, "limited-producer", seconds=SECONDS)
        assert throttles and max(throttles) > 0
        assert LIMIT / 2 < rate < 2 * LIMIT, rate
        free_rate, free_throttles = _produce(bs, "free-producer", total=8 * LIMIT)
        assert free_rate > 5 * LIMIT and not free_throttles, free_rate
    finally:
        _run(_alter, bs, [({"client-id": "limited-producer"}, {PRODUCER_BYTE_RATE: None})])


def _consume(bootstrap: str, client_id: str, seconds: float | None = None, total: int | None = None):
    """Read quota-topic from the start with kafka-python (fetch sessions); (bytes per second,
    the largest throttle time it was told)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id, enable_auto_commit=False,
                      fetch_max_wait_ms=100, max_partition_fetch_bytes=64 * 1024)
    try:
        tp = TopicPartition("quota-topic", 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = 0
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if (seconds is not None and elapsed >= seconds) or (total is not None and got >= total):
                break
            for records in c.poll(timeout_ms=100).values():
                got += sum(len(r.value) for r in records)
        rate = got / (time.monotonic() - started)
        # kafka-python's own record of the throttle_time_ms of the answers
        throttle = max((v for group in c.metrics().values() for k, v in group.items()
                        if k == "throttle-time-max" and isinstance(v, (int, float)) and v == v), default=0.0)
        return rate, throttle
    finally:
        c.close()


def test_a_consumer_is_held_near_its_byte_rate_across_fetch_sessions(broker):
    bs = broker.bootstrap
    # enough records that the limited reader cannot reach the end in time
    _produce(bs, "filler", total=int(3 * LIMIT * SECONDS))
    _run(_alter, bs, [({"user": "ANONYMOUS", "client-id": "slow-reader"}, {CONSUMER_BYTE_RATE: LIMIT})])
    try:
        rate, throttle = _consume(bs, "slow-reader", seconds=SECONDS)
        # held near the limit, and still reading after throttled answers (the session survives)
        assert LIMIT / 2 < rate < 2 * LIMIT, rate
        assert throttle > 0
        free_rate, _ = _consume(bs, "fast-reader", total=int(2 * LIMIT * SECONDS))
        assert free_rate > 5 * LIMIT, free_rate
    finally:
        _run(_alter, bs, [({"user": "ANONYMOUS", "client-id": "slow-reader"}, {CONSUMER_BYTE_RATE: None})])


async def _two_pipelined_produces(host: str, port: int, client_id: str, first_bytes: int):
    """Two Produce requests written back to back on one connection (ringlog's client does not
    hold back on throttle_time_ms): (first answer's throttle ms, seconds between the answers)."""
    from ringlog.client.connection import ApiKey, open_connection
    from ringlog.storage.records import build_batch

    async with trio.open_nursery() as nursery:
        conn = await open_connection(nursery, host, port, client_id=client_id)
        try:
            b = conn.make(ApiKey.PRODUCE)

            def request(size: int):
                batch = build_batch([(None, b"x" * size, (), 0)])
                return b(transactional_id=None, acks=1, timeout=10_000, topic_data=(b(
                    "TopicProduceData", name="quota-topic",
                    partition_data=(b("PartitionProduceData", index=0, records=batch),)),))

            first, second = conn.submit(request(first_bytes)), conn.submit(request(10))
            answer = await conn.wait(first)
            answered = trio.current_time()
            await conn.wait(second)
            gap = trio.current_time() - answered
            throttle = int(answer.throttle_time.total_seconds() * 1000)
            assert all(p.error_code == 0 for t in answer.responses for p in t.partition_responses)
            return throttle, gap
        finally:
            await conn.aclose()
            nursery.cancel_scope.cancel()


def test_the_broker_reads_nothing_more_from_a_throttled_connection(broker):
    _run(_alter, broker.bootstrap, [({"client-id": "pipelined"}, {PRODUCER_BYTE_RATE: LIMIT})])
    try:
        # 300 KB against 200 KB/s over at least one 1 s window: (300 - 200) / 200 * 1 s = 500 ms
        throttle, gap = _run(_two_pipelined_produces, broker.host, broker.port, "pipelined", 300_000)
        assert 400 <= throttle <= 600, throttle
        # the second request, already sent, is read only once the throttle time has passed
        assert gap >= throttle / 1000 - 0.05, (throttle, gap)
        async def render():
            return broker.broker.metrics.render().decode()

        metrics = broker.call(render)
        assert 'ringlog_quota_throttled_requests_total{quota="producer_byte_rate"}' in metrics
        # another client id is not held back
        throttle, gap = _run(_two_pipelined_produces, broker.host, broker.port, "unlimited", 300_000)
        assert throttle == 0 and gap < 0.3
    finally:
        _run(_alter, broker.bootstrap, [({"client-id": "pipelined"}, {PRODUCER_BYTE_RATE: None})])


async def _metadata_storm(host: str, port: int, client_id: str, seconds: float):
    """Metadata requests one after another for `seconds`: (answers, largest throttle ms)."""
    from ringlog.client.connection import ApiKey, open_connection

    answers, throttle = 0, 0
    async with trio.open_nursery() as nursery:
        conn = await open_connection(nursery, host, port, client_id=client_id)
        try:
            b = conn.make(ApiKey.METADATA)
            deadline = trio.current_time() + seconds
            while trio.current_time() < deadline:
                resp = await conn.request(b(topics=None, allow_auto_topic_creation=False))
                answers += 1
                throttle = max(throttle, int(resp.throttle_time.total_seconds() * 1000))
        finally:
            await conn.aclose()
            nursery.cancel_scope.cancel()
    return answers, throttle


def test_request_percentage_holds_back_a_client_that_keeps_the_broker_busy(broker):
    # 0.5 % of the Trio thread: a few ms of handler time per second
    _run(_alter, broker.bootstrap, [({"client-id": "busy"}, {REQUEST_PERCENTAGE: 0.5})])
    try:
        busy, throttle = _run(_metadata_storm, broker.host, broker.port, "busy", 1.5)
        free, free_throttle = _run(_metadata_storm, broker.host, broker.port, "idle", 1.5)
        assert throttle > 0 and free_throttle == 0
        assert busy * 3 < free, (busy, free)
    finally:
        _run(_alter, broker.bootstrap, [({"client-id": "busy"}, {REQUEST_PERCENTAGE: None})])
    assert not broker.broker.quotas.task_time.installed  # removed with the last such quota


def test_quotas_survive_a_restart(tmp_path):
    data_dir = str(tmp_path / "data")
    wanted = [({"user": "alice"}, {PRODUCER_BYTE_RATE: 5000.0}), ({"user": None, "client-id": None}, {CONSUMER_BYTE_RATE: 7000.0})]
    with BrokerThread(_config(data_dir)) as b:
        _run(_alter, b.bootstrap, wanted)
    with BrokerThread(_config(data_dir)) as b:
        found = _run(_describe, b.bootstrap)
        assert len(found) == len(wanted) and all(w in found for w in wanted)
        assert b.broker.quotas.limit(PRODUCER_BYTE_RATE, "User:alice", "x") == 5000.0


def test_quota_requests_need_cluster_config_acls(tmp_path):
    from ringlog.client.cli import main

    data_dir = str(tmp_path / "data")
    assert main(["acls", "add", "--data-dir", data_dir, "--allow-principal", "User:ANONYMOUS",
                 "--operation", "DescribeConfigs", "--cluster"]) == 0
    with BrokerThread(_config(data_dir, authorizer_enabled=True)) as b:
        assert _run(_describe, b.bootstrap) == []
        with pytest.raises(KafkaError) as info:
            _run(_alter, b.bootstrap, [({"user": "alice"}, {PRODUCER_BYTE_RATE: 1.0})])
        assert info.value.code == 31  # CLUSTER_AUTHORIZATION_FAILED
        assert b.broker.quotas.entities == {}


def test_the_quotas_command(broker, capsys):
    from ringlog.client.cli import main

    bs = ["--bootstrap", broker.bootstrap]
    assert main(["quotas", "alter", *bs, "--user", "erin", "--default-client-id",
                 "--set", "producer_byte_rate=1048576", "--set", "consumer_byte_rate=2048"]) == 0
    assert main(["quotas", "describe", *bs, "--user", "erin"]) == 0
    out = capsys.readouterr().out
    assert "client-id=<default>,user=erin" in out and "producer_byte_rate=1048576" in out
    # refusals are one line and a non-zero exit
    assert main(["quotas", "alter", *bs, "--user", "erin", "--set", "producer_byte_rate=1.5"]) == 1
    assert "cannot be a fractional value" in capsys.readouterr().err
    assert main(["quotas", "alter", *bs, "--set", "producer_byte_rate=1"]) == 2
    assert main(["quotas", "alter", *bs, "--user", "erin", "--default-client-id",
                 "--delete", "producer_byte_rate", "--delete", "consumer_byte_rate"]) == 0
    capsys.readouterr()
    assert main(["quotas", "describe", *bs, "--user", "erin", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
