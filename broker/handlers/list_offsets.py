"""ListOffsets (2) v1-7: earliest (-2), latest (-1), max timestamp (-3) and by timestamp.

"Latest" is the high watermark under read_uncommitted and the last stable offset (first offset
of the earliest open transaction) under read_committed, which also bounds the timestamp look-ups.

A lookup that finds no offset answers leader epoch -1 with offset -1, as Kafka does.
A partition named more than once in one request is answered once, INVALID_REQUEST, as Kafka does
(which of the queries would it answer?).
"""
from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode

from ringlog.storage.errors import StorageError

from ..errors import error_code_for
from ..security import authorizer as acl
from . import RequestContext, handler, make, nested

LATEST, EARLIEST, MAX_TIMESTAMP = -1, -2, -3
LEADER_EPOCH = 0


@handler(api_key=2, min_version=1, max_version=7)
async def list_offsets(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    TopicResp = nested(Response, "ListOffsetsTopicResponse")
    PartResp = nested(Response, "ListOffsetsPartitionResponse")
    topics = []
    duplicates = _duplicates(request)
    denied = ctx.denied(acl.DESCRIBE, acl.TOPIC, (t.name for t in request.topics))
    for topic in request.topics:
        parts = []
        answered: set[int] = set()
        for p in topic.partitions:
            index = int(p.partition_index)
            if (topic.name, index) in duplicates:
                if index not in answered:
                    answered.add(index)
                    parts.append(make(PartResp, partition_index=index, error_code=ErrorCode.invalid_request,
                                      timestamp=-1, offset=-1, leader_epoch=-1))
                continue
            error, offset, timestamp = ErrorCode.none, -1, -1
            plog = broker.partition_log(topic.name, index)
            info = broker.metadata.get(topic.name)
            if topic.name in denied:
                error = ErrorCode.topic_authorization_failed
            elif plog is None or info is None or index >= info.partitions:
                error = ErrorCode.unknown_topic_or_partition
            elif broker.cluster is not None and (code := broker.cluster.leader_error(broker.partition(topic.name, index))):
                error = code  # cluster mode: offsets come from the leader
            else:
                hwm = broker.high_watermark(topic.name, index)
                if int(getattr(request, "isolation_level", 0)) == 1:
                    # read_committed: nothing at or past the last stable offset exists yet
                    hwm = broker.partition(topic.name, index).last_stable_offset
                ts = int(p.timestamp)
                try:
                    if ts == LATEST:
                        offset = hwm
                    elif ts == EARLIEST:
                        offset = plog.log_start_offset
                    elif ts == MAX_TIMESTAMP:
                        found = plog.max_timestamp_and_offset()
                        if found is not None:
                            timestamp, offset = int(found[0]), int(found[1])
                            if offset >= hwm:
                                timestamp, offset = -1, -1
                    elif ts >= 0:
                        found = plog.offset_for_timestamp(ts)
                        if found is not None and int(found[0]) < hwm:
                            offset, timestamp = int(found[0]), int(found[1])
                    else:
                        error = ErrorCode.invalid_request
                except StorageError as exc:
                    error = error_code_for(exc)
            parts.append(
                make(PartResp, partition_index=index, error_code=error, timestamp=timestamp,
                     offset=offset, leader_epoch=(broker.partition(topic.name, index).leader_epoch
                                                  if error == ErrorCode.none and offset >= 0 else -1))
            )
        topics.append(make(TopicResp, name=topic.name, partitions=tuple(parts)))
    return make(Response, throttle_time=datetime.timedelta(0), topics=tuple(topics))


def _duplicates(request) -> set[tuple[str, int]]:
    seen: set[tuple[str, int]] = set()
    twice: set[tuple[str, int]] = set()
    for topic in request.topics:
        for p in topic.partitions:
            key = (topic.name, int(p.partition_index))
            (twice if key in seen else seen).add(key)
    return twice
