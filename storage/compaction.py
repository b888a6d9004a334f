"""Log compaction (cleanup.policy=compact): keep the latest record of every key, Kafka's LogCleaner.

What a clean does, for one partition log:

1. plan_clean (owning thread): pick the cleanable segments: closed ones only (never the active
   segment), wholly below the recovery point (already fsynced), and older than
   min.compaction.lag.ms (by their max timestamp). The cleaner checkpoint tells where the dirty
   part (never cleaned) starts; a clean runs when dirty bytes / cleanable bytes >=
   min.cleanable.dirty.ratio, when a tombstone's delete horizon has passed, or when consecutive
   cleaned segments are small enough to be merged into one. The cleanable
   segments are grouped (consecutive, original sizes summing to at most segment.bytes, offsets
   fitting one index) so that cleaned logs do not keep one tiny segment per roll. The plan holds
   the segments' open files and sizes: immutable inputs for the next step.
2. build_clean (any thread, typically trio.to_thread): map every key of the dirty part to its
   latest offset, then rewrite each group into `<base>.log.cleaned` (plus `.index.cleaned` and
   `.timeindex.cleaned`), fsynced. The log itself is not touched.
3. commit_clean (owning thread): if the log changed meanwhile in a way that may invalidate the
   result (closed, truncated, a planned segment deleted by retention), the result is discarded.
   Otherwise each group is swapped in (see "Swap" below) and the PartitionLog's segment list
   updated; readers holding FileRegions of the old segments keep reading the old (unlinked) files.

Which records survive (Kafka's rules, magic 2):
- a record with a key survives when no later record of the dirty part has the same key;
- a record without a key is removed (Kafka's produce path refuses them on compacted topics);
- a tombstone (null value) that survives gets a delete horizon: its batch's attribute bit 6 is set
  and its baseTimestamp becomes now + delete.retention.ms (KIP-534; record timestamp deltas are
  re-encoded so record timestamps do not change). A clean after the horizon removes it;
- control batches (transaction markers) are kept as they are;
- transactions (Kafka's cleaner rules): only the part below the last stable offset is cleanable
  (`plan_clean(max_offset=...)`), so no open transaction is ever cleaned. A transactional batch
  whose transaction's abort marker lies in the cleaned range is removed whole and takes no part in
  "latest of its key" (so an aborted value never shadows an older committed one: in
  `__consumer_offsets` that would lose a group's committed offset); one whose marker is not in the
  range (its transaction is decided beyond the range) is kept whole and not counted either, until
  a later clean sees its marker;
- a batch keeps its baseOffset, lastOffsetDelta, producer id/epoch, baseSequence and leader epoch
  (so replaying batch headers still gives each producer's last sequence); records keep their
  original offsets; a batch whose records all go is removed, except the last batch of each
  producer id in the cleaned range while younger than `producer_expiration_ms` (Kafka's
  producer.id.expiration.ms): it stays as an empty batch (recordsCount 0, header only, Kafka's
  RETAIN_EMPTY), so an idempotent producer's last sequence survives a restart that rebuilds
  producer state from the log. Empty batches exist only in cleaned segments;
- compressed batches are decompressed and the kept records re-compressed with the same codec; an
  untouched batch is copied byte for byte;
- the log start offset never changes, and neither does any kept record's offset, timestamp, key,
  value or headers.

Files
-----
`<partition dir>/ringlog.cleaner` (UTF-8 text, written with storage.checkpoint.atomic_write)::

    ringlog-cleaner-checkpoint 1
    first-dirty-offset 1234        where the never-cleaned part starts
    delete-horizon 1700000000000   earliest delete horizon of a kept tombstone, -1 if none

Missing or unreadable: everything counts as dirty (the next clean redoes work, nothing is lost).

`<base>.log.cleaned`, `.index.cleaned`, `.timeindex.cleaned`: a group's cleaned segment being built.

`<base>.swap` (text, atomic_write), the commit record of one group's swap::

    ringlog-swap 1
    end 5678                       offset after the group
    replaces 0 100 200             base offsets of the old segments (the first is `base`)

Swap, for each group (Kafka's .cleaned/.swap protocol, made explicit by the manifest):
  a. build_clean wrote and fsynced the three `.cleaned` files;
  b. write `<base>.swap` (fsynced, directory fsynced): from here the swap will complete;
  c. rename the `.cleaned` index files, then the `.cleaned` log, over `<base>.*`;
  d. unlink the files of the other old segments; fsync the directory; unlink `<base>.swap`.
recover_swaps (run by PartitionLog.open before anything else): a `<base>.swap` whose
`<base>.log.cleaned` still exists is finished (rename it, drop `<base>`'s index files so recovery
rebuilds them from the log); in every case the other old segments listed are unlinked and the
manifest removed. `.cleaned` files without a manifest are the remains of an unfinished build
and are deleted. So a crash at any point leaves either the old segments or the cleaned ones.

Who owns what: plan_clean and commit_clean run on the log's owning thread; build_clean only reads
the planned files (through the plan's own fd references) and writes the `.cleaned` files.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs

from .batch import (
    CONTROL_MASK,
    DELETE_HORIZON_MASK,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    HEADER_SIZE,
    BatchHeader,
    compute_crc,
    frame_batch,
    parse_header,
)
from .checkpoint import TMP_SUFFIX, atomic_write, fsync_dir
from .errors import CorruptBatchError, StorageError, StorageIOError
from .index import OffsetIndex, TimeIndex
from .log import LogConfig, PartitionLog
from .records import DEFAULT_MAX_DECOMPRESSED, compress, control_marker_type, decode_varint, decompress, encode_varint, read_bytes
from .segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    MAX_RELATIVE_OFFSET,
    MAX_SEGMENT_POSITION,
    TIME_INDEX_SUFFIX,
    Segment,
    SegmentFile,
    parse_segment_name,
    segment_name,
)

CLEANER_CHECKPOINT = "ringlog.cleaner"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
_CKPT_MAGIC = "ringlog-cleaner-checkpoint"
_SWAP_MAGIC = "ringlog-swap"
# Kafka's producer.id.expiration.ms: how long the last batch of a producer is kept whole.
DEFAULT_PRODUCER_EXPIRATION_MS = 24 * 3600 * 1000
# Keys the offset map may hold in one clean (Kafka bounds it by log.cleaner.dedupe.buffer.size);
# the dirty part is cleaned in several rounds when it has more distinct keys.
DEFAULT_MAX_MAP_KEYS = 1_000_000
_WRITE_CHUNK = 1 << 20


class CleanAborted(StorageError):
    """build_clean was asked to stop (shutdown)."""


# --- the cleaner checkpoint -----------------------------------------------------------------


@attrs.frozen
class CleanerCheckpoint:
    first_dirty_offset: int
    delete_horizon: int = -1

    def encode(self) -> bytes:
        return (
            f"{_CKPT_MAGIC} 1\nfirst-dirty-offset {self.first_dirty_offset}\n"
            f"delete-horizon {self.delete_horizon}\n"
        ).encode()


def read_cleaner_checkpoint(directory: Path) -> CleanerCheckpoint | None:
    try:
        lines = (Path(directory) / CLEANER_CHECKPOINT).read_text("utf-8").splitlines()
        if lines[0] != f"{_CKPT_MAGIC} 1":
            return None
        fields = dict(line.split(" ", 1) for line in lines[1:])
        return CleanerCheckpoint(int(fields["first-dirty-offset"]), int(fields["delete-horizon"]))
    except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError):
        return None


def write_cleaner_checkpoint(directory: Path, ckpt: CleanerCheckpoint) -> None:
    try:
        atomic_write(Path(directory) / CLEANER_CHECKPOINT, ckpt.encode())
    except OSError as exc:
        raise StorageIOError(f"cannot write the cleaner checkpoint of {directory}: {exc}") from exc


# --- plan -----------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class SegmentInput:
    """What the worker may read of one planned segment (immutable: closed and below the
    recovery point; only a truncation could change it, and commit_clean then discards)."""

    segment: Segment
    base_offset: int
    end_offset: int          # base offset of the following segment
    size: int
    file: SegmentFile        # holds the fd open even if the segment is deleted meanwhile


@attrs.define(eq=False)
class CleanPlan:
    directory: Path
    truncations: int
    inputs: tuple[SegmentInput, ...]        # the cleanable segments, oldest first
    dirty_index: int                        # inputs[dirty_index:] are the dirty part
    groups: tuple[tuple[int, int], ...]     # [start, end) ranges of inputs, one new segment each
    now_ms: int
    delete_retention_ms: int
    producer_expiration_ms: int
    index_interval_bytes: int
    max_map_keys: int
    _stop: threading.Event = attrs.field(factory=threading.Event)

    def stop(self) -> None:
        """Ask a running build_clean to give up (it raises CleanAborted)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


def plan_clean(
    log: PartitionLog,
    now_ms: int,
    *,
    force: bool = False,
    producer_expiration_ms: int = DEFAULT_PRODUCER_EXPIRATION_MS,
    max_map_keys: int = DEFAULT_MAX_MAP_KEYS,
    max_offset: int | None = None,
) -> CleanPlan | None:
    """What to clean now, or None (nothing cleanable, or too little dirty and no horizon due).

    `force` ignores min.cleanable.dirty.ratio (still needs something cleanable). `max_offset`: no
    segment reaching past it is cleaned (the partition's last stable offset: open transactions
    are never compacted).
    """
    if log.closed:
        return None
    cfg = log.config
    segs = log.segments
    inputs: list[SegmentInput] = []
    lag_limit = now_ms - cfg.min_compaction_lag_ms
    for seg, nxt in zip(segs, segs[1:]):
        end = nxt.base_offset
        if end > log.recovery_point:
            break  # not fsynced yet: recovery may still cut it
        if max_offset is not None and end > max_offset:
            break  # holds (or follows) an open transaction
        if cfg.min_compaction_lag_ms > 0 and seg.size > 0:  # (an empty segment has nothing to wait for)
            ts = seg.max_timestamp if seg.max_timestamp >= 0 else seg.last_modified_ms()
            if ts > lag_limit:
                break
        inputs.append(SegmentInput(seg, seg.base_offset, end, seg.size, seg.log))
    if not inputs:
        return None
    ckpt = read_cleaner_checkpoint(log.directory)
    first_dirty = ckpt.first_dirty_offset if ckpt else inputs[0].base_offset
    if first_dirty < inputs[0].base_offset or first_dirty > log.log_end_offset:
        first_dirty = inputs[0].base_offset  # truncated or reset below it: all dirty again
    dirty_index = next((i for i, s in enumerate(inputs) if s.end_offset > first_dirty), len(inputs))
    clean_bytes = sum(s.size for s in inputs[:dirty_index])
    dirty_bytes = sum(s.size for s in inputs[dirty_index:])
    horizon_due = ckpt is not None and 0 <= ckpt.delete_horizon <= now_ms
    groups: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(inputs) + 1):
        if i == len(inputs):
            groups.append((start, i))
            break
        total = sum(s.size for s in inputs[start : i + 1])
        span = inputs[i].end_offset - 1 - inputs[start].base_offset
        if total > cfg.segment_bytes or span > MAX_RELATIVE_OFFSET:
            groups.append((start, i))
            start = i
    # Cleaned segments already small enough to share one segment: merging them is cheap (they
    # are small by definition) and keeps a compacted log from keeping one file per roll.
    mergeable = any(end - start > 1 and end <= dirty_index for start, end in groups)
    if not force and not horizon_due and not mergeable:
        if dirty_bytes == 0:
            return None
        if dirty_bytes / (clean_bytes + dirty_bytes) < cfg.min_cleanable_dirty_ratio:
            return None
    return CleanPlan(
        directory=log.directory,
        truncations=log.truncations,
        inputs=tuple(inputs),
        dirty_index=dirty_index,
        groups=tuple(groups),
        now_ms=now_ms,
        delete_retention_ms=cfg.delete_retention_ms,
        producer_expiration_ms=producer_expiration_ms,
        index_interval_bytes=cfg.index_interval_bytes,
        max_map_keys=max_map_keys,
    )


# --- build (worker thread) ------------------------------------------------------------------


@attrs.frozen
class CleanedGroup:
    base_offset: int
    end_offset: int
    replaced: tuple[Segment, ...]
    size: int
    batches: int


@attrs.frozen
class CleanResult:
    groups: tuple[CleanedGroup, ...]
    map_end: int                  # offset after the last cleaned segment (the new first dirty)
    delete_horizon: int           # earliest horizon of a kept tombstone, -1 if none
    records_read: int
    records_kept: int
    bytes_read: int
    bytes_written: int


def _iter_batches(inp: SegmentInput) -> Iterator[tuple[BatchHeader, bytes]]:
    """Every batch of a planned segment, read through the plan's own fd, CRC-checked."""
    fd = inp.file.fd
    pos = 0
    buf = b""
    buf_start = 0
    while pos < inp.size:
        off = pos - buf_start
        if len(buf) - off < HEADER_SIZE:
            buf = os.pread(fd, max(_WRITE_CHUNK, HEADER_SIZE), pos)
            buf_start, off = pos, 0
        if len(buf) - off < HEADER_SIZE:
            raise CorruptBatchError(f"{inp.file.path}: short read at {pos}")
        header = parse_header(buf, off)
        size = header.size
        if header.magic != 2 or size < HEADER_SIZE or pos + size > inp.size:
            raise CorruptBatchError(f"{inp.file.path}: bad batch framing at {pos}")
        if len(buf) - off < size:
            buf = os.pread(fd, max(_WRITE_CHUNK, size), pos)
            buf_start, off = pos, 0
            if len(buf) < size:
                raise CorruptBatchError(f"{inp.file.path}: short read at {pos}")
        raw = buf[off : off + size]
        # The file was checked when written or recovered; checking again here means a damaged
        # page is never multiplied into a cleaned segment whose CRCs would then be fresh.
        if compute_crc(raw) != header.crc:
            raise CorruptBatchError(f"{inp.file.path}: CRC mismatch at {pos}")
        yield header, raw
        pos += size


@attrs.frozen(slots=True)
class _RawRecord:
    offset_delta: int
    ts_delta: int
    key: bytes | None
    tombstone: bool
    attributes: int
    tail: bytes          # key, value and headers exactly as stored


def _raw_records(header: BatchHeader, raw: bytes, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> list[_RawRecord]:
    body = decompress(header.compression, memoryview(raw)[HEADER_SIZE:], max_decompressed)
    out = []
    pos = 0
    for _ in range(header.records_count):
        length, pos = decode_varint(body, pos)
        end = pos + length
        if length < 6 or end > len(body):
            raise CorruptBatchError("record length runs past the end of the batch")
        attributes = body[pos]
        ts_delta, p = decode_varint(body, pos + 1)
        off_delta, p = decode_varint(body, p)
        tail_start = p
        key, p = read_bytes(body, p)
        vlen, _ = decode_varint(body, p)
        out.append(_RawRecord(off_delta, ts_delta, key, vlen < 0, attributes, bytes(body[tail_start:end])))
        pos = end
    if pos != len(body):
        raise CorruptBatchError("bytes after the last record")
    return out


def _encode_batch(header: BatchHeader, records: list[_RawRecord], base_ts: int, attributes: int) -> tuple[bytes, int]:
    """A batch with `header`'s offsets and producer fields and the given records; (bytes, maxTs)."""
    parts = []
    max_ts = -1
    for r in records:
        ts = header.base_timestamp + r.ts_delta
        max_ts = max(max_ts, ts)
        inner = bytes([r.attributes]) + encode_varint(ts - base_ts) + encode_varint(r.offset_delta) + r.tail
        parts.append(encode_varint(len(inner)) + inner)
    body = compress(header.compression, b"".join(parts))
    if header.is_log_append_time:
        max_ts = header.max_timestamp
    batch = frame_batch(
        body, attributes=attributes, records_count=len(records), last_offset_delta=header.last_offset_delta,
        base_timestamp=base_ts, max_timestamp=max_ts, base_offset=header.base_offset,
        partition_leader_epoch=header.partition_leader_epoch, producer_id=header.producer_id,
        producer_epoch=header.producer_epoch, base_sequence=header.base_sequence,
    )
    return bytes(batch), max_ts


def _empty_batch(header: BatchHeader) -> bytes:
    """A batch with no records and `header`'s offsets and producer fields (Kafka's
    DefaultRecordBatch.writeEmptyHeader: no codec, both timestamps = the max timestamp)."""
    if header.records_count == 0:
        base_ts = header.base_timestamp
    else:
        base_ts = header.max_timestamp
    attributes = header.attributes & (TIMESTAMP_TYPE_MASK | TRANSACTIONAL_MASK | CONTROL_MASK)
    return bytes(frame_batch(
        b"", attributes=attributes, records_count=0, last_offset_delta=header.last_offset_delta,
        base_timestamp=base_ts, max_timestamp=header.max_timestamp, base_offset=header.base_offset,
        partition_leader_epoch=header.partition_leader_epoch, producer_id=header.producer_id,
        producer_epoch=header.producer_epoch, base_sequence=header.base_sequence,
    ))


def _is_abort_marker(header: BatchHeader, raw: bytes) -> bool:
    records = _raw_records(header, raw)
    return bool(records) and control_marker_type(records[0].key) == "abort"


def _transaction_outcomes(plan: CleanPlan) -> tuple[set[int], set[int]]:
    """(aborted, undecided): base offsets of the transactional data batches of the cleanable range
    whose abort marker is in the range, and of those whose marker is not (decided later)."""
    pending: dict[int, list[int]] = {}
    aborted: set[int] = set()
    for inp in plan.inputs:
        for header, raw in _iter_batches(inp):
            if plan.stopped:
                raise CleanAborted("clean stopped")
            if not header.is_transactional or header.producer_id < 0:
                continue
            if header.is_control:
                batches = pending.pop(header.producer_id, ())
                if batches and _is_abort_marker(header, raw):
                    aborted.update(batches)
            else:
                pending.setdefault(header.producer_id, []).append(header.base_offset)
    return aborted, {o for batches in pending.values() for o in batches}


def _build_offset_map(plan: CleanPlan, skip: set[int] | frozenset[int] = frozenset()) -> tuple[dict[bytes, int], int]:
    """key -> latest offset over the dirty segments that fit the map, leaving out the batches
    starting at `skip` (aborted or undecided transactions); (map, inputs cleanable)."""
    latest: dict[bytes, int] = {}
    end_index = plan.dirty_index
    for i in range(plan.dirty_index, len(plan.inputs)):
        local: dict[bytes, int] = {}
        for header, raw in _iter_batches(plan.inputs[i]):
            if plan.stopped:
                raise CleanAborted("clean stopped")
            if header.is_control or header.base_offset in skip:
                continue
            for r in _raw_records(header, raw):
                if r.key is not None:
                    local[r.key] = header.base_offset + r.offset_delta
        # The map covers whole segments only: a segment whose keys do not fit waits for the
        # next round (but the first dirty segment is always taken, or nothing would progress).
        if i > plan.dirty_index and len(latest) + len(local) > plan.max_map_keys:
            break
        latest.update(local)
        end_index = i + 1
    return latest, end_index


def build_clean(plan: CleanPlan) -> CleanResult:
    """Write the cleaned segments of `plan` as `.cleaned` files (fsynced). Thread-safe: reads
    only the plan's own file references. On any error the `.cleaned` files are removed."""
    written: list[Path] = []
    try:
        return _build(plan, written)
    except BaseException:
        for p in written:
            try:
                p.unlink()
            except OSError:
                pass
        raise


def _build(plan: CleanPlan, written: list[Path]) -> CleanResult:
    # inputs[:end_index] get cleaned: the clean part and the dirty segments the map covers
    # (all of them, unless they hold more than max_map_keys distinct keys).
    aborted, undecided = _transaction_outcomes(plan)
    offset_map, end_index = _build_offset_map(plan, aborted | undecided)
    inputs = plan.inputs[:end_index]
    # The last batch of each producer id in the range (kept whole, see the module doc).
    last_of_producer: dict[int, int] = {}
    for inp in inputs:
        for header, _raw in _iter_batches(inp):
            if header.producer_id >= 0:
                last_of_producer[header.producer_id] = header.base_offset
    now = plan.now_ms
    new_horizon = now + plan.delete_retention_ms
    earliest_horizon = -1
    stats = {"read": 0, "kept": 0, "bytes_read": 0, "bytes_written": 0}
    groups: list[CleanedGroup] = []
    for start, end in plan.groups:
        if start >= end_index:
            break
        end = min(end, end_index)
        members = inputs[start:end]
        base = members[0].base_offset
        group_end = members[-1].end_offset
        log_path = plan.directory / (segment_name(base, LOG_SUFFIX) + CLEANED_SUFFIX)
        index_path = plan.directory / (segment_name(base, INDEX_SUFFIX) + CLEANED_SUFFIX)
        time_path = plan.directory / (segment_name(base, TIME_INDEX_SUFFIX) + CLEANED_SUFFIX)
        index_entries: list[tuple[int, int]] = []
        time_entries: list[tuple[int, int]] = []
        pos = 0
        since_index = 0
        seg_max_ts = -1
        nbatches = 0
        pending: list[bytes] = []
        pending_bytes = 0
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        written.append(log_path)
        try:
            for inp in members:
                for header, raw in _iter_batches(inp):
                    if plan.stopped:
                        raise CleanAborted("clean stopped")
                    stats["bytes_read"] += len(raw)
                    if header.base_offset in aborted and not header.is_control:
                        stats["read"] += header.records_count
                        continue  # an aborted transaction's records go, whole batches
                    if header.base_offset in undecided and not header.is_control:
                        out, max_ts, horizon = raw, header.max_timestamp, -1  # decided later
                        stats["read"] += header.records_count
                        stats["kept"] += header.records_count
                    else:
                        out, max_ts, horizon = _clean_batch(
                            header, raw, offset_map, now, new_horizon, plan, last_of_producer, stats
                        )
                    if out is None:
                        continue
                    if horizon >= 0 and (earliest_horizon < 0 or horizon < earliest_horizon):
                        earliest_horizon = horizon
                    # Index bookkeeping: Segment._account's rule, so the files look as if appended.
                    last = header.last_offset
                    if max_ts > seg_max_ts:
                        seg_max_ts = max_ts
                    if since_index > plan.index_interval_bytes and pos > 0:
                        index_entries.append((header.base_offset - base, pos))
                        if seg_max_ts >= 0 and (not time_entries or (seg_max_ts > time_entries[-1][0]
                                                                     and last - base > time_entries[-1][1])):
                            time_entries.append((seg_max_ts, last - base))
                        since_index = 0
                    since_index += len(out)
                    pos += len(out)
                    nbatches += 1
                    if pos > MAX_SEGMENT_POSITION:
                        raise StorageError(f"cleaned segment {base} would exceed the index's position range")
                    pending.append(out)
                    pending_bytes += len(out)
                    if pending_bytes >= _WRITE_CHUNK:
                        _write_all(fd, b"".join(pending))
                        pending, pending_bytes = [], 0
            if pending:
                _write_all(fd, b"".join(pending))
            os.fsync(fd)
        finally:
            os.close(fd)
        # The final time entry a roll writes (Segment.make_inactive): the segment's max timestamp
        # at its last offset, so a time lookup finds the segment's newest record.
        if seg_max_ts >= 0 and group_end - 1 - base <= MAX_RELATIVE_OFFSET:
            rel = group_end - 1 - base
            if not time_entries or (seg_max_ts > time_entries[-1][0] and rel > time_entries[-1][1]):
                if not (seg_max_ts == 0 and rel == 0):
                    time_entries.append((seg_max_ts, rel))
        _write_file(index_path, b"".join(OffsetIndex.ENTRY.pack(r, p) for r, p in index_entries), written)
        _write_file(time_path, b"".join(TimeIndex.ENTRY.pack(t, r) for t, r in time_entries), written)
        stats["bytes_written"] += pos
        groups.append(CleanedGroup(base, group_end, tuple(m.segment for m in members), pos, nbatches))
    return CleanResult(
        groups=tuple(groups),
        map_end=groups[-1].end_offset if groups else plan.inputs[0].base_offset,
        delete_horizon=earliest_horizon,
        records_read=stats["read"],
        records_kept=stats["kept"],
        bytes_read=stats["bytes_read"],
        bytes_written=stats["bytes_written"],
    )


def _clean_batch(
    header: BatchHeader,
    raw: bytes,
    offset_map: dict[bytes, int],
    now: int,
    new_horizon: int,
    plan: CleanPlan,
    last_of_producer: dict[int, int],
    stats: dict[str, int],
) -> tuple[bytes | None, int, int]:
    """(cleaned batch or None to drop it, its max timestamp, its delete horizon or -1)."""
    if header.is_control:
        stats["read"] += header.records_count
        stats["kept"] += header.records_count
        return raw, header.max_timestamp, -1
    records = _raw_records(header, raw)
    stats["read"] += len(records)
    has_horizon = bool(header.attributes & DELETE_HORIZON_MASK)
    kept = []
    for r in records:
        if r.key is None:
            continue  # keyless records cannot be compacted: Kafka's cleaner drops them
        latest = offset_map.get(r.key)
        if latest is not None and header.base_offset + r.offset_delta < latest:
            continue
        if r.tombstone and has_horizon and now >= header.base_timestamp:
            continue  # past its delete horizon
        kept.append(r)
    if not kept:
        producer_last = header.producer_id >= 0 and last_of_producer.get(header.producer_id) == header.base_offset
        if producer_last and header.max_timestamp > now - plan.producer_expiration_ms:
            # Kafka's RETAIN_EMPTY: the header alone keeps the producer's last sequence.
            return _empty_batch(header), header.max_timestamp, -1
        return None, -1, -1
    stats["kept"] += len(kept)
    has_tombstone = any(r.tombstone for r in kept)
    needs_horizon = has_tombstone and not has_horizon
    if needs_horizon:
        base_ts = new_horizon
        attributes = header.attributes | DELETE_HORIZON_MASK
    else:
        base_ts = header.base_timestamp
        attributes = header.attributes
    # The horizon that asks for the next clean: only while a tombstone is left to expire.
    horizon = base_ts if has_tombstone else -1
    if len(kept) == len(records) and not needs_horizon:
        return raw, header.max_timestamp, horizon
    out, max_ts = _encode_batch(header, kept, base_ts, attributes)
    return out, max_ts, horizon


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _write_file(path: Path, data: bytes, written: list[Path]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    written.append(path)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- commit (owning thread) -----------------------------------------------------------------


@attrs.frozen
class CleanStats:
    segments_before: int
    segments_after: int
    bytes_before: int
    bytes_after: int
    records_read: int
    records_kept: int
    map_end: int


def discard(plan: CleanPlan, result: CleanResult | None) -> None:
    """Remove the `.cleaned` files of a result that will not be committed."""
    if result is None:
        return
    for g in result.groups:
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            (plan.directory / (segment_name(g.base_offset, suffix) + CLEANED_SUFFIX)).unlink(missing_ok=True)


def commit_clean(log: PartitionLog, plan: CleanPlan, result: CleanResult) -> CleanStats | None:
    """Swap the cleaned segments in; None (and the result discarded) when the log changed so
    that the result may be stale: closed, truncated, or a planned segment no longer there.

    The three steps below, in a row; an owner that must not block its thread runs
    `swap_clean` in a worker thread between the other two (broker.cleaner)."""
    if not clean_is_current(log, plan):
        discard(plan, result)
        return None
    before = (log.segment_count(), log.size_bytes)
    return install_clean(log, plan, result, swap_clean(plan, result, log.config), before)


def clean_is_current(log: PartitionLog, plan: CleanPlan) -> bool:
    """Whether the log is still as the plan saw it (not closed, truncated or missing a segment)."""
    current = {id(s) for s in log.segments} if not log.closed else set()
    return not (
        log.closed
        or log.truncations != plan.truncations
        or any(id(inp.segment) not in current for inp in plan.inputs)
        or log.directory != plan.directory
    )


def swap_clean(plan: CleanPlan, result: CleanResult, cfg: LogConfig) -> list[tuple[CleanedGroup, Segment]]:
    """The file work of a commit: put each cleaned group's files in place (crash-safe, see
    _swap_files), open them, and write the cleaner checkpoint. Touches no log in memory, so it
    may run in a worker thread while the log's owner holds its lock; install_clean follows."""
    d = plan.directory
    swapped = []
    for g in result.groups:
        _swap_files(d, g)
        seg = Segment.open_existing(d, g.base_offset)
        seg.load_trusted(next_offset=g.end_offset, active=False, index_max_bytes=cfg.segment_index_bytes)
        swapped.append((g, seg))
    first_dirty = result.map_end if result.groups else plan.inputs[0].base_offset
    write_cleaner_checkpoint(d, CleanerCheckpoint(first_dirty, result.delete_horizon))
    return swapped


def install_clean(log: PartitionLog, plan: CleanPlan, result: CleanResult,
                  swapped: list[tuple[CleanedGroup, Segment]], before: tuple[int, int]) -> CleanStats:
    """Put the opened cleaned segments in the log's place of the ones they replace (memory only)."""
    for g, seg in swapped:
        log.replace_segments(g.replaced, seg)
    return CleanStats(
        segments_before=before[0],
        segments_after=log.segment_count(),
        bytes_before=before[1],
        bytes_after=log.size_bytes,
        records_read=result.records_read,
        records_kept=result.records_kept,
        map_end=result.map_end,
    )


# A test sets this to a step name to make _swap_files raise there, simulating a crash mid-swap.
_crash_at: str | None = None


class _SimulatedCrash(Exception):
    pass


def _step(name: str) -> None:
    if _crash_at == name:
        raise _SimulatedCrash(name)


SWAP_STEPS = ("manifest", "index", "log", "unlink", "done")


def _swap_files(d: Path, g: CleanedGroup) -> None:
    base = g.base_offset
    others = [s.base_offset for s in g.replaced if s.base_offset != base]
    manifest = d / (segment_name(base, SWAP_SUFFIX))
    try:
        atomic_write(manifest, (
            f"{_SWAP_MAGIC} 1\nend {g.end_offset}\nreplaces {' '.join(str(s.base_offset) for s in g.replaced)}\n"
        ).encode())
        _step("manifest")
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            os.replace(d / (segment_name(base, suffix) + CLEANED_SUFFIX), d / segment_name(base, suffix))
        _step("index")
        os.replace(d / (segment_name(base, LOG_SUFFIX) + CLEANED_SUFFIX), d / segment_name(base, LOG_SUFFIX))
        _step("log")
        for b in others:
            for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                (d / segment_name(b, suffix)).unlink(missing_ok=True)
        _step("unlink")
        fsync_dir(d)
        manifest.unlink()
        fsync_dir(d)
        _step("done")
    except OSError as exc:
        raise StorageIOError(f"swapping cleaned segment {base} into {d} failed: {exc}") from exc


# --- recovery -------------------------------------------------------------------------------


def recover_swaps(directory: Path) -> int:
    """Finish every swap whose manifest exists, delete orphaned `.cleaned` files; returns the
    number of swaps finished. Runs before a partition log is opened (PartitionLog._load)."""
    d = Path(directory)
    try:
        names = [p.name for p in d.iterdir()]
    except FileNotFoundError:
        return 0
    finished = 0
    changed = False
    for name in sorted(names):
        parsed = parse_segment_name(name)
        if parsed is None:
            continue
        base, suffix = parsed
        if suffix == SWAP_SUFFIX + TMP_SUFFIX:
            (d / name).unlink(missing_ok=True)
            changed = True
        if suffix != SWAP_SUFFIX:
            continue
        try:
            lines = (d / name).read_text("utf-8").splitlines()
            fields = dict(line.split(" ", 1) for line in lines[1:])
            replaced = [int(x) for x in fields["replaces"].split()]
            if lines[0] != f"{_SWAP_MAGIC} 1" or not replaced or replaced[0] != base:
                raise ValueError(name)
        except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
            # atomic_write makes a torn manifest impossible; refuse to guess rather than lose data
            raise StorageError(f"unreadable compaction manifest {d / name}: {exc}") from exc
        cleaned_log = d / (segment_name(base, LOG_SUFFIX) + CLEANED_SUFFIX)
        if cleaned_log.exists():
            os.replace(cleaned_log, d / segment_name(base, LOG_SUFFIX))
            # Whether the index renames happened is unknown: recovery rebuilds them from the log.
            for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                (d / segment_name(base, suffix)).unlink(missing_ok=True)
        for b in replaced[1:]:
            for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                (d / segment_name(b, suffix)).unlink(missing_ok=True)
        fsync_dir(d)
        (d / name).unlink()
        finished += 1
        changed = True
    for name in names:
        if name.endswith(CLEANED_SUFFIX) and (d / name).exists():
            (d / name).unlink()  # a build or swap that never reached its manifest
            changed = True
    if changed:
        fsync_dir(d)
    return finished


# --- one-call convenience -------------------------------------------------------------------


def clean_log(
    log: PartitionLog,
    now_ms: int,
    *,
    force: bool = False,
    producer_expiration_ms: int = DEFAULT_PRODUCER_EXPIRATION_MS,
    max_map_keys: int = DEFAULT_MAX_MAP_KEYS,
    max_offset: int | None = None,
) -> CleanStats | None:
    """plan + build + commit on the calling thread (tests, offline tools)."""
    plan = plan_clean(log, now_ms, force=force, producer_expiration_ms=producer_expiration_ms,
                      max_map_keys=max_map_keys, max_offset=max_offset)
    if plan is None:
        return None
    result = build_clean(plan)
    return commit_clean(log, plan, result)


def records_have_keys(
    batch: bytes | bytearray | memoryview, header: BatchHeader, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
) -> bool:
    """Whether every record of a (non-control) batch has a key: compacted topics require it.
    A compressed batch inflating past `max_decompressed` raises DecompressedTooLargeError."""
    if header.is_control:
        return True
    return all(r.key is not None for r in _raw_records(header, bytes(batch), max_decompressed))


__all__ = [
    "CLEANER_CHECKPOINT",
    "CleanAborted",
    "CleanPlan",
    "CleanResult",
    "CleanStats",
    "CleanerCheckpoint",
    "build_clean",
    "clean_log",
    "commit_clean",
    "discard",
    "plan_clean",
    "read_cleaner_checkpoint",
    "records_have_keys",
    "recover_swaps",
]
