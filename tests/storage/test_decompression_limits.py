"""Bounded decompression (storage.records): a records block inflates to at most the limit.

Exactly at the limit decodes, one byte over is refused with DecompressedTooLargeError, for every
codec and every shape a block can take (stated or unstated content sizes, several frames or
members, raw or xerial snappy), so both the header checks and the counting while inflating are
pinned to the byte. Damage stays CorruptBatchError, and a bomb is refused without the process's
peak memory growing by more than the limit: the inflated size is never allocated.
"""
from __future__ import annotations

import os
import struct

import cramjam
import lz4.frame
import pytest
import zstandard

from ringlog.client.bench.procstat import hwm_bytes, reset_peak
from ringlog.storage.batch import CODEC_GZIP, CODEC_LZ4, CODEC_SNAPPY, CODEC_ZSTD, parse_header
from ringlog.storage.errors import CorruptBatchError, DecompressedTooLargeError
from ringlog.storage.records import (
    DEFAULT_MAX_DECOMPRESSED,
    _XERIAL_MAGIC,
    build_batch,
    check_records,
    compress,
    decode_records,
    decompress,
    encode_record,
    inflate_bound,
)
from tests.bombs import BOMB_NAMES, MiB, batch, codec_bombs

ITEMS = [(b"key-%d" % i, b"value %d " % i * (i % 50 + 1), ()) for i in range(300)]
BODY = b"".join(encode_record(i, i, k, v, h) for i, (k, v, h) in enumerate(ITEMS))
HALF = len(BODY) // 2 + 7  # frames and members may end anywhere, not only between records


def _zstd_streamed(data: bytes) -> bytes:
    """A zstd frame whose header does not state its content size (zstd-jni's streams)."""
    c = zstandard.ZstdCompressor().compressobj()
    return c.compress(data) + c.flush()


_SKIPPABLE = struct.pack("<II", 0x184D2A53, 5) + b"12345"

BLOCKS = {
    "gzip": (CODEC_GZIP, lambda b: compress(CODEC_GZIP, b)),
    "gzip-two-members": (CODEC_GZIP, lambda b: compress(CODEC_GZIP, b[:HALF]) + compress(CODEC_GZIP, b[HALF:])),
    "snappy-xerial": (CODEC_SNAPPY, lambda b: compress(CODEC_SNAPPY, b)),
    "snappy-raw": (CODEC_SNAPPY, lambda b: bytes(cramjam.snappy.compress_raw(b))),
    "lz4": (CODEC_LZ4, lambda b: compress(CODEC_LZ4, b)),
    "lz4-two-frames-sized": (CODEC_LZ4, lambda b: lz4.frame.compress(b[:HALF], store_size=True)
                             + lz4.frame.compress(b[HALF:], store_size=True)),
    "zstd": (CODEC_ZSTD, lambda b: compress(CODEC_ZSTD, b)),
    "zstd-streamed-frames": (CODEC_ZSTD, lambda b: _zstd_streamed(b[:HALF]) + _SKIPPABLE + _zstd_streamed(b[HALF:])),
}


@pytest.mark.parametrize("shape", BLOCKS)
def test_a_block_exactly_at_the_limit_decodes_one_byte_over_is_refused(shape):
    codec, make = BLOCKS[shape]
    raw = batch(codec, make(BODY), records=len(ITEMS))
    header = parse_header(raw)
    limit = len(BODY)
    assert decompress(codec, raw[61:], limit) == BODY
    check_records(raw, header, max_decompressed=limit)
    check_records(raw, header, full=True, max_decompressed=limit)
    assert [(r.key, r.value) for r in decode_records(raw, header, max_decompressed=limit)] == [
        (k, v) for k, v, _ in ITEMS]
    for refuse in (
        lambda: decompress(codec, raw[61:], limit - 1),
        lambda: check_records(raw, header, max_decompressed=limit - 1),
        lambda: check_records(raw, header, full=True, max_decompressed=limit - 1),
        lambda: decode_records(raw, header, max_decompressed=limit - 1),
    ):
        with pytest.raises(DecompressedTooLargeError, match=f"past the limit of {limit - 1} bytes"):
            refuse()


def test_the_default_limit_applies_when_none_is_given():
    big = b"\x00" * (DEFAULT_MAX_DECOMPRESSED + 1)
    for codec in (CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD):
        block = compress(codec, big)
        with pytest.raises(DecompressedTooLargeError):
            decompress(codec, block)
        assert len(decompress(codec, block, len(big))) == len(big)


@pytest.mark.parametrize("shape", BLOCKS)
def test_damage_is_corrupt_not_too_large(shape):
    codec, make = BLOCKS[shape]
    block = make(BODY)
    damaged = {
        "cut": block[: len(block) - 9],
        "cut in half": block[: len(block) // 2],
        "trailing garbage": block + b"garbage!",
        "empty": b"",
    }
    for name, bad in damaged.items():
        # A limit no trailer can pass: the last four bytes of a damaged gzip block are taken for
        # the size its trailer states, and below that it is refused from them (next test).
        with pytest.raises(CorruptBatchError) as info:
            decompress(codec, bad, 2**32)
        assert not isinstance(info.value, DecompressedTooLargeError), (shape, name, info.value)


def test_a_damaged_gzip_block_may_be_refused_from_what_its_last_bytes_state():
    cut = compress(CODEC_GZIP, BODY)[:-9]
    stated = int.from_bytes(cut[-4:], "little")
    assert stated > 10 * len(BODY)
    with pytest.raises(DecompressedTooLargeError, match=f"states {stated} inflated bytes"):
        decompress(CODEC_GZIP, cut, 10 * len(BODY))


def test_a_cut_zstd_stream_is_corrupt_though_the_decoder_would_stop_quietly():
    # zstandard's stream reader stops at the end of its input without an error; only the frame
    # walk sees that the last block is missing.
    cut = _zstd_streamed(BODY)[:-20]
    assert len(zstandard.ZstdDecompressor().stream_reader(cut).read()) < len(BODY)
    with pytest.raises(CorruptBatchError, match="truncated zstd"):
        decompress(CODEC_ZSTD, cut, 10 * len(BODY))


def test_xerial_detection_needs_the_magic():
    assert compress(CODEC_SNAPPY, BODY)[:8] == _XERIAL_MAGIC


# Refused from what the headers state: no inflating at all.
STATED = {"zstd-rle", "zstd-content-size", "gzip", "snappy-xerial", "snappy-raw-lying-header"}


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("name", BOMB_NAMES)
def test_a_bomb_is_refused_without_allocating_what_it_inflates_to(name):
    raw = codec_bombs()[name]
    header = parse_header(raw)
    limit = 8 * MiB
    reset_peak(os.getpid())
    before = hwm_bytes(os.getpid())
    with pytest.raises(DecompressedTooLargeError):
        check_records(raw, header, max_decompressed=limit)
    growth_mb = (hwm_bytes(os.getpid()) - before) / 2**20
    print(f"{name}: peak RSS +{growth_mb:.1f} MB")
    # The bombs inflate to 16 MiB (snappy) up to 2 GiB. The stated ones cost nothing; the others
    # at most the limit, one chunk past it and zstd's window (2 MiB for these frames).
    assert growth_mb < (2 if name in STATED else limit / MiB + 6)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_the_full_check_holds_one_record_at_a_time():
    # 200 000 empty records zstd-pack into 110 KiB; as Record objects they take some 20 MB, and
    # a limit-sized block of them (9 million) gigabytes: record.validation=full walks, not lists.
    raw = build_batch([(None, None, (), 0)] * 200_000, compression=CODEC_ZSTD)
    header = parse_header(raw)
    reset_peak(os.getpid())
    before = hwm_bytes(os.getpid())
    check_records(raw, header, full=True)
    growth_mb = (hwm_bytes(os.getpid()) - before) / 2**20
    assert growth_mb < 5, growth_mb


@pytest.mark.parametrize("shape", BLOCKS)
def test_inflate_bound_is_an_upper_bound_from_the_headers(shape):
    codec, make = BLOCKS[shape]
    block = make(BODY)
    bound = inflate_bound(codec, block, 2**32)
    assert len(BODY) <= bound < 2**32
    # stated sizes (zstd content size, snappy lengths) and block counts make it close
    if shape not in ("gzip", "gzip-two-members"):  # deflate only bounds by its 1032:1 ratio
        assert bound <= len(BODY) + 4 * 128 * 1024
    assert inflate_bound(codec, block, len(BODY) // 2) <= len(BODY) // 2 + 1


@pytest.mark.parametrize("name", BOMB_NAMES)
def test_inflate_bound_of_a_bomb_is_past_the_limit_unless_its_headers_refuse_it(name):
    raw = codec_bombs()[name]
    header = parse_header(raw)
    bound = inflate_bound(header.compression, memoryview(raw)[61:], 8 * MiB)
    if bound == 0:  # refused by the same header checks decompress starts with: nothing to inflate
        assert name in STATED
        with pytest.raises(DecompressedTooLargeError, match="states"):
            check_records(raw, header, max_decompressed=8 * MiB)
    else:
        assert bound == 8 * MiB + 1
