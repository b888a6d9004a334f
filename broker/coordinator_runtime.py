"""The group coordinator on Trio: persistence, timers and waiting for deferred answers.

The state machine (broker.coordinator.state, sans-IO) decides; this layer
  1. runs each operation with the current time, under a lock so that the records of successive
     operations enter the `__consumer_offsets` ring in the order the operations were made;
  2. appends the records through the broker's ordinary ingest path (the same rings and group
     commit as any Produce, so the broker's flush policy applies: with fsync=always a commit is
     fsynced before it is acknowledged, otherwise it is in the page cache, which survives a
     process kill);
  3. finishes the outcomes in log order once their records are committed (only then do committed
     offsets become visible) and hands every reply to the request waiting for it;
  4. ticks the state machine at its next deadline (sessions, rebalance and sync timeouts,
     offsets expiry), woken early by every operation.

Start-up: the internal topic `__consumer_offsets` (offsets.topic.num.partitions partitions,
cleanup.policy=compact) is created if missing, then every partition is replayed from its log start
to its high watermark; requests meanwhile get COORDINATOR_LOAD_IN_PROGRESS. A group lives in
partition `javaHash(group) % partitions` (Kafka's placement; with one node it only spreads load).

Cluster mode (etcd): `__consumer_offsets` is a cluster topic, replicated like any other (created
in etcd by the first broker a FindCoordinator reaches, once offsets.topic.replication.factor
brokers are alive), and this runtime serves only the groups whose partition this broker leads:
  * becoming leader of partition p (epoch e): p is loading (its groups answer
    COORDINATOR_LOAD_IN_PROGRESS) while its local replica is replayed from log start to log end (a
    new leader's log is the truth), then its groups are served;
  * no longer leader: p's groups leave memory, the requests waiting on them (JoinGroup, SyncGroup)
    and the writes not yet replicated are answered NOT_COORDINATOR, and every later request for
    them is too, so clients find the new coordinator;
  * every write is acknowledged only once the partition's ISR holds it (acks=all, with
    min.insync.replicas), waiting at most offsets.commit.timeout.ms; a failure is answered with
    Kafka's mapping (GroupMetadataManager): NOT_LEADER_OR_FOLLOWER -> NOT_COORDINATOR,
    NOT_ENOUGH_REPLICAS(_AFTER_APPEND) -> COORDINATOR_NOT_AVAILABLE, REQUEST_TIMED_OUT as is.
Outcomes finish in log order per partition (an outcome waiting for one partition's ISR does not
hold up another partition's groups).

Lives outside broker/coordinator/ because that package is kept free of Trio.
"""
from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio
from kio.schema.errors import ErrorCode

from ringlog.storage.batch import split_batches, validate_batch
from ringlog.storage.records import build_batch, decode_records

from .coordinator import OFFSETS_TOPIC, CoordinatorConfig, GroupCoordinator, Outcome, lag_report
from .coordinator import records as rec
from .coordinator.consumer_group import ConsumerGroupConfig, ConsumerGroupCoordinator
from .coordinator.server_assignors import assignor_names
from .coordinator.state import PERSIST_ERROR
from .errors import KafkaError, error_code_for
from .ingest import PendingAppend
from .logging_setup import GroupChangeLog

if TYPE_CHECKING:
    from .core import Broker

log = logging.getLogger("ringlog.coordinator")

READ_CHUNK = 1 << 20
MAX_TICK_S = 1.0
LOADING, LOADED = "loading", "loaded"
LOAD_RETRY_S = 5.0


def replication_error(code: ErrorCode) -> ErrorCode:
    """The group error for a write of `__consumer_offsets` that failed with `code` (Kafka's
    mapping in GroupMetadataManager.storeOffsets / storeGroup)."""
    if code in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error):
        return ErrorCode.not_coordinator
    if code in (ErrorCode.unknown_topic_or_partition, ErrorCode.not_enough_replicas,
                ErrorCode.not_enough_replicas_after_append):
        return ErrorCode.coordinator_not_available
    if code in (ErrorCode.message_too_large, ErrorCode.record_list_too_large, ErrorCode.invalid_fetch_size):
        return ErrorCode.invalid_commit_offset_size
    # REQUEST_TIMED_OUT as is (Kafka's clients retry it at a re-found coordinator); anything else
    # as a single node answers a failed append
    return code if code == ErrorCode.request_timed_out else PERSIST_ERROR


def java_string_hash(s: str) -> int:
    """java.lang.String.hashCode over UTF-16 code units, as a signed 32-bit int."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(group_id: str, partitions: int) -> int:
    return (java_string_hash(group_id) & 0x7FFFFFFF) % partitions


def coordinator_config(config: Any) -> CoordinatorConfig:
    return CoordinatorConfig(
        group_min_session_timeout_ms=config.group_min_session_timeout_ms,
        group_max_session_timeout_ms=config.group_max_session_timeout_ms,
        group_initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        group_max_size=config.group_max_size,
        offsets_retention_ms=config.offsets_retention_minutes * 60_000,
        offsets_retention_check_interval_ms=config.offsets_retention_check_interval_ms,
        offset_metadata_max_bytes=config.offset_metadata_max_bytes,
    )


def consumer_group_config(config: Any) -> ConsumerGroupConfig:
    return ConsumerGroupConfig(
        session_timeout_ms=config.group_consumer_session_timeout_ms,
        heartbeat_interval_ms=config.group_consumer_heartbeat_interval_ms,
        max_size=config.group_consumer_max_size,
        assignors=assignor_names(config.group_consumer_assignors),
    )


@attrs.define(eq=False)
class _Waiter:
    event: trio.Event = attrs.field(factory=trio.Event)
    reply: Any = None


@attrs.define(eq=False)
class _InFlight:
    outcome: Outcome
    entries: list[PendingAppend]
    # cluster mode: set once every entry is on the ISR or failed (replication_error set then)
    replicated: bool = True
    replication_error: ErrorCode | None = None

    @property
    def partitions(self) -> set[int]:
        return {e.tp[1] for e in self.entries}

    def done(self) -> bool:
        return self.replicated and all(e.done.is_set() for e in self.entries)

    def ok(self) -> bool:
        return self.replication_error is None and all(e.error is None for e in self.entries)


class CoordinatorRuntime:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.config = coordinator_config(broker.config)
        self.num_partitions = max(1, int(broker.config.offsets_topic_num_partitions))
        self.state = GroupCoordinator(self.config, loading=True)
        self.consumer = ConsumerGroupCoordinator(self.state, consumer_group_config(broker.config))
        self._lock = trio.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._inflight: collections.deque[_InFlight] = collections.deque()
        self._wake = trio.Event()
        self.loaded = trio.Event()
        self.load_error: BaseException | None = None
        self._group_log = GroupChangeLog(log)
        self._consumer_group_log = GroupChangeLog(log)  # consumer-protocol groups: epochs as generations
        # cluster mode: offsets partition -> (LOADING | LOADED, leader epoch) for those this broker leads
        self.cluster_mode = bool(broker.config.etcd_endpoints)
        self.owned: dict[int, tuple[str, int]] = {}
        self._nursery: trio.Nursery | None = None
        self._create_lock = trio.Lock()

    # --- start-up -------------------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Create/replay `__consumer_offsets` (single node; in a cluster each partition is loaded
        when this broker becomes its leader), then drive the timers until cancelled."""
        if self.cluster_mode:
            async with trio.open_nursery() as nursery:  # partition loads, replication waits
                self._nursery = nursery
                # no partition is served until this broker leads it (on_role loads it then)
                self.state.owner = self._owner
                self.state.load_complete(self.broker.now_ms())
                self.loaded.set()
                task_status.started()
                await self._serve_timers()
            return
        task_status.started()
        try:
            await self._load()
        except Exception as exc:  # the broker keeps serving data; groups answer "not available"
            self.load_error = exc
            log.exception("loading %s failed; group coordination is unavailable", OFFSETS_TOPIC)
            raise
        finally:
            self.loaded.set()
        await self._serve_timers()

    async def _serve_timers(self) -> None:
        while True:
            # A fresh event before reading the next deadline: changes made from here on wake us,
            # earlier ones are already in next_deadline(). (Renewing it after the tick instead
            # would let the tick's own execute() wake the loop at once, forever.)
            self._wake = trio.Event()
            now = self.broker.now_ms()
            deadline = self.state.next_deadline(now)
            consumer_deadline = self.consumer.next_deadline(now)
            if consumer_deadline is not None:
                deadline = max(min(deadline, consumer_deadline), now)
            delay = (deadline - now) / 1000
            with trio.move_on_after(min(max(delay, 0), MAX_TICK_S)):
                await self._wake.wait()
            self._drain()
            await self.execute(self.state.tick)
            await self.execute(self.consumer.tick)

    async def _load(self) -> None:
        broker = self.broker
        info = broker.metadata.get(OFFSETS_TOPIC)
        if info is None:
            info = await broker.create_topic(
                # offsets.topic.segment.bytes (100 MiB like Kafka's): segments roll, and so get
                # compacted, long before the 1 GiB topic default would let them.
                OFFSETS_TOPIC,
                self.num_partitions,
                {
                    "cleanup.policy": "compact",
                    "segment.bytes": str(broker.config.offsets_topic_segment_bytes),
                },
            )
        self.num_partitions = info.partitions
        count = 0
        for p in range(info.partitions):
            open_txns: dict[int, list[rec.Record]] = {}
            records = await read_partition(broker, OFFSETS_TOPIC, p, open_txns)
            for pid, held in open_txns.items():
                self.state.pending_txn_offsets.setdefault(pid, []).extend(held)
            for key, value in records:
                try:
                    self.state.replay(key, value)
                except rec.RecordFormatError as exc:
                    log.warning("%s-%d: skipping an unreadable record: %s", OFFSETS_TOPIC, p, exc)
                count += 1
        self.state.load_complete(broker.now_ms())
        log.info("group coordinator loaded %d records: %d groups", count, len(self.state.groups))

    # --- cluster mode: which groups this broker serves ------------------------------------------

    def _owner(self, group_id: str) -> ErrorCode | None:
        cluster = self.broker.cluster
        record = cluster.topics.get(OFFSETS_TOPIC) if cluster is not None else None
        if record is None:
            return ErrorCode.not_coordinator
        status = self.owned.get(partition_for(group_id, record.partitions))
        if status is None:
            return ErrorCode.not_coordinator
        return ErrorCode.coordinator_load_in_progress if status[0] == LOADING else None

    def any_loading(self) -> bool:
        return any(status == LOADING for status, _ in self.owned.values())

    def on_role(self, partition: int, leader: bool, epoch: int) -> None:
        """The cluster gave this broker's replica of `__consumer_offsets`-`partition` a role."""
        current = self.owned.get(partition)
        if leader and current is not None and current[1] == epoch:
            return
        if current is not None:
            self._unload(partition)
        if leader:
            self.owned[partition] = (LOADING, epoch)
            assert self._nursery is not None
            self._nursery.start_soon(self._load_partition, partition, epoch)

    async def _load_partition(self, p: int, epoch: int) -> None:
        started = trio.current_time()
        while True:
            open_txns: dict[int, list[rec.Record]] = {}
            try:
                records = await read_partition(self.broker, OFFSETS_TOPIC, p, open_txns, to_log_end=True)
                break
            except Exception:  # e.g. a read error: its groups stay LOAD_IN_PROGRESS, and it is tried again
                log.exception("loading %s-%d failed; trying again in %.0f s", OFFSETS_TOPIC, p, LOAD_RETRY_S)
            await trio.sleep(LOAD_RETRY_S)
            if self.owned.get(p) != (LOADING, epoch):
                return
        async with self._lock:
            if self.owned.get(p) != (LOADING, epoch):
                return  # leadership moved on meanwhile
            for key, value in records:
                try:
                    self.state.replay(key, value)
                except rec.RecordFormatError as exc:
                    log.warning("%s-%d: skipping an unreadable record: %s", OFFSETS_TOPIC, p, exc)
            self.state.load_complete(self.broker.now_ms())
            self.owned[p] = (LOADED, epoch)
            groups = sum(1 for g in self.state.groups if self._partition_of(g) == p)
        self._wake.set()
        log.info("%s-%d: coordinator of its groups (leader epoch %d): loaded %d records, %d groups in %.2f s",
                 OFFSETS_TOPIC, p, epoch, len(records), groups, trio.current_time() - started)

    def _partition_of(self, group_id: str) -> int:
        cluster = self.broker.cluster
        record = cluster.topics.get(OFFSETS_TOPIC) if cluster is not None else None
        return partition_for(group_id, record.partitions if record is not None else self.num_partitions)

    def _unload(self, p: int) -> None:
        """Stop serving partition p's groups: the writes not yet finished and the requests waiting
        on those groups are answered NOT_COORDINATOR, and the groups leave memory."""
        self.owned.pop(p, None)
        for flight in [f for f in self._inflight if p in f.partitions]:
            self._inflight.remove(flight)
            self._resolve(self.state.finish(flight.outcome, False, ErrorCode.not_coordinator))
        self._resolve(self.state.unload(lambda gid: self._partition_of(gid) == p))
        log.info("%s-%d: no longer its coordinator; its groups left memory", OFFSETS_TOPIC, p)

    async def ensure_offsets_topic(self) -> str | None:
        """Cluster mode: create `__consumer_offsets` in etcd if it is not there yet (the first
        broker asked wins the create-if-absent txn). None when it exists, else why not yet."""
        cluster = self.broker.cluster
        if cluster is None or OFFSETS_TOPIC in cluster.topics:
            return None
        config = self.broker.config
        rf = config.offsets_topic_replication_factor
        live = len(cluster.live_brokers())
        if live < rf:
            return (f"{OFFSETS_TOPIC} is not created until {rf} broker(s) are alive "
                    f"(offsets.topic.replication.factor); {live} are")
        async with self._create_lock:
            if OFFSETS_TOPIC in cluster.topics:
                return None
            try:
                await cluster.create_topic(OFFSETS_TOPIC, self.num_partitions, {
                    "cleanup.policy": "compact", "segment.bytes": str(config.offsets_topic_segment_bytes),
                }, rf, validate_only=False)
            except KafkaError as exc:
                if exc.code != ErrorCode.topic_already_exists:
                    log.warning("creating %s failed: %s", OFFSETS_TOPIC, exc.message)
                    return f"creating {OFFSETS_TOPIC} failed: {exc.message}"
        return None

    # --- operations -----------------------------------------------------------------------------

    async def execute(self, operation: Callable[..., Outcome], *args: Any, **kwargs: Any) -> Any:
        """Run `operation(now, *args)` on the state machine, persist, finish, and return the reply
        (waiting for it when the operation defers it, e.g. a JoinGroup during a rebalance)."""
        async with self._lock:
            outcome = operation(self.broker.now_ms(), *args, **kwargs)
            waiter = self._waiters[outcome.token] = _Waiter()
            if outcome.records:
                flight = _InFlight(outcome, await self._append(outcome.records, outcome.txn_producer))
                self._inflight.append(flight)
                if self.cluster_mode:
                    flight.replicated = False
                    assert self._nursery is not None
                    self._nursery.start_soon(self._replicate, flight)
            else:
                flight = None
                self._resolve(self.state.finish(outcome, True))
        try:
            if flight is not None:
                for entry in flight.entries:
                    await entry.done.wait()
                self._drain()
            self._wake.set()
            await waiter.event.wait()
            return waiter.reply
        finally:
            self._waiters.pop(outcome.token, None)

    async def _replicate(self, flight: _InFlight) -> None:
        """Cluster mode: wait until the ISR holds the flight's records (acks=all), in a task of the
        runtime (not the request's, which its client may cancel)."""
        cluster = self.broker.cluster
        timeout = self.broker.config.offsets_commit_timeout_ms / 1000
        try:
            for entry in flight.entries:
                await entry.done.wait()
            for entry in flight.entries:
                part = self.broker.partition(*entry.tp)
                if entry.error is not None or entry.infos is None:
                    continue
                if part is None:
                    flight.replication_error = ErrorCode.coordinator_not_available
                    break
                code = await cluster.wait_replicated(part, entry.infos[-1].last_offset + 1, timeout)
                if code is not None:
                    flight.replication_error = replication_error(code)
                    break
        finally:
            flight.replicated = True
            self._drain()
            self._wake.set()

    def _drain(self) -> None:
        # outcomes with records finish in log order per partition of __consumer_offsets
        blocked: set[int] = set()
        for flight in list(self._inflight):
            parts = flight.partitions
            if not flight.done() or parts & blocked:
                blocked |= parts
                continue
            self._inflight.remove(flight)
            ok = flight.ok()
            if flight.replication_error is not None:
                log.warning("a write to %s was not replicated: %s", OFFSETS_TOPIC, flight.replication_error.name)
                self._resolve(self.state.finish(flight.outcome, False, flight.replication_error))
                continue
            if not ok:
                errors = [e.error for e in flight.entries if e.error is not None]
                if self.cluster_mode:  # e.g. not the leader any more: answered as Kafka maps it
                    log.warning("appending to %s failed: %r", OFFSETS_TOPIC, errors[0])
                    self._resolve(self.state.finish(flight.outcome, False, replication_error(error_code_for(errors[0]))))
                    continue
                log.error("appending to %s failed: %r", OFFSETS_TOPIC, errors[0])
            self._resolve(self.state.finish(flight.outcome, ok))

    def _resolve(self, replies: dict[int, Any]) -> None:
        for token, reply in replies.items():
            waiter = self._waiters.get(token)
            if waiter is not None and not waiter.event.is_set():
                waiter.reply = reply
                waiter.event.set()
        self._group_log.update(self.state.groups)  # rebalances and membership changes, logged
        self._consumer_group_log.update(self.consumer.groups)

    async def _append(self, records: list[rec.Record],
                      producer: tuple[int, int] | None = None) -> list[PendingAppend]:
        by_partition: dict[int, list[rec.Record]] = {}
        for key, value in records:
            k = rec.decode_key(key)
            by_partition.setdefault(self._partition_of(k.group), []).append((key, value))
        now = self.broker.now_ms()
        entries = []
        for p, items in sorted(by_partition.items()):
            if producer is None:
                batch = bytearray(build_batch([(k, v, (), now) for k, v in items]))
            else:  # TxnOffsetCommit: Kafka writes these as the producer's transactional batch
                batch = bytearray(build_batch([(k, v, (), now) for k, v in items], producer_id=producer[0],
                                              producer_epoch=producer[1], transactional=True))
            header = validate_batch(batch, from_client=False)
            entry = PendingAppend((OFFSETS_TOPIC, p), [batch], [header], len(batch))
            part = self.broker.partition(OFFSETS_TOPIC, p)
            refusal = self.broker.cluster.produce_refusal(part, -1) \
                if self.cluster_mode and part is not None and self.broker.cluster is not None else None
            if part is None:
                entry.finish(error=KafkaError(ErrorCode.coordinator_not_available, f"{OFFSETS_TOPIC}-{p} is missing"))
            elif refusal is not None:  # not the leader any more, or the ISR below min.insync.replicas
                entry.finish(error=KafkaError(refusal, f"{OFFSETS_TOPIC}-{p}: {refusal.name}"))
            else:
                await part.submit(entry, block=True)
            entries.append(entry)
        return entries

    # --- queries ----------------------------------------------------------------------------------

    def lag(self, group_id: str) -> list[tuple[str, int, int | None, int, int | None]]:
        """Per partition of the group: (topic, partition, committed, log end, lag)."""
        return lag_report(self.state, group_id, self.broker.high_watermark)


def describe_group_lag(broker: Broker, group_id: str) -> list[tuple[str, int, int | None, int, int | None]]:
    """Broker-side lag of a group (for the CLI and metrics): see CoordinatorRuntime.lag."""
    return broker.coordinator.lag(group_id)


async def read_partition(broker: Broker, topic: str, p: int,
                         open_txns: dict[int, list[rec.Record]] | None = None,
                         to_log_end: bool = False) -> list[rec.Record]:
    """Every (key, value) of an internal topic's partition up to its high watermark (or, with
    `to_log_end`, its log end as of taking the lock), read in a worker thread under the log lock
    (see _read_all); [] when the partition is missing."""
    plog = broker.partition_log(topic, p)
    if plog is None:
        return []
    end = broker.high_watermark(topic, p)
    async with broker.log_lock:
        if to_log_end:
            end = plog.log_end_offset
        return await trio.to_thread.run_sync(_read_all, plog, end, open_txns)


def _read_all(plog: Any, end: int, open_txns: dict[int, list[rec.Record]] | None = None) -> list[rec.Record]:
    """Every (key, value) of a partition log below `end`, in offset order (a worker thread).

    With `open_txns`, records of transactional batches are held per producer id until its
    marker: a commit releases them at the marker's place in the order, an abort drops them, and
    what no marker ended yet is left in `open_txns`."""
    out: list[rec.Record] = []
    offset = plog.log_start_offset
    while offset < end:
        data = plog.read_records_bytes(offset, READ_CHUNK, upper_bound=end)
        if not data:
            break
        last = offset
        for header, raw in split_batches(data):
            if header.is_control:
                if open_txns is not None and header.is_transactional:
                    held = open_txns.pop(header.producer_id, [])
                    if _is_commit(raw, header):
                        out.extend(held)
                last = header.base_offset + header.last_offset_delta + 1
                continue
            target = out
            if open_txns is not None and header.is_transactional and header.producer_id >= 0:
                target = open_txns.setdefault(header.producer_id, [])
            for record in decode_records(raw, header):
                if record.offset >= offset:
                    target.append((record.key, record.value))
            last = header.base_offset + header.last_offset_delta + 1
        if last <= offset:
            break
        offset = last
    return out


def _is_commit(raw: Any, header: Any) -> bool:
    """A commit marker? (unreadable markers count as aborts: nothing half-applied)"""
    from .txn.partition_state import marker_kind
    from .txn.records import MARKER_COMMIT

    try:
        return marker_kind(raw, header) == MARKER_COMMIT
    except Exception:
        return False
