"""The `ringlog` command line: one entry point, subcommands registered in `COMMANDS`."""
from __future__ import annotations

import argparse
import importlib
import sys


# Each module has register(subparsers), adding its subcommand with `func` set.
COMMAND_MODULES: list[str] = ["log", "broker", "topics", "produce", "consume", "groups", "bench", "users", "acls", "quotas", "cluster"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringlog",
        description="ringlog: a Kafka-compatible partitioned append-only log broker.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ringlog log dump ... | head` closes stdout early: not an error.
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
