"""Request builders of the differential tests (kio entities at a given version); each takes only
what the cases vary and fills the rest as a plain client would."""
from __future__ import annotations

import time

from ringlog.storage.records import build_batch

from tests.conftest import wait_for

from .differential import Side, ms, req

NO_SESSION = {"session_id": 0, "session_epoch": -1}  # a sessionless full fetch (KIP-227 FINAL_EPOCH)


def metadata(topics, *, version: int = 12, auto_create: bool = False):
    Req, m = req(3, version)
    kw = {}
    if version >= 4:
        kw["allow_auto_topic_creation"] = auto_create
    if version >= 8:
        kw["include_topic_authorized_operations"] = False
    if 8 <= version <= 10:
        kw["include_cluster_authorized_operations"] = False
    if topics is None:
        return Req(topics=None, **kw)
    if version >= 10:
        return Req(topics=tuple(m.MetadataRequestTopic(name=t, topic_id=None) if version >= 10 else
                                m.MetadataRequestTopic(name=t) for t in topics), **kw)
    return Req(topics=tuple(m.MetadataRequestTopic(name=t) for t in topics), **kw)


def create_topics(specs, *, version: int = 7, validate_only: bool = False, timeout_ms: int = 10_000):
    """specs: (name, partitions, replication_factor, {config: value})"""
    Req, m = req(19, version)
    topics = tuple(m.CreatableTopic(name=name, num_partitions=n, replication_factor=rf, assignments=(),
                                    configs=tuple(m.CreatableTopicConfig(name=k, value=v) for k, v in cfg.items()))
                   for name, n, rf, cfg in specs)
    kw = {"validate_only": validate_only} if version >= 1 else {}
    return Req(topics=topics, timeout=ms(timeout_ms), **kw)


def delete_topics(names, *, version: int = 6):
    Req, m = req(20, version)
    if version >= 6:
        return Req(topics=tuple(m.DeleteTopicState(name=n, topic_id=None) for n in names), timeout=ms(10_000))
    return Req(topic_names=tuple(names), timeout=ms(10_000))


def produce(topic: str, partition: int, records: bytes, *, acks: int = -1, version: int = 9):
    Req, m = req(0, version)
    return Req(transactional_id=None, acks=acks, timeout=ms(5000), topic_data=(
        m.TopicProduceData(name=topic, partition_data=(m.PartitionProduceData(index=partition, records=records),)),))


def fetch(topic: str, partitions, *, version: int = 12, max_wait_ms: int = 0, min_bytes: int = 1,
          max_bytes: int = 1 << 20, partition_max_bytes: int = 1 << 20, isolation_level: int = 0,
          session: dict | None = None, forgotten=()):
    """partitions: (partition, fetch_offset) pairs."""
    Req, m = req(1, version)
    kw = {}
    if version >= 7:
        kw.update(session if session is not None else NO_SESSION)
        kw["forgotten_topics_data"] = tuple(m.ForgottenTopic(topic=t, partitions=tuple(ps)) for t, ps in forgotten)
    if version >= 11:
        kw["rack_id"] = ""
    if version >= 4:
        kw["isolation_level"] = isolation_level
    if version >= 3:
        kw["max_bytes"] = max_bytes
    fp = {}
    if version >= 5:
        fp["log_start_offset"] = -1
    if version >= 9:
        fp["current_leader_epoch"] = -1
    topics = () if topic is None else (m.FetchTopic(topic=topic, partitions=tuple(
        m.FetchPartition(partition=p, fetch_offset=o, partition_max_bytes=partition_max_bytes, **fp)
        for p, o in partitions)),)
    return Req(replica_id=-1, max_wait=ms(max_wait_ms), min_bytes=min_bytes, topics=topics, **kw)


def list_offsets(topic: str, queries, *, version: int = 7, isolation_level: int = 0):
    """queries: (partition, timestamp) pairs."""
    Req, m = req(2, version)
    kw = {"isolation_level": isolation_level} if version >= 2 else {}
    parts = []
    for p, ts in queries:
        extra = {"current_leader_epoch": -1} if version >= 4 else {}
        parts.append(m.ListOffsetsPartition(partition_index=p, timestamp=ts, **extra))
    return Req(replica_id=-1, topics=(m.ListOffsetsTopic(name=topic, partitions=tuple(parts)),), **kw)


# Record timestamps: recent (older ones would fall to time-based retention during the run), and the
# same for both brokers (taken once).
T0 = (int(time.time()) - 3600) * 1000


def batch(values, *, ts: int | None = None, key: bytes | None = b"k", **kw) -> bytes:
    """One batch of `values`, timestamps T0 + ts (+ i for the i-th record)."""
    base = T0 + (ts or 0)
    return build_batch([(key, v, (), base + i) for i, v in enumerate(values)], **kw)


def ready(s: Side, topic: str, partitions: int, timeout: float = 15.0) -> None:
    """Wait until `topic` has `partitions` partitions with a leader (Kafka's metadata reaches the
    broker shortly after CreateTopics answers)."""
    def check() -> bool:
        md = s.quiet(metadata([topic]))
        t = md.topics[0]
        if not (t.error_code == 0 and len(t.partitions) == partitions and all(p.leader_id >= 0 for p in t.partitions)):
            return False
        # Kafka lists the leader in Metadata a moment before the partition leads on the broker
        answer = s.quiet(list_offsets(topic, [(p, -1) for p in range(partitions)]))
        return all(p.error_code == 0 for p in answer.topics[0].partitions)

    wait_for(check, f"{topic} ready on {s.name}", timeout)


def gone(s: Side, topic: str, timeout: float = 15.0) -> None:
    """Wait until `topic` is deleted: Metadata no longer lists it, and its partition no longer
    answers (Kafka's broker drops the partition a moment after its metadata)."""
    def check() -> bool:
        return (s.quiet(metadata([topic])).topics[0].error_code == 3
                and s.quiet(list_offsets(topic, [(0, -1)])).topics[0].partitions[0].error_code == 3)

    wait_for(check, f"{topic} deleted on {s.name}", timeout)


def topic(s: Side, name: str, partitions: int = 1, configs: dict | None = None) -> None:
    """Create a topic (answer not compared) and wait until it is usable."""
    r = s.quiet(create_topics([(name, partitions, 1, configs or {})]))
    assert r.topics[0].error_code == 0, (s.name, name, r.topics[0])
    ready(s, name, partitions)


def init_producer_id(s: Side):
    """InitProducerId for an idempotent producer (polled: Kafka answers COORDINATOR_LOAD_IN_PROGRESS
    until its first block of producer ids arrives from the controller); the answer is recorded."""
    Req, _m = req(22, 4)
    request = Req(transactional_id=None, transaction_timeout=ms(60_000), producer_id=-1, producer_epoch=-1)
    wait_for(lambda: s.quiet(request).error_code == 0, f"a producer id from {s.name}", 30)
    return s.call(request)


def find_coordinator(s: Side, group: str, *, version: int = 3):
    """Poll FindCoordinator until the group coordinator is there (Kafka creates __consumer_offsets
    on the first request and answers COORDINATOR_NOT_AVAILABLE meanwhile); the answer is quiet."""
    Req, _m = req(10, version)

    def ask():
        r = s.quiet(Req(key=group, key_type=0) if version >= 1 else Req(key=group))
        return r if r.error_code == 0 else None

    found = wait_for(ask, f"the coordinator of {group} on {s.name}", 30)
    # Kafka names the coordinator while it still loads __consumer_offsets: group requests answer
    # COORDINATOR_LOAD_IN_PROGRESS (or lose what they did) until then
    Fetch, _m = req(9, 7)
    wait_for(lambda: s.quiet(Fetch(group_id=group, topics=None, require_stable=False)).error_code == 0,
             f"the coordinator of {group} loaded on {s.name}", 30)
    return found
