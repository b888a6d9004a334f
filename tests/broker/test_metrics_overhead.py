"""Does the /metrics endpoint slow produce down? A measurement, not a timed test.

    .venv/bin/python -m tests.broker.test_metrics_overhead [--records 200000] [--size 100] [--runs 3]

Runs the same confluent-kafka produce workload (N records of SIZE bytes, acks=all, one partition,
librdkafka's default batching) against a fresh `ringlog broker` process, alternating: without
the metrics endpoint, then with `--metrics-listen` and a scraper fetching /metrics every second
during the run, RUNS times each. Prints each run's records/s, the medians and the ratio
(with / without). The counters themselves are always kept; what differs is the endpoint and the
scrapes (each renders every gauge on the broker's event loop).

The pytest function below only runs a tiny version once each way, so the script keeps working.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import tempfile
import threading
import time

from confluent_kafka import Producer

from ringlog.broker.testing import BrokerProcess

METRICS_RE = re.compile(r"metrics http://(\S+):(\d+)/metrics")


def _scraper(address: tuple[str, int], stop: threading.Event, counts: list[int]) -> None:
    while not stop.is_set():
        conn = http.client.HTTPConnection(address[0], address[1], timeout=10)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                counts[0] += 1
        finally:
            conn.close()
        stop.wait(1.0)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce_run(records: int, size: int, *, metrics: bool) -> tuple[float, int, float]:
    """One run on a fresh broker process: (records per second, scrapes made during the run,
    broker CPU microseconds per record). CPU time is much less sensitive than wall time to
    other load on the machine."""
    with tempfile.TemporaryDirectory(prefix="ringlog-overhead-") as tmp:
        args = ["--metrics-listen", "127.0.0.1:0"] if metrics else []
        with BrokerProcess(tmp + "/data", *args) as proc:
            p = Producer({"bootstrap.servers": proc.bootstrap, "acks": "all", "queue.buffering.max.messages": 1_000_000})
            # warm-up: topic auto-creation and connections outside the timed part
            p.produce("overhead", b"w", partition=0)
            assert p.flush(30) == 0
            stop = threading.Event()
            scrapes = [0]
            scraper = None
            if metrics:
                m = next(METRICS_RE.search(line) for line in proc.lines if METRICS_RE.search(line))
                scraper = threading.Thread(target=_scraper, args=((m.group(1), int(m.group(2))), stop, scrapes),
                                           daemon=True)
                scraper.start()
            value = b"x" * size
            cpu_before = _cpu_seconds(proc.proc.pid)
            started = time.perf_counter()
            for _ in range(records):
                while True:
                    try:
                        p.produce("overhead", value, partition=0)
                        break
                    except BufferError:
                        p.poll(0.01)
            assert p.flush(120) == 0
            elapsed = time.perf_counter() - started
            stop.set()
            cpu = _cpu_seconds(proc.proc.pid) - cpu_before
            if scraper is not None:
                scraper.join(15)
            del p  # disconnect before the broker stops
            return records / elapsed, scrapes[0], cpu / records * 1e6


def measure(records: int, size: int, runs: int, out=print) -> dict[str, float]:
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    for i in range(runs):
        for metrics in (False, True):
            rate, scrapes, cpu_us = produce_run(records, size, metrics=metrics)
            rates[metrics].append(rate)
            cpus[metrics].append(cpu_us)
            out(f"run {i + 1} {'with metrics + scraper' if metrics else 'without metrics      '}: "
                f"{rate:,.0f} records/s, broker CPU {cpu_us:.2f} us/record"
                + (f" ({scrapes} scrapes)" if metrics else ""))
    without = statistics.median(rates[False])
    with_ = statistics.median(rates[True])
    cpu_without = statistics.median(cpus[False])
    cpu_with = statistics.median(cpus[True])
    # tiny runs can take less CPU than the clock tick: no ratio then
    cpu_ratio = cpu_with / cpu_without if cpu_without else float("nan")
    out(f"median without: {without:,.0f} records/s, {cpu_without:.2f} us CPU/record; "
        f"with: {with_:,.0f} records/s, {cpu_with:.2f} us CPU/record; "
        f"throughput ratio with/without {with_ / without:.3f}, CPU ratio {cpu_ratio:.3f}")
    return {"without": without, "with": with_, "ratio": with_ / without, "cpu_ratio": cpu_ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    measure(args.records, args.size, args.runs)


def test_overhead_script_runs() -> None:
    lines: list[str] = []
    result = measure(2000, 100, 1, out=lines.append)
    assert len(lines) == 3 and result["with"] > 0 and result["without"] > 0


if __name__ == "__main__":
    main()
