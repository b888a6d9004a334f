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

import errno
import itertools
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from client.wire import FrameDecoder, FrameTooLarge, encode_response, response_header_bytes

from .config import BrokerConfig, validate
from .core import Broker
from .errors import CloseConnection
from .handlers import NO_RESPONSE, RawResponse, RequestContext
from .logging_setup import event
from .metrics import BrokerMetrics
from .metadata import TopicStore
from .router import Dispatch, Immediate, Reject, Router

log = logging.getLogger("ringlog.server")

SHUTDOWN_GRACE_S = 5.0
RECEIVE_SIZE = 256 * 1024
_conn_ids = itertools.count(1)
# What a vanished client looks like from either side of a connection.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError)


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


class Connection:
    def __init__(self, broker: Broker, router: Router, stream: trio.SocketStream) -> None:
        self.broker = broker
        self.router = router
        self.stream = stream
        self.id = next(_conn_ids)
        try:
            host, port = stream.socket.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            self.peer = "?"
        self.read_scope = trio.CancelScope()
        self.inflight = 0

    async def serve(self) -> None:
        config = self.broker.config
        send_slots, recv_slots = trio.open_memory_channel[_Slot](config.max_inflight_per_connection - 1)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop, recv_slots, nursery.cancel_scope)
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
        decoder = FrameDecoder(self.broker.config.socket_request_max_bytes)
        while True:
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                # EOF: like Kafka, treat it as the end of the connection; pending answers
                # (e.g. a long-poll fetch) have nobody to go to.
                nursery.cancel_scope.cancel()
                return
            try:
                decoder.feed(data)
                frame = decoder.next_frame()
            except FrameTooLarge as exc:
                self.broker.metrics.rejected("frame_too_large")
                log.warning("connection %d from %s: %s; closing", self.id, self.peer, exc,
                            extra=event("request_rejected", peer=self.peer, reason=str(exc)))
                await self._close_after_pending(send_slots, f"{exc}")
                return
            while frame is not None:
                routed = self.router.route(frame)
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
                    ctx = RequestContext(self.broker, routed.header, peer=self.peer, connection_id=self.id)
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

    async def _close_after_pending(self, send_slots: trio.MemorySendChannel, reason: str) -> None:
        slot = _Slot()
        self.inflight += 1
        await send_slots.send(slot)
        slot.fail(reason)

    async def _run_handler(self, routed: Dispatch, ctx: RequestContext, slot: _Slot) -> None:
        started = time.perf_counter()
        try:
            result = await routed.spec.func(ctx, routed.request)
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
            ctx.release_reader()
            if not slot.done.is_set():  # cancelled
                slot.fail("cancelled")

    async def _write_loop(self, recv_slots: trio.MemoryReceiveChannel, scope: trio.CancelScope) -> None:
        try:
            await self._write_slots(recv_slots, scope)
        except _GONE as exc:
            # the client went away (or a segment vanished under sendfile): drop the connection
            log.debug("connection %d from %s: %r", self.id, self.peer, exc)
            scope.cancel()

    async def _write_slots(self, recv_slots: trio.MemoryReceiveChannel, scope: trio.CancelScope) -> None:
        async with recv_slots:
            async for slot in recv_slots:
                await slot.done.wait()
                self.inflight -= 1
                if slot.close is not None:
                    scope.cancel()
                    return
                if slot.data is NO_RESPONSE:
                    continue
                if isinstance(slot.data, RawResponse):
                    await self._send_raw(slot.header, slot.data)
                else:
                    await self.stream.send_all(slot.data)
        # the reader finished (client closed its side) and every response is out

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
            await sendfile_region(self.stream, chunk)
        if pending:
            await self.stream.send_all(pending)


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
    from storage.manager import LogManager

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
    listeners = await trio.open_tcp_listeners(config.listen_port, host=config.listen_host)
    task_status.started(listeners)
    limiter = trio.Semaphore(config.max_connections)

    async def handle(stream: trio.SocketStream) -> None:
        if limiter.value == 0:
            broker.metrics.connection_refused()
            log.warning("max.connections %d reached: refusing a connection", config.max_connections)
            await stream.aclose()
            return
        async with limiter:
            conn = Connection(broker, router, stream)
            broker.connections.add(conn)
            broker.metrics.connection_accepted()
            try:
                await conn.serve()
            except Exception:
                # a bug in one connection must not take the listener (and everyone else) down
                log.exception("connection %d from %s failed", conn.id, conn.peer)
            finally:
                broker.connections.discard(conn)

    await trio.serve_listeners(handle, listeners, handler_nursery=conn_scope_nursery)


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
                try:
                    plog.maybe_roll(now)
                    if retention_due:
                        deleted = plog.apply_retention(now)
                        if deleted.segments_deleted:
                            _log_retention(topic, p, deleted)
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
    logs, metadata = await trio.to_thread.run_sync(_open_storage, config)
    closed = False
    try:
        broker = Broker(config, logs, metadata, metrics=metrics)
        broker.connections = set()
        router = Router()
        async with trio.open_nursery() as root:
            conn_nursery_holder: list[trio.Nursery] = []
            listener_scope = trio.CancelScope()

            async def run_connections(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                async with trio.open_nursery() as n:
                    task_status.started(n)
                    await trio.sleep_forever()

            conn_nursery = await root.start(run_connections)
            await root.start(broker.ingest.run)
            await root.start(broker.coordinator.run)

            async def run_listeners(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with listener_scope:
                    await _serve_listeners(broker, router, conn_nursery, task_status=task_status)

            listeners = await root.start(run_listeners)
            bound = listeners[0].socket.getsockname()
            broker.listen_address = (bound[0], bound[1])
            if config.advertised_port is None:
                broker.port = bound[1]
            if config.advertised_host is None:
                broker.host = config.listen_host if config.listen_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            root.start_soon(_maintenance, broker)
            from .cleaner import serve_cleaner  # log compaction of cleanup.policy=compact topics

            root.start_soon(serve_cleaner, broker)
            metrics.health.ready()
            try:
                yield broker
            finally:
                metrics.health.stopping()
                with trio.CancelScope(shield=True):
                    await _graceful_stop(broker, listener_scope)
                root.cancel_scope.cancel()
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


async def _close_producer_state(broker: Broker | None) -> None:
    """Producer-state snapshots, so the next start need not replay the logs."""
    close_state = getattr(getattr(broker, "producer_state", None), "close", None)
    if close_state is not None:
        try:
            await trio.to_thread.run_sync(close_state)
        except Exception:
            log.exception("writing producer-state snapshots failed")


async def _graceful_stop(broker: Broker, listener_scope: trio.CancelScope) -> None:
    listener_scope.cancel()
    for conn in list(broker.connections):
        conn.read_scope.cancel()
    with trio.move_on_after(SHUTDOWN_GRACE_S):
        await broker.ingest.wait_idle()
        while any(c.inflight for c in broker.connections):
            await trio.sleep(0.01)


# --- the process entry point (`ringlog broker`) --------------------------------------------


async def run_broker(config: BrokerConfig, *, install_signals: bool = True) -> None:
    """Run until SIGTERM/SIGINT; log exactly one ready line."""
    async with open_broker(config) as broker:
        host, port = broker.listen_address
        maddr = broker.metrics_address
        log.info(
            "ringlog broker ready on %s:%d (advertised %s, data dir %s, fsync %s%s)",
            host, port, broker.bootstrap, os.path.abspath(config.data_dir), config.fsync,
            f", metrics http://{maddr[0]}:{maddr[1]}/metrics" if maddr else "",
            extra=event("ready", host=host, port=port, advertised=broker.bootstrap,
                        metrics=f"{maddr[0]}:{maddr[1]}" if maddr else None),
        )
        if not install_signals:
            await trio.sleep_forever()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name,
                         extra=event("stopping", signal=signal.Signals(signum).name))
                break
    log.info("ringlog broker stopped cleanly")
