"""`ringlog broker`: run a broker in the foreground until SIGTERM/SIGINT.

Settings come from the defaults, then `--config FILE` (TOML, see docs/configuration.md), then the
flags here, then repeated `--set key=value` (any configuration key).
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback

BACKPRESSURE = ("block", "reject")
FSYNC = ("always", "interval", "never")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("broker", help="run a Kafka-compatible broker",
                              description="Run a ringlog broker in the foreground.")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--data-dir", help="where the partition logs live (default ./ringlog-data)")
    p.add_argument("--listen", metavar="HOST:PORT", help="listen address (default 127.0.0.1:9092; port 0 picks one)")
    p.add_argument("--advertise", metavar="HOST:PORT", help="address given to clients in Metadata")
    p.add_argument("--fsync", choices=FSYNC, help="flush policy (default interval)")
    p.add_argument("--node-id", type=int, help="this broker's node id (default 0)")
    p.add_argument("--message-max-bytes", type=int, help="largest accepted record batch")
    p.add_argument("--socket-request-max-bytes", type=int, help="largest accepted request frame")
    p.add_argument("--max-connections", type=int)
    p.add_argument("--ring-bytes", type=int, help="in-memory ring size per partition, bytes")
    p.add_argument("--backpressure", choices=BACKPRESSURE, help="when a ring is full: block or reject")
    p.add_argument("--num-partitions", type=int, help="partitions of auto-created topics")
    auto = p.add_mutually_exclusive_group()
    auto.add_argument("--auto-create", dest="auto_create", action="store_true", default=None,
                      help="create unknown topics on Metadata requests (default)")
    auto.add_argument("--no-auto-create", dest="auto_create", action="store_false")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any configuration key, e.g. --set log.retention.ms=60000")
    p.add_argument("--log-level", help="DEBUG, INFO (default), WARNING, ...")
    p.add_argument("--log-format", choices=("kv", "json"), help="log lines as key=value (default) or JSON")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve /metrics (Prometheus) and /health over HTTP here (default off; port 0 picks one)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    from broker.config import BrokerConfig, apply_settings, load_toml, validate

    config = load_toml(args.config) if args.config else BrokerConfig()
    settings: dict[str, object] = {}
    flag_keys = {
        "data_dir": "data.dir",
        "listen": "listen",
        "advertise": "advertise",
        "fsync": "fsync",
        "node_id": "node.id",
        "message_max_bytes": "message.max.bytes",
        "socket_request_max_bytes": "socket.request.max.bytes",
        "max_connections": "max.connections",
        "ring_bytes": "ring.bytes.per.partition",
        "backpressure": "backpressure",
        "num_partitions": "num.partitions",
        "auto_create": "auto.create.topics.enable",
        "log_level": "log.level",
        "log_format": "log.format",
        "metrics_listen": "metrics.listen",
    }
    for attr, key in flag_keys.items():
        value = getattr(args, attr, None)
        if value is not None:
            settings[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        settings[key.strip()] = value.strip()
    return validate(apply_settings(config, settings))


def run(args: argparse.Namespace) -> int:
    import trio

    from broker.server import run_broker

    try:
        config = build_config(args)
    except (ValueError, OSError) as exc:
        print(f"ringlog broker: {exc}", file=sys.stderr)
        return 2
    from broker.logging_setup import configure_logging

    try:
        configure_logging(config.log_level, config.log_format, sys.stderr)
    except ValueError as exc:
        print(f"ringlog broker: {exc}", file=sys.stderr)
        return 2
    from broker.metadata import TopicsFileError
    from storage.errors import StorageError

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
        if isinstance(cause, (OSError, StorageError)):
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

    from broker.http import serve_http

    codes = {frame.f_code for frame, _ in traceback.walk_tb(exc.__traceback__)}
    if trio.open_tcp_listeners.__code__ not in codes:
        return None
    if serve_http.__code__ in codes:
        host = config.metrics_listen_host or "127.0.0.1"
        return f"{_address(host, config.metrics_listen_port)} for /metrics and /health (metrics.listen)"
    return _address(config.listen_host, config.listen_port)


def _only_leaf(exc: BaseException) -> BaseException | None:
    """The single exception inside (nested) exception groups, or None when there are several."""
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc
