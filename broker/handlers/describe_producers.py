"""DescribeProducers (61) v0: the idempotent producers a partition knows (kafka-producers.sh).

For each requested partition, Kafka's ProducerStateManager.activeProducers: producer id, epoch,
last sequence written, timestamp of its last batch. There are no transactions, so the
coordinator epoch is -1 and no transaction is open (current_txn_start_offset -1). An unknown topic
or partition -> UNKNOWN_TOPIC_OR_PARTITION for that partition.

The state is the broker's producer-state manager (broker/idempotence.py), read only; loading a
partition's state on first use is the same work the produce path does.
"""
from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode

from ..security import authorizer as acl
from . import RequestContext, handler, make, nested


@handler(api_key=61, min_version=0, max_version=0)
async def describe_producers(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    Topic = nested(Response, "TopicResponse")
    Partition = nested(Response, "PartitionResponse")
    State = nested(Response, "ProducerState")
    topics = []
    denied = ctx.denied(acl.READ, acl.TOPIC, (t.name for t in request.topics))
    for t in request.topics:
        info = broker.metadata.get(t.name)
        parts = []
        for index in t.partition_indexes:
            index = int(index)
            part = broker.partition(t.name, index) if info is not None and 0 <= index < info.partitions else None
            state = part.producers.state if part is not None and t.name not in denied else None
            if t.name in denied:
                parts.append(make(Partition, partition_index=index, error_code=ErrorCode.topic_authorization_failed,
                                  error_message="Topic authorization failed.", active_producers=()))
                continue
            if state is None:
                parts.append(make(Partition, partition_index=index, error_code=ErrorCode.unknown_topic_or_partition,
                                  error_message=f"{t.name}-{index} does not exist", active_producers=()))
                continue
            producers = tuple(
                make(State, producer_id=entry.producer_id, producer_epoch=entry.epoch,
                     last_sequence=entry.batches[-1].last_seq if entry.batches else -1,
                     last_timestamp=entry.last_timestamp, coordinator_epoch=-1, current_txn_start_offset=-1)
                for entry in sorted(state.producers.values(), key=lambda e: e.producer_id)
            )
            parts.append(make(Partition, partition_index=index, error_code=ErrorCode.none, error_message=None,
                              active_producers=producers))
        topics.append(make(Topic, name=t.name, partitions=tuple(parts)))
    return make(Response, throttle_time=datetime.timedelta(0), topics=tuple(topics))
