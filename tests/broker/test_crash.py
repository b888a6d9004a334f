"""kill -9 of a broker process under load: every acknowledged record survives, once, in order.

Default flush policy (interval): appends are written to the files before the producer is
answered, so a process crash (not an OS crash) loses nothing acknowledged.
"""
from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from ringlog.broker.testing import BrokerProcess


def test_sigkill_loses_no_acknowledged_record(tmp_path) -> None:
    data = str(tmp_path / "data")
    acked: list[bytes] = []
    lock = threading.Lock()

    def on_delivery(err, msg) -> None:
        if err is None:
            with lock:
                acked.append(msg.value())

    with BrokerProcess(data) as proc:
        producer = Producer({"bootstrap.servers": proc.bootstrap, "acks": "all", "linger.ms": 2,
                             "message.timeout.ms": 3000, "socket.timeout.ms": 2000,
                             "reconnect.backoff.max.ms": 200})
        i = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            producer.produce("crash", value=b"m%08d" % i, partition=0, on_delivery=on_delivery)
            i += 1
            producer.poll(0)
            if i % 100 == 0:
                producer.poll(0.01)
            with lock:
                if len(acked) >= 3000:
                    break
        proc.kill()  # SIGKILL in the middle of the stream
        producer.flush(5)  # the rest fails (broker gone); callbacks for the acked ones ran
        producer.purge()
    assert len(acked) >= 1000, "the producer did not get going"

    with BrokerProcess(data) as proc:
        recovered = [line for line in proc.lines if "recovered" in line]
        consumer = Consumer({"bootstrap.servers": proc.bootstrap, "group.id": "unused",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        low, high = consumer.get_watermark_offsets(TopicPartition("crash", 0), timeout=10)
        consumer.assign([TopicPartition("crash", 0, 0)])
        values = []
        end = time.monotonic() + 30
        while len(values) < high and time.monotonic() < end:
            for msg in consumer.consume(1000, timeout=0.5):
                assert not msg.error(), msg.error()
                values.append(msg.value())
        consumer.close()
        assert proc.stop() == 0
    assert len(values) == high
    # the log is a prefix-closed stream of what was sent; the acknowledged records all in it, once
    assert values == [b"m%08d" % n for n in range(len(values))]
    assert acked == values[: len(acked)], (len(acked), len(values), recovered)


def test_kill9_restart_warns_only_about_partitions_it_repaired(tmp_path) -> None:
    """After a kill -9 every partition is scanned; only the one whose tail was torn gets a line."""
    import json
    import os

    data = str(tmp_path / "data")
    partitions = 20
    with BrokerProcess(data, "--num-partitions", str(partitions)) as proc:
        producer = Producer({"bootstrap.servers": proc.bootstrap, "linger.ms": 1})
        for i in range(3):  # a flush per round: three batches in every partition
            for p in range(partitions):
                producer.produce("many", value=b"v%d-%d" % (p, i), partition=p)
            assert producer.flush(10) == 0
        proc.kill()
    torn = os.path.join(data, "many-7", f"{0:020d}.log")
    os.truncate(torn, os.path.getsize(torn) - 5)  # what a crash in the middle of a write leaves

    with BrokerProcess(data, "--log-format", "json") as proc:
        events = [json.loads(line) for line in proc.lines]
        assert proc.stop() == 0
    warnings = [e for e in events if e["level"] == "warning"]
    assert [(e["event"], e["topic"], e["partition"]) for e in warnings] == [("log_recovered", "many", 7)]
    assert warnings[0]["truncated_bytes"] > 0 and warnings[0]["truncated_offset"] == 2
    assert warnings[0]["msg"].startswith("recovered many-7: cut ")
    [summary] = [e for e in events if e.get("event") == "recovery"]
    assert summary["clean_shutdown"] is False and summary["repaired"] == 1 and summary["truncated"] == 1
    assert summary["partitions"] >= partitions and summary["scanned"] >= partitions  # every one was read
