"""Hostile-input generators shared by the wire and broker fuzz tests.

* `random_entity(cls, rnd)`: a valid kio entity of any request or response class, its values drawn
  from `rnd` (a random.Random, or hypothesis' st.randoms() so failures shrink and replay), built
  from the class's schema: every API and version kio ships is covered without a hand-written
  builder per API.
* `MUTATIONS`: the mutation families, each `(name, fn(body, rnd) -> body)` over the bytes of a
  request body or whole frame: lengths, counts, varints, tagged fields, nulls, truncation, batch
  internals with a valid CRC.
* `hostile_frame(rnd, classes)`: one frame to throw at a broker: a valid request, or one mutated by
  one to four families, with a size prefix that is usually honest (so the body reaches the decoder).
"""
from __future__ import annotations

import dataclasses
import datetime
import struct
import types
import typing
import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from ringlog.client.wire import encode_request, request_class
from ringlog.storage.batch import ATTRIBUTES_OFFSET as CRC_START
from ringlog.storage.records import build_batch

_INT_RANGES = {
    "int8": (-128, 127), "int16": (-(2**15), 2**15 - 1), "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1), "uint8": (0, 255), "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1),
}
# Names that exist on the fuzzed broker are sometimes chosen, so handlers reach their real paths
# (not only "unknown topic"). The fuzz broker's data topic is never among them.
NAMES = ["fz", "fz-other", "", "a" * 249, "__consumer_offsets", "grp", "x.y_z"]
CODECS = (0, 1, 2, 3, 4)


def _small_int(rnd, lo: int, hi: int) -> int:
    r = rnd.random()
    if r < 0.5:
        return max(lo, min(hi, rnd.randint(-2, 16)))
    if r < 0.6:
        return rnd.choice([lo, hi, -1 if lo < 0 else 0])
    return rnd.randint(lo, hi)


def _string(rnd) -> str:
    r = rnd.random()
    if r < 0.5:
        return rnd.choice(NAMES)
    if r < 0.8:
        return "".join(rnd.choice("abcxyz-._09") for _ in range(rnd.randint(0, 12)))
    return "".join(chr(rnd.randint(32, 0x2FFF)) for _ in range(rnd.randint(0, 40)))


def random_batch(rnd) -> bytes:
    n = rnd.randint(1, 5)
    records = [(None if rnd.random() < 0.3 else b"k%d" % i, bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 40))),
                (), 1_700_000_000_000 + i) for i in range(n)]
    kwargs: dict[str, Any] = {"compression": rnd.choice(CODECS)} if rnd.random() < 0.5 else {}
    if rnd.random() < 0.3:
        kwargs.update(producer_id=rnd.randint(0, 1000), producer_epoch=0, base_sequence=rnd.randint(0, 5))
    return build_batch(records, **kwargs)


def _value(field: dataclasses.Field, tp: Any, rnd, depth: int) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if field.metadata.get("tag") is None and rnd.random() < 0.15:
            return None
        return _value(field, args[0], rnd, depth)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        n = 0 if depth > 3 else min(rnd.randint(0, 4), rnd.randint(0, 4))
        return tuple(_value(field, inner, rnd, depth + 1) for _ in range(n))
    if dataclasses.is_dataclass(tp):
        return random_entity(tp, rnd, depth + 1)
    kafka_type = field.metadata.get("kafka_type")
    if kafka_type in _INT_RANGES:
        lo, hi = _INT_RANGES[kafka_type]
        return tp(_small_int(rnd, lo, hi)) if tp is not int else _small_int(rnd, lo, hi)
    if kafka_type == "bool":
        return rnd.random() < 0.5
    if kafka_type == "float64":
        return tp(rnd.uniform(-1e6, 1e6))
    if kafka_type == "timedelta_i32":
        return datetime.timedelta(milliseconds=_small_int(rnd, 0, 2**31 - 1) if rnd.random() < 0.9 else rnd.randint(0, 50))
    if kafka_type == "timedelta_i64":
        return datetime.timedelta(milliseconds=_small_int(rnd, 0, 2**40))
    if kafka_type == "datetime_i64":
        return datetime.datetime.fromtimestamp(rnd.randint(0, 2**31) / 1000, tz=datetime.timezone.utc)
    if kafka_type == "uuid":
        return uuid.UUID(int=rnd.getrandbits(128)) if rnd.random() < 0.8 else uuid.UUID(int=0)
    if kafka_type == "error_code":
        return rnd.choice(list(ErrorCode))
    if kafka_type == "string":
        return _string(rnd)
    if kafka_type == "records":
        return random_batch(rnd) if rnd.random() < 0.8 else bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 70)))
    if kafka_type == "bytes":
        return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 30)))
    raise TypeError(f"no generator for {kafka_type!r} ({field.name})")


def random_entity(cls: type, rnd, depth: int = 0) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        values[field.name] = _value(field, hints.get(field.name, field.type), rnd, depth)
    return cls(**values)


def broker_request_classes() -> list[type]:
    """Every request class in the broker's version windows (what a client may send it)."""
    from ringlog.broker.handlers import load_handlers

    out = []
    for spec in load_handlers().values():
        for v in range(spec.min_version, spec.max_version + 1):
            cls = request_class(spec.api_key, v)
            if cls is not None:
                out.append(cls)
    return out


def kio_classes() -> list[type]:
    """Every request and response class kio ships."""
    from ringlog.client.wire import response_class

    out = []
    for key in range(0, 100):
        for v in range(0, 20):
            for find in (request_class, response_class):
                cls = find(key, v)
                if cls is not None:
                    out.append(cls)
    return out


# --- mutation families ----------------------------------------------------------------------


def _at(body: bytearray, rnd) -> int:
    return rnd.randint(0, len(body)) if body else 0


def _put(body: bytearray, rnd, raw: bytes, insert: bool) -> bytearray:
    i = _at(body, rnd)
    if insert:
        body[i:i] = raw
    else:
        body[i:i + len(raw)] = raw
    return body


def m_flip(body, rnd):
    if body:
        i = rnd.randrange(len(body))
        body[i] ^= 1 << rnd.randrange(8)
    return body


def m_byte(body, rnd):
    if body:
        body[rnd.randrange(len(body))] = rnd.choice([0, 1, 0x7F, 0x80, 0xFE, 0xFF, rnd.getrandbits(8)])
    return body


def m_truncate(body, rnd):
    return body[: rnd.randint(0, len(body))]


def m_extend(body, rnd):
    return body + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 32)))


def m_splice(body, rnd):
    return _put(body, rnd, bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 8))), True)


def m_huge_uvarint(body, rnd):
    # 2**32-1: a compact array/string count that once asked kio for 32 GiB
    raw = rnd.choice([b"\xff\xff\xff\xff\x0f", b"\xff\xff\xff\x7f", b"\x80\x80\x80\x80\x10", b"\xff\xff\x03"])
    return _put(body, rnd, raw, rnd.random() < 0.5)


def m_i32_extreme(body, rnd):
    raw = struct.pack(">i", rnd.choice([2**31 - 1, -1, -2, -(2**31), 1 << 24, 65536]))
    return _put(body, rnd, raw, rnd.random() < 0.3)


def m_i16_extreme(body, rnd):
    raw = struct.pack(">h", rnd.choice([-1, -2, 2**15 - 1, -(2**15)]))
    return _put(body, rnd, raw, rnd.random() < 0.3)


def m_overlong_varint(body, rnd):
    return _put(body, rnd, b"\x80" * rnd.randint(1, 8), True)


def m_null(body, rnd):
    # null for whatever length sits there: legacy arrays/bytes (-1 i32), strings (-1 i16), compact 0
    raw = rnd.choice([b"\xff\xff\xff\xff", b"\xff\xff", b"\x00"])
    return _put(body, rnd, raw, False)


def m_tagged(body, rnd):
    # a tagged-field section: unknown tags, sizes past the end, many fields
    count = rnd.choice([1, 2, 127, 0x7F])
    tag = rnd.choice([0, 1, 5, 100, 0x7F])
    size = rnd.choice([0, 1, 3, 0x7F, 0x7F7F])
    raw = bytes([count, tag]) + (bytes([size]) if size < 0x80 else b"\xff\x7f") + b"\x00" * rnd.randint(0, 4)
    return _put(body, rnd, raw, rnd.random() < 0.5)


def m_repeat(body, rnd):
    # one region repeated many times: long arrays of plausible elements
    if not body:
        return body
    i = rnd.randrange(len(body))
    j = min(len(body), i + rnd.randint(1, 16))
    return body[:j] + body[i:j] * rnd.randint(2, 200) + body[j:]


def _find_batch(body: bytearray) -> int:
    """Offset of a RecordBatch v2 header in body (magic 2 at +16, batchLength plausible), or -1."""
    for i in range(len(body) - 61):
        if body[i + 16] == 2:
            (length,) = struct.unpack_from(">i", body, i + 8)
            if 49 <= length <= len(body) - i - 12:
                return i
    return -1


def m_batch(body, rnd):
    """Change one field inside a record batch and recompute its CRC, so it passes the CRC check
    and reaches the deeper ones (counts, offsets deltas, codecs, producer fields, records)."""
    i = _find_batch(body)
    if i < 0:
        return m_flip(body, rnd)
    (length,) = struct.unpack_from(">i", body, i + 8)
    end = i + 12 + length
    field = rnd.choice(["length", "count", "delta", "attrs", "codec", "pid", "seq", "records", "magic"])
    if field == "length":
        struct.pack_into(">i", body, i + 8, rnd.choice([0, 1, length - 1, length + 1, 2**31 - 1, -1]))
    elif field == "count":
        struct.pack_into(">i", body, i + 57, rnd.choice([0, -1, 2**31 - 1, 1 << 20, 2]))
    elif field == "delta":
        struct.pack_into(">i", body, i + 23, rnd.choice([-1, 0, 2**31 - 1, 5]))
    elif field == "attrs":
        struct.pack_into(">h", body, i + 21, rnd.getrandbits(16) - 32768)
    elif field == "codec":
        (attrs,) = struct.unpack_from(">h", body, i + 21)
        struct.pack_into(">h", body, i + 21, (attrs & ~7) | rnd.randrange(8))
    elif field == "pid":
        struct.pack_into(">q", body, i + 43, rnd.choice([-1, 0, 2**63 - 1, rnd.getrandbits(40)]))
    elif field == "seq":
        struct.pack_into(">i", body, i + 53, rnd.choice([-1, -2, 2**31 - 1, 0]))
    elif field == "records" and end > i + 61:
        j = rnd.randrange(i + 61, end)
        body[j] = rnd.getrandbits(8)
    elif field == "magic":
        body[i + 16] = rnd.choice([0, 1, 3, 255])
    from crc32c import crc32c

    if rnd.random() < 0.9 and end <= len(body):
        struct.pack_into(">I", body, i + 17, crc32c(bytes(body[i + CRC_START:end])))
    return body


MUTATIONS = [
    ("flip", m_flip), ("byte", m_byte), ("truncate", m_truncate), ("extend", m_extend),
    ("splice", m_splice), ("huge-uvarint", m_huge_uvarint), ("i32-extreme", m_i32_extreme),
    ("i16-extreme", m_i16_extreme), ("overlong-varint", m_overlong_varint), ("null", m_null),
    ("tagged", m_tagged), ("repeat", m_repeat), ("batch", m_batch),
]
# Families that act on the whole frame (header included) are in hostile_frame: version swap,
# api-key swap, size-prefix lies. With the 13 above that makes 16.
FRAME_FAMILIES = ("version", "api-key", "size-prefix")


def _tame(entity: Any) -> Any:
    """Keep random admin requests from doing unbounded work that is not hostile input:
    topic creation and partition growth run as validate_only."""
    if hasattr(entity, "validate_only"):
        return dataclasses.replace(entity, validate_only=True)
    return entity


def hostile_frame(rnd, classes: list[type]) -> tuple[str, bytes]:
    """(families applied, frame) for one hostile request."""
    cls = rnd.choice(classes)
    entity = _tame(random_entity(cls, rnd))
    frame = bytearray(encode_request(entity, rnd.randint(0, 2**31 - 1), rnd.choice(["fz", None, ""])))
    body = frame[4:]
    applied = []
    if rnd.random() < 0.85:
        for _ in range(rnd.randint(1, 4)):
            name, fn = rnd.choice(MUTATIONS)
            # mutate the body after the fixed header part, mostly, so kio's input is what varies
            head = 8 if rnd.random() < 0.8 and len(body) > 8 else 0
            body = body[:head] + fn(bytearray(body[head:]), rnd)
            applied.append(name)
    if rnd.random() < 0.1 and len(body) >= 4:
        struct.pack_into(">h", body, 2, rnd.randint(-2, 20))
        applied.append("version")
    if rnd.random() < 0.05 and len(body) >= 4:
        struct.pack_into(">h", body, 0, rnd.choice([0, 1, 3, 8, 11, 19, 22, 32, 60, 67, rnd.randint(-5, 100)]))
        applied.append("api-key")
    size = len(body)
    if rnd.random() < 0.05:
        size = rnd.choice([0, -1, size + 1, max(0, size - 1), 2**31 - 1])
        applied.append("size-prefix")
    return "+".join(applied) or "valid", struct.pack(">i", size) + bytes(body)
