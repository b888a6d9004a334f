"""Apache Kafka's Java client (kafka-clients) and Kafka Streams against a live ringlog broker.

The Maven project in tests/compat/java is built once per session; one JVM then runs every
scenario of the tests selected here against one broker (JVM start-up costs seconds) and reports
JSON lines (tests/compat/harness.py). Each test below checks one scenario's report, and where
records are involved, compares them byte for byte with what the broker stored.

Needs java and mvn: skipped without them, failed in CI (RINGLOG_REQUIRE_TOOLS=1), where .ci/run
installs them and fetches the Maven dependencies before the tests run.
"""
from __future__ import annotations

import collections
import os
import re

import pytest

from ringlog.client.partitioner import murmur2_partition
from tests import conftest as root_conftest

from .harness import (
    HERE,
    build,
    by_partition_offset,
    compat_broker_config,
    require_tools,
    run_harness,
    stored_batches,
    stored_records,
    wanted_scenarios,
    without_timestamps,
)
from ringlog.broker.testing import BrokerThread

JAVA_DIR = os.path.join(HERE, "java")
KAFKA_VERSION = "4.4.0"  # the pom's kafka.version, reported in docs/compatibility.md

# In the order the JVM runs them (the fixture runs only those whose tests are selected)
SCENARIOS = [
    "produce_acks",
    "produce_codecs",
    "produce_idempotent",
    "produce_partitioners",
    "consume_assign",
    "consume_group_commit",
    "group_range",
    "group_cooperative_sticky",
    "group_static_membership",
    *(["group_consumer_protocol"] if root_conftest.SLOW else []),
    "group_consumer_protocol_range",
    "admin_topics",
    "admin_configs",
    "admin_offsets_delete_records",
    "admin_cluster",
    "admin_client_quotas",
    "admin_groups",
    "admin_log_dirs_producers",
    "streams_word_count",
    "streams_word_count_exactly_once",
]

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
# AclOperation names a Kafka broker without an authorizer reports (AclEntry.supportedOperations)
TOPIC_OPERATIONS = ["ALTER", "ALTER_CONFIGS", "CREATE", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "READ", "WRITE"]
GROUP_OPERATIONS = ["ALTER_CONFIGS", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "READ"]
CLUSTER_OPERATIONS = ["ALTER", "ALTER_CONFIGS", "CLUSTER_ACTION", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS",
                      "IDEMPOTENT_WRITE"]


@pytest.fixture(scope="session")
def java_command(tmp_path_factory) -> list[str]:
    tools = require_tools("java", "mvn")
    classpath_file = os.path.join(JAVA_DIR, "target", "classpath.txt")
    goals = ["compile", "dependency:build-classpath", f"-Dmdep.outputFile={classpath_file}"]
    mvn = [tools["mvn"], "-B", "-q"]
    if root_conftest.REQUIRE_TOOLS:
        # CI fetched every dependency before the tests (.ci/run): the build must not need the network
        build([*mvn, "-o", *goals], JAVA_DIR, "Java", timeout=300)
    else:
        build([*mvn, *goals], JAVA_DIR, "Java", timeout=600)
    with open(classpath_file) as f:
        classpath = os.path.join(JAVA_DIR, "target", "classes") + os.pathsep + f.read().strip()
    tmp = tmp_path_factory.mktemp("java")
    # serial GC and a bounded heap: the run shares two cores with the broker
    return [tools["java"], "-XX:+UseSerialGC", "-Xmx768m", f"-Dringlog.tmp={tmp}", "-cp", classpath,
            "ringlog.compat.Main"]


@pytest.fixture(scope="module")
def java_run(request, java_command, tmp_path_factory):
    scenarios = wanted_scenarios(request, SCENARIOS)
    data_dir = tmp_path_factory.mktemp("java-broker")
    blocking_before = len(root_conftest._blocking_calls)
    with BrokerThread(compat_broker_config(str(data_dir / "data"))) as broker:
        run = run_harness("Java", java_command, broker, scenarios, timeout=420)
        # the broker serves the whole run before any test's own blocking-call check: check it here
        blocking = root_conftest._blocking_calls[blocking_before:]
        if blocking:
            pytest.fail(f"{len(blocking)} blocking call(s) on the broker's Trio thread during the Java run; the "
                        f"first:\n{blocking[0]}")
        yield run


def _stored_as_sent(broker, topic: str, partitions: int) -> list[dict]:
    return [rec.as_sent(p) for p in range(partitions) for rec in stored_records(broker, topic, p)]


# --- producer ------------------------------------------------------------------------------------


def test_produce_acks(java_run) -> None:
    r = java_run.result("produce_acks")
    stored = stored_records(java_run.broker, r["topic"], 0)
    assert [s.offset for s in stored] == list(range(120))
    # acks=0 has no answer, so no offsets; acks=1 and acks=all report where each record went
    assert {rec["o"] for rec in r["acks_0"]} == {-1}
    assert [rec["o"] for rec in r["acks_1"]] == list(range(40, 80))
    assert [rec["o"] for rec in r["acks_all"]] == list(range(80, 120))
    sent = [dict(rec, o=i) for i, rec in enumerate(r["acks_0"] + r["acks_1"] + r["acks_all"])]
    assert [s.as_sent(0) for s in stored] == without_timestamps(sent)
    assert without_timestamps(r["read"]) == without_timestamps(sent)
    # acks=all runs idempotent (the Java default), acks 0 and 1 do not
    assert {s.producer_id for s in stored[:80]} == {-1}
    assert len({s.producer_id for s in stored[80:]}) == 1 and stored[80].producer_id > 0


def test_produce_codecs(java_run) -> None:
    r = java_run.result("produce_codecs")
    assert sorted(r) == sorted(CODECS)
    for codec, code in CODECS.items():
        topic = r[codec]["topic"]
        sent = by_partition_offset(without_timestamps(r[codec]["sent"]))
        assert len(sent) == 150
        assert by_partition_offset(_stored_as_sent(java_run.broker, topic, 3)) == sent, codec
        assert by_partition_offset(without_timestamps(r[codec]["read"])) == sent, codec
        batches = [h for p in range(3) for h in stored_batches(java_run.broker, topic, p)]
        assert {h.compression for h in batches} == {code}, codec
        # stored as the producer built them: several records per batch, so the codec spanned records
        assert max(h.records_count for h in batches) > 1, codec
        assert all(h.producer_id > 0 and h.base_sequence >= 0 for h in batches), codec


def test_produce_idempotent(java_run) -> None:
    r = java_run.result("produce_idempotent")
    sent = r["sent"]
    assert len(sent) == 2000
    producer_ids = set()
    for p in range(2):
        batches = stored_batches(java_run.broker, r["topic"], p)
        producer_ids |= {(h.producer_id, h.producer_epoch) for h in batches}
        # five requests in flight and no duplicate or gap: each batch continues the last one's sequence
        expected_sequence = 0
        for h in batches:
            assert h.base_sequence == expected_sequence
            expected_sequence = h.base_sequence + h.records_count
        assert expected_sequence == sum(1 for rec in sent if rec["p"] == p)
        assert len(batches) > 5  # several batches, so that requests really were pipelined
    assert len(producer_ids) == 1 and next(iter(producer_ids))[0] > 0
    stored = _stored_as_sent(java_run.broker, r["topic"], 2)
    assert by_partition_offset(stored) == by_partition_offset(without_timestamps(sent))


def test_produce_partitioners(java_run) -> None:
    r = java_run.result("produce_partitioners")
    # the default partitioner puts a keyed record on murmur2(key) % partitions, as ringlog's client does
    for rec in r["keyed"]:
        assert rec["p"] == murmur2_partition(bytes.fromhex(rec["k"]), 6), rec
    assert {rec["p"] for rec in r["explicit"]} == {5}
    # round robin: each run of 6 consecutive records covers all 6 partitions
    robin = [rec["p"] for rec in r["robin"]]
    assert all(sorted(robin[i:i + 6]) == list(range(6)) for i in range(0, 60, 6)), robin
    # everything reported is where the broker stored it
    for topic, records in ((r["keyed_topic"], r["keyed"] + r["explicit"]), (r["robin_topic"], r["robin"] + r["unkeyed"])):
        assert by_partition_offset(_stored_as_sent(java_run.broker, topic, 6)) == \
            by_partition_offset(without_timestamps(records))


# --- consumer --------------------------------------------------------------------------------------


def test_consume_assign(java_run) -> None:
    r = java_run.result("consume_assign")
    sent = r["sent"]
    base = r["base_ts"]
    assert r["assignment"] == [f"{r['topic']}:0", f"{r['topic']}:1"]
    assert r["position_after_seek_to_beginning"] == {"0": 0, "1": 0}
    assert by_partition_offset(r["all"]) == by_partition_offset(sent)  # timestamps included
    assert r["position_after_reading"] == {"0": 50, "1": 50}
    # seek(p0, 10) with p1 paused: p0's records from offset 10 on, in order, nothing of p1
    assert r["after_seek_p0_10"] == [rec for rec in sent if rec["p"] == 0 and rec["o"] >= 10]
    assert r["position_after_seek_to_end"] == {"0": 50, "1": 50}
    assert r["beginning_offsets"] == {"0": 0, "1": 0}
    assert r["end_offsets"] == {"0": 50, "1": 50}
    target = base + 40_500
    for p in ("0", "1"):
        first = min((rec for rec in sent if rec["p"] == int(p) and rec["ts"] >= target), key=lambda rec: rec["o"])
        assert r["offsets_for_times"][p] == {"offset": first["o"], "timestamp": first["ts"]}
    assert r["offsets_for_future_time"] is None
    assert r["offsets_for_time_zero"] == 0


def test_consume_group_commit(java_run) -> None:
    r = java_run.result("consume_group_commit")
    topic = r["topic"]
    assert r["first_read"] == 90
    assert r["assignment"] == [f"{topic}:{p}" for p in range(3)]
    assert r["generation"] >= 1 and r["member_id"]
    positions = r["positions"]
    assert sum(positions.values()) == 90
    assert r["committed"] == {
        "0": {"offset": 5, "metadata": "five"},
        "1": {"offset": positions["1"], "metadata": ""},
        "2": {"offset": positions["2"], "metadata": ""},
    }
    # a new member of the group resumes at the committed offsets: partition 0 from 5, nothing else
    expected = [rec.as_sent(0) for rec in stored_records(java_run.broker, topic, 0) if rec.offset >= 5]
    assert without_timestamps(r["resumed"]) == expected


def _assignment(step: dict, name: str) -> list[str]:
    return next(m["assignment"] for m in step["members"] if m["name"] == name)


def _check_rebalance_steps(r: dict) -> None:
    topic, n = r["topic"], r["partitions"]
    everything = [f"{topic}:{p}" for p in range(n)]
    alone, both, left = r["steps"]
    assert alone["reached"] and both["reached"] and left["reached"], r["steps"]
    assert _assignment(alone, "a") == everything
    a, b = _assignment(both, "a"), _assignment(both, "b")
    assert sorted(a + b) == everything and len(a) == len(b) == n // 2
    generations = [m["generation"] for m in both["members"]]
    assert generations[0] == generations[1] > alone["members"][0]["generation"]
    assert _assignment(left, "a") == everything
    assert left["members"][0]["generation"] > generations[0]
    assert r["a"]["error"] is None and r["b"]["error"] is None


def test_group_range(java_run) -> None:
    r = java_run.result("group_range")
    _check_rebalance_steps(r)
    topic = r["topic"]
    both = r["steps"][1]
    # range: the member whose id sorts first gets the first half
    first = min(("a", "b"), key=lambda name: r[name]["member_id"])
    second = "b" if first == "a" else "a"
    assert _assignment(both, first) == [f"{topic}:0", f"{topic}:1"]
    assert _assignment(both, second) == [f"{topic}:2", f"{topic}:3"]
    # eager protocol: a gives up everything at each rebalance before getting its new share
    events = [(e["event"], e["partitions"]) for e in r["a"]["events"]]
    everything = [f"{topic}:{p}" for p in range(4)]
    assert events[:3] == [("assigned", everything), ("revoked", everything), ("assigned", _assignment(both, "a"))]
    assert not any(e == "lost" for e, _ in events)


def test_group_cooperative_sticky(java_run) -> None:
    r = java_run.result("group_cooperative_sticky")
    _check_rebalance_steps(r)
    topic = r["topic"]
    both = r["steps"][1]
    kept, moved = _assignment(both, "a"), _assignment(both, "b")
    events = [(e["event"], e["partitions"]) for e in r["a"]["events"]]
    assert events[0] == ("assigned", [f"{topic}:{p}" for p in range(4)])
    # incremental: a revokes only the partitions that move to b, never the ones it keeps
    revoked = [parts for e, parts in events if e == "revoked"]
    assert revoked == [moved]
    assert not set(kept) & {p for parts in revoked for p in parts}
    assert not any(e == "lost" for e, _ in events)
    b_assigned = [p for e in r["b"]["events"] if e["event"] == "assigned" for p in e["partitions"]]
    assert sorted(b_assigned) == moved


def test_group_static_membership(java_run) -> None:
    r = java_run.result("group_static_membership")
    topic = r["topic"]
    everything = [f"{topic}:{p}" for p in range(3)]
    assert r["first"]["reached"] and r["second"]["reached"]
    first = r["described_first"]
    assert first["state"] == "STABLE" and first["type"] == "CLASSIC"
    assert [(m["instance_id"], m["assignment"]) for m in first["members"]] == [("static-1", everything)]
    # closed without LeaveGroup: the static member stays until its session times out
    assert r["described_after_close"]["members"] == first["members"]
    # back under the same instance id: same assignment, no rebalance (same generation), new member id
    assert _assignment(r["second"], "second") == everything
    assert r["second"]["members"][0]["generation"] == r["first"]["members"][0]["generation"]
    assert r["second_events"] == [{"event": "assigned", "partitions": everything}]
    second = r["described_second"]["members"]
    assert [(m["instance_id"], m["assignment"]) for m in second] == [("static-1", everything)]
    assert second[0]["member_id"] != first["members"][0]["member_id"]
    # an explicit leave (CloseOptions LEAVE_GROUP) empties the group at once
    assert r["described_after_leave"]["members"] == [] and r["described_after_leave"]["state"] == "EMPTY"


# Three Java members under KIP-848 were seen once in CI not settling on the balanced assignment
# within 60 s (consumption itself went on); until that is understood the scenario runs with
# RINGLOG_SLOW=1 only. The two-member range scenario and librdkafka's test stay in every run.
@pytest.mark.skipif(not root_conftest.SLOW, reason="RINGLOG_SLOW=1 runs it (see the comment above)")
def test_group_consumer_protocol(java_run) -> None:
    """KIP-848: three members, one leaving, every record consumed exactly once, offsets resumed."""
    r = java_run.result("group_consumer_protocol")
    topic, parts = r["topic"], r["partitions"]
    assert all(step["reached"] for step in r["steps"]), r["steps"]
    members = {m["name"]: m for m in r["members"]}
    assert all(m["error"] is None for m in members.values()), [m["error"] for m in members.values()]
    produced = [(rec["p"], rec["o"]) for rec in r["produced"]]
    consumed = [tuple(x) for m in members.values() for x in m["consumed"]]
    # exactly once across the rebalances: nothing lost, nothing twice
    assert sorted(consumed) == sorted(produced[:120])
    # the newcomer resumed at the committed offsets: only the last 30 records
    assert sorted(tuple(x) for x in r["resumed"]["consumed"]) == sorted(produced[120:])
    three, two = r["described_three"], r["described_two"]
    assert three["type"] == "Consumer" and three["assignor"] == "uniform"
    assert three["state"] in ("Stable", "Reconciling") and len(three["members"]) == 3
    assert sorted(p for m in three["members"] for p in m["target"]) == sorted(f"{topic}:{p}" for p in range(parts))
    assert sorted(len(m["target"]) for m in three["members"]) == [2, 2, 2]  # uniform: balanced
    assert len(two["members"]) == 2 and two["group_epoch"] > three["group_epoch"]
    assert sorted(len(m["target"]) for m in two["members"]) == [3, 3]
    assert {m["member_id"] for m in two["members"]} == {members["a"]["member_id"], members["b"]["member_id"]}
    assert r["listed"] == [{"type": "Consumer", "protocol": "consumer", "state": "Stable"}]
    # the commits of the three members: every partition's end after the first 120 records (a
    # partition without records may be committed at 0)
    ends = collections.Counter(p for p, _ in produced[:120])
    committed = {int(k.rsplit("-", 1)[1]): v for k, v in r["committed"].items()}
    assert set(ends) <= set(committed) and committed == {p: ends[p] for p in committed}


def test_group_consumer_protocol_range(java_run) -> None:
    r = java_run.result("group_consumer_protocol_range")
    topic = r["topic"]
    assert r["reached"] and r["a"]["error"] is None and r["b"]["error"] is None
    d = r["described"]
    assert d["assignor"] == "range" and d["type"] == "Consumer"
    first, second = sorted((r["a"], r["b"]), key=lambda m: m["member_id"])
    assert first["assignment"] == [f"{topic}:0", f"{topic}:1"]
    assert second["assignment"] == [f"{topic}:2", f"{topic}:3"]


# --- admin -------------------------------------------------------------------------------------------


def test_admin_topics(java_run) -> None:
    r = java_run.result("admin_topics")
    a, b, dry = r["a"], r["b"], r["dry"]
    created = r["created"]
    assert created["a_partitions"] == 3 and created["a_replication"] == 1
    assert created["a_configs"]["retention.ms"]["value"] == "3600000"
    assert created["a_configs"]["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert created["a_configs"]["cleanup.policy"]["value"] == "compact"
    assert created["a_configs"]["segment.bytes"]["source"] == "DEFAULT_CONFIG"
    # no partition count or replication factor: the broker's defaults
    assert created["b_partitions"] == java_run.broker.config.num_partitions
    assert r["create_existing"] == "TopicExistsException"
    assert r["create_bad_replication"] == "InvalidReplicationFactorException"
    assert r["validate_only"] is None and dry not in r["listed"] and dry not in r["listed_internal"]
    assert {a, b} <= set(r["listed"])
    assert not any(t.startswith("__") for t in r["listed"]) and set(r["listed"]) <= set(r["listed_internal"])
    described = r["described"]["a"]
    assert described["topic_id"] == created["a_topic_id"] and not described["internal"]
    assert described["partitions"] == [{"partition": p, "leader": 0, "replicas": [0], "isr": [0]} for p in range(3)]
    assert described["authorized_operations"] is None  # not asked for
    assert r["described_with_operations"]["authorized_operations"] == TOPIC_OPERATIONS
    assert r["describe_unknown"] == "UnknownTopicOrPartitionException"
    assert r["create_partitions_fewer"] == "InvalidPartitionsException"
    assert [p["partition"] for p in r["described_after_create_partitions"]["partitions"]] == list(range(5))
    assert r["delete_unknown"] == "UnknownTopicOrPartitionException"
    assert b not in r["listed_after_delete"] and a in r["listed_after_delete"]
    assert java_run.broker.broker.metadata.get(b) is None
    assert java_run.broker.broker.metadata.get(a).partitions == 5


def test_admin_configs(java_run) -> None:
    r = java_run.result("admin_configs")
    initial = r["initial"]["retention.ms"]
    assert (initial["value"], initial["source"], initial["type"]) == ("7200000", "DYNAMIC_TOPIC_CONFIG", "LONG")
    assert [s["source"] for s in initial["synonyms"]][0] == "DYNAMIC_TOPIC_CONFIG"
    assert initial["synonyms"][-1]["name"] == "log.retention.ms"
    assert initial["has_documentation"]
    broker = r["broker"]
    assert broker and all(entry["read_only"] for entry in broker.values())
    after_set = r["after_set"]
    assert after_set["retention.ms"]["value"] == "60000"
    assert (after_set["max.message.bytes"]["value"], after_set["max.message.bytes"]["source"]) == \
        ("500000", "DYNAMIC_TOPIC_CONFIG")
    assert after_set["cleanup.policy"]["value"] == "delete,compact"
    after_delete = r["after_delete"]
    assert after_delete["retention.ms"]["source"] != "DYNAMIC_TOPIC_CONFIG"
    assert after_delete["retention.ms"]["value"] == str(7 * 24 * 3600 * 1000)
    assert after_delete["cleanup.policy"]["value"] == "compact"
    assert r["set_invalid"] == "InvalidConfigurationException"
    # broker configs are static in ringlog (docs/compatibility.md)
    assert r["set_broker"] == "InvalidRequestException"
    assert r["after_validate_only"]["retention.ms"] == after_delete["retention.ms"]
    # and the broker applies what it answers
    log = java_run.broker.broker.partition_log(r["topic"], 0)
    assert log.config.max_message_bytes == 500000


def test_admin_offsets_delete_records(java_run) -> None:
    r = java_run.result("admin_offsets_delete_records")
    base = r["base_ts"]
    assert r["earliest"] == {"0": {"offset": 0, "timestamp": -1}, "1": {"offset": 0, "timestamp": -1}}
    assert r["latest"] == {"0": {"offset": 50, "timestamp": -1}, "1": {"offset": 1, "timestamp": -1}}
    assert r["max_timestamp"] == {"0": {"offset": 30, "timestamp": base + 1_000_000},
                                  "1": {"offset": 0, "timestamp": base}}
    assert r["for_timestamp"] == {"0": {"offset": 11, "timestamp": base + 11_000},
                                  "1": {"offset": -1, "timestamp": -1}}
    assert r["delete_records_low_watermark"] == {"0": 20}
    assert r["delete_records_beyond_end"] == "OffsetOutOfRangeException"
    assert r["earliest_after_delete"]["0"]["offset"] == 20
    assert r["consumer_position_after_delete"] == 20 and r["consumer_first_offset_after_delete"] == 20
    assert java_run.broker.broker.partition_log(r["topic"], 0).log_start_offset == 20


def test_admin_client_quotas(java_run) -> None:
    r = java_run.result("admin_client_quotas")
    alice = {"entity": {"user": "alice"}, "values": {"consumer_byte_rate": 2097152.0, "producer_byte_rate": 1048576.0}}
    default_client = {"entity": {"client-id": None}, "values": {"consumer_byte_rate": 4096.0}}
    assert sorted(r["all"], key=repr) == sorted([alice, default_client], key=repr)  # carol was validate_only
    assert r["alice_strict"] == [alice]
    assert r["default_client"] == [default_client]
    assert r["unknown_key"] == "InvalidRequestException: Invalid configuration key bytes_per_second"
    assert r["after_removal"] == []


def test_admin_cluster(java_run) -> None:
    r = java_run.result("admin_cluster")
    broker = java_run.broker
    assert r["cluster_id"] == broker.config.cluster_id
    assert r["controller"] == broker.config.node_id
    assert r["nodes"] == [{"id": broker.config.node_id, "host": broker.host, "port": broker.port, "rack": None}]
    assert r["authorized_operations_not_asked"]
    # no authorizer: Kafka reports every cluster operation as allowed, and so does ringlog
    assert r["authorized_operations"] == CLUSTER_OPERATIONS


def test_admin_groups(java_run) -> None:
    r = java_run.result("admin_groups")
    topic, group = r["topic"], r["group"]
    active = r["described_active"]
    assert (active["state"], active["type"], active["assignor"], active["coordinator"]) == ("STABLE", "CLASSIC", "range", 0)
    assert [m["assignment"] for m in active["members"]] == [[f"{topic}:0", f"{topic}:1"]]
    assert r["group_authorized_operations"] == GROUP_OPERATIONS
    assert r["delete_active"] == "GroupNotEmptyException"
    # offsets of a group with members can only be changed by its members (generation check)
    assert r["alter_offsets_active"] == "UnknownMemberIdException"
    assert (r["described_empty"]["state"], r["described_empty"]["members"]) == ("EMPTY", [])
    assert r["list_groups"] == [{"group": group, "type": "CLASSIC", "protocol": "consumer", "state": "EMPTY"}]
    assert r["list_consumer_groups"] == [{"group": group, "simple": False, "state": "EMPTY"}]
    assert r["offsets"] == {"0": {"offset": 3, "metadata": "m0"}, "1": {"offset": 4, "metadata": ""}}
    assert r["offsets_after_alter"] == {"0": {"offset": 7, "metadata": "seven"}, "1": {"offset": 0, "metadata": ""}}
    assert r["offsets_after_delete"] == {"0": {"offset": 7, "metadata": "seven"}}
    assert r["describe_after_delete"] == "GroupIdNotFoundException"
    assert r["listed_after_delete"] is False
    assert r["delete_unknown"] == "GroupIdNotFoundException"


def test_admin_log_dirs_producers(java_run) -> None:
    r = java_run.result("admin_log_dirs_producers")
    broker = java_run.broker
    (log_dir,) = r["log_dirs"]
    assert log_dir["path"] == os.path.abspath(broker.config.data_dir) and log_dir["error"] is None
    assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
    sizes = {p: broker.broker.partition_log(r["topic"], int(p)).size_bytes for p in ("0", "1")}
    assert log_dir["replicas"] == {p: {"size": sizes[p], "offset_lag": 0, "future": False} for p in ("0", "1")}
    assert sizes["0"] > 0 and sizes["1"] == 0
    # the idempotent producer that wrote partition 0, as its stored batches say
    batches = stored_batches(broker, r["topic"], 0)
    assert r["producers"]["1"] == []
    assert r["producers"]["0"] == [{
        "producer_id": batches[0].producer_id, "epoch": 0, "last_sequence": 24,
        "last_timestamp": batches[-1].max_timestamp, "coordinator_epoch": -1, "txn_start_offset": -1}]


# --- Kafka Streams -------------------------------------------------------------------------------------


def test_streams_word_count(java_run) -> None:
    r = java_run.result("streams_word_count")
    assert "uncaught" not in r, r.get("uncaught")
    assert r["reached_running"] and "RUNNING" in r["states"]
    expected = collections.Counter(w for line in r["lines"] for w in re.split(r"\W+", line.lower()) if w)
    assert len(expected) > 1
    assert r["output"]["counts"] == dict(expected)
    # the state store's changelog holds the same counts (no cache: one record per update)
    assert r["changelog"]["counts"] == dict(expected)
    assert r["output"]["records"] >= sum(expected.values())
    assert r["internal_topics"] == sorted([r["changelog_topic"], r["repartition_topic"]])
    assert r["changelog_configs"]["cleanup.policy"]["value"] == "compact"
    assert r["repartition_configs"]["cleanup.policy"]["value"] == "delete"
    assert r["repartition_configs"]["retention.ms"]["value"] == "-1"
    # Streams deletes consumed repartition records (DeleteRecords) after committing
    assert r["repartition_purged"] and r["repartition_earliest"] > 0
    # at_least_once commits: the input's committed offsets reach the end of each input partition
    ends = {f"{r['input']}:{p}": len(stored_records(java_run.broker, r["input"], p)) for p in range(2)}
    assert {tp: offset for tp, offset in r["group_offsets"].items() if tp in ends} == ends


def test_streams_word_count_exactly_once(java_run) -> None:
    """exactly_once_v2: Streams' transactional producers and read_committed consumers against
    ringlog's transaction coordinator. Read read_committed, each word's count updates are exactly
    1, 2, ..., n, in the output and in the changelog: no update lost, none twice."""
    r = java_run.result("streams_word_count_exactly_once")
    assert "uncaught" not in r, r.get("uncaught")
    assert r["reached_running"] and "RUNNING" in r["states"]
    expected = collections.Counter(w for line in r["lines"] for w in re.split(r"\W+", line.lower()) if w)
    for where in ("output", "changelog"):
        assert r[where]["counts"] == dict(expected), where
        assert r[where]["updates"] == {w: list(range(1, n + 1)) for w, n in expected.items()}, where
        assert r[where]["records"] == sum(expected.values()), where
    # the topics Streams wrote in transactions hold markers (control batches) besides the records
    markers = [b for p in range(2) for b in _batch_headers(java_run.broker, r["output_topic"], p) if b.is_control]
    assert markers, "no transaction markers in the output topic"
    # the input offsets were committed in the transactions, up to the end of each input partition
    ends = {f"{r['input']}:{p}": len(stored_records(java_run.broker, r["input"], p)) for p in range(2)}
    assert {tp: offset for tp, offset in r["group_offsets"].items() if tp in ends} == ends


def _batch_headers(broker, topic: str, partition: int) -> list:
    """The batch headers of one partition, read on the broker's thread (see stored_records)."""
    from ringlog.storage.batch import split_batches

    async def read() -> bytes:
        log = broker.broker.partition_log(topic, partition)
        return log.read_records_bytes(log.log_start_offset, 1 << 30)

    return [h for h, _raw in split_batches(broker.call(read))]
