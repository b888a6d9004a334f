"""Ingest pipelines: ordered stages (filter, mask, sample, enrich) that records pass through
before they are stored.

Declared in the broker's TOML config, one table per pipeline, and named by a topic's
`ingest.pipeline` config::

    [pipelines.web]
    stages = [
      { type = "filter", field = "level", equals = ["DEBUG", "TRACE"], action = "drop" },
      { type = "mask", fields = ["user.email"], mode = "hmac", key = "s3cret" },
      { type = "mask", regex = '\\b\\d{13,16}\\b', mode = "keep_last", keep_last = 4 },
      { type = "sample", rate = 0.1, by = "key", levels = { ERROR = 1.0, DEBUG = 0.01 } },
      { type = "enrich", fields = { env = "prod" }, receive_time = "received_at" },
    ]

A record is its key and its value. A value that is a JSON object is worked on as that object
(field paths are dotted: `user.email`); any other value as text (regex stages see the text,
field stages find no fields). A record no stage changed keeps its exact bytes; a changed JSON
record is written back compact (`{"a":1}`), UTF-8.

Stages (every option is checked at start-up; a bad one stops the broker with one line naming the
pipeline, the stage and the option):

  filter   drop (action = "drop", the default) or keep only (action = "keep") the records that
           match: `field` + `equals` (a value or list of values), `field` + `regex`, `regex` alone
           (on the whole text / the compact JSON), `field` alone (the field exists), or
           `min_level` (matches records whose level is below it: DEBUG < INFO < WARN < ERROR <
           FATAL; `level_field`, default "level", names the field)
  mask     `fields` (paths) and/or `regex` (every string value, or the text); `mode` = "fixed"
           (replace with `mask`, default "***"), "keep_last" (mask all but the last `keep_last`
           characters with `*`; values no longer than that are masked whole) or "hmac"
           (HMAC-SHA256 of the value under `key` or the environment variable `key_env`, as
           "hmac:" + 32 hex digits, so equal values stay equal and joinable)
  sample   keep `rate` (0..1) of the records; `by` = "random" (default; `seed` fixes the
           sequence) or "key" (a hash of the record key, or of `field` when given: a key is kept
           or dropped as a whole); `levels` = { LEVEL = rate } overrides per level
  enrich   `fields` = { name = value } set on every JSON record; `receive_time` = field name set
           to the time the broker received the record (`receive_time_format` "iso" (default) or
           "ms"); text records are left as they are

Nothing here does I/O or touches Trio: callers pass time in (`now_ms`).
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import random
import re
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LEVELS = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "NOTICE": 2, "WARN": 3, "WARNING": 3, "ERROR": 4, "ERR": 4,
          "CRITICAL": 5, "FATAL": 5}
STAGE_TYPES = ("filter", "mask", "sample", "enrich")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads


class PipelineError(ValueError):
    """A bad pipeline declaration; str() is one line naming the pipeline and the stage."""


class Rec:
    """One record in a pipeline. `obj` is the JSON object of the value (None: the value is text,
    in `text`); `raw` the value's bytes as received, kept while no stage changed the record."""

    __slots__ = ("key", "raw", "obj", "text", "headers", "timestamp", "changed")

    def __init__(self, key: bytes | None, raw: bytes | None, obj: Any = None, text: str | None = None,
                 headers: Sequence[Any] = (), timestamp: int = -1) -> None:
        self.key = key
        self.raw = raw
        self.obj = obj
        self.text = text
        self.headers = headers
        self.timestamp = timestamp
        self.changed = False

    @classmethod
    def from_value(cls, key: bytes | None, value: bytes | None, headers: Sequence[Any] = (),
                   timestamp: int = -1) -> Rec:
        """A record from stored bytes: a JSON object if the value is one, else text."""
        obj = None
        text = None
        if value is not None:
            stripped = value.lstrip()
            if stripped[:1] == b"{":
                try:
                    parsed = _loads(value)
                    if isinstance(parsed, dict):
                        obj = parsed
                except ValueError:
                    pass
            if obj is None:
                text = value.decode("utf-8", "replace")
        return cls(key, value, obj, text, headers, timestamp)

    def value(self) -> bytes | None:
        if not self.changed:
            return self.raw
        if self.obj is not None:
            return _dumps(self.obj).encode("utf-8")
        return None if self.text is None else self.text.encode("utf-8")

    def whole_text(self) -> str:
        if self.obj is not None:
            return _dumps(self.obj)
        return self.text or ""


# --- field paths ----------------------------------------------------------------------------------

def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def _set(obj: dict, path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


_MISSING = object()
_TOKEN_CACHE = 65536


def _level(rec: Rec, path: tuple[str, ...]) -> int | None:
    if rec.obj is None:
        return None
    value = _get(rec.obj, path)
    if isinstance(value, str):
        return LEVELS.get(value.upper())
    return None


# --- option parsing -------------------------------------------------------------------------------

class _Options:
    """A stage's options, each taken once; what is left over is an unknown option."""

    def __init__(self, where: str, table: Mapping[str, Any]) -> None:
        self.where = where
        self.table = dict(table)

    def fail(self, message: str) -> PipelineError:
        return PipelineError(f"{self.where}: {message}")

    def take(self, name: str, kinds: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        if name not in self.table:
            if default is _MISSING:
                raise self.fail(f"needs {name}")
            return default
        value = self.table.pop(name)
        if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise self.fail(f"{name} = {value!r}: expected {_kind_names(kinds)}")
        if not isinstance(value, kinds):
            raise self.fail(f"{name} = {value!r}: expected {_kind_names(kinds)}")
        return value

    def path(self, name: str, default: Any = _MISSING) -> tuple[str, ...] | None:
        value = self.take(name, str, default)
        if value is None:
            return None
        parts = tuple(value.split("."))
        if not all(parts):
            raise self.fail(f"{name} = {value!r}: expected a dotted field path")
        return parts

    def regex(self, name: str) -> re.Pattern[str] | None:
        value = self.take(name, str, None)
        if value is None:
            return None
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise self.fail(f"{name} = {value!r} is not a valid regular expression: {exc}") from None
        if pattern.match(""):
            raise self.fail(f"{name} = {value!r} matches the empty string")
        return pattern

    def rate(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise self.fail(f"{name} = {value!r}: expected a rate from 0 to 1")
        return float(value)

    def level(self, name: str, value: Any) -> int:
        if not isinstance(value, str) or value.upper() not in LEVELS:
            raise self.fail(f"{name} {value!r}: expected a level ({', '.join(sorted(set(LEVELS)))})")
        return LEVELS[value.upper()]

    def done(self) -> None:
        if self.table:
            raise self.fail(f"unknown option {sorted(self.table)[0]}")


def _kind_names(kinds: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in (kinds if isinstance(kinds, tuple) else (kinds,)))


# --- stages ---------------------------------------------------------------------------------------

class Stage:
    """One stage: `apply(records, now_ms) -> records`; counts what it saw and did."""

    kind = ""
    options: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name           # "<index>:<type>", the metrics label
        self.records_in = 0
        self.records_out = 0
        self.dropped = 0
        self.masked = 0
        self.seconds = 0.0

    def run(self, records: list[Rec], now_ms: int) -> list[Rec]:
        started = time.perf_counter()
        out = self.apply(records, now_ms)
        self.seconds += time.perf_counter() - started
        self.records_in += len(records)
        self.records_out += len(out)
        self.dropped += len(records) - len(out)
        return out

    def apply(self, records: list[Rec], now_ms: int) -> list[Rec]:
        raise NotImplementedError


class Filter(Stage):
    kind = "filter"
    options = ("action", "field", "equals", "regex", "min_level", "level_field")

    def __init__(self, name: str, opts: _Options) -> None:
        super().__init__(name)
        action = opts.take("action", str, "drop")
        if action not in ("drop", "keep"):
            raise opts.fail(f"action = {action!r}: expected drop or keep")
        self.keep = action == "keep"
        self.field = opts.path("field", None)
        equals = opts.take("equals", (str, int, float, bool, list), None)
        self.equals = None if equals is None else (equals if isinstance(equals, list) else [equals])
        self.regex = opts.regex("regex")
        min_level = opts.take("min_level", str, None)
        self.min_level = None if min_level is None else opts.level("min_level", min_level)
        self.level_field = opts.path("level_field", "level")
        if self.equals is not None and self.field is None:
            raise opts.fail("equals needs field")
        if self.field is None and self.regex is None and self.min_level is None:
            raise opts.fail("needs field, regex or min_level")
        if self.min_level is not None and (self.field is not None or self.regex is not None):
            raise opts.fail("min_level goes alone (without field or regex)")
        opts.done()

    def matches(self, rec: Rec) -> bool:
        if self.min_level is not None:
            level = _level(rec, self.level_field)
            return level is not None and level < self.min_level
        if self.field is None:
            return self.regex.search(rec.whole_text()) is not None
        if rec.obj is None:
            return False
        value = _get(rec.obj, self.field)
        if value is _MISSING:
            return False
        if self.equals is not None:
            return value in self.equals
        if self.regex is not None:
            return isinstance(value, str) and self.regex.search(value) is not None
        return True

    def apply(self, records: list[Rec], now_ms: int) -> list[Rec]:
        keep = self.keep
        matches = self.matches
        return [r for r in records if matches(r) == keep]


class Mask(Stage):
    kind = "mask"
    options = ("fields", "regex", "mode", "mask", "keep_last", "key", "key_env")

    def __init__(self, name: str, opts: _Options) -> None:
        super().__init__(name)
        fields = opts.take("fields", list, [])
        self.fields = []
        for f in fields:
            if not isinstance(f, str) or not all(f.split(".")):
                raise opts.fail(f"fields: {f!r} is not a dotted field path")
            self.fields.append(tuple(f.split(".")))
        self.regex = opts.regex("regex")
        if not self.fields and self.regex is None:
            raise opts.fail("needs fields or regex")
        mode = opts.take("mode", str, "fixed")
        if mode not in ("fixed", "keep_last", "hmac"):
            raise opts.fail(f"mode = {mode!r}: expected fixed, keep_last or hmac")
        self.mode = mode
        self.mask = opts.take("mask", str, "***")
        self.keep_last = opts.take("keep_last", int, 4 if mode == "keep_last" else 0)
        if self.keep_last < 0:
            raise opts.fail(f"keep_last = {self.keep_last}: expected at least 0")
        key = opts.take("key", str, None)
        key_env = opts.take("key_env", str, None)
        if mode == "hmac":
            if key is None and key_env is not None:
                key = os.environ.get(key_env)
                if not key:
                    raise opts.fail(f"key_env = {key_env!r}: the environment variable is not set")
            if not key:
                raise opts.fail("mode hmac needs key or key_env")
        elif key is not None or key_env is not None:
            raise opts.fail("key and key_env are for mode hmac")
        self.key = key.encode("utf-8") if key else b""
        self._mac = hmac.new(self.key, digestmod=hashlib.sha256)
        # replacements that need no escaping inside a JSON string (Mask._in_line)
        self._plain_mask = mode != "fixed" or not any(c in self.mask for c in '"\\') and self.mask.isprintable()
        # value -> token: log fields repeat (users, hosts), and an HMAC costs microseconds
        self._tokens: dict[str, str] = {}
        opts.done()

    def replace(self, value: str) -> str:
        if self.mode == "fixed":
            return self.mask
        if self.mode == "keep_last":
            n = self.keep_last
            if len(value) <= n:
                return "*" * len(value)
            return "*" * (len(value) - n) + (value[-n:] if n else "")
        token = self._tokens.get(value)
        if token is None:
            mac = self._mac.copy()
            mac.update(value.encode("utf-8"))
            token = "hmac:" + mac.hexdigest()[:32]
            if len(self._tokens) >= _TOKEN_CACHE:
                self._tokens.clear()
            self._tokens[value] = token
        return token

    def _in_line(self, rec: Rec, raw: bytes) -> int:
        """Mask the regex's matches in the JSON line itself, when that is the same as masking the
        object's strings: how many were masked, or -1 to walk the object instead.

        A line without backslashes has no escapes, so every string of its object stands in it
        verbatim between two quotes, and a position is inside a string when an odd number of
        quotes precede it. If every match lies inside one string, replacing it there (with text
        that needs no escaping) masks exactly what the walk would, without re-encoding the
        record; the object is parsed again from the masked line for the stages after this one."""
        text = raw.decode("utf-8", "replace")
        matches = list(self.regex.finditer(text))
        if not matches:
            return 0
        if not self._plain_mask:
            return -1
        for m in matches:
            if '"' in m.group(0) or text.count('"', 0, m.start()) % 2 == 0:
                return -1  # a match outside a string (a number) or across one
        parts = []
        pos = 0
        for m in matches:
            parts += (text[pos:m.start()], self.replace(m.group(0)))
            pos = m.end()
        parts.append(text[pos:])
        masked = "".join(parts)
        rec.raw = masked.encode("utf-8")
        rec.obj = _loads(masked)
        return len(matches)

    def _repl(self, match: re.Match[str]) -> str:
        return self.replace(match.group(0))

    def _walk(self, value: dict | list) -> int:
        """Mask regex matches in every string inside `value`, in place; how many."""
        count = 0
        search = self.regex.search
        for k, v in (value.items() if type(value) is dict else enumerate(value)):
            if type(v) is str:
                if search(v) is not None:
                    # replacing the value of an existing key keeps the dict's size: safe while iterating
                    value[k], n = self.regex.subn(self._repl, v)
                    count += n
            elif isinstance(v, (dict, list)):
                count += self._walk(v)
        return count

    def apply(self, records: list[Rec], now_ms: int) -> list[Rec]:
        masked = 0
        regex = self.regex
        for rec in records:
            count = 0
            obj = rec.obj
            if obj is not None:
                for path in self.fields:
                    value = _get(obj, path)
                    if value is _MISSING or value is None:
                        continue
                    text = value if isinstance(value, str) else _dumps(value)
                    _set(obj, path, self.replace(text))
                    count += 1
                if regex is not None:
                    raw = rec.raw
                    done = -1
                    if not (count or rec.changed or raw is None or b"\\" in raw):
                        done = self._in_line(rec, raw)
                    if done < 0:
                        count += self._walk(obj)
                    else:  # masked in the line, which stays the record's bytes
                        masked += done
            elif regex is not None and rec.text is not None:
                rec.text, n = regex.subn(self._repl, rec.text)
                count += n
            if count:
                rec.changed = True
                masked += count
        self.masked += masked
        return records


class Sample(Stage):
    kind = "sample"
    options = ("rate", "by", "field", "levels", "level_field", "seed")

    def __init__(self, name: str, opts: _Options) -> None:
        super().__init__(name)
        self.rate = opts.rate("rate", opts.take("rate", (int, float)))
        by = opts.take("by", str, "random")
        if by not in ("random", "key"):
            raise opts.fail(f"by = {by!r}: expected random or key")
        self.by_key = by == "key"
        self.field = opts.path("field", None)
        if self.field is not None and not self.by_key:
            raise opts.fail("field is for by = \"key\"")
        levels = opts.take("levels", dict, {})
        self.levels = {opts.level("levels:", k): opts.rate(f"levels.{k}", v) for k, v in levels.items()}
        self.level_field = opts.path("level_field", "level")
        seed = opts.take("seed", int, None)
        self.random = random.Random(seed).random
        opts.done()

    def _hash(self, rec: Rec) -> float:
        if self.field is not None:
            value = _get(rec.obj, self.field) if rec.obj is not None else _MISSING
            data = b"" if value is _MISSING else (value if isinstance(value, str) else _dumps(value)).encode("utf-8")
        else:
            data = rec.key or b""
        return zlib.crc32(data) / 4294967296.0

    def apply(self, records: list[Rec], now_ms: int) -> list[Rec]:
        out = []
        levels = self.levels
        for rec in records:
            rate = self.rate
            if levels:
                level = _level(rec, self.level_field)
                if level is not None:
                    rate = levels.get(level, rate)
            if rate >= 1.0:
                out.append(rec)
            elif rate > 0.0 and (self._hash(rec) if self.by_key else self.random()) < rate:
                out.append(rec)
        return out


class Enrich(Stage):
    kind = "enrich"
    options = ("fields", "receive_time", "receive_time_format")

    def __init__(self, name: str, opts: _Options) -> None:
        super().__init__(name)
        self.fields = dict(opts.take("fields", dict, {}))
        self.receive_time = opts.path("receive_time", None)
        fmt = opts.take("receive_time_format", str, "iso")
        if fmt not in ("iso", "ms"):
            raise opts.fail(f"receive_time_format = {fmt!r}: expected iso or ms")
        self.iso = fmt == "iso"
        if not self.fields and self.receive_time is None:
            raise opts.fail("needs fields or receive_time")
        opts.done()

    def apply(self, records: list[Rec], now_ms: int) -> list[Rec]:
        stamp: Any = now_ms
        if self.iso:
            stamp = datetime.datetime.fromtimestamp(now_ms / 1000, tz=datetime.timezone.utc) \
                .isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for rec in records:
            obj = rec.obj
            if obj is None:
                continue
            obj.update(self.fields)
            if self.receive_time is not None:
                target = obj
                for part in self.receive_time[:-1]:
                    nxt = target.get(part)
                    if not isinstance(nxt, dict):
                        nxt = target[part] = {}
                    target = nxt
                target[self.receive_time[-1]] = stamp
            rec.changed = True
        return records


_STAGES = {"filter": Filter, "mask": Mask, "sample": Sample, "enrich": Enrich}


class Pipeline:
    def __init__(self, name: str, stages: list[Stage]) -> None:
        self.name = name
        self.stages = stages

    def run(self, records: list[Rec], now_ms: int) -> list[Rec]:
        for stage in self.stages:
            if not records:
                break
            records = stage.run(records, now_ms)
        return records


def compile_pipeline(name: str, table: Any) -> Pipeline:
    where = f"pipeline {name!r}"
    if not isinstance(table, Mapping):
        raise PipelineError(f"{where}: expected a table with stages = [...]")
    extra = sorted(set(table) - {"stages"})
    if extra:
        raise PipelineError(f"{where}: unknown option {extra[0]} (a pipeline has only stages)")
    stages_spec = table.get("stages")
    if not isinstance(stages_spec, list) or not stages_spec:
        raise PipelineError(f"{where}: needs stages = [ {{ type = \"filter\", ... }}, ... ]")
    stages: list[Stage] = []
    for i, spec in enumerate(stages_spec, 1):
        if not isinstance(spec, Mapping):
            raise PipelineError(f"{where}, stage {i}: expected a table {{ type = ..., ... }}")
        kind = spec.get("type")
        cls = _STAGES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise PipelineError(f"{where}, stage {i}: type = {kind!r}: expected one of {', '.join(STAGE_TYPES)}")
        opts = _Options(f"{where}, stage {i} ({kind})", {k: v for k, v in spec.items() if k != "type"})
        unknown = sorted(set(opts.table) - set(cls.options))
        if unknown:
            raise opts.fail(f"unknown option {unknown[0]} (expected {', '.join(cls.options)})")
        stages.append(cls(f"{i}:{kind}", opts))
    return Pipeline(name, stages)


def compile_pipelines(tables: Mapping[str, Any]) -> dict[str, Pipeline]:
    """Every pipeline of the config's `pipelines` table; PipelineError (one line) on the first
    bad one."""
    return {name: compile_pipeline(name, table) for name, table in tables.items()}


def check_pipelines(tables: Any) -> None:
    if not isinstance(tables, Mapping):
        raise PipelineError("pipelines: expected a table of pipelines ([pipelines.NAME])")
    compile_pipelines(tables)


def records_from(items: Iterable[tuple[bytes | None, bytes | None, Sequence[Any], int]]) -> list[Rec]:
    return [Rec.from_value(k, v, h, ts) for k, v, h, ts in items]


# --- re-encoding a produced batch -------------------------------------------------------------------

def rewrite_batch(pipeline: Pipeline, raw: bytes | bytearray | memoryview, header: Any, now_ms: int,
                  max_decompressed: int) -> tuple[bytearray, int, int]:
    """One produced RecordBatch v2 through `pipeline`: (the new batch, records in, records out).

    The records kept keep their offset deltas, and the batch its lastOffsetDelta, producer id,
    epoch and base sequence: dropped records leave gaps in the offsets (as compaction does), so an
    idempotent producer's sequence numbers still line up with the broker's producer state. A
    batch whose records are all dropped is stored with none (Kafka's cleaner keeps such empty
    batches for the same reason). Control batches pass unchanged."""
    from ringlog.storage.batch import frame_batch
    from ringlog.storage.records import compress, decode_records, encode_records

    if header.is_control:
        return bytearray(raw), 0, 0
    decoded = decode_records(raw, header, max_decompressed=max_decompressed)
    by_id: dict[int, int] = {}
    recs = []
    for r in decoded:
        rec = Rec.from_value(r.key, r.value, r.headers, r.timestamp)
        by_id[id(rec)] = r.offset - header.base_offset
        recs.append(rec)
    kept = pipeline.run(list(recs), now_ms)
    base_ts = header.base_timestamp
    block = bytearray()
    max_ts = base_ts
    for rec in kept:
        hdrs = tuple((k.encode("utf-8") if isinstance(k, str) else k, v) for k, v in rec.headers)
        part, ts = encode_records([(rec.key, rec.value(), hdrs, rec.timestamp)], base_ts, by_id[id(rec)])
        block += part
        max_ts = max(max_ts, ts)
    codec = header.compression
    body = compress(codec, bytes(block)) if codec and kept else block
    attributes = header.attributes if kept else header.attributes & ~0x07
    batch = frame_batch(body, attributes=attributes, records_count=len(kept),
                        last_offset_delta=header.last_offset_delta, base_timestamp=base_ts,
                        max_timestamp=max_ts if kept else header.max_timestamp,
                        base_offset=header.base_offset, partition_leader_epoch=header.partition_leader_epoch,
                        producer_id=header.producer_id, producer_epoch=header.producer_epoch,
                        base_sequence=header.base_sequence)
    return batch, len(recs), len(kept)
