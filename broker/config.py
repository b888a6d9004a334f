"""Broker configuration: defaults < TOML file < command-line flags < `--set KEY=VALUE`.

One declarative schema (storage.configdef) serves every source: each BrokerConfig field is
declared with its key (Kafka's name where Kafka has one), kind (type and range), default, doc and,
for some, its command-line flag; client/cli/broker.py builds its flags from it and
docs/configuration.md's tables are generated from it (broker/config_docs.py). The default of
every topic config is set by that config's broker key, Kafka's synonym (log.retention.ms for
retention.ms, ...; broker.topic_configs), and lands in `topic_defaults`.

Every refusal is one line naming the key, the value, what is expected and where the value came
from: an unknown key (with the nearest known one), a value of the wrong type or out of range, a
key spelled twice in one TOML file, values that contradict each other (`validate`).

TOML turns `message.max.bytes = 1` into nested tables, which are flattened back into the dotted
name, so `message.max.bytes = 1` and `"message.max.bytes" = 1` are the same key; a file that gives
both is refused, since one of them would silently lose.
"""
from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ringlog.storage.configdef import (
    Boolean,
    Cap,
    Choice,
    CommaList,
    Integer,
    Invalid,
    Setting,
    SettingError,
    Text,
    UnknownKeyError,
    setting,
    settings,
    suggest,
)
from ringlog.storage.segment import MAX_SEGMENT_POSITION

from .security.listeners import ListenerList, ProtocolMap
from .security.principal_rules import PrincipalRules
from .security.state import SASL_MECHANISMS, config_problem as _security_problem
from .security.tls import CLIENT_AUTH
from .topic_configs import TOPIC_CONFIGS

FSYNC_POLICIES = ("always", "interval", "never")
BACKPRESSURE_MODES = ("block", "reject")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# A buffer larger than the machine's memory cannot be what was meant: refuse it at start-up rather
# than when the first large batch arrives.
MEMORY = Cap("the machine's physical memory", physical_memory)


def parse_hostport(value: str, *, default_port: int = 9092, zero: bool = True) -> tuple[str, int]:
    """"host:port", "[v6]:port", "host" or ":port" -> (host, port). Kafka's listener form
    "PLAINTEXT://host:port" is accepted too (the only protocol ringlog speaks)."""
    value = value.strip()
    scheme, sep, rest = value.partition("://")
    if sep:
        if scheme.upper() != "PLAINTEXT":
            raise ValueError(f"only PLAINTEXT listeners are supported, not {scheme}")
        if "," in rest:
            raise ValueError("expected one listener, not a list")
        value = rest
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, ""
    if port and not port.isdigit():
        raise ValueError(f"the port {port} is not a number (expected HOST:PORT)")
    port_n = int(port) if port else default_port
    low = 0 if zero else 1
    if not low <= port_n <= 65535:
        raise ValueError(f"the port must be between {low} and 65535")
    return host or "127.0.0.1", port_n


def parse_per_ip_overrides(value: str | Mapping[str, Any]) -> dict[str, int]:
    """Kafka's max.connections.per.ip.overrides, "host1:100,127.0.0.1:200" -> {host: limit}.

    The limit is after the last ':' (so "::1:50" is IPv6 ::1); "[::1]:50" works too.
    """
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        items = []
        for entry in str(value).split(","):
            if not entry.strip():
                continue
            host, sep, limit = entry.strip().rpartition(":")
            if not sep or not host.strip():
                raise ValueError(f"expected HOST:LIMIT, got {entry.strip()!r}")
            items.append((host, limit))
    out: dict[str, int] = {}
    for host, limit in items:
        host = host.strip().removeprefix("[").removesuffix("]")
        text = str(limit).strip()
        if isinstance(limit, bool) or not re.fullmatch(r"-?[0-9]+", text):
            raise ValueError(f"limit {text!r} of {host} is not a number")
        n = int(text)
        if n < 0:
            raise ValueError(f"limit {n} of {host} must be at least 0")
        out[host] = n
    return out


# --- kinds of the broker's own ------------------------------------------------------------------


@attrs.frozen
class HostPort:
    """HOST:PORT, parsed to (host, port)."""

    default_port: int = 9092
    zero: bool = True             # port 0: the system picks one (listeners, not advertised addresses)
    type_name: str = "host:port"

    def parse(self, raw: Any) -> tuple[str, int]:
        if not isinstance(raw, str):
            raise Invalid("expected HOST:PORT")
        try:
            return parse_hostport(raw, default_port=self.default_port, zero=self.zero)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    def check(self, value: Any) -> None:
        pass

    def text(self, value: Any) -> str:
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def range_doc(self) -> str:
        return f"port {0 if self.zero else 1} to 65535"


@attrs.frozen
class OptionalHostPort(HostPort):
    """HOST:PORT, or off (also none or empty) for (None, None)."""

    type_name: str = "host:port or off"

    def parse(self, raw: Any) -> tuple[str | None, int | None]:
        if isinstance(raw, str) and raw.strip().lower() in ("", "off", "none"):
            return None, None
        return super().parse(raw)

    def text(self, value: Any) -> str:
        return "off" if value[0] is None and value[1] is None else super().text(value)


@attrs.frozen
class PerIpOverrides:
    type_name: str = "host:limit list"

    def parse(self, raw: Any) -> dict[str, int]:
        if not isinstance(raw, (str, Mapping)):
            raise Invalid("expected HOST:LIMIT,HOST:LIMIT,...")
        try:
            return parse_per_ip_overrides(raw)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    def check(self, value: Any) -> None:
        if not isinstance(value, Mapping) or not all(isinstance(v, int) and v >= 0 for v in value.values()):
            raise Invalid("expected a limit of at least 0 per host")

    def text(self, value: Any) -> str:
        return ",".join(f"{h}:{n}" for h, n in value.items())

    def range_doc(self) -> str:
        return "limits at least 0"


@attrs.frozen
class PipelineTables:
    """The [pipelines] table: NAME -> { stages = [...] }, checked by compiling it."""

    type_name: str = "table of pipelines"

    def parse(self, raw: Any) -> dict[str, Any]:
        from .pipelines import PipelineError, check_pipelines

        try:
            check_pipelines(raw)
        except PipelineError as exc:
            # Without the value: the whole table would bury the one stage at fault.
            raise SettingError("pipelines", str(exc)) from None
        return dict(raw)

    def check(self, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Invalid("expected a table of pipelines")

    def text(self, value: Any) -> str:
        return ", ".join(sorted(value)) if value else "none"

    def range_doc(self) -> str:
        return ""


def _port(optional: bool = False):
    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise ValueError(f"{attribute.name} {value!r} is out of range (expected 0 to 65535)")
    return check


_MIB = 1024 * 1024
# group.consumer.assignors: the assignors' names and Kafka's class names for them
_CONSUMER_ASSIGNORS = (
    "uniform", "range",
    "org.apache.kafka.coordinator.group.assignor.UniformAssignor",
    "org.apache.kafka.coordinator.group.assignor.RangeAssignor",
)


@attrs.frozen
class BrokerConfig:
    data_dir: str = setting(
        "data.dir", Text(nonempty=True), "./ringlog-data", aliases=("log.dir", "log.dirs"), flag="--data-dir",
        doc="Where topics.json and the partition logs live; locked while a broker uses it. One directory "
            "(Kafka's log.dirs may list several).")
    listen_host: str = setting(
        "listen", HostPort(), "127.0.0.1", spans=("listen_host", "listen_port"),
        flag="--listen", kafka=False, default_doc="127.0.0.1:9092",
        doc="Address of the one PLAINTEXT listener when `listeners` is not set; port 0 picks a free one (the "
            "ready line shows it). The form PLAINTEXT://HOST:PORT is accepted too.")
    listen_port: int = attrs.field(default=9092, validator=_port())
    # None: advertise the listening address (with the bound port when listening on port 0)
    advertised_host: str | None = setting(
        "advertise", HostPort(zero=False), None, spans=("advertised_host", "advertised_port"),
        flag="--advertise", kafka=False,
        default_doc="the listen address (127.0.0.1 when listening on 0.0.0.0)",
        doc="The address Metadata gives to clients.")
    advertised_port: int | None = attrs.field(default=None, validator=_port(optional=True))
    node_id: int = setting(
        "node.id", Integer(0, 1023, bits=32, why="(it is the worker id of producer ids, 10 bits)"), 0,
        aliases=("broker.id",), flag="--node-id",
        doc="This broker's id: the leader and controller in Metadata, and the worker id of producer ids.")
    cluster_id: str = setting("cluster.id", Text(nonempty=True), "ringlog-cluster",
                              doc="Cluster id reported in Metadata.")
    # Cluster mode (broker.cluster): off unless etcd endpoints are given.
    etcd_endpoints: str = setting(
        "etcd.endpoints", Text(), "", flag="--etcd", kafka=False, default_doc="off (single node)",
        doc="Comma-separated etcd client URLs (http://HOST:PORT,...): the broker joins the cluster named by "
            "cluster.name, with membership, controller election and partition state in etcd. Empty: a "
            "single node, as before. See operations.md, Running a cluster.")
    cluster_name: str = setting(
        "cluster.name", Text(nonempty=True), "ringlog", flag="--cluster-name", kafka=False,
        doc="Cluster mode: the cluster's name, the etcd key prefix /ringlog/NAME/ (letters, digits, . _ -).")
    broker_session_timeout_ms: int = setting(
        "broker.session.timeout.ms", Integer(2000, bits=32), 4000,
        doc="Cluster mode: a broker that has not renewed its etcd lease for this long is taken as dead (its "
            "partitions get new leaders). Rounded up to whole seconds, etcd's lease unit; renewed every third.")
    default_replication_factor: int = setting(
        "default.replication.factor", Integer(1, 1000), 1,
        doc="Cluster mode: replicas of auto-created topics and of CreateTopics asking for the default (-1).")
    replica_lag_time_max_ms: int = setting(
        "replica.lag.time.max.ms", Integer(1, bits=32), 30000,
        doc="Cluster mode: a follower that has not caught up with the leader's log end for this long leaves "
            "the ISR.")
    replica_fetch_wait_max_ms: int = setting(
        "replica.fetch.wait.max.ms", Integer(0, bits=32), 500,
        doc="Cluster mode: how long a follower's fetch waits at the leader for new data.")
    replica_fetch_max_bytes: int = setting(
        "replica.fetch.max.bytes", Integer(1024, bits=32, cap=MEMORY), 1048576,
        doc="Cluster mode: bytes a follower asks for per partition and fetch (at least one batch is sent).")
    fsync: str = setting(
        "fsync", Choice(FSYNC_POLICIES), "interval", flag="--fsync", kafka=False,
        doc="Flush policy: always, interval or never; see [fsync](#fsync-what-a-crash-can-lose). "
            "A topic can override it with ringlog.flush.policy.")
    flush_interval_ms: int = setting(
        "flush.interval.ms", Integer(0), 1000, aliases=("log.flush.interval.ms",), kafka=False,
        doc="With fsync interval: the longest a write stays unflushed. A topic can override it with flush.ms.")
    message_max_bytes: int = setting(
        "message.max.bytes", Integer(64, bits=32, cap=MEMORY), 1048588, flag="--message-max-bytes",
        doc="Largest record batch accepted (Kafka's default); larger ones are answered MESSAGE_TOO_LARGE. "
            "A topic can override it with max.message.bytes.")
    # Largest size a produced batch's compressed records may inflate to while they are checked
    # (they are held in memory meanwhile); beyond it the batch is refused.
    message_max_decompressed_bytes: int = setting(
        "message.max.decompressed.bytes", Integer(64, cap=MEMORY), 64 * _MIB, kafka=False,
        doc="Largest size the records of one compressed batch may inflate to; a batch beyond it is answered "
            "INVALID_RECORD (87) and logged at warning. At least message.max.bytes; a topic whose "
            "max.message.bytes is larger gets that instead. See "
            "[Compressed batches](#compressed-batches-messagemaxdecompressedbytes).")
    socket_request_max_bytes: int = setting(
        "socket.request.max.bytes", Integer(1024, bits=32, cap=MEMORY), 100 * _MIB,
        flag="--socket-request-max-bytes",
        doc="Largest request frame; a larger size prefix closes the connection before anything is allocated.")
    max_connections: int = setting(
        "max.connections", Integer(1, bits=32), 1000, flag="--max-connections",
        doc="Connections beyond this are closed at once (and logged, with the limit and the peer); see "
            "[Connections](#connections-limits-and-timeouts).")
    # Connection hygiene (broker.connection_limits, broker.server.Connection): Kafka's names. One
    # address may hold at most max_connections_per_ip (overrides per host/IP), so one host cannot
    # take every slot; idle connections and frames that trickle in are closed, so slots held by
    # idle or slow-loris sockets come back. -1 turns a timeout off.
    max_connections_per_ip: int = setting(
        "max.connections.per.ip", Integer(0, bits=32), 200,
        doc="Connections one client address may hold; more are closed at once. 0 only together with "
            "max.connections.per.ip.overrides. Kafka's default is unlimited; see below for why this one is not.")
    max_connections_per_ip_overrides: Mapping[str, int] = setting(
        "max.connections.per.ip.overrides", PerIpOverrides(), factory=dict, default_doc="none",
        doc='Kafka\'s format, "host1:100,127.0.0.1:200": another limit for these hosts or addresses (0 bans '
            "one). Hostnames are resolved once at start; one that does not resolve stops the start.")
    connections_max_idle_ms: int = setting(
        "connections.max.idle.ms", Integer(1, special={-1: "never"}), 600_000,
        doc="A connection with no request in flight that received and sent nothing for this long is "
            "closed (Kafka's key and default).")
    socket_request_read_timeout_ms: int = setting(
        "socket.request.read.timeout.ms", Integer(1, special={-1: "never"}), 30_000, kafka=False,
        doc="Once the first byte of a request frame has arrived, the whole frame must arrive within this "
            "long, or the connection is closed.")
    # Requests read ahead of their responses on one connection (pipelining bound).
    max_inflight_per_connection: int = setting(
        "max.inflight.requests.per.connection", Integer(1, bits=32), 64, kafka=False,
        doc="Requests read ahead of their answers on one connection; when reached, the broker stops reading "
            "that connection until answers have left.")
    ring_bytes_per_partition: int = setting(
        "ring.bytes.per.partition", Integer(1024, cap=MEMORY), 8 * _MIB, flag="--ring-bytes", kafka=False,
        doc="Size of each partition's in-memory ring between the connections and the writer; a batch larger "
            "than the ring is still accepted when the ring is empty.")
    backpressure: str = setting(
        "backpressure", Choice(BACKPRESSURE_MODES), "block", flag="--backpressure", kafka=False,
        doc="What a full ring does: block or reject; see [Backpressure](#backpressure-when-a-partitions-ring-is-full).")
    # How produced records are checked beyond framing and CRC: "framing" walks each record's
    # length prefix (cheap), "full" decodes every field as Kafka's LogValidator does (slower).
    record_validation: str = setting(
        "record.validation", Choice(("framing", "full")), "framing", kafka=False,
        doc="How produced records are checked beyond batch framing and CRC-32C: framing checks that each "
            "record's length prefix tiles the (decompressed) records block, about 5 ns a record with the "
            "compiled walk (storage/_speedups.c, built at install when a C compiler is there) and 0.3 us in "
            "pure Python; full decodes every field and checks offset deltas as Kafka's LogValidator does, "
            "about 6 us a record. A failing batch gets CORRUPT_MESSAGE.")
    # throttle_time_ms sent with a "reject" answer: how long the client should back off
    backpressure_throttle_ms: int = setting(
        "backpressure.throttle.ms", Integer(0, bits=32), 100, kafka=False,
        doc="throttle_time_ms sent with a backpressure reject answer.")
    auto_create_topics: bool = setting(
        "auto.create.topics.enable", Boolean(), True, flag="--auto-create",
        doc="Metadata for an unknown (legal) topic name creates it with num.partitions.")
    num_partitions: int = setting(
        "num.partitions", Integer(1, bits=32), 1, flag="--num-partitions",
        doc="Partitions of auto-created topics, and of CreateTopics asking for the default. At most "
            "max.partitions.per.topic.")
    max_partitions_per_topic: int = setting(
        "max.partitions.per.topic", Integer(1, bits=32), 10_000, kafka=False,
        doc="Most partitions one topic may have: CreateTopics and CreatePartitions asking for more are "
            "answered INVALID_PARTITIONS. See [Partition limits](#partition-limits).")
    max_partitions_per_broker: int = setting(
        "max.partitions.per.broker", Integer(1, bits=32), 100_000, kafka=False,
        doc="Most partitions the broker holds over all topics: a CreateTopics, CreatePartitions or "
            "auto-creation that would go beyond is answered POLICY_VIOLATION. "
            "Internal topics (__consumer_offsets) count but are never refused. See "
            "[Partition limits](#partition-limits).")
    retention_check_interval_ms: int = setting(
        "log.retention.check.interval.ms", Integer(1), 5000,
        doc="How often retention runs (time-based rolling and interval flushes are checked every second or "
            "more often).")
    # default topic configs (Kafka topic config names: "retention.ms", "segment.bytes", ...), set by
    # the topic configs' broker keys (TOPIC_DEFAULT_KEYS); values in Kafka's text form
    topic_defaults: Mapping[str, str] = attrs.field(factory=dict, converter=lambda m: dict(m))
    log_level: str = setting(
        "log.level", Choice(LOG_LEVELS, fold_case=True), "INFO", flag="--log-level", kafka=False,
        doc="Python logging level of the broker's stderr log (any case).")
    log_format: str = setting(
        "log.format", Choice(("kv", "json")), "kv", flag="--log-format", kafka=False,
        doc="Log lines as key=value pairs (kv) or JSON objects (json), one line per event; see operations.md.")
    # /metrics and /health HTTP endpoint (broker.http); None: off
    metrics_listen_host: str | None = setting(
        "metrics.listen", OptionalHostPort(9644), None, spans=("metrics_listen_host", "metrics_listen_port"),
        flag="--metrics-listen", kafka=False, default_doc="off",
        doc="HTTP endpoint with /metrics (Prometheus) and /health; port 0 picks a free one (shown in the "
            "ready line); off disables it. See operations.md.")
    metrics_listen_port: int | None = attrs.field(default=None, validator=_port(optional=True))
    # --- the HTTP gateway (broker.httpd): REST Proxy v2, /ingest log push, pipelines ---
    http_listen_host: str | None = setting(
        "http.listen", OptionalHostPort(8082), None, spans=("http_listen_host", "http_listen_port"),
        flag="--http-listen", kafka=False, default_doc="off",
        doc="HTTP gateway: Confluent REST Proxy v2 API, POST /ingest/{topic} log push, /metrics and "
            "/health; port 0 picks a free one (shown in the ready line); off disables it. See http.md.")
    http_listen_port: int | None = attrs.field(default=None, validator=_port(optional=True))
    http_max_body_bytes: int = setting(
        "http.max.body.bytes", Integer(1024, bits=32), 16 * _MIB, kafka=False,
        doc="Largest HTTP request body the gateway reads; a larger one is answered 413.")
    http_max_inflated_bytes: int = setting(
        "http.max.inflated.bytes", Integer(1024, bits=32), 64 * _MIB, kafka=False,
        doc="Largest size a gzip (Content-Encoding) request body may inflate to; beyond it the request "
            "is answered 413 without inflating the rest.")
    http_max_header_bytes: int = setting(
        "http.max.header.bytes", Integer(256, bits=32), 16 * 1024, kafka=False,
        doc="Largest HTTP request head (request line and headers); a larger one is answered 431.")
    http_request_timeout_ms: int = setting(
        "http.request.timeout.ms", Integer(1, bits=32), 30_000, kafka=False,
        doc="Once a request's first byte has arrived, the whole request must arrive within this long, "
            "or it is answered 408 and the connection closed (slow clients).")
    http_idle_timeout_ms: int = setting(
        "http.idle.timeout.ms", Integer(1, bits=32), 60_000, kafka=False,
        doc="A keep-alive HTTP connection with no request under way is closed after this long.")
    http_max_connections: int = setting(
        "http.max.connections", Integer(1, bits=32), 1024, kafka=False,
        doc="Most HTTP gateway connections at once; more are answered 503 and closed.")
    http_retry_after_s: int = setting(
        "http.retry.after.seconds", Integer(0, bits=32), 1, kafka=False,
        doc="Retry-After of the 503 a full partition ring answers to POST /ingest and REST produce.")
    # [pipelines.NAME] tables, checked (compiled) when the config is read
    pipelines: Mapping[str, Any] = setting(
        "pipelines", PipelineTables(), factory=dict, kafka=False, default_doc="none",
        doc="Ingest pipelines, one [pipelines.NAME] table each with stages = [...] (filter, mask, sample, "
            "enrich); a topic's ingest.pipeline config names the one its records pass through. See http.md.")
    # /health answers 503 "disk nearly full" below this many free bytes on the data dir's disk
    health_disk_free_min_bytes: int = setting(
        "health.disk.free.min.bytes", Integer(0), 100 * _MIB, kafka=False,
        doc='/health answers 503 "disk nearly full" when less is free on the data dir\'s file system.')
    # incremental fetch sessions (broker.fetch_sessions, KIP-227); Kafka's name and default
    max_incremental_fetch_session_cache_slots: int = setting(
        "max.incremental.fetch.session.cache.slots", Integer(0, bits=32), 1000,
        doc="Most incremental fetch sessions the broker keeps (KIP-227); 0 declines every session, so each "
            "fetch is a full one. When full, a new session takes the place of one unused for 2 minutes, or "
            "of the smallest if it is larger.")
    # consumer groups (broker.coordinator); Kafka's names and defaults
    group_initial_rebalance_delay_ms: int = setting(
        "group.initial.rebalance.delay.ms", Integer(0, bits=32), 3000,
        doc="How long a new group waits for more members before its first rebalance.")
    group_min_session_timeout_ms: int = setting(
        "group.min.session.timeout.ms", Integer(1, bits=32), 6000,
        doc="Smallest session timeout a member may ask for.")
    group_max_session_timeout_ms: int = setting(
        "group.max.session.timeout.ms", Integer(1, bits=32), 1_800_000,
        doc="Largest session timeout a member may ask for; at least group.min.session.timeout.ms.")
    group_max_size: int = setting(
        "group.max.size", Integer(1, bits=32), 2**31 - 1, doc="Most members one group may have.")
    # consumer-protocol groups (KIP-848, broker.coordinator.consumer_group); Kafka's names and defaults
    group_consumer_session_timeout_ms: int = setting(
        "group.consumer.session.timeout.ms", Integer(1, bits=32), 45_000,
        doc="A consumer-protocol member not heard from for this long is removed from its group.")
    group_consumer_heartbeat_interval_ms: int = setting(
        "group.consumer.heartbeat.interval.ms", Integer(1, bits=32), 5_000,
        doc="How often consumer-protocol members heartbeat (told to them in every heartbeat answer); "
            "less than group.consumer.session.timeout.ms.")
    group_consumer_max_size: int = setting(
        "group.consumer.max.size", Integer(1, bits=32), 2**31 - 1,
        doc="Most members one consumer-protocol group may have.")
    group_consumer_assignors: str = setting(
        "group.consumer.assignors", CommaList(_CONSUMER_ASSIGNORS, nonempty=True), "uniform,range",
        doc="Server-side assignors of consumer-protocol groups, the default first; members may pick "
            "one by name with group.remote.assignor. Kafka's class names are accepted too.")
    offsets_topic_num_partitions: int = setting(
        "offsets.topic.num.partitions", Integer(1, bits=32), 1,
        doc="Partitions of __consumer_offsets when it is first created; at most max.partitions.per.topic.")
    offsets_topic_replication_factor: int = setting(
        "offsets.topic.replication.factor", Integer(1, 1000), 3,
        doc="Cluster mode: replicas of each __consumer_offsets partition. Like Kafka, the topic is not created "
            "(FindCoordinator answers COORDINATOR_NOT_AVAILABLE) until this many brokers are alive.")
    offsets_commit_timeout_ms: int = setting(
        "offsets.commit.timeout.ms", Integer(1, bits=32), 5000,
        doc="Cluster mode: how long a group write (offset commit, group state) waits for the ISR of its "
            "__consumer_offsets partition before it is answered REQUEST_TIMED_OUT.")
    # Kafka's default: segments of __consumer_offsets roll, and so get compacted, at 100 MiB
    offsets_topic_segment_bytes: int = setting(
        "offsets.topic.segment.bytes", Integer(14, MAX_SEGMENT_POSITION, bits=32), 100 * _MIB,
        doc="segment.bytes of __consumer_offsets: its segments roll, and so get compacted, at this size.")
    offsets_retention_minutes: int = setting(
        "offsets.retention.minutes", Integer(1, bits=32), 7 * 24 * 60,
        doc="How long the committed offsets of an empty group are kept.")
    offsets_retention_check_interval_ms: int = setting(
        "offsets.retention.check.interval.ms", Integer(1), 600_000,
        doc="How often expired offsets are looked for.")
    offset_metadata_max_bytes: int = setting(
        "offset.metadata.max.bytes", Integer(0, bits=32), 4096,
        doc="Largest metadata string an offset commit may carry.")
    # --- transactions (broker.txn, broker.txn_runtime) ---
    transaction_state_log_num_partitions: int = setting(
        "transaction.state.log.num.partitions", Integer(1, bits=32), 1,
        doc="Partitions of __transaction_state when it is first created (on the first transactional "
            "request); at most max.partitions.per.topic.")
    transaction_state_log_segment_bytes: int = setting(
        "transaction.state.log.segment.bytes", Integer(14, MAX_SEGMENT_POSITION, bits=32), 100 * _MIB,
        doc="segment.bytes of __transaction_state: its segments roll, and so get compacted, at this size.")
    transaction_max_timeout_ms: int = setting(
        "transaction.max.timeout.ms", Integer(1, bits=32), 900_000,
        doc="Largest transaction.timeout.ms a producer may ask for in InitProducerId "
            "(INVALID_TRANSACTION_TIMEOUT above it).")
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = setting(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms", Integer(1, bits=32), 10_000,
        doc="How often transactions open for longer than their timeout are looked for and aborted "
            "(their producer is fenced).")
    transactional_id_expiration_ms: int = setting(
        "transactional.id.expiration.ms", Integer(1, bits=32), 7 * 24 * 3_600_000,
        doc="A transactional id without an open transaction and no request for this long is forgotten.")
    transaction_remove_expired_transaction_cleanup_interval_ms: int = setting(
        "transaction.remove.expired.transaction.cleanup.interval.ms", Integer(1, bits=32), 3_600_000,
        doc="How often expired transactional ids are looked for.")

    # --- security (broker.security; docs/security.md) ---
    listeners: str = setting(
        "listeners", ListenerList(), "", default_doc="none: one PLAINTEXT listener on `listen`",
        doc="Kafka's listeners, NAME://HOST:PORT,...: each NAME is a security protocol (PLAINTEXT, SSL, "
            "SASL_PLAINTEXT, SASL_SSL) or a name listener.security.protocol.map maps to one. When set, "
            "`listen` and `advertise` are not used. See security.md.")
    advertised_listeners: str = setting(
        "advertised.listeners", ListenerList(), "", default_doc="each listener's own address",
        doc="NAME://HOST:PORT per listener: the address Metadata gives to clients connected to that listener.")
    listener_security_protocol_map: str = setting(
        "listener.security.protocol.map", ProtocolMap(), "", default_doc="each protocol to itself",
        doc="NAME:PROTOCOL,...: the security protocol of each listener name.")
    ssl_certificate_location: str = setting(
        "ssl.certificate.location", Text(), "", aliases=("ssl.keystore.location",), kafka=False,
        default_doc="none",
        doc="The broker's certificate chain, PEM (librdkafka's name; Kafka's ssl.keystore.location with "
            "ssl.keystore.type=PEM is accepted). May hold the private key too.")
    ssl_key_location: str = setting(
        "ssl.key.location", Text(), "", kafka=False, default_doc="in ssl.certificate.location",
        doc="The broker's private key, PEM.")
    ssl_key_password: str = setting(
        "ssl.key.password", Text(), "", default_doc="none", doc="Password of an encrypted private key.")
    ssl_ca_location: str = setting(
        "ssl.ca.location", Text(), "", aliases=("ssl.truststore.location",), kafka=False, default_doc="none",
        doc="CA certificates (PEM) client certificates are checked against (Kafka's ssl.truststore.location "
            "with ssl.truststore.type=PEM is accepted).")
    ssl_keystore_type: str = setting(
        "ssl.keystore.type", Choice(("PEM",)), "PEM", doc="Only PEM files are read.")
    ssl_truststore_type: str = setting(
        "ssl.truststore.type", Choice(("PEM",)), "PEM", doc="Only PEM files are read.")
    ssl_client_auth: str = setting(
        "ssl.client.auth", Choice(CLIENT_AUTH), "none",
        doc="required: TLS clients must present a certificate signed by ssl.ca.location; requested: checked "
            "when presented; none: not asked. The principal of an SSL connection is User:SUBJECT "
            "(\"User:CN=alice,O=example\"), User:ANONYMOUS without a certificate.")
    ssl_principal_mapping_rules: str = setting(
        "ssl.principal.mapping.rules", PrincipalRules(), "DEFAULT",
        doc="Kafka's rules from a client certificate's subject to the principal name, tried in order: "
            "RULE:pattern/replacement/[LU] (the whole subject must match; $1.. are its groups; L/U lower- or "
            "upper-case the result) and DEFAULT (the subject as it is). No rule matching fails the "
            "authentication.")
    sasl_enabled_mechanisms: str = setting(
        "sasl.enabled.mechanisms", CommaList(SASL_MECHANISMS), "SCRAM-SHA-256,SCRAM-SHA-512",
        doc="Mechanisms SASL listeners offer. PLAIN sends the password itself: offer it on SASL_SSL only.")
    connections_max_reauth_ms: int = setting(
        "connections.max.reauth.ms", Integer(0), 0,
        doc="Longest life of a SASL session (KIP-368): told to clients in SaslAuthenticate, which then "
            "re-authenticate; a request after it ended closes the connection. 0: sessions do not end.")
    sasl_server_max_receive_size: int = setting(
        "sasl.server.max.receive.size", Integer(64, bits=32), 524288,
        doc="Largest SASL token accepted before authentication; a larger one fails the authentication.")
    connection_failed_authentication_delay_ms: int = setting(
        "connection.failed.authentication.delay.ms", Integer(0, bits=32), 100,
        doc="How long a failed authentication waits before its answer and the close; doubled for each "
            "further failure from the same address within a minute, up to 5 s.")
    authorizer_enabled: bool = setting(
        "authorizer.enabled", Boolean(), False, kafka=False,
        doc="Check Kafka ACLs on every request (Kafka's authorizer.class.name). Off: everything is allowed "
            "and ACL requests are answered SECURITY_DISABLED.")
    super_users: str = setting(
        "super.users", Text(), "", default_doc="none",
        doc="Principals allowed everything, Kafka's form: User:alice;User:bob.")
    allow_everyone_if_no_acl_found: bool = setting(
        "allow.everyone.if.no.acl.found", Boolean(), False,
        doc="With the authorizer on: whether a resource no ACL names is open to everyone.")
    # client quotas (broker.quotas, set with AlterClientQuotas); Kafka's names and defaults
    quota_window_num: int = setting(
        "quota.window.num", Integer(1, bits=32), 11,
        doc="Samples a client quota's byte rate is measured over; a new client's rate counts at least "
            "(samples - 1) windows of time, so its first burst is not mistaken for a high rate.")
    quota_window_size_seconds: int = setting(
        "quota.window.size.seconds", Integer(1, bits=32), 1,
        doc="Length of one client quota sample.")

    def log_config(self):
        """The default storage LogConfig: storage defaults, then topic_defaults, then fsync."""
        from ringlog.storage.log import LogConfig

        configs = dict(self.topic_defaults)
        configs.setdefault("max.message.bytes", str(self.message_max_bytes))
        base = LogConfig().with_topic_configs(configs)
        return attrs.evolve(base, flush_policy=self.fsync, flush_interval_ms=self.flush_interval_ms)


# --- the key table ------------------------------------------------------------------------------

OWN_SETTINGS: dict[str, tuple[attrs.Attribute, Setting]] = {spec.key: (a, spec) for a, spec in settings(BrokerConfig)}


def _topic_default_keys() -> dict[str, str]:
    """Broker key -> topic config it sets the default of, for every topic config whose synonym is
    not a broker setting of its own (message.max.bytes, fsync and flush.interval.ms are)."""
    own = {name for _, spec in OWN_SETTINGS.values() for name in (spec.key, *spec.aliases)}
    out: dict[str, str] = {}
    for topic_key, entry in TOPIC_CONFIGS.items():
        spec = entry.setting
        if spec.synonym is None or spec.synonym in own:
            continue
        for name in (spec.synonym, *spec.synonym_aliases):
            out[name] = topic_key
    return out


TOPIC_DEFAULT_KEYS: dict[str, str] = _topic_default_keys()
# every name a TOML file or --set may use -> its canonical key
CANONICAL: dict[str, str] = {
    **{name: spec.key for _, spec in OWN_SETTINGS.values() for name in (spec.key, *spec.aliases)},
    **{name: TOPIC_CONFIGS[topic].setting.synonym for name, topic in TOPIC_DEFAULT_KEYS.items()},
}


def all_keys() -> list[str]:
    """Every accepted key and alias."""
    return sorted(CANONICAL)


def unknown_key(key: str, source: str | None) -> UnknownKeyError:
    return UnknownKeyError(key, source=source, hint=suggest(key, all_keys()))


class ConfigError(ValueError):
    """A problem of the configuration as a whole (a file, two keys together): str() is the line."""


def apply_settings(config: BrokerConfig, values: Mapping[str, Any], source: str | None = None) -> BrokerConfig:
    """`config` with flat `key -> value` settings (TOML values or strings) applied.

    SettingError (a ValueError, one line) on an unknown key, a bad value, or one key given twice
    under two of its names."""
    changes: dict[str, Any] = {}
    topic_defaults = dict(config.topic_defaults)
    seen: dict[str, str] = {}
    for name, raw in values.items():
        key = CANONICAL.get(name)
        if key is None:
            raise unknown_key(name, source)
        if key in seen:
            raise SettingError(key, f"given twice, as {seen[key]} and as {name}; keep one", source=source)
        seen[key] = name
        if key in OWN_SETTINGS:
            a, spec = OWN_SETTINGS[key]
            value = spec.parse(raw, source)
            if spec.spans:
                changes.update(zip(spec.spans, value))
            else:
                changes[a.name] = value
        else:
            topic = TOPIC_DEFAULT_KEYS[name]
            spec = TOPIC_CONFIGS[topic].setting
            try:
                value = spec.parse(raw, source)
            except SettingError as exc:
                # the broker key is the one the user wrote
                raise SettingError(key, exc.problem, value=raw, source=source) from None
            topic_defaults[topic] = spec.text(value)
    changes["topic_defaults"] = topic_defaults
    return attrs.evolve(config, **changes)


# --- TOML ---------------------------------------------------------------------------------------


def _takes_table(key: str) -> bool:
    """Keys whose value may itself be a TOML table (so flattening stops there)."""
    entry = OWN_SETTINGS.get(CANONICAL.get(key, ""))
    return entry is not None and isinstance(entry[1].kind, (PerIpOverrides, PipelineTables))


def _spelling(parts: list[str]) -> str:
    return ".".join(f'"{p}"' if "." in p or not p else p for p in parts)


def flatten_toml(table: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Nested TOML tables -> {dotted key: value}; ConfigError when two spellings give one key."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}

    def walk(t: Mapping[str, Any], parts: list[str]) -> None:
        for k, v in t.items():
            here = [*parts, k]
            name = ".".join(here)
            if isinstance(v, Mapping) and not _takes_table(name):
                walk(v, here)
                continue
            if name in out:
                raise ConfigError(
                    f"{name} is given twice in {path}, as {spelled[name]} and as {_spelling(here)}: keep one")
            out[name] = v
            spelled[name] = _spelling(here)

    walk(table, [])
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """The flat settings of a TOML file; OSError or ConfigError (one line naming the file)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        hint = ""
        if "overwrite" in str(exc).lower():
            hint = ("; a key is given twice, or begins another key (max.connections and "
                    'max.connections.per.ip): quote that one, "max.connections" = 1000')
        raise ConfigError(f"{path}: not valid TOML: {exc}{hint}") from None
    return flatten_toml(table, str(path))


def load_toml(path: str | Path, base: BrokerConfig | None = None) -> BrokerConfig:
    return apply_settings(base or BrokerConfig(), read_toml(path), source=f"in {path}")


# --- checks across keys -------------------------------------------------------------------------


def validate(config: BrokerConfig) -> BrokerConfig:
    """Checks of keys against each other; returns the config or raises ConfigError (one line)."""
    def refuse(message: str) -> None:
        raise ConfigError(message)

    # Below message.max.bytes a batch accepted uncompressed would be refused compressed.
    if config.message_max_decompressed_bytes < config.message_max_bytes:
        refuse(f"message.max.decompressed.bytes {config.message_max_decompressed_bytes} is less than "
               f"message.max.bytes {config.message_max_bytes}: it must be at least that")
    # Kafka's rule: 0 only makes sense when overrides let some hosts in.
    if config.max_connections_per_ip == 0 and not config.max_connections_per_ip_overrides:
        refuse("max.connections.per.ip 0 would refuse every connection: it must be at least 1 "
               "(0 only with max.connections.per.ip.overrides)")
    if config.group_consumer_heartbeat_interval_ms >= config.group_consumer_session_timeout_ms:
        refuse(f"group.consumer.heartbeat.interval.ms {config.group_consumer_heartbeat_interval_ms} must be less "
               f"than group.consumer.session.timeout.ms {config.group_consumer_session_timeout_ms}")
    if config.group_min_session_timeout_ms > config.group_max_session_timeout_ms:
        refuse(f"group.min.session.timeout.ms {config.group_min_session_timeout_ms} is more than "
               f"group.max.session.timeout.ms {config.group_max_session_timeout_ms}")
    problem = _security_problem(config)
    if problem:
        refuse(problem)
    if config.etcd_endpoints:
        from .cluster.etcd import parse_endpoints

        try:
            parse_endpoints(config.etcd_endpoints)
        except ValueError as exc:
            refuse(f"etcd.endpoints {config.etcd_endpoints!r}: {exc}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", config.cluster_name):
            refuse(f"cluster.name {config.cluster_name!r}: only letters, digits, '.', '_' and '-' are allowed")
    from .limits import startup_problem

    problem = startup_problem(config)
    if problem:
        refuse(problem)
    config.log_config()  # the topic defaults together (each was checked alone)
    return config
