"""Cluster benchmark: acks=all produce throughput and latency with RF 3 against RF 1 on the same
three brokers, and fail-over time (kill -9 of a leader until the producer's next ack) with the
default and a tuned broker.session.timeout.ms. Prints a markdown section for docs/performance.md.

    .venv/bin/python -m tests.cluster.bench_cluster [--records 50000] [--trials 3]

Brokers are separate processes on one machine with a real etcd (tests/cluster/conftest.Cluster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from ringlog.client.cli.etcd_process import EtcdProcess

from . import conftest
from .conftest import Cluster, create_replicated, describe, wait_until


def throughput(bootstrap: str, topic: str, records: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True,
                  "batch.size": 65536})
    value = b"x" * 100
    start = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                p.produce(topic, value, partition=0)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0
    return records / (time.perf_counter() - start)


def latencies(bootstrap: str, topic: str, samples: int) -> list[float]:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        p.produce(topic, b"y" * 100, partition=0)
        assert p.flush(30) == 0
        out.append((time.perf_counter() - start) * 1000)
    return out


def failover(cluster: Cluster, topic: str) -> float:
    """Seconds from kill -9 of the leader to the next acknowledged record."""
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 0, "enable.idempotence": True,
                  "topic.metadata.refresh.interval.ms": 1000, "retry.backoff.ms": 20, "retry.backoff.max.ms": 100})
    acked: list[float] = []
    p.produce(topic, b"warm", partition=0, on_delivery=lambda e, m: acked.append(time.monotonic()) if e is None else None)
    p.flush(30)
    leader = describe(cluster.bootstrap, topic)[0][0]
    cluster.brokers[leader].kill()
    killed = time.monotonic()
    acked.clear()
    while not acked:
        p.produce(topic, b"z", partition=0, on_delivery=lambda e, m: acked.append(time.monotonic()) if e is None else None)
        p.poll(0.01)
        time.sleep(0.01)
    p.flush(30)
    elapsed = acked[0] - killed
    cluster.restart(leader)
    wait_until(lambda: all(len(v[2]) == 3 for v in describe(cluster.bootstrap, topic).values()), timeout=60,
               what="the ISR whole again")
    return elapsed


def run(records: int, trials: int) -> str:
    lines = []
    root = Path(tempfile.mkdtemp(prefix="ringlog-bench-cluster-"))
    with EtcdProcess(str(root / "etcd")) as etcd:
        results = {}
        for label, session in (("default (4 s)", "4000"), ("tuned (2 s)", "2000")):
            conftest.CLUSTER_SETTINGS = ("--set", f"broker.session.timeout.ms={session}",
                                         "--set", "replica.fetch.wait.max.ms=200")
            cluster = Cluster(etcd, root / f"c-{session}", name=f"bench{session}")
            cluster.start()
            try:
                if session == "4000":
                    create_replicated(cluster.bootstrap, "rf1", 1, rf=1, min_isr=1)
                    create_replicated(cluster.bootstrap, "rf3", 1, rf=3, min_isr=2)
                    for topic in ("rf1", "rf3"):
                        rates = [throughput(cluster.bootstrap, topic, records) for _ in range(trials)]
                        lat = latencies(cluster.bootstrap, topic, 500)
                        q = statistics.quantiles(lat, n=100)
                        results[topic] = (statistics.median(rates), statistics.median(lat), q[98])
                create_replicated(cluster.bootstrap, "fo", 1, rf=3, min_isr=2)
                results[label] = [failover(cluster, "fo") for _ in range(trials)]
            finally:
                cluster.stop()
    rf1, rf3 = results["rf1"], results["rf3"]
    lines.append("| topic | acks=all records/s (100 B, median of %d) | p50 latency ms | p99 latency ms |" % trials)
    lines.append("| --- | ---: | ---: | ---: |")
    for name, r in (("RF 1", rf1), ("RF 3, min.insync.replicas 2", rf3)):
        lines.append(f"| {name} | {r[0]:,.0f} | {r[1]:.2f} | {r[2]:.2f} |")
    lines.append(f"\nRF 3 / RF 1: throughput x{rf3[0] / rf1[0]:.2f}, p50 latency x{rf3[1] / rf1[1]:.2f}.\n")
    lines.append("| broker.session.timeout.ms | fail-over s (each trial) | median |")
    lines.append("| --- | --- | ---: |")
    for label in ("default (4 s)", "tuned (2 s)"):
        t = results[label]
        lines.append(f"| {label} | {', '.join(f'{x:.2f}' for x in t)} | {statistics.median(t):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(run(args.records, args.trials))


if __name__ == "__main__":
    main()
