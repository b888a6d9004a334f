"""Idempotent producers: producer ids, per-partition producer state, its snapshots.

The rules (Apache Kafka's ProducerStateManager / ProducerAppendInfo, origin "client")
-----------------------------------------------------------------------------------
Per partition the broker keeps, for every producer id that wrote there, its epoch and the
(first seq, last seq, first offset, last offset) of its last NUM_BATCHES_TO_RETAIN (5) batches.
For a batch with a producer id, in this order:

1. a duplicate: same epoch as the stored one and exactly the (first seq, last seq) of one of the
   retained batches -> not appended again; the produce answer is success with the offset the batch
   got the first time (what Kafka does: clients want the original offset, not an error);
2. epoch older than the current one -> INVALID_PRODUCER_EPOCH (Kafka >= 2.7 answers this rather than
   PRODUCER_FENCED to clients);
3. a newer epoch must start at sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER;
4. same epoch: first seq must be last seq + 1 (wrapping from 2**31-1 to 0), else
   OUT_OF_ORDER_SEQUENCE_NUMBER;
5. a producer the partition knows nothing about (new, expired, or all its batches removed by
   retention / DeleteRecords) is accepted at any sequence; modern Kafka no longer answers
   UNKNOWN_PRODUCER_ID for this.

Batches in flight: ringlog checks a batch when it enters the partition's ring (`check`, in request
order, in the connection task) and records it when the writer has written it (`update`), or forgets
it (`abort`). Checked-but-unwritten batches count as the producer's latest, so pipelined batches
(seq 0-9 queued, seq 10-19 arriving) are in sequence. A retry of a batch that is still in the ring
is answered NOT_ENOUGH_REPLICAS (retriable, "not written yet"); the client's next retry then finds
it written and gets its offset.

Snapshot file format (`<partition dir>/<offset, 20 digits>.snapshot`), big-endian::

    0  magic            4 bytes  b"RLPS"
    4  version          u16      1
    6  crc              u32      CRC-32C of every byte after this field
    10 offset           i64      the state covers every batch below this offset
    18 producer count   u32
    then per producer:
       producer id i64 | epoch i16 | last timestamp i64 | batch count u8 |
       batch count x (first seq i32 | last seq i32 | first offset i64 | last offset i64)

Written with storage.checkpoint.atomic_write at clean shutdown and at most every
`snapshot_interval_ms` per partition while producing; the newest two are kept. On first use of a
partition after start-up the state is rebuilt: snapshots above the log end (the log was cut by
recovery) are deleted, the newest readable one is loaded, then the batch headers from its offset
to the log end are replayed (PartitionLog.iter_batch_headers). No snapshot (kill -9 before the
first one): the whole log is replayed. Producers whose last batch is below the log start offset
(retention, DeleteRecords) are dropped, like Kafka does; producers idle for longer than
`producer_id_expiration_ms` (Kafka's producer.id.expiration.ms, one day) are dropped at snapshot
time.

Producer ids are Snowflake ids (broker.snowflake) with the broker's node id as worker id; their
high-water mark lives in `<data dir>/producer-id.hwm`.

Owner: each partition's state belongs to its broker.partition.Partition, on the broker's Trio thread
(check from connection tasks, update/abort from the writer task). The file work runs elsewhere:
`load_partition_state` at start-up or in a worker thread, `write_snapshot` in a worker thread
(snapshots are encoded on the Trio thread, under the writer's lock or at shutdown), and the
producer-id generator (which may sleep and fsyncs its high-water mark) in a worker thread.
"""
from __future__ import annotations

import collections
import logging
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import crc32c
import trio
from kio.schema.errors import ErrorCode

from .errors import KafkaError
from .snowflake import MAX_WORKER_ID, FileHighWaterMark, SnowflakeGenerator, decompose
from .txn.partition_state import PartitionTxns, marker_kind, rebuild_from_log
from .txn.records import MARKER_ABORT

log = logging.getLogger("ringlog.idempotence")

NUM_BATCHES_TO_RETAIN = 5
NO_PRODUCER_EPOCH = -1
MAX_EPOCH = 32767
INT32_MAX = (1 << 31) - 1
DEFAULT_SNAPSHOT_INTERVAL_MS = 60_000
DEFAULT_PRODUCER_ID_EXPIRATION_MS = 86_400_000
SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOTS_KEPT = 2
HWM_FILE = "producer-id.hwm"

# The error for a retry of a batch that is checked but not yet written (see the module doc).
IN_FLIGHT_DUPLICATE = ErrorCode.not_enough_replicas

TopicPartition = tuple[str, int]


def in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


def last_sequence(header: Any) -> int:
    """The batch's last sequence, wrapping like Kafka's (DefaultRecordBatch.incrementSequence)."""
    base = header.base_sequence
    if base < 0:
        return -1
    return (base + header.last_offset_delta) % (1 << 31)


@attrs.frozen(slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


@attrs.frozen
class DuplicateBatch:
    """A retried batch that is already in the log: answer with these offsets, append nothing."""

    base_offset: int
    last_offset: int


@attrs.define(eq=False, slots=True)
class _Pending:
    header: Any
    epoch: int
    first_seq: int
    last_seq: int


@attrs.define(eq=False)
class ProducerEntry:
    producer_id: int
    epoch: int = NO_PRODUCER_EPOCH
    batches: collections.deque[BatchMetadata] = attrs.field(
        factory=lambda: collections.deque(maxlen=NUM_BATCHES_TO_RETAIN)
    )
    last_timestamp: int = -1
    pending: list[_Pending] = attrs.field(factory=list)

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    def latest(self) -> tuple[int, int]:
        """(epoch, last seq) counting batches in flight; epoch NO_PRODUCER_EPOCH when nothing."""
        if self.pending:
            p = self.pending[-1]
            return p.epoch, p.last_seq
        if self.batches:
            return self.epoch, self.batches[-1].last_seq
        return NO_PRODUCER_EPOCH, -1

    def add_batch(self, epoch: int, meta: BatchMetadata, timestamp: int) -> None:
        if epoch != self.epoch:
            # A new epoch starts a new sequence space: older batches can no longer be duplicates.
            self.epoch = epoch
            self.batches.clear()
        self.batches.append(meta)
        self.last_timestamp = max(self.last_timestamp, timestamp)


class PartitionProducers:
    """The producer state of one partition: the sequence rules, without any I/O."""

    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        # Offset below which every batch has been applied (the log end as far as we know).
        self.applied_offset = 0
        self.log_start_offset = 0
        self.changed = False

    # --- the produce path ---------------------------------------------------------------------

    def check(self, header: Any) -> None | DuplicateBatch | ErrorCode:
        """Accept (None, the batch becomes in flight), a duplicate, or an error code."""
        pid = header.producer_id
        if pid < 0:
            return None
        epoch = header.producer_epoch
        first = header.base_sequence
        last = last_sequence(header)
        if first < 0:
            # A producer id without a sequence: Kafka refuses such client batches.
            return ErrorCode.invalid_record
        entry = self.producers.get(pid)
        if entry is not None:
            if epoch == entry.epoch:
                for b in entry.batches:
                    if b.first_seq == first and b.last_seq == last:
                        return DuplicateBatch(b.first_offset, b.last_offset)
            for p in entry.pending:
                if p.epoch == epoch and p.first_seq == first and p.last_seq == last:
                    return IN_FLIGHT_DUPLICATE
            current_epoch, current_last = entry.latest()
            if current_epoch != NO_PRODUCER_EPOCH:
                if epoch < current_epoch:
                    return ErrorCode.invalid_producer_epoch
                if epoch > current_epoch:
                    if first != 0:
                        return ErrorCode.out_of_order_sequence_number
                elif not in_sequence(current_last, first):
                    return ErrorCode.out_of_order_sequence_number
        else:
            entry = self.producers[pid] = ProducerEntry(pid)
        entry.pending.append(_Pending(header, epoch, first, last))
        return None

    def abort(self, header: Any) -> None:
        entry = self.producers.get(header.producer_id)
        if entry is None:
            return
        self._take_pending(entry, header)
        if not entry.pending and not entry.batches:
            del self.producers[header.producer_id]

    def update(self, header: Any, first_offset: int, last_offset: int, timestamp: int | None = None) -> None:
        """Record a written batch (offsets as assigned by the log)."""
        pid = header.producer_id
        if pid < 0:
            return
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(pid)
        else:
            self._take_pending(entry, header)
        self._apply(entry, header, first_offset, last_offset, timestamp)

    def replay(self, header: Any) -> None:
        """Apply a batch read back from the log (start-up rebuild); no checks."""
        if header.producer_id < 0 or getattr(header, "is_control", False):
            self.applied_offset = max(self.applied_offset, header.base_offset + header.last_offset_delta + 1)
            return
        entry = self.producers.get(header.producer_id)
        if entry is None:
            entry = self.producers[header.producer_id] = ProducerEntry(header.producer_id)
        last_offset = header.base_offset + header.last_offset_delta
        self._apply(entry, header, header.base_offset, last_offset, header.max_timestamp)

    def _apply(self, entry: ProducerEntry, header: Any, first_offset: int, last_offset: int,
               timestamp: int | None) -> None:
        if entry.batches and entry.batches[-1].last_offset >= first_offset:
            return  # already applied (the log was replayed after this batch was written)
        meta = BatchMetadata(header.base_sequence, last_sequence(header), first_offset, last_offset)
        entry.add_batch(header.producer_epoch, meta, header.max_timestamp if timestamp is None else timestamp)
        self.applied_offset = max(self.applied_offset, last_offset + 1)
        self.changed = True

    @staticmethod
    def _take_pending(entry: ProducerEntry, header: Any) -> None:
        for i, p in enumerate(entry.pending):
            if p.header is header:
                del entry.pending[i]
                return
        first, epoch = header.base_sequence, header.producer_epoch
        for i, p in enumerate(entry.pending):
            if p.epoch == epoch and p.first_seq == first:
                del entry.pending[i]
                return

    # --- housekeeping -------------------------------------------------------------------------

    def truncate_head(self, log_start_offset: int) -> int:
        """Drop producers whose every batch is below the new log start offset; how many."""
        self.log_start_offset = max(self.log_start_offset, log_start_offset)
        doomed = [
            pid for pid, e in self.producers.items()
            if not e.pending and e.batches and e.last_offset < log_start_offset
        ]
        for pid in doomed:
            del self.producers[pid]
        if doomed:
            self.changed = True
        return len(doomed)

    def expire(self, now_ms: int, max_idle_ms: int) -> int:
        doomed = [
            pid for pid, e in self.producers.items()
            if not e.pending and e.batches and e.last_timestamp >= 0 and now_ms - e.last_timestamp > max_idle_ms
        ]
        for pid in doomed:
            del self.producers[pid]
        if doomed:
            self.changed = True
        return len(doomed)

    def fence(self, producer_id: int, epoch: int, last_offset: int) -> None:
        """A transaction marker written with `epoch`: older epochs of the producer are fenced here
        and its sequences restart (Kafka's ProducerAppendInfo.appendEndTxnMarker)."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(producer_id)
        if epoch > entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()
        self.applied_offset = max(self.applied_offset, last_offset + 1)
        self.changed = True

    def max_epoch(self, producer_id: int) -> int:
        entry = self.producers.get(producer_id)
        if entry is None:
            return NO_PRODUCER_EPOCH
        return max([entry.epoch] + [p.epoch for p in entry.pending])

    # --- snapshots ----------------------------------------------------------------------------

    def encode_snapshot(self, offset: int) -> bytes:
        body = bytearray(_SNAP_BODY_HEAD.pack(offset, 0))
        count = 0
        for entry in self.producers.values():
            if not entry.batches:
                continue  # only in flight: nothing written yet
            count += 1
            body += _SNAP_PRODUCER.pack(entry.producer_id, entry.epoch, entry.last_timestamp, len(entry.batches))
            for b in entry.batches:
                body += _SNAP_BATCH.pack(b.first_seq, b.last_seq, b.first_offset, b.last_offset)
        _SNAP_BODY_HEAD.pack_into(body, 0, offset, count)
        return _SNAP_HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc32c.crc32c(bytes(body))) + bytes(body)

    @classmethod
    def decode_snapshot(cls, data: bytes) -> tuple[int, PartitionProducers]:
        """(offset, state); ValueError when the file is damaged."""
        if len(data) < _SNAP_HEAD.size + _SNAP_BODY_HEAD.size:
            raise ValueError("snapshot too short")
        magic, version, crc = _SNAP_HEAD.unpack_from(data, 0)
        if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION:
            raise ValueError(f"not a version {SNAPSHOT_VERSION} producer snapshot")
        body = memoryview(data)[_SNAP_HEAD.size :]
        if crc32c.crc32c(body) != crc:
            raise ValueError("snapshot checksum mismatch")
        offset, count = _SNAP_BODY_HEAD.unpack_from(body, 0)
        pos = _SNAP_BODY_HEAD.size
        state = cls()
        try:
            for _ in range(count):
                pid, epoch, ts, n = _SNAP_PRODUCER.unpack_from(body, pos)
                pos += _SNAP_PRODUCER.size
                entry = ProducerEntry(pid, epoch=epoch, last_timestamp=ts)
                for _ in range(n):
                    entry.batches.append(BatchMetadata(*_SNAP_BATCH.unpack_from(body, pos)))
                    pos += _SNAP_BATCH.size
                state.producers[pid] = entry
        except struct.error:
            raise ValueError("snapshot truncated") from None
        if pos != len(body):
            raise ValueError("trailing bytes in snapshot")
        state.applied_offset = offset
        return offset, state


SNAPSHOT_MAGIC = b"RLPS"
SNAPSHOT_VERSION = 1
_SNAP_HEAD = struct.Struct(">4sHI")
_SNAP_BODY_HEAD = struct.Struct(">qI")
_SNAP_PRODUCER = struct.Struct(">qhqB")
_SNAP_BATCH = struct.Struct(">iiqq")


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(offset, path) of the snapshot files in a partition directory, oldest first."""
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if name.endswith(SNAPSHOT_SUFFIX):
            stem = name[: -len(SNAPSHOT_SUFFIX)]
            if len(stem) == 20 and stem.isdigit():
                found.append((int(stem), directory / name))
    return sorted(found)


def _atomic_write(path: Path, data: bytes) -> None:
    from ringlog.storage.checkpoint import atomic_write

    atomic_write(path, data)


# --- producer ids ------------------------------------------------------------------------------


class ProducerIdAllocator:
    """InitProducerId: new Snowflake producer ids at epoch 0, or epoch bumps of a known id."""

    accept_foreign_ids = False  # cluster mode sets it (is_ours)

    def __init__(self, generator: SnowflakeGenerator) -> None:
        self.generator = generator
        # Epochs handed out by this broker since start (the partition states know the rest).
        self.epochs: dict[int, int] = {}

    def new_id(self) -> tuple[int, int]:
        pid = self.generator.next_id()
        self.epochs[pid] = 0
        return pid, 0

    def is_ours(self, producer_id: int) -> bool:
        """Could this broker have issued `producer_id`? (worker bits and not from the future)"""
        if producer_id < 0:
            return False
        try:
            parts = decompose(producer_id, epoch_ms=self.generator.epoch_ms)
        except ValueError:
            return False
        if parts.worker_id != self.generator.worker_id:
            # cluster mode: ids are unique cluster-wide (worker id = node id), any broker may
            # re-initialise one after a leader change
            return self.accept_foreign_ids
        mark = self.generator.high_water_mark
        return producer_id in self.epochs or (mark is not None and parts.timestamp_ms < mark)

    def reinit(self, producer_id: int, epoch: int, known_epoch: int) -> tuple[int, int]:
        """KIP-360 re-initialisation: the same id with the next epoch (a new id when exhausted).

        `known_epoch` is the newest epoch the partitions have seen for the id. A producer presenting
        an older epoch than that is a zombie: fenced.
        """
        known = max(known_epoch, self.epochs.get(producer_id, NO_PRODUCER_EPOCH))
        if not self.is_ours(producer_id):
            raise KafkaError(ErrorCode.invalid_producer_id_mapping, f"producer id {producer_id} was not issued here")
        if epoch < known:
            raise KafkaError(
                ErrorCode.producer_fenced, f"producer {producer_id} epoch {epoch} is older than {known}"
            )
        new_epoch = max(epoch, known) + 1
        if new_epoch >= MAX_EPOCH:
            # Epochs exhausted: Kafka hands out a new producer id.
            return self.new_id()
        self.epochs[producer_id] = new_epoch
        return producer_id, new_epoch


def make_generator(data_dir: str | os.PathLike, node_id: int) -> SnowflakeGenerator:
    worker = node_id & MAX_WORKER_ID
    if worker != node_id:
        log.warning("node id %d does not fit the 10-bit worker field of producer ids; using %d", node_id, worker)
    return SnowflakeGenerator(worker, store=FileHighWaterMark(Path(data_dir) / HWM_FILE))


# --- one partition's state, and the broker-wide manager ---------------------------------------


@attrs.frozen
class Snapshot:
    """A producer-state snapshot encoded on the owner's thread, to be written in a worker thread."""

    directory: Path
    offset: int
    data: bytes


@attrs.define(eq=False)
class PartitionProducerState:
    """One partition's producers and when they were last snapshotted; owned by its
    broker.partition.Partition, on the Trio thread. Nothing here touches the disk: snapshots are
    built here (`snapshot_due`) and written by `write_snapshot` in a worker thread."""

    directory: Path
    state: PartitionProducers = attrs.field(factory=PartitionProducers)
    last_snapshot_ms: int = 0
    last_snapshot_offset: int = -1
    # open and aborted transactions (last stable offset, aborted-transactions index)
    txns: PartitionTxns = attrs.field(factory=PartitionTxns)

    def check(self, header: Any) -> None | DuplicateBatch | ErrorCode:
        if header.producer_id < 0:
            return None
        return self.state.check(header)

    def update(self, header: Any, info: Any, batch: Any = None) -> None:
        if header.producer_id < 0:
            return
        first = int(info.base_offset)
        last = int(getattr(info, "last_offset", first + header.last_offset_delta))
        if header.is_control:  # a transaction marker, written by the coordinator
            self.state.fence(header.producer_id, header.producer_epoch, last)
            try:
                kind = marker_kind(batch, header) if batch is not None else None
            except Exception:  # unreadable: the safe side, its records stay hidden from read_committed
                kind = MARKER_ABORT
            self.txns.on_batch(header, first, last, kind)
            return
        self.state.update(header, first, last, header.max_timestamp)
        if header.is_transactional:
            self.txns.on_batch(header, first, last)

    def abort(self, header: Any) -> None:
        if header.producer_id >= 0:
            self.state.abort(header)

    def truncate_head(self, log_start_offset: int) -> None:
        self.state.truncate_head(log_start_offset)
        self.txns.truncate_head(log_start_offset)

    def snapshot_due(self, now_ms: int, *, interval_ms: int, expiration_ms: int, log_start_offset: int,
                     offset: int, force: bool = False) -> Snapshot | None:
        """The snapshot to write at `offset` (every batch below it applied), when one is due."""
        if not force and now_ms - self.last_snapshot_ms < interval_ms:
            return None
        self.last_snapshot_ms = now_ms
        state = self.state
        state.expire(now_ms, expiration_ms)
        state.truncate_head(log_start_offset)
        if not state.changed and self.last_snapshot_offset >= 0:
            return None
        # Taken as written: a failed write (write_snapshot logs it) only means a later start
        # replays more of the log, which is the truth.
        state.changed = False
        self.last_snapshot_offset = offset
        return Snapshot(self.directory, offset, state.encode_snapshot(offset))


def write_snapshot(snapshot: Snapshot) -> bool:
    """Write one snapshot and drop the older ones (worker thread or shutdown); False on failure."""
    try:
        _atomic_write(snapshot.directory / snapshot_name(snapshot.offset), snapshot.data)
    except OSError as exc:
        # Not fatal: the log is the truth and a later start replays more of it.
        log.warning("%s: cannot write producer snapshot: %s", snapshot.directory.name, exc)
        return False
    for _old, path in list_snapshots(snapshot.directory)[:-SNAPSHOTS_KEPT]:
        _unlink(path)
    return True


def load_partition_state(tp: TopicPartition, plog: Any, now_ms: int) -> tuple[PartitionProducerState, int]:
    """A partition's producer state from its newest snapshot plus the log after it, and how many
    batches were replayed. File work: call it at start-up or from a worker thread."""
    directory = Path(plog.directory)
    end = plog.log_end_offset
    start = plog.log_start_offset
    state: PartitionProducers | None = None
    snap_offset = -1
    for offset, path in reversed(list_snapshots(directory)):
        if offset > end:
            # Written before the log lost its tail (crash recovery cut it): it describes
            # batches that no longer exist.
            log.info("%s-%d: removing producer snapshot %s above the log end %d", *tp, path.name, end)
            _unlink(path)
            continue
        if state is not None:
            continue
        try:
            snap_offset, state = PartitionProducers.decode_snapshot(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("%s-%d: ignoring producer snapshot %s: %s", *tp, path.name, exc)
            state = None
    if state is None:
        state, snap_offset = PartitionProducers(), start
    replay_from = max(snap_offset, start)
    replayed = 0
    if replay_from < end:
        for header in plog.iter_batch_headers(replay_from):
            if header.base_offset + header.last_offset_delta < replay_from:
                continue
            state.replay(header)
            replayed += 1
    state.applied_offset = end
    state.truncate_head(start)
    state.changed = replayed > 0
    if replayed:
        log.info("%s-%d: producer state rebuilt from offset %d (%d batches)", *tp, replay_from, replayed)
    txns = rebuild_from_log(plog)
    return PartitionProducerState(directory, state, last_snapshot_ms=now_ms, last_snapshot_offset=snap_offset,
                                  txns=txns), replayed


class ProducerStateManager:
    """`broker.producer_state`: producer ids (InitProducerId) and the snapshot settings; the state
    of each partition lives in its broker.partition.Partition (`partition.producers`)."""

    def __init__(self, config: Any, node_id: int, partitions: Callable[[], Iterable[Any]], *,
                 snapshot_interval_ms: int | None = None, producer_id_expiration_ms: int | None = None) -> None:
        self.snapshot_interval_ms = (
            snapshot_interval_ms if snapshot_interval_ms is not None
            else getattr(config, "producer_snapshot_interval_ms", DEFAULT_SNAPSHOT_INTERVAL_MS)
        )
        self.producer_id_expiration_ms = (
            producer_id_expiration_ms if producer_id_expiration_ms is not None
            else getattr(config, "producer_id_expiration_ms", DEFAULT_PRODUCER_ID_EXPIRATION_MS)
        )
        self._partitions = partitions
        # Created at start-up: loading the generator reads (and may create) its high-water mark.
        self.allocator = ProducerIdAllocator(make_generator(config.data_dir, node_id))
        # The generator may sleep (a clock step back) and fsyncs its high-water mark: it runs in a
        # worker thread, one call at a time.
        self._allocator_lock = trio.Lock()
        self.snapshots_written = 0
        self.rebuilt_batches = 0

    def snapshot_due(self, partition: Any, now_ms: int, *, force: bool = False) -> Snapshot | None:
        plog = partition.log
        # The snapshot covers what the state has applied (every written batch the writer
        # reported). Not the log end: a writer round cut short by shutdown may have appended
        # batches it never reported; the next start replays them from the log.
        offset = min(partition.producers.state.applied_offset, plog.log_end_offset)
        return partition.producers.snapshot_due(
            now_ms, interval_ms=self.snapshot_interval_ms, expiration_ms=self.producer_id_expiration_ms,
            log_start_offset=plog.log_start_offset, offset=offset, force=force)

    def write(self, snapshots: Iterable[Snapshot]) -> int:
        """Write snapshots (worker thread); how many were written."""
        written = sum(1 for snap in snapshots if write_snapshot(snap))
        self.snapshots_written += written
        return written

    def snapshot_all(self, now_ms: int) -> list[Snapshot]:
        """Every open partition's snapshot at its applied end (clean shutdown), to be written."""
        snaps = []
        for partition in list(self._partitions()):
            if partition.closed or getattr(partition.log, "closed", False):
                continue
            snap = self.snapshot_due(partition, now_ms, force=True)
            if snap is not None:
                snaps.append(snap)
        return snaps

    # --- InitProducerId -----------------------------------------------------------------------

    def known_epoch(self, producer_id: int) -> int:
        epochs = [p.producers.state.max_epoch(producer_id) for p in self._partitions()]
        return max(epochs, default=NO_PRODUCER_EPOCH)

    async def init_producer_id(self, producer_id: int = -1, producer_epoch: int = -1) -> tuple[int, int]:
        """(producer id, epoch) for an idempotent producer; KafkaError for a refusal."""
        if producer_id < 0 and producer_epoch < 0:
            async with self._allocator_lock:
                return await trio.to_thread.run_sync(self.allocator.new_id)
        if producer_id < 0 or producer_epoch < 0:
            raise KafkaError(ErrorCode.invalid_request, "producer id and epoch must both be set or both be -1")
        known = self.known_epoch(producer_id)
        async with self._allocator_lock:
            return await trio.to_thread.run_sync(self.allocator.reinit, producer_id, producer_epoch, known)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)


def replay_headers(headers: Iterable[Any], state: PartitionProducers | None = None) -> PartitionProducers:
    """A state built from batch headers alone (offline tools, tests)."""
    state = state or PartitionProducers()
    for header in headers:
        state.replay(header)
    return state
