"""The ingest path: per-partition bounded rings and the group-commit writer task.

Connection tasks validate a Produce request's batches and push them, as one `PendingAppend` per
partition, into that partition's `PartitionRing` (a bounded FIFO measured in bytes). One writer task
per data directory drains every non-empty ring in a round:

  1. take every pending append out of every ring (freeing ring space at once),
  2. per partition, ONE `PartitionLog.append_batches(...)` call (one write) for all of its batches,
  3. with fsync policy "always": one fsync round (flush_begin on the Trio thread, token.sync() for
     all of them in one worker thread, flush_end back here),
  4. advance the high watermark, tell the idempotent-producer state, complete the produce
     waiters and wake the fetchers waiting on the partition.

While a round is writing or syncing, new batches keep arriving in the rings, so under load one
write and one fsync cover many requests (group commit). A full ring either makes the pushing
connection wait ("block": the connection stops reading until the writer frees space) or refuses
the batch at once ("reject": the caller answers NOT_ENOUGH_REPLICAS, a retriable code every client
retries without treating the data as possibly written, with a throttle time).

Ownership: the rings belong to the Broker; the writer task is the only appender of every log and
holds `broker.log_lock` for the duration of a round.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .errors import KafkaError

if TYPE_CHECKING:
    from .core import Broker

log = logging.getLogger("ringlog.ingest")

TopicPartition = tuple[str, int]


@attrs.define(eq=False)
class PendingAppend:
    """Validated batches of one partition from one request, waiting to be written."""

    tp: TopicPartition
    batches: list[bytearray]
    headers: list[Any]
    size: int
    done: trio.Event = attrs.field(factory=trio.Event)
    infos: list[Any] | None = None
    error: BaseException | None = None

    def finish(self, infos: list[Any] | None = None, error: BaseException | None = None) -> None:
        self.infos = infos
        self.error = error
        self.done.set()


@attrs.define(eq=False)
class PartitionRing:
    """Bounded FIFO of pending appends for one partition; `used` counts bytes."""

    capacity: int
    queue: collections.deque[PendingAppend] = attrs.field(factory=collections.deque)
    used: int = 0
    space: trio.Event = attrs.field(factory=trio.Event)

    def fits(self, size: int) -> bool:
        # An append bigger than the whole ring still goes in when the ring is empty, otherwise it
        # could never be written (message.max.bytes may exceed the ring size).
        return self.used + size <= self.capacity or self.used == 0

    def push(self, entry: PendingAppend) -> None:
        self.queue.append(entry)
        self.used += entry.size

    def take_all(self) -> list[PendingAppend]:
        entries = list(self.queue)
        self.queue.clear()
        self.used = 0
        space, self.space = self.space, trio.Event()
        space.set()
        return entries


class RingFull(Exception):
    """The partition's ring has no room ("reject" backpressure)."""


class Ingest:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.rings: dict[TopicPartition, PartitionRing] = {}
        self._dirty: dict[TopicPartition, None] = {}
        self._wake = trio.Event()
        self._in_round = False
        self.rounds = 0
        self.rejected = 0

    def ring(self, tp: TopicPartition) -> PartitionRing:
        ring = self.rings.get(tp)
        if ring is None:
            ring = self.rings[tp] = PartitionRing(self.broker.config.ring_bytes_per_partition)
        return ring

    async def submit(self, entry: PendingAppend, *, block: bool) -> None:
        """Put `entry` into its partition's ring; wait for room (block) or raise RingFull."""
        ring = self.ring(entry.tp)
        if not ring.fits(entry.size):
            self.broker.metrics.backpressure(entry.tp, "block" if block else "reject")
        while not ring.fits(entry.size):
            if not block:
                self.rejected += 1
                raise RingFull(f"ring of {entry.tp[0]}-{entry.tp[1]} is full ({ring.used} bytes)")
            await ring.space.wait()
            ring = self.ring(entry.tp)
        ring.push(entry)
        self._dirty[entry.tp] = None
        self._wake.set()

    def drop_topic(self, topic: str) -> None:
        """Fail every pending append of `topic` (it is being deleted)."""
        for tp in [tp for tp in self.rings if tp[0] == topic]:
            ring = self.rings.pop(tp)
            self._dirty.pop(tp, None)
            for entry in ring.take_all():
                self._abort(entry, KafkaError(_unknown_tp(), f"topic {topic!r} was deleted"))

    def _abort(self, entry: PendingAppend, error: BaseException) -> None:
        for header in entry.headers:
            self.broker.producer_state.abort(entry.tp, header)
        entry.finish(error=error)

    @property
    def pending(self) -> bool:
        return bool(self._dirty)

    async def wait_idle(self) -> None:
        """Until every ring is empty and no round is running."""
        # Only used at shutdown, so a short poll is simpler than another event.
        while self._dirty or self._in_round:
            await trio.sleep(0.005)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: group-commit rounds until cancelled."""
        task_status.started()
        while True:
            if not self._dirty:
                await self._wake.wait()
            self._wake = trio.Event()
            self._in_round = True
            try:
                await self.commit_round()
            finally:
                self._in_round = False

    async def commit_round(self) -> None:
        broker = self.broker
        async with broker.log_lock:
            work: list[tuple[TopicPartition, Any, list[PendingAppend]]] = []
            for tp in list(self._dirty):
                ring = self.rings.get(tp)
                entries = ring.take_all() if ring is not None else []
                if entries:
                    work.append((tp, broker.partition_log(*tp), entries))
            self._dirty.clear()
            if not work:
                return
            self.rounds += 1
            broker.metrics.commit_round(sum(len(e.batches) for _, _, entries in work for e in entries))
            now = broker.now_ms()
            written: list[tuple[TopicPartition, Any, list[PendingAppend], list[Any], int]] = []
            for tp, plog, entries in work:
                if plog is None:
                    for entry in entries:
                        self._abort(entry, KafkaError(_unknown_tp(), f"{tp[0]}-{tp[1]} does not exist"))
                    continue
                batches = [b for entry in entries for b in entry.batches]
                start = plog.log_end_offset
                try:
                    infos = plog.append_batches(batches, now_ms=now)
                except Exception as exc:  # storage rolled back: nothing of this round is visible
                    log.error("append to %s-%d failed: %r", tp[0], tp[1], exc)
                    broker.metrics.storage_failed("append", exc)
                    for entry in entries:
                        self._abort(entry, exc)
                    continue
                written.append((tp, plog, entries, list(infos), start))
            sync_error: BaseException | None = None
            always = [w[1] for w in written if w[1].config.flush_policy == "always"]
            if always:
                sync_error = await self._fsync(always)
            for tp, plog, entries, infos, start in written:
                state = broker.partition_state(*tp)
                if sync_error is not None and plog.config.flush_policy == "always":
                    # Written but not durable: the client must not take it as acknowledged, and
                    # the bytes must go, or the high watermark would expose them and a retry of
                    # the same batches would store them twice.
                    self._undo(tp, plog, start)
                    for entry in entries:
                        self._abort(entry, sync_error)
                else:
                    pos = 0
                    for entry in entries:
                        mine = infos[pos : pos + len(entry.batches)]
                        pos += len(entry.batches)
                        for header, info in zip(entry.headers, mine):
                            broker.producer_state.update(tp, header, info)
                        entry.finish(infos=mine)
                    broker.metrics.appended(tp, entries, infos)
                if state is not None:
                    # min(): a failed cut-back must not expose unacknowledged batches.
                    end = plog.log_end_offset
                    if sync_error is not None and plog.config.flush_policy == "always":
                        end = min(end, start)
                    state.high_watermark = end
                    state.notify()

    def _undo(self, tp: TopicPartition, plog: Any, start: int) -> None:
        """Cut a round's unacknowledged batches off the log after its fsync failed."""
        try:
            plog.truncate_to(start)
        except Exception as exc:
            # The bytes stay but the high watermark does not move past them (see below), so no
            # consumer sees them before a restart's recovery decides what is intact.
            log.critical("could not cut %s-%d back to offset %d after a failed fsync: %r", tp[0], tp[1], start, exc)

    async def _fsync(self, plogs: list[Any]) -> BaseException | None:
        tokens = [(plog, plog.flush_begin()) for plog in plogs]

        def sync_all() -> BaseException | None:
            for _, token in tokens:
                try:
                    token.sync()
                except BaseException as exc:  # reported to every waiter of the round
                    return exc
            return None

        started = time.perf_counter()
        error = await trio.to_thread.run_sync(sync_all)
        self.broker.metrics.fsync(time.perf_counter() - started, error)
        for plog, token in tokens:
            try:
                plog.flush_end(token)
            except Exception as exc:
                error = error or exc
        if error is not None:
            log.error("fsync failed: %r", error)
        return error


def _unknown_tp():
    from kio.schema.errors import ErrorCode

    return ErrorCode.unknown_topic_or_partition
