"""Go clients against a live ringlog broker: IBM/sarama and twmb/franz-go (with kadm).

tests/compat/go is one Go program holding the scenarios of both clients; it is built once per
session and run once for every selected scenario against one broker, reporting JSON lines
(tests/compat/harness.py). Each test checks one scenario's report and compares records byte for
byte with what the broker stored.

Needs go (the version go.mod names; GOTOOLCHAIN=local, so no toolchain is downloaded): skipped
without it, failed in CI (RINGLOG_REQUIRE_TOOLS=1), where .ci/run installs it and downloads the
modules before the tests run.
"""
from __future__ import annotations

import os

import pytest

from ringlog.broker.handlers import load_handlers
from ringlog.broker.testing import BrokerThread
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

GO_DIR = os.path.join(HERE, "go")

SCENARIOS = [
    "sarama_produce_consume",
    "sarama_acks",
    "sarama_group",
    "sarama_admin",
    "franz_produce_consume",
    "franz_acks",
    "franz_group",
    "franz_admin",
]

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.fixture(scope="session")
def go_command(tmp_path_factory) -> list[str]:
    tools = require_tools("go")
    binary = str(tmp_path_factory.mktemp("go") / "compat-harness")
    # never fetch a newer toolchain; in CI never the network at all (.ci/run downloaded the modules)
    env = {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    if root_conftest.REQUIRE_TOOLS:
        env["GOPROXY"] = "off"
    build([tools["go"], "build", "-o", binary, "."], GO_DIR, "Go", timeout=600, env=env)
    return [binary]


@pytest.fixture(scope="module")
def go_run(request, go_command, tmp_path_factory):
    scenarios = wanted_scenarios(request, SCENARIOS)
    data_dir = tmp_path_factory.mktemp("go-broker")
    blocking_before = len(root_conftest._blocking_calls)
    with BrokerThread(compat_broker_config(str(data_dir / "data"))) as broker:
        run = run_harness("Go", go_command, broker, scenarios, timeout=300)
        blocking = root_conftest._blocking_calls[blocking_before:]
        if blocking:
            pytest.fail(f"{len(blocking)} blocking call(s) on the broker's Trio thread during the Go run; the "
                        f"first:\n{blocking[0]}")
        yield run


def _stored_as_sent(broker, topic: str, partitions: int) -> list[dict]:
    return [rec.as_sent(p) for p in range(partitions) for rec in stored_records(broker, topic, p)]


def _check_codecs(run, r: dict) -> None:
    assert sorted(r) == sorted(CODECS)
    for codec, code in CODECS.items():
        topic = r[codec]["topic"]
        sent = by_partition_offset(without_timestamps(r[codec]["sent"]))
        assert len(sent) == 150
        assert [rec["p"] for rec in r[codec]["sent"]] == [i % 3 for i in range(150)]
        assert by_partition_offset(_stored_as_sent(run.broker, topic, 3)) == sent, codec
        assert by_partition_offset(without_timestamps(r[codec]["read"])) == sent, codec
        batches = [h for p in range(3) for h in stored_batches(run.broker, topic, p)]
        assert {h.compression for h in batches} == {code}, codec
        assert max(h.records_count for h in batches) > 1, codec
        # idempotent: one producer id, sequences from 0 without gaps per partition
        assert len({h.producer_id for h in batches}) == 1 and batches[0].producer_id > 0, codec
        for p in range(3):
            sequence = 0
            for h in stored_batches(run.broker, topic, p):
                assert h.base_sequence == sequence, (codec, p)
                sequence += h.records_count


def _check_acks(run, r: dict) -> None:
    stored = stored_records(run.broker, r["topic"], 0)
    assert [s.offset for s in stored] == list(range(80))
    sent = r["acks_0"] + r["acks_1"]
    assert [s.as_sent(0) for s in stored] == without_timestamps([dict(rec, o=i) for i, rec in enumerate(sent)])
    assert [rec["o"] for rec in r["acks_1"]] == list(range(40, 80))
    assert {s.producer_id for s in stored} == {-1}  # not idempotent


# --- sarama ----------------------------------------------------------------------------------------


def test_sarama_produce_consume(go_run) -> None:
    _check_codecs(go_run, go_run.result("sarama_produce_consume"))


def test_sarama_acks(go_run) -> None:
    _check_acks(go_run, go_run.result("sarama_acks"))


def test_sarama_group(go_run) -> None:
    r = go_run.result("sarama_group")
    assert r["a_alone_reached"] and r["both_reached"] and r["a_again_reached"]
    assert r["a_alone"]["partitions"] == [0, 1, 2, 3]
    a, b = r["both"]
    assert a["generation"] == b["generation"] > r["a_alone"]["generation"]
    # range: the member whose id sorts first gets the first half
    first, second = sorted((a, b), key=lambda m: m["member_id"])
    assert (first["partitions"], second["partitions"]) == ([0, 1], [2, 3])
    assert r["a_again"]["partitions"] == [0, 1, 2, 3] and r["a_again"]["generation"] > a["generation"]
    assert a["error"] is None and b["error"] is None and r["a_again"]["error"] is None
    # every record consumed and its offset committed by whichever member owned the partition
    ends = {str(p): len(stored_records(go_run.broker, r["topic"], p)) for p in range(4)}
    assert r["committed"] == ends and sum(ends.values()) == 40


def test_sarama_admin(go_run) -> None:
    r = go_run.result("sarama_admin")
    a = r["a"]
    assert r["create_existing"].startswith("kafka server: Topic with this name already exists")
    assert r["listed"] == {"a_partitions": 2, "a_replication": 1, "a_retention": "3600000", "has_b": True}
    assert r["described"] == {"error": None, "partitions": [
        {"partition": p, "leader": 0, "replicas": [0], "isr": [0]} for p in range(2)]}
    assert r["partitions_after"] == 4 and "Topic currently has 4 partitions" in r["create_partitions_fewer"]
    initial = r["configs_initial"]
    assert initial["retention.ms"] == {"value": "3600000", "source": "Topic", "default": False}
    assert initial["segment.bytes"]["source"] == "Default"
    # AlterConfigs replaces the overrides: retention.ms falls back to its default
    after_alter = r["configs_after_alter"]
    assert after_alter["segment.bytes"] == {"value": "1048576", "source": "Topic", "default": False}
    assert after_alter["retention.ms"]["source"] == "Default"
    after_incremental = r["configs_after_incremental"]
    assert after_incremental["max.message.bytes"] == {"value": "200000", "source": "Topic", "default": False}
    assert after_incremental["segment.bytes"]["source"] == "Default"
    assert "segment.bytes" in r["alter_invalid"] and "invalid" in r["alter_invalid"].lower()
    assert r["broker_configs"]["error"] is None and r["broker_configs"]["count"] > 10
    assert go_run.broker.broker.partition_log(a, 0).config.max_message_bytes == 200000
    assert "outside the range of offsets" in r["delete_records_beyond_end"]
    assert r["list_offsets"] == {"0_oldest": 10, "1_newest": 0}
    assert r["newest_0"] == 30
    assert go_run.broker.broker.partition_log(a, 0).log_start_offset == 10
    # a group that only has offsets committed by an admin client has no protocol type (as in Kafka)
    assert r["group_listed"] == ""
    assert r["group_described"] == {"state": "Empty", "protocol_type": "", "members": 0, "error": None}
    assert r["group_offsets"] == {"0": {"offset": 15, "metadata": "m"}, "1": {"offset": 0, "metadata": ""}}
    assert r["group_offsets_after_delete"] == {"0": {"offset": 15, "metadata": "m"}}
    assert r["group_listed_after_delete"] is False
    broker = go_run.broker
    assert r["cluster"] == {"controller": 0, "brokers": [{"id": 0, "addr": f"{broker.host}:{broker.port}"}]}
    assert r["b_listed_after_delete"] is False
    assert "topic or partition that does not exist" in r["delete_unknown"]
    size = broker.broker.partition_log(a, 0).size_bytes
    assert r["log_dirs"] == [{"path": os.path.abspath(broker.config.data_dir), "error": None, "a0_size": size}]
    assert size > 0


# --- franz-go ----------------------------------------------------------------------------------------


def test_franz_produce_consume(go_run) -> None:
    _check_codecs(go_run, go_run.result("franz_produce_consume"))


def test_franz_acks(go_run) -> None:
    r = go_run.result("franz_acks")
    stored = stored_records(go_run.broker, r["topic"], 0)
    assert [s.offset for s in stored] == list(range(80))
    # with acks=0 there is no answer; franz-go numbers the records itself, so compare the content only
    sent = r["acks_0"] + r["acks_1"]
    assert [s.as_sent(0) for s in stored] == without_timestamps([dict(rec, o=i) for i, rec in enumerate(sent)])
    assert [rec["o"] for rec in r["acks_1"]] == list(range(40, 80))
    assert {s.producer_id for s in stored} == {-1}


def test_franz_group(go_run) -> None:
    r = go_run.result("franz_group")
    assert r["a_alone_reached"] and r["both_reached"] and r["a_again_reached"]
    assert r["a_alone"]["partitions"] == [0, 1, 2, 3]
    a, b = r["both"]
    assert sorted(a["partitions"] + b["partitions"]) == [0, 1, 2, 3] and len(a["partitions"]) == 2
    # cooperative-sticky: a only ever revokes the partitions that move to b
    revoked = [p for e in a["events"] if e["event"] == "revoked" for p in e["partitions"]]
    assert sorted(revoked) == b["partitions"]
    assert not any(e["event"] == "lost" for e in a["events"] + b["events"])
    described = r["described"]
    assert (described["state"], described["protocol"], described["protocol_type"], described["error"]) == \
        ("Stable", "cooperative-sticky", "consumer", None)
    # the static member shows its group.instance.id
    assert sorted(m["instance_id"] for m in described["members"]) == ["", "static-b"]
    assert r["a_again"]["partitions"] == [0, 1, 2, 3] and r["a_again"]["error"] is None
    ends = {str(p): len(stored_records(go_run.broker, r["topic"], p)) for p in range(4)}
    assert r["committed"] == ends and sum(ends.values()) == 40


def test_franz_admin(go_run) -> None:
    r = go_run.result("franz_admin")
    a, b = r["a"], r["b"]
    assert r["created"][a]["partitions"] == 2 and r["created"][a]["replication"] == 1
    assert r["created"][a]["error"] is None and r["created"][b]["error"] is None
    assert r["created"][a]["id"] == r["listed"]["id"]
    assert r["create_existing"].startswith("TOPIC_ALREADY_EXISTS")
    assert r["listed"]["partitions"] == [{"partition": p, "leader": 0, "replicas": [0], "isr": [0]} for p in range(2)]
    assert r["partitions_after"] == 3 and r["update_partitions_fewer"].startswith("INVALID_PARTITIONS")
    assert r["configs_initial"]["retention.ms"] == {"value": "3600000", "source": "DYNAMIC_TOPIC_CONFIG"}
    after_incremental = r["configs_after_incremental"]
    assert after_incremental["segment.bytes"] == {"value": "1048576", "source": "DYNAMIC_TOPIC_CONFIG"}
    assert after_incremental["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    # AlterConfigs replaces the whole set of overrides
    after_state = r["configs_after_state"]
    assert after_state["max.message.bytes"] == {"value": "300000", "source": "DYNAMIC_TOPIC_CONFIG"}
    assert after_state["retention.ms"]["source"] == "DEFAULT_CONFIG"
    assert after_state["segment.bytes"]["source"] == "DEFAULT_CONFIG"
    assert isinstance(r["broker_config_count"], int) and r["broker_config_count"] > 10
    assert r["offsets_before_delete"] == {"start_0": 0, "end_0": 30, "end_1": 0}
    assert r["delete_records"] == {"low_watermark": 12, "error": None}
    assert r["start_after_delete"] == 12 == go_run.broker.broker.partition_log(a, 0).log_start_offset
    # no record at or after a time in the future: the end offset, as Kafka answers -1 and kadm maps it
    assert r["offset_after_future_milli"] == 30
    assert r["commit_error"] is None
    assert r["group_offsets"] == {"0": {"offset": 20, "metadata": "m"}, "1": {"offset": 0, "metadata": ""}}
    assert r["group_listed"]["state"] == "Empty"
    assert r["group_offsets_after_delete"] == {"0": {"offset": 20, "metadata": "m"}}
    assert r["delete_group_error"] is None and r["group_listed_after_delete"] is False
    broker = go_run.broker
    assert r["cluster"] == {"id": broker.config.cluster_id, "controller": 0,
                            "brokers": [{"id": 0, "host": broker.host, "port": broker.port}]}
    # the version windows kadm read are those ringlog's registry advertises
    advertised = {str(key): [spec.advertise_min_version, spec.max_version] for key, spec in load_handlers().items()}
    assert r["api_versions"] == advertised
    assert r["delete_topic_error"] is None and r["b_listed_after_delete"] is False
    (log_dir,) = r["log_dirs"]
    assert (log_dir["broker"], log_dir["dir"], log_dir["error"]) == (0, os.path.abspath(broker.config.data_dir), None)
    assert log_dir["a0_size"] == broker.broker.partition_log(a, 0).size_bytes > 0
    assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
    # partition 0 was written by franz-go's idempotent producer: 30 records, sequences 0..29
    batches = stored_batches(broker, a, 0)
    assert r["producers"] == {
        "0": {"error": None, "producers": [{"producer_id": batches[0].producer_id, "epoch": 0, "last_sequence": 29,
                                             "coordinator_epoch": -1, "txn_start_offset": -1}]},
        "1": {"error": None, "producers": []},
    }
