"""The group coordinator as a sans-IO state machine (Kafka's classic group protocol).

Nothing here does I/O or reads a clock: every operation takes `now` (milliseconds) and returns an
`Outcome`:

    outcome.records      records to append to `__consumer_offsets` (one batch, in order)
    outcome.token        this request's ticket; its reply arrives in the dict `finish()` returns,
                         now or, for JoinGroup/SyncGroup that must wait for other members, in the
                         `finish()` of a later operation or tick
    (internal) replies to earlier deferred requests and actions to run once the records are durable

The caller (broker.coordinator_runtime, on Trio) appends the records, waits for the commit, then
calls `finish(outcome, ok)`; only then are committed offsets visible (the in-memory offset table is
a fold of the committed records, exactly what a replay at start-up rebuilds) and the answers go
out. Outcomes that carry records must be finished in the order they were made (the runtime does
this); outcomes without records may be finished at once.

Group states (Kafka's GroupMetadata): Empty -> PreparingRebalance -> CompletingRebalance -> Stable,
and Dead (deleted or expired, about to disappear).

  * JoinGroup moves the group to PreparingRebalance and waits until every known member has
    rejoined (or the rebalance timeout, the largest of the members' rebalance timeouts, ends;
    the first rebalance of an Empty group waits group.initial.rebalance.delay.ms, extended while
    members keep arriving, up to the rebalance timeout). Members that did not rejoin are removed,
    the generation goes up, a protocol every member supports is picked by the members' votes
    (each votes for its most preferred candidate), and every member gets its join answer; the
    leader's lists all members with their metadata for the chosen protocol.
  * SyncGroup from the leader carries the assignments; they are persisted (group metadata record)
    and then handed to every member waiting in SyncGroup; the group is Stable. A member without
    an assignment gets an encoded empty ConsumerProtocolAssignment (consumer protocol), never an
    empty blob.
  * JoinGroup v4+ from a new dynamic member is answered MEMBER_ID_REQUIRED with an id; the member
    joins for real with it (a "pending" member until then, expiring after its session timeout).
  * Static members (group.instance.id): a rejoin with an empty member id replaces the old member
    id; in a Stable group whose protocol choice does not change this does not rebalance: the new
    id takes over the old assignment. Requests still carrying the replaced id get
    FENCED_INSTANCE_ID.
  * Sessions: a member not heard from (join, sync, heartbeat, commit) for its session timeout is
    removed, except while it waits for a join or sync answer (the rebalance timeout bounds that).
    Members that got their join answer but do not SyncGroup within the rebalance timeout are
    removed too.
  * Offsets: committed per (group, topic, partition); the offsets of an Empty group expire after
    offsets.retention.minutes since it became empty (or since the last commit, if later); the
    offsets of topics a Stable consumer group no longer subscribes to expire from their commit
    time. An Empty group without offsets is then deleted (Dead, group tombstone).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from kio.schema.errors import ErrorCode

from ringlog.client.assignors import EMPTY_ASSIGNMENT, ProtocolDecodeError, decode_assignment, decode_subscription

from . import records as rec

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"
STATES = (EMPTY, PREPARING_REBALANCE, COMPLETING_REBALANCE, STABLE, DEAD)

CONSUMER = "consumer"


@attrs.frozen
class CoordinatorConfig:
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_initial_rebalance_delay_ms: int = 3000
    group_max_size: int = 2**31 - 1
    # how long a new member may wait in its first join (Kafka's 5 minutes)
    new_member_join_timeout_ms: int = 300_000
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096


# --- requests and replies (plain values; the handlers translate to and from kio) ---------------


@attrs.frozen
class JoinRequest:
    group_id: str
    member_id: str
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int = -1
    group_instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    require_known_member_id: bool = False


@attrs.frozen
class JoinMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@attrs.frozen
class JoinReply:
    error: ErrorCode
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    member_id: str = ""
    members: tuple[JoinMember, ...] = ()


@attrs.frozen
class SyncRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None
    assignments: tuple[tuple[str, bytes], ...] = ()
    protocol_type: str | None = None
    protocol_name: str | None = None


@attrs.frozen
class SyncReply:
    error: ErrorCode
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


@attrs.frozen
class HeartbeatRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


@attrs.frozen
class LeaveMember:
    member_id: str
    group_instance_id: str | None = None


@attrs.frozen
class LeaveReply:
    error: ErrorCode
    members: tuple[tuple[str, str | None, ErrorCode], ...] = ()


@attrs.frozen
class CommitEntry:
    topic: str
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""


@attrs.frozen
class CommitRequest:
    group_id: str
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None
    offsets: tuple[CommitEntry, ...] = ()
    api_version: int = -1  # OffsetCommit's (v9+: member epochs of consumer-protocol groups)


@attrs.frozen
class CommitReply:
    error: ErrorCode  # group-level (for tooling); the partitions carry the codes clients read
    partitions: tuple[tuple[str, int, ErrorCode], ...] = ()


@attrs.frozen
class MemberSummary:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@attrs.frozen
class GroupSummary:
    group_id: str
    error: ErrorCode
    state: str
    protocol_type: str
    protocol: str
    members: tuple[MemberSummary, ...] = ()


@attrs.frozen
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp: int


# --- the object model -------------------------------------------------------------------------


@attrs.define(eq=False)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout: int
    rebalance_timeout: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_token: int | None = None
    sync_token: int | None = None
    last_heartbeat: int = 0
    is_new: bool = False

    def metadata(self, protocol: str | None) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def matches(self, protocols: Sequence[tuple[str, bytes]]) -> bool:
        return list(self.protocols) == [(n, bytes(m)) for n, m in protocols]

    def vote(self, candidates: set[str]) -> str:
        for name in self.protocol_names():
            if name in candidates:
                return name
        raise ValueError("member supports none of the candidate protocols")


@attrs.define(eq=False)
class Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str | None = None
    members: dict[str, Member] = attrs.field(factory=dict)
    static: dict[str, str] = attrs.field(factory=dict)  # instance id -> member id
    pending: dict[str, int] = attrs.field(factory=dict)  # MEMBER_ID_REQUIRED ids -> expiry
    state_since: int = 0
    join_deadline: int | None = None
    initial_join: bool = False
    initial_remaining: int = 0
    new_member_added: bool = False
    pending_sync: set[str] = attrs.field(factory=set)
    sync_deadline: int | None = None

    def transition(self, state: str, now: int) -> None:
        self.state = state
        self.state_since = now

    @property
    def rebalance_timeout(self) -> int:
        return max((m.rebalance_timeout for m in self.members.values()), default=0)

    def candidate_protocols(self) -> set[str]:
        members = list(self.members.values())
        if not members:
            return set()
        common = set(members[0].protocol_names())
        for m in members[1:]:
            common &= set(m.protocol_names())
        return common

    def supports(self, protocol_type: str, protocols: Sequence[tuple[str, bytes]]) -> bool:
        names = {n for n, _ in protocols}
        if not self.members:
            return bool(protocol_type) and bool(names)
        return protocol_type == self.protocol_type and bool(self.candidate_protocols() & names)

    def select_protocol(self) -> str:
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for m in self.members.values():
            choice = m.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        best = max(votes.values())
        # ties: the leader's (else the first member's) preference decides, deterministically
        first = self.members.get(self.leader or "") or next(iter(self.members.values()))
        for name in first.protocol_names():
            if votes.get(name) == best:
                return name
        return sorted(n for n, v in votes.items() if v == best)[0]

    def all_joined(self) -> bool:
        return not self.pending and all(m.join_token is not None for m in self.members.values())

    def subscribed_topics(self) -> set[str] | None:
        """Topics the members subscribe to (consumer protocol), None when unknown."""
        if self.protocol_type != CONSUMER or self.protocol is None:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            try:
                topics.update(decode_subscription(m.metadata(self.protocol)).topics)
            except ProtocolDecodeError:
                return None
        return topics


@attrs.define(eq=False)
class Outcome:
    token: int
    records: list[rec.Record] = attrs.field(factory=list)
    reply: Any = None
    completions: dict[int, Any] = attrs.field(factory=dict)
    after: list[Callable[[bool, dict[int, Any]], None]] = attrs.field(factory=list)
    finished: bool = False
    # TxnOffsetCommit: (producer id, epoch) whose transaction the records belong to; they are
    # written as a transactional batch and applied only when its commit marker is written
    txn_producer: tuple[int, int] | None = None

    @property
    def deferred(self) -> bool:
        return self.reply is None


# error for a failed append, as Kafka maps storage failures for group operations
PERSIST_ERROR = ErrorCode.coordinator_not_available


def _default_member_id(client_id: str) -> str:
    return f"{client_id}-{uuid.uuid4()}"


class GroupCoordinator:
    """All groups and committed offsets of this broker (single node: one coordinator)."""

    def __init__(
        self,
        config: CoordinatorConfig | None = None,
        *,
        member_id_factory: Callable[[str], str] = _default_member_id,
        loading: bool = False,
    ) -> None:
        self.config = config or CoordinatorConfig()
        self.groups: dict[str, Group] = {}
        # group -> (topic, partition) -> committed offset (only committed records land here)
        self.offsets: dict[str, dict[tuple[str, int], CommittedOffset]] = {}
        # group -> (topic, partition) -> number of commits written but not yet finished
        self.inflight_commits: dict[str, dict[tuple[str, int], int]] = {}
        self.loading = loading
        # cluster mode: group id -> why this broker does not serve the group now (NOT_COORDINATOR,
        # COORDINATOR_LOAD_IN_PROGRESS), None when it does; set by the runtime
        self.owner: Callable[[str], ErrorCode | None] | None = None
        # the error a failed append answers (set by finish from the append's error)
        self.persist_error = PERSIST_ERROR
        self._new_member_id = member_id_factory
        self._tokens = 0
        self._last_expiry_check = 0
        # group values read during a replay (last wins); turned into groups by load_complete
        self._loaded_groups: dict[str, rec.GroupValue] = {}
        # consumer-protocol (KIP-848) groups by id, kept by coordinator.consumer_group; a group id
        # is either in there or in self.groups
        self.consumer_groups: dict[str, Any] = {}
        # producer id -> offset records of its open transaction (TxnOffsetCommit), in order
        self.pending_txn_offsets: dict[int, list[rec.Record]] = {}

    # --- helpers ----------------------------------------------------------------------------

    def _outcome(self) -> Outcome:
        self._tokens += 1
        return Outcome(self._tokens)

    def group(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def _group_value(self, g: Group, now: int, assignments: Mapping[str, bytes] | None = None) -> rec.GroupValue:
        members = tuple(
            rec.MemberValue(
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                rebalance_timeout=m.rebalance_timeout,
                session_timeout=m.session_timeout,
                subscription=m.metadata(g.protocol),
                assignment=(assignments.get(m.member_id, b"") if assignments is not None else m.assignment),
            )
            for m in g.members.values()
        )
        return rec.GroupValue(
            protocol_type=g.protocol_type or "",
            generation=g.generation,
            protocol=g.protocol,
            leader=g.leader,
            current_state_timestamp=g.state_since if g.state == EMPTY else now,
            members=members,
        )

    def _group_record(self, g: Group, now: int, assignments: Mapping[str, bytes] | None = None) -> rec.Record:
        return rec.group_record(g.group_id, self._group_value(g, now, assignments))

    def _assignment_blob(self, g: Group, blob: bytes) -> bytes:
        if not blob and g.protocol_type == CONSUMER:
            return EMPTY_ASSIGNMENT
        return blob

    def _validate_member(self, g: Group, member_id: str, instance_id: str | None) -> ErrorCode | None:
        if instance_id is not None:
            known = g.static.get(instance_id)
            if known is not None and known != member_id:
                return ErrorCode.fenced_instance_id
        if member_id not in g.members:
            return ErrorCode.unknown_member_id
        member = g.members[member_id]
        if instance_id is not None and member.group_instance_id not in (None, instance_id):
            return ErrorCode.fenced_instance_id
        return None

    def _join_reply(self, g: Group, member: Member, error: ErrorCode = ErrorCode.none) -> JoinReply:
        members: tuple[JoinMember, ...] = ()
        if member.member_id == g.leader:
            members = tuple(
                JoinMember(m.member_id, m.group_instance_id, m.metadata(g.protocol)) for m in g.members.values()
            )
        return JoinReply(
            error=error,
            generation_id=g.generation,
            protocol_type=g.protocol_type,
            protocol_name=g.protocol,
            leader=g.leader or "",
            member_id=member.member_id,
            members=members,
        )

    # --- membership transitions -------------------------------------------------------------

    def _add_member(self, g: Group, member: Member) -> None:
        if not g.members:
            g.protocol_type = member.protocol_type
        g.members[member.member_id] = member
        if member.group_instance_id is not None:
            g.static[member.group_instance_id] = member.member_id
        if g.leader is None:
            g.leader = member.member_id

    def _remove_member(self, g: Group, member_id: str, now: int, out: Outcome, error: ErrorCode) -> None:
        member = g.members.pop(member_id, None)
        if member is None:
            return
        if member.join_token is not None:
            out.completions[member.join_token] = JoinReply(error=error, member_id=member_id)
        if member.sync_token is not None:
            out.completions[member.sync_token] = SyncReply(error=error)
        if member.group_instance_id is not None and g.static.get(member.group_instance_id) == member_id:
            del g.static[member.group_instance_id]
        g.pending_sync.discard(member_id)
        if g.leader == member_id:
            g.leader = next(iter(g.members), None)
        if g.state in (STABLE, COMPLETING_REBALANCE):
            self._prepare_rebalance(g, now, out)
        elif g.state == PREPARING_REBALANCE:
            self._try_complete_join(g, now, out)

    def _prepare_rebalance(self, g: Group, now: int, out: Outcome) -> None:
        if g.state == COMPLETING_REBALANCE:
            self._reset_and_propagate(g, ErrorCode.rebalance_in_progress, out)
        if g.state == EMPTY:
            delay = self.config.group_initial_rebalance_delay_ms
            g.initial_join = True
            g.initial_remaining = max(g.rebalance_timeout - delay, 0)
            g.new_member_added = False
            g.join_deadline = now + delay
        else:
            g.initial_join = False
            g.join_deadline = now + g.rebalance_timeout
        g.pending_sync.clear()
        g.sync_deadline = None
        g.transition(PREPARING_REBALANCE, now)
        self._try_complete_join(g, now, out)

    def _maybe_prepare_rebalance(self, g: Group, now: int, out: Outcome) -> None:
        if g.state in (STABLE, COMPLETING_REBALANCE, EMPTY):
            self._prepare_rebalance(g, now, out)

    def _reset_and_propagate(self, g: Group, error: ErrorCode, out: Outcome) -> None:
        for m in g.members.values():
            m.assignment = b""
            if m.sync_token is not None:
                out.completions[m.sync_token] = SyncReply(error=error)
                m.sync_token = None

    def _try_complete_join(self, g: Group, now: int, out: Outcome) -> None:
        if g.state != PREPARING_REBALANCE:
            return
        deadline_passed = g.join_deadline is not None and now >= g.join_deadline
        if g.initial_join:
            if not deadline_passed:
                return
            if g.new_member_added and g.initial_remaining > 0:
                delay = min(self.config.group_initial_rebalance_delay_ms, g.initial_remaining)
                g.initial_remaining -= delay
                g.new_member_added = False
                g.join_deadline = now + delay
                return
        elif not (g.all_joined() or deadline_passed):
            return
        self._complete_join(g, now, out)

    def _complete_join(self, g: Group, now: int, out: Outcome) -> None:
        for mid in [mid for mid, m in g.members.items() if m.join_token is None]:
            # not rejoined in time: out of the group (no rebalance: we are completing one)
            member = g.members.pop(mid)
            if member.sync_token is not None:
                out.completions[member.sync_token] = SyncReply(error=ErrorCode.rebalance_in_progress)
            if member.group_instance_id is not None and g.static.get(member.group_instance_id) == mid:
                del g.static[member.group_instance_id]
            if g.leader == mid:
                g.leader = None
        if g.leader is None or g.leader not in g.members:
            g.leader = next(iter(g.members), None)
        g.join_deadline = None
        g.initial_join = False
        g.generation += 1
        if not g.members:
            g.protocol = None
            g.transition(EMPTY, now)
            out.records.append(self._group_record(g, now))
            return
        g.protocol = g.select_protocol()
        g.transition(COMPLETING_REBALANCE, now)
        for m in g.members.values():
            token = m.join_token
            m.join_token = None
            m.is_new = False
            m.last_heartbeat = now
            assert token is not None
            out.completions[token] = self._join_reply(g, m)
        g.pending_sync = set(g.members)
        g.sync_deadline = now + g.rebalance_timeout

    # --- JoinGroup ----------------------------------------------------------------------------

    def join(self, now: int, req: JoinRequest) -> Outcome:
        out = self._outcome()
        rebalance_timeout = req.rebalance_timeout_ms if req.rebalance_timeout_ms >= 0 else req.session_timeout_ms
        req = attrs.evolve(req, rebalance_timeout_ms=rebalance_timeout, protocols=tuple(
            (n, bytes(m)) for n, m in req.protocols))

        def fail(error: ErrorCode, member_id: str = "") -> Outcome:
            out.reply = JoinReply(error=error, member_id=member_id or req.member_id)
            return out

        if (refusal := self.refused(req.group_id)) is not None:
            return fail(refusal)
        if not req.group_id:
            return fail(ErrorCode.invalid_group_id)
        cfg = self.config
        if not cfg.group_min_session_timeout_ms <= req.session_timeout_ms <= cfg.group_max_session_timeout_ms:
            return fail(ErrorCode.invalid_session_timeout)
        if req.group_id in self.consumer_groups:
            # a consumer-protocol group with members takes no classic members
            return fail(ErrorCode.inconsistent_group_protocol)
        g = self.groups.get(req.group_id)
        if g is None:
            if req.member_id:
                return fail(ErrorCode.unknown_member_id)
            if not req.protocol_type or not req.protocols:
                return fail(ErrorCode.inconsistent_group_protocol)
            g = self.groups[req.group_id] = Group(req.group_id, state_since=now)
        if g.state == DEAD:
            return fail(ErrorCode.coordinator_not_available)
        known = bool(req.member_id) and (req.member_id in g.members or req.member_id in g.pending)
        if not known and req.group_instance_id not in g.static and len(g.members) + len(g.pending) >= cfg.group_max_size:
            return fail(ErrorCode.group_max_size_reached)
        if not g.supports(req.protocol_type, req.protocols):
            return fail(ErrorCode.inconsistent_group_protocol)
        if not req.member_id:
            return self._join_unknown(g, now, req, out)
        return self._join_known(g, now, req, out)

    def _new_member(self, req: JoinRequest, member_id: str, token: int, now: int) -> Member:
        return Member(
            member_id=member_id,
            group_instance_id=req.group_instance_id,
            client_id=req.client_id,
            client_host=req.client_host,
            session_timeout=req.session_timeout_ms,
            rebalance_timeout=req.rebalance_timeout_ms,
            protocol_type=req.protocol_type,
            protocols=list(req.protocols),
            join_token=token,
            last_heartbeat=now,
            is_new=True,
        )

    def _join_unknown(self, g: Group, now: int, req: JoinRequest, out: Outcome) -> Outcome:
        new_id = self._new_member_id(req.client_id)
        if req.group_instance_id is not None:
            old_id = g.static.get(req.group_instance_id)
            if old_id is not None and old_id in g.members:
                return self._replace_static_member(g, now, req, old_id, new_id, out)
            return self._add_and_rebalance(g, now, req, new_id, out)
        if req.require_known_member_id:
            g.pending[new_id] = now + req.session_timeout_ms
            out.reply = JoinReply(error=ErrorCode.member_id_required, member_id=new_id)
            return out
        return self._add_and_rebalance(g, now, req, new_id, out)

    def _add_and_rebalance(self, g: Group, now: int, req: JoinRequest, member_id: str, out: Outcome) -> Outcome:
        g.pending.pop(member_id, None)
        member = self._new_member(req, member_id, out.token, now)
        self._add_member(g, member)
        if g.state == PREPARING_REBALANCE and g.initial_join:
            g.new_member_added = True
        if g.state == PREPARING_REBALANCE:
            self._try_complete_join(g, now, out)
        else:
            self._maybe_prepare_rebalance(g, now, out)
        self._settle_own_reply(out)
        return out

    def _settle_own_reply(self, out: Outcome) -> None:
        # if the join completed inside this very operation, this request's reply is ready
        if out.token in out.completions:
            out.reply = out.completions.pop(out.token)

    def _replace_static_member(
        self, g: Group, now: int, req: JoinRequest, old_id: str, new_id: str, out: Outcome
    ) -> Outcome:
        old = g.members.pop(old_id)
        current_leader = g.leader
        # the replaced member's waiting requests are fenced
        if old.join_token is not None:
            out.completions[old.join_token] = JoinReply(error=ErrorCode.fenced_instance_id, member_id=old_id)
        if old.sync_token is not None:
            out.completions[old.sync_token] = SyncReply(error=ErrorCode.fenced_instance_id)
        member = attrs.evolve(
            old,
            member_id=new_id,
            client_id=req.client_id,
            client_host=req.client_host,
            session_timeout=req.session_timeout_ms,
            rebalance_timeout=req.rebalance_timeout_ms,
            protocols=list(req.protocols),
            join_token=out.token,
            sync_token=None,
            last_heartbeat=now,
        )
        g.members[new_id] = member
        g.static[req.group_instance_id] = new_id  # type: ignore[index]
        if g.leader == old_id:
            g.leader = new_id
        if old_id in g.pending_sync:
            g.pending_sync.discard(old_id)
            g.pending_sync.add(new_id)
        if g.state == STABLE:
            if g.select_protocol() == g.protocol:
                # no rebalance: persist the new id, then answer with the current generation; the
                # leader id stays the old one so a rejoining leader does not re-assign
                member.join_token = None
                out.records.append(self._group_record(g, now))
                reply = JoinReply(
                    error=ErrorCode.none,
                    generation_id=g.generation,
                    protocol_type=g.protocol_type,
                    protocol_name=g.protocol,
                    leader=current_leader or "",
                    member_id=new_id,
                )
                generation = g.generation

                def after(ok: bool, replies: dict[int, Any]) -> None:
                    if ok or g.generation != generation:
                        replies[out.token] = reply
                    else:
                        replies[out.token] = JoinReply(error=self.persist_error, member_id=new_id)

                out.after.append(after)
                out.reply = None
                return out
            self._prepare_rebalance(g, now, out)
        elif g.state == COMPLETING_REBALANCE:
            self._prepare_rebalance(g, now, out)
        else:  # PreparingRebalance
            self._try_complete_join(g, now, out)
        self._settle_own_reply(out)
        return out

    def _join_known(self, g: Group, now: int, req: JoinRequest, out: Outcome) -> Outcome:
        if req.member_id in g.pending:
            if req.group_instance_id is not None:
                out.reply = JoinReply(error=ErrorCode.unknown_member_id, member_id=req.member_id)
                return out
            return self._add_and_rebalance(g, now, req, req.member_id, out)
        error = self._validate_member(g, req.member_id, req.group_instance_id)
        if error is not None:
            out.reply = JoinReply(error=error, member_id=req.member_id)
            return out
        member = g.members[req.member_id]
        if g.state == PREPARING_REBALANCE:
            self._update_and_rebalance(g, member, now, req, out)
        elif g.state == COMPLETING_REBALANCE:
            if member.matches(req.protocols):
                member.last_heartbeat = now
                out.reply = self._join_reply(g, member)
            else:
                self._update_and_rebalance(g, member, now, req, out)
        elif g.state == STABLE:
            if member.member_id == g.leader or not member.matches(req.protocols):
                self._update_and_rebalance(g, member, now, req, out)
            else:
                member.last_heartbeat = now
                out.reply = self._join_reply(g, member)
        else:
            out.reply = JoinReply(error=ErrorCode.unknown_member_id, member_id=req.member_id)
            return out
        self._settle_own_reply(out)
        return out

    def _update_and_rebalance(self, g: Group, member: Member, now: int, req: JoinRequest, out: Outcome) -> None:
        if member.join_token is not None:
            # a newer join replaces the one still waiting (its connection is usually gone)
            out.completions[member.join_token] = JoinReply(error=ErrorCode.rebalance_in_progress,
                                                           member_id=member.member_id)
        member.protocols = list(req.protocols)
        member.session_timeout = req.session_timeout_ms
        member.rebalance_timeout = req.rebalance_timeout_ms
        member.client_id = req.client_id or member.client_id
        member.client_host = req.client_host or member.client_host
        member.join_token = out.token
        member.last_heartbeat = now
        if g.state == PREPARING_REBALANCE:
            self._try_complete_join(g, now, out)
        else:
            self._maybe_prepare_rebalance(g, now, out)

    # --- SyncGroup ------------------------------------------------------------------------------

    def sync(self, now: int, req: SyncRequest) -> Outcome:
        out = self._outcome()
        if (refusal := self.refused(req.group_id)) is not None:
            out.reply = SyncReply(error=refusal)
            return out
        g = self.groups.get(req.group_id)
        if g is None:
            out.reply = SyncReply(error=ErrorCode.unknown_member_id)
            return out
        if g.state == DEAD:
            out.reply = SyncReply(error=ErrorCode.coordinator_not_available)
            return out
        error = self._validate_member(g, req.member_id, req.group_instance_id)
        if error is None and req.generation_id != g.generation:
            error = ErrorCode.illegal_generation
        if error is None and (
            (req.protocol_type is not None and req.protocol_type != g.protocol_type)
            or (req.protocol_name is not None and req.protocol_name != g.protocol)
        ):
            error = ErrorCode.inconsistent_group_protocol
        if error is not None:
            out.reply = SyncReply(error=error)
            return out
        member = g.members[req.member_id]
        if g.state == EMPTY:
            out.reply = SyncReply(error=ErrorCode.unknown_member_id)
        elif g.state == PREPARING_REBALANCE:
            out.reply = SyncReply(error=ErrorCode.rebalance_in_progress)
        elif g.state == STABLE:
            member.last_heartbeat = now
            g.pending_sync.discard(member.member_id)
            out.reply = SyncReply(
                error=ErrorCode.none,
                assignment=self._assignment_blob(g, member.assignment),
                protocol_type=g.protocol_type,
                protocol_name=g.protocol,
            )
        else:  # CompletingRebalance
            if member.sync_token is not None:
                out.completions[member.sync_token] = SyncReply(error=ErrorCode.rebalance_in_progress)
            member.sync_token = out.token
            member.last_heartbeat = now
            g.pending_sync.discard(member.member_id)
            if member.member_id == g.leader:
                assignments = {mid: bytes(blob) for mid, blob in req.assignments if mid in g.members}
                out.records.append(self._group_record(g, now, assignments))
                generation = g.generation

                def after(ok: bool, replies: dict[int, Any]) -> None:
                    if g.state != COMPLETING_REBALANCE or g.generation != generation:
                        return  # a rebalance started meanwhile; those waiting were answered then
                    if ok:
                        for m in g.members.values():
                            m.assignment = assignments.get(m.member_id, b"")
                        self._propagate(g, replies)
                        g.transition(STABLE, now)
                    else:
                        tmp = Outcome(0)
                        self._reset_and_propagate(g, self.persist_error, tmp)
                        self._prepare_rebalance(g, now, tmp)
                        replies.update(tmp.completions)

                out.after.append(after)
        return out

    def _propagate(self, g: Group, replies: dict[int, Any]) -> None:
        for m in g.members.values():
            if m.sync_token is not None:
                replies[m.sync_token] = SyncReply(
                    error=ErrorCode.none,
                    assignment=self._assignment_blob(g, m.assignment),
                    protocol_type=g.protocol_type,
                    protocol_name=g.protocol,
                )
                m.sync_token = None

    # --- Heartbeat / LeaveGroup ----------------------------------------------------------------

    def heartbeat(self, now: int, req: HeartbeatRequest) -> Outcome:
        out = self._outcome()
        out.reply = self._heartbeat(now, req)
        return out

    def _heartbeat(self, now: int, req: HeartbeatRequest) -> ErrorCode:
        if (refusal := self.refused(req.group_id)) is not None:
            return refusal
        g = self.groups.get(req.group_id)
        if g is None:
            return ErrorCode.unknown_member_id
        if g.state == DEAD:
            return ErrorCode.coordinator_not_available
        error = self._validate_member(g, req.member_id, req.group_instance_id)
        if error is not None:
            return error
        if req.generation_id != g.generation:
            return ErrorCode.illegal_generation
        if g.state == EMPTY:
            return ErrorCode.unknown_member_id
        g.members[req.member_id].last_heartbeat = now
        if g.state == PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave(self, now: int, group_id: str, members: Sequence[LeaveMember]) -> Outcome:
        out = self._outcome()
        if (refusal := self.refused(group_id)) is not None:
            out.reply = LeaveReply(error=refusal)
            return out
        g = self.groups.get(group_id)
        if g is None:
            out.reply = LeaveReply(
                ErrorCode.none, tuple((m.member_id, m.group_instance_id, ErrorCode.unknown_member_id) for m in members)
            )
            return out
        if g.state == DEAD:
            out.reply = LeaveReply(error=ErrorCode.coordinator_not_available)
            return out
        results = []
        for lm in members:
            if not lm.member_id:
                current = g.static.get(lm.group_instance_id) if lm.group_instance_id is not None else None
                if current is not None:
                    self._remove_member(g, current, now, out, ErrorCode.unknown_member_id)
                    results.append((lm.member_id, lm.group_instance_id, ErrorCode.none))
                else:
                    results.append((lm.member_id, lm.group_instance_id, ErrorCode.unknown_member_id))
            elif lm.member_id in g.pending:
                del g.pending[lm.member_id]
                self._try_complete_join(g, now, out)
                results.append((lm.member_id, lm.group_instance_id, ErrorCode.none))
            else:
                error = self._validate_member(g, lm.member_id, lm.group_instance_id)
                if error is None:
                    self._remove_member(g, lm.member_id, now, out, ErrorCode.unknown_member_id)
                results.append((lm.member_id, lm.group_instance_id, error or ErrorCode.none))
        out.reply = LeaveReply(ErrorCode.none, tuple(results))
        return out

    # --- offsets ------------------------------------------------------------------------------

    def commit(self, now: int, req: CommitRequest, known_partitions: Callable[[str, int], bool] | None = None,
               transactional: tuple[int, int] | None = None) -> Outcome:
        """OffsetCommit. `known_partitions(topic, p)` says whether the partition exists.
        `transactional` (producer id, epoch): TxnOffsetCommit, whose offsets become visible when
        the transaction commits (`complete_txn`); like Kafka it needs no membership when the
        request names no member."""
        out = self._outcome()
        out.txn_producer = transactional

        def all_fail(error: ErrorCode) -> Outcome:
            out.reply = CommitReply(error, tuple((e.topic, e.partition, error) for e in req.offsets))
            return out

        if (refusal := self.refused(req.group_id)) is not None:
            return all_fail(refusal)
        if not req.group_id:
            return all_fail(ErrorCode.invalid_group_id)
        g = self.groups.get(req.group_id)
        consumer_group = self.consumer_groups.get(req.group_id)
        if consumer_group is not None:
            # KIP-848 group: its member epochs decide; the writes below are the same
            error = consumer_group.commit_error(req.member_id, req.generation_id, req.api_version)
            if error is not None:
                return all_fail(error)
            req = attrs.evolve(req, generation_id=-1, member_id="", group_instance_id=None)
            g = Group(req.group_id)  # a stand-in, not registered: the offsets are the group's
        if g is None:
            if req.generation_id >= 0:
                # a member of a group this coordinator does not know (e.g. deleted meanwhile)
                return all_fail(ErrorCode.illegal_generation)
            g = self.groups[req.group_id] = Group(req.group_id, state_since=now)
        if g.state == DEAD:
            return all_fail(ErrorCode.coordinator_not_available)
        if req.generation_id >= 0 or req.member_id or req.group_instance_id is not None:
            error = self._validate_member(g, req.member_id, req.group_instance_id)
            if error is None and req.generation_id != g.generation:
                error = ErrorCode.illegal_generation
            if error is None and g.state == COMPLETING_REBALANCE:
                error = ErrorCode.rebalance_in_progress
            if error is not None:
                return all_fail(error)
            g.members[req.member_id].last_heartbeat = now
        elif g.state != EMPTY and transactional is None:
            # a non-empty group takes commits only from its members
            return all_fail(ErrorCode.unknown_member_id)
        results = []
        written: list[tuple[str, int]] = []
        for e in req.offsets:
            metadata = e.metadata or ""
            if len(metadata.encode("utf-8")) > self.config.offset_metadata_max_bytes:
                results.append((e.topic, e.partition, ErrorCode.offset_metadata_too_large))
                continue
            if known_partitions is not None and not known_partitions(e.topic, e.partition):
                results.append((e.topic, e.partition, ErrorCode.unknown_topic_or_partition))
                continue
            value = rec.OffsetValue(e.offset, e.leader_epoch, metadata, now)
            out.records.append(rec.offset_record(g.group_id, e.topic, e.partition, value))
            written.append((e.topic, e.partition))
            results.append((e.topic, e.partition, ErrorCode.none))
        inflight = self.inflight_commits.setdefault(g.group_id, {})
        for tp in written:
            inflight[tp] = inflight.get(tp, 0) + 1
        reply = CommitReply(ErrorCode.none, tuple(results))
        if not written:
            out.reply = reply
            return out
        group_id = g.group_id

        def after(ok: bool, replies: dict[int, Any]) -> None:
            pending = self.inflight_commits.get(group_id, {})
            for tp in written:
                left = pending.get(tp, 0) - 1
                if left > 0:
                    pending[tp] = left
                else:
                    pending.pop(tp, None)
            if not pending:
                self.inflight_commits.pop(group_id, None)
            if ok:
                replies[out.token] = reply
            else:
                replies[out.token] = CommitReply(
                    self.persist_error,
                    tuple((t, p, self.persist_error if err == ErrorCode.none else err) for t, p, err in results),
                )

        out.after.append(after)
        return out

    def fetch_offsets(
        self, group_id: str, partitions: Iterable[tuple[str, int]] | None = None
    ) -> tuple[ErrorCode, dict[tuple[str, int], CommittedOffset | None]]:
        """OffsetFetch: committed offsets (None = nothing committed). partitions None: all."""
        if (refusal := self.refused(group_id)) is not None:
            return refusal, {}
        stored = self.offsets.get(group_id, {})
        if partitions is None:
            return ErrorCode.none, dict(sorted(stored.items()))
        return ErrorCode.none, {tp: stored.get(tp) for tp in partitions}

    # --- admin --------------------------------------------------------------------------------

    def list_groups(self, states: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
        """(group id, protocol type, state) of every live group, optionally filtered by state."""
        wanted = {s.lower() for s in states} if states else None
        out = []
        for g in self.groups.values():
            if g.state == DEAD:
                continue
            if wanted is not None and g.state.lower() not in wanted:
                continue
            out.append((g.group_id, g.protocol_type or "", g.state))
        return sorted(out)

    def describe(self, group_id: str) -> GroupSummary:
        if (refusal := self.refused(group_id)) is not None:
            return GroupSummary(group_id, refusal, "", "", "")
        g = self.groups.get(group_id)
        if g is None:
            return GroupSummary(group_id, ErrorCode.none, DEAD, "", "")
        if g.state == STABLE:
            members = tuple(
                MemberSummary(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                              m.metadata(g.protocol), m.assignment)
                for m in g.members.values()
            )
            return GroupSummary(group_id, ErrorCode.none, g.state, g.protocol_type or "", g.protocol or "", members)
        members = tuple(
            MemberSummary(m.member_id, m.group_instance_id, m.client_id, m.client_host, b"", b"")
            for m in g.members.values()
        )
        return GroupSummary(group_id, ErrorCode.none, g.state, g.protocol_type or "", "", members)

    def delete_groups(self, now: int, group_ids: Sequence[str]) -> Outcome:
        """DeleteGroups: reply is a tuple of (group id, error)."""
        out = self._outcome()
        results: list[tuple[str, ErrorCode]] = []
        deleted: list[tuple[Group, str]] = []
        for gid in group_ids:
            if (refusal := self.refused(gid)) is not None:
                results.append((gid, refusal))
                continue
            g = self.groups.get(gid)
            if g is None or g.state == DEAD:
                results.append((gid, ErrorCode.group_id_not_found))
                continue
            if g.state != EMPTY:
                results.append((gid, ErrorCode.non_empty_group))
                continue
            out.records.extend(self._tombstones(gid, self._offset_keys(gid)))
            out.records.append(rec.group_record(gid, None))
            deleted.append((g, g.state))
            g.transition(DEAD, now)
            results.append((gid, ErrorCode.none))

        def after(ok: bool, replies: dict[int, Any]) -> None:
            final = list(results)
            for g, previous in deleted:
                if ok:
                    if self.groups.get(g.group_id) is g:
                        del self.groups[g.group_id]
                else:
                    g.transition(previous, now)
                    final = [(gid, self.persist_error if gid == g.group_id else e) for gid, e in final]
            replies[out.token] = tuple(final)

        if out.records:
            out.after.append(after)
        else:
            out.reply = tuple(results)
        return out

    def delete_offsets(self, now: int, group_id: str, partitions: Sequence[tuple[str, int]]) -> Outcome:
        """OffsetDelete: reply is (group error, ((topic, partition, error), ...))."""
        out = self._outcome()
        if (refusal := self.refused(group_id)) is not None:
            out.reply = (refusal, ())
            return out
        g = self.groups.get(group_id)
        consumer_group = self.consumer_groups.get(group_id)
        if consumer_group is not None:
            g = Group(group_id)  # KIP-848 group, a stand-in: its subscribed topics are protected below
        if g is None or g.state == DEAD:
            out.reply = (ErrorCode.group_id_not_found, ())
            return out
        subscribed: set[str] = set(consumer_group.subscription_metadata) if consumer_group is not None else set()
        if g.state != EMPTY:
            if g.protocol_type != CONSUMER:
                out.reply = (ErrorCode.non_empty_group, ())
                return out
            subscribed = g.subscribed_topics() or set()
        results = []
        doomed = []
        for topic, p in partitions:
            if topic in subscribed:
                results.append((topic, p, ErrorCode.group_subscribed_to_topic))
            else:
                doomed.append((topic, p))
                results.append((topic, p, ErrorCode.none))
        existing = self._offset_keys(group_id)
        out.records.extend(self._tombstones(group_id, [tp for tp in doomed if tp in existing]))
        reply = (ErrorCode.none, tuple(results))
        if out.records:
            def after(ok: bool, replies: dict[int, Any]) -> None:
                replies[out.token] = reply if ok else (self.persist_error, ())
            out.after.append(after)
        else:
            out.reply = reply
        return out

    def _offset_keys(self, group_id: str) -> set[tuple[str, int]]:
        return set(self.offsets.get(group_id, {})) | set(self.inflight_commits.get(group_id, {}))

    @staticmethod
    def _tombstones(group_id: str, tps: Iterable[tuple[str, int]]) -> list[rec.Record]:
        return [rec.offset_record(group_id, t, p, None) for t, p in sorted(tps)]

    # --- time ---------------------------------------------------------------------------------

    def tick(self, now: int) -> Outcome:
        """Expire sessions, pending members, join and sync deadlines, and (periodically) offsets."""
        out = self._outcome()
        out.reply = ErrorCode.none
        if self.loading:
            return out
        for g in list(self.groups.values()):
            if g.state == DEAD:
                continue
            for mid, expiry in list(g.pending.items()):
                if now >= expiry:
                    del g.pending[mid]
                    self._try_complete_join(g, now, out)
            for m in list(g.members.values()):
                if m.member_id not in g.members:
                    continue
                if m.join_token is not None:
                    expired = m.is_new and now >= m.last_heartbeat + self.config.new_member_join_timeout_ms
                elif m.sync_token is not None:
                    expired = False
                else:
                    expired = now >= m.last_heartbeat + m.session_timeout
                if expired:
                    self._remove_member(g, m.member_id, now, out, ErrorCode.unknown_member_id)
            if g.state == PREPARING_REBALANCE:
                self._try_complete_join(g, now, out)
            if g.state in (COMPLETING_REBALANCE, STABLE) and g.pending_sync and g.sync_deadline is not None \
                    and now >= g.sync_deadline:
                for mid in list(g.pending_sync):
                    g.pending_sync.discard(mid)
                    # removing the first one starts a rebalance; the rest go the same way
                    self._remove_member(g, mid, now, out, ErrorCode.unknown_member_id)
        if now - self._last_expiry_check >= self.config.offsets_retention_check_interval_ms:
            self._last_expiry_check = now
            self._expire_offsets(now, out)
        return out

    def expire_offsets(self, now: int) -> Outcome:
        """Run the offsets expiry now (tests and admin tooling)."""
        out = self._outcome()
        out.reply = ErrorCode.none
        if not self.loading:
            self._expire_offsets(now, out)
        return out

    def _expire_offsets(self, now: int, out: Outcome) -> None:
        retention = self.config.offsets_retention_ms
        dying: list[Group] = []
        for g in list(self.groups.values()):
            if g.state == DEAD:
                continue
            stored = self.offsets.get(g.group_id, {})
            inflight = self.inflight_commits.get(g.group_id, {})
            expired: list[tuple[str, int]] = []
            if g.state == EMPTY:
                for tp, off in stored.items():
                    base = max(g.state_since, off.commit_timestamp) if g.protocol_type else off.commit_timestamp
                    if now >= base + retention and tp not in inflight:
                        expired.append(tp)
            elif g.state == STABLE:
                subscribed = g.subscribed_topics()
                if subscribed is not None:
                    for tp, off in stored.items():
                        if tp[0] not in subscribed and now >= off.commit_timestamp + retention and tp not in inflight:
                            expired.append(tp)
            out.records.extend(self._tombstones(g.group_id, expired))
            if g.state == EMPTY and len(expired) == len(stored) and not inflight:
                out.records.append(rec.group_record(g.group_id, None))
                g.transition(DEAD, now)
                dying.append(g)
        if dying:
            def after(ok: bool, replies: dict[int, Any]) -> None:
                for g in dying:
                    if ok:
                        if self.groups.get(g.group_id) is g:
                            del self.groups[g.group_id]
                    else:
                        g.transition(EMPTY, now)
            out.after.append(after)

    def next_deadline(self, now: int) -> int:
        """The earliest time at which tick() has something to do (at most the expiry check)."""
        best = self._last_expiry_check + self.config.offsets_retention_check_interval_ms
        for g in self.groups.values():
            if g.join_deadline is not None:
                best = min(best, g.join_deadline)
            if g.sync_deadline is not None and g.pending_sync:
                best = min(best, g.sync_deadline)
            for expiry in g.pending.values():
                best = min(best, expiry)
            for m in g.members.values():
                if m.join_token is not None:
                    if m.is_new:
                        best = min(best, m.last_heartbeat + self.config.new_member_join_timeout_ms)
                elif m.sync_token is None:
                    best = min(best, m.last_heartbeat + m.session_timeout)
        return max(best, now)

    # --- persistence ----------------------------------------------------------------------------

    def refused(self, group_id: str) -> ErrorCode | None:
        """Why this coordinator does not serve `group_id` now (None: it does)."""
        if self.loading:
            return ErrorCode.coordinator_load_in_progress
        return self.owner(group_id) if self.owner is not None else None

    def finish(self, outcome: Outcome, ok: bool = True, error: ErrorCode = PERSIST_ERROR) -> dict[int, Any]:
        """Apply `outcome` after its records were appended (`ok`) or failed (answering `error`,
        already mapped to a group error); return the replies now known: token -> reply (this
        request's and any earlier deferred ones')."""
        self.persist_error = error
        if outcome.finished:
            raise RuntimeError("outcome finished twice")
        outcome.finished = True
        replies: dict[int, Any] = dict(outcome.completions)
        if ok and outcome.txn_producer is not None:
            self.pending_txn_offsets.setdefault(outcome.txn_producer[0], []).extend(outcome.records)
        elif ok:
            for key, value in outcome.records:
                self._apply(key, value)
        for action in outcome.after:
            action(ok, replies)
        if outcome.reply is not None:
            replies[outcome.token] = outcome.reply
        return replies

    def _apply(self, key: bytes, value: bytes | None) -> None:
        k, v = rec.decode(key, value)
        if isinstance(k, rec.OffsetKey):
            tp = (k.topic, k.partition)
            if v is None:
                stored = self.offsets.get(k.group)
                if stored is not None:
                    stored.pop(tp, None)
                    if not stored:
                        del self.offsets[k.group]
            else:
                assert isinstance(v, rec.OffsetValue)
                self.offsets.setdefault(k.group, {})[tp] = CommittedOffset(
                    v.offset, v.leader_epoch, v.metadata, v.commit_timestamp
                )

    def pending_txn_partitions(self, group_id: str) -> set[tuple[str, int]]:
        """Partitions of the group with a transactional offset commit not yet ended (OffsetFetch
        with require_stable answers UNSTABLE_OFFSET_COMMIT for them, as Kafka does)."""
        out = set()
        for records in self.pending_txn_offsets.values():
            for key, _value in records:
                k = rec.decode_key(key)
                if isinstance(k, rec.OffsetKey) and k.group == group_id:
                    out.add((k.topic, k.partition))
        return out

    def complete_txn(self, producer_id: int, commit: bool) -> None:
        """The transaction's marker is written into __consumer_offsets: its offsets become
        committed, or are dropped on abort."""
        records = self.pending_txn_offsets.pop(producer_id, [])
        if commit:
            for key, value in records:
                self._apply(key, value)

    # --- loading (replay of __consumer_offsets) -------------------------------------------------

    def replay(self, key: bytes | None, value: bytes | None) -> None:
        """Feed one record of `__consumer_offsets`, in log order (during loading)."""
        if key is None:
            return
        k, v = rec.decode(key, value)
        if isinstance(k, rec.OffsetKey):
            self._apply(key, value)
        elif v is None:
            self._loaded_groups.pop(k.group, None)
        else:
            assert isinstance(v, rec.GroupValue)
            self._loaded_groups[k.group] = v

    def load_complete(self, now: int) -> None:
        """Build the groups from the replayed records and start serving. Loaded members' session
        timers start now; a group with members is Stable, one without is Empty."""
        for gid, v in self._loaded_groups.items():
            g = Group(gid, generation=v.generation, protocol_type=v.protocol_type or None,
                      protocol=v.protocol, leader=v.leader)
            for mv in v.members:
                member = Member(
                    member_id=mv.member_id,
                    group_instance_id=mv.group_instance_id,
                    client_id=mv.client_id,
                    client_host=mv.client_host,
                    session_timeout=mv.session_timeout,
                    rebalance_timeout=mv.rebalance_timeout,
                    protocol_type=v.protocol_type,
                    protocols=[(v.protocol or "", mv.subscription)],
                    assignment=mv.assignment,
                    last_heartbeat=now,
                )
                g.members[member.member_id] = member
                if member.group_instance_id is not None:
                    g.static[member.group_instance_id] = member.member_id
            if g.members:
                if g.leader not in g.members:
                    g.leader = next(iter(g.members))
                g.transition(STABLE, now)
            else:
                g.leader = None
                g.transition(EMPTY, v.current_state_timestamp if v.current_state_timestamp >= 0 else now)
            self.groups[gid] = g
        for gid in self.offsets:
            if gid not in self.groups:
                self.groups[gid] = Group(gid, state_since=now)
        self._loaded_groups.clear()
        self._last_expiry_check = now
        self.loading = False

    def unload(self, belongs: Callable[[str], bool]) -> dict[int, Any]:
        """Forget every group for which `belongs(group_id)` (this broker stopped leading their
        partition of `__consumer_offsets`): their groups, offsets and KIP-848 groups leave memory,
        and the requests still waiting on them (JoinGroup, SyncGroup) get NOT_COORDINATOR; the
        returned replies are token -> reply, as finish() returns them."""
        replies: dict[int, Any] = {}
        for gid in [gid for gid in self.groups if belongs(gid)]:
            for m in self.groups.pop(gid).members.values():
                if m.join_token is not None:
                    replies[m.join_token] = JoinReply(error=ErrorCode.not_coordinator, member_id=m.member_id)
                if m.sync_token is not None:
                    replies[m.sync_token] = SyncReply(error=ErrorCode.not_coordinator)
        for table in (self.offsets, self.inflight_commits, self.consumer_groups, self._loaded_groups):
            for gid in [gid for gid in table if belongs(gid)]:
                del table[gid]
        return replies

    # --- lag --------------------------------------------------------------------------------------

    def group_partitions(self, group_id: str) -> set[tuple[str, int]]:
        """Partitions the group has committed offsets for or currently has assigned."""
        tps = set(self.offsets.get(group_id, {}))
        g = self.groups.get(group_id)
        if g is not None and g.protocol_type == CONSUMER:
            for m in g.members.values():
                try:
                    tps.update(decode_assignment(m.assignment).topic_partitions())
                except ProtocolDecodeError:
                    pass
        return tps


def lag_report(
    coordinator: GroupCoordinator, group_id: str, log_end: Callable[[str, int], int]
) -> list[tuple[str, int, int | None, int, int | None]]:
    """(topic, partition, committed offset or None, log end offset, lag or None) per partition
    of the group, sorted. `log_end(topic, p)` gives the high watermark (-1 if unknown)."""
    _, committed = coordinator.fetch_offsets(group_id)
    rows = []
    for topic, p in sorted(coordinator.group_partitions(group_id)):
        c = committed.get((topic, p))
        end = log_end(topic, p)
        off = c.offset if c is not None else None
        lag = max(end - off, 0) if off is not None and off >= 0 and end >= 0 else None
        rows.append((topic, p, off, end, lag))
    return rows
