"""The HTTP gateway (http.listen): one application on broker.httpd.server routing to

    /ingest/{topic}                  log push (broker.httpd.ingest)
    /topics...                       Confluent REST Proxy v2 topics and produce (restproxy)
    /consumers/...                   REST Proxy v2 consumer instances (consumers)
    /metrics, /health, /             as on metrics.listen (broker.http)

Started by broker.server in the broker's root nursery after the Kafka listener, so /ingest
never sees a broker that is still recovering; stopped before the logs close.
"""
from __future__ import annotations

import logging
from typing import Any

import trio

from ..http import respond as metrics_respond
from . import ingest, restproxy
from .server import HttpError, Limits, Request, Response, serve_http

log = logging.getLogger("ringlog.http")


class Gateway:
    def __init__(self, broker: Any) -> None:
        self.broker = broker
        from .consumers import ConsumerInstances

        self.consumers = ConsumerInstances(broker)

    async def __call__(self, request: Request) -> Response:
        path = request.path
        parts = [p for p in path.split("/") if p]
        if not parts:
            return metrics_respond(request.method, request.target, self.broker.metrics)
        head = parts[0]
        if head == "ingest" and len(parts) == 2:
            try:
                return await ingest.handle_ingest(self, request, parts[1])
            except HttpError as exc:
                return ingest.error(exc.status, str(exc), exc.headers)
        if head == "topics":
            return await restproxy.handle_topics(self, request, parts[1:])
        if head == "consumers":
            return await self.consumers.handle(request, parts[1:])
        if head in ("metrics", "health") and len(parts) == 1:
            return metrics_respond(request.method, request.target, self.broker.metrics)
        return restproxy.rest_error(404, 404, "HTTP 404 Not Found")


def limits_of(config: Any) -> Limits:
    return Limits(max_header_bytes=config.http_max_header_bytes, max_body_bytes=config.http_max_body_bytes,
                  read_timeout_s=config.http_request_timeout_ms / 1000,
                  idle_timeout_s=config.http_idle_timeout_ms / 1000,
                  max_connections=config.http_max_connections)


async def serve_gateway(broker: Any, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the gateway on http.listen until cancelled; reports the bound (host, port)."""
    config = broker.config
    gateway = Gateway(broker)
    broker.http_gateway = gateway
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gateway.consumers.run)
        address = await nursery.start(serve_http, config.http_listen_host or "127.0.0.1", config.http_listen_port,
                                      gateway, limits_of(config))
        log.info("HTTP gateway on http://%s:%d (REST Proxy v2, /ingest)", address[0], address[1],
                 extra={"event": "http_listening", "event_fields": {"host": address[0], "port": address[1]}})
        task_status.started(address)
