"""DeleteTopics (20) v1-6: by name (v1-5) or by name or topic id (v6).

Unknown name -> UNKNOWN_TOPIC_OR_PARTITION; unknown id -> UNKNOWN_TOPIC_ID; both or neither given
(v6) -> INVALID_REQUEST; the internal topics (__consumer_offsets, __transaction_state) ->
INVALID_REQUEST, they are not the client's to delete. Deleting a topic fails its in-flight produce
requests, forgets its idempotent-producer state and removes its partition directories, crash-safely
(Broker.delete_topic); a failing disk answers KAFKA_STORAGE_ERROR.
"""
from __future__ import annotations

import datetime
import logging
import uuid

from kio.schema.errors import ErrorCode

from ..errors import KafkaError
from ..security import authorizer as acl
from . import RequestContext, handler, make, nested

log = logging.getLogger("ringlog.delete_topics")

ZERO_UUID = uuid.UUID(int=0)
# Kafka's internal topics: the group coordinator owns the first, transactions the second.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


def _name_of(broker, topic_id) -> str:
    info = broker.metadata.by_id(topic_id) if topic_id is not None else None
    return info.name if info is not None else ""


async def delete_one(broker, name: str | None, topic_id: uuid.UUID | None) -> tuple[str | None, uuid.UUID | None]:
    """Delete a topic by name or id; (name, id) of what was deleted, KafkaError otherwise."""
    by_id = topic_id is not None and topic_id != ZERO_UUID
    if by_id and name:
        raise KafkaError(ErrorCode.invalid_request, "You may not specify both topic name and topic id.")
    if by_id:
        info = broker.metadata.by_id(topic_id)
        if info is None:
            raise KafkaError(ErrorCode.unknown_topic_id, f"topic id {topic_id} does not exist")
    elif name:
        info = broker.metadata.get(name)
        if info is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
    else:
        raise KafkaError(ErrorCode.invalid_request, "Neither topic name nor id were specified.")
    if info.name in INTERNAL_TOPICS:
        raise KafkaError(ErrorCode.invalid_request, f"Topic {info.name} is internal and cannot be deleted")
    await broker.delete_topic(info.name)
    return info.name, info.topic_id


@handler(api_key=20, min_version=1, max_version=6)
async def delete_topics(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    Result = nested(Response, "DeletableTopicResult")
    if ctx.api_version >= 6:
        wanted = [(t.name, t.topic_id) for t in request.topics]
    else:
        wanted = [(n, None) for n in request.topic_names]
    results = []
    for name, topic_id in wanted:
        out_name, out_id = name, topic_id
        try:
            ctx.require(acl.DELETE, acl.TOPIC, name if name is not None else _name_of(broker, topic_id))
            out_name, out_id = await delete_one(broker, name, topic_id)
            code, message = ErrorCode.none, None
            log.info("client %s deleted topic %s", ctx.peer, out_name)
        except KafkaError as exc:
            code, message = exc.code, exc.message
        results.append(make(Result, name=out_name, topic_id=out_id or ZERO_UUID, error_code=code,
                            error_message=message))
    return make(Response, throttle_time=datetime.timedelta(0), responses=tuple(results))
