"""CreatePartitions (37) v0-3: grow a topic's partition count (never shrink).

A count not above the current one -> INVALID_PARTITIONS (Kafka's messages); unknown topic ->
UNKNOWN_TOPIC_OR_PARTITION; a topic named twice -> INVALID_REQUEST; assignments must give exactly
one entry per new partition, each naming only this broker, else INVALID_REPLICA_ASSIGNMENT.
The partition limits (broker.limits, checked by Broker.create_partitions): beyond
max.partitions.per.topic -> INVALID_PARTITIONS, beyond max.partitions.per.broker ->
POLICY_VIOLATION. validate_only checks without creating.
"""
from __future__ import annotations

import datetime
import logging

from kio.schema.errors import ErrorCode

from ..errors import KafkaError
from ..security import authorizer as acl
from . import RequestContext, handler, make, nested, once_each

log = logging.getLogger("ringlog.create_partitions")


@handler(api_key=37, min_version=0, max_version=3)
async def create_partitions(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    Result = nested(Response, "CreatePartitionsTopicResult")
    results = []
    for topic, repeated in once_each(request.topics):
        name = topic.name
        try:
            if repeated:
                raise KafkaError(ErrorCode.invalid_request, f"Duplicate topic in request: {name}")
            ctx.require(acl.ALTER, acl.TOPIC, name)
            info = broker.metadata.get(name)
            if info is None:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"The topic '{name}' does not exist.")
            total = int(topic.count)
            if total < info.partitions:
                raise KafkaError(ErrorCode.invalid_partitions,
                                 f"Topic currently has {info.partitions} partitions, which is higher than the "
                                 f"requested {total}.")
            if total == info.partitions:
                raise KafkaError(ErrorCode.invalid_partitions, f"Topic already has {total} partitions.")
            if topic.assignments is not None:
                added = total - info.partitions
                if len(topic.assignments) != added:
                    raise KafkaError(ErrorCode.invalid_replica_assignment,
                                     f"Increasing the number of partitions by {added} but {len(topic.assignments)} "
                                     "assignments provided.")
                for a in topic.assignments:
                    if [int(b) for b in a.broker_ids] != [broker.node_id]:
                        raise KafkaError(ErrorCode.invalid_replica_assignment,
                                         f"assignment {list(a.broker_ids)} is not [{broker.node_id}], the only broker")
            await broker.create_partitions(name, total, validate_only=bool(request.validate_only))
            code, message = ErrorCode.none, None
            if not request.validate_only:
                log.info("client %s grew topic %s to %d partitions", ctx.peer, name, total)
        except KafkaError as exc:
            code, message = exc.code, exc.message
        results.append(make(Result, name=name, error_code=code, error_message=message))
    return make(Response, throttle_time=datetime.timedelta(0), results=tuple(results))
