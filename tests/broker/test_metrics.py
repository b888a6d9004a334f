"""/metrics of a live broker: scrape before and after a confluent-kafka produce / consume / group
workload and check that counters, gauges, lag and histograms moved by exactly what the workload
did; bad requests show up in the error counters; several brokers in one process keep separate
registries."""
from __future__ import annotations

import datetime
import http.client
import os
import socket
import struct
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.client.wire import request_class
from ringlog.storage.records import build_batch

from .conftest import RawClient

FAST = {"socket.timeout.ms": 5000, "message.timeout.ms": 15000}
TOPIC = "m"
PARTITIONS = 3
N = 1500  # records produced: 500 per partition
VALUE = b"v" * 100


# --- helpers shared with test_health.py ---------------------------------------------------------


def http_get(address: tuple[str, int], path: str) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection(address[0], address[1], timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


class Scrape:
    """One /metrics answer: value(name, **labels), sum over label subsets, histogram buckets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, default: float | None = 0.0, **labels: str) -> float:
        v = self.samples.get((name, frozenset(labels.items())))
        if v is None:
            if default is None:
                raise KeyError(f"{name}{labels} not in the scrape")
            return default
        return v

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample of `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= set(ls))

    def series(self, name: str) -> dict[frozenset, float]:
        return {ls: v for (n, ls), v in self.samples.items() if n == name}


def scrape(b: BrokerThread) -> Scrape:
    status, body, headers = http_get(b.broker.metrics_address, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(body)


def metrics_config(tmp_path, name: str = "d", **changes) -> BrokerConfig:
    return BrokerConfig(listen_port=0, data_dir=str(tmp_path / name), metrics_listen_host="127.0.0.1",
                        metrics_listen_port=0, **changes)


def _mod(cls):
    return __import__(cls.__module__, fromlist=["x"])


def produce_request(topic: str, partition: int, records: bytes, version: int = 9):
    Req = request_class(0, version)
    m = _mod(Req)
    return Req(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=5), topic_data=(
        m.TopicProduceData(name=topic, partition_data=(m.PartitionProduceData(index=partition, records=records),)),))


# --- the workload test ------------------------------------------------------------------------


@pytest.fixture
def mb(tmp_path):
    # fsync=always: every group-commit round also makes one fsync round
    with BrokerThread(metrics_config(tmp_path, fsync="always", group_initial_rebalance_delay_ms=0)) as b:
        b.call(b.broker.coordinator.loaded.wait)
        b.call(b.broker.create_topic, TOPIC, PARTITIONS)
        yield b


def _batches_in_logs(b: BrokerThread) -> int:
    """Record batches in every log (the writer's rounds wrote exactly these)."""

    async def count() -> int:
        return sum(sum(1 for _ in plog.iter_batch_headers()) for _, plog in b.broker._all_logs())

    return b.call(count)


def test_workload_moves_counters_gauges_lag_and_histograms(mb) -> None:
    b = mb
    before = scrape(b)
    batches_before = _batches_in_logs(b)
    assert before.value("ringlog_ready") == 1
    assert before.value("ringlog_topic_records_in_total", topic=TOPIC) == 0
    for p in range(PARTITIONS):
        labels = {"topic": TOPIC, "partition": str(p)}
        assert before.value("ringlog_log_end_offset", default=None, **labels) == 0
        assert before.value("ringlog_ring_capacity_bytes", default=None, **labels) == b.config.ring_bytes_per_partition

    # --- produce: 1500 records, 500 per partition, acks=all
    producer = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5, **FAST})
    errors = []
    for i in range(N):
        producer.produce(TOPIC, value=VALUE, key=b"%d" % i, partition=i % PARTITIONS,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors
    during = scrape(b)
    assert during.value("ringlog_connections") >= 1
    del producer

    after_produce = scrape(b)
    records_in = after_produce.value("ringlog_topic_records_in_total", topic=TOPIC)
    bytes_in = after_produce.value("ringlog_topic_bytes_in_total", topic=TOPIC)
    assert records_in == N
    size = 0
    for p in range(PARTITIONS):
        labels = {"topic": TOPIC, "partition": str(p)}
        assert after_produce.value("ringlog_log_end_offset", **labels) == N // PARTITIONS
        assert after_produce.value("ringlog_high_watermark", **labels) == N // PARTITIONS
        assert after_produce.value("ringlog_log_start_offset", **labels) == 0
        assert after_produce.value("ringlog_log_segments", **labels) == 1
        assert after_produce.value("ringlog_ring_bytes", **labels) == 0  # drained
        size += after_produce.value("ringlog_log_size_bytes", **labels)
    # a fresh topic's segment files hold exactly the appended batches
    assert bytes_in == size > N * len(VALUE)

    # every Produce request answered NONE, and the latency histogram saw each one once
    produced = after_produce.value("ringlog_requests_total", api="Produce", error="NONE")
    assert produced >= 1
    assert after_produce.value("ringlog_request_latency_seconds_count", api="Produce") == produced
    assert after_produce.value("ringlog_request_latency_seconds_bucket", api="Produce", le="+Inf") == produced
    assert after_produce.value("ringlog_request_latency_seconds_sum", api="Produce") > 0
    buckets = sorted(
        (float(dict(ls)["le"]), v) for ls, v in after_produce.series("ringlog_request_latency_seconds_bucket").items()
        if dict(ls)["api"] == "Produce"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative

    # group commit: the rounds' batch counts add up to the batches now in the logs
    rounds = after_produce.value("ringlog_group_commit_batches_count") - before.value("ringlog_group_commit_batches_count")
    written = after_produce.value("ringlog_group_commit_batches_sum") - before.value("ringlog_group_commit_batches_sum")
    assert written == _batches_in_logs(b) - batches_before
    assert 1 <= rounds <= written
    # fsync=always: at least one fsync round per group-commit round
    fsyncs = after_produce.value("ringlog_fsync_latency_seconds_count") - before.value("ringlog_fsync_latency_seconds_count")
    assert fsyncs >= rounds
    assert after_produce.value("ringlog_fsync_latency_seconds_sum") > before.value("ringlog_fsync_latency_seconds_sum")

    # --- consume everything in group "g", commit chosen offsets
    committed = {0: 100, 1: 500, 2: 0}
    consumer = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100, "session.timeout.ms": 6000,
                         "socket.timeout.ms": 5000})
    try:
        consumer.subscribe([TOPIC])
        got = 0
        deadline = time.monotonic() + 30
        while got < N and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=N, timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                got += 1
        assert got == N
        consumer.commit(offsets=[TopicPartition(TOPIC, p, o) for p, o in committed.items()], asynchronous=False)
        with_member = scrape(b)
        assert with_member.value("ringlog_consumer_group_members", group="g") == 1
    finally:
        consumer.close()

    after = scrape(b)
    # every byte appended went out once to the one consumer
    assert after.value("ringlog_topic_bytes_out_total", topic=TOPIC) == bytes_in
    assert after.value("ringlog_requests_total", api="Fetch", error="NONE") >= 1
    for api in ("JoinGroup", "SyncGroup", "OffsetCommit"):
        assert after.value("ringlog_requests_total", api=api, error="NONE") >= 1, api
    for p, off in committed.items():
        labels = {"group": "g", "topic": TOPIC, "partition": str(p)}
        assert after.value("ringlog_consumer_group_committed_offset", default=None, **labels) == off
        assert after.value("ringlog_consumer_group_lag", default=None, **labels) == N // PARTITIONS - off
    # the consumer left: the group is empty but keeps its offsets
    assert after.value("ringlog_consumer_group_members", group="g") == 0
    # the offset commit went through the same write path (internal topic)
    assert after.value("ringlog_topic_records_in_total", topic="__consumer_offsets") >= len(committed)
    assert after.value("ringlog_connections_accepted_total") >= 2
    # nothing in this workload was refused
    assert after.total("ringlog_backpressure_events_total") == 0
    assert after.total("ringlog_rejected_requests_total") == 0
    assert after.value("ringlog_disk_free_bytes", path=os.path.abspath(b.config.data_dir)) > 0


# --- error counters -------------------------------------------------------------------------


@pytest.fixture
def eb(tmp_path):
    with BrokerThread(metrics_config(tmp_path)) as b:
        b.call(b.broker.create_topic, "t", 1)
        yield b


def test_bad_requests_increment_the_error_counters(eb) -> None:
    b = eb
    before = scrape(b)
    c = RawClient(b.host, b.port)
    try:
        good = build_batch([(b"k", b"v", (), 1)])
        bad_crc = bytearray(good)
        bad_crc[-1] ^= 0xFF
        assert c.call(produce_request("t", 0, bytes(bad_crc))).responses[0].partition_responses[0].error_code != 0
        assert c.call(produce_request("t", 0, good)).responses[0].partition_responses[0].error_code == 0
        assert c.call(produce_request("t", 5, good)).responses[0].partition_responses[0].error_code != 0
    finally:
        c.close()
    after = scrape(b)

    def delta(**labels: str) -> float:
        return after.value("ringlog_requests_total", **labels) - before.value("ringlog_requests_total", **labels)

    assert delta(api="Produce", error="CORRUPT_MESSAGE") == 1
    assert delta(api="Produce", error="UNKNOWN_TOPIC_OR_PARTITION") == 1
    assert delta(api="Produce", error="NONE") == 1
    assert after.value("ringlog_topic_records_in_total", topic="t") == 1  # only the good batch

    # a malformed frame: a Produce v7 header, then a body cut inside its first string, closes the
    # connection and counts
    s = socket.create_connection((b.host, b.port), timeout=5)
    try:
        body = struct.pack(">hhih", 0, 7, 7, 3) + b"cli" + b"\x00\x05ab"
        s.sendall(struct.pack(">i", len(body)) + body)
        assert s.recv(1) == b""  # closed by the broker
    finally:
        s.close()
    # an unsupported version is answered, and counted as such
    c = RawClient(b.host, b.port)
    try:
        s2 = c.sock
        body = struct.pack(">hhih", 3, 0, 8, 3) + b"cli" + struct.pack(">i", 0)  # Metadata v0
        s2.sendall(struct.pack(">i", len(body)) + body)
        c.read_frame()
    finally:
        c.close()
    final = _wait_for(b, lambda m: m.total("ringlog_rejected_requests_total") >= 1)
    assert final.value("ringlog_rejected_requests_total", reason="malformed_request") == 1
    assert final.value("ringlog_requests_total", api="Produce", error="INVALID_REQUEST") == 1
    assert final.value("ringlog_requests_total", api="Metadata", error="UNSUPPORTED_VERSION") == 1


def _wait_for(b: BrokerThread, cond, timeout: float = 5.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(b)
        if cond(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.02)


def test_backpressure_reject_is_counted_per_partition(tmp_path) -> None:
    config = metrics_config(tmp_path, backpressure="reject", ring_bytes_per_partition=1024)
    with BrokerThread(config) as b:
        b.call(b.broker.create_topic, "bp", 2)
        big = build_batch([(None, b"x" * 800, (), 1)])

        async def fill_and_push() -> list[str]:
            # Push into the ring directly from the broker's thread while the writer cannot run
            # (no checkpoint in between): the second push meets a full ring.
            from ringlog.broker.ingest import PendingAppend, RingFull
            from ringlog.storage.batch import validate_batch

            outcomes = []
            for _ in range(2):
                entry = PendingAppend(("bp", 1), [bytearray(big)], [validate_batch(big)], len(big))
                try:
                    await b.broker.partition("bp", 1).submit(entry, block=False)
                    outcomes.append("ok")
                except RingFull:
                    outcomes.append("full")
            return outcomes

        assert b.call(fill_and_push) == ["ok", "full"]
        m = scrape(b)
        assert m.value("ringlog_backpressure_events_total", topic="bp", partition="1", mode="reject") == 1
        assert m.value("ringlog_backpressure_events_total", topic="bp", partition="0", mode="reject") == 0


def test_two_brokers_in_one_process_have_separate_registries(tmp_path) -> None:
    with BrokerThread(metrics_config(tmp_path, "a")) as a, BrokerThread(metrics_config(tmp_path, "b")) as b:
        a.call(a.broker.create_topic, "only-a", 1)
        p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", **FAST})
        for _ in range(7):
            p.produce("only-a", value=b"x", partition=0)
        assert p.flush(20) == 0
        assert scrape(a).value("ringlog_topic_records_in_total", topic="only-a") == 7
        mb_ = scrape(b)
        assert ("ringlog_topic_records_in_total", frozenset({("topic", "only-a")})) not in mb_.samples
        assert a.broker.metrics.registry is not b.broker.metrics.registry


def test_metrics_off_by_default(tmp_path) -> None:
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"))) as b:
        assert b.broker.metrics_address is None
        # the counters still exist in-process
        assert b"ringlog_requests_total" in b.call(_render, b)


async def _render(b: BrokerThread) -> bytes:
    return b.broker.metrics.render()
