"""Structured logs: one line per event, logfmt-style key=value or JSON.

Line formats (`--log-format kv|json`, config key `log.format`, default kv)::

    kv:   ts=2025-01-31T12:00:00.123Z level=info logger=ringlog.core event=topic_created msg="created topic t with 3 partition(s)" topic=t partitions=3
    json: {"ts": "2025-01-31T12:00:00.123Z", "level": "info", "logger": "ringlog.core", "event": "topic_created", "msg": "created topic t with 3 partition(s)", "topic": "t", "partitions": 3}

Order of the keys: ts (UTC, milliseconds), level, logger, event (when the call named one), msg,
then the event's own fields, then exc (a traceback, newlines escaped in kv). kv values are quoted
when they contain a space, '=', '"' or nothing; inside quotes `\\`, `"` and newlines are escaped.
Every message is one line, whatever it contains.

Attaching an event name and fields to an ordinary logging call::

    from ringlog.broker.logging_setup import event
    log.info("created topic %s", name, extra=event("topic_created", topic=name, partitions=3))

The `msg` of the ready line keeps the text `ringlog broker ready on HOST:PORT (...)` in both
formats; tools find the bound port with the regex `ringlog broker ready on (\\S+):(\\d+)`.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LOG_FORMATS = ("kv", "json")


def event(name: str, **fields: Any) -> dict[str, Any]:
    """`extra=` for a logging call: the event name and its key=value fields."""
    return {"event": name, "event_fields": fields}


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _items(record: logging.LogRecord) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = [
        ("ts", _timestamp(record.created)),
        ("level", record.levelname.lower()),
        ("logger", record.name),
    ]
    name = getattr(record, "event", None)
    if name:
        items.append(("event", name))
    items.append(("msg", record.getMessage()))
    fields = getattr(record, "event_fields", None)
    if fields:
        items.extend((k, v) for k, v in fields.items() if k not in ("ts", "level", "logger", "event", "msg"))
    return items


def _kv_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    else:
        text = str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        items = _items(record)
        exc = self._exception(record)
        if exc:
            items.append(("exc", exc))
        return " ".join(f"{k}={_kv_value(v)}" for k, v in items)

    def _exception(self, record: logging.LogRecord) -> str | None:
        if record.exc_info:
            return self.formatException(record.exc_info)
        return record.exc_text or None


class JsonFormatter(KeyValueFormatter):
    def format(self, record: logging.LogRecord) -> str:
        data = dict(_items(record))
        exc = self._exception(record)
        if exc:
            data["exc"] = exc
        return json.dumps(data, default=str, ensure_ascii=False)


def make_formatter(fmt: str) -> logging.Formatter:
    if fmt == "kv":
        return KeyValueFormatter()
    if fmt == "json":
        return JsonFormatter()
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")


def configure_logging(level: str | int = "INFO", fmt: str = "kv", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record of the process to `stream` (stderr) in `fmt`, at `level` and above.

    Replaces the root logger's handlers (the broker process owns its logging); returns the handler.
    """
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
        level = numeric
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class GroupChangeLog:
    """One log line per consumer-group change (state, generation, member count): rebalances.

    `update(groups)` compares the coordinator's groups (group id -> object with .state,
    .generation, .members) with what it saw last time; O(groups) per call.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.seen: dict[str, tuple[str, int, int]] = {}

    def update(self, groups: Any) -> None:
        seen = self.seen
        for group_id, g in groups.items():
            now = (g.state, g.generation, len(g.members))
            if seen.get(group_id) != now:
                seen[group_id] = now
                self.logger.info(
                    "group %s is %s (generation %d, %d member(s))", group_id, now[0], now[1], now[2],
                    extra=event("group_changed", group=group_id, state=now[0], generation=now[1], members=now[2]),
                )
        if len(seen) > len(groups):
            for group_id in [gid for gid in seen if gid not in groups]:
                del seen[group_id]
                self.logger.info("group %s removed", group_id, extra=event("group_removed", group=group_id))
