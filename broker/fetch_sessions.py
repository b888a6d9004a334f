"""Incremental fetch sessions (KIP-227): the broker remembers what a fetcher asked for, so that
its next requests name only the partitions that changed and the answers list only the partitions
with something new.

Request fields (Fetch v7+): session_id, session_epoch, topics (partitions added or updated),
forgotten_topics_data (partitions removed). What each combination means, as in Kafka:

  * session 0, epoch -1: a full fetch without a session (every fetcher before v7 too);
  * session 0, epoch 0: a full fetch that opens a session: the answer carries its new id (or 0 when
    the cache has no room, which the client takes as "no session");
  * session S, epoch 0: closes S and opens a new one; session S, epoch -1: closes S, full fetch;
  * session S, epoch N > 0: an incremental fetch: S must exist (else FETCH_SESSION_ID_NOT_FOUND)
    and N must be the epoch it expects (else INVALID_FETCH_SESSION_EPOCH); the request's
    partitions update the session's (fetch offset, max bytes), the forgotten ones leave it, and
    the answer lists only the session's partitions that have records, an error, or a high
    watermark or log start offset that changed since the last answer. Each answered incremental
    fetch moves the expected epoch on by one (wrapping after 2^31-1 to 1).

The cache holds at most `max.incremental.fetch.session.cache.slots` sessions (Kafka's key and
default). When it is full a new session may take the place of one unused for
`min.incremental.fetch.session.eviction.ms` (Kafka's internal default, 120 s), else of the session
with the fewest partitions if the new one has more; otherwise the fetch is answered without a
session. Sessions are not tied to connections (a client may fetch over a new one), as in Kafka.

The Fetch handler uses this through one call before planning (`begin`, whose plan's `view` of
the request names the partitions to read) and one on the answer (`finish`); everything else about
a fetch is unchanged. One cache per broker (`cache_for`).
"""
from __future__ import annotations

import random
import time
import weakref
from collections import OrderedDict
from typing import Any

import attrs
from kio.schema.errors import ErrorCode

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
EVICTION_MS = 120_000


@attrs.define
class _Partition:
    """One partition of a session: what the fetcher last asked of it (the request's own partition
    entity: fetch offset, max bytes and whatever else the handler reads), and what it was last told."""
    request: Any
    high_watermark: int = -2  # never answered: the first answer always lists it
    log_start_offset: int = -2


@attrs.define
class Session:
    id: int
    epoch: int  # the epoch the next incremental fetch must carry
    # (topic, partition) -> _Partition, in the order they were added (the answers' order)
    partitions: OrderedDict = attrs.field(factory=OrderedDict)
    last_used: float = 0.0


@attrs.frozen
class _Topic:
    topic: str
    partitions: tuple


class _View:
    """The request as the Fetch handler reads it, with the session's partitions as its topics
    (every other field is the request's own)."""

    def __init__(self, request: Any, topics: tuple) -> None:
        self._request = request
        self.topics = topics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


@attrs.frozen
class Plan:
    """What one Fetch request reads: `topics` in the shape the Fetch handler plans from (the whole
    session for an incremental fetch), and how to shape the answer."""
    topics: tuple
    session: Session | None = None
    incremental: bool = False
    error: ErrorCode = ErrorCode.none
    # a full fetch that asked for a session: created when the answer is built
    wants_session: bool = False

    def view(self, request: Any) -> Any:
        return _View(request, self.topics) if self.incremental else request


class FetchSessionCache:
    def __init__(self, slots: int, eviction_ms: int = EVICTION_MS, clock=time.monotonic) -> None:
        self.slots = slots
        self.eviction_s = eviction_ms / 1000
        self.clock = clock
        self.sessions: dict[int, Session] = {}

    # --- the two hooks of the Fetch handler --------------------------------------------------

    def begin(self, request: Any, version: int) -> Plan:
        """The partitions `request` reads, or the session error it is answered with."""
        if version < 7:
            return Plan(tuple(request.topics))
        session_id, epoch = int(request.session_id), int(request.session_epoch)
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
            if session_id != INVALID_SESSION_ID:
                self.sessions.pop(session_id, None)
            return Plan(tuple(request.topics), wants_session=epoch == INITIAL_EPOCH)
        session = self.sessions.get(session_id)
        if session is None:
            return Plan((), error=ErrorCode.fetch_session_id_not_found)
        if session.epoch != epoch:
            return Plan((), error=ErrorCode.invalid_fetch_session_epoch)
        session.last_used = self.clock()
        for forgotten in request.forgotten_topics_data:
            for p in forgotten.partitions:
                session.partitions.pop((forgotten.topic, int(p)), None)
        for topic in request.topics:
            for p in topic.partitions:
                key = (topic.topic, int(p.partition))
                cached = session.partitions.get(key)
                if cached is None:
                    session.partitions[key] = _Partition(p)
                else:
                    cached.request = p
        return Plan(_as_topics(session.partitions), session=session, incremental=True)

    def finish(self, plan: Plan, topics: list) -> tuple[list, int]:
        """(the answer's topics, its session id) from the planned ones (`(name, [slice...])`,
        slices with index, error, high_watermark, log_start_offset, size)."""
        if plan.incremental:
            session = plan.session
            assert session is not None
            out = []
            for name, parts in topics:
                kept = [s for s in parts if _must_answer(session.partitions[(name, s.index)], s)]
                if kept:
                    out.append((name, kept))
            session.epoch = 1 if session.epoch >= 0x7FFFFFFF else session.epoch + 1
            return out, session.id
        if plan.wants_session:
            session = self._create(plan.topics, topics)
            return topics, session.id if session is not None else INVALID_SESSION_ID
        return topics, INVALID_SESSION_ID

    def throttled(self, plan: Plan) -> int:
        """The session id of an answer throttled by a client quota, which lists no partition
        (Kafka's getThrottledResponse): an incremental session moves on to its next epoch and
        keeps what it was last told; a full fetch opens no session."""
        if plan.incremental:
            session = plan.session
            assert session is not None
            session.epoch = 1 if session.epoch >= 0x7FFFFFFF else session.epoch + 1
            return session.id
        return INVALID_SESSION_ID

    # --- the cache ---------------------------------------------------------------------------

    def _create(self, requested: tuple, topics: list) -> Session | None:
        size = sum(len(parts) for _name, parts in topics)
        if size == 0 or self.slots <= 0 or not self._make_room(size):
            return None
        session_id = self._new_id()
        session = Session(session_id, 1, last_used=self.clock())
        for topic in requested:
            for p in topic.partitions:
                # a partition named twice: the last one counts, as Kafka's map keeps it
                session.partitions[(topic.topic, int(p.partition))] = _Partition(p)
        for name, parts in topics:
            for s in parts:
                _must_answer(session.partitions[(name, s.index)], s)  # what this answer tells
        self.sessions[session_id] = session
        return session

    def _make_room(self, size: int) -> bool:
        if len(self.sessions) < self.slots:
            return True
        now = self.clock()
        stale = min(self.sessions.values(), key=lambda s: s.last_used)
        if now - stale.last_used >= self.eviction_s:
            del self.sessions[stale.id]
            return True
        smallest = min(self.sessions.values(), key=lambda s: (len(s.partitions), s.last_used))
        if len(smallest.partitions) < size:
            del self.sessions[smallest.id]
            return True
        return False

    def _new_id(self) -> int:
        while True:
            session_id = random.randint(1, 0x7FFFFFFF)
            if session_id not in self.sessions:
                return session_id


def _as_topics(partitions: OrderedDict) -> tuple:
    grouped: OrderedDict[str, list] = OrderedDict()
    for (topic, _index), p in partitions.items():
        grouped.setdefault(topic, []).append(p.request)
    return tuple(_Topic(topic, tuple(parts)) for topic, parts in grouped.items())


def _must_answer(cached: _Partition, s: Any) -> bool:
    """Whether an incremental answer lists this partition (Kafka's CachedPartition rule), updating
    what the fetcher was last told."""
    must = s.size > 0
    if s.high_watermark != cached.high_watermark:
        must = True
        cached.high_watermark = s.high_watermark
    if s.log_start_offset != cached.log_start_offset:
        must = True
        cached.log_start_offset = s.log_start_offset
    if s.error != ErrorCode.none:
        # answered every time while it lasts; once it clears, the partition is answered again
        must = True
        cached.high_watermark = -1
    return must


_CACHES: "weakref.WeakKeyDictionary[Any, FetchSessionCache]" = weakref.WeakKeyDictionary()


def cache_for(broker: Any) -> FetchSessionCache:
    """The broker's session cache (made on first use, sized by its config)."""
    cache = _CACHES.get(broker)
    if cache is None:
        cache = _CACHES[broker] = FetchSessionCache(broker.config.max_incremental_fetch_session_cache_slots)
    return cache
