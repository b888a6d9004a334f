"""Consumer-group APIs: translate kio requests to the coordinator state machine and back.

FindCoordinator (10) v0-3, JoinGroup (11) v0-5, Heartbeat (12) v0-3, LeaveGroup (13) v0-3,
SyncGroup (14) v0-3, OffsetCommit (8) v2-9, OffsetFetch (9) v1-9, DescribeGroups (15) v0-6,
ListGroups (16) v0-5, DeleteGroups (42) v0-2, OffsetDelete (47) v0.

Single node: this broker coordinates every group (FindCoordinator always names it). Cluster
mode: FindCoordinator names the leader of the group's `__consumer_offsets` partition, and the
coordinator answers NOT_COORDINATOR for the groups of partitions it does not lead
(broker.coordinator_runtime). The work and
the Kafka semantics live in broker.coordinator (state machine) and broker.coordinator_runtime
(persistence in `__consumer_offsets`, timers); these handlers only convert.
"""
from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode

from ..coordinator import (
    CommitEntry,
    CommitRequest,
    HeartbeatRequest,
    JoinRequest,
    LeaveMember,
    SyncRequest,
)
from ..security import authorizer as acl
from . import RequestContext, _authorized, handler, has_field, make, nested

ZERO = datetime.timedelta(0)
KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def _ms(value) -> int:
    if isinstance(value, datetime.timedelta):
        return int(value / datetime.timedelta(milliseconds=1))
    return int(value)


def _host(ctx: RequestContext) -> str:
    # Kafka reports the client's address as "/ip"
    host = ctx.peer.rsplit(":", 1)[0] if ctx.peer else ""
    return "/" + host.strip("[]") if host else ""


# --- FindCoordinator ---------------------------------------------------------------------------


@handler(api_key=10, min_version=0, max_version=3)
async def find_coordinator(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    key_type = getattr(request, "key_type", KEY_TYPE_GROUP)
    if key_type == KEY_TYPE_GROUP and not ctx.authorize(acl.DESCRIBE, acl.GROUP, request.key):
        return ctx.refused(acl.GROUP)
    if key_type == KEY_TYPE_TRANSACTION:
        if not ctx.authorize(acl.DESCRIBE, acl.TRANSACTIONAL_ID, request.key):
            return ctx.refused(acl.TRANSACTIONAL_ID)
        # single node: this broker is the transaction coordinator of every transactional id (in
        # cluster mode too, where InitProducerId then refuses: transactions are single-node only)
        error = await broker.txn.ensure_ready() if broker.cluster is None else None
        if error is not None:
            return make(Response, throttle_time=ZERO, error_code=error,
                        error_message="transaction coordinator is not ready", node_id=-1, host="", port=-1)
    elif key_type != KEY_TYPE_GROUP:
        return make(Response, throttle_time=ZERO, error_code=ErrorCode.invalid_request,
                    error_message=f"unknown coordinator key type {key_type}", node_id=-1, host="", port=-1)
    if broker.coordinator.load_error is not None:
        return make(Response, throttle_time=ZERO, error_code=ErrorCode.coordinator_not_available,
                    error_message="group coordinator failed to load", node_id=-1, host="", port=-1)
    if key_type == KEY_TYPE_GROUP and broker.cluster is not None:
        # the leader of the group's __consumer_offsets partition (created here if it is missing)
        why = await broker.coordinator.ensure_offsets_topic()
        found = broker.cluster.coordinator_of(request.key, ctx.listener_name) if why is None else None
        if found is None:
            return make(Response, throttle_time=ZERO, error_code=ErrorCode.coordinator_not_available,
                        error_message=why or "the group's __consumer_offsets partition has no leader yet",
                        node_id=-1, host="", port=-1)
        return make(Response, throttle_time=ZERO, error_code=ErrorCode.none, error_message=None,
                    node_id=found[0], host=found[1], port=found[2])
    return make(Response, throttle_time=ZERO, error_code=ErrorCode.none, error_message=None,
                node_id=broker.node_id, host=ctx.advertised[0], port=ctx.advertised[1])


# --- JoinGroup / SyncGroup / Heartbeat / LeaveGroup ----------------------------------------------


@handler(api_key=11, min_version=0, max_version=5)
async def join_group(ctx: RequestContext, request) -> object:
    if not ctx.authorize(acl.READ, acl.GROUP, request.group_id):
        return ctx.refused(acl.GROUP)
    Response = ctx.response_class()
    Member = nested(Response, "JoinGroupResponseMember")
    req = JoinRequest(
        group_id=request.group_id,
        member_id=request.member_id or "",
        protocol_type=request.protocol_type or "",
        protocols=tuple((p.name, bytes(p.metadata)) for p in request.protocols),
        session_timeout_ms=_ms(request.session_timeout),
        rebalance_timeout_ms=_ms(request.rebalance_timeout) if has_field(type(request), "rebalance_timeout") else -1,
        group_instance_id=getattr(request, "group_instance_id", None),
        client_id=ctx.client_id or "",
        client_host=_host(ctx),
        require_known_member_id=ctx.api_version >= 4,
    )
    coordinator = ctx.broker.coordinator
    reply = await coordinator.execute(coordinator.state.join, req)
    members = tuple(
        make(Member, member_id=m.member_id, group_instance_id=m.group_instance_id, metadata=m.metadata)
        for m in reply.members
    )
    return make(
        Response,
        throttle_time=ZERO,
        error_code=reply.error,
        generation_id=reply.generation_id,
        protocol_name=reply.protocol_name or "",
        leader=reply.leader,
        member_id=reply.member_id,
        members=members,
    )


@handler(api_key=14, min_version=0, max_version=3)
async def sync_group(ctx: RequestContext, request) -> object:
    if not ctx.authorize(acl.READ, acl.GROUP, request.group_id):
        return ctx.refused(acl.GROUP)
    Response = ctx.response_class()
    req = SyncRequest(
        group_id=request.group_id,
        generation_id=int(request.generation_id),
        member_id=request.member_id,
        group_instance_id=getattr(request, "group_instance_id", None),
        assignments=tuple((a.member_id, bytes(a.assignment)) for a in request.assignments),
        protocol_type=getattr(request, "protocol_type", None),
        protocol_name=getattr(request, "protocol_name", None),
    )
    coordinator = ctx.broker.coordinator
    reply = await coordinator.execute(coordinator.state.sync, req)
    return make(Response, throttle_time=ZERO, error_code=reply.error, assignment=reply.assignment)


@handler(api_key=12, min_version=0, max_version=3)
async def heartbeat(ctx: RequestContext, request) -> object:
    if not ctx.authorize(acl.READ, acl.GROUP, request.group_id):
        return ctx.refused(acl.GROUP)
    Response = ctx.response_class()
    req = HeartbeatRequest(
        group_id=request.group_id,
        generation_id=int(request.generation_id),
        member_id=request.member_id,
        group_instance_id=getattr(request, "group_instance_id", None),
    )
    coordinator = ctx.broker.coordinator
    error = await coordinator.execute(coordinator.state.heartbeat, req)
    return make(Response, throttle_time=ZERO, error_code=error)


@handler(api_key=13, min_version=0, max_version=3)
async def leave_group(ctx: RequestContext, request) -> object:
    if not ctx.authorize(acl.READ, acl.GROUP, request.group_id):
        return ctx.refused(acl.GROUP)
    Response = ctx.response_class()
    if ctx.api_version >= 3:
        members = [LeaveMember(m.member_id or "", m.group_instance_id) for m in request.members]
    else:
        members = [LeaveMember(request.member_id)]
    coordinator = ctx.broker.coordinator
    reply = await coordinator.execute(coordinator.state.leave, request.group_id, members)
    if ctx.api_version < 3:
        # one member: its error is the answer
        error = reply.members[0][2] if reply.error == ErrorCode.none and reply.members else reply.error
        return make(Response, throttle_time=ZERO, error_code=error)
    MemberResponse = nested(Response, "MemberResponse")
    return make(
        Response,
        throttle_time=ZERO,
        error_code=reply.error,
        members=tuple(
            make(MemberResponse, member_id=mid, group_instance_id=iid, error_code=err)
            for mid, iid, err in reply.members
        ),
    )


# --- OffsetCommit / OffsetFetch -------------------------------------------------------------------


def _partition_exists(ctx: RequestContext):
    metadata = ctx.broker.metadata

    def exists(topic: str, partition: int) -> bool:
        info = metadata.get(topic)
        return info is not None and 0 <= partition < info.partitions

    return exists


@handler(api_key=8, min_version=2, max_version=9)
async def offset_commit(ctx: RequestContext, request) -> object:
    if not ctx.authorize(acl.READ, acl.GROUP, request.group_id):
        return ctx.refused(acl.GROUP)
    Response = ctx.response_class()
    Topic = nested(Response, "OffsetCommitResponseTopic")
    Partition = nested(Response, "OffsetCommitResponsePartition")
    # Kafka: READ on each topic too; a denied topic's partitions are answered
    # TOPIC_AUTHORIZATION_FAILED and the others committed
    denied = ctx.denied(acl.READ, acl.TOPIC, (t.name for t in request.topics))
    entries = tuple(
        CommitEntry(
            topic=t.name,
            partition=int(p.partition_index),
            offset=int(p.committed_offset),
            leader_epoch=int(getattr(p, "committed_leader_epoch", -1)),
            metadata=p.committed_metadata,
        )
        for t in request.topics
        if t.name not in denied
        for p in t.partitions
    )
    refused = [(t.name, int(p.partition_index), ErrorCode.topic_authorization_failed)
               for t in request.topics if t.name in denied for p in t.partitions]
    req = CommitRequest(
        group_id=request.group_id,
        generation_id=int(request.generation_id_or_member_epoch),
        member_id=request.member_id or "",
        group_instance_id=getattr(request, "group_instance_id", None),
        offsets=entries,
        api_version=ctx.api_version,
    )
    coordinator = ctx.broker.coordinator
    results = refused
    if entries or not refused:
        reply = await coordinator.execute(coordinator.state.commit, req, _partition_exists(ctx))
        results = list(reply.partitions) + refused
    by_topic: dict[str, list] = {}
    for topic, partition, error in results:
        by_topic.setdefault(topic, []).append(make(Partition, partition_index=partition, error_code=error))
    return make(
        Response,
        throttle_time=ZERO,
        topics=tuple(make(Topic, name=name, partitions=tuple(parts)) for name, parts in by_topic.items()),
    )


# An offset the principal may not see (no DESCRIBE on its topic): answered -1 with
# TOPIC_AUTHORIZATION_FAILED when the partition was named, left out when all were asked for.
UNAUTHORIZED = object()


def describable_offsets(ctx: RequestContext, offsets: dict, *, named: bool) -> dict:
    """`offsets` ((topic, partition) -> committed or None) as the principal may see them: the
    partitions of topics without DESCRIBE left out of an all-topics fetch, and answered as
    unauthorized (committed UNAUTHORIZED) when named, as Kafka does."""
    denied = ctx.denied(acl.DESCRIBE, acl.TOPIC, (t for t, _ in offsets)) if named else \
        {t for t, _ in offsets} - ctx.authorized(acl.DESCRIBE, acl.TOPIC, {t for t, _ in offsets}, audit=False)
    if not denied:
        return offsets
    if named:
        return {tp: UNAUTHORIZED if tp[0] in denied else c for tp, c in offsets.items()}
    return {tp: c for tp, c in offsets.items() if tp[0] not in denied}


@handler(api_key=9, min_version=1, max_version=9)
async def offset_fetch(ctx: RequestContext, request) -> object:
    if ctx.api_version >= 8:  # several groups per request, member epochs (consumer_groups.py)
        from .consumer_groups import offset_fetch_groups

        return offset_fetch_groups(ctx, request)
    if not ctx.authorize(acl.DESCRIBE, acl.GROUP, request.group_id):
        return ctx.refused(acl.GROUP)
    Response = ctx.response_class()
    Topic = nested(Response, "OffsetFetchResponseTopic")
    Partition = nested(Response, "OffsetFetchResponsePartition")
    state = ctx.broker.coordinator.state
    wanted = None
    if request.topics is not None:
        wanted = [(t.name, int(p)) for t in request.topics for p in t.partition_indexes]
    error, offsets = state.fetch_offsets(request.group_id, wanted)
    offsets = describable_offsets(ctx, offsets, named=wanted is not None)
    # require_stable (v7): a partition with a transactional commit still open is retried later
    unstable = state.pending_txn_partitions(request.group_id) if getattr(request, "require_stable", False) else ()
    by_topic: dict[str, list] = {}
    if error == ErrorCode.none:
        for (topic, partition), committed in offsets.items():
            if committed is UNAUTHORIZED:
                by_topic.setdefault(topic, []).append(make(
                    Partition, partition_index=partition, committed_offset=-1, committed_leader_epoch=-1, metadata="",
                    error_code=ErrorCode.topic_authorization_failed))
                continue
            by_topic.setdefault(topic, []).append(
                make(
                    Partition,
                    partition_index=partition,
                    committed_offset=committed.offset if committed is not None else -1,
                    committed_leader_epoch=committed.leader_epoch if committed is not None else -1,
                    metadata=committed.metadata if committed is not None else "",
                    error_code=ErrorCode.unstable_offset_commit if (topic, partition) in unstable else ErrorCode.none,
                )
            )
    elif wanted is not None and ctx.api_version < 2:
        # v1 has no top-level error code: every partition carries it
        for topic, partition in wanted:
            by_topic.setdefault(topic, []).append(
                make(Partition, partition_index=partition, committed_offset=-1, metadata="", error_code=error)
            )
    return make(
        Response,
        throttle_time=ZERO,
        error_code=error,
        topics=tuple(make(Topic, name=name, partitions=tuple(parts)) for name, parts in by_topic.items()),
    )


# --- ListGroups / DescribeGroups / DeleteGroups / OffsetDelete ------------------------------------


@handler(api_key=16, min_version=0, max_version=5)
async def list_groups(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Listed = nested(Response, "ListedGroup")
    coordinator = ctx.broker.coordinator
    if coordinator.state.loading or coordinator.any_loading():
        return make(Response, throttle_time=ZERO, error_code=ErrorCode.coordinator_load_in_progress, groups=())
    states = getattr(request, "states_filter", None) or None
    types = {t.lower() for t in (getattr(request, "types_filter", None) or ())}
    groups: tuple = ()
    if not types or "classic" in types:
        groups = tuple(
            make(Listed, group_id=gid, protocol_type=ptype, group_state=state, group_type="classic")
            for gid, ptype, state in coordinator.state.list_groups(states)
            if ctx.authorize(acl.DESCRIBE, acl.GROUP, gid, audit=False)
        )
    if not types or "consumer" in types:  # KIP-848 groups
        groups += tuple(
            make(Listed, group_id=gid, protocol_type="consumer", group_state=state, group_type="consumer")
            for gid, state in coordinator.consumer.list_groups(states)
            if ctx.authorize(acl.DESCRIBE, acl.GROUP, gid, audit=False)
        )
    return make(Response, throttle_time=ZERO, error_code=ErrorCode.none, groups=groups)


@handler(api_key=15, min_version=0, max_version=6)
async def describe_groups(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Described = nested(Response, "DescribedGroup")
    Member = nested(Response, "DescribedGroupMember")
    state = ctx.broker.coordinator.state
    # asked for (v3+): every operation a group supports, as Kafka without an authorizer answers
    operations = _authorized.authorized(request, "include_authorized_operations", _authorized.GROUP)
    out = []
    for gid in request.groups:
        s = state.describe(gid)
        error, message = s.error, None
        if not ctx.authorize(acl.DESCRIBE, acl.GROUP, gid):  # nothing of the group is shown
            s, error, message = state.describe(""), ErrorCode.group_authorization_failed, f"Not authorized to access group: {gid}"
        if error == ErrorCode.none and s.state == "Dead" and ctx.api_version >= 6:
            error, message = ErrorCode.group_id_not_found, f"group {gid} not found"
            if gid in state.consumer_groups:  # ConsumerGroupDescribe describes those
                message = f"Group {gid} is not a classic group."
        out.append(
            make(
                Described,
                error_code=error,
                error_message=message,
                group_id=gid,
                group_state=s.state,
                protocol_type=s.protocol_type,
                protocol_data=s.protocol,
                members=tuple(
                    make(
                        Member,
                        member_id=m.member_id,
                        group_instance_id=m.group_instance_id,
                        client_id=m.client_id,
                        client_host=m.client_host,
                        member_metadata=m.metadata,
                        member_assignment=m.assignment,
                    )
                    for m in s.members
                ),
                authorized_operations=operations if error == ErrorCode.none else _authorized.OMITTED,
            )
        )
    return make(Response, throttle_time=ZERO, groups=tuple(out))


@handler(api_key=42, min_version=0, max_version=2)
async def delete_groups(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Result = nested(Response, "DeletableGroupResult")
    coordinator = ctx.broker.coordinator
    denied = ctx.denied(acl.DELETE, acl.GROUP, request.groups_names)
    # a consumer-protocol group exists only while it has members (emptied, it becomes a plain group)
    active = [gid for gid in request.groups_names if gid in coordinator.state.consumer_groups and gid not in denied]
    results = await coordinator.execute(
        coordinator.state.delete_groups, [gid for gid in request.groups_names if gid not in active and gid not in denied])
    results = [*results, *((gid, ErrorCode.non_empty_group) for gid in active),
               *((g, ErrorCode.group_authorization_failed) for g in request.groups_names if g in denied)]
    return make(
        Response,
        throttle_time=ZERO,
        results=tuple(make(Result, group_id=gid, error_code=err) for gid, err in results),
    )


@handler(api_key=47, min_version=0, max_version=0)
async def offset_delete(ctx: RequestContext, request) -> object:
    if not ctx.authorize(acl.DELETE, acl.GROUP, request.group_id):
        return ctx.refused(acl.GROUP)
    Response = ctx.response_class()
    Topic = nested(Response, "OffsetDeleteResponseTopic")
    Partition = nested(Response, "OffsetDeleteResponsePartition")
    partitions = [(t.name, int(p.partition_index)) for t in request.topics for p in t.partitions]
    exists = _partition_exists(ctx)
    known = [tp for tp in partitions if exists(*tp)]
    coordinator = ctx.broker.coordinator
    error, results = await coordinator.execute(coordinator.state.delete_offsets, request.group_id, known)
    codes = {(t, p): e for t, p, e in results}
    by_topic: dict[str, list] = {}
    if error == ErrorCode.none:
        for tp in partitions:
            code = codes.get(tp, ErrorCode.unknown_topic_or_partition)
            by_topic.setdefault(tp[0], []).append(make(Partition, partition_index=tp[1], error_code=code))
    return make(
        Response,
        error_code=error,
        throttle_time=ZERO,
        topics=tuple(make(Topic, name=name, partitions=tuple(parts)) for name, parts in by_topic.items()),
    )
