"""Fetch (1) v4-12, answered with a hand-framed response whose record bytes are sent with sendfile.

Rules (Kafka's, KIP-74):
  * each partition's slice starts at the batch holding fetch_offset and ends at the high watermark
    (isolation_level read_committed: at the last stable offset, and the aborted transactions that
    overlap the slice are listed) and the byte budget: min(partition_max_bytes,
    what is left of the request's max_bytes);
  * the first partition that has data gets at least one whole batch even above both limits;
    later partitions only get what fits (their first batch cut -> an empty set);
  * min_bytes / max_wait long-poll: if fewer than min_bytes are available and no partition has an
    error, wait until a commit touches one of the partitions (PartitionState waiters, woken by the
    writer task) or max_wait passes, then answer with what there is;
  * fetch sessions (KIP-227) are broker.fetch_sessions': a full fetch lists exactly the requested
    partitions in request order; an incremental one reads the session's partitions and lists
    those with something new;
  * empty record sets are length 0, never null.
  * client quotas (broker.quotas, when a consumer_byte_rate is set anywhere): max_bytes is cut
    to what the client's quota lets through in one window; after the long poll the answer's
    record bytes are counted, and over the quota the answer lists no partition, carries
    throttle_time_ms, counts nothing, and mutes the connection (Kafka's throttled answer; an
    incremental session moves to its next epoch).

Response layout (v4-12; "flex" = v12: compact arrays/strings are uvarint N+1, tagged-field sections
are one 0 byte)::

    throttle_time_ms i32 | [v7+] error_code i16, session_id i32
    | topics: array of
        name string
        | partitions: array of
            partition_index i32 | error_code i16 | high_watermark i64 | last_stable_offset i64
            | [v5+] log_start_offset i64 | aborted_transactions array of (producer_id i64,
              first_offset i64 | [flex] tagged fields), empty for read_uncommitted
            | [v11+] preferred_read_replica i32 (-1)
            | records: i32 length (flex: uvarint length+1) then the bytes, straight from the segment
              files | [flex] tagged fields
        | [flex] tagged fields
    | [flex] tagged fields
"""
from __future__ import annotations

import struct
from typing import Any

import attrs
import trio
from kio.schema.errors import ErrorCode

from ringlog.client.wire import write_unsigned_varint

from ringlog.storage.errors import OffsetOutOfRangeError, StorageError

from .. import fetch_sessions
from ..errors import error_code_for
from ..quotas import CONSUMER_BYTE_RATE
from ..security import authorizer as acl
from . import RawResponse, RequestContext, handler

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_PART_FIXED = struct.Struct(">ihqq")  # partition_index, error_code, high_watermark, last_stable_offset
_I64 = struct.Struct(">q")
_ABORTED = struct.Struct(">qq")  # producer_id, first_offset


@attrs.define
class PartitionSlice:
    index: int
    error: ErrorCode = ErrorCode.none
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    regions: tuple = ()
    size: int = 0
    aborted: tuple = ()  # (producer id, first offset) of aborted transactions (read_committed)


def plan_fetch(broker: Any, request: Any, denied: frozenset[str] = frozenset(), max_bytes: int | None = None
               ) -> tuple[list[tuple[str, list[PartitionSlice]]], int, bool]:
    """Read every requested partition's slice; (topics, total bytes, any error). Topics in
    `denied` (no READ) get TOPIC_AUTHORIZATION_FAILED; `max_bytes` lowers the request's."""
    remaining = int(request.max_bytes) if request.max_bytes is not None else 0x7FFFFFFF
    if remaining <= 0:
        remaining = 0x7FFFFFFF
    if max_bytes is not None:
        remaining = min(remaining, max_bytes)
    total = 0
    any_error = False
    topics = []
    # isolation_level 1 (read_committed): stop at the last stable offset, list aborted transactions
    committed = int(getattr(request, "isolation_level", 0)) == 1
    for topic in request.topics:
        name = topic.topic
        info = broker.metadata.get(name)
        parts = []
        for p in topic.partitions:
            s = PartitionSlice(int(p.partition))
            parts.append(s)
            part = broker.partition(name, s.index) if info is not None and s.index < info.partitions else None
            if name in denied:
                s.error = ErrorCode.topic_authorization_failed
                any_error = True
                continue
            if part is None:
                s.error = ErrorCode.unknown_topic_or_partition
                any_error = True
                continue
            if broker.cluster is not None and (code := broker.cluster.leader_error(part)) is not None:
                s.error = code  # cluster mode: consumers read from the leader
                any_error = True
                continue
            plog = part.log
            hwm = part.high_watermark
            s.high_watermark = hwm
            s.last_stable_offset = upper = part.last_stable_offset
            if not committed:
                upper = hwm
            s.log_start_offset = plog.log_start_offset
            offset = int(p.fetch_offset)
            if offset < plog.log_start_offset or offset > plog.log_end_offset:
                s.error = ErrorCode.offset_out_of_range
                any_error = True
                continue
            budget = min(int(p.partition_max_bytes), remaining)
            if offset >= upper or (budget <= 0 and total > 0):
                continue
            try:
                result = part.read(offset, max(budget, 0), min_one_batch=(total == 0), read_committed=committed)
            except OffsetOutOfRangeError:
                s.error = ErrorCode.offset_out_of_range
                any_error = True
                continue
            except StorageError as exc:
                s.error = error_code_for(exc)
                any_error = True
                continue
            s.regions = tuple(result.regions)
            if committed and result.size:
                s.aborted = tuple((a.producer_id, a.first_offset) for a in part.aborted_transactions(offset, upper))
            s.size = int(result.size)
            total += s.size
            remaining -= s.size
        topics.append((name, parts))
    return topics, total, any_error


def encode_fetch(version: int, topics: list[tuple[str, list[PartitionSlice]]], *, throttle_ms: int = 0,
                 error: int = 0, session_id: int = 0) -> list[Any]:
    """The response body as chunks: bytes and the storage file regions, in order."""
    flex = version >= 12
    chunks: list[Any] = []
    buf = bytearray(_I32.pack(throttle_ms))
    if version >= 7:
        buf += _I16.pack(error) + _I32.pack(session_id)
    buf += _array_len(len(topics), flex)
    for name, parts in topics:
        raw = name.encode("utf-8")
        buf += (write_unsigned_varint(len(raw) + 1) if flex else _I16.pack(len(raw))) + raw
        buf += _array_len(len(parts), flex)
        for s in parts:
            buf += _PART_FIXED.pack(s.index, int(s.error), s.high_watermark, s.last_stable_offset)
            if version >= 5:
                buf += _I64.pack(s.log_start_offset)
            buf += _array_len(len(s.aborted), flex)  # aborted transactions (read_committed)
            for producer_id, first_offset in s.aborted:
                buf += _ABORTED.pack(producer_id, first_offset) + (b"\x00" if flex else b"")
            if version >= 11:
                buf += _I32.pack(-1)  # preferred read replica
            buf += write_unsigned_varint(s.size + 1) if flex else _I32.pack(s.size)
            if s.size:
                chunks.append(bytes(buf))
                buf = bytearray()
                chunks.extend(s.regions)
            if flex:
                buf += b"\x00"
        if flex:
            buf += b"\x00"
    if flex:
        buf += b"\x00"
    chunks.append(bytes(buf))
    return chunks


def _quota_throttle(ctx: RequestContext, total: int) -> int:
    """Count an answer's record bytes against the client's consumer_byte_rate. Over the quota:
    the bytes are taken back (the answer will carry none, as in Kafka), the connection is muted,
    and the throttle time is returned."""
    quotas = ctx.broker.quotas
    now = ctx.now_ms()
    throttle_ms = quotas.record(CONSUMER_BYTE_RATE, ctx.principal, ctx.client_id, total, now)
    if throttle_ms:
        quotas.unrecord(CONSUMER_BYTE_RATE, ctx.principal, ctx.client_id, total, now)
        ctx.broker.metrics.throttled(CONSUMER_BYTE_RATE, throttle_ms)
        ctx.throttle(throttle_ms)
    return throttle_ms


def _array_len(n: int, flex: bool) -> bytes:
    return write_unsigned_varint(n + 1) if flex else _I32.pack(n)


@handler(api_key=1, min_version=4, max_version=12)
async def fetch(ctx: RequestContext, request) -> RawResponse:
    broker = ctx.broker
    follower_denied = False
    if broker.cluster is not None and int(request.replica_id) >= 0:
        # a follower's fetch (cluster mode); Kafka asks ClusterAction on the cluster for it and
        # answers every partition TOPIC_AUTHORIZATION_FAILED without
        if ctx.authorize(acl.CLUSTER_ACTION, acl.CLUSTER, acl.CLUSTER_NAME):
            from ..cluster.replica_fetch import replica_fetch

            return await replica_fetch(ctx, request)
        follower_denied = True
    # fetch sessions (KIP-227, broker.fetch_sessions): which partitions this request reads
    sessions = fetch_sessions.cache_for(broker)
    session_plan = sessions.begin(request, ctx.api_version)
    if session_plan.error:
        return RawResponse(encode_fetch(ctx.api_version, [], error=int(session_plan.error)),
                           error_code=int(session_plan.error))
    request = session_plan.view(request)
    max_wait_s = max(0.0, request.max_wait.total_seconds())
    min_bytes = max(1, int(request.min_bytes))
    deadline = trio.current_time() + max_wait_s
    denied = (frozenset(t.topic for t in request.topics) if follower_denied
              else ctx.denied(acl.READ, acl.TOPIC, (t.topic for t in request.topics)))
    quota_bytes = None
    if broker.quotas.fetch_on:
        # Kafka: no more than the quota lets through in one window, or the answer would be
        # throttled whatever came before it
        quota_bytes = broker.quotas.max_bytes_in_window(CONSUMER_BYTE_RATE, ctx.principal, ctx.client_id)
        if quota_bytes is not None:
            min_bytes = min(min_bytes, quota_bytes)
    while True:
        topics, total, any_error = plan_fetch(broker, request, denied, quota_bytes)
        if total >= min_bytes or any_error or trio.current_time() >= deadline:
            break
        # Long-poll: one event registered with every requested partition; the writer sets it on
        # the next commit to any of them (no polling).
        event = trio.Event()
        states = []
        for topic in request.topics:
            for p in topic.partitions:
                part = broker.partition(topic.topic, int(p.partition))
                if part is not None:
                    part.waiters.add(event)
                    states.append(part)
        if not states:
            with trio.move_on_at(deadline):
                await trio.sleep_forever()
        else:
            try:
                with trio.move_on_at(deadline):
                    await event.wait()
            finally:
                for state in states:
                    state.waiters.discard(event)
    if quota_bytes is not None:  # client quotas (broker.quotas)
        throttle_ms = _quota_throttle(ctx, total)
        if throttle_ms:
            # Kafka's throttled answer: no partitions, the session kept (its epoch moves on)
            return RawResponse(encode_fetch(ctx.api_version, [], throttle_ms=throttle_ms,
                                            session_id=sessions.throttled(session_plan)))
    topics, session_id = sessions.finish(session_plan, topics)
    return RawResponse(encode_fetch(ctx.api_version, topics, session_id=session_id),
                       error_code=broker.metrics.fetched(topics))
