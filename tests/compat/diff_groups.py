"""Differential cases for consumer groups (classic protocol) and configs: the request sequences
of races a client meets (unknown member, generation mismatch, rebalance in progress), offsets of
unknown groups, DescribeConfigs and IncrementalAlterConfigs edge cases."""
from __future__ import annotations

import struct

from tests.conftest import wait_for

from . import diff_requests as rq
from .differential import Side, configs_by_name, ms, plain, req, sort_by

SESSION_MS = 10_000


def subscription(*topics: str) -> bytes:
    """ConsumerProtocolSubscription v0: the topics, no user data."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def assignment(topic: str, partitions) -> bytes:
    """ConsumerProtocolAssignment v0."""
    return (struct.pack(">hih", 0, 1, len(topic)) + topic.encode() + struct.pack(">i", len(partitions))
            + b"".join(struct.pack(">i", p) for p in partitions) + struct.pack(">i", -1))


def join(group: str, member_id: str = "", *, version: int = 5, topic: str = "t"):
    Req, m = req(11, version)
    kw = {"group_instance_id": None} if version >= 5 else {}
    return Req(group_id=group, session_timeout=ms(SESSION_MS), rebalance_timeout=ms(SESSION_MS), member_id=member_id,
               protocol_type="consumer", protocols=(m.JoinGroupRequestProtocol(name="range", metadata=subscription(topic)),),
               **kw)


def sync(group: str, generation: int, member_id: str, assignments=(), *, version: int = 3):
    Req, m = req(14, version)
    kw = {"group_instance_id": None} if version >= 3 else {}
    return Req(group_id=group, generation_id=generation, member_id=member_id, assignments=tuple(
        m.SyncGroupRequestAssignment(member_id=mid, assignment=data) for mid, data in assignments), **kw)


def heartbeat(group: str, generation: int, member_id: str, *, version: int = 3):
    Req, _m = req(12, version)
    kw = {"group_instance_id": None} if version >= 3 else {}
    return Req(group_id=group, generation_id=generation, member_id=member_id, **kw)


def leave(group: str, member_id: str, *, version: int = 3):
    Req, m = req(13, version)
    if version >= 3:
        return Req(group_id=group, members=(m.MemberIdentity(member_id=member_id, group_instance_id=None),))
    return Req(group_id=group, member_id=member_id)


def offset_commit(group: str, topic: str, offsets, *, generation: int = -1, member_id: str = "", version: int = 8):
    Req, m = req(8, version)
    parts = []
    for p, o in offsets:
        kw = {"committed_leader_epoch": -1} if version >= 6 else {}
        parts.append(m.OffsetCommitRequestPartition(partition_index=p, committed_offset=o, committed_metadata="md", **kw))
    kw = {}
    if 2 <= version <= 4:
        kw["retention_time"] = ms(-1)
    if version >= 7:
        kw["group_instance_id"] = None
    return Req(group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
               topics=(m.OffsetCommitRequestTopic(name=topic, partitions=tuple(parts)),), **kw)


def offset_fetch(group: str, topic: str | None, partitions=(0,), *, version: int = 7):
    Req, m = req(9, version)
    topics = None if topic is None else (m.OffsetFetchRequestTopic(name=topic, partition_indexes=tuple(partitions)),)
    kw = {"require_stable": False} if version >= 7 else {}
    return Req(group_id=group, topics=topics, **kw)


def group_race(s: Side, name: str) -> None:
    """Two members: join with and without member ids, sync with a wrong generation, unknown
    members, a heartbeat during the rebalance the second member starts, leave."""
    group = name + "-g"
    rq.topic(s, name, 2)
    rq.find_coordinator(s, group)
    call = lambda request, label, conn=None: s.call(request, label, conn=conn, shape=s.members)  # noqa: E731
    first = call(join(group, topic=name), "join without member id")
    m1 = first.member_id
    j1 = call(join(group, m1, topic=name), "join with the given id")
    gen = j1.generation_id
    call(heartbeat(group, gen, m1), "heartbeat before sync")
    call(sync(group, gen + 1, m1), "sync, wrong generation")
    call(sync(group, gen, "ghost"), "sync, unknown member")
    call(sync(group, gen, m1, [(m1, assignment(name, [0, 1]))]), "sync as leader")
    call(heartbeat(group, gen, m1), "heartbeat")
    call(heartbeat(group, gen - 1, m1), "heartbeat, old generation")
    call(heartbeat(group, gen, "ghost"), "heartbeat, unknown member")
    call(heartbeat(group + "-nope", 1, m1), "heartbeat, unknown group")
    call(offset_commit(group, name, [(0, 5)], generation=gen, member_id=m1), "commit in generation")
    call(offset_commit(group, name, [(0, 6)], generation=gen + 3, member_id=m1), "commit, wrong generation")
    call(offset_commit(group, name, [(0, 7)], generation=gen, member_id="ghost"), "commit, unknown member")
    # a second member: its JoinGroup waits for the first to rejoin
    other = s.connect()
    got = other.call(join(group, topic=name))
    m2 = got.member_id
    pending = other.send(join(group, m2, topic=name))
    # the first learns of the rebalance from its heartbeat (polled: the join reaches the group
    # asynchronously)
    wait_for(lambda: s.quiet(heartbeat(group, gen, m1)).error_code == 27, f"the rebalance on {s.name}", 15)
    call(heartbeat(group, gen, m1), "heartbeat during the rebalance")
    call(offset_commit(group, name, [(0, 8)], generation=gen, member_id=m1), "commit during the rebalance")
    # (the members' order in the leader's JoinGroup answer is each broker's own)
    j = s.call(join(group, m1, topic=name), "rejoin",
               shape=lambda v: sort_by("member_id", ("members",))(s.members(v)))
    corr, j2 = other.receive(join(group, m2))
    assert corr == pending
    s.answers.append(("second member's join", s.members(plain(j2))))
    gen2 = j.generation_id
    follower = other.send(sync(group, gen2, m2))
    leader_id = j.leader
    plan = [(m1, assignment(name, [0])), (m2, assignment(name, [1]))]
    call(sync(group, gen2, m1, plan if leader_id == m1 else []), "first member's sync")
    if leader_id != m1:
        call(sync(group, gen2, m2, plan), "leader's sync", conn=other)
    corr, sync2 = other.receive(sync(group, gen2, m2))
    assert corr == follower
    s.answers.append(("second member's sync", s.members(plain(sync2))))
    call(leave(group, m2), "leave", conn=other)
    call(leave(group, "ghost"), "leave, unknown member")
    call(heartbeat(group, gen2, m1), "heartbeat after a leave")
    call(offset_fetch(group, name, (0, 1)), "committed")


def offsets_unknown_group(version_commit: int, version_fetch: int):
    def case(s: Side, name: str) -> None:
        group = name + "-g"
        rq.topic(s, name, 2)
        rq.find_coordinator(s, group)
        s.call(offset_fetch(group, name, (0, 1), version=version_fetch), "fetch, unknown group")
        s.call(offset_commit(group, name, [(0, 3)], generation=5, member_id="ghost", version=version_commit),
               "commit, unknown group with a generation")
        s.call(offset_commit(group, name, [(0, 3), (1, 4)], version=version_commit), "simple commit")
        s.call(offset_commit(group, name + "-nope", [(0, 3)], version=version_commit), "commit, unknown topic")
        s.call(offset_commit(group, name, [(9, 3)], version=version_commit), "commit, unknown partition")
        s.call(offset_fetch(group, name, (0, 1, 9), version=version_fetch), "fetch after commit")
        if version_fetch >= 2:
            s.call(offset_fetch(group, None, version=version_fetch), "fetch all")
    return case


def join_unknown_member(version: int):
    def case(s: Side, name: str) -> None:
        group = name + "-g"
        rq.find_coordinator(s, group)
        s.call(join(group, "ghost", version=version), "join with an unknown member id", shape=s.members)
        s.call(sync(group, 1, "ghost"), "sync, unknown group", shape=s.members)
        s.call(leave(group, "ghost"), "leave, unknown group", shape=s.members)
    return case


def describe_configs(version: int):
    def case(s: Side, name: str) -> None:
        rq.topic(s, name, 1, {"retention.ms": "7200000", "cleanup.policy": "compact"})
        Req, m = req(32, version)
        kw = {"include_synonyms": False} if version >= 1 else {}
        if version >= 3:
            kw["include_documentation"] = False

        def ask(label: str, resources) -> None:
            s.call(Req(resources=tuple(m.DescribeConfigsResource(resource_type=t, resource_name=n, configuration_keys=k)
                                       for t, n, k in resources), **kw), label, shape=configs_by_name)

        keys = ("retention.ms", "cleanup.policy", "segment.bytes", "max.message.bytes", "no.such.config")
        ask("topic keys", [(2, name, keys)])
        ask("unknown topic", [(2, name + "-nope", keys)])
        ask("broker keys", [(4, "1", ("message.max.bytes", "num.partitions", "auto.create.topics.enable",
                                      "log.segment.bytes"))])
        ask("other broker", [(4, "7", ("num.partitions",))])
        ask("bad broker id", [(4, "one", ("num.partitions",))])
        ask("bad topic name", [(2, "bad name!", ("retention.ms",))])
    return case


def incremental_alter_configs(version: int):
    def case(s: Side, name: str) -> None:
        rq.topic(s, name, 1)
        Req, m = req(44, version)
        Dreq, dm = req(32, 4)

        def alter(label: str, ops, topic: str = name, validate_only: bool = False) -> None:
            s.call(Req(resources=(m.AlterConfigsResource(resource_type=2, resource_name=topic, configs=tuple(
                m.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in ops)),),
                validate_only=validate_only), label)

        def show(label: str) -> None:
            s.call(Dreq(resources=(dm.DescribeConfigsResource(resource_type=2, resource_name=name, configuration_keys=(
                "retention.ms", "cleanup.policy", "segment.ms")),), include_synonyms=False, include_documentation=False),
                label, shape=configs_by_name)

        SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
        alter("set", [("retention.ms", SET, "1000")])
        alter("bad value", [("retention.ms", SET, "abc")])
        alter("unknown key", [("no.such.config", SET, "1")])
        alter("append to a list", [("cleanup.policy", APPEND, "compact")])
        alter("append to a non-list", [("retention.ms", APPEND, "5")])
        alter("subtract", [("cleanup.policy", SUBTRACT, "delete")])
        alter("the same key twice", [("segment.ms", SET, "100000"), ("segment.ms", SET, "200000")])
        alter("validate only", [("segment.ms", SET, "3600000")], validate_only=True)
        alter("unknown topic", [("retention.ms", SET, "1000")], topic=name + "-nope")
        show("after")
        alter("delete", [("retention.ms", DELETE, None)])
        alter("delete a key not set", [("segment.ms", DELETE, None)])
        show("after delete")
    return case
