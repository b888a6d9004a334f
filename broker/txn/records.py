"""Record formats of transactions: `__transaction_state` records and control-batch markers.

`__transaction_state` (Kafka's TransactionLogKey / TransactionLogValue, version 0; integers
big-endian, STRING = i16 length + UTF-8, ARRAY = i32 count + items)::

    key   : version i16 = 0 | transactional_id STRING
    value : version i16 = 0 | producer_id i64 | producer_epoch i16 | transaction_timeout_ms i32
            | transaction_status i8 | partitions ARRAY of (topic STRING | partitions ARRAY of i32)
            | txn_last_update_timestamp_ms i64 | txn_start_timestamp_ms i64

A null value is a tombstone: the transactional id expired. Replaying the topic, last record per
key wins, rebuilds the coordinator (broker.txn.state). Value version 1 (flexible, Kafka 4) is read
for its leading fields; trailing bytes are ignored.

Control batches (attribute bits 4 and 5 set, one record, the batch carries the producer id and
epoch of the transaction they end)::

    key   : version i16 = 0 | type i16 (0 = abort, 1 = commit)
    value : version i16 = 0 | coordinator_epoch i32
"""
from __future__ import annotations

import struct

import attrs

# TransactionState ids, as Kafka stores them
EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT, COMPLETE_COMMIT, COMPLETE_ABORT, DEAD, PREPARE_EPOCH_FENCE = range(8)
STATE_NAMES = {
    EMPTY: "Empty", ONGOING: "Ongoing", PREPARE_COMMIT: "PrepareCommit", PREPARE_ABORT: "PrepareAbort",
    COMPLETE_COMMIT: "CompleteCommit", COMPLETE_ABORT: "CompleteAbort", DEAD: "Dead",
    PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}

MARKER_ABORT = 0
MARKER_COMMIT = 1


class TxnRecordFormatError(ValueError):
    """A `__transaction_state` record or control record we cannot read."""


@attrs.frozen
class TxnValue:
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: int
    partitions: tuple[tuple[str, int], ...]
    last_update_ms: int
    start_ms: int


def _s(s: str) -> bytes:
    data = s.encode("utf-8")
    return struct.pack(">h", len(data)) + data


def encode_key(transactional_id: str) -> bytes:
    return struct.pack(">h", 0) + _s(transactional_id)


def encode_value(v: TxnValue) -> bytes:
    by_topic: dict[str, list[int]] = {}
    for topic, p in sorted(v.partitions):
        by_topic.setdefault(topic, []).append(p)
    out = bytearray(struct.pack(">hqhib", 0, v.producer_id, v.producer_epoch, v.timeout_ms, v.state))
    out += struct.pack(">i", len(by_topic))
    for topic, parts in by_topic.items():
        out += _s(topic) + struct.pack(">i", len(parts)) + b"".join(struct.pack(">i", p) for p in parts)
    out += struct.pack(">qq", v.last_update_ms, v.start_ms)
    return bytes(out)


class _R:
    __slots__ = ("b", "p")

    def __init__(self, b: bytes) -> None:
        self.b = b
        self.p = 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.p + size > len(self.b):
            raise TxnRecordFormatError(f"truncated record at byte {self.p}")
        out = struct.unpack_from(fmt, self.b, self.p)
        self.p += size
        return out

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            if self.p >= len(self.b) or shift > 28:
                raise TxnRecordFormatError("bad varint")
            byte = self.b[self.p]
            self.p += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def string(self, compact: bool = False) -> str:
        n = self.uvarint() - 1 if compact else self.take(">h")[0]
        if n < 0 or self.p + n > len(self.b):
            raise TxnRecordFormatError("bad string length")
        raw = self.b[self.p : self.p + n]
        self.p += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TxnRecordFormatError(str(exc)) from None

    def count(self, compact: bool) -> int:
        n = self.uvarint() - 1 if compact else self.take(">i")[0]
        if n < 0 or n > len(self.b):
            raise TxnRecordFormatError("bad array length")
        return n


def decode_key(key: bytes) -> str:
    r = _R(bytes(key))
    (version,) = r.take(">h")
    if version not in (0, 1):
        raise TxnRecordFormatError(f"unknown __transaction_state key version {version}")
    return r.string()


def decode_value(value: bytes | None) -> TxnValue | None:
    if value is None:
        return None
    r = _R(bytes(value))
    (version,) = r.take(">h")
    if version not in (0, 1):
        raise TxnRecordFormatError(f"unknown __transaction_state value version {version}")
    compact = version >= 1
    pid, epoch, timeout, state = r.take(">qhib")
    parts = []
    for _ in range(r.count(compact)):
        topic = r.string(compact)
        for _ in range(r.count(compact)):
            parts.append((topic, r.take(">i")[0]))
        if compact:
            _skip_tags(r)
    last_update, start = r.take(">qq")
    if state not in STATE_NAMES:
        raise TxnRecordFormatError(f"unknown transaction state {state}")
    return TxnValue(pid, epoch, timeout, state, tuple(parts), last_update, start)


def _skip_tags(r: _R) -> None:
    for _ in range(r.uvarint()):
        r.uvarint()
        size = r.uvarint()
        r.p += size


# --- control records ------------------------------------------------------------------------------


def marker_key(commit: bool) -> bytes:
    return struct.pack(">hh", 0, MARKER_COMMIT if commit else MARKER_ABORT)


def marker_value(coordinator_epoch: int = 0) -> bytes:
    return struct.pack(">hi", 0, coordinator_epoch)


def decode_marker(key: bytes | None) -> int:
    """MARKER_COMMIT or MARKER_ABORT from a control record's key; TxnRecordFormatError else."""
    if key is None or len(key) < 4:
        raise TxnRecordFormatError("control record without a 4-byte key")
    version, kind = struct.unpack_from(">hh", key, 0)
    if version != 0 or kind not in (MARKER_ABORT, MARKER_COMMIT):
        raise TxnRecordFormatError(f"unknown control record (version {version}, type {kind})")
    return kind
