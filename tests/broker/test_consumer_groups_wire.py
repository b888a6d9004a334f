"""The KIP-848 consumer group protocol on the wire: ConsumerGroupHeartbeat and
ConsumerGroupDescribe through kio requests against a live broker, OffsetCommit v9 member epochs,
ListGroups types, and what a restart does to the (in-memory) membership."""
from __future__ import annotations

import datetime
import time
import uuid

import trio
from kio.schema.errors import ErrorCode

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.client.admin import Admin

from .conftest import RawClient
from .test_metrics import scrape
# the classic groups' wire tests' broker, client and helpers
from .test_groups_wire import MS, _create_topic, _while_loading, broker, client, data_dir, req  # noqa: F401


def hb(client, member_id, epoch, version=1, group="cg", owned=(), topics=("ct",), **fields):
    TP = __import__(f"kio.schema.consumer_group_heartbeat.v{version}.request", fromlist=["x"]).TopicPartitions
    owned_tps = None if owned is None else tuple(
        TP(topic_id=tid, partitions=tuple(sorted(ps))) for tid, ps in _by_topic(owned).items())
    if epoch == 0:
        fields.setdefault("rebalance_timeout", 30_000 * MS)
    return client.call(req(
        "consumer_group_heartbeat", version, "ConsumerGroupHeartbeatRequest",
        group_id=group, member_id=member_id, member_epoch=epoch,
        subscribed_topic_names=topics if epoch == 0 else fields.pop("subscribed_topic_names", None),
        topic_partitions=owned_tps, **fields,
    ))


def _by_topic(tps):
    out: dict = {}
    for tid, p in tps:
        out.setdefault(tid, set()).add(p)
    return out


def assigned(response) -> set:
    assert response.assignment is not None
    return {(tp.topic_id, p) for tp in response.assignment.topic_partitions for p in tp.partitions}


def describe(client, *groups, version=1):
    return client.call(req("consumer_group_describe", version, "ConsumerGroupDescribeRequest",
                           group_ids=groups, include_authorized_operations=False)).groups


def commit(client, member_id, epoch, version=9, group="cg", offset=7):
    P = __import__(f"kio.schema.offset_commit.v{version}.request", fromlist=["x"])
    r = client.call(req("offset_commit", version, "OffsetCommitRequest", group_id=group,
                        generation_id_or_member_epoch=epoch, member_id=member_id, group_instance_id=None,
                        retention_time=-1 * MS,
                        topics=(P.OffsetCommitRequestTopic(name="ct", partitions=(
                            P.OffsetCommitRequestPartition(partition_index=0, committed_offset=offset,
                                                           committed_leader_epoch=-1, committed_metadata=""),)),)))
    return r.topics[0].partitions[0].error_code


def fetch(client, group, member_id, epoch, *more, version=9):
    G = __import__(f"kio.schema.offset_fetch.v{version}.request", fromlist=["x"]).OffsetFetchRequestGroup
    groups = [req("offset_fetch", version, "OffsetFetchRequestGroup", group_id=group, member_id=member_id,
                  member_epoch=epoch, topics=None)]
    groups += [G(group_id=g, topics=None) for g in more]
    return client.call(req("offset_fetch", version, "OffsetFetchRequest", groups=tuple(groups),
                           require_stable=False)).groups


def test_api_versions_advertise_the_consumer_protocol(client) -> None:
    r = client.call(req("api_versions", 3, "ApiVersionsRequest", client_software_name="t",
                        client_software_version="1"))
    ranges = {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in r.api_keys}
    assert ranges[68] == (0, 1) and ranges[69] == (0, 1) and ranges[8][1] == 9 and ranges[9][1] == 9


def test_two_members_reconcile_commit_and_leave(broker, client) -> None:
    _create_topic(broker, "ct", 4)
    tid = broker.broker.metadata.get("ct").topic_id
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    ra = hb(client, a, 0)
    assert ra.error_code == ErrorCode.none and ra.member_id == a and ra.member_epoch == 1
    assert assigned(ra) == {(tid, p) for p in range(4)} and ra.heartbeat_interval == 5000 * MS
    rb = hb(client, b, 0)
    assert rb.member_epoch == 2 and assigned(rb) == set()
    ra = hb(client, a, 1, owned={(tid, p) for p in range(4)})
    keep = assigned(ra)
    assert ra.member_epoch == 1 and len(keep) == 2  # revoke the other two first
    ra = hb(client, a, 1, owned=keep)
    assert ra.member_epoch == 2
    rb = hb(client, b, 2, owned=set())
    assert assigned(rb) == {(tid, p) for p in range(4)} - keep
    [d] = describe(client, "cg")
    assert d.error_code == ErrorCode.none and d.group_state == "Stable" and d.group_epoch == 2
    assert d.assignor_name == "uniform"
    got = {m.member_id: {(t.topic_id, p) for t in m.assignment.topic_partitions for p in t.partitions}
           for m in d.members}
    assert got == {a: keep, b: {(tid, p) for p in range(4)} - keep}
    assert all(t.topic_name == "ct" for m in d.members for t in m.target_assignment.topic_partitions)
    # OffsetCommit v9 carries the member epoch
    assert commit(client, a, 2) == ErrorCode.none
    assert commit(client, a, 1) == ErrorCode.stale_member_epoch
    assert commit(client, "stranger", 2) == ErrorCode.unknown_member_id
    assert commit(client, a, 2, version=8) == ErrorCode.unsupported_version
    # OffsetFetch v9 names the member: its current epoch reads, an old one is stale
    assert fetch(client, "cg", a, 2)[0].topics[0].partitions[0].committed_offset == 7
    assert fetch(client, "cg", a, 1)[0].error_code == ErrorCode.stale_member_epoch
    assert fetch(client, "cg", "stranger", 2)[0].error_code == ErrorCode.unknown_member_id
    # v8: several groups at once, without members
    both = fetch(client, "cg", None, -1, "nogroup", version=8)
    assert [(g.group_id, g.error_code) for g in both] == [("cg", ErrorCode.none), ("nogroup", ErrorCode.none)]
    assert both[0].topics[0].partitions[0].committed_offset == 7 and both[1].topics == ()
    # ListGroups v5: the type filter
    lg = client.call(req("list_groups", 5, "ListGroupsRequest", states_filter=(), types_filter=("consumer",)))
    assert [(g.group_id, g.group_type, g.group_state) for g in lg.groups] == [("cg", "consumer", "Stable")]
    lg = client.call(req("list_groups", 5, "ListGroupsRequest", states_filter=(), types_filter=("classic",)))
    assert [g.group_id for g in lg.groups] == []
    # the classic protocol cannot join it; DescribeGroups does not describe it
    jp = __import__("kio.schema.join_group.v5.request", fromlist=["x"]).JoinGroupRequestProtocol
    j = client.call(req("join_group", 5, "JoinGroupRequest", group_id="cg", session_timeout=10_000 * MS,
                        rebalance_timeout=10_000 * MS, member_id="", group_instance_id=None,
                        protocol_type="consumer", protocols=(jp(name="range", metadata=b""),)))
    assert j.error_code == ErrorCode.inconsistent_group_protocol
    dg = client.call(req("describe_groups", 5, "DescribeGroupsRequest", groups=("cg",),
                         include_authorized_operations=False))
    assert dg.groups[0].group_state == "Dead"
    # ringlog's own admin client (and so `ringlog groups describe`) falls back to ConsumerGroupDescribe
    async def own_admin():
        async with Admin(broker.bootstrap) as admin:
            return (await admin.describe_groups(["cg"]))["cg"]

    desc = trio.run(own_admin)
    assert (desc.state, desc.protocol_type, desc.protocol) == ("Stable", "consumer", "uniform")
    assert {m.member_id: {p for _, p in m.assignment} for m in desc.members} == \
        {a: {p for _, p in keep}, b: {p for _, p in set(got[b])}}
    # leaving: b takes everything
    assert hb(client, a, -1, owned=None).member_epoch == -1
    rb = hb(client, b, 2, owned=assigned(rb))
    assert rb.member_epoch == 3 and assigned(rb) == {(tid, p) for p in range(4)}


def test_errors_on_the_wire(broker, client) -> None:
    _create_topic(broker, "ct", 1)
    r = hb(client, "", 0)
    assert r.error_code == ErrorCode.invalid_request and r.error_message == "MemberId can't be empty."
    r = hb(client, "", 0, version=0)  # v0: the coordinator names the member
    assert r.error_code == ErrorCode.none and len(r.member_id) == 22
    assert hb(client, r.member_id, 9, version=0, owned=None).error_code == ErrorCode.fenced_member_epoch
    assert hb(client, "x", 0, server_assignor="nope").error_code == ErrorCode.unsupported_assignor
    assert hb(client, "x", 0, topics=(), subscribed_topic_regex="[").error_code == \
        ErrorCode.invalid_regular_expression
    [d] = describe(client, "nothing")
    assert d.error_code == ErrorCode.group_id_not_found


def test_a_restart_forgets_members_but_keeps_offsets(data_dir) -> None:
    config = BrokerConfig(listen_port=0, data_dir=data_dir)
    with BrokerThread(config) as b:
        _create_topic(b, "ct", 1)
        c = RawClient(b.host, b.port)
        r = hb(c, "m", 0)
        assert commit(c, "m", r.member_epoch, offset=41) == ErrorCode.none
        c.close()
    with BrokerThread(config) as b:
        c = RawClient(b.host, b.port)
        r = _while_loading(lambda: hb(c, "m", 1, owned=None))
        assert r.error_code == ErrorCode.unknown_member_id
        # the member rejoins with epoch 0 and finds its committed offset
        r = hb(c, "m", 0)
        assert r.error_code == ErrorCode.none and r.member_epoch == 1
        f = c.call(req("offset_fetch", 7, "OffsetFetchRequest", group_id="cg", topics=None, require_stable=False))
        assert f.topics[0].partitions[0].committed_offset == 41
        c.close()


def test_the_broker_fences_a_silent_member(data_dir) -> None:
    """The runtime's timer: a member that stops heartbeating is removed after
    group.consumer.session.timeout.ms and the other one gets its partitions."""
    config = BrokerConfig(listen_port=0, data_dir=data_dir, group_consumer_session_timeout_ms=1000,
                          group_consumer_heartbeat_interval_ms=100, metrics_listen_host="127.0.0.1",
                          metrics_listen_port=0)
    with BrokerThread(config) as b:
        _create_topic(b, "ct", 2)
        c = RawClient(b.host, b.port)
        assert hb(c, "quiet", 0).member_epoch == 1
        r = hb(c, "busy", 0)
        assert r.member_epoch == 2 and r.heartbeat_interval == 100 * MS
        assert scrape(b).value("ringlog_consumer_group_members", group="cg") == 2
        owned: set = set()
        deadline = time.monotonic() + 15
        while len(owned) < 2 and time.monotonic() < deadline:
            r = hb(c, "busy", r.member_epoch, owned=owned)
            assert r.error_code == ErrorCode.none
            if r.assignment is not None:
                owned = assigned(r)
            time.sleep(r.heartbeat_interval / datetime.timedelta(seconds=1))  # the heartbeat interval it was told
        assert len(owned) == 2
        [d] = describe(c, "cg")
        assert [m.member_id for m in d.members] == ["busy"]
        assert scrape(b).value("ringlog_consumer_group_members", group="cg") == 1
        c.close()
