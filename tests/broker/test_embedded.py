"""The broker embedded in a Trio program (open_broker), and the ringlog_broker pytest fixture."""
from __future__ import annotations

import datetime

import trio
from kio.schema.errors import ErrorCode

from ringlog.broker.config import BrokerConfig
from ringlog.broker.server import open_broker
from ringlog.broker.testing import ringlog_broker  # noqa: F401  (the fixture, used below)
from ringlog.client.wire import FrameDecoder, decode_response, encode_request, request_class
from ringlog.storage.records import build_batch, decode_records
from ringlog.storage.batch import split_batches


async def _call(stream: trio.SocketStream, decoder: FrameDecoder, request, corr: int):
    await stream.send_all(encode_request(request, correlation_id=corr, client_id="embedded"))
    while (frame := decoder.next_frame()) is None:
        data = await stream.receive_some(65536)
        assert data, "broker closed the connection"
        decoder.feed(data)
    got, resp = decode_response(frame, int(request.__api_key__), int(request.__version__))
    assert got == corr
    return resp


async def test_open_broker_in_trio(tmp_path) -> None:
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"), fsync="always")
    async with open_broker(config) as b:
        assert b.bootstrap == f"127.0.0.1:{b.port}" and b.port > 0
        await b.create_topic("emb", 3)
        stream = await trio.open_tcp_stream(b.host, b.port)
        decoder = FrameDecoder()
        Produce = request_class(0, 9)
        pm = __import__(Produce.__module__, fromlist=["x"])
        batches = {p: build_batch([(b"k%d" % p, b"v%d" % i, (), 5) for i in range(p + 1)]) for p in range(3)}
        req = Produce(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=5), topic_data=(
            pm.TopicProduceData(name="emb", partition_data=tuple(
                pm.PartitionProduceData(index=p, records=batches[p]) for p in range(3))),))
        resp = await _call(stream, decoder, req, 1)
        assert [(r.index, r.error_code, r.base_offset) for r in resp.responses[0].partition_responses] == [
            (0, ErrorCode.none, 0), (1, ErrorCode.none, 0), (2, ErrorCode.none, 0)]
        # fsync=always: acknowledged means synced, so the recovery point already covers it
        for p in range(3):
            plog = b.partition_log("emb", p)
            assert plog.recovery_point == plog.log_end_offset == p + 1
            raw = plog.read_records_bytes(0, 1 << 20)
            [(header, view)] = list(split_batches(raw))
            assert [r.value for r in decode_records(view, header)] == [b"v%d" % i for i in range(p + 1)]
        await stream.aclose()


def test_ringlog_broker_fixture(ringlog_broker) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": ringlog_broker.bootstrap, "acks": "all", "message.timeout.ms": 10000})
    p.produce("fixture", value=b"x", partition=0)
    assert p.flush(10) == 0
    assert ringlog_broker.broker.high_watermark("fixture", 0) == 1
