"""Client library benchmark: produce and consume msgs/s of ringlog's Trio client against aiokafka,
kafka-python and confluent-kafka, all against one ringlog broker, in one run.

    .venv/bin/python -m ringlog.client.clientbench --records 200000
    .venv/bin/python -m ringlog.client.clientbench --records 200000 --clients ringlog,aiokafka --runs 5

What it does:

- starts one `ringlog broker` subprocess (client.bench.brokers.RinglogBroker, `--fsync interval`) on a
  fresh data directory; every client talks to it over 127.0.0.1.
- produce: for each run, each acks setting (1 and all) and each client, a new one-partition topic;
  the client, in its own subprocess, sends `--records` records with a `--value-size` byte value
  and no key, then flushes. Rate = records / time from the first send to the end of the flush.
  Afterwards the parent checks the topic's end offset, so a client that dropped records fails the
  run instead of looking fast.
- consume: one topic filled once (by confluent-kafka, acks=all) is read from offset 0 by each
  client in its own subprocess, with manual assignment and no group. Rate = records / time from
  the assignment to the last record. Each client uses its batch read call (our `getmany`,
  aiokafka `getmany`, kafka-python `poll`, confluent `consume`).
- settings: `matched` (default) gives every producer linger 5 ms, 1 MB batches, no compression,
  no idempotence (librdkafka's defaults for linger and batch size); `defaults` leaves each client's
  own defaults apart from acks and idempotence off.
- the order of clients rotates from run to run so slow phases of a shared machine do not always
  hit the same client; medians over `--runs` and ratios against ours are printed, with the load
  average before and after and each client process's CPU time per record (user + system from
  getrusage, all threads), which other load on the machine disturbs less than wall time.

A worker is this module run with `--worker produce|consume --client NAME ...`; it prints one JSON
line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CLIENTS = ("ringlog", "aiokafka", "kafka-python", "confluent")
LINGER_MS = 5
BATCH_BYTES = 1_000_000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _value(size: int) -> bytes:
    return bytes((i * 7 + 13) % 256 for i in range(size))


# --- produce workers (each returns (seconds, cpu seconds)) --------------------------------------


def produce_ringlog(bootstrap: str, topic: str, n: int, acks: str, size: int, matched: bool) -> tuple[float, float]:
    import trio

    from ringlog.client import open_producer

    value = _value(size)
    conf: dict[str, Any] = {"acks": acks if acks == "all" else int(acks), "enable_idempotence": False}
    if matched:
        conf.update(linger_ms=LINGER_MS, batch_size=BATCH_BYTES)

    async def main() -> tuple[float, float]:
        async with open_producer(bootstrap, **conf) as p:
            await p.partitions_for(topic)
            send = p.send
            t0, c0 = time.perf_counter(), _cpu()
            for _ in range(n):
                await send(topic, value)
            await p.flush()
            return time.perf_counter() - t0, _cpu() - c0

    return trio.run(main)


def produce_aiokafka(bootstrap: str, topic: str, n: int, acks: str, size: int, matched: bool) -> tuple[float, float]:
    import asyncio

    from aiokafka import AIOKafkaProducer

    value = _value(size)
    conf: dict[str, Any] = {"acks": acks if acks == "all" else int(acks), "enable_idempotence": False}
    if matched:
        conf.update(linger_ms=LINGER_MS, max_batch_size=BATCH_BYTES, max_request_size=2 * BATCH_BYTES)

    async def main() -> tuple[float, float]:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, **conf)
        await p.start()
        try:
            await p.partitions_for(topic)
            send = p.send
            t0, c0 = time.perf_counter(), _cpu()
            for _ in range(n):
                await send(topic, value)
            await p.flush()
            return time.perf_counter() - t0, _cpu() - c0
        finally:
            await p.stop()

    return asyncio.run(main())


def produce_kafka_python(bootstrap: str, topic: str, n: int, acks: str, size: int, matched: bool) -> tuple[float, float]:
    from kafka import KafkaProducer

    value = _value(size)
    conf: dict[str, Any] = {"acks": acks if acks == "all" else int(acks), "enable_idempotence": False}
    if matched:
        conf.update(linger_ms=LINGER_MS, batch_size=BATCH_BYTES, max_request_size=2 * BATCH_BYTES)
    p = KafkaProducer(bootstrap_servers=bootstrap, **conf)
    try:
        p.partitions_for(topic)
        send = p.send
        t0, c0 = time.perf_counter(), _cpu()
        for _ in range(n):
            send(topic, value)
        p.flush()
        return time.perf_counter() - t0, _cpu() - c0
    finally:
        p.close()


def produce_confluent(bootstrap: str, topic: str, n: int, acks: str, size: int, matched: bool) -> tuple[float, float]:
    from confluent_kafka import Producer

    value = _value(size)
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "acks": acks, "enable.idempotence": False}
    if matched:
        conf.update({"linger.ms": LINGER_MS, "batch.size": BATCH_BYTES, "compression.type": "none"})
    p = Producer(conf)
    p.list_topics(topic, timeout=10)
    produce, poll = p.produce, p.poll
    t0, c0 = time.perf_counter(), _cpu()
    for _ in range(n):
        try:
            produce(topic, value)
        except BufferError:  # local queue full: serve delivery reports until there is room
            while True:
                poll(0.01)
                try:
                    produce(topic, value)
                    break
                except BufferError:
                    pass
    left = p.flush(60)
    if left:
        raise RuntimeError(f"{left} records not delivered")
    return time.perf_counter() - t0, _cpu() - c0


# --- consume workers -----------------------------------------------------------------------------


def consume_ringlog(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    import trio

    from ringlog.client import open_consumer

    async def main() -> tuple[float, float]:
        async with open_consumer(bootstrap, auto_offset_reset="earliest") as c:
            t0, c0 = time.perf_counter(), _cpu()
            c.assign([(topic, 0)])
            got = 0
            while got < n:
                batch = await c.getmany(timeout_ms=1000)
                for records in batch.values():
                    got += len(records)
            return time.perf_counter() - t0, _cpu() - c0

    return trio.run(main)


def consume_aiokafka(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def main() -> tuple[float, float]:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        try:
            t0, c0 = time.perf_counter(), _cpu()
            c.assign([TopicPartition(topic, 0)])
            got = 0
            while got < n:
                batch = await c.getmany(timeout_ms=1000)
                for records in batch.values():
                    got += len(records)
            return time.perf_counter() - t0, _cpu() - c0
        finally:
            await c.stop()

    return asyncio.run(main())


def consume_kafka_python(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        t0, c0 = time.perf_counter(), _cpu()
        c.assign([TopicPartition(topic, 0)])
        got = 0
        while got < n:
            batch = c.poll(timeout_ms=1000)
            for records in batch.values():
                got += len(records)
        return time.perf_counter() - t0, _cpu() - c0
    finally:
        c.close()


def consume_confluent(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    from confluent_kafka import Consumer, TopicPartition

    # the broker bench's setting: librdkafka's default pauses fetching for 1 s once 100k records
    # are queued, which a 200k-record run would measure instead of the client
    from ringlog.client.bench.workloads import CONSUMER_QUEUE_CONF

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "clientbench", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", **CONSUMER_QUEUE_CONF})
    try:
        c.list_topics(topic, timeout=10)
        t0, c0 = time.perf_counter(), _cpu()
        c.assign([TopicPartition(topic, 0, 0)])
        got = 0
        while got < n:
            for m in c.consume(10000, timeout=1.0):
                if m.error() is None:
                    got += 1
        return time.perf_counter() - t0, _cpu() - c0
    finally:
        c.close()


PRODUCERS = {"ringlog": produce_ringlog, "aiokafka": produce_aiokafka,
             "kafka-python": produce_kafka_python, "confluent": produce_confluent}
CONSUMERS = {"ringlog": consume_ringlog, "aiokafka": consume_aiokafka,
             "kafka-python": consume_kafka_python, "confluent": consume_confluent}


def worker(args: argparse.Namespace) -> int:
    if args.worker == "produce":
        secs, cpu = PRODUCERS[args.client](args.bootstrap, args.topic, args.records, args.acks, args.value_size,
                                           args.settings == "matched")
    else:
        secs, cpu = CONSUMERS[args.client](args.bootstrap, args.topic, args.records)
    print(json.dumps({"seconds": secs, "cpu": cpu}), flush=True)
    return 0


# --- the parent ----------------------------------------------------------------------------------


def _run_worker(args: argparse.Namespace, mode: str, client: str, bootstrap: str, topic: str,
                acks: str = "all") -> dict[str, float]:
    cmd = [sys.executable, "-m", "ringlog.client.clientbench", "--worker", mode, "--client", client,
           "--bootstrap", bootstrap, "--topic", topic, "--records", str(args.records),
           "--value-size", str(args.value_size), "--acks", acks, "--settings", args.settings]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{client} {mode} failed:\n{proc.stderr[-3000:]}")
    line = proc.stdout.strip().splitlines()[-1]
    return json.loads(line)


async def _create_topic(bootstrap: str, topic: str) -> None:
    from ringlog.client import NewTopic, open_admin

    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1)])


async def _end_offset(bootstrap: str, topic: str) -> int:
    from ringlog.client import open_admin

    async with open_admin(bootstrap) as admin:
        offsets = await admin.list_offsets({(topic, 0): -1})
        return next(iter(offsets.values()))


def _fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringlog.client.clientbench", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset of " + ", ".join(CLIENTS))
    p.add_argument("--acks", default="1,all", help="acks settings for produce (comma-separated)")
    p.add_argument("--settings", choices=("matched", "defaults"), default="matched")
    p.add_argument("--no-consume", action="store_true")
    p.add_argument("--no-produce", action="store_true")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per client process")
    p.add_argument("--json", metavar="FILE", help="also write the raw results here")
    # worker mode (internal)
    p.add_argument("--worker", choices=("produce", "consume"), help=argparse.SUPPRESS)
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--bootstrap", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    import trio

    # a `ringlog broker` subprocess, started without importing the broker package
    from ringlog.client.bench.brokers import RinglogBroker

    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for c in clients:
        if c not in CLIENTS:
            p.error(f"unknown client {c!r}")
    acks_list = [a.strip() for a in args.acks.split(",") if a.strip()]
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    results: dict[str, list[dict[str, float]]] = {}
    data_dir = tempfile.mkdtemp(prefix="ringlog-clientbench-")
    print(f"clientbench {started}: {args.records} records x {args.value_size} B, {args.runs} runs, "
          f"settings={args.settings}, load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
          flush=True)
    try:
        with RinglogBroker(data_dir, "interval") as broker:
            bs = broker.bootstrap
            consume_topic = "bench-consume"
            if not args.no_consume:
                trio.run(_create_topic, bs, consume_topic)
                fill = "confluent" if "confluent" in CLIENTS else clients[0]
                _run_worker(args, "produce", fill, bs, consume_topic, "all")
                end = trio.run(_end_offset, bs, consume_topic)
                if end != args.records:
                    raise RuntimeError(f"consume topic holds {end} records, not {args.records}")
            for run in range(args.runs):
                order = clients[run % len(clients):] + clients[: run % len(clients)]
                if not args.no_produce:
                    for acks in acks_list:
                        for client in order:
                            topic = f"bench-{client}-acks{acks}-{run}"
                            trio.run(_create_topic, bs, topic)
                            r = _run_worker(args, "produce", client, bs, topic, acks)
                            end = trio.run(_end_offset, bs, topic)
                            if end != args.records:
                                raise RuntimeError(f"{client} acks={acks}: topic holds {end} records, not {args.records}")
                            key = f"produce acks={acks} {client}"
                            results.setdefault(key, []).append(r)
                            print(f"  run {run + 1} {key}: {_fmt_rate(args.records / r['seconds'])} msg/s, "
                                  f"{r['cpu'] / args.records * 1e6:.2f} us CPU/msg", flush=True)
                if not args.no_consume:
                    for client in order:
                        r = _run_worker(args, "consume", client, bs, consume_topic)
                        key = f"consume {client}"
                        results.setdefault(key, []).append(r)
                        print(f"  run {run + 1} {key}: {_fmt_rate(args.records / r['seconds'])} msg/s, "
                              f"{r['cpu'] / args.records * 1e6:.2f} us CPU/msg", flush=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    load_after = os.getloadavg()

    medians = {k: args.records / statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    cpu = {k: statistics.median(r["cpu"] for r in v) / args.records * 1e6 for k, v in results.items()}
    print()
    print(f"medians of {args.runs} runs, {args.records} x {args.value_size} B "
          f"(load average before {load_before[0]:.2f}, after {load_after[0]:.2f}):")
    print()
    print("| workload | client | msg/s (median) | client CPU us/msg | ours / this |")
    print("|---|---|---|---|---|")
    groups = sorted({k.rsplit(" ", 1)[0] for k in results}, key=lambda g: (g.startswith("consume"), g))
    for g in groups:
        ours = medians.get(f"{g} ringlog")
        for c in clients:
            k = f"{g} {c}"
            if k not in medians:
                continue
            ratio = f"{ours / medians[k]:.2f}x" if ours else "-"
            print(f"| {g} | {c} | {_fmt_rate(medians[k])} | {cpu[k]:.2f} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"started": started, "records": args.records, "value_size": args.value_size,
                       "runs": args.runs, "settings": args.settings, "load_before": load_before,
                       "load_after": load_after, "results": results, "medians": medians,
                       "cpu_us_per_msg": cpu}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
