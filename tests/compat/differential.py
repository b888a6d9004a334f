"""The differential tests' machinery: one request sequence run against ringlog and Apache Kafka,
the answers decoded with kio and compared field by field.

A case is a function `case(s)` that drives a `Side` (one connection to one broker): `s.call(req)`
sends a kio request, records the decoded answer under a label and returns it, so later steps can
use what the broker answered (a producer id, a member id). The same function runs once against
each broker; the two recorded sequences must be equal after `plain()` and the case's ignore rules.

What is never compared, because it must differ between two brokers: throttle times, cluster and
topic ids, hosts and ports (node ids are equal: both brokers are node 1), producer and fetch
session ids (the cases record whether there is one), and error message texts (Kafka's wording is its own; the error codes are compared). Everything else is, so a
difference is either fixed in ringlog or listed in KNOWN (and in docs/compatibility.md,
"Differences from Apache Kafka") with why.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import re
import struct
import uuid
from collections.abc import Callable
from typing import Any

from ringlog.broker.config import BrokerConfig
from ringlog.client.wire import request_class
from ringlog.storage.batch import split_batches
from ringlog.storage.records import decode_records
from tests.broker.conftest import RawClient

# The settings both brokers share (Kafka's names; ringlog's BrokerConfig fields below).
MESSAGE_MAX_BYTES = 100_000
SEGMENT_BYTES = 1 << 20
KAFKA_OVERRIDES = {
    "log.segment.bytes": str(SEGMENT_BYTES),
    "message.max.bytes": str(MESSAGE_MAX_BYTES),
    "group.min.session.timeout.ms": "6000",
}


def ringlog_reference_config(data_dir: str) -> BrokerConfig:
    return BrokerConfig(listen_port=0, data_dir=data_dir, node_id=1, group_initial_rebalance_delay_ms=0,
                        message_max_bytes=MESSAGE_MAX_BYTES, auto_create_topics=True, num_partitions=1,
                        topic_defaults={"segment.bytes": str(SEGMENT_BYTES)})


# Field names never compared, wherever they appear (see the module docstring).
IGNORED_FIELDS = frozenset({"throttle_time", "throttle_time_ms", "cluster_id", "topic_id", "host", "port",
                            "error_message", "producer_id", "session_id"})


MEMBER_ID_FIELDS = frozenset({"member_id", "leader"})


def plain(value: Any) -> Any:
    """A kio entity as plain data: dataclasses as dicts, tuples as lists, enums and kio ints as
    ints, durations in ms, record batches decoded into their headers and records."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            out[f.name] = plain_records(v) if f.name == "records" else plain(v)
        return out
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return value


def plain_records(blob) -> Any:
    if blob is None:
        return None
    out: list[Any] = []
    data = bytes(blob)
    whole = _whole_batches_length(data)
    for header, batch in split_batches(data[:whole]):
        out.append({
            "base_offset": header.base_offset, "last_offset_delta": header.last_offset_delta,
            "attributes": header.attributes, "base_sequence": header.base_sequence,
            "producer_epoch": header.producer_epoch, "records_count": header.records_count,
            "records": [{"offset": r.offset, "timestamp": r.timestamp, "key": r.key, "value": r.value,
                         "headers": [tuple(h) for h in r.headers]} for r in decode_records(batch, header)],
        })
    if whole < len(data):
        # a batch cut at the byte limit (Kafka may end a fetch with one; clients drop it)
        out.append({"partial_batch_bytes": len(data) - whole})
    return out


def _whole_batches_length(data: bytes) -> int:
    """Bytes of `data` taken by whole batches (each is base_offset i64, batch_length i32, then
    batch_length bytes)."""
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        if pos + 12 + length > len(data):
            break
        pos += 12 + length
    return pos


def differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, ringlog's value, Kafka's value) for every leaf that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key in IGNORED_FIELDS:
                continue
            out += differences(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(f"{path}[len]", len(a), len(b))] + [
                d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [(path, a, b)]


class Side:
    """One broker's connection(s) and the answers recorded by one run of a case."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.host, self.port = host, port
        self.conn = RawClient(host, port)
        self.answers: list[tuple[str, Any]] = []
        self.extra: list[RawClient] = []
        self.aliases: dict[str, str] = {}

    def connect(self) -> RawClient:
        c = RawClient(self.host, self.port)
        self.extra.append(c)
        return c

    def call(self, request, label: str | None = None, conn: RawClient | None = None,
             shape: Callable[[Any], Any] | None = None):
        """Send `request`, record its answer (as plain data, passed through `shape` when the case
        compares it in another form, e.g. sorted) and return the kio answer."""
        resp = (conn or self.conn).call(request)
        value = plain(resp)
        self.answers.append((label or type(request).__name__.removesuffix("Request"), shape(value) if shape else value))
        return resp

    def members(self, value: Any) -> Any:
        """A shape: member ids (each broker makes its own) replaced by m1, m2... in the order they
        first appear in this case, so that who leads and who is answered still compare."""
        if isinstance(value, dict):
            return {k: (self._alias(v) if k in MEMBER_ID_FIELDS and isinstance(v, str) else self.members(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.members(v) for v in value]
        return value

    def _alias(self, member_id: str) -> str:
        if not member_id:
            return member_id
        return self.aliases.setdefault(member_id, f"m{len(self.aliases) + 1}")

    def record(self, label: str, value: Any) -> None:
        """Something observed besides an answer (a closed connection, a count)."""
        self.answers.append((label, value))

    def quiet(self, request, conn: RawClient | None = None):
        """A request whose answer is not compared (set-up, polling)."""
        return (conn or self.conn).call(request)

    def close(self) -> None:
        for c in [self.conn, *self.extra]:
            c.close()


@dataclasses.dataclass(frozen=True)
class Known:
    """An accepted difference: paths (regexes over "label.path") and why (docs/compatibility.md)."""
    paths: tuple[str, ...]
    why: str


def compare(case: str, ringlog: Side, kafka: Side, known: tuple[Known, ...] = ()) -> list[str]:
    """Readable lines for every difference not accepted by `known`, and for every accepted
    difference the case no longer shows (fixed: drop it here and in docs/compatibility.md)."""
    lines = []
    if [label for label, _ in ringlog.answers] != [label for label, _ in kafka.answers]:
        return [f"{case}: different steps: ringlog {[l for l, _ in ringlog.answers]} "
                f"kafka {[l for l, _ in kafka.answers]}"]
    seen: set[Known] = set()
    for i, ((label, a), (_, b)) in enumerate(zip(ringlog.answers, kafka.answers)):
        for path, x, y in differences(a, b):
            where = f"{i}:{label}{path}"
            matched = [k for k in known if any(re.search(p, where) for p in k.paths)]
            if matched:
                seen.update(matched)
                continue
            lines.append(f"{case} {where}: ringlog {x!r} kafka {y!r}")
    lines += [f"{case}: accepted difference not seen any more: {k.why[:80]}..." for k in known if k not in seen]
    return lines


def sort_by(key: str, path: tuple[str, ...]) -> Callable[[Any], Any]:
    """A shape: the list at `path` sorted by each element's `key` (answers whose order Kafka does
    not define, e.g. DeleteTopics')."""
    def shape(value: Any) -> Any:
        node = value
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = sorted(node[path[-1]], key=lambda e: str(e[key]))
        return value
    return shape


def configs_by_name(value: Any) -> Any:
    """A shape: every list of config entries (dicts with "name" and "value") as a dict by name, so
    that a config one broker lists and the other does not shows as one difference."""
    if isinstance(value, dict):
        return {k: configs_by_name(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(e, dict) and "name" in e and "value" in e for e in value):
            return {e["name"]: configs_by_name({k: v for k, v in e.items() if k != "name"}) for e in value}
        return [configs_by_name(v) for v in value]
    return value


# --- request builders ----------------------------------------------------------------------


def module_of(cls) -> Any:
    return __import__(cls.__module__, fromlist=["x"])


def req(api_key: int, version: int):
    """(request class, its module) for building nested entities."""
    cls = request_class(api_key, version)
    assert cls is not None, (api_key, version)
    return cls, module_of(cls)


def ms(n: int) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=n)
