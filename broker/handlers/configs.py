"""DescribeConfigs (32) v1-4, AlterConfigs (33) v0-2, IncrementalAlterConfigs (44) v0-1.

Resources: topics (type 2) and the broker (type 4, name "" or the node id). Broker configs are
static (file and command line), so they are described read-only and altering them is refused with
INVALID_REQUEST, like Kafka does for configs that cannot change at run time. Other resource types
(broker loggers, groups, client metrics) answer INVALID_REQUEST.

Topic configs: the catalogue (broker.topic_configs) lists every topic config ringlog accepts,
with Kafka's names, types, defaults and ranges. Those the storage engine implements (retention.ms, retention.bytes,
segment.bytes, segment.ms, max.message.bytes, cleanup.policy, message.timestamp.type, ...) are
applied live to the partition logs when changed; the replication-only ones (min.insync.replicas,
unclean.leader.election.enable, ...) are validated and stored, and have no effect on a single node.
Unknown names ("Unknown topic config name: X", Kafka's words), values of the wrong type or out of
range -> INVALID_CONFIG with a message naming the config, the value and what is expected (the same
message a broker key gets for the same mistake: storage.configdef). Overrides persist in the topics store (broker.metadata, topics.json).

Config sources (DescribeConfigs): 1 DYNAMIC_TOPIC_CONFIG (a topic override), 4 STATIC_BROKER_CONFIG
(set in the broker's config file, e.g. log.retention.ms), 5 DEFAULT_CONFIG. With include_synonyms a
topic config lists its override, its broker-level setting and the default, most specific first.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

import attrs
from kio.schema.errors import ErrorCode

from ringlog.storage.configdef import Setting

from ..errors import KafkaError
from ..topic_configs import TOPIC_CONFIGS as CATALOGUE
from ..security import authorizer as acl
from ..security.check import config_resource, denial
from . import RequestContext, handler, make, nested

log = logging.getLogger("ringlog.configs")

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4

SOURCE_DYNAMIC_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5

TYPE_BOOLEAN, TYPE_STRING, TYPE_INT, TYPE_SHORT, TYPE_LONG, TYPE_DOUBLE, TYPE_LIST = 1, 2, 3, 4, 5, 6, 7

OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3

_TYPE_CODES = {"boolean": TYPE_BOOLEAN, "string": TYPE_STRING, "int": TYPE_INT, "short": TYPE_SHORT,
               "long": TYPE_LONG, "double": TYPE_DOUBLE, "list": TYPE_LIST}


@attrs.frozen
class ConfigDef:
    """A topic config as the APIs describe it, from the catalogue (broker.topic_configs)."""

    name: str
    type: int
    doc: str
    default: str
    # Name of the broker-level setting that provides the default ("log.retention.ms").
    broker_synonym: str | None
    setting: Setting
    # Whether the storage engine applies it (a storage.log.LogConfig field).
    applied: bool


_DEFS = [
    ConfigDef(t.name, _TYPE_CODES[t.setting.kind.type_name], t.setting.doc, t.default, t.setting.synonym,
              t.setting, t.applied)
    for t in CATALOGUE.values()
]
TOPIC_CONFIGS: dict[str, ConfigDef] = {d.name: d for d in _DEFS}


# --- values ------------------------------------------------------------------------------------


def normalize_value(d: ConfigDef, value: str) -> str:
    """`value` in Kafka's text form; SettingError (a ValueError, one line) when it is bad, with
    the message the broker's own keys get for the same mistake."""
    return d.setting.text(d.setting.parse(value))


def validate_topic_configs(broker: Any, configs: Mapping[str, str | None]) -> dict[str, str]:
    """Normalised overrides, or KafkaError(INVALID_CONFIG) naming the first bad config."""
    out: dict[str, str] = {}
    for name, value in configs.items():
        d = TOPIC_CONFIGS.get(name)
        if d is None:
            raise KafkaError(ErrorCode.invalid_config, f"Unknown topic config name: {name}")
        if value is None:
            raise KafkaError(ErrorCode.invalid_config, f"Null value not supported for topic config: {name}")
        try:
            out[name] = normalize_value(d, value)
        except ValueError as exc:
            raise KafkaError(ErrorCode.invalid_config, str(exc)) from None
    # The storage engine's own range checks (and cross-field ones).
    broker.validate_topic_configs({k: v for k, v in out.items() if TOPIC_CONFIGS[k].applied})
    return out


# --- describing --------------------------------------------------------------------------------


@attrs.frozen
class Synonym:
    name: str
    value: str | None
    source: int


@attrs.frozen
class ConfigEntry:
    name: str
    value: str | None
    read_only: bool
    source: int
    is_sensitive: bool
    synonyms: tuple[Synonym, ...]
    config_type: int
    documentation: str | None


def _storage_defaults() -> dict[str, str]:
    from ringlog.storage.log import LogConfig

    return LogConfig().to_topic_configs()


def topic_config_entries(broker: Any, topic: str, overrides: Mapping[str, str] | None = None) -> list[ConfigEntry]:
    """Every topic config of `topic` with its effective value and source."""
    if overrides is None:
        info = broker.metadata.get(topic)
        overrides = dict(info.configs) if info is not None else {}
    effective_log = broker.default_log_config.with_topic_configs(
        {k: v for k, v in overrides.items() if k in TOPIC_CONFIGS and TOPIC_CONFIGS[k].applied}
    ).to_topic_configs()
    broker_log = broker.default_log_config.to_topic_configs()
    storage_log = _storage_defaults()
    topic_defaults = dict(getattr(broker.config, "topic_defaults", {}) or {})
    entries = []
    for d in _DEFS:
        synonyms: list[Synonym] = []
        if d.applied:
            default_value = storage_log.get(d.name)
            broker_value = broker_log.get(d.name)
            broker_set = d.name in topic_defaults or broker_value != default_value
            effective = effective_log.get(d.name)
        else:
            default_value = d.default
            broker_value = topic_defaults.get(d.name, d.default)
            broker_set = d.name in topic_defaults
            effective = broker_value
        if d.name in overrides:
            effective = overrides[d.name]
            source = SOURCE_DYNAMIC_TOPIC
            synonyms.append(Synonym(d.name, overrides[d.name], SOURCE_DYNAMIC_TOPIC))
        else:
            source = SOURCE_STATIC_BROKER if broker_set else SOURCE_DEFAULT
        synonym_name = d.broker_synonym or d.name
        if broker_set:
            synonyms.append(Synonym(synonym_name, broker_value, SOURCE_STATIC_BROKER))
        synonyms.append(Synonym(synonym_name, default_value, SOURCE_DEFAULT))
        entries.append(ConfigEntry(
            name=d.name, value=effective, read_only=False, source=source, is_sensitive=False,
            synonyms=tuple(synonyms), config_type=d.type, documentation=d.doc,
        ))
    return entries


def broker_config_entries(broker: Any) -> list[ConfigEntry]:
    """The broker's static settings (read-only), Kafka-style names."""
    from ..config import BrokerConfig

    cfg = broker.config
    base = BrokerConfig()
    rows: list[tuple[str, Any, Any, int, str]] = [
        ("node.id", cfg.node_id, base.node_id, TYPE_INT, "This broker's id."),
        ("broker.id", cfg.node_id, base.node_id, TYPE_INT, "This broker's id."),
        ("cluster.id", cfg.cluster_id, base.cluster_id, TYPE_STRING, "The cluster id reported to clients."),
        ("log.dirs", cfg.data_dir, base.data_dir, TYPE_STRING, "The data directory."),
        ("listeners", f"PLAINTEXT://{cfg.listen_host}:{cfg.listen_port}",
         f"PLAINTEXT://{base.listen_host}:{base.listen_port}", TYPE_LIST, "The listening address."),
        ("advertised.listeners", f"PLAINTEXT://{broker.host}:{broker.port}", None, TYPE_LIST,
         "The address given to clients."),
        ("message.max.bytes", cfg.message_max_bytes, base.message_max_bytes, TYPE_INT,
         "The largest record batch size allowed (topic default of max.message.bytes)."),
        ("socket.request.max.bytes", cfg.socket_request_max_bytes, base.socket_request_max_bytes, TYPE_INT,
         "The largest request accepted."),
        ("max.connections", cfg.max_connections, base.max_connections, TYPE_INT, "Connection limit."),
        ("max.connections.per.ip", cfg.max_connections_per_ip, base.max_connections_per_ip, TYPE_INT,
         "Connections one client address may hold."),
        ("max.connections.per.ip.overrides",
         ",".join(f"{h}:{n}" for h, n in cfg.max_connections_per_ip_overrides.items()), "", TYPE_STRING,
         "Per-host or per-address exceptions to max.connections.per.ip."),
        ("connections.max.idle.ms", cfg.connections_max_idle_ms, base.connections_max_idle_ms, TYPE_LONG,
         "Idle connections are closed after this long."),
        ("socket.request.read.timeout.ms", cfg.socket_request_read_timeout_ms, base.socket_request_read_timeout_ms,
         TYPE_LONG, "A request frame that has begun must arrive whole within this long."),
        ("num.partitions", cfg.num_partitions, base.num_partitions, TYPE_INT,
         "Partitions of a topic created without a count."),
        ("default.replication.factor", 1, 1, TYPE_INT, "Always 1: a single node."),
        ("auto.create.topics.enable", str(cfg.auto_create_topics).lower(), str(base.auto_create_topics).lower(),
         TYPE_BOOLEAN, "Create topics on first use."),
        ("fsync", cfg.fsync, base.fsync, TYPE_STRING, "When appended data is fsynced."),
        ("flush.interval.ms", cfg.flush_interval_ms, base.flush_interval_ms, TYPE_LONG,
         "Flush interval under the interval policy."),
        ("backpressure", cfg.backpressure, base.backpressure, TYPE_STRING, "What a full ring does: block or reject."),
        ("ring.bytes.per.partition", cfg.ring_bytes_per_partition, base.ring_bytes_per_partition, TYPE_LONG,
         "Size of each partition's in-memory ring."),
        ("log.retention.check.interval.ms", cfg.retention_check_interval_ms, base.retention_check_interval_ms,
         TYPE_LONG, "How often retention runs."),
    ]
    topic_defaults = dict(cfg.topic_defaults)
    storage_log = _storage_defaults()
    broker_log = broker.default_log_config.to_topic_configs()
    for d in _DEFS:
        if d.broker_synonym is None or d.broker_synonym in {r[0] for r in rows}:
            continue
        if d.applied:
            rows.append((d.broker_synonym, broker_log[d.name], storage_log[d.name], d.type, d.doc))
        else:
            rows.append((d.broker_synonym, topic_defaults.get(d.name, d.default), d.default, d.type, d.doc))
    entries = []
    for name, value, default, ctype, doc in rows:
        value_s = None if value is None else str(value)
        default_s = None if default is None else str(default)
        source = SOURCE_DEFAULT if value_s == default_s else SOURCE_STATIC_BROKER
        synonyms = [Synonym(name, value_s, source)]
        if source == SOURCE_STATIC_BROKER and default_s is not None:
            synonyms.append(Synonym(name, default_s, SOURCE_DEFAULT))
        entries.append(ConfigEntry(name=name, value=value_s, read_only=True, source=source, is_sensitive=False,
                                   synonyms=tuple(synonyms), config_type=ctype, documentation=doc))
    return entries


def _broker_resource_error(broker: Any, name: str) -> KafkaError | None:
    if name not in ("", str(broker.node_id)):
        return KafkaError(ErrorCode.invalid_request,
                          f"Unexpected broker id, expected {broker.node_id} or empty string, but received {name}")
    return None


# --- DescribeConfigs ---------------------------------------------------------------------------


@handler(api_key=32, min_version=1, max_version=4)
async def describe_configs(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    Response = ctx.response_class()
    Result = nested(Response, "DescribeConfigsResult")
    Resource = nested(Response, "DescribeConfigsResourceResult")
    SynonymCls = nested(Response, "DescribeConfigsSynonym")
    include_synonyms = bool(getattr(request, "include_synonyms", False))
    include_docs = bool(getattr(request, "include_documentation", False))
    results = []
    for res in request.resources:
        rtype = int(res.resource_type)
        name = res.resource_name
        error: KafkaError | None = None
        entries: list[ConfigEntry] = []
        if not ctx.authorize(acl.DESCRIBE_CONFIGS, *config_resource(rtype, name)):
            error = denial(config_resource(rtype, name)[0], name)
        elif rtype == RESOURCE_TOPIC:
            from ..metadata import topic_name_error

            if topic_name_error(name):
                error = KafkaError(ErrorCode.invalid_topic_exception, topic_name_error(name) or "")
            elif broker.metadata.get(name) is None:
                error = KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
            else:
                entries = topic_config_entries(broker, name)
        elif rtype == RESOURCE_BROKER:
            error = _broker_resource_error(broker, name)
            if error is None:
                entries = broker_config_entries(broker)
        else:
            error = KafkaError(ErrorCode.invalid_request, f"resource type {rtype} is not supported")
        keys = res.configuration_keys
        if keys is not None and len(keys) > 0:
            wanted = set(keys)
            entries = [e for e in entries if e.name in wanted]
        configs = tuple(
            make(
                Resource,
                name=e.name,
                value=e.value,
                read_only=e.read_only,
                config_source=e.source,
                is_default=e.source == SOURCE_DEFAULT,
                is_sensitive=e.is_sensitive,
                synonyms=tuple(SynonymCls(name=s.name, value=s.value, source=s.source) for s in e.synonyms)
                if include_synonyms else (),
                config_type=e.config_type,
                documentation=e.documentation if include_docs else None,
            )
            for e in entries
        )
        results.append(make(
            Result,
            error_code=error.code if error else ErrorCode.none,
            error_message=error.message if error else None,
            resource_type=rtype,
            resource_name=name,
            configs=configs,
        ))
    return make(Response, throttle_time=datetime.timedelta(0), results=tuple(results))


# --- AlterConfigs / IncrementalAlterConfigs ----------------------------------------------------


async def _alter_topic(broker: Any, name: str, new_overrides: dict[str, str], validate_only: bool) -> None:
    from ..metadata import topic_name_error

    if topic_name_error(name):
        raise KafkaError(ErrorCode.invalid_topic_exception, topic_name_error(name) or "")
    if broker.metadata.get(name) is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
    overrides = validate_topic_configs(broker, new_overrides)
    await broker.alter_topic_configs(name, overrides, validate_only=validate_only)
    if not validate_only:
        log.info("topic %s configs now %s", name, overrides)


def _duplicates(resources: Any) -> set[tuple[int, str]]:
    seen: set[tuple[int, str]] = set()
    dup: set[tuple[int, str]] = set()
    for r in resources:
        key = (int(r.resource_type), r.resource_name)
        (dup if key in seen else seen).add(key)
    return dup


def _alter_response(ctx: RequestContext, answers: list[tuple[int, str, KafkaError | None]]) -> object:
    Response = ctx.response_class()
    Item = nested(Response, "AlterConfigsResourceResponse")
    return make(
        Response,
        throttle_time=datetime.timedelta(0),
        responses=tuple(
            make(Item, error_code=e.code if e else ErrorCode.none, error_message=e.message if e else None,
                 resource_type=t, resource_name=n)
            for t, n, e in answers
        ),
    )


@handler(api_key=33, min_version=0, max_version=2)
async def alter_configs(ctx: RequestContext, request) -> object:
    """Legacy AlterConfigs: the given set REPLACES the resource's overrides."""
    broker = ctx.broker
    dup = _duplicates(request.resources)
    answers: list[tuple[int, str, KafkaError | None]] = []
    for res in request.resources:
        rtype, name = int(res.resource_type), res.resource_name
        error: KafkaError | None = None
        try:
            if (rtype, name) in dup:
                raise KafkaError(ErrorCode.invalid_request, f"Duplicate resource {name!r} in the request")
            ctx.require(acl.ALTER_CONFIGS, *config_resource(rtype, name))
            if rtype == RESOURCE_TOPIC:
                # A null value means "no override" in this API.
                configs = {c.name: c.value for c in res.configs if c.value is not None}
                await _alter_topic(broker, name, configs, bool(request.validate_only))
            elif rtype == RESOURCE_BROKER:
                error = _broker_resource_error(broker, name)
                if error is None and len(res.configs):
                    raise KafkaError(ErrorCode.invalid_request, "Cannot update these configs dynamically: "
                                     + ", ".join(c.name for c in res.configs))
            else:
                raise KafkaError(ErrorCode.invalid_request, f"resource type {rtype} is not supported")
        except KafkaError as exc:
            error = exc
        answers.append((rtype, name, error))
    return _alter_response(ctx, answers)


def apply_incremental(broker: Any, current: Mapping[str, str], ops: list[tuple[str, int, str | None]],
                      topic: str) -> dict[str, str]:
    """The overrides after SET/DELETE/APPEND/SUBTRACT; KafkaError on a bad operation."""
    result = dict(current)
    names = [n for n, _, _ in ops]
    if len(set(names)) != len(names):
        raise KafkaError(ErrorCode.invalid_request, "Error due to duplicate config keys")
    defaults = None
    for name, op, value in ops:
        d = TOPIC_CONFIGS.get(name)
        if d is None:
            raise KafkaError(ErrorCode.invalid_config, f"Unknown topic config name: {name}")
        if op == OP_SET:
            if value is None:
                raise KafkaError(ErrorCode.invalid_config, f"Null value not supported for topic config: {name}")
            result[name] = value
        elif op == OP_DELETE:
            result.pop(name, None)
        elif op in (OP_APPEND, OP_SUBTRACT):
            if d.type != TYPE_LIST:
                verb = "append" if op == OP_APPEND else "subtract"
                raise KafkaError(ErrorCode.invalid_config,
                                 f"Config value {verb} is not allowed for config key: {name}")
            if name in result:
                old_text = result[name]
            else:
                if defaults is None:
                    defaults = {e.name: e.value for e in topic_config_entries(broker, topic, {})}
                old_text = defaults.get(name) or ""
            old = [p.strip() for p in old_text.split(",") if p.strip()]
            items = [p.strip() for p in (value or "").split(",") if p.strip()]
            if op == OP_APPEND:
                new = old + [i for i in items if i not in old]
            else:
                new = [o for o in old if o not in items]
            result[name] = ",".join(new)
        else:
            raise KafkaError(ErrorCode.invalid_request, f"unknown config operation {op}")
    return result


@handler(api_key=44, min_version=0, max_version=1)
async def incremental_alter_configs(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    dup = _duplicates(request.resources)
    answers: list[tuple[int, str, KafkaError | None]] = []
    for res in request.resources:
        rtype, name = int(res.resource_type), res.resource_name
        error: KafkaError | None = None
        try:
            if (rtype, name) in dup:
                raise KafkaError(ErrorCode.invalid_request, f"Duplicate resource {name!r} in the request")
            ctx.require(acl.ALTER_CONFIGS, *config_resource(rtype, name))
            ops = [(c.name, int(c.config_operation), c.value) for c in res.configs]
            if rtype == RESOURCE_TOPIC:
                info = broker.metadata.get(name)
                if info is None:
                    from ..metadata import topic_name_error

                    if topic_name_error(name):
                        raise KafkaError(ErrorCode.invalid_topic_exception, topic_name_error(name) or "")
                    raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
                new = apply_incremental(broker, info.configs, ops, name)
                await _alter_topic(broker, name, new, bool(request.validate_only))
            elif rtype == RESOURCE_BROKER:
                error = _broker_resource_error(broker, name)
                if error is None and ops:
                    raise KafkaError(ErrorCode.invalid_request, "Cannot update these configs dynamically: "
                                     + ", ".join(n for n, _, _ in ops))
            else:
                raise KafkaError(ErrorCode.invalid_request, f"resource type {rtype} is not supported")
        except KafkaError as exc:
            error = exc
        answers.append((rtype, name, error))
    return _alter_response(ctx, answers)
