"""The consumer-protocol (KIP-848) group state machine: joins, epochs, reconciliation with
revocation before reassignment, fencing, leaving, session and rebalance timeouts, the uniform and
range assignors, and a stateful property: no partition ever has two owners."""
from __future__ import annotations

import uuid

import attrs
import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from kio.schema.errors import ErrorCode

from ringlog.broker.coordinator import CommitEntry, CommitRequest, GroupCoordinator, JoinRequest
from ringlog.broker.coordinator.consumer_group import (
    ConsumerGroupConfig,
    ConsumerGroupCoordinator,
    HeartbeatReply,
    HeartbeatRequest,
)
from ringlog.broker.coordinator.server_assignors import MemberSpec, range_, uniform

T = uuid.UUID(int=1)
U = uuid.UUID(int=2)


class Sim:
    def __init__(self, partitions: int = 6, **config) -> None:
        self.classic = GroupCoordinator(member_id_factory=lambda client: f"{client}-m")
        self.c = ConsumerGroupCoordinator(self.classic, ConsumerGroupConfig(**config),
                                          member_id_factory=iter(f"gen{i}" for i in range(1000)).__next__)
        self.now = 0
        self.topics = {"t": (T, partitions)}

    def hb(self, member_id: str, epoch: int, owned=None, group: str = "g", **kw) -> HeartbeatReply:
        req = HeartbeatRequest(group, member_id, epoch, owned=None if owned is None else frozenset(owned), **kw)
        out = self.c.heartbeat(self.now, req, self.topics)
        assert not out.records
        return self.classic.finish(out)[out.token]

    def join(self, member_id: str, topics=("t",), **kw) -> HeartbeatReply:
        kw.setdefault("rebalance_timeout_ms", 60_000)
        return self.hb(member_id, 0, owned=(), subscribed_topic_names=tuple(topics), **kw)

    @property
    def group(self):
        return self.c.groups["g"]


def parts(reply: HeartbeatReply) -> set[int]:
    assert reply.assignment is not None
    return {p for _, p in reply.assignment}


def tps(*ps: int, topic: uuid.UUID = T) -> frozenset:
    return frozenset((topic, p) for p in ps)


def test_first_member_gets_everything_at_epoch_1() -> None:
    s = Sim()
    r = s.join("a")
    assert r.error == ErrorCode.none and r.member_id == "a" and r.member_epoch == 1
    assert parts(r) == set(range(6)) and r.heartbeat_interval_ms == 5000
    assert s.group.state == "Stable" and s.group.group_epoch == s.group.assignment_epoch == 1
    # an unchanged heartbeat answers no assignment (the client keeps its own)
    again = s.hb("a", 1, owned=tps(*range(6)))
    assert again.error == ErrorCode.none and again.member_epoch == 1 and again.assignment is None


def test_second_member_waits_for_revocation() -> None:
    s = Sim()
    s.join("a")
    rb = s.join("b")
    # b's target is half the partitions, but a still owns them all: b gets nothing yet
    assert rb.member_epoch == 2 and parts(rb) == set()
    assert s.group.state == "Reconciling"
    target_b = s.group.target["b"]
    assert len(target_b) == 3
    ra = s.hb("a", 1, owned=tps(*range(6)))
    # a must revoke b's half: it stays at epoch 1 and its answer drops those partitions
    assert ra.member_epoch == 1 and len(parts(ra)) == 3 and not {p for _, p in target_b} & parts(ra)
    assert s.group.members["a"].state == "unrevoked_partitions"
    # b asks again before a revoked: still nothing
    assert s.hb("b", 2, owned=()).assignment is None and not s.group.members["b"].assigned
    # a still reports the revoked partitions: it stays
    assert s.hb("a", 1, owned=tps(*range(6))).member_epoch == 1
    # a revoked: it moves to epoch 2; then b gets its partitions
    ra2 = s.hb("a", 1, owned=s.group.members["a"].assigned)
    assert ra2.member_epoch == 2 and s.group.members["a"].state == "stable"
    rb2 = s.hb("b", 2, owned=())
    assert rb2.member_epoch == 2 and {p for _, p in target_b} == parts(rb2)
    assert s.group.state == "Stable"


def test_fencing_epochs_and_unknown_members() -> None:
    s = Sim()
    s.join("a")
    assert s.hb("a", 5, owned=()).error == ErrorCode.fenced_member_epoch
    assert s.hb("nobody", 1, owned=()).error == ErrorCode.unknown_member_id
    assert s.hb("a", 1, group="other").error == ErrorCode.unknown_member_id
    s.join("b")
    s.hb("a", 1, owned=tps(*range(6)))          # revoking
    s.hb("a", 1, owned=s.group.members["a"].assigned)  # epoch 2
    # the previous epoch with a subset of the assignment: the answer was lost, accepted
    assert s.hb("a", 1, owned=s.group.members["a"].assigned).error == ErrorCode.none
    # the previous epoch owning more than its assignment: fenced
    assert s.hb("a", 1, owned=tps(*range(6))).error == ErrorCode.fenced_member_epoch
    # rejoining with epoch 0 starts over (it owns nothing now)
    r = s.join("a")
    assert r.error == ErrorCode.none and "a" in s.group.members


def test_invalid_requests() -> None:
    s = Sim()
    assert s.hb("", 0, owned=(), subscribed_topic_names=("t",), rebalance_timeout_ms=1).error == ErrorCode.invalid_request
    assert s.hb("a", 0, owned=(), subscribed_topic_names=("t",)).error == ErrorCode.invalid_request  # no timeout
    assert s.hb("a", 0, owned=tps(1), subscribed_topic_names=("t",), rebalance_timeout_ms=1).error == \
        ErrorCode.invalid_request
    assert s.hb("a", 0, owned=(), rebalance_timeout_ms=1).error == ErrorCode.invalid_request  # no subscription
    assert s.hb("a", -3).error == ErrorCode.invalid_request
    assert s.join("a", server_assignor="sticky").error == ErrorCode.unsupported_assignor
    assert s.join("a", topics=(), subscribed_topic_regex="(").error == ErrorCode.invalid_regular_expression
    assert s.join("a", topics=(), subscribed_topic_regex="t.*", api_version=0).error == ErrorCode.invalid_request


def test_v0_generates_the_member_id() -> None:
    s = Sim()
    r = s.join("", api_version=0)
    assert r.error == ErrorCode.none and r.member_id == "gen0" and r.member_epoch == 1


def test_regex_subscription_and_new_topics_bump_the_epoch() -> None:
    s = Sim()
    r = s.join("a", topics=(), subscribed_topic_regex="t.*")
    assert parts(r) == set(range(6))
    s.topics["tx"] = (U, 2)
    s.topics["other"] = (uuid.UUID(int=3), 2)
    r = s.hb("a", 1, owned=tps(*range(6)))
    assert r.member_epoch == 2 and r.assignment == tps(*range(6)) | tps(0, 1, topic=U)
    # more partitions of a subscribed topic: a new epoch too
    s.topics["t"] = (T, 8)
    r = s.hb("a", 2, owned=r.assignment)
    assert r.member_epoch == 3 and tps(6, 7) <= r.assignment


def test_regex_is_linear_time_and_errors_are_named() -> None:
    s = Sim()
    # catastrophic for a backtracking engine on a 249-character name; RE2 answers at once
    s.topics["a" * 249] = (U, 1)
    r = s.join("a", topics=(), subscribed_topic_regex="(a+)+b")
    assert r.error == ErrorCode.none and parts(r) == set()
    r = s.join("b", topics=(), subscribed_topic_regex="(a|b")
    assert r.error == ErrorCode.invalid_regular_expression and "missing )" in r.message


def test_leave_frees_partitions_and_last_leave_dissolves_the_group() -> None:
    s = Sim()
    s.join("a")
    s.join("b")
    ra = s.hb("a", -1)
    assert ra.error == ErrorCode.none and ra.member_epoch == -1 and "a" not in s.group.members
    rb = s.hb("b", 2, owned=())
    assert rb.member_epoch == 3 and parts(rb) == set(range(6))
    # committed offsets survive the group becoming empty; it is then a plain Empty group
    out = s.classic.commit(s.now, CommitRequest("g", 3, "b", offsets=(CommitEntry("t", 0, 42),), api_version=9))
    s.classic.finish(out)
    assert s.hb("b", -1).error == ErrorCode.none
    assert "g" not in s.c.groups and s.classic.groups["g"].state == "Empty"
    assert s.classic.fetch_offsets("g")[1][("t", 0)].offset == 42
    # and a member joining again turns it back into a consumer group
    assert s.join("c").member_epoch == 1 and "g" not in s.classic.groups


def test_session_timeout_and_rebalance_timeout_fence() -> None:
    s = Sim(session_timeout_ms=10_000)
    s.join("a")
    s.now = 5_000
    s.join("b", rebalance_timeout_ms=3_000)
    # a is not heard from again: its session (from its join at 0) ends first
    assert s.c.next_deadline(s.now) == 10_000
    s.now = 9_999
    s.classic.finish(s.c.tick(s.now))
    assert "a" in s.group.members
    s.now = 10_000
    s.classic.finish(s.c.tick(s.now))
    assert "a" not in s.group.members
    r = s.hb("b", 2, owned=())
    assert parts(r) == set(range(6))
    # b is asked to revoke for a new member but never does: its rebalance timeout fences it
    s.join("c")
    s.hb("b", r.member_epoch, owned=tps(*range(6)))
    assert s.group.members["b"].state == "unrevoked_partitions"
    s.now += 3_000
    s.hb("c", s.group.members["c"].epoch, owned=())
    s.classic.finish(s.c.tick(s.now))
    assert "b" not in s.group.members


def test_static_member_leave_and_takeover() -> None:
    s = Sim()
    ra = s.join("a", instance_id="i1")
    assert parts(ra) == set(range(6))
    assert s.join("a2", instance_id="i1").error == ErrorCode.unreleased_instance_id
    assert s.hb("a", -2, instance_id="i1").member_epoch == -2
    # the assignment waits for the instance; the group epoch does not move
    epoch = s.group.group_epoch
    r = s.join("a2", instance_id="i1")
    assert r.error == ErrorCode.none and parts(r) == set(range(6)) and s.group.group_epoch == epoch
    assert "a" not in s.group.members
    assert s.hb("a", 1, instance_id="i1", owned=()).error == ErrorCode.fenced_instance_id


def test_offset_commit_checks_member_epochs() -> None:
    s = Sim()
    s.join("a")

    def commit(member: str, epoch: int, version: int = 9) -> ErrorCode:
        out = s.classic.commit(s.now, CommitRequest("g", epoch, member, offsets=(CommitEntry("t", 0, 1),),
                                                    api_version=version))
        return s.classic.finish(out)[out.token].partitions[0][2]

    assert commit("a", 1) == ErrorCode.none
    assert commit("a", 0) == ErrorCode.stale_member_epoch
    assert commit("x", 1) == ErrorCode.unknown_member_id
    assert commit("", -1) == ErrorCode.unknown_member_id  # the group has members
    assert commit("a", 1, version=8) == ErrorCode.unsupported_version


def test_offset_delete_protects_subscribed_topics() -> None:
    s = Sim()
    s.topics["u"] = (U, 1)
    s.join("a")
    for topic in ("t", "u"):
        s.classic.finish(s.classic.commit(s.now, CommitRequest("g", 1, "a", offsets=(CommitEntry(topic, 0, 5),),
                                                               api_version=9)))
    out = s.classic.delete_offsets(s.now, "g", [("t", 0), ("u", 0)])
    replies = s.classic.finish(out)
    assert replies[out.token] == (ErrorCode.none, (("t", 0, ErrorCode.group_subscribed_to_topic),
                                                   ("u", 0, ErrorCode.none)))
    assert set(s.classic.fetch_offsets("g")[1]) == {("t", 0)}


def test_classic_and_consumer_groups_exclude_each_other() -> None:
    s = Sim()
    s.join("a")
    out = s.classic.join(0, JoinRequest("g", "", "consumer", (("range", b""),), 10_000))
    assert s.classic.finish(out)[out.token].error == ErrorCode.inconsistent_group_protocol
    out = s.classic.join(0, JoinRequest("h", "", "consumer", (("range", b""),), 10_000))
    s.classic.finish(out)
    assert s.join("a", group="h").error == ErrorCode.group_id_not_found


def test_server_assignor_chosen_by_members() -> None:
    s = Sim(partitions=4)
    s.topics["u"] = (U, 4)
    s.join("a", topics=("t", "u"), server_assignor="range")
    s.join("b", topics=("t", "u"), server_assignor="range")
    assert s.group.assignor == "range"
    assert s.group.target["a"] == tps(0, 1) | tps(0, 1, topic=U)
    assert s.c.describe(["g"])[0].assignor_name == "range"


# --- assignors ----------------------------------------------------------------------------------


def _check_cover(result, members, topics) -> None:
    seen: set = set()
    for mid, assigned in result.items():
        assert not seen & assigned
        seen |= assigned
        names = {n for n, (tid, _) in topics.items() if any(t == tid for t, _ in assigned)}
        assert names <= members[mid].subscribed
    wanted = {(tid, p) for n, (tid, c) in topics.items()
              if any(n in m.subscribed for m in members.values()) for p in range(c)}
    assert seen == wanted


@st.composite
def _groups(draw):
    ntopics = draw(st.integers(1, 3))
    topics = {f"t{i}": (uuid.UUID(int=i + 1), draw(st.integers(1, 12))) for i in range(ntopics)}
    nmembers = draw(st.integers(1, 6))
    homogeneous = draw(st.booleans())
    everything = frozenset(topics)
    members = {}
    for i in range(nmembers):
        subscribed = everything if homogeneous else frozenset(draw(st.sets(st.sampled_from(sorted(topics)),
                                                                          min_size=1)))
        members[f"m{i}"] = MemberSpec(subscribed)
    return members, topics, homogeneous


@settings(max_examples=80, deadline=None)
@given(_groups(), st.randoms(use_true_random=False))
def test_uniform_is_complete_balanced_and_sticky(group, rnd) -> None:
    members, topics, homogeneous = group
    result = uniform(members, topics)
    _check_cover(result, members, topics)
    if homogeneous:
        counts = [len(v) for v in result.values()]
        assert max(counts) - min(counts) <= 1
    # one member more: the others keep all they can (only partitions moving to the newcomer move)
    grown = {mid: attrs.evolve(spec, current=result[mid]) for mid, spec in members.items()}
    grown["new"] = MemberSpec(frozenset(topics))
    after = uniform(grown, topics)
    _check_cover(after, grown, topics)
    if homogeneous:
        for mid in members:
            assert after[mid] <= result[mid]


@settings(max_examples=50, deadline=None)
@given(_groups())
def test_range_gives_consecutive_ranges(group) -> None:
    members, topics, _ = group
    result = range_(members, topics)
    _check_cover(result, members, topics)
    for name, (tid, count) in topics.items():
        subs = sorted(m for m, spec in members.items() if name in spec.subscribed)
        sizes = [len([1 for t, _ in result[m] if t == tid]) for m in subs]
        if subs:
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


# --- the stateful property ----------------------------------------------------------------------


class ConsumerGroupMachine(RuleBasedStateMachine):
    """Clients that may be slow to apply their assignments, join, leave, change subscriptions,
    miss heartbeats; topics that grow. The partitions the clients hold are always disjoint, and
    each is within what the coordinator believes the client holds."""

    def __init__(self) -> None:
        super().__init__()
        self.s = Sim(partitions=4, session_timeout_ms=30_000)
        self.s.topics["u"] = (U, 3)
        self.clients: dict[str, dict] = {}
        self.next_id = 0
        self.away: dict[str, tuple] = {}  # instance id -> topics, of static members that left with -2

    @rule(topics=st.sampled_from([("t",), ("u",), ("t", "u")]), assignor=st.sampled_from([None, "uniform", "range"]),
          static=st.booleans())
    def join(self, topics, assignor, static) -> None:
        mid = f"c{self.next_id}"
        self.next_id += 1
        instance = f"i{self.next_id}" if static else None
        # prompt clients: the rebalance timeout never runs out here (the unit tests above check it)
        r = self.s.join(mid, topics=topics, server_assignor=assignor, instance_id=instance,
                        rebalance_timeout_ms=10**9)
        assert r.error == ErrorCode.none
        self.clients[mid] = {"owned": frozenset(), "epoch": r.member_epoch, "pending": r.assignment,
                             "instance": instance, "topics": topics}

    @precondition(lambda self: any(c["instance"] for c in self.clients.values()))
    @rule(data=st.data())
    def static_leave(self, data) -> None:
        """A static member closes with epoch -2: it stops consuming, the coordinator keeps its
        assignment for its instance id."""
        mid = data.draw(st.sampled_from(sorted(m for m, c in self.clients.items() if c["instance"])))
        c = self.clients.pop(mid)
        assert self.s.hb(mid, -2, instance_id=c["instance"]).member_epoch == -2
        self.away[c["instance"]] = c["topics"]

    @precondition(lambda self: self.away)
    @rule(data=st.data())
    def static_return(self, data) -> None:
        instance = data.draw(st.sampled_from(sorted(self.away)))
        topics = self.away.pop(instance)
        mid = f"c{self.next_id}"
        self.next_id += 1
        r = self.s.join(mid, topics=topics, instance_id=instance, rebalance_timeout_ms=10**9)
        assert r.error == ErrorCode.none
        self.clients[mid] = {"owned": frozenset(), "epoch": r.member_epoch, "pending": r.assignment,
                             "instance": instance, "topics": topics}

    def _fenced(self, mid: str) -> None:
        # a fenced client gives up everything (its own timers tell it so in a real client)
        del self.clients[mid]

    def _beat(self, mid: str, apply: bool) -> ErrorCode:
        c = self.clients[mid]
        if apply and c["pending"] is not None:
            # the consumer revokes what is no longer assigned, then takes up the new assignment
            c["owned"], c["pending"] = c["pending"], None
        r = self.s.hb(mid, c["epoch"], owned=c["owned"])
        if r.error == ErrorCode.none:
            c["epoch"] = r.member_epoch
            if r.assignment is not None:
                c["pending"] = r.assignment
        return r.error

    @precondition(lambda self: self.clients)
    @rule(data=st.data(), apply=st.booleans())
    def heartbeat(self, data, apply) -> None:
        mid = data.draw(st.sampled_from(sorted(self.clients)))
        error = self._beat(mid, apply)
        if error != ErrorCode.none:
            assert error in (ErrorCode.unknown_member_id, ErrorCode.fenced_member_epoch)
            self._fenced(mid)

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def leave(self, data) -> None:
        mid = data.draw(st.sampled_from(sorted(self.clients)))
        assert self.s.hb(mid, -1).error == ErrorCode.none
        del self.clients[mid]

    @rule(ms=st.integers(1_000, 40_000))
    def time_passes(self, ms) -> None:
        self.s.now += ms
        self.s.classic.finish(self.s.c.tick(self.s.now))
        g = self.s.c.groups.get("g")
        for mid in list(self.clients):
            if g is None or mid not in g.members:
                self._fenced(mid)
        for instance in list(self.away):
            if g is None or instance not in g.static:
                del self.away[instance]  # its session ended: it comes back as a new member

    @rule()
    def topic_grows(self) -> None:
        tid, n = self.s.topics["t"]
        if n < 8:
            self.s.topics["t"] = (tid, n + 1)

    @invariant()
    def no_partition_has_two_owners(self) -> None:
        seen: set = set()
        g = self.s.c.groups.get("g")
        for mid, c in self.clients.items():
            assert not seen & c["owned"], f"{mid} holds a partition another client holds"
            seen |= c["owned"]
            assert g is not None
            m = g.members[mid]
            assert c["owned"] <= m.assigned | m.pending_revocation
        if g is not None:
            held: set = set()
            for m in g.members.values():
                mine = m.assigned | m.pending_revocation
                assert not held & mine
                held |= mine
            assert set(g.owners) == held

    def teardown(self) -> None:
        # liveness: once the absent static members are gone, prompt clients converge to a Stable
        # group that covers every partition
        self.s.now += 60_000
        for mid in sorted(self.clients):
            assert self._beat(mid, True) == ErrorCode.none
        self.s.classic.finish(self.s.c.tick(self.s.now))
        for _ in range(8):
            for mid in sorted(self.clients):
                assert self._beat(mid, True) == ErrorCode.none
        g = self.s.c.groups.get("g")
        if g is not None and self.clients:
            assert g.state == "Stable"
            subscribed = set(g.subscription_metadata)
            wanted = {(tid, p) for name, (tid, n) in self.s.topics.items() if name in subscribed for p in range(n)}
            assert set(g.owners) == wanted


TestConsumerGroupMachine = ConsumerGroupMachine.TestCase
TestConsumerGroupMachine.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
