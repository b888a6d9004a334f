"""Replication of one partition: the leader's view of its followers, and the follower's fetcher.

A `broker.partition.Partition` in cluster mode carries one of two roles in `.replication`:

  LeaderReplication    the produce path stamps its leader epoch on every batch; the high watermark
                       is the smallest log end among the in-sync replicas (this one included); it
                       tracks each follower's fetch offset and when it last caught up, for ISR
                       shrink (after replica.lag.time.max.ms) and expand (caught up to the HW).
  FollowerReplication  a task fetches from the leader with Fetch (replica_id = this node, through
                       the client's wire code), appends the leader's batches as they are
                       (offsets and epochs kept, storage PartitionLog.append_replicated) and takes
                       the high watermark from the answers. Before its first fetch it asks the
                       leader OffsetForLeaderEpoch for its own newest epoch and truncates to the
                       end the leader has for it, so a replica never keeps records the new leader
                       does not have (KIP-101).

The leader-epoch cache (epoch -> first offset) of each partition is loaded when the partition
first gets a role (storage.epochs: the leader-epoch-checkpoint file, completed from the batch
headers after its last entry, in a worker thread), kept in memory, and written back (atomically,
in a worker thread) whenever it changes: a new leader epoch, a follower appending the first
batch of an epoch, a truncation.
"""
from __future__ import annotations

import logging
import struct
import time
from typing import TYPE_CHECKING, Any

import trio
from kio.schema.errors import ErrorCode

from ringlog.client.connection import ApiKey, open_connection
from ringlog.client.errors import ClientError
from ringlog.storage import epochs as epoch_file
from ringlog.storage.batch import parse_header, set_partition_leader_epoch
from ringlog.storage.errors import StorageError

from ..idempotence import PartitionProducers
from ..ingest import run_deferred
from .state import end_offset_for_epoch

if TYPE_CHECKING:
    from ..partition import Partition
    from .node import ClusterNode

log = logging.getLogger("ringlog.cluster.replica")

_BATCH_PREFIX = struct.Struct(">qi")  # baseOffset, batchLength
_LEADERSHIP = {int(ErrorCode.not_leader_or_follower), int(ErrorCode.fenced_leader_epoch),
               int(ErrorCode.unknown_leader_epoch), int(ErrorCode.leader_not_available),
               int(ErrorCode.unknown_topic_or_partition)}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FollowerProgress:
    __slots__ = ("log_end", "caught_up_ms", "last_fetch_leo", "last_fetch_ms")

    def __init__(self, now: int) -> None:
        self.log_end = -1
        self.caught_up_ms = now
        self.last_fetch_leo = -1
        self.last_fetch_ms = now


class LeaderReplication:
    def __init__(self, node_id: int, epoch: int, isr: tuple[int, ...], replicas: tuple[int, ...],
                 epoch_start: int, now: int | None = None) -> None:
        self.node_id = node_id
        self.epoch = epoch
        self.isr = set(isr)
        self.replicas = tuple(replicas)
        self.epoch_start = epoch_start  # the log end when this leader took over
        now = now_ms() if now is None else now
        self.followers = {r: FollowerProgress(now) for r in replicas if r != node_id}
        self.isr_change_pending = False

    is_leader = True

    def stamp(self, batches: list[bytearray]) -> None:
        for b in batches:
            set_partition_leader_epoch(b, self.epoch)

    def high_watermark(self, part: Partition, end: int) -> int:
        """min(log end of every ISR member); never below what it was (a leader's HW only rises)."""
        hw = min(end, part.log.log_end_offset)
        for r in self.isr:
            if r != self.node_id:
                progress = self.followers.get(r)
                hw = min(hw, progress.log_end if progress is not None and progress.log_end >= 0 else part.high_watermark)
        return max(hw, part.high_watermark)

    def fetched(self, replica: int, offset: int, leo: int, now: int) -> None:
        """A follower fetched from `offset` (= its log end) while our log end was `leo`."""
        progress = self.followers.get(replica)
        if progress is None:
            return
        progress.log_end = offset
        # Kafka's rule: caught up now if it asked for our log end; caught up as of its previous
        # fetch if it asked for at least what our log end was then.
        if offset >= leo:
            progress.caught_up_ms = now
        elif offset >= progress.last_fetch_leo:
            progress.caught_up_ms = max(progress.caught_up_ms, progress.last_fetch_ms)
        progress.last_fetch_leo = leo
        progress.last_fetch_ms = now

    def laggards(self, now: int, lag_ms: int) -> set[int]:
        return {r for r in self.isr if r != self.node_id and r in self.followers
                and now - self.followers[r].caught_up_ms > lag_ms}

    def joiners(self, hw: int) -> set[int]:
        """Followers outside the ISR whose log end reached the HW and this epoch's start."""
        return {r for r, p in self.followers.items() if r not in self.isr
                and p.log_end >= 0 and p.log_end >= hw and p.log_end >= self.epoch_start}


class FollowerReplication:
    is_leader = False

    def __init__(self, leader: int, epoch: int) -> None:
        self.leader = leader
        self.epoch = epoch
        self.scope = trio.CancelScope()
        self.fetches = 0
        self.leader_high_watermark = -1  # from the last Fetch answer (the replica-lag metric)

    def stamp(self, batches: list[bytearray]) -> None:  # a follower's writer appends nothing
        pass

    def high_watermark(self, part: Partition, end: int) -> int:
        return part.high_watermark


def whole_batches(records: bytes) -> list[bytes]:
    """The complete batches at the front of a fetched records blob (a cut last one is dropped)."""
    out = []
    pos = 0
    view = memoryview(records)
    while pos + _BATCH_PREFIX.size <= len(records):
        _, length = _BATCH_PREFIX.unpack_from(records, pos)
        size = 12 + length
        if length <= 0 or pos + size > len(records):
            break
        out.append(bytes(view[pos : pos + size]))
        pos += size
    return out


class Follower:
    """The fetch loop of one follower partition; cancelled (its scope) when the role changes."""

    def __init__(self, node: ClusterNode, part: Partition, role: FollowerReplication) -> None:
        self.node = node
        self.broker = node.broker
        self.part = part
        self.role = role

    async def run(self) -> None:
        with self.role.scope:
            backoff = 0.05
            while True:
                address = self.node.brokers.get(self.role.leader)
                if address is None:
                    await self.node.wait_changed(1.0)
                    continue
                fetches = self.role.fetches
                try:
                    await self._session(address)
                except* (ClientError, OSError, trio.TooSlowError, trio.BrokenResourceError) as group:
                    log.info("%s-%d: fetching from leader %d: %r", *self.part.tp, self.role.leader,
                             group.exceptions[0])
                except* Exception as group:  # a bug must not stop the broker: log it, try again
                    log.error("%s-%d: follower fetch failed", *self.part.tp, exc_info=group.exceptions[0])
                backoff = 0.05 if self.role.fetches > fetches else min(backoff * 2, 1.0)
                await trio.sleep(backoff)

    async def _session(self, address: tuple[str, int]) -> None:
        """One connection to the leader: truncate, then fetch until something breaks."""
        async with trio.open_nursery() as nursery:
            conn = await open_connection(nursery, address[0], address[1],
                                         client_id=f"ringlog-replica-{self.node.node_id}",
                                         request_timeout=10.0, connect_timeout=3.0)
            try:
                await self._truncate(conn)
                while await self._fetch(conn):
                    pass
            finally:
                await conn.aclose()
                nursery.cancel_scope.cancel()

    async def _truncate(self, conn: Any) -> None:
        """Cut what the leader does not have for our newest epoch (KIP-101)."""
        part = self.part
        epochs = await self.node.replicas.epochs_of(part)
        if part.log.log_end_offset == part.log.log_start_offset:
            return
        if not epochs:
            target = part.high_watermark  # batches without epochs (written by a single node)
        else:
            mine = epochs[-1][0]
            b = conn.make(ApiKey.OFFSET_FOR_LEADER_EPOCH)
            req = b(replica_id=self.node.node_id, topics=[b("OffsetForLeaderTopic", topic=part.topic, partitions=[
                b("OffsetForLeaderPartition", partition=part.index, current_leader_epoch=self.role.epoch,
                  leader_epoch=mine)])])
            resp = await conn.request(req, timeout=10.0)
            answer = resp.topics[0].partitions[0]
            if int(answer.error_code):
                raise ClientError(f"OffsetForLeaderEpoch: error {int(answer.error_code)}")
            epoch, end = int(answer.leader_epoch), int(answer.end_offset)
            if end < 0:
                target = part.high_watermark
            else:
                # our own end of that epoch: where our next epoch began
                _, own_end = end_offset_for_epoch(epochs, epoch, part.log.log_end_offset)
                target = min(end, own_end if own_end >= 0 else end)
        if target < part.log.log_end_offset:
            await self.node.replicas.truncate(part, target)

    async def _fetch(self, conn: Any) -> bool:
        part = self.part
        broker = self.broker
        cfg = broker.config
        offset = part.log.log_end_offset
        b = conn.make(ApiKey.FETCH)
        req = b(replica_id=self.node.node_id, max_wait=cfg.replica_fetch_wait_max_ms, min_bytes=1,
                max_bytes=cfg.replica_fetch_max_bytes, isolation_level=0, session_id=0, session_epoch=-1,
                topics=[b("FetchTopic", topic=part.topic, partitions=[b(
                    "FetchPartition", partition=part.index, fetch_offset=offset,
                    current_leader_epoch=self.role.epoch, log_start_offset=part.log.log_start_offset,
                    partition_max_bytes=cfg.replica_fetch_max_bytes)])],
                forgotten_topics_data=(), rack_id="")
        resp = await conn.request(req, timeout=10.0 + cfg.replica_fetch_wait_max_ms / 1000)
        p = resp.responses[0].partitions[0]
        code = int(p.error_code)
        if code in _LEADERSHIP:
            # the leader moved or has not heard of its new role yet: the watch tells us
            await self.node.wait_changed(0.2)
            return True
        if code == int(ErrorCode.offset_out_of_range):
            log.warning("%s-%d: offset %d is out of range at leader %d; truncating again",
                        *part.tp, offset, self.role.leader)
            start = int(getattr(p, "log_start_offset", -1))
            if start > offset:  # the leader deleted what we lack: start over at its log start
                await self.node.replicas.truncate(part, start, restart_at=start)
            return False
        if code:
            raise ClientError(f"Fetch from leader {self.role.leader}: error {code}")
        batches = whole_batches(p.records or b"")
        if batches:
            await self.node.replicas.append(part, batches)
        self.role.leader_high_watermark = int(p.high_watermark)
        hw = min(int(p.high_watermark), part.log.log_end_offset)
        if hw > part.high_watermark or hw < part.high_watermark and not batches:
            part.high_watermark = hw
            part.notify()
        self.role.fetches += 1
        return True


class ReplicaManager:
    """Roles of the local partitions, follower tasks, ISR shrink/expand, the epoch caches."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.broker = node.broker
        self.epochs: dict[tuple[str, int], list[tuple[int, int]]] = {}
        # ISR changes this broker wrote as leader (Kafka's IsrShrinksPerSec / IsrExpandsPerSec)
        self.isr_shrinks = 0
        self.isr_expands = 0
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._isr_checks)
            task_status.started()
            await trio.sleep_forever()

    async def epochs_of(self, part: Partition) -> list[tuple[int, int]]:
        cache = self.epochs.get(part.tp)
        if cache is None:
            async with self.broker.log_lock:
                cache = await trio.to_thread.run_sync(epoch_file.load, part.log)
            self.epochs[part.tp] = cache
        return cache

    async def _save_epochs(self, part: Partition) -> None:
        try:
            await trio.to_thread.run_sync(epoch_file.write, part.log.directory, list(self.epochs.get(part.tp, [])))
        except OSError as exc:  # the batch headers still hold the epochs: the next load rescans
            log.warning("%s-%d: writing the leader-epoch checkpoint failed: %s", *part.tp, exc)

    # --- roles -------------------------------------------------------------------------------

    async def become_leader(self, part: Partition, state: Any) -> None:
        old = part.replication
        if isinstance(old, LeaderReplication) and old.epoch == state.leader_epoch:
            for gone in old.isr - set(state.isr):
                # out of the ISR (the controller saw it die, or we shrank it): it must fetch
                # again before it can rejoin
                if gone in old.followers:
                    old.followers[gone].log_end = -1
            old.isr = set(state.isr)
            old.isr_change_pending = False
            part.advance(part.log.log_end_offset)
            return
        self._stop(part)
        self._forget_local_high_watermark(part)
        cache = await self.epochs_of(part)
        end = part.log.log_end_offset
        if not cache or cache[-1][0] < state.leader_epoch:
            cache.append((state.leader_epoch, end))
            await self._save_epochs(part)
        part.replication = LeaderReplication(self.node.node_id, state.leader_epoch, state.isr, state.replicas, end)
        part.leader_epoch = state.leader_epoch
        log.info("%s-%d: leader with epoch %d, ISR %s, log end %d", *part.tp, state.leader_epoch,
                 sorted(state.isr), end)
        part.advance(end)

    def become_follower(self, part: Partition, state: Any) -> None:
        old = part.replication
        if isinstance(old, FollowerReplication) and old.leader == state.leader and old.epoch == state.leader_epoch:
            return
        self._stop(part)
        self._forget_local_high_watermark(part)
        role = FollowerReplication(state.leader, state.leader_epoch)
        part.replication = role
        part.leader_epoch = state.leader_epoch
        part.notify()  # acks=all waits on the old role end
        if state.leader >= 0 and self._nursery is not None:
            log.info("%s-%d: follower of %d with epoch %d", *part.tp, state.leader, state.leader_epoch)
            self._nursery.start_soon(Follower(self.node, part, role).run)

    @staticmethod
    def _forget_local_high_watermark(part: Partition) -> None:
        """At a partition's first role: a single node starts with the high watermark at its log
        end, but a replica's tail may be on no other replica. Start from the log start; the ISR's
        log ends (leader) or the leader's answers (follower) move it up within a fetch."""
        if part.replication is None:
            part.high_watermark = min(part.high_watermark, part.log.log_start_offset)

    def _stop(self, part: Partition) -> None:
        old = part.replication
        if isinstance(old, FollowerReplication):
            old.scope.cancel()

    # --- the follower's log work ---------------------------------------------------------------

    async def append(self, part: Partition, batches: list[bytes]) -> None:
        plog = part.log
        async with self.broker.log_lock:
            if part.closed:
                return
            now = now_ms()
            size = sum(len(b) for b in batches)
            if plog.roll_due(size, size, now):
                plog.offer_segment(await trio.to_thread.run_sync(plog.create_next_segment))
            elif plog.index_room_due(len(batches)):
                await trio.to_thread.run_sync(plog.allocate_index_room, len(batches))
            plog.append_replicated(batches, now_ms=now)
            cache = self.epochs.setdefault(part.tp, [])
            new_epoch = False
            for raw in batches:
                header = parse_header(raw)
                part.producers.state.replay(header)  # so that a new leader de-duplicates retries
                if header.partition_leader_epoch >= 0 and (not cache or header.partition_leader_epoch > cache[-1][0]):
                    cache.append((header.partition_leader_epoch, header.base_offset))
                    new_epoch = True
            if new_epoch:
                await self._save_epochs(part)
            if part.config.flush_policy == "always":
                error = await self.broker.writer._fsync([plog])
                if error is not None:
                    raise StorageError(f"fsync of a replicated append failed: {error}")
            else:
                await run_deferred(plog)

    async def truncate(self, part: Partition, offset: int, *, restart_at: int | None = None) -> None:
        """Cut the log to `offset` and rebuild what depends on its end (producer state, epochs)."""
        async with self.broker.log_lock:
            log.warning("%s-%d: truncating from %d to %d", *part.tp, part.log.log_end_offset, offset)
            # File work (ftruncate, a new segment's files) in a worker thread, under the log lock
            # that every writer of this log takes; shielded, since once it started the log must
            # finish changing before anything else looks at it.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(part.log.truncate_to, offset)
            await run_deferred(part.log)

            end = part.log.log_end_offset
            cache = epoch_file.clip(self.epochs.get(part.tp, []), end)

            def rebuild() -> PartitionProducers:
                epoch_file.write(part.log.directory, cache)
                state = PartitionProducers()
                for header in part.log.iter_batch_headers(part.log.log_start_offset):
                    state.replay(header)
                return state

            part.producers.state = await trio.to_thread.run_sync(rebuild)
            self.epochs[part.tp] = cache
            part.high_watermark = min(part.high_watermark, part.log.log_end_offset)

    # --- the leader's side ---------------------------------------------------------------------

    def follower_fetched(self, part: Partition, replica: int, offset: int) -> None:
        role = part.replication
        if not isinstance(role, LeaderReplication):
            return
        role.fetched(replica, offset, part.log.log_end_offset, now_ms())
        part.advance(part.log.log_end_offset)
        joiners = role.joiners(part.high_watermark)
        if joiners and not role.isr_change_pending:
            self._change_isr(part, role, role.isr | joiners)

    async def _isr_checks(self) -> None:
        lag = self.broker.config.replica_lag_time_max_ms
        while True:
            await trio.sleep(min(lag / 2000, 1.0))
            now = now_ms()
            for part in list(self.broker.partitions.values()):
                role = part.replication
                if isinstance(role, LeaderReplication) and not role.isr_change_pending:
                    late = role.laggards(now, lag)
                    if late:
                        log.warning("%s-%d: replica(s) %s fell behind for %d ms; shrinking the ISR",
                                    *part.tp, sorted(late), lag)
                        self._change_isr(part, role, role.isr - late)

    def _change_isr(self, part: Partition, role: LeaderReplication, isr: set[int]) -> None:
        role.isr_change_pending = True
        assert self._nursery is not None
        self._nursery.start_soon(self._write_isr, part, role, isr)

    async def _write_isr(self, part: Partition, role: LeaderReplication, isr: set[int]) -> None:
        try:
            isr = {r for r in isr if r == self.node.node_id or r in self.node.brokers}  # never a dead one
            if isr == role.isr:
                return
            shrink = len(isr) < len(role.isr)  # (the watch may apply the new ISR before the txn returns)
            ok = await self.node.write_isr(part.tp, role.epoch, tuple(sorted(isr)))
            if ok:
                if shrink:
                    self.isr_shrinks += 1
                else:
                    self.isr_expands += 1
            if ok and part.replication is role:
                log.info("%s-%d: ISR is now %s", *part.tp, sorted(isr))
                role.isr = set(isr)
                part.advance(part.log.log_end_offset)
        except Exception as exc:  # etcd unavailable: try again at the next check
            log.warning("%s-%d: ISR change to %s failed: %r", *part.tp, sorted(isr), exc)
        finally:
            role.isr_change_pending = False

    def epoch_end(self, part: Partition, epoch: int) -> tuple[int, int]:
        cache = self.epochs.get(part.tp, [])
        role = part.replication
        if isinstance(role, LeaderReplication) and epoch == role.epoch:
            return epoch, part.log.log_end_offset
        return end_offset_for_epoch(cache, epoch, part.log.log_end_offset)
