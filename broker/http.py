"""The `/metrics` and `/health` endpoint (metrics.listen), on the broker's HTTP server
(broker.httpd.server: h11 on Trio).

Routes (GET or HEAD; anything else is 405, unknown paths 404):

    /metrics   200, Prometheus text format 0.0.4 (prometheus_client.generate_latest of the
               broker's own registry, rendered on the broker's Trio thread)
    /health    200 "ready\\n" when the broker serves; 503 "not ready: <reason>\\n" while starting
               (recovering logs, loading consumer groups), shutting down, when the data dir's disk
               is nearly full or a log dir has failed (see broker.metrics.Health)
    /          a short index

The same routes are served on the HTTP gateway's address (http.listen, broker.httpd.app) too.
Limits of this endpoint: request heads up to 16 KiB (431 above), request bodies up to 64 KiB
(413 above), a request must arrive whole within 30 s and an idle keep-alive connection is closed
after 30 s; at most 32 connections are served at once (more are answered 503).
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .httpd.server import Limits, Request, Response
from .httpd.server import serve_http as _serve

log = logging.getLogger("ringlog.http")

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
IDLE_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 32
LIMITS = Limits(max_header_bytes=MAX_HEAD, max_body_bytes=MAX_BODY, read_timeout_s=IDLE_TIMEOUT_S,
                idle_timeout_s=IDLE_TIMEOUT_S, max_connections=MAX_CONNECTIONS)
# Prometheus text format 0.0.4, which every Prometheus version reads (generate_latest writes it
# for the legacy-valid names used here).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_INDEX = b"ringlog broker\n/metrics  Prometheus metrics\n/health   200 ready, 503 not ready: reason\n"


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
    async def app(request: Request) -> Response:
        return respond(request.method, request.target, metrics)

    class _Status:
        def started(self, address: Any) -> None:
            log.info("metrics endpoint on http://%s:%d/metrics", address[0], address[1],
                     extra={"event": "metrics_listening", "event_fields": {"host": address[0], "port": address[1]}})
            task_status.started(address)

    await _serve(host, port, app, LIMITS, task_status=_Status())


def respond(method: str, target: str, metrics: Any) -> Response:
    """The answer to a request of the metrics endpoint."""
    path = target.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return Response(405, b"only GET and HEAD\n", headers=[("Allow", "GET, HEAD")])
    if path == "/metrics":
        return Response(200, metrics.render(), METRICS_CONTENT_TYPE)
    if path == "/health":
        ok, reason = metrics.health.check()
        if ok:
            return Response(200, b"ready\n", _TEXT)
        return Response(503, f"not ready: {reason}\n".encode(), _TEXT)
    if path == "/":
        return Response(200, _INDEX, _TEXT)
    return Response(404, b"not found\n", _TEXT)
