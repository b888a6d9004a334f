"""Broker configuration: defaults < TOML file < command-line flags.

The TOML file uses Kafka-style dotted names; TOML turns `message.max.bytes = 1` into nested tables,
which are flattened back into the dotted name, so both `message.max.bytes = 1` and
`"message.max.bytes" = 1` work. Keys are documented in docs/configuration.md. Keys starting with
`log.` (other than the broker's own) set the default topic configuration: `log.retention.ms` is
the default of the topic config `retention.ms`, `log.segment.bytes` of `segment.bytes`, and so on.
"""
from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

FSYNC_POLICIES = ("always", "interval", "never")
BACKPRESSURE_MODES = ("block", "reject")


def parse_hostport(value: str, *, default_port: int = 9092) -> tuple[str, int]:
    """"host:port", "[v6]:port", "host" or ":port" -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, ""
    if port and not port.isdigit():
        raise ValueError(f"port {port!r} is not a number in {value!r} (expected HOST:PORT)")
    port_n = int(port) if port else default_port
    if not 0 <= port_n <= 65535:
        raise ValueError(f"port {port_n} out of range in {value!r}")
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
        try:
            n = int(str(limit).strip())
        except ValueError:
            raise ValueError(f"limit {str(limit).strip()!r} of {host} is not a number") from None
        if n < 0:
            raise ValueError(f"limit {n} of {host} must be at least 0")
        out[host] = n
    return out


@attrs.frozen
class BrokerConfig:
    data_dir: str = "./ringlog-data"
    listen_host: str = "127.0.0.1"
    listen_port: int = 9092
    # None: advertise the listening address (with the bound port when listening on port 0)
    advertised_host: str | None = None
    advertised_port: int | None = None
    node_id: int = 0
    cluster_id: str = "ringlog-cluster"
    fsync: str = attrs.field(default="interval", validator=attrs.validators.in_(FSYNC_POLICIES))
    flush_interval_ms: int = 1000
    message_max_bytes: int = 1048588
    # Largest size a produced batch's compressed records may inflate to while they are checked
    # (they are held in memory meanwhile); beyond it the batch is refused. docs/configuration.md
    message_max_decompressed_bytes: int = 64 * 1024 * 1024
    socket_request_max_bytes: int = 100 * 1024 * 1024
    max_connections: int = 1000
    # Connection hygiene (broker.connection_limits, broker.server.Connection): Kafka's names. One
    # address may hold at most max_connections_per_ip (overrides per host/IP), so one host cannot
    # take every slot; idle connections and frames that trickle in are closed, so slots held by
    # idle or slow-loris sockets come back. -1 turns a timeout off.
    max_connections_per_ip: int = 200
    max_connections_per_ip_overrides: Mapping[str, int] = attrs.field(
        factory=dict, converter=lambda v: parse_per_ip_overrides(v))
    connections_max_idle_ms: int = 600_000
    socket_request_read_timeout_ms: int = 30_000
    # Requests read ahead of their responses on one connection (pipelining bound).
    max_inflight_per_connection: int = 64
    ring_bytes_per_partition: int = 8 * 1024 * 1024
    backpressure: str = attrs.field(default="block", validator=attrs.validators.in_(BACKPRESSURE_MODES))
    # How produced records are checked beyond framing and CRC: "framing" walks each record's
    # length prefix (cheap), "full" decodes every field as Kafka's LogValidator does (slower).
    record_validation: str = attrs.field(default="framing", validator=attrs.validators.in_(("framing", "full")))
    # throttle_time_ms sent with a "reject" answer: how long the client should back off
    backpressure_throttle_ms: int = 100
    auto_create_topics: bool = True
    num_partitions: int = 1
    retention_check_interval_ms: int = 5000
    # default topic configs (Kafka topic config names: "retention.ms", "segment.bytes", ...)
    topic_defaults: Mapping[str, str] = attrs.field(factory=dict, converter=lambda m: dict(m))
    log_level: str = "INFO"
    log_format: str = attrs.field(default="kv", validator=attrs.validators.in_(("kv", "json")))
    # /metrics and /health HTTP endpoint (broker.http); None: off
    metrics_listen_host: str | None = None
    metrics_listen_port: int | None = None
    # /health answers 503 "disk nearly full" below this many free bytes on the data dir's disk
    health_disk_free_min_bytes: int = 100 * 1024 * 1024
    # consumer groups (broker.coordinator); Kafka's names and defaults
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_max_size: int = 2**31 - 1
    offsets_topic_num_partitions: int = 1
    # Kafka's default: segments of __consumer_offsets roll, and so get compacted, at 100 MiB
    offsets_topic_segment_bytes: int = 100 * 1024 * 1024
    offsets_retention_minutes: int = 7 * 24 * 60
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096

    def log_config(self):
        """The default storage LogConfig: storage defaults, then topic_defaults, then fsync."""
        from storage.log import LogConfig

        configs = dict(self.topic_defaults)
        configs.setdefault("max.message.bytes", str(self.message_max_bytes))
        base = LogConfig().with_topic_configs(configs)
        return attrs.evolve(base, flush_policy=self.fsync, flush_interval_ms=self.flush_interval_ms)


# key in TOML / --set -> (attribute, converter)
def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {v!r}")


_KEYS: dict[str, tuple[str, Any]] = {
    "data.dir": ("data_dir", str),
    "log.dir": ("data_dir", str),
    "log.dirs": ("data_dir", str),
    "node.id": ("node_id", int),
    "broker.id": ("node_id", int),
    "cluster.id": ("cluster_id", str),
    "fsync": ("fsync", str),
    "flush.interval.ms": ("flush_interval_ms", int),
    "log.flush.interval.ms": ("flush_interval_ms", int),
    "message.max.bytes": ("message_max_bytes", int),
    "message.max.decompressed.bytes": ("message_max_decompressed_bytes", int),
    "socket.request.max.bytes": ("socket_request_max_bytes", int),
    "max.connections": ("max_connections", int),
    "max.connections.per.ip": ("max_connections_per_ip", int),
    "max.connections.per.ip.overrides": ("max_connections_per_ip_overrides", parse_per_ip_overrides),
    "connections.max.idle.ms": ("connections_max_idle_ms", int),
    "socket.request.read.timeout.ms": ("socket_request_read_timeout_ms", int),
    "max.inflight.requests.per.connection": ("max_inflight_per_connection", int),
    "ring.bytes.per.partition": ("ring_bytes_per_partition", int),
    "backpressure": ("backpressure", str),
    "record.validation": ("record_validation", str),
    "backpressure.throttle.ms": ("backpressure_throttle_ms", int),
    "auto.create.topics.enable": ("auto_create_topics", _bool),
    "num.partitions": ("num_partitions", int),
    "log.retention.check.interval.ms": ("retention_check_interval_ms", int),
    "log.level": ("log_level", str),
    "log.format": ("log_format", str),
    "health.disk.free.min.bytes": ("health_disk_free_min_bytes", int),
    "group.initial.rebalance.delay.ms": ("group_initial_rebalance_delay_ms", int),
    "group.min.session.timeout.ms": ("group_min_session_timeout_ms", int),
    "group.max.session.timeout.ms": ("group_max_session_timeout_ms", int),
    "group.max.size": ("group_max_size", int),
    "offsets.topic.num.partitions": ("offsets_topic_num_partitions", int),
    "offsets.topic.segment.bytes": ("offsets_topic_segment_bytes", int),
    "offsets.retention.minutes": ("offsets_retention_minutes", int),
    "offsets.retention.check.interval.ms": ("offsets_retention_check_interval_ms", int),
    "offset.metadata.max.bytes": ("offset_metadata_max_bytes", int),
}


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def apply_settings(config: BrokerConfig, settings: Mapping[str, Any]) -> BrokerConfig:
    """Apply flat `key -> value` settings (TOML or --set) to `config`; ValueError on unknown keys."""
    changes: dict[str, Any] = {}
    topic_defaults = dict(config.topic_defaults)
    for key, value in settings.items():
        if key == "listen":
            changes["listen_host"], changes["listen_port"] = parse_hostport(str(value))
        elif key == "metrics.listen":
            if str(value).strip().lower() in ("", "off", "none"):
                changes["metrics_listen_host"] = changes["metrics_listen_port"] = None
            else:
                changes["metrics_listen_host"], changes["metrics_listen_port"] = parse_hostport(str(value), default_port=9644)
        elif key in ("advertise", "advertised.listeners"):
            changes["advertised_host"], changes["advertised_port"] = parse_hostport(str(value))
        elif key in _KEYS:
            attr, conv = _KEYS[key]
            try:
                changes[attr] = conv(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{key}: {exc}") from None
        elif key.startswith("log."):
            topic_defaults[key[len("log."):]] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            raise ValueError(f"unknown configuration key {key!r}")
    changes["topic_defaults"] = topic_defaults
    return attrs.evolve(config, **changes)


def load_toml(path: str | Path, base: BrokerConfig | None = None) -> BrokerConfig:
    with open(path, "rb") as f:
        table = tomllib.load(f)
    return apply_settings(base or BrokerConfig(), _flatten(table))


def validate(config: BrokerConfig) -> BrokerConfig:
    """Cross-field checks; returns the config or raises ValueError."""
    if config.num_partitions < 1:
        raise ValueError("num.partitions must be at least 1")
    if config.message_max_bytes < 64:
        raise ValueError("message.max.bytes is too small")
    # Below message.max.bytes a batch accepted uncompressed would be refused compressed.
    if config.message_max_decompressed_bytes < config.message_max_bytes:
        raise ValueError("message.max.decompressed.bytes must be at least message.max.bytes")
    if config.ring_bytes_per_partition < 1024:
        raise ValueError("ring.bytes.per.partition must be at least 1024")
    if config.socket_request_max_bytes < 1024:
        raise ValueError("socket.request.max.bytes must be at least 1024")
    if config.max_inflight_per_connection < 1:
        raise ValueError("max.inflight.requests.per.connection must be at least 1")
    if config.max_connections < 1:
        raise ValueError("max.connections must be at least 1")
    # Kafka's rule: 0 only makes sense when overrides let some hosts in.
    if config.max_connections_per_ip < (0 if config.max_connections_per_ip_overrides else 1):
        raise ValueError("max.connections.per.ip must be at least 1 (0 only with max.connections.per.ip.overrides)")
    for key in ("connections.max.idle.ms", "socket.request.read.timeout.ms"):
        value = getattr(config, _KEYS[key][0])
        if value != -1 and value < 1:
            raise ValueError(f"{key} must be at least 1 (or -1: never)")
    config.log_config()  # raises ValueError on bad topic defaults
    return config
