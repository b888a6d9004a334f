"""Records inside a RecordBatch v2: decoding (with decompression) and encoding.

Record layout (zig-zag varints, as Kafka's DefaultRecord)::

    length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
    | keyLength varint (-1 null) | key | valueLength varint (-1 null) | value
    | headerCount varint | (headerKeyLength varint | key utf-8 | headerValueLength varint | value)*

With a codec other than none, everything after recordsCount is one compressed block. Snappy comes
in two shapes: raw (librdkafka) and xerial-framed (the Java client, kafka-python, aiokafka); both
are read, xerial is written because every client reads it.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence

import attrs
import cramjam

from .batch import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    COMPRESSION_MASK,
    CONTROL_MASK,
    HEADER_SIZE,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    compute_crc,
    parse_header,
)
from ._native import speedups as _speedups
from .errors import CorruptBatchError, InvalidBatchError

Header = tuple[str, bytes | None]


@attrs.frozen(slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


# --- varints --------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Zig-zag varint (works for 32- and 64-bit values)."""
    v = (value << 1) ^ (value >> 63)
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def decode_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode a zig-zag varint at pos; return (value, new position)."""
    result = 0
    shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise CorruptBatchError("varint runs past the end of the record data")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise CorruptBatchError("varint longer than 10 bytes")
    return (result >> 1) ^ -(result & 1), pos


# --- codecs ---------------------------------------------------------------------------------

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024


def _snappy_decompress(data: bytes) -> bytes:
    if data[:8] == _XERIAL_MAGIC:
        out = bytearray()
        pos = 16
        while pos < len(data):
            if pos + 4 > len(data):
                raise CorruptBatchError("truncated xerial snappy block length")
            (n,) = struct.unpack_from(">i", data, pos)
            pos += 4
            if n < 0 or pos + n > len(data):
                raise CorruptBatchError("truncated xerial snappy block")
            out += bytes(cramjam.snappy.decompress_raw(data[pos : pos + n]))
            pos += n
        return bytes(out)
    return bytes(cramjam.snappy.decompress_raw(data))


def _snappy_compress(data: bytes) -> bytes:
    out = bytearray(_XERIAL_HEADER)
    for i in range(0, len(data), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(data[i : i + _XERIAL_BLOCK]))
        out += struct.pack(">i", len(block)) + block
    return bytes(out)


def decompress(codec: int, data: bytes | memoryview) -> bytes:
    data = bytes(data)
    try:
        if codec == CODEC_NONE:
            return data
        if codec == CODEC_GZIP:
            return bytes(cramjam.gzip.decompress(data))
        if codec == CODEC_SNAPPY:
            return _snappy_decompress(data)
        if codec == CODEC_LZ4:
            return bytes(cramjam.lz4.decompress(data))
        if codec == CODEC_ZSTD:
            return bytes(cramjam.zstd.decompress(data))
    except CorruptBatchError:
        raise
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise CorruptBatchError(f"cannot decompress {codec=}: {exc}") from exc
    # Codecs 5-7 do not exist: in bytes read back (validate_batch rejects them from clients
    # first) that is damage. CorruptBatchError is an InvalidBatchError, so callers stay correct.
    raise CorruptBatchError(f"unknown compression codec {codec}")


def compress(codec: int, data: bytes) -> bytes:
    if codec == CODEC_NONE:
        return data
    if codec == CODEC_GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == CODEC_SNAPPY:
        return _snappy_compress(data)
    if codec == CODEC_LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == CODEC_ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise InvalidBatchError(f"unknown compression codec {codec}")


CODECS = {"none": CODEC_NONE, "gzip": CODEC_GZIP, "snappy": CODEC_SNAPPY, "lz4": CODEC_LZ4, "zstd": CODEC_ZSTD}


# --- decoding -------------------------------------------------------------------------------


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    n, pos = decode_varint(buf, pos)
    if n < 0:
        return None, pos
    if pos + n > len(buf):
        raise CorruptBatchError("record field runs past the end of the record")
    return buf[pos : pos + n], pos + n


def decode_records(batch: bytes | bytearray | memoryview, header: BatchHeader | None = None) -> list[Record]:
    """Decode every record of one whole batch (decompressing it). Raises CorruptBatchError."""
    if header is None:
        header = parse_header(batch)
    # A damaged batchLength must not silently shorten or empty the records block.
    if header.batch_length < HEADER_SIZE - 12 or header.size > len(batch):
        raise CorruptBatchError(
            f"batchLength {header.batch_length} does not fit the {len(batch)} bytes given"
        )
    # validate_batch reports a wrong magic from a client as unsupported; in bytes that passed it
    # (or were read back from disk) a wrong magic or a negative count is damage.
    if header.magic != 2:
        raise CorruptBatchError(f"magic {header.magic} where 2 was expected")
    if header.records_count < 0:
        raise CorruptBatchError(f"negative recordsCount {header.records_count}")
    body = decompress(header.compression, memoryview(batch)[HEADER_SIZE : header.size])
    out: list[Record] = []
    pos = 0
    log_append = header.is_log_append_time
    for _ in range(header.records_count):
        length, pos = decode_varint(body, pos)
        end = pos + length
        if length < 0 or end > len(body):
            raise CorruptBatchError("record length runs past the end of the batch")
        pos += 1  # record attributes, unused
        ts_delta, pos = decode_varint(body, pos)
        off_delta, pos = decode_varint(body, pos)
        key, pos = _read_bytes(body, pos)
        value, pos = _read_bytes(body, pos)
        n_headers, pos = decode_varint(body, pos)
        if n_headers < 0:
            raise CorruptBatchError("negative header count")
        headers = []
        for _h in range(n_headers):
            hk, pos = _read_bytes(body, pos)
            hv, pos = _read_bytes(body, pos)
            if hk is None:
                raise CorruptBatchError("null header key")
            try:
                headers.append((hk.decode("utf-8"), hv))
            except UnicodeDecodeError as exc:
                raise CorruptBatchError("header key is not UTF-8") from exc
        if pos != end:
            raise CorruptBatchError("record length does not match its fields")
        timestamp = header.max_timestamp if log_append else header.base_timestamp + ts_delta
        out.append(Record(header.base_offset + off_delta, timestamp, key, value, tuple(headers)))
    if pos != len(body):
        raise CorruptBatchError(f"{len(body) - pos} bytes after the last record")
    return out


def check_records(batch: bytes | bytearray | memoryview, header: BatchHeader, *, full: bool = False) -> None:
    """Check that a batch's (decompressed) records are well formed; raise CorruptBatchError if not.

    The default check walks only each record's length prefix: the lengths of `recordsCount`
    records must tile the records block exactly. That catches truncated, padded or garbage record
    data at under a microsecond per record. `full=True` decodes every field of every record and
    checks that the offset deltas run 0..n-1 (Kafka's LogValidator rule), several times slower.
    """
    if full:
        records = decode_records(batch, header)
        for expected, record in enumerate(records):
            if record.offset - header.base_offset != expected:
                raise CorruptBatchError(
                    f"record {expected} has offsetDelta {record.offset - header.base_offset}"
                )
        return
    raw = memoryview(batch)[HEADER_SIZE : header.size]
    if _speedups is not None:
        # The C walk reads any buffer: an uncompressed block is walked in place, without a copy.
        body = raw if header.compression == CODEC_NONE else decompress(header.compression, raw)
        pos = _speedups.walk_records(body, header.records_count)
        if pos is None:  # damage: the Python walk raises with its message
            pos = _walk_records_py(bytes(body), header.records_count)
    else:
        # bytes, not the view: indexing a memoryview is slower than one copy of the block
        body = decompress(header.compression, raw)
        pos = _walk_records_py(body, header.records_count)
    n = len(body)
    if pos != n:
        raise CorruptBatchError(
            f"records of the batch end at byte {pos} of its {n}-byte records block"
            if pos < n
            else "record length runs past the end of the batch"
        )


def _walk_records_py(body: bytes, count: int) -> int:
    """Walk `count` record length prefixes from the start of `body`; the position after the last
    record (possibly past the end). Raises CorruptBatchError on a prefix it cannot read or an
    impossible length. storage/_speedups.c has the same walk in C, without the errors."""
    n = len(body)
    pos = 0
    for _ in range(count):
        # inlined zig-zag varint decode of the record length: this runs once per produced record
        result = shift = 0
        while True:
            if pos >= n:
                raise CorruptBatchError("record length runs past the end of the batch")
            b = body[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 28:
                raise CorruptBatchError("record length varint longer than 5 bytes")
        length = (result >> 1) ^ -(result & 1)
        if length < 6:  # attributes, timestamp, offset, key, value, header count: 1 byte each at least
            raise CorruptBatchError(f"record length {length} is impossible")
        pos += length
    return pos


def iter_records(records: bytes | bytearray | memoryview) -> Iterator[Record]:
    """Records of a blob of whole batches (control batches skipped)."""
    from .batch import split_batches

    for header, raw in split_batches(records):
        if header.is_control:
            continue
        yield from decode_records(raw, header)


# --- encoding -------------------------------------------------------------------------------


def _encode_bytes(b: bytes | None) -> bytes:
    if b is None:
        return encode_varint(-1)
    return encode_varint(len(b)) + b


def encode_record(
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[Header] = (),
) -> bytes:
    body = bytearray(b"\x00")
    body += encode_varint(timestamp_delta)
    body += encode_varint(offset_delta)
    body += _encode_bytes(key)
    body += _encode_bytes(value)
    body += encode_varint(len(headers))
    for hk, hv in headers:
        body += _encode_bytes(hk.encode("utf-8"))
        body += _encode_bytes(hv)
    return encode_varint(len(body)) + bytes(body)


_HEADER_STRUCT = struct.Struct(">qiibIhiqqqhii")


def build_batch(
    records: Iterable[tuple[bytes | None, bytes | None, Sequence[Header], int]],
    *,
    compression: int = CODEC_NONE,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
    transactional: bool = False,
    control: bool = False,
    log_append_time: bool = False,
) -> bytes:
    """Encode one batch from (key, value, headers, timestamp_ms) tuples; offsets are deltas 0..n-1."""
    items = list(records)
    if not items:
        raise ValueError("a batch needs at least one record")
    base_ts = min(r[3] for r in items)
    max_ts = max(r[3] for r in items)
    body = b"".join(
        encode_record(i, ts - base_ts, key, value, headers)
        for i, (key, value, headers, ts) in enumerate(items)
    )
    body = compress(compression, body)
    attributes = compression & COMPRESSION_MASK
    if log_append_time:
        attributes |= TIMESTAMP_TYPE_MASK
    if transactional:
        attributes |= TRANSACTIONAL_MASK
    if control:
        attributes |= CONTROL_MASK
    batch = bytearray(HEADER_SIZE) + body
    _HEADER_STRUCT.pack_into(
        batch,
        0,
        base_offset,
        len(batch) - 12,
        partition_leader_epoch,
        2,
        0,
        attributes,
        len(items) - 1,
        base_ts,
        max_ts,
        producer_id,
        producer_epoch,
        base_sequence,
        len(items),
    )
    struct.pack_into(">I", batch, 17, compute_crc(batch))
    return bytes(batch)
