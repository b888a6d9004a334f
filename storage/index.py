"""Sparse, mmap'd indexes of one segment: the offset index and the time index.

File formats (big-endian, fixed-size entries, no header, named after the segment's base offset)::

    <base>.index       8-byte entries:  relativeOffset u32 | position u32
                       "the batch whose baseOffset is base+relativeOffset starts at byte `position`
                       of the .log file"
    <base>.timeindex  12-byte entries:  timestamp i64 | relativeOffset u32
                       "every record at or below offset base+relativeOffset has a timestamp <=
                       `timestamp`" (the timestamp is the segment's max timestamp so far, so entries
                       are strictly increasing in both fields)

Entries are sparse: one every `index.interval.bytes` of log data. Both indexes are only hints that
make lookups start close to the answer; a missing entry makes a lookup start earlier, never wrong.

Life cycle:
- The active segment's index files are sized to `segment.index.bytes` (rounded down to whole
  entries) as sparse files and mapped read-write. Disk blocks are allocated (posix_fallocate) ahead
  of the entries in growing chunks, from one page up to 1 MiB, before any write through the
  mapping touches them, so such a write can never hit a full disk and SIGBUS; when a chunk cannot
  be allocated the entry is skipped (an index is a hint). An empty partition so costs a page per
  index file, not `segment.index.bytes` each. Unused slots are all zero: an offset-index
  entry never has position 0 (the segment start needs no entry) and a time-index entry is never
  all zero after the first, so the first all-zero slot marks the end of the entries.
- On roll and close the files are trimmed to their entries and mapped read-only.
- After an unclean shutdown the indexes of every segment from the recovery point on are rebuilt
  from the .log; the indexes of older segments are sanity-checked on load (`IndexCorruptError`
  makes the caller rebuild them from the .log).

Who owns it: the Segment that created it, on the owning thread. Flushing goes through the file
handle (fdatasync of the fd also writes the pages dirtied through a shared mapping on Linux), so a
flush token can sync from a worker thread while the owner keeps appending.
"""
from __future__ import annotations

import errno
import mmap
import os
import struct
from typing import Protocol

from .errors import StorageError

OFFSET_ENTRY_SIZE = 8
TIME_ENTRY_SIZE = 12
# Never size an index for fewer than this many slots: the last slot is reserved for the final
# time-index entry written on roll/close, so an index needs room for at least one more.
MIN_SLOTS = 2


class IndexCorruptError(StorageError):
    """An index file fails its sanity check; the caller rebuilds it from the log."""


class FileHandle(Protocol):
    """What an index needs from its file: an fd that stays open as long as the handle lives."""

    path: os.PathLike[str] | str

    def fileno(self) -> int: ...


# Blocks allocated ahead of the entries: the first chunk is one page, each next one doubles the
# allocation, up to this much at a time.
FIRST_CHUNK = 4096
MAX_CHUNK = 1 << 20


def allocate(fd: int, start: int, end: int) -> bool:
    """Allocate the blocks of bytes [start, end) of the file (no sparse holes there).

    True when they are allocated, or when the file system cannot allocate ahead at all (then the
    mapping behaves as before fallocate existed); False when the disk has no room.
    """
    if end <= start:
        return True
    try:
        os.posix_fallocate(fd, start, end - start)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return True
        return False
    return True


class _MmapIndex:
    """Shared machinery: a file of fixed-size entries, a mapping, a count of valid entries."""

    ENTRY: struct.Struct
    SIZE: int

    def __init__(self, handle: FileHandle, base_offset: int) -> None:
        self.handle = handle
        self.base_offset = base_offset
        self.entries = 0
        self.max_entries = 0
        self.mutable = False
        self._mm: mmap.mmap | None = None
        # bytes from the start of the file whose blocks are allocated (writable mapping only)
        self._allocated = 0

    # --- mapping ------------------------------------------------------------------------------

    def _map(self, writable: bool) -> None:
        self._unmap()
        size = os.fstat(self.handle.fileno()).st_size
        self.max_entries = size // self.SIZE
        self.mutable = writable
        if size == 0:
            return
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._mm = mmap.mmap(self.handle.fileno(), size, access=access)

    def _unmap(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def _is_empty_slot(self, i: int) -> bool:
        raise NotImplementedError

    def load(self, *, writable: bool, max_bytes: int) -> None:
        """Map an existing file and count its entries (see the module doc for the empty slot)."""
        size = os.fstat(self.handle.fileno()).st_size
        if size % self.SIZE:
            raise IndexCorruptError(f"{self.handle.path}: size {size} is not a multiple of {self.SIZE}")
        self._map(False)
        # The valid entries are a prefix; find the first empty slot by bisection.
        lo, hi = 0, self.max_entries
        while lo < hi:
            mid = (lo + hi) // 2
            if self._is_empty_slot(mid):
                hi = mid
            else:
                lo = mid + 1
        self.entries = lo
        if writable:
            self.make_mutable(max_bytes)

    def reset(self, *, max_bytes: int) -> None:
        """Drop every entry and start a fresh writable file (used when rebuilding)."""
        self._unmap()
        os.ftruncate(self.handle.fileno(), 0)
        self.entries = 0
        self.make_mutable(max_bytes)

    def make_mutable(self, max_bytes: int) -> None:
        """(Re)grow the file to its full (sparse) size and map it read-write (active segment)."""
        slots = max(MIN_SLOTS, max_bytes // self.SIZE, self.entries + MIN_SLOTS)
        self._unmap()
        fd = self.handle.fileno()
        start = self.entries * self.SIZE
        # Slots past the entries must read as empty, and a previous truncate may have left stale
        # entries there. Cutting the file back to its entries and growing it again zeroes them
        # without reading or writing a page: scanning the tail through the mapping would fault
        # every page of the sized file into memory (segment.index.bytes of resident memory
        # per index) and cost milliseconds on every roll.
        if os.fstat(fd).st_size > start:
            os.ftruncate(fd, start)
        os.ftruncate(fd, slots * self.SIZE)
        # The entries already there were written, so their blocks exist.
        self._allocated = start
        self._map(True)
        # A new active index that cannot get its first page fails here, like the segment's
        # other files would, rather than appending into a segment that can hold no entry.
        if not self._allocate_for(start + self.SIZE):
            raise OSError(errno.ENOSPC, f"cannot allocate blocks for {self.handle.path}")

    def _allocate_for(self, end: int) -> bool:
        """Make sure bytes [0, end) have blocks before the mapping writes them."""
        if end <= self._allocated:
            return True
        size = self.max_entries * self.SIZE
        chunk = min(MAX_CHUNK, max(FIRST_CHUNK, self._allocated))
        target = min(size, max(end, self._allocated + chunk))
        if not allocate(self.handle.fileno(), self._allocated, target):
            return False
        self._allocated = target
        return True

    def allocation_due(self, more_entries: int) -> bool:
        """Whether `more_entries` more entries would need blocks not allocated yet (then the
        broker calls allocate_ahead in a worker thread first, so appends on its event loop
        never wait for fallocate)."""
        return (self.mutable and (self.entries + more_entries) * self.SIZE > self._allocated
                and self._allocated < self.max_entries * self.SIZE)

    def allocate_ahead(self, more_entries: int) -> None:
        """Allocate the blocks `more_entries` more entries need (a whole chunk at least);
        blocking. On a full disk nothing changes: the appends then skip their entries."""
        self._allocate_for(min((self.entries + more_entries) * self.SIZE, self.max_entries * self.SIZE))

    def trim(self) -> None:
        """Shrink the file to its entries and map it read-only (roll and close)."""
        self._unmap()
        os.ftruncate(self.handle.fileno(), self.entries * self.SIZE)
        self._map(False)

    def release(self) -> None:
        """Unmap; the file handle closes when the last reference to it goes."""
        self._unmap()

    @property
    def is_full(self) -> bool:
        # One slot stays free for the final time-index entry written on roll.
        return self.entries >= self.max_entries - 1

    @property
    def size_bytes(self) -> int:
        return self.entries * self.SIZE

    def _entry(self, i: int) -> tuple[int, int]:
        assert self._mm is not None
        return self.ENTRY.unpack_from(self._mm, i * self.SIZE)

    def _count_before(self, field: int, value: int, *, inclusive: bool) -> int:
        """How many leading entries have entry[field] < value (<= with inclusive); both fields
        increase, so that is a bisection."""
        lo, hi = 0, self.entries
        while lo < hi:
            mid = (lo + hi) // 2
            v = self._entry(mid)[field]
            if v < value or (inclusive and v == value):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _truncate_from_second(self, value: int) -> None:
        """Drop every entry from the first whose second field is >= `value`."""
        self._truncate_entries(self._count_before(1, value, inclusive=False))

    def _check_increasing(self) -> None:
        """Both fields strictly increase, checked on about 64 sampled entries and the last."""
        step = max(1, self.entries // 64)
        prev: tuple[int, int] | None = None
        for i in sorted(set(range(0, self.entries, step)) | {self.entries - 1}):
            entry = self._entry(i)
            if prev is not None and (entry[0] <= prev[0] or entry[1] <= prev[1]):
                raise IndexCorruptError(f"{self.handle.path}: entries not increasing at {i}")
            prev = entry

    def _append_raw(self, a: int, b: int) -> None:
        assert self._mm is not None and self.mutable
        at = self.entries * self.SIZE
        if at + self.SIZE > self._allocated and not self._allocate_for(at + self.SIZE):
            return  # disk full: no entry (lookups start earlier), never a SIGBUS
        self.ENTRY.pack_into(self._mm, at, a, b)
        self.entries += 1

    def _truncate_entries(self, n: int) -> None:
        if n >= self.entries:
            return
        if self.mutable and self._mm is not None:
            self._mm[n * self.SIZE : self.entries * self.SIZE] = bytes((self.entries - n) * self.SIZE)
            self.entries = n
        else:
            self.entries = n
            self.trim()

    def all_entries(self) -> list[tuple[int, int]]:
        if not self.entries:
            return []
        assert self._mm is not None
        return list(self.ENTRY.iter_unpack(self._mm[: self.entries * self.SIZE]))


class OffsetIndex(_MmapIndex):
    """relativeOffset u32 -> position u32, 8-byte entries."""

    ENTRY = struct.Struct(">II")
    SIZE = OFFSET_ENTRY_SIZE

    def _is_empty_slot(self, i: int) -> bool:
        return self._entry(i)[1] == 0

    def append(self, offset: int, position: int) -> None:
        """Index the batch with baseOffset `offset` starting at `position` (> 0)."""
        if self.entries >= self.max_entries - 1 or position <= 0:
            return
        rel = offset - self.base_offset
        if self.entries:
            last_rel, last_pos = self._entry(self.entries - 1)
            if rel <= last_rel or position <= last_pos:
                return
        self._append_raw(rel, position)

    def last(self) -> tuple[int, int]:
        """(absolute offset, position) of the last entry, (base, 0) without entries."""
        if not self.entries:
            return self.base_offset, 0
        rel, pos = self._entry(self.entries - 1)
        return self.base_offset + rel, pos

    def lookup(self, offset: int) -> tuple[int, int]:
        """Largest entry with offset <= `offset` as (absolute offset, position); else (base, 0)."""
        lo = self._count_before(0, offset - self.base_offset, inclusive=True)
        if lo == 0:
            return self.base_offset, 0
        r, pos = self._entry(lo - 1)
        return self.base_offset + r, pos

    def lookup_position(self, position: int) -> tuple[int, int]:
        """Largest entry with position <= `position` as (absolute offset, position); else (base, 0)."""
        lo = self._count_before(1, position, inclusive=True)
        if lo == 0:
            return self.base_offset, 0
        r, pos = self._entry(lo - 1)
        return self.base_offset + r, pos

    def truncate_to_position(self, position: int) -> None:
        """Drop entries pointing at or past `position` (the log was cut there)."""
        self._truncate_from_second(position)

    def sanity_check(self, log_size: int) -> None:
        """Cheap checks Kafka also makes: increasing entries, positions inside the log."""
        if not self.entries:
            return
        self._check_increasing()
        if self._entry(self.entries - 1)[1] >= log_size:
            raise IndexCorruptError(f"{self.handle.path}: last entry points past the log end {log_size}")


class TimeIndex(_MmapIndex):
    """timestamp i64 -> relativeOffset u32, 12-byte entries."""

    ENTRY = struct.Struct(">qI")
    SIZE = TIME_ENTRY_SIZE

    def _is_empty_slot(self, i: int) -> bool:
        ts, rel = self._entry(i)
        return ts == 0 and rel == 0

    def append(self, timestamp: int, offset: int, *, final: bool = False) -> None:
        """Add (timestamp, offset) if the timestamp grew; `final` may use the reserved slot."""
        limit = self.max_entries if final else self.max_entries - 1
        if self.entries >= limit or timestamp < 0:
            return
        rel = offset - self.base_offset
        if self.entries:
            last_ts, last_rel = self._entry(self.entries - 1)
            if timestamp <= last_ts or rel <= last_rel:
                return
        if timestamp == 0 and rel == 0:
            return  # would read back as an empty slot
        self._append_raw(timestamp, rel)

    def last(self) -> tuple[int, int] | None:
        """(timestamp, absolute offset) of the last entry, None without entries."""
        if not self.entries:
            return None
        ts, rel = self._entry(self.entries - 1)
        return ts, self.base_offset + rel

    def lookup_below(self, timestamp: int) -> tuple[int, int] | None:
        """Largest entry with timestamp < `timestamp` as (timestamp, absolute offset), or None.

        Every record at or below that offset is older than `timestamp`, so a search for the first
        record with a timestamp >= `timestamp` may start right after it.
        """
        lo = self._count_before(0, timestamp, inclusive=False)
        if lo == 0:
            return None
        ts, rel = self._entry(lo - 1)
        return ts, self.base_offset + rel

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries at or past `offset`."""
        self._truncate_from_second(offset - self.base_offset)

    def sanity_check(self, last_offset: int) -> None:
        if not self.entries:
            return
        self._check_increasing()
        if self.base_offset + self._entry(self.entries - 1)[1] > last_offset:
            raise IndexCorruptError(f"{self.handle.path}: last entry is past the last offset {last_offset}")
