"""Request routing: header parsing, version checks and decoding. No I/O.

`Router.route(frame)` returns one of
  * `Dispatch(header, spec, request)`: run `spec.func(ctx, request)`;
  * `Immediate(header, data)`: a complete response frame to send without running a handler
    (UNSUPPORTED_VERSION answers);
  * `Reject(reason)`: close the connection (unreadable header, malformed body, unknown API key
    whose response shape is unknown) -- what Kafka does with requests it cannot parse.
"""
from __future__ import annotations

import struct
from typing import Any

import attrs
from kio.schema.errors import ErrorCode

from ringlog.client.wire import (
    InvalidRequest,
    RequestHeader,
    UnsupportedVersion,
    decode_request_body,
    encode_response,
    parse_request_header,
    response_class,
    response_header_bytes,
)

from .handlers import HandlerSpec, error_response, load_handlers

API_VERSIONS = 18
PRODUCE = 0


@attrs.frozen
class Dispatch:
    header: RequestHeader
    spec: HandlerSpec
    request: Any


@attrs.frozen
class Immediate:
    header: RequestHeader
    data: bytes


@attrs.frozen
class Reject:
    reason: str
    header: RequestHeader | None = None


def _frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


class Router:
    def __init__(self, handlers: dict[int, HandlerSpec] | None = None) -> None:
        self.handlers = dict(load_handlers() if handlers is None else handlers)

    def advertised(self) -> list[tuple[int, int, int]]:
        """(api_key, min, max) for ApiVersions, sorted by key."""
        return sorted((s.api_key, s.advertise_min_version, s.max_version) for s in self.handlers.values())

    def route(self, frame: bytes) -> Dispatch | Immediate | Reject:
        try:
            header = parse_request_header(frame)
        except InvalidRequest as exc:
            return Reject(f"unreadable request header: {exc}")
        spec = self.handlers.get(header.api_key)
        if spec is None:
            return self._unsupported(header, None, f"unknown API key {header.api_key}")
        if not spec.supports(header.api_version):
            return self._unsupported(header, spec, f"{spec.name} v{header.api_version} is not supported")
        try:
            request = decode_request_body(header, frame)
        except UnsupportedVersion:
            return self._unsupported(header, spec, f"no schema for {spec.name} v{header.api_version}")
        except InvalidRequest as exc:
            return Reject(f"malformed {spec.name} v{header.api_version}: {exc}", header)
        return Dispatch(header, spec, request)

    def _unsupported(self, header: RequestHeader, spec: HandlerSpec | None, reason: str) -> Immediate | Reject:
        key, version = header.api_key, header.api_version
        if key == API_VERSIONS:
            # v0-shaped body whatever the version asked, with ApiVersions' own range, so that the
            # client can pick a version it shares with us (response header is always v0).
            lo, hi = (spec.advertise_min_version, spec.max_version) if spec else (0, 3)
            body = struct.pack(">ihihhh", header.correlation_id, ErrorCode.unsupported_version, 1, API_VERSIONS, lo, hi)
            return Immediate(header, _frame(body))
        if key == PRODUCE and spec is not None and spec.advertises(version) and version <= 2:
            # Produce v0-2 (advertised for librdkafka's feature detection): an empty response list,
            # plus throttle_time_ms from v1 on. Clients that negotiated never send these.
            body = response_header_bytes(header) + struct.pack(">i", 0) + (struct.pack(">i", 0) if version >= 1 else b"")
            return Immediate(header, _frame(body))
        cls = response_class(key, version)
        if cls is None:
            return Reject(reason, header)
        try:
            return Immediate(header, encode_response(header, error_response(cls, ErrorCode.unsupported_version)))
        except Exception as exc:  # a response shape error_response cannot fill
            return Reject(f"{reason} ({exc!r})", header)
