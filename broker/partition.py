"""One topic-partition served by this broker: the role of Kafka's Partition and UnifiedLog.

A `Partition` owns everything that is per partition on the broker:

  log               the storage PartitionLog (segments on disk)
  high_watermark    offsets below it are committed: written (and fsynced under fsync=always) and
                    visible to consumers
  ring              the bounded queue of validated batches waiting for the writer (broker.ingest)
  producers         the idempotent-producer state (broker.idempotence.PartitionProducerState)
  waiters           the long-polling fetches to wake on the next commit
  leader_epoch      0 on a single node; replication bumps it on every leader change

Its methods are the two halves of the produce path and the read path:

  connection task   check_producers(headers) -> verdict, abort_producers(headers),
                    await submit(entry, block=...)   (may wait for ring space or raise RingFull)
  writer task       take_pending(), write(entries, now_ms) -> (start, infos),
                    record_producers(...) + complete(...) (= acknowledge), fail(...), undo(start),
                    advance(end)   (broker.ingest.Writer drives these)
  fetch             read(offset, max_bytes, ...) up to the high watermark, wait_for_data()

Everything runs on the broker's Trio thread and nothing here awaits except `submit` and
`wait_for_data`; file work (segment creation, checkpoints, snapshots) is the writer's to move to
worker threads. A follower replica would be a Partition whose appends come from fetching the
leader instead of `submit`, and whose high watermark the leader sends: the split between
write / acknowledge / advance is where that fits.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio
from kio.schema.errors import ErrorCode

from .errors import KafkaError
from .idempotence import DuplicateBatch, PartitionProducerState

if TYPE_CHECKING:
    from ringlog.storage.log import AppendInfo, PartitionLog, ReadResult

    from .ingest import PendingAppend, PartitionRing, Writer


class Partition:
    __slots__ = ("topic", "index", "tp", "log", "ring", "producers", "high_watermark", "leader_epoch",
                 "waiters", "closed", "_writer", "replication")

    def __init__(self, topic: str, index: int, log: PartitionLog, producers: PartitionProducerState,
                 ring: PartitionRing, writer: Writer) -> None:
        self.topic = topic
        self.index = index
        self.tp = (topic, index)
        self.log = log
        self.ring = ring
        self.producers = producers
        # On a single node everything in the log is committed once written: start-up recovery
        # has already cut what was not durable.
        self.high_watermark = log.log_end_offset
        self.leader_epoch = 0
        self.waiters: set[trio.Event] = set()
        self.closed = False
        self._writer = writer
        # Cluster mode (broker.cluster.replica): this replica's role, None on a single node.
        self.replication: Any = None

    def __repr__(self) -> str:
        return f"<Partition {self.topic}-{self.index} hwm={self.high_watermark}>"

    @property
    def config(self) -> Any:
        return self.log.config

    # --- the produce path: connection task --------------------------------------------------------

    def check_producers(self, headers: Sequence[Any]) -> None | ErrorCode | DuplicateBatch:
        """Every batch's idempotence check, in order: None to accept them all, an ErrorCode to
        refuse the request's batches, or a DuplicateBatch (answer with its offset, append nothing).
        On a refusal the batches checked before the refused one are forgotten again."""
        for i, header in enumerate(headers):
            if header.producer_id < 0:
                continue
            verdict = self.producers.check(header)
            if verdict is not None:
                self.abort_producers(headers[:i])
                if isinstance(verdict, int) and not isinstance(verdict, ErrorCode):
                    verdict = ErrorCode(verdict)
                return verdict
        return None

    def abort_producers(self, headers: Sequence[Any]) -> None:
        """Checked batches that will not be written after all (refused, ring full, cancelled)."""
        for header in headers:
            self.producers.abort(header)

    async def submit(self, entry: PendingAppend, *, block: bool) -> None:
        """Queue validated, checked batches for the writer; wait for ring space ("block") or
        raise ingest.RingFull ("reject"). KafkaError if the partition is deleted meanwhile."""
        await self._writer.submit(self, entry, block=block)

    # --- the writer's half --------------------------------------------------------------------------

    def take_pending(self) -> list[PendingAppend]:
        return self.ring.take_all()

    def write(self, entries: Sequence[PendingAppend], now_ms: int) -> tuple[int, list[AppendInfo]]:
        """Append every batch of `entries` with one write: (old log end, one AppendInfo a batch).
        Raises what storage raises; storage has then rolled back, nothing is visible."""
        start = self.log.log_end_offset
        batches = [b for entry in entries for b in entry.batches]
        if self.replication is not None:
            self.replication.stamp(batches)  # the leader epoch, for the followers' truncation
        return start, list(self.log.append_batches(batches, now_ms=now_ms))

    def acknowledge(self, entries: Sequence[PendingAppend], infos: Sequence[AppendInfo]) -> None:
        """The written batches are durable as the policy asks: record them in the producer state
        and complete their produce requests (record_producers, then complete)."""
        self.record_producers(entries, infos)
        self.complete(entries, infos)

    def record_producers(self, entries: Sequence[PendingAppend], infos: Sequence[AppendInfo]) -> None:
        pos = 0
        for entry in entries:
            for header, info, batch in zip(entry.headers, infos[pos : pos + len(entry.batches)], entry.batches):
                self.producers.update(header, info, batch)
            pos += len(entry.batches)

    def complete(self, entries: Sequence[PendingAppend], infos: Sequence[AppendInfo]) -> None:
        pos = 0
        for entry in entries:
            entry.finish(infos=list(infos[pos : pos + len(entry.batches)]))
            pos += len(entry.batches)

    def fail(self, entries: Sequence[PendingAppend], error: BaseException) -> None:
        for entry in entries:
            self.abort_producers(entry.headers)
            entry.finish(error=error)

    def undo(self, start: int) -> None:
        """Cut the log back to `start` (a round whose fsync failed); raises what storage raises."""
        self.log.truncate_to(start)
        self.producers.txns.truncate_tail(start)

    def advance(self, end: int) -> None:
        """Move the high watermark to `end` and wake the fetches waiting here."""
        if self.replication is not None:
            # a replicated partition commits what its in-sync replicas hold, not what it wrote
            end = self.replication.high_watermark(self, end)
        self.high_watermark = end
        self.notify()

    # --- reading ------------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, min_one_batch: bool = True,
             read_committed: bool = False) -> ReadResult:
        """File regions of the committed batches from `offset` (never past the high watermark,
        nor past the last stable offset for read_committed)."""
        upper = self.last_stable_offset if read_committed else self.high_watermark
        return self.log.read(offset, max_bytes, upper_bound=upper, min_one_batch=min_one_batch)

    # --- transactions (broker.txn.partition_state) ------------------------------------------------

    @property
    def last_stable_offset(self) -> int:
        """First offset of the earliest open transaction, or the high watermark."""
        return self.producers.txns.last_stable_offset(self.high_watermark)

    def aborted_transactions(self, start: int, end: int) -> list:
        """Aborted transactions overlapping [start, end), for read_committed fetches."""
        return self.producers.txns.aborted_between(start, end)

    def notify(self) -> None:
        waiters, self.waiters = self.waiters, set()
        for event in waiters:
            event.set()

    # --- end of life --------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """The partition is gone (topic deleted): fail what waits in the ring, wake the fetchers."""
        self.closed = True
        self.fail(self.ring.take_all(), KafkaError(ErrorCode.unknown_topic_or_partition, reason))
        self.notify()
