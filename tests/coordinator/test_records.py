"""__consumer_offsets record formats: exact bytes of Kafka's layouts and round trips."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringlog.broker.coordinator import records as rec


def test_offset_key_and_value_bytes() -> None:
    key = rec.offset_key("g", "t", 3)
    assert key == struct.pack(">h", 1) + b"\x00\x01g" + b"\x00\x01t" + struct.pack(">i", 3)
    value = rec.offset_value(rec.OffsetValue(42, 5, "m", 1000))
    assert value == struct.pack(">hqi", 3, 42, 5) + b"\x00\x01m" + struct.pack(">q", 1000)
    assert rec.decode(key, value) == (rec.OffsetKey("g", "t", 3), rec.OffsetValue(42, 5, "m", 1000))


def test_old_offset_value_versions_are_read() -> None:
    v0 = struct.pack(">hq", 0, 7) + b"\x00\x00" + struct.pack(">q", 11)
    v1 = struct.pack(">hq", 1, 7) + b"\x00\x02md" + struct.pack(">qq", 11, 99)
    assert rec.decode_offset_value(v0) == rec.OffsetValue(7, -1, "", 11)
    assert rec.decode_offset_value(v1) == rec.OffsetValue(7, -1, "md", 11, 99)
    # a Kafka key of version 0 has the same layout as version 1
    assert rec.decode_key(struct.pack(">h", 0) + b"\x00\x01g\x00\x01t" + struct.pack(">i", 0)) == rec.OffsetKey("g", "t", 0)


def test_group_value_bytes_and_tombstone() -> None:
    member = rec.MemberValue("m-1", "inst", "cid", "/127.0.0.1", 30000, 6000, b"sub", b"asg")
    value = rec.GroupValue("consumer", 4, "range", "m-1", 123, (member,))
    blob = rec.group_value(value)
    expected = (
        struct.pack(">h", 3) + b"\x00\x08consumer" + struct.pack(">i", 4) + b"\x00\x05range" + b"\x00\x03m-1"
        + struct.pack(">q", 123) + struct.pack(">i", 1)
        + b"\x00\x03m-1" + b"\x00\x04inst" + b"\x00\x03cid" + b"\x00\x0a/127.0.0.1" + struct.pack(">ii", 30000, 6000)
        + struct.pack(">i", 3) + b"sub" + struct.pack(">i", 3) + b"asg"
    )
    assert blob == expected
    assert rec.decode(rec.group_key("g"), blob) == (rec.GroupKey("g"), value)
    assert rec.decode(rec.group_key("g"), None) == (rec.GroupKey("g"), None)
    # an empty group: null protocol and leader
    empty = rec.GroupValue("consumer", 5, None, None, 77, ())
    assert rec.decode_group_value(rec.group_value(empty)) == empty


def test_old_group_value_versions() -> None:
    # v0: no rebalance timeout (it equals the session timeout), no state timestamp, no instance id
    v0 = (struct.pack(">h", 0) + b"\x00\x08consumer" + struct.pack(">i", 1) + b"\x00\x05range" + b"\x00\x01a"
          + struct.pack(">i", 1) + b"\x00\x01a" + b"\x00\x01c" + b"\x00\x01h" + struct.pack(">i", 10000)
          + struct.pack(">i", 0) + struct.pack(">i", -1))
    got = rec.decode_group_value(v0)
    assert got.current_state_timestamp == -1
    assert got.members[0] == rec.MemberValue("a", None, "c", "h", 10000, 10000, b"", b"")


@pytest.mark.parametrize("blob", [b"", b"\x00", b"\x00\x09abc", b"\x00\x01\x00\x05ab"])
def test_bad_records_raise_format_error(blob: bytes) -> None:
    with pytest.raises(rec.RecordFormatError):
        rec.decode(blob, b"\x00\x03")


names = st.text(min_size=0, max_size=20)


@given(names, names, st.integers(0, 2**31 - 1), st.integers(-1, 2**62), st.integers(-1, 2**31 - 1), names,
       st.integers(-1, 2**62))
def test_offset_round_trip(group, topic, partition, offset, epoch, metadata, ts) -> None:
    key, value = rec.offset_record(group, topic, partition, rec.OffsetValue(offset, epoch, metadata, ts))
    assert rec.decode(key, value) == (rec.OffsetKey(group, topic, partition), rec.OffsetValue(offset, epoch, metadata, ts))


members = st.builds(
    rec.MemberValue, names, st.none() | names, names, names, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1),
    st.binary(max_size=30), st.binary(max_size=30),
)


@given(names, st.builds(rec.GroupValue, names, st.integers(0, 2**31 - 1), st.none() | names, st.none() | names,
                        st.integers(-1, 2**62), st.lists(members, max_size=4).map(tuple)))
def test_group_round_trip(group, value) -> None:
    key, blob = rec.group_record(group, value)
    assert rec.decode(key, blob) == (rec.GroupKey(group), value)
