"""Snowflake-style 64-bit ids: time-ordered, unique per broker, unique across restarts.

Layout of an id (a positive int64; bit 63 is always 0)::

    bit 63      0
    bits 22-62  milliseconds since EPOCH_MS (2024-01-01T00:00:00Z), 41 bits (good until 2093)
    bits 12-21  worker id (the broker's node id), 10 bits
    bits  0-11  sequence within the millisecond, 12 bits (4096 ids per ms)

Ids from one generator are strictly increasing. The generator never reuses a (timestamp, sequence)
pair, whatever the clock does:

* clock going backwards: a step back of at most `max_backward_wait_ms` is waited out (sleep until
  the clock has caught up); a larger one is not waited for: the generator keeps counting from the
  last timestamp it used (a logical clock that runs ahead of the wall clock until it catches up).
  Either way `stats.clock_backward_events` and `stats.max_backward_ms` record it.
* more than 4096 ids in one millisecond: wait (briefly) for the next millisecond; when the clock
  does not move (or is behind), borrow the next millisecond of the logical clock.
* restarts: the generator leases time ahead. Before it issues an id whose timestamp is at or beyond
  the persisted high-water mark it durably stores a new mark `timestamp + lease_ms`; so every id
  ever issued has a timestamp below the stored mark, and a new generator starts at the mark. A
  clock that went back across a restart therefore cannot make it repeat an id.

High-water-mark file format (`FileHighWaterMark`), one line of ASCII, replaced atomically::

    ringlog-snowflake-hwm 1 <mark ms, decimal> <crc32c of "<mark ms>" as 8 hex digits>\\n

A file that exists but does not parse is an error (the generator cannot prove uniqueness without
it); a missing file means a fresh data directory.

Owner: one generator per broker (InitProducerId allocates from it). Thread-safe (a lock), though
the broker only calls it from its Trio thread; waits use the injected `sleep` and last at most a
few milliseconds.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import attrs
import crc32c

from ringlog.storage.checkpoint import atomic_write

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
TIMESTAMP_BITS = 41
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER_ID = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_TIMESTAMP = (1 << TIMESTAMP_BITS) - 1
WORKER_SHIFT = SEQUENCE_BITS
TIMESTAMP_SHIFT = SEQUENCE_BITS + WORKER_BITS

DEFAULT_MAX_BACKWARD_WAIT_MS = 5
DEFAULT_LEASE_MS = 10_000
# How long to wait for the clock to tick over after 4096 ids in one millisecond before borrowing.
OVERFLOW_WAIT_MS = 2


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@attrs.frozen
class SnowflakeParts:
    timestamp_ms: int  # Unix milliseconds
    worker_id: int
    sequence: int


def compose(timestamp_ms: int, worker_id: int, sequence: int, *, epoch_ms: int = EPOCH_MS) -> int:
    """The id of (Unix ms, worker, sequence); ValueError when a part does not fit."""
    t = timestamp_ms - epoch_ms
    if not 0 <= t <= MAX_TIMESTAMP:
        raise ValueError(f"timestamp {timestamp_ms} is outside the {TIMESTAMP_BITS}-bit range of the id epoch")
    if not 0 <= worker_id <= MAX_WORKER_ID:
        raise ValueError(f"worker id {worker_id} is outside 0..{MAX_WORKER_ID}")
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence {sequence} is outside 0..{MAX_SEQUENCE}")
    return (t << TIMESTAMP_SHIFT) | (worker_id << WORKER_SHIFT) | sequence


def decompose(snowflake_id: int, *, epoch_ms: int = EPOCH_MS) -> SnowflakeParts:
    if not 0 <= snowflake_id < (1 << 63):
        raise ValueError(f"{snowflake_id} is not a positive int64")
    return SnowflakeParts(
        timestamp_ms=(snowflake_id >> TIMESTAMP_SHIFT) + epoch_ms,
        worker_id=(snowflake_id >> WORKER_SHIFT) & MAX_WORKER_ID,
        sequence=snowflake_id & MAX_SEQUENCE,
    )


class HighWaterMarkStore(Protocol):
    def load(self) -> int | None: ...

    def save(self, mark_ms: int) -> None: ...


class MemoryHighWaterMark:
    """Keeps the mark in memory (tests, or ids that need not survive the process)."""

    def __init__(self, mark_ms: int | None = None) -> None:
        self.mark_ms = mark_ms
        self.saves = 0

    def load(self) -> int | None:
        return self.mark_ms

    def save(self, mark_ms: int) -> None:
        self.mark_ms = mark_ms
        self.saves += 1


_MAGIC = "ringlog-snowflake-hwm"
_VERSION = "1"


class CorruptHighWaterMark(ValueError):
    pass


class FileHighWaterMark:
    """The mark in a small text file, written atomically (temp file, fsync, rename, fsync dir)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.saves = 0

    def load(self) -> int | None:
        try:
            text = self.path.read_text("ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptHighWaterMark(f"{self.path}: unreadable producer-id high-water mark: {exc}") from None
        parts = text.strip().split(" ")
        if len(parts) != 4 or parts[0] != _MAGIC or parts[1] != _VERSION:
            raise CorruptHighWaterMark(f"{self.path}: not a ringlog id high-water-mark file: {text[:60]!r}")
        mark, crc = parts[2], parts[3]
        if f"{crc32c.crc32c(mark.encode()):08x}" != crc or not mark.isdigit():
            raise CorruptHighWaterMark(f"{self.path}: checksum mismatch in the id high-water mark")
        return int(mark)

    def save(self, mark_ms: int) -> None:
        mark = str(int(mark_ms))
        line = f"{_MAGIC} {_VERSION} {mark} {crc32c.crc32c(mark.encode()):08x}\n"
        atomic_write(self.path, line.encode("ascii"))
        self.saves += 1


@attrs.define
class SnowflakeStats:
    ids_issued: int = 0
    sequence_overflows: int = 0  # times 4096 ids in one ms were exhausted
    borrowed_ms: int = 0  # logical milliseconds taken ahead of the wall clock on overflow
    clock_backward_events: int = 0
    max_backward_ms: int = 0
    waited_ms: float = 0.0  # total time slept waiting for the clock
    hwm_saves: int = 0


class SnowflakeGenerator:
    def __init__(
        self,
        worker_id: int,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        sleep: Callable[[float], None] = time.sleep,
        store: HighWaterMarkStore | None = None,
        max_backward_wait_ms: int = DEFAULT_MAX_BACKWARD_WAIT_MS,
        lease_ms: int = DEFAULT_LEASE_MS,
        epoch_ms: int = EPOCH_MS,
    ) -> None:
        if not 0 <= worker_id <= MAX_WORKER_ID:
            raise ValueError(f"worker id {worker_id} is outside 0..{MAX_WORKER_ID}")
        if lease_ms < 1:
            raise ValueError("lease_ms must be at least 1")
        self.worker_id = worker_id
        self._clock = clock
        self._sleep = sleep
        self._store = store if store is not None else MemoryHighWaterMark()
        self.max_backward_wait_ms = max_backward_wait_ms
        self.lease_ms = lease_ms
        self.epoch_ms = epoch_ms
        self.stats = SnowflakeStats()
        self._lock = threading.Lock()
        mark = self._store.load()
        self._hwm = mark
        if mark is None:
            # Nothing issued before: start "just before" the epoch so any clock reading is ahead.
            self._last_ts = epoch_ms - 1
            self._seq = MAX_SEQUENCE
        else:
            # Every earlier id has a timestamp < mark: the next one must be at >= mark.
            self._last_ts = mark - 1
            self._seq = MAX_SEQUENCE

    @property
    def high_water_mark(self) -> int | None:
        return self._hwm

    @property
    def last_timestamp_ms(self) -> int:
        return self._last_ts

    def next_id(self) -> int:
        with self._lock:
            ts, seq = self._next_slot()
            self._ensure_lease(ts)
            self._last_ts, self._seq = ts, seq
            self.stats.ids_issued += 1
            return compose(ts, self.worker_id, seq, epoch_ms=self.epoch_ms)

    # --- internals ----------------------------------------------------------------------------

    def _next_slot(self) -> tuple[int, int]:
        last = self._last_ts
        now = self._clock()
        if now < last:
            drift = last - now
            self.stats.clock_backward_events += 1
            self.stats.max_backward_ms = max(self.stats.max_backward_ms, drift)
            if drift <= self.max_backward_wait_ms:
                now = self._wait_until_after(last - 1, budget_ms=drift + 1)
            # else: keep counting from `last` (never go back in id order)
        if now > last:
            return now, 0
        seq = self._seq + 1
        if seq <= MAX_SEQUENCE:
            return last, seq
        # 4096 ids in millisecond `last`: the next id needs a later millisecond. (Before the
        # first id, `last` is the artificial "just before the mark" slot, not an overflow.)
        if self.stats.ids_issued:
            self.stats.sequence_overflows += 1
        if now == last:
            now = self._wait_until_after(last, budget_ms=OVERFLOW_WAIT_MS)
            if now > last:
                return now, 0
        if self.stats.ids_issued:
            self.stats.borrowed_ms += 1
        return last + 1, 0

    def _wait_until_after(self, ts: int, *, budget_ms: float) -> int:
        """Sleep in small steps until the clock reads > ts or the budget is spent; the reading."""
        waited = 0.0
        now = self._clock()
        while now <= ts and waited < budget_ms:
            step = max(0.1, min(float(ts - now + 1), budget_ms - waited))
            self._sleep(step / 1000)
            waited += step
            now = self._clock()
        self.stats.waited_ms += waited
        return now

    def _ensure_lease(self, ts: int) -> None:
        if ts - self.epoch_ms > MAX_TIMESTAMP:
            raise OverflowError("the 41-bit timestamp of the id space is exhausted")
        if self._hwm is None or ts >= self._hwm:
            mark = ts + self.lease_ms
            # Durable before the id leaves: a restart starts at or after `mark`.
            self._store.save(mark)
            self._hwm = mark
            self.stats.hwm_saves += 1
