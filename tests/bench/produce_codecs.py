"""Broker produce throughput per codec, with batches built once and sent as they are.

    python -m tests.bench.produce_codecs [--seconds 3] [--runs 3] [--window 8] [--connections 1]

A `ringlog broker` subprocess (fsync never) and raw connections (one by default) that each
pipeline Produce v9 requests (acks=1, one batch each, `--window` in flight) of one prebuilt
batch: the client does no encoding or compression, so the figure is the broker's cost of taking
that batch (framing, CRC, the records check with its decompression, the ring and the write).
Cases: 1 MiB of records compressed with each codec (about 150-260 KiB on the wire), 16 KiB of
records with zstd, and uncompressed 16 KiB and 900 KiB batches. Prints records/s and
uncompressed MB/s per run and their medians, and the broker's CPU time (all threads, from
/proc) per batch, which a busy shared machine disturbs much less than the rates.
"""
from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import struct
import tempfile
import threading
import time

import trio

from ringlog.broker.testing import BrokerProcess
from ringlog.client.admin import Admin
from ringlog.client.wire import decode_response, encode_request, request_class
from ringlog.storage.records import build_batch

from .records_check import CODECS, records


def _produce(topic: str, batch: bytes):
    Req = request_class(0, 9)
    m = __import__(Req.__module__, fromlist=["x"])
    return Req(transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=30), topic_data=(
        m.TopicProduceData(name=topic, partition_data=(m.PartitionProduceData(index=0, records=batch),)),))


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the broker")
        buf += chunk
    return bytes(buf)


def run_case(host: str, port: int, topic: str, batch: bytes, seconds: float, window: int) -> int:
    """Batches acknowledged in `seconds`; raises if any is refused."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # One frame sent over and over: the broker echoes correlation ids and answers in order, so
    # they need not differ, and the client's cost per request stays a sendall.
    frame = encode_request(_produce(topic, batch), correlation_id=1)
    inflight = 0
    done = 0
    deadline = time.perf_counter() + seconds
    try:
        while True:
            while inflight < window and time.perf_counter() < deadline:
                sock.sendall(frame)
                inflight += 1
            if inflight == 0:
                return done
            (size,) = struct.unpack(">i", _read_exact(sock, 4))
            _, resp = decode_response(_read_exact(sock, size), 0, 9)
            code = resp.responses[0].partition_responses[0].error_code
            if code != 0:
                raise RuntimeError(f"produce refused: {code!r}")
            inflight -= 1
            done += 1
    finally:
        sock.close()


def run_connections(host: str, port: int, topic: str, batch: bytes, seconds: float, window: int,
                    connections: int) -> int:
    """run_case on `connections` connections at once (one thread each: the client side is a
    sendall and a small decode per request, the GIL is mostly free); batches acknowledged."""
    if connections == 1:
        return run_case(host, port, topic, batch, seconds, window)
    counts = [0] * connections

    def one(i: int) -> None:
        counts[i] = run_case(host, port, topic, batch, seconds, window)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--codecs", default="zstd,lz4,gzip,snappy")
    ap.add_argument("--connections", type=int, default=1, help="producing connections at once")
    args = ap.parse_args()
    big = records(1 << 20)
    cases = [(f"{c} 1MiB", build_batch(big, compression=CODECS[c]), len(big)) for c in args.codecs.split(",")]
    small = records(16 * 1024)
    # a small compressed batch: where the hop to a worker thread costs most, relatively
    cases.append(("zstd 16KiB", build_batch(small, compression=CODECS["zstd"]), len(small)))
    cases.append(("none 16KiB", build_batch(small), len(small)))
    plain = records(900 * 1024)
    cases.append(("none 900KiB", build_batch(plain), len(plain)))
    # tmpfs when there is one: the figure is the broker's CPU, not the disk's, and a shared disk
    # is not filled. Small segments and retention keep the data dir at a few tens of MiB.
    root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    limits = ["--set", "log.segment.bytes=8388608", "--set", "log.retention.bytes=16777216",
              "--set", "log.retention.check.interval.ms=200"]
    with tempfile.TemporaryDirectory(dir=root) as tmp, BrokerProcess(tmp, "--fsync", "never", *limits) as b:
        async def create() -> None:
            async with Admin(b.bootstrap) as admin:
                await admin.create_topics([f"bench{i}" for i in range(len(cases))])

        trio.run(create)
        print(f"{'batch':<14}{'wire bytes':>11}  runs: records/s (MB/s of records)      median records/s"
              "  broker CPU us/batch (median)")
        for i, (name, batch, nrec) in enumerate(cases):
            raw_bytes = {"zstd 16KiB": 16 * 1024, "none 16KiB": 16 * 1024, "none 900KiB": 900 * 1024}.get(name, 1 << 20)
            run_connections(b.host, b.port, f"bench{i}", batch, 0.5, args.window, args.connections)  # warm up
            rates = []
            cpu = []
            for _ in range(args.runs):
                c0 = _cpu_seconds(b.proc.pid)
                n = run_connections(b.host, b.port, f"bench{i}", batch, args.seconds, args.window, args.connections)
                cpu.append((_cpu_seconds(b.proc.pid) - c0) / n * 1e6)
                rates.append(n / args.seconds)
            shown = " ".join(f"{r * nrec:,.0f} ({r * raw_bytes / 1e6:.0f})" for r in rates)
            print(f"{name:<14}{len(batch):>11}  {shown:<40}{statistics.median(rates) * nrec:>14,.0f}"
                  f"{statistics.median(cpu):>12,.0f}")


if __name__ == "__main__":
    main()
