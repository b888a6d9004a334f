"""Confluent REST Proxy API v2 consumer instances, on the broker's own group coordinator.

    POST   /consumers/{g}                                  create: {"name", "format" (binary|json),
                                                           "auto.offset.reset" (earliest|latest),
                                                           "auto.commit.enable"} -> {"instance_id", "base_uri"}
    POST   /consumers/{g}/instances/{i}/subscription       {"topics": [...]}: join the group
    GET    /consumers/{g}/instances/{i}/subscription       {"topics": [...]}
    DELETE /consumers/{g}/instances/{i}/subscription       leave the group
    POST   /consumers/{g}/instances/{i}/assignments        {"partitions": [{"topic", "partition"}]}: manual
    GET    /consumers/{g}/instances/{i}/assignments        {"partitions": [...]}
    GET    /consumers/{g}/instances/{i}/records            ?timeout=ms&max_bytes=n -> [{"topic", "key",
                                                           "value", "partition", "offset"}]
    POST   /consumers/{g}/instances/{i}/offsets            {"offsets": [{"topic", "partition", "offset"}]}
                                                           commits those offsets as given (the next
                                                           offset to read, as in Kafka); no body:
                                                           commits the positions reached so far
    GET    /consumers/{g}/instances/{i}/offsets            {"partitions": [...]} -> {"offsets": [...]}
    POST   /consumers/{g}/instances/{i}/positions          {"offsets": [...]}: seek (assigned partitions)
    POST   /consumers/{g}/instances/{i}/positions/beginning|end   {"partitions": [...]}
    DELETE /consumers/{g}/instances/{i}                    leave the group and forget the instance

A subscribed instance is a group member like any Kafka consumer (protocol "consumer", range
assignor): a task per instance joins, syncs (computing the assignment when it is the leader) and
heartbeats through broker.coordinator, rejoining on a rebalance. Records are read from the
partitions' logs up to the high watermark. An instance idle for longer than its session timeout
(consumer.instance.timeout.ms, 300 s as REST Proxy's default) is deleted.

Errors use REST Proxy's codes: 40403 consumer instance not found, 40902 instance already exists,
40601 the Accept type does not match the instance's format, 40903 subscribe and assign mixed,
42204 bad consumer config.
"""
from __future__ import annotations

import base64
import itertools
import json
import logging
from typing import Any

import attrs
import trio
from kio.schema.errors import ErrorCode

from ringlog.client.assignors import RangeAssignor, decode_assignment, decode_subscription
from ringlog.storage.batch import split_batches
from ringlog.storage.records import decode_records

from ..coordinator import CommitEntry, CommitRequest, HeartbeatRequest, JoinRequest, LeaveMember, SyncRequest
from .restproxy import BINARY_V2, JSON_V2, V2, RestError, parse_body, rest_error, rest_json
from .server import Request, Response

log = logging.getLogger("ringlog.http")

INSTANCE_NOT_FOUND = 40403
ALREADY_EXISTS = 40902
FORMAT_MISMATCH = 40601
ILLEGAL_STATE = 40903
BAD_CONFIG = 42204
SESSION_TIMEOUT_MS = 30_000
HEARTBEAT_S = 3.0
INSTANCE_TIMEOUT_S = 300.0
_names = itertools.count(1)
_ASSIGNOR = RangeAssignor()


@attrs.define(eq=False)
class Instance:
    group: str
    name: str
    format: str
    reset: str
    auto_commit: bool
    topics: tuple[str, ...] = ()
    manual: tuple[tuple[str, int], ...] = ()
    assigned: tuple[tuple[str, int], ...] = ()
    positions: dict[tuple[str, int], int] = attrs.field(factory=dict)
    member_id: str = ""
    generation: int = -1
    scope: trio.CancelScope | None = None
    last_used: float = 0.0
    changed: trio.Event = attrs.field(factory=trio.Event)


class ConsumerInstances:
    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.instances: dict[tuple[str, str], Instance] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        """Owns the members' tasks; expires idle instances."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                await trio.sleep(HEARTBEAT_S)
                now = trio.current_time()
                for inst in list(self.instances.values()):
                    if now - inst.last_used > INSTANCE_TIMEOUT_S:
                        log.info("REST consumer %s/%s idle: deleted", inst.group, inst.name)
                        await self._delete(inst)

    # --- routing --------------------------------------------------------------------------------

    async def handle(self, request: Request, parts: list[str]) -> Response:
        try:
            return await self._route(request, parts)
        except RestError as exc:
            return rest_error(exc.status, exc.code, str(exc))

    async def _route(self, request: Request, parts: list[str]) -> Response:
        method = request.method
        if len(parts) == 1 and method == "POST":
            return self._create(request, parts[0])
        if len(parts) < 3 or parts[1] != "instances":
            return rest_error(404, 404, "HTTP 404 Not Found")
        inst = self.instances.get((parts[0], parts[2]))
        if inst is None:
            raise RestError(404, INSTANCE_NOT_FOUND, "Consumer instance not found.")
        inst.last_used = trio.current_time()
        what = parts[3] if len(parts) == 4 else None
        if len(parts) == 5 and parts[3] == "positions" and parts[4] in ("beginning", "end") and method == "POST":
            return self._seek_to(inst, parse_body(request), parts[4])
        if len(parts) == 3 and method == "DELETE":
            await self._delete(inst)
            return Response(204, b"", V2)
        if what == "subscription":
            if method == "POST":
                return self._subscribe(inst, parse_body(request))
            if method == "GET":
                return rest_json(200, {"topics": list(inst.topics)})
            if method == "DELETE":
                await self._unsubscribe(inst)
                return Response(204, b"", V2)
        if what == "assignments":
            if method == "POST":
                return self._assign(inst, parse_body(request))
            if method == "GET":
                return rest_json(200, {"partitions": [{"topic": t, "partition": p} for t, p in inst.assigned]})
        if what == "positions" and method == "POST":
            return self._seek(inst, parse_body(request))
        if what == "records" and method == "GET":
            return await self._records(inst, request)
        if what == "offsets":
            if method == "POST":
                return await self._commit(inst, parse_body(request))
            if method == "GET":
                return self._committed(inst, parse_body(request))
        return rest_error(405 if what in ("subscription", "assignments", "records", "offsets", "positions") else 404,
                          405 if what else 404, f"HTTP {'405 Method Not Allowed' if what else '404 Not Found'}")

    # --- instances ------------------------------------------------------------------------------

    def _create(self, request: Request, group: str) -> Response:
        body = parse_body(request) or {}
        if not isinstance(body, dict):
            raise RestError(422, BAD_CONFIG, "expected a JSON object")
        name = body.get("name") or f"rest-consumer-{next(_names)}"
        fmt = body.get("format", "binary")
        reset = body.get("auto.offset.reset", "latest")
        auto_commit = str(body.get("auto.commit.enable", "true")).lower()
        if fmt not in ("binary", "json"):
            raise RestError(422, BAD_CONFIG, f"format {fmt!r}: binary or json (avro/protobuf/jsonschema need a "
                                             "schema registry)")
        if reset not in ("earliest", "latest", "none"):
            raise RestError(422, BAD_CONFIG, f"auto.offset.reset {reset!r}: earliest, latest or none")
        if auto_commit not in ("true", "false"):
            raise RestError(422, BAD_CONFIG, f"auto.commit.enable {auto_commit!r}: true or false")
        if not isinstance(name, str) or "/" in name:
            raise RestError(422, BAD_CONFIG, "name must be a string without /")
        if (group, name) in self.instances:
            raise RestError(409, ALREADY_EXISTS,
                            "Consumer with specified consumer ID already exists in the specified consumer group.")
        inst = Instance(group, name, fmt, reset, auto_commit == "true", last_used=trio.current_time())
        self.instances[(group, name)] = inst
        host = request.headers.get("host", "localhost")
        return rest_json(200, {"instance_id": name, "base_uri": f"http://{host}/consumers/{group}/instances/{name}"})

    async def _delete(self, inst: Instance) -> None:
        await self._unsubscribe(inst)
        self.instances.pop((inst.group, inst.name), None)

    def _subscribe(self, inst: Instance, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("topics"), list) or not body["topics"] \
                or not all(isinstance(t, str) for t in body["topics"]):
            raise RestError(422, 422, 'expected {"topics": ["topic", ...]} (topic_pattern is not supported)')
        if inst.manual:
            raise RestError(409, ILLEGAL_STATE, "Subscription to topics, partitions and pattern are mutually exclusive.")
        inst.topics = tuple(body["topics"])
        if inst.scope is not None:
            inst.scope.cancel()
        inst.scope = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._member, inst, inst.scope)
        return Response(204, b"", V2)

    async def _unsubscribe(self, inst: Instance) -> None:
        if inst.scope is not None:
            inst.scope.cancel()
            inst.scope = None
        if inst.member_id:
            coordinator = self.broker.coordinator
            with trio.move_on_after(5):
                await coordinator.execute(coordinator.state.leave, inst.group, [LeaveMember(inst.member_id)])
        inst.topics = ()
        inst.assigned = ()
        inst.member_id = ""
        inst.generation = -1

    def _assign(self, inst: Instance, body: Any) -> Response:
        parts = body.get("partitions") if isinstance(body, dict) else None
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and isinstance(p.get("topic"), str) and isinstance(p.get("partition"), int)
                for p in parts):
            raise RestError(422, 422, 'expected {"partitions": [{"topic": ..., "partition": N}, ...]}')
        if inst.topics:
            raise RestError(409, ILLEGAL_STATE, "Subscription to topics, partitions and pattern are mutually exclusive.")
        inst.manual = inst.assigned = tuple((p["topic"], p["partition"]) for p in parts)
        return Response(204, b"", V2)

    # --- group membership -----------------------------------------------------------------------

    async def _member(self, inst: Instance, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                try:
                    await self._join_and_heartbeat(inst)
                except Exception:
                    log.exception("REST consumer %s/%s: group membership failed; retrying", inst.group, inst.name)
                    await trio.sleep(1)

    async def _join_and_heartbeat(self, inst: Instance) -> None:
        coordinator = self.broker.coordinator
        state = coordinator.state
        sub = _ASSIGNOR.subscription(inst.topics).encode()
        reply = await coordinator.execute(state.join, JoinRequest(
            group_id=inst.group, member_id=inst.member_id, protocol_type="consumer", protocols=(("range", sub),),
            session_timeout_ms=SESSION_TIMEOUT_MS, rebalance_timeout_ms=SESSION_TIMEOUT_MS,
            client_id="ringlog-rest", client_host="http"))
        if reply.error != ErrorCode.none:
            if reply.error in (ErrorCode.unknown_member_id, ErrorCode.member_id_required):
                inst.member_id = reply.member_id if reply.error == ErrorCode.member_id_required else ""
            else:
                await trio.sleep(0.5)
            return
        inst.member_id = reply.member_id
        assignments: tuple[tuple[str, bytes], ...] = ()
        if reply.leader == reply.member_id:
            subs = {m.member_id: decode_subscription(bytes(m.metadata)) for m in reply.members}
            topics = {t for s in subs.values() for t in s.topics}
            counts = {t: info.partitions for t in topics if (info := self.broker.metadata.get(t)) is not None}
            result = _ASSIGNOR.assign(counts, subs)
            assignments = tuple((m, a.encode()) for m, a in result.items())
        sync = await coordinator.execute(state.sync, SyncRequest(
            group_id=inst.group, generation_id=reply.generation_id, member_id=inst.member_id,
            assignments=assignments, protocol_type="consumer", protocol_name="range"))
        if sync.error != ErrorCode.none:
            return
        assigned = decode_assignment(sync.assignment).topic_partitions() if sync.assignment else []
        inst.generation = reply.generation_id
        inst.assigned = tuple(assigned)
        inst.positions = {tp: off for tp, off in inst.positions.items() if tp in inst.assigned}
        inst.changed.set()
        inst.changed = trio.Event()
        while True:
            await trio.sleep(HEARTBEAT_S)
            error = await coordinator.execute(state.heartbeat, HeartbeatRequest(
                group_id=inst.group, generation_id=inst.generation, member_id=inst.member_id))
            if error == ErrorCode.none:
                continue
            if error in (ErrorCode.unknown_member_id, ErrorCode.fenced_instance_id):
                inst.member_id = ""
            inst.assigned = ()
            return

    # --- positions (seek) -------------------------------------------------------------------------

    def _seek(self, inst: Instance, body: Any) -> Response:
        offsets = body.get("offsets") if isinstance(body, dict) else None
        if not isinstance(offsets, list) or not all(
                isinstance(o, dict) and isinstance(o.get("topic"), str) and isinstance(o.get("partition"), int)
                and isinstance(o.get("offset"), int) and o["offset"] >= 0 for o in offsets):
            raise RestError(422, 422, 'expected {"offsets": [{"topic": ..., "partition": N, "offset": N}, ...]}')
        for o in offsets:
            self._assigned(inst, (o["topic"], o["partition"]))
        for o in offsets:
            inst.positions[(o["topic"], o["partition"])] = o["offset"]
        return Response(204, b"", V2)

    def _seek_to(self, inst: Instance, body: Any, where: str) -> Response:
        parts = body.get("partitions") if isinstance(body, dict) else None
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and isinstance(p.get("topic"), str) and isinstance(p.get("partition"), int)
                for p in parts):
            raise RestError(422, 422, 'expected {"partitions": [{"topic": ..., "partition": N}, ...]}')
        tps = [(p["topic"], p["partition"]) for p in parts]
        for tp in tps:
            self._assigned(inst, tp)
        for tp in tps:
            part = self.broker.partition(*tp)
            inst.positions[tp] = part.log.log_start_offset if where == "beginning" else part.high_watermark
        return Response(204, b"", V2)

    def _assigned(self, inst: Instance, tp: tuple[str, int]) -> None:
        """Kafka's seek rule: only a partition the consumer is assigned can be sought."""
        if tp not in inst.assigned or self.broker.partition(*tp) is None:
            raise RestError(409, ILLEGAL_STATE, f"No current assignment for partition {tp[0]}-{tp[1]}")

    # --- records and offsets --------------------------------------------------------------------

    def _position(self, inst: Instance, tp: tuple[str, int]) -> int | None:
        pos = inst.positions.get(tp)
        if pos is not None:
            return pos
        part = self.broker.partition(*tp)
        if part is None:
            return None
        error, committed = self.broker.coordinator.state.fetch_offsets(inst.group, [tp])
        found = committed.get(tp) if error == ErrorCode.none else None
        if found is not None and found.offset >= 0:
            pos = found.offset
        elif inst.reset == "earliest":
            pos = part.log.log_start_offset
        else:
            pos = part.high_watermark
        inst.positions[tp] = pos
        return pos

    async def _records(self, inst: Instance, request: Request) -> Response:
        accept = request.headers.get("accept", "")
        wanted = {"json": JSON_V2, "binary": BINARY_V2}[inst.format]
        other = JSON_V2 if inst.format == "binary" else BINARY_V2
        if other in accept and wanted not in accept:
            raise RestError(406, FORMAT_MISMATCH, "The requested embedded data format does not match the deserializer "
                                                  "for this consumer instance")
        query = request.query
        try:
            timeout = min(int(query.get("timeout", "1000")), 60_000) / 1000
            max_bytes = max(1, int(query.get("max_bytes", str(1 << 20))))
        except ValueError:
            raise RestError(400, 400, "timeout and max_bytes must be integers") from None
        deadline = trio.current_time() + timeout
        while True:
            out = await self._read(inst, max_bytes)
            if out or trio.current_time() >= deadline:
                break
            event = trio.Event()
            parts = [p for tp in inst.assigned if (p := self.broker.partition(*tp)) is not None]
            for p in parts:
                p.waiters.add(event)
            changed = inst.changed
            with trio.move_on_at(deadline):
                async with trio.open_nursery() as nursery:
                    async def wake(ev: trio.Event) -> None:
                        await ev.wait()
                        nursery.cancel_scope.cancel()
                    nursery.start_soon(wake, event)
                    nursery.start_soon(wake, changed)
            for p in parts:
                p.waiters.discard(event)
        if out and inst.auto_commit:
            await self._commit_positions(inst, {(r["topic"], r["partition"]) for r in out})
        return rest_json(200, out)

    async def _read(self, inst: Instance, max_bytes: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        budget = max_bytes
        for tp in inst.assigned:
            if budget <= 0:
                break
            part = self.broker.partition(*tp)
            pos = self._position(inst, tp)
            if part is None or pos is None or pos >= part.high_watermark:
                continue
            try:
                result = part.read(pos, budget)
            except Exception:  # out of range (retention moved the log start): reset
                inst.positions.pop(tp, None)
                continue
            data = await trio.to_thread.run_sync(result.read_bytes)
            for header, raw in split_batches(data):
                if header.is_control:
                    continue
                for rec in decode_records(raw, header):
                    if rec.offset < pos:
                        continue
                    out.append({"topic": tp[0], "key": self._embed(inst, rec.key), "value": self._embed(inst, rec.value),
                                "partition": tp[1], "offset": rec.offset})
                    budget -= len(rec.value or b"") + len(rec.key or b"")
                inst.positions[tp] = header.base_offset + header.last_offset_delta + 1
        return out

    @staticmethod
    def _embed(inst: Instance, data: bytes | None) -> Any:
        if data is None:
            return None
        if inst.format == "binary":
            return base64.b64encode(data).decode("ascii")
        try:
            return json.loads(data)
        except ValueError:
            return data.decode("utf-8", "replace")

    async def _commit(self, inst: Instance, body: Any) -> Response:
        if body is None or (isinstance(body, dict) and not body.get("offsets")):
            await self._commit_positions(inst, set(inst.positions))
            return Response(200, b"", V2)
        offsets = body.get("offsets") if isinstance(body, dict) else None
        if not isinstance(offsets, list) or not all(
                isinstance(o, dict) and isinstance(o.get("topic"), str) and isinstance(o.get("partition"), int)
                and isinstance(o.get("offset"), int) for o in offsets):
            raise RestError(422, 422, 'expected {"offsets": [{"topic": ..., "partition": N, "offset": N}, ...]}')
        await self._send_commit(inst, [(o["topic"], o["partition"], o["offset"]) for o in offsets])
        return Response(200, b"", V2)

    async def _commit_positions(self, inst: Instance, tps: set[tuple[str, int]]) -> None:
        await self._send_commit(inst, [(t, p, inst.positions[(t, p)]) for t, p in sorted(tps) if (t, p) in inst.positions])

    async def _send_commit(self, inst: Instance, offsets: list[tuple[str, int, int]]) -> None:
        if not offsets:
            return
        coordinator = self.broker.coordinator
        metadata = self.broker.metadata

        def exists(topic: str, partition: int) -> bool:
            info = metadata.get(topic)
            return info is not None and 0 <= partition < info.partitions

        generation, member = (inst.generation, inst.member_id) if inst.topics else (-1, "")
        reply = await coordinator.execute(coordinator.state.commit, CommitRequest(
            group_id=inst.group, generation_id=generation, member_id=member,
            offsets=tuple(CommitEntry(topic=t, partition=p, offset=o) for t, p, o in offsets)), exists)
        failed = [(t, p, e) for t, p, e in reply.partitions if e != ErrorCode.none]
        if failed:
            t, p, e = failed[0]
            raise RestError(500, 50002 if e != ErrorCode.rebalance_in_progress else 50003,
                            f"commit of {t}-{p} failed: {e.name}")

    def _committed(self, inst: Instance, body: Any) -> Response:
        parts = body.get("partitions") if isinstance(body, dict) else None
        wanted = [(p["topic"], p["partition"]) for p in parts] if isinstance(parts, list) else list(inst.assigned)
        error, committed = self.broker.coordinator.state.fetch_offsets(inst.group, wanted)
        out = []
        for tp in wanted:
            c = committed.get(tp) if error == ErrorCode.none else None
            if c is not None:
                out.append({"topic": tp[0], "partition": tp[1], "offset": c.offset, "metadata": c.metadata or ""})
        return rest_json(200, {"offsets": out})

