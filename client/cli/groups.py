"""`ringlog groups list|describe|reset-offsets|delete`, through client.admin (the views of
kafka-consumer-groups.sh).

describe GROUP prints one row per partition the group has committed or is assigned:

    GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID

("-" where there is no committed offset or no member owns the partition); --state prints the
group's coordinator, assignment strategy, state and member count; --members one row per member.

reset-offsets is a dry run unless --execute: it prints the plan (current and new offset per
partition). New offsets are clamped into each partition's [log start, log end]. Executing needs
an inactive group (no members: state Empty or Dead), since a live member would overwrite the
offsets with its own commits.
"""
from __future__ import annotations

import argparse
import re
import sys

from ._common import (
    CliError,
    UsageError,
    add_bootstrap,
    add_json,
    command,
    non_negative,
    parse_datetime_ms,
    print_json,
    print_table,
)
from .topics import open_admin

_ERR_UNKNOWN_TOPIC = 3
_ERR_NON_EMPTY_GROUP = 68
_ERR_GROUP_ID_NOT_FOUND = 69
_INACTIVE = ("Empty", "Dead")


def register(subparsers: argparse._SubParsersAction) -> None:
    groups = subparsers.add_parser(
        "groups", help="list, describe, reset and delete consumer groups",
        description="Inspect and manage the consumer groups of a running broker.",
    )
    sub = groups.add_subparsers(dest="groups_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("list", help="list groups", description="List the groups, their state and size.")
    add_json(p)
    add_bootstrap(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("describe", help="offsets and lag (or --state, --members) of a group",
                       description="Committed offsets, log-end offsets and lag per partition of "
                       "GROUP, with the member owning each partition.")
    p.add_argument("group", metavar="GROUP")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--state", action="store_true", help="coordinator, strategy, state, #members")
    view.add_argument("--members", action="store_true", help="one row per member")
    p.add_argument("--verbose", "-v", action="store_true", help="with --members: the partitions of each")
    add_json(p)
    add_bootstrap(p)
    p.set_defaults(func=_describe)

    p = sub.add_parser("reset-offsets", help="move a group's committed offsets (dry run by default)",
                       description="Plan (and with --execute apply) new committed offsets for GROUP.")
    p.add_argument("group", metavar="GROUP")
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--topic", action="append", metavar="TOPIC[:P,P...]",
                       help="a topic, or some of its partitions (repeatable)")
    scope.add_argument("--all-topics", action="store_true", help="every topic the group has committed")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the log start of each partition")
    to.add_argument("--to-latest", action="store_true", help="the log end of each partition")
    to.add_argument("--to-offset", type=non_negative, metavar="N", help="offset N (clamped to the log)")
    to.add_argument("--to-datetime", metavar="ISO",
                    help="the first offset at or after this time (UTC unless a zone is given)")
    to.add_argument("--shift-by", type=int, metavar="N", help="move the committed offsets by N (may be negative)")
    p.add_argument("--execute", action="store_true", help="apply the plan (default: only print it)")
    add_json(p)
    add_bootstrap(p)
    p.set_defaults(func=_reset)

    p = sub.add_parser("delete", help="delete a group and its offsets",
                       description="Delete GROUP and its committed offsets (it must have no members).")
    p.add_argument("group", metavar="GROUP")
    add_bootstrap(p)
    p.set_defaults(func=_delete)


def _group_error(exc: BaseException, group: str) -> BaseException:
    from ringlog.client.errors import KafkaError

    if isinstance(exc, KafkaError):
        if exc.code == _ERR_GROUP_ID_NOT_FOUND:
            return CliError(f"unknown group {group!r}")
        if exc.code == _ERR_NON_EMPTY_GROUP:
            return CliError(f"group {group!r} has active members; stop them first")
    return exc


async def _load(admin, group: str):
    """(description, committed offsets); CliError when the group does not exist."""
    from ringlog.client.errors import KafkaError

    try:
        desc = (await admin.describe_groups([group]))[group]
        committed = await admin.list_group_offsets(group)
    except KafkaError as exc:
        raise _group_error(exc, group) from None
    if desc.state == "Dead" and not committed and not desc.members:
        raise CliError(f"unknown group {group!r}")
    return desc, committed


# --- list ---------------------------------------------------------------------------------------


@command("ringlog groups list")
async def _list(args: argparse.Namespace) -> int:
    async with open_admin(args) as admin:
        found = await admin.list_groups()
        descs = await admin.describe_groups([g for g, _ in found]) if found else {}
    rows = []
    for g, ptype in found:
        d = descs.get(g)
        rows.append({"group": g, "protocol_type": ptype or None, "state": d.state if d else None,
                     "members": len(d.members) if d else None})
    if args.json:
        print_json(rows)
    else:
        print_table(["GROUP", "STATE", "MEMBERS"], [(r["group"], r["state"], r["members"]) for r in rows],
                    right=["MEMBERS"])
    return 0


# --- describe -----------------------------------------------------------------------------------


@command("ringlog groups describe")
async def _describe(args: argparse.Namespace) -> int:
    group = args.group
    async with open_admin(args) as admin:
        desc, committed = await _load(admin, group)
        owner = {tp: m for m in desc.members for tp in m.assignment}
        tps = sorted(set(committed) | set(owner))
        ends = await admin.list_offsets({tp: -1 for tp in tps}) if tps else {}
        coordinator = None
        if args.state or args.json:
            node = await admin.cluster.coordinator(group)
            b = admin.cluster.brokers.get(node)
            coordinator = {"id": node, "host": b.host if b else None, "port": b.port if b else None}

    if args.state:
        doc = {"group": group, "coordinator": coordinator, "assignment_strategy": desc.protocol or None,
               "state": desc.state, "members": len(desc.members)}
        if args.json:
            print_json(doc)
        else:
            c = coordinator
            print_table(
                ["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"],
                [(group, f"{c['host']}:{c['port']} ({c['id']})", desc.protocol or "-", desc.state, len(desc.members))],
                right=["#MEMBERS"],
            )
        return 0

    if args.members:
        docs = [
            {"group": group, "consumer_id": m.member_id, "group_instance_id": m.group_instance_id,
             "host": m.client_host, "client_id": m.client_id,
             "assignment": [{"topic": t, "partition": p} for t, p in sorted(m.assignment)]}
            for m in sorted(desc.members, key=lambda m: m.member_id)
        ]
        if args.json:
            print_json(docs)
            return 0
        if not docs:
            print(f"Consumer group '{group}' has no active members.", file=sys.stderr)
            return 0
        headers = ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
        rows = []
        for d in docs:
            row = [group, d["consumer_id"], d["host"], d["client_id"], len(d["assignment"])]
            if args.verbose:
                row.append(_assignment_text(d["assignment"]))
            rows.append(row)
        if args.verbose:
            headers.append("ASSIGNMENT")
        print_table(headers, rows, right=["#PARTITIONS"])
        return 0

    rows = []
    for tp in tps:
        cur = committed.get(tp)
        end = ends.get(tp)
        m = owner.get(tp)
        rows.append({
            "group": group, "topic": tp.topic, "partition": tp.partition,
            "current_offset": cur, "log_end_offset": end,
            "lag": (max(end - cur, 0) if cur is not None and end is not None else None),
            "consumer_id": m.member_id if m else None, "host": m.client_host if m else None,
            "client_id": m.client_id if m else None,
        })
    if args.json:
        print_json({"group": group, "state": desc.state, "coordinator": coordinator, "partitions": rows})
        return 0
    if not desc.members:
        print(f"Consumer group '{group}' has no active members.", file=sys.stderr)
    print_table(
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"],
        [[r["group"], r["topic"], r["partition"], r["current_offset"], r["log_end_offset"], r["lag"],
          r["consumer_id"], r["host"], r["client_id"]] for r in rows],
        right=["PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"],
    )
    return 0


def _assignment_text(assignment: list[dict]) -> str:
    by_topic: dict[str, list[int]] = {}
    for a in assignment:
        by_topic.setdefault(a["topic"], []).append(a["partition"])
    return ",".join(f"{t}({','.join(map(str, ps))})" for t, ps in sorted(by_topic.items())) or "-"


# --- reset-offsets ------------------------------------------------------------------------------

_TOPIC_SPEC = re.compile(r"^(?P<topic>[^:]+)(?::(?P<parts>\d+(?:,\d+)*))?$")


def _topic_specs(values: list[str]) -> list[tuple[str, list[int] | None]]:
    out = []
    for v in values:
        m = _TOPIC_SPEC.match(v)
        if not m:
            raise UsageError(f"--topic {v!r}: expected TOPIC or TOPIC:P,P,...")
        parts = [int(x) for x in m.group("parts").split(",")] if m.group("parts") else None
        out.append((m.group("topic"), parts))
    return out


@command("ringlog groups reset-offsets")
async def _reset(args: argparse.Namespace) -> int:
    from ringlog.client.consumer import TopicPartition
    from ringlog.client.errors import KafkaError

    group = args.group
    when_ms = None
    if args.to_datetime is not None:
        try:
            when_ms = parse_datetime_ms(args.to_datetime)
        except ValueError as exc:
            raise UsageError(f"--to-datetime: {exc}") from None
    specs = _topic_specs(args.topic) if args.topic else []
    async with open_admin(args) as admin:
        try:
            desc = (await admin.describe_groups([group]))[group]
            committed = await admin.list_group_offsets(group)
        except KafkaError as exc:
            raise _group_error(exc, group) from None
        if args.all_topics:
            tps = sorted(committed)
            if not tps:
                raise CliError(f"group {group!r} has no committed offsets (name the topics with --topic)")
        else:
            tps = []
            for topic, parts in specs:
                try:
                    info = (await admin.describe_topics([topic]))[topic]
                except KafkaError as exc:
                    if exc.code == _ERR_UNKNOWN_TOPIC:
                        raise CliError(f"unknown topic {topic!r}") from None
                    raise
                if parts is not None:
                    missing = sorted(set(parts) - set(info.partitions))
                    if missing:
                        raise CliError(f"topic {topic!r} has no partition {missing[0]}")
                for p in sorted(parts if parts is not None else info.partitions):
                    tps.append(TopicPartition(topic, p))
        starts = await admin.list_offsets({tp: -2 for tp in tps})
        ends = await admin.list_offsets({tp: -1 for tp in tps})
        if when_ms is not None:
            at = await admin.list_offsets({tp: when_ms for tp in tps})
        plan = {}
        for tp in tps:
            lo, hi = starts[tp], ends[tp]
            cur = committed.get(tp)
            if args.to_earliest:
                new = lo
            elif args.to_latest:
                new = hi
            elif args.to_offset is not None:
                new = args.to_offset
            elif when_ms is not None:
                new = at[tp] if at[tp] >= 0 else hi
            else:
                # shifting an uncommitted partition starts from its log start, as Kafka does
                new = (cur if cur is not None else lo) + args.shift_by
            plan[tp] = min(max(new, lo), hi)
        active = desc.state not in _INACTIVE and bool(desc.members)
        if args.execute:
            if active:
                raise CliError(
                    f"group {group!r} is {desc.state} with {len(desc.members)} member"
                    f"{'s' if len(desc.members) != 1 else ''}: offsets can only be reset while it has none"
                )
            try:
                await admin.alter_group_offsets(group, plan)
            except KafkaError as exc:
                raise _group_error(exc, group) from None
    rows = [{"group": group, "topic": tp.topic, "partition": tp.partition,
             "current_offset": committed.get(tp), "new_offset": plan[tp]} for tp in tps]
    if args.json:
        print_json({"group": group, "executed": bool(args.execute), "partitions": rows})
    else:
        print_table(
            ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
            [[r["group"], r["topic"], r["partition"], r["current_offset"], r["new_offset"]] for r in rows],
            right=["PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
        )
    if not args.execute:
        note = "dry run: nothing changed; add --execute to apply"
        if active:
            note += f" (group {group!r} has active members: stop them first)"
        print(f"ringlog groups reset-offsets: {note}", file=sys.stderr)
    return 0


# --- delete -------------------------------------------------------------------------------------


@command("ringlog groups delete")
async def _delete(args: argparse.Namespace) -> int:
    from ringlog.client.errors import KafkaError

    async with open_admin(args) as admin:
        try:
            await admin.delete_groups([args.group])
        except KafkaError as exc:
            raise _group_error(exc, args.group) from None
    print(f"Deleted group {args.group}.")
    return 0
