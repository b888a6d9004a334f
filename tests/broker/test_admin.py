"""Admin APIs with real clients over loopback: confluent-kafka AdminClient and kafka-python KafkaAdminClient."""
from __future__ import annotations

import json
import os
import time

import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)

T = 15  # seconds per admin call
# Legacy AlterConfigs is what is under test here.
pytestmark = pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")


@pytest.fixture
def broker(tmp_path):
    cfg = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), retention_check_interval_ms=100,
                       auto_create_topics=False)
    with BrokerThread(cfg) as b:
        yield b


@pytest.fixture
def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def outcome(future):
    """None on success, else the Kafka error code name."""
    try:
        future.result(T)
    except KafkaException as exc:
        return exc.args[0].name()
    return None


def produce(bootstrap: str, topic: str, n: int, *, partition: int = 0, timestamp: int | None = None) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    for i in range(n):
        kwargs = {"timestamp": timestamp} if timestamp is not None else {}
        p.produce(topic, value=b"v%d" % i, partition=partition, **kwargs)
    assert p.flush(T) == 0


def topic_configs(admin: AdminClient, topic: str) -> dict:
    [f] = admin.describe_configs([ConfigResource("topic", topic)]).values()
    return f.result(T)


def test_create_topics_and_bad_inputs(admin, broker):
    fs = admin.create_topics([
        NewTopic("orders", 3, 1, config={"retention.ms": "3600000", "cleanup.policy": "delete"}),
        NewTopic("defaults", -1, -1),
        NewTopic("bad name!", 1, 1),
        NewTopic("replicated", 1, 3),
        NewTopic("unknown-config", 1, 1, config={"no.such.config": "1"}),
        NewTopic("bad-value", 1, 1, config={"retention.ms": "soon"}),
        NewTopic("bad-range", 1, 1, config={"segment.bytes": "1"}),
        NewTopic("zero-partitions", 0, 1),
    ])
    results = {name: outcome(f) for name, f in fs.items()}
    assert results == {
        "orders": None,
        "defaults": None,
        "bad name!": "TOPIC_EXCEPTION",
        "replicated": "INVALID_REPLICATION_FACTOR",
        "unknown-config": "INVALID_CONFIG",
        "bad-value": "INVALID_CONFIG",
        "bad-range": "INVALID_CONFIG",
        "zero-partitions": "INVALID_PARTITIONS",
    }
    # The error message reaches the client.
    with pytest.raises(KafkaException, match="no.such.config"):
        admin.create_topics([NewTopic("unknown-config", 1, 1, config={"no.such.config": "1"})])["unknown-config"].result(T)
    assert outcome(admin.create_topics([NewTopic("orders", 3, 1)])["orders"]) == "TOPIC_ALREADY_EXISTS"
    # '.' and '_' collide (Kafka's metric-name rule).
    assert outcome(admin.create_topics([NewTopic("order_s", 1, 1)])["order_s"]) is None
    assert outcome(admin.create_topics([NewTopic("order.s", 1, 1)])["order.s"]) == "TOPIC_EXCEPTION"
    # validate_only creates nothing.
    assert outcome(admin.create_topics([NewTopic("dry", 2, 1)], validate_only=True)["dry"]) is None
    md = broker.broker.metadata
    assert md.get("dry") is None
    assert md.get("orders").partitions == 3
    assert md.get("defaults").partitions == broker.config.num_partitions
    assert broker.broker.metadata.get("orders").configs == {"retention.ms": "3600000", "cleanup.policy": "delete"}
    # Manual assignment on this node works; another broker id does not (raw protocol).
    from kio.schema.create_topics.v5.request import CreatableReplicaAssignment as A
    from kio.schema.create_topics.v5.request import CreatableTopic, CreateTopicsRequest

    from tests.broker.test_idempotence_broker import Wire

    def create(name, assignments, partitions=-1, rf=-1):
        w = Wire(broker.bootstrap)
        r = w.call(CreateTopicsRequest(topics=(CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=rf, assignments=assignments, configs=()),)))
        w.close()
        return r.topics[0]

    ok = create("manual", (A(partition_index=0, broker_ids=(0,)), A(partition_index=1, broker_ids=(0,))))
    assert ok.error_code == 0 and ok.num_partitions == 2 and ok.replication_factor == 1
    assert {c.name: c.value for c in ok.configs}["retention.ms"] == "604800000"
    assert broker.broker.metadata.get("manual").partitions == 2
    assert create("elsewhere", (A(partition_index=0, broker_ids=(5,)),)).error_code == 39  # INVALID_REPLICA_ASSIGNMENT
    assert create("holes", (A(partition_index=1, broker_ids=(0,)),)).error_code == 39
    assert create("both", (A(partition_index=0, broker_ids=(0,)),), partitions=1).error_code == 42  # INVALID_REQUEST


def test_delete_topics(admin, broker):
    for f in admin.create_topics([NewTopic("a", 2, 1), NewTopic("b", 1, 1)]).values():
        f.result(T)
    produce(broker.bootstrap, "a", 5)
    results = {n: outcome(f) for n, f in admin.delete_topics(["a", "missing"], operation_timeout=T).items()}
    assert results == {"a": None, "missing": "UNKNOWN_TOPIC_OR_PART"}
    assert broker.broker.metadata.get("a") is None
    assert not os.path.exists(os.path.join(broker.config.data_dir, "a-0"))
    # The name can be used again, starting empty.
    assert outcome(admin.create_topics([NewTopic("a", 1, 1)])["a"]) is None
    assert broker.broker.partition_log("a", 0).log_end_offset == 0


def test_create_partitions(admin, broker):
    admin.create_topics([NewTopic("grow", 2, 1)])["grow"].result(T)
    assert outcome(admin.create_partitions([NewPartitions("grow", 5)])["grow"]) is None
    assert broker.broker.metadata.get("grow").partitions == 5
    produce(broker.bootstrap, "grow", 3, partition=4)
    assert outcome(admin.create_partitions([NewPartitions("grow", 3)])["grow"]) == "INVALID_PARTITIONS"
    assert outcome(admin.create_partitions([NewPartitions("grow", 5)])["grow"]) == "INVALID_PARTITIONS"
    assert outcome(admin.create_partitions([NewPartitions("nope", 5)])["nope"]) == "UNKNOWN_TOPIC_OR_PART"
    assert outcome(admin.create_partitions([NewPartitions("grow", 9)], validate_only=True)["grow"]) is None
    assert broker.broker.metadata.get("grow").partitions == 5


def test_describe_and_alter_configs_apply_live_and_persist(admin, broker, tmp_path):
    admin.create_topics([NewTopic("cfg", 2, 1, config={"segment.bytes": "1048576"})])["cfg"].result(T)
    configs = topic_configs(admin, "cfg")
    assert configs["segment.bytes"].value == "1048576"
    assert configs["segment.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["retention.ms"].value == "604800000"
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["max.message.bytes"].value == str(broker.config.message_max_bytes)

    # Incremental: SET retention.ms, APPEND to the list config cleanup.policy.
    res = ConfigResource("topic", "cfg", incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
    ])
    [f] = admin.incremental_alter_configs([res]).values()
    f.result(T)
    configs = topic_configs(admin, "cfg")
    assert configs["retention.ms"].value == "1000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert set(configs["cleanup.policy"].value.split(",")) == {"delete", "compact"}
    # Applied to the open logs at once.
    for p in (0, 1):
        assert broker.broker.partition_log("cfg", p).config.retention_ms == 1000
    # Persisted in the topics store.
    with open(os.path.join(broker.config.data_dir, "topics.json")) as fh:
        stored = json.load(fh)["topics"]["cfg"]["configs"]
    assert stored["retention.ms"] == "1000" and stored["segment.bytes"] == "1048576"

    # SUBTRACT and DELETE.
    res = ConfigResource("topic", "cfg", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SUBTRACT),
        ConfigEntry("segment.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    [f] = admin.incremental_alter_configs([res]).values()
    f.result(T)
    configs = topic_configs(admin, "cfg")
    assert configs["cleanup.policy"].value == "delete"
    assert configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert broker.broker.partition_log("cfg", 0).config.segment_bytes == 1 << 30

    # APPEND on a non-list config and unknown names are refused.
    bad = ConfigResource("topic", "cfg", incremental_configs=[
        ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.APPEND)])
    [f] = admin.incremental_alter_configs([bad]).values()
    assert outcome(f) == "INVALID_CONFIG"
    bad = ConfigResource("topic", "cfg", incremental_configs=[
        ConfigEntry("retention.mss", "5", incremental_operation=AlterConfigOpType.SET)])
    [f] = admin.incremental_alter_configs([bad]).values()
    assert outcome(f) == "INVALID_CONFIG"
    [f] = admin.incremental_alter_configs([ConfigResource("topic", "ghost", incremental_configs=[
        ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.SET)])]).values()
    assert outcome(f) == "UNKNOWN_TOPIC_OR_PART"

    # Legacy AlterConfigs replaces the whole set of overrides.
    [f] = admin.alter_configs([ConfigResource("topic", "cfg", set_config={"retention.bytes": "123456"})]).values()
    f.result(T)
    assert broker.broker.metadata.get("cfg").configs == {"retention.bytes": "123456"}
    assert topic_configs(admin, "cfg")["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    # validate_only changes nothing.
    [f] = admin.alter_configs([ConfigResource("topic", "cfg", set_config={"retention.ms": "5"})],
                              validate_only=True).values()
    f.result(T)
    assert broker.broker.metadata.get("cfg").configs == {"retention.bytes": "123456"}


def test_retention_change_is_applied_to_the_log_live(admin, broker):
    admin.create_topics([NewTopic("old", 1, 1)])["old"].result(T)
    hour_ago = int(time.time() * 1000) - 3_600_000
    produce(broker.bootstrap, "old", 20, timestamp=hour_ago)
    plog = broker.broker.partition_log("old", 0)
    time.sleep(0.5)
    assert plog.log_start_offset == 0  # the default 7 days keeps them
    res = ConfigResource("topic", "old", incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)])
    [f] = admin.incremental_alter_configs([res]).values()
    f.result(T)
    deadline = time.time() + 10
    while plog.log_start_offset < 20 and time.time() < deadline:
        time.sleep(0.1)
    assert plog.log_start_offset == 20


def test_delete_records(admin, broker):
    admin.create_topics([NewTopic("dr", 1, 1)])["dr"].result(T)
    produce(broker.bootstrap, "dr", 10)
    [f] = admin.delete_records([TopicPartition("dr", 0, 4)]).values()
    assert f.result(T).low_watermark == 4
    [f] = admin.delete_records([TopicPartition("dr", 0, 2)]).values()
    assert f.result(T).low_watermark == 4  # never moves back
    [f] = admin.delete_records([TopicPartition("dr", 0, 11)]).values()
    assert outcome(f) == "OFFSET_OUT_OF_RANGE"
    [f] = admin.delete_records([TopicPartition("dr", 0, -1)]).values()  # -1: the high watermark
    assert f.result(T).low_watermark == 10
    assert broker.broker.partition_log("dr", 0).log_start_offset == 10


def test_describe_cluster_and_broker_configs(admin, broker):
    desc = admin.describe_cluster().result(T)
    assert desc.cluster_id == broker.config.cluster_id
    assert desc.controller.id == broker.config.node_id
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(0, broker.host, broker.port)]
    [f] = admin.describe_configs([ConfigResource("broker", "0")]).values()
    configs = f.result(T)
    assert configs["num.partitions"].value == "1"
    assert configs["num.partitions"].is_read_only
    assert configs["log.retention.check.interval.ms"].value == "100"
    assert configs["log.retention.check.interval.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    [f] = admin.alter_configs([ConfigResource("broker", "0", set_config={"num.partitions": "3"})]).values()
    assert outcome(f) == "INVALID_REQUEST"


def test_config_synonyms_and_documentation(admin, broker):
    admin.create_topics([NewTopic("syn", 1, 1, config={"retention.ms": "5000"})])["syn"].result(T)
    [f] = admin.describe_configs([ConfigResource("topic", "syn")], request_timeout=T).values()
    entry = f.result(T)["retention.ms"]
    # librdkafka asks for synonyms itself.
    assert [(s.name, s.value, s.source) for s in entry.synonyms.values()] == [
        ("retention.ms", "5000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value),
        ("log.retention.ms", "604800000", ConfigSource.DEFAULT_CONFIG.value),
    ]
    # Documentation and config types (v3+), raw protocol.
    from kio.schema.describe_configs.v4.request import DescribeConfigsRequest, DescribeConfigsResource

    from tests.broker.test_idempotence_broker import Wire

    w = Wire(broker.bootstrap)
    r = w.call(DescribeConfigsRequest(resources=(DescribeConfigsResource(
        resource_type=2, resource_name="syn", configuration_keys=("retention.ms", "cleanup.policy")),),
        include_synonyms=False, include_documentation=True))
    w.close()
    [res] = r.results
    by_name = {c.name: c for c in res.configs}
    assert set(by_name) == {"retention.ms", "cleanup.policy"}
    assert "deleted" in by_name["retention.ms"].documentation
    assert (by_name["retention.ms"].config_type, by_name["cleanup.policy"].config_type) == (5, 7)  # LONG, LIST
    assert by_name["retention.ms"].synonyms == ()


def test_kafka_python_admin_client(broker):
    kafka = pytest.importorskip("kafka")
    from kafka.admin import ConfigResource as KPConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient
    from kafka.admin import NewPartitions as KPNewPartitions
    from kafka.admin import NewTopic as KPNewTopic
    from kafka.errors import InvalidReplicationFactorError, InvalidTopicError, TopicAlreadyExistsError

    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
    try:
        a.create_topics([KPNewTopic("kp", 2, 1, topic_configs={"retention.ms": "7200000"})])
        assert "kp" in a.list_topics()
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([KPNewTopic("kp", 2, 1)])
        with pytest.raises(InvalidTopicError):
            a.create_topics([KPNewTopic("no/slash", 1, 1)])
        with pytest.raises(InvalidReplicationFactorError):
            a.create_topics([KPNewTopic("rf", 1, 2)])
        a.create_partitions({"kp": KPNewPartitions(4)})
        assert broker.broker.metadata.get("kp").partitions == 4

        desc = a.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "kp")], config_filter="all")
        values = desc["topic"]["kp"]
        assert values["retention.ms"]["value"] == "7200000"
        assert values["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert values["segment.bytes"]["config_source"] == "DEFAULT_CONFIG"
        a.alter_configs([KPConfigResource(ConfigResourceType.TOPIC, "kp", configs={"retention.ms": "1234"})])
        desc = a.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "kp")], config_filter="all")
        assert desc["topic"]["kp"]["retention.ms"]["value"] == "1234"
        assert broker.broker.partition_log("kp", 3).config.retention_ms == 1234

        cluster = a.describe_cluster()
        assert cluster["cluster_id"] == broker.config.cluster_id
        assert cluster["controller_id"] == 0
        assert [(n["broker_id"], n["port"]) for n in cluster["brokers"]] == [(0, broker.port)]
        a.delete_topics(["kp"])
        assert broker.broker.metadata.get("kp") is None
    finally:
        a.close()



def test_a_topic_named_twice_in_one_request_is_refused_once(admin, broker):
    """Kafka answers INVALID_REQUEST, once, for a name given twice; other names go ahead."""
    import datetime

    from kio.schema.create_partitions.v3.request import CreatePartitionsRequest, CreatePartitionsTopic
    from kio.schema.create_topics.v5.request import CreatableTopic, CreateTopicsRequest
    from kio.schema.types import TopicName
    from kio.static.primitive import i32Timedelta

    from tests.broker.test_idempotence_broker import Wire

    def creatable(name):
        return CreatableTopic(name=TopicName(name), num_partitions=1, replication_factor=1, assignments=(), configs=())

    w = Wire(broker.bootstrap)
    try:
        r = w.call(CreateTopicsRequest(topics=(creatable("twice"), creatable("once"), creatable("twice"))))
        assert [(t.name, t.error_code) for t in r.topics] == [("twice", 42), ("once", 0)]
        assert broker.broker.metadata.get("twice") is None and broker.broker.metadata.get("once").partitions == 1

        def grow(name, count):
            return CreatePartitionsTopic(name=TopicName(name), count=count, assignments=None)

        r = w.call(CreatePartitionsRequest(topics=(grow("once", 3), grow("once", 4)),
                                           timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)), validate_only=False))
        assert [(t.name, t.error_code) for t in r.results] == [("once", 42)]
        assert broker.broker.metadata.get("once").partitions == 1
    finally:
        w.close()
