"""Fixtures for cluster mode: a real etcd (Debian's etcd-server) on loopback ports in a temporary
directory, healthy before the test starts; required in CI (RINGLOG_REQUIRE_TOOLS=1)."""
from __future__ import annotations

import pytest

from ringlog.client.cli.etcd_process import EtcdProcess
from tests.conftest import require_tool


@pytest.fixture
def etcd(tmp_path):
    require_tool("etcd")
    with EtcdProcess(str(tmp_path / "etcd")) as server:
        yield server


import hashlib  # noqa: E402
import http.client  # noqa: E402
import re  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from ringlog.broker.testing import BrokerProcess  # noqa: E402

# Short timeouts keep the fault tests bounded: a dead broker's lease ends within 2 s.
CLUSTER_SETTINGS = ("--set", "broker.session.timeout.ms=2000", "--set", "replica.lag.time.max.ms=2000",
                    "--set", "replica.fetch.wait.max.ms=200", "--set", "metrics.listen=127.0.0.1:0")
_METRICS_RE = re.compile(r"metrics endpoint on http://(\S+):(\d+)/metrics")


class Cluster:
    """Brokers 1..n as separate `ringlog broker` processes joined through one real etcd."""

    def __init__(self, etcd, root, n: int = 3, name: str = "test") -> None:
        self.etcd = etcd
        self.root = root
        self.name = name
        self.brokers = {i: self._process(i) for i in range(1, n + 1)}

    def _process(self, node: int) -> BrokerProcess:
        return BrokerProcess(str(self.root / f"broker-{node}"), "--node-id", str(node), "--etcd", self.etcd.url,
                             "--cluster-name", self.name, *CLUSTER_SETTINGS)

    def start(self, *nodes: int) -> None:
        """Start brokers in parallel (each takes seconds to import and recover)."""
        errors = []

        def one(node: int) -> None:
            try:
                self.brokers[node].start(timeout=90)
            except Exception as exc:  # reported below, with the others
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(n,)) for n in nodes or self.brokers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def restart(self, node: int) -> None:
        """A new process on the same data dir and port (its advertised address moves with it)."""
        old = self.brokers[node]
        self.brokers[node] = self._process(node)
        self.start(node)
        assert old.proc is not None and old.proc.poll() is not None

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values() if b.proc is not None and b.proc.poll() is None)

    def stop(self) -> None:
        for b in self.brokers.values():
            if b.proc is not None and b.proc.poll() is None:
                b.stop()

    def metrics(self, node: int) -> dict[str, float]:
        """One scrape of broker `node`'s /metrics: sample name -> value, for the samples without
        labels (and `name{label="v",...}` keys, labels sorted, for the others)."""
        from prometheus_client.parser import text_string_to_metric_families

        m = _METRICS_RE.search(self.brokers[node].wait_line("metrics endpoint on", timeout=10))
        assert m is not None
        conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=10)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read().decode()
            assert resp.status == 200, body
        finally:
            conn.close()
        out = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def partition_dir(self, node: int, topic: str, partition: int) -> str:
        return os.path.join(self.brokers[node].data_dir, f"{topic}-{partition}")


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def segment_bytes(directory: str) -> bytes:
    """Every segment's bytes of one replica, in offset order."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(".log"))
    out = b""
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            out += f.read()
    return out


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cluster(etcd, tmp_path):
    c = Cluster(etcd, tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """One etcd and three brokers for a module's tests, which run in file order and each leave
    every broker running (starting processes is most of these tests' time)."""
    require_tool("etcd")
    root = tmp_path_factory.mktemp("cluster")
    with EtcdProcess(str(root / "etcd")) as server:
        c = Cluster(server, root)
        try:
            c.start()
            yield c
        finally:
            c.stop()


def describe(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition -> (leader, replicas, isr), from Metadata (confluent-kafka's admin client)."""
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.id: (p.leader, list(p.replicas), list(p.isrs)) for p in md.topics[topic].partitions.values()}


def controller(bootstrap: str) -> int:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).controller_id


def create_replicated(bootstrap: str, topic: str, partitions: int, rf: int = 3, min_isr: int = 2) -> dict:
    """CreateTopics with RF and min.insync.replicas; returns describe() once every ISR is whole."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # referenced until the result is in
    futures = admin.create_topics([NewTopic(topic, partitions, rf, config={"min.insync.replicas": str(min_isr)})])
    futures[topic].result(30)

    def everywhere():
        # every broker has applied it (each learns it from its own etcd watch)
        views = [describe(b, topic) for b in bootstrap.split(",")]
        ok = all(len(s) == partitions and all(len(v[2]) == rf and v[0] >= 0 for v in s.values()) for s in views)
        return ok and views[0]

    return wait_until(everywhere, what=f"all replicas of {topic} in sync on every broker")
