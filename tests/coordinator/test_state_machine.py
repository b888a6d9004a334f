"""Stateful test: the coordinator against simulated consumers and a model of what must hold.

Clients join, rejoin, sync (the leader runs a real assignor), heartbeat, leave or crash (go
silent) while time moves; the coordinator's timers run through tick(now). After every step:
  * the generation never goes down (while the group exists);
  * every join answer of a generation names the same leader, and only that member gets the list;
  * SyncGroup succeeds only for current members of the current generation;
  * within a generation no partition is assigned to two members, and once every member of a
    Stable group has its assignment, every partition is assigned exactly once;
  * a silent member not waiting for a join/sync answer is gone once its session timeout passed.
"""
from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kio.schema.errors import ErrorCode

from ringlog.broker.coordinator import STABLE, LeaveMember
from ringlog.client.assignors import RangeAssignor, RoundRobinAssignor, decode_assignment, decode_subscription

from .sim import Sim

PARTITIONS = {"t": 6, "u": 3}
SESSION = 6000
REBALANCE = 9000
N_CLIENTS = 5


class Client:
    def __init__(self, name: str, static: bool) -> None:
        self.name = name
        self.instance = f"inst-{name}" if static else None
        self.member_id = ""
        self.generation = -1
        self.join_token: int | None = None
        self.sync_token: int | None = None
        self.crashed = False
        self.crashed_at = 0


class CoordinatorMachine(RuleBasedStateMachine):
    @initialize(assignor=st.sampled_from(["range", "roundrobin"]), delay=st.sampled_from([0, 0, 3000]),
                static=st.lists(st.booleans(), min_size=N_CLIENTS, max_size=N_CLIENTS), v4=st.booleans())
    def setup(self, assignor, delay, static, v4) -> None:
        self.sim = Sim(group_initial_rebalance_delay_ms=delay)
        self.assignor = RangeAssignor() if assignor == "range" else RoundRobinAssignor()
        self.v4 = v4
        self.clients = [Client(f"c{i}", s) for i, s in enumerate(static)]
        self.max_generation = 0
        self.leaders: dict[int, set[str]] = {}
        self.listed: dict[int, set[str]] = {}
        self.assigned: dict[int, dict[str, list[tuple[str, int]]]] = {}
        self.group_obj = None

    # --- client behaviour --------------------------------------------------------------------

    def _join(self, c: Client) -> None:
        sub = self.assignor.subscription(sorted(PARTITIONS)).encode()
        c.join_token = self.sim.join(member_id=c.member_id, client_id=c.name, instance=c.instance,
                                     session=SESSION, rebalance=REBALANCE, v4=self.v4,
                                     protocols=((self.assignor.name, sub),))
        c.sync_token = None
        self._pump()

    def _new_life(self) -> None:
        # the model's per-generation books belong to one incarnation of the group
        g = self.sim.c.group("g")
        if g is not None and g is not self.group_obj:
            self.group_obj = g
            self.leaders, self.listed, self.assigned = {}, {}, {}

    def _pump(self) -> None:
        """Deliver every reply that arrived, driving the clients' next steps."""
        self._new_life()
        progress = True
        while progress:
            progress = False
            for c in self.clients:
                if c.crashed:
                    continue
                if c.join_token is not None and c.join_token in self.sim.replies:
                    r = self.sim.replies.pop(c.join_token)
                    c.join_token = None
                    progress = True
                    self._on_join(c, r)
                if c.sync_token is not None and c.sync_token in self.sim.replies:
                    r = self.sim.replies.pop(c.sync_token)
                    c.sync_token = None
                    progress = True
                    self._on_sync(c, r)

    def _on_join(self, c: Client, r) -> None:
        self._new_life()
        if r.error == ErrorCode.member_id_required:
            c.member_id = r.member_id
            self._join(c)
            return
        if r.error != ErrorCode.none:
            if r.error in (ErrorCode.unknown_member_id, ErrorCode.fenced_instance_id):
                c.member_id = ""
            c.generation = -1
            return
        g = self.sim.c.group("g")
        assert r.generation_id >= 1
        if r.leader in g.members:
            # a static member is identified by its instance id: a restarted static leader keeps
            # leading under a new member id (and is told the id of the incarnation it replaced)
            who = g.members[r.leader].group_instance_id or r.leader
            self.leaders.setdefault(r.generation_id, set()).add(who)
        c.member_id, c.generation = r.member_id, r.generation_id
        assignments = ()
        if r.members:
            self.listed.setdefault(r.generation_id, set()).add(r.member_id)
            assert r.leader == r.member_id
            subs = {m.member_id: decode_subscription(m.metadata) for m in r.members}
            assert set(subs) <= set(g.members) | {r.member_id}
            result = self.assignor.assign(PARTITIONS, subs)
            assignments = tuple((mid, a.encode()) for mid, a in result.items())
        c.sync_token = self.sim.sync(c.member_id, c.generation, assignments=assignments, instance=c.instance)

    def _on_sync(self, c: Client, r) -> None:
        if r.error != ErrorCode.none:
            if r.error in (ErrorCode.unknown_member_id, ErrorCode.fenced_instance_id):
                c.member_id = ""
            c.generation = -1
            return
        g = self.sim.c.group("g")
        assert g is not None and c.member_id in g.members, "assignment for a non-member"
        assert c.generation == g.generation
        parts = decode_assignment(r.assignment).topic_partitions()
        holders = self.assigned.setdefault(c.generation, {})
        # a restarted static member takes over its old incarnation's assignment (same generation)
        for mid in [mid for mid in holders if mid not in g.members]:
            del holders[mid]
        holders[c.member_id] = parts

    # --- rules ---------------------------------------------------------------------------------

    @rule(i=st.integers(0, N_CLIENTS - 1))
    def join(self, i: int) -> None:
        c = self.clients[i]
        if not c.crashed and c.join_token is None and c.sync_token is None:
            self._join(c)

    @rule(i=st.integers(0, N_CLIENTS - 1))
    def heartbeat(self, i: int) -> None:
        c = self.clients[i]
        if c.crashed or not c.member_id or c.generation < 0:
            return
        err = self.sim.heartbeat(c.member_id, c.generation, instance=c.instance)
        if err == ErrorCode.rebalance_in_progress and c.join_token is None and c.sync_token is None:
            self._join(c)
        elif err in (ErrorCode.unknown_member_id, ErrorCode.fenced_instance_id):
            c.member_id, c.generation = "", -1
        elif err == ErrorCode.illegal_generation:
            c.generation = -1

    @rule(i=st.integers(0, N_CLIENTS - 1))
    def leave(self, i: int) -> None:
        c = self.clients[i]
        if c.crashed or not c.member_id:
            return
        self.sim.leave(LeaveMember(c.member_id, c.instance))
        c.member_id, c.generation, c.join_token, c.sync_token = "", -1, None, None
        self._pump()

    @rule(i=st.integers(0, N_CLIENTS - 1))
    def crash(self, i: int) -> None:
        c = self.clients[i]
        if not c.crashed:
            c.crashed = True
            c.crashed_at = self.sim.now

    @rule(i=st.integers(0, N_CLIENTS - 1))
    def restart(self, i: int) -> None:
        c = self.clients[i]
        if c.crashed:
            # a restarted process: a static member keeps its instance id, nothing else survives
            fresh = Client(c.name, c.instance is not None)
            self.clients[i] = fresh
            self._join(fresh)

    @rule(ms=st.sampled_from([100, 1000, 2500, 5000, 7000]))
    def advance(self, ms: int) -> None:
        self.sim.advance(ms)
        self._pump()

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def generation_never_goes_down(self) -> None:
        g = self.sim.c.group("g")
        if g is None:
            # an Empty group without offsets is deleted by the expiry check; a later join starts
            # a new group (as in Kafka), whose generations start again
            self.max_generation = 0
            return
        assert g.generation >= self.max_generation
        self.max_generation = g.generation

    @invariant()
    def one_leader_per_generation(self) -> None:
        for gen, leaders in self.leaders.items():
            assert len(leaders) == 1, (gen, leaders)
        for gen, listed in self.listed.items():
            assert len(listed) == 1, (gen, listed)
        g = self.sim.c.group("g")
        if g is not None and g.members:
            assert g.leader in g.members

    @invariant()
    def partitions_assigned_once(self) -> None:
        for gen, by_member in self.assigned.items():
            seen: list[tuple[str, int]] = [tp for parts in by_member.values() for tp in parts]
            assert len(seen) == len(set(seen)), f"generation {gen}: a partition assigned twice"
        g = self.sim.c.group("g")
        if g is not None and g.state == STABLE:
            mine = self.assigned.get(g.generation, {})
            if set(mine) == set(g.members):
                everything = sorted((t, p) for t, n in PARTITIONS.items() for p in range(n))
                assert sorted(tp for parts in mine.values() for tp in parts) == everything

    @invariant()
    def silent_members_expire(self) -> None:
        g = self.sim.c.group("g")
        if g is None:
            return
        for m in g.members.values():
            if m.join_token is None and m.sync_token is None:
                assert self.sim.now < m.last_heartbeat + m.session_timeout + 7000, "expired member kept"


CoordinatorMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestCoordinatorMachine = CoordinatorMachine.TestCase
