"""The compiled record loops (client/_speedups.c) against the pure-Python ones they replace.

Decoding: for random record blocks (null/empty keys and values, headers, varints of every width up
to 10 bytes, including values Python reads past 64 bits, negative deltas) and for random
corruptions and truncations of them, the C and Python decoders give the same records, or the same
exception type with the same message. Encoding: the same bytes and max timestamp for random
records, and None (the Python fallback) for input the C encoder does not take.

Skipped when the extension is not built (RINGLOG_REQUIRE_TOOLS=1 makes that a failure).
"""
from __future__ import annotations

import gc
import weakref

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import consumer, producer
from client.errors import CorruptRecord
from storage.records import encode_record
from tests.conftest import require_extension

_speedups = require_extension("client._speedups")

_speedups.configure(consumer.ConsumerRecord, CorruptRecord)

_MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- a raw record writer that can put any integer (even past 64 bits) in any varint field -------


def _uvarint(u: int) -> bytes:
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def _zz(v: int) -> int:
    return (v << 1) if v >= 0 else ((-v) << 1) - 1


def _blob(b: bytes | None) -> bytes:
    return b"\x01" if b is None else _uvarint(_zz(len(b))) + b


def _record(ts_delta: int, off_delta: int, key, value, headers) -> bytes:
    body = b"\x00" + _uvarint(_zz(ts_delta)) + _uvarint(_zz(off_delta)) + _blob(key) + _blob(value)
    body += _uvarint(_zz(len(headers)))
    for hk, hv in headers:
        body += _blob(hk) + _blob(hv)
    return _uvarint(_zz(len(body))) + body


_bytes = st.one_of(st.none(), st.binary(max_size=40),
                   st.integers(min_value=100, max_value=3000).map(lambda n: bytes([n % 251]) * n))
# deltas of every varint width; wide ones (beyond int64, up to what 10 bytes hold) too
_delta = st.one_of(
    st.integers(min_value=-200, max_value=200),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.integers(min_value=-(1 << 69), max_value=(1 << 69) - 1),
)
_int64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
_header = st.tuples(st.one_of(st.text(max_size=5).map(str.encode), st.binary(max_size=4)),
                    st.one_of(st.none(), st.binary(max_size=8)))
_rows = st.lists(st.tuples(_delta, _delta, _bytes, _bytes, st.lists(_header, max_size=3)), min_size=0, max_size=8)
_meta = st.tuples(_int64, _int64, _int64, st.booleans(), st.integers(min_value=-1, max_value=5))


def _outcome(fn, body, count, meta):
    base_offset, base_ts, max_ts, log_append, epoch = meta
    try:
        records = fn(body, count, "topic", 3, base_offset, base_ts, max_ts, log_append, epoch)
    except CorruptRecord as exc:
        return ("error", type(exc), str(exc))
    out = []
    for r in records:
        assert type(r) is consumer.ConsumerRecord
        assert r.key is None or type(r.key) is bytes
        assert r.value is None or type(r.value) is bytes
        assert type(r.headers) is tuple and type(r.offset) is int and type(r.timestamp) is int
        out.append((r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value,
                    r.headers, r.leader_epoch))
    return out


def _same(body: bytes, count: int, meta) -> tuple:
    want = _outcome(consumer._decode_records_py, body, count, meta)
    got = _outcome(_speedups.decode_records, body, count, meta)
    assert got == want
    # the C decoder reads any buffer, not only bytes: the client hands it a memoryview
    assert _outcome(_speedups.decode_records, memoryview(bytearray(body)), count, meta) == want
    return want


@_MANY
@given(_rows, _meta)
def test_valid_blocks_decode_identically(rows, meta):
    body = b"".join(_record(*row) for row in rows)
    _same(body, len(rows), meta)


def test_a_valid_block_decodes_to_its_records():
    body = _record(-5, 0, None, b"v", []) + _record(7, 1, b"", None, [(b"h", None), (b"k", b"x")])
    got = _same(body, 2, (100, 1000, 2000, False, 4))
    assert got == [
        ("topic", 3, 100, 995, 0, None, b"v", (), 4),
        ("topic", 3, 101, 1007, 0, b"", None, (("h", None), ("k", b"x")), 4),
    ]
    assert _same(body, 2, (100, 1000, 2000, True, 4))[1][3:5] == (2000, 1)  # log-append time


_mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.just(0)),
)


@_MANY
@given(_rows, _meta, st.lists(_mutation, min_size=1, max_size=4), st.integers(min_value=-2, max_value=2))
def test_damaged_blocks_fail_identically(rows, meta, mutations, count_change):
    body = bytearray(b"".join(_record(*row) for row in rows))
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
    _same(bytes(body), len(rows) + count_change, meta)


@_MANY
@given(st.binary(max_size=60), st.integers(min_value=-1, max_value=6), _meta)
def test_random_bytes_fail_or_decode_identically(body, count, meta):
    _same(body, count, meta)


@pytest.mark.parametrize("body, message", [
    (b"\x01", "negative record length"),
    (b"\x80", "record data truncated"),
    (b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
    (_record(0, 0, None, b"v", [])[:-1], "record data truncated"),
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
def test_each_error_has_the_python_message(body, message):
    assert _same(body, 1, (0, 0, 0, False, -1)) == ("error", CorruptRecord, message)


def test_wide_deltas_are_python_ints_not_wrapped():
    body = _record(1 << 65, -(1 << 68), None, None, [])
    got = _same(body, 1, ((1 << 63) - 1, -(1 << 63), 0, False, 0))
    assert got[0][2:4] == ((1 << 63) - 1 - (1 << 68), -(1 << 63) + (1 << 65))
    # int64 sums that overflow become Python ints too
    got = _same(_record(10, 10, None, None, []), 1, ((1 << 63) - 1, (1 << 63) - 5, 0, False, 0))
    assert got[0][2:4] == ((1 << 63) + 9, (1 << 63) + 5)


def test_records_leave_the_cycle_collector_until_python_stores_into_them():
    body = _record(0, 0, None, b"v", [(b"h", b"x")]) + _record(1, 1, b"k", b"w", [])
    recs = _speedups.decode_records(body, 2, "t", 0, 0, 0, 0, False, 0)
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


def test_a_huge_count_is_not_preallocated():
    with pytest.raises(CorruptRecord, match="truncated"):
        _speedups.decode_records(_record(0, 0, None, b"", []), (1 << 62), "t", 0, 0, 0, 0, False, 0)


def test_configure_refuses_a_class_without_the_slots():
    class NotARecord:
        pass

    class PropertyRecord(consumer.ConsumerRecord):
        key = property(lambda self: None)  # a name that is no longer a plain slot

    with pytest.raises(AttributeError):
        _speedups.configure(NotARecord, CorruptRecord)
    with pytest.raises(TypeError):
        _speedups.configure(PropertyRecord, CorruptRecord)
    with pytest.raises(TypeError):
        _speedups.configure(consumer.ConsumerRecord, "not an exception class")
    # a refused configuration leaves the working one in place
    assert _speedups.decode_records(b"", 0, "t", 0, 0, 0, 0, False, 0) == []
    assert type(_speedups.decode_records(_record(0, 0, None, b"", []), 1, "t", 0, 0, 0, 0, False, 0)[0]) \
        is consumer.ConsumerRecord


# --- encoding ---------------------------------------------------------------------------------

_enc_headers = st.one_of(
    st.lists(st.tuples(st.binary(max_size=6), st.one_of(st.none(), st.binary(max_size=8))), max_size=3).map(tuple),
    st.just([]),
)
_ts = st.one_of(st.integers(min_value=-300_000, max_value=300_000).map(lambda d: 1_700_000_000_000 + d), _int64)
_enc_rows = st.lists(st.tuples(_bytes, _bytes, _enc_headers, _ts), min_size=1, max_size=20)


@_MANY
@given(_enc_rows, st.booleans())
def test_encoding_is_byte_identical(rows, first_as_base):
    base_ts = rows[0][3] if first_as_base else min(r[3] for r in rows)
    want = producer._encode_records_py(rows, base_ts)
    got = _speedups.encode_records(rows, base_ts)
    if any(not -(1 << 63) <= ts - base_ts < (1 << 63) for *_, ts in rows):
        assert got is None  # deltas past int64: the Python loop's own masking applies
        return
    assert got is not None and type(got[0]) is bytearray
    assert got == want
    assert producer._encode_records(rows, base_ts) == want
    # and it is DefaultRecord as the storage layer's reference encoder writes it
    ref = b"".join(encode_record(i, ts - base_ts, k, v, [(hk.decode("latin-1"), hv) for hk, hv in h])
                   for i, (k, v, h, ts) in enumerate(rows)
                   if all(hk.isascii() for hk, _ in h))
    if all(hk.isascii() for _, _, h, _ in rows for hk, _ in h):
        assert bytes(got[0]) == ref


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
