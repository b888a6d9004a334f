"""Consumer groups of the new rebalance protocol (KIP-848, `group.protocol=consumer`), sans-IO.

Groups of type "consumer" live beside the classic groups of broker.coordinator.state: one group id
is one or the other. The coordinator assigns (server-side assignors, broker.coordinator.
server_assignors) and every member converges on its target one heartbeat at a time:

* Epochs. The group epoch goes up when a member joins, leaves, changes its subscription, or when
  the partition count of a subscribed topic changes (each heartbeat compares the subscribed
  topics' metadata). A group epoch above the target assignment's epoch recomputes the target
  assignment (assignment epoch := group epoch). Each member has a member epoch: the epoch of the
  target it has reconciled with.
* Reconciliation (Kafka's CurrentAssignmentBuilder). A member's current assignment moves toward
  its target: partitions it must give up become "pending revocation" and the member stays at its
  epoch (UNREVOKED_PARTITIONS) until a heartbeat no longer reports them as owned; only then does
  it take the target epoch. Partitions of its target still owned (assigned or pending revocation)
  by another member are withheld (UNRELEASED_PARTITIONS) until that member has released them, so
  a partition never has two owners. `owners` maps every owned partition to its one owner.
* Errors as Kafka answers: FENCED_MEMBER_EPOCH for an epoch ahead of the coordinator's or behind
  it (except the previous epoch with owned partitions within the current assignment: a lost
  response), UNKNOWN_MEMBER_ID for a member the group does not know, UNRELEASED_INSTANCE_ID /
  FENCED_INSTANCE_ID for static members, INVALID_REQUEST for malformed heartbeats,
  UNSUPPORTED_ASSIGNOR, INVALID_REGULAR_EXPRESSION, GROUP_MAX_SIZE_REACHED.
* Leaving: epoch -1 removes the member (its partitions are free at once); epoch -2 (a static
  member, group.instance.id) keeps its assignment for the session timeout, and a new member with
  the same instance id takes it over. Session timeout: a member not heard from for
  group.consumer.session.timeout.ms is removed; rebalance timeout: a member that does not revoke
  within its rebalance timeout (the client's max.poll.interval.ms) is removed.
* Member ids: v0 lets the coordinator generate the id on the first heartbeat (epoch 0 with an
  empty id); v1 (KIP-1082) requires the client's own id on every heartbeat. A known member
  heartbeating with epoch 0 rejoins: it owns nothing (the request says so), so its partitions are
  released and it reconciles from scratch.

Persistence: the membership is kept in memory only (no ConsumerGroup* records are written to
`__consumer_offsets`). After a broker restart the members' heartbeats get UNKNOWN_MEMBER_ID and
they rejoin with epoch 0; committed offsets survive (OffsetCommit writes them as for any group).
A group whose last member leaves turns into a plain Empty group holding its offsets, which is
what a restart gives too, so its offsets expire like any Empty group's.

Like state.py, nothing here reads a clock or does I/O: operations take `now` and a view of the
topics and return an `Outcome` of the classic coordinator (no records, reply ready).
"""
from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs
import re2
from kio.schema.errors import ErrorCode

from .server_assignors import ASSIGNORS, MemberSpec, TopicPartition, Topics

if TYPE_CHECKING:
    from .state import GroupCoordinator, Outcome

STABLE = "stable"
UNREVOKED = "unrevoked_partitions"
UNRELEASED = "unreleased_partitions"

LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2

GROUP_TYPE = "consumer"

# Subscription regexes are RE2 (Kafka uses RE2J): linear-time matching, so no pattern a client
# sends can stall the coordinator, and the syntax is the one Java clients are written for.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def compile_regex(pattern: str):
    return re2.compile(pattern, options=_RE2_OPTIONS)


@attrs.frozen
class ConsumerGroupConfig:
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 5_000
    max_size: int = 2**31 - 1
    assignors: tuple[str, ...] = ("uniform", "range")


@attrs.frozen
class HeartbeatRequest:
    group_id: str
    member_id: str
    member_epoch: int
    api_version: int = 1
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: tuple[str, ...] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    owned: frozenset[TopicPartition] | None = None
    client_id: str = ""
    client_host: str = ""


@attrs.frozen
class HeartbeatReply:
    error: ErrorCode
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: frozenset[TopicPartition] | None = None


@attrs.define(eq=False)
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = 300_000
    subscribed_names: tuple[str, ...] = ()
    subscribed_regex: str | None = None
    server_assignor: str | None = None
    state: str = STABLE
    epoch: int = 0
    previous_epoch: int = 0
    assigned: frozenset[TopicPartition] = frozenset()
    pending_revocation: frozenset[TopicPartition] = frozenset()
    last_heartbeat: int = 0
    revocation_deadline: int | None = None


@attrs.frozen
class MemberDescription:
    member_id: str
    instance_id: str | None
    rack_id: str | None
    member_epoch: int
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str | None
    assignment: frozenset[TopicPartition]
    target_assignment: frozenset[TopicPartition]


@attrs.frozen
class GroupDescription:
    group_id: str
    error: ErrorCode
    message: str | None = None
    state: str = "Dead"
    group_epoch: int = -1
    assignment_epoch: int = -1
    assignor_name: str = ""
    members: tuple[MemberDescription, ...] = ()


class HeartbeatError(Exception):
    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


_REFUSALS = {
    ErrorCode.coordinator_load_in_progress: "The coordinator is loading.",
    ErrorCode.not_coordinator: "This is not the correct coordinator.",
}


@attrs.define(eq=False)
class ConsumerGroup:
    group_id: str
    group_epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ConsumerMember] = attrs.field(factory=dict)
    static: dict[str, str] = attrs.field(factory=dict)              # instance id -> member id
    target: dict[str, frozenset[TopicPartition]] = attrs.field(factory=dict)
    owners: dict[TopicPartition, str] = attrs.field(factory=dict)    # assigned or pending revocation
    subscription_metadata: dict[str, tuple[uuid.UUID, int]] = attrs.field(factory=dict)
    assignor: str = ""

    @property
    def generation(self) -> int:
        # what the broker's group-change log reports as the generation
        return self.group_epoch

    @property
    def state(self) -> str:
        """Kafka's ConsumerGroupState names."""
        if not self.members:
            return "Empty"
        if self.group_epoch != self.assignment_epoch:
            return "Assigning"
        for m in self.members.values():
            if m.state != STABLE or m.epoch != self.assignment_epoch:
                return "Reconciling"
        return "Stable"

    def commit_error(self, member_id: str, member_epoch: int, api_version: int) -> ErrorCode | None:
        """OffsetCommit from this group (Kafka's ConsumerGroup.validateOffsetCommit): None if
        allowed. A commit without a member (an admin tool) is allowed only while the group is
        empty; a member commits with its current epoch, through OffsetCommit v9 or later."""
        if member_epoch < 0 and not member_id and not self.members:
            return None
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if api_version < 9:
            return ErrorCode.unsupported_version
        if member_epoch != member.epoch:
            return ErrorCode.stale_member_epoch
        return None

    def fetch_error(self, member_id: str | None, member_epoch: int) -> ErrorCode | None:
        """OffsetFetch v9+ naming a member: it must be known and at its current epoch."""
        if member_id is None or (member_epoch < 0 and not member_id):
            return None
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if member_epoch != member.epoch:
            return ErrorCode.stale_member_epoch
        return None


def _new_member_id() -> str:
    # Kafka's Uuid.randomUuid().toString(): 22 characters of URL-safe base64
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class ConsumerGroupCoordinator:
    """The consumer-protocol groups of one broker, next to (and sharing the offsets and the
    outcome tokens of) the classic GroupCoordinator `classic`."""

    def __init__(
        self,
        classic: GroupCoordinator,
        config: ConsumerGroupConfig | None = None,
        *,
        member_id_factory: Callable[[], str] = _new_member_id,
    ) -> None:
        self.classic = classic
        self.config = config or ConsumerGroupConfig()
        # the classic coordinator consults this dict (one group id is one type or the other)
        self.groups: dict[str, ConsumerGroup] = classic.consumer_groups
        self._new_member_id = member_id_factory

    # --- heartbeat ----------------------------------------------------------------------------

    def heartbeat(self, now: int, req: HeartbeatRequest, topics: Topics) -> Outcome:
        """ConsumerGroupHeartbeat. `topics`: name -> (topic id, partitions) of every topic."""
        out = self.classic._outcome()
        try:
            out.reply = self._heartbeat(now, req, topics)
        except HeartbeatError as exc:
            # Kafka's error answers carry no member id and epoch 0
            out.reply = HeartbeatReply(exc.error, exc.message)
        return out

    def _validate(self, req: HeartbeatRequest) -> None:
        def invalid(message: str) -> HeartbeatError:
            return HeartbeatError(ErrorCode.invalid_request, message)

        if not req.group_id:
            raise invalid("GroupId can't be empty.")
        if req.instance_id is not None and not req.instance_id:
            raise invalid("InstanceId can't be empty.")
        if req.rack_id is not None and not req.rack_id:
            raise invalid("RackId can't be empty.")
        if req.api_version >= 1 and not req.member_id:
            raise invalid("MemberId can't be empty.")
        if req.member_epoch > 0 or req.member_epoch == LEAVE_EPOCH:
            if not req.member_id:
                raise invalid("MemberId can't be empty.")
        elif req.member_epoch == 0:
            if req.rebalance_timeout_ms == -1:
                raise invalid("RebalanceTimeoutMs must be provided in first request.")
            if req.owned is None or req.owned:
                raise invalid("TopicPartitions must be empty when (re-)joining.")
            if not req.subscribed_topic_names and req.subscribed_topic_regex is None:
                raise invalid("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.")
        elif req.member_epoch == STATIC_LEAVE_EPOCH:
            if not req.member_id:
                raise invalid("MemberId can't be empty.")
            if req.instance_id is None:
                raise invalid("InstanceId can't be null.")
        else:
            raise invalid("MemberEpoch is invalid.")
        if req.subscribed_topic_regex is not None:
            if req.api_version < 1:
                raise invalid("SubscribedTopicRegex is not supported in version 0.")
            try:
                compile_regex(req.subscribed_topic_regex)
            except re2.error as exc:
                why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
                raise HeartbeatError(ErrorCode.invalid_regular_expression,
                                     f"SubscribedTopicRegex `{req.subscribed_topic_regex}` is not a valid regular "
                                     f"expression: {why}.") from None
        if req.server_assignor is not None and req.server_assignor not in self.config.assignors:
            raise HeartbeatError(
                ErrorCode.unsupported_assignor,
                f"ServerAssignor {req.server_assignor} is not supported. Supported assignors: "
                f"{', '.join(self.config.assignors)}.",
            )

    def _heartbeat(self, now: int, req: HeartbeatRequest, topics: Topics) -> HeartbeatReply:
        if (refusal := self.classic.refused(req.group_id)) is not None:
            raise HeartbeatError(refusal, _REFUSALS.get(refusal, "The coordinator is loading."))
        self._validate(req)
        if req.member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            return self._leave(now, req, topics)
        g = self._group_for(now, req)
        member, is_new = self._member_for(g, req)
        before = (member.subscribed_names, member.subscribed_regex)
        old_assigned = member.assigned
        if req.instance_id is not None:
            member.instance_id = req.instance_id
        if req.rack_id is not None:
            member.rack_id = req.rack_id
        if req.rebalance_timeout_ms != -1:
            member.rebalance_timeout_ms = req.rebalance_timeout_ms
        if req.server_assignor is not None:
            member.server_assignor = req.server_assignor
        if req.subscribed_topic_names is not None:
            member.subscribed_names = tuple(sorted(set(req.subscribed_topic_names)))
        if req.subscribed_topic_regex is not None:
            member.subscribed_regex = req.subscribed_topic_regex or None
        member.client_id, member.client_host = req.client_id, req.client_host
        member.last_heartbeat = now
        if is_new or member.instance_id is not None:
            self._add_member(g, member)  # (again: a known member may name its instance id now)
        bump = is_new or before != (member.subscribed_names, member.subscribed_regex)
        if self._refresh_metadata(g, topics) or bump:
            g.group_epoch += 1
        if g.group_epoch > g.assignment_epoch:
            self._compute_target(g, topics)
        self._reconcile(g, member, req.owned, now)
        full = req.member_epoch == 0 or (
            req.rebalance_timeout_ms != -1 and req.subscribed_topic_names is not None and req.owned is not None
        )
        return HeartbeatReply(
            ErrorCode.none,
            member_id=member.member_id,
            member_epoch=member.epoch,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            assignment=member.assigned if full or member.assigned != old_assigned or is_new else None,
        )

    def _group_for(self, now: int, req: HeartbeatRequest) -> ConsumerGroup:
        g = self.groups.get(req.group_id)
        if g is not None:
            return g
        if req.member_epoch != 0:
            # Kafka keeps its groups across restarts and answers GROUP_ID_NOT_FOUND here; this
            # coordinator forgets them on restart, so the member is told to rejoin instead.
            raise HeartbeatError(ErrorCode.unknown_member_id,
                                 f"Member {req.member_id} is not a member of group {req.group_id}.")
        classic = self.classic.groups.get(req.group_id)
        if classic is not None:
            if classic.members or classic.pending or classic.state not in ("Empty", "Dead"):
                raise HeartbeatError(ErrorCode.group_id_not_found, f"Group {req.group_id} is not a consumer group.")
            # an empty classic group (offsets only) becomes a consumer group, as in Kafka
            del self.classic.groups[req.group_id]
        g = self.groups[req.group_id] = ConsumerGroup(req.group_id)
        return g

    def _member_for(self, g: ConsumerGroup, req: HeartbeatRequest) -> tuple[ConsumerMember, bool]:
        member_id = req.member_id or self._new_member_id()
        if req.instance_id is None:
            member = g.members.get(member_id)
            if member is None:
                if req.member_epoch != 0:
                    raise HeartbeatError(ErrorCode.unknown_member_id,
                                         f"Member {member_id} is not a member of group {g.group_id}.")
                self._check_size(g)
                return ConsumerMember(member_id), True
            if req.member_epoch == 0:
                self._rejoin(g, member)
            else:
                self._check_epoch(member, req)
            return member, False
        existing_id = g.static.get(req.instance_id)
        existing = g.members.get(existing_id) if existing_id is not None else None
        if req.member_epoch == 0:
            if existing is None:
                if member_id in g.members:
                    self._rejoin(g, g.members[member_id])
                    return g.members[member_id], False
                self._check_size(g)
                return ConsumerMember(member_id, instance_id=req.instance_id), True
            if existing.member_id == member_id:
                self._rejoin(g, existing)
                return existing, False
            if existing.epoch != STATIC_LEAVE_EPOCH:
                raise HeartbeatError(
                    ErrorCode.unreleased_instance_id,
                    f"Static member {existing.member_id} with instance id {req.instance_id} is not released yet.",
                )
            return self._replace_static(g, existing, member_id), False
        if existing is None:
            raise HeartbeatError(ErrorCode.unknown_member_id, f"Instance id {req.instance_id} is unknown.")
        if existing.member_id != member_id:
            raise HeartbeatError(
                ErrorCode.fenced_instance_id,
                f"Static member {member_id} with instance id {req.instance_id} was fenced by member "
                f"{existing.member_id}.",
            )
        self._check_epoch(existing, req)
        return existing, False

    def _check_size(self, g: ConsumerGroup) -> None:
        if len(g.members) >= self.config.max_size:
            raise HeartbeatError(ErrorCode.group_max_size_reached,
                                 f"The consumer group has reached its maximum capacity of {self.config.max_size} members.")

    @staticmethod
    def _check_epoch(member: ConsumerMember, req: HeartbeatRequest) -> None:
        received = req.member_epoch
        if received > member.epoch:
            raise HeartbeatError(
                ErrorCode.fenced_member_epoch,
                f"The consumer group member has a greater member epoch ({received}) than the one known by the "
                f"group coordinator ({member.epoch}). The member must abandon all its partitions and rejoin.",
            )
        if received < member.epoch:
            # the previous epoch with nothing beyond the current assignment: the answer that
            # bumped the epoch was lost, accept it
            if received != member.previous_epoch or req.owned is None or not req.owned <= member.assigned:
                raise HeartbeatError(
                    ErrorCode.fenced_member_epoch,
                    f"The consumer group member has a smaller member epoch ({received}) than the one known by the "
                    f"group coordinator ({member.epoch}). The member must abandon all its partitions and rejoin.",
                )

    def _rejoin(self, g: ConsumerGroup, member: ConsumerMember) -> None:
        """A known member joining again (epoch 0, owning nothing): reconcile from scratch."""
        self._set_partitions(g, member, frozenset(), frozenset())
        member.epoch = member.previous_epoch = 0
        member.state = STABLE
        member.revocation_deadline = None

    def _replace_static(self, g: ConsumerGroup, old: ConsumerMember, member_id: str) -> ConsumerMember:
        """A static member rejoining under a new member id takes over the old one's assignment
        (the group epoch does not change: same subscription, same target)."""
        new = attrs.evolve(old, member_id=member_id, epoch=0, previous_epoch=0)
        del g.members[old.member_id]
        for tp in old.assigned | old.pending_revocation:
            g.owners.pop(tp, None)
        new.pending_revocation = frozenset()
        new.state = STABLE
        g.members[member_id] = new
        g.static[new.instance_id] = member_id  # type: ignore[index]
        if old.member_id in g.target:
            g.target[member_id] = g.target.pop(old.member_id)
        for tp in new.assigned:
            g.owners[tp] = member_id
        return new

    def _add_member(self, g: ConsumerGroup, member: ConsumerMember) -> None:
        g.members[member.member_id] = member
        if member.instance_id is not None:
            g.static[member.instance_id] = member.member_id

    # --- subscriptions and the target assignment ----------------------------------------------

    def _subscribed(self, g: ConsumerGroup, member: ConsumerMember, topics: Topics,
                    regex_cache: dict[str, frozenset[str]]) -> frozenset[str]:
        names = set(member.subscribed_names)
        if member.subscribed_regex is not None:
            rx = member.subscribed_regex
            if rx not in regex_cache:
                pattern = compile_regex(rx)
                # whole names, as RE2J's matches() in Kafka; internal topics never match
                regex_cache[rx] = frozenset(
                    t for t in topics if not t.startswith("__") and pattern.fullmatch(t) is not None
                )
            names |= regex_cache[rx]
        return frozenset(names)

    def _refresh_metadata(self, g: ConsumerGroup, topics: Topics) -> bool:
        """Recompute the subscribed topics' metadata; True if it changed (a new group epoch)."""
        cache: dict[str, frozenset[str]] = {}
        wanted: set[str] = set()
        for m in g.members.values():
            wanted |= self._subscribed(g, m, topics, cache)
        metadata = {t: topics[t] for t in sorted(wanted) if t in topics}
        if metadata == g.subscription_metadata:
            return False
        g.subscription_metadata = metadata
        return True

    def _choose_assignor(self, g: ConsumerGroup) -> str:
        """The assignor most members ask for (group.remote.assignor), else the first configured."""
        votes: dict[str, int] = {}
        for m in g.members.values():
            if m.server_assignor is not None:
                votes[m.server_assignor] = votes.get(m.server_assignor, 0) + 1
        if not votes:
            return self.config.assignors[0]
        best = max(votes.values())
        return min(name for name, v in votes.items() if v == best)

    def _compute_target(self, g: ConsumerGroup, topics: Topics) -> None:
        cache: dict[str, frozenset[str]] = {}
        specs = {
            mid: MemberSpec(self._subscribed(g, m, topics, cache), g.target.get(mid, frozenset()))
            for mid, m in g.members.items()
        }
        g.assignor = self._choose_assignor(g)
        g.target = ASSIGNORS[g.assignor](specs, g.subscription_metadata)
        g.assignment_epoch = g.group_epoch

    # --- reconciliation -----------------------------------------------------------------------

    def _set_partitions(self, g: ConsumerGroup, member: ConsumerMember,
                        assigned: frozenset[TopicPartition], pending: frozenset[TopicPartition]) -> None:
        for tp in member.assigned | member.pending_revocation:
            if g.owners.get(tp) == member.member_id:
                del g.owners[tp]
        member.assigned, member.pending_revocation = assigned, pending
        for tp in assigned | pending:
            owner = g.owners.get(tp)
            if owner is not None and owner != member.member_id:
                raise AssertionError(f"{tp} would have two owners: {owner} and {member.member_id}")
            g.owners[tp] = member.member_id

    def _reconcile(self, g: ConsumerGroup, member: ConsumerMember, owned: frozenset[TopicPartition] | None,
                   now: int) -> None:
        target_epoch = g.assignment_epoch
        if member.state == STABLE and member.epoch == target_epoch:
            return
        if member.state == UNREVOKED:
            if owned is None or owned & member.pending_revocation:
                return  # still owns partitions it must give up
            self._next_assignment(g, member, member.epoch + 1, owned, now)
        else:
            self._next_assignment(g, member, member.epoch, owned, now)

    def _next_assignment(self, g: ConsumerGroup, member: ConsumerMember, epoch: int,
                         owned: frozenset[TopicPartition] | None, now: int) -> None:
        target = g.target.get(member.member_id, frozenset())
        current = member.assigned
        keep = current & target
        revoke = current - target
        wanted = target - keep
        free = frozenset(tp for tp in wanted if g.owners.get(tp, member.member_id) == member.member_id)
        unreleased = bool(wanted - free)
        if revoke and (owned is None or owned & revoke):
            self._set_partitions(g, member, keep, revoke)
            self._set_epoch(member, epoch)
            if member.state != UNREVOKED:
                member.revocation_deadline = now + member.rebalance_timeout_ms
            member.state = UNREVOKED
            return
        self._set_partitions(g, member, keep | free, frozenset())
        self._set_epoch(member, g.assignment_epoch)
        member.state = UNRELEASED if unreleased else STABLE
        member.revocation_deadline = None

    @staticmethod
    def _set_epoch(member: ConsumerMember, epoch: int) -> None:
        if epoch != member.epoch:
            member.previous_epoch, member.epoch = member.epoch, epoch

    # --- leaving and fencing ------------------------------------------------------------------

    def _leave(self, now: int, req: HeartbeatRequest, topics: Topics) -> HeartbeatReply:
        g = self.groups.get(req.group_id)
        if g is None:
            raise HeartbeatError(ErrorCode.unknown_member_id,
                                 f"Member {req.member_id} is not a member of group {req.group_id}.")
        if req.instance_id is None:
            member = g.members.get(req.member_id)
            if member is None:
                raise HeartbeatError(ErrorCode.unknown_member_id,
                                     f"Member {req.member_id} is not a member of group {req.group_id}.")
        else:
            mid = g.static.get(req.instance_id)
            member = g.members.get(mid) if mid is not None else None
            if member is None:
                raise HeartbeatError(ErrorCode.unknown_member_id, f"Instance id {req.instance_id} is unknown.")
            if member.member_id != req.member_id:
                raise HeartbeatError(
                    ErrorCode.fenced_instance_id,
                    f"Static member {req.member_id} with instance id {req.instance_id} was fenced by member "
                    f"{member.member_id}.",
                )
            if req.member_epoch == STATIC_LEAVE_EPOCH:
                # keeps its assignment until it comes back or its session ends
                self._set_partitions(g, member, member.assigned, frozenset())
                member.epoch = STATIC_LEAVE_EPOCH
                member.state = STABLE
                member.revocation_deadline = None
                member.last_heartbeat = now
                return HeartbeatReply(ErrorCode.none, member_id=member.member_id, member_epoch=STATIC_LEAVE_EPOCH)
        self._fence(now, g, member, topics)
        return HeartbeatReply(ErrorCode.none, member_id=req.member_id, member_epoch=req.member_epoch)

    def _fence(self, now: int, g: ConsumerGroup, member: ConsumerMember, topics: Topics | None) -> None:
        self._set_partitions(g, member, frozenset(), frozenset())
        del g.members[member.member_id]
        g.target.pop(member.member_id, None)
        if member.instance_id is not None and g.static.get(member.instance_id) == member.member_id:
            del g.static[member.instance_id]
        if topics is not None:
            self._refresh_metadata(g, topics)
        g.group_epoch += 1
        if not g.members:
            self._dissolve(now, g)

    def _dissolve(self, now: int, g: ConsumerGroup) -> None:
        """The last member left: the group becomes a plain Empty group with the offsets (what a
        restart makes of it), or disappears if it has none."""
        from .state import Group

        del self.groups[g.group_id]
        if g.group_id in self.classic.offsets or g.group_id in self.classic.inflight_commits:
            self.classic.groups[g.group_id] = Group(g.group_id, state_since=now)

    # --- timers -------------------------------------------------------------------------------

    def tick(self, now: int) -> Outcome:
        """Fence the members whose session or revocation deadline has passed."""
        out = self.classic._outcome()
        out.reply = ErrorCode.none
        for g in list(self.groups.values()):
            for m in list(g.members.values()):
                if g.group_id not in self.groups or m.member_id not in g.members:
                    continue
                if now >= m.last_heartbeat + self.config.session_timeout_ms or (
                        m.revocation_deadline is not None and now >= m.revocation_deadline):
                    self._fence(now, g, m, None)
        return out

    def next_deadline(self, now: int) -> int | None:
        best: int | None = None
        for g in self.groups.values():
            for m in g.members.values():
                d = m.last_heartbeat + self.config.session_timeout_ms
                if m.revocation_deadline is not None:
                    d = min(d, m.revocation_deadline)
                best = d if best is None else min(best, d)
        return best

    # --- queries ------------------------------------------------------------------------------

    def describe(self, group_ids: Iterable[str]) -> list[GroupDescription]:
        out = []
        for gid in group_ids:
            if (refusal := self.classic.refused(gid)) is not None:
                out.append(GroupDescription(gid, refusal, _REFUSALS.get(refusal, "The coordinator is loading.")))
                continue
            g = self.groups.get(gid)
            if g is None:
                if gid in self.classic.groups:
                    out.append(GroupDescription(gid, ErrorCode.group_id_not_found, f"Group {gid} is not a consumer group."))
                else:
                    out.append(GroupDescription(gid, ErrorCode.group_id_not_found, f"Group {gid} not found."))
                continue
            members = tuple(
                MemberDescription(
                    m.member_id, m.instance_id, m.rack_id, m.epoch, m.client_id, m.client_host,
                    m.subscribed_names, m.subscribed_regex, m.assigned, g.target.get(m.member_id, frozenset()),
                )
                for m in g.members.values()
            )
            out.append(GroupDescription(gid, ErrorCode.none, None, g.state, g.group_epoch, g.assignment_epoch,
                                        g.assignor or self._choose_assignor(g), members))
        return out

    def list_groups(self, states: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(group id, state) of every consumer group, optionally filtered by state."""
        wanted = {s.lower() for s in states} if states else None
        return sorted(
            (g.group_id, g.state) for g in self.groups.values() if wanted is None or g.state.lower() in wanted
        )


def partitions_by_topic(tps: Iterable[TopicPartition]) -> dict[uuid.UUID, list[int]]:
    out: dict[uuid.UUID, list[int]] = {}
    for tid, p in sorted(tps):
        out.setdefault(tid, []).append(p)
    return out


__all__ = [
    "ConsumerGroup", "ConsumerGroupConfig", "ConsumerGroupCoordinator", "ConsumerMember", "GroupDescription",
    "HeartbeatReply", "HeartbeatRequest", "MemberDescription", "partitions_by_topic",
]
