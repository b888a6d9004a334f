"""Metadata (3) v1-12: the single broker, topics, partitions; auto-creates topics when enabled.

Single node: controller id = leader = this node, replicas/ISR = [this node], leader epoch 0.
Authorized operations, when asked for, are all those supported (no authorizer, _authorized.py).
"""
from __future__ import annotations

import datetime
import logging
import time
import uuid
import weakref

from kio.schema.errors import ErrorCode

from ..connection_limits import RateLimitedLog
from ..errors import KafkaError
from ..metadata import topic_name_error
from ..security import authorizer as acl
from . import RequestContext, _authorized, handler, make, nested

LEADER_EPOCH = 0
ZERO_UUID = uuid.UUID(int=0)

log = logging.getLogger("ringlog.metadata")
# A Metadata answer carries an error code but no message, and clients ask again every few hundred
# ms: the refusal's message goes to the log, once per 10 s per error and broker.
_refusals: weakref.WeakKeyDictionary[object, RateLimitedLog] = weakref.WeakKeyDictionary()


@handler(api_key=3, min_version=1, max_version=12)
async def metadata(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    Broker_ = nested(Response, "MetadataResponseBroker")
    Topic = nested(Response, "MetadataResponseTopic")
    Partition = nested(Response, "MetadataResponsePartition")
    node = broker.node_id
    # v1-3 have no allow_auto_topic_creation field: Kafka auto-creates for them.
    allow_auto = getattr(request, "allow_auto_topic_creation", True)
    topic_operations = _authorized.authorized(request, "include_topic_authorized_operations", _authorized.TOPIC)

    cluster = broker.cluster

    def topic_entry(name, info, error=ErrorCode.none):
        partitions = ()
        if info is not None and cluster is not None and cluster.manages(name):
            partitions = tuple(cluster_partition(cluster, Partition, name, p) for p in range(info.partitions))
        elif info is not None:
            partitions = tuple(
                make(
                    Partition,
                    error_code=ErrorCode.none,
                    partition_index=p,
                    leader_id=node,
                    leader_epoch=LEADER_EPOCH,
                    replica_nodes=(node,),
                    isr_nodes=(node,),
                    offline_replicas=(),
                )
                for p in range(info.partitions)
            )
        return make(
            Topic,
            error_code=error,
            name=name,
            topic_id=info.topic_id if info is not None else ZERO_UUID,
            is_internal=info.internal if info is not None else False,
            partitions=partitions,
            topic_authorized_operations=topic_operations,
        )

    topics = []
    if request.topics is None:
        visible = ctx.authorized(acl.DESCRIBE, acl.TOPIC, broker.metadata.names(), audit=False)
        for info in broker.metadata:
            if info.name in visible:
                topics.append(topic_entry(info.name, info))
    else:
        for wanted in request.topics:
            name = getattr(wanted, "name", None)
            topic_id = getattr(wanted, "topic_id", None)
            if name is None and ctx.api_version < 12:
                # v10-11 carry topic ids but their answers cannot hold a null name: Kafka refuses
                # such a request ("Topic name can not be null for version N").
                topics.append(make(Topic, error_code=ErrorCode.invalid_request, name="",
                                   topic_id=topic_id or ZERO_UUID, partitions=()))
                continue
            if name is None and topic_id not in (None, ZERO_UUID):
                info = broker.metadata.by_id(topic_id)
                if info is not None and not ctx.authorize(acl.DESCRIBE, acl.TOPIC, info.name):
                    info = None  # Kafka: an id the principal may not describe is unknown
                if info is None:
                    topics.append(make(Topic, error_code=ErrorCode.unknown_topic_id, name=None,
                                       topic_id=topic_id, partitions=()))
                else:
                    topics.append(topic_entry(info.name, info))
                continue
            if name is None or topic_name_error(name):
                topics.append(topic_entry(name or "", None, ErrorCode.invalid_topic_exception))
                continue
            info = broker.metadata.get(name)
            if not ctx.authorize(acl.DESCRIBE, acl.TOPIC, name) or (
                    info is None and allow_auto and not ctx.may_create_topic(name)):
                topics.append(topic_entry(name, None, ErrorCode.topic_authorization_failed))
                continue
            if info is None and allow_auto:
                try:
                    info = await broker.ensure_topic(name)
                except KafkaError as exc:
                    limiter = _refusals.setdefault(broker, RateLimitedLog(10.0))
                    left_out = limiter.should_log(str(exc.code), time.monotonic())
                    if left_out is not None:
                        more = f" ({left_out} more refusal(s) since the last line)" if left_out else ""
                        log.warning("auto-creating topic %s refused: %s%s", name, exc.message, more)
                    topics.append(topic_entry(name, None, exc.code))
                    continue
            if info is None:
                topics.append(topic_entry(name, None, ErrorCode.unknown_topic_or_partition))
            else:
                topics.append(topic_entry(name, info))
    return make(
        Response,
        throttle_time=datetime.timedelta(0),
        brokers=tuple(make(Broker_, node_id=b, host=h, port=port, rack=None) for b, h, port in cluster.live_brokers(ctx.listener_name))
        if cluster is not None else (make(Broker_, node_id=node, host=ctx.advertised[0], port=ctx.advertised[1], rack=None),),
        cluster_id=broker.cluster_id,
        controller_id=cluster.controller_id if cluster is not None else node,
        topics=tuple(topics),
        cluster_authorized_operations=_authorized.authorized(
            request, "include_cluster_authorized_operations", _authorized.CLUSTER),
    )


def cluster_partition(cluster, Partition, name: str, index: int):
    """A partition's entry in cluster mode: leader, epoch, replicas, ISR from the etcd state."""
    error, leader, epoch, replicas, isr, offline = cluster.partition_view(name, index)
    return make(Partition, error_code=error, partition_index=index, leader_id=leader, leader_epoch=epoch,
                replica_nodes=tuple(replicas), isr_nodes=tuple(isr), offline_replicas=tuple(offline))
