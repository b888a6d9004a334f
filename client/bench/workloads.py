"""The client workloads: confluent-kafka (librdkafka) for every broker, each client in its own
process (so the parent's threads and the GIL do not disturb it).

Workloads (each bounded by a time budget and a byte/record budget):
* produce    N producer processes send fixed-size records round-robin over the topic's partitions
             for `duration_s` (or until `max_bytes`), then flush. Rate = delivered records / time
             from the common start to the last flush. MB/s counts record values (1 MB = 10^6 B).
             Producer: acks=all, linger.ms=5, batch.size=1000000, no compression, no idempotence.
* consume    one consumer process assigned to every partition from offset 0 reads what `produce`
             wrote. Rate = records / time from assign() to the last record.
* single     one record per request: linger.ms=0, max.in.flight=1, each produce() waited for
             (flush) before the next; requests per second.
* latency    one producer paced at a fixed rate (linger.ms=0, acks=all, at most 5 requests in
             flight) and one consumer reading the same partition; with rate None the producer is
             not paced (as fast as its bounded queue accepts): the maximum rate of this workload. Each value starts with the send time (CLOCK_MONOTONIC, the same clock
             for every process on the machine); produce-ack latency is taken in the delivery
             callback (served by a dedicated poll thread), end-to-end latency when the consumer's
             poll() returns the record. Records sent during the warm-up are not counted.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import queue
import struct
import threading
import time
from typing import Any, Callable

from .procstat import ResourceWindow

CLIENT_TIMEOUT_S = 60.0  # beyond the workload's own duration: connect, flush, drain

PRODUCE_CONF = {
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "compression.type": "none",
    "enable.idempotence": False,
    # Enough queued data to keep several 1 MB batches in flight, small enough that the final flush
    # (counted in the run's time) is short.
    "queue.buffering.max.kbytes": 32_768,
    "queue.buffering.max.messages": 1_000_000,
    # A Python callback per delivered record cost the producer process about a third of its time
    # at 100 B, enough to make it, not the broker, the limit. Only failures are reported; the
    # delivered count is sent - failed - left after flush, and the consume run that follows must
    # read back exactly that many records.
    "delivery.report.only.error": True,
}
# librdkafka stops fetching once its local queue holds queued.min.messages (100k) records and then
# waits fetch.queue.backoff.ms (default 1000 ms) before the next fetch, even when the application
# drained the queue long before. Against a broker that answers fetches quickly that stall, not the
# broker, sets the consume rate; every system gets the same short backoff.
CONSUMER_QUEUE_CONF = {"fetch.queue.backoff.ms": 10}
LATENCY_CONF = {"acks": "all", "linger.ms": 0, "max.in.flight.requests.per.connection": 5,
                "compression.type": "none", "enable.idempotence": False,
                "queue.buffering.max.kbytes": 16_384}
SINGLE_CONF = {"acks": "all", "linger.ms": 0, "max.in.flight.requests.per.connection": 1,
               "compression.type": "none", "enable.idempotence": False}

# Children fork from a fork server that has already imported this module (and confluent-kafka):
# a clean single-threaded parent, unlike the harness itself (sampler threads, broker output
# readers), and much cheaper per child than "spawn", which imports everything again each time.
_ctx = multiprocessing.get_context("forkserver")
_ctx.set_forkserver_preload(["confluent_kafka", "ringlog.client.bench.workloads"])


def percentiles(values: list[float], ps=(50, 95, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles (the value below which p% of the samples fall)."""
    if not values:
        return {f"p{p:g}": float("nan") for p in ps}
    s = sorted(values)
    out = {}
    for p in ps:
        # round() first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point
        k = max(0, min(len(s) - 1, math.ceil(round(p / 100 * len(s), 6)) - 1))
        out[f"p{p:g}"] = s[k]
    out["max"] = s[-1]
    return out


def _wait_connected(client: Any, topic: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            md = client.list_topics(topic=topic, timeout=2)
            if md.topics.get(topic) is not None and md.topics[topic].error is None:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} not visible")
        time.sleep(0.05)


# ---------------------------------------------------------------------------- child processes

def _produce_child(cfg: dict, start: Any, out: Any) -> None:
    try:
        from confluent_kafka import Producer

        failed = [0]

        def on_delivery(err: Any, msg: Any) -> None:  # failures only (delivery.report.only.error)
            if err is not None:
                failed[0] += 1

        p = Producer({"bootstrap.servers": cfg["bootstrap"], **PRODUCE_CONF, **cfg.get("conf", {}),
                      "on_delivery": on_delivery})
        _wait_connected(p, cfg["topic"])
        payload = os.urandom(cfg["size"])
        topic, nparts, size = cfg["topic"], cfg["partitions"], cfg["size"]
        max_records = max(1, cfg["max_bytes"] // size)
        part = cfg["index"]
        out.put(("ready", cfg["index"]))
        start.wait()
        t0 = time.perf_counter()
        deadline = t0 + cfg["duration_s"]
        sent = 0
        produce, poll, now = p.produce, p.poll, time.perf_counter
        while sent < max_records:
            if sent & 255 == 0:
                if now() >= deadline:
                    break
                poll(0)
            try:
                produce(topic, payload, partition=part % nparts)
            except BufferError:
                poll(0.001)
                continue
            part += 1
            sent += 1
        left = p.flush(CLIENT_TIMEOUT_S)
        elapsed = time.perf_counter() - t0
        delivered = sent - failed[0] - left
        out.put(("result", {"records": delivered, "errors": failed[0] + left, "sent": sent,
                            "bytes": delivered * size, "seconds": elapsed}))
    except BaseException as exc:  # reported to the parent, which raises
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _consume_child(cfg: dict, start: Any, out: Any) -> None:
    try:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": cfg["bootstrap"], "group.id": f"bench-{cfg['topic']}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "enable.partition.eof": False, "fetch.max.bytes": 64 * 2**20,
                      **CONSUMER_QUEUE_CONF})
        _wait_connected(c, cfg["topic"])
        out.put(("ready", 0))
        start.wait()
        expected = cfg["expected"]
        t0 = time.perf_counter()
        c.assign([TopicPartition(cfg["topic"], i, 0) for i in range(cfg["partitions"])])
        deadline = t0 + cfg["timeout_s"]
        records = nbytes = errors = 0
        last = t0
        while records < expected and time.perf_counter() < deadline:
            batch = c.consume(num_messages=min(10_000, expected - records), timeout=0.2)
            for m in batch:
                if m.error() is None:
                    records += 1
                    nbytes += len(m)
                else:
                    errors += 1
            if batch:
                last = time.perf_counter()
        c.close()
        out.put(("result", {"records": records, "bytes": nbytes, "errors": errors,
                            "seconds": last - t0, "complete": records >= expected}))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _single_child(cfg: dict, start: Any, out: Any) -> None:
    try:
        from confluent_kafka import Producer

        errors = [0]

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors[0] += 1

        p = Producer({"bootstrap.servers": cfg["bootstrap"], **SINGLE_CONF, "on_delivery": on_delivery})
        _wait_connected(p, cfg["topic"])
        payload = os.urandom(cfg["size"])
        out.put(("ready", 0))
        start.wait()
        t0 = time.perf_counter()
        deadline = t0 + cfg["duration_s"]
        n = 0
        lat = []
        while n < cfg["max_records"] and time.perf_counter() < deadline:
            t = time.perf_counter()
            p.produce(cfg["topic"], payload, partition=0)
            if p.flush(10) != 0:
                errors[0] += 1
                break
            lat.append((time.perf_counter() - t) * 1000)
            n += 1
        elapsed = time.perf_counter() - t0
        out.put(("result", {"records": n - errors[0], "errors": errors[0], "seconds": elapsed,
                            "latency_ms": percentiles(lat)}))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))


_STAMP = struct.Struct("<q")


def _latency_producer_child(cfg: dict, start: Any, out: Any) -> None:
    try:
        from confluent_kafka import Producer

        acks: list[float] = []
        errors = [0]
        warm_ns = [0]
        unpack, mono = _STAMP.unpack_from, time.monotonic_ns

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors[0] += 1
                return
            sent_ns = unpack(msg.value())[0]
            if sent_ns >= warm_ns[0]:
                acks.append((mono() - sent_ns) / 1e6)

        p = Producer({"bootstrap.servers": cfg["bootstrap"], **LATENCY_CONF, "on_delivery": on_delivery})
        _wait_connected(p, cfg["topic"])
        stop = threading.Event()

        def poller() -> None:
            # Delivery callbacks run in the thread that polls: a dedicated one takes them as soon
            # as librdkafka has them, not whenever the pacing loop gets round to it.
            while not stop.is_set():
                p.poll(0.005)

        pad = os.urandom(max(0, cfg["size"] - _STAMP.size))
        rate, duration = cfg["rate"], cfg["duration_s"]
        # rate None: unpaced, as fast as the producer's queue accepts (the maximum of this workload)
        max_records = int(rate * duration) + 1 if rate else 10_000_000
        out.put(("ready", 0))
        start.wait()
        th = threading.Thread(target=poller, daemon=True)
        th.start()
        t0 = time.perf_counter()
        warm_ns[0] = mono() + int(cfg["warmup_s"] * 1e9)
        t_end = t0 + duration
        sent = 0
        produce, now, pack = p.produce, time.perf_counter, _STAMP.pack
        while sent < max_records:
            t = now()
            if t >= t_end:
                break
            if not rate:
                try:
                    for _ in range(64):
                        produce(cfg["topic"], pack(mono()) + pad, partition=0)
                        sent += 1
                except BufferError:
                    time.sleep(0.0005)
                continue
            due = min(max_records, int((t - t0) * rate) + 1)
            while sent < due:
                try:
                    produce(cfg["topic"], pack(mono()) + pad, partition=0)
                    sent += 1
                except BufferError:
                    time.sleep(0.0005)
            wait = t0 + sent / rate - now()
            if wait > 0:
                time.sleep(wait)
        send_s = now() - t0
        # The end marker tells the consumer it has everything.
        end_by = now() + CLIENT_TIMEOUT_S
        while True:
            try:
                p.produce(cfg["topic"], pack(mono()) + pad, key=b"end", partition=0)
                break
            except BufferError:
                if now() > end_by:
                    raise
                time.sleep(0.001)
        left = p.flush(CLIENT_TIMEOUT_S)
        total_s = now() - t0
        stop.set()
        th.join()
        out.put(("result", {"sent": sent, "errors": errors[0] + left, "achieved_rate": sent / send_s,
                            "delivered_rate": (sent - errors[0] - left) / total_s,
                            "measured_records": len(acks), "ack_ms": percentiles(acks)}))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _latency_consumer_child(cfg: dict, start: Any, out: Any) -> None:
    try:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": cfg["bootstrap"], "group.id": f"bench-{cfg['topic']}",
                      "enable.auto.commit": False, "enable.partition.eof": False,
                      "fetch.wait.max.ms": 100, "fetch.min.bytes": 1, **CONSUMER_QUEUE_CONF})
        _wait_connected(c, cfg["topic"])
        c.assign([TopicPartition(cfg["topic"], 0, 0)])
        out.put(("ready", 1))
        start.wait()
        warm_ns = time.monotonic_ns() + int(cfg["warmup_s"] * 1e9)
        deadline = time.perf_counter() + cfg["duration_s"] + CLIENT_TIMEOUT_S
        e2e: list[float] = []
        unpack, mono = _STAMP.unpack_from, time.monotonic_ns
        done = False
        while not done and time.perf_counter() < deadline:
            # Whatever is already there, without waiting; else wait for the next one record (the
            # call returns as soon as it arrives). Under load this reads in batches, so the
            # consumer keeps up; the receive time is taken when the call returns.
            batch = c.consume(num_messages=1000, timeout=0) or c.consume(num_messages=1, timeout=0.1)
            recv = mono()
            for m in batch:
                if m.error() is not None:
                    continue
                if m.key() == b"end":
                    done = True
                    break
                sent_ns = unpack(m.value())[0]
                if sent_ns >= warm_ns:
                    e2e.append((recv - sent_ns) / 1e6)
        c.close()
        out.put(("result", {"e2e_ms": percentiles(e2e), "consumed": len(e2e), "complete": done}))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))


# ---------------------------------------------------------------------------- the parent side

class WorkloadError(RuntimeError):
    pass


def _run_children(targets: list[tuple[Callable, dict]], broker_pid: int | None, budget_s: float,
                  before_start: Callable[[], None] | None = None) -> tuple[list[dict], dict]:
    """Spawn the children, wait until each is connected, start them together, collect one result
    each. The broker's resources are measured from the start signal to the last result."""
    out = _ctx.Queue()
    start = _ctx.Event()
    procs = [_ctx.Process(target=fn, args=(cfg, start, out), daemon=True) for fn, cfg in targets]
    for pr in procs:
        pr.start()
    try:
        ready = 0
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while ready < len(procs):
            kind, value = _get(out, deadline, procs)
            if kind == "error":
                raise WorkloadError(value)
            ready += 1
        if before_start is not None:
            before_start()
        window = ResourceWindow(broker_pid) if broker_pid else None
        results: list[dict] = []
        if window:
            window.__enter__()
        try:
            start.set()
            deadline = time.monotonic() + budget_s + CLIENT_TIMEOUT_S
            while len(results) < len(procs):
                kind, value = _get(out, deadline, procs)
                if kind == "error":
                    raise WorkloadError(value)
                results.append(value)
        finally:
            if window:
                window.__exit__(None, None, None)
        for pr in procs:
            pr.join(10)
        return results, (window.as_dict() if window else {})
    finally:
        for pr in procs:
            if pr.is_alive():
                pr.kill()
                pr.join(5)


def _get(out: Any, deadline: float, procs: list) -> tuple[str, Any]:
    while True:
        try:
            return out.get(timeout=0.5)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise WorkloadError("client processes timed out")
            if all(not p.is_alive() for p in procs):
                raise WorkloadError("client processes exited without a result")


def produce(bootstrap: str, topic: str, *, partitions: int, size: int, producers: int,
            duration_s: float, max_bytes: int, broker_pid: int | None = None) -> dict:
    targets = [(_produce_child, {"bootstrap": bootstrap, "topic": topic, "partitions": partitions,
                                 "size": size, "duration_s": duration_s,
                                 "max_bytes": max_bytes // producers, "index": i})
               for i in range(producers)]
    results, res = _run_children(targets, broker_pid, duration_s)
    records = sum(r["records"] for r in results)
    seconds = max(r["seconds"] for r in results)
    return {"records": records, "bytes": records * size, "seconds": round(seconds, 4),
            "errors": sum(r["errors"] for r in results),
            "records_s": records / seconds, "mb_s": records * size / seconds / 1e6, **res}


def consume(bootstrap: str, topic: str, *, partitions: int, expected: int, timeout_s: float,
            broker_pid: int | None = None) -> dict:
    cfg = {"bootstrap": bootstrap, "topic": topic, "partitions": partitions, "expected": expected,
           "timeout_s": timeout_s}
    (r,), res = _run_children([(_consume_child, cfg)], broker_pid, timeout_s)
    seconds = max(r["seconds"], 1e-9)
    return {"records": r["records"], "bytes": r["bytes"], "seconds": round(seconds, 4),
            "complete": r["complete"], "errors": r["errors"],
            "records_s": r["records"] / seconds, "mb_s": r["bytes"] / seconds / 1e6, **res}


def single(bootstrap: str, topic: str, *, size: int, duration_s: float, max_records: int,
           broker_pid: int | None = None) -> dict:
    cfg = {"bootstrap": bootstrap, "topic": topic, "size": size, "duration_s": duration_s,
           "max_records": max_records}
    (r,), res = _run_children([(_single_child, cfg)], broker_pid, duration_s)
    return {"records": r["records"], "errors": r["errors"], "seconds": round(r["seconds"], 4),
            "requests_s": r["records"] / r["seconds"], "latency_ms": r["latency_ms"], **res}


def latency(bootstrap: str, topic: str, *, size: int, rate: float | None, duration_s: float,
            warmup_s: float, broker_pid: int | None = None) -> dict:
    cfg = {"bootstrap": bootstrap, "topic": topic, "size": max(size, _STAMP.size), "rate": rate,
           "duration_s": duration_s, "warmup_s": warmup_s}
    # The consumer is listed first so that it is assigned and polling before the producer starts.
    results, res = _run_children([(_latency_consumer_child, cfg), (_latency_producer_child, cfg)],
                                 broker_pid, duration_s)
    prod = next(r for r in results if "ack_ms" in r)
    cons = next(r for r in results if "e2e_ms" in r)
    return {"target_rate": rate or 0.0, "achieved_rate": prod["achieved_rate"],
            "delivered_rate": prod["delivered_rate"], "sent": prod["sent"],
            "errors": prod["errors"], "ack_ms": prod["ack_ms"], "e2e_ms": cons["e2e_ms"],
            "e2e_complete": cons["complete"], **res}
