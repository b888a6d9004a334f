"""kill -9 of a broker process under load: every acknowledged record survives, once, in order.

Default flush policy (interval): appends are written to the files before the producer is
answered, so a process crash (not an OS crash) loses nothing acknowledged.
"""
from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from broker.testing import BrokerProcess


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
