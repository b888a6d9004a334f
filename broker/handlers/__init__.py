"""The handler registry: one module per Kafka API, ApiVersions generated from it.

Writing a handler
-----------------
Put a module in this package (any name not starting with "_"); `load_handlers()` imports every
module here, and importing one registers its handlers::

    from kio.schema.errors import ErrorCode
    from ringlog.broker.handlers import RequestContext, handler

    @handler(api_key=19, min_version=2, max_version=5)
    async def create_topics(ctx: RequestContext, request):
        Response = ctx.response_class()      # kio response class for ctx.api_version
        ...
        return Response(...)

A handler is `async def (ctx: RequestContext, request) -> response`, where `request` is the kio
request entity of `ctx.api_version` (decoded by client.wire.decode_request) and the return value is
one of:
  * a kio response entity of the same API/version (the connection encodes it with
    client.wire.encode_response; the response header is chosen from the request);
  * `RawResponse(chunks)`: a hand-framed response body (bytes and storage FileRegion pieces, sent
    with os.sendfile), without the size prefix or response header, which the connection adds;
  * `NO_RESPONSE`: send nothing (Produce with acks=0).

Rules every handler follows:
  * Kafka errors are data: convert exceptions into error codes in the response
    (`broker.errors.KafkaError(code, message)` is what broker operations raise,
    `broker.errors.error_code_for(exc)` converts anything). An exception escaping a handler is
    logged and closes that one connection; the broker keeps serving everyone else.
    Raise `broker.errors.CloseConnection` when dropping the connection is the right answer.
  * Handlers on one connection run concurrently (a long-polling Fetch must not stop the next
    request being read); responses still leave in request order. A handler registered with
    `sequential=True` holds the reading of the next request on its connection until it returns
    or calls `ctx.release_reader()` (Produce uses this so that pipelined batches enter the
    partition rings in request order and so that a full ring stops the reading, "block" mode).
  * `advertise_min_version` lets a handler advertise versions below `min_version` in ApiVersions
    that are answered with UNSUPPORTED_VERSION (librdkafka needs Produce 0 in the range before it
    compresses).
  * Never block the Trio thread: file or CPU heavy work goes through trio.to_thread.run_sync.

What a handler receives: `RequestContext`
  ctx.broker        the running `broker.core.Broker` (see its docstring for the operations:
                    topics store `broker.metadata`, `broker.logs` (storage.manager.LogManager),
                    create_topic/delete_topic/create_partitions/alter_topic_configs/
                    delete_records, partition(topic, p) -> broker.partition.Partition,
                    producer_state, config, node_id, ...)
  ctx.header        client.wire.RequestHeader (api_key, api_version, correlation_id, client_id)
  ctx.api_version   int
  ctx.client_id     str | None
  ctx.peer          "host:port" of the client
  ctx.connection_id int, unique per connection for the broker's lifetime
  ctx.now_ms()      wall clock in milliseconds
  ctx.response_class()  the kio response class of this API and version
  ctx.release_reader()  (sequential handlers) let the connection read its next request
  ctx.throttle(ms)      read no further request from this connection for ms (client quotas)
  ctx.principal     "User:NAME" (SASL or client certificate), "User:ANONYMOUS" otherwise
  ctx.advertised    (host, port) of the listener the client connected to (Metadata's brokers)
  ctx.authorize(op, resource_type, name) / ctx.authorized(op, resource_type, names) /
  ctx.denied(op, resource_type, names) / ctx.require(op, resource_type, name) (raises KafkaError)
                    the ACL check (codes in broker.security.authorizer); everything allowed when
                    the authorizer is off. A denied resource gets Kafka's *_AUTHORIZATION_FAILED.

`error_response(cls, code)` builds any kio response with every error_code field set to `code` and
everything else empty; the router uses it for UNSUPPORTED_VERSION answers.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import importlib
import pkgutil
import time
import typing
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio
from kio.schema.errors import ErrorCode

if TYPE_CHECKING:
    from ringlog.broker.core import Broker
    from ringlog.client.wire import RequestHeader

Handler = Callable[["RequestContext", Any], Awaitable[Any]]


@attrs.frozen
class HandlerSpec:
    api_key: int
    name: str
    min_version: int
    max_version: int
    advertise_min_version: int
    func: Handler
    sequential: bool = False

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version

    def advertises(self, version: int) -> bool:
        return self.advertise_min_version <= version <= self.max_version


# api_key -> spec. Filled by importing the handler modules (load_handlers()).
HANDLERS: dict[int, HandlerSpec] = {}


def handler(
    *,
    api_key: int,
    min_version: int,
    max_version: int,
    advertise_min_version: int | None = None,
    sequential: bool = False,
    name: str | None = None,
) -> Callable[[Handler], Handler]:
    """Register `func` as the handler of `api_key` for versions min..max (inclusive)."""

    def register(func: Handler) -> Handler:
        if api_key in HANDLERS and HANDLERS[api_key].func is not func:
            existing = HANDLERS[api_key]
            if existing.func.__qualname__ != func.__qualname__ or existing.func.__module__ != func.__module__:
                raise RuntimeError(f"api key {api_key} registered twice ({existing.name}, {func.__qualname__})")
        HANDLERS[api_key] = HandlerSpec(
            api_key=api_key,
            name=name or func.__name__,
            min_version=min_version,
            max_version=max_version,
            advertise_min_version=min_version if advertise_min_version is None else advertise_min_version,
            func=func,
            sequential=sequential,
        )
        return func

    return register


_loaded = False


def load_handlers() -> dict[int, HandlerSpec]:
    """Import every handler module of this package (once) and return the registry."""
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True
    return HANDLERS


class _NoResponse:
    def __repr__(self) -> str:
        return "NO_RESPONSE"


NO_RESPONSE: Any = _NoResponse()


@attrs.frozen
class RawResponse:
    """A response body framed by the handler: bytes and FileRegion(file, position, length) pieces.

    The connection prefixes the frame size and the response header, then sends the bytes with
    send_all and the file regions with os.sendfile.
    """

    chunks: Sequence[Any]
    # the first Kafka error code inside the body (0: none), for the requests metric
    error_code: int = 0

    @property
    def size(self) -> int:
        return sum(len(c) if isinstance(c, (bytes, bytearray, memoryview)) else c.length for c in self.chunks)


@attrs.define(eq=False)
class RequestContext:
    broker: Broker
    header: RequestHeader
    peer: str = ""
    connection_id: int = 0
    # broker.security.session.Session of the connection: principal, listener (None: no connection)
    session: Any = None
    # broker.server.Connection the request came on (None: no connection), for throttling
    connection: Any = None
    _reader_released: trio.Event = attrs.field(factory=trio.Event)

    @property
    def api_version(self) -> int:
        return self.header.api_version

    @property
    def api_key(self) -> int:
        return self.header.api_key

    @property
    def client_id(self) -> str | None:
        return self.header.client_id

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def response_class(self) -> type:
        return response_class(self.header.api_key, self.header.api_version)

    def release_reader(self) -> None:
        self._reader_released.set()

    def throttle(self, throttle_ms: int) -> None:
        """Read no further request from this connection for `throttle_ms` (a client quota was
        exceeded: KIP-219, Kafka mutes the channel once the answer with throttle_time_ms is sent)."""
        if throttle_ms > 0 and self.connection is not None:
            self.connection.throttle(throttle_ms)

    # --- security (broker.security): cheap when the authorizer is off (one attribute test) ---

    @property
    def principal(self) -> str:
        """"User:NAME" of the SASL or certificate authentication, else "User:ANONYMOUS"."""
        return self.session.principal if self.session is not None else "User:ANONYMOUS"

    @property
    def listener_name(self) -> str | None:
        """The name of the listener this request came in on (None without a session)."""
        listener = self.session.listener if self.session is not None else None
        return listener.name if listener is not None else None

    @property
    def advertised(self) -> tuple[str, int]:
        """(host, port) of the listener this request came in on, as clients must reach it."""
        address = self.session.advertised if self.session is not None else None
        return address if address is not None else (self.broker.host, self.broker.port)

    def authorize(self, operation: int, resource_type: int, name: str, audit: bool = True) -> bool:
        """Whether the principal may do `operation` (broker.security.authorizer codes) on the
        resource; a denial is written to the audit log (unless `audit=False`: listings that only
        leave out what may not be seen). True when the authorizer is off."""
        if self.broker.authorizer is None:
            return True
        from ringlog.broker.security.check import authorize

        return authorize(self, operation, resource_type, name, audit)

    def require(self, operation: int, resource_type: int, name: str) -> None:
        """ctx.authorize, raising broker.errors.KafkaError with Kafka's *_AUTHORIZATION_FAILED
        code of the resource type when denied (for handlers that turn KafkaError into results)."""
        if self.broker.authorizer is not None and not self.authorize(operation, resource_type, name):
            from ringlog.broker.security.check import denial

            raise denial(resource_type, name)

    def denied(self, operation: int, resource_type: int, names: typing.Iterable[str]) -> frozenset[str]:
        """The names of `names` the principal may not do `operation` on (empty when the
        authorizer is off, without looking at `names`)."""
        if self.broker.authorizer is None:
            return frozenset()
        return frozenset(n for n in set(names) if not self.authorize(operation, resource_type, n))

    def authorized(self, operation: int, resource_type: int, names: typing.Iterable[str],
                   audit: bool = True) -> set[str]:
        """The names of `names` the principal may do `operation` on; `audit=False` for listings
        that only leave out what may not be seen (Kafka logs no denial for those either)."""
        if self.broker.authorizer is None:
            return set(names)
        from ringlog.broker.security.check import authorize

        return {n for n in names if authorize(self, operation, resource_type, n, audit)}

    def refused(self, resource_type: int) -> Any:
        """This API's response with every error code set to the *_AUTHORIZATION_FAILED of
        `resource_type` (for requests about one group, or the cluster)."""
        from ringlog.broker.security.check import error_code

        return error_response(self.response_class(), error_code(resource_type))

    def may_write_idempotently(self) -> bool:
        """IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (Kafka 3's rule for the
        InitProducerId of an idempotent producer)."""
        if self.broker.authorizer is None:
            return True
        from ringlog.broker.security.check import may_write_idempotently

        return may_write_idempotently(self)

    def may_create_topic(self, name: str) -> bool:
        """CREATE on the cluster or on the topic (Kafka's rule for CreateTopics and auto-creation)."""
        if self.broker.authorizer is None:
            return True
        from ringlog.broker.security.check import may_create_topic

        return may_create_topic(self, name)


def response_class(api_key: int, api_version: int) -> type:
    """The kio response entity class for an API key and version (KeyError-like kio errors if none)."""
    from kio.index import load_response_schema

    return load_response_schema(api_key, api_version)


# --- generic error responses ----------------------------------------------------------------


def error_response(cls: type, code: ErrorCode) -> Any:
    """An instance of kio entity `cls` with every error_code field = `code`, the rest empty.

    Arrays are empty, numbers 0 (-1 for ids/offsets is not needed: arrays are empty), strings
    empty or null, durations zero, nested entities built the same way.
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            if f.metadata.get("kafka_type") != "error_code":
                continue
        values[f.name] = _empty_value(f, hints[f.name], code)
    return cls(**values)


def _empty_value(f: dataclasses.Field, hint: Any, code: ErrorCode) -> Any:
    kafka_type = f.metadata.get("kafka_type")
    if kafka_type == "error_code":
        return code
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple:
        return ()
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        return None
    if kafka_type in ("timedelta_i32", "timedelta_i64"):
        return datetime.timedelta(0)
    if kafka_type in ("datetime_i64",):
        return None
    if kafka_type == "string":
        return ""
    if kafka_type == "bool":
        return False
    if kafka_type == "uuid":
        return None
    if kafka_type in ("bytes", "records"):
        return b""
    if dataclasses.is_dataclass(hint):
        return error_response(hint, code)
    if isinstance(hint, type) and issubclass(hint, int):
        return hint(0)
    if isinstance(hint, type) and issubclass(hint, float):
        return hint(0.0)
    return hint()


# --- building version-independent responses ---------------------------------------------------


def make(cls: type, **values: Any) -> Any:
    """Instantiate kio entity `cls`, dropping the keyword arguments its version does not have.

    Lets one handler body serve a whole version window: pass every field any version knows about.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def nested(entity_cls: type, name: str) -> type:
    """A class defined next to `entity_cls` in its kio module (e.g. the response's partition type)."""
    import sys

    return getattr(sys.modules[entity_cls.__module__], name)


def once_each(topics: Sequence[Any]) -> Iterator[tuple[Any, bool]]:
    """Each topic of a request's list once, in first-seen order, and whether its name came more
    than once (CreateTopics and CreatePartitions answer such a name with INVALID_REQUEST, once)."""
    counts = collections.Counter(t.name for t in topics)
    seen: set[str] = set()
    for t in topics:
        if t.name not in seen:
            seen.add(t.name)
            yield t, counts[t.name] > 1


def has_field(entity_cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(entity_cls))
