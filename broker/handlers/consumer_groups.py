"""The consumer group protocol of KIP-848 (`group.protocol=consumer`): translate kio to
broker.coordinator.consumer_group and back.

ConsumerGroupHeartbeat (68) v0-1, ConsumerGroupDescribe (69) v0-1, and OffsetFetch v8-9 (several
groups per request; v9 names the member and its epoch, checked for consumer-protocol groups as
Kafka does: UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH). The group logic lives in the
state machine; the heartbeat hands it a view of every topic (name -> topic id, partitions) so that
it can notice new topics (regex subscriptions) and partition changes of subscribed ones.
"""
from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode

from ..coordinator.consumer_group import HeartbeatRequest, partitions_by_topic
from ..security import authorizer as acl
from . import RequestContext, _authorized, handler, make, nested
from .groups import UNAUTHORIZED, ZERO, _host, _ms, describable_offsets


def _topics(ctx: RequestContext) -> dict:
    return {t.name: (t.topic_id, t.partitions) for t in ctx.broker.metadata}


@handler(api_key=68, min_version=0, max_version=1)
async def consumer_group_heartbeat(ctx: RequestContext, request) -> object:
    if not ctx.authorize(acl.READ, acl.GROUP, request.group_id):
        return ctx.refused(acl.GROUP)
    Response = ctx.response_class()
    Assignment = nested(Response, "Assignment")
    TopicPartitions = nested(Response, "TopicPartitions")
    owned = None
    if request.topic_partitions is not None:
        owned = frozenset((tp.topic_id, int(p)) for tp in request.topic_partitions for p in tp.partitions)
    req = HeartbeatRequest(
        group_id=request.group_id,
        member_id=request.member_id or "",
        member_epoch=int(request.member_epoch),
        api_version=ctx.api_version,
        instance_id=request.instance_id,
        rack_id=request.rack_id,
        rebalance_timeout_ms=_ms(request.rebalance_timeout),
        subscribed_topic_names=tuple(request.subscribed_topic_names)
        if request.subscribed_topic_names is not None else None,
        subscribed_topic_regex=getattr(request, "subscribed_topic_regex", None),
        server_assignor=request.server_assignor,
        owned=owned,
        client_id=ctx.client_id or "",
        client_host=_host(ctx),
    )
    coordinator = ctx.broker.coordinator
    reply = await coordinator.execute(coordinator.consumer.heartbeat, req, _topics(ctx))
    assignment = None
    if reply.assignment is not None:
        assignment = Assignment(topic_partitions=tuple(
            TopicPartitions(topic_id=tid, partitions=tuple(parts))
            for tid, parts in partitions_by_topic(reply.assignment).items()
        ))
    return make(
        Response,
        throttle_time=ZERO,
        error_code=reply.error,
        error_message=reply.message,
        member_id=reply.member_id,
        member_epoch=reply.member_epoch,
        heartbeat_interval=datetime.timedelta(milliseconds=reply.heartbeat_interval_ms),
        assignment=assignment,
    )


@handler(api_key=69, min_version=0, max_version=1)
async def consumer_group_describe(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Described = nested(Response, "DescribedGroup")
    Member = nested(Response, "Member")
    Assignment = nested(Response, "Assignment")
    TopicPartitions = nested(Response, "TopicPartitions")
    metadata = ctx.broker.metadata
    operations = _authorized.authorized(request, "include_authorized_operations", _authorized.GROUP)

    def assignment(tps) -> object:
        parts = []
        for tid, partitions in partitions_by_topic(tps).items():
            info = metadata.by_id(tid)
            if info is not None:  # a deleted topic's partitions are not described
                parts.append(TopicPartitions(topic_id=tid, topic_name=info.name, partitions=tuple(partitions)))
        return Assignment(topic_partitions=tuple(parts))

    out = []
    denied = ctx.denied(acl.DESCRIBE, acl.GROUP, request.group_ids)
    for d in ctx.broker.coordinator.consumer.describe(request.group_ids):
        if d.group_id in denied:  # nothing of the group is shown
            out.append(make(Described, error_code=ErrorCode.group_authorization_failed,
                            error_message=f"Not authorized to access group: {d.group_id}", group_id=d.group_id,
                            group_state="", group_epoch=-1, assignment_epoch=-1, assignor_name="", members=(),
                            authorized_operations=_authorized.OMITTED))
            continue
        out.append(make(
            Described,
            error_code=d.error,
            error_message=d.message,
            group_id=d.group_id,
            group_state=d.state,
            group_epoch=d.group_epoch,
            assignment_epoch=d.assignment_epoch,
            assignor_name=d.assignor_name,
            members=tuple(
                make(
                    Member,
                    member_id=m.member_id,
                    instance_id=m.instance_id,
                    rack_id=m.rack_id,
                    member_epoch=m.member_epoch,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    subscribed_topic_names=m.subscribed_topic_names,
                    subscribed_topic_regex=m.subscribed_topic_regex,
                    assignment=assignment(m.assignment),
                    target_assignment=assignment(m.target_assignment),
                    member_type=1,  # the consumer protocol (0 would be classic)
                )
                for m in d.members
            ),
            authorized_operations=operations if d.error == ErrorCode.none else _authorized.OMITTED,
        ))
    return make(Response, throttle_time=ZERO, groups=tuple(out))


def offset_fetch_groups(ctx: RequestContext, request) -> object:
    """OffsetFetch v8+ (groups.offset_fetch hands these versions over)."""
    Response = ctx.response_class()
    Group = nested(Response, "OffsetFetchResponseGroup")
    Topic = nested(Response, "OffsetFetchResponseTopics")
    Partition = nested(Response, "OffsetFetchResponsePartitions")
    state = ctx.broker.coordinator.state
    out = []
    for g in request.groups:
        wanted = None if g.topics is None else [(t.name, int(p)) for t in g.topics for p in t.partition_indexes]
        consumer_group = state.consumer_groups.get(g.group_id)
        error = None
        if not ctx.authorize(acl.DESCRIBE, acl.GROUP, g.group_id):
            error = ErrorCode.group_authorization_failed
        elif consumer_group is not None and not state.loading:
            error = consumer_group.fetch_error(getattr(g, "member_id", None), int(getattr(g, "member_epoch", -1)))
        offsets: dict = {}
        if error is None:
            error, offsets = state.fetch_offsets(g.group_id, wanted)
            offsets = describable_offsets(ctx, offsets, named=wanted is not None)
        # require_stable: a partition with a transactional commit still open is retried later
        unstable = state.pending_txn_partitions(g.group_id) if getattr(request, "require_stable", False) else ()
        by_topic: dict[str, list] = {}
        for (topic, partition), c in offsets.items():
            if c is UNAUTHORIZED:
                by_topic.setdefault(topic, []).append(make(
                    Partition, partition_index=partition, committed_offset=-1, committed_leader_epoch=-1, metadata="",
                    error_code=ErrorCode.topic_authorization_failed))
                continue
            by_topic.setdefault(topic, []).append(make(
                Partition, partition_index=partition, committed_offset=-1 if c is None else c.offset,
                committed_leader_epoch=-1 if c is None else c.leader_epoch, metadata="" if c is None else c.metadata,
                error_code=ErrorCode.unstable_offset_commit if (topic, partition) in unstable else ErrorCode.none))
        out.append(make(Group, group_id=g.group_id, error_code=error,
                        topics=tuple(make(Topic, name=n, partitions=tuple(ps)) for n, ps in by_topic.items())))
    return make(Response, throttle_time=ZERO, groups=tuple(out))
