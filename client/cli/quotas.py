"""`ringlog quotas describe|alter`: the client quotas of a running broker (DescribeClientQuotas,
AlterClientQuotas), with the entity options of Kafka's `kafka-configs --entity-type users|clients`.

An entity is `--user NAME` or `--default-user`, `--client-id NAME` or `--default-client-id`, or
one of each. `describe` without any lists every entity (with one, the entities that name it;
`--strict` only those with no other type); `alter --set producer_byte_rate=1048576 --delete
consumer_byte_rate` changes one entity.
"""
from __future__ import annotations

import argparse
import math

from ._common import UsageError, add_bootstrap, add_json, bootstrap_of, command, connected, key_value, \
    print_json, print_table
from ._common import CONNECT_TIMEOUT


def register(subparsers: argparse._SubParsersAction) -> None:
    quotas = subparsers.add_parser(
        "quotas", help="describe and alter client quotas",
        description="The client quotas (producer_byte_rate, consumer_byte_rate, request_percentage) of a running broker.",
    )
    sub = quotas.add_subparsers(dest="quotas_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("describe", help="list quota entities and their values",
                       description="List the quota entities (all of them, or those matching the entity options).")
    _add_entity(p)
    p.add_argument("--strict", action="store_true", help="only entities with no other entity type")
    add_json(p)
    add_bootstrap(p)
    p.set_defaults(func=_describe)

    p = sub.add_parser("alter", help="set or remove quota values of one entity",
                       description="Set (--set K=V) or remove (--delete K) quota values of one entity.")
    _add_entity(p)
    p.add_argument("--set", action="append", type=key_value, default=[], metavar="K=V",
                   help="a quota value, e.g. producer_byte_rate=1048576 (repeatable)")
    p.add_argument("--delete", action="append", default=[], metavar="K", help="a quota key to remove (repeatable)")
    p.add_argument("--validate-only", action="store_true", help="check with the broker without changing anything")
    add_bootstrap(p)
    p.set_defaults(func=_alter)


def _add_entity(p: argparse.ArgumentParser) -> None:
    user = p.add_mutually_exclusive_group()
    user.add_argument("--user", metavar="NAME", help="the user (principal User:NAME)")
    user.add_argument("--default-user", action="store_true", help="the <default> user")
    client = p.add_mutually_exclusive_group()
    client.add_argument("--client-id", metavar="NAME", help="the client id")
    client.add_argument("--default-client-id", action="store_true", help="the <default> client id")


def _entity(args: argparse.Namespace) -> dict[str, str | None]:
    entity: dict[str, str | None] = {}
    if args.user is not None or args.default_user:
        entity["user"] = args.user
    if args.client_id is not None or args.default_client_id:
        entity["client-id"] = args.client_id
    return entity


def _open_admin(args: argparse.Namespace):
    from ringlog.client.admin import Admin

    return connected(Admin(bootstrap_of(args), client_id="ringlog-cli", request_timeout_ms=15000,
                           connect_timeout_ms=CONNECT_TIMEOUT * 1000))


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _show(entity: dict[str, str | None]) -> str:
    return ",".join(f"{t}={'<default>' if n is None else n}" for t, n in sorted(entity.items()))


@command("ringlog quotas describe")
async def _describe(args: argparse.Namespace) -> int:
    async with _open_admin(args) as admin:
        found = await admin.describe_client_quotas(_entity(args) or None, strict=args.strict)
    if args.json:
        print_json([{"entity": e, "values": v} for e, v in found])
        return 0
    print_table(["ENTITY", "QUOTAS"],
                [(_show(e), ",".join(f"{k}={_number(v)}" for k, v in sorted(vs.items()))) for e, vs in found])
    return 0


@command("ringlog quotas alter")
async def _alter(args: argparse.Namespace) -> int:
    entity = _entity(args)
    if not entity:
        raise UsageError("name an entity: --user NAME, --default-user, --client-id NAME or --default-client-id")
    if not args.set and not args.delete:
        raise UsageError("nothing to change: give --set K=V or --delete K")
    ops: dict[str, float | None] = {}
    for key, text in args.set:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"--set {key}={text}: not a number") from None
        if not math.isfinite(value):
            raise UsageError(f"--set {key}={text}: not a finite number")
        ops[key] = value
    for key in args.delete:
        if key in ops:
            raise UsageError(f"{key} is both set and deleted")
        ops[key] = None
    async with _open_admin(args) as admin:
        await admin.alter_client_quotas([(entity, ops)], validate_only=args.validate_only)
    print(f"{'checked' if args.validate_only else 'altered'} {_show(entity)}")
    return 0
