"""`ringlog topics create|list|describe|delete|alter|add-partitions`, through client.admin.

`list` and `describe` print aligned tables, or JSON with --json. `describe` shows each topic's
config overrides (only the entries set on the topic, as kafka-topics.sh does) and, per partition,
leader, replicas, ISR and the log start/end offsets.
"""
from __future__ import annotations

import argparse

from ._common import (
    CONNECT_TIMEOUT,
    INT16_MAX,
    INT32_MAX,
    CliError,
    add_bootstrap,
    add_json,
    bootstrap_of,
    command,
    connected,
    key_value,
    positive_up_to,
    print_json,
    print_table,
)

# DescribeConfigs config_source values (Kafka's ConfigSource): 1 is an override set on the topic.
_SOURCE_TOPIC = 1
_ERR_UNKNOWN_TOPIC = 3
_ERR_TOPIC_EXISTS = 36


def register(subparsers: argparse._SubParsersAction) -> None:
    topics = subparsers.add_parser(
        "topics", help="create, list, describe, delete and alter topics",
        description="Manage the topics of a running broker.",
    )
    sub = topics.add_subparsers(dest="topics_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("create", help="create a topic", description="Create topic NAME.")
    p.add_argument("name", metavar="NAME")
    # CreateTopics carries the partition count as an int32 and the replication factor as an int16
    p.add_argument("--partitions", "-p", type=positive_up_to(INT32_MAX), metavar="N",
                   help="number of partitions (default: the broker's num.partitions)")
    p.add_argument("--replication-factor", "-r", type=positive_up_to(INT16_MAX), metavar="R",
                   help="replicas per partition (default: the broker's default.replication.factor; a "
                        "single broker has 1)")
    p.add_argument("--config", "-c", action="append", type=key_value, default=[], metavar="K=V",
                   help="a topic config, e.g. retention.ms=86400000 (repeatable)")
    p.add_argument("--if-not-exists", action="store_true", help="succeed when the topic exists")
    add_bootstrap(p)
    p.set_defaults(func=_create)

    p = sub.add_parser("list", help="list topics", description="List the topics and their partition counts.")
    p.add_argument("--internal", action="store_true", help="include internal topics (__consumer_offsets)")
    add_json(p)
    add_bootstrap(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("describe", help="partitions, offsets and config overrides of topics",
                       description="Describe topic NAME (all topics without NAME).")
    p.add_argument("names", metavar="NAME", nargs="*")
    p.add_argument("--internal", action="store_true", help="include internal topics when listing all")
    add_json(p)
    add_bootstrap(p)
    p.set_defaults(func=_describe)

    p = sub.add_parser("delete", help="delete a topic", description="Delete topic NAME and its data.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--if-exists", action="store_true", help="succeed when the topic does not exist")
    add_bootstrap(p)
    p.set_defaults(func=_delete)

    p = sub.add_parser("alter", help="set or remove topic configs",
                       description="Set (--config K=V) or remove (--delete-config K) config overrides "
                       "of topic NAME; other overrides stay as they are.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--config", "-c", action="append", type=key_value, default=[], metavar="K=V")
    p.add_argument("--delete-config", action="append", default=[], metavar="K",
                   help="remove this override (back to the default)")
    add_bootstrap(p)
    p.set_defaults(func=_alter)

    p = sub.add_parser("add-partitions", help="grow a topic to N partitions",
                       description="Grow topic NAME to N partitions in total (partitions are never removed).")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--partitions", "-p", type=positive_up_to(INT32_MAX), required=True, metavar="N",
                   help="the new total number of partitions")
    add_bootstrap(p)
    p.set_defaults(func=_add_partitions)


def open_admin(args: argparse.Namespace):
    from ringlog.client.admin import Admin

    return connected(Admin(bootstrap_of(args), client_id="ringlog-cli", request_timeout_ms=15000,
                           connect_timeout_ms=CONNECT_TIMEOUT * 1000, **args.security))


def _kafka_code(exc: BaseException) -> int | None:
    from ringlog.client.errors import KafkaError

    return exc.code if isinstance(exc, KafkaError) else None


def _explain(exc: BaseException, topic: str) -> CliError | None:
    """A sentence for the errors a topic command meets; None to let the generic text speak."""
    code = _kafka_code(exc)
    if code is None:
        return None
    detail = exc.message if exc.message and exc.message != topic else None
    if detail and detail.startswith(f"{topic}: "):
        # the admin client prefixes the broker's message with the topic, which the line names already
        detail = detail[len(topic) + 2:]
    extra = f": {detail}" if detail else ""
    if code == _ERR_UNKNOWN_TOPIC:
        return CliError(f"unknown topic {topic!r}")
    if code == _ERR_TOPIC_EXISTS:
        return CliError(f"topic {topic!r} already exists")
    if code == 17:
        return CliError(f"invalid topic name {topic!r}{extra}")
    if code == 37:
        return CliError(f"invalid number of partitions for {topic!r}{extra}")
    if code == 38:
        return CliError(f"invalid replication factor for {topic!r}{extra}")
    if code == 40:
        return CliError(f"invalid config for {topic!r}{extra}")
    return None


async def _partition_count(admin, topic: str) -> int:
    from ringlog.client.errors import KafkaError

    try:
        info = (await admin.describe_topics([topic]))[topic]
    except KafkaError as exc:
        raise (_explain(exc, topic) or exc) from None
    return len(info.partitions)


# --- create / delete / alter / add-partitions ---------------------------------------------------


@command("ringlog topics create")
async def _create(args: argparse.Namespace) -> int:
    from ringlog.client.admin import NewTopic
    from ringlog.client.errors import KafkaError

    async with open_admin(args) as admin:
        topic = NewTopic(args.name, args.partitions or -1, args.replication_factor or -1, dict(args.config))
        existed = False
        try:
            # TOPIC_ALREADY_EXISTS is caught here rather than with exist_ok, so that --if-not-exists
            # can say the topic was there already instead of claiming it was created
            await admin.create_topics([topic])
        except KafkaError as exc:
            if not (args.if_not_exists and exc.code == _ERR_TOPIC_EXISTS):
                raise (_explain(exc, args.name) or exc) from None
            existed = True
        n = await _partition_count(admin, args.name)
    plural = "s" if n != 1 else ""
    if existed:
        print(f"Topic {args.name} already exists with {n} partition{plural}; nothing created.")
    else:
        print(f"Created topic {args.name} with {n} partition{plural}.")
    return 0


@command("ringlog topics delete")
async def _delete(args: argparse.Namespace) -> int:
    from ringlog.client.errors import KafkaError

    async with open_admin(args) as admin:
        try:
            # not missing_ok: --if-exists must tell "deleted" from "was not there"
            await admin.delete_topics([args.name])
        except KafkaError as exc:
            if not (args.if_exists and exc.code == _ERR_UNKNOWN_TOPIC):
                raise (_explain(exc, args.name) or exc) from None
            print(f"Topic {args.name} does not exist; nothing deleted.")
            return 0
    print(f"Deleted topic {args.name}.")
    return 0


@command("ringlog topics alter")
async def _alter(args: argparse.Namespace) -> int:
    from ringlog.client.admin import RESOURCE_TOPIC
    from ringlog.client.errors import KafkaError

    if not args.config and not args.delete_config:
        raise CliError("nothing to change: give --config K=V and/or --delete-config K", 2)
    changes: dict[str, str | None] = dict(args.config)
    for k in args.delete_config:
        changes[k] = None
    async with open_admin(args) as admin:
        await _partition_count(admin, args.name)  # a clear 'unknown topic' first
        try:
            await admin.alter_configs(RESOURCE_TOPIC, args.name, changes)
        except KafkaError as exc:
            raise (_explain(exc, args.name) or exc) from None
    parts = [f"{k}={v}" for k, v in args.config] + [f"-{k}" for k in args.delete_config]
    print(f"Altered topic {args.name}: {', '.join(parts)}.")
    return 0


@command("ringlog topics add-partitions")
async def _add_partitions(args: argparse.Namespace) -> int:
    from ringlog.client.errors import KafkaError

    async with open_admin(args) as admin:
        before = await _partition_count(admin, args.name)
        if args.partitions <= before:
            raise CliError(
                f"topic {args.name!r} already has {before} partition{'s' if before != 1 else ''}; "
                f"--partitions is the new total and must be more"
            )
        try:
            await admin.create_partitions({args.name: args.partitions})
        except KafkaError as exc:
            raise (_explain(exc, args.name) or exc) from None
    print(f"Topic {args.name} now has {args.partitions} partitions (was {before}).")
    return 0


# --- list / describe ---------------------------------------------------------------------------


@command("ringlog topics list")
async def _list(args: argparse.Namespace) -> int:
    async with open_admin(args) as admin:
        infos = await admin.describe_topics(None)
    rows = sorted(
        (name, len(info.partitions), bool(info.is_internal))
        for name, info in infos.items()
        if not info.error_code and (args.internal or not info.is_internal)
    )
    if args.json:
        print_json([{"name": n, "partitions": p, "internal": i} for n, p, i in rows])
    else:
        print_table(["TOPIC", "PARTITIONS"], [(n, p) for n, p, _ in rows], right=["PARTITIONS"])
    return 0


async def topic_config_overrides(admin, topic: str) -> dict[str, str | None]:
    """Config entries set on the topic itself (config_source DYNAMIC_TOPIC_CONFIG).

    client.admin.describe_configs returns every entry without its source; the source is what
    tells an override from a default, so this asks DescribeConfigs on the admin's own
    connection and keeps the overrides. (Before v1 there is no source: is_default is used.)"""
    from ringlog.client.connection import ApiKey
    from ringlog.client.errors import KafkaError
    from ringlog.client.admin import RESOURCE_TOPIC

    conn = await admin.cluster.any_connection()
    b = conn.make(ApiKey.DESCRIBE_CONFIGS)
    resp = await conn.request(b(
        resources=[b("DescribeConfigsResource", resource_type=RESOURCE_TOPIC, resource_name=topic,
                     configuration_keys=None)],
        include_synonyms=False, include_documentation=False,
    ))
    out: dict[str, str | None] = {}
    for r in resp.results:
        if r.error_code:
            raise KafkaError(r.error_code, getattr(r, "error_message", None) or topic)
        for c in r.configs:
            source = getattr(c, "config_source", None)
            if source is not None:
                if int(source) == _SOURCE_TOPIC:
                    out[c.name] = c.value
            elif not getattr(c, "is_default", True):
                out[c.name] = c.value
    return dict(sorted(out.items()))


@command("ringlog topics describe")
async def _describe(args: argparse.Namespace) -> int:
    from ringlog.client.errors import KafkaError

    async with open_admin(args) as admin:
        if args.names:
            infos = {}
            for name in args.names:
                try:
                    infos.update(await admin.describe_topics([name]))
                except KafkaError as exc:
                    raise (_explain(exc, name) or exc) from None
        else:
            infos = {
                n: i for n, i in (await admin.describe_topics(None)).items()
                if not i.error_code and (args.internal or not i.is_internal)
            }
        names = sorted(infos)
        tps = [(n, p) for n in names for p in sorted(infos[n].partitions)]
        starts = await admin.list_offsets({tp: -2 for tp in tps}) if tps else {}
        ends = await admin.list_offsets({tp: -1 for tp in tps}) if tps else {}
        configs = {n: await topic_config_overrides(admin, n) for n in names}
    docs = []
    for n in names:
        info = infos[n]
        parts = []
        for p in sorted(info.partitions):
            pi = info.partitions[p]
            parts.append({
                "partition": p,
                "leader": pi.leader,
                "replicas": list(pi.replicas),
                "isr": list(pi.isr),
                "start_offset": starts.get((n, p)),
                "end_offset": ends.get((n, p)),
            })
        docs.append({"name": n, "internal": bool(info.is_internal), "partitions": parts, "configs": configs[n]})
    if args.json:
        print_json(docs)
        return 0
    print_table(
        ["TOPIC", "PARTITIONS", "CONFIGS"],
        [(d["name"], len(d["partitions"]), ",".join(f"{k}={v}" for k, v in d["configs"].items()) or "-")
         for d in docs],
        right=["PARTITIONS"],
    )
    print()
    rows = [
        (d["name"], p["partition"], p["leader"], ",".join(map(str, p["replicas"])),
         ",".join(map(str, p["isr"])), p["start_offset"], p["end_offset"])
        for d in docs for p in d["partitions"]
    ]
    print_table(
        ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "START-OFFSET", "END-OFFSET"],
        rows,
        right=["PARTITION", "LEADER", "START-OFFSET", "END-OFFSET"],
    )
    return 0
