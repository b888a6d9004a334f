"""HTTP log-push throughput and latency: POST /ingest with 1,000-line NDJSON bodies.

    python -m tests.bench.http_ingest [--seconds 5] [--runs 3] [--connections 4]

A `ringlog broker` subprocess (default flush policy: fsync interval) with the HTTP gateway on
loopback, one single-partition topic without a pipeline and one whose ingest.pipeline samples
half the records by key, then masks two fields of those kept (keep-last-4 of the card number
every line carries, found by regex, then an HMAC of the e-mail), so every kept record is
re-encoded; and a third ("fields") that samples the same way and masks only the e-mail field (no
regex). The load generator is this process: `--connections` threads on keep-alive
connections, each sending one prebuilt request (the same 1,000-line body, ~170 KB) and reading
the answer, as fast as the broker answers. Lines/s counts lines of bodies answered 200 (lines the
broker took in; with the pipeline half of them are sampled out before storage). Then the same
at half the measured rate, paced, for the p50/p99 request latency. Runs alternate between the
two topics; medians are printed, with the broker's CPU seconds per 1,000 lines (from /proc),
which other load on the machine disturbs less than the rates.
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import tempfile
import threading
import time

from ringlog.broker.testing import BrokerProcess
from ringlog.client.bench.procstat import cpu_seconds

LINES = 1000
PIPELINE_TOML = """
[pipelines.bench]
stages = [
  { type = "sample", rate = 0.5, by = "key" },
  { type = "mask", regex = '\\b\\d{16}\\b', mode = "keep_last", keep_last = 4 },
  { type = "mask", fields = ["user.email"], mode = "hmac", key = "bench-key" },
]

[pipelines.fields]
stages = [
  { type = "sample", rate = 0.5, by = "key" },
  { type = "mask", fields = ["user.email"], mode = "hmac", key = "bench-key" },
]
"""
TOPICS = ("plain", "piped", "fields")


def body() -> bytes:
    lines = []
    for i in range(LINES):
        lines.append(json.dumps({"ts": "2026-12-02T03:00:00.000Z", "level": "INFO" if i % 10 else "ERROR",
                                 "user": {"id": f"u{i % 97}", "email": f"user{i % 97}@example.com"},
                                 "msg": f"request {i} paid with card 4111111111111111 in 12 ms",
                                 "path": "/api/v1/orders"}, separators=(",", ":")))
    return "\n".join(lines).encode() + b"\n"


def request(port: int, topic: str, payload: bytes) -> bytes:
    return (f"POST /ingest/{topic}?key=user.id HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/x-ndjson\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload


def _answer(sock: socket.socket, buf: bytearray) -> int:
    """Read one response; its status."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    buf[:] = rest[length:]
    return int(head.split(b" ", 2)[1])


def flood(port: int, req: bytes, seconds: float, connections: int) -> tuple[int, int]:
    """(requests answered 200, answered 503) within `seconds`."""
    ok = [0] * connections
    busy = [0] * connections
    stop = time.monotonic() + seconds

    def one(n: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            buf = bytearray()
            while time.monotonic() < stop:
                s.sendall(req)
                status = _answer(s, buf)
                if status == 200:
                    ok[n] += 1
                elif status == 503:
                    busy[n] += 1
                else:
                    raise RuntimeError(f"status {status}")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(ok), sum(busy)


def paced(port: int, req: bytes, lines_per_s: float, seconds: float, connections: int) -> list[float]:
    """Request latencies (s) at `lines_per_s`, requests spread evenly over `connections`."""
    interval = LINES / lines_per_s * connections
    latencies: list[float] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            buf = bytearray()
            due = time.monotonic() + interval * n / connections
            end = time.monotonic() + seconds
            while due < end:
                now = time.monotonic()
                if now < due:
                    time.sleep(due - now)
                started = time.monotonic()
                s.sendall(req)
                _answer(s, buf)
                with lock:
                    latencies.append(time.monotonic() - started)
                due += interval

    threads = [threading.Thread(target=one, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=4)
    args = ap.parse_args()
    from confluent_kafka.admin import AdminClient, NewTopic

    with tempfile.TemporaryDirectory() as tmp:
        conf = f"{tmp}/broker.toml"
        with open(conf, "w") as f:
            f.write(PIPELINE_TOML)
        broker = BrokerProcess(f"{tmp}/data", "--http-listen", "127.0.0.1:0", "--config", conf).start()
        try:
            port = int(re.search(r"http http://[^:]+:(\d+)", broker.wait_line("ready on")).group(1))
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            futures = admin.create_topics([NewTopic("plain", 1, 1),
                                           NewTopic("piped", 1, 1, config={"ingest.pipeline": "bench"}),
                                           NewTopic("fields", 1, 1, config={"ingest.pipeline": "fields"})])
            for fut in futures.values():
                fut.result(10)
            payload = body()
            reqs = {t: request(port, t, payload) for t in TOPICS}
            flood(port, reqs["plain"], 1.0, args.connections)  # warm-up
            rates: dict[str, list[float]] = {t: [] for t in TOPICS}
            cpu: dict[str, list[float]] = {t: [] for t in TOPICS}
            for run in range(args.runs):
                for topic in TOPICS:
                    pid = broker.proc.pid
                    c0, t0 = cpu_seconds(pid), time.monotonic()
                    ok, busy = flood(port, reqs[topic], args.seconds, args.connections)
                    wall, used = time.monotonic() - t0, cpu_seconds(pid) - c0
                    rate = ok * LINES / wall
                    rates[topic].append(rate)
                    cpu[topic].append(used / max(ok, 1))  # per request = per 1,000 lines
                    print(f"run {run + 1} {topic:6}: {rate:,.0f} lines/s ({ok} bodies, {busy} answered 503), "
                          f"broker CPU {used / max(ok, 1) * 1000:.1f} ms per 1,000 lines", flush=True)
            med = {t: statistics.median(v) for t, v in rates.items()}
            for topic in TOPICS:
                print(f"median {topic:6}: {med[topic]:,.0f} lines/s ({med[topic] / med['plain']:.2f} of plain), "
                      f"broker CPU {statistics.median(cpu[topic]) * 1000:.1f} ms per 1,000 lines")
            for topic in TOPICS:
                lat = sorted(paced(port, reqs[topic], med[topic] / 2, args.seconds * 2, args.connections))
                p50 = lat[len(lat) // 2] * 1000
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
                print(f"at half rate ({med[topic] / 2:,.0f} lines/s) {topic}: {len(lat)} requests, "
                      f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
