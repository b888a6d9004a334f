"""Cluster mode keeps ACLs, SCRAM credentials and client quotas in etcd: a change made through one
broker is enforced and described by the other. Two brokers with a SASL_PLAINTEXT listener and
the authorizer on; every request below is sent to one chosen broker (a pinned connection of
ringlog's admin client), so "through broker 1" and "enforced by broker 2" mean what they say.
Also: concurrent changes through both brokers, a broker joining later (etcd's state wins over its
files), a malformed document in etcd, and etcd down on a write (last: it stops etcd)."""
from __future__ import annotations

import os
import time

import pytest
import trio

from ringlog.broker.cluster.etcd import EtcdClient
from ringlog.broker.security.scram import salted_password
from ringlog.broker.security.state import load_quotas
from ringlog.broker.security.store import Credentials
from ringlog.broker.testing import BrokerProcess
from ringlog.client.admin import NewTopic, open_admin
from ringlog.client.connection import builder
from ringlog.client.errors import AuthenticationError

from ..security.conftest import add_users
from .conftest import CLUSTER_SETTINGS, Cluster, wait_until

SECURED = ("--set", "listeners=SASL_PLAINTEXT://127.0.0.1:0", "--set", "authorizer.enabled=true",
           "--set", "super.users=User:admin", "--set", "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
           "--set", "connection.failed.authentication.delay.ms=0")
TOPIC = "secured"
TOPIC_AUTHORIZATION_FAILED = 29
REQUEST_TIMED_OUT = 7
# ACL enums (Kafka's wire codes): topic, literal, describe, allow
TOPIC_TYPE, LITERAL, DESCRIBE, ALLOW, ANY = 2, 3, 8, 3, 1


class SecuredCluster(Cluster):
    def _process(self, node: int):
        process = super()._process(node)
        process.args = [*process.args, *SECURED]
        return process


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ringlog.client.cli.etcd_process import EtcdProcess
    from tests.conftest import require_tool

    require_tool("etcd")
    root = tmp_path_factory.mktemp("cluster-security")
    with EtcdProcess(str(root / "etcd")) as etcd:
        c = SecuredCluster(etcd, root, n=2, name="sec")
        for node in (1, 2):  # the first users, offline in each data dir (the first broker seeds etcd)
            os.makedirs(root / f"broker-{node}", exist_ok=True)
            add_users(str(root / f"broker-{node}"), {"admin": "admin-pw", "alice": "alice-pw"})
        c.start()
        try:
            trio.run(_create_topic, c.brokers[1].bootstrap)
            yield c
        finally:
            c.stop()


def _sasl(user: str, password: str, mechanism: str = "PLAIN") -> dict:
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism, "sasl_username": user,
            "sasl_password": password}


async def _create_topic(bootstrap: str) -> None:
    async with open_admin(bootstrap, **_sasl("admin", "admin-pw")) as admin:
        await admin.create_topics([NewTopic(TOPIC, 1, 2)])


async def _on(cluster, node: int, user: str, password: str, api_key: int, fill, mechanism: str = "PLAIN"):
    """One request from `user` to broker `node` (and to no other), its response."""
    async with open_admin(cluster.brokers[node].bootstrap, **_sasl(user, password, mechanism)) as admin:
        conn = await admin.cluster.connection(node)
        # the ACL and SCRAM APIs at a version the broker serves (ringlog's admin client has no
        # methods for them)
        b = conn.make(api_key) if conn.supports(api_key) else builder(api_key, conn.broker_versions[api_key][1])
        return await conn.request(fill(b))


def _run(*args):
    return trio.run(_on, *args)


def _topic_error(cluster, node: int) -> int:
    resp = _run(cluster, node, "alice", "alice-pw", 3, lambda b: b(topics=[b("MetadataRequestTopic", name=TOPIC)],
                                                                     allow_auto_topic_creation=False))
    return int(resp.topics[0].error_code)


def test_an_acl_created_through_one_broker_is_enforced_by_the_other(cluster):
    assert _topic_error(cluster, 2) == TOPIC_AUTHORIZATION_FAILED
    resp = _run(cluster, 1, "admin", "admin-pw", 30, lambda b: b(creations=[b(
        "AclCreation", resource_type=TOPIC_TYPE, resource_name=TOPIC, resource_pattern_type=LITERAL,
        principal="User:alice", host="*", operation=DESCRIBE, permission_type=ALLOW)]))
    assert [int(r.error_code) for r in resp.results] == [0]
    # broker 1 answered after applying it; broker 2 applies it from its watch
    wait_until(lambda: _topic_error(cluster, 2) == 0, timeout=10, what="broker 2 to apply the ACL")
    assert _topic_error(cluster, 1) == 0
    described = _run(cluster, 2, "admin", "admin-pw", 29, lambda b: b(
        resource_type_filter=TOPIC_TYPE, resource_name_filter=TOPIC, pattern_type_filter=LITERAL,
        principal_filter=None, host_filter=None, operation=ANY, permission_type=ANY))
    assert [(r.resource_name, [a.principal for a in r.acls]) for r in described.resources] == [(TOPIC, ["User:alice"])]
    resp = _run(cluster, 2, "admin", "admin-pw", 31, lambda b: b(filters=[b(
        "DeleteAclsFilter", resource_type_filter=TOPIC_TYPE, resource_name_filter=TOPIC, pattern_type_filter=LITERAL,
        principal_filter="User:alice", host_filter=None, operation=ANY, permission_type=ANY)]))
    assert [len(r.matching_acls) for r in resp.filter_results] == [1]
    assert _topic_error(cluster, 2) == TOPIC_AUTHORIZATION_FAILED
    wait_until(lambda: _topic_error(cluster, 1) == TOPIC_AUTHORIZATION_FAILED, timeout=10,
               what="broker 1 to apply the deletion")


def test_a_scram_user_created_through_one_broker_authenticates_on_the_other(cluster):
    salt = b"0123456789abcdef"
    salted = salted_password("SCRAM-SHA-256", "bob-pw", salt, 4096)
    resp = _run(cluster, 2, "admin", "admin-pw", 51, lambda b: b(deletions=[], upsertions=[b(
        "ScramCredentialUpsertion", name="bob", mechanism=1, iterations=4096, salt=salt, salted_password=salted)]))
    assert [(r.user, int(r.error_code)) for r in resp.results] == [("bob", 0)]

    def bob_on_broker_1() -> bool:
        try:
            resp = _run(cluster, 1, "bob", "bob-pw", 3, lambda b: b(topics=[], allow_auto_topic_creation=False),
                        "SCRAM-SHA-256")
        except Exception:  # not applied there yet: the authentication fails
            return False
        return len(resp.brokers) == 2

    wait_until(bob_on_broker_1, timeout=10, what="bob to authenticate on broker 1")
    described = _run(cluster, 1, "admin", "admin-pw", 50, lambda b: b(users=[b("UserName", name="bob")]))
    assert [(r.user, int(r.error_code), [int(c.iterations) for c in r.credential_infos])
            for r in described.results] == [("bob", 0, [4096])]


def test_a_quota_altered_through_one_broker_is_described_by_the_other(cluster):
    async def alter() -> None:
        async with open_admin(cluster.brokers[1].bootstrap, **_sasl("admin", "admin-pw")) as admin:
            conn = await admin.cluster.connection(1)
            b = conn.make(49)
            resp = await conn.request(b(entries=[b("EntryData", entity=[b("EntityData", entity_type="user",
                                                                          entity_name="alice")],
                                                 ops=[b("OpData", key="producer_byte_rate", value=1024.0,
                                                        remove=False)])], validate_only=False))
            assert [int(e.error_code) for e in resp.entries] == [0]

    trio.run(alter)

    def described_on_2():
        resp = _run(cluster, 2, "admin", "admin-pw", 48, lambda b: b(components=[], strict=False))
        return [({e.entity_type: e.entity_name for e in entry.entity}, {v.key: float(v.value) for v in entry.values})
                for entry in resp.entries or ()]

    wait_until(lambda: described_on_2() == [({"user": "alice"}, {"producer_byte_rate": 1024.0})], timeout=10,
               what="broker 2 to describe the quota")
    # each broker keeps a copy in its data dir, readable as a single-node quotas.json
    wait_until(lambda: load_quotas(cluster.brokers[2].data_dir) == {(("user", "alice"),): {"producer_byte_rate": 1024.0}},
               timeout=10, what="broker 2's local copy of the quotas")


def test_concurrent_changes_through_both_brokers_are_all_kept(cluster):
    """Compare-and-swap: ten CreateAcls on each broker at once; none is lost to another's write."""
    names = {node: [f"race-{node}-{i}" for i in range(10)] for node in (1, 2)}

    async def create_all() -> None:
        async with open_admin(cluster.brokers[1].bootstrap, **_sasl("admin", "admin-pw")) as a1, \
                open_admin(cluster.brokers[2].bootstrap, **_sasl("admin", "admin-pw")) as a2:
            conns = {1: await a1.cluster.connection(1), 2: await a2.cluster.connection(2)}

            async def one(node: int, name: str) -> None:
                b = builder(30, 3)
                resp = await conns[node].request(b(creations=[b(
                    "AclCreation", resource_type=TOPIC_TYPE, resource_name=name, resource_pattern_type=LITERAL,
                    principal="User:race", host="*", operation=DESCRIBE, permission_type=ALLOW)]))
                assert [int(r.error_code) for r in resp.results] == [0]

            async with trio.open_nursery() as nursery:
                for node, wanted in names.items():
                    for name in wanted:
                        nursery.start_soon(one, node, name)

    trio.run(create_all)
    want = sorted(names[1] + names[2])

    def listed(node: int) -> list[str]:
        resp = _run(cluster, node, "admin", "admin-pw", 29, lambda b: b(
            resource_type_filter=TOPIC_TYPE, resource_name_filter=None, pattern_type_filter=LITERAL,
            principal_filter="User:race", host_filter=None, operation=ANY, permission_type=ANY))
        return sorted(r.resource_name for r in resp.resources)

    wait_until(lambda: listed(1) == want and listed(2) == want, timeout=10, what="both brokers to list all 20 bindings")


def test_a_broker_joining_later_adopts_etcds_state_not_its_files(cluster, tmp_path):
    """Its data dir has another user and no admin: etcd's users and ACLs win, and its local copy
    is replaced by etcd's."""
    data_dir = str(tmp_path / "broker-3")
    os.makedirs(data_dir)
    add_users(data_dir, {"zed": "zed-pw"})
    late = BrokerProcess(data_dir, "--node-id", "3", "--etcd", cluster.etcd.url, "--cluster-name", "sec",
                         *CLUSTER_SETTINGS, *SECURED)
    late.start(timeout=90)
    try:
        async def list_topics(user: str, password: str) -> list[str]:
            async with open_admin(late.bootstrap, **_sasl(user, password)) as admin:
                return await admin.list_topics()

        assert TOPIC in trio.run(list_topics, "admin", "admin-pw")  # etcd's admin, a super user
        with pytest.raises(AuthenticationError):
            trio.run(list_topics, "zed", "zed-pw")  # its own file's user was not adopted
        wait_until(lambda: "admin" in Credentials.load(data_dir).users and "zed" not in Credentials.load(data_dir).users,
                   timeout=10, what="broker 3's local copy of the credentials")
    finally:
        late.stop()


def _alter_quota(cluster, node: int, user: str, rate: float):
    return _run(cluster, node, "admin", "admin-pw", 49, lambda b: b(entries=[b(
        "EntryData", entity=[b("EntityData", entity_type="user", entity_name=user)],
        ops=[b("OpData", key="producer_byte_rate", value=rate, remove=False)])], validate_only=False))


def test_a_malformed_etcd_value_is_logged_and_skipped(cluster):
    async def put_garbage() -> None:
        await EtcdClient(cluster.etcd.url).put("/ringlog/sec/security/quotas", b"{not json")

    assert [int(e.error_code) for e in _alter_quota(cluster, 1, "erin", 10.0).entries] == [0]
    trio.run(put_garbage)
    for b in cluster.brokers.values():
        b.wait_line("ignoring a malformed etcd value of /ringlog/sec/security/quotas", timeout=10)
        assert b.proc.poll() is None
    # the state stayed; the next change through either broker replaces the bad document
    resp = _alter_quota(cluster, 2, "carol", 2048.0)
    assert [int(e.error_code) for e in resp.entries] == [0]
    def users_on_1():
        resp = _run(cluster, 1, "admin", "admin-pw", 48, lambda b: b(components=[], strict=False))
        return sorted(e.entity_name for entry in resp.entries for e in entry.entity)

    # erin's quota was kept through the bad document, carol's is added
    wait_until(lambda: {"carol", "erin"} <= set(users_on_1()), timeout=10, what="broker 1 to apply the new quotas document")


def test_etcd_unavailable_on_a_write_is_a_retriable_error(cluster):
    """Last in the module: it stops etcd."""
    cluster.etcd.stop()
    started = time.monotonic()
    resp = _alter_quota(cluster, 1, "dave", 1.0)
    assert [int(e.error_code) for e in resp.entries] == [REQUEST_TIMED_OUT]
    assert "etcd is unavailable" in resp.entries[0].error_message
    resp = _run(cluster, 2, "admin", "admin-pw", 30, lambda b: b(creations=[b(
        "AclCreation", resource_type=TOPIC_TYPE, resource_name=TOPIC, resource_pattern_type=LITERAL,
        principal="User:dave", host="*", operation=DESCRIBE, permission_type=ALLOW)]))
    assert [int(r.error_code) for r in resp.results] == [REQUEST_TIMED_OUT]
    assert time.monotonic() - started < 25  # within the clients' request timeout, no hang
