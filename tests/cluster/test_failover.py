"""Three brokers as separate processes on a real etcd; a topic with RF 3 and min.insync.replicas 2.

An idempotent acks=all confluent-kafka producer and a consumer run while the leader of a
partition is killed with SIGKILL. Afterwards every acknowledged record is consumed exactly once
and in order per partition, the old leader rejoins as a follower after restarting, and all
replicas are byte-identical (and pass `ringlog log verify`)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from tests.conftest import SLOW  # noqa: E402

from .conftest import controller, create_replicated, describe, digest, segment_bytes, wait_until  # noqa: E402

TOPIC = "orders"
PARTITIONS = 2


class Load:
    """A producer thread (idempotent, acks=all) and a consumer thread over both partitions."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.acked: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        self.consumed: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        self.errors: list[str] = []
        self.stop_producing = threading.Event()
        self.stop_consuming = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._produce), threading.Thread(target=self._consume)]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def acked_count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.acked.values())

    def _produce(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 5, "message.timeout.ms": 60000, "retry.backoff.ms": 50,
                             "topic.metadata.refresh.interval.ms": 1000})

        def report(err, msg) -> None:
            if err is not None:
                self.errors.append(str(err))
                return
            with self.lock:
                self.acked[msg.partition()].append(int(msg.value()))

        seq = 0
        while not self.stop_producing.is_set():
            try:
                producer.produce(TOPIC, value=str(seq).encode(), partition=seq % PARTITIONS, on_delivery=report)
                seq += 1
            except BufferError:
                producer.poll(0.05)
                continue
            if seq % 50 == 0:
                producer.poll(0.01)
        remaining = producer.flush(60)
        if remaining:
            self.errors.append(f"{remaining} record(s) not delivered after flush")

    def _consume(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "verify",
                             "enable.auto.commit": False, "topic.metadata.refresh.interval.ms": 1000})
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        try:
            while not self.stop_consuming.is_set():
                msg = consumer.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
                with self.lock:
                    self.consumed[msg.partition()].append(int(msg.value()))
        finally:
            consumer.close()

    def caught_up(self) -> bool:
        with self.lock:
            return all(len(self.consumed[p]) >= len(self.acked[p]) for p in range(PARTITIONS))


def test_kill_the_leader_loses_nothing_acknowledged(cluster, tmp_path):
    state = create_replicated(cluster.bootstrap, TOPIC, PARTITIONS)
    load = Load(cluster.bootstrap).start()
    try:
        wait_until(lambda: load.acked_count() >= 500, timeout=60, what="acks before the kill")
        victim = state[0][0]
        before = load.acked_count()
        killed_at = time.monotonic()
        cluster.brokers[victim].kill()
        # a new leader from the ISR, with the next epoch, and the producer goes on
        wait_until(lambda: describe(cluster.bootstrap, TOPIC)[0][0] not in (victim, -1), timeout=30,
                   what="a new leader of partition 0")
        wait_until(lambda: load.acked_count() >= before + 500, timeout=60, what="acks after the kill")
        failover_s = time.monotonic() - killed_at
        # the old leader comes back, truncates to the new leader's epoch end, catches up
        cluster.restart(victim)
        wait_until(lambda: all(len(v[2]) == 3 for v in describe(cluster.bootstrap, TOPIC).values()),
                   timeout=60, what="the restarted broker back in every ISR")
    finally:
        load.stop_producing.set()
        load.threads[0].join(90)
    check_outcome(cluster, load)
    print(f"fail-over: {failover_s:.1f} s to 500 more acks; {load.acked_count()} acked")


def check_outcome(cluster, load: Load) -> None:
    """Every acknowledged record consumed once and in order; the replicas byte-identical and
    intact (call with the producer stopped and every ISR whole)."""
    wait_until(load.caught_up, timeout=60, what="the consumer to read every acknowledged record")
    load.stop_consuming.set()
    load.threads[1].join(30)
    assert not load.errors, load.errors[:5]
    for p in range(PARTITIONS):
        acked, consumed = load.acked[p], load.consumed[p]
        assert len(set(consumed)) == len(consumed), f"partition {p}: a record was consumed twice"
        assert set(acked) <= set(consumed), f"partition {p}: acknowledged records are missing"
        # in order: the producer's order of the partition's records (idempotence keeps it)
        assert consumed == sorted(consumed), f"partition {p}: records out of order"

    # every replica holds the same bytes (nothing is being written: the ISRs are whole and the
    # producer is done, so each log end is the high watermark)
    def replicas_equal() -> bool:
        return all(len({digest(segment_bytes(cluster.partition_dir(n, TOPIC, p))) for n in (1, 2, 3)}) == 1
                   for p in range(PARTITIONS))

    wait_until(replicas_equal, timeout=30, what="byte-identical replicas")
    cluster.stop()
    for node in (1, 2, 3):
        result = subprocess.run([sys.executable, "-m", "ringlog.client.cli", "log", "verify",
                                 cluster.brokers[node].data_dir], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def isr_whole(cluster) -> bool:
    return all(len(v[2]) == 3 and v[0] >= 0 for v in describe(cluster.bootstrap, TOPIC).values())


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="RINGLOG_SLOW=1 runs it; test_kill_the_leader_loses_nothing_acknowledged "
                                     "is its bounded version")
def test_random_fault_schedule(cluster):
    """Jepsen-style: under the same load, a seeded random schedule of kill -9 (leader, controller
    or any broker) + restart, and SIGSTOP past the lag time + SIGCONT; then the same checks."""
    seed = int(os.environ.get("RINGLOG_FAULT_SEED", random.randrange(1 << 30)))
    rounds = int(os.environ.get("RINGLOG_FAULT_ROUNDS", "12"))
    rng = random.Random(seed)
    print(f"fault schedule seed {seed}, {rounds} rounds")
    create_replicated(cluster.bootstrap, TOPIC, PARTITIONS)
    load = Load(cluster.bootstrap).start()
    counts: dict[str, int] = {}
    try:
        for _ in range(rounds):
            wait_until(lambda: isr_whole(cluster), timeout=90, what="every ISR whole before the next fault")
            before = load.acked_count()
            kind = rng.choice(["kill-leader", "kill-controller", "kill-any", "pause-any"])
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "kill-leader":
                victim = describe(cluster.bootstrap, TOPIC)[rng.randrange(PARTITIONS)][0]
            elif kind == "kill-controller":
                victim = wait_until(lambda: (c := controller(cluster.bootstrap)) in (1, 2, 3) and c, what="a controller")
            else:
                victim = rng.choice([1, 2, 3])
            if kind == "pause-any":
                cluster.brokers[victim].proc.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(2.5, 4.0))  # the fault's length is the point here, not a wait
                cluster.brokers[victim].proc.send_signal(signal.SIGCONT)
            else:
                cluster.brokers[victim].kill()
                wait_until(lambda: all(v[0] not in (victim, -1) for v in describe(cluster.bootstrap, TOPIC).values()),
                           timeout=60, what="leaders away from the killed broker")
                cluster.restart(victim)
            wait_until(lambda: load.acked_count() > before + 100, timeout=90, what="the producer going on")
        wait_until(lambda: isr_whole(cluster), timeout=90, what="every ISR whole at the end")
    finally:
        load.stop_producing.set()
        load.threads[0].join(90)
    print(f"faults: {counts}; {load.acked_count()} records acknowledged")
    check_outcome(cluster, load)
