"""One Trio connection to one Kafka broker.

What happens on the socket:

- connect, then ApiVersions (v3 first; a broker that does not know v3 answers with a v0-shaped body
  and UNSUPPORTED_VERSION, and the request is repeated as v0). For every API the connection then
  uses the highest version inside both the broker's range and `API_WINDOWS` (what this client
  implements); `conn.version(key)` raises UnsupportedApi when the ranges do not meet.
- requests are pipelined: `submit()` gives each the next correlation id and queues its frame
  synchronously, so requests leave in call order; one writer task writes whatever is queued in one
  send_all, and one reader task matches responses to waiters by correlation id. Cancelling a caller
  never cuts a frame in half, since only the writer writes.
- a request that gets no answer within its timeout breaks the connection (the stream position is
  lost), which fails every other pending request with ConnectionLost.
- Produce with acks=0 has no response: `request(..., expect_response=False)` returns after the write.

Security (client/security.py): with SSL or SASL_SSL the TCP stream is wrapped in a trio.SSLStream
and the handshake finishes before anything else is sent; a certificate the context does not trust
(or that does not name the host) fails as SslAuthenticationError, and so does a broker that
refuses the client's certificate (under TLS 1.3 that alert arrives with the first answer). With
SASL_PLAINTEXT or SASL_SSL, SaslHandshake v1 and SaslAuthenticate follow ApiVersions (KIP-152); a
refusal is SaslAuthenticationFailedError (58) with the broker's message, and the connection is
not used. A SaslAuthenticate v1+ answer with a session lifetime (KIP-368,
connections.max.reauth.ms) starts a task that authenticates again on the same connection at a
random point between 85% and 95% of it, as the Java client does. Requests submitted during the
exchange are held and written after it (the session may end while an earlier long-poll Fetch
delays the SASL answers, and a broker closes a connection that sends anything but SASL after
its session ended); requests already written are answered as usual. A failed re-authentication
closes the connection.

The reader and writer tasks run in a nursery the caller passes in (the owning client's), so the connection
never outlives its client. `aclose()` cancels it and closes the socket.

`Request builders`: kio has one dataclass per API version, and field sets differ between versions.
`conn.make(api_key)` returns a `Builder` for the negotiated version whose calls take keyword fields,
drop the ones that version lacks and fill the ones that only later versions require (bools false,
uuids null, arrays empty), and turn integer milliseconds into the timedeltas kio wants.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import itertools
import logging
import random
import ssl
import sys
from typing import Any

import trio

from .errors import ConnectionLost, KafkaError, RequestTimedOut, SslAuthenticationError, UnsupportedApi
from .security import ScramClient, SecurityConfig, sasl_client
from .wire import FrameDecoder, FrameTooLarge, decode_response, encode_request, request_class
from .wire.protocol import InvalidRequest, UnsupportedVersion

__all__ = ["API_WINDOWS", "ApiKey", "Builder", "Connection", "open_connection"]


class ApiKey:
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    SASL_AUTHENTICATE = 36
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    INCREMENTAL_ALTER_CONFIGS = 44
    OFFSET_DELETE = 47
    DESCRIBE_CLIENT_QUOTAS = 48
    ALTER_CLIENT_QUOTAS = 49
    DESCRIBE_CLUSTER = 60
    CONSUMER_GROUP_DESCRIBE = 69


# The versions this client implements, per API. The upper ends stop before shape changes the code
# does not handle: Fetch 13 (topic ids), OffsetFetch 8 (batched groups), FindCoordinator 4
# (batched keys), DeleteTopics 6 (topic ids), ListGroups 5 (type filter), Metadata 13.
API_WINDOWS: dict[int, tuple[int, int]] = {
    ApiKey.PRODUCE: (3, 9),
    ApiKey.FETCH: (4, 12),
    ApiKey.LIST_OFFSETS: (1, 7),
    ApiKey.METADATA: (1, 12),
    ApiKey.OFFSET_COMMIT: (2, 8),
    ApiKey.OFFSET_FETCH: (1, 7),
    ApiKey.FIND_COORDINATOR: (0, 3),
    ApiKey.JOIN_GROUP: (0, 7),
    ApiKey.HEARTBEAT: (0, 4),
    ApiKey.LEAVE_GROUP: (0, 4),
    ApiKey.SYNC_GROUP: (0, 5),
    ApiKey.DESCRIBE_GROUPS: (0, 5),
    ApiKey.LIST_GROUPS: (0, 4),
    ApiKey.API_VERSIONS: (0, 3),
    # SaslHandshake v0 sends the tokens as bare frames: only v1 (tokens in SaslAuthenticate)
    ApiKey.SASL_HANDSHAKE: (1, 1),
    ApiKey.SASL_AUTHENTICATE: (0, 2),
    ApiKey.CREATE_TOPICS: (2, 7),
    ApiKey.DELETE_TOPICS: (1, 5),
    ApiKey.DELETE_RECORDS: (0, 2),
    ApiKey.INIT_PRODUCER_ID: (0, 4),
    ApiKey.OFFSET_FOR_LEADER_EPOCH: (2, 4),
    # transactions: AddPartitionsToTxn 4+ is the broker-to-broker (verification) form
    ApiKey.ADD_PARTITIONS_TO_TXN: (0, 3),
    ApiKey.ADD_OFFSETS_TO_TXN: (0, 3),
    ApiKey.END_TXN: (0, 3),
    ApiKey.TXN_OFFSET_COMMIT: (0, 3),
    ApiKey.DESCRIBE_CONFIGS: (1, 4),
    ApiKey.ALTER_CONFIGS: (0, 2),
    ApiKey.CREATE_PARTITIONS: (0, 3),
    ApiKey.DELETE_GROUPS: (0, 2),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (0, 1),
    ApiKey.OFFSET_DELETE: (0, 0),
    ApiKey.DESCRIBE_CLIENT_QUOTAS: (0, 1),
    ApiKey.ALTER_CLIENT_QUOTAS: (0, 1),
    ApiKey.DESCRIBE_CLUSTER: (0, 1),
    ApiKey.CONSUMER_GROUP_DESCRIBE: (0, 1),
}

_UNSUPPORTED_VERSION = 35
_SASL_APIS = frozenset({ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE})

log = logging.getLogger(__name__)


def tls_failure(exc: BaseException | None) -> ssl.SSLError | None:
    """The TLS error behind a failed stream operation (trio wraps it in BrokenResourceError), or
    None; an EOF in the middle of TLS is a lost connection, not a TLS failure."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ssl.SSLError) and not isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


_CLOSED_AFTER_HANDSHAKE = ("the broker closed the connection right after the TLS handshake: it did not accept "
                           "this client (ssl.client.auth needs a client certificate from a CA it trusts: "
                           "ssl.certificate.location)")


def _tls_message(host: str, port: int, exc: ssl.SSLError | str) -> str:
    if isinstance(exc, str):
        return f"TLS with {host}:{port} failed: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake with {host}:{port} failed: the broker's certificate is not trusted: {exc.verify_message}"
    reason = exc.reason or str(exc)
    if reason.isupper():  # OpenSSL's code: TLSV13_ALERT_CERTIFICATE_REQUIRED
        reason = reason.lower().replace("_", " ")
    return f"TLS with {host}:{port} failed: {reason}"


# --- request builders ------------------------------------------------------------------------


def _fill_value(f: dataclasses.Field) -> Any:
    kt = f.metadata.get("kafka_type")
    if kt == "bool":
        return False
    if kt == "uuid":
        return None
    if kt == "string":
        return None
    if kt is None:  # nested arrays
        return ()
    if kt in ("int8", "int16", "int32", "int64"):
        return -1
    raise TypeError(f"required field {f.name} ({kt}) has no value")


@functools.cache
def _field_plan(cls: type) -> tuple[tuple[str, str | None, bool, Any], ...]:
    """(name, kafka_type, required, fill) for each field of a kio entity class."""
    plan = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        plan.append((f.name, f.metadata.get("kafka_type"), required, f))
    return tuple(plan)


def build_entity(cls: type, fields: dict[str, Any]) -> Any:
    kwargs = {}
    for name, kt, required, f in _field_plan(cls):
        if name in fields:
            value = fields[name]
            if kt in ("timedelta_i32", "timedelta_i64") and isinstance(value, (int, float)):
                value = datetime.timedelta(milliseconds=value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        elif required:
            kwargs[name] = _fill_value(f)
    return cls(**kwargs)


class Builder:
    """Builds kio request entities of one API at one version (see the module docstring)."""

    __slots__ = ("api_key", "version", "_module", "_root")

    def __init__(self, api_key: int, version: int) -> None:
        cls = request_class(api_key, version)
        if cls is None:
            raise UnsupportedApi(api_key, None)
        self.api_key = api_key
        self.version = version
        self._root = cls
        self._module = sys.modules[cls.__module__]

    def has(self, name: str) -> bool:
        return hasattr(self._module, name)

    def fields(self, name: str | None = None) -> set[str]:
        cls = self._root if name is None else getattr(self._module, name)
        return {f.name for f in dataclasses.fields(cls)}

    def __call__(self, _name: str | None = None, **fields: Any) -> Any:
        cls = self._root if _name is None else getattr(self._module, _name)
        return build_entity(cls, fields)


@functools.cache
def builder(api_key: int, version: int) -> Builder:
    return Builder(api_key, version)


def td_ms(value: Any) -> int:
    """Milliseconds from a kio timedelta/int field."""
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    return int(value)


# --- the connection ----------------------------------------------------------------------------


class _Pending:
    __slots__ = ("api_key", "version", "event", "frame", "error", "cid")

    def __init__(self, api_key: int, version: int) -> None:
        self.api_key = api_key
        self.version = version
        self.event = trio.Event()
        self.frame: bytes | None = None
        self.error: BaseException | None = None


class Connection:
    """A connection to one broker; build with `open_connection`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        host: str,
        port: int,
        *,
        node_id: int | None = None,
        client_id: str | None = "ringlog",
        request_timeout: float = 30.0,
        max_frame_size: int = 256 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.node_id = node_id
        self.client_id = client_id
        self.request_timeout = request_timeout
        self._stream = stream
        self._decoder = FrameDecoder(max_frame_size)
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._outbox: list[bytes] = []
        self._outbox_lot = trio.lowlevel.ParkingLot()
        self._reader_scope: trio.CancelScope | None = None
        self._writer_scope: trio.CancelScope | None = None
        self._closed_error: BaseException | None = None
        self.closed = trio.Event()
        self.broker_versions: dict[int, tuple[int, int]] = {}
        self._versions: dict[int, int] = {}
        self.tls_error: ssl.SSLError | str | None = None  # what broke a TLS stream, when TLS did
        self._answered = False  # a response has arrived
        self.session_lifetime_ms = 0  # of the SASL session, 0: it does not end
        self.reauthentications = 0
        self._reauth_scope: trio.CancelScope | None = None
        self._holding = False  # re-authenticating: frames other than SASL wait in _held
        self._held: list[bytes] = []

    def __repr__(self) -> str:
        return f"<Connection {self.host}:{self.port} node={self.node_id}>"

    @property
    def is_closed(self) -> bool:
        return self._closed_error is not None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # --- versions

    def version(self, api_key: int) -> int:
        """The highest version of `api_key` both sides support."""
        v = self._versions.get(api_key)
        if v is None:
            raise UnsupportedApi(api_key, self.broker_versions.get(api_key))
        return v

    def supports(self, api_key: int) -> bool:
        return api_key in self._versions

    def make(self, api_key: int) -> Builder:
        return builder(api_key, self.version(api_key))

    def _set_broker_versions(self, ranges: dict[int, tuple[int, int]]) -> None:
        self.broker_versions = ranges
        self._versions = {}
        for key, (lo, hi) in API_WINDOWS.items():
            if key not in ranges:
                continue
            blo, bhi = ranges[key]
            top = min(hi, bhi)
            if top >= max(lo, blo):
                self._versions[key] = top

    async def _negotiate(self) -> None:
        for version in (3, 0):
            b = builder(ApiKey.API_VERSIONS, version)
            req = b(client_software_name="ringlog", client_software_version="0.1.0")
            try:
                resp = await self.request(req)
            except (InvalidRequest, UnsupportedVersion):
                # a v0-shaped error body read as v3 may not decode: fall back to v0
                continue
            if resp.error_code == _UNSUPPORTED_VERSION and version > 0:
                continue
            if resp.error_code:
                raise KafkaError(resp.error_code, "ApiVersions")
            self._set_broker_versions(
                {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in resp.api_keys}
            )
            return
        raise UnsupportedApi(ApiKey.API_VERSIONS, None)

    # --- I/O

    async def _reader(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._reader_scope = scope
            task_status.started()
            try:
                while True:
                    data = await self._stream.receive_some(1 << 18)
                    if not data:
                        raise ConnectionLost(f"{self.host}:{self.port} closed the connection")
                    decoder = self._decoder
                    decoder.feed(data)
                    while (f := decoder.next_frame()) is not None:
                        self._answered = True
                        cid = int.from_bytes(f[:4], "big", signed=True)
                        p = self._pending.pop(cid, None)
                        if p is not None:
                            p.frame = f
                            p.event.set()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, FrameTooLarge, ConnectionLost) as exc:
                tls: ssl.SSLError | str | None = tls_failure(exc)
                if tls is None and isinstance(self._stream, trio.SSLStream) and not self._answered:
                    # closed before any answer: a broker that refuses the client's certificate
                    # sends an alert (TLS 1.3: after the handshake) or just closes
                    tls = _CLOSED_AFTER_HANDSHAKE
                if tls is not None:
                    self.tls_error = tls
                    err = ConnectionLost(_tls_message(self.host, self.port, tls))
                else:
                    err = exc if isinstance(exc, ConnectionLost) else ConnectionLost(f"{self.host}:{self.port}: {exc!r}")
                self._fail(err)
                return
        # cancelled: the client is shutting down
        self._fail(ConnectionLost(f"{self.host}:{self.port}: connection closed"))

    def _fail(self, error: BaseException) -> None:
        if self._closed_error is None:
            self._closed_error = error
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.error = self._closed_error
            p.event.set()
        if self._reader_scope is not None:
            self._reader_scope.cancel()
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        if self._reauth_scope is not None:
            self._reauth_scope.cancel()
        self.closed.set()

    async def _writer(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Write queued frames in submission order; several frames go out in one send_all."""
        with trio.CancelScope() as scope:
            self._writer_scope = scope
            task_status.started()
            try:
                while True:
                    while not self._outbox:
                        await self._outbox_lot.park()
                    data = b"".join(self._outbox) if len(self._outbox) > 1 else self._outbox[0]
                    self._outbox.clear()
                    await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._fail(ConnectionLost(f"{self.host}:{self.port}: {exc!r}"))

    def submit(self, request: Any, *, expect_response: bool = True) -> _Pending | None:
        """Queue `request` for writing now, in call order, without waiting: pipelining callers
        that must keep their requests in order (the producer's per-partition batches) call this
        synchronously, then `await conn.wait(pending)`."""
        if self._closed_error is not None:
            raise ConnectionLost(str(self._closed_error))
        api_key = int(request.__api_key__)
        version = int(request.__version__)
        cid = next(self._ids) & 0x7FFFFFFF
        frame = encode_request(request, cid, self.client_id)
        if self._holding and api_key not in _SASL_APIS:
            self._held.append(frame)
        else:
            self._outbox.append(frame)
            self._outbox_lot.unpark_all()
        if not expect_response:
            return None
        p = _Pending(api_key, version)
        p.cid = cid
        self._pending[cid] = p
        return p

    async def wait(self, p: _Pending, *, timeout: float | None = None) -> Any:
        """The decoded response to a submitted request."""
        try:
            timeout = self.request_timeout if timeout is None else timeout
            with trio.move_on_after(timeout) as scope:
                await p.event.wait()
            if scope.cancelled_caught:
                self._fail(ConnectionLost(f"{self.host}:{self.port}: request timed out"))
                raise RequestTimedOut(f"no response to API {p.api_key} v{p.version} within {timeout}s")
        finally:
            # on cancellation the response (if any) is dropped by the reader
            self._pending.pop(p.cid, None)
        if p.error is not None:
            raise ConnectionLost(str(p.error))
        _cid, entity = decode_response(p.frame, p.api_key, p.version)
        return entity

    async def request(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        expect_response: bool = True,
    ) -> Any:
        """Send a kio request entity and return the decoded response entity."""
        p = self.submit(request, expect_response=expect_response)
        if p is None:
            await trio.lowlevel.checkpoint()
            return None
        return await self.wait(p, timeout=timeout)

    async def aclose(self) -> None:
        self._fail(ConnectionLost(f"{self.host}:{self.port}: connection closed"))
        with trio.CancelScope(shield=True):
            if isinstance(self._stream, trio.SSLStream):
                # no close_notify exchange: the reader or writer may still be inside the stream
                await trio.aclose_forcefully(self._stream)
            else:
                await self._stream.aclose()

    # --- SASL (KIP-152, KIP-368)

    async def authenticate(self, security: SecurityConfig) -> None:
        """SaslHandshake v1, then SaslAuthenticate until the mechanism is done; the error the
        broker answered (or the SCRAM check's) otherwise."""
        mechanism = security.sasl_mechanism
        if not self.supports(ApiKey.SASL_HANDSHAKE) or not self.supports(ApiKey.SASL_AUTHENTICATE):
            raise UnsupportedApi(ApiKey.SASL_AUTHENTICATE, self.broker_versions.get(ApiKey.SASL_AUTHENTICATE))
        resp = await self.request(self.make(ApiKey.SASL_HANDSHAKE)(mechanism=mechanism))
        if resp.error_code:
            offered = ", ".join(resp.mechanisms) or "none"
            raise KafkaError(resp.error_code, f"{self.host}:{self.port} does not enable SASL mechanism {mechanism} "
                                              f"(it enables: {offered})" if resp.error_code == 33 else
                             f"{self.host}:{self.port}: SaslHandshake refused (is this a SASL listener?)")
        client = sasl_client(security)
        resp = await self._sasl_step(client.first())
        if isinstance(client, ScramClient):
            salt, iterations = client.server_first(resp.auth_bytes)
            salted = await trio.to_thread.run_sync(client.salted_password, salt, iterations)
            resp = await self._sasl_step(client.final(salted))
            client.verify(resp.auth_bytes)
        lifetime = getattr(resp, "session_lifetime", None)
        self.session_lifetime_ms = td_ms(lifetime) if lifetime is not None else 0

    async def _sasl_step(self, token: bytes) -> Any:
        resp = await self.request(self.make(ApiKey.SASL_AUTHENTICATE)(auth_bytes=token))
        if resp.error_code:
            raise KafkaError(resp.error_code, resp.error_message or f"{self.host}:{self.port} refused the SASL exchange")
        return resp

    async def _reauthenticate(self, security: SecurityConfig, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Authenticate again before each session ends; a failure closes the connection."""
        with trio.CancelScope() as scope:
            self._reauth_scope = scope
            task_status.started()
            while self.session_lifetime_ms > 0:
                await trio.sleep(self.session_lifetime_ms / 1000 * random.uniform(0.85, 0.95))
                self._holding = True
                try:
                    await self.authenticate(security)
                except (KafkaError, ConnectionLost, RequestTimedOut, UnsupportedApi) as exc:
                    log.warning("%s: re-authentication failed, closing the connection: %s", self, exc)
                    self._fail(ConnectionLost(f"{self.host}:{self.port}: re-authentication failed: {exc}"))
                    return
                finally:
                    self._holding = False
                    if self._held and self._closed_error is None:
                        self._outbox += self._held
                        self._outbox_lot.unpark_all()
                    self._held = []
                self.reauthentications += 1


async def open_connection(
    nursery: trio.Nursery,
    host: str,
    port: int,
    *,
    node_id: int | None = None,
    client_id: str | None = "ringlog",
    request_timeout: float = 30.0,
    connect_timeout: float = 10.0,
    security: SecurityConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Connection:
    """Connect (TLS when `security` says so, with `ssl_context`), start the reader task in
    `nursery`, negotiate API versions and authenticate (SASL)."""
    with trio.fail_after(connect_timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    try:
        sock = stream.socket
        import socket as _socket

        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass
    if security is not None and security.tls:
        assert ssl_context is not None
        stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
        try:
            with trio.fail_after(connect_timeout):
                await stream.do_handshake()
        except BaseException as exc:
            await trio.aclose_forcefully(stream)
            tls = tls_failure(exc)
            if tls is not None:
                raise SslAuthenticationError(_tls_message(host, port, tls)) from exc
            if isinstance(exc, trio.BrokenResourceError):
                raise ConnectionLost(f"{host}:{port} closed the connection during the TLS handshake "
                                     f"(security.protocol: is it a TLS listener?)") from exc
            raise
    conn = Connection(stream, host, port, node_id=node_id, client_id=client_id, request_timeout=request_timeout)
    try:
        await nursery.start(conn._reader)
        await nursery.start(conn._writer)
        await conn._negotiate()
        if security is not None and security.sasl:
            await conn.authenticate(security)
            if conn.session_lifetime_ms > 0:
                await nursery.start(conn._reauthenticate, security)
    except BaseException as exc:
        await conn.aclose()
        if conn.tls_error is not None and isinstance(exc, (ConnectionLost, RequestTimedOut)):
            # the broker refused our certificate (TLS 1.3 says so after the handshake)
            raise SslAuthenticationError(_tls_message(host, port, conn.tls_error)) from exc
        if isinstance(exc, ConnectionLost) and not conn._answered and not isinstance(stream, trio.SSLStream):
            # a TLS listener reads our ApiVersions as a broken handshake and closes
            raise ConnectionLost(f"{host}:{port} closed the connection before answering ApiVersions "
                                 f"(security.protocol: is it a TLS listener?)") from exc
        raise
    return conn
