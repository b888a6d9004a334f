"""Partition limits: how many partitions one topic, and the whole broker, may hold.

Every partition costs the broker for as long as it exists, used or not: its directory, two
sparse index files and checkpoints (about 12 KiB of disk when empty), five file descriptors per
segment, its serving state and ring in memory, and time at every start-up (each log is opened,
and scanned after a crash). A typo in a CreateTopics request (100000 for 10) or an auto-created
topic per client bug can so exhaust the descriptors or the disk of a broker that was fine. Two
caps, ringlog's own keys (Kafka has none; KIP-578 proposed similar ones), stop that at the request:

  max.partitions.per.topic   (default 10,000)   a topic asking for more: INVALID_PARTITIONS, as
                                                Kafka answers a count it cannot create
  max.partitions.per.broker  (default 100,000)  a request that would push the broker's total
                                                beyond: POLICY_VIOLATION, as Kafka answers a
                                                request its create-topic policy refuses

They apply to CreateTopics, CreatePartitions and auto-creation (Metadata), validate_only too.
Internal topics (__consumer_offsets) count towards the total but are never refused, so that the
group coordinator can always start (their size is bounded by offsets.topic.num.partitions).

Pure: the Broker calls `check_partition_count` with the configuration and the topic store.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kio.schema.errors import ErrorCode

from .errors import KafkaError
from .metadata import is_internal


def check_partition_count(config: Any, topic: str, wanted: int, topics: Iterable[Any]) -> None:
    """Raise KafkaError unless `topic` may have `wanted` partitions in total, given the existing
    `topics` (objects with .name and .partitions; `topic` among them when it exists)."""
    per_topic = config.max_partitions_per_topic
    if wanted > per_topic:
        raise KafkaError(
            ErrorCode.invalid_partitions,
            f"{wanted} partitions is more than the limit of {per_topic} per topic "
            f"(max.partitions.per.topic raises it)",
        )
    on_broker = 0
    current = 0
    for info in topics:
        on_broker += info.partitions
        if info.name == topic:
            current = info.partitions
    added = wanted - current
    per_broker = config.max_partitions_per_broker
    if added > 0 and on_broker + added > per_broker and not is_internal(topic):
        raise KafkaError(
            ErrorCode.policy_violation,
            f"{added} more partition(s) would bring the broker to {on_broker + added}, beyond its limit of "
            f"{per_broker} (max.partitions.per.broker raises it)",
        )


def startup_problem(config: Any) -> str | None:
    """Why these limits contradict the other keys, or None. Checked at start-up, so that a
    broker never runs with a default it must refuse (num.partitions above the per-topic cap)."""
    per_topic, per_broker = config.max_partitions_per_topic, config.max_partitions_per_broker
    for key, value in (("num.partitions", config.num_partitions),
                       ("offsets.topic.num.partitions", config.offsets_topic_num_partitions)):
        if value > per_topic:
            return (f"{key} {value} is more than max.partitions.per.topic {per_topic}: lower it, or raise "
                    "max.partitions.per.topic")
    if per_topic > per_broker:
        return (f"max.partitions.per.topic {per_topic} is more than max.partitions.per.broker {per_broker}: "
                "no topic could reach it")
    return None
