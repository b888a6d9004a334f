"""Offline reading of ringlog's segment files, without a broker.

What is read (the engine writes it; this module only reads the files, never the engine's code)::

    DATA_DIR/
        <topic>-<partition>/            one per partition; the topic may itself contain '-', '.'
                                        and '_', so the name is split on its LAST '-'
            <20-digit base offset>.log  RecordBatch v2 batches back to back, exactly as on the
                                        wire, with offsets assigned (baseOffset rewritten)
            *.index, *.timeindex, checkpoint files
                                        not read here: everything is found by walking the .log
        <anything>-delete/, .<hidden>   directories being deleted / not partitions: skipped

Segments are read in base-offset order, batch by batch through a buffered file (a batch is the
largest unit ever held in memory, never a whole segment). Offsets within a partition increase;
the log start offset may lie above the first segment's base offset (retention moves it before
the files go), so a reader simply starts at the offset it is asked for.

Damage is classified the way the broker's recovery sees it:

* torn tail: the last segment ends inside a batch (a crash during an append: the batch's bytes
  run past the end of the file, or the rest of the file is zeros). The broker truncates it on
  start-up; for replay it is the clean end of the log (see `TornTail`).
* corruption: anything else (bad CRC, impossible length, wrong magic, undecodable records, a
  segment other than the last ending inside a batch): `SegmentCorruptError`, which names the
  file, the byte position of the batch and its offset.

Replay is read_uncommitted: control batches (transaction markers) are skipped, records of
aborted transactions are not filtered out.
"""
from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import attrs

from .batch import (
    CODEC_ZSTD,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_OFFSET,
    BatchHeader,
    compute_crc,
    parse_header,
    read_length_prefix,
)
from .errors import CorruptBatchError, StorageError
from .records import Header, Record, control_marker_type, decode_records

SEGMENT_SUFFIX = ".log"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.log$")
_READ_BUFFER = 1 << 20
_ZERO_CHUNK = 1 << 16


class NotALogDirectoryError(StorageError):
    """The path is neither a partition directory nor a data directory holding partitions."""


class SegmentCorruptError(CorruptBatchError):
    """A damaged batch inside a segment: names the file, the batch's byte position and offset."""

    def __init__(self, file: Path, position: int, offset: int | None, reason: str) -> None:
        self.file = Path(file)
        self.position = position
        self.offset = offset
        self.reason = reason
        where = f"offset {offset}" if offset is not None else "offset unknown"
        super().__init__(f"{self.file}: position {position} ({where}): {reason}")


@attrs.frozen(slots=True)
class TornTail:
    """The last segment ends inside a batch: recoverable (the broker truncates it on start-up)."""

    file: Path
    position: int
    # The offset the torn batch would have started at, when its header is readable.
    offset: int | None
    # Bytes from `position` to the end of the file.
    length: int
    reason: str

    def describe(self) -> str:
        where = f"offset {self.offset}" if self.offset is not None else "offset unknown"
        return (
            f"{self.file}: position {self.position} ({where}): torn tail (recoverable by the broker): "
            f"{self.reason}"
        )


class TimestampType(enum.IntEnum):
    CREATE_TIME = 0
    LOG_APPEND_TIME = 1

    @property
    def label(self) -> str:
        """The name Kafka's tools print."""
        return "LogAppendTime" if self is TimestampType.LOG_APPEND_TIME else "CreateTime"


@attrs.frozen(slots=True)
class ReplayRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: TimestampType
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    # transactions (only with iter_partition(markers=True)): the producer id of a record of a
    # transactional batch, and for a control batch's marker "commit" or "abort"
    producer_id: int = -1
    control: str | None = None


@attrs.frozen(slots=True)
class SegmentFile:
    path: Path
    base_offset: int

    @property
    def name(self) -> str:
        return self.path.name


@attrs.frozen(slots=True)
class PartitionDir:
    path: Path
    topic: str
    partition: int


@attrs.frozen(slots=True)
class BatchSlot:
    """One batch as found in a segment. `raw` is None when bodies were not read (stats)."""

    segment: SegmentFile
    position: int
    header: BatchHeader
    raw: bytes | None


# --- layout ---------------------------------------------------------------------------------


def parse_partition_dir_name(name: str) -> tuple[str, int] | None:
    """(topic, partition) for a partition directory name, None for anything else."""
    if not name or name.startswith(".") or name.endswith("-delete"):
        return None
    topic, sep, number = name.rpartition("-")
    if not sep or not topic or not number.isdigit() or not number.isascii():
        return None
    # "orders-01" is not a name the broker writes; refusing it keeps the mapping one-to-one.
    if number != str(int(number)):
        return None
    return topic, int(number)


def list_segments(partition_path: str | os.PathLike[str]) -> list[SegmentFile]:
    """The partition's .log segments in base-offset order."""
    path = Path(partition_path)
    found = []
    with os.scandir(path) as entries:
        for entry in entries:
            m = _SEGMENT_NAME.match(entry.name)
            if m and entry.is_file():
                found.append(SegmentFile(Path(entry.path), int(m.group(1))))
    found.sort(key=lambda s: s.base_offset)
    return found


def list_partitions(data_dir: str | os.PathLike[str]) -> list[PartitionDir]:
    """The partition directories of a data directory, sorted by (topic, partition)."""
    path = Path(data_dir)
    found = []
    with os.scandir(path) as entries:
        for entry in entries:
            parsed = parse_partition_dir_name(entry.name)
            if parsed is not None and entry.is_dir():
                found.append(PartitionDir(Path(entry.path), *parsed))
    found.sort(key=lambda p: (p.topic, p.partition))
    return found


def partition_of(path: str | os.PathLike[str]) -> PartitionDir:
    """Describe a partition directory; NotALogDirectoryError when its name is not <topic>-<n>."""
    p = Path(path)
    parsed = parse_partition_dir_name(p.resolve().name)
    if parsed is None:
        raise NotALogDirectoryError(
            f"{path}: a partition directory is named <topic>-<partition>, this one is not"
        )
    return PartitionDir(p, *parsed)


def classify(path: str | os.PathLike[str]) -> str:
    """'partition' or 'data' for a ringlog directory.

    Raises FileNotFoundError / NotADirectoryError for a missing path or a file, and
    NotALogDirectoryError for a directory that holds neither segments nor partitions.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if not p.is_dir():
        raise NotADirectoryError(f"{path}: not a directory (give a partition or data directory)")
    if list_segments(p):
        partition_of(p)  # segments in a directory the broker would not have named so: refuse
        return "partition"
    if list_partitions(p):
        return "data"
    if parse_partition_dir_name(p.resolve().name) is not None:
        return "partition"  # an empty partition (no segment written yet)
    raise NotALogDirectoryError(
        f"{path}: not a ringlog directory (no <base offset>.log segments, no <topic>-<partition> "
        "subdirectories)"
    )


def select_partitions(
    data_dir: str | os.PathLike[str],
    topics: Collection[str] | None = None,
    partitions: Collection[int] | None = None,
) -> list[PartitionDir]:
    return [
        p
        for p in list_partitions(data_dir)
        if (topics is None or p.topic in topics) and (partitions is None or p.partition in partitions)
    ]


# --- scanning one segment -------------------------------------------------------------------


class SegmentScanner:
    """Walks the batches of one segment file, batch by batch.

    Iterating yields a BatchSlot per complete batch. Framing damage raises SegmentCorruptError;
    an incomplete batch at the end of the final segment ends the iteration and is recorded in
    `torn_tail`. CRCs and record bodies are not checked here (see check_batch).
    """

    def __init__(self, segment: SegmentFile, *, final: bool, read_bodies: bool = True) -> None:
        self.segment = segment
        self.final = final
        self.read_bodies = read_bodies
        self.torn_tail: TornTail | None = None
        self.size = 0
        # Offset the batch after the last one yielded would start at (None before any batch).
        self.next_offset: int | None = None

    def batches(self, skip_below: int | None = None) -> Iterator[BatchSlot]:
        """Yield the segment's batches; those wholly below `skip_below` are passed over unread."""
        with open(self.segment.path, "rb", buffering=_READ_BUFFER) as f:
            self.size = size = os.fstat(f.fileno()).st_size
            pos = 0
            while pos < size:
                remaining = size - pos
                head = f.read(min(HEADER_SIZE, remaining))
                if len(head) != min(HEADER_SIZE, remaining):
                    raise SegmentCorruptError(self.segment.path, pos, None, "file shrank while reading")
                if remaining < HEADER_SIZE:
                    self._incomplete(f, pos, head, remaining)
                    return
                header = parse_header(head)
                if header.magic != 2 or header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
                    if self._rest_is_zero(f, pos, head, remaining):
                        return
                    reason = (
                        f"magic {header.magic}, expected 2"
                        if header.magic != 2
                        else f"batchLength {header.batch_length} is smaller than a batch header"
                    )
                    raise SegmentCorruptError(self.segment.path, pos, header.base_offset, reason)
                if header.size > remaining:
                    self._incomplete(f, pos, head, remaining)
                    return
                body_len = header.size - HEADER_SIZE
                skip = skip_below is not None and header.last_offset < skip_below
                if skip or not self.read_bodies:
                    f.seek(body_len, os.SEEK_CUR)
                    raw = None
                else:
                    body = f.read(body_len)
                    if len(body) != body_len:
                        raise SegmentCorruptError(
                            self.segment.path, pos, header.base_offset, "file shrank while reading"
                        )
                    raw = head + body
                self.next_offset = header.next_offset
                if not skip:
                    yield BatchSlot(self.segment, pos, header, raw)
                pos += header.size

    def _rest_is_zero(self, f, pos: int, head: bytes, remaining: int) -> bool:
        """A final segment whose remaining bytes are all zero: a torn tail (zero-filled)."""
        if not self.final or any(head):
            return False
        left = remaining - len(head)
        while left > 0:
            chunk = f.read(min(_ZERO_CHUNK, left))
            if not chunk or any(chunk):
                return False
            left -= len(chunk)
        self.torn_tail = TornTail(
            self.segment.path, pos, self.next_offset, remaining, f"{remaining} zero bytes at the end"
        )
        return True

    def _incomplete(self, f, pos: int, head: bytes, remaining: int) -> None:
        """The file ends inside a batch: torn tail in the final segment, corruption elsewhere."""
        if self._rest_is_zero(f, pos, head, remaining):
            return
        offset = self.next_offset  # where the torn batch would have started, if it is unreadable
        if len(head) >= LOG_OVERHEAD:
            offset, declared = read_length_prefix(head)
            plausible = declared >= HEADER_SIZE and (
                len(head) <= MAGIC_OFFSET or head[MAGIC_OFFSET] == 2
            )
            reason = f"batch declares {declared} bytes, only {remaining} remain"
        else:
            plausible = True
            reason = f"{remaining} bytes, too few for a batch header"
        if not self.final:
            raise SegmentCorruptError(
                self.segment.path, pos, offset, f"{reason} in a segment that is not the last"
            )
        if not plausible:
            raise SegmentCorruptError(self.segment.path, pos, offset, reason)
        self.torn_tail = TornTail(self.segment.path, pos, offset, remaining, reason)


def check_batch(slot: BatchSlot) -> None:
    """CRC-32C and header rules of one stored batch; SegmentCorruptError on failure.

    Looser than validate_batch on purpose: compaction may leave batches with fewer records than
    lastOffsetDelta + 1 (even none), which a broker must keep serving.
    """
    h = slot.header
    fail = None
    if slot.raw is None:
        raise ValueError("check_batch needs the batch's bytes")
    crc = compute_crc(slot.raw)
    if crc != h.crc:
        fail = f"CRC-32C mismatch: header says {h.crc:#010x}, bytes give {crc:#010x}"
    elif h.compression > CODEC_ZSTD:
        fail = f"unknown compression codec {h.compression}"
    elif h.base_offset < 0 or h.last_offset_delta < 0:
        fail = f"negative offset (baseOffset {h.base_offset}, lastOffsetDelta {h.last_offset_delta})"
    elif not 0 <= h.records_count <= h.last_offset_delta + 1:
        fail = f"recordsCount {h.records_count} does not fit lastOffsetDelta {h.last_offset_delta}"
    if fail is not None:
        raise SegmentCorruptError(slot.segment.path, slot.position, h.base_offset, fail)


def decode_slot(slot: BatchSlot) -> list[Record]:
    """Records of a checked batch; damage raises SegmentCorruptError naming the batch."""
    assert slot.raw is not None
    try:
        records = decode_records(slot.raw, slot.header)
    except CorruptBatchError as exc:
        raise SegmentCorruptError(
            slot.segment.path, slot.position, slot.header.base_offset, f"records undecodable: {exc}"
        ) from None
    h = slot.header
    previous = h.base_offset - 1
    for r in records:
        if not previous < r.offset <= h.last_offset:
            raise SegmentCorruptError(
                slot.segment.path,
                slot.position,
                h.base_offset,
                f"record offset {r.offset} out of order or outside {h.base_offset}..{h.last_offset}",
            )
        previous = r.offset
    return records


# --- replay ---------------------------------------------------------------------------------


def _segments_from(segments: list[SegmentFile], from_offset: int) -> list[SegmentFile]:
    """Drop segments that end before `from_offset` (the next one starts at or below it)."""
    start = 0
    for i, seg in enumerate(segments):
        if seg.base_offset <= from_offset:
            start = i
    return segments[start:]


def iter_partition(
    path: str | os.PathLike[str],
    from_offset: int = 0,
    *,
    to_offset: int | None = None,
    on_torn_tail: Callable[[TornTail], None] | None = None,
    markers: bool = False,
) -> Iterator[ReplayRecord]:
    """Records of one partition directory with offset >= from_offset (and < to_offset).

    Control batches are skipped, unless `markers`: then each transaction marker is yielded as a
    record with `control` "commit"/"abort" (no key or value) and records of transactional
    batches carry their producer id. A torn tail ends the iteration cleanly (`on_torn_tail` is
    told); any other damage raises SegmentCorruptError once the records before it are yielded.
    """
    part = partition_of(path)
    segments = list_segments(part.path)
    if not segments:
        return
    last = segments[-1]
    for seg in _segments_from(segments, from_offset):
        if to_offset is not None and seg.base_offset >= to_offset:
            return
        scanner = SegmentScanner(seg, final=seg is last)
        for slot in scanner.batches(skip_below=from_offset):
            h = slot.header
            if to_offset is not None and h.base_offset >= to_offset:
                return
            check_batch(slot)
            if h.is_control and not markers:
                continue
            ts_type = TimestampType.LOG_APPEND_TIME if h.is_log_append_time else TimestampType.CREATE_TIME
            pid = h.producer_id if markers and h.is_transactional else -1
            for r in decode_slot(slot):
                if r.offset < from_offset:
                    continue
                if to_offset is not None and r.offset >= to_offset:
                    return
                if h.is_control:
                    yield ReplayRecord(part.topic, part.partition, r.offset, r.timestamp, ts_type, None, None, (),
                                       producer_id=h.producer_id, control=control_marker_type(r.key))
                    continue
                yield ReplayRecord(
                    part.topic, part.partition, r.offset, r.timestamp, ts_type, r.key, r.value, r.headers,
                    producer_id=pid,
                )
        if scanner.torn_tail is not None and on_torn_tail is not None:
            on_torn_tail(scanner.torn_tail)


def iter_data_dir(
    path: str | os.PathLike[str],
    topics: Collection[str] | None = None,
    partitions: Collection[int] | None = None,
    from_offset: int = 0,
    *,
    to_offset: int | None = None,
    on_torn_tail: Callable[[TornTail], None] | None = None,
) -> Iterator[ReplayRecord]:
    """Records of every partition of a data directory, one partition after the other, in
    (topic, partition) order; `topics`/`partitions` restrict which ones are read."""
    for part in select_partitions(path, topics, partitions):
        yield from iter_partition(part.path, from_offset, to_offset=to_offset, on_torn_tail=on_torn_tail)


# --- statistics -----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class SegmentStats:
    name: str
    base_offset: int
    size: int
    batches: int
    # Records of data batches (control batches' markers are not counted).
    records: int
    first_offset: int | None
    last_offset: int | None
    min_timestamp: int | None
    max_timestamp: int | None


@attrs.frozen(slots=True)
class PartitionStats:
    topic: str
    partition: int
    path: Path
    segments: tuple[SegmentStats, ...]
    torn_tail: TornTail | None

    @property
    def total_size(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def batches(self) -> int:
        return sum(s.batches for s in self.segments)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.segments)

    @property
    def first_offset(self) -> int | None:
        return next((s.first_offset for s in self.segments if s.first_offset is not None), None)

    @property
    def last_offset(self) -> int | None:
        return next((s.last_offset for s in reversed(self.segments) if s.last_offset is not None), None)

    @property
    def min_timestamp(self) -> int | None:
        found = [s.min_timestamp for s in self.segments if s.min_timestamp is not None]
        return min(found) if found else None

    @property
    def max_timestamp(self) -> int | None:
        found = [s.max_timestamp for s in self.segments if s.max_timestamp is not None]
        return max(found) if found else None


def _batch_time_range(h: BatchHeader) -> tuple[int, int]:
    # With LogAppendTime every record carries maxTimestamp (the broker's clock).
    if h.is_log_append_time:
        return h.max_timestamp, h.max_timestamp
    return h.base_timestamp, h.max_timestamp


def partition_stats(path: str | os.PathLike[str]) -> PartitionStats:
    """Segments, sizes, offsets and time range of a partition, from the batch headers only.

    Bodies are skipped (no CRC check, no decompression), so this is fast on big logs. The time
    range comes from the headers: baseTimestamp..maxTimestamp per batch, -1 (no timestamp)
    ignored.
    """
    part = partition_of(path)
    segments = list_segments(part.path)
    out = []
    torn = None
    for seg in segments:
        scanner = SegmentScanner(seg, final=seg is segments[-1], read_bodies=False)
        batches = records = 0
        first = last = tmin = tmax = None
        for slot in scanner.batches():
            h = slot.header
            batches += 1
            if not h.is_control:
                records += max(h.records_count, 0)
            if first is None:
                first = h.base_offset
            last = h.last_offset
            lo, hi = _batch_time_range(h)
            if lo >= 0:
                tmin = lo if tmin is None else min(tmin, lo)
            if hi >= 0:
                tmax = hi if tmax is None else max(tmax, hi)
        torn = scanner.torn_tail or torn
        out.append(
            SegmentStats(seg.name, seg.base_offset, scanner.size, batches, records, first, last, tmin, tmax)
        )
    return PartitionStats(part.topic, part.partition, part.path, tuple(out), torn)
