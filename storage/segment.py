"""One segment of a partition log: a .log file of RecordBatch v2 bytes plus its two indexes.

Files, named by the segment's base offset zero-padded to 20 digits (Kafka's layout)::

    00000000000000001234.log        batches exactly as on the wire, back to back, baseOffset
                                    rewritten to the stored offset; nothing else in the file
    00000000000000001234.index      offset index (storage.index.OffsetIndex)
    00000000000000001234.timeindex  time index (storage.index.TimeIndex)

The in-memory `size` counts only whole batches that were written completely. Appends write with
os.pwrite at that position, so a failed or torn write leaves at most garbage past `size`, which no
read ever serves (reads are bounded by `size`) and recovery cuts (it checks every CRC).

What is rebuilt after a crash: the indexes of every segment scanned by recovery, from the .log.

File handles: `SegmentFile` owns one fd and closes it only when the last reference goes
(CPython refcounting), so a FileRegion handed to the broker for sendfile keeps its fd valid even
if the segment is deleted by retention meanwhile: the unlinked file stays readable through it.

Who owns a Segment: its PartitionLog, on one thread.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import crc32c

from .batch import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    parse_header,
)
from .errors import CorruptBatchError, StorageIOError
from .index import IndexCorruptError, OffsetIndex, TimeIndex

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
# Relative offsets and positions are u32 in the index files; Kafka keeps both under 2**31.
MAX_RELATIVE_OFFSET = (1 << 31) - 1
MAX_SEGMENT_POSITION = (1 << 31) - 1
# Recovery reads the log in chunks this large (a batch larger than a chunk is read whole).
SCAN_CHUNK = 1 << 20
# Header walks (reads, lookups) read this much at once so one pread covers several small batches.
WALK_CHUNK = 16 * 1024

# Module-level aliases so a test can simulate a full disk precisely (monkeypatch these).
_pwrite = os.pwrite
_ftruncate = os.ftruncate


def segment_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def parse_segment_name(name: str) -> tuple[int, str] | None:
    """(base offset, suffix) of a segment file name, None for anything else."""
    stem, dot, suffix = name.partition(".")
    if not dot or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem), "." + suffix


class SegmentFile:
    """An open file descriptor closed when the last reference to this object goes away."""

    __slots__ = ("path", "fd", "__weakref__")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> "SegmentFile":
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        if create:
            flags |= os.O_CREAT
        return cls(path, os.open(path, flags, 0o644))

    def fileno(self) -> int:
        return self.fd

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def __del__(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"SegmentFile({str(self.path)!r}, fd={self.fd})"


def write_all(file: SegmentFile, data: bytes | bytearray | memoryview, position: int) -> None:
    """pwrite all of `data` at `position`; on OSError cut the file back and raise StorageIOError.

    Nothing is visible to readers before this returns (they are bounded by the segment's size),
    and after a failure the file is truncated back to `position` when the OS lets us, so the
    next append starts from a clean end (if even the truncate fails, the garbage past `position`
    is overwritten by the next append and cut by recovery).
    """
    view = memoryview(data).cast("B")
    done = 0
    total = len(view)
    try:
        while done < total:
            n = _pwrite(file.fd, view[done:], position + done)
            if n <= 0:
                raise OSError(errno.EIO, "pwrite wrote nothing")
            done += n
    except OSError as exc:
        try:
            _ftruncate(file.fd, position)
        except OSError:
            pass
        raise StorageIOError(f"write to {file.path} failed after {done} of {total} bytes: {exc}") from exc


@attrs.frozen
class ScanResult:
    """Outcome of checking a segment's bytes from the start."""

    valid_size: int             # bytes of whole, valid batches from position 0
    file_size: int              # bytes in the file before any truncation
    batches: int
    error: str | None           # why the scan stopped before the end of the file

    @property
    def truncated_bytes(self) -> int:
        return self.file_size - self.valid_size


def scan_batches(
    file: SegmentFile,
    *,
    base_offset: int,
    start: int = 0,
    expected_offset: int | None = None,
    allow_gaps: bool = True,
) -> Iterator[tuple[int, BatchHeader] | str]:
    """Walk the whole file checking every batch (framing, magic, CRC-32C, offsets).

    Yields (position, header) for each valid batch, then, if the file does not end exactly at a
    batch boundary, one string describing the first problem (and stops there). With
    allow_gaps=False (a log that was never compacted) offsets must be contiguous and every batch
    full, which also catches a damaged baseOffset jumping forward (it is outside the CRC).
    """
    file_size = file.size()
    pos = start
    buf = b""
    buf_start = pos
    expected = base_offset if expected_offset is None else expected_offset
    while pos < file_size:
        off = pos - buf_start
        if len(buf) - off < HEADER_SIZE:
            buf = os.pread(file.fd, max(SCAN_CHUNK, HEADER_SIZE), pos)
            buf_start, off = pos, 0
            if len(buf) < HEADER_SIZE:
                yield f"torn batch header at position {pos}: {len(buf)} bytes left"
                return
        header = parse_header(buf, off)
        if header.magic != 2:
            yield f"magic {header.magic} at position {pos}"
            return
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
            yield f"impossible batchLength {header.batch_length} at position {pos}"
            return
        size = header.size
        if pos + size > file_size:
            yield f"torn batch at position {pos}: declares {size} bytes, {file_size - pos} in the file"
            return
        if off + size > len(buf):
            buf = os.pread(file.fd, max(SCAN_CHUNK, size), pos)
            buf_start, off = pos, 0
            if len(buf) < size:
                yield f"torn batch at position {pos}: short read"
                return
        crc = crc32c.crc32c(memoryview(buf)[off + ATTRIBUTES_OFFSET : off + size])
        if crc != header.crc:
            yield f"CRC mismatch at position {pos} (offset {header.base_offset})"
            return
        # A compacted batch keeps its original lastOffsetDelta with fewer records, even none (the
        # last batch of a producer, storage.compaction), so the count may be below
        # lastOffsetDelta + 1, never above it.
        if header.records_count < 0 or header.last_offset_delta < 0 or header.records_count > header.last_offset_delta + 1:
            yield f"bad record count at position {pos} (offset {header.base_offset})"
            return
        # Offsets strictly increase and batch ranges never overlap. Compaction leaves gaps (whole
        # batches removed), so they need not be contiguous; baseOffset is outside the CRC, so this
        # is the only check that catches a damaged one going backwards.
        if header.base_offset < expected:
            yield f"offset {header.base_offset} at position {pos}, expected at least {expected}"
            return
        if not allow_gaps and (header.base_offset != expected or header.records_count != header.last_offset_delta + 1):
            yield f"offset {header.base_offset} at position {pos}, expected {expected} with no gap"
            return
        if header.last_offset - base_offset > MAX_RELATIVE_OFFSET or pos + size > MAX_SEGMENT_POSITION + 1:
            yield f"batch at position {pos} does not fit the segment's index"
            return
        yield pos, header
        expected = header.next_offset
        pos += size


@attrs.define(eq=False)
class Segment:
    """A .log file and its indexes; only the last segment of a log (the active one) is appended."""

    directory: Path
    base_offset: int
    log: SegmentFile
    index: OffsetIndex
    time_index: TimeIndex
    size: int = 0                       # bytes of whole batches
    next_offset: int = 0                # offset after the last batch (base_offset when empty)
    max_timestamp: int = -1             # largest batch maxTimestamp in the segment
    offset_of_max_timestamp: int = -1   # last offset of the (first) batch holding it
    roll_base_ms: int | None = None     # when the first batch arrived (drives segment.ms)
    bytes_since_index: int = 0
    indexes_missing: bool = False

    # --- creation / opening -------------------------------------------------------------------

    @staticmethod
    def paths(directory: Path, base_offset: int) -> tuple[Path, Path, Path]:
        return (
            directory / segment_name(base_offset, LOG_SUFFIX),
            directory / segment_name(base_offset, INDEX_SUFFIX),
            directory / segment_name(base_offset, TIME_INDEX_SUFFIX),
        )

    @classmethod
    def create(cls, directory: Path, base_offset: int, *, index_max_bytes: int) -> "Segment":
        """A new empty active segment (files created, indexes sized)."""
        log_path, index_path, time_path = cls.paths(directory, base_offset)
        created: list[Path] = []
        try:
            log = SegmentFile.open(log_path, create=True)
            created.append(log_path)
            os.ftruncate(log.fd, 0)
            index_file = SegmentFile.open(index_path, create=True)
            created.append(index_path)
            time_file = SegmentFile.open(time_path, create=True)
            created.append(time_path)
            index = OffsetIndex(index_file, base_offset)
            time_index = TimeIndex(time_file, base_offset)
            index.reset(max_bytes=index_max_bytes)
            time_index.reset(max_bytes=index_max_bytes // 12 * 12)
        except OSError as exc:
            for p in created:
                try:
                    p.unlink()
                except OSError:
                    pass
            raise StorageIOError(f"cannot create segment {log_path}: {exc}") from exc
        return cls(directory, base_offset, log, index, time_index, next_offset=base_offset)

    @classmethod
    def open_existing(cls, directory: Path, base_offset: int) -> "Segment":
        """Open the files of an existing segment; indexes are not loaded yet (see load/recover)."""
        log_path, index_path, time_path = cls.paths(directory, base_offset)
        log = SegmentFile.open(log_path)
        missing = not index_path.exists() or not time_path.exists()
        index = OffsetIndex(SegmentFile.open(index_path, create=True), base_offset)
        time_index = TimeIndex(SegmentFile.open(time_path, create=True), base_offset)
        seg = cls(directory, base_offset, log, index, time_index, next_offset=base_offset)
        seg.size = log.size()
        seg.indexes_missing = missing
        return seg

    def load_trusted(self, *, next_offset: int | None, active: bool, index_max_bytes: int) -> None:
        """Load the indexes of a segment that needs no scan (below the recovery point, or clean).

        `next_offset` is the base offset of the following segment; None for the last segment,
        whose end is found by walking batch headers from the last index entry. Raises
        IndexCorruptError (rebuild by recover()) or CorruptBatchError (recover()).
        """
        if self.indexes_missing and self.size:
            raise IndexCorruptError(f"{self.log.path}: index files missing")
        self.index.load(writable=False, max_bytes=index_max_bytes)
        self.time_index.load(writable=False, max_bytes=index_max_bytes)
        self.index.sanity_check(max(self.size, 1))
        last_ts = self.time_index.last()
        if last_ts is not None:
            self.max_timestamp, self.offset_of_max_timestamp = last_ts
        if next_offset is None:
            # Walk from the later of the two indexes' last entries: finds the end and any newer
            # max timestamp (the final time entry is written on roll/close, so this is short).
            start_offset, start_pos = self.index.last()
            end = self.base_offset
            for _pos, header in self.iter_headers(start_pos):
                end = header.next_offset
                if header.max_timestamp > self.max_timestamp:
                    self.max_timestamp = header.max_timestamp
                    self.offset_of_max_timestamp = header.last_offset
            if self.size == 0:
                end = self.base_offset
            elif end == self.base_offset and start_pos > 0:
                raise CorruptBatchError(f"{self.log.path}: no batch after the last index entry")
            self.next_offset = max(end, start_offset)
        else:
            self.next_offset = next_offset
        self.time_index.sanity_check(self.next_offset - 1)
        if self.size:
            first = self.read_header(0)
            self.roll_base_ms = first.max_timestamp if first.max_timestamp >= 0 else None
        if active:
            self.make_active(index_max_bytes)

    def recover(
        self, *, active: bool, index_max_bytes: int, index_interval_bytes: int, allow_gaps: bool = True
    ) -> ScanResult:
        """Check every batch from position 0, rebuild both indexes, cut any bad tail.

        Returns what was found; the file is truncated to the last whole valid batch.
        """
        file_size = self.log.size()
        self.index.reset(max_bytes=index_max_bytes)
        self.time_index.reset(max_bytes=index_max_bytes)
        self.size = 0
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        self.bytes_since_index = 0
        self.roll_base_ms = None
        error = None
        batches = 0
        for item in scan_batches(self.log, base_offset=self.base_offset, allow_gaps=allow_gaps):
            if isinstance(item, str):
                error = item
                break
            pos, header = item
            self._account(pos, header.base_offset, header.last_offset, header.max_timestamp, header.size,
                          index_interval_bytes)
            batches += 1
        if self.size < file_size:
            try:
                os.ftruncate(self.log.fd, self.size)
            except OSError as exc:
                raise StorageIOError(f"cannot truncate {self.log.path}: {exc}") from exc
        if self.size:
            first = self.read_header(0)
            self.roll_base_ms = first.max_timestamp if first.max_timestamp >= 0 else None
        if not active:
            self.make_inactive()
        return ScanResult(self.size, file_size, batches, error)

    # --- appending ----------------------------------------------------------------------------

    def _account(self, pos: int, base: int, last: int, max_ts: int, size: int, interval: int) -> None:
        """Index bookkeeping for one batch written at `pos` (Kafka's LogSegment.append rule)."""
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
            self.offset_of_max_timestamp = last
        if self.bytes_since_index > interval:
            self.index.append(base, pos)
            self.time_index.append(self.max_timestamp, last)
            self.bytes_since_index = 0
        self.bytes_since_index += size
        self.size = pos + size
        self.next_offset = last + 1

    def append(
        self,
        data: bytes | bytearray | memoryview,
        metas: Sequence[tuple[int, int, int, int]],
        *,
        index_interval_bytes: int,
        now_ms: int,
    ) -> None:
        """Write `data` (whole batches) with one pwrite; `metas` = (base, last, maxTs, size) each.

        On an OSError nothing changes (StorageIOError is raised, see write_all).
        """
        pos = self.size
        write_all(self.log, data, pos)
        if pos == 0:
            self.roll_base_ms = now_ms
        for base, last, max_ts, size in metas:
            self._account(pos, base, last, max_ts, size, index_interval_bytes)
            pos += size

    # --- reading ------------------------------------------------------------------------------

    def read_header(self, position: int) -> BatchHeader:
        buf = os.pread(self.log.fd, HEADER_SIZE, position)
        return parse_header(buf)

    def read_batch(self, position: int, size: int) -> bytes:
        return os.pread(self.log.fd, size, position)

    def iter_headers(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each batch from `start` (a batch boundary) to `end` (default: size).

        Reads chunks so one pread covers several small batches. Framing is checked (never CRCs:
        those were checked when the bytes were appended or recovered).
        """
        if end is None:
            end = self.size
        pos = start
        buf = b""
        buf_start = pos
        fd = self.log.fd
        while pos < end:
            off = pos - buf_start
            if len(buf) - off < HEADER_SIZE:
                buf = os.pread(fd, max(HEADER_SIZE, min(WALK_CHUNK, end - pos)), pos)
                buf_start, off = pos, 0
                if len(buf) < HEADER_SIZE:
                    raise CorruptBatchError(f"{self.log.path}: truncated header at position {pos}")
            header = parse_header(buf, off)
            if header.magic != 2 or header.batch_length < HEADER_SIZE - LOG_OVERHEAD or pos + header.size > end:
                raise CorruptBatchError(f"{self.log.path}: bad batch framing at position {pos}")
            yield pos, header
            pos += header.size

    def find(self, offset: int) -> tuple[int, BatchHeader | None]:
        """Position of the first batch whose last offset >= `offset` (and its header).

        (self.size, None) when every batch of the segment is below `offset`.
        """
        if offset >= self.next_offset:
            return self.size, None
        _, start = self.index.lookup(offset)
        for pos, header in self.iter_headers(start):
            if header.last_offset >= offset:
                return pos, header
        return self.size, None

    def boundary_at_or_before(self, limit: int, start: int) -> int:
        """The last batch boundary <= `limit`, searching from the boundary `start` (<= limit)."""
        if limit >= self.size:
            return self.size
        _, pos = self.index.lookup_position(limit)
        pos = max(pos, start)
        best = pos
        for p, header in self.iter_headers(pos):
            if p + header.size > limit:
                break
            best = p + header.size
        return best

    # --- changing -----------------------------------------------------------------------------

    def truncate_to(self, offset: int, *, index_interval_bytes: int) -> int:
        """Remove every batch whose last offset >= `offset`; returns the bytes removed.

        The cut falls at a batch boundary (a batch is never split), so the new end may be below
        `offset`. Both indexes and the max timestamp are brought back in line.
        """
        pos, header = self.find(offset)
        if header is None:
            # Nothing at or above `offset` here, but a compacted segment may end in a gap that
            # reaches past it: the segment's end moves down to `offset` (no bytes change).
            if self.base_offset <= offset < self.next_offset:
                self.next_offset = offset
            return 0
        removed = self.size - pos
        try:
            os.ftruncate(self.log.fd, pos)
        except OSError as exc:
            raise StorageIOError(f"cannot truncate {self.log.path}: {exc}") from exc
        self.size = pos
        self.next_offset = header.base_offset
        self.index.truncate_to_position(pos)
        self.time_index.truncate_to_offset(header.base_offset)
        # Max timestamp: the time index keeps a prefix; walk the rest of the (short) tail.
        last = self.time_index.last()
        self.max_timestamp, self.offset_of_max_timestamp = last if last else (-1, -1)
        _, walk_from = self.index.lookup(last[1] + 1) if last else (0, 0)
        self.bytes_since_index = 0
        for p, h in self.iter_headers(walk_from):
            if h.max_timestamp > self.max_timestamp:
                self.max_timestamp = h.max_timestamp
                self.offset_of_max_timestamp = h.last_offset
        self.bytes_since_index = self.size - self.index.last()[1]
        if self.size == 0:
            self.roll_base_ms = None
        return removed

    def make_inactive(self) -> None:
        """On roll: record the final max timestamp in the time index, trim both indexes."""
        if self.max_timestamp >= 0 and self.next_offset > self.base_offset:
            self.time_index.append(self.max_timestamp, self.next_offset - 1, final=True)
        # A failed append whose cut-back also failed may have left bytes past `size`; an inactive
        # segment's size is taken from its file on the next start, so they must go now.
        if self.log.size() > self.size:
            os.ftruncate(self.log.fd, self.size)
        self.index.trim()
        self.time_index.trim()

    def make_active(self, index_max_bytes: int) -> None:
        """Preallocate and map the indexes read-write again (new active segment after truncation)."""
        self.index.make_mutable(index_max_bytes)
        self.time_index.make_mutable(index_max_bytes)
        # bytes since the last index entry: walk from it so the interval rule carries on.
        last_pos = self.index.last()[1]
        self.bytes_since_index = self.size - last_pos

    @property
    def index_full(self) -> bool:
        return self.index.is_full or self.time_index.is_full

    def files(self) -> tuple[SegmentFile, ...]:
        """The fds a flush must fdatasync (the log and both index files)."""
        return (self.log, self.index.handle, self.time_index.handle)  # type: ignore[return-value]

    def last_modified_ms(self) -> int:
        return int(os.fstat(self.log.fd).st_mtime * 1000)

    def release(self) -> None:
        """Drop the mappings; fds close when the last FileRegion/token referencing them goes."""
        self.index.release()
        self.time_index.release()

    def delete(self) -> None:
        """Unlink the files (open regions keep reading the unlinked file through their fd)."""
        self.release()
        for p in self.paths(self.directory, self.base_offset):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
