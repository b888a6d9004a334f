"""`ringlog acls add|list|remove`: Kafka ACLs of a stopped broker's data dir (security/acls.json),
in kafka-acls' terms. The broker checks them when authorizer.enabled = true. On a running broker,
Kafka admin clients manage them with CreateAcls / DescribeAcls / DeleteAcls.

    ringlog acls add --data-dir D --allow-principal User:alice --operation Read --topic orders
    ringlog acls add --data-dir D --deny-principal User:bob --operation Write --topic logs- --prefixed
    ringlog acls list --data-dir D [--topic T | --group G | --cluster]
    ringlog acls remove --data-dir D --topic orders            (every binding of that resource)
"""
from __future__ import annotations

import argparse

from ._common import CliError, UsageError, add_json, print_json, print_table
from .users import _offline_acls, offline_command


def register(subparsers: argparse._SubParsersAction) -> None:
    acls = subparsers.add_parser(
        "acls", help="add, list and remove ACLs",
        description="Manage the Kafka ACLs of a stopped broker's --data-dir (kafka-acls' options).")
    sub = acls.add_subparsers(dest="acls_command", metavar="ACTION")
    sub.required = True

    def resource(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--data-dir", required=True, help="a stopped broker's data dir")
        group = p.add_mutually_exclusive_group(required=required)
        group.add_argument("--topic", help="a topic (or * for every topic)")
        group.add_argument("--group", help="a consumer group (or *)")
        group.add_argument("--transactional-id", help="a transactional id (or *)")
        group.add_argument("--cluster", action="store_true", help="the cluster")
        p.add_argument("--prefixed", action="store_true", help="the name is a prefix (resource pattern PREFIXED)")

    p = sub.add_parser("add", help="add ALLOW or DENY bindings")
    resource(p, True)
    p.add_argument("--allow-principal", action="append", default=[], metavar="User:NAME")
    p.add_argument("--deny-principal", action="append", default=[], metavar="User:NAME")
    p.add_argument("--operation", action="append", required=True,
                   help="Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs, "
                        "AlterConfigs, IdempotentWrite, All (repeatable)")
    p.add_argument("--host", default="*", help="client address the binding applies to (default *)")
    p.set_defaults(func=_add)

    p = sub.add_parser("list", help="the bindings (of one resource when given)")
    resource(p, False)
    p.add_argument("--principal", help="only this principal's bindings")
    add_json(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("remove", help="remove the bindings of a resource (narrowed by the options)")
    resource(p, True)
    p.add_argument("--principal", help="only this principal's bindings")
    p.add_argument("--operation", help="only this operation's bindings")
    p.set_defaults(func=_remove)


def _resource(args: argparse.Namespace) -> tuple[int, str] | None:
    from ringlog.broker.security import authorizer as acl

    if args.topic is not None:
        return acl.TOPIC, args.topic
    if args.group is not None:
        return acl.GROUP, args.group
    if args.transactional_id is not None:
        return acl.TRANSACTIONAL_ID, args.transactional_id
    if args.cluster:
        return acl.CLUSTER, acl.CLUSTER_NAME
    return None


def _operation(text: str) -> int:
    from ringlog.broker.security import authorizer as acl

    try:
        return acl.by_name(acl.OPERATION_NAMES, text, "operation")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@offline_command("acls add")
def _add(args: argparse.Namespace) -> int:
    from ringlog.broker.security import authorizer as acl

    rtype, name = _resource(args)
    pattern = acl.PREFIXED if args.prefixed else acl.LITERAL
    entries = [(p, acl.ALLOW) for p in args.allow_principal] + [(p, acl.DENY) for p in args.deny_principal]
    if not entries:
        raise UsageError("give --allow-principal or --deny-principal")
    bindings = [acl.Acl(rtype, name, pattern, principal, args.host, _operation(op), permission)
                for principal, permission in entries for op in args.operation]
    for b in bindings:
        problem = acl.invalid_reason(b)
        if problem:
            raise UsageError(problem)
    with _offline_acls(args) as (authorizer, save):
        authorizer.add(bindings)
        save()
    for b in bindings:
        print(f"added {b.describe()}")
    return 0


def _filter(args: argparse.Namespace, operation: str | None = None):
    from ringlog.broker.security import authorizer as acl

    found = _resource(args)
    rtype, name = found if found is not None else (acl.ANY_RESOURCE, None)
    pattern = (acl.PREFIXED if args.prefixed else acl.LITERAL) if found is not None else acl.ANY_PATTERN
    return acl.AclFilter(rtype, name, pattern, args.principal,
                         operation=_operation(operation) if operation else acl.ANY_OP)


@offline_command("acls list")
def _list(args: argparse.Namespace) -> int:
    with _offline_acls(args) as (authorizer, _):
        bindings = authorizer.describe(_filter(args))
    if args.json:
        print_json([b.to_json() for b in bindings])
    else:
        print_table(["RESOURCE", "PATTERN", "PRINCIPAL", "HOST", "OPERATION", "PERMISSION"],
                    [[f"{j['resource_type']}:{j['name']}", j["pattern"], j["principal"], j["host"], j["operation"],
                      j["permission"]] for j in (b.to_json() for b in bindings)])
    return 0


@offline_command("acls remove")
def _remove(args: argparse.Namespace) -> int:
    with _offline_acls(args) as (authorizer, save):
        (removed,) = authorizer.remove([_filter(args, args.operation)])
        if not removed:
            raise CliError("no binding matches")
        save()
    for b in removed:
        print(f"removed {b.describe()}")
    return 0
