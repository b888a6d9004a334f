"""Records inside a RecordBatch v2: decoding (with decompression) and encoding.

The one implementation of the record format: the broker, the storage engine, offline replay and
the client's producer and consumer all encode and decode records here (the batch header is
storage.batch's). The per-record loops have a compiled twin in storage/_speedups.c, used when it
was built; the Python loops here are the reference it is tested against and the fallback.

Record layout (zig-zag varints, as Kafka's DefaultRecord)::

    length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
    | keyLength varint (-1 null) | key | valueLength varint (-1 null) | value
    | headerCount varint | (headerKeyLength varint | key utf-8 | headerValueLength varint | value)*

With a codec other than none, everything after recordsCount is one compressed block. Snappy comes
in two shapes: raw (librdkafka) and xerial-framed (the Java client, kafka-python, aiokafka); both
are read, xerial is written because every client reads it.

Decompression is bounded (see "codecs" below): a records block that would inflate past a given
size is refused while it is being inflated, so a small batch cannot make its reader allocate
gigabytes.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from types import MemberDescriptorType

import attrs
import cramjam
import lz4.frame
import zstandard

from .batch import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NAMES,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    COMPRESSION_MASK,
    CONTROL_MASK,
    HEADER_SIZE,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    frame_batch,
    parse_header,
    split_batches,
)
from ._native import speedups as _speedups
from .errors import CorruptBatchError, DecompressedTooLargeError, InvalidBatchError, StorageError

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


def _uvarint(buf, pos: int) -> tuple[int, int]:
    """An unsigned varint (7 bits a byte, at most 10 bytes); IndexError when it runs off the end."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptBatchError("varint longer than 10 bytes")


def _zvarint(buf, pos: int) -> tuple[int, int]:
    """A zig-zag varint for the decoder loop: IndexError when it runs off the end (the loop
    reports that as truncation)."""
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    v, pos = _uvarint(buf, pos)
    return (v >> 1) ^ -(v & 1), pos


def decode_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode a zig-zag varint at pos; return (value, new position)."""
    try:
        v, pos = _uvarint(buf, pos)
    except IndexError:
        raise CorruptBatchError("varint runs past the end of the record data") from None
    return (v >> 1) ^ -(v & 1), pos


# --- codecs ---------------------------------------------------------------------------------
#
# Decompression is bounded: a records block inflates to at most `max_decompressed` bytes, and a
# block that would inflate further raises DecompressedTooLargeError before that much output
# exists. A zstd block of 64 KiB can hold 2 GiB of zeros, and the batch's CRC only covers the
# compressed bytes, so the declared sizes in the codec headers are checked first (refusing most
# bombs without decompressing anything), then output is produced in chunks of at most _CHUNK
# and counted. Each chunk is a short native call that releases the GIL, so a worker thread
# doing this leaves the Trio thread its turns.
#
# cramjam (one package for the four codecs) cannot stream: its one-shot calls have no output
# limit and its Decompressor objects need whole frames. So zstd streams through `zstandard` and
# lz4 frames through `lz4`; gzip uses the standard library's zlib; snappy needs no streaming,
# its blocks declare their inflated length up front. inflate_bound() reads the same headers to
# bound what a check will cost before running it (the broker decides from it where to run it).

#: The default bound on a records block's inflated size: 64 times Kafka's default
#: message.max.bytes. The broker passes its message.max.decompressed.bytes instead.
DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024
# Output produced per native call: large enough that a typical batch (a producer's batch.size
# is 16 KiB to 1 MB) inflates in one call, without a join; small enough (about a millisecond
# of work) that the GIL changes hands often when a bigger block streams through.
_CHUNK = 2 * 1024 * 1024

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024


def _too_large(name: str, limit: int, stated: int | None = None) -> DecompressedTooLargeError:
    """The error for a block inflating past `limit`; `stated`: what its headers say it inflates
    to (a cut gzip block's last bytes read as its trailer can say anything, so it is shown)."""
    if stated is None:
        return DecompressedTooLargeError(f"{name} records block inflates past the limit of {limit} bytes")
    return DecompressedTooLargeError(
        f"{name} records block states {stated} inflated bytes, past the limit of {limit} bytes")


class _Output:
    """Inflated chunks, counted against the limit as they come."""

    __slots__ = ("name", "limit", "total", "parts")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.total = 0
        self.parts: list[bytes] = []

    def room(self) -> int:
        """How much to ask the next call for: one byte more than what is left proves the
        limit exceeded, and never more than a chunk."""
        return min(_CHUNK, self.limit - self.total + 1)

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.limit:
            raise _too_large(self.name, self.limit)
        if chunk:
            self.parts.append(chunk)

    def result(self) -> bytes:
        parts = self.parts
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _drain(read, limit: int, name: str) -> bytes:
    """Call `read(n)` (a stream's read, b"" at its end) until the end, refusing output past `limit`."""
    out = _Output(name, limit)
    while chunk := read(out.room()):
        out.add(chunk)
    return out.result()


def _snappy_raw_len(block) -> int:
    try:
        return cramjam.snappy.decompress_raw_len(block)
    except Exception as exc:  # cramjam's DecompressionError
        raise CorruptBatchError(f"snappy block header: {exc}") from None


def _snappy_decompress(data, limit: int):
    if data[:8] == _XERIAL_MAGIC:
        # Every block's declared length is added up before any block is inflated: a bomb costs
        # a walk over the block headers, and a good block set is inflated once, in place.
        blocks = []
        total = 0
        pos = 16
        end = len(data)
        while pos < end:
            if pos + 4 > end:
                raise CorruptBatchError("truncated xerial snappy block length")
            (n,) = struct.unpack_from(">i", data, pos)
            pos += 4
            if n < 0 or pos + n > end:
                raise CorruptBatchError("truncated xerial snappy block")
            block = data[pos : pos + n]
            size = _snappy_raw_len(block)
            total += size
            if total > limit:
                raise _too_large("snappy", limit, total)
            blocks.append((block, size))
            pos += n
        out = bytearray(total)
        view = memoryview(out)
        at = 0
        for block, size in blocks:
            if cramjam.snappy.decompress_raw_into(block, view[at : at + size]) != size:
                raise CorruptBatchError("xerial snappy block shorter than its header says")
            at += size
        return out
    # Raw snappy (librdkafka): one block whose header gives its inflated length; cramjam
    # allocates exactly that and refuses content that does not match it.
    size = _snappy_raw_len(data)
    if size > limit:
        raise _too_large("snappy", limit, size)
    return cramjam.snappy.decompress_raw(data)


# zstd (RFC 8878) framing, read to check declared sizes before decompressing and to catch a cut
# stream (zstandard's stream reader stops quietly at the end of its input).
_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # to 0x184D2A5F


_ZSTD_BLOCK_MAX = 128 * 1024  # what one compressed block inflates to at most (RFC 8878)


def _zstd_scan(data, limit: int) -> int:
    """Walk the frames and block headers of a zstd block without decompressing it; return an
    upper bound of what it inflates to.

    Raises CorruptBatchError when the framing is malformed or cut short, and
    DecompressedTooLargeError as soon as the sizes the headers state (a frame's content size,
    raw and RLE blocks' lengths) exceed `limit`. Compressed blocks state only their input size;
    what they inflate to is counted while decompressing.
    """
    n = len(data)
    if n == 0:
        raise CorruptBatchError("empty zstd block")
    pos = 0
    stated = 0
    compressed = 0
    while pos < n:
        if pos + 4 > n:
            raise CorruptBatchError("truncated zstd frame header")
        magic = int.from_bytes(data[pos : pos + 4], "little")
        if magic & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
            if pos + 8 > n:
                raise CorruptBatchError("truncated zstd skippable frame")
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
            if pos > n:
                raise CorruptBatchError("truncated zstd skippable frame")
            continue
        if magic != _ZSTD_MAGIC:
            raise CorruptBatchError(f"not a zstd frame (magic {magic:#010x})")
        pos += 4
        if pos >= n:
            raise CorruptBatchError("truncated zstd frame header")
        descriptor = data[pos]
        pos += 1
        if descriptor & 0x08:
            raise CorruptBatchError("zstd frame header has its reserved bit set")
        single_segment = descriptor & 0x20
        fcs_size = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
        pos += (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]  # window, dictionary id
        if pos + fcs_size > n:
            raise CorruptBatchError("truncated zstd frame header")
        if fcs_size:
            content_size = int.from_bytes(data[pos : pos + fcs_size], "little") + (256 if fcs_size == 2 else 0)
            if stated + content_size > limit:
                raise _too_large("zstd", limit, stated + content_size)
        pos += fcs_size
        while True:
            if pos + 3 > n:
                raise CorruptBatchError("truncated zstd block header")
            block = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            pos += 3
            kind = (block >> 1) & 3
            size = block >> 3
            if kind == 0:  # raw: `size` bytes, copied
                stated += size
                pos += size
            elif kind == 1:  # RLE: one byte, repeated `size` times
                stated += size
                pos += 1
            elif kind == 2:  # compressed: `size` input bytes
                compressed += 1
                pos += size
            else:
                raise CorruptBatchError("zstd block of the reserved type")
            if pos > n:
                raise CorruptBatchError("truncated zstd block")
            if stated > limit:
                raise _too_large("zstd", limit, stated)
            if block & 1:  # last block of the frame
                break
        if descriptor & 0x04:  # content checksum
            pos += 4
            if pos > n:
                raise CorruptBatchError("truncated zstd frame checksum")
    return stated + compressed * _ZSTD_BLOCK_MAX


def _zstd_decompress(data, limit: int) -> bytes:
    _zstd_scan(data, limit)
    # A decompressor per call: they are not safe to share between threads, and one costs a few
    # microseconds. Its default window limit (128 MiB) is libzstd's, which Kafka clients use too.
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    return _drain(reader.read, limit, "zstd")


def _lz4_decompress(data, limit: int) -> bytes:
    out = _Output("lz4", limit)
    rest = data
    while True:  # one lz4 frame per turn: a block may hold several concatenated frames
        content_size = lz4.frame.get_frame_info(rest)["content_size"]  # 0: not stated
        if out.total + content_size > limit:
            raise _too_large("lz4", limit, out.total + content_size)
        frame = lz4.frame.LZ4FrameDecompressor()
        pending = rest
        while True:
            out.add(frame.decompress(pending, max_length=out.room()))
            pending = b""
            if frame.eof:
                break
            if frame.needs_input:
                raise CorruptBatchError("truncated lz4 frame")
        rest = frame.unused_data
        if not rest:
            return out.result()


# Below this inflated size a gzip block is inflated by cramjam, about 30% faster than zlib here.
_GZIP_ONE_SHOT = 8 * 1024 * 1024


def _gzip_decompress(data, limit: int):
    if len(data) >= 20:  # the smallest member: 10-byte header, empty deflate, 8-byte trailer
        # ISIZE, the last member's length mod 2**32: the block inflates to at least this much.
        size = int.from_bytes(data[-4:], "little")
        if size > limit:
            raise _too_large("gzip", limit, size)
        if size <= _GZIP_ONE_SHOT:
            out = _gzip_one_shot(data, size)
            if out is not None:
                return out
    out = _Output("gzip", limit)
    rest = data
    while True:  # one gzip member per turn (members may be concatenated)
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        while not member.eof:
            chunk = member.decompress(pending, out.room())
            pending = member.unconsumed_tail
            if not chunk and not pending:
                raise CorruptBatchError("truncated gzip member")
            out.add(chunk)
        rest = member.unused_data
        if not rest:
            return out.result()


def _gzip_one_shot(data, size: int) -> bytearray | None:
    """cramjam's inflate into a buffer of exactly `size` bytes, or None if it does not fit there.

    cramjam fails rather than write past the buffer, so this is bounded whatever the trailer
    says. Anything it cannot finish (several members, a lying trailer, damage) is left to the
    zlib path, which has the last word; the buffer dies here, not in the caller's frame.
    """
    out = bytearray(size)
    try:
        if cramjam.gzip.decompress_into(data, out) == size:
            return out
    except Exception:  # noqa: BLE001 - cramjam's DecompressionError; zlib decides
        pass
    return None


def _lz4_bound(data) -> int:
    """An upper bound of what lz4 frames inflate to, from their block headers (each block
    inflates to at most the frame's block maximum size). ValueError on framing it cannot read."""
    n = len(data)
    pos = 0
    bound = 0
    while pos < n:
        magic = int.from_bytes(data[pos : pos + 4], "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
            continue
        if magic != 0x184D2204 or pos + 7 > n:
            raise ValueError("not an lz4 frame")
        flags = data[pos + 4]
        block_max = 1 << (8 + 2 * ((data[pos + 5] >> 4) & 7))  # 4 -> 64 KiB ... 7 -> 4 MiB
        pos += 7 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)
        block_checksum = 4 if flags & 0x10 else 0
        while True:
            if pos + 4 > n:
                raise ValueError("truncated lz4 frame")
            size = int.from_bytes(data[pos : pos + 4], "little") & 0x7FFFFFFF
            pos += 4
            if size == 0:  # end mark
                break
            bound += block_max
            pos += size + block_checksum
        pos += 4 if flags & 0x04 else 0  # content checksum
    return bound


# Deflate's best ratio is 1032:1 (258-byte matches of 2 bits and change).
_DEFLATE_MAX_RATIO = 1032


def inflate_bound(codec: int, data, limit: int = DEFAULT_MAX_DECOMPRESSED) -> int:
    """A cheap upper bound (from headers, without decompressing) of how many bytes decompress()
    with this `limit` produces before it returns or refuses: what checking `data` costs.

    0 when the very header checks decompress() starts with refuse it (that costs nothing more);
    limit + 1 when the headers cannot be read here (decompressing will tell)."""
    try:
        if codec == CODEC_NONE:
            return len(data)
        if codec == CODEC_ZSTD:
            bound = _zstd_scan(data, limit)
        elif codec == CODEC_SNAPPY and data[:8] != _XERIAL_MAGIC:
            bound = _snappy_raw_len(data)
        elif codec == CODEC_GZIP:
            bound = _DEFLATE_MAX_RATIO * len(data)
        elif codec == CODEC_SNAPPY:
            bound = _xerial_bound(data)
        elif codec == CODEC_LZ4:
            bound = _lz4_bound(data)
        else:
            return limit + 1
    except StorageError:  # decompress() starts with the same check and refuses there
        return 0
    except (ValueError, IndexError, struct.error):
        return limit + 1
    return min(bound, limit + 1)


def _xerial_bound(data) -> int:
    bound, pos, end = 0, 16, len(data)
    while pos < end:
        (n,) = struct.unpack_from(">i", data, pos)
        if n < 0:
            raise ValueError("negative xerial block length")
        bound += _snappy_raw_len(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return bound


def _inflate(codec: int, data, limit: int):
    """The records block `data` decompressed with `codec`, as bytes or another buffer."""
    try:
        if codec == CODEC_ZSTD:
            return _zstd_decompress(data, limit)
        if codec == CODEC_LZ4:
            return _lz4_decompress(data, limit)
        if codec == CODEC_SNAPPY:
            return _snappy_decompress(data, limit)
        if codec == CODEC_GZIP:
            return _gzip_decompress(data, limit)
    except CorruptBatchError as exc:
        error = exc
    except Exception as exc:  # the codecs' own errors: zlib.error, zstandard.ZstdError, RuntimeError
        error = CorruptBatchError(f"cannot decompress {CODEC_NAMES[codec]}: {exc}")
    else:
        # Codecs 5-7 do not exist: in bytes read back (validate_batch rejects them from clients
        # first) that is damage. CorruptBatchError is an InvalidBatchError, so callers stay correct.
        raise CorruptBatchError(f"unknown compression codec {codec}")
    # Raised afresh, without the original traceback: its frames' locals (the output so far, up
    # to the limit, and zstd's decoder with its window) would live as long as the exception, and
    # trio's machinery keeps exceptions in reference cycles until the cycle collector runs.
    # Under a stream of refused bombs that let the broker's RSS climb by hundreds of MiB.
    raise error.with_traceback(None)


def decompress(codec: int, data: bytes | bytearray | memoryview, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> bytes:
    """A records block decompressed. Raises CorruptBatchError when it cannot be, and
    DecompressedTooLargeError (one) without producing more when it would exceed `max_decompressed`."""
    if codec == CODEC_NONE:
        return bytes(data)
    out = _inflate(codec, data, max_decompressed)
    return out if type(out) is bytes else bytes(out)


def _snappy_compress(data: bytes) -> bytes:
    out = bytearray(_XERIAL_HEADER)
    for i in range(0, len(data), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(data[i : i + _XERIAL_BLOCK]))
        out += struct.pack(">i", len(block)) + block
    return bytes(out)


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
#
# One decoder serves every reader of records: the broker (full validation, the coordinator's
# replay, compaction's keys), offline replay and the client's consumer. It runs once per record
# read, so it is one loop with everything in local variables; each varint is read inline when it
# takes one or two bytes (values up to 8191: the record lengths, deltas and key/value sizes of
# most records). What it builds is given by a RecordShape, so the consumer gets its own record
# class (with topic and partition) without a second decoder or a copy per record.
# storage/_speedups.c has the same loop in C: same records, same errors with the same messages
# (tests/storage/test_speedups.py); this one is the reference and the fallback.

#: The slots every record class has, in the order a RecordShape's constructor receives them.
RECORD_FIELDS = ("offset", "timestamp", "key", "value", "headers")


def _read_bytes(buf, pos: int) -> tuple[bytes | None, int]:
    """A length-prefixed (zig-zag varint, -1 = null) byte string at pos: (bytes or None, new
    pos). IndexError when the length runs off the end, as _zvarint."""
    n, pos = _zvarint(buf, pos)
    if n < 0:
        if n != -1:
            raise CorruptBatchError(f"negative length {n}")
        return None, pos
    if pos + n > len(buf):  # a slice would silently come back short (a last header value)
        raise CorruptBatchError("record data truncated")
    return buf[pos : pos + n], pos + n


def read_bytes(buf, pos: int) -> tuple[bytes | None, int]:
    """`_read_bytes` for callers outside the decoder loop: CorruptBatchError on truncation."""
    try:
        return _read_bytes(buf, pos)
    except IndexError:
        raise CorruptBatchError("record data truncated") from None


def _shape_factory(cls: type, batch_slots: tuple[str, ...]):
    """factory(*batch_values) -> make(offset, timestamp, key, value, headers) -> a `cls` instance,
    for the pure-Python decoder: the slots are stored straight (as the C decoder does), without
    running an __init__. Generated once per shape, as dataclasses generate their methods."""
    names = RECORD_FIELDS + batch_slots
    params = ", ".join(f"c{i}" for i in range(len(batch_slots)))
    # A class with its own __setattr__ (attrs' frozen classes raise there) is filled the way its
    # own __init__ does: through object.__setattr__.
    plain = cls.__setattr__ is object.__setattr__
    values = list(RECORD_FIELDS) + [f"c{i}" for i in range(len(batch_slots))]
    stores = [f"r.{n} = {v}" if plain else f"_set(r, {n!r}, {v})" for n, v in zip(names, values)]
    body = "\n".join(f"        {line}" for line in stores)
    src = (f"def factory({params}):\n"
           f"    def make(offset, timestamp, key, value, headers):\n"
           f"        r = _new(_cls)\n{body}\n"
           f"        return r\n"
           f"    return make\n")
    scope = {"_new": object.__new__, "_cls": cls, "_set": object.__setattr__}
    exec(src, scope)  # noqa: S102 - source built above from identifiers checked by RecordShape
    return scope["factory"]


class RecordShape:
    """What decoded records are built as: a class with `__slots__` named RECORD_FIELDS, plus
    `batch_slots` that get one value per batch (the consumer's topic and partition, say).

    Records are made without calling the class: the slots are stored directly, so the class
    must not rely on its __init__ for anything else."""

    __slots__ = ("cls", "batch_slots", "compiled", "_factory")

    def __init__(self, cls: type, batch_slots: Sequence[str] = ()) -> None:
        self.cls = cls
        self.batch_slots = tuple(batch_slots)
        for name in RECORD_FIELDS + self.batch_slots:
            if not name.isidentifier() or not isinstance(getattr(cls, name, None), MemberDescriptorType):
                raise TypeError(f"{cls.__name__}.{name} is not a __slots__ member")
        self._factory = _shape_factory(cls, self.batch_slots)
        # The compiled decoder checks the slots once more and keeps where each one lives.
        self.compiled = _speedups.record_shape(cls, RECORD_FIELDS + self.batch_slots) if _speedups else None

    def maker(self, batch_values: Sequence = ()):
        return self._factory(*batch_values)


def _decode_records_py(body: bytes, count: int, base_offset: int, base_ts: int, max_ts: int,
                       log_append: bool, make, start: int = 0) -> tuple[list, int]:
    """`decode_block` in Python, with `make` from RecordShape.maker."""
    out: list = []
    append = out.append
    pos = start
    try:
        for _ in range(count):
            # record length (zig-zag: an odd raw value is negative, i.e. damage)
            c = body[pos]
            if c & 0x80:
                c2 = body[pos + 1]
                if c2 & 0x80:
                    c, pos = _uvarint(body, pos)
                else:
                    c = (c & 0x7F) | (c2 << 7)
                    pos += 2
            else:
                pos += 1
            if c & 1:
                raise CorruptBatchError("negative record length")
            end = pos + (c >> 1)
            # attributes byte (unused), then the timestamp delta
            c = body[pos + 1]
            if c & 0x80:
                c2 = body[pos + 2]
                if c2 & 0x80:
                    c, pos = _uvarint(body, pos + 1)
                else:
                    c = (c & 0x7F) | (c2 << 7)
                    pos += 3
            else:
                pos += 2
            ts_delta = (c >> 1) ^ -(c & 1)
            # offset delta
            c = body[pos]
            if c & 0x80:
                c2 = body[pos + 1]
                if c2 & 0x80:
                    c, pos = _uvarint(body, pos)
                else:
                    c = (c & 0x7F) | (c2 << 7)
                    pos += 2
            else:
                pos += 1
            off_delta = (c >> 1) ^ -(c & 1)
            # key: mostly null
            c = body[pos]
            if c == 1:
                key = None
                pos += 1
            elif c & 0x81:  # longer than one byte, or negative
                key, pos = _read_bytes(body, pos)
            else:
                pos += 1
                key = body[pos : pos + (c >> 1)]
                pos += c >> 1
            # value: one or two length bytes for most
            c = body[pos]
            if c & 0x80:
                c2 = body[pos + 1]
                if c2 & 0x80 or c & 1:
                    value, pos = _read_bytes(body, pos)
                else:
                    pos += 2
                    c = pos + (((c & 0x7F) | (c2 << 7)) >> 1)
                    value = body[pos:c]
                    pos = c
            elif c == 1:
                value = None
                pos += 1
            elif c & 1:
                raise CorruptBatchError("negative value length")
            else:
                pos += 1
                c = pos + (c >> 1)
                value = body[pos:c]
                pos = c
            # headers: mostly none
            if body[pos] == 0:
                headers = ()
                pos += 1
            else:
                hcount, pos = _zvarint(body, pos)
                if hcount < 0:
                    raise CorruptBatchError("negative header count")
                hl = []
                for _h in range(hcount):
                    hk, pos = _read_bytes(body, pos)
                    if hk is None:
                        raise CorruptBatchError("null header key")
                    hv, pos = _read_bytes(body, pos)
                    hl.append((hk.decode("utf-8"), hv))
                headers = tuple(hl)
            if pos != end:  # also catches a length running past the block
                raise CorruptBatchError("record length does not match its fields")
            append(make(base_offset + off_delta, max_ts if log_append else base_ts + ts_delta, key, value, headers))
    except IndexError:
        raise CorruptBatchError("record data truncated") from None
    except UnicodeDecodeError:
        raise CorruptBatchError("header key is not UTF-8") from None
    return out, pos


def decode_block(
    body: bytes | bytearray | memoryview,
    count: int,
    base_offset: int,
    base_ts: int,
    max_ts: int,
    log_append: bool,
    shape: RecordShape,
    batch_values: Sequence = (),
    start: int = 0,
) -> tuple[list, int]:
    """`count` records of a (decompressed) records block from byte `start`, built as `shape`
    says; (records, the position after the last one). Bytes left after it are the caller's to
    judge. Raises CorruptBatchError on malformed records.

    Timestamps: `max_ts` for every record under LogAppendTime, else base_ts + its delta."""
    if _speedups is not None and shape.compiled is not None:
        # the C loop reads any buffer in place: no copy
        return _speedups.decode_records(body, count, base_offset, base_ts, max_ts, log_append,
                                        shape.compiled, tuple(batch_values), start)
    if type(body) is not bytes:
        body = bytes(body)  # indexing bytes is faster than indexing a view
    return _decode_records_py(body, count, base_offset, base_ts, max_ts, log_append,
                              shape.maker(batch_values), start)


#: Hands a record the compiled decoder left untracked back to the cycle collector (for classes
#: whose records Python code stores into later); None without the compiled decoder, whose
#: Python twin leaves records tracked.
track_record = _speedups.track if _speedups is not None else None

_RECORD = RecordShape(Record)
# A full check decodes this many records at a time: a 64 MiB block of 7-byte records is
# 9 million of them, which need not all exist at once.
_CHECK_CHUNK = 4096


def decode_records(
    batch: bytes | bytearray | memoryview,
    header: BatchHeader | None = None,
    *,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
) -> list[Record]:
    """Decode every record of one whole batch (decompressing it, up to `max_decompressed` bytes).
    Raises CorruptBatchError (DecompressedTooLargeError past that bound)."""
    if header is None:
        header = parse_header(batch)
    body = _records_block(batch, header, max_decompressed)
    out, pos = decode_block(body, header.records_count, header.base_offset, header.base_timestamp,
                            header.max_timestamp, header.is_log_append_time, _RECORD)
    if pos != len(body):
        raise CorruptBatchError(f"{len(body) - pos} bytes after the last record")
    return out


def _records_block(batch, header: BatchHeader, max_decompressed: int):
    """The (decompressed) records block of a whole batch, its framing checked."""
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
    raw = memoryview(batch)[HEADER_SIZE : header.size]
    if header.compression == CODEC_NONE and _speedups is not None:
        return raw  # the C decoder reads it in place
    return decompress(header.compression, raw, max_decompressed)


def check_records(
    batch: bytes | bytearray | memoryview,
    header: BatchHeader,
    *,
    full: bool = False,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
) -> None:
    """Check that a batch's (decompressed) records are well formed; raise CorruptBatchError if not.

    The default check walks only each record's length prefix: the lengths of `recordsCount`
    records must tile the records block exactly. That catches truncated, padded or garbage record
    data at under a microsecond per record. `full=True` decodes every field of every record and
    checks that the offset deltas run 0..n-1 (Kafka's LogValidator rule), several times slower.
    A compressed block that would inflate past `max_decompressed` bytes raises
    DecompressedTooLargeError, having inflated no more than that.
    """
    if full:
        body = _records_block(batch, header, max_decompressed)
        pos = 0
        expected = 0
        left = header.records_count
        while left > 0:
            n = min(left, _CHECK_CHUNK)
            records, pos = decode_block(body, n, 0, 0, 0, False, _RECORD, (), pos)
            for record in records:
                if record.offset != expected:
                    raise CorruptBatchError(f"record {expected} has offsetDelta {record.offset}")
                expected += 1
            left -= n
        if pos != len(body):
            raise CorruptBatchError(f"{len(body) - pos} bytes after the last record")
        return
    raw = memoryview(batch)[HEADER_SIZE : header.size]
    if _speedups is not None:
        # The C walk reads any buffer: an uncompressed block is walked in place, and an inflated
        # one as the codec left it (bytes, bytearray or cramjam's buffer), without a copy.
        body = raw if header.compression == CODEC_NONE else _inflate(header.compression, raw, max_decompressed)
        pos = _speedups.walk_records(body, header.records_count)
        if pos is None:  # damage: the Python walk raises with its message
            pos = _walk_records_py(bytes(body), header.records_count)
    else:
        # bytes, not the view: indexing a memoryview is slower than one copy of the block
        body = decompress(header.compression, raw, max_decompressed)
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
    for header, raw in split_batches(records):
        if header.is_control:
            continue
        yield from decode_records(raw, header)


# --- encoding -------------------------------------------------------------------------------
#
# One encoder too: the producer seals its batches with it, build_batch (the broker's own
# batches, tests) and encode_record go through it. storage/_speedups.c has it in C, byte for
# byte the same; it declines (None) input other than the plain types the producer hands it.

# Zig-zag varints of small numbers, precomputed: lengths, deltas and counts are almost always small.
_VARINT_LIMIT = (1 << 14) - 1
_VARINT_TABLE = [encode_varint(i) for i in range(-1, _VARINT_LIMIT)]
_NULL = b"\x01"  # varint(-1): a null key/value


def _vi(n: int) -> bytes:
    if -1 <= n < _VARINT_LIMIT:
        return _VARINT_TABLE[n + 1]
    return encode_varint(n)


def encode_records(records: list, base_ts: int, first_offset_delta: int = 0) -> tuple[bytearray, int]:
    """The records block of a batch from (key, value, headers, timestamp) tuples -- keys, values
    and header values bytes or None, header keys bytes -- and its max timestamp (at least
    `base_ts`). Offset deltas count up from `first_offset_delta`; timestamps are stored as deltas
    from `base_ts`."""
    if _speedups is not None:
        done = _speedups.encode_records(records, base_ts, first_offset_delta)
        if done is not None:
            return done
    return _encode_records_py(records, base_ts, first_offset_delta)


def _encode_records_py(records: list, base_ts: int, first_offset_delta: int = 0) -> tuple[bytearray, int]:
    """`encode_records` in Python: the reference and the fallback.

    One tight loop: small varints come from a table, the record prefix (attributes + timestamp
    delta) and the key/value-length part are reused while they repeat (records of one batch
    mostly share a millisecond and a size), and each record is one join and one append."""
    out = bytearray()
    table = _VARINT_TABLE
    limit = _VARINT_LIMIT
    join = b"".join
    max_ts = base_ts
    last_ts = None
    head = b""
    last_vl = -2
    mid = b""
    for i, (key, value, headers, ts) in enumerate(records, first_offset_delta):
        if ts != last_ts:
            last_ts = ts
            d = ts - base_ts
            head = b"\x00" + (table[d + 1] if -1 <= d < limit else encode_varint(d))
            if ts > max_ts:
                max_ts = ts
        ib = table[i + 1] if -1 <= i < limit else encode_varint(i)
        if key is None and not headers and value is not None:
            vl = len(value)
            if vl != last_vl:
                last_vl = vl
                mid = b"\x01" + (table[vl + 1] if vl < limit else encode_varint(vl))
            body = join((head, ib, mid, value, b"\x00"))
        else:
            parts = [head, ib]
            if key is None:
                parts.append(_NULL)
            else:
                parts += (_vi(len(key)), key)
            if value is None:
                parts.append(_NULL)
            else:
                parts += (_vi(len(value)), value)
            parts.append(_vi(len(headers)))
            for hk, hv in headers:
                parts += (_vi(len(hk)), hk)
                if hv is None:
                    parts.append(_NULL)
                else:
                    parts += (_vi(len(hv)), hv)
            body = join(parts)
        size = len(body)
        out += table[size + 1] if size < limit else encode_varint(size)
        out += body
    return out, max_ts


def _header_bytes(headers: Sequence[Header]) -> tuple[tuple[bytes, bytes | None], ...]:
    return tuple((hk.encode("utf-8") if isinstance(hk, str) else hk, hv) for hk, hv in headers)


def encode_record(
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[Header] = (),
) -> bytes:
    """One record, length prefix included."""
    block, _ = encode_records([(key, value, _header_bytes(headers), timestamp_delta)], 0, offset_delta)
    return bytes(block)


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
    """Encode one batch from (key, value, headers, timestamp_ms) tuples; offsets are deltas 0..n-1.
    The smallest timestamp is the base."""
    items = [(key, value, _header_bytes(headers) if headers else (), ts) for key, value, headers, ts in records]
    if not items:
        raise ValueError("a batch needs at least one record")
    base_ts = min(r[3] for r in items)
    block, max_ts = encode_records(items, base_ts)
    body = compress(compression, bytes(block)) if compression != CODEC_NONE else block
    attributes = compression & COMPRESSION_MASK
    if log_append_time:
        attributes |= TIMESTAMP_TYPE_MASK
    if transactional:
        attributes |= TRANSACTIONAL_MASK
    if control:
        attributes |= CONTROL_MASK
    return bytes(frame_batch(
        body, attributes=attributes, records_count=len(items), last_offset_delta=len(items) - 1,
        base_timestamp=base_ts, max_timestamp=max_ts, base_offset=base_offset,
        partition_leader_epoch=partition_leader_epoch, producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence,
    ))


def control_marker_type(key: bytes | None) -> str:
    """A control record's key: version i16 0 | type i16 (0 abort, 1 commit)."""
    if key is not None and len(key) >= 4 and key[:2] == b"\x00\x00":
        kind = int.from_bytes(key[2:4], "big", signed=True)
        if kind in (0, 1):
            return ("abort", "commit")[kind]
    return "unknown"
