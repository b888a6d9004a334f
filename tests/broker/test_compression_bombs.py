"""Compression bombs produced over the Kafka protocol are refused cheaply.

A batch with a valid CRC whose records inflate to gigabytes (tests/bombs.py builds one per way a
codec can be made to) must be answered INVALID_RECORD for its partition alone, with a warning
log line and no traceback, without the broker's memory growing by more than a few times
message.max.decompressed.bytes, and without stalling the other connections: the broker runs as
a subprocess, so its peak RSS (VmHWM, reset through /proc/<pid>/clear_refs) is its own, and the
latency of another client's ApiVersions round trips is measured while the bombs are refused.
Before the limit, the 64 KiB zstd bomb alone took the broker from 56 MB to 4.2 GB and stalled
every client for 4 s.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import statistics
import threading
import time

import pytest
import trio
from kio.schema.errors import ErrorCode

from ringlog.broker.testing import BrokerProcess
from ringlog.client.admin import Admin, NewTopic
from ringlog.client.bench.procstat import hwm_bytes, reset_peak, rss_bytes
from ringlog.client.wire import request_class
from ringlog.storage.batch import CODEC_GZIP, CODEC_LZ4, CODEC_SNAPPY, CODEC_ZSTD
from ringlog.storage.records import build_batch
from tests.bombs import MiB, codec_bombs

from .conftest import RawClient

LIMIT = 8 * MiB
RSS_GROWTH_MAX_MB = 64
# Round trips of another connection while the bombs are refused. A bomb inflated on the Trio
# thread stalled it for seconds; a generous bound keeps a busy shared machine from failing it.
PING_MEDIAN_MAX_S = 0.050
PING_MAX_S = 0.250

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return codec_bombs()


def _produce(parts: list[tuple[int, bytes]], topic: str = "t"):
    Req = request_class(0, 9)
    m = __import__(Req.__module__, fromlist=["x"])
    return Req(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=30), topic_data=(
        m.TopicProduceData(name=topic, partition_data=tuple(
            m.PartitionProduceData(index=p, records=records) for p, records in parts)),))


class _Pinger(threading.Thread):
    """ApiVersions round trips on a connection of its own, every 2 ms, until stopped."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(daemon=True)
        self.client = RawClient(host, port)
        self.request = request_class(18, 3)(client_software_name="pinger", client_software_version="1")
        self.times: list[float] = []
        self.first = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                resp = self.client.call(self.request)
                self.times.append(time.perf_counter() - t0)
                assert resp.error_code == ErrorCode.none
                self.first.set()
                self.stop.wait(0.002)  # pacing, so the pings do not take a core of their own
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.first.set()
        finally:
            self.client.close()


@contextlib.contextmanager
def _broker_with_topic(tmp_path, limit: int, *, partitions: int):
    """A broker process with message.max.decompressed.bytes=`limit` and topic "t"."""
    with BrokerProcess(str(tmp_path / "d"), "--set", f"message.max.decompressed.bytes={limit}") as b:
        async def create() -> None:
            async with Admin(b.bootstrap) as admin:
                await admin.create_topics([NewTopic("t", partitions)])

        trio.run(create)
        yield b


def test_bombs_are_refused_per_partition_cheaply_and_without_stalling(tmp_path, bombs) -> None:
    legit = {codec: build_batch([(b"k%d" % i, b"value %d " % i * 20, (), 1_700_000_000_000 + i) for i in range(200)],
                                compression=codec)
             for codec in (CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD)}
    with _broker_with_topic(tmp_path, LIMIT, partitions=2) as b:
        c = RawClient(b.host, b.port, timeout=30)
        # Warm up the compressed path (codec libraries loaded, worker threads started) so the
        # peak below measures the bombs, not the first use of each codec.
        for batch in legit.values():
            part = c.call(_produce([(1, batch)])).responses[0].partition_responses[0]
            assert part.error_code == ErrorCode.none
        pid = b.proc.pid
        reset_peak(pid)  # the peak from here on
        rss_before = rss_bytes(pid)

        pinger = _Pinger(b.host, b.port)
        pinger.start()
        assert pinger.first.wait(10) and pinger.error is None
        pings_before = len(pinger.times)
        took = {}
        try:
            for name, bomb in bombs.items():
                t0 = time.perf_counter()
                resp = c.call(_produce([(0, bomb), (1, legit[CODEC_ZSTD])]))
                took[name] = time.perf_counter() - t0
                bombed, other = resp.responses[0].partition_responses
                assert (bombed.index, bombed.error_code) == (0, ErrorCode.invalid_record), name
                assert "past the limit of" in bombed.error_message, bombed.error_message
                assert (other.index, other.error_code) == (1, ErrorCode.none), name
        finally:
            pinger.stop.set()
            pinger.join(10)
        assert pinger.error is None
        growth_mb = (hwm_bytes(pid) - rss_before) / 2**20
        # nothing of the bombs was stored: partition 0 is still empty
        assert c.call(_produce([(0, legit[CODEC_LZ4])])).responses[0].partition_responses[0].base_offset == 0
        c.close()
        pings = pinger.times[pings_before:]
    lines = b.lines

    for name, t in took.items():
        print(f"{name:<26}{len(bombs[name]):>9} bytes  answered in {t * 1e3:7.1f} ms")
    print(f"broker peak RSS growth over the bombs: {growth_mb:.1f} MB (limit {LIMIT >> 20} MiB)")
    print(f"ApiVersions during the bombs: {len(pings)} round trips, median {statistics.median(pings) * 1e3:.2f} ms, "
          f"max {max(pings) * 1e3:.2f} ms")
    assert growth_mb < RSS_GROWTH_MAX_MB
    assert pings, "no round trip overlapped the bombs"
    assert statistics.median(pings) < PING_MEDIAN_MAX_S
    assert max(pings) < PING_MAX_S

    refusals = [line for line in lines if "event=produce_too_inflated" in line]
    assert len(refusals) == len(bombs)
    assert all("level=warning" in line for line in refusals), refusals
    assert not [line for line in lines if "Traceback" in line or "level=error" in line]


def test_inflating_up_to_a_large_limit_does_not_stall_other_connections(tmp_path, bombs) -> None:
    # With the limit at 128 MiB, the gzip bomb whose trailer lies costs some 150-500 ms of zlib
    # before it is refused. On the Trio thread the next ping (every 2 ms) would wait out nearly
    # all of it; in a worker thread, which hands the GIL over at every chunk, the pings stay
    # within a few switch intervals (5 ms each). The bound is relative to the work measured, so
    # a faster or a busier machine changes both sides.
    limit = 128 * MiB
    with _broker_with_topic(tmp_path, limit, partitions=1) as b:
        c = RawClient(b.host, b.port, timeout=60)
        pinger = _Pinger(b.host, b.port)
        pinger.start()
        assert pinger.first.wait(10) and pinger.error is None
        pings_before = len(pinger.times)
        took = []
        try:
            for _ in range(3):
                t0 = time.perf_counter()
                part = c.call(_produce([(0, bombs["gzip-lying-trailer"])])).responses[0].partition_responses[0]
                took.append(time.perf_counter() - t0)
                assert part.error_code == ErrorCode.invalid_record
        finally:
            pinger.stop.set()
            pinger.join(10)
        assert pinger.error is None
        c.close()
        pings = pinger.times[pings_before:]
    print(f"gzip bomb refused at {limit >> 20} MiB in {', '.join(f'{t * 1e3:.0f}' for t in took)} ms; "
          f"ApiVersions meanwhile: {len(pings)} round trips, median {statistics.median(pings) * 1e3:.2f} ms, "
          f"max {max(pings) * 1e3:.2f} ms")
    assert len(pings) >= 3 * 10
    assert statistics.median(pings) < PING_MEDIAN_MAX_S
    assert max(pings) < min(min(took) / 2, PING_MAX_S)


def test_what_is_checked_off_the_trio_thread(bombs) -> None:
    from ringlog.broker.handlers.produce import _INLINE_INFLATE_BYTES, _inflate_cost

    def batch_of(n_bytes: int, codec: int) -> bytes:
        return build_batch([(b"k%d" % i, b"%08d" % i * 12, (), 1) for i in range(n_bytes // 100)], compression=codec)

    limit = 64 * MiB
    for codec in (CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD):  # a Java client's default 16 KiB batch
        assert _inflate_cost(batch_of(16 * 1024, codec), limit) <= _INLINE_INFLATE_BYTES, codec
        assert _inflate_cost(batch_of(16 * 1024, codec) * 40, limit) > _INLINE_INFLATE_BYTES, codec
    # deflate is bounded only by its 1032:1 ratio: even a small gzip batch goes to a thread
    assert _inflate_cost(batch_of(16 * 1024, CODEC_GZIP), limit) > _INLINE_INFLATE_BYTES
    for codec in (CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD):
        assert _inflate_cost(batch_of(MiB, codec), limit) > _INLINE_INFLATE_BYTES, codec
    assert _inflate_cost(batch_of(MiB, 0), limit) == 0
    for name, bomb in bombs.items():
        # only bombs whose headers already refuse them stay inline: a scan of a few KiB
        cost = _inflate_cost(bomb, LIMIT)
        assert cost > _INLINE_INFLATE_BYTES or name in ("zstd-rle", "zstd-content-size"), name
