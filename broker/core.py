"""The Broker object: what every handler reaches through `ctx.broker`.

It owns the topic store (`metadata`), the partition logs (`logs`, a storage LogManager), one
`broker.partition.Partition` per topic-partition (`partitions`: log, high watermark, ring,
producer state, fetch waiters), the group-commit writer task (`writer`), producer ids
(`producer_state`) and the group coordinator (`coordinator`).

Operations for handlers (all raise `broker.errors.KafkaError` with the code to answer):
    broker.node_id, broker.cluster_id, broker.host, broker.port, broker.bootstrap
    broker.config                       BrokerConfig
    broker.metadata                     broker.metadata.TopicStore (get(name) -> TopicInfo | None)
    broker.partition(topic, p)          Partition | None
    broker.partition_log(topic, p)      PartitionLog | None     (partition(...).log)
    broker.high_watermark(topic, p)     int, -1 when unknown    (partition(...).high_watermark)
    broker.now_ms()
    broker.log_config_for(topic)        effective storage LogConfig (defaults + overrides)
    broker.validate_topic_configs(configs)  -> LogConfig (KafkaError INVALID_CONFIG)
    await broker.ensure_topic(name)     TopicInfo | None: auto-creates when enabled
    await broker.create_topic(name, num_partitions=None, configs=None, *, validate_only=False)
    await broker.delete_topic(name)
    await broker.create_partitions(name, total, *, validate_only=False)
    await broker.alter_topic_configs(name, configs, *, validate_only=False)  # replaces overrides
    await broker.delete_records(topic, p, before_offset) -> new log start offset
    async with broker.log_lock: ...     hold it to change a log other than by appending
                                        (the writer holds it for each group commit)

File work (creating partitions, writing topics.json, checkpoints, removing directories) runs in
worker threads while the log lock is held; the Trio thread only changes what is in memory.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio
from kio.schema.errors import ErrorCode

from ringlog.storage.errors import StorageError
from ringlog.storage.log import LogConfig, PartitionLog
from ringlog.storage.manager import NAME_MAX, LogManager, name_fits, partition_dir_name

from . import open_files
from .config import BrokerConfig
from .errors import KafkaError
from .idempotence import PartitionProducerState, ProducerStateManager, load_partition_state
from .ingest import PartitionRing, Writer, run_deferred
from .limits import check_partition_count
from .logging_setup import event
from .metadata import TopicInfo, TopicStore, is_internal, topic_name_error
from .metrics import BrokerMetrics
from .partition import Partition

if TYPE_CHECKING:
    from .connection_limits import RateLimitedLog
    from .coordinator_runtime import CoordinatorRuntime
    from .txn_runtime import TxnRuntime
    from .server import Connection

log = logging.getLogger("ringlog.broker")

TopicPartition = tuple[str, int]


def load_producer_states(logs: LogManager, now_ms: int) -> tuple[dict[TopicPartition, PartitionProducerState], int]:
    """Every partition's producer state (snapshot + the log after it) and how many batches were
    replayed: start-up file work, run with the recovery in its worker thread."""
    states = {}
    replayed = 0
    for tp, plog in logs.logs.items():
        states[tp], count = load_partition_state(tp, plog, now_ms)
        replayed += count
    return states, replayed


def _purge_and_drop(logs: LogManager, marked: list, segments: list) -> None:
    """Remove a deleted topic's directories, then drop its segments (the last references to their
    fds: closing an unlinked file frees its blocks, seconds for gigabytes) in this worker thread."""
    logs.purge_deleted(marked)
    segments.clear()


def drop_in_thread(holder: list) -> None:
    """Clear `holder` in a worker thread: whatever only it references is freed there."""
    holder.clear()


def _check_partition_dir_names(name: str, count: int) -> None:
    """Refuse a partition count whose last directory `<name>-<count - 1>` cannot be a file name."""
    if not name_fits(partition_dir_name(name, count - 1)):
        room = NAME_MAX - len(name.encode()) - 1
        limit = 10**room if room > 0 else 0
        raise KafkaError(
            ErrorCode.invalid_partitions,
            f"topic {name!r} can have at most {limit} partitions: the directory name "
            f"'<topic>-<partition>' must fit {NAME_MAX} bytes",
        )


class Broker:
    config: BrokerConfig
    metrics: BrokerMetrics
    logs: LogManager
    metadata: TopicStore
    partitions: dict[TopicPartition, Partition]
    writer: Writer
    producer_state: ProducerStateManager
    coordinator: CoordinatorRuntime
    txn: TxnRuntime
    # Set by broker.server while it serves:
    connections: set[Connection]
    listen_address: tuple[str, int] | None
    metrics_address: tuple[str, int] | None
    http_address: tuple[str, int] | None
    connection_notices: RateLimitedLog | None
    # broker.security.state.SecurityState, the ACL authorizer (None: off) and the bound listeners
    # (ListenerSpec with advertised addresses); set by broker.server
    security: Any = None
    authorizer: Any = None
    listeners: list[Any] = []

    def __init__(self, config: BrokerConfig, logs: LogManager, metadata: TopicStore,
                 metrics: BrokerMetrics | None = None,
                 producer_states: Mapping[TopicPartition, PartitionProducerState] | None = None,
                 rebuilt_batches: int = 0) -> None:
        """`producer_states`, `rebuilt_batches`: from load_producer_states, run at start-up in a
        worker thread; a partition missing there is loaded here (its snapshot, then its log)."""
        self.config = config
        # counters, histograms and scrape-time gauges (broker.metrics); /metrics renders them
        self.metrics = metrics if metrics is not None else BrokerMetrics(config.data_dir, config.health_disk_free_min_bytes)
        self.logs = logs
        self.metadata = metadata
        self.node_id = config.node_id
        self.cluster_id = config.cluster_id
        self.host = config.advertised_host or config.listen_host
        self.port = config.advertised_port or config.listen_port
        self.connections = set()
        self.listen_address = None
        self.metrics_address = None
        self.http_address = None  # the HTTP gateway's (http.listen), set by broker.server
        self.connection_notices = None
        # broker.cluster.node.ClusterNode in cluster mode (etcd.endpoints set), else None
        self.cluster: Any = None
        self.default_log_config = config.log_config()
        self.log_lock = trio.Lock()
        self.partitions = {}
        self.producer_state = ProducerStateManager(config, config.node_id, self.partitions.values)
        self.writer = Writer(self.log_lock, self.metrics, now_ms=self.now_ms, snapshots=self.producer_state)
        states = dict(producer_states or {})
        for tp, plog in list(logs.logs.items()):
            state = states.get(tp)
            if state is None:
                state, count = load_partition_state(tp, plog, self.now_ms())
                rebuilt_batches += count
            self._adopt(tp[0], tp[1], plog, state)
        self.producer_state.rebuilt_batches = rebuilt_batches
        # Worker threads that inflate and check compressed produced batches (handlers.produce).
        # Two: the work is CPU-bound, so more threads would not finish it sooner on a small
        # machine, and each holds up to message.max.decompressed.bytes of records meanwhile.
        self.record_check_limiter = trio.CapacityLimiter(2)
        from .coordinator_runtime import CoordinatorRuntime

        # consumer groups; its task (load of __consumer_offsets, timers) runs in the root nursery
        self.coordinator = CoordinatorRuntime(self)
        from .pipeline_runtime import PipelineSet

        # ingest pipelines ([pipelines.NAME], named by a topic's ingest.pipeline config)
        self.pipelines = PipelineSet(config.pipelines, self.metrics)

        from .txn_runtime import TxnRuntime

        # the transaction coordinator; its task (load of __transaction_state, timers) too
        self.txn = TxnRuntime(self)
        from .quotas import ClientQuotas

        # client quotas (AlterClientQuotas; loaded from the data dir by broker.server)
        self.quotas = ClientQuotas(config.quota_window_num, config.quota_window_size_seconds)
        self.metrics.attach(self)

    # --- small queries -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    def _all_logs(self) -> list[tuple[TopicPartition, PartitionLog]]:
        return [(tp, part.log) for tp, part in self.partitions.items()]

    def partition(self, topic: str, partition: int) -> Partition | None:
        return self.partitions.get((topic, partition))

    def partition_log(self, topic: str, partition: int) -> PartitionLog | None:
        part = self.partitions.get((topic, partition))
        return part.log if part is not None else None

    def high_watermark(self, topic: str, partition: int) -> int:
        part = self.partitions.get((topic, partition))
        return part.high_watermark if part is not None else -1

    def log_config_for(self, topic: str) -> LogConfig:
        info = self.metadata.get(topic)
        if info is None or not info.configs:
            return self.default_log_config
        return self.default_log_config.with_topic_configs(info.configs)

    def validate_topic_configs(self, configs: Mapping[str, str] | None) -> LogConfig:
        try:
            return self.default_log_config.with_topic_configs(dict(configs or {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise KafkaError(ErrorCode.invalid_config, str(exc)) from None

    # --- topic operations ----------------------------------------------------------------------

    def _refuse_in_cluster(self, topic: str, what: str) -> None:
        """Cluster mode does not change a replicated topic after its creation yet: a change made
        on one broker alone would make the replicas disagree."""
        if self.cluster is not None and self.cluster.manages(topic):
            raise KafkaError(ErrorCode.policy_violation, f"{what} is not supported in cluster mode yet ({topic!r})")

    async def ensure_topic(self, name: str) -> TopicInfo | None:
        """The topic, auto-created with num.partitions when enabled and the name is legal."""
        info = self.metadata.get(name)
        if info is not None or not self.config.auto_create_topics:
            return info
        if topic_name_error(name):
            return None
        try:
            return await self.create_topic(name)
        except KafkaError as exc:
            if exc.code == ErrorCode.topic_already_exists:
                return self.metadata.get(name)
            raise

    async def create_topic(
        self,
        name: str,
        num_partitions: int | None = None,
        configs: Mapping[str, str] | None = None,
        *,
        validate_only: bool = False,
        replication_factor: int | None = None,
        topic_id: uuid.UUID | None = None,
        local: bool = False,
    ) -> TopicInfo:
        """`local`: create it on this broker only (cluster mode applies etcd's topics so, with
        etcd's `topic_id`); otherwise, in cluster mode, the topic is created in etcd."""
        error = topic_name_error(name)
        if error:
            raise KafkaError(ErrorCode.invalid_topic_exception, error)
        if num_partitions is None or num_partitions == -1:
            num_partitions = self.config.num_partitions
        if num_partitions < 1:
            raise KafkaError(ErrorCode.invalid_partitions, f"number of partitions {num_partitions} must be >= 1")
        _check_partition_dir_names(name, num_partitions)
        check_partition_count(self.config, name, num_partitions, self.metadata)
        config = self.validate_topic_configs(configs)
        if name in self.metadata:
            raise KafkaError(ErrorCode.topic_already_exists, f"topic {name!r} already exists")
        if self.cluster is not None and not local and not is_internal(name):
            return await self.cluster.create_topic(name, num_partitions, configs, replication_factor,
                                                   validate_only=validate_only)
        if validate_only:
            return TopicInfo(name=name, partitions=num_partitions, topic_id=uuid.uuid4(), configs=configs or {})
        async with self.log_lock:
            if name in self.metadata:
                raise KafkaError(ErrorCode.topic_already_exists, f"topic {name!r} already exists")
            check_partition_count(self.config, name, num_partitions, self.metadata)  # again, under the lock
            # Shielded: a cancelled request (the client went away) must not stop between the
            # logs and the topic store; each step is bounded file work.
            with trio.CancelScope(shield=True):
                if configs:
                    self.logs.set_topic_config(name, dict(configs))
                # Logs first, then the store: a crash in between leaves directories that start-up
                # adopts (TopicStore.reconcile), never a topic without logs.
                created: list[int] = []
                failure = None
                try:
                    await self._create_partitions(name, range(num_partitions), config, created)
                    info = self.metadata.add(name, num_partitions, configs or {}, save=False, topic_id=topic_id)
                    await self._save_topics(lambda: self.metadata.remove(name, save=False))
                except (OSError, StorageError) as exc:
                    failure = self._creation_failed(f"creating topic {name}", exc)
                if failure is not None:
                    await self._undo_partitions(name, created)
                    if configs:
                        self.logs.topic_configs.pop(name, None)
                    raise failure
        log.info("created topic %s with %d partition(s)", name, num_partitions,
                 extra=event("topic_created", topic=name, partitions=num_partitions, configs=dict(configs or {})))
        return info

    async def _create_partitions(self, name: str, indexes: Iterable[int], config: LogConfig,
                                 created: list[int]) -> None:
        """Open the logs of `indexes` (creating their directories and files: a worker thread) and
        adopt them; each one is in `created` once adopted, also when a later one failed."""
        opened: list[tuple[int, PartitionLog, PartitionProducerState]] = []
        wanted = [p for p in indexes if (name, p) not in self.partitions]
        now = self.now_ms()

        def open_all() -> None:
            for p in wanted:
                plog = self.logs.open_new(name, p, config, now_ms=now)
                # An empty log has no producer state; a directory left by a crash may hold some.
                state, _ = load_partition_state((name, p), plog, now)
                opened.append((p, plog, state))

        try:
            await trio.to_thread.run_sync(open_all)
        finally:
            # What opened before a failure is adopted too, so that the undo removes it.
            for p, plog, state in opened:
                self.logs.adopt(name, p, plog)
                self._adopt(name, p, plog, state)
                created.append(p)

    def _adopt(self, topic: str, index: int, plog: PartitionLog, state: PartitionProducerState) -> None:
        plog.defer_io = True  # its checkpoints and segment removals go to worker threads
        ring = PartitionRing(self.config.ring_bytes_per_partition)
        self.partitions[(topic, index)] = Partition(topic, index, plog, state, ring, self.writer)

    async def _save_topics(self, undo: Callable[[], Any]) -> None:
        """Write topics.json (in a worker thread) as memory now has it; on failure, `undo`."""
        content = self.metadata.encode()
        try:
            await trio.to_thread.run_sync(self.metadata.write, content)
        except BaseException:
            undo()
            raise

    def _creation_failed(self, what: str, exc: BaseException) -> KafkaError:
        """The per-topic answer for storage that failed while creating partitions.

        Returned, not raised, so the caller's except block ends (dropping the traceback, whose
        frames hold the descriptors opened so far) before it undoes what was created."""
        if open_files.exhausted(exc):
            limit = open_files.soft_limit()
            message = "too many open files: raise ulimit -n" + (f" (now {limit})" if limit else "")
        else:
            message = f"storage error: {exc}"
        log.error("%s failed, undone: %s", what, exc,
                  extra=event("topic_create_failed", action=what, reason=message))
        return KafkaError(ErrorCode.kafka_storage_error, message)

    async def _undo_partitions(self, name: str, partitions: list[int]) -> None:
        for p in partitions:
            part = self.partitions.pop((name, p), None)
            if part is not None:
                part.close(f"topic {name!r} could not be created")
        detached = self.logs.detach_partitions(name, partitions)
        try:
            await trio.to_thread.run_sync(self.logs.remove_detached, name, detached)
        except (OSError, StorageError) as exc:
            # What is left is adopted as partitions at the next start (TopicStore.reconcile).
            log.error("could not remove the partitions %s of %s created before the failure: %s",
                      partitions, name, exc)

    async def delete_topic(self, name: str) -> TopicInfo:
        """Delete a topic: all or nothing across a crash at any point.

        On disk, in this order (see storage.manager and broker.metadata): the partition
        directories are renamed to delete-marked names tagged with the topic id and the data dir
        fsynced (the first rename commits the deletion: start-up finishes a topic whose marked
        directory it finds), then topics.json drops the topic, then the marked directories are
        removed. The file work runs in worker threads; the log lock keeps the writer, the
        cleaner's commits and other topic changes out until topics.json is written.
        """
        self._refuse_in_cluster(name, "deleting a topic")
        info = self.metadata.get(name)
        if info is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
        async with self.log_lock:
            info = self.metadata.get(name)  # a delete that held the lock before us may have won
            if info is None:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
            for p in range(info.partitions):
                part = self.partitions.pop((name, p), None)
                if part is not None:
                    # fails what waits in its ring (and forgets those batches' producer
                    # checks), wakes its long-polling fetches
                    part.close(f"topic {name!r} was deleted")
            detached = self.logs.detach_topic(name, release=False)
            # Shielded: a cancelled request (the client went away) must not stop between the
            # renames and the topics.json write; each step is bounded file work.
            with trio.CancelScope(shield=True):
                # Closing a log's files and mappings costs ~5 us; a topic of thousands of
                # partitions is released in slices so that other connections are served meanwhile.
                segments = []
                for i, plog in enumerate(detached, 1):
                    plog.abandon()
                    segments.extend(plog.take_segments())
                    if i % 200 == 0:
                        await trio.lowlevel.checkpoint()
                plog = None  # the segments' only references are in `segments` now
                try:
                    marked = await trio.to_thread.run_sync(self.logs.mark_topic_deleted, name, info.topic_id.hex)
                except (StorageError, OSError) as exc:
                    # Some directories may be marked (committed: a restart finishes the job). The
                    # topic stays listed so that a retry marks the rest.
                    self.metrics.storage_failed("delete", exc)
                    log.error("deleting topic %s failed: %s", name, exc)
                    raise KafkaError(ErrorCode.kafka_storage_error, f"deleting topic {name!r} failed: {exc}") from None
                self.metadata.remove(name, save=False)
                try:
                    await trio.to_thread.run_sync(self.metadata.write, self.metadata.encode())
                except (StorageError, OSError) as exc:
                    # The deletion is already durable through the marked directories (start-up
                    # finishes it); the next successful save writes the file without the topic.
                    self.metrics.storage_failed("delete", exc)
                    log.error("topic %s deleted, but writing the topic store failed: %s", name, exc)
        log.info("deleted topic %s", name, extra=event("topic_deleted", topic=name, partitions=info.partitions))
        # Outside the lock: removing the files can take long and nothing depends on it any more
        # (a crash leaves the marked directories to the next start-up).
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_purge_and_drop, self.logs, marked, segments)
        return info

    async def create_partitions(self, name: str, total: int, *, validate_only: bool = False) -> TopicInfo:
        self._refuse_in_cluster(name, "adding partitions")
        info = self.metadata.get(name)
        if info is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
        if total <= info.partitions:
            raise KafkaError(
                ErrorCode.invalid_partitions,
                f"topic {name!r} has {info.partitions} partitions; the new count must be larger, got {total}",
            )
        _check_partition_dir_names(name, total)
        check_partition_count(self.config, name, total, self.metadata)
        if validate_only:
            return attrs.evolve(info, partitions=total)
        async with self.log_lock:
            info = self.metadata.get(name)
            if info is None:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
            if total <= info.partitions:
                raise KafkaError(ErrorCode.invalid_partitions,
                                 f"topic {name!r} has {info.partitions} partitions; the new count must be larger, got {total}")
            check_partition_count(self.config, name, total, self.metadata)  # again, under the lock
            config = self.log_config_for(name)
            before = info
            with trio.CancelScope(shield=True):
                created: list[int] = []
                failure = None
                try:
                    await self._create_partitions(name, range(info.partitions, total), config, created)
                    info = self.metadata.set_partitions(name, total, save=False)
                    await self._save_topics(lambda: self.metadata.put(before))
                except (OSError, StorageError) as exc:
                    failure = self._creation_failed(f"adding partitions to {name}", exc)
                if failure is not None:
                    await self._undo_partitions(name, created)
                    raise failure
        log.info("topic %s now has %d partitions", name, total,
                 extra=event("topic_partitions_added", topic=name, partitions=total))
        return info

    async def alter_topic_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool = False
    ) -> TopicInfo:
        """Replace the topic's config overrides with `configs` and apply them to its logs."""
        self._refuse_in_cluster(name, "changing topic configs")
        info = self.metadata.get(name)
        if info is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
        config = self.validate_topic_configs(configs)
        if validate_only:
            return attrs.evolve(info, configs=dict(configs))
        async with self.log_lock:
            before = self.metadata.get(name)
            if before is None:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
            with trio.CancelScope(shield=True):
                info = self.metadata.set_configs(name, configs, save=False)
                await self._save_topics(lambda: self.metadata.put(before))
            self.logs.set_topic_config(name, dict(configs))
        log.info("topic %s configs set to %s", name, dict(configs),
                 extra=event("topic_configs_altered", topic=name, configs=dict(configs)))
        return info

    async def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Advance the log start offset to `before_offset` (-1: the high watermark), at most to
        the last stable offset."""
        self._refuse_in_cluster(topic, "deleting records")
        part = self.partition(topic, partition)
        if part is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{topic}-{partition} does not exist")
        # never past the last stable offset: the start of an open transaction must stay readable
        # (it is the high watermark when no transaction is open)
        hwm = part.last_stable_offset
        if before_offset == -1:
            before_offset = hwm
        if before_offset < 0 or before_offset > hwm:
            raise KafkaError(
                ErrorCode.offset_out_of_range, f"offset {before_offset} is outside [0, {hwm}] of {topic}-{partition}"
                + (" (an open transaction starts there)" if hwm < part.high_watermark else "")
            )
        async with self.log_lock:
            if part.closed:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{topic}-{partition} does not exist")
            with trio.CancelScope(shield=True):
                part.log.delete_records_before(before_offset)
                start = part.log.log_start_offset
                part.producers.truncate_head(start)
                # the dropped segments' files and the new log start's checkpoint
                await run_deferred(part.log)
            return start
