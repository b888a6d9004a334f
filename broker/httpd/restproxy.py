"""Confluent REST Proxy API v2: topics and produce.

    GET  /topics                           ["t1", "t2"] (internal topics left out)
    GET  /topics/{t}                       {"name", "configs", "partitions": [...]}
    GET  /topics/{t}/partitions            [{"partition", "leader", "replicas": [...]}]
    GET  /topics/{t}/partitions/{p}        one of those
    POST /topics/{t}                       produce; partition by "partition", else key, else in turn
    POST /topics/{t}/partitions/{p}        produce to partition p

Produce bodies: {"records": [{"key": K, "value": V, "partition": P}]}, with the embedded format
named by the Content-Type: application/vnd.kafka.json.v2+json (K and V are JSON, stored as their
compact UTF-8 text), application/vnd.kafka.binary.v2+json (base64), and -- as REST Proxy does
when the embedded format is omitted -- application/vnd.kafka.v2+json and application/json as
binary. Avro, Protobuf and JSON Schema (Schema Registry formats) are answered 415.

Answer: {"key_schema_id": null, "value_schema_id": null, "offsets": [{"partition", "offset",
"error_code", "error"}]} with one entry per record in request order; a record that could not
be written has partition/offset null and error_code 1 (not retriable) or 2 (retriable, e.g. the
partition's ring was full: the answer then carries Retry-After). Errors of the request as a whole
use REST Proxy's body {"error_code": 40401, "message": ...}: 40401 topic not found, 40402
partition not found, 415 unsupported media type, 422 bad records (42201/42202 are Schema
Registry's and not used), 400 malformed JSON, 50002 a Kafka error.
"""
from __future__ import annotations

import base64
import binascii
import itertools
import json
from typing import Any

import trio

from ringlog.client.partitioner import murmur2_partition
from ringlog.storage.errors import StorageError

from ..errors import KafkaError
from ..ingest import RingFull
from ..metadata import is_internal
from . import write
from .ingest import INLINE_BYTES, lookup_topic
from .server import HttpError, Request, Response

V2 = "application/vnd.kafka.v2+json"
JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
SCHEMA_FORMATS = ("application/vnd.kafka.avro.v2+json", "application/vnd.kafka.protobuf.v2+json",
                  "application/vnd.kafka.jsonschema.v2+json")
TOPIC_NOT_FOUND = 40401
PARTITION_NOT_FOUND = 40402
KAFKA_ERROR = 50002
KAFKA_RETRIABLE_ERROR = 50003
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_turn = itertools.count()


class RestError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def rest_json(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(body).encode(), V2, headers or [])


def rest_error(status: int, code: int, message: str) -> Response:
    return rest_json(status, {"error_code": code, "message": message})


def parse_body(request: Request) -> Any:
    try:
        return json.loads(request.body) if request.body.strip() else None
    except ValueError as exc:
        raise RestError(400, 400, f"malformed JSON: {exc}") from None


def _topic_info(broker: Any, name: str) -> Any:
    info = broker.metadata.get(name)
    if info is None:
        raise RestError(404, TOPIC_NOT_FOUND, "Topic not found.")
    return info


def _partition_json(broker: Any, topic: str, p: int) -> dict[str, Any]:
    node = broker.node_id
    return {"partition": p, "leader": node, "replicas": [{"broker": node, "leader": True, "in_sync": True}]}


def _topic_configs(broker: Any, info: Any) -> dict[str, str]:
    configs = dict(broker.log_config_for(info.name).to_topic_configs())
    configs.update(info.configs or {})
    return configs


async def handle_topics(gateway: Any, request: Request, parts: list[str]) -> Response:
    """/topics[/{t}[/partitions[/{p}]]]: `parts` is what follows /topics."""
    broker = gateway.broker
    try:
        if not parts:
            if request.method not in ("GET", "HEAD"):
                return rest_error(405, 405, "HTTP 405 Method Not Allowed")
            return rest_json(200, sorted(n for n in broker.metadata.names() if not is_internal(n)))
        topic = parts[0]
        if len(parts) == 1:
            if request.method == "POST":
                return await produce(gateway, request, topic, None)
            if request.method not in ("GET", "HEAD"):
                return rest_error(405, 405, "HTTP 405 Method Not Allowed")
            info = _topic_info(broker, topic)
            return rest_json(200, {"name": topic, "configs": _topic_configs(broker, info),
                                   "partitions": [_partition_json(broker, topic, p) for p in range(info.partitions)]})
        if parts[1] != "partitions" or len(parts) > 3:
            return rest_error(404, 404, "HTTP 404 Not Found")
        if len(parts) == 2:
            if request.method not in ("GET", "HEAD"):
                return rest_error(405, 405, "HTTP 405 Method Not Allowed")
            info = _topic_info(broker, topic)
            return rest_json(200, [_partition_json(broker, topic, p) for p in range(info.partitions)])
        if not parts[2].isdigit():
            return rest_error(404, PARTITION_NOT_FOUND, "Partition not found.")
        p = int(parts[2])
        if request.method == "POST":
            return await produce(gateway, request, topic, p)
        if request.method not in ("GET", "HEAD"):
            return rest_error(405, 405, "HTTP 405 Method Not Allowed")
        info = _topic_info(broker, topic)
        if p >= info.partitions:
            return rest_error(404, PARTITION_NOT_FOUND, "Partition not found.")
        return rest_json(200, _partition_json(broker, topic, p))
    except RestError as exc:
        return rest_error(exc.status, exc.code, str(exc))


def embedded_format(request: Request) -> str:
    media = request.media_type()
    if media == JSON_V2:
        return "json"
    if media in (BINARY_V2, V2, "application/json", "application/vnd.kafka+json", "application/octet-stream"):
        return "binary"
    if media in SCHEMA_FORMATS:
        raise RestError(415, 415, f"HTTP 415 Unsupported Media Type: {media} needs a schema registry, "
                                  "which this broker does not have")
    raise RestError(415, 415, f"HTTP 415 Unsupported Media Type: {media or '(none)'}")


def _decode(fmt: str, value: Any, what: str, index: int) -> bytes | None:
    if value is None:
        return None
    if fmt == "json":
        return _compact(value).encode("utf-8")
    if not isinstance(value, str):
        raise RestError(422, 42203, f"records[{index}].{what}: binary data must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RestError(422, 42203, f"records[{index}].{what}: not valid base64") from None


def decode_records(fmt: str, body: Any) -> list[tuple[bytes | None, bytes | None, int | None]]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise RestError(422, 422, 'expected {"records": [{"key": ..., "value": ...}, ...]}')
    out = []
    for i, record in enumerate(body["records"]):
        if not isinstance(record, dict):
            raise RestError(422, 422, f"records[{i}] is not an object")
        partition = record.get("partition")
        if partition is not None and (isinstance(partition, bool) or not isinstance(partition, int) or partition < 0):
            raise RestError(422, 422, f"records[{i}].partition must be a partition number")
        out.append((_decode(fmt, record.get("key"), "key", i), _decode(fmt, record.get("value"), "value", i), partition))
    return out


def _decode_in_thread(fmt: str, request: Request) -> list[tuple[bytes | None, bytes | None, int | None]]:
    try:
        return decode_records(fmt, parse_body(request))
    except RestError as exc:
        raise exc.with_traceback(None)


async def produce(gateway: Any, request: Request, topic: str, fixed: int | None) -> Response:
    broker = gateway.broker
    fmt = embedded_format(request)
    if len(request.body) > INLINE_BYTES:  # milliseconds a MiB to parse and decode: off the Trio thread
        records = await trio.to_thread.run_sync(_decode_in_thread, fmt, request)
    else:
        records = decode_records(fmt, parse_body(request))
    try:
        info = await lookup_topic(broker, topic)
    except HttpError:
        raise RestError(404, TOPIC_NOT_FOUND, "Topic not found.") from None
    if fixed is not None and fixed >= info.partitions:
        raise RestError(404, PARTITION_NOT_FOUND, "Partition not found.")
    try:
        pipeline = broker.pipelines.for_topic(info)
    except KafkaError as exc:
        raise RestError(500, KAFKA_ERROR, str(exc.message)) from None
    now = request.received_ns // 1_000_000
    if pipeline is not None:
        from ..pipelines import Rec

        recs = [(Rec.from_value(k, v, (), now), p) for k, v, p in records]
        kept_ids = {id(r) for r in pipeline.run([r for r, _ in recs], now)}
        records = [(r.key, r.value(), p) if id(r) in kept_ids else None for r, p in recs]
    sticky = next(_turn) % info.partitions
    groups: dict[int, list[int]] = {}
    for i, rec in enumerate(records):
        if rec is None:
            continue
        key, _, p = rec
        if fixed is not None:
            p = fixed
        elif p is None:
            p = sticky if key is None else murmur2_partition(key, info.partitions)
        elif p >= info.partitions:
            raise RestError(404, PARTITION_NOT_FOUND, "Partition not found.")
        groups.setdefault(p, []).append(i)
    offsets: list[dict[str, Any]] = [
        {"partition": None, "offset": None, "error_code": None, "error": None} for _ in records]
    queued = []
    retriable = False
    for p, indexes in sorted(groups.items()):
        items = [(records[i][0], records[i][1], (), now) for i in indexes]
        try:
            queued.append((indexes, await write.submit(broker, topic, p, items)))
        except RingFull as exc:
            retriable = True
            for i in indexes:
                offsets[i].update(error_code=2, error=f"broker is busy, retry: {exc}")
        except (KafkaError, StorageError) as exc:
            for i in indexes:
                offsets[i].update(error_code=1, error=str(exc))
    for indexes, acc in queued:
        try:
            base = await acc.wait()
        except Exception as exc:
            for i in indexes:
                offsets[i].update(error_code=1, error=str(exc))
            continue
        for n, i in enumerate(indexes):
            offsets[i].update(partition=acc.partition, offset=base + n)
    for entry, rec in zip(offsets, records):
        if rec is None:  # dropped by the topic's ingest pipeline: stored nowhere, no error
            entry["error"] = "dropped by the topic's ingest pipeline"
    headers = [("Retry-After", str(broker.config.http_retry_after_s))] if retriable else []
    return rest_json(200, {"key_schema_id": None, "value_schema_id": None, "offsets": offsets}, headers)
