"""The broker's HTTP/1.1 server: h11 (sans-IO parsing and framing) on Trio streams.

One task per connection. h11 parses request heads and bodies and frames responses; this module
owns the socket, the limits and the timeouts, and hands each whole request to an application
(an `async def app(request) -> Response`). Routing lives in the applications (broker.httpd.app).

Limits (`Limits`, from the broker's http.* keys):

  max_header_bytes   a request head larger than this is answered 431 (h11's
                     max_incomplete_event_size), and the connection closed
  max_body_bytes     a body announced (Content-Length) or arriving (chunked) larger than this is
                     answered 413 without reading it, and the connection closed
  read_timeout_s     once the first byte of a request has arrived, the whole request (head and
                     body) must arrive within this long, or it is answered 408 and the connection
                     closed: a slow-loris client holds a connection for at most this long
  idle_timeout_s     a keep-alive connection with no request under way is closed after this long
  max_connections    more connections than this at once are answered 503 at once and closed

Keep-alive: HTTP/1.1 connections stay open between requests unless either side says
`Connection: close` (h11 decides; HTTP/1.0 connections close after one answer). Requests are
answered in order, one at a time per connection: the next request is read only after the answer
has been sent, so a client that does not read its answers stops being read (TCP backpressure).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

import attrs
import h11
import trio

log = logging.getLogger("ringlog.http")

RECEIVE_SIZE = 64 * 1024
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError)
REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict", 411: "Length Required",
           413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable"}


@attrs.frozen
class Limits:
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    read_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0
    max_connections: int = 32


@attrs.define(eq=False)
class Request:
    method: str
    target: str
    headers: dict[str, str]     # lower-case names; repeated headers joined with ", "
    body: bytes
    peer: str
    received_ns: int            # time.time_ns() when the request was complete

    @property
    def path(self) -> str:
        return unquote(self.target.split("?", 1)[0])

    @property
    def query(self) -> dict[str, str]:
        _, _, q = self.target.partition("?")
        return dict(parse_qsl(q, keep_blank_values=True))

    def media_type(self) -> str:
        """The Content-Type without parameters, lower case ('' when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@attrs.define(eq=False)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = attrs.field(factory=list)


App = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """Raised by an application to answer `status` with a short text body."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


def raw_response(status: int, body: bytes, *, close: bool = True, extra: list[tuple[str, str]] = ()) -> bytes:
    """An answer framed by hand, for when h11's state machine can no longer send one (the
    request could not be parsed, or the connection is refused before any parsing)."""
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}", "Cache-Control: no-store"]
    head += [f"{k}: {v}" for k, v in extra]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def serve_http(host: str, port: int, app: App, limits: Limits, *, name: str = "http",
                     task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on host:port until cancelled; reports the bound (host, port) to task_status."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    address = (bound[0], bound[1])
    task_status.started(address)
    open_connections = [0]

    async def handle(stream: trio.SocketStream) -> None:
        try:
            if open_connections[0] >= limits.max_connections:
                await stream.send_all(raw_response(503, b"too many connections\n", extra=[("Retry-After", "1")]))
                await _linger(stream)
                return
            open_connections[0] += 1
            try:
                await serve_connection(stream, app, limits)
            finally:
                open_connections[0] -= 1
        except _GONE:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(handle, listeners)


def _peer(stream: Any) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, AttributeError):
        return "?"


async def serve_connection(stream: trio.abc.Stream, app: App, limits: Limits) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
    peer = _peer(stream)
    while True:
        try:
            request = await _read_request(stream, conn, limits, peer)
        except _Refuse as refuse:
            if refuse.status:
                await stream.send_all(raw_response(refuse.status, f"{refuse.message}\n".encode()))
                await _linger(stream)
            return
        if request is None:
            return
        try:
            response = await app(request)
        except HttpError as exc:
            response = Response(exc.status, f"{exc}\n".encode(), headers=exc.headers)
        except Exception:
            log.exception("HTTP %s %s from %s failed", request.method, request.target, peer)
            response = Response(500, b"internal error\n")
        await _send(stream, conn, request, response)
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


LINGER_S = 0.5


async def _linger(stream: Any) -> None:
    """Close after an answer sent before the request was read whole (413, 431, 503): send EOF,
    then read and drop what the client still sends, briefly. Closing with unread bytes would
    make the kernel send a reset, and the client could lose the answer before reading it."""
    try:
        await stream.send_eof()
        with trio.move_on_after(LINGER_S):
            while await stream.receive_some(RECEIVE_SIZE):
                pass
    except (*_GONE, AttributeError):
        pass


class _Refuse(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


async def _receive(stream: trio.abc.Stream, conn: h11.Connection, deadline: float, status: int) -> bytes:
    with trio.move_on_at(deadline):
        data = await stream.receive_some(RECEIVE_SIZE)
        conn.receive_data(data)
        return data
    raise _Refuse(status, "request not received in time" if status else "")


async def _read_request(stream: trio.abc.Stream, conn: h11.Connection, limits: Limits, peer: str) -> Request | None:
    """The next whole request; None when the client closed or the idle timeout passed."""
    # Idle until the first byte of the next request, then the whole request must arrive within
    # read_timeout_s (so bytes trickling in one at a time do not keep extending it).
    deadline = trio.current_time() + limits.idle_timeout_s
    started = False
    request: h11.Request | None = None
    body = bytearray()
    # The first bytes of this request, enough to tell whether its head ends within the limit
    # (h11 would parse a too-large head that arrived whole, and name another problem of it).
    scan_limit = limits.max_header_bytes + 4
    scan = bytearray(conn.trailing_data[0][:scan_limit])
    while True:
        if request is None and len(scan) >= scan_limit and b"\r\n\r\n" not in scan and b"\n\n" not in scan:
            raise _Refuse(431, f"request head over the limit of {limits.max_header_bytes} bytes")
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _Refuse(exc.error_status_hint, f"bad request: {exc}") from None
        if event is h11.NEED_DATA:
            if conn.their_state is h11.DONE:
                return None
            if not started and (request is not None or conn.trailing_data[0]):
                started = True
                deadline = trio.current_time() + limits.read_timeout_s
            try:
                data = await _receive(stream, conn, deadline, 408 if started else 0)
            except h11.RemoteProtocolError as exc:
                raise _Refuse(exc.error_status_hint, f"bad request: {exc}") from None
            if request is None and len(scan) < scan_limit:
                scan += data[: scan_limit - len(scan)]
            if not started:
                started = True
                deadline = trio.current_time() + limits.read_timeout_s
            continue
        if event is h11.PAUSED:
            return None
        if isinstance(event, h11.ConnectionClosed):
            if started and request is not None:
                raise _Refuse(0, "")
            return None
        if isinstance(event, h11.Request):
            request = event
            # h11 bounds only a head still incomplete; one that arrived whole in one read is
            # measured here, so the limit does not depend on how the bytes were split.
            head = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
            if head > limits.max_header_bytes:
                raise _Refuse(431, f"request head over the limit of {limits.max_header_bytes} bytes")
            length = _content_length(event.headers)
            if length is not None and length > limits.max_body_bytes:
                raise _Refuse(413, f"request body of {length} bytes is over the limit of {limits.max_body_bytes}")
            if conn.they_are_waiting_for_100_continue:
                # curl sends `Expect: 100-continue` for bodies over 1 KiB and would wait a second
                await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            continue
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > limits.max_body_bytes:
                raise _Refuse(413, f"request body is over the limit of {limits.max_body_bytes} bytes")
            continue
        if isinstance(event, h11.EndOfMessage):
            assert request is not None
            headers: dict[str, str] = {}
            for name, value in request.headers:
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            return Request(request.method.decode("ascii", "replace"), request.target.decode("latin-1"),
                           headers, bytes(body), peer, time.time_ns())


def _content_length(headers: Any) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send(stream: trio.abc.Stream, conn: h11.Connection, request: Request, response: Response) -> None:
    headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
               ("Cache-Control", "no-store"), *response.headers]
    out = conn.send(h11.Response(status_code=response.status, headers=headers,
                                 reason=REASONS.get(response.status, "Error").encode()))
    if request.method != "HEAD" and response.body:
        out += conn.send(h11.Data(data=response.body))
    out += conn.send(h11.EndOfMessage())
    await stream.send_all(out)
