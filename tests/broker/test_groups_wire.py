"""Consumer-group APIs on the wire (kio requests over a socket), version by version, and the
coordinator's state across a broker restart."""
from __future__ import annotations

import datetime
import importlib
import time

import pytest
from kio.schema.errors import ErrorCode

from ringlog.broker.config import BrokerConfig
from ringlog.broker.handlers import make
from ringlog.broker.testing import BrokerThread
from ringlog.client.assignors import EMPTY_ASSIGNMENT, Assignment, Subscription, decode_assignment

from .conftest import RawClient

MS = datetime.timedelta(milliseconds=1)


def req(api: str, version: int, cls: str, /, **fields):
    mod = importlib.import_module(f"kio.schema.{api}.v{version}.request")
    return make(getattr(mod, cls), **fields)


nested_req = req


@pytest.fixture
def data_dir(tmp_path) -> str:
    return str(tmp_path / "data")


@pytest.fixture
def broker(data_dir):
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir, group_initial_rebalance_delay_ms=0)) as b:
        yield b


@pytest.fixture
def client(broker):
    c = RawClient(broker.host, broker.port)
    yield c
    c.close()


def _join(client, version, group="wg", member_id="", instance=None, topics=("wt",)):
    proto = nested_req("join_group", version, "JoinGroupRequestProtocol", name="range",
                       metadata=Subscription(topics=topics).encode())
    return _while_loading(lambda: client.call(req(
        "join_group", version, "JoinGroupRequest", group_id=group, session_timeout=6000 * MS,
        rebalance_timeout=10_000 * MS, member_id=member_id, group_instance_id=instance,
        protocol_type="consumer", protocols=(proto,))))


def _while_loading(call, timeout_s: float = 10.0):
    """Retry `call` while the coordinator answers COORDINATOR_LOAD_IN_PROGRESS (right after a
    start it is still reading __consumer_offsets), as every Kafka client does."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = call()
        if response.error_code != ErrorCode.coordinator_load_in_progress or time.monotonic() > deadline:
            return response
        time.sleep(0.01)  # a client's retry backoff, not synchronisation: the answer says when


def _create_topic(broker, name="wt", partitions=2):
    async def create():
        await broker.broker.create_topic(name, partitions)

    broker.call(create)


def test_find_coordinator_names_this_broker(broker, client) -> None:
    for v in (0, 1, 2, 3):
        r = client.call(req("find_coordinator", v, "FindCoordinatorRequest", key="g", key_type=0))
        assert r.error_code == ErrorCode.none
        assert (r.node_id, r.host, r.port) == (broker.broker.node_id, broker.host, broker.port)
    # key type 1: this broker is the transaction coordinator too
    r = client.call(req("find_coordinator", 3, "FindCoordinatorRequest", key="tx", key_type=1))
    assert r.error_code == ErrorCode.none and r.node_id == broker.broker.node_id
    r = client.call(req("find_coordinator", 3, "FindCoordinatorRequest", key="x", key_type=7))
    assert r.error_code == ErrorCode.invalid_request


def test_two_step_join_sync_heartbeat_commit_fetch(broker, client) -> None:
    _create_topic(broker)
    first = _join(client, 4)
    assert first.error_code == ErrorCode.member_id_required and first.member_id
    joined = _join(client, 4, member_id=first.member_id)
    assert joined.error_code == ErrorCode.none and joined.generation_id == 1
    assert joined.leader == first.member_id and joined.protocol_name == "range"
    assert [m.member_id for m in joined.members] == [first.member_id]
    # the leader assigns nothing to itself: it still gets a valid encoded empty assignment
    sync = client.call(req("sync_group", 3, "SyncGroupRequest", group_id="wg", generation_id=1,
                           member_id=first.member_id, group_instance_id=None, assignments=()))
    assert sync.error_code == ErrorCode.none and sync.assignment == EMPTY_ASSIGNMENT
    for v in (0, 3):
        hb = client.call(req("heartbeat", v, "HeartbeatRequest", group_id="wg", generation_id=1,
                             member_id=first.member_id, group_instance_id=None))
        assert hb.error_code == ErrorCode.none
    hb = client.call(req("heartbeat", 3, "HeartbeatRequest", group_id="wg", generation_id=0,
                         member_id=first.member_id, group_instance_id=None))
    assert hb.error_code == ErrorCode.illegal_generation
    part = nested_req("offset_commit", 8, "OffsetCommitRequestPartition", partition_index=1, committed_offset=42,
                      committed_leader_epoch=0, committed_metadata="meta")
    bad = nested_req("offset_commit", 8, "OffsetCommitRequestPartition", partition_index=9, committed_offset=1,
                     committed_leader_epoch=-1, committed_metadata=None)
    topic = nested_req("offset_commit", 8, "OffsetCommitRequestTopic", name="wt", partitions=(part, bad))
    r = client.call(req("offset_commit", 8, "OffsetCommitRequest", group_id="wg", generation_id_or_member_epoch=1,
                        member_id=first.member_id, group_instance_id=None, topics=(topic,)))
    codes = {p.partition_index: p.error_code for p in r.topics[0].partitions}
    assert codes == {1: ErrorCode.none, 9: ErrorCode.unknown_topic_or_partition}
    r = client.call(req("offset_fetch", 7, "OffsetFetchRequest", group_id="wg", topics=None, require_stable=False))
    assert r.error_code == ErrorCode.none
    got = {(t.name, p.partition_index): (p.committed_offset, p.committed_leader_epoch, p.metadata)
           for t in r.topics for p in t.partitions}
    assert got == {("wt", 1): (42, 0, "meta")}
    want = nested_req("offset_fetch", 1, "OffsetFetchRequestTopic", name="wt", partition_indexes=(0, 1))
    r = client.call(req("offset_fetch", 1, "OffsetFetchRequest", group_id="wg", topics=(want,)))
    assert {p.partition_index: p.committed_offset for p in r.topics[0].partitions} == {0: -1, 1: 42}
    # aiokafka's versions: JoinGroup v2 and SyncGroup v1 (no two-step join below v4)
    late = _join(client, 2)
    assert late.error_code == ErrorCode.none or late.error_code == ErrorCode.rebalance_in_progress


def test_admin_apis_list_describe_leave_delete(broker, client) -> None:
    _create_topic(broker)
    a = _join(client, 5, instance="ia")
    assert a.error_code == ErrorCode.none
    asg = Assignment(partitions={"wt": [0, 1]}).encode()
    item = nested_req("sync_group", 3, "SyncGroupRequestAssignment", member_id=a.member_id, assignment=asg)
    s = client.call(req("sync_group", 3, "SyncGroupRequest", group_id="wg", generation_id=a.generation_id,
                        member_id=a.member_id, group_instance_id="ia", assignments=(item,)))
    assert decode_assignment(s.assignment).partitions == {"wt": (0, 1)}
    r = client.call(req("list_groups", 4, "ListGroupsRequest", states_filter=("Stable",)))
    assert [(g.group_id, g.protocol_type, g.group_state) for g in r.groups] == [("wg", "consumer", "Stable")]
    r = client.call(req("list_groups", 4, "ListGroupsRequest", states_filter=("Empty",)))
    assert r.groups == ()
    r = client.call(req("describe_groups", 5, "DescribeGroupsRequest", groups=("wg", "nope"),
                        include_authorized_operations=False))
    wg, nope = r.groups
    assert (wg.group_state, wg.protocol_type, wg.protocol_data) == ("Stable", "consumer", "range")
    assert [(m.member_id, m.group_instance_id, m.client_id) for m in wg.members] == [(a.member_id, "ia", "raw")]
    assert decode_assignment(wg.members[0].member_assignment).partitions == {"wt": (0, 1)}
    assert nope.group_state == "Dead" and nope.error_code == ErrorCode.none
    r = client.call(req("describe_groups", 6, "DescribeGroupsRequest", groups=("nope",),
                        include_authorized_operations=False))
    assert r.groups[0].error_code == ErrorCode.group_id_not_found
    # a non-empty group cannot be deleted
    r = client.call(req("delete_groups", 2, "DeleteGroupsRequest", groups_names=("wg",)))
    assert r.results[0].error_code == ErrorCode.non_empty_group
    # batched LeaveGroup v3: the static member by instance id, plus an unknown one
    m1 = nested_req("leave_group", 3, "MemberIdentity", member_id="", group_instance_id="ia")
    m2 = nested_req("leave_group", 3, "MemberIdentity", member_id="ghost", group_instance_id=None)
    r = client.call(req("leave_group", 3, "LeaveGroupRequest", group_id="wg", members=(m1, m2)))
    assert r.error_code == ErrorCode.none
    assert [(m.member_id, m.group_instance_id, m.error_code) for m in r.members] == [
        ("", "ia", ErrorCode.none), ("ghost", None, ErrorCode.unknown_member_id)]
    r = client.call(req("leave_group", 0, "LeaveGroupRequest", group_id="wg", member_id="ghost"))
    assert r.error_code == ErrorCode.unknown_member_id
    # simple (generation -1) commits are allowed in the now-empty group; then delete its offsets
    part = nested_req("offset_commit", 2, "OffsetCommitRequestPartition", partition_index=0, committed_offset=5,
                      committed_metadata="")
    topic = nested_req("offset_commit", 2, "OffsetCommitRequestTopic", name="wt", partitions=(part,))
    r = client.call(req("offset_commit", 2, "OffsetCommitRequest", group_id="wg", generation_id_or_member_epoch=-1,
                        member_id="", retention_time=-1 * MS, topics=(topic,)))
    assert r.topics[0].partitions[0].error_code == ErrorCode.none
    dp = nested_req("offset_delete", 0, "OffsetDeleteRequestPartition", partition_index=0)
    dt = nested_req("offset_delete", 0, "OffsetDeleteRequestTopic", name="wt", partitions=(dp,))
    r = client.call(req("offset_delete", 0, "OffsetDeleteRequest", group_id="wg", topics=(dt,)))
    assert r.error_code == ErrorCode.none and r.topics[0].partitions[0].error_code == ErrorCode.none
    assert broker.broker.coordinator.state.fetch_offsets("wg")[1] == {}
    r = client.call(req("delete_groups", 2, "DeleteGroupsRequest", groups_names=("wg", "wg-none")))
    assert [(x.group_id, x.error_code) for x in r.results] == [
        ("wg", ErrorCode.none), ("wg-none", ErrorCode.group_id_not_found)]
    r = client.call(req("list_groups", 0, "ListGroupsRequest"))
    assert r.groups == ()


def test_groups_and_offsets_survive_a_restart(data_dir) -> None:
    config = BrokerConfig(listen_port=0, data_dir=data_dir, group_initial_rebalance_delay_ms=0)
    with BrokerThread(config) as b:
        _create_topic(b)
        c = RawClient(b.host, b.port)
        a = _join(c, 5, member_id=_join(c, 5).member_id)  # the two-step join of v4+
        assert a.error_code == ErrorCode.none
        item = nested_req("sync_group", 3, "SyncGroupRequestAssignment", member_id=a.member_id,
                          assignment=Assignment(partitions={"wt": [0]}).encode())
        c.call(req("sync_group", 3, "SyncGroupRequest", group_id="wg", generation_id=a.generation_id,
                   member_id=a.member_id, group_instance_id=None, assignments=(item,)))
        part = nested_req("offset_commit", 8, "OffsetCommitRequestPartition", partition_index=0, committed_offset=7,
                          committed_leader_epoch=-1, committed_metadata="")
        topic = nested_req("offset_commit", 8, "OffsetCommitRequestTopic", name="wt", partitions=(part,))
        c.call(req("offset_commit", 8, "OffsetCommitRequest", group_id="wg", generation_id_or_member_epoch=1,
                   member_id=a.member_id, group_instance_id=None, topics=(topic,)))
        c.close()
    with BrokerThread(config) as b:
        c = RawClient(b.host, b.port)
        hb = _while_loading(lambda: c.call(req("heartbeat", 3, "HeartbeatRequest", group_id="wg",
                                               generation_id=a.generation_id, member_id=a.member_id,
                                               group_instance_id=None)))
        assert hb.error_code == ErrorCode.none  # the member carries on against the restarted broker
        r = c.call(req("offset_fetch", 7, "OffsetFetchRequest", group_id="wg", topics=None, require_stable=False))
        assert [(t.name, p.partition_index, p.committed_offset) for t in r.topics for p in t.partitions] == [("wt", 0, 7)]
        s = c.call(req("sync_group", 3, "SyncGroupRequest", group_id="wg", generation_id=a.generation_id,
                       member_id=a.member_id, group_instance_id=None, assignments=()))
        assert decode_assignment(s.assignment).partitions == {"wt": (0,)}
        c.close()
