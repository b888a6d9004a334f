"""`ringlog users add|list|delete`: SASL users (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) of a broker.

The change is made offline, on a stopped broker's --data-dir (the first users exist before the
first start, as with Kafka's `kafka-storage format --add-scram`). On a running broker, SCRAM users
are managed by Kafka admin clients through DescribeUserScramCredentials /
AlterUserScramCredentials. The broker keeps salted keys, never passwords.
"""
from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ._common import CliError, UsageError, add_json, command, print_json, print_table

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


def register(subparsers: argparse._SubParsersAction) -> None:
    users = subparsers.add_parser(
        "users", help="add, list and delete SASL users",
        description="Manage the SASL users (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) of a stopped broker's "
                    "--data-dir.")
    sub = users.add_subparsers(dest="users_command", metavar="ACTION")
    sub.required = True

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", required=True, help="a stopped broker's data dir")

    p = sub.add_parser("add", help="add a user or change its password",
                       description="Add NAME for a mechanism (again for each mechanism it should have).")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--mechanism", required=True, choices=MECHANISMS)
    p.add_argument("--password", help="the password (or RINGLOG_PASSWORD in the environment)")
    p.add_argument("--iterations", type=int, default=4096, help="SCRAM iterations, 4096 to 16384 (default 4096)")
    where(p)
    p.set_defaults(func=_add)

    p = sub.add_parser("list", help="the users and their mechanisms")
    add_json(p)
    where(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("delete", help="remove a user (one mechanism with --mechanism)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--mechanism", choices=MECHANISMS)
    where(p)
    p.set_defaults(func=_delete)


def _password(args: argparse.Namespace) -> str:
    password = args.password if args.password is not None else os.environ.get("RINGLOG_PASSWORD")
    if not password:
        raise UsageError("a password is needed: --password P or RINGLOG_PASSWORD")
    return password


def offline_command(prog: str) -> Callable:
    """`command`, for a synchronous body run in a worker thread: the file work (the lock,
    reads, fsyncs, PBKDF2) stays off the Trio thread."""

    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable:
        @command(prog)
        @functools.wraps(fn)
        async def run(args: argparse.Namespace) -> int:
            import trio

            return await trio.to_thread.run_sync(fn, args)

        return run

    return wrap


@contextmanager
def _offline(args: argparse.Namespace) -> Iterator:
    """The credentials of a stopped broker's data dir, its lock held meanwhile."""
    from ringlog.broker.security.offline import OfflineError, stopped_broker_dir
    from ringlog.broker.security.store import Credentials, StoreError

    with _one_line(OfflineError, StoreError, OSError), stopped_broker_dir(args.data_dir):
        with _one_line(StoreError):
            creds = Credentials.load(args.data_dir)
        yield creds


@contextmanager
def _offline_acls(args: argparse.Namespace) -> Iterator:
    """(an Authorizer holding the data dir's ACLs, a blocking save of them), the lock held."""
    from ringlog.broker.security.authorizer import Authorizer
    from ringlog.broker.security.offline import OfflineError, stopped_broker_dir
    from ringlog.broker.security.state import acls_json, load_acls
    from ringlog.broker.security.store import ACLS, StoreError, write_json

    with _one_line(OfflineError, StoreError, OSError), stopped_broker_dir(args.data_dir):
        with _one_line(StoreError):
            authorizer = Authorizer(load_acls(args.data_dir))
        yield authorizer, lambda: write_json(args.data_dir, ACLS, acls_json(authorizer.acls))


@contextmanager
def _one_line(*kinds: type) -> Iterator[None]:
    try:
        yield
    except kinds as exc:
        raise CliError(str(exc)) from None


@offline_command("users add")
def _add(args: argparse.Namespace) -> int:
    from ringlog.broker.security.scram import MAX_ITERATIONS, MIN_ITERATIONS

    if not args.name:
        raise UsageError("the user name must not be empty")
    if not MIN_ITERATIONS <= args.iterations <= MAX_ITERATIONS:
        raise UsageError(f"--iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}")
    password = _password(args)
    with _offline(args) as creds:
        creds.add_password(args.name, args.mechanism, password, args.iterations)
        creds.save(args.data_dir)
    print(f"user {args.name}: {args.mechanism} credentials set")
    return 0


@offline_command("users list")
def _list(args: argparse.Namespace) -> int:
    with _offline(args) as creds:
        users = {u: creds.mechanisms(u) for u in sorted(creds.users)}
    if args.json:
        print_json([{"user": u, "mechanisms": [{"mechanism": m, "iterations": i} for m, i in ms.items()]}
                    for u, ms in users.items()])
    else:
        print_table(["USER", "MECHANISMS"], [[u, ",".join(f"{m}({i})" for m, i in ms.items())] for u, ms in users.items()])
    return 0


@offline_command("users delete")
def _delete(args: argparse.Namespace) -> int:
    with _offline(args) as creds:
        if not creds.delete(args.name, args.mechanism):
            what = f"{args.mechanism} credentials" if args.mechanism else "credentials"
            raise CliError(f"user {args.name} has no {what}")
        creds.save(args.data_dir)
    print(f"user {args.name}: deleted")
    return 0

