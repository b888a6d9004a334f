"""One partition's transactions: the open ones (for the last stable offset) and the aborted ones
(Kafka's aborted-transactions index, `.txnindex`, kept in memory).

Kafka's rules (ProducerStateManager, TransactionIndex):
  * a transaction starts in a partition at the first transactional batch of its producer id after
    the producer's previous marker there; it ends at the control batch (marker) the coordinator
    writes with the same producer id;
  * the last stable offset (LSO) is the first offset of the earliest transaction still open, or
    the high watermark when none is; read_committed fetches stop there;
  * an aborted transaction is remembered as (producer id, first offset, last offset = the abort
    marker's offset); a read_committed fetch gets the ones overlapping its range and the client
    drops that producer's records from `first offset` until it reads the marker.

Nothing here touches the disk. The state is rebuilt at start-up by `rebuild` from the log's batch
headers (control batches are read to learn commit or abort), from the log start: retention and
DeleteRecords move the start, and `truncate_head` drops the aborted transactions that ended before
it. Owner: the partition's broker.idempotence.PartitionProducerState (`.txns`), on the Trio thread.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from . import records as trec


@attrs.frozen(slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int


def marker_kind(batch: Any, header: Any) -> int:
    """MARKER_COMMIT / MARKER_ABORT of a control batch's bytes (TxnRecordFormatError if unreadable)."""
    from ringlog.storage.records import decode_records

    recs = decode_records(bytes(batch), header)
    if not recs:
        raise trec.TxnRecordFormatError("control batch without a record")
    return trec.decode_marker(recs[0].key)


class PartitionTxns:
    __slots__ = ("ongoing", "aborted", "_aborted_ends")

    def __init__(self) -> None:
        # producer id -> first offset of its open transaction here (insertion order = start order
        # is not guaranteed after replays, so the LSO takes the min)
        self.ongoing: dict[int, int] = {}
        self.aborted: list[AbortedTxn] = []  # in marker (last offset) order
        self._aborted_ends: list[int] = []

    def on_batch(self, header: Any, first_offset: int, last_offset: int, kind: int | None = None) -> None:
        """A written (or replayed) batch; `kind` is the marker type of a control batch."""
        if not header.is_transactional or header.producer_id < 0:
            return
        pid = header.producer_id
        if header.is_control:
            start = self.ongoing.pop(pid, None)
            if kind == trec.MARKER_ABORT and start is not None:
                self.aborted.append(AbortedTxn(pid, start, last_offset))
                self._aborted_ends.append(last_offset)
            return
        self.ongoing.setdefault(pid, first_offset)

    def first_unstable_offset(self) -> int | None:
        return min(self.ongoing.values()) if self.ongoing else None

    def last_stable_offset(self, high_watermark: int) -> int:
        first = self.first_unstable_offset()
        return high_watermark if first is None else min(first, high_watermark)

    def aborted_between(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions that overlap [start, end): their marker is at or after `start`
        and they began before `end`."""
        i = bisect.bisect_left(self._aborted_ends, start)
        return [a for a in self.aborted[i:] if a.first_offset < end]

    def has_open(self, producer_id: int) -> bool:
        return producer_id in self.ongoing

    def truncate_head(self, log_start_offset: int) -> None:
        i = bisect.bisect_left(self._aborted_ends, log_start_offset)
        if i:
            del self.aborted[:i]
            del self._aborted_ends[:i]

    def truncate_tail(self, end_offset: int) -> None:
        """The log was cut back to `end_offset` (a failed fsync's undo)."""
        for pid in [p for p, first in self.ongoing.items() if first >= end_offset]:
            del self.ongoing[pid]
        while self.aborted and self.aborted[-1].last_offset >= end_offset:
            gone = self.aborted.pop()
            self._aborted_ends.pop()
            if gone.first_offset < end_offset:
                self.ongoing[gone.producer_id] = gone.first_offset


def rebuild(headers: Iterable[Any], read_batch: Callable[[Any], bytes], log_start: int = 0) -> PartitionTxns:
    """The state of a log from its batch headers in offset order; `read_batch(header)` returns a
    control batch's bytes. An unreadable marker is taken as an abort (the safe side: its records
    are not shown to read_committed consumers)."""
    state = PartitionTxns()
    for header in headers:
        if not header.is_transactional or header.producer_id < 0:
            continue
        kind = None
        if header.is_control:
            try:
                kind = marker_kind(read_batch(header), header)
            except Exception:
                kind = trec.MARKER_ABORT
        state.on_batch(header, header.base_offset, header.base_offset + header.last_offset_delta, kind)
    state.truncate_head(log_start)
    return state


def rebuild_from_log(plog: Any) -> PartitionTxns:
    """`rebuild` over a storage PartitionLog (start-up or a worker thread)."""
    from ringlog.storage.batch import split_batches

    def read_batch(header: Any) -> bytes:
        data = plog.read_records_bytes(header.base_offset, header.size)
        for h, view in split_batches(data):
            if h.base_offset == header.base_offset:
                return bytes(view)
        raise trec.TxnRecordFormatError(f"control batch at {header.base_offset} not found")

    if plog.log_end_offset <= plog.log_start_offset:
        return PartitionTxns()
    return rebuild(plog.iter_batch_headers(plog.log_start_offset), read_batch, plog.log_start_offset)
