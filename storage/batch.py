"""RecordBatch v2 (magic 2) framing: the unit ringlog stores, exactly as it travels on the wire.

Layout (big-endian), offsets from the start of the batch::

     0 baseOffset            i64   rewritten by the broker when it assigns offsets
     8 batchLength           i32   size of the batch minus the 12 bytes before and including it
    12 partitionLeaderEpoch  i32   rewritten by the broker
    16 magic                 i8    always 2
    17 crc                   u32   CRC-32C of bytes 21..end
    21 attributes            i16   bits 0-2 codec, 3 LogAppendTime, 4 transactional, 5 control
    23 lastOffsetDelta       i32
    27 baseTimestamp         i64
    35 maxTimestamp          i64
    43 producerId            i64
    51 producerEpoch         i16
    53 baseSequence          i32
    57 recordsCount          i32
    61 records...            (one compressed block when the codec is not none)

Because the CRC starts at byte 21, offsets and the leader epoch can be rewritten in place without
recomputing it. Everything here is pure: bytes in, values out.

This module is the one description of the layout: the broker, the storage engine and the client
(producer, consumer) all read and write headers through `HEADER` and `frame_batch`; the records
after the header are storage.records' business.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator

import attrs
import crc32c

from .errors import (
    BatchTooLargeError,
    CorruptBatchError,
    InvalidBatchError,
    UnsupportedMagicError,
)

HEADER_SIZE = 61
# baseOffset + batchLength: the part of the header not counted by batchLength.
LOG_OVERHEAD = 12
# Enough of the header to read the magic byte (and so tell v2 from older formats).
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
MAX_TIMESTAMP_OFFSET = 35
BASE_SEQUENCE_OFFSET = 53

#: The 13 header fields in BatchHeader's order. `HEADER.unpack_from(buf, pos)` gives them as a
#: plain tuple, which the hot paths (the consumer's fetch split) index instead of building a
#: BatchHeader: fields 0 baseOffset, 1 batchLength, 3 magic, 4 crc, 5 attributes,
#: 6 lastOffsetDelta, 9 producerId, 12 recordsCount.
HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC = struct.Struct(">I")
_SEQUENCE = struct.Struct(">i")
_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
_LENGTH_PREFIX = struct.Struct(">qi")

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20
DELETE_HORIZON_MASK = 0x40

CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD = range(5)
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

NO_PRODUCER_ID = -1


@attrs.frozen(slots=True)
class BatchHeader:
    """The fixed 61-byte header of a RecordBatch v2."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0

    @property
    def last_sequence(self) -> int:
        """Sequence of the batch's last record (sequences wrap at 2**31 like Kafka's)."""
        if self.base_sequence < 0:
            return -1
        return (self.base_sequence + self.last_offset_delta) % (1 << 31)


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Decode the header at `pos`. Raises CorruptBatchError when fewer than 61 bytes remain."""
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptBatchError(
            f"batch header truncated: {len(buf) - pos} bytes at position {pos}, need {HEADER_SIZE}"
        )
    return BatchHeader(*HEADER.unpack_from(buf, pos))


def read_length_prefix(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(baseOffset, total batch size) from the first 12 bytes at `pos`, without a full parse."""
    base_offset, batch_length = _LENGTH_PREFIX.unpack_from(buf, pos)
    return base_offset, batch_length + LOG_OVERHEAD


def compute_crc(batch: bytes | bytearray | memoryview) -> int:
    """CRC-32C over bytes 21..end of one whole batch."""
    return crc32c.crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:])


def frame_batch(
    records_block: bytes | bytearray | memoryview,
    *,
    attributes: int,
    records_count: int,
    last_offset_delta: int,
    base_timestamp: int,
    max_timestamp: int,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytearray:
    """A whole batch: the 61-byte header (its batchLength and CRC-32C computed) followed by the
    (already compressed, if the codec says so) records block."""
    batch = bytearray(HEADER_SIZE)
    batch += records_block
    HEADER.pack_into(
        batch, 0, base_offset, len(batch) - LOG_OVERHEAD, partition_leader_epoch, 2, 0, attributes,
        last_offset_delta, base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence,
        records_count,
    )
    _CRC.pack_into(batch, CRC_OFFSET, crc32c.crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:]))
    return batch


def set_base_sequence(batch: bytearray | memoryview, base_sequence: int) -> None:
    """Give a whole batch another baseSequence: the field is covered by the CRC, so that is
    computed again."""
    _SEQUENCE.pack_into(batch, BASE_SEQUENCE_OFFSET, base_sequence)
    _CRC.pack_into(batch, CRC_OFFSET, crc32c.crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:]))


def check_framing(header: BatchHeader, available: int, *, pos: int = 0) -> None:
    """Raise CorruptBatchError if the header's lengths are impossible or run past `available`."""
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptBatchError(
            f"batchLength {header.batch_length} at position {pos} is smaller than a header"
        )
    if header.size > available:
        raise CorruptBatchError(
            f"batch at position {pos} declares {header.size} bytes but only {available} remain"
        )


def validate_batch(
    raw: bytes | bytearray | memoryview,
    *,
    max_size: int | None = None,
    from_client: bool = True,
) -> BatchHeader:
    """Check one complete batch (exactly `len(raw)` bytes) and return its header.

    The checks Kafka's LogValidator makes on the framing: magic 2, lengths agree, CRC-32C,
    lastOffsetDelta + 1 == recordsCount > 0, and for batches from clients baseOffset 0, no control
    batches, and a non-negative baseSequence when a producer id is set. The record bodies are not
    parsed here (see storage.records for that).
    """
    n = len(raw)
    if n < HEADER_SIZE:
        if n > MAGIC_OFFSET and raw[MAGIC_OFFSET] != 2:
            raise UnsupportedMagicError(f"magic {raw[MAGIC_OFFSET]} is not supported, only 2")
        raise CorruptBatchError(f"batch of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
    header = parse_header(raw)
    if header.magic != 2:
        raise UnsupportedMagicError(f"magic {header.magic} is not supported, only 2")
    if header.size != n:
        raise CorruptBatchError(f"batchLength says {header.size} bytes, the batch has {n}")
    if max_size is not None and n > max_size:
        raise BatchTooLargeError(f"batch of {n} bytes exceeds max.message.bytes {max_size}")
    crc = compute_crc(raw)
    if crc != header.crc:
        raise CorruptBatchError(f"CRC mismatch: header says {header.crc:#010x}, bytes give {crc:#010x}")
    if header.records_count <= 0 or header.last_offset_delta + 1 != header.records_count:
        raise InvalidBatchError(
            f"lastOffsetDelta {header.last_offset_delta} + 1 != recordsCount {header.records_count}"
            if header.records_count > 0
            else f"recordsCount {header.records_count}: a batch must hold at least one record"
        )
    if header.compression > CODEC_ZSTD:
        raise InvalidBatchError(f"unknown compression codec {header.compression}")
    if from_client:
        if header.base_offset != 0:
            raise InvalidBatchError(f"baseOffset {header.base_offset} from a client, must be 0")
        if header.is_control:
            raise InvalidBatchError("clients may not send control batches")
        if header.has_producer_id and header.base_sequence < 0:
            raise InvalidBatchError(
                f"producerId {header.producer_id} set with negative baseSequence {header.base_sequence}"
            )
    return header


def split_batches(
    records: bytes | bytearray | memoryview,
) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Split a records blob holding one or more whole batches into (header, bytes) pairs.

    Raises CorruptBatchError on a truncated or impossible batch. Does not check CRCs.
    """
    view = memoryview(records)
    pos = 0
    end = len(view)
    while pos < end:
        if end - pos < HEADER_SIZE:
            if end - pos > MAGIC_OFFSET and view[pos + MAGIC_OFFSET] != 2:
                raise UnsupportedMagicError(f"magic {view[pos + MAGIC_OFFSET]} is not supported, only 2")
            raise CorruptBatchError(f"{end - pos} trailing bytes at position {pos} are not a batch")
        header = parse_header(view, pos)
        if header.magic != 2:
            raise UnsupportedMagicError(f"magic {header.magic} is not supported, only 2")
        check_framing(header, end - pos, pos=pos)
        yield header, view[pos : pos + header.size]
        pos += header.size


def set_base_offset(buf: bytearray | memoryview, base_offset: int, pos: int = 0) -> None:
    """Rewrite baseOffset in place (not covered by the CRC)."""
    _BASE_OFFSET.pack_into(buf, pos, base_offset)


def set_partition_leader_epoch(buf: bytearray | memoryview, epoch: int, pos: int = 0) -> None:
    """Rewrite partitionLeaderEpoch in place (not covered by the CRC)."""
    _LEADER_EPOCH.pack_into(buf, pos + 12, epoch)
