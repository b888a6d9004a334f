"""POST /ingest/{topic}: log push, one record per line.

Body: NDJSON (`application/x-ndjson`, `application/jsonlines`, `application/json`; a JSON array
`[...]` under application/json is taken as one record per element, as Fluent Bit's `json` and
Logstash's `json_batch` formats send) or newline-separated text (`text/plain`). Blank lines are
skipped; `\\r\\n` line ends are fine. `Content-Encoding: gzip` is inflated, never past
http.max.inflated.bytes (413 beyond).

Query parameters:
  key=FIELD        the record key is the value of FIELD (a dotted path) of each JSON object: a
                   string as its UTF-8 bytes, anything else as compact JSON; absent: no key
  partition=N      write every record to partition N

Records without a key (and without partition=) all go to one partition per request, taken in
turn; keyed records go where Kafka's default partitioner puts them (murmur2), so HTTP and Kafka
producers agree. A record's value is its line's bytes exactly as sent, unless the topic's ingest
pipeline changed it (broker.pipelines).

Answers (JSON bodies):
  200  {"records": lines read, "accepted": records written, "dropped": records the pipeline
       dropped, "offsets": [{"partition": p, "offset": first offset, "count": n}]}, once
       durable under the topic's flush policy
  400  {"error": "line 3: ..."} for a line that is not JSON, or a bad parameter
  404  unknown topic (or partition) when auto.create.topics.enable is off or the name is illegal
  413  body over http.max.body.bytes, or inflating past http.max.inflated.bytes
  415  another Content-Type or Content-Encoding
  503  a partition's ring is full, at once, with Retry-After (http.retry.after.seconds); nothing
       of that partition's share was written (the body says what other partitions accepted)
"""
from __future__ import annotations

import itertools
import json
import zlib
from typing import Any

import trio
from kio.schema.errors import ErrorCode

from ringlog.client.partitioner import murmur2_partition
from ringlog.storage.errors import StorageError

from ..errors import KafkaError
from ..ingest import RingFull
from ..metadata import topic_name_error
from ..pipelines import Rec
from . import write
from .server import HttpError, Request, Response

JSON_TYPES = ("application/x-ndjson", "application/jsonlines", "application/json-lines", "application/json",
              "application/x-jsonlines")
TEXT_TYPES = ("text/plain",)
_loads = json.loads
_scan = json.JSONDecoder().scan_once


def _parse(text: str) -> Any:
    """One JSON value of a line: json.loads without its per-call work (guessing the encoding
    of bytes, two whitespace regexes), which costs as much as the parse of a short line."""
    start = 0
    if text[:1] in (" ", "\t"):
        start = len(text) - len(text.lstrip(" \t"))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"Expecting value at column {stop.value + 1}") from None
    if end != len(text) and not text[end:].isspace():
        raise ValueError(f"Extra data at column {end + 1}")
    return value
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_turn = itertools.count()
# Bodies up to this size are parsed on the Trio thread (a 1,000-line NDJSON body of ~100 KiB
# takes some milliseconds); larger or compressed ones in a worker thread.
INLINE_BYTES = 256 * 1024


def json_response(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(body).encode() + b"\n", "application/json", headers or [])


def error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


def inflate(request: Request, limit: int) -> bytes:
    """The request body, gzip-inflated when Content-Encoding says so, never past `limit`."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return request.body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise HttpError(415, f"Content-Encoding {encoding} is not supported (gzip or identity)")
    d = zlib.decompressobj(wbits=47 if encoding != "deflate" else 15)  # 47: gzip or zlib header
    try:
        out = d.decompress(request.body, limit + 1)
        while not d.eof and len(out) <= limit and d.unconsumed_tail:
            out += d.decompress(d.unconsumed_tail, limit + 1 - len(out))
    except zlib.error as exc:
        raise HttpError(400, f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise HttpError(413, f"body inflates to more than {limit} bytes (http.max.inflated.bytes)")
    if not d.eof:
        raise HttpError(400, f"{encoding} body is cut short")
    return out


def _key_of(obj: Any, path: tuple[str, ...]) -> bytes | None:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    if obj is None:
        return None
    return obj.encode("utf-8") if isinstance(obj, str) else _compact(obj).encode("utf-8")


def parse_lines(body: bytes, as_json: bool | str, key_path: tuple[str, ...] | None, pipeline: Any) -> list[Rec] | list[tuple]:
    """Records of the body: (key, value) pairs, or pipeline Recs when a pipeline will run.
    `as_json`: False for text lines, True for NDJSON, "array" for NDJSON or one JSON array."""
    if as_json == "array" and body[:256].lstrip()[:1] == b"[":
        try:
            array = _loads(body)
        except ValueError as exc:
            raise HttpError(400, f"body is not a JSON array: {exc}") from None
        pairs = []
        for value in array:
            raw = _compact(value).encode("utf-8")
            key = _key_of(value, key_path) if key_path else None
            pairs.append(Rec(key, raw, value if isinstance(value, dict) else None,
                             None if isinstance(value, dict) else raw.decode("utf-8")) if pipeline else (key, raw))
        return pairs
    out: list = []
    append = out.append
    for number, line in enumerate(body.split(b"\n"), 1):
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line or line.isspace():
            continue
        if as_json:
            try:
                value = _parse(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise HttpError(400, f"line {number}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            except ValueError as exc:
                raise HttpError(400, f"line {number}: not JSON: {exc}") from None
            key = _key_of(value, key_path) if key_path else None
            if pipeline is None:
                append((key, line))
            elif isinstance(value, dict):
                append(Rec(key, line, value))
            else:
                append(Rec(key, line, None, line.decode("utf-8", "replace")))
        else:
            if pipeline is None:
                append((None, line))
            else:
                append(Rec(None, line, None, line.decode("utf-8", "replace")))
    return out


def records_of(request: Request, max_inflated: int, as_json: bool | str, key_path: tuple[str, ...] | None,
               pipeline: Any, now: int) -> tuple[int, list[tuple[bytes | None, bytes | None]]]:
    """(records read, (key, value) pairs to write): the body inflated, split, parsed and passed
    through the pipeline. Touches nothing but its arguments (and the pipeline's counters)."""
    parsed = parse_lines(inflate(request, max_inflated), as_json, key_path, pipeline)
    if pipeline is None:
        return len(parsed), parsed
    return len(parsed), [(r.key, r.value()) for r in pipeline.run(parsed, now)]


def _records_in_thread(*args: Any) -> tuple[int, list[tuple[bytes | None, bytes | None]]]:
    try:
        return records_of(*args)
    except HttpError as exc:
        raise exc.with_traceback(None)


async def lookup_topic(broker: Any, topic: str) -> Any:
    """The topic, auto-created as Kafka's Metadata would; HttpError 404 when unknown."""
    if topic_name_error(topic):
        raise HttpError(404, f"topic {topic!r}: {topic_name_error(topic)}")
    try:
        info = await broker.ensure_topic(topic)
    except KafkaError as exc:
        raise HttpError(404 if "unknown" in exc.code.name else 503, f"topic {topic}: {exc}") from None
    if info is None:
        raise HttpError(404, f"unknown topic {topic} (auto.create.topics.enable is off)")
    return info


async def handle_ingest(gateway: Any, request: Request, topic: str) -> Response:
    broker = gateway.broker
    if request.method != "POST":
        return error(405, "POST only")
    media = request.media_type()
    if media not in JSON_TYPES and media not in TEXT_TYPES:
        return error(415, f"Content-Type {media or '(none)'} is not supported: application/x-ndjson, "
                          "application/json or text/plain")
    # application/json may also carry one JSON array of records (parse_lines)
    as_json: Any = "array" if media == "application/json" else media in JSON_TYPES
    query = request.query
    key_field = query.get("key")
    key_path = tuple(key_field.split(".")) if key_field else None
    if key_path is not None and not as_json:
        return error(400, "key= needs JSON records")
    info = await lookup_topic(broker, topic)
    try:
        pipeline = broker.pipelines.for_topic(info)
    except KafkaError as exc:
        return error(500, str(exc.message))
    now = request.received_ns // 1_000_000
    args = (request, broker.config.http_max_inflated_bytes, as_json, key_path, pipeline, now)
    if len(request.body) > INLINE_BYTES or "content-encoding" in request.headers:
        # some milliseconds a MiB (inflating, parsing, the pipeline): off the Trio thread
        total, pairs = await trio.to_thread.run_sync(_records_in_thread, *args, limiter=broker.pipelines.limiter)
    else:
        total, pairs = records_of(*args)
    dropped = total - len(pairs)
    partitions = info.partitions
    fixed = query.get("partition")
    groups: dict[int, list] = {}
    if fixed is not None:
        if not fixed.isdigit() or int(fixed) >= partitions:
            return error(404 if fixed.isdigit() else 400, f"topic {topic} has no partition {fixed}")
        groups[int(fixed)] = pairs
    elif partitions == 1 or key_path is None:
        groups[next(_turn) % partitions] = pairs
    else:
        sticky = next(_turn) % partitions
        for key, value in pairs:
            p = sticky if key is None else murmur2_partition(key, partitions)
            groups.setdefault(p, []).append((key, value))
    offsets = []
    full: list[str] = []
    queued: list[write.Accepted] = []
    for p, group in sorted(groups.items()):
        if not group:  # nothing left to write (an empty body, or the pipeline dropped all)
            continue
        items = [(k, v, (), now) for k, v in group]
        try:
            queued.append(await write.submit(broker, topic, p, items))
        except RingFull as exc:
            full.append(str(exc))
        except (KafkaError, StorageError) as exc:
            # cluster mode: a partition led elsewhere, or too few in-sync replicas, is retriable
            retriable = isinstance(exc, KafkaError) and exc.code in (
                ErrorCode.not_leader_or_follower, ErrorCode.not_enough_replicas)
            return error(400 if isinstance(exc, StorageError) else 503 if retriable else 500, f"partition {p}: {exc}")
    accepted = 0
    for acc in queued:
        try:
            base = await acc.wait()
        except Exception as exc:  # the write failed (storage error): nothing of it is visible
            return error(500, f"partition {acc.partition}: write failed: {exc}")
        accepted += acc.count
        offsets.append({"partition": acc.partition, "offset": base, "count": acc.count})
    body_out = {"records": total, "accepted": accepted, "dropped": dropped, "offsets": offsets}
    if full:
        body_out["error"] = f"ring full, retry later: {'; '.join(full)}"
        return json_response(503, body_out, [("Retry-After", str(broker.config.http_retry_after_s))])
    return json_response(200, body_out)
