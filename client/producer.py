"""Trio Kafka producer.

    async with open_producer("127.0.0.1:9092", linger_ms=5) as producer:
        handle = await producer.send("events", b"value", key=b"k")   # enqueued
        metadata = await handle                                       # delivered
        await producer.send_and_wait("events", b"other")

How records travel:

1. `send()` picks the partition (explicit, murmur2 of the key, or the sticky partition for keyless
   records), reserves buffer memory (waiting while `buffer_memory` bytes are already queued, so the
   queue never grows without bound) and appends the record, already encoded, to the open batch of
   that partition. Records are encoded once, straight into the batch's bytearray.
2. A batch closes when the next record would not fit in `batch_size`; the sender task sends a
   partition's first batch once it is closed, older than `linger_ms`, or a flush is pending.
   Closing writes the 61-byte RecordBatch v2 header (producer id, epoch, base sequence), compresses
   the record block with the topic's codec and computes the CRC-32C: the batch is then immutable and
   a retry resends the same bytes.
3. Batches for partitions led by the same broker share one Produce request (one batch per
   partition); up to `max_in_flight` requests per broker are pipelined on one connection, and with
   idempotence up to that many batches per partition, ordered by sequence number.
4. Errors: retriable ones put the batch back at the front of its partition queue (by sequence) after
   `retry_backoff_ms`; leadership errors and broken connections refresh the metadata first. While a
   partition has a batch to retry nothing newer is sent for it until its in-flight requests are
   answered (OUT_OF_ORDER_SEQUENCE_NUMBER answers to those are then expected and retried), so order
   is kept. A batch fails for good after `retries` attempts or `delivery_timeout_ms`.

Idempotence (default with acks=all): InitProducerId once, then sequences per partition starting at 0;
the broker drops duplicates a retry may create (DUPLICATE_SEQUENCE_NUMBER counts as delivered).

All tasks (sender, one per in-flight request, connection readers) live in the producer's nursery,
opened by `async with`; leaving the block flushes (unless it exits with an exception) and cancels
them.
"""
from __future__ import annotations

import contextlib
import math
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import crc32c
import trio

from storage.batch import CODEC_NONE, HEADER_SIZE
from storage.records import CODECS, compress, encode_varint

from .cluster import LEADERSHIP_ERRORS, Cluster
from .connection import ApiKey
from .errors import (
    ClientClosed,
    ClientError,
    ConnectionLost,
    KafkaError,
    NoBrokersAvailable,
    RequestTimedOut,
)
from .partitioner import DefaultPartitioner

__all__ = ["BufferFull", "DeliveryHandle", "Producer", "RecordMetadata", "open_producer"]

_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC = struct.Struct(">I")

# Zig-zag varints of small numbers, precomputed: lengths, deltas and counts are almost always small.
_VARINT_TABLE = [encode_varint(i) for i in range(-1, 1 << 14)]
_VARINT_LIMIT = (1 << 14) - 1
_NULL = b"\x01"  # varint(-1): a null key/value
_DUPLICATE_SEQUENCE = 46
_OUT_OF_ORDER_SEQUENCE = 45
_RECORD_OVERHEAD = 24  # rough per-record bytes beyond key/value, for buffer accounting


def _vi(n: int) -> bytes:
    if -1 <= n < _VARINT_LIMIT:
        return _VARINT_TABLE[n + 1]
    return encode_varint(n)


class BufferFull(ClientError):
    """`send_nowait` found `buffer_memory` exhausted."""


@attrs.frozen(slots=True)
class RecordMetadata:
    topic: str
    partition: int
    offset: int
    timestamp: int
    log_start_offset: int = -1


def _as_bytes(v: Any) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"expected bytes, str or None, got {type(v).__name__}")


class ProducerBatch:
    """Records for one partition, encoded as they arrive; sealed into a RecordBatch v2."""

    __slots__ = (
        "topic", "partition", "buf", "count", "base_ts", "max_ts", "created", "memory",
        "closed", "raw", "sequence", "attempts", "retry_at", "done", "base_offset",
        "log_append_time", "log_start_offset", "error", "limit",
    )

    def __init__(self, topic: str, partition: int, limit: int, now: float) -> None:
        self.topic = topic
        self.partition = partition
        self.buf = bytearray()
        self.count = 0
        self.base_ts = 0
        self.max_ts = 0
        self.created = now
        self.memory = 0
        self.closed = False
        self.raw: bytes | bytearray | None = None
        self.sequence = -1
        self.attempts = 0
        self.retry_at = 0.0
        self.done = trio.Event()
        self.base_offset = -1
        self.log_append_time = -1
        self.log_start_offset = -1
        self.error: BaseException | None = None
        self.limit = limit

    def try_append(self, key: bytes | None, value: bytes | None, headers: Sequence, ts: int) -> int:
        """Append one record; return its index, or -1 if the batch is full (or closed)."""
        if self.closed:
            return -1
        n = self.count
        if n == 0:
            self.base_ts = ts
            self.max_ts = ts
        elif ts > self.max_ts:
            self.max_ts = ts
        parts = [b"\x00", _vi(ts - self.base_ts), _vi(n)]
        if key is None:
            parts.append(_NULL)
        else:
            parts += (_vi(len(key)), key)
        if value is None:
            parts.append(_NULL)
        else:
            parts += (_vi(len(value)), value)
        if headers:
            parts.append(_vi(len(headers)))
            for hk, hv in headers:
                hkb = hk.encode("utf-8") if isinstance(hk, str) else bytes(hk)
                parts += (_vi(len(hkb)), hkb)
                hvb = _as_bytes(hv)
                if hvb is None:
                    parts.append(_NULL)
                else:
                    parts += (_vi(len(hvb)), hvb)
        else:
            parts.append(b"\x00")
        body = b"".join(parts)
        size = len(body)
        if n and HEADER_SIZE + len(self.buf) + size + 5 > self.limit:
            self.closed = True
            return -1
        buf = self.buf
        buf += _vi(size)
        buf += body
        self.count = n + 1
        return n

    @property
    def size(self) -> int:
        return HEADER_SIZE + len(self.buf)

    def seal(self, codec: int, producer_id: int, producer_epoch: int, sequence: int) -> None:
        """Write the header and CRC: the batch bytes are final after this."""
        self.closed = True
        self.sequence = sequence
        body = compress(codec, bytes(self.buf)) if codec != CODEC_NONE else self.buf
        raw = bytearray(HEADER_SIZE)
        raw += body
        _HEADER.pack_into(
            raw, 0, 0, len(raw) - 12, -1, 2, 0, codec, self.count - 1, self.base_ts, self.max_ts,
            producer_id, producer_epoch, sequence, self.count,
        )
        _CRC.pack_into(raw, 17, crc32c.crc32c(memoryview(raw)[21:]))
        self.raw = raw
        self.buf = bytearray()  # the encoded records now live in raw

    def complete(self, base_offset: int, log_append_time: int, log_start_offset: int) -> None:
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self.log_start_offset = log_start_offset
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class DeliveryHandle:
    """What `send()` returns: ``await handle`` gives the RecordMetadata (or raises the delivery
    error). `done()` / `result()` inspect it without waiting."""

    __slots__ = ("_batch", "_index", "_ts")

    def __init__(self, batch: ProducerBatch, index: int, ts: int) -> None:
        self._batch = batch
        self._index = index
        self._ts = ts

    @property
    def topic(self) -> str:
        return self._batch.topic

    @property
    def partition(self) -> int:
        return self._batch.partition

    def done(self) -> bool:
        return self._batch.done.is_set()

    def result(self) -> RecordMetadata:
        b = self._batch
        if not b.done.is_set():
            raise RuntimeError("delivery is not complete yet")
        if b.error is not None:
            raise b.error
        offset = b.base_offset + self._index if b.base_offset >= 0 else -1
        ts = b.log_append_time if b.log_append_time >= 0 else self._ts
        return RecordMetadata(b.topic, b.partition, offset, ts, b.log_start_offset)

    async def wait(self) -> RecordMetadata:
        await self._batch.done.wait()
        return self.result()

    def __await__(self):
        return self.wait().__await__()

    def __repr__(self) -> str:
        return f"<DeliveryHandle {self.topic}[{self.partition}] #{self._index} done={self.done()}>"


class _PartitionState:
    __slots__ = ("queue", "in_flight", "next_sequence", "recovering")

    def __init__(self) -> None:
        self.queue: deque[ProducerBatch] = deque()
        self.in_flight = 0
        self.next_sequence = 0
        self.recovering = False


def _acks(value: Any) -> int:
    if value in ("all", -1, "-1"):
        return -1
    v = int(value)
    if v not in (0, 1):
        raise ValueError(f"acks must be 0, 1 or 'all', not {value!r}")
    return v


class Producer:
    """Kafka producer; use as ``async with Producer(bootstrap, **config) as p``.

    Config (Java names with underscores): client_id, acks (0, 1, 'all'), enable_idempotence
    (default: True when acks is 'all'), compression_type ('none', 'gzip', 'snappy', 'lz4',
    'zstd'), batch_size, linger_ms, buffer_memory, max_request_size, max_in_flight
    (max.in.flight.requests.per.connection, <= 5 with idempotence), retries, retry_backoff_ms,
    request_timeout_ms, delivery_timeout_ms, metadata_max_age_ms, partitioner (a function
    ``(key_bytes, num_partitions) -> partition`` for keyed records), key_serializer,
    value_serializer.
    """

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092",
        *,
        client_id: str = "ringlog-producer",
        acks: int | str = "all",
        enable_idempotence: bool | None = None,
        compression_type: str | None = None,
        batch_size: int = 65536,
        linger_ms: float = 5,
        buffer_memory: int = 32 * 1024 * 1024,
        max_request_size: int = 1024 * 1024,
        max_in_flight: int = 5,
        retries: int = 2**31 - 1,
        retry_backoff_ms: float = 100,
        request_timeout_ms: float = 30000,
        delivery_timeout_ms: float = 120000,
        metadata_max_age_ms: float = 300000,
        connect_timeout_ms: float = 10000,
        partitioner: Callable[[bytes, int], int] | None = None,
        key_serializer: Callable[[Any], bytes] | None = None,
        value_serializer: Callable[[Any], bytes] | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self.client_id = client_id
        self.acks = _acks(acks)
        if enable_idempotence is None:
            enable_idempotence = self.acks == -1
        elif enable_idempotence and self.acks != -1:
            raise ValueError("enable_idempotence requires acks='all'")
        if enable_idempotence and max_in_flight > 5:
            raise ValueError("max_in_flight must be <= 5 with idempotence")
        self.idempotent = bool(enable_idempotence)
        codec_name = (compression_type or "none").lower()
        if codec_name not in CODECS:
            raise ValueError(f"unknown compression_type {compression_type!r}")
        self.codec = CODECS[codec_name]
        self.batch_size = max(int(batch_size), HEADER_SIZE + 64)
        self.linger = linger_ms / 1000
        self.buffer_memory = int(buffer_memory)
        self.max_request_size = int(max_request_size)
        self.max_in_flight = max(1, int(max_in_flight))
        self.retries = int(retries)
        self.retry_backoff = retry_backoff_ms / 1000
        self.request_timeout = request_timeout_ms / 1000
        self.delivery_timeout = delivery_timeout_ms / 1000
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.connect_timeout = connect_timeout_ms / 1000
        self._partitioner = DefaultPartitioner(partitioner)
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer

        self._parts: dict[tuple[str, int], _PartitionState] = {}
        self._node_in_flight: dict[int, int] = {}
        self._connecting: set[int] = set()
        self._incomplete: set[ProducerBatch] = set()
        self._memory_used = 0
        self._memory_lot = trio.lowlevel.ParkingLot()
        self._wakeup = trio.Event()
        self._flushing = 0
        self._closing = False
        self._closed = False
        self._started = False
        self.producer_id = -1
        self.producer_epoch = -1
        self._pid_ready = trio.Event()
        self._pid_error: BaseException | None = None
        self._fatal: BaseException | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self.cluster: Cluster | None = None

    # --- lifetime

    async def __aenter__(self) -> Producer:
        if self._started:
            raise RuntimeError("a Producer can be entered once")
        self._started = True
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            self.cluster = Cluster(
                self._nursery,
                self._bootstrap,
                client_id=self.client_id,
                request_timeout=self.request_timeout,
                connect_timeout=self.connect_timeout,
                metadata_max_age=self.metadata_max_age,
                retry_backoff=self.retry_backoff,
            )
            await self.cluster.refresh()
            if self.idempotent:
                await self._init_producer_id()
            else:
                self._pid_ready.set()
            self._nursery.start_soon(self._sender)
        except BaseException:
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            await stack.__aexit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool | None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            self._closed = True
            self._fail_all(ClientClosed("producer closed"))
            assert self._nursery is not None and self._stack is not None
            self._nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await self.cluster.aclose()
            return await self._stack.__aexit__(exc_type, exc, tb)

    async def close(self) -> None:
        """Flush and stop; the `async with` block does this on exit."""
        await self.__aexit__(None, None, None)

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise ClientClosed("producer is closed")
        if not self._started or self._nursery is None:
            raise ClientClosed("producer is not started: use `async with`")
        if self._fatal is not None:
            raise self._fatal

    # --- sending

    def _serialize(self, key: Any, value: Any) -> tuple[bytes | None, bytes | None]:
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        if self._value_serializer is not None and value is not None:
            value = self._value_serializer(value)
        return _as_bytes(key), _as_bytes(value)

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Sequence[tuple[str, Any]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> DeliveryHandle:
        """Queue one record; returns once it is in a batch. ``await`` the returned handle for its
        RecordMetadata. Waits while the buffer is full or the topic's metadata is unknown."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        key_b, value_b = self._serialize(key, value)
        partitions = self.cluster.partitions(topic)
        if partitions is None:
            partitions = await self.cluster.topic_partitions(topic)
        need = _RECORD_OVERHEAD + (len(key_b) if key_b else 0) + (len(value_b) if value_b else 0)
        if headers:
            need += sum(len(h[0]) + len(h[1] or b"") + 4 for h in headers)
        if need > self.max_request_size:
            raise KafkaError(10, f"record of about {need} bytes exceeds max_request_size")
        while self._memory_used and self._memory_used + need > self.buffer_memory:
            await self._memory_lot.park()
            self._check_open()
        return self._append(topic, partitions, partition, key_b, value_b, headers, timestamp, need)

    def send_nowait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Sequence[tuple[str, Any]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> DeliveryHandle:
        """`send` without waiting: raises BufferFull when the buffer is full and
        UnknownTopicOrPartitionError when the topic's metadata is not cached yet."""
        self._check_open()
        key_b, value_b = self._serialize(key, value)
        partitions = self.cluster.partitions(topic)
        if partitions is None:
            self._nursery.start_soon(self._refresh_quietly, [topic])
            raise KafkaError(3, f"metadata for {topic!r} is not known yet")
        need = _RECORD_OVERHEAD + (len(key_b) if key_b else 0) + (len(value_b) if value_b else 0)
        if headers:
            need += sum(len(h[0]) + len(h[1] or b"") + 4 for h in headers)
        if self._memory_used and self._memory_used + need > self.buffer_memory:
            raise BufferFull(f"{self._memory_used} bytes queued (buffer_memory={self.buffer_memory})")
        return self._append(topic, partitions, partition, key_b, value_b, headers, timestamp, need)

    async def send_and_wait(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> RecordMetadata:
        handle = await self.send(topic, value, key, **kw)
        return await handle

    async def send_batch(
        self, topic: str, records: Iterable[tuple[Any, Any]], *, partition: int | None = None
    ) -> list[DeliveryHandle]:
        """Queue many (key, value) pairs; returns their handles."""
        return [await self.send(topic, v, k, partition=partition) for k, v in records]

    def _append(self, topic, partitions, partition, key, value, headers, timestamp, need) -> DeliveryHandle:
        sticky = partition is None and key is None
        if partition is None:
            partition = self._partitioner(topic, key, partitions, self.cluster.available_partitions(topic))
        elif partition < 0 or partition not in partitions:
            raise KafkaError(3, f"{topic!r} has no partition {partition}")
        ts = int(time.time() * 1000) if timestamp is None else int(timestamp)
        tp = (topic, partition)
        ps = self._parts.get(tp)
        if ps is None:
            ps = self._parts[tp] = _PartitionState()
        q = ps.queue
        batch = q[-1] if q else None
        index = -1 if batch is None else batch.try_append(key, value, headers, ts)
        if index >= 0:
            batch.memory += need
            self._memory_used += need
            return DeliveryHandle(batch, index, ts)
        if batch is not None:
            # The batch just filled up: the sender may take it now, and keyless records move to
            # another partition (KIP-480), starting with this one.
            self._wakeup.set()
            if sticky:
                available = self.cluster.available_partitions(topic)
                self._partitioner.sticky.batch_closed(topic, partition, partitions, available)
                nxt = self._partitioner.sticky.partition(topic, partitions, available)
                if nxt != partition:
                    return self._append(topic, partitions, nxt, key, value, headers, ts, need)
        return self._new_batch(ps, tp, key, value, headers, ts, need)

    def _new_batch(self, ps, tp, key, value, headers, ts, need) -> DeliveryHandle:
        batch = ProducerBatch(tp[0], tp[1], self.batch_size, trio.current_time())
        index = batch.try_append(key, value, headers, ts)
        ps.queue.append(batch)
        self._incomplete.add(batch)
        batch.memory += need
        self._memory_used += need
        self._wakeup.set()
        return DeliveryHandle(batch, index, ts)

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything queued so far and wait for its delivery (errors stay on the handles)."""
        if not self._incomplete:
            await trio.lowlevel.checkpoint()
            return
        pending = list(self._incomplete)
        self._flushing += 1
        self._wakeup.set()
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                for b in pending:
                    await b.done.wait()
        finally:
            self._flushing -= 1

    # --- the sender task

    async def _refresh_quietly(self, topics=None) -> None:
        with contextlib.suppress(ConnectionLost, RequestTimedOut, NoBrokersAvailable, KafkaError):
            await self.cluster.refresh(topics)

    async def _init_producer_id(self) -> None:
        last: BaseException | None = None
        for attempt in range(20):
            try:
                conn = await self.cluster.any_connection()
                b = conn.make(ApiKey.INIT_PRODUCER_ID)
                resp = await conn.request(b(transactional_id=None, transaction_timeout=60000))
            except (ConnectionLost, RequestTimedOut, NoBrokersAvailable) as exc:
                last = exc
            else:
                if resp.error_code == 0:
                    self.producer_id = int(resp.producer_id)
                    self.producer_epoch = int(resp.producer_epoch)
                    self._pid_ready.set()
                    return
                last = KafkaError(resp.error_code, "InitProducerId")
                if not last.retriable:
                    raise last
            await trio.sleep(self.retry_backoff * (attempt + 1))
        assert last is not None
        raise last

    def _next_deadline_and_ready(self, now: float):
        by_node: dict[int, list[_PartitionState]] = {}
        deadline = math.inf
        need_metadata = False
        urgent = self._flushing or self._closing
        per_partition = self.max_in_flight if self.idempotent else self.max_in_flight
        for tp, ps in self._parts.items():
            q = ps.queue
            if not q:
                continue
            if ps.recovering:
                if ps.in_flight:
                    continue
                ps.recovering = False
            if ps.in_flight >= per_partition:
                continue
            b = q[0]
            if b.retry_at > now:
                deadline = min(deadline, b.retry_at)
                continue
            if not (b.closed or len(q) > 1 or urgent):
                due = b.created + self.linger
                if due > now:
                    deadline = min(deadline, due)
                    continue
            leader = self.cluster.leader(tp[0], tp[1])
            if leader < 0:
                need_metadata = True
                deadline = min(deadline, now + self.retry_backoff)
                continue
            by_node.setdefault(leader, []).append((tp, ps))
        return by_node, deadline, need_metadata

    async def _sender(self) -> None:
        await self._pid_ready.wait()
        while True:
            now = trio.current_time()
            self._expire(now)
            by_node, deadline, need_metadata = self._next_deadline_and_ready(now)
            if need_metadata or self.cluster.stale:
                self._nursery.start_soon(self._refresh_quietly, None)
            for node, items in by_node.items():
                conn = self.cluster.connected(node)
                if conn is None:
                    if node not in self._connecting:
                        self._connecting.add(node)
                        self._nursery.start_soon(self._connect, node)
                    continue
                while items and self._node_in_flight.get(node, 0) < self.max_in_flight:
                    batches = []
                    size = 0
                    rest = []
                    for tp, ps in items:
                        b = ps.queue[0]
                        bsize = len(b.raw) if b.raw is not None else b.size
                        if batches and size + bsize > self.max_request_size:
                            rest.append((tp, ps))
                            continue
                        ps.queue.popleft()
                        if b.raw is None:
                            if not b.closed:
                                self._partitioner.sticky.batch_closed(tp[0], tp[1], self.cluster.partitions(tp[0]) or [tp[1]])
                            seq = -1
                            if self.idempotent:
                                seq = ps.next_sequence
                                ps.next_sequence = (seq + b.count) % (1 << 31)
                            b.seal(self.codec, self.producer_id, self.producer_epoch, seq)
                        ps.in_flight += 1
                        batches.append(b)
                        size += len(b.raw)
                        # a partition with more ready batches can go again in the next request
                        if ps.queue and ps.in_flight < self.max_in_flight and not ps.recovering and (
                            ps.queue[0].closed or len(ps.queue) > 1 or self._flushing or self._closing
                        ):
                            rest.append((tp, ps))
                    items = rest
                    self._node_in_flight[node] = self._node_in_flight.get(node, 0) + 1
                    # Submitted here, synchronously, so requests leave in the order batches were
                    # drained (sequence order per partition); the task only waits for the answer.
                    try:
                        pending = conn.submit(self._produce_request(conn, batches), expect_response=self.acks != 0)
                    except ConnectionLost as exc:
                        pending = exc
                    self._nursery.start_soon(self._produce, node, conn, batches, pending)
            self._wakeup = trio.Event()
            if deadline is math.inf:
                await self._wakeup.wait()
            else:
                with trio.move_on_at(deadline):
                    await self._wakeup.wait()

    def _expire(self, now: float) -> None:
        for ps in self._parts.values():
            while ps.queue and ps.queue[0].raw is None and now - ps.queue[0].created > self.delivery_timeout:
                b = ps.queue.popleft()
                self._finish(b, error=KafkaError(7, "batch expired before it could be sent (delivery_timeout_ms)"))

    def _finish(self, b: ProducerBatch, *, error: BaseException | None = None, base_offset: int = -1,
                log_append_time: int = -1, log_start_offset: int = -1) -> None:
        if b.done.is_set():
            return
        if error is not None:
            b.fail(error)
        else:
            b.complete(base_offset, log_append_time, log_start_offset)
        self._incomplete.discard(b)
        self._memory_used -= b.memory
        b.memory = 0
        self._memory_lot.unpark_all()

    def _retry(self, b: ProducerBatch, error: BaseException) -> None:
        """Queue `b` again (ordered by sequence) or fail it for good."""
        now = trio.current_time()
        b.attempts += 1
        if b.attempts > self.retries or now - b.created > self.delivery_timeout or self._closed:
            self._finish(b, error=error)
            return
        ps = self._parts[(b.topic, b.partition)]
        ps.recovering = True
        b.retry_at = now + self.retry_backoff
        q = ps.queue
        i = 0
        while i < len(q) and q[i].raw is not None and q[i].sequence < b.sequence:
            i += 1
        q.insert(i, b)

    async def _connect(self, node: int) -> None:
        try:
            await self.cluster.ensure_connection(node)
            if self.cluster.connected(node) is None:
                await self._refresh_quietly()
                await trio.sleep(self.retry_backoff)
        finally:
            self._connecting.discard(node)
            self._wakeup.set()

    def _produce_request(self, conn, batches: list[ProducerBatch]):
        b = conn.make(ApiKey.PRODUCE)
        topics: dict[str, list] = {}
        for batch in batches:
            topics.setdefault(batch.topic, []).append(
                b("PartitionProduceData", index=batch.partition, records=batch.raw)
            )
        return b(
            transactional_id=None,
            acks=self.acks,
            timeout=int(self.request_timeout * 1000),
            topic_data=tuple(b("TopicProduceData", name=t, partition_data=tuple(ps)) for t, ps in topics.items()),
        )

    async def _produce(self, node: int, conn, batches: list[ProducerBatch], pending) -> None:
        refresh = False
        try:
            try:
                if isinstance(pending, BaseException):
                    raise pending
                if pending is None:  # acks=0: nothing comes back
                    await trio.lowlevel.checkpoint()
                    for batch in batches:
                        self._finish(batch)
                    return
                resp = await conn.wait(pending, timeout=self.request_timeout + 5)
            except (ConnectionLost, RequestTimedOut, NoBrokersAvailable) as exc:
                refresh = True
                for batch in batches:
                    self._retry(batch, exc)
                return
            results = {}
            for t in resp.responses:
                for p in t.partition_responses:
                    results[(t.name, int(p.index))] = p
            failed_partitions: set[tuple[str, int]] = set()
            for batch in batches:
                tp = (batch.topic, batch.partition)
                p = results.get(tp)
                if p is None:
                    self._retry(batch, KafkaError(-1, "partition missing from the produce response"))
                    continue
                code = int(p.error_code)
                if code == 0 or code == _DUPLICATE_SEQUENCE:
                    lat = p.log_append_time
                    lat_ms = int(lat.timestamp() * 1000) if lat is not None else -1
                    self._finish(batch, base_offset=int(p.base_offset) if code == 0 else -1,
                                 log_append_time=lat_ms, log_start_offset=int(getattr(p, "log_start_offset", -1)))
                    continue
                err = KafkaError(code, getattr(p, "error_message", None))
                ps = self._parts[tp]
                if code in LEADERSHIP_ERRORS:
                    refresh = True
                if err.retriable or (code == _OUT_OF_ORDER_SEQUENCE and (ps.recovering or tp in failed_partitions)):
                    failed_partitions.add(tp)
                    self._retry(batch, err)
                else:
                    self._finish(batch, error=err)
        finally:
            for batch in batches:
                self._parts[(batch.topic, batch.partition)].in_flight -= 1
            self._node_in_flight[node] -= 1
            if refresh:
                self._nursery.start_soon(self._refresh_quietly, None)
            self._wakeup.set()

    def _fail_all(self, error: BaseException) -> None:
        for b in list(self._incomplete):
            self._finish(b, error=error)
        for ps in self._parts.values():
            ps.queue.clear()
        self._memory_lot.unpark_all()

    # --- introspection

    @property
    def buffered_bytes(self) -> int:
        return self._memory_used

    async def partitions_for(self, topic: str) -> list[int]:
        return await self.cluster.topic_partitions(topic)


def open_producer(bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092", **config: Any) -> Producer:
    """``async with open_producer(...) as p`` -- the same as ``async with Producer(...)``."""
    return Producer(bootstrap_servers, **config)

