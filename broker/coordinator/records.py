"""Record formats of the internal compacted topic `__consumer_offsets` (Kafka's own layouts).

Every record has a key and a value, each starting with an i16 schema version; the key's version
says what the record is. Integers big-endian; STRING = i16 length + UTF-8 (-1 = null);
BYTES = i32 length + data (-1 = null); ARRAY = i32 count + items.

Offset commit (key versions 0 and 1 are the same layout; we write 1)
    key   : version i16 = 1 | group STRING | topic STRING | partition i32
    value : version i16 = 3 | offset i64 | leader_epoch i32 (-1 none) | metadata STRING
            | commit_timestamp i64
    (read also: v0 offset|metadata|commit_ts, v1 offset|metadata|commit_ts|expire_ts,
     v2 offset|metadata|commit_ts)

Group metadata
    key   : version i16 = 2 | group STRING
    value : version i16 = 3 | protocol_type STRING | generation i32 | protocol STRING (nullable)
            | leader STRING (nullable) | current_state_timestamp i64 (-1 unknown)
            | members ARRAY of:
                member_id STRING | group_instance_id STRING (nullable, v3+) | client_id STRING
                | client_host STRING | rebalance_timeout i32 (v1+) | session_timeout i32
                | subscription BYTES | assignment BYTES
    (read also v0-v2: no instance id before v3, no rebalance timeout in v0, no state timestamp
     before v2)

A null value is a tombstone: the offset (or the whole group's metadata) is deleted, and
compaction eventually drops the key. Replaying the topic from the start, last record per key
wins, rebuilds the coordinator's durable state (see broker.coordinator.state).

Newer Kafka versions append fields (flexible v4+ values); we never write them and ignore any
trailing bytes when reading, as Kafka does for unknown trailing data of known versions.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

import attrs

OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
OFFSET_VALUE_VERSION = 3
GROUP_VALUE_VERSION = 3


class RecordFormatError(ValueError):
    """A `__consumer_offsets` record we cannot read."""


@attrs.frozen
class OffsetKey:
    group: str
    topic: str
    partition: int


@attrs.frozen
class GroupKey:
    group: str


@attrs.frozen
class OffsetValue:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = -1
    expire_timestamp: int = -1  # only in v1 values (read, never written)


@attrs.frozen
class MemberValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout: int
    session_timeout: int
    subscription: bytes
    assignment: bytes


@attrs.frozen
class GroupValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int
    members: tuple[MemberValue, ...] = ()


# --- primitives ------------------------------------------------------------------------------


class _R:
    __slots__ = ("b", "p")

    def __init__(self, b: bytes) -> None:
        self.b = b
        self.p = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.p + n > len(self.b):
            raise RecordFormatError(f"truncated record: need {n} bytes at {self.p} of {len(self.b)}")
        out = self.b[self.p : self.p + n]
        self.p += n
        return out

    def i16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def i64(self) -> int:
        return struct.unpack(">q", self.take(8))[0]

    def string(self) -> str | None:
        n = self.i16()
        if n == -1:
            return None
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordFormatError(str(exc)) from None

    def bytes_(self) -> bytes | None:
        n = self.i32()
        return None if n == -1 else self.take(n)


def _s(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    data = s.encode("utf-8")
    if len(data) > 0x7FFF:
        raise RecordFormatError("string longer than 32767 bytes")
    return struct.pack(">h", len(data)) + data


def _b(b: bytes | None) -> bytes:
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + bytes(b)


# --- encoding --------------------------------------------------------------------------------


def offset_key(group: str, topic: str, partition: int) -> bytes:
    return struct.pack(">h", OFFSET_KEY_VERSION) + _s(group) + _s(topic) + struct.pack(">i", partition)


def group_key(group: str) -> bytes:
    return struct.pack(">h", GROUP_KEY_VERSION) + _s(group)


def offset_value(value: OffsetValue) -> bytes:
    return (
        struct.pack(">hqi", OFFSET_VALUE_VERSION, value.offset, value.leader_epoch)
        + _s(value.metadata if value.metadata is not None else "")
        + struct.pack(">q", value.commit_timestamp)
    )


def group_value(value: GroupValue) -> bytes:
    out = [
        struct.pack(">h", GROUP_VALUE_VERSION),
        _s(value.protocol_type),
        struct.pack(">i", value.generation),
        _s(value.protocol),
        _s(value.leader),
        struct.pack(">q", value.current_state_timestamp),
        struct.pack(">i", len(value.members)),
    ]
    for m in value.members:
        out += [
            _s(m.member_id),
            _s(m.group_instance_id),
            _s(m.client_id),
            _s(m.client_host),
            struct.pack(">ii", m.rebalance_timeout, m.session_timeout),
            _b(m.subscription),
            _b(m.assignment),
        ]
    return b"".join(out)


# --- decoding --------------------------------------------------------------------------------


def decode_key(key: bytes) -> OffsetKey | GroupKey:
    r = _R(bytes(key))
    version = r.i16()
    if version in (0, 1):
        group, topic = r.string(), r.string()
        if group is None or topic is None:
            raise RecordFormatError("null group or topic in an offset key")
        return OffsetKey(group, topic, r.i32())
    if version == 2:
        group = r.string()
        if group is None:
            raise RecordFormatError("null group in a group metadata key")
        return GroupKey(group)
    raise RecordFormatError(f"unknown key version {version}")


def decode_offset_value(value: bytes) -> OffsetValue:
    r = _R(bytes(value))
    version = r.i16()
    if version == 0 or version == 2:
        offset = r.i64()
        metadata = r.string() or ""
        return OffsetValue(offset, -1, metadata, r.i64())
    if version == 1:
        offset = r.i64()
        metadata = r.string() or ""
        commit = r.i64()
        return OffsetValue(offset, -1, metadata, commit, r.i64())
    if version >= 3:
        offset = r.i64()
        epoch = r.i32()
        metadata = r.string() or ""
        return OffsetValue(offset, epoch, metadata, r.i64())
    raise RecordFormatError(f"unknown offset value version {version}")


def decode_group_value(value: bytes) -> GroupValue:
    r = _R(bytes(value))
    version = r.i16()
    if version < 0 or version > 3:
        # v4 is the flexible form of newer Kafka: we do not read it
        raise RecordFormatError(f"unknown group metadata value version {version}")
    protocol_type = r.string() or ""
    generation = r.i32()
    protocol = r.string()
    leader = r.string()
    state_ts = r.i64() if version >= 2 else -1
    members: list[MemberValue] = []
    count = r.i32()
    if count < 0:
        count = 0
    for _ in range(count):
        member_id = r.string() or ""
        instance = r.string() if version >= 3 else None
        client_id = r.string() or ""
        client_host = r.string() or ""
        rebalance = r.i32() if version >= 1 else -1
        session = r.i32()
        if version == 0:
            rebalance = session
        subscription = r.bytes_() or b""
        assignment = r.bytes_() or b""
        members.append(
            MemberValue(member_id, instance, client_id, client_host, rebalance, session, subscription, assignment)
        )
    return GroupValue(protocol_type, generation, protocol, leader, state_ts, tuple(members))


def decode(key: bytes, value: bytes | None) -> tuple[OffsetKey | GroupKey, OffsetValue | GroupValue | None]:
    """Decode a whole record; the value is None for a tombstone."""
    k = decode_key(key)
    if value is None:
        return k, None
    if isinstance(k, OffsetKey):
        return k, decode_offset_value(value)
    return k, decode_group_value(value)


Record = tuple[bytes, bytes | None]


def offset_record(group: str, topic: str, partition: int, value: OffsetValue | None) -> Record:
    return offset_key(group, topic, partition), (offset_value(value) if value is not None else None)


def group_record(group: str, value: GroupValue | None) -> Record:
    return group_key(group), (group_value(value) if value is not None else None)


def describe(records: Sequence[Record]) -> list[str]:
    """Human-readable lines (for logs and the CLI)."""
    out = []
    for key, value in records:
        try:
            k, v = decode(key, value)
        except RecordFormatError as exc:
            out.append(f"<unreadable: {exc}>")
            continue
        out.append(f"{k} -> {v}")
    return out
