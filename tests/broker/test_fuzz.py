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

from ringlog.broker.config import BrokerConfig
from ringlog.client.bench.procstat import hwm_bytes
from ringlog.broker.testing import BrokerThread
from ringlog.client.wire import encode_request, request_class
from ringlog.storage.records import build_batch

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


# --- every API and version, mutated, over many connections at a broker process -------------

CORPUS = 100_000 if os.environ.get("RINGLOG_SLOW") == "1" else 3_000
THREADS = 8
RSS_LIMIT_BYTES = 300 * 1024 * 1024
KEEP = "keep-data"  # never a name the generators produce (their alphabet has no 'k', 'p', 'd')


def _throw(host: str, port: int, frames: list[bytes], deadline_s: float) -> str | None:
    """Send the frames on one connection and read until the broker answers, closes or goes quiet.

    Quiet is allowed (acks=0, a long-poll fetch): the answer may legitimately take its max_wait.
    Returns a description of a failure (the broker refused the connection), or None."""
    try:
        s = socket.create_connection((host, port), timeout=deadline_s)
    except OSError as exc:
        return f"connect failed: {exc!r}"
    with s:
        try:
            s.sendall(b"".join(frames))
            while True:
                if not s.recv(65536):
                    return None  # closed by the broker
        except socket.timeout:
            return None
        except OSError:
            return None  # reset by the broker, or our write hit a closed connection


def test_every_api_mutated_over_many_connections(tmp_path) -> None:
    """The acceptance run for hostile input: valid requests of every API and version the broker
    serves, built by kio from random values and mutated by the 16 families of tests/fuzzkit.py,
    over many concurrent connections. The broker must not die, must stay under 300 MB peak RSS,
    must log no error or traceback, must keep answering a canary connection, and afterwards serve
    confluent-kafka with the data produced before intact (and `ringlog log verify` clean)."""
    import random
    import subprocess
    import sys
    import threading
    import time

    from confluent_kafka.admin import AdminClient, NewTopic

    from ringlog.broker.testing import BrokerProcess
    from ringlog.client.wire import decode_response
    from tests.fuzzkit import broker_request_classes, hostile_frame

    seed = int(os.environ.get("RINGLOG_FUZZ_SEED", "20261201"))
    data_dir = str(tmp_path / "d")
    proc = BrokerProcess(data_dir, "--set", "auto.create.topics.enable=false").start()
    try:
        admin = AdminClient({"bootstrap.servers": proc.bootstrap})
        for f in admin.create_topics([NewTopic(KEEP, 2, 1), NewTopic("fz", 1, 1), NewTopic("fz-other", 3, 1)]).values():
            f.result(15)
        p = Producer({"bootstrap.servers": proc.bootstrap, "acks": "all", "enable.idempotence": True})
        before = [b"before-%d" % i for i in range(200)]
        for i, v in enumerate(before):
            p.produce(KEEP, value=v, key=b"%d" % i, partition=i % 2)
        assert p.flush(15) == 0

        classes = broker_request_classes()
        rnd = random.Random(seed)
        cases: list[tuple[str, list[bytes]]] = []
        for _ in range(CORPUS):
            # one frame a connection mostly; sometimes several pipelined on one
            group = [hostile_frame(rnd, classes) for _ in range(1 if rnd.random() < 0.8 else rnd.randint(2, 4))]
            cases.append(("|".join(g[0] for g in group), [g[1] for g in group]))

        failures: list[str] = []
        canary_worst = [0.0]
        stop = threading.Event()
        av = request_class(18, 3)(client_software_name="canary", client_software_version="1")

        def canary() -> None:
            with socket.create_connection((proc.host, proc.port), timeout=10) as s:
                corr = 0
                while not stop.is_set():
                    corr += 1
                    t0 = time.perf_counter()
                    s.sendall(encode_request(av, corr, "canary"))
                    head = s.recv(4, socket.MSG_WAITALL)
                    body = s.recv(struct.unpack(">i", head)[0], socket.MSG_WAITALL)
                    assert decode_response(body, 18, 3)[0] == corr
                    canary_worst[0] = max(canary_worst[0], time.perf_counter() - t0)
                    stop.wait(0.05)

        def worker(part: list[tuple[str, list[bytes]]]) -> None:
            for families, frames in part:
                problem = _throw(proc.host, proc.port, frames, 0.25)
                if problem is not None:
                    failures.append(f"{families}: {problem}")
                if proc.proc.poll() is not None:
                    failures.append(f"broker died after {families}")
                    return

        canary_errors: list[BaseException] = []

        def run_canary() -> None:
            try:
                canary()
            except BaseException as exc:  # reported below
                canary_errors.append(exc)

        ct = threading.Thread(target=run_canary, daemon=True)
        ct.start()
        threads = [threading.Thread(target=worker, args=(cases[i::THREADS],)) for i in range(THREADS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        ct.join(15)
        elapsed = time.monotonic() - started
        assert proc.proc.poll() is None, "broker died:\n" + "\n".join(proc.lines[-20:])
        assert not failures, failures[:10]
        assert not canary_errors, canary_errors
        hwm = hwm_bytes(proc.proc.pid)
        print(f"\n{CORPUS} cases in {elapsed:.1f} s from {THREADS} connections at a time (seed {seed}); "
              f"broker peak RSS {hwm / 2**20:.0f} MiB; slowest canary ApiVersions {canary_worst[0] * 1000:.1f} ms")
        assert hwm < RSS_LIMIT_BYTES, f"broker peak RSS {hwm} bytes"
        bad = [line for line in proc.lines if "level=error" in line or " exc=" in line or "Traceback" in line]
        assert not bad, "\n".join(bad[:5])

        # still serving, with the earlier data intact
        p.produce(KEEP, value=b"after", partition=0)
        assert p.flush(15) == 0
        before.append(b"after")
        c = Consumer({"bootstrap.servers": proc.bootstrap, "group.id": "after-fuzz", "enable.auto.commit": False,
                      "fetch.wait.max.ms": 50})
        c.assign([TopicPartition(KEEP, 0, 0), TopicPartition(KEEP, 1, 0)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < len(before) and time.monotonic() < deadline:
            got += [m.value() for m in c.consume(100, timeout=0.5) if not m.error()]
        c.close()
        assert sorted(got) == sorted(before)
    finally:
        code = proc.stop() if proc.proc.poll() is None else proc.proc.returncode
    assert code == 0
    verify = subprocess.run([sys.executable, "-m", "ringlog.client.cli", "log", "verify", data_dir],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
