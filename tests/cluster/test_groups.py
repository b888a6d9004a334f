"""Consumer groups in cluster mode: `__consumer_offsets` is replicated like any topic, FindCoordinator
names the leader of the group's partition, and when that broker is killed with -9 the group moves
to the new leader, which rebuilds it from its replica: the committed offsets survive. A commit is
acknowledged only once the ISR of its partition holds it. Three broker processes on a real etcd,
confluent-kafka and kafka-python as the clients."""
from __future__ import annotations

import datetime
import signal
import time

from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v3.request import FindCoordinatorRequest
from kio.schema.offset_commit.v2.request import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from kio.schema.offset_fetch.v6.request import OffsetFetchRequest, OffsetFetchRequestTopic

from .conftest import Cluster, create_replicated, describe, wait_until
from .test_isr import call

TOPIC = "orders"
GROUP = "billing"
PARTITIONS = 2
RECORDS = 200
EXTRA = 40
KIP848 = "billing-kip848"
OFFSETS = "__consumer_offsets"


def find_coordinator(bootstrap: str) -> tuple[int, int]:
    """(error code, node id) of FindCoordinator for GROUP, asked of the first broker listed."""
    r = call(bootstrap.split(",")[0], FindCoordinatorRequest(key=GROUP, key_type=0))
    return int(r.error_code), int(r.node_id)


def offset_fetch(address: str, group: str = GROUP) -> tuple[int, dict[int, int]]:
    """(error code, partition -> committed offset) of a group, asked of one broker."""
    r = call(address, OffsetFetchRequest(group_id=group, topics=(
        OffsetFetchRequestTopic(name=TOPIC, partition_indexes=tuple(range(PARTITIONS))),)))
    return int(r.error_code), {int(p.partition_index): int(p.committed_offset) for t in r.topics for p in t.partitions}


def poll(consumer, count: int) -> list[tuple[int, int]]:
    """(partition, offset) of the next `count` records."""
    out: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    while len(out) < count:
        assert time.monotonic() < deadline, f"consumed {len(out)} of {count}"
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            out.append((msg.partition(), msg.offset()))
    return out


def consume(bootstrap: str, count: int) -> dict[int, list[int]]:
    """A confluent-kafka member of GROUP reads `count` records (offsets per partition), commits
    synchronously what it read, and leaves."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000,
                         "session.timeout.ms": 6000})
    seen: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    consumer.subscribe([TOPIC])
    try:
        for p, offset in poll(consumer, count):
            seen[p].append(offset)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return seen


class GroupCluster(Cluster):
    # KIP-848 members heartbeat every second, so they notice a moved coordinator quickly
    def _process(self, node: int):
        b = super()._process(node)
        b.args += ["--set", "group.consumer.heartbeat.interval.ms=1000"]
        return b


def test_group_offsets_survive_the_coordinators_death(etcd, tmp_path):
    cluster = GroupCluster(etcd, tmp_path)
    try:
        run(cluster)
    finally:
        cluster.stop()


def run(cluster: Cluster) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    # as in Kafka, __consumer_offsets waits for offsets.topic.replication.factor (3) live brokers
    cluster.start(1, 2)
    r = call(cluster.bootstrap.split(",")[0], FindCoordinatorRequest(key=GROUP, key_type=0))
    assert r.error_code == ErrorCode.coordinator_not_available and "3 broker(s)" in r.error_message
    cluster.start(3)

    create_replicated(cluster.bootstrap, TOPIC, PARTITIONS)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(RECORDS):
        producer.produce(TOPIC, value=str(i).encode(), partition=i % PARTITIONS)
    assert producer.flush(30) == 0

    first = consume(cluster.bootstrap, RECORDS // 2)
    committed = {p: offsets[-1] + 1 if offsets else -1 for p, offsets in first.items()}
    assert sum(len(v) for v in first.values()) == RECORDS // 2

    # a KIP-848 member (group.protocol=consumer) reads half of the records and stays in its group
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    kip848 = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": KIP848, "group.protocol": "consumer",
                       "enable.auto.commit": False, "auto.offset.reset": "earliest",
                       "topic.metadata.refresh.interval.ms": 1000})
    kip848.subscribe([TOPIC])
    kip848_read = poll(kip848, RECORDS // 2)
    kip848.commit(asynchronous=False)

    # __consumer_offsets is a cluster topic: RF 3 (offsets.topic.replication.factor), all in sync
    offsets_topic = describe(cluster.bootstrap, OFFSETS)
    assert all(len(replicas) == 3 and len(isr) == 3 for _, replicas, isr in offsets_topic.values())
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    described = admin.describe_consumer_groups([GROUP])[GROUP].result(15)
    victim = described.coordinator.id
    error, coordinator = find_coordinator(cluster.bootstrap)
    assert (error, coordinator) == (0, victim)
    assert victim == next(iter(offsets_topic.values()))[0]  # the leader of its (only) partition
    # the other brokers do not serve the group
    for node, broker in cluster.brokers.items():
        error, offsets = offset_fetch(broker.bootstrap)
        if node == victim:
            assert (error, offsets) == (0, committed)
        else:
            assert error == ErrorCode.not_coordinator

    cluster.brokers[victim].kill()
    survivors = cluster.bootstrap

    def moved():
        error, node = find_coordinator(survivors)
        return error == 0 and node != victim and node

    new = wait_until(moved, timeout=20, what="a new group coordinator")
    assert new == describe(survivors, OFFSETS)[0][0]
    # the new coordinator rebuilt the group from its replica (answering LOAD_IN_PROGRESS meanwhile)
    address = cluster.brokers[new].bootstrap
    wait_until(lambda: offset_fetch(address)[0] == 0, timeout=10, what="the group loaded on the new coordinator")
    assert offset_fetch(address) == (0, committed)

    # the KIP-848 member's membership was in memory: the new coordinator answers its commits
    # UNKNOWN_MEMBER_ID until it has rejoined (epoch 0), after which it goes on from its commits:
    # every record read, none below a commit read twice
    kip848_commit = {p: max((o + 1 for q, o in kip848_read if q == p), default=-1) for p in range(PARTITIONS)}
    assert offset_fetch(address, KIP848) == (0, kip848_commit)
    ends = [TopicPartition(TOPIC, p, RECORDS // PARTITIONS) for p in range(PARTITIONS)]

    def read_all_and_committed():
        msg = kip848.poll(0.2)
        if msg is not None and msg.error() is None:
            kip848_read.append((msg.partition(), msg.offset()))
        if len(set(kip848_read)) < RECORDS:
            return False
        try:
            kip848.commit(offsets=ends, asynchronous=False)
        except KafkaException:
            return False  # not rejoined yet
        return True

    try:
        wait_until(read_all_and_committed, timeout=30, interval=0, what="the KIP-848 member's rejoin and commit")
    finally:
        kip848.close()
    assert sorted(set(kip848_read)) == [(p, o) for p in range(PARTITIONS) for o in range(RECORDS // PARTITIONS)]
    again = [(p, o) for p, o in set(kip848_read) if kip848_read.count((p, o)) > 1]
    assert all(o >= kip848_commit[p] for p, o in again)
    assert offset_fetch(address, KIP848) == (0, {p: RECORDS // PARTITIONS for p in range(PARTITIONS)})

    # a new member resumes from the commits: nothing below them is read again
    rest = consume(survivors, RECORDS - RECORDS // 2)
    for p, offsets in rest.items():
        assert offsets == list(range(max(committed[p], 0), RECORDS // PARTITIONS)), p

    # a second client library finds the moved coordinator and reads the new commits
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaPythonTopicPartition

    other = KafkaConsumer(bootstrap_servers=survivors.split(","), group_id=GROUP, enable_auto_commit=False,
                          request_timeout_ms=20000)
    try:
        assert {p: other.committed(KafkaPythonTopicPartition(TOPIC, p)) for p in range(PARTITIONS)} == \
            {p: RECORDS // PARTITIONS for p in range(PARTITIONS)}
    finally:
        other.close()

    # a member that stays through a move keeps its generation and assignment (the group's state
    # is replicated too): no rebalance, nothing read twice, its commit lands at the last broker
    for i in range(EXTRA):
        producer.produce(TOPIC, value=b"x", partition=i % PARTITIONS)
    assert producer.flush(30) == 0
    assigned = []
    member = Consumer({"bootstrap.servers": survivors, "group.id": GROUP, "enable.auto.commit": False,
                       "session.timeout.ms": 10000, "topic.metadata.refresh.interval.ms": 1000})
    member.subscribe([TOPIC], on_assign=lambda c, parts: assigned.append(len(parts)))
    try:
        read = poll(member, EXTRA // 2)
        member.commit(asynchronous=False)
        cluster.brokers[new].kill()
        last = next(n for n in cluster.brokers if n not in (victim, new))
        wait_until(lambda: find_coordinator(cluster.bootstrap) == (0, last), timeout=20, what="the last coordinator")
        read += poll(member, EXTRA - EXTRA // 2)
        member.commit(asynchronous=False)
        assert assigned == [PARTITIONS]
    finally:
        member.close()
    ends = RECORDS // PARTITIONS + EXTRA // PARTITIONS
    assert sorted(read) == sorted((p, o) for p in range(PARTITIONS) for o in range(RECORDS // PARTITIONS, ends))
    assert offset_fetch(cluster.brokers[last].bootstrap) == (0, {p: ends for p in range(PARTITIONS)})


class SlowLeaseCluster(Cluster):
    # leases of 6 s outlast a 3 s pause: the ISR shrinks by the leader's lag rule
    # (replica.lag.time.max.ms=2000), not by the paused brokers' deaths
    def _process(self, node: int):
        b = super()._process(node)
        b.args += ["--set", "broker.session.timeout.ms=6000", "--set", "offsets.commit.timeout.ms=1000"]
        return b


def commit(address: str, group: str, offset: int) -> int:
    """A simple (generation -1) OffsetCommit v2 of `offset` for partition 0: its error code."""
    r = call(address, OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=-1, member_id="",
        retention_time=datetime.timedelta(milliseconds=-1), topics=(OffsetCommitRequestTopic(
            name=TOPIC, partitions=(OffsetCommitRequestPartition(partition_index=0, committed_offset=offset,
                                                                 committed_metadata=""),)),)))
    return int(r.topics[0].partitions[0].error_code)


def test_a_commit_is_acknowledged_only_once_the_isr_holds_it(etcd, tmp_path):
    cluster = SlowLeaseCluster(etcd, tmp_path)
    try:
        cluster.start()
        create_replicated(cluster.bootstrap, TOPIC, 1, min_isr=1)
        group = "paused"
        error, leader = wait_until(lambda: (r := call(cluster.bootstrap.split(",")[0], FindCoordinatorRequest(
            key=group, key_type=0))).error_code == 0 and (0, int(r.node_id)), what="a coordinator")
        address = cluster.brokers[leader].bootstrap
        wait_until(lambda: len(describe(address, OFFSETS)[0][2]) == 3, what="__consumer_offsets in sync")
        # the broker FindCoordinator named may not have applied its leadership of the offsets
        # partition, or loaded it, yet: NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS, which
        # clients retry, until it serves the group
        retriable = (ErrorCode.not_coordinator, ErrorCode.coordinator_load_in_progress)
        first = wait_until(lambda: (code := commit(address, group, 5)) not in retriable and (code,), timeout=30,
                           what="the coordinator to serve the group")
        assert first == (ErrorCode.none,)
        followers = [n for n in cluster.brokers if n != leader]
        for n in followers:
            cluster.brokers[n].proc.send_signal(signal.SIGSTOP)
        try:
            # the ISR still counts the paused followers: the commit is written by the leader but
            # not acknowledged, and not visible
            started = time.monotonic()
            assert commit(address, group, 9) == ErrorCode.request_timed_out
            assert time.monotonic() - started >= 0.9
            assert offset_fetch(address, group)[1][0] == 5
            # once the leader has shrunk the ISR to itself (min.insync.replicas 1) commits go on
            wait_until(lambda: describe(address, OFFSETS)[0][2] == [leader], timeout=10, what="the ISR shrink")
            # written by the leader (the paused brokers' leases are alive), so its counter has it
            m = wait_until(lambda: (m := cluster.metrics(leader))["ringlog_isr_shrinks_total"] >= 1 and m,
                           what="the leader's ISR shrinks counted")
            assert m["ringlog_under_replicated_partitions"] >= 1
            assert commit(address, group, 11) == ErrorCode.none
            assert offset_fetch(address, group)[1][0] == 11
        finally:
            for n in followers:
                cluster.brokers[n].proc.send_signal(signal.SIGCONT)
    finally:
        cluster.stop()
