"""The catalogue of topic configs ringlog accepts: Kafka's names, types, defaults, ranges, docs.

Two declarative classes (storage.configdef) make it up:
  * storage.log.LogConfig: the configs the storage engine applies (retention.ms, segment.bytes,
    cleanup.policy, ...), changed live on the partition logs;
  * InertTopicConfigs below: configs Kafka clients and tools set that have no effect on a single
    node or are not implemented (min.insync.replicas, compression.type, ...). They are validated
    and stored like the others, so a topic created for a Kafka cluster is accepted unchanged.

Each config's `synonym` is the broker key that sets its default for every topic (Kafka's
log.retention.ms for retention.ms, ...); broker.config accepts those keys. The topic-config APIs
(CreateTopics, AlterConfigs, IncrementalAlterConfigs, DescribeConfigs in broker.handlers.configs)
and the broker's keys parse values with the same kinds, so they refuse the same values with the
same kind of message.
"""
from __future__ import annotations

import attrs

from ringlog.storage.configdef import Boolean, Choice, CommaList, Integer, Setting, Text, setting, settings
from ringlog.storage.log import LogConfig

INT64_MAX = (1 << 63) - 1


@attrs.frozen
class InertTopicConfigs:
    min_insync_replicas: int = setting(
        "min.insync.replicas", Integer(1, bits=32), 1, synonym="min.insync.replicas",
        doc="Cluster mode: in-sync replicas an acks=all write needs (fewer: NOT_ENOUGH_REPLICAS); a single "
            "node always has one.")
    unclean_leader_election_enable: bool = setting(
        "unclean.leader.election.enable", Boolean(), False, synonym="unclean.leader.election.enable",
        doc="Cluster mode: when no in-sync replica is alive, let an out-of-sync one lead (acknowledged records "
            "may be lost); false keeps the partition offline. No effect on a single node.")
    max_compaction_lag_ms: int = setting(
        "max.compaction.lag.ms", Integer(1), INT64_MAX, synonym="log.cleaner.max.compaction.lag.ms",
        doc="Longest a record may stay uncompacted; not enforced (compaction runs by min.cleanable.dirty.ratio).")
    file_delete_delay_ms: int = setting(
        "file.delete.delay.ms", Integer(0), 60000, synonym="log.segment.delete.delay.ms",
        doc="Delay before a deleted segment file is removed; ringlog removes it at once (open readers "
            "keep their descriptors).")
    flush_messages: int = setting(
        "flush.messages", Integer(1), INT64_MAX, synonym="log.flush.interval.messages",
        doc="Records between forced fsyncs; ringlog flushes by ringlog.flush.policy and flush.ms instead.")
    preallocate: bool = setting(
        "preallocate", Boolean(), False, synonym="log.preallocate",
        doc="Preallocate segment files; not implemented (segments grow as written).")
    segment_jitter_ms: int = setting(
        "segment.jitter.ms", Integer(0), 0, synonym="log.roll.jitter.ms",
        doc="Random jitter subtracted from segment.ms; not implemented.")
    message_downconversion_enable: bool = setting(
        "message.downconversion.enable", Boolean(), True, synonym="log.message.downconversion.enable",
        doc="Down-conversion for old consumers; ringlog serves only record batch v2.")
    leader_replication_throttled_replicas: str = setting(
        "leader.replication.throttled.replicas", CommaList(), "",
        doc="Replication throttling; no effect on a single node.")
    follower_replication_throttled_replicas: str = setting(
        "follower.replication.throttled.replicas", CommaList(), "",
        doc="Replication throttling; no effect on a single node.")


@attrs.frozen
class IngestTopicConfigs:
    """Configs the broker applies on the way in, before storage (broker.pipelines)."""

    ingest_pipeline: str = setting(
        "ingest.pipeline", Text(), "",
        doc="Name of the ingest pipeline ([pipelines.NAME] in the broker config) the topic's records pass "
            "through, from HTTP ingest and from Kafka Produce alike; empty: none. Records for a topic "
            "naming a pipeline the broker does not have are refused (never stored unmasked).")


@attrs.frozen
class TopicConfig:
    """One catalogue entry: its Setting, its default (as Kafka text) and whether storage applies it."""

    setting: Setting
    default: str
    applied: bool

    @property
    def name(self) -> str:
        return self.setting.key


def _catalogue() -> dict[str, TopicConfig]:
    out: dict[str, TopicConfig] = {}
    for cls, applied in ((LogConfig, True), (InertTopicConfigs, False), (IngestTopicConfigs, False)):
        instance = cls()
        for a, spec in settings(cls):
            out[spec.key] = TopicConfig(spec, spec.text(getattr(instance, a.name)), applied)
    return out


TOPIC_CONFIGS: dict[str, TopicConfig] = _catalogue()
