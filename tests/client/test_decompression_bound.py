"""The consumer bounds what a fetched batch may inflate to, with the broker's bounded decompress:
a broken or hostile broker's small batch holding gigabytes of records raises CorruptRecord
instead of making the client allocate them."""
from __future__ import annotations

import os

import pytest
import trio

from ringlog.client import NewTopic, open_admin, open_consumer, open_producer
from ringlog.client.consumer import decode_batch_records
from ringlog.client.errors import CorruptRecord
from ringlog.client.bench.procstat import hwm_bytes, reset_peak
from ringlog.storage.batch import CODEC_ZSTD, HEADER
from ringlog.storage.errors import DecompressedTooLargeError
from ringlog.storage.records import DEFAULT_MAX_DECOMPRESSED, build_batch
from tests.bombs import MiB, codec_bombs

from .helpers import topic_name

# 1.5 MB of records that zstd packs into a few KiB
RECORDS = [(b"k%d" % i, b"%06d" % i + b"." * 1500, (), 1_700_000_000_000 + i) for i in range(1000)]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_a_fetched_bomb_is_refused_without_allocating_it():
    raw = codec_bombs()["zstd-compressed-blocks"]  # 1 GiB, inflated chunk by chunk
    reset_peak(os.getpid())
    before = hwm_bytes(os.getpid())
    with pytest.raises(DecompressedTooLargeError, match=f"past the limit of {DEFAULT_MAX_DECOMPRESSED} bytes"):
        decode_batch_records("t", 0, memoryview(raw), HEADER.unpack_from(raw, 0))
    growth_mb = (hwm_bytes(os.getpid()) - before) / 2**20
    print(f"peak RSS +{growth_mb:.1f} MB refusing a 1 GiB batch (limit {DEFAULT_MAX_DECOMPRESSED >> 20} MiB)")
    assert growth_mb < DEFAULT_MAX_DECOMPRESSED / MiB + 16


def test_the_bound_is_the_callers():
    raw = build_batch(RECORDS, compression=CODEC_ZSTD)
    header = HEADER.unpack_from(raw, 0)
    assert len(decode_batch_records("t", 0, raw, header)) == len(RECORDS)
    with pytest.raises(DecompressedTooLargeError):
        decode_batch_records("t", 0, raw, header, max_decompressed=MiB)


async def test_consumer_max_decompressed_bytes(ringlog_bootstrap):
    topic = topic_name("inflate")
    async with open_admin(ringlog_bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    async with open_producer(ringlog_bootstrap, compression_type="zstd", batch_size=4 * MiB, linger_ms=50) as p:
        for key, value, _, _ in RECORDS:
            await p.send(topic, value, key=key, partition=0)
        await p.flush()

    async def consume(**config) -> int:
        n = 0
        async with open_consumer(ringlog_bootstrap, auto_offset_reset="earliest", **config) as c:
            c.assign([(topic, 0)])
            with trio.fail_after(20):
                async for _ in c:
                    n += 1
                    if n == len(RECORDS):
                        return n
        return n

    assert await consume() == len(RECORDS)
    # the producer's batches hold up to 1 MiB of records (its max request size), so well over this
    # (the consumer raises the plain error out of its own nurseries)
    with pytest.raises(CorruptRecord, match="past the limit of 65536 bytes"):
        await consume(max_decompressed_bytes=65536)
