"""The coordinator state machine, scenario by scenario (Kafka's classic protocol semantics)."""
from __future__ import annotations

from kio.schema.errors import ErrorCode

from ringlog.broker.coordinator import (
    COMPLETING_REBALANCE,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    CommitEntry,
    CommitRequest,
    GroupCoordinator,
    JoinRequest,
    LeaveMember,
    lag_report,
)
from ringlog.client.assignors import EMPTY_ASSIGNMENT, decode_assignment

from .sim import Sim


def _stable_pair(s: Sim):
    """Two members in a Stable group at generation 2 (the second join rebalanced gen 1)."""
    a = s.join(client_id="a")
    ra = s.reply(a)
    assert ra.error == ErrorCode.none and ra.generation_id == 1 and ra.leader == ra.member_id
    s.run_sync = s.sync(ra.member_id, 1, assignments=s.leader_assign(ra))
    b = s.join(client_id="b")
    assert s.reply(b) is None  # waits for a to rejoin
    assert s.c.group("g").state == PREPARING_REBALANCE
    assert s.heartbeat(ra.member_id, 1) == ErrorCode.rebalance_in_progress
    a2 = s.join(member_id=ra.member_id, client_id="a")
    ra2, rb = s.reply(a2), s.reply(b)
    assert ra2.generation_id == rb.generation_id == 2
    assert ra2.leader == ra.member_id and len(ra2.members) == 2 and rb.members == ()
    ta = s.sync(ra.member_id, 2, assignments=s.leader_assign(ra2))
    tb = s.sync(rb.member_id, 2)
    return ra.member_id, rb.member_id, s.reply(ta), s.reply(tb)


def test_join_sync_and_rebalance_on_second_member() -> None:
    s = Sim()
    a, b, sa, sb = _stable_pair(s)
    g = s.c.group("g")
    assert g.state == STABLE and g.generation == 2 and g.leader == a
    pa = decode_assignment(sa.assignment).topic_partitions()
    pb = decode_assignment(sb.assignment).topic_partitions()
    assert sorted(pa + pb) == [("t", p) for p in range(6)] and not set(pa) & set(pb)
    # the leader's sync persisted the group with the assignments
    assert s.log and s.heartbeat(a, 2) == ErrorCode.none
    assert s.heartbeat(a, 1) == ErrorCode.illegal_generation
    assert s.heartbeat("nobody", 2) == ErrorCode.unknown_member_id


def test_follower_sync_waits_for_leader_and_missing_assignment_is_encoded_empty() -> None:
    s = Sim()
    ra = s.reply(s.join(client_id="a"))
    s.sync(ra.member_id, 1, assignments=s.leader_assign(ra))
    tb = s.join(client_id="b")
    a2 = s.reply(s.join(member_id=ra.member_id, client_id="a"))
    rb = s.reply(tb)
    fb = s.sync(rb.member_id, 2)
    assert s.reply(fb) is None  # the follower waits for the leader's assignment
    # the leader gives b nothing at all
    fa = s.sync(a2.member_id, 2, assignments=[(a2.member_id, b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"), ("ghost", b"x")])
    assert s.reply(fa).error == ErrorCode.none
    assert s.reply(fb).error == ErrorCode.none
    assert s.reply(fb).assignment == EMPTY_ASSIGNMENT  # never a zero-length blob


def test_member_id_required_two_step_join() -> None:
    s = Sim()
    r1 = s.reply(s.join(v4=True))
    assert r1.error == ErrorCode.member_id_required and r1.member_id
    assert s.c.group("g").pending
    r2 = s.reply(s.join(member_id=r1.member_id, v4=True))
    assert r2.error == ErrorCode.none and r2.member_id == r1.member_id and r2.generation_id == 1
    # a pending id that never comes back expires after its session timeout
    r3 = s.reply(s.join(v4=True, session=6000))
    assert r3.member_id in s.c.group("g").pending
    s.advance(6001)
    assert r3.member_id not in s.c.group("g").pending


def test_session_expiry_removes_member_and_rebalances() -> None:
    s = Sim()
    a, b, _, _ = _stable_pair(s)
    for _ in range(5):
        s.advance(3000)
        assert s.heartbeat(a, 2) in (ErrorCode.none, ErrorCode.rebalance_in_progress)
    g = s.c.group("g")
    assert b not in g.members  # b stopped heartbeating 15 s ago (session 10 s)
    assert g.state in (PREPARING_REBALANCE, COMPLETING_REBALANCE)
    ra = s.reply(s.join(member_id=a))
    assert ra.generation_id == 3 and [m.member_id for m in ra.members] == [a]


def test_rebalance_timeout_drops_members_that_do_not_rejoin() -> None:
    s = Sim()
    a, b, _, _ = _stable_pair(s)
    t = s.join(member_id=a)  # the leader rejoins: rebalance; b keeps heartbeating but never rejoins
    assert s.reply(t) is None
    for _ in range(8):
        s.advance(3000)
        s.heartbeat(b, 2)
    r = s.reply(t)
    assert r is not None and r.generation_id == 3 and [m.member_id for m in r.members] == [a]
    assert s.heartbeat(b, 2) == ErrorCode.unknown_member_id


def test_sync_timeout_removes_members_that_never_sync() -> None:
    s = Sim()
    ra = s.reply(s.join(client_id="a"))
    assert s.c.group("g").state == COMPLETING_REBALANCE
    s.advance(20_001)  # rebalance timeout 20 s, no SyncGroup
    g = s.c.group("g")
    # gone: the member was removed, and the empty group without offsets was then deleted
    assert g is None or (ra.member_id not in g.members and g.state == EMPTY)


def test_leave_group_batched_and_by_instance_id() -> None:
    s = Sim()
    a, b, _, _ = _stable_pair(s)
    r = s.leave(LeaveMember(a), LeaveMember("ghost"))
    assert r.members == ((a, None, ErrorCode.none), ("ghost", None, ErrorCode.unknown_member_id))
    assert s.c.group("g").state == PREPARING_REBALANCE
    # b rejoins, alone: new generation, b leads
    rb = s.reply(s.join(member_id=b))
    assert rb.leader == b and rb.generation_id == 3
    # static member removed by instance id only
    s2 = Sim()
    r = s2.reply(s2.join(instance="i-1"))
    out = s2.leave(LeaveMember("", "i-1"))
    assert out.members[0][2] == ErrorCode.none and not s2.c.group("g").members
    assert s2.leave(LeaveMember("x"), group="nope").members[0][2] == ErrorCode.unknown_member_id


def test_static_member_restart_keeps_assignment_without_rebalance() -> None:
    s = Sim()
    ta = s.join(client_id="a", instance="ia")
    ra = s.reply(ta)
    tb = s.join(client_id="b", instance="ib")
    ra2 = s.reply(s.join(member_id=ra.member_id, client_id="a", instance="ia"))
    rb = s.reply(tb)
    s.sync(ra.member_id, 2, assignments=s.leader_assign(ra2), instance="ia")
    before = s.reply(s.sync(rb.member_id, 2, instance="ib"))
    records_before = len(s.log)
    # b restarts: joins with an empty member id and its instance id
    nb = s.reply(s.join(client_id="b", instance="ib"))
    assert nb.error == ErrorCode.none and nb.member_id != rb.member_id and nb.generation_id == 2
    assert nb.leader == ra.member_id  # not b: it must not assign
    g = s.c.group("g")
    assert g.state == STABLE and g.generation == 2 and len(s.log) == records_before + 1
    after = s.reply(s.sync(nb.member_id, 2, instance="ib"))
    assert after.assignment == before.assignment
    # the old incarnation is fenced
    assert s.heartbeat(rb.member_id, 2, instance="ib") == ErrorCode.fenced_instance_id
    # a restarted static leader gets its assignment back too, and the leader id follows it
    na = s.reply(s.join(client_id="a", instance="ia"))
    assert na.leader == ra.member_id and s.c.group("g").leader == na.member_id
    assert s.c.group("g").state == STABLE


def test_protocol_selection_by_vote_and_inconsistent_protocol() -> None:
    s = Sim()
    sub = b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"
    t1 = s.join(client_id="a", protocols=(("roundrobin", sub), ("range", sub)))
    r1 = s.reply(t1)
    s.sync(r1.member_id, 1)
    t2 = s.join(client_id="b", protocols=(("range", sub), ("roundrobin", sub)))
    t3 = s.join(client_id="c", protocols=(("range", sub),))
    s.join(member_id=r1.member_id, client_id="a", protocols=(("roundrobin", sub), ("range", sub)))
    assert s.reply(t2).protocol_name == "range"  # roundrobin is not supported by c
    bad = s.reply(s.join(client_id="d", protocols=(("sticky", sub),)))
    assert bad.error == ErrorCode.inconsistent_group_protocol
    assert s.reply(s.join(client_id="e", protocols=())).error == ErrorCode.inconsistent_group_protocol
    assert s.reply(s.join(client_id="f", session=10)).error == ErrorCode.invalid_session_timeout
    assert s.reply(s.join(group="")).error == ErrorCode.invalid_group_id
    assert s.reply(s.join(group="new", member_id="stale")).error == ErrorCode.unknown_member_id
    assert s.reply(t3).error == ErrorCode.none


def test_initial_rebalance_delay_gathers_members() -> None:
    s = Sim(group_initial_rebalance_delay_ms=3000)
    t1 = s.join(client_id="a")
    s.advance(1000)
    t2 = s.join(client_id="b")
    s.advance(2001)
    assert s.reply(t1) is None  # a member arrived during the delay: extended once more
    s.advance(3000)
    r1, r2 = s.reply(t1), s.reply(t2)
    assert r1.generation_id == r2.generation_id == 1 and len(r1.members if r1.members else r2.members) == 2


def test_offsets_commit_fetch_simple_and_member_rules() -> None:
    s = Sim()
    # a standalone consumer (no group management) commits with generation -1
    r = s.commit({("t", 0): 5, ("t", 1): 7}, group="simple")
    assert all(e == ErrorCode.none for _, _, e in r.partitions)
    err, got = s.c.fetch_offsets("simple", [("t", 0), ("t", 9)])
    assert err == ErrorCode.none and got[("t", 0)].offset == 5 and got[("t", 9)] is None
    a, b, _, _ = _stable_pair(s)
    assert s.commit({("t", 0): 1}, member_id=a, generation=2).partitions[0][2] == ErrorCode.none
    assert s.commit({("t", 0): 1}, member_id=a, generation=1).partitions[0][2] == ErrorCode.illegal_generation
    assert s.commit({("t", 0): 1}, member_id="x", generation=2).partitions[0][2] == ErrorCode.unknown_member_id
    assert s.commit({("t", 0): 1}).partitions[0][2] == ErrorCode.unknown_member_id  # group not empty
    assert s.commit({("t", 0): 1}, group="gone", member_id="m", generation=3).partitions[0][2] == ErrorCode.illegal_generation
    # a failed append answers a retriable error and commits nothing
    s.fail_next_append = True
    r = s.commit({("t", 0): 99}, member_id=a, generation=2)
    assert r.partitions[0][2] == ErrorCode.coordinator_not_available
    assert s.c.fetch_offsets("g", [("t", 0)])[1][("t", 0)].offset == 1
    big = s.c.commit(s.now, CommitRequest("g", 2, a, None, (
        __import__("ringlog.broker.coordinator", fromlist=["CommitEntry"]).CommitEntry("t", 0, 1, -1, "x" * 5000),)))
    assert s.reply(s.run(big)).partitions[0][2] == ErrorCode.offset_metadata_too_large


def test_replay_rebuilds_offsets_and_groups() -> None:
    s = Sim()
    a, b, sa, sb = _stable_pair(s)
    s.commit({("t", 0): 11, ("t", 1): 12}, member_id=a, generation=2)
    s.commit({("t", 0): 13}, member_id=a, generation=2)
    s.commit({("u", 0): 1}, group="other")
    s.run(s.c.delete_offsets(s.now, "other", [("u", 0)]))
    fresh = GroupCoordinator(s.config, loading=True)
    assert fresh.fetch_offsets("g")[0] == ErrorCode.coordinator_load_in_progress
    out = fresh.join(s.now, JoinRequest("g", "", "consumer", (("range", b""),), 10_000))
    assert fresh.finish(out)[out.token].error == ErrorCode.coordinator_load_in_progress
    for key, value in s.log:
        fresh.replay(key, value)
    fresh.load_complete(s.now)
    _, got = fresh.fetch_offsets("g")
    assert {tp: o.offset for tp, o in got.items()} == {("t", 0): 13, ("t", 1): 12}
    assert fresh.fetch_offsets("other")[1] == {}
    g = fresh.group("g")
    assert g.state == STABLE and g.generation == 2 and set(g.members) == {a, b} and g.leader == a
    assert g.members[b].assignment == sb.assignment
    # the members carry on heartbeating against the restarted coordinator
    out = fresh.heartbeat(s.now, __import__("ringlog.broker.coordinator", fromlist=["HeartbeatRequest"]).HeartbeatRequest("g", 2, b))
    assert fresh.finish(out)[out.token] == ErrorCode.none


def test_offsets_expire_for_empty_groups_then_group_dies() -> None:
    s = Sim(offsets_retention_ms=60_000, offsets_retention_check_interval_ms=1000)
    a, b, _, _ = _stable_pair(s)
    s.commit({("t", 0): 3}, member_id=a, generation=2)
    s.leave(a, b)
    s.advance(0)
    assert s.c.group("g").state == EMPTY
    s.advance(30_000)
    assert s.c.fetch_offsets("g")[1]  # not yet
    s.advance(31_000)
    assert s.c.fetch_offsets("g")[1] == {}
    assert s.c.group("g") is None
    key, value = s.log[-1]
    assert value is None  # the group tombstone


def test_delete_groups_and_offset_delete_rules() -> None:
    s = Sim()
    a, b, _, _ = _stable_pair(s)
    s.commit({("t", 0): 3, ("x", 0): 4}, member_id=a, generation=2)
    r = s.reply(s.run(s.c.delete_groups(s.now, ["g", "nope"])))
    assert r == (("g", ErrorCode.non_empty_group), ("nope", ErrorCode.group_id_not_found))
    err, parts = s.reply(s.run(s.c.delete_offsets(s.now, "g", [("t", 0), ("x", 0)])))
    assert err == ErrorCode.none
    assert parts == (("t", 0, ErrorCode.group_subscribed_to_topic), ("x", 0, ErrorCode.none))
    assert ("x", 0) not in s.c.fetch_offsets("g")[1]
    s.leave(a, b)
    assert s.c.list_groups() == [("g", "consumer", EMPTY)]
    r = s.reply(s.run(s.c.delete_groups(s.now, ["g"])))
    assert r == (("g", ErrorCode.none),)
    assert s.c.group("g") is None and s.c.fetch_offsets("g")[1] == {}
    assert s.c.describe("g").state == "Dead"


def test_lag_report() -> None:
    s = Sim()
    s.commit({("t", 0): 5, ("t", 1): 10}, group="lag")
    rows = lag_report(s.c, "lag", lambda t, p: {0: 8, 1: 10}[p])
    assert rows == [("t", 0, 5, 8, 3), ("t", 1, 10, 10, 0)]


def test_rebalance_during_completing_answers_waiting_syncs() -> None:
    s = Sim()
    ra = s.reply(s.join(client_id="a"))
    s.sync(ra.member_id, 1, assignments=s.leader_assign(ra))
    tb = s.join(client_id="b")
    s.join(member_id=ra.member_id)
    rb = s.reply(tb)
    fb = s.sync(rb.member_id, 2)
    assert s.reply(fb) is None
    s.join(client_id="c")  # a third member arrives before the leader syncs
    assert s.reply(fb).error == ErrorCode.rebalance_in_progress
    assert s.c.group("g").state == PREPARING_REBALANCE


def test_cluster_owner_check_and_unload() -> None:
    """Cluster mode: the runtime says which groups this broker serves (owner), and unload()
    forgets a partition's groups, answering the requests that wait on them NOT_COORDINATOR."""
    s = Sim()
    serving = {"g": None, "other": None}
    s.c.owner = lambda gid: serving.get(gid, ErrorCode.not_coordinator)
    s.commit({("t", 0): 5}, group="other")
    ra = s.reply(s.join(client_id="a"))
    s.sync(ra.member_id, 1, assignments=s.leader_assign(ra))
    waiting = s.join(client_id="b")  # deferred: a must rejoin first
    assert s.reply(waiting) is None
    # a group of a partition this broker does not lead, or one still loading
    assert s.reply(s.join(group="elsewhere")).error == ErrorCode.not_coordinator
    assert s.c.fetch_offsets("elsewhere")[0] == ErrorCode.not_coordinator
    serving["other"] = ErrorCode.coordinator_load_in_progress
    assert s.c.fetch_offsets("other")[0] == ErrorCode.coordinator_load_in_progress
    assert s.commit({("t", 0): 6}, group="other").partitions[0][2] == ErrorCode.coordinator_load_in_progress
    # leadership of g's partition lost: the waiting JoinGroup is answered, g leaves memory
    serving["g"] = ErrorCode.not_coordinator
    replies = s.c.unload(lambda gid: gid == "g")
    assert replies[waiting].error == ErrorCode.not_coordinator
    assert s.c.group("g") is None and "g" not in s.c.offsets
    assert s.heartbeat(ra.member_id, 2) == ErrorCode.not_coordinator
    assert "other" in s.c.offsets  # another partition's groups stay
    # a write that failed to replicate is answered with the error it was given
    serving["other"] = None
    out = s.c.commit(s.now, CommitRequest("other", -1, "", None, (CommitEntry("t", 0, 7, -1, ""),), 8))
    reply = s.c.finish(out, False, ErrorCode.not_coordinator)[out.token]
    assert reply.error == ErrorCode.not_coordinator and reply.partitions[0][2] == ErrorCode.not_coordinator
    assert s.c.fetch_offsets("other", [("t", 0)])[1][("t", 0)].offset == 5
