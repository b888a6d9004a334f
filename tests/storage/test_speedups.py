"""The compiled produce check (storage/_speedups.c) against the pure-Python walk it replaces.

check_records with the C walk and with the Python walk must agree on every input: both accept, or
both raise CorruptBatchError with the same message. Inputs: random valid batches (every codec for
the accept case), then random byte changes, cuts and insertions in the records block, and wrong
record counts.

Skipped when the extension is not built (RINGLOG_REQUIRE_TOOLS=1 makes that a failure).
"""
from __future__ import annotations

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import records
from storage.batch import CODEC_GZIP, CODEC_LZ4, CODEC_NONE, CODEC_SNAPPY, CODEC_ZSTD, HEADER_SIZE, parse_header
from storage.errors import CorruptBatchError
from tests.conftest import require_extension

_speedups = require_extension("storage._speedups")

_MANY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_blob = st.one_of(st.none(), st.binary(max_size=300))
_record = st.tuples(_blob, _blob, st.lists(st.tuples(st.text(max_size=5), _blob), max_size=2),
                    st.integers(min_value=0, max_value=2**40))
_records = st.lists(_record, min_size=1, max_size=20)


def _outcome(batch: bytes, header, use_c: bool) -> str:
    saved = records._speedups
    records._speedups = _speedups if use_c else None
    try:
        records.check_records(batch, header)
    except CorruptBatchError as exc:
        return f"error: {exc}"
    finally:
        records._speedups = saved
    return "ok"


def _same(batch: bytes, header) -> str:
    c = _outcome(batch, header, True)
    py = _outcome(batch, header, False)
    assert c == py
    return c


def _header(batch: bytes, count_change: int = 0):
    """The batch's header, its length fitted to the bytes (mutations change it) and the count moved."""
    h = parse_header(batch[:HEADER_SIZE])
    return attrs.evolve(h, batch_length=h.batch_length + len(batch) - h.size,
                        records_count=h.records_count + count_change)


@_MANY
@given(_records, st.sampled_from((CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD)))
def test_valid_batches_pass_both_walks(rows, codec):
    batch = records.build_batch(rows, compression=codec)
    assert _same(batch, _header(batch)) == "ok"


_mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
)


@_MANY
@given(_records, st.lists(_mutation, max_size=4), st.integers(min_value=-3, max_value=3))
def test_damaged_batches_fail_identically(rows, mutations, count_change):
    batch = bytearray(records.build_batch(rows))
    for kind, at, byte in mutations:
        body_len = len(batch) - HEADER_SIZE
        if body_len == 0:
            break
        i = HEADER_SIZE + at % body_len
        if kind == "set":
            batch[i] = byte
        elif kind == "cut":
            del batch[i:]
        else:
            batch.insert(i, byte)
    _same(bytes(batch), _header(bytes(batch), count_change))


def test_each_error_is_the_python_one():
    def with_body(body: bytes, count: int):
        batch = records.build_batch([(None, b"v", (), 0)])[:HEADER_SIZE] + body
        header = _header(batch)
        return batch, attrs.evolve(header, records_count=count)

    good = records.encode_record(0, 0, None, b"value")
    cases = {
        "record length runs past the end of the batch": (good[:-1], 1),
        "record length varint longer than 5 bytes": (b"\xff" * 6, 1),
        "record length 2 is impossible": (b"\x04" + b"\x00" * 10, 1),
        f"records of the batch end at byte {len(good)} of its {len(good) + 3}-byte records block":
            (good + b"\x00\x00\x00", 1),
    }
    for message, (body, count) in cases.items():
        batch, header = with_body(body, count)
        assert _same(batch, header) == f"error: {message}"
    # a count that is too high runs off the end; zero records in a non-empty block is padding
    batch, header = with_body(good, 2)
    assert "runs past" in _same(batch, header)
    batch, header = with_body(good, 0)
    assert "end at byte 0" in _same(batch, header)


def test_the_walk_reads_any_buffer_without_copying():
    good = records.encode_record(0, 0, b"k", b"value") * 3
    for buf in (good, bytearray(good), memoryview(good)):
        assert _speedups.walk_records(buf, 3) == len(good)
    assert _speedups.walk_records(good, 4) is None  # damage: left to the Python walk
