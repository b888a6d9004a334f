"""Produced batches whose CRC is valid but whose records are garbage are refused, not stored."""
from __future__ import annotations

import struct

import pytest
from kio.schema.errors import ErrorCode

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.storage.batch import compute_crc
from ringlog.storage.records import build_batch, encode_varint

from .conftest import RawClient
from .test_protocol import part, produce


def _recrc(batch: bytearray) -> bytes:
    struct.pack_into(">I", batch, 17, compute_crc(batch))
    return bytes(batch)


def _bad_offset_delta() -> bytes:
    # Two records whose offset deltas are 0 and 5: framing is fine, only a full decode sees it.
    good = build_batch([(b"a", b"1", (), 1), (b"b", b"2", (), 1)])
    batch = bytearray(good)
    second = 61 + 1 + good[61] // 2  # start of the second record (first length varint is 1 byte)
    # record: length, attributes, timestampDelta (0 -> 1 byte), offsetDelta
    assert batch[second + 3] == encode_varint(1)[0]
    batch[second + 3] = encode_varint(5)[0]
    return _recrc(batch)


def _garbage_records() -> bytes:
    good = build_batch([(b"k", b"value", (), 1)])
    batch = bytearray(good[:61]) + b"\x7f" * (len(good) - 61)
    return _recrc(batch)


def _short_records() -> bytes:
    # recordsCount says 3, the block holds 2 records
    good = bytearray(build_batch([(b"k", b"v", (), 1), (b"k", b"v", (), 1)]))
    struct.pack_into(">i", good, 23, 2)  # lastOffsetDelta
    struct.pack_into(">i", good, 57, 3)  # recordsCount
    return _recrc(good)


@pytest.mark.parametrize("validation", ["framing", "full"])
def test_garbage_inside_a_valid_crc_is_corrupt_message(tmp_path, validation) -> None:
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"), record_validation=validation)
    with BrokerThread(config) as b:
        b.call(b.broker.create_topic, "t", 1)
        c = RawClient(b.host, b.port)
        for bad in (_garbage_records(), _short_records()):
            assert part(c.call(produce("t", 0, bad))).error_code == ErrorCode.corrupt_message
        expected = ErrorCode.corrupt_message if validation == "full" else ErrorCode.none
        assert part(c.call(produce("t", 0, _bad_offset_delta()))).error_code == expected
        good = part(c.call(produce("t", 0, build_batch([(b"k", b"v", (), 1)], compression=3))))
        assert good.error_code == ErrorCode.none
        assert b.broker.partition_log("t", 0).log_end_offset == (2 if validation == "framing" else 0) + 1
        c.close()
