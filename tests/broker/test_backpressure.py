"""Full rings under a burst: "reject" answers at once with a retriable error and a throttle time,
"block" stops reading and everything is eventually written; offsets stay dense either way."""
from __future__ import annotations

import datetime
import threading

import pytest
from kio.schema.errors import ErrorCode

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.client.wire import request_class
from ringlog.storage.records import build_batch

from .conftest import RawClient

PIPELINE = 40
CONNECTIONS = 4


def produce_request(topic: str, value: bytes):
    Req = request_class(0, 9)
    mod = __import__(Req.__module__, fromlist=["x"])
    batch = build_batch([(None, value, (), 1_000)])
    return Req(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10), topic_data=(
        mod.TopicProduceData(name=topic, partition_data=(mod.PartitionProduceData(index=0, records=batch),)),))


def burst(b: BrokerThread, topic: str) -> list:
    results: list = []
    lock = threading.Lock()

    def one_connection(n: int) -> None:
        client = RawClient(b.host, b.port)
        try:
            reqs = [produce_request(topic, b"%d-%d-" % (n, i) + b"x" * 600) for i in range(PIPELINE)]
            for r in reqs:  # pipelined: all sent before any answer is read
                client.send(r)
            for r in reqs:
                _, resp = client.receive(r)
                part = resp.responses[0].partition_responses[0]
                with lock:
                    results.append((part.error_code, part.base_offset, resp.throttle_time.total_seconds()))
        finally:
            client.close()

    threads = [threading.Thread(target=one_connection, args=(n,)) for n in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == PIPELINE * CONNECTIONS
    return results


@pytest.mark.parametrize("mode", ["reject", "block"])
def test_burst(tmp_path, mode: str) -> None:
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"), fsync="always",
                          ring_bytes_per_partition=1024, backpressure=mode, backpressure_throttle_ms=50)
    with BrokerThread(config) as b:
        b.call(b.broker.create_topic, "bp", 1)
        results = burst(b, "bp")
        ok = [r for r in results if r[0] == ErrorCode.none]
        refused = [r for r in results if r[0] != ErrorCode.none]
        if mode == "block":
            assert not refused
        else:
            assert refused, "the burst never filled a ring"
            assert all(code == ErrorCode.not_enough_replicas and code.retriable and thr == 0.05
                       for code, _, thr in refused)
            assert ok
        # every accepted batch got its own offset; the log holds exactly those, densely
        assert sorted(off for _, off, _ in ok) == list(range(len(ok)))
        assert b.broker.high_watermark("bp", 0) == len(ok)
        assert b.broker.writer.rejected == len(refused)
