"""The transaction APIs on the wire: bad input gets Kafka's error code and nothing is written;
fencing, timeouts, transactional offsets, the last stable offset and the aborted list."""
from __future__ import annotations

import time

import pytest
from kio.schema.errors import ErrorCode

from ringlog.broker.testing import BrokerThread
from ringlog.storage.batch import split_batches

from .wire import TxnWire, txn_batch


@pytest.fixture
def broker(tmp_path):
    with BrokerThread(data_dir=str(tmp_path / "data"), listen_port=0,
                      transaction_abort_timed_out_transaction_cleanup_interval_ms=50,
                      transaction_max_timeout_ms=120_000) as b:
        yield b


@pytest.fixture
def wire(broker):
    w = TxnWire(broker.bootstrap)
    w.create_topic("t", 2)
    yield w
    w.close()


def log_end(broker, topic: str = "t", partition: int = 0) -> int:
    return broker.broker.partition(topic, partition).log.log_end_offset


def begin(wire, tid: str, tps=(("t", 0),), timeout_ms: int = 60_000):
    code, pid, epoch = wire.init_txn(tid, timeout_ms)
    assert code == ErrorCode.none and pid >= 0 and epoch == 0
    assert set(wire.add_partitions(tid, pid, epoch, list(tps)).values()) == {ErrorCode.none}
    return pid, epoch


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)
    return result


def test_batch_for_a_partition_not_added_is_refused(broker, wire) -> None:
    pid, epoch = begin(wire, "a")
    code, _ = wire.produce_txn("a", "t", 1, txn_batch(pid, epoch, 0))
    assert code == ErrorCode.invalid_txn_state
    assert log_end(broker, "t", 1) == 0
    # and without any transaction for the id at all
    code, _ = wire.produce_txn("nobody", "t", 0, txn_batch(pid, epoch, 0))
    assert code == ErrorCode.invalid_producer_id_mapping
    assert log_end(broker) == 0


def test_wrong_epoch_and_sequence_gap_are_refused(broker, wire) -> None:
    pid, epoch = begin(wire, "b")
    assert wire.produce_txn("b", "t", 0, txn_batch(pid, epoch + 1, 0))[0] == ErrorCode.invalid_producer_epoch
    assert log_end(broker) == 0
    assert wire.produce_txn("b", "t", 0, txn_batch(pid, epoch, 0))[0] == ErrorCode.none
    assert log_end(broker) == 3
    assert wire.produce_txn("b", "t", 0, txn_batch(pid, epoch, 5))[0] == ErrorCode.out_of_order_sequence_number
    assert log_end(broker) == 3


def test_client_control_batch_is_refused(broker, wire) -> None:
    pid, epoch = begin(wire, "c")
    code, _ = wire.produce_txn("c", "t", 0, txn_batch(pid, epoch, 0, count=1, control=True))
    assert code in (ErrorCode.invalid_record, ErrorCode.corrupt_message)
    assert log_end(broker) == 0


def test_end_txn_without_a_transaction(wire) -> None:
    code, pid, epoch = wire.init_txn("d")
    assert code == ErrorCode.none
    assert wire.end_txn("d", pid, epoch, True) == ErrorCode.invalid_txn_state
    assert wire.end_txn("unknown-id", pid, epoch, True) == ErrorCode.invalid_producer_id_mapping
    assert wire.init_txn("d", timeout_ms=10**9)[0] == ErrorCode.invalid_transaction_timeout


def test_fenced_id_reuse(broker, wire) -> None:
    pid, epoch = begin(wire, "e")
    assert wire.produce_txn("e", "t", 0, txn_batch(pid, epoch, 0))[0] == ErrorCode.none
    code, pid2, epoch2 = wire.init_txn("e")  # a new instance: the open transaction is aborted
    assert code == ErrorCode.none and pid2 == pid and epoch2 == epoch + 1
    end = log_end(broker)
    assert end == 4  # the 3 records and the abort marker
    assert wire.produce_txn("e", "t", 0, txn_batch(pid, epoch, 3))[0] == ErrorCode.invalid_producer_epoch
    assert wire.add_partitions("e", pid, epoch, [("t", 0)]) == {("t", 0): ErrorCode.producer_fenced}
    assert wire.end_txn("e", pid, epoch, True) == ErrorCode.producer_fenced
    assert wire.init_txn("e", producer_id=pid, epoch=epoch - 1)[0] == ErrorCode.producer_fenced
    assert log_end(broker) == end
    # nothing of the fenced transaction is visible to read_committed
    part = wire.fetch("t", 0)
    assert part.last_stable_offset == part.high_watermark == end
    assert [(a.producer_id, a.first_offset) for a in part.aborted_transactions] == [(pid, 0)]


def test_read_committed_stops_at_the_last_stable_offset(broker, wire) -> None:
    pid, epoch = begin(wire, "f")
    assert wire.produce_txn("f", "t", 0, txn_batch(pid, epoch, 0))[0] == ErrorCode.none
    wire.produce("t", __import__("tests.broker.test_idempotence_broker", fromlist=["batch"]).batch(-1, -1, -1))
    committed = wire.fetch("t", 0, isolation=1)
    uncommitted = wire.fetch("t", 0, isolation=0)
    assert committed.high_watermark == uncommitted.high_watermark == 6
    assert committed.last_stable_offset == 0 and committed.records in (None, b"")
    assert len(list(split_batches(uncommitted.records))) == 2
    assert wire.end_txn("f", pid, epoch, True) == ErrorCode.none
    committed = wire.fetch("t", 0, isolation=1)
    assert committed.last_stable_offset == committed.high_watermark == 7
    batches = [h for h, _ in split_batches(committed.records)]
    assert [h.is_control for h in batches] == [False, False, True] and not committed.aborted_transactions
    # the retried EndTxn is answered as done; the opposite is a state error
    assert wire.end_txn("f", pid, epoch, True) == ErrorCode.none
    assert wire.end_txn("f", pid, epoch, False) == ErrorCode.invalid_txn_state


def test_timed_out_transaction_is_aborted_and_its_producer_fenced(broker, wire) -> None:
    pid, epoch = begin(wire, "g", timeout_ms=200)
    assert wire.produce_txn("g", "t", 0, txn_batch(pid, epoch, 0))[0] == ErrorCode.none
    state = wait_for(lambda: (s := wire.describe("g")).transaction_state == "CompleteAbort" and s)
    assert state.producer_epoch == epoch + 1
    assert wire.end_txn("g", pid, epoch, True) == ErrorCode.producer_fenced
    part = wire.fetch("t", 0)
    assert part.last_stable_offset == part.high_watermark == 4
    assert [(a.producer_id, a.first_offset) for a in part.aborted_transactions] == [(pid, 0)]


def test_describe_and_list_transactions(wire) -> None:
    pid, epoch = begin(wire, "h", tps=(("t", 0), ("t", 1)))
    state = wire.describe("h")
    assert state.error_code == ErrorCode.none and state.transaction_state == "Ongoing"
    assert state.producer_id == pid and [(t.topic, tuple(t.partitions)) for t in state.topics] == [("t", (0, 1))]
    # an unknown id: Kafka's start time -1, which kio will not decode, so read the error by hand:
    # correlation id i32 | header tags | throttle i32 | states (compact array) | error_code i16
    from kio.schema.describe_transactions.v0.request import DescribeTransactionsRequest

    from ringlog.client.wire import encode_request

    wire.sock.sendall(encode_request(DescribeTransactionsRequest(transactional_ids=("nope",)), 99, "t"))
    size = int.from_bytes(wire._read(4), "big")
    frame = wire._read(size)
    assert frame[9] == 2 and int.from_bytes(frame[10:12], "big") == ErrorCode.transactional_id_not_found
    listed = wire.list_txns(("Ongoing", "Bogus"))
    assert [(s.transactional_id, s.transaction_state) for s in listed.transaction_states] == [("h", "Ongoing")]
    assert listed.unknown_state_filters == ("Bogus",)


@pytest.mark.parametrize("commit", [True, False])
def test_transactional_offsets_visible_only_at_commit(broker, wire, commit: bool) -> None:
    pid, epoch = begin(wire, "o")
    assert wire.add_offsets("o", pid, epoch, "grp") == ErrorCode.none
    assert wire.txn_offset_commit("o", pid, epoch, "grp", {("t", 0): 42}) == {("t", 0): ErrorCode.none}
    assert wire.offset_fetch("grp", [("t", 0)]) == {("t", 0): (ErrorCode.none, -1)}
    assert wire.offset_fetch("grp", [("t", 0)], require_stable=True)[("t", 0)][0] == ErrorCode.unstable_offset_commit
    assert wire.end_txn("o", pid, epoch, commit) == ErrorCode.none
    assert wire.offset_fetch("grp", [("t", 0)], require_stable=True) == {
        ("t", 0): (ErrorCode.none, 42 if commit else -1)}
    # a fenced producer's offsets are refused
    assert wire.init_txn("o")[0] == ErrorCode.none
    assert wire.txn_offset_commit("o", pid, epoch, "grp", {("t", 0): 50}) == {("t", 0): ErrorCode.invalid_producer_epoch}


def test_an_end_cut_short_by_its_client_leaving_is_finished_by_the_timer(broker, wire) -> None:
    """The client of an EndTxn (or of the InitProducerId that fences) goes away while the markers
    are being written: its request is cancelled with the connection. The transaction, already
    prepared, must still end (the abort timer finishes it), or the id is stuck: every later
    InitProducerId would answer CONCURRENT_TRANSACTIONS for good."""
    import trio

    from ringlog.broker.txn import records as trec

    pid, epoch = begin(wire, "cut")
    assert wire.produce_txn("cut", "t", 0, txn_batch(pid, epoch, 0))[0] == ErrorCode.none
    runtime = broker.broker.txn

    async def end_cut_short() -> str:
        real = runtime.write_markers

        async def stuck(*args):  # the markers do not get written before the client leaves
            await trio.sleep_forever()

        runtime.write_markers = stuck
        try:
            with trio.move_on_after(5) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(runtime.end_txn, "cut", pid, epoch, True)
                    while runtime.state.txns["cut"].state != trec.PREPARE_COMMIT:
                        await trio.sleep(0.005)
                    nursery.cancel_scope.cancel()  # the connection's handlers are cancelled
            assert not scope.cancelled_caught
        finally:
            runtime.write_markers = real
        return trec.STATE_NAMES[runtime.state.txns["cut"].state]

    assert broker.call(end_cut_short) == "PrepareCommit"
    # the abort timer (every 50 ms here) writes the markers and completes the commit
    wait_for(lambda: wire.describe("cut").transaction_state == "CompleteCommit")
    code, pid2, epoch2 = wire.init_txn("cut")
    assert code == ErrorCode.none and (pid2, epoch2) == (pid, epoch + 1)
    part = wire.fetch("t", 0)
    assert part.last_stable_offset == part.high_watermark == log_end(broker) == 4  # 3 records, 1 marker
