"""The compiled record loops (storage/_speedups.c) against the Python ones of storage/records.py.

One C module serves the broker and the client, so each loop is checked here, once:

- walk_records (the broker's produce check): check_records with the C walk and with the Python
  walk agree on every input -- both accept, or both raise CorruptBatchError with the same message.
  Inputs: random valid batches (every codec), random byte changes, cuts and insertions, wrong
  record counts.
- decode_records: for random record blocks (null/empty keys and values, headers, varints of every
  width up to 10 bytes, including values Python reads past 64 bits, negative deltas), random
  corruptions and truncations of them, and random bytes, the C and Python decoders give the same
  records and end position, or CorruptBatchError with the same message; for the storage engine's
  Record and for a class with per-batch slots such as the consumer's.
- encode_records: the same bytes and max timestamp for random records, and None (the Python
  fallback) for input the C encoder does not take.

Skipped when the extension is not built (RINGLOG_REQUIRE_TOOLS=1, set in CI, makes that a failure).
"""
from __future__ import annotations

import os

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringlog.storage import records
from ringlog.storage.batch import CODEC_GZIP, CODEC_LZ4, CODEC_NONE, CODEC_SNAPPY, CODEC_ZSTD, HEADER_SIZE, frame_batch, parse_header
from ringlog.storage.errors import CorruptBatchError
from ringlog.storage.records import RecordShape
from tests.conftest import require_extension

_speedups = require_extension("ringlog.storage._speedups")

_MANY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_MORE = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_format_module_uses_the_extension():
    # the one module the broker, the storage engine and the client all go through; the loops
    # below are tested either way, RINGLOG_NO_SPEEDUPS=1 only turns the module's use of them off
    if os.environ.get("RINGLOG_NO_SPEEDUPS") == "1":
        assert records._speedups is None and records._RECORD.compiled is None
    else:
        assert records._speedups is _speedups and records._RECORD.compiled is not None


# --- walk_records -----------------------------------------------------------------------------

_blob = st.one_of(st.none(), st.binary(max_size=300))
_record = st.tuples(_blob, _blob, st.lists(st.tuples(st.text(max_size=5), _blob), max_size=2),
                    st.integers(min_value=0, max_value=2**40))
_records = st.lists(_record, min_size=1, max_size=20)


def _check_outcome(batch: bytes, header, use_c: bool) -> str:
    saved = records._speedups
    records._speedups = _speedups if use_c else None
    try:
        records.check_records(batch, header)
    except CorruptBatchError as exc:
        return f"error: {exc}"
    finally:
        records._speedups = saved
    return "ok"


def _same_check(batch: bytes, header) -> str:
    c = _check_outcome(batch, header, True)
    py = _check_outcome(batch, header, False)
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
    assert _same_check(batch, _header(batch)) == "ok"


_mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.just(0)),
)


def _mutate(body: bytearray, mutations) -> bytes:
    for kind, at, byte in mutations:
        at = at % (len(body) + 1)
        if kind == "set" and at < len(body):
            body[at] = byte
        elif kind == "cut":
            del body[at:]
        elif kind == "insert":
            body[at:at] = bytes([byte])
        elif kind == "delete" and at < len(body):
            del body[at]
    return bytes(body)


@_MANY
@given(_records, st.lists(_mutation, max_size=4), st.integers(min_value=-3, max_value=3))
def test_damaged_batches_fail_both_walks_identically(rows, mutations, count_change):
    batch = records.build_batch(rows)
    batch = batch[:HEADER_SIZE] + _mutate(bytearray(batch[HEADER_SIZE:]), mutations)
    _same_check(batch, _header(batch, count_change))


def test_each_walk_error_is_the_python_one():
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
        assert _same_check(batch, header) == f"error: {message}"
    # a count that is too high runs off the end; zero records in a non-empty block is padding
    batch, header = with_body(good, 2)
    assert "runs past" in _same_check(batch, header)
    batch, header = with_body(good, 0)
    assert "end at byte 0" in _same_check(batch, header)


def test_the_walk_reads_any_buffer_without_copying():
    good = records.encode_record(0, 0, b"k", b"value") * 3
    for buf in (good, bytearray(good), memoryview(good)):
        assert _speedups.walk_records(buf, 3) == len(good)
    assert _speedups.walk_records(good, 4) is None  # damage: left to the Python walk


# --- decode_records ---------------------------------------------------------------------------
# A raw record writer that can put any integer (even past 64 bits) in any varint field: the
# format's own encoder cannot write the damage and the extremes these tests need.


def _uvarint(u: int) -> bytes:
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def _zz(v: int) -> int:
    return (v << 1) if v >= 0 else ((-v) << 1) - 1


def _raw_blob(b: bytes | None) -> bytes:
    return b"\x01" if b is None else _uvarint(_zz(len(b))) + b


def _raw_record(ts_delta: int, off_delta: int, key, value, headers) -> bytes:
    body = b"\x00" + _uvarint(_zz(ts_delta)) + _uvarint(_zz(off_delta)) + _raw_blob(key) + _raw_blob(value)
    body += _uvarint(_zz(len(headers)))
    for hk, hv in headers:
        body += _raw_blob(hk) + _raw_blob(hv)
    return _uvarint(_zz(len(body))) + body


class BatchRecord:
    """A mutable record class with per-batch slots, shaped like the consumer's."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")


_SHAPES = {
    "storage": (records._RECORD, ()),
    "batch-slots": (RecordShape(BatchRecord, ("topic", "partition")), ("topic", 3)),
}
# The compiled layouts, made here rather than taken from the shapes: those have none when
# RINGLOG_NO_SPEEDUPS=1 turns the module's use of the extension off, and these tests test it anyway.
_LAYOUTS = {name: _speedups.record_shape(shape.cls, records.RECORD_FIELDS + shape.batch_slots)
            for name, (shape, _) in _SHAPES.items()}


def _fields(shape_name: str, r) -> tuple:
    out = (r.offset, r.timestamp, r.key, r.value, r.headers)
    assert r.key is None or type(r.key) is bytes
    assert r.value is None or type(r.value) is bytes
    assert type(r.headers) is tuple and type(r.offset) is int and type(r.timestamp) is int
    if shape_name == "batch-slots":
        assert type(r) is BatchRecord
        out += (r.topic, r.partition)
    else:
        assert type(r) is records.Record
    return out


def _decode_outcome(use_c: bool, shape_name: str, body, count, meta, start=0):
    shape, values = _SHAPES[shape_name]
    base_offset, base_ts, max_ts, log_append = meta
    try:
        if use_c:
            got, end = _speedups.decode_records(body, count, base_offset, base_ts, max_ts, log_append,
                                                _LAYOUTS[shape_name], values, start)
        else:
            got, end = records._decode_records_py(bytes(body), count, base_offset, base_ts, max_ts,
                                                  log_append, shape.maker(values), start)
    except CorruptBatchError as exc:
        return ("error", type(exc), str(exc))
    return [_fields(shape_name, r) for r in got], end


def _same_decode(body: bytes, count: int, meta, start: int = 0):
    """The outcome, after checking that C and Python agree for every shape (and on a view)."""
    want = None
    for shape_name in _SHAPES:
        py = _decode_outcome(False, shape_name, body, count, meta, start)
        assert _decode_outcome(True, shape_name, body, count, meta, start) == py
        # the C decoder reads any buffer, not only bytes: the consumer hands it a memoryview
        assert _decode_outcome(True, shape_name, memoryview(bytearray(body)), count, meta, start) == py
        core = py if py[0] == "error" else ([f[:5] for f in py[0]], py[1])
        if want is None:
            want = core
        assert core == want  # every shape gets the same records
    if want[0] != "error":
        # decode_block, what callers use, takes the compiled loop and gives the same
        got, end = records.decode_block(memoryview(body), count, *meta, records._RECORD, (), start)
        assert ([_fields("storage", r) for r in got], end) == want
    return want


_bytes = st.one_of(st.none(), st.binary(max_size=40),
                   st.integers(min_value=100, max_value=3000).map(lambda n: bytes([n % 251]) * n))
# deltas of every varint width; wide ones (beyond int64, up to what 10 bytes hold) too
_delta = st.one_of(
    st.integers(min_value=-200, max_value=200),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.integers(min_value=-(1 << 69), max_value=(1 << 69) - 1),
)
_int64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
_raw_header = st.tuples(st.one_of(st.text(max_size=5).map(str.encode), st.binary(max_size=4)),
                        st.one_of(st.none(), st.binary(max_size=8)))
_rows = st.lists(st.tuples(_delta, _delta, _bytes, _bytes, st.lists(_raw_header, max_size=3)), min_size=0, max_size=8)
_meta = st.tuples(_int64, _int64, _int64, st.booleans())


@_MORE
@given(_rows, _meta)
def test_valid_blocks_decode_identically(rows, meta):
    body = b"".join(_raw_record(*row) for row in rows)
    _same_decode(body, len(rows), meta)


def test_a_valid_block_decodes_to_its_records():
    body = _raw_record(-5, 0, None, b"v", []) + _raw_record(7, 1, b"", None, [(b"h", None), (b"k", b"x")])
    got, end = _same_decode(body, 2, (100, 1000, 2000, False))
    assert end == len(body)
    assert got == [
        (100, 995, None, b"v", ()),
        (101, 1007, b"", None, (("h", None), ("k", b"x"))),
    ]
    got, _ = _same_decode(body, 2, (100, 1000, 2000, True))
    assert [r[1] for r in got] == [2000, 2000]  # log-append time: every record has max_ts


def test_decoding_from_a_start_position_ends_where_the_records_do():
    one = _raw_record(0, 0, b"k", b"v", [])
    two = _raw_record(1, 1, None, b"w", [])
    body = one + two + b"\x00\x00"  # two bytes the caller judges (the storage engine refuses them)
    got, end = _same_decode(body, 1, (0, 0, 0, False), start=len(one))
    assert got == [(1, 1, None, b"w", ())] and end == len(one) + len(two)
    with pytest.raises(ValueError):
        _speedups.decode_records(body, 1, 0, 0, 0, False, _LAYOUTS["storage"], (), len(body) + 1)
    padded = frame_batch(one + b"\x00\x00", attributes=0, records_count=1, last_offset_delta=0,
                         base_timestamp=0, max_timestamp=0)
    with pytest.raises(CorruptBatchError, match="2 bytes after the last record"):
        records.decode_records(padded)
    assert records.decode_records(frame_batch(one, attributes=0, records_count=1, last_offset_delta=0,
                                              base_timestamp=0, max_timestamp=0))[0].key == b"k"


@_MORE
@given(_rows, _meta, st.lists(_mutation, min_size=1, max_size=4), st.integers(min_value=-2, max_value=2))
def test_damaged_blocks_fail_identically(rows, meta, mutations, count_change):
    body = _mutate(bytearray(b"".join(_raw_record(*row) for row in rows)), mutations)
    _same_decode(body, len(rows) + count_change, meta)


@_MORE
@given(st.binary(max_size=60), st.integers(min_value=-1, max_value=6), _meta)
def test_random_bytes_fail_or_decode_identically(body, count, meta):
    _same_decode(body, count, meta)


@pytest.mark.parametrize("body, message", [
    (b"\x01", "negative record length"),
    (b"\x80", "record data truncated"),
    (b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
    (_raw_record(0, 0, None, b"v", [])[:-1], "record data truncated"),
    (_uvarint(40) + b"\x00\x00\x00\x01\x01\x00", "record length does not match its fields"),
    (b"\x0c\x00\x00\x00\x01\x03\x00", "negative value length"),
    (b"\x0c\x00\x00\x00\x05\x01\x00", "negative length -3"),
    (b"\x0c\x00\x00\x00\x01\x01\x01", "negative header count"),
    (b"\x10\x00\x00\x00\x01\x01\x02\x01\x01", "null header key"),
    (b"\x12\x00\x00\x00\x01\x01\x02\x02\xff\x01", "header key is not UTF-8"),
    # a last header value reaching past the block (its record length agreeing): truncated
    (b"\x12\x00\x00\x00\x01\x01\x02\x00\x08", "record data truncated"),
    # a key length past 64 bits: Python's int, not a wrapped-around one, in the message
    (b"\x14\x00\x00\x00" + b"\xff" * 9 + b"\x7f", "negative length -590295810358705651712"),
])
def test_each_decode_error_has_the_python_message(body, message):
    assert _same_decode(body, 1, (0, 0, 0, False)) == ("error", CorruptBatchError, message)


def test_wide_deltas_are_python_ints_not_wrapped():
    body = _raw_record(1 << 65, -(1 << 68), None, None, [])
    got, _ = _same_decode(body, 1, ((1 << 63) - 1, -(1 << 63), 0, False))
    assert got[0][:2] == ((1 << 63) - 1 - (1 << 68), -(1 << 63) + (1 << 65))
    # int64 sums that overflow become Python ints too
    got, _ = _same_decode(_raw_record(10, 10, None, None, []), 1, ((1 << 63) - 1, (1 << 63) - 5, 0, False))
    assert got[0][:2] == ((1 << 63) + 9, (1 << 63) + 5)


def test_a_huge_count_is_not_preallocated():
    with pytest.raises(CorruptBatchError, match="truncated"):
        _speedups.decode_records(_raw_record(0, 0, None, b"", []), (1 << 62), 0, 0, 0, False,
                                 _LAYOUTS["storage"], (), 0)


def test_shapes_refuse_classes_without_the_slots():
    class NotARecord:
        pass

    class PropertyRecord(BatchRecord):
        __slots__ = ()
        key = property(lambda self: None)  # a name that is no longer a plain slot

    for cls in (NotARecord, PropertyRecord):
        with pytest.raises(TypeError):
            RecordShape(cls)
        with pytest.raises((TypeError, AttributeError)):
            _speedups.record_shape(cls, records.RECORD_FIELDS)
    with pytest.raises(TypeError):
        _speedups.record_shape(BatchRecord, ("offset", "timestamp"))  # fewer than the record fields
    layout, values = _LAYOUTS["batch-slots"], _SHAPES["batch-slots"][1]
    with pytest.raises(TypeError, match="batch values"):
        _speedups.decode_records(b"", 0, 0, 0, 0, False, layout, values[:1], 0)
    assert _speedups.decode_records(b"", 0, 0, 0, 0, False, layout, values, 0) == ([], 0)


# --- encode_records ---------------------------------------------------------------------------

_enc_headers = st.one_of(
    st.lists(st.tuples(st.binary(max_size=6), st.one_of(st.none(), st.binary(max_size=8))), max_size=3).map(tuple),
    st.just([]),
)
_ts = st.one_of(st.integers(min_value=-300_000, max_value=300_000).map(lambda d: 1_700_000_000_000 + d), _int64)
_enc_rows = st.lists(st.tuples(_bytes, _bytes, _enc_headers, _ts), min_size=1, max_size=20)
_first = st.one_of(st.just(0), st.integers(min_value=-5, max_value=20_000))


@_MORE
@given(_enc_rows, st.booleans(), _first)
def test_encoding_is_byte_identical(rows, first_as_base, first):
    base_ts = rows[0][3] if first_as_base else min(r[3] for r in rows)
    want = records._encode_records_py(rows, base_ts, first)
    got = _speedups.encode_records(rows, base_ts, first)
    if any(not -(1 << 63) <= ts - base_ts < (1 << 63) for *_, ts in rows):
        assert got is None  # deltas past int64: the Python loop's own masking applies
        return
    assert got is not None and type(got[0]) is bytearray
    assert got == want
    assert records.encode_records(rows, base_ts, first) == want
    # and the block decodes back to the rows (offset deltas from `first`)
    if all(ts - base_ts < (1 << 63) for *_, ts in rows) and all(hk.isascii() for _, _, h, _ in rows for hk, _ in h):
        back, end = records.decode_block(bytes(got[0]), len(rows), 0, base_ts, 0, False, records._RECORD)
        assert end == len(got[0])
        assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in back] == [
            (first + i, ts, k, v, tuple((hk.decode(), hv) for hk, hv in h)) for i, (k, v, h, ts) in enumerate(rows)]


@pytest.mark.parametrize("rows, base_ts", [
    ([(None, bytearray(b"x"), (), 5)], 5),           # not bytes: Python joins it
    ([(None, b"x", ((b"k", b"v", b"extra"),), 5)], 5),
    ([(None, b"x", (), True)], 1),                   # bool, not int
    ([(None, b"x", (), 1 << 64)], 0),                # past int64
    ([[None, b"x", (), 5]], 5),                      # a list, not a tuple
    ((((None, b"x", (), 5)),), 5),                   # a tuple of records, not a list
])
def test_the_encoder_declines_what_it_does_not_take(rows, base_ts):
    assert _speedups.encode_records(rows, base_ts) is None


def test_an_empty_list_encodes_to_nothing():
    assert _speedups.encode_records([], 7) == (bytearray(), 7)
    assert records._encode_records_py([], 7) == (bytearray(), 7)
