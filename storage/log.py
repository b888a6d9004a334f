"""A partition's log: an ordered list of segments in one directory `<topic>-<partition>`.

Directory contents::

    00000000000000000000.log / .index / .timeindex   one segment per base offset (storage.segment)
    ringlog.checkpoint                               recovery point + log start offset
                                                     (storage.checkpoint, written atomically)
    anything else (e.g. *.snapshot written by the broker) is left alone

Invariants:
- The last segment is the active one; only it is appended to. Offsets strictly increase from the
  log start offset to the log end offset (the next offset to assign); they are contiguous except
  where log compaction (storage.compaction, cleanup.policy=compact) removed records, which leaves
  gaps inside and between closed segments (a read at a removed offset starts at the next batch).
- Each append call is validated whole before a byte is written, then written with ONE pwrite at
  the tracked end of the active segment. The in-memory end moves only after the write succeeded,
  so readers (bounded by it) never see a partial batch, and a failed write (disk full) is cut
  back and leaves the log exactly as before (StorageIOError).
- Writes go straight to the fd (no Python buffering): once append() returns, a kill -9 of the
  process loses nothing; what an OS crash may lose depends on the flush policy (docs/guarantees.md).
- recovery_point: offsets below it are fsynced. After an unclean shutdown, segments wholly below
  it are trusted (indexes sanity-checked, rebuilt if damaged); the segment holding it and every
  later one are scanned with CRC checks, a torn/corrupt tail is cut and later segments deleted
  (RecoveryReport says what). The checkpoint file is rewritten when the recovery point crosses a
  segment boundary (the only thing recovery's starting segment depends on), on truncation, on
  log start offset changes and on close.

Owner: one thread (the broker's event loop thread). The only cross-thread call is FlushToken.sync().
"""
from __future__ import annotations

import bisect
import os
import shutil
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import attrs
import crc32c

from .batch import (
    ATTRIBUTES_OFFSET,
    CRC_OFFSET,
    MAX_TIMESTAMP_OFFSET,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    parse_header,
    set_base_offset,
    split_batches,
    validate_batch,
)
from . import configdef
from .checkpoint import (
    TMP_SUFFIX,
    PartitionCheckpoint,
    fsync_dir,
    read_partition_checkpoint,
    write_partition_checkpoint,
)
from .errors import (
    CorruptBatchError,
    InvalidBatchError,
    OffsetOutOfRangeError,
    StorageError,
    StorageIOError,
)
from .index import IndexCorruptError
from .configdef import Choice, CommaList, Integer, Real, setting
from .records import decode_records
from .segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    MAX_RELATIVE_OFFSET,
    MAX_SEGMENT_POSITION,
    TIME_INDEX_SUFFIX,
    Segment,
    SegmentFile,
    parse_segment_name,
)

# Module-level alias so a test can simulate a failing fsync.
_fdatasync = getattr(os, "fdatasync", os.fsync)

FLUSH_POLICIES = ("always", "interval", "never")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
COMPRESSION_TYPES = ("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")
CLEANUP_POLICIES = ("delete", "compact")  # the items cleanup.policy may list, in any order


_DAY_MS = 24 * 3600 * 1000
INT64_MAX = (1 << 63) - 1


@attrs.frozen
class LogConfig:
    """Per-log settings, declared with Kafka's topic-config names (storage.configdef).

    `synonym` is the broker key that sets a config's default for every topic (Kafka's names:
    log.retention.ms for retention.ms, ...); broker.config offers those keys."""

    segment_bytes: int = setting(
        "segment.bytes", Integer(14, MAX_SEGMENT_POSITION, bits=32), 1 << 30, synonym="log.segment.bytes",
        doc="Size of a segment file: the active segment is rolled when the next batch would not fit. "
            "At most 2 GiB - 1, so that file positions fit the index entries.")
    segment_ms: int = setting(
        "segment.ms", Integer(1), 7 * _DAY_MS, synonym="log.roll.ms", synonym_aliases=("log.segment.ms",),
        doc="Age of the active segment's first record after which the segment is rolled even if not full, "
            "so that retention and compaction can reach it.")
    retention_ms: int = setting(
        "retention.ms", Integer(0, special={-1: "keep for ever"}), 7 * _DAY_MS, synonym="log.retention.ms",
        doc="How long a closed segment is kept after its newest record before it is deleted "
            "(with cleanup.policy delete).")
    retention_bytes: int = setting(
        "retention.bytes", Integer(0, special={-1: "no size limit"}), -1, synonym="log.retention.bytes",
        doc="Largest size a partition may grow to before its oldest segments are deleted "
            "(with cleanup.policy delete).")
    index_interval_bytes: int = setting(
        "index.interval.bytes", Integer(0, bits=32), 4096, synonym="log.index.interval.bytes",
        doc="Bytes of log between two offset-index entries: smaller makes reads seek closer, at the cost of "
            "a larger index.")
    segment_index_bytes: int = setting(
        "segment.index.bytes", Integer(4, MAX_SEGMENT_POSITION, bits=32), 10 * 1024 * 1024,
        synonym="log.index.size.max.bytes",
        doc="Size of each segment's offset and time index files (sparse: disk blocks are allocated as "
            "entries arrive); a full index rolls the segment.")
    max_message_bytes: int = setting(
        "max.message.bytes", Integer(0, bits=32), 1048588, synonym="message.max.bytes",
        doc="Largest record batch the topic accepts; larger ones are answered MESSAGE_TOO_LARGE.")
    flush_policy: str = setting(
        "ringlog.flush.policy", Choice(FLUSH_POLICIES), "never", synonym="fsync", kafka=False,
        doc="When appended data is fsynced: always (before the produce is acknowledged), interval "
            "(at most flush.ms later) or never (when a segment is rolled and at shutdown).")
    flush_interval_ms: int = setting(
        "flush.ms", Integer(0), 1000, synonym="flush.interval.ms",
        doc="With ringlog.flush.policy interval: the longest appended data waits for an fsync.")
    cleanup_policy: str = setting(
        "cleanup.policy", CommaList(("compact", "delete"), nonempty=True), "delete", synonym="log.cleanup.policy",
        doc="delete: old segments are removed by retention; compact: only the newest record of each key is "
            "kept; both: compacted, and old segments removed too.")
    message_timestamp_type: str = setting(
        "message.timestamp.type", Choice(TIMESTAMP_TYPES), "CreateTime", synonym="log.message.timestamp.type",
        doc="CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's "
            "clock when it is written.")
    # Applied on produce (broker.handlers.produce): batches in another codec are recompressed.
    compression_type: str = setting(
        "compression.type", Choice(COMPRESSION_TYPES), "producer", synonym="compression.type",
        doc="producer stores batches as the producer compressed them; uncompressed, gzip, snappy, lz4 or "
            "zstd recompresses every batch in another codec on produce (its records, timestamps, producer id "
            "and sequence unchanged).")
    # Checked on produce (broker.handlers.produce, KIP-467 record errors); INT64_MAX is no limit.
    message_timestamp_before_max_ms: int = setting(
        "message.timestamp.before.max.ms", Integer(0), INT64_MAX, synonym="log.message.timestamp.before.max.ms",
        doc="With CreateTime: how far in the past a record's timestamp may be; older records fail their "
            "batch with INVALID_TIMESTAMP.")
    message_timestamp_after_max_ms: int = setting(
        "message.timestamp.after.max.ms", Integer(0), INT64_MAX, synonym="log.message.timestamp.after.max.ms",
        doc="With CreateTime: how far in the future a record's timestamp may be; later records fail their "
            "batch with INVALID_TIMESTAMP.")
    message_timestamp_difference_max_ms: int = setting(
        "message.timestamp.difference.max.ms", Integer(0), INT64_MAX,
        synonym="log.message.timestamp.difference.max.ms",
        doc="Deprecated in Kafka: the limit both ways where message.timestamp.before.max.ms or "
            "message.timestamp.after.max.ms is not set.")
    # log compaction (storage.compaction), used when cleanup_policy contains "compact"
    delete_retention_ms: int = setting(
        "delete.retention.ms", Integer(0), _DAY_MS, synonym="log.cleaner.delete.retention.ms",
        doc="How long tombstones (records with a null value) survive a compaction, so that consumers "
            "reading behind see the delete.")
    min_compaction_lag_ms: int = setting(
        "min.compaction.lag.ms", Integer(0), 0, synonym="log.cleaner.min.compaction.lag.ms",
        doc="Records younger than this are never compacted away.")
    min_cleanable_dirty_ratio: float = setting(
        "min.cleanable.dirty.ratio", Real(0.0, 1.0), 0.5, synonym="log.cleaner.min.cleanable.ratio",
        doc="Share of the log written since the last compaction that makes the log due for the next one.")

    def with_topic_configs(self, configs: Mapping[str, str], *, strict: bool = False) -> "LogConfig":
        """A copy with Kafka topic configs applied; a bad value raises configdef.SettingError (a
        ValueError) naming the config and the value.

        Keys this class does not know are ignored (the broker owns the full list of topic configs
        it accepts), unless `strict`."""
        return configdef.apply(self, configs, strict=strict)

    def to_topic_configs(self) -> dict[str, str]:
        return configdef.texts(self)


@attrs.frozen
class FileRegion:
    """A byte range of a segment file: sendfile(sock, region.fileno(), region.position, region.length).

    Holding the region keeps the fd open (see storage.segment.SegmentFile), even if the segment
    is deleted meanwhile.
    """

    file: SegmentFile
    position: int
    length: int

    def fileno(self) -> int:
        return self.file.fileno()


@attrs.frozen
class ReadResult:
    regions: tuple[FileRegion, ...]
    size: int

    def read_bytes(self) -> bytes:
        """Copy the regions' bytes (for tests, TLS, offline tools)."""
        parts = []
        for r in self.regions:
            data = os.pread(r.fileno(), r.length, r.position)
            if len(data) != r.length:
                raise StorageIOError(f"short read of {r.file.path}: {len(data)} of {r.length} bytes")
            parts.append(data)
        return b"".join(parts)


EMPTY_READ = ReadResult((), 0)


@attrs.frozen
class AppendInfo:
    """What one appended batch got."""

    base_offset: int
    last_offset: int
    max_timestamp: int
    log_append_time: int      # -1 unless message_timestamp_type == LogAppendTime
    size: int


@attrs.frozen
class RecoveryReport:
    """What opening a partition log found and changed."""

    topic: str
    partition: int
    directory: Path
    clean: bool                      # opened after a clean shutdown (nothing scanned unless damaged)
    recovery_point: int              # from the checkpoint (scanning started at its segment)
    segments_scanned: int            # read in full with CRC checks (after a crash, or to repair)
    bytes_scanned: int
    batches_scanned: int
    indexes_rebuilt: int             # trusted segments whose index files were missing or damaged
    truncated_bytes: int             # bytes cut from the segment where a bad batch was found
    truncated_segment: int | None    # base offset of that segment
    truncated_position: int | None   # position of the cut inside it
    truncated_offset: int | None     # log end offset after the cut (first offset lost)
    segments_deleted: int            # whole later segments removed because of the cut
    bytes_deleted: int               # their size
    reason: str | None               # what the scan found at the cut

    @property
    def truncated(self) -> bool:
        return self.truncated_segment is not None

    @property
    def repaired(self) -> bool:
        """Something on disk was cut or rebuilt (a routine scan after a crash that found the log
        whole is not a repair)."""
        return self.truncated or self.segments_deleted > 0 or self.indexes_rebuilt > 0


@attrs.frozen
class RetentionReport:
    """What one apply_retention call deleted (whole segments, oldest first)."""

    segments_deleted: int
    bytes_deleted: int
    base_offset: int                 # first offset of the first deleted segment
    end_offset: int                  # first offset after the last one: [base_offset, end_offset) went
    log_start_offset: int            # after the deletion
    reasons: tuple[str, ...]         # "log start offset", "retention.ms", "retention.bytes"


@attrs.define(eq=False)
class FlushToken:
    """The fds one flush must sync, captured on the owning thread.

    sync() only fdatasyncs them (thread-safe: it touches no log state) and may run in a worker
    thread; flush_end() then advances the recovery point on the owning thread.
    """

    files: tuple[SegmentFile, ...]
    directory: SegmentFile | None
    end_offset: int
    segments: tuple[Segment, ...]
    truncations: int
    synced: bool = False

    def sync(self) -> None:
        try:
            for f in self.files:
                _fdatasync(f.fd)
            if self.directory is not None:
                os.fsync(self.directory.fd)
        except OSError as exc:
            raise StorageIOError(f"fsync failed: {exc}") from exc
        self.synced = True


def parse_partition_dir(name: str) -> tuple[str, int] | None:
    """`<topic>-<partition>` -> (topic, partition); topics may contain '-', so split on the last."""
    topic, sep, part = name.rpartition("-")
    if not sep or not topic or not part.isdigit() or part != str(int(part)):
        return None
    return topic, int(part)


_MAX_TS = struct.Struct(">q")
_ATTRS = struct.Struct(">h")
_CRC = struct.Struct(">I")


@attrs.define(eq=False)
class PartitionLog:
    """The log of one partition. See the module doc for the on-disk layout and invariants."""

    topic: str
    partition: int
    directory: Path
    config: LogConfig
    recovery_point: int = 0
    recovery_report: RecoveryReport | None = None
    _segments: list[Segment] = attrs.field(factory=list)
    _bases: list[int] = attrs.field(factory=list)
    _log_start_offset: int = 0
    _dirty: dict[int, Segment] = attrs.field(factory=dict)   # id(segment) -> segment
    _dir_dirty: bool = False
    _dirty_since_ms: int | None = None
    _inflight: dict[FlushToken, tuple[Segment, ...]] = attrs.field(factory=dict)
    _truncations: int = 0
    _checkpointed_rp_base: int | None = None
    _closed: bool = False
    # An owner that must not block its thread on file work (the broker's Trio thread) sets
    # defer_io: checkpoint writes and the unlinking of dropped segments then wait here until
    # take_deferred_io() hands them over, to be run in a worker thread. The segment of a roll can
    # be created ahead the same way (create_next_segment in a thread, then offer_segment).
    defer_io: bool = False
    _deferred_checkpoint: PartitionCheckpoint | None = None
    _deferred_unlinks: list[Segment] = attrs.field(factory=list)
    _offered: Segment | None = None

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path, config: LogConfig, *, now_ms: int, clean: bool | None = None
    ) -> "PartitionLog":
        """Open (creating the directory if missing) and recover unless `clean`.

        clean=True (the manager found its clean-shutdown marker): trust every segment, scan
        nothing. clean=None or False: scan from the recovery point (after a close() that is only
        the active segment).
        """
        directory = Path(directory)
        parsed = parse_partition_dir(directory.name)
        if parsed is None:
            raise ValueError(f"{directory.name!r} is not a `<topic>-<partition>` directory name")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageIOError(f"cannot create {directory}: {exc}") from exc
        log = cls(parsed[0], parsed[1], directory, config)
        log._load(now_ms=now_ms, clean=bool(clean))
        return log

    def _load(self, *, now_ms: int, clean: bool) -> None:
        d = self.directory
        # First finish (or undo) a compaction swap a crash interrupted, so that the segment
        # files below are exactly either the old ones or the cleaned ones.
        from .compaction import CLEANER_CHECKPOINT, recover_swaps

        recover_swaps(d)
        bases: list[int] = []
        names = {p.name for p in d.iterdir()}
        for name in names:
            if name.endswith(TMP_SUFFIX):
                (d / name).unlink(missing_ok=True)  # an atomic_write that never got renamed
                continue
            parsed = parse_segment_name(name)
            if parsed is None:
                continue
            base, suffix = parsed
            if suffix == LOG_SUFFIX:
                bases.append(base)
            elif suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                if f"{base:020d}{LOG_SUFFIX}" not in names:
                    (d / name).unlink(missing_ok=True)  # index of a deleted segment
        bases.sort()
        ckpt = read_partition_checkpoint(d)
        cfg = self.config
        ckpt_rp = ckpt.recovery_point if ckpt else 0
        # Only compaction leaves offset gaps. A log that was never compacted (not compact now, and
        # no cleaner checkpoint from an earlier compact policy) is scanned for contiguous offsets.
        allow_gaps = "compact" in cfg.cleanup_policy or (d / CLEANER_CHECKPOINT).exists()
        trust_below = float("inf") if clean else ckpt_rp

        scanned = batches = scanned_bytes = rebuilt = 0
        cut: dict[str, object] = {}
        deleted = deleted_bytes = 0
        segments: list[Segment] = []
        for i, base in enumerate(bases):
            seg = Segment.open_existing(d, base)
            next_base = bases[i + 1] if i + 1 < len(bases) else None
            last = next_base is None
            trusted = clean or (next_base is not None and next_base <= trust_below)
            result = None
            if trusted:
                try:
                    seg.load_trusted(next_offset=next_base, active=last, index_max_bytes=cfg.segment_index_bytes)
                except (IndexCorruptError, CorruptBatchError, struct.error, ValueError):
                    result = seg.recover(
                        active=last,
                        index_max_bytes=cfg.segment_index_bytes,
                        index_interval_bytes=cfg.index_interval_bytes,
                        allow_gaps=allow_gaps,
                    )
                    scanned += 1
                    # A scan that found the data whole means the index files were at fault (a
                    # repair worth reporting); otherwise the cut below says what was wrong.
                    if result.error is None:
                        rebuilt += 1
            else:
                # Rebuilding the indexes of a scanned segment is routine, not a repair.
                result = seg.recover(
                    active=last,
                    index_max_bytes=cfg.segment_index_bytes,
                    index_interval_bytes=cfg.index_interval_bytes,
                    allow_gaps=allow_gaps,
                )
                scanned += 1
            if result is not None:
                batches += result.batches
                scanned_bytes += result.file_size
            overlap = next_base is not None and seg.next_offset > next_base
            segments.append(seg)
            if result is not None and (result.error is not None or overlap):
                cut = {
                    "truncated_bytes": result.truncated_bytes,
                    "truncated_segment": base,
                    "truncated_position": result.valid_size,
                    "truncated_offset": seg.next_offset,
                    "reason": result.error or f"offsets overlap the next segment at {next_base}",
                }
                if overlap:
                    seg.truncate_to(next_base, index_interval_bytes=cfg.index_interval_bytes)  # type: ignore[arg-type]
                    cut["truncated_offset"] = seg.next_offset
                for later in bases[i + 1 :]:
                    lp = d / f"{later:020d}{LOG_SUFFIX}"
                    try:
                        deleted_bytes += lp.stat().st_size
                    except FileNotFoundError:
                        pass
                    for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                        (d / f"{later:020d}{suffix}").unlink(missing_ok=True)
                    deleted += 1
                if not last:
                    seg.make_active(cfg.segment_index_bytes)
                break

        if not segments:
            start = ckpt.log_start_offset if ckpt else 0
            segments.append(Segment.create(d, start, index_max_bytes=cfg.segment_index_bytes))
            self._dir_dirty = True
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        leo = segments[-1].next_offset
        lso = max(ckpt.log_start_offset if ckpt else 0, segments[0].base_offset)
        self._log_start_offset = min(lso, leo)

        # Everything that was scanned is now known good: make it durable before trusting it
        # (the scan read it from the page cache, which an OS crash may still lose).
        if scanned or rebuilt or cut or self._dir_dirty:
            try:
                for seg in segments:
                    for f in seg.files():
                        _fdatasync(f.fd)
                fsync_dir(d)
            except OSError as exc:
                raise StorageIOError(f"cannot sync {d} after recovery: {exc}") from exc
            self._dir_dirty = False
        self.recovery_point = leo
        self._write_checkpoint()
        self.recovery_report = RecoveryReport(
            topic=self.topic,
            partition=self.partition,
            directory=d,
            clean=clean,
            recovery_point=ckpt_rp,
            segments_scanned=scanned,
            bytes_scanned=scanned_bytes,
            batches_scanned=batches,
            indexes_rebuilt=rebuilt,
            truncated_bytes=int(cut.get("truncated_bytes", 0)),  # type: ignore[call-overload]
            truncated_segment=cut.get("truncated_segment"),  # type: ignore[arg-type]
            truncated_position=cut.get("truncated_position"),  # type: ignore[arg-type]
            truncated_offset=cut.get("truncated_offset"),  # type: ignore[arg-type]
            segments_deleted=deleted,
            bytes_deleted=deleted_bytes,
            reason=cut.get("reason"),  # type: ignore[arg-type]
        )

    # --- state --------------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def active_segment(self) -> Segment:
        return self._segments[-1]

    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The segments, oldest first (the last is the active one). Do not mutate them."""
        return tuple(self._segments)

    @property
    def truncations(self) -> int:
        """Counts truncations: a change tells a planned compaction its inputs may be gone."""
        return self._truncations

    def replace_segments(self, old: Sequence[Segment], new: Segment) -> None:
        """Put `new` in the place of the consecutive inactive segments `old` (log compaction).

        The caller has already put the files in place (storage.compaction.commit_clean). The old
        segments' fds stay open for whoever holds a FileRegion of them; their index mappings go
        when the last reference to them does.
        """
        self._check_open()
        idx = next((i for i, s in enumerate(self._segments) if s is old[0]), None)
        if idx is None or self._segments[idx : idx + len(old)] != list(old) or idx + len(old) >= len(self._segments):
            raise StorageError(f"segments to replace are not consecutive inactive segments of {self.directory}")
        if new.base_offset != old[0].base_offset:
            raise StorageError(f"cleaned segment {new.base_offset} does not start at {old[0].base_offset}")
        self._segments[idx : idx + len(old)] = [new]
        self._bases[idx : idx + len(old)] = [new.base_offset]
        for s in old:
            self._dirty.pop(id(s), None)

    def segment_base_offsets(self) -> list[int]:
        return list(self._bases)

    def update_config(self, config: LogConfig) -> None:
        """New settings apply from now on (index sizes from the next segment on)."""
        self.config = config

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"log {self.topic}-{self.partition} is closed")

    def _floor_index(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self._bases, offset) - 1)

    def _write_checkpoint(self) -> None:
        rp = min(self.recovery_point, self.log_end_offset)
        checkpoint = PartitionCheckpoint(rp, self._log_start_offset)
        base = self._bases[self._floor_index(rp)]
        if self.defer_io:
            # Replaces one not yet written: this one is newer and says everything it did.
            self._deferred_checkpoint = checkpoint
            self._checkpointed_rp_base = base
            return
        self._store_checkpoint(checkpoint)
        self._checkpointed_rp_base = base

    def _store_checkpoint(self, checkpoint: PartitionCheckpoint) -> None:
        try:
            write_partition_checkpoint(self.directory, checkpoint)
        except OSError as exc:
            raise StorageIOError(f"cannot write the checkpoint of {self.directory}: {exc}") from exc

    def _drop_segment(self, seg: Segment) -> None:
        """Remove a segment that is no longer in the log: now, or (defer_io) its fds now and its
        files with the deferred work."""
        if self.defer_io:
            seg.release()
            self._deferred_unlinks.append(seg)
        else:
            seg.delete()

    def take_deferred_io(self) -> "Callable[[], None] | None":
        """The file work deferred so far, as one callable for a worker thread (None: nothing).

        It unlinks the dropped segments, then writes the newest checkpoint: the order the
        synchronous path uses, so a crash in between leaves what that path would. The caller
        runs the jobs of one log one at a time (the broker holds its log lock meanwhile).
        """
        unlinks, self._deferred_unlinks = self._deferred_unlinks, []
        checkpoint, self._deferred_checkpoint = self._deferred_checkpoint, None
        if not unlinks and checkpoint is None:
            return None

        def run() -> None:
            for seg in unlinks:
                seg.delete()
            # The last references: their fds close here, and closing an unlinked file is what
            # frees its blocks, which takes long for a big one.
            unlinks.clear()
            if checkpoint is not None:
                try:
                    self._store_checkpoint(checkpoint)
                except StorageIOError:
                    # Written with the next change of the recovery point's segment instead.
                    self._checkpointed_rp_base = None
                    raise

        return run

    def roll_due(self, size: int, span: int, now_ms: int) -> bool:
        """Whether appending `size` bytes holding `span` offsets at `now_ms` rolls first."""
        seg = self._segments[-1]
        if seg.size == 0:
            return False
        cfg = self.config
        return bool(
            seg.size + size > cfg.segment_bytes
            or (seg.roll_base_ms is not None and now_ms - seg.roll_base_ms > cfg.segment_ms)
            or seg.index_full
            or self.log_end_offset + span - 1 - seg.base_offset > MAX_RELATIVE_OFFSET
            or seg.size + size > MAX_SEGMENT_POSITION
        )

    def index_room_due(self, batches: int) -> bool:
        """Whether appending `batches` batches to the active segment could need index blocks
        not allocated yet (each batch adds at most one entry to each index)."""
        seg = self._segments[-1]
        return seg.index.allocation_due(batches) or seg.time_index.allocation_due(batches)

    def allocate_index_room(self, batches: int) -> None:
        """Blocking (a worker thread, under the caller's log lock): allocate the index blocks
        `batches` more batches may need, so the append itself does no fallocate."""
        seg = self._segments[-1]
        seg.index.allocate_ahead(batches)
        seg.time_index.allocate_ahead(batches)

    def time_roll_due(self, now_ms: int) -> bool:
        """Whether maybe_roll(now_ms) or apply_retention(now_ms) would start a new segment."""
        seg = self._segments[-1]
        if not seg.size:
            return False
        if seg.roll_base_ms is not None and now_ms - seg.roll_base_ms > self.config.segment_ms:
            return True
        # apply_retention rolls when every segment, the active one too, is past retention.ms
        retention = self.config.retention_ms
        if retention < 0:
            return False
        for s in self._segments:
            ts = s.max_timestamp if s.max_timestamp >= 0 else s.last_modified_ms()
            if now_ms - ts <= retention:
                return False
        return True

    def create_next_segment(self) -> Segment:
        """The files of the segment the next roll starts (at the log end), created without
        touching the log: safe in a worker thread while the owner waits. Hand it over with
        offer_segment; a roll at another offset deletes it."""
        return Segment.create(self.directory, self.log_end_offset, index_max_bytes=self.config.segment_index_bytes)

    def offer_segment(self, seg: Segment) -> None:
        if self._offered is not None:
            self._drop_segment(self._offered)
        self._offered = seg

    def _new_active_segment(self) -> Segment:
        offered, self._offered = self._offered, None
        if offered is not None:
            if offered.base_offset == self.log_end_offset:
                return offered
            self._drop_segment(offered)
        return Segment.create(self.directory, self.log_end_offset, index_max_bytes=self.config.segment_index_bytes)

    def _mark_dirty(self, seg: Segment, now_ms: int) -> None:
        self._dirty[id(seg)] = seg
        if self._dirty_since_ms is None:
            self._dirty_since_ms = now_ms

    # --- appending ----------------------------------------------------------------------------

    def append(
        self, records: bytes | bytearray | memoryview, *, now_ms: int, from_client: bool = True
    ) -> list[AppendInfo]:
        """Validate every batch of the blob, then assign offsets and write it with one pwrite.

        A bad batch raises a typed InvalidBatchError and nothing of the call is written.
        """
        self._check_open()
        buf = bytearray(records)
        headers: list[BatchHeader] = []
        max_size = self.config.max_message_bytes
        for _header, view in split_batches(buf):
            headers.append(validate_batch(view, max_size=max_size, from_client=from_client))
            view.release()
        if not headers:
            raise InvalidBatchError("no record batch in the produce data")
        return self._append(buf, headers, now_ms)

    def append_batches(self, batches: Sequence[bytearray], *, now_ms: int) -> list[AppendInfo]:
        """Append batches the caller already validated; baseOffset is rewritten in place in each."""
        self._check_open()
        if not batches:
            return []
        headers = [parse_header(b) for b in batches]
        infos = self._assign(batches, headers, now_ms)
        data = batches[0] if len(batches) == 1 else b"".join(batches)
        self._write(data, infos, headers, now_ms)
        return infos

    def append_replicated(self, batches: Sequence[bytes | bytearray], *, now_ms: int) -> list[AppendInfo]:
        """Append batches copied from a partition's leader exactly as they are (a follower replica):
        their offsets and leader epochs are kept, so each must start at or after the log end (a
        leader's compaction may leave gaps). Raises InvalidBatchError for one that goes back."""
        self._check_open()
        if not batches:
            return []
        headers = [parse_header(b) for b in batches]
        expected = self.log_end_offset
        infos = []
        for h in headers:
            if h.base_offset < expected:
                raise InvalidBatchError(f"replicated batch at offset {h.base_offset} is below the log end {expected}")
            last = h.base_offset + h.last_offset_delta
            infos.append(AppendInfo(h.base_offset, last, h.max_timestamp, -1, h.size))
            expected = last + 1
        self._maybe_roll_for(sum(h.size for h in headers), expected - self.log_end_offset, now_ms)
        data = batches[0] if len(batches) == 1 else b"".join(batches)
        self._write(data, infos, headers, now_ms)
        return infos

    def _append(self, buf: bytearray, headers: list[BatchHeader], now_ms: int) -> list[AppendInfo]:
        views = []
        pos = 0
        for h in headers:
            views.append(memoryview(buf)[pos : pos + h.size])
            pos += h.size
        infos = self._assign(views, headers, now_ms)
        for v in views:
            v.release()
        self._write(buf, infos, headers, now_ms)
        return infos

    def _assign(
        self, batches: Sequence[bytearray | memoryview], headers: list[BatchHeader], now_ms: int
    ) -> list[AppendInfo]:
        """Roll if needed, then rewrite offsets (and LogAppendTime) in place."""
        total = sum(h.size for h in headers)
        span = sum(h.last_offset_delta + 1 for h in headers)
        self._maybe_roll_for(total, span, now_ms)
        log_append = self.config.message_timestamp_type == "LogAppendTime"
        offset = self.log_end_offset
        infos = []
        for b, h in zip(batches, headers):
            set_base_offset(b, offset)
            max_ts = h.max_timestamp
            if log_append:
                _set_log_append_time(b, h, now_ms)
                max_ts = now_ms
            last = offset + h.last_offset_delta
            infos.append(AppendInfo(offset, last, max_ts, now_ms if log_append else -1, h.size))
            offset = last + 1
        return infos

    def _write(self, data: bytes | bytearray, infos: list[AppendInfo], headers: list[BatchHeader], now_ms: int) -> None:
        seg = self._segments[-1]
        metas = [(i.base_offset, i.last_offset, i.max_timestamp, i.size) for i in infos]
        seg.append(data, metas, index_interval_bytes=self.config.index_interval_bytes, now_ms=now_ms)
        self._mark_dirty(seg, now_ms)

    def _maybe_roll_for(self, size: int, span: int, now_ms: int) -> None:
        if self.roll_due(size, span, now_ms):
            self.roll(now_ms)

    # --- rolling ------------------------------------------------------------------------------

    def roll(self, now_ms: int) -> None:
        """Start a new active segment at the log end (no-op when the active one is empty)."""
        self._check_open()
        old = self._segments[-1]
        if old.size == 0:
            return
        new = self._new_active_segment()
        try:
            old.make_inactive()
        except OSError as exc:
            self._drop_segment(new)
            raise StorageIOError(f"cannot finish segment {old.log.path}: {exc}") from exc
        self._segments.append(new)
        self._bases.append(new.base_offset)
        self._mark_dirty(old, now_ms)
        self._dir_dirty = True

    def maybe_roll(self, now_ms: int) -> None:
        """Roll when the active segment is older than segment.ms (appends roll on size themselves)."""
        seg = self._segments[-1]
        if seg.size and seg.roll_base_ms is not None and now_ms - seg.roll_base_ms > self.config.segment_ms:
            self.roll(now_ms)

    # --- flushing -----------------------------------------------------------------------------

    def needs_flush(self, now_ms: int) -> bool:
        """Whether the owner should flush now.

        always: whenever something is unflushed; interval: when the oldest unflushed write is
        flush.ms old; never: never for the active segment, but a rolled segment is flushed once
        (as Kafka does on roll) so recovery after a crash only has to scan the active segment.
        """
        if not self._dirty and not self._dir_dirty:
            return False
        policy = self.config.flush_policy
        if policy == "always":
            return True
        active = self._segments[-1]
        if self._dir_dirty or any(s is not active for s in self._dirty.values()):
            return True
        if policy == "interval":
            since = self._dirty_since_ms if self._dirty_since_ms is not None else now_ms
            return now_ms - since >= self.config.flush_interval_ms
        return False

    def flush_begin(self) -> FlushToken:
        """Capture what is unflushed; run token.sync() anywhere, then flush_end(token) here."""
        self._check_open()
        segs: dict[int, Segment] = dict(self._dirty)
        # A flush still in flight may finish later than this one: sync its files too, so this
        # token alone justifies moving the recovery point to its end offset.
        for pending in self._inflight.values():
            for s in pending:
                segs[id(s)] = s
        files = tuple(f for s in segs.values() for f in s.files())
        directory = None
        if self._dir_dirty:
            fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            directory = SegmentFile(self.directory, fd)
        token = FlushToken(files, directory, self.log_end_offset, tuple(segs.values()), self._truncations)
        self._inflight[token] = token.segments
        self._dirty.clear()
        self._dir_dirty = False
        self._dirty_since_ms = None
        return token

    def flush_end(self, token: FlushToken) -> None:
        """After token.sync(): advance the recovery point (or, if the sync failed, stay dirty)."""
        pending = self._inflight.pop(token, token.segments)
        if self._closed:
            return
        if not token.synced:
            for s in pending:
                self._dirty[id(s)] = s
            if token.directory is not None:
                self._dir_dirty = True
            return
        if token.truncations != self._truncations:
            return  # truncated meanwhile: the captured end may be gone
        self.recovery_point = max(self.recovery_point, min(token.end_offset, self.log_end_offset))
        if self._bases[self._floor_index(self.recovery_point)] != self._checkpointed_rp_base:
            self._write_checkpoint()

    def flush(self) -> None:
        """fdatasync every unflushed segment (log and index files) and advance the recovery point."""
        token = self.flush_begin()
        try:
            token.sync()
        finally:
            self.flush_end(token)

    # --- reading ------------------------------------------------------------------------------

    def read(
        self, offset: int, max_bytes: int, *, upper_bound: int | None = None, min_one_batch: bool = True
    ) -> ReadResult:
        """File regions of whole batches from the batch containing `offset`.

        Only batches whose last offset < upper_bound (default: the log end) are included, at most
        `max_bytes` of them, except that with min_one_batch the first batch comes whole even if
        larger (KIP-74). One region per segment touched.
        """
        self._check_open()
        leo = self.log_end_offset
        if offset < self._log_start_offset or offset > leo:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [{self._log_start_offset}, {leo}] of {self.topic}-{self.partition}"
            )
        ub = leo if upper_bound is None else min(upper_bound, leo)
        if offset >= ub:
            return EMPTY_READ
        regions: list[FileRegion] = []
        remaining = max_bytes
        i = self._floor_index(offset)
        first = True
        while i < len(self._segments) and (remaining > 0 or (min_one_batch and not regions)):
            seg = self._segments[i]
            start = seg.find(offset)[0] if first else 0
            first = False
            if start >= seg.size:
                i += 1
                continue
            end = seg.size if ub >= seg.next_offset else seg.find(ub)[0]
            if end <= start:
                break
            if remaining < end - start:
                cut = seg.boundary_at_or_before(start + max(remaining, 0), start)
                if cut == start and min_one_batch and not regions:
                    cut = start + seg.read_header(start).size
                end = cut
            if end > start:
                regions.append(FileRegion(seg.log, start, end - start))
                remaining -= end - start
            if end < seg.size:
                break
            i += 1
        return ReadResult(tuple(regions), sum(r.length for r in regions))

    def read_records_bytes(self, offset: int, max_bytes: int, **kwargs: object) -> bytes:
        """read(...).read_bytes() in one call."""
        return self.read(offset, max_bytes, **kwargs).read_bytes()  # type: ignore[arg-type]

    def iter_batch_headers(self, from_offset: int = 0) -> Iterator[BatchHeader]:
        """Headers of stored batches from the one containing `from_offset` (for producer state).

        Do not mutate the log while iterating.
        """
        self._check_open()
        start = max(from_offset, self._segments[0].base_offset)
        i = self._floor_index(start)
        first = True
        for seg in self._segments[i:]:
            pos = seg.find(start)[0] if first else 0
            first = False
            for _pos, header in seg.iter_headers(pos):
                yield header

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the earliest record with timestamp >= `timestamp_ms`, else None.

        Kafka's ListOffsets semantics: the time index finds where to start, the batch's records
        are decoded to find the exact record. Records below the log start offset are skipped.
        """
        self._check_open()
        lso = self._log_start_offset
        for seg in self._segments:
            if seg.max_timestamp < timestamp_ms or seg.next_offset <= lso:
                continue
            found = self._search_timestamp(seg, timestamp_ms, lso)
            if found is not None:
                return found
        return None

    def _search_timestamp(self, seg: Segment, timestamp_ms: int, lso: int) -> tuple[int, int] | None:
        below = seg.time_index.lookup_below(timestamp_ms)
        start = below[1] + 1 if below else seg.base_offset
        start = max(start, lso)
        pos, header = seg.find(start)
        if header is None:
            return None
        for p, h in seg.iter_headers(pos):
            if h.max_timestamp < timestamp_ms or h.last_offset < lso:
                continue
            for record in decode_records(seg.read_batch(p, h.size), h):
                if record.offset >= lso and record.timestamp >= timestamp_ms:
                    return record.offset, record.timestamp
        return None

    def max_timestamp_and_offset(self) -> tuple[int, int]:
        """(max timestamp, offset of the first record carrying it) for ListOffsets -3; (-1, -1) if empty."""
        self._check_open()
        lso = self._log_start_offset
        best: Segment | None = None
        for seg in self._segments:
            if seg.next_offset > lso and seg.size and (best is None or seg.max_timestamp > best.max_timestamp):
                best = seg
        if best is None:
            return -1, -1
        if best.max_timestamp < 0:
            return -1, -1
        found = self._search_timestamp(best, best.max_timestamp, lso)
        if found is None:
            return best.max_timestamp, best.offset_of_max_timestamp
        return found[1], found[0]

    # --- truncation, retention ----------------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Remove every batch with an offset >= `offset` (whole batches: the new end is the base
        of the batch holding `offset`). Below the log start, the log restarts empty at `offset`.
        """
        self._check_open()
        if offset >= self.log_end_offset:
            return
        cfg = self.config
        self._truncations += 1
        if offset <= self._segments[0].base_offset or offset < self._log_start_offset:
            new = Segment.create(self.directory, offset, index_max_bytes=cfg.segment_index_bytes) \
                if offset not in self._bases else None
            for seg in self._segments:
                self._drop_segment(seg)
            if new is None:
                new = Segment.create(self.directory, offset, index_max_bytes=cfg.segment_index_bytes)
            self._segments = [new]
            self._bases = [offset]
            self._log_start_offset = offset
        else:
            i = self._floor_index(offset)
            for seg in self._segments[i + 1 :]:
                self._drop_segment(seg)
            seg = self._segments[i]
            del self._segments[i + 1 :]
            del self._bases[i + 1 :]
            seg.make_active(cfg.segment_index_bytes)
            seg.truncate_to(offset, index_interval_bytes=cfg.index_interval_bytes)
            self._log_start_offset = min(self._log_start_offset, self.log_end_offset)
        self._dirty = {id(s): s for s in self._segments}
        self._dir_dirty = True
        self.recovery_point = min(self.recovery_point, self.log_end_offset)
        self._write_checkpoint()

    def delete_records_before(self, offset: int) -> int:
        """Advance the log start offset to `offset` (DeleteRecords); delete segments wholly below it."""
        self._check_open()
        if offset > self.log_end_offset or offset < 0:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [0, {self.log_end_offset}] of {self.topic}-{self.partition}"
            )
        if offset <= self._log_start_offset:
            return self._log_start_offset
        self._log_start_offset = offset
        count = 0
        while count + 1 < len(self._segments) and self._bases[count + 1] <= offset:
            count += 1
        self._delete_leading(count, now_ms=None)
        self._write_checkpoint()
        return self._log_start_offset

    def apply_retention(self, now_ms: int) -> RetentionReport:
        """Delete whole segments past retention.ms / retention.bytes (Kafka's rules); what went.

        A segment expires when its max timestamp (its file's mtime if it has none) is older than
        now - retention.ms; deletion stops at the first segment that does not qualify. When every
        segment qualifies the active one is rolled first, so the log keeps an empty active segment
        at the log end.
        """
        self._check_open()
        cfg = self.config
        deleted: list[Segment] = []
        reasons: list[str] = []

        def delete(count: int, reason: str) -> None:
            gone = self._delete_leading(count, now_ms=now_ms)
            if gone:
                deleted.extend(gone)
                reasons.append(reason)

        # Segments wholly below the log start offset (after DeleteRecords).
        count = 0
        while count + 1 < len(self._segments) and self._bases[count + 1] <= self._log_start_offset:
            count += 1
        delete(count, "log start offset")
        if cfg.retention_ms >= 0:
            count = 0
            for seg in self._segments:
                if seg.size == 0 and seg is self._segments[-1]:
                    break
                ts = seg.max_timestamp if seg.max_timestamp >= 0 else seg.last_modified_ms()
                if now_ms - ts <= cfg.retention_ms:
                    break
                count += 1
            delete(count, "retention.ms")
        if cfg.retention_bytes >= 0:
            diff = self.size_bytes - cfg.retention_bytes
            count = 0
            for seg in self._segments:
                if (seg.size == 0 and seg is self._segments[-1]) or diff - seg.size < 0:
                    break
                diff -= seg.size
                count += 1
            delete(count, "retention.bytes")
        return RetentionReport(
            segments_deleted=len(deleted),
            bytes_deleted=sum(seg.size for seg in deleted),
            base_offset=deleted[0].base_offset if deleted else self.log_start_offset,
            end_offset=self._segments[0].base_offset if deleted else self.log_start_offset,
            log_start_offset=self.log_start_offset,
            reasons=tuple(reasons),
        )

    def _delete_leading(self, count: int, *, now_ms: int | None) -> list[Segment]:
        if count <= 0:
            return []
        if count >= len(self._segments):
            if now_ms is None:
                count = len(self._segments) - 1
            else:
                self.roll(now_ms)
        doomed = self._segments[:count]
        if not doomed:
            return []
        del self._segments[:count]
        del self._bases[:count]
        for seg in doomed:
            self._dirty.pop(id(seg), None)
            self._drop_segment(seg)
        new_start = max(self._log_start_offset, self._segments[0].base_offset)
        self._dir_dirty = True
        if new_start != self._log_start_offset:
            self._log_start_offset = new_start
            self._write_checkpoint()
        return doomed

    # --- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish the active segment's indexes, flush everything, write the checkpoint, release fds."""
        if self._closed:
            return
        # close() runs off the owner's thread (or at the end): everything is done here, now.
        self.defer_io = False
        pending = self.take_deferred_io()
        offered, self._offered = self._offered, None
        try:
            if offered is not None:
                offered.delete()
            if pending is not None:
                pending()
            active = self._segments[-1]
            try:
                active.make_inactive()
            except OSError as exc:
                raise StorageIOError(f"cannot trim the indexes of {active.log.path}: {exc}") from exc
            self._dirty[id(active)] = active
            self.flush()
            self.recovery_point = self.log_end_offset
            self._write_checkpoint()
        finally:
            self._release()

    def abandon(self) -> None:
        """Drop every file handle without flushing or writing anything: what a crash leaves.

        For a log whose storage failed beyond repair, and for crash tests.
        """
        if not self._closed:
            self._release()

    def _release(self) -> None:
        self._closed = True
        for seg in self._segments:
            seg.release()
        if self._offered is not None:
            self._offered.release()
            self._offered = None
        self._dirty.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    def take_segments(self) -> list[Segment]:
        """A released log's segments, handed over with the last references to their fds (for a
        worker thread to drop: closing an unlinked file frees its blocks, which takes long)."""
        if not self._closed:
            raise StorageError(f"log {self.topic}-{self.partition} is open")
        segments, self._segments, self._bases = self._segments, [], []
        return segments

    def delete(self) -> None:
        """Release the log and remove its directory (open FileRegions keep reading their fds)."""
        self.abandon()
        shutil.rmtree(self.directory, ignore_errors=True)


def _set_log_append_time(batch: bytearray | memoryview, header: BatchHeader, now_ms: int) -> None:
    """Stamp a batch with LogAppendTime: attribute bit 3, maxTimestamp = now, new CRC (Kafka's rule)."""
    _ATTRS.pack_into(batch, ATTRIBUTES_OFFSET, header.attributes | TIMESTAMP_TYPE_MASK)
    _MAX_TS.pack_into(batch, MAX_TIMESTAMP_OFFSET, now_ms)
    _CRC.pack_into(batch, CRC_OFFSET, crc32c.crc32c(memoryview(batch)[ATTRIBUTES_OFFSET : header.size]))
