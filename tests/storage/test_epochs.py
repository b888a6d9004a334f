"""storage.epochs: the leader-epoch checkpoint's format, atomic replacement, and the load that
trusts the batch headers over a stale or damaged file."""
from __future__ import annotations

import pytest

from ringlog.storage import epochs
from ringlog.storage.batch import set_partition_leader_epoch
from ringlog.storage.log import LogConfig, PartitionLog
from ringlog.storage.records import build_batch


def test_round_trip_and_refusals(tmp_path):
    entries = [(0, 0), (2, 10), (5, 42)]
    assert epochs.encode(entries) == b"0\n3\n0 0\n2 10\n5 42\n"
    epochs.write(tmp_path, entries)
    assert epochs.read(tmp_path) == entries
    assert not (tmp_path / (epochs.FILE + ".tmp")).exists()
    for bad in (b"1\n0\n", b"0\n2\n0 0\n", b"0\n2\n3 0\n1 5\n", b"0\n1\nx y\n", b"\xff"):
        with pytest.raises((ValueError, UnicodeDecodeError)):
            epochs.decode(bad)
        (tmp_path / epochs.FILE).write_bytes(bad)
        assert epochs.read(tmp_path) is None
    assert epochs.read(tmp_path / "missing") is None


def _append(plog, epoch: int, count: int = 1) -> None:
    for _ in range(count):
        batch = bytearray(build_batch([(None, b"v", (), 1)]))
        set_partition_leader_epoch(batch, epoch)
        plog.append_batches([batch], now_ms=1)


def test_load_completes_a_stale_checkpoint_from_the_headers(tmp_path):
    plog = PartitionLog.open(tmp_path / "t-0", LogConfig(), now_ms=0)
    try:
        _append(plog, 0, 3)
        _append(plog, 2, 2)
        assert epochs.load(plog) == [(0, 0), (2, 3)]  # no file: the headers alone
        epochs.write(plog.directory, [(0, 0)])  # stale: written before epoch 2 began
        _append(plog, 4, 1)
        assert epochs.load(plog) == [(0, 0), (2, 3), (4, 5)]
        # a checkpoint naming an epoch past the log end (the tail was lost) is clipped
        epochs.write(plog.directory, [(0, 0), (2, 3), (4, 5), (9, 6)])
        assert epochs.load(plog) == [(0, 0), (2, 3), (4, 5)]
        assert epochs.clip([(0, 0), (2, 3), (4, 5)], 4) == [(0, 0), (2, 3)]
    finally:
        plog.close()


def test_append_replicated_keeps_offsets_and_refuses_going_back(tmp_path):
    from ringlog.storage.batch import parse_header, set_base_offset
    from ringlog.storage.errors import InvalidBatchError

    plog = PartitionLog.open(tmp_path / "t-0", LogConfig(), now_ms=0)
    try:
        a = bytearray(build_batch([(None, b"a", (), 1), (None, b"b", (), 1)]))
        set_base_offset(a, 0)
        b = bytearray(build_batch([(None, b"c", (), 1)]))
        set_base_offset(b, 5)  # a gap, as a leader's compaction leaves
        infos = plog.append_replicated([bytes(a), bytes(b)], now_ms=1)
        assert [(i.base_offset, i.last_offset) for i in infos] == [(0, 1), (5, 5)]
        assert plog.log_end_offset == 6
        assert [parse_header(x).base_offset for x in (a, b)] == [0, 5]
        with pytest.raises(InvalidBatchError, match="below the log end"):
            plog.append_replicated([bytes(a)], now_ms=1)
        assert plog.log_end_offset == 6
    finally:
        plog.close()
