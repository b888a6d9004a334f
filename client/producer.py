"""Trio Kafka producer.

    async with open_producer("127.0.0.1:9092", linger_ms=5) as producer:
        handle = await producer.send("events", b"value", key=b"k")   # enqueued
        metadata = await handle                                       # delivered
        await producer.send_and_wait("events", b"other")

How records travel:

1. `send()` picks the partition (explicit, murmur2 of the key, or the sticky partition for keyless
   records), reserves buffer memory (waiting while `buffer_memory` bytes are already queued, so the
   queue never grows without bound) and appends the record, as a (key, value, headers, timestamp)
   tuple, to the open batch of that partition. Each record counts at its longest possible encoding
   (`record_bound`) against the batch and the buffer.
2. A batch closes when the next record would not fit in `batch_size`; the sender task sends a
   partition's first batch once it is closed, older than `linger_ms`, or a flush is pending (or a
   send waits for buffer memory). Sealing encodes all its records in one pass, compresses the
   record block with the topic's codec and frames it with the 61-byte RecordBatch v2 header
   (producer id, epoch, base sequence) and its CRC-32C -- storage.records and storage.batch, the
   one implementation of the format the broker uses too: the batch is then immutable and a retry
   resends the same bytes.
3. Batches for partitions led by the same broker share one Produce request (one batch per
   partition); up to `max_in_flight` requests per broker are pipelined on one connection, and with
   idempotence up to that many batches per partition, ordered by sequence number.
4. Errors: retriable ones put the batch back at the front of its partition queue (by sequence) after
   `retry_backoff_ms`; leadership errors and broken connections refresh the metadata first. While a
   partition has a batch to retry nothing newer is sent for it until its in-flight requests are
   answered (OUT_OF_ORDER_SEQUENCE_NUMBER answers to those are then expected and retried), so order
   is kept. A batch fails for good after `retries` attempts or `delivery_timeout_ms`.
   MESSAGE_TOO_LARGE splits the batch and sends the pieces instead, until a single record is too
   large (that record fails with MessageTooLargeError); the topic's later batches are cut to its
   max.message.bytes (see "batches the broker refuses" below).

Idempotence (default with acks=all): InitProducerId once, then sequences per partition starting at 0;
the broker drops duplicates a retry may create (DUPLICATE_SEQUENCE_NUMBER counts as delivered).

All tasks (sender, one per in-flight request, connection readers) live in the producer's nursery,
opened by `async with`; leaving the block flushes (unless it exits with an exception or is
cancelled), raises the delivery error of the first record queued at that point that failed, and
cancels them. Failures come out as plain exceptions, not as the nursery's ExceptionGroup
(client/_lifetime.py).
"""
from __future__ import annotations

import bisect
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import trio

from ringlog.storage.batch import CODEC_NONE, HEADER_SIZE, TRANSACTIONAL_MASK, frame_batch, set_base_sequence
from ringlog.storage.records import CODECS, compress, decode_records, encode_records

from ._lifetime import Lifetime, open_owned_nursery
from .cluster import LEADERSHIP_ERRORS, Cluster
from .connection import ApiKey
from .errors import (
    ClientClosed,
    ClientError,
    ConnectionLost,
    KafkaError,
    NoBrokersAvailable,
    RequestTimedOut,
    UnsupportedApi,
)
from .partitioner import DefaultPartitioner
from .security import SecurityConfig

_time_ns = time.time_ns
_new_handle = object.__new__

__all__ = ["BufferFull", "DeliveryHandle", "Producer", "RecordMetadata", "open_producer"]

log = logging.getLogger(__name__)

_DUPLICATE_SEQUENCE = 46
_OUT_OF_ORDER_SEQUENCE = 45
_MESSAGE_TOO_LARGE = 10
# Answers about the producer's sequence or epoch rather than the batch: after them the batch's
# sequence numbers cannot be given to the next batch (see Producer._sequence_hole).
_SEQUENCE_ERRORS = frozenset({45, 47, 59, 90})
_SEQ_MOD = 1 << 31
_RESOURCE_TOPIC = 2
# Longest possible encoding of a record beyond its key, value and headers: length (5), attributes
# (1), timestamp delta (10), offset delta (5), key and value lengths (5 each), header count (5).
_RECORD_BOUND = 36
# send() yields to the scheduler at least once every this many calls (and whenever a batch fills
# up), so the sender task ships batches while a tight loop keeps queueing records.
_YIELD_EVERY = 512


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


def _header_bytes(headers: Sequence) -> tuple[tuple[bytes, bytes | None], ...]:
    """Headers as (key bytes, value bytes or None) pairs, converted once, on `send`."""
    out = []
    for hk, hv in headers:
        out.append((hk.encode("utf-8") if isinstance(hk, str) else bytes(hk), _as_bytes(hv)))
    return tuple(out)


def record_bound(key: bytes | None, value: bytes | None, headers: Sequence = ()) -> int:
    """Most bytes the record can take encoded (every varint at its longest)."""
    n = _RECORD_BOUND + (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    for hk, hv in headers:
        n += 10 + len(hk) + (len(hv) if hv is not None else 0)
    return n


class ProducerBatch:
    """Records for one partition, kept as they arrive and encoded in one pass when the batch is
    sealed into a RecordBatch v2.

    `est` bounds the encoded size from above (every varint counted at its longest), so a batch
    never exceeds `limit` (batch_size) once encoded; with 100-byte values the bound is about 35%
    above the real size, so batches fill to roughly three quarters of batch_size."""

    __slots__ = (
        "topic", "partition", "records", "est", "room", "created",
        "closed", "raw", "sequence", "attempts", "retry_at", "done", "base_offset",
        "log_append_time", "log_start_offset", "error", "limit", "_count", "base_ts", "max_ts",
        "root", "first", "pieces", "holes_seen",
    )

    def __init__(self, topic: str, partition: int, limit: int, now: float) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list = []
        self.est = 0  # upper bound of the encoded records, also what the buffer accounting counts
        self.room = limit - HEADER_SIZE
        self.created = now
        self.closed = False
        self.raw: bytes | bytearray | None = None
        self.sequence = -1
        self.attempts = 0
        self.retry_at = 0.0
        self.done = trio.Event()  # one per batch: every record's handle waits on it
        self.base_offset = -1
        self.log_append_time = -1
        self.log_start_offset = -1
        self.error: BaseException | None = None
        self.limit = limit
        self._count = 0
        self.base_ts = 0
        self.max_ts = 0
        # A batch the broker refused as too large is split (Producer._split) into pieces that are
        # sent instead of it. The refused batch stays the one its records' handles point at (the
        # root): `pieces` lists the pieces that are not split further, in record order; each
        # piece has `root` and `first`, the index of its first record in the root.
        self.root: ProducerBatch | None = None
        self.first = 0
        self.pieces: list[ProducerBatch] | None = None
        self.holes_seen = 0  # how many of its partition's sequence holes its sequence accounts for

    @property
    def count(self) -> int:
        return self._count if self.raw is not None else len(self.records)

    def try_append(self, key: bytes | None, value: bytes | None, headers: Sequence, ts: int) -> int:
        """Append one record; return its index, or -1 if the batch is full (or closed)."""
        if headers:
            headers = _header_bytes(headers)  # idempotent: send() already converted them
        return self.add(key, value, headers, ts, record_bound(key, value, headers))

    def add(self, key: bytes | None, value: bytes | None, headers: tuple, ts: int, bound: int) -> int:
        """`try_append` for converted headers and a precomputed `record_bound`."""
        if self.closed:
            return -1
        records = self.records
        n = len(records)
        if n and self.est + bound > self.room:
            self.closed = True
            return -1
        self.est += bound
        records.append((key, value, headers, ts))
        return n

    @property
    def size(self) -> int:
        """Upper bound of the batch's size on the wire (exact once sealed)."""
        return len(self.raw) if self.raw is not None else HEADER_SIZE + self.est

    def seal(self, codec: int, producer_id: int, producer_epoch: int, sequence: int,
             transactional: bool = False) -> None:
        """Encode the records, write the header and CRC: the batch bytes are final after this."""
        self.closed = True
        self.sequence = sequence
        records = self.records
        count = len(records)
        base_ts = records[0][3]
        buf, max_ts = encode_records(records, base_ts)
        body = compress(codec, bytes(buf)) if codec != CODEC_NONE else buf
        raw = frame_batch(
            body, attributes=codec | (TRANSACTIONAL_MASK if transactional else 0), records_count=count,
            last_offset_delta=count - 1,
            base_timestamp=base_ts, max_timestamp=max_ts, producer_id=producer_id,
            producer_epoch=producer_epoch, base_sequence=sequence,
        )
        self.base_ts = base_ts
        self.max_ts = max_ts
        self._count = count
        self.raw = raw
        self.records = []  # the encoded records now live in raw

    def set_sequence(self, sequence: int) -> None:
        """Give the sealed batch another base sequence (the header field and the CRC over it)."""
        set_base_sequence(self.raw, sequence)
        self.sequence = sequence

    def decoded_records(self) -> list:
        """The sealed batch's records back as (key, value, headers, timestamp) tuples."""
        return [(r.key, r.value, _header_bytes(r.headers) if r.headers else (), r.timestamp)
                for r in decode_records(self.raw)]

    def complete(self, base_offset: int, log_append_time: int, log_start_offset: int) -> None:
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self.log_start_offset = log_start_offset
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


def _piece_first(piece: ProducerBatch) -> int:
    return piece.first


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
        index = self._index
        if b.pieces is not None:
            # the batch was split: the record's piece has its offset (or its error); a piece that
            # is not done means the whole batch failed (the producer closed)
            piece = b.pieces[bisect.bisect_right(b.pieces, index, key=_piece_first) - 1]
            if piece.done.is_set():
                b = piece
                index -= piece.first
        if b.error is not None:
            raise b.error
        offset = b.base_offset + index if b.base_offset >= 0 else -1
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
    __slots__ = ("queue", "in_flight", "next_sequence", "recovering", "window", "holes")

    def __init__(self, window: int) -> None:
        self.queue: deque[ProducerBatch] = deque()
        self.in_flight = 0
        self.next_sequence = 0
        self.recovering = False
        # Batches this partition may have in flight. With idempotence it starts at 1 and opens to
        # max_in_flight after the first batch is acknowledged: a broker accepts any sequence from
        # a producer it does not know yet, so a second batch pipelined behind a refused first one
        # would be written, and the first one (or its split pieces) could never follow it. It is
        # 1 again while the pieces of a split batch are being sent (Producer._split).
        self.window = window
        # (base sequence, count) of sequenced batches the broker refused for good, in order;
        # batches sealed before a hole and after it in sequence move down by its count when they
        # are sent again (Producer._resequence)
        self.holes: list[tuple[int, int]] = []


def _acks(value: Any) -> int:
    if value in ("all", -1, "-1"):
        return -1
    v = int(value)
    if v not in (0, 1):
        raise ValueError(f"acks must be 0, 1 or 'all', not {value!r}")
    return v


class Producer(Lifetime):
    """Kafka producer; use as ``async with Producer(bootstrap, **config) as p``.

    Config (Java names with underscores): client_id, acks (0, 1, 'all'), enable_idempotence
    (default: True when acks is 'all'), compression_type ('none', 'gzip', 'snappy', 'lz4',
    'zstd'), batch_size, linger_ms, buffer_memory, max_request_size, max_in_flight
    (max.in.flight.requests.per.connection, <= 5 with idempotence), retries, retry_backoff_ms,
    request_timeout_ms, delivery_timeout_ms, metadata_max_age_ms, partitioner (a function
    ``(key_bytes, num_partitions) -> partition`` for keyed records), key_serializer,
    value_serializer, and the security options of client.security (security_protocol,
    sasl_mechanism, sasl_username, sasl_password, ssl_ca_location, ...).
    """

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092",
        *,
        client_id: str = "ringlog-producer",
        acks: int | str = "all",
        enable_idempotence: bool | None = None,
        compression_type: str | None = None,
        batch_size: int = 1_000_000,
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
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60000,
        **security: Any,
    ) -> None:
        self._security = SecurityConfig.from_options(security, "Producer")
        self._bootstrap = bootstrap_servers
        if transactional_id is not None and enable_idempotence is False:
            raise ValueError("a transactional producer is idempotent")
        if transactional_id is not None:
            enable_idempotence = True
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

        self._serializers = key_serializer is not None or value_serializer is not None
        self._topic_cache: dict[str, tuple] = {}  # topic -> (partitions, available), see _topic_info
        self._sticky_batch: dict[str, ProducerBatch] = {}  # topic -> open batch of its sticky partition
        self._version = -1  # the cluster metadata version those two caches belong to
        # a batch (header included) fits both batch_size and a Produce request
        self._batch_limit = max(HEADER_SIZE + 64, min(self.batch_size, self.max_request_size - 512))
        # topic -> batch limit below _batch_limit, learnt from a MESSAGE_TOO_LARGE answer and the
        # topic's max.message.bytes (see _split); new batches of the topic are cut to it
        self._topic_limits: dict[str, int] = {}
        self._learning: set[str] = set()  # topics whose max.message.bytes is being asked for
        self._sends = 0  # send() calls since it last yielded
        self._open = False  # entered, not closed: send()'s one-flag check

        self._parts: dict[tuple[str, int], _PartitionState] = {}
        self._node_in_flight: dict[int, int] = {}
        self._connecting: set[int] = set()
        self._incomplete: set[ProducerBatch] = set()
        self._memory_used = 0
        self._memory_lot = trio.lowlevel.ParkingLot()
        self._wakeup = trio.Event()
        self._flushing = 0
        self._exhausted = 0  # sends waiting for buffer memory
        self._closing = False
        self._closed = False
        self._started = False
        self.producer_id = -1
        self.producer_epoch = -1
        self._pid_ready = trio.Event()
        self._pid_error: BaseException | None = None
        self._fatal: BaseException | None = None
        self._nursery: trio.Nursery | None = None
        self.cluster: Cluster | None = None
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = int(transaction_timeout_ms)
        self._txn: Transaction | None = None  # the open transaction (begin .. commit/abort)

    # --- lifetime

    @contextlib.asynccontextmanager
    async def _lifetime(self):
        if self._started:
            raise RuntimeError("a Producer can be entered once")
        self._started = True
        async with open_owned_nursery() as nursery:
            self._nursery = nursery
            try:
                self.cluster = Cluster(
                    nursery,
                    self._bootstrap,
                    client_id=self.client_id,
                    request_timeout=self.request_timeout,
                    connect_timeout=self.connect_timeout,
                    metadata_max_age=self.metadata_max_age,
                    retry_backoff=self.retry_backoff,
                    logger=log,
                    security=self._security,
                )
                await self.cluster.refresh()
                if self.idempotent:
                    await self._init_producer_id()
                else:
                    self._pid_ready.set()
                nursery.start_soon(self._sender)
                self._open = True
                yield self
                # Only a block that ended normally flushes: after an exception or a cancellation
                # the caller is abandoning the records, and waiting for them would delay that.
                await self._flush_on_exit()
            finally:
                self._closed = True
                self._open = False
                self._fail_all(ClientClosed("producer closed"))
                nursery.cancel_scope.cancel()
                if self.cluster is not None:
                    with trio.CancelScope(shield=True):
                        await self.cluster.aclose()

    async def _flush_on_exit(self) -> None:
        """Flush, then raise the delivery error of the first record queued at exit that failed.

        Nobody may be waiting on those records' handles any more, so the exit is the last place
        their failure can be seen; the other handles keep their own errors."""
        pending = list(self._incomplete)
        await self.flush()
        for b in pending:
            if b.error is not None:
                raise b.error

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
    #
    # send() runs once per record, so its common case (bytes or None key and value, no headers,
    # serializers or explicit partition) is kept to a handful of attribute look-ups: the topic's
    # partition lists are cached against the metadata version, the open batch of the sticky
    # partition is found with one dict look-up, the record is appended as a tuple (encoding
    # happens per batch, in seal) and the handle is built without a Python __init__.

    def _serialize(self, key: Any, value: Any) -> tuple[bytes | None, bytes | None]:
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        if self._value_serializer is not None and value is not None:
            value = self._value_serializer(value)
        return _as_bytes(key), _as_bytes(value)

    def _prepare(self, key: Any, value: Any, headers: Sequence) -> tuple[Any, Any, Any, int]:
        """Serialized key and value, converted headers and the record's size bound (what the
        buffer accounting counts)."""
        key_b, value_b = self._serialize(key, value)
        headers = _header_bytes(headers) if headers else ()
        return key_b, value_b, headers, record_bound(key_b, value_b, headers)

    def _topic_info(self, topic: str) -> tuple | None:
        """(sorted partitions, partitions with a leader) of `topic`, cached until the metadata
        changes; None when the topic's metadata is not known."""
        cluster = self.cluster
        if cluster.version != self._version:
            self._version = cluster.version
            self._topic_cache.clear()
            self._sticky_batch.clear()
        info = self._topic_cache.get(topic)
        if info is None:
            partitions = cluster.partitions(topic)
            if partitions is None:
                return None
            info = self._topic_cache[topic] = (partitions, cluster.available_partitions(topic))
        return info

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
        RecordMetadata. Waits while the buffer is full or the topic's metadata is unknown.

        While there is room, `send` yields to the scheduler (a checkpoint: cancellation is seen
        there) once every few hundred calls and whenever a batch has filled up, not on every call,
        so a loop of sends costs little more than the encoding of its records."""
        self._sends += 1
        if self._sends >= _YIELD_EVERY:
            self._sends = 0
            await trio.lowlevel.checkpoint()
        if not self._open:
            self._check_open()
        # The common case, inlined: a keyless bytes record for the sticky partition whose open
        # batch has room. Everything else (and this case when it does not fit) takes _append.
        if (key is None and type(value) is bytes and partition is None and not headers
                and not self._serializers and self.cluster.version == self._version):
            batch = self._sticky_batch.get(topic)
            need = _RECORD_BOUND + len(value)
            if (batch is not None and not batch.closed and batch.est + need <= batch.room
                    and self._memory_used + need <= self.buffer_memory):
                ts = _time_ns() // 1_000_000 if timestamp is None else int(timestamp)
                records = batch.records
                h = _new_handle(DeliveryHandle)
                h._index = len(records)
                records.append((None, value, (), ts))
                batch.est += need
                self._memory_used += need
                h._batch = batch
                h._ts = ts
                return h
        key, value, headers, need = self._prepare(key, value, headers)
        info = self._topic_info(topic)
        if info is None:
            await self.cluster.topic_partitions(topic)
            info = self._topic_info(topic)
            if info is None:
                raise KafkaError(3, f"metadata for {topic!r} is not known")
        if need > self.max_request_size:
            raise KafkaError(10, f"record of about {need} bytes exceeds max_request_size")
        while self._memory_used and self._memory_used + need > self.buffer_memory:
            # As Kafka's accumulator does when its memory is exhausted: while a send waits for
            # room, open batches are sent without waiting for linger_ms or for them to fill.
            self._exhausted += 1
            self._wakeup.set()
            try:
                await self._memory_lot.park()
            finally:
                self._exhausted -= 1
            self._check_open()
        return self._append(topic, info, partition, key, value, headers, timestamp, need)

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
        key_b, value_b, headers, need = self._prepare(key, value, headers)
        info = self._topic_info(topic)
        if info is None:
            self._nursery.start_soon(self._refresh_quietly, [topic])
            raise KafkaError(3, f"metadata for {topic!r} is not known yet")
        if self._memory_used and self._memory_used + need > self.buffer_memory:
            raise BufferFull(f"{self._memory_used} bytes queued (buffer_memory={self.buffer_memory})")
        return self._append(topic, info, partition, key_b, value_b, headers, timestamp, need)

    async def send_and_wait(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> RecordMetadata:
        handle = await self.send(topic, value, key, **kw)
        return await handle

    async def send_batch(
        self, topic: str, records: Iterable[tuple[Any, Any]], *, partition: int | None = None
    ) -> list[DeliveryHandle]:
        """Queue many (key, value) pairs; returns their handles."""
        send = self.send
        return [await send(topic, v, k, partition=partition) for k, v in records]

    def _append(self, topic, info, partition, key, value, headers, timestamp, need) -> DeliveryHandle:
        partitions, available = info
        sticky = partition is None and key is None
        if partition is None:
            partition = self._partitioner(topic, key, partitions, available)
        elif partition < 0 or partition not in partitions:
            raise KafkaError(3, f"{topic!r} has no partition {partition}")
        ts = _time_ns() // 1_000_000 if timestamp is None else int(timestamp)
        tp = (topic, partition)
        ps = self._parts.get(tp)
        if ps is None:
            ps = self._parts[tp] = _PartitionState(1 if self.idempotent else self.max_in_flight)
        q = ps.queue
        if q:
            batch = q[-1]
            index = batch.add(key, value, headers, ts, need)
            if index >= 0:
                self._memory_used += need
                if sticky:
                    self._sticky_batch[topic] = batch
                return DeliveryHandle(batch, index, ts)
            # The batch just filled up: the sender may take it now (the next send yields), and
            # keyless records move to another partition (KIP-480), starting with this one.
            self._wakeup.set()
            self._sends = _YIELD_EVERY
            if sticky:
                self._partitioner.sticky.batch_closed(topic, partition, partitions, available)
                nxt = self._partitioner.sticky.partition(topic, partitions, available)
                if nxt != partition:
                    return self._append(topic, info, nxt, key, value, headers, ts, need)
        batch = ProducerBatch(topic, partition, self._topic_limits.get(topic, self._batch_limit), trio.current_time())
        index = batch.add(key, value, headers, ts, need)
        q.append(batch)
        self._incomplete.add(batch)
        self._memory_used += need
        if sticky:
            self._sticky_batch[topic] = batch
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

    # --- transactions (transactional_id=...)

    def begin(self) -> None:
        """Start a transaction: the records sent until commit() or abort() belong to it."""
        self._check_open()
        if self.transactional_id is None:
            raise ClientError("begin() needs a producer with a transactional_id")
        if self._txn is not None:
            raise ClientError("a transaction is already open")
        self._txn = Transaction(self)

    async def send_offsets(self, offsets: dict[tuple[str, int], int], group_id: str) -> None:
        """Commit consumer offsets {(topic, partition): next offset} of `group_id` as part of the
        open transaction (visible to the group when it commits)."""
        txn = self._require_txn()
        await txn.call(ApiKey.ADD_OFFSETS_TO_TXN, transactional_id=self.transactional_id,
                       producer_id=self.producer_id, producer_epoch=self.producer_epoch, group_id=group_id)
        txn.offsets_added = True
        topics: dict[str, list[tuple[int, int]]] = {}
        for (topic, partition), offset in sorted(offsets.items()):
            topics.setdefault(topic, []).append((partition, offset))
        await txn.commit_offsets(group_id, topics)

    async def commit(self) -> None:
        """Flush the transaction's records and commit it; a failed record makes it raise (then
        abort())."""
        txn = self._require_txn()
        await self.flush()
        if txn.failed is not None:
            raise KafkaError(48, f"the transaction cannot commit, a record failed: {txn.failed!r}")
        await txn.end(True)
        self._txn = None

    async def abort(self) -> None:
        """Abort the open transaction: none of its records become visible to read_committed."""
        txn = self._require_txn()
        with contextlib.suppress(Exception):
            await self.flush()  # nothing may be in flight when the abort marker is written
        await txn.end(False)
        self._txn = None

    @contextlib.asynccontextmanager
    async def transaction(self):
        """``async with producer.transaction():`` begin, commit at the end, abort on exception."""
        self.begin()
        try:
            yield self
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.abort()
            raise
        await self.commit()

    def _require_txn(self) -> Transaction:
        self._check_open()
        if self._txn is None:
            raise ClientError("no transaction is open: call begin() first")
        return self._txn

    async def _init_producer_id(self) -> None:
        last: BaseException | None = None
        for attempt in range(20):
            try:
                conn = await self.cluster.any_connection()
                b = conn.make(ApiKey.INIT_PRODUCER_ID)
                if self.transactional_id is not None:  # the transaction coordinator answers
                    conn = await self.cluster.connection(await self.cluster.coordinator(self.transactional_id, 1))
                    b = conn.make(ApiKey.INIT_PRODUCER_ID)
                resp = await conn.request(b(transactional_id=self.transactional_id,
                                            transaction_timeout=self.transaction_timeout_ms))
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
        urgent = self._flushing or self._closing or self._exhausted
        for tp, ps in self._parts.items():
            q = ps.queue
            if not q:
                continue
            if ps.recovering:
                if ps.in_flight:
                    continue
                ps.recovering = False
            if ps.in_flight >= ps.window:
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
                        if self._txn is not None and not self._txn.registered(tp):
                            # AddPartitionsToTxn first: the broker refuses a transactional batch
                            # for a partition the transaction does not have
                            self._txn.register(tp)
                            continue
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
                            b.seal(self.codec, self.producer_id, self.producer_epoch, seq, self._txn is not None)
                            b.holes_seen = len(ps.holes)
                        elif b.holes_seen != len(ps.holes):
                            self._resequence(ps, b)
                        ps.in_flight += 1
                        batches.append(b)
                        size += len(b.raw)
                        # a partition with more ready batches can go again in the next request
                        if ps.queue and ps.in_flight < ps.window and not ps.recovering and (
                            ps.queue[0].closed or len(ps.queue) > 1 or self._flushing or self._closing or self._exhausted
                        ):
                            rest.append((tp, ps))
                    items = rest
                    if not batches:
                        break
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
            if self._txn is not None:
                self._txn.failed = self._txn.failed or error  # the transaction can only abort
        else:
            b.complete(base_offset, log_append_time, log_start_offset)
        b.closed = True  # an expired or failed batch takes no more records
        root = b.root
        if root is not None:
            # a piece of a split batch: the batch (what the handles and flush wait on) is done
            # when all its pieces are
            if root.done.is_set() or not all(p.done.is_set() for p in root.pieces):
                return
            root.closed = True
            root.error = next((p.error for p in root.pieces if p.error is not None), None)
            root.done.set()
            b = root
        self._incomplete.discard(b)
        self._memory_used -= b.est
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

    # --- batches the broker refuses
    #
    # MESSAGE_TOO_LARGE (the batch exceeds the topic's max.message.bytes): the batch is split and
    # its pieces sent in its place, recursively, until a piece of one record is still too large,
    # which then fails that record alone (MessageTooLargeError). The pieces keep the batch's
    # sequence range, so with idempotence nothing after it moves. The topic's later batches are
    # cut to its max.message.bytes, asked for once with DescribeConfigs (until the answer: to
    # half the refused size), so the refusal costs one round trip once, not on every batch.
    #
    # A sequenced batch refused for good leaves a hole in its partition's sequence: the broker
    # would answer every later batch OUT_OF_ORDER_SEQUENCE_NUMBER. The next new batch reuses the
    # hole, and batches sealed before the hole (queued or in flight; those come back out of
    # order) move down by its count before they are sent again.

    def _split(self, ps: _PartitionState, b: ProducerBatch) -> None:
        topic = b.topic
        limit = self._topic_limits.get(topic, self._batch_limit)
        self._topic_limits[topic] = max(HEADER_SIZE + 64, min(limit, len(b.raw) // 2))
        if topic not in self._learning and b.root is None:
            self._learning.add(topic)
            self._nursery.start_soon(self._learn_batch_limit, topic)
        limit = self._topic_limits[topic]
        records = b.decoded_records()
        # Cut to the topic's limit (each record at its longest encoding); never fewer than two
        # pieces, so a batch the limit misjudges still shrinks every time it is refused.
        groups: list[list] = []
        room = limit - HEADER_SIZE
        est = room + 1
        for rec in records:
            bound = record_bound(rec[0], rec[1], rec[2])
            if est + bound > room:
                groups.append([])
                est = 0
            groups[-1].append(rec)
            est += bound
        if len(groups) < 2:
            half = len(records) // 2
            groups = [records[:half], records[half:]]
        root = b.root if b.root is not None else b
        pieces = []
        first = b.first
        sequence = b.sequence
        for recs in groups:
            piece = ProducerBatch(topic, b.partition, b.limit, b.created)
            piece.records = recs
            piece.root = root
            piece.first = first
            piece.attempts = b.attempts
            piece.seal(self.codec, self.producer_id, self.producer_epoch, sequence, self._txn is not None)
            piece.holes_seen = b.holes_seen
            first += len(recs)
            if sequence >= 0:
                sequence = (sequence + len(recs)) % _SEQ_MOD
            pieces.append(piece)
        if root.pieces is None:
            root.pieces = pieces
            root.raw = b""  # its records live in the pieces now
        else:
            i = root.pieces.index(b)
            root.pieces[i:i + 1] = pieces
        # Back at the front of the queue in order, ahead of what was queued after the batch; later
        # batches in flight come back OUT_OF_ORDER_SEQUENCE_NUMBER and are sent after the pieces.
        q = ps.queue
        i = 0
        while i < len(q) and q[i].raw is not None and 0 <= q[i].sequence < b.sequence:
            i += 1
        for piece in reversed(pieces):
            q.insert(i, piece)
        ps.recovering = True
        # One piece at a time until the pieces are through: a piece that is refused again is
        # split again in place, so without this a later piece could be written before it (which
        # only the sequence numbers of an idempotent producer would catch).
        ps.window = 1

    async def _learn_batch_limit(self, topic: str) -> None:
        """Cut the topic's batches to its max.message.bytes (DescribeConfigs); quiet on failure:
        the limit from the refusal then stays, and further refusals keep splitting."""
        try:
            conn = await self.cluster.any_connection()
            if not conn.supports(ApiKey.DESCRIBE_CONFIGS):
                return
            b = conn.make(ApiKey.DESCRIBE_CONFIGS)
            resp = await conn.request(b(
                resources=[b("DescribeConfigsResource", resource_type=_RESOURCE_TOPIC, resource_name=topic,
                             configuration_keys=["max.message.bytes"])],
                include_synonyms=False, include_documentation=False))
            for r in resp.results:
                if r.error_code:
                    return
                for c in r.configs:
                    if c.name == "max.message.bytes" and c.value:
                        self._topic_limits[topic] = max(HEADER_SIZE + 64, min(self._batch_limit, int(c.value)))
        except (ConnectionLost, RequestTimedOut, NoBrokersAvailable, KafkaError, UnsupportedApi, ValueError):
            return
        finally:
            self._learning.discard(topic)

    def _sequence_hole(self, ps: _PartitionState, b: ProducerBatch) -> None:
        if b.holes_seen != len(ps.holes):
            self._resequence(ps, b)
        n = b.count
        ps.holes.append((b.sequence, n))
        ps.next_sequence = (ps.next_sequence - n) % _SEQ_MOD
        ps.recovering = True

    def _resequence(self, ps: _PartitionState, b: ProducerBatch) -> None:
        """Move a sealed batch down past the holes made after it was sealed (or last moved)."""
        seq = b.sequence
        for hole, n in ps.holes[b.holes_seen:]:
            if (seq - hole) % _SEQ_MOD < _SEQ_MOD // 2:  # the batch comes after the hole
                seq = (seq - n) % _SEQ_MOD
        b.holes_seen = len(ps.holes)
        if seq != b.sequence:
            b.set_sequence(seq)

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
            transactional_id=self.transactional_id,
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
                ps = self._parts[tp]
                if code == 0 or code == _DUPLICATE_SEQUENCE:
                    lat = p.log_append_time
                    lat_ms = int(lat.timestamp() * 1000) if lat is not None else -1
                    self._finish(batch, base_offset=int(p.base_offset) if code == 0 else -1,
                                 log_append_time=lat_ms, log_start_offset=int(getattr(p, "log_start_offset", -1)))
                    if not ps.queue or ps.queue[0].root is None:
                        ps.window = self.max_in_flight
                    continue
                err = KafkaError(code, getattr(p, "error_message", None))
                if code in LEADERSHIP_ERRORS:
                    refresh = True
                if code == _MESSAGE_TOO_LARGE and batch.count > 1:
                    failed_partitions.add(tp)
                    self._split(ps, batch)
                elif err.retriable or (code == _OUT_OF_ORDER_SEQUENCE and (ps.recovering or tp in failed_partitions)):
                    failed_partitions.add(tp)
                    self._retry(batch, err)
                else:
                    if batch.sequence >= 0 and code not in _SEQUENCE_ERRORS:
                        failed_partitions.add(tp)
                        self._sequence_hole(ps, batch)
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



# Retriable answers of the transaction APIs: CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS,
# COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
_TXN_RETRY = {51, 14, 15, 16}


class Transaction:
    """The producer's open transaction: partitions registered with the coordinator
    (AddPartitionsToTxn, before their first batch leaves), offsets, and the end (EndTxn)."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.partitions: set[tuple[str, int]] = set()
        self._pending: set[tuple[str, int]] = set()
        self._registering = False
        self.offsets_added = False
        self.failed: BaseException | None = None

    def registered(self, tp: tuple[str, int]) -> bool:
        return tp in self.partitions

    def register(self, tp: tuple[str, int]) -> None:
        """Have `tp` added to the transaction (in the background; the sender waits for it)."""
        self._pending.add(tp)
        if not self._registering:
            self._registering = True
            self.producer._nursery.start_soon(self._register_pending)

    async def _register_pending(self) -> None:
        p = self.producer
        try:
            while self._pending:
                batch, self._pending = sorted(self._pending), set()
                topics: dict[str, list[int]] = {}
                for topic, partition in batch:
                    topics.setdefault(topic, []).append(partition)
                try:
                    await self.call(ApiKey.ADD_PARTITIONS_TO_TXN, topics=topics)
                except Exception as exc:  # the records of these partitions cannot be sent
                    self.failed = self.failed or exc
                    for tp in batch:
                        for b in list(p._parts[tp].queue):
                            p._parts[tp].queue.remove(b)
                            p._finish(b, error=exc)
                    continue
                self.partitions.update(batch)
        finally:
            self._registering = False
            p._wakeup.set()

    async def call(self, api: int, topics: dict[str, list[int]] | None = None, **fields: Any) -> Any:
        """One request to the transaction coordinator, retried while it answers a retriable error."""
        p = self.producer
        last = 15
        for attempt in range(50):
            conn = await p.cluster.connection(await p.cluster.coordinator(p.transactional_id, 1))
            b = conn.make(api)
            if api == ApiKey.ADD_PARTITIONS_TO_TXN:
                resp = await conn.request(b(
                    v3_and_below_transactional_id=p.transactional_id, v3_and_below_producer_id=p.producer_id,
                    v3_and_below_producer_epoch=p.producer_epoch,
                    v3_and_below_topics=tuple(b("AddPartitionsToTxnTopic", name=t, partitions=tuple(ps))
                                              for t, ps in (topics or {}).items())))
                codes = [int(r.partition_error_code) for t in resp.results_by_topic_v3_and_below
                         for r in t.results_by_partition]
                code = next((c for c in codes if c and c != 55), 0)  # 55: not attempted
            else:
                resp = await conn.request(b(**fields))
                code = int(resp.error_code)
            if code == 0:
                return resp
            last = code
            if code not in _TXN_RETRY:
                raise KafkaError(code, "transaction")
            await trio.sleep(p.retry_backoff * min(attempt + 1, 10))
        raise KafkaError(last, "transaction")

    async def commit_offsets(self, group_id: str, topics: dict[str, list[tuple[int, int]]]) -> None:
        p = self.producer
        for attempt in range(50):
            conn = await p.cluster.connection(await p.cluster.coordinator(group_id, 0))
            b = conn.make(ApiKey.TXN_OFFSET_COMMIT)
            resp = await conn.request(b(
                transactional_id=p.transactional_id, group_id=group_id, producer_id=p.producer_id,
                producer_epoch=p.producer_epoch, generation_id=-1, member_id="", group_instance_id=None,
                topics=tuple(b("TxnOffsetCommitRequestTopic", name=t, partitions=tuple(
                    b("TxnOffsetCommitRequestPartition", partition_index=part, committed_offset=off,
                      committed_leader_epoch=-1, committed_metadata="") for part, off in parts))
                    for t, parts in topics.items())))
            codes = [int(x.error_code) for t in resp.topics for x in t.partitions]
            code = next((c for c in codes if c), 0)
            if code == 0:
                return
            if code not in _TXN_RETRY:
                raise KafkaError(code, "TxnOffsetCommit")
            await trio.sleep(p.retry_backoff * min(attempt + 1, 10))
        raise KafkaError(code, "TxnOffsetCommit")

    async def end(self, commit: bool) -> None:
        p = self.producer
        if not self.partitions and not self.offsets_added:
            return  # nothing was added: the coordinator has no transaction to end
        await self.call(ApiKey.END_TXN, transactional_id=p.transactional_id, producer_id=p.producer_id,
                        producer_epoch=p.producer_epoch, committed=commit)
