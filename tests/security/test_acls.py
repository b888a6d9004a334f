"""The ACL matrix with confluent-kafka (librdkafka's admin, producer and consumer): for each API,
a principal without the right ACL is refused with Kafka's error code and nothing changes; with it
the call succeeds. Deny beats allow, prefixed patterns, super.users, the audit line of a denial,
ACLs and SCRAM users managed through the admin API and kept across a restart."""
from __future__ import annotations

import itertools
import logging
import os
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    ConfigEntry,
    AlterConfigOpType,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread

from .conftest import add_users

_names = itertools.count()
ALICE, ADMIN = "User:alice", "User:admin"


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def _config(data_dir: str) -> BrokerConfig:
    return BrokerConfig(data_dir=data_dir, listeners="SASL_PLAINTEXT://127.0.0.1:0", authorizer_enabled=True,
                        super_users=ADMIN, sasl_enabled_mechanisms="PLAIN,SCRAM-SHA-256",
                        connection_failed_authentication_delay_ms=0, group_initial_rebalance_delay_ms=0)


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("acls") / "data")
    os.makedirs(data_dir)
    add_users(data_dir, {"admin": "admin-pw", "alice": "alice-pw"})
    with BrokerThread(_config(data_dir)) as b:
        yield b


def _settings(broker, user: str) -> dict:
    return {"bootstrap.servers": broker.bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": f"{user}-pw"}


@pytest.fixture(scope="module")
def admin(acl_broker):
    return AdminClient(_settings(acl_broker, "admin"))


@pytest.fixture(scope="module")
def alice(acl_broker):
    return AdminClient(_settings(acl_broker, "alice"))


@pytest.fixture(autouse=True)
def _no_acls_left(admin):
    yield
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    for f in admin.delete_acls([everything]).values():
        f.result(10)


def grant(admin, rtype, name, operation, principal=ALICE, pattern=ResourcePatternType.LITERAL,
          permission=AclPermissionType.ALLOW) -> None:
    binding = AclBinding(rtype, name, pattern, principal, "*", operation, permission)
    for f in admin.create_acls([binding]).values():
        f.result(10)


def code_of(future) -> int:
    with pytest.raises(KafkaException) as info:
        future.result(10)
    return info.value.args[0].code()


def topic(admin, partitions: int = 1) -> str:
    name = _name("t")
    admin.create_topics([NewTopic(name, partitions)])[name].result(10)
    return name


def topics_of(admin) -> set[str]:
    return set(admin.list_topics(timeout=10).topics)


def produce(broker, user: str, name: str, value: bytes = b"v") -> KafkaError | None:
    p = Producer({**_settings(broker, user), "message.timeout.ms": 5000})
    out: list = []
    p.produce(name, value, on_delivery=lambda err, msg: out.append(err))
    p.flush(10)
    assert out, "no delivery report"
    return out[0]


def watermark(broker, name: str) -> int:
    c = Consumer({**_settings(broker, "admin"), "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(name, 0), timeout=10)[1]
    finally:
        c.close()


def fetch_one(broker, user: str, name: str) -> tuple[int | None, bytes | None]:
    c = Consumer({**_settings(broker, user), "group.id": _name("g"), "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(name, 0, 0)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return msg.error().code(), None
            return None, msg.value()
        return None, None
    finally:
        c.close()


def test_produce_needs_write(acl_broker, admin, caplog):
    caplog.set_level(logging.INFO, logger="ringlog.audit")
    name = topic(admin)
    assert produce(acl_broker, "alice", name).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert watermark(acl_broker, name) == 0
    # librdkafka asks Metadata first: the denial of Describe is the audit line
    assert f"Principal = {ALICE} is Denied Operation = Describe from host = 127.0.0.1 on resource = " \
           f"Topic:LITERAL:{name} for request = Metadata" in caplog.text
    grant(admin, ResourceType.TOPIC, name, AclOperation.WRITE)
    assert produce(acl_broker, "alice", name) is None
    assert watermark(acl_broker, name) == 1


def test_fetch_needs_read(acl_broker, admin):
    name = topic(admin)
    assert produce(acl_broker, "admin", name, b"hello") is None
    # librdkafka looks up the coordinator of its group.id even when it only assigns
    grant(admin, ResourceType.GROUP, "g-", AclOperation.READ, pattern=ResourcePatternType.PREFIXED)
    grant(admin, ResourceType.TOPIC, name, AclOperation.DESCRIBE)  # Metadata passes, Fetch is refused
    assert fetch_one(acl_broker, "alice", name)[0] == KafkaError.TOPIC_AUTHORIZATION_FAILED
    grant(admin, ResourceType.TOPIC, name, AclOperation.READ)
    assert fetch_one(acl_broker, "alice", name) == (None, b"hello")


def test_metadata_hides_topics_without_describe(admin, alice):
    name = topic(admin)
    assert name not in topics_of(alice)
    grant(admin, ResourceType.TOPIC, name, AclOperation.DESCRIBE)
    assert name in topics_of(alice)


def test_create_topics_needs_create_and_prefixed_patterns_work(admin, alice):
    mine, other = _name("alice-x"), _name("other")
    assert code_of(alice.create_topics([NewTopic(mine, 1)])[mine]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert mine not in topics_of(admin)
    grant(admin, ResourceType.TOPIC, "alice-", AclOperation.CREATE, pattern=ResourcePatternType.PREFIXED)
    alice.create_topics([NewTopic(mine, 1)])[mine].result(10)
    assert mine in topics_of(admin)
    assert code_of(alice.create_topics([NewTopic(other, 1)])[other]) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_delete_topics_needs_delete(admin, alice):
    name = topic(admin)
    assert code_of(alice.delete_topics([name])[name]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert name in topics_of(admin)
    grant(admin, ResourceType.TOPIC, name, AclOperation.DELETE)
    alice.delete_topics([name])[name].result(10)


def test_create_partitions_needs_alter(admin, alice):
    name = topic(admin)
    assert code_of(alice.create_partitions([NewPartitions(name, 3)])[name]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert len(admin.list_topics(name, timeout=10).topics[name].partitions) == 1
    grant(admin, ResourceType.TOPIC, name, AclOperation.ALTER)
    alice.create_partitions([NewPartitions(name, 3)])[name].result(10)
    assert len(admin.list_topics(name, timeout=10).topics[name].partitions) == 3


def test_configs_need_describe_configs_and_alter_configs(admin, alice):
    name = topic(admin)
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    assert code_of(alice.describe_configs([res])[res]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    grant(admin, ResourceType.TOPIC, name, AclOperation.DESCRIBE_CONFIGS)
    assert "retention.ms" in alice.describe_configs([res])[res].result(10)
    change = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
        ConfigEntry("retention.ms", "12345", incremental_operation=AlterConfigOpType.SET)])
    assert code_of(alice.incremental_alter_configs([change])[change]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert admin.describe_configs([res])[res].result(10)["retention.ms"].value != "12345"
    grant(admin, ResourceType.TOPIC, name, AclOperation.ALTER_CONFIGS)
    alice.incremental_alter_configs([change])[change].result(10)
    assert admin.describe_configs([res])[res].result(10)["retention.ms"].value == "12345"


def test_consumer_group_needs_read_on_group_and_topic(acl_broker, admin, alice):
    name, group = topic(admin), _name("grp")
    assert produce(acl_broker, "admin", name, b"g") is None
    grant(admin, ResourceType.TOPIC, name, AclOperation.READ)

    def consume() -> int | bytes:
        c = Consumer({**_settings(acl_broker, "alice"), "group.id": group, "auto.offset.reset": "earliest"})
        try:
            c.subscribe([name])
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                msg = c.poll(0.5)
                if msg is not None:
                    return msg.error().code() if msg.error() else msg.value()
            return -1
        finally:
            c.close()

    assert consume() == KafkaError.GROUP_AUTHORIZATION_FAILED
    grant(admin, ResourceType.GROUP, group, AclOperation.READ)
    assert consume() == b"g"
    # READ implies DESCRIBE (Kafka's rule); another group stays hidden
    assert alice.describe_consumer_groups([group])[group].result(10).group_id == group
    other = _name("grp")
    assert code_of(alice.describe_consumer_groups([other])[other]) == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert code_of(alice.delete_consumer_groups([group])[group]) == KafkaError.GROUP_AUTHORIZATION_FAILED
    grant(admin, ResourceType.GROUP, group, AclOperation.DELETE)
    alice.delete_consumer_groups([group])[group].result(10)


def test_offsets_need_read_or_describe_on_each_topic(acl_broker, admin, alice):
    """OffsetCommit needs READ on each topic (a denied one's partitions get
    TOPIC_AUTHORIZATION_FAILED, the others are committed); OffsetFetch needs DESCRIBE: a named
    partition of a hidden topic gets TOPIC_AUTHORIZATION_FAILED, and a fetch of all the group's
    offsets leaves that topic out."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    readable, hidden, group = topic(admin), topic(admin), _name("grp")
    grant(admin, ResourceType.GROUP, group, AclOperation.READ)
    grant(admin, ResourceType.TOPIC, readable, AclOperation.READ)
    c = Consumer({**_settings(acl_broker, "alice"), "group.id": group, "enable.auto.commit": False})
    try:
        with pytest.raises(KafkaException):
            c.commit(offsets=[TopicPartition(readable, 0, 5), TopicPartition(hidden, 0, 7)], asynchronous=False)
        named = {tp.topic: tp for tp in c.committed([TopicPartition(readable, 0), TopicPartition(hidden, 0)],
                                                     timeout=10)}
        assert named[readable].offset == 5 and named[readable].error is None
        assert named[hidden].error is not None and named[hidden].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        c.close()
    # what was stored, as the super user sees it: the readable topic's commit only
    listing = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(10)
    assert {(tp.topic, tp.offset) for tp in listing.topic_partitions} == {(readable, 5)}
    grant(admin, ResourceType.TOPIC, hidden, AclOperation.READ)
    c = Consumer({**_settings(acl_broker, "alice"), "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(hidden, 0, 7)], asynchronous=False)
    finally:
        c.close()
    for f in admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, hidden, ResourcePatternType.LITERAL, ALICE, "*",
                                                 AclOperation.ANY, AclPermissionType.ANY)]).values():
        f.result(10)
    # all of the group's offsets: the topic alice may no longer describe is left out
    listing = alice.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(10)
    assert {(tp.topic, tp.offset) for tp in listing.topic_partitions} == {(readable, 5)}
    listing = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(10)
    assert {(tp.topic, tp.offset) for tp in listing.topic_partitions} == {(readable, 5), (hidden, 7)}


def test_list_groups_shows_only_describable_groups(acl_broker, admin, alice):
    name, group = topic(admin), _name("listed")
    c = Consumer({**_settings(acl_broker, "admin"), "group.id": group})
    c.commit(offsets=[TopicPartition(name, 0, 0)], asynchronous=False)
    c.close()
    ids = lambda client: {g.group_id for g in client.list_consumer_groups().result(10).valid}  # noqa: E731
    assert group in ids(admin)
    assert group not in ids(alice)
    grant(admin, ResourceType.GROUP, group, AclOperation.DESCRIBE)
    assert group in ids(alice)


def test_deny_beats_allow(acl_broker, admin):
    name = topic(admin)
    grant(admin, ResourceType.TOPIC, name, AclOperation.WRITE, principal="User:*")
    grant(admin, ResourceType.TOPIC, name, AclOperation.WRITE, permission=AclPermissionType.DENY)
    assert produce(acl_broker, "alice", name).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert watermark(acl_broker, name) == 0


def _kafka_python_describe_acls(broker, user: str | None):
    """kafka-python's describe_acls (librdkafka's Python binding drops DescribeAcls' error code)."""
    from kafka import KafkaAdminClient
    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ResourcePatternFilter
    from kafka.admin import ACLResourcePatternType, ResourceType as KResourceType

    settings = {} if user is None else {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                        "sasl_plain_username": user, "sasl_plain_password": f"{user}-pw"}
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, **settings)
    try:
        return client.describe_acls(ACLFilter(None, "*", ACLOperation.ANY, ACLPermissionType.ANY,
                                              ResourcePatternFilter(KResourceType.ANY, None, ACLResourcePatternType.ANY)))
    finally:
        client.close()


def test_cluster_apis_need_cluster_acls(acl_broker, admin, alice):
    from kafka.errors import ClusterAuthorizationFailedError

    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    with pytest.raises(ClusterAuthorizationFailedError):
        _kafka_python_describe_acls(acl_broker, "alice")
    binding = AclBinding(ResourceType.TOPIC, "x", ResourcePatternType.LITERAL, ALICE, "*", AclOperation.ALL,
                         AclPermissionType.ALLOW)
    assert code_of(alice.create_acls([binding])[binding]) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert admin.describe_acls(everything).result(10) == []
    grant(admin, ResourceType.BROKER, "kafka-cluster", AclOperation.DESCRIBE)
    assert len(alice.describe_acls(everything).result(10)) == 1
    assert len(_kafka_python_describe_acls(acl_broker, "alice")[0]) == 1


def test_scram_users_managed_through_the_admin_api_survive_a_restart(tmp_path):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    add_users(data_dir, {"admin": "admin-pw"})
    config = _config(data_dir)
    bob = UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"bob-pw")
    with BrokerThread(config) as b:
        admin = AdminClient(_settings(b, "admin"))
        admin.alter_user_scram_credentials([bob])["bob"].result(10)
        info = admin.describe_user_scram_credentials(["bob"])["bob"].result(10)
        assert [(c.mechanism, c.iterations) for c in info.scram_credential_infos] == [(ScramMechanism.SCRAM_SHA_256, 4096)]
        grant(admin, ResourceType.TOPIC, "*", AclOperation.ALL, principal="User:bob")
    with BrokerThread(config) as b:
        settings = {**_settings(b, "bob"), "sasl.mechanism": "SCRAM-SHA-256", "sasl.password": "bob-pw"}
        p = Producer({**settings, "message.timeout.ms": 5000})
        out: list = []
        p.produce("bobs", b"x", on_delivery=lambda err, msg: out.append(err))
        p.flush(10)
        assert out == [None]  # the SCRAM user and the ACL came back from the data dir


def test_acl_requests_without_an_authorizer_are_security_disabled(tmp_path):
    from kafka.errors import SecurityDisabledError

    with BrokerThread(BrokerConfig(data_dir=str(tmp_path / "d"), listen_port=0)) as b:
        with pytest.raises(SecurityDisabledError):
            _kafka_python_describe_acls(b, None)
