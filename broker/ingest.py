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

Ownership: each ring belongs to its broker.partition.Partition; the writer task is the only
appender of every log and holds `broker.log_lock` for the duration of a round. File work of a
round other than the append and the fsync (creating the next segment on a roll, checkpoints,
producer-state snapshots) runs in worker threads, so the round never blocks the Trio thread.
"""
from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio
from kio.schema.errors import ErrorCode

from .errors import KafkaError

if TYPE_CHECKING:
    from .partition import Partition

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


class Writer:
    """The group-commit writer of one data directory: a loop over the partitions with pending
    batches. It knows partitions only through their methods (broker.partition.Partition), so a
    test can drive rounds with real logs and no sockets: submit entries, `await commit_round()`.

    `lock` is the broker's log lock (held for a round); `metrics` a broker.metrics.BrokerMetrics
    or anything with its commit_round / appended / fsync / storage_failed / backpressure methods;
    `snapshots` the broker.idempotence.ProducerStateManager (None: no producer snapshots).
    """

    def __init__(self, lock: trio.Lock, metrics: Any, *, now_ms: Callable[[], int],
                 snapshots: Any = None) -> None:
        self.lock = lock
        self.metrics = metrics
        self.now_ms = now_ms
        self.snapshots = snapshots
        self._dirty: dict[Partition, None] = {}
        self._wake = trio.Event()
        self._in_round = False
        self.rounds = 0
        self.rejected = 0

    async def submit(self, partition: Partition, entry: PendingAppend, *, block: bool) -> None:
        """Put `entry` into the partition's ring; wait for room (block) or raise RingFull."""
        ring = partition.ring
        if not ring.fits(entry.size):
            self.metrics.backpressure(partition.tp, "block" if block else "reject")
        while not ring.fits(entry.size):
            if not block:
                self.rejected += 1
                raise RingFull(f"ring of {partition.topic}-{partition.index} is full ({ring.used} bytes)")
            await ring.space.wait()
        if partition.closed:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{partition.topic}-{partition.index} was deleted")
        ring.push(entry)
        self._dirty[partition] = None
        self._wake.set()

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
        async with self.lock:
            work: list[tuple[Partition, list[PendingAppend]]] = []
            for partition in list(self._dirty):
                entries = partition.take_pending()
                if entries and not partition.closed:
                    work.append((partition, entries))
            self._dirty.clear()
            if not work:
                return
            self.rounds += 1
            self.metrics.commit_round(sum(len(e.batches) for _, entries in work for e in entries))
            now = self.now_ms()
            written: list[tuple[Partition, list[PendingAppend], int, list[Any]]] = []
            for partition, entries in work:
                if partition.closed:  # deleted while an earlier partition's roll was in a thread
                    partition.fail(entries, KafkaError(ErrorCode.unknown_topic_or_partition,
                                                       f"{partition.topic}-{partition.index} was deleted"))
                    continue
                try:
                    # Offsets a round spans are at most its bytes: a bound good enough to
                    # tell whether the append will roll (it rolls no later than this says).
                    size = sum(entry.size for entry in entries)
                    if partition.log.roll_due(size, size, now):
                        await self._prepare_roll(partition)
                    else:
                        batches = sum(len(entry.batches) for entry in entries)
                        if partition.log.index_room_due(batches):
                            # the index's next blocks (fallocate) in a worker thread as well
                            await trio.to_thread.run_sync(partition.log.allocate_index_room, batches)
                    start, infos = partition.write(entries, now)
                except Exception as exc:  # storage rolled back: nothing of this round is visible
                    log.error("append to %s-%d failed: %r", partition.topic, partition.index, exc)
                    self.metrics.storage_failed("append", exc)
                    partition.fail(entries, exc)
                    continue
                written.append((partition, entries, start, infos))
            always = [w[0].log for w in written if w[0].config.flush_policy == "always"]
            sync_error = await self._fsync(always) if always else None
            durable = []
            for partition, entries, start, infos in written:
                if sync_error is not None and partition.config.flush_policy == "always":
                    # Written but not durable: the client must not take it as acknowledged, and
                    # the bytes must go, or the high watermark would expose them and a retry of
                    # the same batches would store them twice.
                    await self._undo(partition, start)
                    partition.fail(entries, sync_error)
                    # min(): a failed cut-back must not expose unacknowledged batches.
                    partition.advance(min(partition.log.log_end_offset, start))
                else:
                    partition.record_producers(entries, infos)
                    durable.append((partition, entries, infos))
            # A due producer snapshot is on disk before the produce answers that it covers (at
            # most one a partition every producer.snapshot interval, so rarely a wait at all).
            await self._snapshot([d[0] for d in durable], now)
            for partition, entries, infos in durable:
                partition.complete(entries, infos)
                self.metrics.appended(partition.tp, entries, infos)
                partition.advance(partition.log.log_end_offset)

    async def _prepare_roll(self, partition: Partition) -> None:
        """Create the next segment's files in a worker thread, so that the append that rolls
        (on the Trio thread) only switches to them and writes."""
        plog = partition.log
        plog.offer_segment(await trio.to_thread.run_sync(plog.create_next_segment))

    async def _undo(self, partition: Partition, start: int) -> None:
        """Cut a round's unacknowledged batches off the log after its fsync failed."""
        try:
            partition.undo(start)
            await run_deferred(partition.log)
        except Exception as exc:
            # The bytes stay but the high watermark does not move past them, so no consumer
            # sees them before a restart's recovery decides what is intact.
            log.critical("could not cut %s-%d back to offset %d after a failed fsync: %r",
                         partition.topic, partition.index, start, exc)

    async def _snapshot(self, partitions: list[Partition], now: int) -> None:
        manager = self.snapshots
        if manager is None:
            return
        # the interval test first: this runs every round, a snapshot at most once a minute
        interval = manager.snapshot_interval_ms
        due = [snap for p in partitions
               if now - p.producers.last_snapshot_ms >= interval and (snap := manager.snapshot_due(p, now)) is not None]
        if due:
            await trio.to_thread.run_sync(manager.write, due)

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
        self.metrics.fsync(time.perf_counter() - started, error)
        for plog, token in tokens:
            try:
                plog.flush_end(token)
            except Exception as exc:
                error = error or exc
        # The recovery-point checkpoints that crossing into a new segment asks for. A failed one
        # fails the round like a failed fsync: the batches are written, but the checkpoint that
        # makes start-up trust them is not.
        try:
            await run_deferred(*plogs)
        except Exception as exc:
            error = error or exc
        if error is not None:
            log.error("fsync failed: %r", error)
        return error


async def run_deferred(*plogs: Any) -> None:
    """Run the file work the logs' last changes left for a worker thread (checkpoint writes,
    removal of dropped segments), in one hop; the caller holds the log lock."""
    work = [job for plog in plogs if (job := plog.take_deferred_io()) is not None]
    if not work:
        return

    def run_all() -> None:
        error: BaseException | None = None
        for job in work:
            try:
                job()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    await trio.to_thread.run_sync(run_all)
