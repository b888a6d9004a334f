"""Transactional produce beside idempotent produce, and read_committed beside read_uncommitted.

    python -m tests.bench.transactions [--records 100000] [--runs 3]

A `ringlog broker` subprocess (default flush policy). confluent-kafka produces `--records`
records of 100 B and of 1 KiB to a 4-partition topic, idempotent (one flush at the end) and
transactional (a commit every 1,000 records), `--runs` times each, alternating, and prints the
medians in records/s and their ratio; then a consumer reads the transactional topic back with
read_uncommitted and with read_committed (assigned partitions, to the end) and prints the same.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid

from confluent_kafka import Producer

from ringlog.broker.testing import BrokerProcess
from tests.txn.helpers import create_topics, read_confluent

PER_TXN = 1000


def produce(bootstrap: str, topic: str, records: int, size: int, transactional: bool) -> float:
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
    if transactional:
        conf["transactional.id"] = f"bench-{uuid.uuid4()}"
    producer = Producer(conf)
    payload = b"x" * size
    if transactional:
        producer.init_transactions(30)
    started = time.perf_counter()
    for i in range(records):
        if transactional and i % PER_TXN == 0:
            producer.begin_transaction()
        while True:
            try:
                producer.produce(topic, payload, partition=i % 4)
                break
            except BufferError:
                producer.poll(0.01)
        if transactional and i % PER_TXN == PER_TXN - 1:
            producer.commit_transaction(30)
        elif i % 1000 == 0:
            producer.poll(0)
    if transactional and records % PER_TXN:
        producer.commit_transaction(30)
    assert producer.flush(60) == 0
    return records / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d, BrokerProcess(d) as proc:
        bootstrap = proc.bootstrap
        print("| record | idempotent rec/s | transactional rec/s (1,000 per txn) | ratio |")
        print("|---|---|---|---|")
        last_txn_topic = None
        for size in (100, 1024):
            rates: dict[bool, list[float]] = {False: [], True: []}
            for run in range(args.runs):
                for txn in (False, True):
                    topic = f"b{size}-{'t' if txn else 'i'}-{run}"
                    create_topics(bootstrap, [topic])
                    rates[txn].append(produce(bootstrap, topic, args.records, size, txn))
                    if txn:
                        last_txn_topic = topic
            idem, trans = statistics.median(rates[False]), statistics.median(rates[True])
            print(f"| {size} B | {idem:,.0f} | {trans:,.0f} | {trans / idem:.2f} |")
        print()
        print("| isolation | records/s (1 KiB, transactional topic) |")
        print("|---|---|")
        reads: dict[str, list[float]] = {"read_uncommitted": [], "read_committed": []}
        for _ in range(args.runs):
            for iso in reads:
                started = time.perf_counter()
                got = read_confluent(bootstrap, [last_txn_topic], iso, timeout=300)
                reads[iso].append(len(got) / (time.perf_counter() - started))
        base = statistics.median(reads["read_uncommitted"])
        for iso, rs in reads.items():
            print(f"| {iso} | {statistics.median(rs):,.0f} ({statistics.median(rs) / base:.2f}x) |")


if __name__ == "__main__":
    main()
