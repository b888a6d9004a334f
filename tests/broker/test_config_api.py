"""The configuration schema over the real Kafka API, with confluent-kafka against a live broker.

Topic configs: CreateTopics, AlterConfigs and IncrementalAlterConfigs with a bad config are
answered INVALID_CONFIG with the same kind of message the broker's own keys get (one line: key,
value, what is expected); an unknown name with Kafka's "Unknown topic config name".

Partition limits (broker.limits): CreateTopics, CreatePartitions and auto-creation by Metadata
are refused beyond max.partitions.per.topic (INVALID_PARTITIONS) and max.partitions.per.broker
(POLICY_VIOLATION), each with a message naming the limit and the key that raises it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import pytest

from ringlog.broker.config import BrokerConfig, validate
from ringlog.broker.limits import check_partition_count
from ringlog.broker.metadata import TopicInfo
from ringlog.broker.testing import BrokerThread

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaException, Producer  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

T = 15  # seconds per admin call
pytestmark = pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")


def refusal(future) -> tuple[str, str]:
    """(error name, message) of a failed admin call."""
    with pytest.raises(KafkaException) as failure:
        future.result(T)
    error = failure.value.args[0]
    return error.name(), error.str()


# --- topic configs ------------------------------------------------------------------------------


@attrs.frozen
class ConfigCase:
    id: str
    configs: dict[str, str]
    says: str


CONFIG_CASES = [
    ConfigCase("decimal-for-long", {"retention.ms": "2000.9"},
               "invalid value 2000.9 for configuration retention.ms: expected an integer"),
    ConfigCase("bool-for-long", {"retention.ms": "true"},
               "invalid value true for configuration retention.ms: expected an integer"),
    ConfigCase("word-for-int", {"segment.bytes": "abc"},
               "invalid value abc for configuration segment.bytes: expected an integer"),
    ConfigCase("below-range", {"segment.bytes": "1"},
               "invalid value 1 for configuration segment.bytes: must be between 14 and 2147483647"),
    ConfigCase("beyond-int32", {"segment.bytes": "3000000000"},
               "invalid value 3000000000 for configuration segment.bytes: must be between 14 and 2147483647"),
    ConfigCase("negative-ms", {"retention.ms": "-5"},
               "invalid value -5 for configuration retention.ms: must be at least 0, or -1 (keep for ever)"),
    ConfigCase("yes-for-bool", {"unclean.leader.election.enable": "yes"},
               "invalid value yes for configuration unclean.leader.election.enable: expected true or false"),
    ConfigCase("not-a-choice", {"message.timestamp.type": "Now"},
               "invalid value Now for configuration message.timestamp.type: expected one of CreateTime, LogAppendTime"),
    ConfigCase("bad-list-item", {"cleanup.policy": "delete,compacted"},
               "invalid value delete,compacted for configuration cleanup.policy: compacted is not one of compact, delete"),
    ConfigCase("ratio-out-of-range", {"min.cleanable.dirty.ratio": "1.5"},
               "invalid value 1.5 for configuration min.cleanable.dirty.ratio: must be between 0 and 1"),
    ConfigCase("unknown-name", {"retention.mss": "5"}, "Unknown topic config name: retention.mss"),
    # a broker key is not a topic config (Kafka refuses it the same way)
    ConfigCase("broker-key-as-topic-config", {"log.retention.ms": "5"}, "Unknown topic config name: log.retention.ms"),
]


@pytest.fixture(scope="module")
def config_broker(tmp_path_factory):
    data = tmp_path_factory.mktemp("config-api")
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(data), auto_create_topics=False)) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("existing", 1, 1)])["existing"].result(T)
        yield b, admin


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_create_topics_refuses_bad_config(case: ConfigCase, config_broker) -> None:
    b, admin = config_broker
    name = f"t-{case.id}"
    assert refusal(admin.create_topics([NewTopic(name, 1, 1, config=case.configs)])[name]) == \
        ("INVALID_CONFIG", case.says)
    assert b.broker.metadata.get(name) is None


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_incremental_alter_configs_refuses_bad_config(case: ConfigCase, config_broker) -> None:
    b, admin = config_broker
    [(key, value)] = case.configs.items()
    resource = ConfigResource("topic", "existing", incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    [f] = admin.incremental_alter_configs([resource]).values()
    assert refusal(f) == ("INVALID_CONFIG", case.says)
    assert b.broker.metadata.get("existing").configs == {}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_alter_configs_refuses_bad_config(case: ConfigCase, config_broker) -> None:
    b, admin = config_broker
    [f] = admin.alter_configs([ConfigResource("topic", "existing", set_config=case.configs)]).values()
    assert refusal(f) == ("INVALID_CONFIG", case.says)
    assert b.broker.metadata.get("existing").configs == {}


def test_good_topic_configs_are_normalised(config_broker) -> None:
    b, admin = config_broker
    configs = {"cleanup.policy": " delete , compact ", "unclean.leader.election.enable": "TRUE",
               "retention.ms": "-1", "min.cleanable.dirty.ratio": "0.25"}
    admin.create_topics([NewTopic("good", 1, 1, config=configs)])["good"].result(T)
    assert b.broker.metadata.get("good").configs == {
        "cleanup.policy": "delete,compact", "unclean.leader.election.enable": "true", "retention.ms": "-1",
        "min.cleanable.dirty.ratio": "0.25"}
    log = b.broker.partition_log("good", 0)
    assert (log.config.cleanup_policy, log.config.retention_ms) == ("delete,compact", -1)


# --- partition limits ---------------------------------------------------------------------------

PER_TOPIC = "{n} partitions is more than the limit of 4 per topic (max.partitions.per.topic raises it)"
PER_BROKER = ("{added} more partition(s) would bring the broker to {total}, beyond its limit of 10 "
              "(max.partitions.per.broker raises it)")


@attrs.frozen
class CapCase:
    id: str
    # (admin, bootstrap) -> (error name, message) of the refused request; it may set things up first
    act: Callable[[AdminClient, str], tuple[str, str]]
    expected: tuple[str, str]
    # partitions the broker holds afterwards (the refused request changed nothing)
    topics_after: dict[str, int]


def create(admin: AdminClient, name: str, n: int, **kw) -> tuple[str, str]:
    return refusal(admin.create_topics([NewTopic(name, n, 1)], **kw)[name])


def fill(admin: AdminClient, *counts: int) -> None:
    """Topics f0, f1, ... with these partition counts (each within the per-topic cap)."""
    fs = admin.create_topics([NewTopic(f"f{i}", n, 1) for i, n in enumerate(counts)])
    for f in fs.values():
        f.result(T)


def grow(admin: AdminClient, name: str, total: int, **kw) -> tuple[str, str]:
    return refusal(admin.create_partitions([NewPartitions(name, total)], **kw)[name])


def metadata_error(bootstrap: str, name: str) -> tuple[str, str]:
    """What a producer's Metadata request (which auto-creates) answers for `name`."""
    p = Producer({"bootstrap.servers": bootstrap})
    topic = p.list_topics(name, timeout=T).topics[name]
    assert topic.error is not None, "the topic was created"
    return topic.error.name(), ""


def _filled_then(then: Callable[[AdminClient, str], tuple[str, str]], *counts: int):
    def act(admin: AdminClient, bootstrap: str) -> tuple[str, str]:
        fill(admin, *counts)
        return then(admin, bootstrap)
    return act


CAP_CASES = [
    CapCase("create-above-topic-cap", lambda a, b: create(a, "big", 5),
            ("INVALID_PARTITIONS", PER_TOPIC.format(n=5)), {}),
    CapCase("create-validate-only-above-topic-cap", lambda a, b: create(a, "big", 5, validate_only=True),
            ("INVALID_PARTITIONS", PER_TOPIC.format(n=5)), {}),
    CapCase("grow-above-topic-cap", _filled_then(lambda a, b: grow(a, "f0", 5), 2),
            ("INVALID_PARTITIONS", PER_TOPIC.format(n=5)), {"f0": 2}),
    # __consumer_offsets holds 1 of the 10 from the start
    CapCase("create-beyond-broker-cap", _filled_then(lambda a, b: create(a, "one-more", 2), 4, 4),
            ("POLICY_VIOLATION", PER_BROKER.format(added=2, total=11)), {"f0": 4, "f1": 4}),
    CapCase("create-validate-only-beyond-broker-cap",
            _filled_then(lambda a, b: create(a, "one-more", 2, validate_only=True), 4, 4),
            ("POLICY_VIOLATION", PER_BROKER.format(added=2, total=11)), {"f0": 4, "f1": 4}),
    CapCase("grow-beyond-broker-cap", _filled_then(lambda a, b: grow(a, "f0", 4), 2, 4, 2),
            ("POLICY_VIOLATION", PER_BROKER.format(added=2, total=11)), {"f0": 2, "f1": 4, "f2": 2}),
    # num.partitions is 2: auto-creation meets the broker cap too (Metadata has no message field)
    CapCase("auto-create-beyond-broker-cap", _filled_then(lambda a, b: metadata_error(b, "auto"), 4, 4),
            ("POLICY_VIOLATION", ""), {"f0": 4, "f1": 4}),
]


@pytest.fixture
def capped(tmp_path):
    config = validate(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), num_partitions=2,
                                   max_partitions_per_topic=4, max_partitions_per_broker=10,
                                   group_initial_rebalance_delay_ms=0))
    with BrokerThread(config) as b:
        yield b, AdminClient({"bootstrap.servers": b.bootstrap})


def _user_topics(b) -> dict[str, int]:
    return {t.name: t.partitions for t in b.broker.metadata if not t.internal}


def _wait_for_offsets_topic(b) -> None:
    """__consumer_offsets is created by the coordinator's start-up task: the counts below include it."""
    import time

    deadline = time.monotonic() + T
    while b.broker.metadata.get("__consumer_offsets") is None:
        assert time.monotonic() < deadline, "__consumer_offsets was never created"
        time.sleep(0.01)


@pytest.mark.parametrize("case", CAP_CASES, ids=[c.id for c in CAP_CASES])
def test_partition_caps(case: CapCase, capped) -> None:
    b, admin = capped
    _wait_for_offsets_topic(b)
    assert case.act(admin, b.bootstrap) == case.expected
    assert _user_topics(b) == case.topics_after


def test_auto_create_refusal_is_logged_once(capped, caplog) -> None:
    b, admin = capped
    _wait_for_offsets_topic(b)
    fill(admin, 4, 4)
    caplog.set_level(logging.WARNING, logger="ringlog.metadata")
    assert metadata_error(b.bootstrap, "auto-a") == ("POLICY_VIOLATION", "")
    assert metadata_error(b.bootstrap, "auto-b") == ("POLICY_VIOLATION", "")
    lines = [r.getMessage() for r in caplog.records if r.name == "ringlog.metadata"]
    # the first refusal in 10 s is logged with the limit and the key; the next is only counted
    assert len(lines) == 1, lines
    assert lines[0].startswith("auto-creating topic auto-a refused: 2 more partition(s) would bring the broker to 11")
    assert "max.partitions.per.broker raises it" in lines[0]


def test_produce_to_a_topic_beyond_the_cap_fails(capped) -> None:
    b, admin = capped
    _wait_for_offsets_topic(b)
    fill(admin, 4, 4)
    errors = []
    p = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 3000})
    p.produce("auto-produced", b"v", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(T) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert b.broker.metadata.get("auto-produced") is None


def test_within_the_caps_everything_is_created(capped) -> None:
    b, admin = capped
    _wait_for_offsets_topic(b)
    fill(admin, 4, 2)
    admin.create_partitions([NewPartitions("f1", 3)])["f1"].result(T)
    assert Producer({"bootstrap.servers": b.bootstrap}).list_topics("auto", timeout=T).topics["auto"].error is None
    # with __consumer_offsets' one: 1 + 4 + 3 + 2, the cap exactly
    assert _user_topics(b) == {"f0": 4, "f1": 3, "auto": 2}


def test_internal_topics_are_never_refused() -> None:
    # pure: the coordinator must be able to create __consumer_offsets however full the broker is
    config = BrokerConfig(max_partitions_per_topic=4, max_partitions_per_broker=10)
    full = [TopicInfo(name="t", partitions=10, topic_id=None)]
    check_partition_count(config, "__consumer_offsets", 1, full)
    with pytest.raises(Exception, match="max.partitions.per.broker raises it"):
        check_partition_count(config, "user", 1, full)
    with pytest.raises(Exception, match="max.partitions.per.topic raises it"):
        check_partition_count(config, "__consumer_offsets", 5, [])
