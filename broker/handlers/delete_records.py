"""DeleteRecords (21) v0-2: advance a partition's log start offset.

offset -1 means the high watermark; an offset above the high watermark or negative (other than -1)
-> OFFSET_OUT_OF_RANGE; an offset below the current log start changes nothing. The answer's
low_watermark is the log start offset afterwards. Segments wholly below it are deleted; producers
whose batches all lie below it are forgotten (Kafka's rule), so they may restart at any sequence.
"""
from __future__ import annotations

import datetime
import logging

from kio.schema.errors import ErrorCode

from ..errors import KafkaError, error_code_for
from ..security import authorizer as acl
from . import RequestContext, handler, make, nested

log = logging.getLogger("ringlog.delete_records")


@handler(api_key=21, min_version=0, max_version=2)
async def delete_records(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    TopicResult = nested(Response, "DeleteRecordsTopicResult")
    PartResult = nested(Response, "DeleteRecordsPartitionResult")
    topics = []
    for t in request.topics:
        info = broker.metadata.get(t.name)
        parts = []
        for p in t.partitions:
            index = int(p.partition_index)
            low = -1
            try:
                ctx.require(acl.DELETE, acl.TOPIC, t.name)
                if info is None or not 0 <= index < info.partitions:
                    raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{t.name}-{index} does not exist")
                low = await broker.delete_records(t.name, index, int(p.offset))
                code = ErrorCode.none
                log.info("client %s deleted records of %s-%d below %d", ctx.peer, t.name, index, low)
            except KafkaError as exc:
                code = exc.code
            except Exception as exc:  # storage errors become their Kafka codes
                code = error_code_for(exc)
            parts.append(make(PartResult, partition_index=index, low_watermark=low, error_code=code))
        topics.append(make(TopicResult, name=t.name, partitions=tuple(parts)))
    return make(Response, throttle_time=datetime.timedelta(0), topics=tuple(topics))
