"""Structured logs: the key=value and JSON line formats, and a broker process logging its events
(start-up, recovery, ready, topic changes, rebalances, rejected input, shutdown) one per line."""
from __future__ import annotations

import io
import json
import logging
import re
import socket
import struct
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ringlog.broker.logging_setup import JsonFormatter, KeyValueFormatter, configure_logging, event
from ringlog.broker.testing import READY_RE, BrokerProcess

KV_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _record(msg: str, *args, extra=None, exc_info=None) -> logging.LogRecord:
    logger = logging.getLogger("ringlog.test")
    return logger.makeRecord("ringlog.test", logging.WARNING, __file__, 1, msg, args, exc_info, extra=extra)


def parse_kv(line: str) -> dict[str, str]:
    out = {}
    for key, value in KV_PAIR.findall(line):
        if value.startswith('"'):
            value = json.loads(value)  # the escapes used are JSON's
        out[key] = value
    return out


def test_kv_line_quotes_and_escapes() -> None:
    rec = _record("created topic %s", "a b", extra=event("topic_created", topic="a b", partitions=3, x='q"\n', ok=True))
    line = KeyValueFormatter().format(rec)
    assert "\n" not in line
    assert line.startswith("ts=") and " level=warning logger=ringlog.test event=topic_created " in line
    fields = parse_kv(line)
    assert fields["msg"] == "created topic a b"
    assert fields["topic"] == "a b" and fields["partitions"] == "3" and fields["x"] == 'q"\n' and fields["ok"] == "true"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["ts"])


def test_json_line_with_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = _record("it failed", extra=event("x_failed", n=1), exc_info=sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    data = json.loads(line)
    assert data["event"] == "x_failed" and data["n"] == 1 and data["msg"] == "it failed" and data["level"] == "warning"
    assert "ValueError: boom" in data["exc"]
    assert list(data)[:5] == ["ts", "level", "logger", "event", "msg"]


def test_configure_logging_level_and_format() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("warning", "json", stream)
        logging.getLogger("ringlog.x").info("hidden")
        logging.getLogger("ringlog.x").warning("shown %d", 5)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["msg"] for line in lines] == ["shown 5"]


def _wait_lines(proc: BrokerProcess, pred, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in list(proc.lines) if pred(line)]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("no such log line; last lines:\n" + "\n".join(proc.lines[-20:]))


def test_broker_process_json_events(tmp_path) -> None:
    with BrokerProcess(str(tmp_path / "d"), "--log-format", "json") as proc:
        # BrokerProcess found the port with READY_RE, so the ready text survived the format
        admin = AdminClient({"bootstrap.servers": proc.bootstrap})
        admin.create_topics([NewTopic("logged", 2)])["logged"].result(10)
        p = Producer({"bootstrap.servers": proc.bootstrap})
        p.produce("logged", b"x", partition=0)
        assert p.flush(10) == 0
        c = Consumer({"bootstrap.servers": proc.bootstrap, "group.id": "lg", "auto.offset.reset": "earliest",
                      "session.timeout.ms": 6000})
        try:
            c.subscribe(["logged"])
            deadline = time.monotonic() + 20
            got = None
            while got is None and time.monotonic() < deadline:
                got = c.poll(0.2)
            assert got is not None and not got.error()
        finally:
            c.close()
        # a malformed frame
        with socket.create_connection((proc.host, proc.port), timeout=5) as s:
            body = struct.pack(">hhih", 0, 7, 1, 3) + b"cli" + b"\x00\x05ab"
            s.sendall(struct.pack(">i", len(body)) + body)
            assert s.recv(1) == b""
        _wait_lines(proc, lambda line: '"request_rejected"' in line)
        _wait_lines(proc, lambda line: '"group_removed"' in line or ('"group_changed"' in line and '"Empty"' in line))
    events = []
    for line in proc.lines:
        data = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "logger", "msg"} <= set(data)
        events.append(data)
    by_event: dict[str, list[dict]] = {}
    for data in events:
        by_event.setdefault(data.get("event", ""), []).append(data)
    assert by_event["starting"] and by_event["recovery"][0]["partitions"] == 0
    ready = by_event["ready"]
    assert len(ready) == 1 and READY_RE.search(ready[0]["msg"]) and ready[0]["port"] == proc.port
    created = [d for d in by_event["topic_created"] if d["topic"] == "logged"]
    assert created and created[0]["partitions"] == 2
    stable = [d for d in by_event["group_changed"] if d["group"] == "lg" and d["state"] == "Stable"]
    assert stable and stable[0]["members"] == 1 and stable[0]["generation"] >= 1
    rejected = by_event["request_rejected"]
    assert rejected and "malformed" in rejected[0]["reason"]
    assert by_event["stopping"][0]["signal"] == "SIGTERM"


def test_broker_process_kv_default_and_recovery_report(tmp_path) -> None:
    data_dir = str(tmp_path / "d")
    with BrokerProcess(data_dir) as proc:
        p = Producer({"bootstrap.servers": proc.bootstrap})
        p.produce("rec", b"y" * 50, partition=0)
        assert p.flush(10) == 0
        proc.kill()  # unclean: the next start scans the log
    with BrokerProcess(data_dir, "--log-level", "INFO") as proc2:
        pass
    for line in proc2.lines:
        assert line.startswith("ts=") and " level=" in line
    recovery = [parse_kv(line) for line in proc2.lines if "event=recovery " in line]
    assert len(recovery) == 1
    assert recovery[0]["clean_shutdown"] == "false" and int(recovery[0]["partitions"]) >= 1
    ready = [line for line in proc2.lines if "event=ready " in line]
    assert len(ready) == 1 and READY_RE.search(ready[0])
