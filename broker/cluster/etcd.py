"""An etcd v3 client on Trio, over etcd's JSON gateway (HTTP/1.1 + JSON, keys and values base64).

Why this shape (see docs/architecture.md, "Cluster mode"): there is no Trio etcd client, the gRPC
clients bring their own event loops, and the JSON gateway that every etcd 3.4 server has on its
client port speaks plain HTTP/1.1. h11 (sans-IO, the model the project's wire code follows) does
the HTTP framing -- Content-Length and chunked bodies, the streaming watch responses -- and this
module does the sockets (trio streams) and the JSON. Each call opens its own short TCP connection
to the current endpoint: etcd is on the control path only (membership, elections, partition
state), so a connection a call costs nothing that matters, and no connection state survives an
error. Calls used:

    POST /v3/kv/range         get, get_prefix
    POST /v3/kv/put           put
    POST /v3/kv/deleterange   delete
    POST /v3/kv/txn           txn (compare-and-swap on create_revision / mod_revision / value)
    POST /v3/lease/grant      lease_grant
    POST /v3/lease/keepalive  lease_keepalive (one request, one answer)
    POST /v3/lease/revoke     lease_revoke
    POST /v3/watch            watch (a chunked stream of JSON messages, one per event batch)

Endpoints: `EtcdClient(["http://h1:2379", "http://h2:2379"])`. A call that cannot reach the
current endpoint (connect refused, reset, timeout, HTTP 5xx) is retried on the next one, once
around the list; then EtcdUnavailable. An answer etcd gives with an error (HTTP 4xx, or a JSON
"error" / "code" body) is EtcdError and is not retried: another member would say the same.
Proto3 JSON leaves out fields that have their default value (false, 0, empty lists), so every
read below has a default.
"""
from __future__ import annotations

import base64
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import h11
import trio

log = logging.getLogger("ringlog.cluster.etcd")

DEFAULT_TIMEOUT_S = 5.0
_RECEIVE = 64 * 1024


class EtcdError(Exception):
    """etcd answered, with an error."""


class EtcdUnavailable(EtcdError):
    """No endpoint could be reached (or every one failed) for this call."""


class WatchCompacted(EtcdError):
    """The watch's start revision was compacted away: read the keys again, then watch anew."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch start revision is compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str | bytes) -> bytes:
    """The range_end that makes [prefix, end) every key starting with `prefix` (etcd's rule)."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\x00"  # every key


@attrs.frozen
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(kv.get("key")).decode("utf-8", "replace"),
            value=_unb64(kv.get("value")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            version=int(kv.get("version", 0)),
            lease=int(kv.get("lease", 0)),
        )

    def json(self) -> Any:
        return json.loads(self.value)


@attrs.frozen
class WatchEvent:
    type: str  # "PUT" or "DELETE"
    kv: KeyValue


# --- txn building blocks ------------------------------------------------------------------------

def cmp_create_revision(key: str, revision: int, result: str = "EQUAL") -> dict[str, Any]:
    """Compare a key's create_revision (0: the key does not exist)."""
    return {"key": _b64(key), "target": "CREATE", "result": result, "create_revision": str(revision)}


def cmp_mod_revision(key: str, revision: int, result: str = "EQUAL") -> dict[str, Any]:
    return {"key": _b64(key), "target": "MOD", "result": result, "mod_revision": str(revision)}


def op_put(key: str, value: str | bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def op_get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def op_delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


@attrs.frozen
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]

    def ranges(self) -> list[list[KeyValue]]:
        """The key-values of each range operation's answer, in order."""
        return [[KeyValue.from_json(kv) for kv in r["response_range"].get("kvs", [])]
                for r in self.responses if "response_range" in r]


def _parse_endpoint(url: str) -> tuple[str, int]:
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme != "http":
        raise ValueError(f"etcd endpoint {url!r}: only http:// is supported")
    if not parsed.hostname:
        raise ValueError(f"etcd endpoint {url!r} has no host")
    try:
        port = parsed.port or 2379
    except ValueError:
        raise ValueError(f"etcd endpoint {url!r} has a bad port") from None
    return parsed.hostname, port


def parse_endpoints(value: str | Sequence[str]) -> list[tuple[str, int]]:
    """"http://h1:2379,http://h2:2379" (or a list) -> [(h1, 2379), (h2, 2379)]; ValueError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = [_parse_endpoint(item) for item in items if item.strip()]
    if not out:
        raise ValueError("no etcd endpoint given")
    return out


class _Unreachable(Exception):
    """This endpoint failed for this call (try the next one)."""


class EtcdClient:
    """Calls against a list of etcd endpoints with fail-over. Safe to share between tasks."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = timeout
        self._current = 0
        self.failovers = 0

    @property
    def endpoint(self) -> str:
        host, port = self.endpoints[self._current]
        return f"http://{host}:{port}"

    def _next_endpoint(self, failed: int) -> None:
        if self._current == failed:  # another task may have moved on already
            self._current = (failed + 1) % len(self.endpoints)
            self.failovers += 1

    # --- HTTP ---------------------------------------------------------------------------------

    @staticmethod
    def _request_bytes(conn: h11.Connection, host: str, path: str, body: bytes) -> bytes:
        return conn.send(h11.Request(method="POST", target=path, headers=[
            ("Host", host), ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Connection", "close")])) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())

    async def _open(self, index: int, path: str, body: bytes) -> tuple[trio.SocketStream, h11.Connection, h11.Response]:
        host, port = self.endpoints[index]
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise _Unreachable(f"{host}:{port}: {exc}") from None
        conn = h11.Connection(h11.CLIENT)
        try:
            await stream.send_all(self._request_bytes(conn, host, path, body))
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await stream.receive_some(_RECEIVE)
                    conn.receive_data(data)
                    if not data and conn.their_state is h11.SEND_RESPONSE:
                        raise _Unreachable(f"{host}:{port} closed the connection")
                    continue
                if isinstance(ev, h11.Response):
                    return stream, conn, ev
                if isinstance(ev, h11.InformationalResponse):
                    continue
                raise _Unreachable(f"{host}:{port}: unexpected {type(ev).__name__}")
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            await stream.aclose()
            raise _Unreachable(f"{host}:{port}: {exc}") from None
        except BaseException:
            await stream.aclose()
            raise

    @staticmethod
    async def _body_chunks(stream: trio.SocketStream, conn: h11.Connection):
        """The response body's pieces as they arrive; ends at the end of the message."""
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(_RECEIVE))
                continue
            if isinstance(ev, h11.Data):
                yield bytes(ev.data)
            elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def _call_once(self, index: int, path: str, body: bytes) -> dict[str, Any]:
        stream, conn, response = await self._open(index, path, body)
        try:
            data = b"".join([chunk async for chunk in self._body_chunks(stream, conn)])
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            raise _Unreachable(str(exc)) from None
        finally:
            await stream.aclose()
        if response.status_code >= 500 and response.status_code != 501:
            raise _Unreachable(f"HTTP {response.status_code}: {data[:200]!r}")
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            raise EtcdError(f"{path}: not JSON (HTTP {response.status_code}): {data[:200]!r}") from None
        if response.status_code >= 400 or "error" in answer:
            raise EtcdError(f"{path}: HTTP {response.status_code}: {answer.get('error') or answer.get('message') or data[:200]!r}")
        return answer

    async def call(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        """POST one JSON request, with fail-over over the endpoints; the decoded answer."""
        body = json.dumps(request).encode()
        errors = []
        for _ in range(len(self.endpoints)):
            index = self._current
            try:
                with trio.fail_after(self.timeout):
                    return await self._call_once(index, path, body)
            except (_Unreachable, trio.TooSlowError) as exc:
                errors.append(f"{self._name(index)}: {exc or 'timed out'}")
                self._next_endpoint(index)
        raise EtcdUnavailable(f"{path}: no etcd endpoint answered ({'; '.join(errors)})")

    def _name(self, index: int) -> str:
        host, port = self.endpoints[index]
        return f"{host}:{port}"

    # --- key-value ----------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        answer = await self.call("/v3/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs", [])
        return KeyValue.from_json(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the store's revision they were read at."""
        answer = await self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return [KeyValue.from_json(kv) for kv in answer.get("kvs", [])], int(answer["header"]["revision"])

    async def put(self, key: str, value: str | bytes, *, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        answer = await self.call("/v3/kv/put", body)
        return int(answer["header"]["revision"])

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        answer = await self.call("/v3/kv/deleterange", body)
        return int(answer.get("deleted", 0))

    async def txn(self, compare: Sequence[dict], success: Sequence[dict], failure: Sequence[dict] = ()) -> TxnResult:
        answer = await self.call("/v3/kv/txn", {"compare": list(compare), "success": list(success),
                                                 "failure": list(failure)})
        return TxnResult(bool(answer.get("succeeded", False)), int(answer["header"]["revision"]),
                         answer.get("responses", []))

    # --- leases -------------------------------------------------------------------------------

    async def lease_grant(self, ttl_s: int) -> int:
        answer = await self.call("/v3/lease/grant", {"TTL": str(int(ttl_s))})
        return int(answer["ID"])

    async def lease_keepalive(self, lease: int) -> int:
        """Renew the lease once: its TTL in seconds, 0 when it has expired (it is gone)."""
        answer = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    async def lease_revoke(self, lease: int) -> None:
        try:
            await self.call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise

    # --- watch --------------------------------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int,
                    on_events: Callable[[list[WatchEvent], int], Awaitable[None]]) -> None:
        """Watch every key under `prefix` from `start_revision` on, forever: `on_events(events,
        revision)` for each batch, in revision order. A broken stream is reopened (on the next
        endpoint when the current one fails) from the revision after the last one delivered, so
        no event is lost or seen twice. Raises WatchCompacted when that revision is gone."""
        next_revision = start_revision
        while True:
            index = self._current
            request = json.dumps({"create_request": {
                "key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                "start_revision": str(next_revision)}}).encode()
            try:
                with trio.fail_after(self.timeout):
                    stream, conn, response = await self._open(index, "/v3/watch", request)
            except (_Unreachable, trio.TooSlowError) as exc:
                log.warning("etcd watch of %s: %s: %s", prefix, self._name(index), exc or "timed out")
                self._next_endpoint(index)
                await trio.sleep(0.2)
                continue
            try:
                if response.status_code != 200:
                    raise EtcdError(f"/v3/watch: HTTP {response.status_code}")
                buf = ""
                decoder = json.JSONDecoder()
                async for chunk in self._body_chunks(stream, conn):
                    buf += chunk.decode("utf-8")
                    while True:
                        buf = buf.lstrip()
                        if not buf:
                            break
                        try:
                            message, end = decoder.raw_decode(buf)
                        except ValueError:
                            break  # incomplete: wait for more
                        buf = buf[end:]
                        next_revision = await self._watch_message(message, next_revision, on_events)
            except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
                log.warning("etcd watch of %s broke: %s", prefix, exc)
                self._next_endpoint(index)
            finally:
                await stream.aclose()
            await trio.sleep(0.05)

    @staticmethod
    async def _watch_message(message: dict, next_revision: int, on_events) -> int:
        if "error" in message:
            raise EtcdError(f"/v3/watch: {message['error']}")
        result = message.get("result", {})
        compact = int(result.get("compact_revision", 0))
        if compact:
            raise WatchCompacted(compact)
        events = result.get("events", [])
        if not events:
            return next_revision
        parsed = [WatchEvent(e.get("type", "PUT"), KeyValue.from_json(e["kv"])) for e in events]
        revision = max(e.kv.mod_revision for e in parsed)
        await on_events(parsed, revision)
        return revision + 1
