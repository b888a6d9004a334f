"""Cluster metadata cache and connection pool shared by the producer, consumer and admin client.

- bootstrap: the first bootstrap server that answers ApiVersions gives the first Metadata; after
  that brokers are known by node id from Metadata (host and port as advertised).
- one connection per node id (plus the bootstrap connection until metadata names the nodes),
  opened lazily; a failed connection is dropped and reopened on next use.
- `refresh(topics)` asks any live broker for Metadata; concurrent refreshes of the same kind share
  one request. Callers refresh after leadership errors (NOT_LEADER_OR_FOLLOWER,
  UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, ...) and after connection failures.
- the topics the cache follows grow as the client asks about them; `metadata_max_age` bounds how
  stale the cache may become (a refresh happens on the next look-up after that).

Every connection's reader task runs in the nursery passed to Cluster, i.e. the owning client's.

Unreachable brokers are logged on the owning client's logger once the client is running (it has
had metadata): a WARNING on the first failed connection attempt to an address, then at most one
every `UNREACHABLE_LOG_INTERVAL` seconds while it keeps failing (each attempt at DEBUG), and an
INFO line once a connection succeeds again. Clients retry quietly otherwise, so without this a
consumer whose broker is gone would just stop receiving records with nothing said. Failures while
bootstrapping are only DEBUG: the caller gets NoBrokersAvailable for them.

Security (client/security.py): every connection is opened with the client's SecurityConfig; the
TLS context is loaded from its files once, in a worker thread, on the first TLS connection. An
authentication failure (AuthenticationError: TLS or SASL) is not turned into ConnectionLost: it
reaches the caller, so a client that cannot authenticate while starting raises it at once
instead of trying the next address or again. Later (a reconnect, another broker) the same
address is tried again no sooner than AUTH_RETRY_BACKOFF seconds after it refused, so a client
whose password was changed does not hammer the broker; the failure is logged like an unreachable
broker, and the requests waiting for that broker fail by their own timeouts.
"""
from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Iterable

import attrs
import trio

from .connection import ApiKey, Connection, open_connection
from .errors import AuthenticationError, ConnectionLost, KafkaError, NoBrokersAvailable, RequestTimedOut
from .security import SecurityConfig, load_ssl_context

__all__ = ["BrokerInfo", "Cluster", "PartitionInfo", "TopicInfo", "parse_bootstrap"]

# Seconds between repeated warnings about one broker address that keeps refusing connections.
UNREACHABLE_LOG_INTERVAL = 30.0
# Seconds before an address that failed authentication is tried again.
AUTH_RETRY_BACKOFF = 1.0

# Errors that mean "the metadata you used is stale": refresh and retry.
LEADERSHIP_ERRORS = frozenset({3, 5, 6, 9, 74, 75, 76})  # +FENCED/UNKNOWN_LEADER_EPOCH, NOT_LEADER


@attrs.frozen(slots=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@attrs.frozen(slots=True)
class PartitionInfo:
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    error_code: int = 0


@attrs.frozen(slots=True)
class TopicInfo:
    name: str
    partitions: dict[int, PartitionInfo]
    error_code: int = 0
    is_internal: bool = False
    topic_id: object = None


def parse_bootstrap(servers: str | Iterable[str]) -> list[tuple[str, int]]:
    if isinstance(servers, str):
        servers = [s for s in re.split(r"[,\s]+", servers) if s]
    out = []
    for s in servers:
        s = s.strip()
        if "://" in s:
            s = s.split("://", 1)[1]
        if s.startswith("["):
            host, _, rest = s[1:].partition("]")
            port = int(rest.lstrip(":") or 9092)
        elif ":" in s:
            host, _, p = s.rpartition(":")
            port = int(p)
        else:
            host, port = s, 9092
        out.append((host, port))
    if not out:
        raise ValueError("no bootstrap servers given")
    return out


class Cluster:
    def __init__(
        self,
        nursery: trio.Nursery,
        bootstrap_servers: str | Iterable[str],
        *,
        client_id: str = "ringlog",
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        metadata_max_age: float = 300.0,
        retry_backoff: float = 0.1,
        allow_auto_topic_creation: bool = True,
        logger: logging.Logger | None = None,
        security: SecurityConfig | None = None,
    ) -> None:
        self._nursery = nursery
        self.log = logger if logger is not None else logging.getLogger(__name__)
        self.bootstrap = parse_bootstrap(bootstrap_servers)
        self.client_id = client_id
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.metadata_max_age = metadata_max_age
        self.retry_backoff = retry_backoff
        self.allow_auto_topic_creation = allow_auto_topic_creation
        self.brokers: dict[int, BrokerInfo] = {}
        self.topics: dict[str, TopicInfo] = {}
        self.cluster_id: str | None = None
        self.controller_id: int = -1
        self.wanted: set[str] = set()
        self.all_topics = False
        self._conns: dict[object, Connection] = {}
        self._connecting: dict[object, trio.Event] = {}
        self._refreshing: trio.Event | None = None
        self._refresh_error: BaseException | None = None
        self._last_refresh = -1e18
        self.updated = trio.Event()  # replaced after every refresh; wait on it for changes
        # bumped by every metadata answer: clients cache per-topic look-ups (partition lists)
        # against it instead of rebuilding them for every record
        self.version = 0
        self._closed = False
        # (host, port) -> [first failure time, failed attempts, time of the last warning]
        self._outages: dict[tuple[str, int], list] = {}
        self.security = security if security is not None else SecurityConfig()
        self._ssl_context = None
        self._ssl_lock = trio.Lock()
        # (host, port) -> when it last failed authentication
        self._auth_failed: dict[tuple[str, int], float] = {}

    async def _tls_context(self):
        if not self.security.tls:
            return None
        async with self._ssl_lock:
            if self._ssl_context is None:
                self._ssl_context = await trio.to_thread.run_sync(load_ssl_context, self.security)
        return self._ssl_context

    # --- connections

    async def _open(self, key: object, host: str, port: int, node_id: int | None) -> Connection:
        while True:
            conn = self._conns.get(key)
            if conn is not None and not conn.is_closed:
                return conn
            ev = self._connecting.get(key)
            if ev is None:
                break
            await ev.wait()
        ev = self._connecting[key] = trio.Event()
        try:
            failed_at = self._auth_failed.get((host, port))
            if failed_at is not None:
                await trio.sleep_until(failed_at + AUTH_RETRY_BACKOFF)
            conn = await open_connection(
                self._nursery,
                host,
                port,
                node_id=node_id,
                client_id=self.client_id,
                request_timeout=self.request_timeout,
                connect_timeout=self.connect_timeout,
                security=self.security,
                ssl_context=await self._tls_context(),
            )
        except AuthenticationError as exc:
            self._auth_failed[(host, port)] = trio.current_time()
            self._connect_failed(host, port, node_id, exc)
            raise
        except (OSError, trio.TooSlowError, ConnectionLost, RequestTimedOut) as exc:
            self._connect_failed(host, port, node_id, exc)
            raise ConnectionLost(f"cannot connect to {host}:{port}: {exc!r}") from exc
        else:
            self._conns[key] = conn
            self._auth_failed.pop((host, port), None)
            self._connect_succeeded(host, port, node_id)
            return conn
        finally:
            del self._connecting[key]
            ev.set()

    def _connect_failed(self, host: str, port: int, node_id: int | None, exc: BaseException) -> None:
        node = "bootstrap" if node_id is None else f"node {node_id}"
        self.log.debug("%s: connecting to broker %s:%d (%s) failed: %r", self.client_id, host, port, node, exc)
        if self.version == 0:
            # Still bootstrapping: the caller gets NoBrokersAvailable if no server answers, which
            # says it better than a log line would.
            return
        now = trio.current_time()
        outage = self._outages.get((host, port))
        if outage is None:
            outage = self._outages[(host, port)] = [now, 0, -math.inf]
        outage[1] += 1
        if now - outage[2] < UNREACHABLE_LOG_INTERVAL:
            return
        outage[2] = now
        if outage[1] == 1:
            self.log.warning("%s: cannot reach broker %s:%d (%s): %r; retrying", self.client_id, host, port, node, exc)
        else:
            self.log.warning("%s: still cannot reach broker %s:%d (%s) after %d attempts over %.0f s: %r; retrying",
                             self.client_id, host, port, node, outage[1], now - outage[0], exc)

    def _connect_succeeded(self, host: str, port: int, node_id: int | None) -> None:
        outage = self._outages.pop((host, port), None)
        if outage is not None:
            self.log.info("%s: connected to broker %s:%d again after %d failed attempts over %.1f s",
                          self.client_id, host, port, outage[1], trio.current_time() - outage[0])

    async def connection(self, node_id: int) -> Connection:
        """The connection to broker `node_id` (opened if needed)."""
        if self._closed:
            raise ConnectionLost("client closed")
        info = self.brokers.get(node_id)
        if info is None:
            await self.refresh()
            info = self.brokers.get(node_id)
            if info is None:
                raise NoBrokersAvailable(f"broker {node_id} is not in the cluster metadata")
        return await self._open(node_id, info.host, info.port, node_id)

    def connected(self, node_id: int) -> Connection | None:
        """The open connection to `node_id`, or None (no waiting)."""
        conn = self._conns.get(node_id)
        if conn is None or conn.is_closed:
            return None
        return conn

    async def ensure_connection(self, node_id: int) -> None:
        """Open the connection to `node_id` if it is not open; errors are swallowed (callers
        notice the node stays unconnected and refresh metadata)."""
        try:
            await self.connection(node_id)
        except (ConnectionLost, NoBrokersAvailable, RequestTimedOut, KafkaError, AuthenticationError):
            pass

    async def any_connection(self) -> Connection:
        """A connection to any live broker: an open one if there is, else try known brokers, then
        the bootstrap list."""
        for conn in self._conns.values():
            if not conn.is_closed:
                return conn
        candidates: list[tuple[object, str, int, int | None]] = [
            (b.node_id, b.host, b.port, b.node_id) for b in self.brokers.values()
        ]
        random.shuffle(candidates)
        candidates += [(("bootstrap", h, p), h, p, None) for h, p in self.bootstrap]
        errors = []
        for key, host, port, node in candidates:
            try:
                return await self._open(key, host, port, node)
            except ConnectionLost as exc:
                errors.append(str(exc))
        raise NoBrokersAvailable("; ".join(errors) or "no brokers")

    async def request(self, node_id: int | None, build, *, timeout: float | None = None):
        """Send `build(conn)` (a function of the connection returning a request entity) to a
        node (None: any broker) and return the response."""
        conn = await (self.any_connection() if node_id is None else self.connection(node_id))
        return await conn.request(build(conn), timeout=timeout)

    # --- metadata

    def leader(self, topic: str, partition: int) -> int:
        t = self.topics.get(topic)
        if t is None:
            return -1
        p = t.partitions.get(partition)
        return -1 if p is None else p.leader

    def partitions(self, topic: str) -> list[int] | None:
        t = self.topics.get(topic)
        if t is None or t.error_code:
            return None
        return sorted(t.partitions)

    def available_partitions(self, topic: str) -> list[int]:
        t = self.topics.get(topic)
        if t is None:
            return []
        return [p for p, info in t.partitions.items() if info.leader >= 0]

    @property
    def stale(self) -> bool:
        return trio.current_time() - self._last_refresh > self.metadata_max_age

    async def refresh(self, topics: Iterable[str] | None = None, *, all_topics: bool = False) -> None:
        """Fetch metadata for the followed topics plus `topics` (all topics with all_topics)."""
        if topics:
            new = set(topics) - self.wanted
            self.wanted |= new
        # Share a refresh already in flight: its answer is at most as old as our reason to ask.
        shared = False
        while self._refreshing is not None:
            shared = True
            await self._refreshing.wait()
        if shared and not all_topics and (not topics or set(topics) <= self.topics.keys()):
            return
        ev = self._refreshing = trio.Event()
        try:
            await self._do_refresh(all_topics)
        finally:
            self._refreshing = None
            ev.set()

    async def _do_refresh(self, all_topics: bool) -> None:
        last_exc: BaseException | None = None
        for attempt in range(3):
            try:
                conn = await self.any_connection()
                b = conn.make(ApiKey.METADATA)
                if all_topics or self.all_topics:
                    topics = None
                else:
                    topics = [b("MetadataRequestTopic", name=t) for t in sorted(self.wanted)]
                req = b(
                    topics=topics,
                    allow_auto_topic_creation=self.allow_auto_topic_creation,
                    include_cluster_authorized_operations=False,
                    include_topic_authorized_operations=False,
                )
                resp = await conn.request(req)
                self._apply(resp, full=topics is None)
                return
            except (ConnectionLost, RequestTimedOut, NoBrokersAvailable) as exc:
                last_exc = exc
                await trio.sleep(self.retry_backoff * (attempt + 1))
        assert last_exc is not None
        raise last_exc

    def _apply(self, resp, *, full: bool) -> None:
        self.brokers = {
            int(b.node_id): BrokerInfo(int(b.node_id), b.host, int(b.port), getattr(b, "rack", None))
            for b in resp.brokers
        }
        self.cluster_id = getattr(resp, "cluster_id", None)
        self.controller_id = int(getattr(resp, "controller_id", -1))
        topics = {} if full else dict(self.topics)
        for t in resp.topics:
            parts = {
                int(p.partition_index): PartitionInfo(
                    int(p.partition_index),
                    int(p.leader_id),
                    int(getattr(p, "leader_epoch", -1)),
                    tuple(int(x) for x in p.replica_nodes),
                    tuple(int(x) for x in p.isr_nodes),
                    int(p.error_code),
                )
                for p in t.partitions
            }
            topics[t.name] = TopicInfo(
                t.name, parts, int(t.error_code), bool(t.is_internal), getattr(t, "topic_id", None)
            )
        self.topics = topics
        self.version += 1
        # drop connections to nodes that are gone
        for key in [k for k in self._conns if isinstance(k, int) and k not in self.brokers]:
            conn = self._conns.pop(key)
            self._nursery.start_soon(conn.aclose)
        self._last_refresh = trio.current_time()
        ev, self.updated = self.updated, trio.Event()
        ev.set()

    async def topic_partitions(self, topic: str, *, timeout: float | None = None) -> list[int]:
        """Partitions of `topic`, refreshing metadata until it is known (auto-creating it when the
        broker does); raises the topic's KafkaError if it stays in error."""
        timeout = self.request_timeout if timeout is None else timeout
        deadline = trio.current_time() + timeout
        err = 0
        while True:
            parts = self.partitions(topic)
            if parts and not self.stale:
                return parts
            await self.refresh([topic])
            t = self.topics.get(topic)
            if t is not None and not t.error_code and t.partitions:
                return sorted(t.partitions)
            err = t.error_code if t is not None else 3
            if err and not KafkaError(err).retriable:
                raise KafkaError(err, topic)
            if trio.current_time() >= deadline:
                raise KafkaError(err or 3, topic)
            await trio.sleep(self.retry_backoff)

    async def coordinator(self, key: str, key_type: int = 0) -> int:
        """Node id of the group (key_type 0) or transaction (1) coordinator for `key`."""
        last = 15
        for attempt in range(20):
            conn = await self.any_connection()
            b = conn.make(ApiKey.FIND_COORDINATOR)
            resp = await conn.request(b(key=key, key_type=key_type))
            if resp.error_code == 0:
                node = int(resp.node_id)
                if node not in self.brokers or self.brokers[node].host != resp.host:
                    self.brokers[node] = BrokerInfo(node, resp.host, int(resp.port))
                return node
            last = int(resp.error_code)
            if not KafkaError(last).retriable:
                raise KafkaError(last, f"FindCoordinator {key}")
            await trio.sleep(self.retry_backoff * min(attempt + 1, 10))
        raise KafkaError(last, f"FindCoordinator {key}")

    async def aclose(self) -> None:
        self._closed = True
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.aclose()
