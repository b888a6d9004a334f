"""Fetch from a follower replica (replica_id >= 0), answered by the leader.

Unlike a consumer's fetch it reads up to the log end (not the high watermark), and its
fetch_offset is the follower's log end: the leader records it (ISR membership, the high
watermark) before reading. Per partition: NOT_LEADER_OR_FOLLOWER when this broker does not lead
it, FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH when the follower's current_leader_epoch is older /
newer than ours, OFFSET_OUT_OF_RANGE outside [log start, log end]. The response is framed by the
consumer fetch's encoder (records by sendfile); its high watermark is the follower's.
"""
from __future__ import annotations

from typing import Any

import trio
from kio.schema.errors import ErrorCode

from ringlog.storage.errors import StorageError

from ..errors import error_code_for
from ..handlers import RawResponse, RequestContext
from ..handlers.fetch import PartitionSlice, encode_fetch
from .replica import LeaderReplication


def _read_to_log_end(s: PartitionSlice, plog: Any, offset: int, budget: int, *, first: bool) -> bool:
    """The slice's file regions from `offset`, past the high watermark up to the log end."""
    try:
        result = plog.read(offset, max(budget, 0), upper_bound=plog.log_end_offset, min_one_batch=first)
    except StorageError as exc:
        s.error = error_code_for(exc)
        return False
    s.regions, s.size = tuple(result.regions), int(result.size)
    return True


def _plan(broker: Any, request: Any, replica: int) -> tuple[list, int, bool, list]:
    manager = broker.cluster.replicas
    remaining = int(request.max_bytes) if int(request.max_bytes) > 0 else 0x7FFFFFFF
    total = 0
    any_error = False
    topics = []
    parts_seen = []
    for topic in request.topics:
        slices = []
        for p in topic.partitions:
            s = PartitionSlice(int(p.partition))
            slices.append(s)
            part = broker.partition(topic.topic, s.index)
            role = part.replication if part is not None else None
            if not isinstance(role, LeaderReplication):
                s.error = ErrorCode.not_leader_or_follower if part is not None else ErrorCode.unknown_topic_or_partition
                any_error = True
                continue
            current = int(getattr(p, "current_leader_epoch", -1))
            if current >= 0 and current != role.epoch:
                s.error = ErrorCode.fenced_leader_epoch if current < role.epoch else ErrorCode.unknown_leader_epoch
                any_error = True
                continue
            parts_seen.append(part)
            plog = part.log
            offset = int(p.fetch_offset)
            s.log_start_offset = plog.log_start_offset
            if offset < plog.log_start_offset or offset > plog.log_end_offset:
                s.high_watermark = s.last_stable_offset = part.high_watermark
                s.error = ErrorCode.offset_out_of_range
                any_error = True
                continue
            manager.follower_fetched(part, replica, offset)
            s.high_watermark = s.last_stable_offset = part.high_watermark
            budget = min(int(p.partition_max_bytes), remaining)
            if offset >= plog.log_end_offset or (budget <= 0 and total > 0):
                continue
            if not _read_to_log_end(s, plog, offset, budget, first=(total == 0)):
                any_error = True
                continue
            total += s.size
            remaining -= s.size
        topics.append((topic.topic, slices))
    return topics, total, any_error, parts_seen


async def replica_fetch(ctx: RequestContext, request: Any) -> RawResponse:
    broker = ctx.broker
    replica = int(request.replica_id)
    deadline = trio.current_time() + max(0.0, request.max_wait.total_seconds())
    hw_seen = None
    while True:
        topics, total, any_error, parts = _plan(broker, request, replica)
        hws = [s.high_watermark for _, slices in topics for s in slices]
        # answer at once when there are records, an error, the deadline, or a new high
        # watermark the follower has not seen (it advances its own with it)
        if total > 0 or any_error or trio.current_time() >= deadline or (hw_seen is not None and hws != hw_seen):
            break
        hw_seen = hws
        event = trio.Event()
        for part in parts:
            part.waiters.add(event)
        try:
            with trio.move_on_at(deadline):
                await event.wait()
        finally:
            for part in parts:
                part.waiters.discard(event)
    return RawResponse(encode_fetch(ctx.api_version, topics))
