"""`ringlog broker`: run a broker in the foreground until SIGTERM/SIGINT.

Settings come from the defaults, then `--config FILE` (TOML, see docs/configuration.md), then the
flags, then repeated `--set key=value` (any configuration key). The flags, the keys and their
checks are one schema, broker.config: every bad key or value is refused with one line on stderr
and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback


def _flag_settings():
    """(Setting, argparse dest) of every broker key that has a command-line flag."""
    from ringlog.broker.config import OWN_SETTINGS

    return [(spec, spec.flag.lstrip("-").replace("-", "_")) for _, spec in OWN_SETTINGS.values() if spec.flag]


def _help(spec) -> str:
    """The doc's first sentence, the key and the default, for --help."""
    from ringlog.broker.config_docs import default_text

    head, dot, _ = spec.doc.partition(". ")
    return f"{head}{'.' if dot else ''} ({spec.key}, default {default_text(spec.key)})".replace("%", "%%")


def register(subparsers: argparse._SubParsersAction) -> None:
    from ringlog.storage.configdef import Boolean

    p = subparsers.add_parser("broker", help="run a Kafka-compatible broker",
                              description="Run a ringlog broker in the foreground. Every flag sets a key of "
                                          "docs/configuration.md; --set takes any key.")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    # The flags come from the configuration schema (broker.config): the values stay strings here
    # and are parsed there, so a bad one gets the same one-line message as in the file or --set.
    for spec, dest in _flag_settings():
        if isinstance(spec.kind, Boolean):
            pair = p.add_mutually_exclusive_group()
            pair.add_argument(spec.flag, dest=dest, action="store_const", const=True, default=None, help=_help(spec))
            pair.add_argument("--no-" + spec.flag.removeprefix("--"), dest=dest, action="store_const", const=False)
        else:
            metavar = "HOST:PORT" if "host:port" in spec.kind.type_name else None
            p.add_argument(spec.flag, dest=dest, metavar=metavar, help=_help(spec))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any configuration key, e.g. --set log.retention.ms=60000")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """Defaults < --config FILE < flags < --set; ValueError (one line) on any bad key or value."""
    from ringlog.broker.config import BrokerConfig, ConfigError, apply_settings, read_toml, validate

    config = BrokerConfig()
    if args.config:
        try:
            values = read_toml(args.config)
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration file {args.config}: {exc.strerror or exc}") from None
        config = apply_settings(config, values, source=f"in {args.config}")
    for spec, dest in _flag_settings():
        value = getattr(args, dest, None)
        if value is not None:
            config = apply_settings(config, {spec.key: value}, source=spec.flag)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        config = apply_settings(config, {key.strip(): value.strip()}, source="--set")
    return validate(config)


def run(args: argparse.Namespace) -> int:
    # The configuration first: a mistake is answered before the server's imports (about a second).
    try:
        config = build_config(args)
    except (ValueError, OSError) as exc:
        print(f"ringlog broker: {exc}", file=sys.stderr)
        return 2
    import trio

    from ringlog.broker.server import run_broker

    from ringlog.broker.logging_setup import configure_logging

    try:
        configure_logging(config.log_level, config.log_format, sys.stderr)
    except ValueError as exc:
        print(f"ringlog broker: {exc}", file=sys.stderr)
        return 2
    from ringlog.broker.cluster.node import ClusterJoinError
    from ringlog.broker.metadata import TopicsFileError
    from ringlog.storage.errors import StorageError

    log = logging.getLogger("ringlog")
    try:
        trio.run(run_broker, config)
    except BaseException as exc:  # noqa: BLE001 - start-up failures sorted below, the rest re-raised
        # Start-up failures (address in use, data dir locked by another broker, a damaged
        # topics.json) may surface from the broker's nurseries wrapped in groups: report the one
        # cause as one line, not a traceback.
        cause = _only_leaf(exc)
        if isinstance(cause, KeyboardInterrupt):
            return 130
        if isinstance(cause, TopicsFileError):
            # the operator has to repair or move the file before any start can succeed: like a
            # bad configuration, exit 2
            log.error("cannot start: %s", cause)
            return 2
        if isinstance(cause, OSError):
            listener = _failed_listener(cause, config)
            if listener is not None:
                reason = cause.strerror or str(cause)
                log.error("cannot listen on %s: %s", listener, reason[:1].lower() + reason[1:])
                return 1
        if isinstance(cause, (OSError, StorageError, ClusterJoinError)):
            log.error("cannot start: %s", cause)
            return 1
        raise
    return 0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _failed_listener(exc: OSError, config) -> str | None:
    """The listener whose socket `exc` came from, as "HOST:PORT" (and what it is for, when not
    the Kafka listener); None when `exc` is not from opening a listener.

    The broker lets the OSError of bind() (or of resolving the host) through as it is, and that
    names no address. Which listener it was follows from where it was raised: inside trio's
    open_tcp_listeners, called from the metrics endpoint (broker.http.serve_http) or else from
    the Kafka listener."""
    import trio

    from ringlog.broker.http import serve_http

    codes = {frame.f_code for frame, _ in traceback.walk_tb(exc.__traceback__)}
    if trio.open_tcp_listeners.__code__ not in codes:
        return None
    if serve_http.__code__ in codes:
        host = config.metrics_listen_host or "127.0.0.1"
        return f"{_address(host, config.metrics_listen_port)} for /metrics and /health (metrics.listen)"
    from ringlog.broker.httpd.app import serve_gateway

    if serve_gateway.__code__ in codes:
        host = config.http_listen_host or "127.0.0.1"
        return f"{_address(host, config.http_listen_port)} for the HTTP gateway (http.listen)"
    return _address(config.listen_host, config.listen_port)


def _only_leaf(exc: BaseException) -> BaseException | None:
    """The single exception inside (nested) exception groups, or None when there are several."""
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc
