"""Idempotent producing against a running broker: raw protocol, restarts, real clients."""
from __future__ import annotations

import datetime
import os
import socket
import struct
import time
import uuid

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.create_topics.v5.request import CreatableTopic, CreateTopicsRequest
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

from ringlog.broker.config import BrokerConfig
from ringlog.broker.idempotence import list_snapshots
from ringlog.broker.snowflake import decompose
from ringlog.broker.testing import BrokerProcess, BrokerThread
from ringlog.client.wire import decode_response, encode_request
from ringlog.storage.batch import split_batches
from ringlog.storage.records import build_batch


class Wire:
    """A blocking Kafka connection speaking kio entities (enough for these tests)."""

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.cid = 0

    def call(self, request):
        self.cid += 1
        self.sock.sendall(encode_request(request, self.cid, "idempotence-test"))
        size = struct.unpack(">i", self._read(4))[0]
        cid, response = decode_response(self._read(size), int(request.__api_key__), int(request.__version__))
        assert cid == self.cid
        return response

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return bytes(buf)

    def init_producer_id(self, producer_id: int = -1, epoch: int = -1):
        r = self.call(InitProducerIdRequest(transactional_id=None, transaction_timeout=datetime.timedelta(seconds=60),
                                            producer_id=producer_id, producer_epoch=epoch))
        return r.error_code, r.producer_id, r.producer_epoch

    def create_topic(self, name: str, partitions: int = 1) -> None:
        r = self.call(CreateTopicsRequest(topics=(CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=1, assignments=(), configs=()),)))
        assert r.topics[0].error_code == ErrorCode.none, r

    def produce(self, topic: str, batch: bytes, partition: int = 0):
        r = self.call(ProduceRequest(
            transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10),
            topic_data=(TopicProduceData(name=topic, partition_data=(
                PartitionProduceData(index=partition, records=batch),)),),
        ))
        p = r.responses[0].partition_responses[0]
        return p.error_code, p.base_offset

    def close(self) -> None:
        self.sock.close()


def batch(pid: int, epoch: int, seq: int, count: int = 3, tag: str = "x") -> bytes:
    now = int(time.time() * 1000)
    return build_batch([(None, f"{tag}-{seq + i}".encode(), (), now) for i in range(count)],
                       producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def stored_values(data_dir: str, topic: str, partition: int = 0) -> list[bytes]:
    """Every record value in the partition's segment files, read straight from disk."""
    from ringlog.storage.records import decode_records

    directory = os.path.join(data_dir, f"{topic}-{partition}")
    values = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".log"):
            with open(os.path.join(directory, name), "rb") as f:
                data = f.read()
            for _header, view in split_batches(data):
                values.extend(r.value for r in decode_records(view))
    return values


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "data")


def test_retried_batch_answers_original_offset_and_is_stored_once(data_dir):
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir)) as b:
        w = Wire(b.bootstrap)
        w.create_topic("idem")
        code, pid, epoch = w.init_producer_id()
        assert code == ErrorCode.none and pid > 0 and epoch == 0
        assert decompose(pid).worker_id == 0
        first = batch(pid, epoch, 0)
        assert w.produce("idem", first) == (ErrorCode.none, 0)
        assert w.produce("idem", batch(pid, epoch, 3)) == (ErrorCode.none, 3)
        # The same batch again (a retry after a lost answer): the original offset, nothing appended.
        assert w.produce("idem", first) == (ErrorCode.none, 0)
        assert w.produce("idem", batch(pid, epoch, 3)) == (ErrorCode.none, 3)
        # A gap.
        assert w.produce("idem", batch(pid, epoch, 10))[0] == ErrorCode.out_of_order_sequence_number
        # A zombie epoch after a re-init (v3+: same id, next epoch).
        code, pid2, epoch2 = w.init_producer_id(pid, epoch)
        assert (code, pid2, epoch2) == (ErrorCode.none, pid, 1)
        assert w.produce("idem", batch(pid, 1, 0, tag="e1")) == (ErrorCode.none, 6)
        assert w.produce("idem", batch(pid, 0, 6))[0] == ErrorCode.invalid_producer_epoch
        code, _, _ = w.init_producer_id(pid, 0)
        assert code == ErrorCode.producer_fenced
        # A transactional id gets a producer id of its own from the transaction coordinator.
        r = w.call(InitProducerIdRequest(transactional_id="tx-1", transaction_timeout=datetime.timedelta(seconds=60),
                                         producer_id=-1, producer_epoch=-1))
        assert r.error_code == ErrorCode.none and r.producer_id not in (-1, pid) and r.producer_epoch == 0
        w.close()
    values = stored_values(data_dir, "idem")
    assert values == [f"x-{i}".encode() for i in range(6)] + [b"e1-0", b"e1-1", b"e1-2"]


def test_state_survives_clean_restart_via_snapshot(data_dir):
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir)) as b:
        w = Wire(b.bootstrap)
        w.create_topic("snap")
        _, pid, epoch = w.init_producer_id()
        for seq in (0, 3, 6):
            assert w.produce("snap", batch(pid, epoch, seq))[0] == ErrorCode.none
        w.close()
    snaps = list_snapshots(__import__("pathlib").Path(data_dir) / "snap-0")
    assert [offset for offset, _ in snaps] == [9]
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir)) as b:
        w = Wire(b.bootstrap)
        assert w.produce("snap", batch(pid, epoch, 6)) == (ErrorCode.none, 6)  # duplicate
        assert w.produce("snap", batch(pid, epoch, 12))[0] == ErrorCode.out_of_order_sequence_number
        assert w.produce("snap", batch(pid, epoch, 9)) == (ErrorCode.none, 9)
        assert b.broker.producer_state.rebuilt_batches == 0  # the snapshot was enough
        # New ids after a restart are above every id issued before it.
        _, pid_after, _ = w.init_producer_id()
        assert pid_after > pid
        w.close()
    assert len(stored_values(data_dir, "snap")) == 12


def test_state_rebuilt_from_the_log_after_kill_9(data_dir):
    with BrokerProcess(data_dir) as proc:
        w = Wire(proc.bootstrap)
        w.create_topic("crash")
        _, pid, epoch = w.init_producer_id()
        for seq in (0, 3, 6, 9):
            assert w.produce("crash", batch(pid, epoch, seq))[0] == ErrorCode.none
        w.close()
        proc.kill()  # no snapshot, no clean shutdown
    assert list_snapshots(__import__("pathlib").Path(data_dir) / "crash-0") == []
    with BrokerProcess(data_dir) as proc:
        w = Wire(proc.bootstrap)
        assert w.produce("crash", batch(pid, epoch, 3)) == (ErrorCode.none, 3)
        assert w.produce("crash", batch(pid, epoch, 9)) == (ErrorCode.none, 9)
        assert w.produce("crash", batch(pid, epoch, 13))[0] == ErrorCode.out_of_order_sequence_number
        assert w.produce("crash", batch(pid, epoch, 12)) == (ErrorCode.none, 12)
        _, pid_after, _ = w.init_producer_id()
        assert pid_after > pid
        w.close()
    assert stored_values(data_dir, "crash") == [f"x-{i}".encode() for i in range(15)]


def test_snapshot_above_the_log_end_is_dropped(data_dir):
    """A snapshot describing batches the log lost (cut by crash recovery) must not be trusted."""
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir)) as b:
        w = Wire(b.bootstrap)
        w.create_topic("cut")
        _, pid, epoch = w.init_producer_id()
        assert w.produce("cut", batch(pid, epoch, 0))[0] == ErrorCode.none
        w.close()
    part = __import__("pathlib").Path(data_dir) / "cut-0"
    [(offset, path)] = list_snapshots(part)
    # Forge a snapshot far above the log end that claims seq 0..98 were written.
    from ringlog.broker.idempotence import PartitionProducers
    from ringlog.storage.batch import parse_header

    fake = PartitionProducers()
    fake.replay(parse_header(build_batch([(None, b"z", (), 0)] * 99, producer_id=pid, producer_epoch=epoch,
                                         base_sequence=0, base_offset=0)))
    bogus = part / "00000000000000000500.snapshot"
    bogus.write_bytes(fake.encode_snapshot(500))
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir)) as b:
        w = Wire(b.bootstrap)
        assert w.produce("cut", batch(pid, epoch, 3)) == (ErrorCode.none, 3)
        w.close()
    assert not bogus.exists()


def test_kafka_python_idempotent_producer(data_dir):
    kafka = pytest.importorskip("kafka")
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir)) as b:
        producer = kafka.KafkaProducer(bootstrap_servers=b.bootstrap, enable_idempotence=True, acks="all",
                                       linger_ms=5)
        futures = [producer.send("kp", key=b"k", value=b"v%d" % i) for i in range(200)]
        producer.flush(30)
        offsets = [f.get(10).offset for f in futures]
        producer.close(10)
        assert offsets == list(range(200))
        assert len(b.broker.partition("kp", 0).producers.state.producers) == 1
    assert stored_values(data_dir, "kp") == [b"v%d" % i for i in range(200)]


def test_confluent_kafka_idempotent_producer(data_dir):
    ck = pytest.importorskip("confluent_kafka")
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir)) as b:
        producer = ck.Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True,
                                "linger.ms": 5, "max.in.flight.requests.per.connection": 5})
        delivered = []
        errors = []

        def on_delivery(err, msg):
            (errors if err else delivered).append(err or msg.offset())

        for i in range(500):
            producer.produce("ck", key=b"k", value=b"v%d" % i, on_delivery=on_delivery)
            if i % 100 == 0:
                producer.poll(0)
        assert producer.flush(30) == 0
        assert errors == []
        assert sorted(delivered) == list(range(500))
        state = b.broker.partition("ck", 0).producers.state
        [(pid, entry)] = state.producers.items()
        assert entry.epoch == 0 and entry.batches[-1].last_seq == 499
    assert stored_values(data_dir, "ck") == [b"v%d" % i for i in range(500)]


def test_periodic_snapshot_while_producing(data_dir):
    from ringlog.broker.idempotence import PartitionProducers

    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir)) as b:
        b.broker.producer_state.snapshot_interval_ms = 0  # snapshot after every write
        w = Wire(b.bootstrap)
        w.create_topic("periodic")
        _, pid, epoch = w.init_producer_id()
        for seq in (0, 3, 6):
            assert w.produce("periodic", batch(pid, epoch, seq))[0] == ErrorCode.none
        part = __import__("pathlib").Path(data_dir) / "periodic-0"
        snaps = list_snapshots(part)
        assert [o for o, _ in snaps] == [6, 9]  # the newest two are kept
        offset, state = PartitionProducers.decode_snapshot(snaps[-1][1].read_bytes())
        assert offset == 9
        assert [(m.first_seq, m.first_offset) for m in state.producers[pid].batches] == [(0, 0), (3, 3), (6, 6)]
        w.close()


def test_delete_records_forgets_producers_below_the_log_start(data_dir):
    from kio.schema.delete_records.v2.request import (
        DeleteRecordsPartition,
        DeleteRecordsRequest,
        DeleteRecordsTopic,
    )

    with BrokerThread(BrokerConfig(listen_port=0, data_dir=data_dir)) as b:
        w = Wire(b.bootstrap)
        w.create_topic("dr")
        _, pid, epoch = w.init_producer_id()
        assert w.produce("dr", batch(pid, epoch, 0))[0] == ErrorCode.none
        r = w.call(DeleteRecordsRequest(topics=(DeleteRecordsTopic(name="dr", partitions=(
            DeleteRecordsPartition(partition_index=0, offset=-1),)),), timeout=datetime.timedelta(seconds=5)))
        assert r.topics[0].partitions[0].low_watermark == 3
        # Kafka's rule: nothing of the producer is left, so any sequence is accepted.
        assert w.produce("dr", batch(pid, epoch, 40)) == (ErrorCode.none, 3)
        w.close()
