"""The Broker object: what every handler reaches through `ctx.broker`.

It owns the topic store (`metadata`), the partition logs (`logs`, a storage LogManager), the
per-partition serving state (high watermark, fetch waiters), the ingest path (`ingest`: rings and
the writer task) and the idempotent-producer state (`producer_state`).

Operations for handlers (all raise `broker.errors.KafkaError` with the code to answer):
    broker.node_id, broker.cluster_id, broker.host, broker.port, broker.bootstrap
    broker.config                       BrokerConfig
    broker.metadata                     broker.metadata.TopicStore (get(name) -> TopicInfo | None)
    broker.logs                         storage.manager.LogManager
    broker.now_ms()
    broker.partition_log(topic, p)      PartitionLog | None
    broker.high_watermark(topic, p)     int (offsets below it are committed and visible)
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
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import attrs
import trio
from kio.schema.errors import ErrorCode

from storage.errors import StorageError
from storage.manager import NAME_MAX, name_fits, partition_dir_name

from . import open_files
from .config import BrokerConfig
from .errors import KafkaError
from .limits import check_partition_count
from .logging_setup import event
from .metadata import TopicInfo, TopicStore, topic_name_error

log = logging.getLogger("ringlog.broker")

TopicPartition = tuple[str, int]


@attrs.define(eq=False)
class PartitionState:
    """Serving state of one partition: the high watermark and the fetchers waiting for data."""

    topic: str
    partition: int
    high_watermark: int = 0
    # Events of fetch requests waiting for new data here; set and cleared on each commit.
    waiters: set[trio.Event] = attrs.field(factory=set)

    def notify(self) -> None:
        waiters, self.waiters = self.waiters, set()
        for event in waiters:
            event.set()


def _load_producer_state(broker: Broker) -> Any:
    """broker.idempotence.ProducerStateManager when present, else a pass-through."""
    try:
        from . import idempotence
    except ImportError:
        return PassThroughProducerState()
    factory = getattr(idempotence, "ProducerStateManager", None)
    if factory is None:
        return PassThroughProducerState()
    try:
        return factory(broker)
    except TypeError:
        return factory()


class PassThroughProducerState:
    """No idempotence checks: every batch is accepted (used until broker/idempotence.py exists).

    The interface the real one implements:
      check(tp, header) -> None (accept) | DuplicateBatch-like object with `.base_offset`
                           (answer with the original offset, do not append) | ErrorCode (reject)
        called in the connection task, in request order, before the batch enters the ring;
      update(tp, header, info) called by the writer after the batch is written (info is the
        storage AppendInfo: base_offset, last_offset, ...);
      abort(tp, header) called when a checked batch is not written after all (append failed or
        the topic was deleted).
    """

    def check(self, tp: TopicPartition, header: Any) -> Any:
        return None

    def update(self, tp: TopicPartition, header: Any, info: Any) -> None:
        return None

    def abort(self, tp: TopicPartition, header: Any) -> None:
        return None


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
    def __init__(self, config: BrokerConfig, logs: Any, metadata: TopicStore, metrics: Any = None) -> None:
        self.config = config
        from .metrics import BrokerMetrics

        # counters, histograms and scrape-time gauges (broker.metrics); /metrics renders them
        self.metrics = metrics if metrics is not None else BrokerMetrics(config.data_dir, config.health_disk_free_min_bytes)
        self.logs = logs
        self.metadata = metadata
        self.node_id = config.node_id
        self.cluster_id = config.cluster_id
        self.host = config.advertised_host or config.listen_host
        self.port = config.advertised_port or config.listen_port
        self.default_log_config = config.log_config()
        self.log_lock = trio.Lock()
        self.partitions: dict[TopicPartition, PartitionState] = {}
        for (topic, partition), plog in self._all_logs():
            self.partitions[(topic, partition)] = PartitionState(topic, partition, plog.log_end_offset)
        self.producer_state = _load_producer_state(self)
        from .ingest import Ingest

        self.ingest = Ingest(self)
        # Worker threads that inflate and check compressed produced batches (handlers.produce).
        # Two: the work is CPU-bound, so more threads would not finish it sooner on a small
        # machine, and each holds up to message.max.decompressed.bytes of records meanwhile.
        self.record_check_limiter = trio.CapacityLimiter(2)
        from .coordinator_runtime import CoordinatorRuntime

        # consumer groups; its task (load of __consumer_offsets, timers) runs in the root nursery
        self.coordinator = CoordinatorRuntime(self)
        self.metrics.attach(self)

    # --- small queries -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    def _all_logs(self):
        logs = self.logs.logs
        items = logs.items() if isinstance(logs, Mapping) else ((k, v) for k, v in logs)
        return list(items)

    def partition_log(self, topic: str, partition: int) -> Any | None:
        try:
            return self.logs.get(topic, partition)
        except KeyError:
            return None

    def partition_state(self, topic: str, partition: int) -> PartitionState | None:
        return self.partitions.get((topic, partition))

    def high_watermark(self, topic: str, partition: int) -> int:
        state = self.partitions.get((topic, partition))
        return state.high_watermark if state is not None else -1

    def log_config_for(self, topic: str) -> Any:
        info = self.metadata.get(topic)
        if info is None or not info.configs:
            return self.default_log_config
        return self.default_log_config.with_topic_configs(info.configs)

    def validate_topic_configs(self, configs: Mapping[str, str] | None) -> Any:
        try:
            return self.default_log_config.with_topic_configs(dict(configs or {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise KafkaError(ErrorCode.invalid_config, str(exc)) from None

    # --- topic operations ----------------------------------------------------------------------

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
    ) -> TopicInfo:
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
        if validate_only:
            from .metadata import TopicInfo as _TI
            import uuid

            return _TI(name=name, partitions=num_partitions, topic_id=uuid.uuid4(), configs=configs or {})
        async with self.log_lock:
            if name in self.metadata:
                raise KafkaError(ErrorCode.topic_already_exists, f"topic {name!r} already exists")
            check_partition_count(self.config, name, num_partitions, self.metadata)  # again, under the lock
            if configs:
                self.logs.set_topic_config(name, dict(configs))
            # Logs first, then the store: a crash in between leaves directories that start-up
            # adopts (TopicStore.reconcile), never a topic without logs.
            created: list[int] = []
            failure = None
            try:
                for p in range(num_partitions):
                    self._create_partition(name, p, config)
                    created.append(p)
                info = self.metadata.add(name, num_partitions, configs or {})
            except (OSError, StorageError) as exc:
                failure = self._creation_failed(f"creating topic {name}", exc)
            if failure is not None:
                self._undo_partitions(name, created)
                if configs:
                    self.logs.topic_configs.pop(name, None)
                raise failure
        log.info("created topic %s with %d partition(s)", name, num_partitions,
                 extra=event("topic_created", topic=name, partitions=num_partitions, configs=dict(configs or {})))
        return info

    def _create_partition(self, name: str, p: int, config: Any) -> None:
        try:
            plog = self.logs.get(name, p)
        except KeyError:
            plog = None
        if plog is None:
            plog = self.logs.create(name, p, config)
        self.partitions[(name, p)] = PartitionState(name, p, plog.log_end_offset)

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

    def _undo_partitions(self, name: str, partitions: list[int]) -> None:
        for p in partitions:
            self.partitions.pop((name, p), None)
        try:
            self.logs.delete_partitions(name, partitions)
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
        info = self.metadata.get(name)
        if info is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
        async with self.log_lock:
            info = self.metadata.get(name)  # a delete that held the lock before us may have won
            if info is None:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
            self.ingest.drop_topic(name)
            forget = getattr(self.producer_state, "forget_topic", None)
            if forget is not None:
                forget(name)
            detached = self.logs.detach_topic(name, release=False)
            for p in range(info.partitions):
                state = self.partitions.pop((name, p), None)
                if state is not None:
                    state.notify()
            # Shielded: a cancelled request (the client went away) must not stop between the
            # renames and the topics.json write; each step is bounded file work.
            with trio.CancelScope(shield=True):
                # Closing a log's files and mappings costs ~5 us; a topic of thousands of
                # partitions is released in slices so that other connections are served meanwhile.
                for i, plog in enumerate(detached, 1):
                    plog.abandon()
                    if i % 200 == 0:
                        await trio.lowlevel.checkpoint()
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
            await trio.to_thread.run_sync(self.logs.purge_deleted, marked)
        return info

    async def create_partitions(self, name: str, total: int, *, validate_only: bool = False) -> TopicInfo:
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
            check_partition_count(self.config, name, total, self.metadata)  # again, under the lock
            config = self.log_config_for(name)
            created: list[int] = []
            failure = None
            try:
                for p in range(info.partitions, total):
                    self._create_partition(name, p, config)
                    created.append(p)
                info = self.metadata.set_partitions(name, total)
            except (OSError, StorageError) as exc:
                failure = self._creation_failed(f"adding partitions to {name}", exc)
            if failure is not None:
                self._undo_partitions(name, created)
                raise failure
        log.info("topic %s now has %d partitions", name, total,
                 extra=event("topic_partitions_added", topic=name, partitions=total))
        return info

    async def alter_topic_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool = False
    ) -> TopicInfo:
        """Replace the topic's config overrides with `configs` and apply them to its logs."""
        info = self.metadata.get(name)
        if info is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
        config = self.validate_topic_configs(configs)
        if validate_only:
            return attrs.evolve(info, configs=dict(configs))
        async with self.log_lock:
            info = self.metadata.set_configs(name, configs)
            self.logs.set_topic_config(name, dict(configs))
        log.info("topic %s configs set to %s", name, dict(configs),
                 extra=event("topic_configs_altered", topic=name, configs=dict(configs)))
        return info

    async def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Advance the log start offset to `before_offset` (-1: the high watermark)."""
        plog = self.partition_log(topic, partition)
        if plog is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{topic}-{partition} does not exist")
        hwm = self.high_watermark(topic, partition)
        if before_offset == -1:
            before_offset = hwm
        if before_offset < 0 or before_offset > hwm:
            raise KafkaError(
                ErrorCode.offset_out_of_range, f"offset {before_offset} is outside [0, {hwm}] of {topic}-{partition}"
            )
        async with self.log_lock:
            plog.delete_records_before(before_offset)
            return plog.log_start_offset
