"""A bounds check of a request or response body, run before kio decodes it. Sans-IO.

Why: kio's native reader sizes its allocations from the counts it reads. A compact array whose
count is the uvarint ``ff ff ff ff 0f`` makes it ask for 32 GiB, and the allocation failure
aborts the process (a Rust abort, which Python cannot catch). So every length in an untrusted
body is checked here first, against the bytes that are actually left, and only a body that
passes reaches kio. Then everything kio allocates is bounded by the frame size (which
`socket.request.max.bytes` already bounds).

The walk follows the entity's kio schema (dataclass fields carrying ``kafka_type`` and ``tag``
metadata) and rejects, with `BodyError`:

- an array, string or bytes length that runs past the end of the body (for arrays: the count
  times the smallest encoding of one element);
- null (-1, or compact 0) where the schema does not allow null: Kafka's own generated parsers
  refuse "non-nullable field was serialized as null", and letting it through would hand the
  handlers a None where they iterate;
- tagged fields that run past their section or whose known content does not fill its declared
  size, or a varint longer than it may be.

Unknown tagged fields are skipped by size (kio then refuses them, which the caller answers).

Each entity class is compiled once into a list of steps, with runs of fixed-size fields merged
into one skip, so a Produce request costs a handful of Python operations per partition.
"""
from __future__ import annotations

import dataclasses
import functools
import struct
import types
import typing
from typing import Any

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

_FIXED = {
    "bool": 1, "int8": 1, "uint8": 1,
    "int16": 2, "uint16": 2, "error_code": 2,
    "int32": 4, "uint32": 4, "timedelta_i32": 4,
    "int64": 8, "uint64": 8, "float64": 8, "timedelta_i64": 8, "datetime_i64": 8,
    "uuid": 16,
}
_BLOBS = ("string", "bytes", "records")

# step kinds
_SKIP, _STRING, _BYTES, _ARRAY, _STRUCT = range(5)


class BodyError(Exception):
    """The body's framing is broken: a length, count or null that the schema does not allow."""


def _uvarint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the unsigned varint at `pos`, at most 5 bytes, before `end`."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise BodyError("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 28:
            raise BodyError("unsigned varint longer than 5 bytes")


class _Plan:
    """The compiled steps of one entity class, and the fewest bytes one encoding can take."""

    __slots__ = ("name", "steps", "tags", "flexible", "min_size")

    def __init__(self, name: str, flexible: bool) -> None:
        self.name = name
        self.flexible = flexible
        self.steps: list[tuple] = []
        # tag -> (field name, step) for the fields a flexible entity carries as tagged fields
        self.tags: dict[int, tuple] = {}
        self.min_size = 0


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type without `| None`, whether None was allowed)."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)):
            return args[0], True
    return tp, False


def _element_step(field: dataclasses.Field, tp: Any, flexible: bool, nullable: bool,
                  tagged: bool = False) -> tuple[tuple, int]:
    """(step, min encoded size) for a non-array value of type `tp`."""
    if dataclasses.is_dataclass(tp):
        plan = _plan(tp)
        # A struct in a tagged field is written without the null marker (its presence is the tag).
        nullable = nullable and not tagged
        # KIP-893 nullable structs carry an int8 marker (-1 null, 1 present) first.
        return (_STRUCT, field.name, plan, nullable), plan.min_size + (1 if nullable else 0)
    kafka_type = field.metadata.get("kafka_type")
    if kafka_type in _FIXED:
        return (_SKIP, field.name, _FIXED[kafka_type]), _FIXED[kafka_type]
    if kafka_type in _BLOBS:
        if flexible:
            return (_BYTES if kafka_type != "string" else _STRING, field.name, True, nullable), 1
        if kafka_type == "string":
            return (_STRING, field.name, False, nullable), 2
        return (_BYTES, field.name, False, nullable), 4
    raise TypeError(f"no bounds rule for kafka_type {kafka_type!r} of field {field.name}")


def _field_step(field: dataclasses.Field, flexible: bool, tagged: bool) -> tuple[tuple, int]:
    tp, nullable = _optional(field.type)
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        inner, _ = _optional(inner)
        elem, elem_min = _element_step(field, inner, flexible, False)
        # kio writes tagged fields with their non-null encodings; on the wire null is still
        # something a peer could send, so inside a tagged field it is let through to kio.
        return (_ARRAY, field.name, flexible, nullable or tagged, elem, max(elem_min, 1)), (1 if flexible else 4)
    return _element_step(field, tp, flexible, nullable or tagged, tagged)


@functools.cache
def _plan(cls: type) -> _Plan:
    flexible = bool(getattr(cls, "__flexible__", False))
    plan = _Plan(cls.__name__, flexible)
    fixed = 0
    for field in dataclasses.fields(cls):
        tag = field.metadata.get("tag")
        step, size = _field_step(field, flexible, tag is not None)
        if tag is not None:
            plan.tags[int(tag)] = step
            continue
        plan.min_size += size
        if step[0] == _SKIP:
            fixed += step[2]
            continue
        if fixed:
            plan.steps.append((_SKIP, "fixed fields", fixed))
            fixed = 0
        plan.steps.append(step)
    if fixed:
        plan.steps.append((_SKIP, "fixed fields", fixed))
    if flexible:
        plan.min_size += 1  # the tagged-field count
    return plan


def _walk(plan: _Plan, buf: Any, pos: int, end: int) -> int:
    for step in plan.steps:
        pos = _step(step, plan, buf, pos, end)
    return _tagged(plan, buf, pos, end) if plan.flexible else pos


def _length(buf: Any, pos: int, end: int, compact: bool, width: int, nullable: bool, what: str,
            kind: str) -> tuple[int, int]:
    """(length, next position): compact is uvarint - 1, else a signed i16/i32; -1 is null."""
    if compact:
        n, pos = _uvarint(buf, pos, end)
        n -= 1
    else:
        if pos + width > end:
            raise BodyError(f"{what} runs past the end")
        (n,) = (_I16 if width == 2 else _I32).unpack_from(buf, pos)
        pos += width
    if n < 0 and (n != -1 or not nullable):
        raise BodyError(f"{what}: {kind}length {n}" if n != -1 else f"{what} is not nullable but was null")
    return n, pos


def _step(step: tuple, plan: _Plan, buf: Any, pos: int, end: int) -> int:
    kind = step[0]
    if kind == _SKIP:
        pos += step[2]
        if pos > end:
            raise BodyError(f"{plan.name}.{step[1]} runs past the end")
        return pos
    if kind == _STRING or kind == _BYTES:
        _, name, compact, nullable = step
        n, pos = _length(buf, pos, end, compact, 2 if kind == _STRING else 4, nullable, f"{plan.name}.{name}", "")
        if n < 0:
            return pos
        pos += n
        if pos > end:
            raise BodyError(f"{plan.name}.{name}: {n} bytes run past the end")
        return pos
    if kind == _ARRAY:
        _, name, compact, nullable, elem, elem_min = step
        n, pos = _length(buf, pos, end, compact, 4, nullable, f"{plan.name}.{name}", "array ")
        if n < 0:
            return pos
        if n * elem_min > end - pos:
            raise BodyError(f"{plan.name}.{name}: {n} elements cannot fit in {end - pos} bytes")
        if elem[0] == _SKIP:
            return pos + n * elem[2]
        if elem[0] == _STRUCT:
            inner = elem[2]
            for _ in range(n):
                pos = _walk(inner, buf, pos, end)
            return pos
        for _ in range(n):
            pos = _step(elem, plan, buf, pos, end)
        return pos
    # _STRUCT
    _, name, inner, nullable = step
    if nullable:
        if pos >= end:
            raise BodyError(f"{plan.name}.{name} runs past the end")
        marker = buf[pos]
        pos += 1
        if marker == 0xFF:
            return pos
        if marker != 1:
            raise BodyError(f"{plan.name}.{name}: null marker {marker}")
    return _walk(inner, buf, pos, end)


# --- the compiled walk ------------------------------------------------------------------------
# _walk/_step above are the reference: they read a plan step by step. The walk that runs is
# generated from the same plan as one Python function per entity class, with the steps written
# out inline and the common one-byte varint read without a call: about three times faster, and
# the decode of every request pays for it. tests/wire/test_bounds.py checks that both agree.


def _fail(message: str) -> None:
    raise BodyError(message)


def _read_len(out: list[str], ind: str, var: str, compact: bool, width: int, what: str) -> None:
    """Lines that read a length into `var` (compact: uvarint - 1; else a signed i16/i32)."""
    if compact:
        out.append(f"{ind}if pos >= end: _fail({what + ' runs past the end'!r})")
        out.append(f"{ind}{var} = buf[pos]")
        out.append(f"{ind}if {var} < 128: pos += 1")
        out.append(f"{ind}else: {var}, pos = _uvarint(buf, pos, end)")
        out.append(f"{ind}{var} -= 1")
    else:
        unpack = "_I16" if width == 2 else "_I32"
        out.append(f"{ind}if pos + {width} > end: _fail({what + ' runs past the end'!r})")
        out.append(f"{ind}{var} = {unpack}.unpack_from(buf, pos)[0]")
        out.append(f"{ind}pos += {width}")


def _emit_null(out: list[str], ind: str, var: str, nullable: bool, what: str, kind: str) -> None:
    """Lines for a negative length in `var` (the rule of _length): -1 is null, allowed only where
    the schema has it; the caller continues with `else:`/`elif` for a real length."""
    out.append(f"{ind}if {var} < 0:")
    if nullable:
        out.append(f"{ind}    if {var} != -1: _fail({what!r} + ': {kind}length %d' % {var})")
    else:
        out.append(f"{ind}    _fail({what + ' is not nullable but was null'!r} if {var} == -1 else "
                   f"{what!r} + ': {kind}length %d' % {var})")


def _emit(step: tuple, plan: _Plan, out: list[str], ind: str, refs: dict[str, Any], depth: int) -> None:
    kind = step[0]
    what = f"{plan.name}.{step[1]}"
    n = f"n{depth}"
    if kind == _SKIP:
        out.append(f"{ind}pos += {step[2]}")
        out.append(f"{ind}if pos > end: _fail({what + ' runs past the end'!r})")
    elif kind in (_STRING, _BYTES):
        _, _name, compact, nullable = step
        _read_len(out, ind, n, compact, 2 if (kind == _STRING and not compact) else 4, what)
        _emit_null(out, ind, n, nullable, what, "")
        out.append(f"{ind}else:")
        out.append(f"{ind}    pos += {n}")
        out.append(f"{ind}    if pos > end: _fail({what!r} + ': %d bytes run past the end' % {n})")
    elif kind == _ARRAY:
        _, _name, compact, nullable, elem, elem_min = step
        _read_len(out, ind, n, compact, 4, what)
        _emit_null(out, ind, n, nullable, what, "array ")
        out.append(f"{ind}elif {n} * {elem_min} > end - pos:")
        out.append(f"{ind}    _fail({what!r} + ': %d elements cannot fit in %d bytes' % ({n}, end - pos))")
        if elem[0] == _SKIP:
            out.append(f"{ind}else: pos += {n} * {elem[2]}")
        elif elem[0] == _STRUCT:
            ref = f"w{len(refs)}"
            refs[ref] = _compiled(elem[2])
            out.append(f"{ind}else:")
            out.append(f"{ind}    for _ in range({n}): pos = {ref}(buf, pos, end)")
        else:
            out.append(f"{ind}else:")
            out.append(f"{ind}    for _ in range({n}):")
            _emit(elem, plan, out, ind + "        ", refs, depth + 1)
    else:  # _STRUCT
        _, _name, inner, nullable = step
        ref = f"w{len(refs)}"
        refs[ref] = _compiled(inner)
        if nullable:
            out.append(f"{ind}if pos >= end: _fail({what + ' runs past the end'!r})")
            out.append(f"{ind}m = buf[pos]")
            out.append(f"{ind}pos += 1")
            out.append(f"{ind}if m == 1: pos = {ref}(buf, pos, end)")
            out.append(f"{ind}elif m != 0xFF: _fail({what!r} + ': null marker %d' % m)")
        else:
            out.append(f"{ind}pos = {ref}(buf, pos, end)")


@functools.cache
def _compiled(plan: _Plan):
    refs: dict[str, Any] = {}
    out = ["def walk(buf, pos, end):"]
    for step in plan.steps:
        _emit(step, plan, out, "    ", refs, 0)
    if plan.flexible:
        # The usual case, no tagged fields, costs one comparison; anything else takes the
        # reference path (tags are rare and their fields nest).
        out.append("    if pos < end and buf[pos] == 0: return pos + 1")
        out.append("    return _tagged(plan, buf, pos, end)")
    else:
        out.append("    return pos")
    namespace: dict[str, Any] = {"_fail": _fail, "_uvarint": _uvarint, "_I16": _I16, "_I32": _I32,
                                 "_tagged": _tagged, "plan": plan, **refs}
    exec(compile("\n".join(out), f"<bounds {plan.name}>", "exec"), namespace)
    return namespace["walk"]


def _tagged(plan: _Plan, buf: Any, pos: int, end: int) -> int:
    """The tagged-field section of a flexible entity (shared by both walks)."""
    count, pos = _uvarint(buf, pos, end)
    if count > end - pos:
        raise BodyError(f"{plan.name}: {count} tagged fields in {end - pos} bytes")
    for _ in range(count):
        tag, pos = _uvarint(buf, pos, end)
        size, pos = _uvarint(buf, pos, end)
        stop = pos + size
        if stop > end:
            raise BodyError(f"{plan.name}: tagged field {tag} of {size} bytes runs past the end")
        step = plan.tags.get(tag)
        # A known field must fill its declared size exactly: kio reads the field and goes on
        # from where the field ended, not from the size, so a size larger than the field would
        # have kio read the rest as the next tag (and size an allocation from it).
        if step is not None and _step(step, plan, buf, pos, stop) != stop:
            raise BodyError(f"{plan.name}: tagged field {tag} does not fill its {size} bytes")
        pos = stop
    return pos


def check_body(cls: type, buf: bytes | memoryview, pos: int) -> int:
    """Walk the encoding of a `cls` entity starting at `pos`; return where it ends.

    Raises BodyError when a length, count or null does not fit the schema or the bytes left.
    Bytes after the entity are not looked at (the caller decides what trailing bytes mean).
    """
    return _compiled(_plan(cls))(buf, pos, len(buf))


def check_body_reference(cls: type, buf: bytes | memoryview, pos: int) -> int:
    """check_body by the step-by-step reference walk (tests compare the two)."""
    return _walk(_plan(cls), buf, pos, len(buf))


__all__ = ["BodyError", "check_body", "check_body_reference"]
