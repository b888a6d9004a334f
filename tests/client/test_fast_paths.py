"""The per-record fast paths of the client: batch encoding and decoding against the storage layer's
reference codec (every varint width, nulls, headers, log-append time), the inlined keyless send
path (sticky batches, buffer bound, cancellation in a loop that never fills the buffer), and mixed
getone/getmany reads keeping positions exact."""
from __future__ import annotations

import struct

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ringlog.client import NewTopic, open_admin, open_consumer, open_producer
from ringlog.client.consumer import decode_batch_records
from ringlog.client.errors import CorruptRecord
from ringlog.client.producer import ProducerBatch
from ringlog.storage.batch import CODEC_NONE, CODEC_ZSTD, HEADER, TIMESTAMP_TYPE_MASK
from ringlog.storage.records import build_batch, decode_records, encode_records

from .helpers import topic_name

# sizes with one-, two- and three-byte length varints (big ones drawn as a size, not as bytes)
_blob = st.one_of(st.none(), st.binary(max_size=70),
                  st.integers(min_value=60, max_value=20000).map(lambda n: bytes([n % 251]) * n))
_headers = st.lists(st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=10))), max_size=3)
# timestamps around a base: deltas of 1, 2 and 3+ varint bytes, negative ones too
_ts = st.integers(min_value=-300_000, max_value=300_000).map(lambda d: 1_700_000_000_000 + d)
_records = st.lists(st.tuples(_blob, _blob, _headers, _ts), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(_records)
def test_batch_encoding_is_byte_identical_to_the_reference(rows):
    # storage.records.build_batch takes the smallest timestamp as the base; the producer takes the
    # first record's (as Kafka's does). Put the smallest first so both encode the same bytes.
    rows = sorted(rows, key=lambda r: r[3])
    b = ProducerBatch("t", 0, 1 << 30, 0.0)
    for key, value, headers, ts in rows:
        assert b.try_append(key, value, headers, ts) >= 0
    b.seal(CODEC_NONE, 7, 3, 11)
    ref = build_batch(rows, producer_id=7, producer_epoch=3, base_sequence=11)
    assert bytes(b.raw) == ref
    assert b.size == len(ref) and b.count == len(rows)


def test_many_records_use_wide_offset_deltas():
    # offset deltas past the varint table (16383) take the slow encoder
    rows = [(None, b"%d" % i, (), 1000) for i in range(17000)]
    body, max_ts = encode_records(rows, 1000)
    assert max_ts == 1000
    assert bytes(body) == build_batch(rows)[61:]


@settings(max_examples=60, deadline=None)
@given(_records, st.booleans(), st.booleans())
def test_batch_decoding_matches_the_reference(rows, log_append, compressed):
    raw = build_batch(rows, base_offset=1000, compression=CODEC_ZSTD if compressed else CODEC_NONE,
                      log_append_time=log_append)
    header = HEADER.unpack_from(raw, 0)
    got = decode_batch_records("t", 4, memoryview(raw), header)
    want = decode_records(raw)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in got] == [
        (r.offset, r.timestamp, r.key, r.value, r.headers) for r in want]
    assert all(r.topic == "t" and r.partition == 4 and r.timestamp_type == int(log_append) for r in got)
    if log_append:
        assert header[5] & TIMESTAMP_TYPE_MASK


def test_batch_decoding_rejects_damaged_records():
    raw = bytes(build_batch([(None, b"x" * 100, (), 5), (b"k", b"y" * 300, (), 6)]))
    header = HEADER.unpack_from(raw, 0)
    # record 0: length varint (2 bytes) at 61, attributes 63, ts delta 64, offset delta 65,
    # key length 66 (null), value length 67-68
    assert raw[61:63] == bytes([0xD6, 0x01]) and raw[66] == 0x01 and raw[67:69] == bytes([0xC8, 0x01])
    cases = {
        "length one longer": (61, 0xD8),
        "negative length": (61, 0xD7),
        "value one shorter": (67, 0xC6),
        "negative value length": (67, 0xC9),
        "key length instead of null": (66, 0x04),
        "negative key length": (66, 0x05),
    }
    for name, (at, byte) in cases.items():
        bad = bytearray(raw)
        bad[at] = byte
        with pytest.raises(CorruptRecord):
            decode_batch_records("t", 0, bad, header)
            pytest.fail(name)
    with pytest.raises(CorruptRecord):
        decode_batch_records("t", 0, raw[:-3], header)


async def test_keyless_sends_fill_sticky_batches_and_deliver_in_order(bootstrap):
    topic = topic_name("sticky")
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    async with open_producer(bootstrap, acks=1, enable_idempotence=False, batch_size=4000, linger_ms=50) as p:
        handles = [await p.send(topic, b"%05d" % i + b"." * 95) for i in range(3000)]
        metas = [await h for h in handles]
        assert p.buffered_bytes == 0
    # batches of ~4000 bytes moved the sticky partition along: every partition got records
    per_partition: dict[int, list[int]] = {}
    for m in metas:
        per_partition.setdefault(m.partition, []).append(m.offset)
    assert sorted(per_partition) == [0, 1, 2]
    for offsets in per_partition.values():
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    async with open_consumer(bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in range(3)])
        got: dict[int, list[bytes]] = {}
        n = 0
        with trio.fail_after(20):
            while n < 3000:
                for tp, recs in (await c.getmany(timeout_ms=500)).items():
                    got.setdefault(tp.partition, []).extend(r.value for r in recs)
                    n += len(recs)
    sent = {}
    for i, m in enumerate(metas):
        sent.setdefault(m.partition, []).append(b"%05d" % i + b"." * 95)
    assert got == sent


async def test_a_send_loop_with_room_to_spare_is_still_cancellable(bootstrap):
    topic = topic_name("loop")
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    sent = 0
    with trio.fail_after(20):
        async with open_producer(bootstrap, acks=1, buffer_memory=1 << 30, linger_ms=10_000) as p:
            with trio.move_on_after(0.3) as scope:
                while True:  # the buffer never fills: only send()'s periodic checkpoint ends this
                    await p.send(topic, b"x")
                    sent += 1
            assert scope.cancelled_caught and sent > 0
            # the sender ran during the loop too: the batches that filled up went out
            await p.flush()
            assert p.buffered_bytes == 0


async def test_buffer_bound_holds_on_the_fast_path(bootstrap):
    topic = topic_name("bound")
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    async with open_producer(bootstrap, acks=1, buffer_memory=200_000, linger_ms=10_000) as p:
        most = 0
        for _ in range(5000):
            await p.send(topic, b"y" * 100)
            most = max(most, p.buffered_bytes)
        assert most <= 200_000
        await p.flush()
        assert p.buffered_bytes == 0


async def test_getone_and_getmany_interleave_and_seek_inside_a_batch(bootstrap):
    topic = topic_name("mix")
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    async with open_producer(bootstrap, acks=1, linger_ms=20) as p:
        for i in range(2000):
            await p.send(topic, struct.pack(">I", i), partition=0)
    async with open_consumer(bootstrap, auto_offset_reset="earliest") as c:
        tp = (topic, 0)
        c.assign([tp])
        seen = []
        with trio.fail_after(20):
            while len(seen) < 2000:
                if len(seen) % 3 == 0:
                    seen.append((await c.getone()).offset)
                else:
                    for recs in (await c.getmany(timeout_ms=500, max_records=7)).values():
                        seen.extend(r.offset for r in recs)
        assert seen == list(range(2000))
        assert await c.position(tp) == 2000
        # seek into the middle of a batch: reading resumes exactly there
        c.seek(tp, 1234)
        with trio.fail_after(10):
            r = await c.getone()
            assert (r.offset, struct.unpack(">I", r.value)[0]) == (1234, 1234)
            more = await c.getmany(timeout_ms=500, max_records=10)
        assert [x.offset for x in more[next(iter(more))]] == list(range(1235, 1245))
        assert await c.position(tp) == 1245
