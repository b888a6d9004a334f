"""The HTTP server's limits on a live gateway: body size (413), head size (431), a slow-loris
client (408 and closed once the request read timeout passes), keep-alive, the connection cap
(503), and /metrics + /health served on the gateway's address too."""
from __future__ import annotations

import socket
import time

import pytest

from ringlog.broker.testing import BrokerThread

from .conftest import Gateway, gateway_config


@pytest.fixture
def tight(tmp_path):
    config = gateway_config(tmp_path, http_max_body_bytes=2048, http_max_header_bytes=1024,
                            http_request_timeout_ms=300, http_idle_timeout_ms=2000, http_max_connections=3)
    with BrokerThread(config) as b:
        g = Gateway(b)
        yield g
        g.http.close()


def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_body_and_head_limits(tight) -> None:
    r = tight.http.post("/ingest/t", content=b"a\n" * 2000, headers={"Content-Type": "text/plain"})
    assert r.status_code == 413
    with socket.create_connection(tight.address) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 2000 + b"\r\n\r\n")
        assert _read_until_closed(s).startswith(b"HTTP/1.1 431 ")
    # chunked bodies are read, and counted against the limit too
    with socket.create_connection(tight.address) as s:
        s.sendall(b"POST /ingest/t HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"".join(b"400\r\n" + b"a" * 1024 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n")
        assert _read_until_closed(s).startswith(b"HTTP/1.1 413 ")
    with socket.create_connection(tight.address) as s:
        s.sendall(b"POST /ingest/t HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")
        s.settimeout(10)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    with socket.create_connection(tight.address) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert _read_until_closed(s).startswith(b"HTTP/1.1 400 ")


def test_slow_loris_is_cut_off_and_others_are_served(tight) -> None:
    s = socket.create_connection(tight.address)
    try:
        s.sendall(b"POST /ingest/t HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        # one byte at a time, slower than the request read timeout allows for the whole head
        s.settimeout(0.1)
        answer = b""
        for _ in range(100):
            try:
                s.sendall(b"X")
            except OSError:
                break
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            answer += chunk
            if not chunk or answer.endswith(b"\n\n") or b"\r\n\r\n" in answer:
                break
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - started < 10
        assert tight.http.get("/health").status_code == 200
    finally:
        s.close()


def test_keep_alive_and_connection_cap(tight) -> None:
    with socket.create_connection(tight.address) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = _read_until_closed(s)
    assert out.count(b"HTTP/1.1 200 ") == 2 and b"ready\n" in out and b"ringlog_ready 1.0" in out
    idle = [socket.create_connection(tight.address) for _ in range(3)]
    try:
        # the cap is counted by the server's tasks: wait until the fourth is refused
        deadline = time.monotonic() + 10
        while True:
            with socket.create_connection(tight.address) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                out = _read_until_closed(s)
            if out.startswith(b"HTTP/1.1 503 ") or time.monotonic() > deadline:
                break
        assert out.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in out
    finally:
        for s in idle:
            s.close()
    # the idle ones are gone (closed by us), so a new connection is served again
    deadline = time.monotonic() + 10
    while tight.http.get("/health").status_code != 200:
        assert time.monotonic() < deadline


def test_idle_keep_alive_connection_is_closed(tight) -> None:
    with socket.create_connection(tight.address) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        # http.idle.timeout.ms 2000: the server closes it (recv returns b"" rather than timing out)
        assert _read_until_closed(s, timeout=10) == b""
