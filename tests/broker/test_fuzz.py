"""Malformed input at a live broker: random bytes, damaged real requests, absurd size prefixes,
unknown keys and versions. Each example is one connection; the broker must answer or close it,
never hang or die, and afterwards a real client still works."""
from __future__ import annotations

import datetime
import os
import socket
import struct

from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.config import BrokerConfig
from broker.testing import BrokerThread
from client.wire import encode_request, request_class
from storage.records import build_batch

EXAMPLES = 1000 if os.environ.get("RINGLOG_SLOW") == "1" else 200


def _valid_requests() -> list[bytes]:
    out = []
    md = request_class(3, 12)
    out.append(encode_request(md(topics=None, allow_auto_topic_creation=False,
                                 include_topic_authorized_operations=False), 1, "fz"))
    av = request_class(18, 3)
    out.append(encode_request(av(client_software_name="fz", client_software_version="1"), 2, "fz"))
    pr = request_class(0, 9)
    pm = __import__(pr.__module__, fromlist=["x"])
    batch = build_batch([(b"k", b"v" * 40, (("h", b"x"),), 5)])
    out.append(encode_request(pr(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=1), topic_data=(
        pm.TopicProduceData(name="fz", partition_data=(pm.PartitionProduceData(index=0, records=batch),)),)), 3, "fz"))
    fr = request_class(1, 12)
    fm = __import__(fr.__module__, fromlist=["x"])
    out.append(encode_request(fr(max_wait=datetime.timedelta(milliseconds=10), min_bytes=1, max_bytes=1 << 20,
                                 topics=(fm.FetchTopic(topic="fz", partitions=(fm.FetchPartition(
                                     partition=0, fetch_offset=0, partition_max_bytes=1 << 20),)),),
                                 forgotten_topics_data=()), 4, "fz"))
    return out


VALID = _valid_requests()


@st.composite
def mutated(draw) -> bytes:
    frame = bytearray(draw(st.sampled_from(VALID)))
    body = frame[4:]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
        if kind == "flip" and body:
            i = draw(st.integers(0, len(body) - 1))
            body[i] = draw(st.integers(0, 255))
        elif kind == "truncate" and body:
            body = body[: draw(st.integers(0, len(body) - 1))]
        elif kind == "extend":
            body += draw(st.binary(min_size=1, max_size=16))
        elif kind == "splice" and body:
            i = draw(st.integers(0, len(body)))
            body[i:i] = draw(st.binary(min_size=1, max_size=8))
    # keep the size prefix honest most of the time so the body reaches the decoder
    if draw(st.booleans()) or len(body) < 4:
        return struct.pack(">i", len(body)) + bytes(body)
    return struct.pack(">i", draw(st.integers(-5, 1 << 31 - 1))) + bytes(body)


headers = st.builds(
    lambda key, ver, corr, body: struct.pack(">hhih", key, ver, corr, 2) + b"fz" + body,
    st.one_of(st.sampled_from([0, 1, 2, 3, 18, 23, 10, 19, 67]), st.integers(-32768, 32767)),
    st.integers(-5, 20), st.integers(-(1 << 31), (1 << 31) - 1), st.binary(max_size=64),
)

frames = st.one_of(
    st.binary(max_size=128),
    headers.map(lambda b: struct.pack(">i", len(b)) + b),
    mutated(),
    st.integers(101 * 1024 * 1024, (1 << 31) - 1).map(lambda n: struct.pack(">i", n) + b"\x00" * 8),
)


def poke(host: str, port: int, data: bytes) -> None:
    with socket.create_connection((host, port), timeout=10) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # EOF: the broker answers what it can, then closes
        except (BrokenPipeError, ConnectionResetError):
            return
        s.settimeout(10)
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return
            if not chunk:
                return  # closed: good; a hang would raise socket.timeout and fail the test


def test_malformed_frames_then_real_client(tmp_path) -> None:
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"))
    with BrokerThread(config) as b:
        b.call(b.broker.create_topic, "fz", 1)

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(frames)
        def throw(data: bytes) -> None:
            poke(b.host, b.port, data)

        throw()
        assert b.broker.connections is not None
        # still serving: a real client produces and reads back
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "message.timeout.ms": 10000})
        for i in range(10):
            p.produce("after-fuzz", value=b"ok%d" % i, partition=0)
        assert p.flush(15) == 0
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "x", "fetch.wait.max.ms": 50,
                      "enable.auto.commit": False})
        c.assign([TopicPartition("after-fuzz", 0, 0)])
        got = []
        for _ in range(40):
            got += [m.value() for m in c.consume(10, timeout=0.5) if not m.error()]
            if len(got) >= 10:
                break
        c.close()
        assert got == [b"ok%d" % i for i in range(10)]
