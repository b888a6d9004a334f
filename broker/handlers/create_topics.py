"""CreateTopics (19) v2-7.

Checks, in Kafka's order, each answered per topic:
  * a name given twice in one request -> INVALID_REQUEST for that name;
  * an illegal name -> INVALID_TOPIC_EXCEPTION; a name that collides with an existing topic once
    '.' and '_' are treated alike (Kafka's metric-name rule) -> INVALID_TOPIC_EXCEPTION;
  * an existing topic -> TOPIC_ALREADY_EXISTS;
  * manual assignments together with num_partitions/replication_factor -> INVALID_REQUEST; an
    assignment naming another broker, several replicas, or not covering partitions 0..n-1 exactly
    -> INVALID_REPLICA_ASSIGNMENT (a single node can only hold one replica of each partition);
  * num_partitions -1 = the broker's num.partitions, 0 or < -1 -> INVALID_PARTITIONS; the partition
    limits (broker.limits, checked by Broker.create_topic): above max.partitions.per.topic ->
    INVALID_PARTITIONS, beyond max.partitions.per.broker -> POLICY_VIOLATION;
  * replication_factor -1 or 1; 0 or < -1 -> INVALID_REPLICATION_FACTOR, > 1 -> INVALID_REPLICATION_FACTOR
    ("only 1 broker(s) are registered", as Kafka says);
  * configs: unknown names, bad values -> INVALID_CONFIG with a message (broker.handlers.configs).
validate_only runs every check and creates nothing. v5+ answers carry the partition count, the
replication factor (1) and the topic's resulting configs; v7 the topic id.
"""
from __future__ import annotations

import datetime
import logging
import uuid

from kio.schema.errors import ErrorCode

from ..errors import KafkaError
from ..metadata import topic_name_error
from . import RequestContext, handler, make, nested, once_each
from .configs import topic_config_entries, validate_topic_configs

log = logging.getLogger("ringlog.create_topics")


def _collision_key(name: str) -> str:
    return name.replace(".", "_")


def check_replication(node_id: int, topic, clustered: bool = False) -> int | None:
    """Partition count from the request's assignment/counts; KafkaError when they are unusable."""
    assignments = list(topic.assignments or ())
    if assignments:
        if int(topic.num_partitions) != -1 or int(topic.replication_factor) != -1:
            raise KafkaError(
                ErrorCode.invalid_request,
                "Both numPartitions or replicationFactor and replicasAssignments were set. "
                "Both cannot be used at the same time.",
            )
        indexes = sorted(int(a.partition_index) for a in assignments)
        if indexes != list(range(len(indexes))):
            raise KafkaError(ErrorCode.invalid_replica_assignment,
                             "Partitions should be a consecutive 0-based integer sequence, got "
                             + ", ".join(map(str, indexes)))
        for a in assignments:
            brokers = [int(b) for b in a.broker_ids]
            if not brokers:
                raise KafkaError(ErrorCode.invalid_replica_assignment,
                                 f"partition {a.partition_index} has an empty replica list")
            unknown = sorted({b for b in brokers if b != node_id})
            if unknown:
                raise KafkaError(ErrorCode.invalid_replica_assignment,
                                 f"Unknown broker(s): {', '.join(map(str, unknown))} (this cluster is node {node_id})")
            if len(brokers) > 1:
                raise KafkaError(ErrorCode.invalid_replica_assignment,
                                 f"partition {a.partition_index} lists broker {node_id} {len(brokers)} times")
        return len(indexes)
    rf = int(topic.replication_factor)
    if rf == 0 or rf < -1:
        raise KafkaError(ErrorCode.invalid_replication_factor,
                         "Replication factor must be larger than 0, or -1 to use the default value.")
    if rf > 1 and not clustered:  # in cluster mode the cluster checks it against its live brokers
        raise KafkaError(ErrorCode.invalid_replication_factor,
                         f"Unable to replicate the partition {rf} time(s): The target replication factor of {rf} "
                         "cannot be reached because only 1 broker(s) are registered.")
    n = int(topic.num_partitions)
    if n == 0 or n < -1:
        raise KafkaError(ErrorCode.invalid_partitions,
                         "Number of partitions was set to an invalid non-positive value.")
    return None if n == -1 else n


@handler(api_key=19, min_version=2, max_version=7)
async def create_topics(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    Result = nested(Response, "CreatableTopicResult")
    ConfigCls = nested(Response, "CreatableTopicConfigs") if ctx.api_version >= 5 else None
    validate_only = bool(request.validate_only)
    results = []
    for topic, repeated in once_each(request.topics):
        name = topic.name
        topic_id = None
        partitions = -1
        # v5+: a topic that failed lists no configs (an empty array, as Kafka answers; not null)
        configs_out = () if ConfigCls is not None else None
        try:
            if repeated:
                raise KafkaError(ErrorCode.invalid_request,
                                 f"Create topics request from client `{ctx.client_id}` contains multiple "
                                 f"entries for the following topics: {name}")
            problem = topic_name_error(name)
            if problem:
                raise KafkaError(ErrorCode.invalid_topic_exception, problem)
            if not ctx.may_create_topic(name):
                raise KafkaError(ErrorCode.topic_authorization_failed, "Authorization failed.")
            if broker.metadata.get(name) is not None:
                raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
            key = _collision_key(name)
            clash = next((t for t in broker.metadata.names() if _collision_key(t) == key), None)
            if clash is not None:
                raise KafkaError(ErrorCode.invalid_topic_exception,
                                 f"Topic '{name}' collides with existing topic: {clash}")
            n = check_replication(broker.node_id, topic, broker.cluster is not None)
            raw = {}
            for c in topic.configs:
                if c.name in raw:
                    raise KafkaError(ErrorCode.invalid_config, f"config {c.name} is given twice")
                raw[c.name] = c.value
            overrides = validate_topic_configs(broker, raw)
            info = await broker.create_topic(name, n, overrides, validate_only=validate_only,
                                             replication_factor=int(topic.replication_factor))
            partitions = info.partitions
            topic_id = info.topic_id
            if ConfigCls is not None:
                configs_out = tuple(
                    ConfigCls(name=e.name, value=e.value, read_only=e.read_only, config_source=e.source,
                              is_sensitive=e.is_sensitive)
                    for e in topic_config_entries(broker, name, overrides)
                )
            code, message = ErrorCode.none, None
            if not validate_only:
                log.info("client %s created topic %s (%d partitions)", ctx.peer, name, partitions)
        except KafkaError as exc:
            code, message = exc.code, exc.message
        results.append(make(
            Result,
            name=name,
            topic_id=topic_id if topic_id is not None and not validate_only else uuid.UUID(int=0),
            error_code=code,
            error_message=message,
            topic_config_error_code=0,
            num_partitions=partitions,
            replication_factor=1 if code == ErrorCode.none else -1,
            configs=configs_out,
        ))
    return make(Response, throttle_time=datetime.timedelta(0), topics=tuple(results))
