"""OffsetForLeaderEpoch (23) v2-4.

A single node keeps leader epoch 0 for ever, so the end offset of any epoch asked is the log end
offset (consumers use this to detect truncation, which never happens here). An epoch newer than 0
is answered the way Kafka answers an unknown epoch: UNDEFINED (epoch -1, end offset -1).
"""
from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode

from ..security import authorizer as acl
from . import RequestContext, handler, make, nested

LEADER_EPOCH = 0


@handler(api_key=23, min_version=2, max_version=4)
async def offset_for_leader_epoch(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    TopicResp = nested(Response, "OffsetForLeaderTopicResult")
    PartResp = nested(Response, "EpochEndOffset")
    topics = []
    denied = ctx.denied(acl.DESCRIBE, acl.TOPIC, (t.topic for t in request.topics))
    for topic in request.topics:
        parts = []
        for p in topic.partitions:
            index = int(p.partition)
            plog = broker.partition_log(topic.topic, index)
            if plog is None or topic.topic in denied:
                code = ErrorCode.topic_authorization_failed if topic.topic in denied else ErrorCode.unknown_topic_or_partition
                parts.append(make(PartResp, error_code=code, partition=index,
                                  leader_epoch=-1, end_offset=-1))
                continue
            current = int(getattr(p, "current_leader_epoch", -1))
            part = broker.partition(topic.topic, index)
            if broker.cluster is not None and broker.cluster.manages(topic.topic):
                parts.append(cluster_epoch_end(broker, part, index, current, int(p.leader_epoch), PartResp))
                continue
            if current > LEADER_EPOCH:
                parts.append(make(PartResp, error_code=ErrorCode.unknown_leader_epoch, partition=index,
                                  leader_epoch=-1, end_offset=-1))
                continue
            if int(p.leader_epoch) > LEADER_EPOCH:
                parts.append(make(PartResp, error_code=ErrorCode.none, partition=index,
                                  leader_epoch=-1, end_offset=-1))
                continue
            parts.append(make(PartResp, error_code=ErrorCode.none, partition=index,
                              leader_epoch=LEADER_EPOCH, end_offset=plog.log_end_offset))
        topics.append(make(TopicResp, topic=topic.topic, partitions=tuple(parts)))
    return make(Response, throttle_time=datetime.timedelta(0), topics=tuple(topics))


def cluster_epoch_end(broker, part, index: int, current: int, epoch: int, PartResp):
    """Cluster mode: the leader answers from its leader-epoch cache (broker.cluster.replica)."""
    error = broker.cluster.leader_error(part)
    if error is None and current >= 0 and current != part.leader_epoch:
        error = ErrorCode.fenced_leader_epoch if current < part.leader_epoch else ErrorCode.unknown_leader_epoch
    if error is not None:
        return make(PartResp, error_code=error, partition=index, leader_epoch=-1, end_offset=-1)
    answered, end = broker.cluster.replicas.epoch_end(part, epoch)
    return make(PartResp, error_code=ErrorCode.none, partition=index, leader_epoch=answered, end_offset=end)
