"""Cluster mode with two listeners per broker: Metadata and DescribeCluster answer every broker's
address on the listener the request came in on (as Kafka does), so a client of the second
listener is never sent to the first one of the other brokers."""
from __future__ import annotations

import re

from kio.schema.describe_cluster.v0.request import DescribeClusterRequest
from kio.schema.metadata.v12.request import MetadataRequest

from ringlog.broker.testing import BrokerProcess

from .conftest import CLUSTER_SETTINGS, wait_until
from .test_isr import call

LISTENERS = ("--set", "listeners=PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
             "--set", "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT")


def _port(broker: BrokerProcess, name: str) -> int:
    for line in broker.lines:
        m = re.search(rf"listener {name} \(PLAINTEXT\) on [0-9.]+:\d+, advertised 127\.0\.0\.1:(\d+)", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no {name} listener line in {broker.lines[-20:]}")


def test_metadata_answers_the_listener_asked(etcd, tmp_path):
    brokers = {n: BrokerProcess(str(tmp_path / f"b{n}"), "--node-id", str(n), "--etcd", etcd.url,
                                "--cluster-name", "listeners", *CLUSTER_SETTINGS, *LISTENERS) for n in (1, 2)}
    try:
        for b in brokers.values():
            b.start(timeout=90)
        ports = {n: {name: _port(b, name) for name in ("PLAINTEXT", "INTERNAL")} for n, b in brokers.items()}
        assert ports[1]["PLAINTEXT"] != ports[1]["INTERNAL"]
        for asked in (1, 2):
            for name in ("PLAINTEXT", "INTERNAL"):
                bootstrap = f"127.0.0.1:{ports[asked][name]}"
                want = {n: ports[n][name] for n in (1, 2)}

                def seen(bootstrap=bootstrap):
                    md = call(bootstrap, MetadataRequest(topics=(), allow_auto_topic_creation=False,
                                                         include_topic_authorized_operations=False))
                    return {int(b.node_id): int(b.port) for b in md.brokers}

                wait_until(lambda seen=seen, want=want: seen() == want, timeout=30,
                           what=f"broker {asked}'s {name} listener to list both brokers' {name} ports")
                dc = call(bootstrap, DescribeClusterRequest(include_cluster_authorized_operations=False))
                assert {int(b.broker_id): int(b.port) for b in dc.brokers} == want
    finally:
        for b in brokers.values():
            if b.proc is not None and b.proc.poll() is None:
                b.stop()
