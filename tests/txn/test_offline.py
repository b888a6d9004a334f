"""Offline tools and admin operations around transactions: `ringlog log dump` shows markers;
DeleteRecords stops at the last stable offset; the sans-IO pieces against simple models."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kio.schema.errors import ErrorCode

from ringlog.broker.errors import KafkaError

from ringlog.broker.testing import BrokerThread
from ringlog.broker.txn import records as trec
from ringlog.broker.txn.partition_state import PartitionTxns, rebuild
from ringlog.broker.txn.state import TxnCoordinator
from ringlog.storage.batch import parse_header
from ringlog.storage.records import build_batch

from .wire import TxnWire, txn_batch


def test_dump_shows_markers_and_delete_records_stops_at_the_lso(tmp_path) -> None:
    data = tmp_path / "data"
    with BrokerThread(data_dir=str(data), listen_port=0) as b:
        wire = TxnWire(b.bootstrap)
        wire.create_topic("d", 1)
        for tid, commit in (("x", True), ("y", False)):
            code, pid, epoch = wire.init_txn(tid)
            wire.add_partitions(tid, pid, epoch, [("d", 0)])
            assert wire.produce_txn(tid, "d", 0, txn_batch(pid, epoch, 0, count=2))[0] == ErrorCode.none
            assert wire.end_txn(tid, pid, epoch, commit) == ErrorCode.none
        code, open_pid, epoch = wire.init_txn("z")
        wire.add_partitions("z", open_pid, epoch, [("d", 0)])
        assert wire.produce_txn("z", "d", 0, txn_batch(open_pid, epoch, 0, count=1))[0] == ErrorCode.none
        async def delete(offset: int) -> int:
            return await b.broker.delete_records("d", 0, offset)

        part = b.broker.partition("d", 0)
        assert part.last_stable_offset == 6 and part.high_watermark == 7
        with pytest.raises(KafkaError) as err:  # the open transaction starts at 6
            b.call(delete, 7)
        assert err.value.code == ErrorCode.offset_out_of_range
        assert b.call(delete, -1) == 6  # "up to the end" stops there too
        wire.close()
    out = subprocess.run([sys.executable, "-c", "import sys; from ringlog.client.cli import main; sys.exit(main())",
                          "log", "dump", str(data), "--topic", "d"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["offset"], r.get("control"), r.get("value")) for r in lines] == [
        (0, None, "t-0"), (1, None, "t-1"), (2, "commit", None),
        (3, None, "t-0"), (4, None, "t-1"), (5, "abort", None), (6, None, "t-0")]
    assert lines[6]["producer_id"] == open_pid


def _header(pid: int, offset: int, count: int = 1, control: bool = False, commit: bool = True):
    if control:
        raw = build_batch([(trec.marker_key(commit), trec.marker_value(), (), 0)], producer_id=pid,
                          producer_epoch=0, transactional=True, control=True)
    else:
        raw = build_batch([(None, b"v", (), 0)] * count, producer_id=pid, producer_epoch=0, base_sequence=0,
                          transactional=True)
    raw = bytearray(raw)
    raw[0:8] = offset.to_bytes(8, "big")
    return parse_header(raw), bytes(raw)


def test_partition_txns_rebuild_matches_live_updates() -> None:
    """Interleaved transactions: the LSO and the aborted list, live and rebuilt from headers."""
    events = [(1, 0, 2, None), (2, 2, 1, None), (1, 3, 1, True), (2, 4, 1, False), (3, 5, 2, None)]
    live = PartitionTxns()
    batches = {}
    headers = []
    for pid, offset, count, marker in events:
        h, raw = _header(pid, offset, count, control=marker is not None, commit=bool(marker))
        batches[h.base_offset] = raw
        headers.append(h)
        kind = None if marker is None else (trec.MARKER_COMMIT if marker else trec.MARKER_ABORT)
        live.on_batch(h, offset, offset + count - 1, kind)
    rebuilt = rebuild(headers, lambda h: batches[h.base_offset])
    for state in (live, rebuilt):
        assert state.last_stable_offset(7) == 5
        assert [(a.producer_id, a.first_offset, a.last_offset) for a in state.aborted_between(0, 7)] == [(2, 2, 4)]
        assert state.aborted_between(5, 7) == []
    rebuilt.truncate_head(5)
    assert rebuilt.aborted == []


def test_coordinator_rules_without_io() -> None:
    c = TxnCoordinator()
    c.load_complete()
    t = c.init_producer_id(0, "a", 1000, -1, -1, new_producer_id=7)
    c.apply("a", t.value)
    assert t.reply == (7, 0)
    assert c.end_txn(1, "a", 7, 0, True) == ErrorCode.invalid_txn_state
    t = c.add_partitions(1, "a", 7, 0, [("t", 0)])
    c.apply("a", t.value)
    assert c.add_partitions(2, "a", 7, 0, [("t", 0)]) is None  # already in
    assert c.verify_produce("a", 7, 0, ("t", 1)) == ErrorCode.invalid_txn_state
    assert c.verify_produce("a", 7, 0, ("t", 0)) is None
    [timed_out] = c.timed_out(5000)
    assert timed_out.value.state == trec.PREPARE_ABORT and timed_out.value.producer_epoch == 1
    # a restart in the prepared state: load_complete hands it back to be finished
    restarted = TxnCoordinator()
    restarted.replay(trec.encode_key("a"), trec.encode_value(timed_out.value))
    [again] = restarted.load_complete()
    assert again.markers and not again.commit and set(again.value.partitions) == {("t", 0)}
