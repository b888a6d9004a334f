"""A synchronous driver of the coordinator state machine for tests: every outcome is persisted
into an in-memory list at once (or fails, on request) and finished; replies are kept by token."""
from __future__ import annotations

import itertools
from typing import Any

import attrs

from ringlog.broker.coordinator import (
    CommitEntry,
    CommitRequest,
    CoordinatorConfig,
    GroupCoordinator,
    HeartbeatRequest,
    JoinRequest,
    LeaveMember,
    SyncRequest,
)
from ringlog.client.assignors import RangeAssignor, Subscription


class Sim:
    def __init__(self, **config: Any) -> None:
        config.setdefault("group_initial_rebalance_delay_ms", 0)
        self.config = CoordinatorConfig(**config)
        ids = itertools.count(1)
        self.c = GroupCoordinator(self.config, member_id_factory=lambda cid: f"{cid}-{next(ids)}")
        self.now = 1_000_000
        self.log: list[tuple[bytes, bytes | None]] = []
        self.replies: dict[int, Any] = {}
        self.fail_next_append = False

    def run(self, outcome) -> int:
        ok = True
        if outcome.records:
            if self.fail_next_append:
                ok = False
                self.fail_next_append = False
            else:
                self.log.extend(outcome.records)
        self.replies.update(self.c.finish(outcome, ok))
        return outcome.token

    def reply(self, token: int) -> Any:
        return self.replies.get(token)

    def advance(self, ms: int) -> None:
        self.now += ms
        self.run(self.c.tick(self.now))

    # shortcuts returning tokens
    def join(self, group="g", member_id="", client_id="c", instance=None, topics=("t",), session=10_000,
             rebalance=20_000, v4=False, protocols=None) -> int:
        if protocols is None:
            protocols = (("range", Subscription(topics=topics).encode()),)
        return self.run(self.c.join(self.now, JoinRequest(
            group_id=group, member_id=member_id, protocol_type="consumer", protocols=tuple(protocols),
            session_timeout_ms=session, rebalance_timeout_ms=rebalance, group_instance_id=instance,
            client_id=client_id, client_host="/127.0.0.1", require_known_member_id=v4)))

    def sync(self, member_id, generation, group="g", assignments=(), instance=None) -> int:
        return self.run(self.c.sync(self.now, SyncRequest(group, generation, member_id, instance, tuple(assignments))))

    def heartbeat(self, member_id, generation, group="g", instance=None):
        return self.reply(self.run(self.c.heartbeat(self.now, HeartbeatRequest(group, generation, member_id, instance))))

    def leave(self, *members, group="g"):
        return self.reply(self.run(self.c.leave(self.now, group, [
            m if isinstance(m, LeaveMember) else LeaveMember(m) for m in members])))

    def commit(self, offsets, group="g", member_id="", generation=-1, instance=None):
        entries = tuple(CommitEntry(t, p, o) for (t, p), o in offsets.items())
        return self.reply(self.run(self.c.commit(self.now, CommitRequest(group, generation, member_id, instance, entries))))

    def leader_assign(self, join_reply, partitions=6, assignor=None) -> tuple:
        """What a consumer leader computes from its join answer."""
        from ringlog.client.assignors import decode_subscription

        assignor = assignor or RangeAssignor()
        subs = {m.member_id: decode_subscription(m.metadata) for m in join_reply.members}
        topics = {t for s in subs.values() for t in s.topics}
        result = assignor.assign({t: partitions for t in topics}, subs)
        return tuple((mid, a.encode()) for mid, a in result.items())


@attrs.define
class Joined:
    member_id: str
    generation: int
    leader: str
