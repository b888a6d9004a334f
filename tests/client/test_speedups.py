"""The consumer's use of the compiled record decoder (storage/_speedups.c, the one the broker uses
too; its equivalence with the Python loops is tests/storage/test_speedups.py).

What is the consumer's own: its records come out of the compiled loop as ConsumerRecords left out
of the cycle collector, a store from Python tracks one again, and a fetched batch decodes to the
same records, or the same CorruptRecord, with the compiled loop and without it.

Skipped when the extension is not built (RINGLOG_REQUIRE_TOOLS=1, set in CI, makes that a failure).
"""
from __future__ import annotations

import gc
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringlog.client import consumer
from ringlog.client.errors import CorruptRecord
from ringlog.storage import records
from ringlog.storage.batch import CODEC_NONE, CODEC_SNAPPY, HEADER, HEADER_SIZE
from ringlog.storage.errors import CorruptBatchError
from tests.conftest import require_extension

_speedups = require_extension("ringlog.storage._speedups")


def _decode(raw, use_c: bool):
    saved = records._speedups
    records._speedups = _speedups if use_c else None
    try:
        got = consumer.decode_batch_records("t", 2, memoryview(raw), HEADER.unpack_from(raw, 0))
    except (CorruptRecord, CorruptBatchError) as exc:  # records damaged, or the compressed block
        return ("error", type(exc).__name__, str(exc))
    finally:
        records._speedups = saved
    return [(type(r), r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value,
             r.headers, r.leader_epoch) for r in got]


_blob = st.one_of(st.none(), st.binary(max_size=50))
_rows = st.lists(st.tuples(_blob, _blob, st.lists(st.tuples(st.text(max_size=4), _blob), max_size=2),
                           st.integers(min_value=0, max_value=2**41)), min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(_rows, st.sampled_from((CODEC_NONE, CODEC_SNAPPY)), st.booleans(),
       st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=3))
def test_batches_decode_the_same_with_and_without_the_compiled_loop(rows, codec, log_append, damage):
    raw = bytearray(records.build_batch(rows, compression=codec, base_offset=40, log_append_time=log_append,
                                        partition_leader_epoch=6))
    for at, byte in damage:  # records block only: the consumer checked the header already
        raw[HEADER_SIZE + at % (len(raw) - HEADER_SIZE)] = byte
    want = _decode(bytes(raw), use_c=False)
    assert _decode(bytes(raw), use_c=True) == want
    if not damage:
        assert [r[3] for r in want] == list(range(40, 40 + len(rows)))
        assert all(r[0] is consumer.ConsumerRecord and r[9] == 6 and r[5] == int(log_append) for r in want)


def test_records_leave_the_cycle_collector_until_python_stores_into_them():
    if records.track_record is None:
        pytest.skip("RINGLOG_NO_SPEEDUPS=1: the consumer runs the Python loop, whose records are tracked")
    raw = records.build_batch([(None, b"v", [("h", b"x")], 0), (b"k", b"w", (), 1)])
    recs = consumer.decode_batch_records("t", 0, memoryview(raw), HEADER.unpack_from(raw, 0))
    # decoded records and their header tuples hold only atoms: the collector need not walk them
    assert [gc.is_tracked(r) for r in recs] == [False, False]
    assert not gc.is_tracked(recs[0].headers) and not gc.is_tracked(recs[0].headers[0])
    # a store from Python (a deserializer, the application) tracks the record again, so a cycle
    # through it is collected
    class Value:
        pass

    r = recs.pop()
    r.value = Value()
    r.value.record = r
    assert gc.is_tracked(r)
    ref = weakref.ref(r.value)
    del r, recs
    gc.collect()
    assert ref() is None


def test_a_damaged_record_is_a_corrupt_record_with_the_decoders_message():
    raw = bytearray(records.build_batch([(None, b"x" * 10, (), 5)]))
    raw[HEADER_SIZE] = 0x01  # the record length: -1
    for use_c in (True, False):
        assert _decode(bytes(raw), use_c) == ("error", "CorruptRecord", "negative record length")
    with pytest.raises(CorruptRecord, match="negative record length"):
        consumer.decode_batch_records("t", 0, raw, HEADER.unpack_from(raw, 0))
