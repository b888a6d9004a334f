"""HTTP ingest in cluster mode: only a partition's leader takes records, and its 200 means the ISR
holds them (what a Produce with acks=all means), so a record answered 200 survives the leader."""
from __future__ import annotations

import json
import socket

import httpx
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ringlog.broker.testing import BrokerProcess

from .conftest import Cluster, describe, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpCluster(Cluster):
    def __init__(self, *args, **kwargs) -> None:
        self.http: dict[int, str] = {}
        super().__init__(*args, **kwargs)

    def _process(self, node: int) -> BrokerProcess:
        port = self.http.setdefault(node, f"http://127.0.0.1:{_free_port()}")
        proc = super()._process(node)
        proc.args += ["--http-listen", port.removeprefix("http://")]
        return proc


def _push(url: str, topic: str, lines: list[dict]) -> httpx.Response:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return httpx.post(f"{url}/ingest/{topic}?partition=0", content=body,
                      headers={"Content-Type": "application/x-ndjson"}, timeout=30)


def test_only_the_leader_takes_http_records_and_they_survive_it(etcd, tmp_path) -> None:
    cluster = HttpCluster(etcd, tmp_path, n=3)
    try:
        cluster.start()
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        fut = admin.create_topics([NewTopic("web", 1, 3, config={"min.insync.replicas": "2"})])["web"]
        fut.result(timeout=30)
        leader, replicas, _ = wait_until(lambda: (d := describe(cluster.bootstrap, "web").get(0))
                                         and len(d[2]) == 3 and d, what="ISR of 3")
        follower = next(n for n in replicas if n != leader)

        refused = _push(cluster.http[follower], "web", [{"n": 0}])
        assert refused.status_code == 503, refused.text
        assert "not_leader_or_follower" in refused.text

        sent = [{"n": i} for i in range(50)]
        ok = _push(cluster.http[leader], "web", sent)
        assert ok.status_code == 200, ok.text
        assert ok.json()["accepted"] == 50

        # the leader dies at once: what it answered 200 is on the ISR and served by the new leader
        cluster.brokers[leader].kill()
        wait_until(lambda: (d := describe(cluster.bootstrap, "web").get(0)) and d[0] not in (leader, -1),
                   what="a new leader")
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "http-check",
                             "enable.auto.commit": False})
        try:
            consumer.assign([TopicPartition("web", 0, 0)])
            got: list[dict] = []

            def read_all() -> bool:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    got.append(json.loads(msg.value()))
                return len(got) >= 50

            wait_until(read_all, timeout=60, interval=0, what="the 50 records from the new leader")
        finally:
            consumer.close()
        assert got == sent
    finally:
        cluster.stop()
