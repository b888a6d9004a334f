"""A tiny HTTP/1.1 server on Trio for `/metrics` and `/health` (no web framework).

Routes (GET or HEAD; anything else is 405, unknown paths 404):

    /metrics   200, Prometheus text format 0.0.4 (prometheus_client.generate_latest of the
               broker's own registry, rendered on the broker's Trio thread)
    /health    200 "ready\\n" when the broker serves; 503 "not ready: <reason>\\n" while starting
               (recovering logs, loading consumer groups), shutting down, when the data dir's disk
               is nearly full or a log dir has failed (see broker.metrics.Health)
    /          a short index

Protocol subset: HTTP/1.0 and 1.1 requests, keep-alive (1.1 by default, 1.0 with
`Connection: keep-alive`), request heads up to 16 KiB, request bodies (Content-Length) read and
ignored up to 64 KiB, chunked request bodies refused (501). Responses always carry Content-Length.
An idle connection is closed after 30 s; at most 32 connections are served at once.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

log = logging.getLogger("ringlog.http")

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
IDLE_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 32
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError)
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 431: "Request Header Fields Too Large",
            501: "Not Implemented", 503: "Service Unavailable"}
# Prometheus text format 0.0.4, which every Prometheus version reads (generate_latest writes it
# for the legacy-valid names used here).
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_INDEX = b"ringlog broker\n/metrics  Prometheus metrics\n/health   200 ready, 503 not ready: reason\n"


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@asynccontextmanager
async def open_http_endpoint(host: str, port: int, metrics: Any) -> AsyncIterator[tuple[str, int]]:
    """Serve /metrics and /health of `metrics` (a BrokerMetrics) on host:port while the block runs;
    yields the bound (host, port) (port 0 picks a free one)."""
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_http, host, port, metrics)
        try:
            yield address
        finally:
            nursery.cancel_scope.cancel()


async def serve_http(host: str, port: int, metrics: Any, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    address = (bound[0], bound[1])
    log.info("metrics endpoint on http://%s:%d/metrics", address[0], address[1],
             extra={"event": "metrics_listening", "event_fields": {"host": address[0], "port": address[1]}})
    task_status.started(address)
    limiter = trio.Semaphore(MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            if limiter.value == 0:
                return
            async with limiter:
                await serve_connection(stream, metrics)
        except _GONE:
            pass
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await stream.aclose()

    await trio.serve_listeners(handle, listeners)


async def serve_connection(stream: trio.abc.Stream, metrics: Any) -> None:
    buf = bytearray()
    while True:
        with trio.move_on_after(IDLE_TIMEOUT_S):
            try:
                head = await _read_head(stream, buf)
            except BadRequest as exc:
                await _send(stream, exc.status, b"text/plain; charset=utf-8", f"{exc}\n".encode(), close=True)
                return
            if head is None:
                return
            try:
                method, target, version, headers = _parse_head(head)
                await _discard_body(stream, buf, headers)
            except BadRequest as exc:
                await _send(stream, exc.status, b"text/plain; charset=utf-8", f"{exc}\n".encode(), close=True)
                return
            connection = headers.get("connection", "").lower()
            keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
            status, ctype, body = respond(method, target, metrics)
            await _send(stream, status, ctype, body, close=not keep, head_only=method == "HEAD")
            if not keep:
                return
            continue
        return  # idle timeout


def respond(method: str, target: str, metrics: Any) -> tuple[int, bytes, bytes]:
    """(status, content type, body) for a request."""
    path = target.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return 405, b"text/plain; charset=utf-8", b"only GET and HEAD\n"
    if path == "/metrics":
        return 200, METRICS_CONTENT_TYPE, metrics.render()
    if path == "/health":
        ok, reason = metrics.health.check()
        if ok:
            return 200, b"text/plain; charset=utf-8", b"ready\n"
        return 503, b"text/plain; charset=utf-8", f"not ready: {reason}\n".encode()
    if path == "/":
        return 200, b"text/plain; charset=utf-8", _INDEX
    return 404, b"text/plain; charset=utf-8", b"not found\n"


async def _read_head(stream: trio.abc.Stream, buf: bytearray) -> bytes | None:
    """The next request head (without the blank line), consuming it from `buf`; None at EOF."""
    while True:
        end = buf.find(b"\r\n\r\n")
        sep = 4
        if end < 0:
            end = buf.find(b"\n\n")
            sep = 2
        if end > MAX_HEAD or (end < 0 and len(buf) > MAX_HEAD):
            raise BadRequest(431, "request head too large")
        if end >= 0:
            head = bytes(buf[:end])
            del buf[: end + sep]
            return head
        data = await stream.receive_some(8192)
        if not data:
            return None
        buf += data


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    # tolerate blank lines before the request line (RFC 9112 2.2)
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise BadRequest(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "bad request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "bad header line")
        headers[name.lower()] = value.strip()
    return method, target, version, headers


async def _discard_body(stream: trio.abc.Stream, buf: bytearray, headers: dict[str, str]) -> None:
    if "transfer-encoding" in headers:
        raise BadRequest(501, "chunked request bodies are not supported")
    length_text = headers.get("content-length")
    if not length_text:
        return
    if not length_text.isdigit():
        raise BadRequest(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        raise BadRequest(413, "request body too large")
    while len(buf) < length:
        data = await stream.receive_some(8192)
        if not data:
            raise BadRequest(400, "request body cut short")
        buf += data
    del buf[:length]


async def _send(stream: trio.abc.Stream, status: int, ctype: bytes, body: bytes, *,
                close: bool, head_only: bool = False) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n".encode()
        + b"Content-Type: " + ctype + b"\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"Cache-Control: no-store\r\n"
        + (b"Connection: close\r\n" if close else b"")
        + b"\r\n"
    )
    await stream.send_all(head if head_only else head + body)
