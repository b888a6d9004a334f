"""Trio Kafka consumer: manual assignment or group subscription, pipelined fetches, lazy decoding.

    async with open_consumer("127.0.0.1:9092", group_id="g", auto_offset_reset="earliest") as c:
        c.subscribe(["events"])
        async for record in c:
            ...

Tasks (all in the consumer's nursery, opened by `async with`):

- the fetcher: for every broker leading a fetchable partition it keeps one Fetch in flight. A
  partition is fetchable when it is assigned, not paused, its position is known, and no fetched
  data for it is waiting to be read -- except the fetch the application is reading right now, so the
  next fetch travels while the application works through the current one (pipelining).
- position resolution: partitions without a position get the group's committed offset
  (OffsetFetch) or, failing that, `auto_offset_reset` (ListOffsets earliest/latest).
- with a group_id and subscribe(): the group task (FindCoordinator, JoinGroup with the two-step
  MEMBER_ID_REQUIRED join, SyncGroup -- the leader runs the assignor from client.assignors -- then
  Heartbeat every heartbeat_interval; rejoin on REBALANCE_IN_PROGRESS, on a subscription or
  partition-count change, and from scratch after UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION), and the
  auto-commit task.

Fetched data is checked batch by batch: CRC-32C over bytes 21.., a partial batch at the end of a
partition's slice is skipped (the next fetch starts at it), control batches are skipped, and with
isolation_level='read_committed' batches of aborted transactions (the response's
aborted_transactions list, closed by the producer's ABORT marker) are dropped. Records are decoded
only when the iterator reaches their batch.

Rebalance listener: an object with optional async (or plain) methods on_partitions_revoked(tps),
on_partitions_assigned(tps), on_partitions_lost(tps), called from the group task. With the eager
protocols (range, roundrobin) every rebalance revokes everything first; with cooperative-sticky
only the partitions that move are revoked, followed by a second join.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
import re
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import crc32c
import trio

from ringlog.storage.batch import HEADER, HEADER_SIZE
from ringlog.storage.errors import CorruptBatchError
from ringlog.storage.records import DEFAULT_MAX_DECOMPRESSED, RecordShape, decode_block, decompress, track_record

from . import assignors as _assignors
from ._lifetime import Lifetime, open_owned_nursery
from .cluster import LEADERSHIP_ERRORS, Cluster
from .connection import ApiKey
from .errors import (
    AuthenticationError,
    ClientClosed,
    ConnectionLost,
    CorruptRecord,
    KafkaError,
    NoBrokersAvailable,
    RequestTimedOut,
)
from .security import SecurityConfig

__all__ = ["ConsumerRecord", "Consumer", "OffsetAndTimestamp", "TopicPartition", "open_consumer"]

log = logging.getLogger(__name__)

_CONTROL = 0x20
_TRANSACTIONAL = 0x10
_LOG_APPEND = 0x08
# getone() yields to the scheduler at least once every this many calls: the fetcher then sends
# the next Fetch while the application works through what is buffered
_YIELD_EVERY = 512

# error codes
_OFFSET_OUT_OF_RANGE = 1
_REBALANCE_IN_PROGRESS = 27
_ILLEGAL_GENERATION = 22
_UNKNOWN_MEMBER_ID = 25
_MEMBER_ID_REQUIRED = 79
_FENCED_INSTANCE_ID = 82
_COORDINATOR_ERRORS = frozenset({14, 15, 16})


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp: int


class ConsumerRecord:
    __slots__ = ("topic", "partition", "offset", "timestamp", "timestamp_type", "key", "value", "headers", "leader_epoch")

    def __init__(self, topic, partition, offset, timestamp, timestamp_type, key, value, headers, leader_epoch=-1):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.timestamp_type = timestamp_type  # 0 CreateTime, 1 LogAppendTime
        self.key = key
        self.value = value
        self.headers = headers
        self.leader_epoch = leader_epoch

    def __repr__(self) -> str:
        return (f"ConsumerRecord(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
                f"timestamp={self.timestamp}, key={self.key!r}, value={self.value!r}, headers={self.headers!r})")


# --- record decoding (lazy, one batch at a time) ------------------------------------------------

# storage.records decodes the records (its one decoder, compiled when storage/_speedups.c was
# built) straight into ConsumerRecords: the four per-batch slots get the same value in every
# record of a batch.
_SHAPE = RecordShape(ConsumerRecord, ("topic", "partition", "timestamp_type", "leader_epoch"))

if track_record is not None:
    _object_setattr = object.__setattr__

    def _setattr_tracked(self, name, value):
        # The compiled decoder leaves records untracked by the cycle collector (they hold only
        # atoms then). Whatever is stored from Python -- a deserialized value, anything a user
        # sets -- might reach back to the record, so the record is tracked again first.
        track_record(self)
        _object_setattr(self, name, value)

    ConsumerRecord.__setattr__ = _setattr_tracked  # type: ignore[method-assign]


def decode_batch_records(topic: str, partition: int, raw, header: tuple, deserialize_key=None, deserialize_value=None,
                         max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> list[ConsumerRecord]:
    """Decode one whole batch (header fields as unpacked by storage.batch.HEADER) into
    ConsumerRecords. Compressed records inflating past `max_decompressed` bytes raise
    DecompressedTooLargeError; malformed records CorruptRecord."""
    (base_offset, _blen, leader_epoch, _magic, _crc, attributes, _lod, base_ts, max_ts, _pid, _pe, _bs, count) = header
    codec = attributes & 7
    if codec:
        body = decompress(codec, memoryview(raw)[HEADER_SIZE:], max_decompressed)
    else:
        body = memoryview(raw)[HEADER_SIZE:]
    log_append = bool(attributes & _LOG_APPEND)
    try:
        out, _end = decode_block(body, count, base_offset, base_ts, max_ts, log_append, _SHAPE,
                                 (topic, partition, 1 if log_append else 0, leader_epoch))
    except CorruptBatchError as exc:
        raise CorruptRecord(str(exc)) from None
    if deserialize_key is not None or deserialize_value is not None:
        for r in out:
            if deserialize_key is not None and r.key is not None:
                r.key = deserialize_key(r.key)
            if deserialize_value is not None and r.value is not None:
                r.value = deserialize_value(r.value)
    return out


class _Fetched:
    """One partition's slice of one Fetch response: whole, CRC-checked batches not yet read."""

    __slots__ = ("tp", "epoch", "batches", "next_offset", "hw", "lso", "log_start")

    def __init__(self, tp, epoch, batches, next_offset, hw, lso, log_start):
        self.tp = tp
        self.epoch = epoch
        self.batches = batches  # deque of (header tuple, memoryview)
        self.next_offset = next_offset
        self.hw = hw
        self.lso = lso
        self.log_start = log_start


def split_fetched(records, fetch_offset: int, *, check_crcs: bool = True, read_committed: bool = False,
                  aborted: Sequence[tuple[int, int]] = ()) -> tuple[list, int]:
    """Whole data batches of a partition's records blob, and the offset to fetch next.

    Skips a partial batch at the end, control batches and (read_committed) aborted transactions'
    batches. Raises CorruptRecord on a CRC mismatch or an impossible batch length."""
    view = memoryview(records)
    n = len(view)
    pos = 0
    out = []
    next_offset = fetch_offset
    aborted_q = sorted(aborted, key=lambda a: a[1])
    ai = 0
    aborting: set[int] = set()
    while n - pos >= HEADER_SIZE:
        h = HEADER.unpack_from(view, pos)
        size = h[1] + 12
        if h[1] < HEADER_SIZE - 12:
            raise CorruptRecord(f"batch length {h[1]} at byte {pos} of a fetch from offset {fetch_offset}")
        if pos + size > n:
            break  # partial batch at the end of the slice: fetched again next time
        raw = view[pos : pos + size]
        pos += size
        if h[3] != 2:
            raise CorruptRecord(f"magic {h[3]} batch at offset {h[0]}: only magic 2 is supported", offset=h[0])
        if check_crcs and crc32c.crc32c(raw[21:]) != h[4]:
            raise CorruptRecord(f"CRC-32C mismatch in the batch at offset {h[0]}", offset=h[0])
        last = h[0] + h[6]
        if last + 1 > next_offset:
            next_offset = last + 1
        if last < fetch_offset:
            continue
        attributes = h[5]
        if read_committed:
            while ai < len(aborted_q) and aborted_q[ai][1] <= last:
                aborting.add(aborted_q[ai][0])
                ai += 1
        if attributes & _CONTROL:
            if read_committed and h[9] in aborting:
                aborting.discard(h[9])  # the ABORT (or COMMIT) marker ends that transaction
            continue
        if read_committed and attributes & _TRANSACTIONAL and h[9] in aborting:
            continue
        out.append((h, raw))
    return out, next_offset


# --- partition state --------------------------------------------------------------------------


class _PState:
    __slots__ = ("position", "fetch_position", "paused", "epoch", "in_flight", "buffered",
                 "hw", "lso", "log_start", "leader_epoch", "reset")

    def __init__(self) -> None:
        self.position: int | None = None       # next offset the application gets
        self.fetch_position: int | None = None  # next offset to fetch
        self.paused = False
        self.epoch = 0          # bumped by seeks: fetched data of an older epoch is dropped
        self.in_flight = False
        self.buffered = 0       # fetched slices waiting in the queue
        self.hw = -1
        self.lso = -1
        self.log_start = -1
        self.leader_epoch = -1
        self.reset: str | None = None  # "earliest"/"latest" forced by seek_to_*


async def _call(fn, *args):
    if fn is None:
        return
    r = fn(*args)
    if inspect.isawaitable(r):
        await r


class Consumer(Lifetime):
    """Kafka consumer; use as ``async with Consumer(bootstrap, **config) as c``.

    Config: client_id, group_id, group_instance_id, auto_offset_reset ('earliest', 'latest',
    'none'), enable_auto_commit, auto_commit_interval_ms, fetch_min_bytes, fetch_max_bytes,
    max_partition_fetch_bytes, fetch_max_wait_ms, isolation_level ('read_uncommitted',
    'read_committed'), session_timeout_ms, heartbeat_interval_ms, max_poll_interval_ms
    (rebalance timeout), partition_assignment_strategy (names from client.assignors, in
    preference order), check_crcs, key_deserializer, value_deserializer, request_timeout_ms,
    retry_backoff_ms, metadata_max_age_ms, max_decompressed_bytes (the most a fetched batch's
    compressed records may inflate to; a batch beyond it raises CorruptRecord, so a broken or
    hostile broker cannot make the consumer allocate gigabytes), and the security options of
    client.security (security_protocol, sasl_mechanism, sasl_username, sasl_password,
    ssl_ca_location, ...).
    """

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092",
        *topics: str,
        client_id: str = "ringlog-consumer",
        group_id: str | None = None,
        group_instance_id: str | None = None,
        auto_offset_reset: str = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: float = 5000,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 52428800,
        max_partition_fetch_bytes: int = 1048576,
        fetch_max_wait_ms: float = 500,
        isolation_level: str = "read_uncommitted",
        session_timeout_ms: float = 45000,
        heartbeat_interval_ms: float = 3000,
        max_poll_interval_ms: float = 300000,
        partition_assignment_strategy: Sequence[str] | str = ("range", "cooperative-sticky"),
        check_crcs: bool = True,
        key_deserializer=None,
        value_deserializer=None,
        request_timeout_ms: float = 30000,
        retry_backoff_ms: float = 100,
        metadata_max_age_ms: float = 300000,
        connect_timeout_ms: float = 10000,
        rebalance_listener=None,
        max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED,
        **security: Any,
    ) -> None:
        self._security = SecurityConfig.from_options(security, "Consumer")
        self._bootstrap = bootstrap_servers
        self.client_id = client_id
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError("auto_offset_reset must be 'earliest', 'latest' or 'none'")
        self.auto_offset_reset = auto_offset_reset
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self.auto_commit_interval = auto_commit_interval_ms / 1000
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.fetch_max_wait_ms = int(fetch_max_wait_ms)
        if isolation_level not in ("read_uncommitted", "read_committed"):
            raise ValueError("isolation_level must be 'read_uncommitted' or 'read_committed'")
        self.read_committed = isolation_level == "read_committed"
        self.session_timeout_ms = int(session_timeout_ms)
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        self.rebalance_timeout_ms = int(max_poll_interval_ms)
        if isinstance(partition_assignment_strategy, str):
            partition_assignment_strategy = [partition_assignment_strategy]
        self._assignors = [_assignors.get_assignor(n) for n in partition_assignment_strategy]
        self.check_crcs = check_crcs
        self._kdes = key_deserializer
        self._max_decompressed = max_decompressed_bytes
        self._vdes = value_deserializer
        self.request_timeout = request_timeout_ms / 1000
        self.retry_backoff = retry_backoff_ms / 1000
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.connect_timeout = connect_timeout_ms / 1000
        self._listener = rebalance_listener

        self._parts: dict[TopicPartition, _PState] = {}
        self._queue: deque[_Fetched] = deque()
        # The slice being read and the decoded records of its current batch: _recs[_ri:] are
        # still to be handed out; _rend is the offset after that batch (positions jump to it
        # when the batch is done, past compacted-away or control records).
        self._current: _Fetched | None = None
        self._recs: list[ConsumerRecord] = []
        self._ri = 0
        self._rend = 0
        self._gets = 0  # getone() calls since it last yielded
        self._data_lot = trio.lowlevel.ParkingLot()
        self._fetch_wakeup = trio.Event()
        self._fetch_error: BaseException | None = None
        self._node_fetching: set[int] = set()
        self._resolving: set[TopicPartition] = set()

        # group state
        self._subscription: set[str] = set()
        self._pattern: re.Pattern | None = None
        self._manual = False
        self.member_id = ""
        self.generation_id = -1
        self._coordinator: int | None = None
        self._rejoin = trio.Event()
        self._group_started = False
        self._assigned_once = trio.Event()
        self._protocol: str | None = None
        self._group_error: BaseException | None = None

        self._started = False
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self.cluster: Cluster | None = None
        if topics:
            self.subscribe(list(topics))

    # --- lifetime

    @contextlib.asynccontextmanager
    async def _lifetime(self):
        if self._started:
            raise RuntimeError("a Consumer can be entered once")
        self._started = True
        async with open_owned_nursery() as nursery:
            self._nursery = nursery
            try:
                self.cluster = Cluster(
                    nursery, self._bootstrap, client_id=self.client_id,
                    request_timeout=self.request_timeout, connect_timeout=self.connect_timeout,
                    metadata_max_age=self.metadata_max_age, retry_backoff=self.retry_backoff,
                    allow_auto_topic_creation=False, logger=log, security=self._security,
                )
                await self.cluster.refresh()
                nursery.start_soon(self._fetcher)
                if self.enable_auto_commit:
                    nursery.start_soon(self._auto_commit_loop)
                if self._subscription or self._pattern is not None:
                    self._start_group()
                try:
                    yield self
                except BaseException:
                    # The block failed or was cancelled: its positions may not have been
                    # processed, so nothing is committed; the group is still left.
                    self._closed = True
                    await self._leave(commit=False)
                    raise
                self._closed = True
                await self._leave(commit=True)
                # The commit and leave above are shielded; a cancellation that arrived meanwhile
                # (or in the block's last line) is delivered here, not lost.
                await trio.lowlevel.checkpoint_if_cancelled()
            finally:
                self._closed = True
                nursery.cancel_scope.cancel()
                self._data_lot.unpark_all()
                if self.cluster is not None:
                    with trio.CancelScope(shield=True):
                        await self.cluster.aclose()

    async def close(self) -> None:
        await self.__aexit__(None, None, None)

    async def _leave(self, commit: bool) -> None:
        """Commit the positions (`commit` and auto-commit on) and leave the group, shielded and
        bounded by request_timeout.

        A failed commit is logged, not raised: at close it mostly meets a rebalance that other
        members leaving at the same time started, and the only effect is that the partitions'
        next owner reads a few records again. A caller that must know calls commit() itself at the
        end of the block, which raises. Leaving is best effort (the coordinator drops the member
        after session_timeout anyway)."""
        committing = commit and self.enable_auto_commit
        with trio.move_on_after(self.request_timeout) as scope:
            scope.shield = True
            if committing:
                try:
                    await self.commit()
                except (KafkaError, ConnectionLost, RequestTimedOut, NoBrokersAvailable, ClientClosed) as exc:
                    log.warning("%s: commit on close of group %s failed, its records may be read again: %r",
                                self.client_id, self.group_id, exc)
                committing = False
            with contextlib.suppress(KafkaError, ConnectionLost, RequestTimedOut, NoBrokersAvailable, ClientClosed):
                if self.group_id is not None and self.member_id and self._coordinator is not None:
                    await _call(getattr(self._listener, "on_partitions_revoked", None), self.assignment())
                    conn = await self.cluster.connection(self._coordinator)
                    b = conn.make(ApiKey.LEAVE_GROUP)
                    await conn.request(b(group_id=self.group_id, member_id=self.member_id,
                                         members=[b("MemberIdentity", member_id=self.member_id,
                                                    group_instance_id=self.group_instance_id)]
                                         if b.has("MemberIdentity") else ()), timeout=5)
                    self.member_id = ""
        if scope.cancelled_caught and committing:
            log.warning("%s: commit on close of group %s did not finish within %.0f s, its records may be read again",
                        self.client_id, self.group_id, self.request_timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("consumer is closed")

    # --- assignment / subscription

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Manual assignment (no group membership); replaces any earlier assignment."""
        if self._subscription or self._pattern is not None:
            raise RuntimeError("assign() and subscribe() cannot be mixed")
        self._manual = True
        self._set_assignment([TopicPartition(*tp) for tp in partitions])

    def subscribe(self, topics: Iterable[str] | str | re.Pattern | None = None, *, pattern: str | re.Pattern | None = None,
                  listener=None) -> None:
        """Join `group_id` for `topics` (names, or a regex pattern matched against all topics)."""
        if self._manual:
            raise RuntimeError("assign() and subscribe() cannot be mixed")
        if self.group_id is None:
            raise ValueError("subscribe() needs a group_id")
        if isinstance(topics, re.Pattern):
            pattern, topics = topics, None
        elif isinstance(topics, str):
            topics = [topics]
        if pattern is not None:
            self._pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
            self._subscription = set()
        else:
            self._pattern = None
            self._subscription = set(topics or ())
        if listener is not None:
            self._listener = listener
        if self._started:
            self._start_group()
            self._rejoin.set()

    def unsubscribe(self) -> None:
        self._subscription = set()
        self._pattern = None
        self._set_assignment([])
        self._rejoin.set()

    def subscription(self) -> set[str]:
        return set(self._subscription)

    def assignment(self) -> set[TopicPartition]:
        return set(self._parts)

    def _set_assignment(self, tps: Iterable[TopicPartition]) -> None:
        tps = set(tps)
        for tp in list(self._parts):
            if tp not in tps:
                del self._parts[tp]
        for tp in tps:
            if tp not in self._parts:
                self._parts[tp] = _PState()
        self._queue = deque(f for f in self._queue if f.tp in self._parts)
        for tp, ps in self._parts.items():
            ps.buffered = sum(1 for f in self._queue if f.tp == tp)
        if self._current is not None and self._current.tp not in self._parts:
            self._current = None
            self._recs = []
        self._fetch_wakeup.set()

    def _state(self, tp) -> _PState:
        tp = TopicPartition(*tp)
        ps = self._parts.get(tp)
        if ps is None:
            raise KafkaError(3, f"{tp} is not assigned to this consumer")
        return ps

    # --- positions

    def _invalidate(self, tp: TopicPartition, ps: _PState) -> None:
        ps.epoch += 1
        self._queue = deque(f for f in self._queue if f.tp != tp)
        ps.buffered = 0
        if self._current is not None and self._current.tp == tp:
            self._current = None
            self._recs = []
        self._fetch_wakeup.set()

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        tp = TopicPartition(*tp)
        ps = self._state(tp)
        self._invalidate(tp, ps)
        ps.position = ps.fetch_position = int(offset)
        ps.reset = None

    def seek_to_beginning(self, *tps: tuple[str, int]) -> None:
        for tp in tps or list(self._parts):
            tp = TopicPartition(*tp)
            ps = self._state(tp)
            self._invalidate(tp, ps)
            ps.position = ps.fetch_position = None
            ps.reset = "earliest"

    def seek_to_end(self, *tps: tuple[str, int]) -> None:
        for tp in tps or list(self._parts):
            tp = TopicPartition(*tp)
            ps = self._state(tp)
            self._invalidate(tp, ps)
            ps.position = ps.fetch_position = None
            ps.reset = "latest"

    async def position(self, tp: tuple[str, int]) -> int:
        """The offset of the next record the application gets (resolving it if needed)."""
        ps = self._state(tp)
        while ps.position is None:
            self._fetch_wakeup.set()
            await self._wait_data(0.05)
            self._raise_pending()
        return ps.position

    def pause(self, *tps: tuple[str, int]) -> None:
        for tp in tps:
            self._state(tp).paused = True

    def resume(self, *tps: tuple[str, int]) -> None:
        for tp in tps:
            self._state(tp).paused = False
        self._fetch_wakeup.set()

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, ps in self._parts.items() if ps.paused}

    def highwater(self, tp: tuple[str, int]) -> int:
        return self._state(tp).hw

    def last_stable_offset(self, tp: tuple[str, int]) -> int:
        return self._state(tp).lso

    async def _list_offsets(self, requests: dict[TopicPartition, int], *, partial: bool = False) -> dict[TopicPartition, tuple[int, int]]:
        """ListOffsets per leader: tp -> timestamp spec (-2 earliest, -1 latest, else ms).
        Returns tp -> (offset, timestamp); offset -1 when no record is that late."""
        out: dict[TopicPartition, tuple[int, int]] = {}
        todo = dict(requests)
        for attempt in range(10):
            await self.cluster.refresh({tp.topic for tp in todo} - self.cluster.topics.keys() or None) \
                if any(self.cluster.leader(*tp) < 0 for tp in todo) else None
            by_node: dict[int, list[TopicPartition]] = {}
            for tp in todo:
                by_node.setdefault(self.cluster.leader(*tp), []).append(tp)
            retry: dict[TopicPartition, int] = {}
            for node, tps in by_node.items():
                if node < 0:
                    retry.update({tp: todo[tp] for tp in tps})
                    continue
                try:
                    conn = await self.cluster.connection(node)
                    b = conn.make(ApiKey.LIST_OFFSETS)
                    topics: dict[str, list] = {}
                    for tp in tps:
                        topics.setdefault(tp.topic, []).append(
                            b("ListOffsetsPartition", partition_index=tp.partition, timestamp=todo[tp],
                              current_leader_epoch=-1, max_num_offsets=1))
                    resp = await conn.request(b(
                        replica_id=-1, isolation_level=1 if self.read_committed else 0,
                        topics=[b("ListOffsetsTopic", name=t, partitions=ps) for t, ps in topics.items()]))
                except (ConnectionLost, RequestTimedOut, NoBrokersAvailable):
                    retry.update({tp: todo[tp] for tp in tps})
                    continue
                for t in resp.topics:
                    for p in t.partitions:
                        tp = TopicPartition(t.name, int(p.partition_index))
                        if tp not in todo:
                            continue
                        if p.error_code:
                            err = KafkaError(p.error_code, f"ListOffsets {tp}")
                            if not err.retriable:
                                raise err
                            retry[tp] = todo[tp]
                        else:
                            offset = int(p.offset) if hasattr(p, "offset") else int(p.old_style_offsets[0])
                            out[tp] = (offset, int(getattr(p, "timestamp", -1)))
            if not retry or partial:
                return out
            todo = retry
            await self.cluster.refresh([tp.topic for tp in todo])
            await trio.sleep(self.retry_backoff * (attempt + 1))
        raise KafkaError(5, f"ListOffsets did not succeed for {sorted(todo)}")

    async def beginning_offsets(self, tps: Iterable[tuple[str, int]]) -> dict[TopicPartition, int]:
        r = await self._list_offsets({TopicPartition(*tp): -2 for tp in tps})
        return {tp: o for tp, (o, _t) in r.items()}

    async def end_offsets(self, tps: Iterable[tuple[str, int]]) -> dict[TopicPartition, int]:
        r = await self._list_offsets({TopicPartition(*tp): -1 for tp in tps})
        return {tp: o for tp, (o, _t) in r.items()}

    async def offsets_for_times(self, timestamps: dict[tuple[str, int], int]) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """The earliest offset whose timestamp is >= the given ms, per partition (None: none)."""
        r = await self._list_offsets({TopicPartition(*tp): int(ts) for tp, ts in timestamps.items()})
        return {tp: (OffsetAndTimestamp(o, t) if o >= 0 else None) for tp, (o, t) in r.items()}

    async def _resolve_positions(self, tps: list[TopicPartition]) -> None:
        try:
            committed: dict[TopicPartition, int] = {}
            if self.group_id is not None:
                want = [tp for tp in tps if self._parts.get(tp) is not None and self._parts[tp].reset is None]
                if want:
                    committed = {tp: o for tp, o in (await self.committed(want)).items() if o is not None and o >= 0}
            resets: dict[TopicPartition, int] = {}
            for tp in tps:
                ps = self._parts.get(tp)
                if ps is None or ps.position is not None:
                    continue
                if tp in committed:
                    ps.position = ps.fetch_position = committed[tp]
                    continue
                strategy = ps.reset or self.auto_offset_reset
                if strategy == "none":
                    self._fetch_error = KafkaError(_OFFSET_OUT_OF_RANGE, f"no committed offset for {tp} and auto_offset_reset='none'")
                    continue
                resets[tp] = -2 if strategy == "earliest" else -1
            if resets:
                epochs = {tp: self._parts[tp].epoch for tp in resets if tp in self._parts}
                found = await self._list_offsets(resets, partial=True)
                for tp, (offset, _ts) in found.items():
                    ps = self._parts.get(tp)
                    if ps is not None and ps.position is None and ps.epoch == epochs.get(tp):
                        ps.position = ps.fetch_position = offset
                        ps.reset = None
        except (ConnectionLost, RequestTimedOut, NoBrokersAvailable, KafkaError) as exc:
            if isinstance(exc, KafkaError) and not exc.retriable:
                self._fetch_error = exc
            await trio.sleep(self.retry_backoff)
        finally:
            self._resolving.difference_update(tps)
            self._fetch_wakeup.set()
            self._data_lot.unpark_all()

    # --- fetching

    async def _fetcher(self) -> None:
        while True:
            if self.cluster.stale:
                self._nursery.start_soon(self._refresh_quietly, None)
            unresolved = [tp for tp, ps in self._parts.items() if ps.position is None and tp not in self._resolving]
            if unresolved:
                self._resolving.update(unresolved)
                self._nursery.start_soon(self._resolve_positions, unresolved)
            by_node: dict[int, list[TopicPartition]] = {}
            missing_leader = False
            for tp, ps in self._parts.items():
                if ps.paused or ps.fetch_position is None or ps.in_flight or ps.buffered:
                    continue
                node = self.cluster.leader(tp.topic, tp.partition)
                if node < 0:
                    missing_leader = True
                    continue
                if node in self._node_fetching:
                    continue
                by_node.setdefault(node, []).append(tp)
            if missing_leader:
                self._nursery.start_soon(self._refresh_quietly, list({tp.topic for tp in self._parts}))
            for node, tps in by_node.items():
                self._node_fetching.add(node)
                for tp in tps:
                    self._parts[tp].in_flight = True
                self._nursery.start_soon(self._fetch, node, tps)
            self._fetch_wakeup = trio.Event()
            with trio.move_on_after(self.retry_backoff * 5 if missing_leader or unresolved else math.inf):
                await self._fetch_wakeup.wait()

    async def _refresh_quietly(self, topics=None) -> None:
        with contextlib.suppress(ConnectionLost, RequestTimedOut, NoBrokersAvailable, KafkaError):
            await self.cluster.refresh(topics)
        self._fetch_wakeup.set()

    async def _fetch(self, node: int, scheduled: list[TopicPartition]) -> None:
        # A rebalance or a seek can change the partitions between scheduling this task and its
        # start: fetch only those still assigned and positioned.
        tps = [tp for tp in scheduled if (ps := self._parts.get(tp)) is not None and ps.fetch_position is not None]
        epochs = {tp: self._parts[tp].epoch for tp in tps}
        offsets = {tp: self._parts[tp].fetch_position for tp in tps}
        backoff = False
        try:
            if not tps:
                return  # the finally blocks below still release the partitions and the node
            conn = await self.cluster.connection(node)
            b = conn.make(ApiKey.FETCH)
            topics: dict[str, list] = {}
            for tp in tps:
                topics.setdefault(tp.topic, []).append(b(
                    "FetchPartition", partition=tp.partition, fetch_offset=offsets[tp],
                    current_leader_epoch=-1, log_start_offset=-1,
                    partition_max_bytes=self.max_partition_fetch_bytes))
            req = b(
                replica_id=-1, max_wait=self.fetch_max_wait_ms, min_bytes=self.fetch_min_bytes,
                max_bytes=self.fetch_max_bytes, isolation_level=1 if self.read_committed else 0,
                session_id=0, session_epoch=-1,
                topics=[b("FetchTopic", topic=t, partitions=ps) for t, ps in topics.items()],
                forgotten_topics_data=(), rack_id="",
            )
            resp = await conn.request(req, timeout=self.request_timeout + self.fetch_max_wait_ms / 1000)
            if resp.error_code if hasattr(resp, "error_code") else 0:
                raise KafkaError(resp.error_code, "Fetch")
            refresh = False
            got = False
            for t in resp.responses:
                for p in t.partitions:
                    tp = TopicPartition(t.topic, int(p.partition_index))
                    ps = self._parts.get(tp)
                    if ps is None or ps.epoch != epochs.get(tp) or tp not in offsets:
                        continue
                    code = int(p.error_code)
                    if code:
                        if code == _OFFSET_OUT_OF_RANGE:
                            if self.auto_offset_reset == "none":
                                self._fetch_error = KafkaError(code, f"{tp} offset {offsets[tp]}")
                            else:
                                ps.position = ps.fetch_position = None
                                ps.epoch += 1
                        elif code in LEADERSHIP_ERRORS or KafkaError(code).retriable:
                            refresh = True
                        else:
                            self._fetch_error = KafkaError(code, f"Fetch {tp}")
                        continue
                    ps.hw = int(p.high_watermark)
                    ps.lso = int(getattr(p, "last_stable_offset", -1))
                    ps.log_start = int(getattr(p, "log_start_offset", -1))
                    records = p.records or b""
                    aborted = [(int(a.producer_id), int(a.first_offset)) for a in (p.aborted_transactions or ())]
                    try:
                        batches, next_offset = split_fetched(records, offsets[tp], check_crcs=self.check_crcs,
                                                             read_committed=self.read_committed, aborted=aborted)
                    except CorruptRecord as exc:
                        exc.topic, exc.partition = tp.topic, tp.partition
                        self._fetch_error = exc
                        continue
                    if next_offset == offsets[tp] and records and not batches:
                        # a batch larger than partition_max_bytes from a pre-KIP-74 broker
                        self._fetch_error = KafkaError(10, f"{tp}: batch at {offsets[tp]} exceeds max_partition_fetch_bytes")
                        continue
                    if next_offset != offsets[tp]:
                        ps.fetch_position = next_offset
                    if batches or next_offset != offsets[tp]:
                        self._queue.append(_Fetched(tp, ps.epoch, deque(batches), next_offset, ps.hw, ps.lso, ps.log_start))
                        ps.buffered += 1
                        got = True
            if refresh:
                backoff = True
                self._nursery.start_soon(self._refresh_quietly, list({tp.topic for tp in tps}))
            if got or self._fetch_error is not None:
                self._data_lot.unpark_all()
        except (ConnectionLost, RequestTimedOut, NoBrokersAvailable):
            backoff = True
            self._nursery.start_soon(self._refresh_quietly, None)
        except AuthenticationError as exc:
            # the leader's broker refused our credentials: poll raises it, and the fetch is
            # tried again no sooner than the cluster's backoff for that address
            backoff = True
            self._fetch_error = exc
            self._data_lot.unpark_all()
        finally:
            for tp in scheduled:
                ps = self._parts.get(tp)
                if ps is not None:
                    ps.in_flight = False
            try:
                if backoff:
                    await trio.sleep(self.retry_backoff)
            finally:
                self._node_fetching.discard(node)
                self._fetch_wakeup.set()

    # --- reading

    def _raise_pending(self) -> None:
        if self._closed:
            raise ClientClosed("consumer is closed")
        if self._group_error is not None:
            err, self._group_error = self._group_error, None
            raise err
        if self._fetch_error is not None:
            err, self._fetch_error = self._fetch_error, None
            raise err

    async def _wait_data(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            await self._data_lot.park()

    def _next_chunk(self, limit: int | None) -> tuple[TopicPartition, list[ConsumerRecord]] | None:
        """The next records in order -- up to `limit` (None: the rest of the current batch), all
        from one partition -- or None when nothing is buffered. Keeps positions current."""
        while True:
            recs = self._recs
            cur = self._current
            if self._ri < len(recs):
                ps = self._parts.get(cur.tp)
                if ps is None or ps.epoch != cur.epoch:
                    self._recs = []
                else:
                    i = self._ri
                    n = len(recs)
                    position = ps.position
                    while i < n and recs[i].offset < position:  # offsets ascend within a batch
                        i += 1
                    j = n if limit is None or n - i <= limit else i + limit
                    chunk = None
                    if i < j:
                        chunk = recs if i == 0 and j == n else recs[i:j]
                        ps.position = recs[j - 1].offset + 1
                    self._ri = j
                    if j == n:
                        self._recs = []  # the caller may own `recs` now
                        self._end_batch(ps)
                    if chunk is not None:
                        return cur.tp, chunk
                    continue
            if cur is not None and cur.batches:
                ps = self._parts.get(cur.tp)
                if ps is None or ps.epoch != cur.epoch:
                    self._current = None
                    continue
                h, raw = cur.batches.popleft()
                if ps.paused:
                    cur.batches.appendleft((h, raw))
                    self._current = None
                    self._queue.appendleft(cur)
                    ps.buffered += 1
                    continue
                try:
                    recs = decode_batch_records(cur.tp.topic, cur.tp.partition, raw, h, self._kdes, self._vdes,
                                                self._max_decompressed)
                except Exception as exc:  # noqa: BLE001 - decompression or layout damage
                    self._current = None
                    raise CorruptRecord(f"batch at offset {h[0]}: {exc}",
                                        topic=cur.tp.topic, partition=cur.tp.partition, offset=h[0]) from exc
                self._rend = h[0] + h[6] + 1
                self._recs = recs
                self._ri = 0
                if not recs:
                    self._end_batch(ps)
                continue
            if cur is not None:
                ps = self._parts.get(cur.tp)
                if ps is not None and ps.epoch == cur.epoch and cur.next_offset > (ps.position or 0):
                    ps.position = cur.next_offset
                self._current = None
            # take the next fetched slice, skipping paused partitions (they stay queued)
            found = None
            for i, f in enumerate(self._queue):
                ps = self._parts.get(f.tp)
                if ps is None or ps.epoch != f.epoch:
                    continue
                if ps.paused:
                    continue
                found = i
                break
            # drop stale slices
            if found is None:
                self._queue = deque(f for f in self._queue if f.tp in self._parts and self._parts[f.tp].epoch == f.epoch)
                return None
            f = self._queue[found]
            del self._queue[found]
            ps = self._parts[f.tp]
            ps.buffered -= 1
            self._current = f
            self._recs = []
            self._fetch_wakeup.set()  # this partition may fetch ahead now

    def _end_batch(self, ps: _PState) -> None:
        # positions skip past batch ends (gaps from compaction, control records)
        if self._rend > ps.position:
            ps.position = self._rend

    def _next_record(self) -> ConsumerRecord | None:
        """The next record in order, or None when nothing is buffered."""
        got = self._next_chunk(1)
        return None if got is None else got[1][0]

    async def getone(self) -> ConsumerRecord:
        """The next record (waits for one).

        Like `Producer.send`, it yields to the scheduler (a checkpoint) once every few hundred
        calls while records are buffered, and always when it has to wait."""
        self._gets += 1
        if self._gets >= _YIELD_EVERY:
            self._gets = 0
            await trio.lowlevel.checkpoint()
        # fast path: the next decoded record of the current batch
        recs = self._recs
        i = self._ri
        if (i < len(recs) and not self._closed and self._group_error is None
                and self._fetch_error is None):
            ps = self._parts.get(self._current.tp)
            r = recs[i]
            if ps is not None and ps.epoch == self._current.epoch and r.offset >= ps.position:
                i += 1
                self._ri = i
                ps.position = r.offset + 1
                if i == len(recs):
                    self._recs = []
                    self._end_batch(ps)
                return r
        while True:
            self._raise_pending()
            got = self._next_chunk(1)
            if got is not None:
                return got[1][0]
            self._gets = 0
            await self._wait_data(1.0)

    async def getmany(self, timeout_ms: float = 0, max_records: int | None = None) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records available now (waiting up to timeout_ms for the first), grouped by partition."""
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        deadline = trio.current_time() + timeout_ms / 1000
        n = 0
        while True:
            self._raise_pending()
            got = self._next_chunk(None if max_records is None else max_records - n)
            if got is None:
                if n or trio.current_time() >= deadline:
                    await trio.lowlevel.checkpoint()
                    return out
                with trio.move_on_at(deadline):
                    await self._data_lot.park()
                continue
            tp, chunk = got
            have = out.get(tp)
            if have is None:
                out[tp] = chunk
            else:
                have.extend(chunk)
            n += len(chunk)
            if max_records is not None and n >= max_records:
                await trio.lowlevel.checkpoint()
                return out

    def __aiter__(self):
        return self

    async def __anext__(self) -> ConsumerRecord:
        try:
            return await self.getone()
        except ClientClosed:
            raise StopAsyncIteration from None

    # --- offsets of the group

    async def _coordinator_conn(self):
        if self._coordinator is None:
            self._coordinator = await self.cluster.coordinator(self.group_id)
        return await self.cluster.connection(self._coordinator)

    async def committed(self, tps: Iterable[tuple[str, int]]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed)."""
        if self.group_id is None:
            raise ValueError("committed() needs a group_id")
        tps = [TopicPartition(*tp) for tp in tps]
        for attempt in range(10):
            try:
                conn = await self._coordinator_conn()
                b = conn.make(ApiKey.OFFSET_FETCH)
                topics: dict[str, list[int]] = {}
                for tp in tps:
                    topics.setdefault(tp.topic, []).append(tp.partition)
                resp = await conn.request(b(group_id=self.group_id, require_stable=False, topics=[
                    b("OffsetFetchRequestTopic", name=t, partition_indexes=ps) for t, ps in topics.items()]))
            except (ConnectionLost, RequestTimedOut) as exc:
                self._coordinator = None
                last = exc
                await trio.sleep(self.retry_backoff)
                continue
            code = int(getattr(resp, "error_code", 0))
            if code in _COORDINATOR_ERRORS:
                self._coordinator = None
                last = KafkaError(code)
                await trio.sleep(self.retry_backoff)
                continue
            if code:
                raise KafkaError(code, "OffsetFetch")
            out: dict[TopicPartition, int | None] = {tp: None for tp in tps}
            retry = False
            for t in resp.topics:
                for p in t.partitions:
                    if p.error_code:
                        if KafkaError(p.error_code).retriable:
                            retry = True
                            continue
                        raise KafkaError(p.error_code, f"OffsetFetch {t.name}[{p.partition_index}]")
                    off = int(p.committed_offset)
                    out[TopicPartition(t.name, int(p.partition_index))] = off if off >= 0 else None
            if retry:
                last = KafkaError(14)
                await trio.sleep(self.retry_backoff)
                continue
            return out
        raise last

    async def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Commit `offsets` (tp -> next offset to read), or the current positions."""
        if self.group_id is None:
            raise ValueError("commit() needs a group_id")
        if offsets is None:
            offsets = {tp: ps.position for tp, ps in self._parts.items() if ps.position is not None}
        offsets = {TopicPartition(*tp): int(o) for tp, o in offsets.items()}
        if not offsets:
            await trio.lowlevel.checkpoint()
            return
        last: BaseException | None = None
        for attempt in range(10):
            try:
                conn = await self._coordinator_conn()
                b = conn.make(ApiKey.OFFSET_COMMIT)
                topics: dict[str, list] = {}
                for tp, off in offsets.items():
                    topics.setdefault(tp.topic, []).append(b(
                        "OffsetCommitRequestPartition", partition_index=tp.partition, committed_offset=off,
                        committed_leader_epoch=-1, committed_metadata="", commit_timestamp=-1))
                generation = self.generation_id if self._subscription or self._pattern else -1
                member = self.member_id if self._subscription or self._pattern else ""
                resp = await conn.request(b(
                    group_id=self.group_id, generation_id=generation, generation_id_or_member_epoch=generation,
                    member_id=member, group_instance_id=self.group_instance_id, retention_time_ms=-1,
                    topics=[b("OffsetCommitRequestTopic", name=t, partitions=ps) for t, ps in topics.items()]))
            except (ConnectionLost, RequestTimedOut) as exc:
                self._coordinator = None
                last = exc
                await trio.sleep(self.retry_backoff)
                continue
            errors = {int(p.error_code) for t in resp.topics for p in t.partitions if p.error_code}
            if not errors:
                return
            code = errors.pop()
            err = KafkaError(code, "OffsetCommit")
            if code in _COORDINATOR_ERRORS:
                self._coordinator = None
            if code in (_REBALANCE_IN_PROGRESS, _ILLEGAL_GENERATION, _UNKNOWN_MEMBER_ID):
                self._rejoin.set()
                raise err
            if not err.retriable:
                raise err
            last = err
            await trio.sleep(self.retry_backoff)
        assert last is not None
        raise last

    async def _auto_commit_loop(self) -> None:
        while True:
            await trio.sleep(self.auto_commit_interval)
            with contextlib.suppress(KafkaError, ConnectionLost, RequestTimedOut, NoBrokersAvailable):
                if self.group_id is not None and (self._manual or self.generation_id >= 0):
                    await self.commit()

    # --- group membership

    def _start_group(self) -> None:
        if not self._group_started and self._nursery is not None:
            self._group_started = True
            self._nursery.start_soon(self._group_loop)

    async def wait_for_assignment(self, timeout: float | None = None) -> set[TopicPartition]:
        with trio.fail_after(math.inf if timeout is None else timeout):
            while not self._assigned_once.is_set():
                self._raise_pending()
                with trio.move_on_after(0.1):
                    await self._assigned_once.wait()
        return self.assignment()

    async def _subscribed_topics(self) -> set[str]:
        if self._pattern is None:
            return set(self._subscription)
        await self.cluster.refresh(all_topics=True)
        return {t for t, info in self.cluster.topics.items() if not info.is_internal and self._pattern.fullmatch(t)}

    def _owned(self) -> dict[str, list[int]]:
        owned: dict[str, list[int]] = {}
        for tp in sorted(self._parts):
            owned.setdefault(tp.topic, []).append(tp.partition)
        return owned

    async def _group_loop(self) -> None:
        while True:
            try:
                await self._join_and_sync()
                await self._heartbeat_until_rebalance()
            except (ConnectionLost, RequestTimedOut, NoBrokersAvailable):
                self._coordinator = None
                await trio.sleep(self.retry_backoff)
            except KafkaError as exc:
                if exc.code in _COORDINATOR_ERRORS:
                    self._coordinator = None
                    await trio.sleep(self.retry_backoff)
                elif exc.code in (_UNKNOWN_MEMBER_ID, _ILLEGAL_GENERATION, _FENCED_INSTANCE_ID):
                    await self._lose_partitions()
                    self.member_id = "" if exc.code != _ILLEGAL_GENERATION else self.member_id
                    self.generation_id = -1
                    if exc.code == _FENCED_INSTANCE_ID:
                        self._group_error = exc
                        self._data_lot.unpark_all()
                        return
                elif exc.code == _REBALANCE_IN_PROGRESS or exc.retriable:
                    await trio.sleep(self.retry_backoff)
                else:
                    self._group_error = exc
                    self._data_lot.unpark_all()
                    await trio.sleep(max(self.retry_backoff, 1.0))

    async def _lose_partitions(self) -> None:
        lost = self.assignment()
        if lost:
            fn = getattr(self._listener, "on_partitions_lost", None) or getattr(self._listener, "on_partitions_revoked", None)
            await _call(fn, lost)
            self._set_assignment([])

    @property
    def _cooperative(self) -> bool:
        return self._protocol == "cooperative-sticky"

    async def _join_and_sync(self) -> None:
        self._rejoin = trio.Event()
        topics = await self._subscribed_topics()
        self._joined_topics = topics
        if topics:
            await self.cluster.refresh(topics)
        if not self._cooperative and self._parts:
            # eager protocols give everything back before joining
            if self.enable_auto_commit:
                with contextlib.suppress(KafkaError, ConnectionLost, RequestTimedOut):
                    await self.commit()
            await _call(getattr(self._listener, "on_partitions_revoked", None), self.assignment())
            self._set_assignment([])
        conn = await self._coordinator_conn()
        b = conn.make(ApiKey.JOIN_GROUP)
        owned = self._owned()
        protocols = [
            b("JoinGroupRequestProtocol", name=a.name,
              metadata=a.subscription(sorted(topics), owned, self.generation_id).encode())
            for a in self._assignors
        ]
        while True:
            resp = await conn.request(b(
                group_id=self.group_id, session_timeout=self.session_timeout_ms,
                rebalance_timeout=self.rebalance_timeout_ms, member_id=self.member_id,
                group_instance_id=self.group_instance_id, protocol_type="consumer", protocols=protocols,
                reason=None), timeout=self.request_timeout + self.rebalance_timeout_ms / 1000)
            if resp.error_code == _MEMBER_ID_REQUIRED:
                self.member_id = resp.member_id
                continue
            if resp.error_code:
                if resp.error_code == _UNKNOWN_MEMBER_ID:
                    self.member_id = ""
                raise KafkaError(resp.error_code, "JoinGroup")
            break
        self.member_id = resp.member_id
        self.generation_id = int(resp.generation_id)
        self._protocol = resp.protocol_name
        assignments = []
        sb = conn.make(ApiKey.SYNC_GROUP)
        if resp.leader == resp.member_id:
            assignor = next((a for a in self._assignors if a.name == resp.protocol_name), self._assignors[0])
            subs = {m.member_id: _assignors.decode_subscription(bytes(m.metadata)) for m in resp.members}
            all_topics = set().union(*(set(s.topics) for s in subs.values())) if subs else set()
            await self.cluster.refresh(all_topics)
            counts = {t: len(self.cluster.partitions(t) or []) for t in all_topics}
            counts = {t: n for t, n in counts.items() if n}
            result = assignor.assign(counts, subs)
            assignments = [sb("SyncGroupRequestAssignment", member_id=m, assignment=a.encode()) for m, a in result.items()]
        sresp = await conn.request(sb(
            group_id=self.group_id, generation_id=self.generation_id, member_id=self.member_id,
            group_instance_id=self.group_instance_id, protocol_type="consumer",
            protocol_name=resp.protocol_name, assignments=assignments),
            timeout=self.request_timeout + self.rebalance_timeout_ms / 1000)
        if sresp.error_code:
            raise KafkaError(sresp.error_code, "SyncGroup")
        blob = bytes(sresp.assignment or b"")
        new = set()
        if blob:
            new = {TopicPartition(t, p) for t, p in _assignors.decode_assignment(blob).topic_partitions()}
        old = self.assignment()
        revoked = old - new
        added = new - old
        if revoked:
            await _call(getattr(self._listener, "on_partitions_revoked", None), revoked)
        self._set_assignment(new)
        if added or not self._assigned_once.is_set():
            await _call(getattr(self._listener, "on_partitions_assigned", None), added)
        self._assigned_once.set()
        self._fetch_wakeup.set()
        if revoked and self._cooperative:
            # cooperative: partitions we gave up can now go to their new owners
            self._rejoin.set()

    async def _heartbeat_until_rebalance(self) -> None:
        last_meta_check = trio.current_time()
        while not self._rejoin.is_set():
            with trio.move_on_after(self.heartbeat_interval):
                await self._rejoin.wait()
            if self._rejoin.is_set():
                return
            conn = await self._coordinator_conn()
            b = conn.make(ApiKey.HEARTBEAT)
            resp = await conn.request(b(group_id=self.group_id, generation_id=self.generation_id,
                                        member_id=self.member_id, group_instance_id=self.group_instance_id))
            if resp.error_code == _REBALANCE_IN_PROGRESS:
                return
            if resp.error_code:
                raise KafkaError(resp.error_code, "Heartbeat")
            # subscription changes (pattern matches, partition counts) trigger a rejoin
            if trio.current_time() - last_meta_check > max(self.heartbeat_interval * 3, 5):
                last_meta_check = trio.current_time()
                topics = await self._subscribed_topics()
                if topics != getattr(self, "_joined_topics", topics):
                    return


def open_consumer(bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092", *topics: str, **config: Any) -> Consumer:
    """``async with open_consumer(...) as c`` -- the same as ``async with Consumer(...)``."""
    return Consumer(bootstrap_servers, *topics, **config)
