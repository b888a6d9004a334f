"""client.wire without a broker: framing, headers, kio round trips, and the first bytes real clients send."""
from __future__ import annotations

import datetime
import socket
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.api_versions.v0.request import ApiVersionsRequest as ApiVersionsRequestV0
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v1.request import MetadataRequest as MetadataRequestV1
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.static.primitive import i16, i32Timedelta

from ringlog.client.wire import (
    FrameDecoder,
    FrameTooLarge,
    InvalidRequest,
    UnsupportedVersion,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    frame,
    parse_request_header,
)
from tests.conftest import require_tool


def test_frame_decoder_splits_across_arbitrary_chunks() -> None:
    payloads = [b"a" * n for n in (0, 1, 5, 300, 70000)]
    stream = b"".join(frame(p) for p in payloads)
    for chunk in (1, 3, 4, 7, 1000, len(stream)):
        decoder = FrameDecoder()
        got = []
        for i in range(0, len(stream), chunk):
            decoder.feed(stream[i : i + chunk])
            while (f := decoder.next_frame()) is not None:
                got.append(f)
        assert got == payloads
        assert decoder.buffered == 0


_payloads = st.lists(st.tuples(st.integers(min_value=0, max_value=60_000), st.integers(min_value=0, max_value=255)),
                     max_size=8).map(lambda specs: [bytes([b]) * n for n, b in specs])
# read sizes below and above the decoder's small-read threshold (16 KiB)
_cuts = st.lists(st.one_of(st.integers(min_value=1, max_value=64), st.integers(min_value=16_000, max_value=70_000)),
                 min_size=1)


@given(_payloads, _cuts, st.sampled_from((bytes, bytearray, memoryview)))
@settings(max_examples=300, deadline=None)
def test_frame_decoder_any_chunking(payloads, cuts, kind) -> None:
    stream = b"".join(frame(p) for p in payloads)
    decoder = FrameDecoder()
    got, pos, i = [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        i += 1
        piece = kind(stream[pos : pos + step])
        decoder.feed(piece)
        if isinstance(piece, bytearray):
            piece[:] = b"\xff" * len(piece)  # the decoder must not keep the caller's buffer
        pos += step
        while (f := decoder.next_frame()) is not None:
            assert type(f) is bytes
            got.append(f)
        # what is buffered plus what is wanted ends the frame in progress
        done = sum(4 + len(p) for p in got)
        assert decoder.buffered == min(pos, len(stream)) - done
        if len(got) < len(payloads):
            wanted = decoder.bytes_wanted()
            assert wanted >= 1
            if decoder.buffered >= 4:  # the size prefix is in: exactly the rest of the frame
                assert decoder.buffered + wanted == 4 + len(payloads[len(got)])
    assert got == payloads
    assert decoder.buffered == 0


def test_a_trickled_frame_costs_no_object_per_read() -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB
    stream = frame(payload)
    decoder = FrameDecoder()
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
    assert len(decoder._chunks) == 1  # gathered in one buffer, not 262,148 bytes objects
    assert decoder.next_frame() == payload


def test_a_never_drained_buffer_stays_bounded() -> None:
    # pipelined 100-byte frames, read half a frame first and then 100 bytes at a time: the buffer
    # always ends in the middle of a frame, so it is never emptied
    stream = b"".join(frame(bytes([i % 256]) * 96) for i in range(100_000))
    decoder = FrameDecoder()
    largest = count = 0
    for pos in [0, *range(50, len(stream), 100)]:
        decoder.feed(stream[pos : 50 if pos == 0 else pos + 100])
        while decoder.next_frame() is not None:
            count += 1
        largest = max(largest, sum(len(c) for c in decoder._chunks))
    assert count == 100_000
    assert largest < 200_000  # compacted as it goes, not 10 MB


def test_oversized_prefix_rejected_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(struct.pack(">i", 1025))
    assert info.value.size == 1025
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(struct.pack(">i", -5))


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_garbage_requests_raise_only_typed_errors(body: bytes) -> None:
    for api_key, version in ((3, 12), (3, 1), (18, 3), (0, 9), (1, 12)):
        data = struct.pack(">hhih", api_key, version, 1, -1) + body
        try:
            decode_request(data)
        except (InvalidRequest, UnsupportedVersion):
            pass


def test_round_trip_flexible_and_legacy_requests() -> None:
    requests = [
        ApiVersionsRequest(client_software_name="ringlog", client_software_version="0.1"),
        ApiVersionsRequestV0(),
        MetadataRequest(
            topics=(MetadataRequestTopic(topic_id=None, name="a-topic"),),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        ),
        MetadataRequestV1(topics=None),
    ]
    for correlation_id, request in enumerate(requests):
        data = encode_request(request, correlation_id, "cid")
        (size,) = struct.unpack_from(">i", data)
        assert size == len(data) - 4
        header, entity = decode_request(data[4:])
        assert entity == request
        assert (header.api_key, header.api_version) == (request.__api_key__, request.__version__)
        assert header.correlation_id == correlation_id and header.client_id == "cid"
        assert header.flexible == request.__flexible__


def test_api_versions_response_header_is_always_v0() -> None:
    header = parse_request_header(encode_request(ApiVersionsRequest(client_software_name="x", client_software_version="y"), 42)[4:])
    response = ApiVersionsResponse(
        error_code=ErrorCode.none,
        api_keys=(ApiVersion(api_key=i16(18), min_version=i16(0), max_version=i16(3)),),
        throttle_time=i32Timedelta.parse(datetime.timedelta(0)),
    )
    data = encode_response(header, response)
    # v0 header: correlation id directly followed by the body (no tagged-field byte)
    correlation_id, decoded = decode_response(data[4:], 18, 3)
    assert correlation_id == 42 and decoded == response


def test_unknown_tagged_field_is_an_invalid_request() -> None:
    request = MetadataRequest(topics=None, allow_auto_topic_creation=True, include_topic_authorized_operations=False)
    data = bytearray(encode_request(request, 1)[4:])
    # replace the body's empty tagged-field section with one unknown tag (5) of 0 bytes
    assert data[-1] == 0
    data[-1:] = b"\x01\x05\x00"
    with pytest.raises(InvalidRequest):
        decode_request(bytes(data))


def test_trailing_bytes_after_the_body_are_ignored() -> None:
    # librdkafka 2.x appends bytes after a Metadata v12 body; Kafka ignores them, so must we.
    request = MetadataRequestV1(topics=None)
    data = encode_request(request, 1)[4:] + b"\x01\x00\x00"
    assert decode_request(data)[1] == request


def test_unsupported_version_is_reported_with_the_header() -> None:
    data = struct.pack(">hhih", 0, 99, 5, -1)
    header = parse_request_header(data)
    assert (header.api_key, header.api_version, header.correlation_id) == (0, 99, 5)
    with pytest.raises(UnsupportedVersion):
        decode_request(data)


# --- bytes from real clients -----------------------------------------------------------------


def _capture_first_request(argv_for_port) -> bytes:
    """Listen on loopback, start the client `argv_for_port(port)`, return its first request frame."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(20)
    port = server.getsockname()[1]
    client = subprocess.Popen(
        argv_for_port(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        conn, _ = server.accept()
        conn.settimeout(20)
        decoder = FrameDecoder()
        with conn:
            while (data := decoder.next_frame()) is None:
                chunk = conn.recv(65536)
                assert chunk, "client closed before sending a request"
                decoder.feed(chunk)
    finally:
        server.close()
        # The client would now retry against a closed port until its timeout: not needed.
        client.kill()
        client.wait()
    return data


def test_kcat_first_request_is_api_versions_v3() -> None:
    kcat = require_tool("kcat")
    data = _capture_first_request(
        lambda port: [kcat, "-b", f"127.0.0.1:{port}", "-L", "-m", "2"]
    )
    header, request = decode_request(data)
    assert (header.api_key, header.api_version) == (18, 3)
    assert request.client_software_name == "librdkafka"


def test_confluent_kafka_first_request_is_api_versions() -> None:
    code = (
        "import sys; from confluent_kafka.admin import AdminClient; a = AdminClient("
        "{'bootstrap.servers': sys.argv[1], 'socket.timeout.ms': 2000}); "
        "a.list_topics(timeout=2)"
    )
    data = _capture_first_request(
        lambda port: [sys.executable, "-c", code, f"127.0.0.1:{port}"]
    )
    header, request = decode_request(data)
    assert header.api_key == 18 and header.api_version >= 3
    assert request.client_software_name == "confluent-kafka-python"


def test_kafka_python_first_request_is_api_versions() -> None:
    code = (
        "import kafka, sys\n"
        "try:\n"
        "    kafka.KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=2000)\n"
        "except Exception:\n"
        "    pass\n"
    )
    data = _capture_first_request(
        lambda port: [sys.executable, "-c", code, f"127.0.0.1:{port}"]
    )
    header = parse_request_header(data)
    assert header.api_key == 18
    if header.api_version <= 3:
        decode_request(data)  # must decode cleanly for every version we advertise


def test_aiokafka_first_request_is_api_versions_v0() -> None:
    code = (
        "import asyncio, sys, aiokafka\n"
        "async def main():\n"
        "    c = aiokafka.AIOKafkaProducer(bootstrap_servers=sys.argv[1], request_timeout_ms=2000)\n"
        "    try:\n"
        "        await asyncio.wait_for(c.start(), 3)\n"
        "    except Exception:\n"
        "        pass\n"
        "asyncio.run(main())\n"
    )
    data = _capture_first_request(
        lambda port: [sys.executable, "-c", code, f"127.0.0.1:{port}"]
    )
    header, request = decode_request(data)
    assert (header.api_key, header.api_version) == (18, 0)
    assert request == ApiVersionsRequestV0()
