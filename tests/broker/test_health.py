"""/health: 200 "ready" on a live broker; 503 with the reason while it starts (log recovery held
up), while it shuts down (a long-poll Fetch keeps the graceful stop busy), and when the data dir's
disk is below health.disk.free.min.bytes. Plus the small HTTP server's edge cases."""
from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import threading
import time

import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.metadata import FILE_NAME, FORMAT_VERSION
from ringlog.broker.testing import BrokerProcess, BrokerThread
from ringlog.client.wire import request_class

from .conftest import RawClient
from .test_metrics import http_get, metrics_config, scrape

METRICS_RE = re.compile(r"metrics http://(\S+):(\d+)/metrics")


def wait_groups_loaded(b: BrokerThread) -> None:
    # The consumer-group coordinator loads __consumer_offsets after the listeners are up;
    # /health says "starting: loading consumer groups" until then.
    b.call(b.broker.coordinator.loaded.wait)


def poll_health(address, want: int, timeout: float = 10.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        got = http_get(address, "/health")[:2]
        if got[0] == want or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def test_live_broker_is_ready(tmp_path) -> None:
    with BrokerThread(metrics_config(tmp_path)) as b:
        wait_groups_loaded(b)
        status, body, headers = http_get(b.broker.metrics_address, "/health")
        assert (status, body) == (200, "ready\n")
        assert headers["content-type"].startswith("text/plain")
        assert scrape(b).value("ringlog_ready") == 1


def test_disk_nearly_full_is_not_ready(tmp_path) -> None:
    # a threshold above any real disk's free space: the broker serves, but /health says why not
    with BrokerThread(metrics_config(tmp_path, health_disk_free_min_bytes=1 << 62)) as b:
        wait_groups_loaded(b)
        status, body, _ = http_get(b.broker.metrics_address, "/health")
        assert status == 503
        assert body.startswith("not ready: disk nearly full: ")
        assert os.path.abspath(b.config.data_dir) in body or b.config.data_dir in body
        assert scrape(b).value("ringlog_ready") == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_starting_is_not_ready_until_the_logs_are_loaded(tmp_path) -> None:
    # The topic store is read while the logs are opened; a FIFO in its place holds the start-up
    # in exactly that phase until the test writes the file's content into it.
    data = tmp_path / "d"
    data.mkdir()
    fifo = data / FILE_NAME
    os.mkfifo(fifo)
    port = _free_port()
    config = BrokerConfig(listen_port=0, data_dir=str(data), metrics_listen_host="127.0.0.1", metrics_listen_port=port)
    b = BrokerThread(config)
    starter = threading.Thread(target=b.start, daemon=True)
    released = False

    def release() -> None:
        with open(fifo, "w") as f:
            f.write(json.dumps({"version": FORMAT_VERSION, "topics": {}}))

    starter.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                status, body, _ = http_get(("127.0.0.1", port), "/health")
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "metrics endpoint did not come up"
                time.sleep(0.02)
        assert (status, body) == (503, "not ready: starting: recovering logs\n")
        status, body, _ = http_get(("127.0.0.1", port), "/metrics")
        assert status == 200 and "ringlog_ready 0.0" in body
        release()
        released = True
        starter.join(30)
        assert b.broker is not None
        assert poll_health(("127.0.0.1", port), 200) == (200, "ready\n")
    finally:
        if not released:
            release()
            starter.join(30)
        b.stop()


def test_shutting_down_is_not_ready(tmp_path) -> None:
    with BrokerProcess(str(tmp_path / "d"), "--metrics-listen", "127.0.0.1:0", "--num-partitions", "1") as proc:
        m = next(METRICS_RE.search(line) for line in proc.lines if METRICS_RE.search(line))
        address = (m.group(1), int(m.group(2)))
        assert poll_health(address, 200) == (200, "ready\n")
        # A Fetch long-polling for 4 s at the end of an (auto-created) topic: the graceful stop
        # waits for its answer, and /health must say so meanwhile.
        c = RawClient(proc.host, proc.port)
        try:
            Meta = request_class(3, 12)
            mm = __import__(Meta.__module__, fromlist=["x"])
            c.call(Meta(topics=(mm.MetadataRequestTopic(name="hp", topic_id=None),), allow_auto_topic_creation=True,
                        include_topic_authorized_operations=False))
            Req = request_class(1, 12)
            fm = __import__(Req.__module__, fromlist=["x"])
            c.send(Req(forgotten_topics_data=(), max_wait=datetime.timedelta(seconds=4), min_bytes=1,
                       max_bytes=1 << 20, topics=(fm.FetchTopic(topic="hp", partitions=(
                           fm.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20),)),)))
            time.sleep(0.3)
            proc.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 4
            seen = None
            while time.monotonic() < deadline:
                try:
                    seen = http_get(address, "/health")[:2]
                except OSError:
                    break
                if seen[0] == 503:
                    break
                time.sleep(0.02)
            assert seen == (503, "not ready: shutting down\n")
        finally:
            c.close()
        # the SIGTERM above stops it cleanly once the fetch is answered
        assert proc.proc.wait(15) == 0


# --- the HTTP server itself ---------------------------------------------------------------------


@pytest.fixture
def hb(tmp_path):
    with BrokerThread(metrics_config(tmp_path)) as b:
        wait_groups_loaded(b)
        yield b


def _raw_http(address, data: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_http_edges(hb) -> None:
    address = hb.broker.metrics_address
    assert http_get(address, "/nope")[0] == 404
    assert http_get(address, "/health?x=1")[0] == 200
    out = _raw_http(address, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    assert out.startswith(b"HTTP/1.1 405 ")
    out = _raw_http(address, b"garbage\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    out = _raw_http(address, b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")
    # HEAD: headers only
    out = _raw_http(address, b"HEAD /health HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\n") and b"Content-Length: 6" in out
    # keep-alive: two requests on one HTTP/1.1 connection, then close
    out = _raw_http(address, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 ") == 2 and out.count(b"ready\n") == 2


def test_config_keys_and_flags() -> None:
    import argparse

    from ringlog.broker.config import apply_settings
    from ringlog.client.cli import broker as command

    c = apply_settings(BrokerConfig(), {"metrics.listen": "0.0.0.0:9644", "log.format": "json",
                                        "health.disk.free.min.bytes": "5"})
    assert (c.metrics_listen_host, c.metrics_listen_port, c.log_format, c.health_disk_free_min_bytes) == \
        ("0.0.0.0", 9644, "json", 5)
    assert apply_settings(c, {"metrics.listen": "off"}).metrics_listen_port is None
    assert "format" not in c.topic_defaults  # log.format is the broker's, not a topic default
    with pytest.raises(ValueError):
        apply_settings(BrokerConfig(), {"log.format": "xml"})
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["broker", "--metrics-listen", ":0", "--log-format", "json"])
    c = command.build_config(args)
    assert (c.metrics_listen_host, c.metrics_listen_port, c.log_format) == ("127.0.0.1", 0, "json")
    assert BrokerConfig().metrics_listen_port is None  # off by default
