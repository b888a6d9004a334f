"""Differential tests: the same raw request sequences against ringlog and Apache Kafka 4.x (a real
single-node KRaft server started once per session from Maven's jars, tests/compat/conftest.py),
answers compared field by field (tests/compat/differential.py says what is never compared).

Each case below is one request sequence; CASES is the table of (case, accepted differences). An
accepted difference is listed in docs/compatibility.md, "Differences from Apache Kafka", with why.
Needs java and mvn: skipped without them, failed in CI (RINGLOG_REQUIRE_TOOLS=1).
"""
from __future__ import annotations

import struct

import pytest

from ringlog.client.wire import decode_response, request_class
from ringlog.storage.records import build_batch

from . import diff_groups as groups
from . import diff_requests as rq
from .differential import MESSAGE_MAX_BYTES, Known, Side, compare, configs_by_name, req, sort_by

# --- the cases -----------------------------------------------------------------------------------
# Each takes a Side and a name unique to the case (its topics and groups are named after it).


def api_versions_at(version: int):
    def case(s: Side, name: str) -> None:
        Req = request_class(18, version)
        r = s.quiet(Req(client_software_name="diff", client_software_version="1") if version >= 3 else Req())
        s.record("error_code", int(r.error_code))
        s.record("serves ApiVersions", any(k.api_key == 18 for k in r.api_keys))
    return case


def api_versions_unknown(s: Side, name: str) -> None:
    # A version newer than the broker knows: answered at v0 with UNSUPPORTED_VERSION and the
    # broker's ApiVersions range (KIP-511), so the client can retry at a version both know.
    # (header v2 as a client newer than the broker sends it: tagged fields after the client id, and
    # an ApiVersions v3 body: compact client software name and version, no tags)
    frame = struct.pack(">hhih", 18, 127, 7, 4) + b"diff" + b"\x00" + b"\x05diff" + b"\x021" + b"\x00"
    s.conn.send_bytes(struct.pack(">i", len(frame)) + frame)
    try:
        corr, r = decode_response(s.conn.read_frame(), 18, 0)
    except ConnectionError:
        s.record("closed", True)
        return
    keys = {k.api_key: (k.min_version, k.max_version) for k in r.api_keys}
    s.record("correlation", corr)
    s.record("error_code", int(r.error_code))
    s.record("ApiVersions v0-3 served", keys[18][0] == 0 and keys[18][1] >= 3)


def unknown_version_of(api_key: int, version: int):
    def case(s: Side, name: str) -> None:
        # a header naming a version the broker does not serve, with no body: Kafka closes the connection
        frame = struct.pack(">hhih", api_key, version, 9, 4) + b"diff"
        s.conn.send_bytes(struct.pack(">i", len(frame)) + frame)
        s.record("closed", s.conn.is_closed())
    return case


def metadata_unknown(version: int):
    def case(s: Side, name: str) -> None:
        s.call(rq.metadata([name], version=version, auto_create=False))
    return case


def metadata_invalid_name(version: int):
    def case(s: Side, name: str) -> None:
        s.call(rq.metadata(["bad name!"], version=version, auto_create=True))
    return case


def metadata_empty_list(version: int):
    def case(s: Side, name: str) -> None:
        s.call(rq.metadata([], version=version))
    return case


def metadata_existing(version: int):
    def case(s: Side, name: str) -> None:
        rq.topic(s, name, 3)
        s.call(rq.metadata([name], version=version))
    return case


def metadata_auto_create(s: Side, name: str) -> None:
    # the first answer may still say LEADER_NOT_AVAILABLE while the topic is created; once it is
    # there, the answers must agree
    s.quiet(rq.metadata([name], auto_create=True))
    rq.ready(s, name, 1)
    s.call(rq.metadata([name], auto_create=True))


def metadata_internal(s: Side, name: str) -> None:
    rq.find_coordinator(s, name)
    rq.ready(s, "__consumer_offsets", 1)
    s.call(rq.metadata(["__consumer_offsets"]))



def produce_errors(version: int):
    def case(s: Side, name: str) -> None:
        rq.topic(s, name, 2)
        good = rq.batch([b"a", b"b"])
        bad_crc = bytearray(good)
        bad_crc[-1] ^= 0xFF
        big = rq.batch([b"x" * (MESSAGE_MAX_BYTES + 100)])
        s.call(rq.produce(name, 0, good, version=version), "good")
        s.call(rq.produce(name, 0, good, version=version), "good again")
        s.call(rq.produce(name, 7, good, version=version), "unknown partition")
        s.call(rq.produce(name + "-nope", 0, good, version=version), "unknown topic")
        s.call(rq.produce(name, 1, bytes(bad_crc), version=version), "bad crc")
        s.call(rq.produce(name, 1, big, version=version), "too large")
        s.call(rq.produce(name, 1, good, acks=2, version=version), "acks 2")
        s.call(rq.fetch(name, [(0, 0), (1, 0)]), "what was stored")
    return case


def produce_record_errors(version: int):
    """KIP-467: the records a batch is refused for, by index, with Kafka's messages."""
    def case(s: Side, name: str) -> None:
        rq.topic(s, name, 1, {"cleanup.policy": "compact", "message.timestamp.before.max.ms": "7200000"})
        hours = 3_600_000
        s.call(rq.produce(name, 0, rq.batch([b"a", b"b"], key=None), version=version), "keyless")
        s.call(rq.produce(name, 0, rq.batch([b"a", b"b", b"c"], ts=-3 * hours), version=version), "too old")
        keyless_and_old = build_batch([(b"k", b"a", (), rq.T0), (None, b"b", (), rq.T0),
                                       (b"k", b"c", (), rq.T0 - 3 * hours)])
        s.call(rq.produce(name, 0, keyless_and_old, version=version), "keyless and too old")
        s.call(rq.produce(name, 0, rq.batch([b"ok"]), version=version), "good")
        s.call(rq.fetch(name, [(0, 0)]), "what was stored")
    return case


def produce_idempotent(s: Side, name: str) -> None:
    rq.topic(s, name, 1)
    init = rq.init_producer_id(s)
    pid, epoch = init.producer_id, init.producer_epoch

    def send(label: str, seq: int, values, ep: int = epoch, p: int = pid) -> None:
        s.call(rq.produce(name, 0, rq.batch(values, producer_id=p, producer_epoch=ep, base_sequence=seq)), label)

    send("seq 0", 0, [b"a", b"b"])
    send("seq 2", 2, [b"c"])
    send("duplicate of seq 2", 2, [b"c"])
    send("duplicate of seq 0", 0, [b"a", b"b"])
    send("gap: seq 5", 5, [b"d"])
    send("out of order: seq 1", 1, [b"e"])
    send("next: seq 3", 3, [b"f"])
    send("stale epoch", 4, [b"g"], ep=epoch - 1 if epoch > 0 else 0)
    send("new epoch, seq 0", 0, [b"h"], ep=epoch + 1)
    send("old epoch after bump", 4, [b"i"])
    send("unknown producer id", 0, [b"j"], p=pid + 12345, ep=0)
    s.call(rq.fetch(name, [(0, 0)]), "what was stored")


def fetch_edges(version: int):
    def case(s: Side, name: str) -> None:
        rq.topic(s, name, 2)
        big = rq.batch([b"y" * 3000])
        for _ in range(3):
            s.quiet(rq.produce(name, 0, big))
            s.quiet(rq.produce(name, 1, big))
        s.call(rq.fetch(name, [(0, 0), (1, 0)], version=version), "all")
        s.call(rq.fetch(name, [(0, -1)], version=version), "negative offset")
        s.call(rq.fetch(name, [(0, 3)], version=version), "at the end")
        s.call(rq.fetch(name, [(0, 4)], version=version), "past the end")
        s.call(rq.fetch(name, [(0, 1000)], version=version), "far past the end")
        s.call(rq.fetch(name, [(9, 0)], version=version), "unknown partition")
        s.call(rq.fetch(name + "-nope", [(0, 0)], version=version), "unknown topic")
        s.call(rq.fetch(name, [(0, 0), (1, 0)], version=version, max_bytes=100, partition_max_bytes=100),
               "max_bytes below one batch")
        s.call(rq.fetch(name, [(0, 0), (1, 0)], version=version, max_bytes=7000), "max_bytes two batches")
        s.call(rq.fetch(name, [(0, 0), (1, 0)], version=version, partition_max_bytes=4000), "partition_max_bytes")
        s.call(rq.fetch(name, [(0, 1), (1, 2)], version=version), "mid-log offsets")
    return case


def fetch_empty_topic(version: int):
    def case(s: Side, name: str) -> None:
        rq.topic(s, name, 1)
        s.call(rq.fetch(name, [(0, 0)], version=version), "empty")
        s.call(rq.fetch(name, [(0, 0)], version=version, max_wait_ms=100, min_bytes=1), "empty, waited")
        s.call(rq.fetch(name, [(0, 1)], version=version), "past the end of empty")
    return case


def fetch_deleted_topic(s: Side, name: str) -> None:
    rq.topic(s, name, 1)
    s.quiet(rq.produce(name, 0, rq.batch([b"gone"])))
    s.call(rq.delete_topics([name]), "delete")
    rq.gone(s, name)
    s.call(rq.fetch(name, [(0, 0)]), "fetch deleted")
    s.call(rq.list_offsets(name, [(0, -1)]), "list offsets deleted")
    s.call(rq.produce(name, 0, rq.batch([b"x"])), "produce deleted")


def fetch_read_committed(s: Side, name: str) -> None:
    rq.topic(s, name, 1)
    s.quiet(rq.produce(name, 0, rq.batch([b"a", b"b"])))
    s.call(rq.fetch(name, [(0, 0)], isolation_level=1), "read_committed")
    s.call(rq.list_offsets(name, [(0, -1)], isolation_level=1), "latest read_committed")


def list_offsets_edges(version: int):
    def case(s: Side, name: str) -> None:
        rq.topic(s, name, 2)
        for i in range(5):
            s.quiet(rq.produce(name, 0, rq.batch([b"r%d" % i], ts=1000 + i * 10)))
        queries = [-2, -1] + [rq.T0 + t for t in (1015, 1000, 999, 1040, 1041, 99999)] + ([-3] if version >= 7 else [])
        # Kafka answers a topic's partitions in an order of its own: compared by partition
        by_index = sort_by("partition_index", ("topics", 0, "partitions"))
        for ts in queries:
            s.call(rq.list_offsets(name, [(0, ts), (1, ts)], version=version), f"timestamp {ts - rq.T0 if ts > 0 else ts}",
                   shape=by_index)
        s.call(rq.list_offsets(name, [(7, -1), (0, -1)], version=version), "unknown partition", shape=by_index)
        s.call(rq.list_offsets(name, [(0, -1), (1, -2), (0, -2)], version=version), "a partition twice",
               shape=by_index)
        s.call(rq.list_offsets(name + "-nope", [(0, -1)], version=version), "unknown topic")
    return case


def create_topics_edges(version: int):
    def case(s: Side, name: str) -> None:
        s.call(rq.create_topics([
            (name + "-ok", 2, 1, {"retention.ms": "3600000"}),
            (name + "-zero", 0, 1, {}),
            (name + "-neg", -5, 1, {}),
            (name + "-rf2", 1, 2, {}),
            (name + "-rf0", 1, 0, {}),
            (name + "-badkey", 1, 1, {"no.such.config": "1"}),
            (name + "-badval", 1, 1, {"retention.ms": "soon"}),
            (name + "-badpolicy", 1, 1, {"cleanup.policy": "shred"}),
            ("bad name!", 1, 1, {}),
            ("__consumer_offsets", 1, 1, {}),
        ], version=version), "create", shape=configs_by_name)
        s.call(rq.create_topics([(name + "-ok", 2, 1, {})], version=version), "again", shape=configs_by_name)
        s.call(rq.create_topics([(name + "-v", 3, 1, {})], version=version, validate_only=True), "validate only",
               shape=configs_by_name)
        s.call(rq.metadata([name + "-v"]), "not created")
        if version >= 4:
            s.call(rq.create_topics([(name + "-dflt", -1, -1, {})], version=version), "defaults",
                   shape=configs_by_name)
    return case


def delete_topics_edges(version: int):
    def case(s: Side, name: str) -> None:
        rq.topic(s, name, 1)
        s.call(rq.delete_topics([name + "-nope", name], version=version), "delete",
               shape=sort_by("name", ("responses",)))
        rq.gone(s, name)
        s.call(rq.delete_topics([name], version=version), "again")
    return case


def create_partitions_edges(s: Side, name: str) -> None:
    rq.topic(s, name, 2)
    Req, m = req(37, 3)

    def ask(label: str, count: int, topic: str = name, validate_only: bool = False) -> None:
        s.call(Req(topics=(m.CreatePartitionsTopic(name=topic, count=count, assignments=None),),
                   timeout=rq.ms(10_000), validate_only=validate_only), label)

    ask("same count", 2)
    ask("fewer", 1)
    ask("unknown topic", 3, topic=name + "-nope")
    ask("validate only", 4, validate_only=True)
    ask("more", 4)
    rq.ready(s, name, 4)
    s.call(rq.metadata([name]), "after")


def delete_records_edges(s: Side, name: str) -> None:
    rq.topic(s, name, 2)
    for i in range(4):
        s.quiet(rq.produce(name, 0, rq.batch([b"d%d" % i])))
    Req, m = req(21, 2)

    def ask(label: str, parts) -> None:
        s.call(Req(topics=(m.DeleteRecordsTopic(name=name, partitions=tuple(
            m.DeleteRecordsPartition(partition_index=p, offset=o) for p, o in parts)),), timeout=rq.ms(10_000)), label)

    ask("beyond hw", [(0, 9)])
    ask("to 2", [(0, 2)])
    ask("backwards", [(0, 1)])
    ask("hw with -1", [(0, -1)])
    ask("empty partition", [(1, 0)])
    ask("unknown partition", [(5, 0)])
    s.call(rq.list_offsets(name, [(0, -2), (0, -1)]), "after")
    s.call(rq.fetch(name, [(0, 0)]), "fetch below log start")


def fetch_sessions_case(s: Side, name: str) -> None:
    """KIP-227: open a session, incremental fetches (nothing new, new records, a partition updated
    and one forgotten), a wrong epoch, an unknown session, closing it."""
    rq.topic(s, name, 2)
    s.quiet(rq.produce(name, 0, rq.batch([b"a", b"b"])))
    session = {}

    def fetch(label: str, parts, session_id: int, epoch: int, forgotten=()):
        r = s.call(rq.fetch(name, parts, session={"session_id": session_id, "session_epoch": epoch},
                            forgotten=forgotten) if parts or forgotten else
                   rq.fetch(None, [], session={"session_id": session_id, "session_epoch": epoch}), label)
        s.record(f"{label}: has a session", r.session_id != 0)
        return r

    r = fetch("open", [(0, 0), (1, 0)], 0, 0)
    session["id"] = sid = r.session_id
    fetch("p0 at its end, nothing new", [(0, 2)], sid, 1)
    s.quiet(rq.produce(name, 1, rq.batch([b"c"])))
    fetch("records in p1", [], sid, 2)
    fetch("p1 moved on, p0 forgotten", [(1, 1)], sid, 3, forgotten=[(name, [0])])
    fetch("the same epoch again", [], sid, 3)
    s.quiet(rq.produce(name, 0, rq.batch([b"d"])))
    fetch("p0 forgotten: not answered", [], sid, 4)
    fetch("an unknown session", [], 12345 if sid != 12345 else 12346, 1)
    fetch("session 0 with an epoch", [], 0, 3)
    fetch("close", [(0, 0)], sid, -1)
    fetch("the closed session", [], sid, 5)
    fetch("full fetch, no session", [(0, 0)], 0, -1)


# --- accepted differences (docs/compatibility.md, "Differences from Apache Kafka") --------------

ANSWERS_UNSUPPORTED = Known(
    (r"closed",),
    "A request at a version the broker does not serve is answered UNSUPPORTED_VERSION (35) in that "
    "version's shape where ringlog can encode it; Kafka closes the connection. Clients negotiate "
    "versions with ApiVersions first and never send these.")
CREATES_BEFORE_ANSWERING = Known(
    (r"Metadata\.topics\[0\]\.(error_code|partitions)",),
    "Metadata that auto-creates a topic (v1-3 always, v4+ when allowed) answers with the created topic; "
    "Kafka answers UNKNOWN_TOPIC_OR_PARTITION while its controller creates it, and the client's retry "
    "sees it.")
REAL_OFFSETS_ON_ERROR = Known(
    (r"partition_responses\[\d+\]\.log_start_offset", r"partitions\[\d+\]\.(high_watermark|last_stable_offset|log_start_offset)"),
    "A partition answered with an error (Produce: CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, INVALID_REQUIRED_ACKS; "
    "Fetch: OFFSET_OUT_OF_RANGE) still carries its real log start offset and high watermark; Kafka "
    "sends -1. Clients ignore these fields when the error code is set.")
CLOCK_IN_MESSAGE = Known(
    (r"too old\.responses\[0\]\.partition_responses\[0\]\.record_errors\[\d+\]\.batch_index_error_message$",),
    "Not a difference of behaviour: the record error of a timestamp out of range names the window around "
    "each broker's own clock (Kafka's wording, the same on both).")
NULL_ABORTED_TRANSACTIONS = Known(
    (r"aborted_transactions",),
    "Fetch under read_uncommitted answers an empty aborted_transactions array; Kafka sends null (and an "
    "empty array under read_committed, as ringlog does). Clients treat both as none.")
WHOLE_BATCHES_ONLY = Known(
    (r"(max_bytes two batches|partition_max_bytes)\..*\.records\[len\]$", r"records\[\d+\]\.partial_batch_bytes$"),
    "Fetch sends whole batches only: where the byte limit (max_bytes, partition_max_bytes) falls inside a "
    "batch, ringlog stops before it; Kafka sends the batch's first bytes up to the limit, which the "
    "client drops and fetches again. Both send at least one whole batch to the first partition (KIP-74).")
DUPLICATE_APPEND_TIME = Known(
    (r"duplicate of seq \d+\.responses\[0\]\.partition_responses\[0\]\.log_append_time",),
    "A duplicate idempotent batch is answered with the original offsets and log_append_time -1 (the topic "
    "uses CreateTime); Kafka puts the batch's max timestamp in log_append_time there.")
TOPIC_CONFIG_CATALOGUE = Known(
    (r"\.configs\.(compression\.\w+\.level|errors\.deadletterqueue\.group\.enable|local\.retention\.\w+|"
     r"max\.decompressed\.message\.bytes|remote\.[\w.]+|message\.downconversion\.enable|"
     r"message\.timestamp\.difference\.max\.ms|ringlog\.flush\.policy|ingest\.pipeline)$",
     r"\.configs\.flush\.ms\.value$", r"\.configs\.message\.timestamp\.after\.max\.ms\.value$",
     r"\.configs\.min\.insync\.replicas\.config_source$"),
    "Topic configs: ringlog lists neither tiered storage's (remote.*, local.retention.*), KIP-390's codec "
    "levels, max.decompressed.message.bytes nor errors.deadletterqueue.group.enable, which it does not "
    "implement; it still lists message.downconversion.enable and message.timestamp.difference.max.ms, "
    "which Kafka 4 dropped, and its own ringlog.flush.policy and ingest.pipeline. flush.ms defaults to 1000 (fsync interval, "
    "where Kafka leaves flushing to the OS), message.timestamp.after.max.ms to Long.MAX (Kafka 4: 1 h), and "
    "min.insync.replicas is a default (5) where a KRaft cluster has it as a cluster-wide dynamic default (3).")

STATIC_BROKER_CONFIGS = Known(
    (r"broker keys\.results\[0\]\.configs\.[\w.]+\.read_only$",),
    "Broker configs are read-only: ringlog has no dynamic broker configs (IncrementalAlterConfigs on the "
    "broker resource is refused), so DescribeConfigs marks them read_only where Kafka lets some change "
    "at run time.")

CASES: list[tuple[str, object, tuple[Known, ...]]] = []


def add(name: str, case, *known: Known) -> None:
    CASES.append((name, case, tuple(known)))


for v in range(4):
    add(f"api_versions_v{v}", api_versions_at(v))
add("api_versions_unknown_version", api_versions_unknown)
for key, v in [(3, 99), (0, 99), (1, 99), (1, 0)]:
    add(f"unknown_version_api{key}_v{v}", unknown_version_of(key, v))
for key, v in [(0, 1), (3, 0)]:
    add(f"unknown_version_api{key}_v{v}", unknown_version_of(key, v), ANSWERS_UNSUPPORTED)
for v in (1, 4, 9, 10, 12):
    add(f"metadata_unknown_v{v}", metadata_unknown(v), *([CREATES_BEFORE_ANSWERING] if v < 4 else []))
    add(f"metadata_invalid_name_v{v}", metadata_invalid_name(v))
    add(f"metadata_empty_list_v{v}", metadata_empty_list(v))
    add(f"metadata_existing_v{v}", metadata_existing(v))
add("metadata_auto_create", metadata_auto_create)
add("metadata_internal_topic", metadata_internal)
for v in (3, 7, 9):
    # (Produce answers carry log_start_offset from v5)
    add(f"produce_errors_v{v}", produce_errors(v), *([REAL_OFFSETS_ON_ERROR] if v >= 5 else []),
        NULL_ABORTED_TRANSACTIONS)
for v in (7, 9):
    # (record_errors from v8)
    add(f"produce_record_errors_v{v}", produce_record_errors(v), *([CLOCK_IN_MESSAGE] if v >= 8 else []),
        NULL_ABORTED_TRANSACTIONS)
add("produce_idempotent", produce_idempotent, DUPLICATE_APPEND_TIME, NULL_ABORTED_TRANSACTIONS)
for v in (4, 7, 11, 12):
    add(f"fetch_edges_v{v}", fetch_edges(v), REAL_OFFSETS_ON_ERROR, NULL_ABORTED_TRANSACTIONS, WHOLE_BATCHES_ONLY)
    add(f"fetch_empty_topic_v{v}", fetch_empty_topic(v), REAL_OFFSETS_ON_ERROR, NULL_ABORTED_TRANSACTIONS)
add("fetch_deleted_topic", fetch_deleted_topic)
add("fetch_read_committed", fetch_read_committed)
for v in (1, 4, 7):
    add(f"list_offsets_v{v}", list_offsets_edges(v))
for v in (2, 4, 5, 7):
    # (CreateTopics answers list the topic's configs from v5)
    add(f"create_topics_v{v}", create_topics_edges(v), *([TOPIC_CONFIG_CATALOGUE] if v >= 5 else []))
for v in (1, 4, 6):
    add(f"delete_topics_v{v}", delete_topics_edges(v))
add("create_partitions", create_partitions_edges)
add("delete_records", delete_records_edges, REAL_OFFSETS_ON_ERROR, NULL_ABORTED_TRANSACTIONS)
add("fetch_sessions", fetch_sessions_case, NULL_ABORTED_TRANSACTIONS)
add("group_race", groups.group_race)
for vc, vf in [(2, 1), (5, 3), (8, 7)]:
    add(f"offsets_unknown_group_v{vc}_v{vf}", groups.offsets_unknown_group(vc, vf))
for v in (2, 4, 5):
    add(f"join_unknown_member_v{v}", groups.join_unknown_member(v))
for v in (1, 2, 4):
    add(f"describe_configs_v{v}", groups.describe_configs(v), STATIC_BROKER_CONFIGS)
for v in (0, 1):
    add(f"incremental_alter_configs_v{v}", groups.incremental_alter_configs(v))


# --- the test ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,case,known", CASES, ids=[c[0] for c in CASES])
def test_same_answers(ringlog_ref, kafka_ref, name, case, known) -> None:
    topic = "diff-" + name.replace("_", "-")
    sides = [Side("ringlog", ringlog_ref.host, ringlog_ref.port), Side("kafka", kafka_ref.host, kafka_ref.port)]
    try:
        for s in sides:
            case(s, topic)
    finally:
        for s in sides:
            s.close()
    problems = compare(name, *sides, known)
    assert not problems, "\n".join(problems)


def test_advertised_versions_are_kafkas(ringlog_ref, kafka_ref) -> None:
    """ApiVersions: every API and version ringlog advertises, Kafka 4.x advertises too (ringlog
    never offers a client a version the real broker lacks); docs/compatibility.md lists where
    Kafka's ranges are wider."""
    ranges = []
    for b in (ringlog_ref, kafka_ref):
        s = Side(b.__class__.__name__, b.host, b.port)
        try:
            r = s.quiet(request_class(18, 3)(client_software_name="diff", client_software_version="1"))
        finally:
            s.close()
        assert r.error_code == 0
        ranges.append({int(k.api_key): (int(k.min_version), int(k.max_version)) for k in r.api_keys})
    ours, kafka = ranges
    beyond = {key: (lo_hi, kafka.get(key)) for key, lo_hi in ours.items()
              if key not in kafka or lo_hi[0] < kafka[key][0] or lo_hi[1] > kafka[key][1]}
    assert not beyond, f"advertised beyond Apache Kafka's ranges (ours, Kafka's): {beyond}"

