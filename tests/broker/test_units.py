"""Broker pieces without sockets: routing, version answers, the hand-written Fetch encoder,
the topic store and the configuration."""
from __future__ import annotations

import struct
import uuid

import pytest
from kio.schema.errors import ErrorCode

from ringlog.broker.config import BrokerConfig, apply_settings, load_toml, parse_hostport
from ringlog.broker.handlers import load_handlers
from ringlog.broker.handlers.fetch import PartitionSlice, encode_fetch
from ringlog.broker.metadata import TopicStore, topic_name_error
from ringlog.broker.router import Dispatch, Immediate, Reject, Router
from ringlog.client.wire import decode_response, encode_request, request_class
from ringlog.storage.records import build_batch


def _header(api_key: int, version: int, corr: int = 7, client_id: str = "t") -> bytes:
    raw = client_id.encode()
    return struct.pack(">hhih", api_key, version, corr, len(raw)) + raw


def test_registry_windows() -> None:
    windows = {k: (s.advertise_min_version, s.max_version) for k, s in load_handlers().items()}
    assert windows[0] == (0, 9)
    assert windows[1] == (4, 12)
    assert windows[2] == (1, 7)
    assert windows[3] == (1, 12)
    assert windows[18] == (0, 3)
    assert windows[23] == (2, 4)


def test_api_versions_unsupported_version_is_v0_shaped() -> None:
    routed = Router().route(_header(18, 9, corr=42) + b"\x00")
    assert isinstance(routed, Immediate)
    size, corr, err, n, key, lo, hi = struct.unpack(">iihihhh", routed.data)
    assert (size, corr, err, n, key, lo, hi) == (len(routed.data) - 4, 42, 35, 1, 18, 0, 3)


def test_produce_v0_answered_unsupported_but_shaped() -> None:
    routed = Router().route(_header(0, 2, corr=5) + b"\x00" * 10)
    assert isinstance(routed, Immediate)
    assert routed.data[4:8] == struct.pack(">i", 5)
    assert routed.data[8:] == struct.pack(">ii", 0, 0)


def test_unsupported_version_of_a_known_api_gets_error_code() -> None:
    # ListOffsets v9 has a kio schema but is above our window: a well-formed error answer.
    routed = Router().route(_header(2, 9) + b"\x00" * 40)
    assert isinstance(routed, Immediate)
    _, resp = decode_response(routed.data[4:], 2, 9)
    assert resp.topics == ()
    # Fetch v3: no schema to shape an answer with: the connection is closed.
    assert isinstance(Router().route(_header(1, 3) + b"\x00" * 40), Reject)


def test_unknown_api_key_and_garbage() -> None:
    router = Router()
    assert isinstance(router.route(_header(9999, 0)), Reject)
    assert isinstance(router.route(b"\x00\x01"), Reject)
    # Metadata v12 whose body is cut short
    assert isinstance(router.route(_header(3, 12) + b"\x00"), Reject)


def test_metadata_request_is_dispatched() -> None:
    cls = request_class(3, 9)
    req = cls(topics=None, allow_auto_topic_creation=True, include_cluster_authorized_operations=False,
              include_topic_authorized_operations=False)
    frame = encode_request(req, correlation_id=3, client_id="x")[4:]
    routed = Router().route(frame)
    assert isinstance(routed, Dispatch) and routed.spec.name == "metadata"


@pytest.mark.parametrize("version", range(4, 13))
def test_fetch_encoder_decodes_with_kio(version: int) -> None:
    batch = build_batch([(b"k", b"v", (), 1000)])
    slices = [
        PartitionSlice(0, ErrorCode.none, 10, 10, 0, (batch,), len(batch)),
        PartitionSlice(1, ErrorCode.offset_out_of_range, 3, 3, 0),
    ]
    body = b"".join(encode_fetch(version, [("topic-a", slices), ("b", [])], throttle_ms=5))
    head = struct.pack(">i", 99) + (b"\x00" if version >= 12 else b"")
    corr, resp = decode_response(head + body, 1, version)
    assert corr == 99
    assert resp.throttle_time.total_seconds() == 0.005
    (ta, tb) = resp.responses
    assert ta.topic == "topic-a" and tb.topic == "b" and tb.partitions == ()
    p0, p1 = ta.partitions
    assert p0.partition_index == 0 and p0.error_code == ErrorCode.none and p0.high_watermark == 10
    assert bytes(p0.records) == batch
    assert p1.error_code == ErrorCode.offset_out_of_range
    assert p1.records is not None and len(p1.records) == 0
    if version >= 7:
        assert resp.session_id == 0


def test_topic_names() -> None:
    assert topic_name_error("ok.topic_1-x") is None
    for bad in ("", ".", "..", "a/b", "x" * 250, "sp ace"):
        assert topic_name_error(bad)


def test_topic_store_roundtrip_and_reconcile(tmp_path) -> None:
    store = TopicStore(tmp_path)
    a = store.add("a", 2, {"retention.ms": "5"})
    again = TopicStore.load(tmp_path)
    assert again.get("a") == a and again.by_id(a.topic_id) == a
    missing = again.reconcile([("a", 0), ("orphan", 2)])
    # partitions the store names but the disk lacks are reported, the adopted topic's gaps too
    assert sorted(missing) == [("a", 1), ("orphan", 0), ("orphan", 1)]
    orphan = again.get("orphan")
    assert orphan.partitions == 3 and isinstance(orphan.topic_id, uuid.UUID)
    assert TopicStore.load(tmp_path).get("orphan").topic_id == orphan.topic_id
    with pytest.raises(ValueError):
        again.add("bad name", 1)


def test_config_toml_and_settings(tmp_path) -> None:
    path = tmp_path / "b.toml"
    path.write_text('listen = "0.0.0.0:9999"\nmessage.max.bytes = 2000\nbackpressure = "reject"\n'
                    '"log.retention.ms" = 60000\nauto.create.topics.enable = false\n')
    config = load_toml(path)
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 9999)
    assert config.message_max_bytes == 2000 and config.backpressure == "reject"
    assert config.topic_defaults == {"retention.ms": "60000"} and config.auto_create_topics is False
    with pytest.raises(ValueError):
        apply_settings(BrokerConfig(), {"no.such.key": 1})
    with pytest.raises(ValueError):
        apply_settings(BrokerConfig(), {"backpressure": "maybe"})
    assert parse_hostport("[::1]:5") == ("::1", 5)
