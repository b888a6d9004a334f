"""The transaction coordinator on Trio: persistence in `__transaction_state`, markers, timers.

The state machine (broker.txn.state, sans-IO) decides; this layer
  1. runs the operations of one transactional id one at a time (a lock per id), so its records
     enter `__transaction_state` in the order they were decided;
  2. appends each new state through the broker's ordinary ingest path (same rings, group commit
     and flush policy as any Produce) and applies it once it is committed;
  3. ends a transaction in Kafka's order: the PrepareCommit/PrepareAbort record first, then one
     control batch (marker) into every partition of the transaction (through the same writer path,
     so markers and data share one order per partition), then CompleteCommit/CompleteAbort. For
     the group's `__consumer_offsets` partition the marker also makes the transaction's offsets
     visible (or drops them) in the group coordinator;
  4. every transaction.abort.timed.out.transaction.cleanup.interval.ms aborts the transactions
     open longer than their timeout (with the next epoch, fencing their producer), retries
     transactions whose markers could not all be written, and every
     transaction.remove.expired.transaction.cleanup.interval.ms forgets idle ids
     (transactional.id.expiration.ms) with a tombstone.

Crash safety: the prepare record is durable before any marker is written, so after a kill the
replay finds the transaction prepared and writes every marker again before serving (a second
marker for a producer whose transaction already ended is a no-op for readers). A kill before the
prepare record leaves the transaction Ongoing: it is aborted by the timeout (or when the producer
re-initialises), never half committed.

Start-up: `__transaction_state` (transaction.state.log.num.partitions partitions, compacted) is
created on the first transactional request; when it exists it is replayed before the coordinator
answers (COORDINATOR_LOAD_IN_PROGRESS meanwhile). A transactional id lives in partition
`javaHash(id) % partitions`, like a group.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio
from kio.schema.errors import ErrorCode

from ringlog.storage.batch import validate_batch
from ringlog.storage.records import build_batch

from .coordinator import OFFSETS_TOPIC
from .coordinator_runtime import partition_for, read_partition
from .errors import KafkaError
from .ingest import PendingAppend
from .txn import records as trec
from .txn.state import Transition, TxnConfig, TxnCoordinator

if TYPE_CHECKING:
    from .core import Broker

log = logging.getLogger("ringlog.txn")

TXN_TOPIC = "__transaction_state"
RETRY_BACKOFF_S = 0.1


_PRODUCE_REFUSALS = {
    ErrorCode.invalid_txn_state: "partition was not added to the transaction",
    ErrorCode.invalid_producer_epoch: "producer epoch is not the transaction's current epoch",
    ErrorCode.invalid_producer_id_mapping: "producer id does not match the transactional id",
}


class TxnRuntime:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        config = broker.config
        self.state = TxnCoordinator(TxnConfig(max_timeout_ms=config.transaction_max_timeout_ms,
                                              id_expiration_ms=config.transactional_id_expiration_ms))
        self.num_partitions = max(1, int(config.transaction_state_log_num_partitions))
        self._locks: dict[str, trio.Lock] = {}
        self._topic_lock = trio.Lock()
        self.loaded = trio.Event()
        self.load_error: BaseException | None = None
        # transactions whose markers could not all be written: retried by the timer
        self._unfinished: set[str] = set()

    # --- start-up -----------------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            if self.broker.metadata.get(TXN_TOPIC) is not None:
                await self._load()
            else:
                self.state.load_complete()
        except Exception as exc:
            self.load_error = exc
            log.exception("loading %s failed; transactions are unavailable", TXN_TOPIC)
            raise
        finally:
            self.loaded.set()
        abort_every = self.broker.config.transaction_abort_timed_out_transaction_cleanup_interval_ms / 1000
        expire_every = self.broker.config.transaction_remove_expired_transaction_cleanup_interval_ms / 1000
        next_expire = trio.current_time() + expire_every
        while True:
            await trio.sleep(abort_every)
            await self.abort_timed_out()
            if trio.current_time() >= next_expire:
                next_expire = trio.current_time() + expire_every
                await self.expire_ids()

    async def _load(self) -> None:
        broker = self.broker
        info = broker.metadata.get(TXN_TOPIC)
        self.num_partitions = info.partitions
        count = 0
        for p in range(info.partitions):
            for key, value in await read_partition(broker, TXN_TOPIC, p):
                try:
                    self.state.replay(key, value)
                except trec.TxnRecordFormatError as exc:
                    log.warning("%s-%d: skipping an unreadable record: %s", TXN_TOPIC, p, exc)
                count += 1
        unfinished = self.state.load_complete()
        log.info("transaction coordinator loaded %d records: %d transactional ids, %d to complete",
                 count, len(self.state.txns), len(unfinished))
        # The groups' pending transactional offsets are loaded by the group coordinator, which
        # must be loaded before markers are applied to it.
        await broker.coordinator.loaded.wait()
        for t in unfinished:
            async with self._lock(t.transactional_id):
                await self._finish(t)

    async def ensure_ready(self) -> ErrorCode | None:
        """Create `__transaction_state` if needed and wait for the load: None, or the error code."""
        if self.broker.metadata.get(TXN_TOPIC) is None:
            async with self._topic_lock:
                if self.broker.metadata.get(TXN_TOPIC) is None:
                    try:
                        info = await self.broker.create_topic(
                            TXN_TOPIC, self.num_partitions,
                            {"cleanup.policy": "compact",
                             "segment.bytes": str(self.broker.config.transaction_state_log_segment_bytes)})
                    except KafkaError as exc:
                        log.error("cannot create %s: %s", TXN_TOPIC, exc)
                        return ErrorCode.coordinator_not_available
                    self.num_partitions = info.partitions
        if not self.loaded.is_set():
            return ErrorCode.coordinator_load_in_progress
        if self.load_error is not None:
            return ErrorCode.coordinator_not_available
        return None

    def _lock(self, transactional_id: str) -> trio.Lock:
        lock = self._locks.get(transactional_id)
        if lock is None:
            lock = self._locks[transactional_id] = trio.Lock()
        return lock

    # --- operations ---------------------------------------------------------------------------

    async def init_producer_id(self, transactional_id: str, timeout_ms: int, producer_id: int,
                               epoch: int) -> tuple[ErrorCode, int, int]:
        if (error := await self.ensure_ready()) is not None:
            return error, -1, -1
        async with self._lock(transactional_id):
            new_pid = None
            if self.state.needs_new_producer_id(transactional_id):
                new_pid, _ = await self.broker.producer_state.init_producer_id()
            decision = self.state.init_producer_id(self.broker.now_ms(), transactional_id, timeout_ms,
                                                   producer_id, epoch, new_pid)
            if isinstance(decision, ErrorCode):
                return decision, -1, -1
            try:
                await self._run(decision)
            except KafkaError as exc:
                return exc.code, -1, -1
            assert decision.reply is not None
            return ErrorCode.none, decision.reply[0], decision.reply[1]

    async def add_partitions(self, transactional_id: str, producer_id: int, epoch: int,
                             partitions: list[tuple[str, int]]) -> ErrorCode:
        return await self._decide_and_run(self.state.add_partitions, transactional_id, producer_id, epoch,
                                          partitions)

    async def _decide_and_run(self, operation: Any, transactional_id: str, *args: Any) -> ErrorCode:
        """`operation(now, id, *args)` under the id's lock; run the transition it decides."""
        if (error := await self.ensure_ready()) is not None:
            return error
        async with self._lock(transactional_id):
            decision = operation(self.broker.now_ms(), transactional_id, *args)
            if isinstance(decision, ErrorCode):
                return decision
            if decision is not None:
                try:
                    await self._run(decision)
                except KafkaError as exc:
                    return exc.code
            return ErrorCode.none

    def offsets_partition(self, group_id: str) -> tuple[str, int]:
        return OFFSETS_TOPIC, partition_for(group_id, self.broker.coordinator.num_partitions)

    async def end_txn(self, transactional_id: str, producer_id: int, epoch: int, commit: bool) -> ErrorCode:
        return await self._decide_and_run(self.state.end_txn, transactional_id, producer_id, epoch, commit)

    def check_batches(self, transactional_id: str | None, partition: Any,
                      headers: list[Any]) -> tuple[ErrorCode, str] | None:
        """Produce: (error, message) when the batches may not be written to `partition`.

        Kafka's rules: a transactional batch needs a producer id and a partition added to that
        producer's open transaction at its current epoch (KIP-890 verification:
        INVALID_TXN_STATE when not added; an old epoch is fenced); a producer with a transaction
        open in the partition may not write non-transactional batches there."""
        for header in headers:
            pid = header.producer_id
            if header.is_transactional:
                if pid < 0:
                    return ErrorCode.invalid_record, "transactional batch without a producer id"
                if not self.loaded.is_set():
                    return ErrorCode.not_enough_replicas, "transaction coordinator is loading"
                error = self.state.verify_produce(transactional_id, pid, header.producer_epoch, partition.tp)
                if error is not None:
                    return error, _PRODUCE_REFUSALS.get(error, error.name)
            elif pid >= 0 and partition.producers.txns.has_open(pid):
                return ErrorCode.invalid_txn_state, "non-transactional batch from a producer with an open transaction"
        return None

    # --- timers -------------------------------------------------------------------------------

    async def abort_timed_out(self) -> None:
        for tid in list(self._unfinished):
            meta = self.state.txns.get(tid)
            async with self._lock(tid):
                meta = self.state.txns.get(tid)
                if meta is not None and meta.state in (trec.PREPARE_COMMIT, trec.PREPARE_ABORT):
                    try:
                        await self._finish(Transition(tid, meta.value(), markers=True,
                                                      commit=meta.state == trec.PREPARE_COMMIT))
                    except KafkaError as exc:  # still unfinished: the next round tries again
                        log.warning("completing the transaction of %r failed: %s", tid, exc)
                else:
                    self._unfinished.discard(tid)
        for candidate in self.state.timed_out(self.broker.now_ms()):
            tid = candidate.transactional_id
            async with self._lock(tid):
                # decided again under the lock: the producer may have ended it meanwhile
                current = [t for t in self.state.timed_out(self.broker.now_ms()) if t.transactional_id == tid]
                if current:
                    log.info("transaction of %r timed out: aborting it and fencing its producer", tid)
                    try:
                        await self._run(current[0])
                    except KafkaError as exc:
                        log.warning("aborting the timed out transaction of %r failed: %s", tid, exc)

    async def expire_ids(self) -> None:
        for tid in self.state.expired_ids(self.broker.now_ms()):
            async with self._lock(tid):
                if tid in self.state.expired_ids(self.broker.now_ms()):
                    try:
                        await self._write(tid, None)
                    except KafkaError as exc:
                        log.warning("expiring transactional id %r failed: %s", tid, exc)
                        continue
                    self.state.apply(tid, None)
                    self._locks.pop(tid, None)

    # --- persistence and markers --------------------------------------------------------------

    async def _run(self, t: Transition) -> None:
        """Write the transition's record, apply it, and when it prepares an end, finish it."""
        await self._write(t.transactional_id, t.value)
        self.state.apply(t.transactional_id, t.value)
        if t.markers:
            await self._finish(t)

    async def _finish(self, t: Transition) -> None:
        """Markers into every partition, then the Complete record. A failure leaves the transaction
        prepared (retried by the timer and at start-up) and raises KafkaError."""
        v = t.value
        # Unfinished until the Complete record is applied: the timer (abort_timed_out) finishes it
        # if this is cut short, by an error or by the cancellation of the request that started it
        # (its client went away mid-EndTxn or mid-InitProducerId). Without that, a cancelled
        # finish left the transaction prepared for good: every InitProducerId of the id answered
        # CONCURRENT_TRANSACTIONS from then on.
        self._unfinished.add(t.transactional_id)
        await self.write_markers(v.producer_id, v.producer_epoch, v.partitions, t.commit)
        complete = self.state.complete(self.broker.now_ms(), t.transactional_id)
        if complete is not None:
            await self._write(t.transactional_id, complete.value)
            self.state.apply(t.transactional_id, complete.value)
        self._unfinished.discard(t.transactional_id)

    async def write_markers(self, producer_id: int, epoch: int, partitions: Any, commit: bool) -> None:
        now = self.broker.now_ms()
        batch = build_batch([(trec.marker_key(commit), trec.marker_value(0), (), now)], producer_id=producer_id,
                            producer_epoch=epoch, transactional=True, control=True)
        entries = []
        for tp in partitions:
            part = self.broker.partition(*tp)
            if part is None:
                continue  # deleted since it was added: nothing to mark
            raw = bytearray(batch)
            entry = PendingAppend(tuple(tp), [raw], [validate_batch(raw, from_client=False)], len(raw))
            await part.submit(entry, block=True)
            entries.append(entry)
        failed = None
        for entry in entries:
            await entry.done.wait()
            if entry.error is not None:
                failed = entry.error
            elif entry.tp[0] == OFFSETS_TOPIC:
                self.broker.coordinator.state.complete_txn(producer_id, commit)
        if failed is not None:
            log.error("writing transaction markers failed: %r", failed)
            raise KafkaError(ErrorCode.coordinator_not_available, f"writing transaction markers failed: {failed}")

    async def _write(self, transactional_id: str, value: trec.TxnValue | None) -> None:
        p = partition_for(transactional_id, self.num_partitions)
        part = self.broker.partition(TXN_TOPIC, p)
        if part is None:
            raise KafkaError(ErrorCode.coordinator_not_available, f"{TXN_TOPIC}-{p} is missing")
        raw = bytearray(build_batch([(trec.encode_key(transactional_id),
                                      None if value is None else trec.encode_value(value), (),
                                      self.broker.now_ms())]))
        entry = PendingAppend((TXN_TOPIC, p), [raw], [validate_batch(raw, from_client=False)], len(raw))
        await part.submit(entry, block=True)
        await entry.done.wait()
        if entry.error is not None:
            log.error("appending to %s failed: %r", TXN_TOPIC, entry.error)
            raise KafkaError(ErrorCode.coordinator_not_available, f"appending to {TXN_TOPIC} failed")
