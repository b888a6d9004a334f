"""DescribeTopicPartitions (75) v0: topics and partitions, paginated (KIP-966).

The Java AdminClient (3.8+) describes topics with this API when the broker offers it. Kafka's
rules (DescribeTopicPartitionsRequestHandler, KRaftMetadataCache.describeTopicResponse):
  * no topics in the request: every topic; else the named ones, an unknown name answered with
    UNKNOWN_TOPIC_OR_PARTITION (and a zero topic id); it never auto-creates;
  * topics in name order, from the cursor's topic and partition on (a cursor whose topic is not
    among those named -> INVALID_REQUEST for every requested topic);
  * at most response_partition_limit partitions (at least 1, at most 2000, the broker's
    max.request.partition.size.limit default); when some are left, next_cursor names the first.
Single node: leader = this node, replicas/ISR = [this node], leader epoch 0, empty (not null)
ELR lists as a Kafka broker sends them (the Java client dereferences them). Authorized
operations: every topic operation (no authorizer, _authorized.py).
"""
from __future__ import annotations

import datetime
import uuid

from kio.schema.errors import ErrorCode

from ..security import authorizer as acl
from . import RequestContext, _authorized, handler, make, nested

LEADER_EPOCH = 0
MAX_PARTITIONS = 2000  # Kafka's max.request.partition.size.limit default
ZERO_UUID = uuid.UUID(int=0)


@handler(api_key=75, min_version=0, max_version=0)
async def describe_topic_partitions(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    Topic = nested(Response, "DescribeTopicPartitionsResponseTopic")
    Partition = nested(Response, "DescribeTopicPartitionsResponsePartition")
    Cursor = nested(Response, "Cursor")
    node = broker.node_id
    cursor = request.cursor
    names = sorted({t.name for t in request.topics}) if request.topics else sorted(
        ctx.authorized(acl.DESCRIBE, acl.TOPIC, (i.name for i in broker.metadata), audit=False))
    if cursor is not None:
        if request.topics and cursor.topic_name not in names:
            # Kafka's error answer for the request: every requested topic with the error
            return make(Response, throttle_time=datetime.timedelta(0), next_cursor=None, topics=tuple(
                make(Topic, error_code=ErrorCode.invalid_request, name=name, topic_id=ZERO_UUID, is_internal=False,
                     partitions=(), topic_authorized_operations=_authorized.OMITTED) for name in names))
        names = [n for n in names if n >= cursor.topic_name]
    limit = max(1, min(int(request.response_partition_limit), MAX_PARTITIONS))
    topics = []
    next_cursor = None
    left = limit
    for name in names:
        info = broker.metadata.get(name)
        if info is None or not ctx.authorize(acl.DESCRIBE, acl.TOPIC, name):
            code = ErrorCode.unknown_topic_or_partition if info is None else ErrorCode.topic_authorization_failed
            topics.append(make(Topic, error_code=code, name=name, topic_id=ZERO_UUID,
                               is_internal=False, partitions=(), topic_authorized_operations=_authorized.OMITTED))
            continue
        if left == 0:
            next_cursor = make(Cursor, topic_name=name, partition_index=0)
            break
        first = int(cursor.partition_index) if cursor is not None and name == cursor.topic_name else 0
        indexes = range(max(first, 0), info.partitions)
        if len(indexes) > left:
            next_cursor = make(Cursor, topic_name=name, partition_index=indexes[left])
            indexes = indexes[:left]
        left -= len(indexes)
        partitions = tuple(
            make(Partition, error_code=ErrorCode.none, partition_index=p, leader_id=node, leader_epoch=LEADER_EPOCH,
                 replica_nodes=(node,), isr_nodes=(node,), eligible_leader_replicas=(), last_known_elr=(),
                 offline_replicas=())
            for p in indexes
        )
        topics.append(make(Topic, error_code=ErrorCode.none, name=name, topic_id=info.topic_id,
                           is_internal=info.internal, partitions=partitions,
                           topic_authorized_operations=_authorized.TOPIC))
        if next_cursor is not None:
            break
    return make(Response, throttle_time=datetime.timedelta(0), topics=tuple(topics), next_cursor=next_cursor)
