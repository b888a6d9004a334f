"""Offline integrity check of ringlog segment files (the layout is described in storage.replay).

Every batch of every segment is read and checked, in base-offset order:

* framing: magic 2, batchLength no smaller than a header and inside the file;
* CRC-32C over bytes 21..end, a known codec, 0 <= recordsCount <= lastOffsetDelta + 1;
* records: every record decodes (after decompression), offsets increase inside the batch and
  stay within baseOffset..baseOffset + lastOffsetDelta;
* offsets across batches and segments: a batch never starts below the end of the one before
  (decreasing or overlapping offsets are an error) nor below its segment's base offset; a segment
  never starts below the previous segment's next offset. A gap (offsets missing between two
  batches or segments) is only a warning: compaction removes batches, and the log start may
  lie above the first segment's base offset.

A partition's check stops at its first problem, which names the file, the byte position of the
batch and its offset. A torn tail (the last segment ends inside a batch after a crash) is a
problem too, reported as such: the broker truncates it when it opens the log.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import attrs

from .replay import (
    SegmentCorruptError,
    SegmentScanner,
    check_batch,
    decode_slot,
    list_segments,
    partition_of,
    select_partitions,
)

CORRUPT = "corrupt"
OFFSETS = "offsets"
TORN_TAIL = "torn-tail"
GAP = "gap"


@attrs.frozen(slots=True)
class Finding:
    """A problem (kind corrupt, offsets, torn-tail) or a warning (kind gap) at one place."""

    kind: str
    file: Path
    position: int
    offset: int | None
    message: str

    def describe(self) -> str:
        where = f"offset {self.offset}" if self.offset is not None else "offset unknown"
        return f"{self.file}: position {self.position} ({where}): {self.message}"


@attrs.define
class VerifyResult:
    path: Path
    topic: str
    partition: int
    segments: int = 0
    batches: int = 0
    # Records of data batches; control batches' markers are counted in control_batches.
    records: int = 0
    control_batches: int = 0
    bytes: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    problem: Finding | None = None
    warnings: list[Finding] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def recoverable(self) -> bool:
        """True when the only problem is a torn tail the broker would truncate."""
        return self.problem is not None and self.problem.kind == TORN_TAIL


@attrs.frozen(slots=True)
class DataDirVerifyResult:
    path: Path
    partitions: tuple[VerifyResult, ...]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.partitions)

    @property
    def problems(self) -> list[Finding]:
        return [p.problem for p in self.partitions if p.problem is not None]


def verify_partition(path: str | os.PathLike[str]) -> VerifyResult:
    """Check one partition directory; stops at the first problem (see the module doc)."""
    part = partition_of(path)
    result = VerifyResult(part.path, part.topic, part.partition)
    segments = list_segments(part.path)
    expected: int | None = None  # offset the next batch should start at
    for seg in segments:
        result.segments += 1
        if expected is not None and seg.base_offset < expected:
            result.problem = Finding(
                OFFSETS,
                seg.path,
                0,
                seg.base_offset,
                f"segment base offset {seg.base_offset} is below the previous segment's next "
                f"offset {expected} (overlapping offsets)",
            )
            return result
        if expected is None or seg.base_offset > expected:
            if expected is not None:
                result.warnings.append(_gap(seg.path, 0, expected, seg.base_offset))
            expected = seg.base_offset
        scanner = SegmentScanner(seg, final=seg is segments[-1])
        try:
            for slot in scanner.batches():
                h = slot.header
                check_batch(slot)
                if h.base_offset < expected:
                    result.problem = Finding(
                        OFFSETS,
                        seg.path,
                        slot.position,
                        h.base_offset,
                        f"batch offsets {h.base_offset}..{h.last_offset} go back: the batch before "
                        f"ended at {expected - 1}"
                        if h.base_offset >= seg.base_offset
                        else f"batch offset {h.base_offset} is below the segment's base offset "
                        f"{seg.base_offset}",
                    )
                    return result
                if h.base_offset > expected:
                    result.warnings.append(_gap(seg.path, slot.position, expected, h.base_offset))
                records = decode_slot(slot)
                result.batches += 1
                if h.is_control:
                    result.control_batches += 1
                else:
                    result.records += len(records)
                if result.first_offset is None:
                    result.first_offset = h.base_offset
                result.last_offset = h.last_offset
                expected = h.next_offset
        except SegmentCorruptError as exc:
            result.problem = Finding(CORRUPT, exc.file, exc.position, exc.offset, exc.reason)
            result.bytes += scanner.size
            return result
        result.bytes += scanner.size
        torn = scanner.torn_tail
        if torn is not None:
            result.problem = Finding(
                TORN_TAIL,
                torn.file,
                torn.position,
                torn.offset,
                f"torn tail (recoverable by the broker): {torn.reason}",
            )
            return result
    return result


def _gap(file: Path, position: int, expected: int, found: int) -> Finding:
    return Finding(
        GAP,
        file,
        position,
        found,
        f"gap: offsets {expected}..{found - 1} are missing (expected {expected}, found {found})",
    )


def iter_verify_data_dir(
    path: str | os.PathLike[str],
    topics=None,
    partitions=None,
) -> Iterator[VerifyResult]:
    """verify_partition for each partition of a data directory, in (topic, partition) order."""
    for part in select_partitions(path, topics, partitions):
        yield verify_partition(part.path)


def verify_data_dir(path: str | os.PathLike[str], topics=None, partitions=None) -> DataDirVerifyResult:
    """Check every partition of a data directory (each stops at its own first problem)."""
    return DataDirVerifyResult(Path(path), tuple(iter_verify_data_dir(path, topics, partitions)))
