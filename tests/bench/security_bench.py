"""Throughput over TLS against plaintext, and what authorization costs per request.

    python -m tests.bench.security_bench [--mb 64] [--runs 3] [--record-bytes 1024]

One `ringlog broker` subprocess (fsync never) with a PLAINTEXT and an SSL listener (a throwaway
CA and certificate made here), and confluent-kafka in this process:

* produce: `--mb` MB of `--record-bytes` records (acks=1, librdkafka's batching) to a fresh topic,
  timed from the first produce to the end of flush();
* consume: the same topic read back from offset 0 (assign, no group), timed to the last record;

alternating PLAINTEXT and SSL, `--runs` each, medians and the SSL/PLAINTEXT ratio. Then the cost
of authorization: Metadata requests for one topic, one at a time on a raw connection, against a
broker without an authorizer and one with `authorizer.enabled` and 1000 ACL bindings (the
principal is allowed through a prefixed one), requests/s medians of `--runs`; and the decision
itself (`Authorizer.allowed`, cached and not) timed in-process.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from ringlog.broker.testing import BrokerProcess


def _certs(directory: str) -> tuple[str, str, str]:
    from tests.security.certs import CA

    ca = CA.create(directory)
    cert, key = ca.issue(directory, "bench-broker")
    return ca.path, cert, key


def _produce(bootstrap: str, settings: dict, topic: str, count: int, value: bytes) -> float:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1, **settings})
    started = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0
    return time.perf_counter() - started


def _consume(bootstrap: str, settings: dict, topic: str, count: int) -> float:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024, **settings})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    started = time.perf_counter()
    while got < count:
        batch = c.consume(10000, 1.0)
        got += sum(1 for m in batch if m.error() is None)
    elapsed = time.perf_counter() - started
    c.close()
    return elapsed


def throughput(args: argparse.Namespace) -> dict[str, list[float]]:
    work = tempfile.mkdtemp(prefix="ringlog-secbench-")
    ca, cert, key = _certs(work)
    config = os.path.join(work, "broker.toml")
    with open(config, "w") as f:
        f.write(f'listeners = "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0"\n"ssl.certificate.location" = "{cert}"\n'
                f'"ssl.key.location" = "{key}"\nfsync = "never"\n')
    count = args.mb * 1024 * 1024 // args.record_bytes
    value = os.urandom(args.record_bytes)
    results: dict[str, list[float]] = {k: [] for k in ("produce PLAINTEXT", "produce SSL", "consume PLAINTEXT",
                                                        "consume SSL")}
    with BrokerProcess(os.path.join(work, "data"), "--config", config) as b:
        line = b.wait_line("listener SSL (SSL) on ")
        ssl_port = int(line.split(" on ", 1)[1].split(",", 1)[0].rsplit(":", 1)[1])
        addresses = {"PLAINTEXT": (b.bootstrap, {}),
                     "SSL": (f"127.0.0.1:{ssl_port}", {"security.protocol": "SSL", "ssl.ca.location": ca})}
        for run in range(args.runs):
            for name, (bootstrap, settings) in addresses.items():
                topic = f"bench-{name.lower()}-{run}"
                seconds = _produce(bootstrap, settings, topic, count, value)
                results[f"produce {name}"].append(args.mb / seconds)
                seconds = _consume(bootstrap, settings, topic, count)
                results[f"consume {name}"].append(args.mb / seconds)
    return results


def _metadata_rate(bootstrap: str, seconds: float) -> float:
    from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic

    from tests.broker.conftest import RawClient

    host, port = bootstrap.rsplit(":", 1)
    c = RawClient(host, int(port))
    request = MetadataRequest(topics=(MetadataRequestTopic(name="orders-1", topic_id=None),),
                              allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    n, end = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < end:
        c.call(request)
        n += 1
    rate = n / (time.perf_counter() - started)
    c.close()
    return rate


def authorization(args: argparse.Namespace) -> dict[str, list[float]]:
    from ringlog.broker.security import authorizer as acl
    from ringlog.broker.security.state import acls_json
    from ringlog.broker.security.store import ACLS, write_json

    bindings = [acl.Acl(acl.TOPIC, f"other-{i}", acl.LITERAL, f"User:u{i}", "*", acl.READ, acl.ALLOW)
                for i in range(999)]
    bindings.append(acl.Acl(acl.TOPIC, "orders-", acl.PREFIXED, "User:ANONYMOUS", "*", acl.ALL, acl.ALLOW))
    results: dict[str, list[float]] = {"metadata/s authorizer off": [], "metadata/s authorizer on (1000 ACLs)": []}
    for enabled in (False, True):
        work = tempfile.mkdtemp(prefix="ringlog-aclbench-")
        data = os.path.join(work, "data")
        os.makedirs(data)
        write_json(data, ACLS, acls_json(bindings))
        flags = ["--set", "authorizer.enabled=true"] if enabled else []
        with BrokerProcess(data, *flags, "--set", "num.partitions=1") as b:
            from confluent_kafka.admin import AdminClient, NewTopic

            admin = AdminClient({"bootstrap.servers": b.bootstrap})
            admin.create_topics([NewTopic("orders-1", 1)])["orders-1"].result(10)
            key = "metadata/s authorizer on (1000 ACLs)" if enabled else "metadata/s authorizer off"
            for _ in range(args.runs):
                results[key].append(_metadata_rate(b.bootstrap, 2.0))
    authorizer = acl.Authorizer(bindings)
    for cached in (True, False):
        n = 20000
        started = time.perf_counter()
        for i in range(n):
            if not cached:
                authorizer._cache.clear()
            authorizer.allowed("User:ANONYMOUS", "127.0.0.1", acl.DESCRIBE, acl.TOPIC, "orders-1")
        per = (time.perf_counter() - started) / n * 1e6
        results[f"decision us ({'cached' if cached else 'uncached, 1000 ACLs'})"] = [per]
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--record-bytes", type=int, default=1024)
    args = parser.parse_args()
    out = throughput(args)
    out.update(authorization(args))
    for name, values in out.items():
        print(f"{name:45s} median {statistics.median(values):10.1f}   runs {' '.join(f'{v:.1f}' for v in values)}")
    for what in ("produce", "consume"):
        ratio = statistics.median(out[f"{what} PLAINTEXT"]) / statistics.median(out[f"{what} SSL"])
        print(f"{what}: PLAINTEXT / SSL = {ratio:.2f}x")
    on, off = (statistics.median(out["metadata/s authorizer on (1000 ACLs)"]),
               statistics.median(out["metadata/s authorizer off"]))
    print(f"authorization: {1e6 / on - 1e6 / off:+.1f} us per Metadata request")


if __name__ == "__main__":
    main()
