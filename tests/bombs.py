"""Compression bombs for the tests: record batches with a valid CRC whose records block is small
compressed and huge inflated, built without ever holding the inflated bytes.

Each holds one well-formed record whose value is `size` bytes of zeros (or of a repeated 8-byte
pattern, which zstd cannot store as RLE blocks and must really decompress). The compressors are
fed 1 MiB at a time, so building a GiB bomb costs a second of CPU and a few KiB of memory.
"""
from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Iterator

import cramjam
import lz4.frame
import zstandard

from ringlog.storage.batch import CODEC_GZIP, CODEC_LZ4, CODEC_SNAPPY, CODEC_ZSTD, HEADER_SIZE, compute_crc
from ringlog.storage.records import _XERIAL_HEADER, build_batch, encode_varint

MiB = 1024 * 1024
GiB = 1024 * MiB
ZEROS = bytes(MiB)
PATTERN = b"abcdefgh" * (MiB // 8)


def _record_head(size: int) -> bytes:
    """The bytes of a record (null key, `size`-byte value, no headers) up to its value."""
    rest = b"\x00" + encode_varint(0) + encode_varint(0) + encode_varint(-1) + encode_varint(size)
    return encode_varint(len(rest) + size + 1) + rest


_RECORD_TAIL = encode_varint(0)  # header count


def inflated_size(size: int) -> int:
    """Bytes of the records block of a bomb whose value is `size` bytes."""
    return len(_record_head(size)) + size + len(_RECORD_TAIL)


def _pieces(size: int, fill: bytes = ZEROS) -> Iterator[bytes]:
    yield _record_head(size)
    left = size
    while left:
        n = min(left, len(fill))
        yield fill if n == len(fill) else fill[:n]
        left -= n
    yield _RECORD_TAIL


def zstd_block(size: int, *, fill: bytes = ZEROS, content_size: bool = False) -> bytes:
    """One zstd frame; with `content_size` its header states the inflated size."""
    c = zstandard.ZstdCompressor().compressobj(size=inflated_size(size) if content_size else -1)
    return b"".join([*(c.compress(p) for p in _pieces(size, fill)), c.flush()])


def gzip_block(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join([*(c.compress(p) for p in _pieces(size)), c.flush()])


def lz4_block(size: int) -> bytes:
    """One lz4 frame that does not state its content size (as the Java client writes them)."""
    c = lz4.frame.LZ4FrameCompressor()
    return b"".join([c.begin(), *(c.compress(p) for p in _pieces(size)), c.flush()])


def xerial_block(size: int) -> bytes:
    """xerial-framed snappy: 32 KiB blocks, all but the first and last the same bytes."""
    head = _record_head(size)
    data_end = len(head) + size
    total = data_end + len(_RECORD_TAIL)

    def compressed(start: int, end: int) -> bytes:
        raw = bytearray(end - start)
        if start < len(head):
            raw[: len(head) - start] = head[start:]
        if end > data_end:
            raw[data_end - start :] = _RECORD_TAIL[: end - data_end]
        block = bytes(cramjam.snappy.compress_raw(bytes(raw)))
        return struct.pack(">i", len(block)) + block

    step = 32 * 1024
    middle = compressed(step, 2 * step)  # zeros only: reused for every inner block
    out = [_XERIAL_HEADER]
    for start in range(0, total, step):
        end = min(start + step, total)
        inner = start >= len(head) and end <= data_end and end - start == step
        out.append(middle if inner else compressed(start, end))
    return b"".join(out)


def raw_snappy_declaring(declared: int) -> bytes:
    """A raw snappy block whose header claims `declared` bytes over a few bytes of content."""
    n, out = declared, bytearray()
    while n >= 0x80:  # the header is an unsigned (not zig-zag) varint
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + bytes(cramjam.snappy.compress_raw(b"not what was declared"))[1:]


def batch(codec: int, block: bytes, records: int = 1) -> bytes:
    """A RecordBatch v2 of `records` records whose records block is `block`; CRC fixed up."""
    template = bytearray(build_batch([(None, b"x", (), 1_700_000_000_000)] * records, compression=codec))
    out = template[:HEADER_SIZE] + block
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">I", out, 17, compute_crc(out))
    return bytes(out)


BOMB_NAMES = ("zstd-rle", "zstd-content-size", "zstd-compressed-blocks", "gzip", "gzip-lying-trailer", "lz4",
              "snappy-xerial", "snappy-raw-lying-header")


@functools.cache  # shared by the test modules of one run: building them takes seconds
def codec_bombs() -> dict[str, bytes]:
    """One bomb for each way a codec can be made to inflate a lot, each under Kafka's default
    message.max.bytes (1 MiB) compressed; about 2.5 s to build on one core. gzip's ratio is at
    most about 1000 and lz4's 250, so theirs hold 256 and 200 MiB; snappy's (ratio 21 at most)
    holds 16 MiB, plus a raw block whose header lies."""
    gzip = gzip_block(256 * MiB)
    gzip_lying = bytearray(gzip)
    struct.pack_into("<I", gzip_lying, len(gzip_lying) - 4, 100)  # the trailer's ISIZE
    return {
        "zstd-rle": batch(CODEC_ZSTD, zstd_block(2 * GiB - 64)),
        "zstd-content-size": batch(CODEC_ZSTD, zstd_block(2 * GiB - 64, content_size=True)),
        "zstd-compressed-blocks": batch(CODEC_ZSTD, zstd_block(GiB, fill=PATTERN)),
        "gzip": batch(CODEC_GZIP, gzip),
        "gzip-lying-trailer": batch(CODEC_GZIP, bytes(gzip_lying)),
        "lz4": batch(CODEC_LZ4, lz4_block(200 * MiB)),
        "snappy-xerial": batch(CODEC_SNAPPY, xerial_block(16 * MiB)),
        "snappy-raw-lying-header": batch(CODEC_SNAPPY, raw_snappy_declaring(2 * GiB - 1)),
    }
