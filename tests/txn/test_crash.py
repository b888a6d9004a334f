"""kill -9 at the points of a transaction: after the restart every transaction is committed or
aborted in every partition, never half.

  * before EndTxn: the transaction is Ongoing in `__transaction_state`; after the restart its
    timeout aborts it (and fences its producer);
  * between markers: a PrepareCommit record is durable and only some partitions have their
    marker; the restarted coordinator writes the markers again and completes the commit;
  * while writing `__transaction_state`: the PrepareCommit record is torn; recovery cuts it, the
    transaction is Ongoing again and is aborted by its timeout.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from kio.schema.errors import ErrorCode

from ringlog.broker.testing import BrokerProcess
from ringlog.broker.txn import records as trec
from ringlog.broker.txn_runtime import TXN_TOPIC
from ringlog.storage.batch import split_batches
from ringlog.storage.log import LogConfig, PartitionLog
from ringlog.storage.records import build_batch, decode_records

from .wire import TxnWire, txn_batch

TPS = [("ct", 0), ("ct", 1), ("ct", 2)]
FAST_TIMERS = ("--set", "transaction.abort.timed.out.transaction.cleanup.interval.ms=100")


def start_transaction(proc: BrokerProcess, tid: str, timeout_ms: int) -> tuple[TxnWire, int, int]:
    wire = TxnWire(proc.bootstrap)
    wire.create_topic("ct", 3)
    code, pid, epoch = wire.init_txn(tid, timeout_ms)
    assert code == ErrorCode.none
    assert set(wire.add_partitions(tid, pid, epoch, TPS).values()) == {ErrorCode.none}
    for _, p in TPS:
        assert wire.produce_txn(tid, "ct", p, txn_batch(pid, epoch, 0, tag=f"p{p}"))[0] == ErrorCode.none
    return wire, pid, epoch


def settled(wire: TxnWire, timeout: float = 20.0) -> dict[int, list]:
    """Per partition, what read_committed returns once no transaction is open (LSO = HWM)."""
    deadline = time.monotonic() + timeout
    while True:
        parts = {p: wire.fetch("ct", p) for _, p in TPS}
        if all(part.last_stable_offset == part.high_watermark for part in parts.values()):
            return parts
        assert time.monotonic() < deadline, {p: (x.last_stable_offset, x.high_watermark) for p, x in parts.items()}
        time.sleep(0.05)


def visible_values(part) -> list[bytes]:
    """Records a read_committed client keeps: data batches not in an aborted transaction."""
    aborted = {(a.producer_id, a.first_offset) for a in part.aborted_transactions or ()}
    out: list[bytes] = []
    open_aborted: set[int] = set()
    for header, raw in split_batches(part.records or b""):
        if header.is_control:
            open_aborted.discard(header.producer_id)
            continue
        if (header.producer_id, header.base_offset) in aborted:
            open_aborted.add(header.producer_id)
        if header.producer_id in open_aborted:
            continue
        out += [r.value for r in decode_records(raw, header)]
    return out


def test_kill_before_end_txn_aborts_after_restart(tmp_path) -> None:
    data = str(tmp_path / "data")
    with BrokerProcess(data, *FAST_TIMERS) as proc:
        wire, pid, epoch = start_transaction(proc, "crash-1", timeout_ms=1500)
        wire.close()
        proc.kill()
    with BrokerProcess(data, *FAST_TIMERS) as proc:
        wire = TxnWire(proc.bootstrap)
        parts = settled(wire)
        assert all(visible_values(part) == [] for part in parts.values())
        assert wire.describe("crash-1").transaction_state == "CompleteAbort"
        assert wire.end_txn("crash-1", pid, epoch, True) == ErrorCode.producer_fenced
        wire.close()
        assert proc.stop() == 0


def _append(data: str, topic: str, partition: int, batch: bytes) -> None:
    """Append a batch to a stopped broker's partition, as the coordinator would have."""
    plog = PartitionLog.open(Path(data) / f"{topic}-{partition}", LogConfig(), now_ms=int(time.time() * 1000))
    try:
        plog.append_batches([bytearray(batch)], now_ms=int(time.time() * 1000))
        plog.flush()
    finally:
        plog.close()


def _prepare_record(tid: str, pid: int, epoch: int, timeout_ms: int) -> bytes:
    now = int(time.time() * 1000)
    value = trec.TxnValue(pid, epoch, timeout_ms, trec.PREPARE_COMMIT, tuple(TPS), now, now)
    return build_batch([(trec.encode_key(tid), trec.encode_value(value), (), now)])


def test_kill_between_markers_completes_the_commit(tmp_path) -> None:
    data = str(tmp_path / "data")
    with BrokerProcess(data, *FAST_TIMERS) as proc:
        wire, pid, epoch = start_transaction(proc, "crash-2", timeout_ms=60_000)
        wire.close()
        proc.kill()
    # what the coordinator had written when it died: the prepare record, one of three markers
    now = int(time.time() * 1000)
    _append(data, TXN_TOPIC, 0, _prepare_record("crash-2", pid, epoch, 60_000))
    _append(data, "ct", 0, build_batch([(trec.marker_key(True), trec.marker_value(0), (), now)],
                                       producer_id=pid, producer_epoch=epoch, transactional=True, control=True))
    with BrokerProcess(data, *FAST_TIMERS) as proc:
        wire = TxnWire(proc.bootstrap)
        parts = settled(wire, timeout=10)
        assert {p: visible_values(part) for p, part in parts.items()} == {
            p: [f"p{p}-{i}".encode() for i in range(3)] for _, p in TPS}
        assert wire.describe("crash-2").transaction_state == "CompleteCommit"
        wire.close()
        assert proc.stop() == 0


def test_kill_while_writing_transaction_state_aborts(tmp_path) -> None:
    data = str(tmp_path / "data")
    with BrokerProcess(data, *FAST_TIMERS) as proc:
        wire, pid, epoch = start_transaction(proc, "crash-3", timeout_ms=1500)
        wire.close()
        proc.kill()
    _append(data, TXN_TOPIC, 0, _prepare_record("crash-3", pid, epoch, 1500))
    segment = Path(data) / f"{TXN_TOPIC}-0" / f"{0:020d}.log"
    os.truncate(segment, os.path.getsize(segment) - 7)  # the record was torn by the crash
    with BrokerProcess(data, *FAST_TIMERS) as proc:
        wire = TxnWire(proc.bootstrap)
        parts = settled(wire)
        assert all(visible_values(part) == [] for part in parts.values())
        assert wire.describe("crash-3").transaction_state == "CompleteAbort"
        wire.close()
        assert proc.stop() == 0
