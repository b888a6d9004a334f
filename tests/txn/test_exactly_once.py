"""Consume-transform-produce with confluent-kafka's transactions (send_offsets_to_transaction)
while the broker is killed with -9 and the processor is dropped and restarted: the output, read
with read_committed, holds each input record exactly once.

CI runs a bounded version (10,000 records, 2 broker kills, 1 processor restart); RINGLOG_SLOW=1
the full one (100,000 records, 3 kills, 2 processor restarts). A failure reports each copier's
stderr (librdkafka's log) and the broker's last lines.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from ringlog.broker.testing import BrokerProcess

from .copier import GROUP
from .helpers import PARTITIONS, create_topics, read_confluent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SLOW = os.environ.get("RINGLOG_SLOW") == "1"
RECORDS, KILLS, RESTARTS = (100_000, 3, 2) if SLOW else (10_000, 2, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Copier:
    """A copier process (tests/txn/copier.py); `copied` counts what it reports committed."""

    log_dir: str | None = None  # where each copier's stderr goes (the test's tmp_path)
    started = 0

    def __init__(self, bootstrap: str) -> None:
        Copier.started += 1
        self.stderr_path = os.path.join(Copier.log_dir or ".", f"copier-{Copier.started}.err")
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.txn.copier", bootstrap], stdout=subprocess.PIPE,
                                         stderr=err, text=True, cwd=ROOT)
        self.copied = 0
        self.last_progress = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.copied += int(line)
            self.last_progress = time.monotonic()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def committed_total(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition("cin", p) for p in range(PARTITIONS)], timeout=5)
        return sum(max(tp.offset, 0) for tp in tps)
    except KafkaException:
        return -1
    finally:
        consumer.close()


@pytest.mark.slow
def _restart_point(bootstrap: str, counted: int) -> int:
    """Where a new copier starts: the group's committed offsets (it rewinds to them). What the
    killed one printed can be short of that by its last transaction (committed, not yet printed),
    and counting from there could leave the schedule waiting for progress that already happened."""
    committed = committed_total(bootstrap)
    return committed if committed >= 0 else counted


def _diagnostics(copier_logs: str, broker: BrokerProcess) -> str:
    """The last lines of every copier's stderr and of the broker's log, for a failure message."""
    out = []
    for name in sorted(os.listdir(copier_logs)):
        if name.endswith(".err"):
            with open(os.path.join(copier_logs, name), errors="replace") as f:
                lines = f.read().splitlines()[-15:]
            out.append(f"--- {name}:\n" + "\n".join(lines))
    out.append("--- broker:\n" + "\n".join(broker.lines[-40:]))
    return "\n".join(out)


def test_copy_exactly_once_through_broker_kills(tmp_path) -> None:
    data = str(tmp_path / "data")
    Copier.log_dir = str(tmp_path)
    port = free_port()
    broker = BrokerProcess(data, "--listen", f"127.0.0.1:{port}").start()
    bootstrap = broker.bootstrap
    copier = None
    try:
        create_topics(bootstrap, ["cin", "cout"])
        feeder = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
        for i in range(RECORDS):
            feeder.produce("cin", key=b"k%d" % i, value=b"v%07d" % i, partition=i % PARTITIONS)
            if i % 10_000 == 0:
                feeder.poll(0)
        assert feeder.flush(30) == 0

        # the schedule: broker kills and copier kills spread over the copy, by progress
        events = sorted([(RECORDS * (k + 1) // (KILLS + 1) - RECORDS // 10, "broker") for k in range(KILLS)]
                        + [(RECORDS * (k + 1) // (RESTARTS + 1), "copier") for k in range(RESTARTS)])
        copier = Copier(bootstrap)
        progress = 0  # what earlier copier instances reported
        stalls = 0
        history: list[tuple[float, str, int]] = []  # for the failure message
        started = time.monotonic()
        deadline = time.monotonic() + (900 if SLOW else 240)
        while True:
            assert time.monotonic() < deadline, (f"copied {progress + copier.copied} of {RECORDS}: {history}\n"
                                                 + _diagnostics(str(tmp_path), broker))
            done = progress + copier.copied
            if events and done >= events[0][0]:
                _, what = events.pop(0)
                history.append((round(time.monotonic() - started, 1), what, done))
                if what == "broker":
                    broker.kill()  # anywhere in the middle of the copier's transaction
                    broker = BrokerProcess(data, "--listen", f"127.0.0.1:{port}").start()
                else:
                    copier.kill()  # a copier crash; its replacement fences it
                    progress = _restart_point(bootstrap, progress + copier.copied)
                    copier = Copier(bootstrap)
            elif time.monotonic() - copier.last_progress > 8:
                # librdkafka's send_offsets_to_transaction can hang past its timeout after its
                # coordinator went away (librdkafka #5456): what an operator's watchdog does
                stalls += 1
                history.append((round(time.monotonic() - started, 1), "stall", done))
                copier.kill()
                progress = _restart_point(bootstrap, progress + copier.copied)
                copier = Copier(bootstrap)
            elif not events and done >= RECORDS and committed_total(bootstrap) == RECORDS:
                break
            elif not events and done >= RECORDS:
                # a commit the copier saw fail may still have committed, or the reverse: the
                # group's offsets are the truth; let the copier go on from them
                progress = committed_total(bootstrap) - copier.copied
                history.append((round(time.monotonic() - started, 1), "resync", progress + copier.copied))
            time.sleep(0.05)
        copier.kill()
        got = read_confluent(bootstrap, ["cout"], "read_committed", timeout=60)
        expected = Counter(b"out-v%07d" % i for i in range(RECORDS))
        assert len(got) == RECORDS and Counter(got) == expected, (len(got), stalls)
    finally:
        if copier is not None:
            copier.kill()
        broker.kill()
