"""The Trio server: listeners, one task per connection, the broker's lifetime.

`open_broker(config)` is the embeddable entry point::

    async with open_broker(BrokerConfig(listen_port=0, data_dir=...)) as broker:
        print(broker.bootstrap)          # "127.0.0.1:PORT"

Connection model: a reader task splits frames (client.wire.FrameDecoder, size checked before
allocating) and routes them; every request gets a slot in an ordered, bounded queue
(max.inflight.requests.per.connection) and runs as its own task, so a long-polling Fetch or a Produce
waiting for its commit does not stop the next request being read; the writer task sends the slots'
responses strictly in request order. Record bytes of Fetch responses go from the segment files to
the socket with os.sendfile (non-blocking, waiting for writability with trio), never through Python.

Shutdown (cancellation of the surrounding scope, or SIGTERM/SIGINT for `run_broker`): stop
accepting, stop reading requests, let the writer drain the rings and the in-flight responses leave
(bounded grace), then close the logs (flush, checkpoints, clean-shutdown marker).
"""
from __future__ import annotations

import dataclasses
import datetime
import errno
import itertools
import logging
import math
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from functools import partial
from typing import Any

import attrs
import trio

from ringlog.client.wire import FrameDecoder, FrameTooLarge, encode_response, response_header_bytes

from . import connection_limits, open_files
from .config import BrokerConfig, validate
from .connection_limits import (ConnectionQuotas, RateLimitedLog, Refusal, hostnames, normalize_address,
                                resolve_overrides)
from .core import Broker, load_producer_states
from .errors import CloseConnection
from .ingest import run_deferred
from .handlers import NO_RESPONSE, RawResponse, RequestContext
from .handlers.client_quotas import sync_task_time
from .logging_setup import event
from .metrics import BrokerMetrics
from .quotas import REQUEST_PERCENTAGE
from .metadata import TopicStore
from .router import Dispatch, Immediate, Reject, Router
from .security import serve as security_serve
from .security.session import Session
from .security.state import SecurityState
from .security.tls import receive_drained, send_region_copy

log = logging.getLogger("ringlog.server")

SHUTDOWN_GRACE_S = 5.0
RECEIVE_SIZE = 256 * 1024
_conn_ids = itertools.count(1)
# What a vanished client looks like from either side of a connection.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError)
CONNECTIONS_MAX_IDLE = "connections.max.idle.ms"
SOCKET_REQUEST_READ_TIMEOUT = "socket.request.read.timeout.ms"
# At most one log line per this many seconds for each kind of refused or timed-out connection
# and for failing accept() calls; the lines that are left out are counted in the next one.
NOTICE_INTERVAL_S = 10.0
# accept() failing for lack of descriptors or memory: wait this long before trying again
# (trio's serve_listeners does the same, but logs a traceback ten times a second).
ACCEPT_RETRY_S = 0.1
# How long a connection whose SASL authentication failed stays open after the answer, unless the
# client closes it first (no further request is answered).
AUTH_FAILURE_LINGER_S = 0.5
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def _left_out(count: int, what: str) -> str:
    return f" ({count} more {what} in the last {NOTICE_INTERVAL_S:.0f} s)" if count else ""


@attrs.define(eq=False)
class _Slot:
    """One request's place in its connection's response order."""

    done: trio.Event = attrs.field(factory=trio.Event)
    data: Any = None  # bytes | RawResponse | NO_RESPONSE
    header: Any = None  # the request header (RawResponse needs it for the response header)
    close: str | None = None  # reason to close the connection instead of answering

    def set(self, data: Any) -> None:
        self.data = data
        self.done.set()

    def fail(self, reason: str) -> None:
        self.close = reason
        self.done.set()


def _api_name(name: str) -> str:
    """Kafka's ApiKeys spelling of a handler's name (sasl_handshake -> SASL_HANDSHAKE)."""
    return name.upper()


def _seconds(ms: int) -> float:
    return math.inf if ms < 0 else ms / 1000


class Connection:
    """One client connection: a reader, a writer, the handlers in between, and a watchdog.

    The watchdog closes the connection when one of two deadlines passes (see _watch):
      * connections.max.idle.ms: no request in flight, and nothing received or sent for that long
        (Kafka's idle rule);
      * socket.request.read.timeout.ms: the first bytes of a frame arrived and the rest did not
        follow within that long (a slow-loris sender holding a slot one byte at a time).
    The read path only stamps the time (one clock read per receive and per response sent); the
    deadline itself lives in the watchdog's one cancel scope, which wakes when the earliest
    deadline could have passed and, when activity moved it, goes back to sleep. Pushing a cancel
    scope's deadline forward on every receive would cost more than the clock read (a heap push in
    trio's deadline queue each time) on the path that sets requests per second.
    """

    def __init__(self, broker: Broker, router: Router, stream: trio.SocketStream, peer: str | None = None,
                 session: Any = None) -> None:
        self.broker = broker
        self.router = router
        self.stream = stream
        self.id = next(_conn_ids)
        if peer is None:
            try:
                host, port = stream.socket.getpeername()[:2]
                peer = f"{host}:{port}"
            except OSError:
                peer = "?"
        self.peer = peer
        self.read_scope = trio.CancelScope()
        self.inflight = 0
        # trio clock: last byte received or response sent; when the frame now being waited for began
        self._last_active = trio.current_time()
        self._frame_started: float | None = None
        self._watch_scope: trio.CancelScope | None = None
        self._decoder: FrameDecoder | None = None
        # broker.security.session.Session: listener, principal, SASL state; `locked` while
        # requests must pass its gate (before SASL authentication, or with a session lifetime)
        self.session = session if session is not None else Session(None, None)
        # sendfile needs the socket itself; a TLS stream gets the bytes through it instead
        self._send_region = sendfile_region if isinstance(stream, trio.SocketStream) else send_region_copy
        # trio clock until which no further request is read (a client quota's throttle, KIP-219);
        # 0.0 when not throttled, the one test the read loop makes per request
        self.muted_until = 0.0

    async def serve(self) -> None:
        config = self.broker.config
        send_slots, recv_slots = trio.open_memory_channel[_Slot](config.max_inflight_per_connection - 1)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop, recv_slots, nursery.cancel_scope)
                if config.connections_max_idle_ms >= 0 or config.socket_request_read_timeout_ms >= 0:
                    nursery.start_soon(self._watch, nursery.cancel_scope)
                async with send_slots:
                    with self.read_scope:
                        try:
                            await self._read_loop(send_slots, nursery)
                        except _GONE as exc:
                            log.debug("connection %d from %s: %r", self.id, self.peer, exc)
                            nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await self.stream.aclose()

    async def _read_loop(self, send_slots: trio.MemorySendChannel, nursery: trio.Nursery) -> None:
        decoder = self._decoder = FrameDecoder(self.broker.config.socket_request_max_bytes)
        current_time = trio.current_time
        stream = self.stream
        # a TLS stream hands over every record already received at once (security.tls)
        receive = stream.receive_some if isinstance(stream, trio.SocketStream) else partial(receive_drained, stream)
        while True:
            data = await receive(RECEIVE_SIZE)
            if not data:
                # EOF: like Kafka, treat it as the end of the connection; pending answers
                # (e.g. a long-poll fetch) have nobody to go to.
                nursery.cancel_scope.cancel()
                return
            self._last_active = current_time()
            try:
                decoder.feed(data)
                frame = decoder.next_frame()
            except FrameTooLarge as exc:
                self.broker.metrics.rejected("frame_too_large")
                log.warning("connection %d from %s: %s; closing", self.id, self.peer, exc,
                            extra=event("request_rejected", peer=self.peer, reason=str(exc)))
                await self._close_after_pending(send_slots, f"{exc}")
                return
            if frame is not None:
                self._frame_started = None  # the frame being waited for is complete
            while frame is not None:
                if self.muted_until:
                    await self._wait_unmuted()
                routed = self.router.route(frame)
                if self.session.locked and not isinstance(routed, Reject):
                    routed = self._gate(routed)
                slot = _Slot()
                self.inflight += 1
                await send_slots.send(slot)
                if isinstance(routed, Reject):
                    self.broker.metrics.rejected_request(routed, self.router.handlers)
                    log.warning("connection %d from %s: %s; closing", self.id, self.peer, routed.reason,
                                extra=event("request_rejected", peer=self.peer, reason=routed.reason))
                    slot.fail(routed.reason)
                    return
                if isinstance(routed, Immediate):
                    self.broker.metrics.unsupported(routed.header.api_key, self.router.handlers)
                    log.info("connection %d from %s: answered UNSUPPORTED_VERSION to api %d v%d",
                             self.id, self.peer, routed.header.api_key, routed.header.api_version)
                    slot.set(routed.data)
                else:
                    ctx = RequestContext(self.broker, routed.header, peer=self.peer, connection_id=self.id,
                                         session=self.session, connection=self)
                    slot.header = routed.header
                    nursery.start_soon(self._run_handler, routed, ctx, slot)
                    if routed.spec.sequential:
                        await ctx._reader_released.wait()
                try:
                    frame = decoder.next_frame()
                except FrameTooLarge as exc:
                    self.broker.metrics.rejected("frame_too_large")
                    log.warning("connection %d from %s: %s; closing", self.id, self.peer, exc,
                                extra=event("request_rejected", peer=self.peer, reason=str(exc)))
                    await self._close_after_pending(send_slots, f"{exc}")
                    return
            if decoder.buffered and self._frame_started is None:
                # Part of a frame is here: the rest must follow within the read timeout. The
                # clock starts now, when reading resumes, not when those bytes came: time spent
                # in the dispatch above (a full ring, a full pipeline) is the broker's, not the
                # client's.
                self._frame_begun()

    def throttle(self, throttle_ms: int) -> None:
        """Mute for `throttle_ms` from now (a longer mute already running stays)."""
        until = trio.current_time() + throttle_ms / 1000
        if until > self.muted_until:
            self.muted_until = until

    async def _wait_unmuted(self) -> None:
        # The wait is the broker's doing, not the client's: the request read timeout starts
        # after it (below), and with nothing in flight the idle clock restarts after it.
        while trio.current_time() < self.muted_until:
            await trio.sleep_until(self.muted_until)
        self.muted_until = 0.0
        self._last_active = trio.current_time()

    def _gate(self, routed: Dispatch | Immediate) -> Dispatch | Immediate | Reject:
        """Before SASL authentication (or after its session ended) only the SASL requests pass."""
        key = routed.header.api_key
        spec = self.router.handlers.get(key)
        reason = self.session.refusal(key, _api_name(spec.name if spec else str(key)))
        return routed if reason is None else Reject(reason, routed.header)

    def _frame_begun(self) -> None:
        now = trio.current_time()
        self._frame_started = now
        due = now + _seconds(self.broker.config.socket_request_read_timeout_ms)
        scope = self._watch_scope
        if scope is not None and due < scope.deadline:
            scope.deadline = due

    def _due(self, now: float) -> float:
        """When the watchdog should look again: the earliest moment a limit could be passed."""
        config = self.broker.config
        idle = _seconds(config.connections_max_idle_ms)
        # With a request in flight the connection is busy, however long that takes (a long-poll
        # fetch, a produce held by a full ring): look again one idle period from now.
        # Muted by a client quota: the wait is the broker's, not idleness.
        due = (self._last_active if self.inflight == 0 and not self.muted_until else now) + idle
        if self._frame_started is not None:
            due = min(due, self._frame_started + _seconds(config.socket_request_read_timeout_ms))
        return due

    def _expired(self, now: float) -> str | None:
        config = self.broker.config
        started = self._frame_started
        if started is not None and now - started >= _seconds(config.socket_request_read_timeout_ms):
            return SOCKET_REQUEST_READ_TIMEOUT
        if self.inflight == 0 and not self.muted_until and \
                now - self._last_active >= _seconds(config.connections_max_idle_ms):
            return CONNECTIONS_MAX_IDLE
        return None

    async def _watch(self, conn_scope: trio.CancelScope) -> None:
        while True:
            with trio.CancelScope(deadline=self._due(trio.current_time())) as scope:
                self._watch_scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._watch_scope = None
            limit = self._expired(trio.current_time())
            if limit is not None:
                break
        config = self.broker.config
        self.broker.metrics.connection_closed(limit)
        if limit == CONNECTIONS_MAX_IDLE:
            # Routine (Kafka logs it at debug too): clients reconnect when they need to.
            log.debug("connection %d from %s: idle for %d ms (connections.max.idle.ms); closing",
                      self.id, self.peer, config.connections_max_idle_ms,
                      extra=event("connection_closed", peer=self.peer, limit=limit))
        else:
            notices = getattr(self.broker, "connection_notices", None)
            left_out = notices.should_log(limit, trio.current_time()) if notices is not None else 0
            if left_out is not None:
                log.info("connection %d from %s: a request frame did not arrive whole within %d ms "
                         "(socket.request.read.timeout.ms, %d bytes of it so far); closing%s",
                         self.id, self.peer, config.socket_request_read_timeout_ms,
                         self._decoder.buffered if self._decoder is not None else 0,
                         _left_out(left_out, "connection(s) closed the same way"),
                         extra=event("connection_closed", peer=self.peer, limit=limit))
        conn_scope.cancel()

    async def _close_after_pending(self, send_slots: trio.MemorySendChannel, reason: str) -> None:
        slot = _Slot()
        self.inflight += 1
        await send_slots.send(slot)
        slot.fail(reason)

    async def _run_handler(self, routed: Dispatch, ctx: RequestContext, slot: _Slot) -> None:
        started = time.perf_counter()
        quotas = self.broker.quotas
        timed = quotas.request_on  # request_percentage quotas: time this task's steps
        if timed:
            task = trio.lowlevel.current_task()
            quotas.task_time.watch(task)
        try:
            result = await routed.spec.func(ctx, routed.request)
            if timed:
                timed = False
                result = _request_quota(ctx, routed, result, quotas.task_time.unwatch(task))
            self.broker.metrics.handled(routed.spec.name, result, time.perf_counter() - started)
            if result is NO_RESPONSE or isinstance(result, RawResponse):
                slot.set(result)
            else:
                slot.set(encode_response(routed.header, result))
        except CloseConnection as exc:
            self.broker.metrics.failed(routed.spec.name, "CONNECTION_CLOSED", time.perf_counter() - started)
            log.info("connection %d from %s: %s v%d: %s; closing",
                     self.id, self.peer, routed.spec.name, ctx.api_version, exc)
            slot.fail(str(exc))
        except Exception as exc:
            self.broker.metrics.failed(routed.spec.name, "UNKNOWN_SERVER_ERROR", time.perf_counter() - started)
            log.exception("connection %d from %s: %s v%d failed; closing",
                          self.id, self.peer, routed.spec.name, ctx.api_version)
            slot.fail(repr(exc))
        finally:
            if timed:
                quotas.task_time.unwatch(task)
            ctx.release_reader()
            if not slot.done.is_set():  # cancelled
                slot.fail("cancelled")

    async def _write_loop(self, recv_slots: trio.MemoryReceiveChannel, scope: trio.CancelScope) -> None:
        try:
            await self._write_slots(recv_slots, scope)
        except _GONE as exc:
            # the client went away (or a segment vanished under sendfile): drop the connection
            log.debug("connection %d from %s: %r", self.id, self.peer, exc)
        # Either way the connection is done: this also ends the watchdog.
        scope.cancel()

    async def _write_slots(self, recv_slots: trio.MemoryReceiveChannel, scope: trio.CancelScope) -> None:
        current_time = trio.current_time
        async with recv_slots:
            async for slot in recv_slots:
                await slot.done.wait()
                if slot.close is not None:
                    self.inflight -= 1
                    return
                if slot.data is not NO_RESPONSE:
                    if isinstance(slot.data, RawResponse):
                        await self._send_raw(slot.header, slot.data)
                    else:
                        await self.stream.send_all(slot.data)
                # In flight until its answer has left: a client that does not read its answers
                # is not idle while the broker waits to send.
                self.inflight -= 1
                self._last_active = current_time()
                if self.session.close_after_response:  # a failed SASL authentication
                    # The close follows the answer by a moment (cut short when the client
                    # closes first, which ends the reader and this task): a close right behind
                    # the answer lets some clients (kafka-python 3) see the disconnect before
                    # the answer, and report a lost connection instead of the failure.
                    with trio.move_on_after(AUTH_FAILURE_LINGER_S):
                        async for later in recv_slots:  # nothing after the failure is answered
                            await later.done.wait()
                            if later.close is not None:
                                break
                    return
        # the reader finished (client closed its side, or shutdown) and every response is out

    async def _send_raw(self, header: Any, raw: RawResponse) -> None:
        head = response_header_bytes(header)
        body_size = len(head) + raw.size
        await self.stream.send_all(body_size.to_bytes(4, "big", signed=True) + head)
        pending = bytearray()
        for chunk in raw.chunks:
            if isinstance(chunk, (bytes, bytearray, memoryview)):
                pending += chunk
                continue
            if pending:
                await self.stream.send_all(pending)
                pending = bytearray()
            await self._send_region(self.stream, chunk)
        if pending:
            await self.stream.send_all(pending)


def _request_quota(ctx: RequestContext, routed: Dispatch, result: Any, ran_ns: int) -> Any:
    """Count a request's handler time against the client's request_percentage (Kafka's request
    quota: percent of a second per second); over it, the answer's throttle_time_ms (the larger
    of it and a byte-rate throttle already there) and the mute. Exempt as in Kafka: Produce with
    acks=0 (no answer) and followers' fetches."""
    if result is NO_RESPONSE:
        return result
    if routed.header.api_key == 1 and int(getattr(routed.request, "replica_id", -1)) >= 0:
        return result
    broker = ctx.broker
    throttle_ms = broker.quotas.record(REQUEST_PERCENTAGE, ctx.principal, ctx.client_id, ran_ns / 1e7, ctx.now_ms())
    if not throttle_ms:
        return result
    broker.metrics.throttled(REQUEST_PERCENTAGE, throttle_ms)
    ctx.throttle(throttle_ms)
    if isinstance(result, RawResponse):  # Fetch: the body starts with throttle_time_ms
        first = bytes(result.chunks[0])
        current = int.from_bytes(first[:4], "big", signed=True)
        if throttle_ms > current:
            first = throttle_ms.to_bytes(4, "big", signed=True) + first[4:]
            return attrs.evolve(result, chunks=[first, *result.chunks[1:]])
        return result
    current = getattr(result, "throttle_time", None)
    if isinstance(current, datetime.timedelta) and current.total_seconds() * 1000 < throttle_ms:
        return dataclasses.replace(result, throttle_time=datetime.timedelta(milliseconds=throttle_ms))
    return result


async def sendfile_region(stream: trio.SocketStream, region: Any) -> None:
    """Send `region.length` bytes of `region`'s file from `region.position` with os.sendfile.

    The socket is non-blocking (trio's); on EAGAIN wait until it is writable. A file that ends
    early (truncated under us) would corrupt the frame, so that closes the connection.
    """
    sock = stream.socket
    out_fd = sock.fileno()
    in_fd = region.fileno()
    offset = region.position
    remaining = region.length
    while remaining > 0:
        try:
            sent = os.sendfile(out_fd, in_fd, offset, remaining)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                await trio.lowlevel.wait_writable(sock)
                continue
            raise trio.BrokenResourceError(f"sendfile failed: {exc}") from exc
        if sent == 0:
            raise trio.BrokenResourceError("segment file ended before the announced length")
        offset += sent
        remaining -= sent
        await trio.lowlevel.checkpoint()


# --- the broker's lifetime ------------------------------------------------------------------


def _open_storage(config: BrokerConfig):
    from ringlog.storage.manager import LogManager

    started = time.perf_counter()
    os.makedirs(config.data_dir, exist_ok=True)
    metadata = TopicStore.load(config.data_dir)
    default = config.log_config()
    topic_configs: dict[str, dict[str, str]] = {}
    for info in metadata:
        if info.configs:
            try:
                default.with_topic_configs(info.configs)
                topic_configs[info.name] = dict(info.configs)
            except ValueError as exc:
                log.error("topic %s: ignoring bad stored configs: %s", info.name, exc)
    # Deletions carry the topic id (Broker.delete_topic): a marked directory with a listed topic's
    # id means a crash interrupted that topic's deletion, and opening finishes marking it.
    tags = {info.name: info.topic_id.hex for info in metadata}
    logs = LogManager.open(config.data_dir, default, now_ms=Broker.now_ms(), topic_configs=topic_configs,
                           deletion_tags=tags)
    for name in logs.resumed_deletes:
        # Before reconcile, which would otherwise recreate the topic's partitions empty.
        info = metadata.remove(name)
        log.warning("finished deleting topic %s, interrupted by a crash", name,
                    extra=event("topic_deleted", topic=name, partitions=info.partitions, resumed=True))
    logs.purge_deleted()
    reports = logs.recovery_reports
    repaired = [r for r in reports if r.repaired]
    # Only what changed on disk is worth a line each: after a kill -9 every partition is scanned,
    # and thousands of "nothing found" lines would bury the one that matters.
    for report in repaired:
        log.warning("recovered %s-%d: %s", report.topic, report.partition, _describe(report),
                    extra=event("log_recovered", **_report_fields(report)))
    missing = metadata.reconcile(_log_keys(logs))
    for topic, p in missing:
        logs.create(topic, p)
    seconds = time.perf_counter() - started
    partitions = len(_log_keys(logs))
    log.info("opened %d partition log(s) in %.2f s (%s): %d scanned, %d repaired",
             partitions, seconds, "clean shutdown" if logs.had_clean_shutdown else "no clean-shutdown marker",
             sum(1 for r in reports if r.segments_scanned), len(repaired),
             extra=event("recovery", partitions=partitions, clean_shutdown=logs.had_clean_shutdown,
                         scanned=sum(1 for r in reports if r.segments_scanned), repaired=len(repaired),
                         truncated=sum(1 for r in reports if r.truncated),
                         indexes_rebuilt=sum(r.indexes_rebuilt for r in reports),
                         deletes_resumed=len(logs.resumed_deletes), seconds=round(seconds, 3)))
    return logs, metadata


def _open_storage_and_state(config: BrokerConfig):
    logs, metadata = _open_storage(config)
    # Kafka loads producer state with the log, at start-up: the first idempotent produce after a
    # restart then finds it ready instead of replaying a log on the event loop.
    states, rebuilt = load_producer_states(logs, Broker.now_ms())
    return logs, metadata, states, rebuilt


def _describe(report: Any) -> str:
    """What recovery changed in one partition, for its warning line."""
    parts = []
    if report.truncated:
        parts.append(f"cut {report.truncated_bytes} bytes at offset {report.truncated_offset} "
                     f"(segment {report.truncated_segment}, position {report.truncated_position}: {report.reason})")
    if report.segments_deleted:
        parts.append(f"deleted {report.segments_deleted} later segment(s), {report.bytes_deleted} bytes")
    if report.indexes_rebuilt:
        parts.append(f"rebuilt the damaged or missing indexes of {report.indexes_rebuilt} segment(s)")
    parts.append(f"scanned {report.segments_scanned} segment(s), {report.batches_scanned} batches")
    return "; ".join(parts)


def _report_fields(report: Any) -> dict[str, Any]:
    return {
        "topic": report.topic, "partition": report.partition, "clean_shutdown": report.clean,
        "segments_scanned": report.segments_scanned, "batches_scanned": report.batches_scanned,
        "bytes_scanned": report.bytes_scanned, "indexes_rebuilt": report.indexes_rebuilt,
        "truncated_bytes": report.truncated_bytes, "truncated_offset": report.truncated_offset,
        "truncated_segment": report.truncated_segment, "segments_deleted": report.segments_deleted,
        "bytes_deleted": report.bytes_deleted, "reason": report.reason,
    }


def _log_retention(topic: str, partition: int, report: Any) -> None:
    """One line per partition per retention round that deleted something."""
    log.info("retention deleted %d segment(s) of %s-%d: %d bytes, offsets %d-%d (%s); log start offset %d",
             report.segments_deleted, topic, partition, report.bytes_deleted, report.base_offset,
             report.end_offset - 1, ", ".join(report.reasons), report.log_start_offset,
             extra=event("retention_deleted", topic=topic, partition=partition,
                         segments_deleted=report.segments_deleted, bytes_deleted=report.bytes_deleted,
                         base_offset=report.base_offset, end_offset=report.end_offset,
                         log_start_offset=report.log_start_offset, reasons=",".join(report.reasons)))


def _log_keys(logs: Any) -> list[tuple[str, int]]:
    items = logs.logs
    return list(items.keys() if hasattr(items, "keys") else (k for k, _ in items))


async def _serve_listeners(broker: Broker, router: Router, conn_scope_nursery: trio.Nursery,
                           task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    config = broker.config
    overrides = await _resolve_overrides(config.max_connections_per_ip_overrides)
    bound = await security_serve.open_listeners(broker.security)
    broker.listeners = [spec for spec, _ in bound]
    task_status.started([s for _, sockets in bound for s in sockets])
    quotas = ConnectionQuotas(config.max_connections, config.max_connections_per_ip, overrides)
    notices = broker.connection_notices = RateLimitedLog(NOTICE_INTERVAL_S)

    async def handle(stream: trio.SocketStream, address: str, peer: str, spec: Any) -> None:
        try:
            secured = await security_serve.secure(broker.security, spec, stream, address, peer,
                                                  _seconds(config.socket_request_read_timeout_ms))
            if secured is None:  # the TLS handshake failed (logged)
                return
            conn = Connection(broker, router, secured[0], peer, session=secured[1])
            broker.connections.add(conn)
            broker.metrics.connection_accepted()
            try:
                await conn.serve()
            except Exception:
                # a bug in one connection must not take the listener (and everyone else) down
                log.exception("connection %d from %s failed", conn.id, conn.peer)
            finally:
                broker.connections.discard(conn)
        finally:
            quotas.release(address)
            await trio.aclose_forcefully(stream)

    def refuse(stream: trio.SocketStream, peer: str, address: str, refusal: Refusal) -> None:
        broker.metrics.connection_refused(refusal.limit)
        left_out = notices.should_log(refusal.limit, trio.current_time())
        if left_out is not None:
            if refusal.limit == connection_limits.PER_IP:
                why = f"{address} already has {quotas.by_address.get(address, 0)} connection(s)"
            else:
                why = f"{quotas.total} connections are open"
            log.warning("refused a connection from %s: %s %d reached (%s)%s", peer, refusal.limit, refusal.value,
                        why, _left_out(left_out, "refused by it"),
                        extra=event("connection_refused", peer=peer, limit=refusal.limit, value=refusal.value))
        # Closing at once (not leaving it in the backlog) tells the client to back off and retry.
        stream.socket.close()

    async def accept_loop(listener: trio.SocketListener, spec: Any) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    left_out = notices.should_log("accept", trio.current_time())
                    if left_out is not None:
                        hint = ": raise ulimit -n" if exc.errno in (errno.EMFILE, errno.ENFILE) else ""
                        log.error("accepting connections failed: %s (%s) with %d open connection(s)%s; "
                                  "retrying every %.1f s%s", errno.errorcode[exc.errno], os.strerror(exc.errno),
                                  quotas.total, hint, ACCEPT_RETRY_S, _left_out(left_out, "failures"),
                                  extra=event("accept_failed", error=errno.errorcode[exc.errno]))
                    await trio.sleep(ACCEPT_RETRY_S)
                    continue
                try:
                    host, port = stream.socket.getpeername()[:2]
                except OSError:  # reset before we looked
                    stream.socket.close()
                    continue
                address = normalize_address(host)
                peer = f"{host}:{port}"
                refusal = quotas.admit(address)
                if refusal is not None:
                    refuse(stream, peer, address, refusal)
                    continue
                conn_scope_nursery.start_soon(handle, stream, address, peer, spec)

    async with trio.open_nursery() as nursery:
        for spec, sockets in bound:
            for listener in sockets:
                nursery.start_soon(accept_loop, listener, spec)


async def _resolve_overrides(overrides: Any) -> dict[str, int]:
    """max.connections.per.ip.overrides keyed by address: hostnames are resolved once, at start
    (as Kafka does); one that does not resolve stops the start."""
    resolved: dict[str, list[str]] = {}
    for host in hostnames(overrides):
        try:
            infos = await trio.socket.getaddrinfo(host, None, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise OSError(f"max.connections.per.ip.overrides: cannot resolve {host!r}: {exc}") from None
        resolved[host] = sorted({info[4][0] for info in infos})
    return resolve_overrides(overrides, resolved)


async def _maintenance(broker: Broker) -> None:
    """Retention, time-based rolling and interval flushes, every few seconds."""
    config = broker.config
    tick_s = max(0.05, min(config.retention_check_interval_ms, config.flush_interval_ms, 1000) / 1000)
    last_retention = 0
    while True:
        await trio.sleep(tick_s)
        now = broker.now_ms()
        retention_due = now - last_retention >= config.retention_check_interval_ms
        tokens = []
        async with broker.log_lock:
            for (topic, p), plog in broker._all_logs():
                if plog.closed:  # deleted while an earlier partition's file work was in a thread
                    continue
                try:
                    if plog.time_roll_due(now):
                        # The new segment's files are made in a worker thread; the roll
                        # itself (in maybe_roll or apply_retention) only switches to it.
                        plog.offer_segment(await trio.to_thread.run_sync(plog.create_next_segment))
                    plog.maybe_roll(now)
                    if retention_due:
                        deleted = plog.apply_retention(now)
                        if deleted.segments_deleted:
                            _log_retention(topic, p, deleted)
                    # the removal of what retention dropped, and the new log start's checkpoint
                    await run_deferred(plog)
                    if plog.needs_flush(now):
                        tokens.append((plog, plog.flush_begin()))
                except Exception:
                    log.exception("maintenance of %s-%d failed", topic, p)
        if retention_due:
            last_retention = now
        if not tokens:
            continue

        def sync_all() -> None:
            for _, token in tokens:
                token.sync()

        # The fsyncs run without the lock so the writer keeps appending meanwhile (the tokens
        # hold their files open; flush_end ignores a log deleted in between).
        started = time.perf_counter()
        try:
            await trio.to_thread.run_sync(sync_all)
            broker.metrics.fsync(time.perf_counter() - started)
        except Exception as exc:  # StorageIOError: the logs stay dirty and are retried
            broker.metrics.storage_failed("fsync", exc)
            log.error("interval flush failed: %r", exc)
        finally:
            for plog, token in tokens:
                plog.flush_end(token)
        # The recovery-point checkpoints the flushes asked for (left for close() if cancelled).
        async with broker.log_lock:
            try:
                await run_deferred(*[plog for plog, _ in tokens if not plog.closed])
            except Exception as exc:
                broker.metrics.storage_failed("checkpoint", exc)
                log.error("writing checkpoints after the interval flush failed: %r", exc)


@asynccontextmanager
async def open_broker(config: BrokerConfig) -> AsyncIterator[Broker]:
    """Start a broker inside the caller's Trio program; it stops (cleanly) when the block exits.

    The /metrics and /health endpoint (metrics.listen) starts first, so that /health answers 503
    while the logs are recovered, and stops last; its bound address is `broker.metrics_address`
    (None when off).
    """
    validate(config)
    metrics = BrokerMetrics(config.data_dir, config.health_disk_free_min_bytes)
    async with _open_metrics_endpoint(config, metrics) as metrics_address:
        async with _open_broker(config, metrics) as broker:
            broker.metrics_address = metrics_address
            yield broker


@asynccontextmanager
async def _open_metrics_endpoint(config: BrokerConfig, metrics: BrokerMetrics) -> AsyncIterator[tuple[str, int] | None]:
    if config.metrics_listen_port is None:
        yield None
        return
    from .http import open_http_endpoint

    async with open_http_endpoint(config.metrics_listen_host or "127.0.0.1", config.metrics_listen_port, metrics) as address:
        yield address


@asynccontextmanager
async def _open_broker(config: BrokerConfig, metrics: BrokerMetrics) -> AsyncIterator[Broker]:
    log.info("starting: data dir %s, listen %s:%d", os.path.abspath(config.data_dir), config.listen_host,
             config.listen_port, extra=event("starting", data_dir=os.path.abspath(config.data_dir)))
    metrics.health.starting("recovering logs")
    logs, metadata, states, rebuilt = await trio.to_thread.run_sync(_open_storage_and_state, config)
    closed = False
    try:
        security = await trio.to_thread.run_sync(SecurityState.open, config)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(logs.close)
        raise
    try:
        broker = Broker(config, logs, metadata, metrics=metrics, producer_states=states, rebuilt_batches=rebuilt)
        broker.security = security
        broker.authorizer = security.authorizer
        broker.quotas.load(security.quota_entities)
        sync_task_time(broker.quotas)
        router = Router()
        async with trio.open_nursery() as root:
            conn_nursery_holder: list[trio.Nursery] = []
            listener_scope = trio.CancelScope()

            async def run_connections(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                async with trio.open_nursery() as n:
                    task_status.started(n)
                    await trio.sleep_forever()

            conn_nursery = await root.start(run_connections)
            await root.start(broker.writer.run)
            await root.start(broker.coordinator.run)
            await root.start(broker.txn.run)

            async def run_listeners(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with listener_scope:
                    await _serve_listeners(broker, router, conn_nursery, task_status=task_status)

            listeners = await root.start(run_listeners)
            bound = listeners[0].socket.getsockname()
            broker.listen_address = (bound[0], bound[1])
            # the first listener's advertised address is the broker's (each connection answers
            # Metadata with its own listener's, RequestContext.advertised)
            broker.host, broker.port = broker.listeners[0].advertised_host, broker.listeners[0].advertised_port
            if config.etcd_endpoints:  # cluster mode: join (membership, controller, metadata in etcd)
                from .cluster.node import ClusterNode

                broker.cluster = ClusterNode(broker)
                await root.start(broker.cluster.run)
            _log_open_files(broker)
            root.start_soon(_maintenance, broker)
            from .cleaner import serve_cleaner  # log compaction of cleanup.policy=compact topics

            root.start_soon(serve_cleaner, broker)
            if config.http_listen_port is not None:  # the HTTP gateway (http.listen, broker.httpd)
                from .httpd.app import serve_gateway

                broker.http_address = await root.start(serve_gateway, broker)
            metrics.health.ready()
            try:
                yield broker
            finally:
                metrics.health.stopping()
                with trio.CancelScope(shield=True):
                    await _graceful_stop(broker, listener_scope)
                root.cancel_scope.cancel()
                if broker.quotas.task_time.installed:  # the instrument must not outlive the broker
                    trio.lowlevel.remove_instrument(broker.quotas.task_time)
                    broker.quotas.task_time.installed = False
        with trio.CancelScope(shield=True):
            await _close_producer_state(broker)
            await trio.to_thread.run_sync(logs.close)
            closed = True
    finally:
        if not closed:
            with trio.CancelScope(shield=True):
                # Also when the caller cancelled us (BrokerThread.stop, a test's cancel scope).
                await _close_producer_state(locals().get("broker"))
                await trio.to_thread.run_sync(logs.close)


def _http_part(broker: Broker) -> str:
    address = broker.http_address
    return f", http http://{address[0]}:{address[1]}" if address else ""


def _log_open_files(broker: Broker) -> None:
    """What the open-file limit leaves room for, once the logs and the listener are open."""
    logs = broker._all_logs()
    low, text = open_files.capacity(open_files.soft_limit(), open_files.in_use(),
                                    sum(plog.segment_count() for _, plog in logs), len(logs),
                                    broker.config.max_connections)
    log.log(logging.WARNING if low else logging.INFO, "%s", text, extra=event("open_files"))


async def _close_producer_state(broker: Broker | None) -> None:
    """Producer-state snapshots, so the next start need not replay the logs."""
    if broker is None:
        return
    manager = broker.producer_state
    try:
        snapshots = manager.snapshot_all(broker.now_ms())
        await trio.to_thread.run_sync(manager.write, snapshots)
    except Exception:
        log.exception("writing producer-state snapshots failed")


async def _graceful_stop(broker: Broker, listener_scope: trio.CancelScope) -> None:
    listener_scope.cancel()
    for conn in list(broker.connections):
        conn.read_scope.cancel()
    with trio.move_on_after(SHUTDOWN_GRACE_S):
        await broker.writer.wait_idle()
        while any(c.inflight for c in broker.connections):
            await trio.sleep(0.01)


# --- the process entry point (`ringlog broker`) --------------------------------------------


async def run_broker(config: BrokerConfig, *, install_signals: bool = True) -> None:
    """Run until SIGTERM/SIGINT; log exactly one ready line."""
    # The process is ours: every segment and connection holds descriptors (broker.open_files),
    # and the usual soft limit of 1024 runs out at about 200 partitions.
    raised = open_files.raise_soft_limit()
    if raised is not None and raised.after != raised.before:
        log.info("open-file limit raised from %d to %d (the hard limit)", raised.before, raised.after,
                 extra=event("open_files_raised", before=raised.before, after=raised.after))
    async with open_broker(config) as broker:
        # The signal receiver before the ready line: whoever waits for that line may send SIGTERM
        # at once, and it must get the clean shutdown, not the default action (death by signal).
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if install_signals else nullcontext() as signals:
            host, port = broker.listen_address
            maddr = broker.metrics_address
            log.info(
                "ringlog broker ready on %s:%d (advertised %s, data dir %s, fsync %s%s%s)",
                host, port, broker.bootstrap, os.path.abspath(config.data_dir), config.fsync,
                f", metrics http://{maddr[0]}:{maddr[1]}/metrics" if maddr else "",
                _http_part(broker),
                extra=event("ready", host=host, port=port, advertised=broker.bootstrap,
                            metrics=f"{maddr[0]}:{maddr[1]}" if maddr else None),
            )
            if signals is None:
                await trio.sleep_forever()
            async for signum in signals:
                if signum == signal.SIGHUP:  # reload the TLS certificates (broker.security.tls)
                    if broker.security.tls is not None:
                        await broker.security.tls.reload()
                    continue
                log.info("received %s: shutting down", signal.Signals(signum).name,
                         extra=event("stopping", signal=signal.Signals(signum).name))
                break
    log.info("ringlog broker stopped cleanly")
