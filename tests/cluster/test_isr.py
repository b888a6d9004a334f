"""ISR shrink and expand, NOT_ENOUGH_REPLICAS and NOT_LEADER_OR_FOLLOWER, the controller's death and
third-party clients following a leader change; three broker processes on a real etcd."""
from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.list_offsets.v7.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

from ringlog.broker.snowflake import decompose
from ringlog.client.wire import decode_response, encode_request
from ringlog.storage.records import build_batch

from .conftest import controller, create_replicated, describe, digest, segment_bytes, wait_until


def call(bootstrap: str, request):
    """One request over a raw socket; the decoded response."""
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(encode_request(request, 1, "cluster-test"))
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            data += chunk
    return decode_response(data[4:], int(request.__api_key__), int(request.__version__))[1]


def produce(bootstrap: str, topic: str, value: bytes, acks: int = -1) -> tuple[int, int]:
    """One Produce: (error code, base offset)."""
    batch = build_batch([(None, value, (), int(time.time() * 1000))])
    response = call(bootstrap, ProduceRequest(
        transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=10),
        topic_data=(TopicProduceData(name=topic, partition_data=(PartitionProduceData(index=0, records=batch),)),)))
    p = response.responses[0].partition_responses[0]
    return int(p.error_code), int(p.base_offset)


def assert_producer_ids_unique(cluster) -> None:
    """The Snowflake worker id of every producer id is the node id of the broker that issued it."""
    ids = {}
    for node in (1, 2, 3):
        r = call(address(cluster, node), InitProducerIdRequest(
            transactional_id=None, transaction_timeout=datetime.timedelta(seconds=60), producer_id=-1,
            producer_epoch=-1))
        assert r.error_code == ErrorCode.none
        ids[node] = int(r.producer_id)
        assert decompose(ids[node]).worker_id == node
    assert len(set(ids.values())) == 3


def address(cluster, node: int) -> str:
    return cluster.brokers[node].bootstrap


def test_paused_followers_leave_the_isr_and_come_back(shared_cluster):
    cluster = shared_cluster
    assert_producer_ids_unique(cluster)
    state = create_replicated(cluster.bootstrap, "isr", 1)
    leader, replicas, _ = state[0]
    f1, f2 = [r for r in replicas if r != leader]
    # only the leader takes writes
    assert produce(address(cluster, f1), "isr", b"to-a-follower")[0] == ErrorCode.not_leader_or_follower
    assert produce(address(cluster, leader), "isr", b"first") == (0, 0)

    def latest(node: int):
        r = call(address(cluster, node), ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=(
            ListOffsetsTopic(name="isr", partitions=(ListOffsetsPartition(
                partition_index=0, current_leader_epoch=-1, timestamp=-1),)),)))
        p = r.topics[0].partitions[0]
        return int(p.error_code), int(p.offset), int(p.leader_epoch)

    assert latest(leader) == (0, 1, 0)  # a new partition's first leader has epoch 0
    assert latest(f1)[0] == ErrorCode.not_leader_or_follower

    # /metrics of a whole ISR: one controller, the leader leads the only partition, no laggards
    wait_until(lambda: [cluster.metrics(n)["ringlog_controller"] for n in (1, 2, 3)].count(1) == 1,
               what="exactly one broker reporting itself as the controller")
    assert cluster.metrics(controller(cluster.bootstrap))["ringlog_controller"] == 1
    wait_until(lambda: cluster.metrics(leader)["ringlog_under_replicated_partitions"] == 0, what="a whole ISR")
    before = cluster.metrics(leader)
    assert (before["ringlog_leader_partitions"], before["ringlog_replica_partitions"]) == (1, 1)
    assert before["ringlog_under_min_isr_partitions"] == 0
    assert before["ringlog_controller_changes_total"] >= 1
    assert 'ringlog_replica_lag{partition="0",topic="isr"}' not in before  # a leader follows nothing
    for f in (f1, f2):
        m = cluster.metrics(f)
        assert (m["ringlog_leader_partitions"], m["ringlog_replica_partitions"]) == (0, 1)
    isr_lines = lambda: sum("isr-0: ISR is now" in line for line in cluster.brokers[leader].lines)  # noqa: E731
    lines_before = isr_lines()

    cluster.brokers[f1].proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: f1 not in describe(address(cluster, leader), "isr")[0][2], timeout=30,
                   what="the paused follower to leave the ISR")
        # two in sync: acks=all still works
        assert produce(address(cluster, leader), "isr", b"second")[0] == 0
        cluster.brokers[f2].proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: describe(address(cluster, leader), "isr")[0][2] == [leader], timeout=30,
                       what="the ISR down to the leader")
            assert produce(address(cluster, leader), "isr", b"refused")[0] == ErrorCode.not_enough_replicas
            # the ISR below the replica list and below min.insync.replicas 2; the leader counted
            # the shrinks it wrote itself (the controller removes a follower whose lease expired
            # first, and that one is not the leader's shrink)
            during = wait_until(lambda: (m := cluster.metrics(leader))["ringlog_under_min_isr_partitions"] == 1 and m,
                                what="the leader's ISR below min.insync.replicas")
            assert during["ringlog_under_replicated_partitions"] == 1
            assert during["ringlog_isr_shrinks_total"] - before["ringlog_isr_shrinks_total"] == isr_lines() - lines_before
            assert during["ringlog_isr_expands_total"] == before["ringlog_isr_expands_total"]
            assert during["ringlog_leader_partitions"] == 1
            status = subprocess.run([sys.executable, "-m", "ringlog.client.cli", "cluster", "status", "--json",
                                     "--bootstrap", address(cluster, leader)], capture_output=True, text=True,
                                    timeout=60)
            assert status.returncode == 1, status.stderr  # under-replicated partitions
            doc = json.loads(status.stdout)
            assert [(r["topic"], r["isr"]) for r in doc["under_replicated"]] == [("isr", [leader])]
            assert produce(address(cluster, leader), "isr", b"acks=1", acks=1)[0] == 0
        finally:
            cluster.brokers[f2].proc.send_signal(signal.SIGCONT)
    finally:
        cluster.brokers[f1].proc.send_signal(signal.SIGCONT)
    wait_until(lambda: sorted(describe(cluster.bootstrap, "isr")[0][2]) == sorted(replicas), timeout=60,
               what="both followers back in the ISR")
    assert describe(cluster.bootstrap, "isr")[0][0] == leader  # a pause changed no leader
    assert produce(address(cluster, leader), "isr", b"after")[0] == 0
    wait_until(lambda: len({digest(segment_bytes(cluster.partition_dir(n, "isr", 0))) for n in replicas}) == 1,
               timeout=30, what="byte-identical replicas")
    # only a leader expands the ISR: it wrote at least one expansion, and the gauges are back
    after = wait_until(lambda: (m := cluster.metrics(leader))["ringlog_under_replicated_partitions"] == 0
                       and m["ringlog_isr_expands_total"] > during["ringlog_isr_expands_total"] and m,
                       what="the leader's ISR whole again and its expansions counted")
    assert after["ringlog_under_min_isr_partitions"] == 0
    assert after["ringlog_isr_shrinks_total"] == during["ringlog_isr_shrinks_total"]
    assert after["ringlog_leader_elections_total"] == before["ringlog_leader_elections_total"]  # no election
    for f in (f1, f2):  # caught up: nothing behind the leader's high watermark of its last answer
        m = wait_until(lambda: (m := cluster.metrics(f))['ringlog_replica_lag{partition="0",topic="isr"}'] == 0 and m,
                       what="the follower's lag back to 0")
        assert m["ringlog_replica_max_lag"] == 0
    wait_until(lambda: [cluster.metrics(n)["ringlog_controller"] for n in (1, 2, 3)].count(1) == 1,
               what="exactly one controller after the pauses")


def test_returning_old_leader_truncates_what_the_new_leader_lacks(shared_cluster):
    """With unclean election on, a replica that missed the old leader's last (acks=1) writes
    takes over; the old leader comes back, cuts its log at the new leader's end of its epoch
    (OffsetForLeaderEpoch) and ends up byte-identical instead of keeping divergent records."""
    cluster = shared_cluster
    admin_topic = "diverge"
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(admin_topic, 1, 3, config={
        "min.insync.replicas": "1", "unclean.leader.election.enable": "true"})])[admin_topic].result(30)
    wait_until(lambda: len(describe(cluster.bootstrap, admin_topic)[0][2]) == 3, what="a whole ISR")
    old, replicas, _ = describe(cluster.bootstrap, admin_topic)[0]
    followers = [r for r in replicas if r != old]
    for i in range(3):
        assert produce(address(cluster, old), admin_topic, b"both-%d" % i) == (0, i)
    wait_until(lambda: all(os.path.getsize(os.path.join(cluster.partition_dir(f, admin_topic, 0),
                                                        "00000000000000000000.log")) > 0 for f in followers),
               what="the followers to hold the first records")
    for f in followers:
        cluster.brokers[f].proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: describe(address(cluster, old), admin_topic)[0][2] == [old], timeout=30,
                   what="the ISR down to the old leader")
        # written only by the old leader: nobody else will ever have these
        for i in range(3):
            assert produce(address(cluster, old), admin_topic, b"lost-%d" % i, acks=1) == (0, 3 + i)
        cluster.brokers[old].kill()
    finally:
        for f in followers:
            cluster.brokers[f].proc.send_signal(signal.SIGCONT)
    live = ",".join(address(cluster, n) for n in followers)
    new = wait_until(lambda: (l := describe(live, admin_topic)[0][0]) in followers and l, timeout=60,
                     what="an unclean leader among the followers")
    assert produce(address(cluster, new), admin_topic, b"new-leader", acks=1) == (0, 3)
    cluster.restart(old)
    cluster.brokers[old].wait_line("truncating from 6 to 3", timeout=60)
    wait_until(lambda: len(describe(cluster.bootstrap, admin_topic)[0][2]) == 3, timeout=60,
               what="the old leader back in the ISR")
    wait_until(lambda: len({digest(segment_bytes(cluster.partition_dir(n, admin_topic, 0))) for n in replicas}) == 1,
               timeout=30, what="byte-identical replicas")


def test_a_second_broker_with_a_taken_node_id_is_refused(shared_cluster, tmp_path):
    from ringlog.broker.testing import BrokerProcess

    twin = BrokerProcess(str(tmp_path / "twin"), "--node-id", "1", "--etcd", shared_cluster.etcd.url,
                         "--cluster-name", shared_cluster.name, "--set", "broker.session.timeout.ms=2000")
    with pytest.raises(RuntimeError, match="did not become ready"):
        twin.start(timeout=90)
    assert twin.proc.wait(30) == 1
    assert any("node id 1 is already registered" in line for line in twin.lines)
    assert not any("Traceback" in line for line in twin.lines)


def test_a_broker_back_with_a_wiped_data_dir_never_leads_what_it_lost(shared_cluster):
    """The old leader was the last in-sync copy of records (acks=1, followers paused); it dies
    and comes back with an empty data dir. Electing it would make the empty log the truth; it
    leaves the ISR instead, the partition stays offline and the followers keep what they hold."""
    cluster = shared_cluster
    topic = "wiped"
    old, replicas, _ = create_replicated(cluster.bootstrap, topic, 1, min_isr=1)[0]
    followers = [r for r in replicas if r != old]
    for i in range(3):
        assert produce(address(cluster, old), topic, b"all-%d" % i) == (0, i)
    for f in followers:
        cluster.brokers[f].proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: describe(address(cluster, old), topic)[0][2] == [old], timeout=30,
                   what="the ISR down to the old leader")
        assert produce(address(cluster, old), topic, b"only-here", acks=1) == (0, 3)
        cluster.brokers[old].kill()
    finally:
        for f in followers:
            cluster.brokers[f].proc.send_signal(signal.SIGCONT)
    live = ",".join(address(cluster, n) for n in followers)
    wait_until(lambda: (v := describe(live, topic)[0])[0] == -1 and v[2] == [old], timeout=30,
               what="the partition offline, waiting for its last in-sync replica")
    shutil.rmtree(cluster.brokers[old].data_dir)
    cluster.restart(old)
    assert any("joined before with another data dir" in line for line in cluster.brokers[old].lines)
    wait_until(lambda: all(describe(address(cluster, n), topic)[0][2] == [] for n in (1, 2, 3)), timeout=30,
               what="every broker to see the ISR without the wiped replica")
    assert all(describe(address(cluster, n), topic)[0][0] == -1 for n in (1, 2, 3))
    # the controller counts the cluster's partitions without a leader (this one, and any other the
    # old leader was the last in-sync replica of); the other brokers say 0
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=10)
    offline = sum(p.leader == -1 for t in md.topics.values() for p in t.partitions.values())
    assert offline >= 1
    wait_until(lambda: sorted(cluster.metrics(n)["ringlog_offline_partitions"] for n in (1, 2, 3)) == [0, 0, offline],
               what="the offline partitions in the controller's metrics")
    assert cluster.metrics(controller(cluster.bootstrap))["ringlog_offline_partitions"] == offline
    for f in followers:
        assert produce(address(cluster, f), topic, b"refused")[0] == ErrorCode.not_leader_or_follower
        data = segment_bytes(cluster.partition_dir(f, topic, 0))
        assert b"all-2" in data  # a follower keeps what it had; nobody truncated it to the empty log


def test_aiokafka_producer_follows_a_leader_change(shared_cluster):
    """An aiokafka producer started before the leader's death goes on without a restart."""
    aiokafka = pytest.importorskip("aiokafka")
    import asyncio

    cluster = shared_cluster
    state = create_replicated(cluster.bootstrap, "aio", 1)
    victim = state[0][0]

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all",
                                             enable_idempotence=True, metadata_max_age_ms=1000,
                                             request_timeout_ms=15000, retry_backoff_ms=100)
        await producer.start()
        try:
            offsets = [(await producer.send_and_wait("aio", b"%d" % i, partition=0)).offset for i in range(20)]
            await loop.run_in_executor(None, cluster.brokers[victim].kill)
            live = ",".join(address(cluster, n) for n in (1, 2, 3) if n != victim)
            await loop.run_in_executor(None, lambda: wait_until(
                lambda: describe(live, "aio")[0][0] not in (victim, -1), timeout=30, what="a new leader"))
            for i in range(20, 40):
                offsets.append((await producer.send_and_wait("aio", b"%d" % i, partition=0)).offset)
            return offsets
        finally:
            await producer.stop()

    assert asyncio.run(main()) == list(range(40))
    cluster.restart(victim)
    wait_until(lambda: all(len(v[2]) == 3 for v in describe(cluster.bootstrap, "aio").values()), timeout=60,
               what="the restarted broker back in the ISR")


def test_controller_death_and_kafka_python_follows_the_leader(shared_cluster):
    cluster = shared_cluster
    kafka = pytest.importorskip("kafka")
    state = create_replicated(cluster.bootstrap, "moves", 1)
    old_controller = controller(cluster.bootstrap)
    assert old_controller in (1, 2, 3)
    producer = kafka.KafkaProducer(bootstrap_servers=cluster.bootstrap.split(","), acks="all", retries=20,
                                   retry_backoff_ms=200, metadata_max_age_ms=1000, request_timeout_ms=10000)
    for i in range(100):
        producer.send("moves", value=b"%d" % i, partition=0)
    producer.flush(30)
    # kill the controller, and the partition's leader if that is another broker
    victims = {old_controller, state[0][0]}
    before = {n: cluster.metrics(n) for n in (1, 2, 3)}
    for node in victims:
        cluster.brokers[node].kill()
    survivors = [n for n in (1, 2, 3) if n not in victims]
    live = ",".join(address(cluster, n) for n in survivors)
    new_controller = wait_until(lambda: (c := controller(live)) in survivors and c, timeout=30,
                                what="a new controller")
    # the new controller elected the dead leader's successor; every survivor saw the controller
    # key go and come back
    wait_until(lambda: describe(live, "moves")[0][0] in survivors, timeout=30, what="a new leader")
    elected = wait_until(lambda: (m := cluster.metrics(new_controller))["ringlog_leader_elections_total"]
                         > before[new_controller]["ringlog_leader_elections_total"] and m,
                         what="the new controller's elections counted")
    assert elected["ringlog_controller"] == 1
    for n in survivors:
        assert cluster.metrics(n)["ringlog_controller_changes_total"] >= before[n]["ringlog_controller_changes_total"] + 2
    if len(victims) == 1:
        wait_until(lambda: describe(live, "moves")[0][0] in survivors, timeout=30, what="a new leader")
        # the same producer object follows the leader change
        futures = [producer.send("moves", value=b"%d" % i, partition=0) for i in range(100, 200)]
        offsets = [f.get(timeout=60).offset for f in futures]
        assert offsets == list(range(100, 200))
        expected = 200
    else:
        # two of three dead: min.insync.replicas 2 cannot be met; the partition waits for one back
        cluster.restart(state[0][0])
        live = cluster.bootstrap
        wait_until(lambda: len(describe(live, "moves")[0][2]) >= 2, timeout=60, what="two in-sync replicas")
        futures = [producer.send("moves", value=b"%d" % i, partition=0) for i in range(100, 200)]
        assert [f.get(timeout=60).offset for f in futures] == list(range(100, 200))
        expected = 200
    producer.close(10)
    # the new controller creates topics (and their partitions' leaders)
    create_replicated(live, "after-controller", 1, rf=len(describe(live, "moves")[0][2]), min_isr=1)
    assert controller(live) == new_controller
    consumer = kafka.KafkaConsumer(bootstrap_servers=live.split(","), auto_offset_reset="earliest",
                                   enable_auto_commit=False, consumer_timeout_ms=20000)
    consumer.assign([kafka.TopicPartition("moves", 0)])
    values = []
    for msg in consumer:
        values.append(int(msg.value))
        if len(values) == expected:
            break
    consumer.close()
    assert values == list(range(expected))


def test_a_stalled_follower_is_shrunk_by_its_leader_and_counted(shared_cluster, tmp_path):
    """A follower whose fetcher stops while the broker stays alive (its etcd lease renewed: the
    controller sees nothing wrong) is taken out of the ISR by the leader after
    replica.lag.time.max.ms, and put back by it once it fetches again; the leader's metrics count
    the shrink and the expansion. Two brokers in this process on the module's etcd, cluster "stall"."""
    from prometheus_client.parser import text_string_to_metric_families

    from ringlog.broker.config import BrokerConfig
    from ringlog.broker.testing import BrokerThread

    def config(node: int) -> BrokerConfig:
        return BrokerConfig(listen_port=0, data_dir=str(tmp_path / f"b{node}"), node_id=node,
                            etcd_endpoints=shared_cluster.etcd.url, cluster_name="stall",
                            broker_session_timeout_ms=2000, replica_lag_time_max_ms=500,
                            replica_fetch_wait_max_ms=100)

    def metrics(b: BrokerThread) -> dict[str, float]:
        async def render() -> bytes:
            return b.broker.metrics.render()

        out = {}
        for family in text_string_to_metric_families(b.call(render).decode()):
            for s in family.samples:
                if not s.labels:
                    out[s.name] = s.value
        return out

    with BrokerThread(config(1)) as one, BrokerThread(config(2)) as two:
        brokers = {1: one, 2: two}
        bootstrap = f"{one.bootstrap},{two.bootstrap}"
        from confluent_kafka.admin import AdminClient

        wait_until(lambda: all(len(AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10).brokers) == 2
                               for b in (one, two)), what="both brokers to see each other")
        leader, replicas, _ = create_replicated(bootstrap, "stall", 1, rf=2, min_isr=2)[0]
        follower = brokers[3 - leader]
        lead = brokers[leader]
        wait_until(lambda: metrics(lead)["ringlog_leader_partitions"] == 1
                   and metrics(lead)["ringlog_under_replicated_partitions"] == 0, what="the leader's whole ISR")
        before = metrics(lead)

        async def stall() -> None:  # the fetcher stops; the broker and its lease go on
            follower.broker.partition("stall", 0).replication.scope.cancel()

        follower.call(stall)
        shrunk = wait_until(lambda: (m := metrics(lead))["ringlog_under_replicated_partitions"] == 1 and m,
                            timeout=15, what="the leader to shrink the ISR")
        assert shrunk["ringlog_isr_shrinks_total"] == before["ringlog_isr_shrinks_total"] + 1
        assert shrunk["ringlog_under_min_isr_partitions"] == 1
        assert shrunk["ringlog_isr_expands_total"] == before["ringlog_isr_expands_total"]
        assert describe(bootstrap, "stall")[0][2] == [leader]
        assert metrics(follower)["ringlog_replica_partitions"] == 1  # still a live replica

        async def resume() -> None:  # a new fetcher, as after a role change
            broker = follower.broker
            part = broker.partition("stall", 0)
            part.replication.epoch = -1  # so that the same state counts as a new role
            broker.cluster.replicas.become_follower(part, broker.cluster.states[("stall", 0)])

        follower.call(resume)
        grown = wait_until(lambda: (m := metrics(lead))["ringlog_under_replicated_partitions"] == 0 and m,
                           timeout=15, what="the leader to expand the ISR")
        assert grown["ringlog_isr_expands_total"] == before["ringlog_isr_expands_total"] + 1
        assert grown["ringlog_isr_shrinks_total"] == shrunk["ringlog_isr_shrinks_total"]
        assert grown["ringlog_under_min_isr_partitions"] == 0
        assert sorted(describe(bootstrap, "stall")[0][2]) == sorted(replicas)
