"""Client quotas (Kafka's ClientQuotaManager): byte rates per user, client id or both, enforced
by throttling (KIP-219). No I/O and no trio: the handlers ask, the connection mutes itself.

Quota entities and keys
-----------------------
An entity names a `user` (the name of the connection's principal, "alice" for User:alice,
"ANONYMOUS" without authentication), a `client-id`, or both; a name of None is the `<default>`
of that type. Each entity holds values for `producer_byte_rate` and `consumer_byte_rate`
(bytes/s, whole numbers) and `request_percentage` (the share of one thread's time the client's
requests may take on the broker's Trio thread, 100 = all of it) -- Kafka's keys.

Which quota applies (Kafka's order: the first entity that holds a value for the key wins):

  1. user + client-id           5. <default> user + <default> client-id
  2. user + <default> client-id 6. <default> user
  3. user                       7. client-id
  4. <default> user + client-id 8. <default> client-id

The bytes are counted in a bucket shared by everything the winning entity covers, as in Kafka:
a user quota (3) is one bucket for all that user's clients, a <default> user quota (6) one
bucket per user, a user + <default> client-id quota (2) one per (user, client-id), a client-id
quota (7, 8) one per client id.

Measuring and throttling (Kafka's Rate over `quota.window.num` samples of
`quota.window.size.seconds`): every request's bytes are added to the current sample; the rate is
the sum of the live samples over the time they span, taken as at least (samples - 1) windows so
that a young bucket does not read as a burst. When the rate is above the limit the request is
still served, and the throttle time is what brings the rate back to the limit if nothing more
came: (rate - limit) / limit * window span. The answer carries it as throttle_time_ms, and the
connection reads no further request until it has passed (Kafka mutes the channel).

request_percentage counts the time each request's handler task runs on the Trio thread
(TaskTime, a Trio instrument installed only while some request_percentage is set), as percent
of a second, and bounds its throttle to one window, as Kafka does.

Cost when nothing is configured: the produce and fetch handlers and the connection's request
runner test one attribute each (`produce_on`, `fetch_on`, `request_on`); no bucket exists.

The entities persist in the data dir as `security/quotas.json` (broker.security.store's
atomic write), `{"version": 1, "quotas": [{"entity": {"user": "alice"}, "values":
{"producer_byte_rate": 1048576.0}}]}`; a null name is the default.
"""
from __future__ import annotations

import math
import time
from typing import Any

PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
# Kafka's other key for user/client-id entities, not enforced by this broker
CONTROLLER_MUTATION_RATE = "controller_mutation_rate"
ENFORCED_KEYS = (PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE)
KAFKA_KEYS = (*ENFORCED_KEYS, CONTROLLER_MUTATION_RATE)

USER, CLIENT_ID, IP = "user", "client-id", "ip"
ENTITY_TYPES = (USER, CLIENT_ID)

# DescribeClientQuotas match types
MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2

# In a resolution key "" means "this type is not part of the entity" (Kafka refuses empty
# names) and None means <default>.
_ABSENT = ""
# Buckets nobody has used for this long are dropped (Kafka expires its sensors after an hour).
_IDLE_BUCKET_MS = 3_600_000
_BUCKETS_BEFORE_SWEEP = 10_000

Entity = tuple[tuple[str, "str | None"], ...]  # sorted (type, name) pairs


class QuotaError(ValueError):
    """An entity or operation Kafka refuses with INVALID_REQUEST; str() is the message."""


def make_entity(pairs: Any) -> Entity:
    """An entity from (type, name) pairs, checked as Kafka's controller does."""
    seen: dict[str, str | None] = {}
    for entity_type, name in pairs:
        if entity_type in seen:
            raise QuotaError(f"Invalid client quota entity, duplicate entity entry {entity_type}")
        if entity_type == IP:
            raise QuotaError("ip quotas (connection_creation_rate) are not supported by this broker; "
                             "max.connections.per.ip limits connections per address")
        if entity_type not in ENTITY_TYPES:
            raise QuotaError(f"Unhandled client quota entity type: {entity_type}")
        if name is not None and name == "":
            raise QuotaError(f"Empty {entity_type} not supported")
        seen[entity_type] = name
    if not seen:
        raise QuotaError("Invalid empty client quota entity")
    return tuple(sorted(seen.items()))


def check_value(key: str, value: float) -> None:
    """Kafka's checks of a value set by AlterClientQuotas (QuotaConfig's key types: the byte
    rates are LONGs, request_percentage a DOUBLE)."""
    if key == CONTROLLER_MUTATION_RATE:
        raise QuotaError(f"{key} is not enforced by this broker; the quota keys it enforces are "
                         f"{', '.join(ENFORCED_KEYS)}")
    if key not in ENFORCED_KEYS:
        raise QuotaError(f"Invalid configuration key {key}")
    if not value > 0.0:  # NaN too
        raise QuotaError(f"Quota {key} must be greater than 0")
    if key == REQUEST_PERCENTAGE:
        if math.isinf(value):
            raise QuotaError(f"Quota {key} must be finite")
        return
    if value > 2**63 - 1:
        raise QuotaError(f"Proposed value for {key} is too large for a LONG.")
    if abs(math.fmod(value, 1.0)) > 1e-6:
        raise QuotaError(f"{key} cannot be a fractional value.")


class Rate:
    """Kafka's Rate over a SampledStat (WindowedSum): `samples` windows of `window_ms`, plus the
    one being filled while the oldest overlaps the monitored span."""

    __slots__ = ("samples", "window_ms", "_starts", "_lasts", "_values", "_current")

    def __init__(self, samples: int, window_ms: int, now_ms: int) -> None:
        self.samples = samples
        self.window_ms = window_ms
        self._starts = [now_ms]
        self._lasts = [now_ms]
        self._values = [0.0]
        self._current = 0

    def record(self, value: float, now_ms: int) -> None:
        i = self._current
        if now_ms - self._starts[i] >= self.window_ms:
            i = self._current = (i + 1) % (self.samples + 1)
            if i >= len(self._starts):
                self._starts.append(now_ms)
                self._lasts.append(now_ms)
                self._values.append(0.0)
            else:
                self._starts[i] = self._lasts[i] = now_ms
                self._values[i] = 0.0
        self._values[i] += value
        self._lasts[i] = now_ms

    def _purge(self, now_ms: int) -> None:
        expire = self.samples * self.window_ms
        for i, last in enumerate(self._lasts):
            if now_ms - last >= expire:
                self._starts[i] = self._lasts[i] = now_ms
                self._values[i] = 0.0

    def window_size_ms(self, now_ms: int) -> int:
        self._purge(now_ms)
        elapsed = now_ms - min(self._starts)
        full = elapsed // self.window_ms
        if full < self.samples - 1:
            elapsed += (self.samples - 1 - full) * self.window_ms
        return max(elapsed, 1)

    def measure(self, now_ms: int) -> float:
        """Units per second."""
        size = self.window_size_ms(now_ms)
        return sum(self._values) / (size / 1000)

    @property
    def last_ms(self) -> int:
        return max(self._lasts)


class ClientQuotas:
    """The quota entities of a broker and the byte-rate buckets they are measured in."""

    def __init__(self, samples: int = 11, window_seconds: int = 1) -> None:
        self.samples = samples
        self.window_ms = window_seconds * 1000
        self.entities: dict[Entity, dict[str, float]] = {}
        # key -> {(user, client): limit}, user/client: name, None (<default>) or "" (absent)
        self._by_key: dict[str, dict[tuple[str | None, str | None], float]] = {}
        self._resolved: dict[tuple[str, str, str], tuple[tuple, float] | None] = {}
        self._buckets: dict[tuple, Rate] = {}
        self.produce_on = False
        self.fetch_on = False
        self.request_on = False
        # the Trio instrument that times request handlers while request_on (broker.server)
        self.task_time = TaskTime()

    # --- the table -------------------------------------------------------------------------

    def load(self, entries: dict[Entity, dict[str, float]]) -> None:
        self.entities = {e: dict(v) for e, v in entries.items() if v}
        self._reindex()

    def alter(self, entity: Entity, ops: dict[str, float | None]) -> None:
        """Set (a value) or remove (None) keys of one entity, already checked."""
        values = self.entities.setdefault(entity, {})
        for key, value in ops.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = float(value)
        if not values:
            del self.entities[entity]
        self._reindex()

    def _reindex(self) -> None:
        by_key: dict[str, dict[tuple[str | None, str | None], float]] = {}
        for entity, values in self.entities.items():
            names = dict(entity)
            at = (names.get(USER, _ABSENT), names.get(CLIENT_ID, _ABSENT))
            for key, value in values.items():
                by_key.setdefault(key, {})[at] = value
        self._by_key = by_key
        self._resolved = {}
        self.produce_on = PRODUCER_BYTE_RATE in by_key
        self.fetch_on = CONSUMER_BYTE_RATE in by_key
        self.request_on = REQUEST_PERCENTAGE in by_key

    def describe(self, components: list[tuple[str, int, str | None]], strict: bool) -> list[tuple[Entity, dict[str, float]]]:
        """The entities a DescribeClientQuotas filter matches (Kafka's ClientQuotasImage rules;
        QuotaError for a malformed filter)."""
        exact: dict[str, str | None] = {}
        specified: set[str] = set()
        for entity_type, match_type, match in components:
            if not entity_type:
                raise QuotaError("Invalid empty entity type.")
            if entity_type in exact or entity_type in specified:
                raise QuotaError(f"Entity type {entity_type} cannot appear more than once in the filter.")
            if entity_type not in (USER, CLIENT_ID, IP):
                raise UnsupportedEntity(f"Unsupported entity type {entity_type}")
            if match_type == MATCH_EXACT:
                if match is None:
                    raise QuotaError("Request specified MATCH_TYPE_EXACT, but set match string to null.")
                exact[entity_type] = match
            elif match_type == MATCH_DEFAULT:
                if match is not None:
                    raise QuotaError("Request specified MATCH_TYPE_DEFAULT, but also specified a match string.")
                exact[entity_type] = None
            elif match_type == MATCH_SPECIFIED:
                if match is not None:
                    raise QuotaError("Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.")
                specified.add(entity_type)
            else:
                raise QuotaError(f"Unknown match type {match_type}")
        if IP in exact or IP in specified:
            if exact.keys() - {IP} or specified - {IP}:
                raise QuotaError("Invalid entity filter component combination. IP filter component should "
                                 "not be used with user or clientId filter component.")
        out = []
        for entity, values in sorted(self.entities.items(), key=lambda kv: _sort_key(kv[0])):
            names = dict(entity)
            if strict and len(names) != len(exact) + len(specified):
                continue
            if any(t not in names or names[t] != m for t, m in exact.items()):
                continue
            if any(t not in names for t in specified):
                continue
            out.append((entity, dict(values)))
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"version": 1, "quotas": [{"entity": dict(e), "values": dict(v)}
                                         for e, v in sorted(self.entities.items(), key=lambda kv: _sort_key(kv[0]))]}

    # --- enforcement -----------------------------------------------------------------------

    def _resolve(self, key: str, user: str, client: str) -> tuple[tuple, float] | None:
        cache_key = (key, user, client)
        try:
            return self._resolved[cache_key]
        except KeyError:
            pass
        table = self._by_key.get(key, {})
        found = None
        levels = []
        if client:
            levels += [((user, client), (user, client)), ((user, None), (user, client))]
        levels.append(((user, _ABSENT), (user, _ABSENT)))
        if client:
            levels += [((None, client), (user, client)), ((None, None), (user, client))]
        levels.append(((None, _ABSENT), (user, _ABSENT)))
        if client:
            levels += [((_ABSENT, client), (_ABSENT, client)), ((_ABSENT, None), (_ABSENT, client))]
        for at, bucket in levels:
            limit = table.get(at)
            if limit is not None:
                found = ((key, *bucket), limit)
                break
        if len(self._resolved) > _BUCKETS_BEFORE_SWEEP:
            self._resolved = {}
        self._resolved[cache_key] = found
        return found

    def limit(self, key: str, principal: str, client_id: str | None) -> float | None:
        """The limit that applies to a connection (None: unlimited)."""
        found = self._resolve(key, user_name(principal), client_id or "")
        return found[1] if found is not None else None

    def record(self, key: str, principal: str, client_id: str | None, value: float, now_ms: int) -> int:
        """Count `value` (bytes; for request_percentage the percent of a second of handler
        time); the throttle time in ms (0 while within the quota). A request_percentage
        throttle is at most one window, as Kafka bounds it."""
        found = self._resolve(key, user_name(principal), client_id or "")
        if found is None:
            return 0
        bucket_key, limit = found
        rate = self._buckets.get(bucket_key)
        if rate is None:
            if len(self._buckets) >= _BUCKETS_BEFORE_SWEEP:
                self._sweep(now_ms)
            rate = self._buckets[bucket_key] = Rate(self.samples, self.window_ms, now_ms)
        rate.record(value, now_ms)
        observed = rate.measure(now_ms)
        if observed <= limit:
            return 0
        throttle = int(round((observed - limit) / limit * rate.window_size_ms(now_ms)))
        return min(throttle, self.window_ms) if key == REQUEST_PERCENTAGE else throttle

    def unrecord(self, key: str, principal: str, client_id: str | None, value: float, now_ms: int) -> None:
        """Take back what `record` counted (a throttled fetch is answered empty, as in Kafka)."""
        found = self._resolve(key, user_name(principal), client_id or "")
        if found is not None and found[0] in self._buckets:
            self._buckets[found[0]].record(-value, now_ms)

    def max_bytes_in_window(self, key: str, principal: str, client_id: str | None) -> int | None:
        """The most one request may take without certainly being throttled (Kafka caps a Fetch's
        max_bytes to it): limit * (samples - 1) * window."""
        limit = self.limit(key, principal, client_id)
        if limit is None:
            return None
        return max(1, int(min(limit * max(self.samples - 1, 1) * self.window_ms / 1000, 0x7FFFFFFF)))

    def _sweep(self, now_ms: int) -> None:
        self._buckets = {k: r for k, r in self._buckets.items() if now_ms - r.last_ms < _IDLE_BUCKET_MS}


class TaskTime:
    """A Trio instrument (trio.lowlevel.add_instrument) timing the steps of the tasks in
    `watched`: the time a request's handler task runs on the Trio thread, not the time it waits
    (Kafka's request_percentage counts the time of its request handler threads). One step runs
    at a time on the one thread, so one slot holds the step being timed."""

    def __init__(self) -> None:
        self.watched: dict[Any, int] = {}  # task -> nanoseconds run
        self.installed = False
        self._step: tuple[Any, int] | None = None

    def watch(self, task: Any) -> None:
        """Time `task` from now (called from inside its current step)."""
        self.watched[task] = 0
        self._step = (task, time.perf_counter_ns())

    def unwatch(self, task: Any) -> int:
        """Stop timing `task` (called from inside its current step); the nanoseconds it ran."""
        ran = self.watched.pop(task, 0)
        step = self._step
        if step is not None and step[0] is task:
            self._step = None
            ran += time.perf_counter_ns() - step[1]
        return ran

    def before_task_step(self, task: Any) -> None:
        if task in self.watched:
            self._step = (task, time.perf_counter_ns())

    def after_task_step(self, task: Any) -> None:
        step = self._step
        if step is not None and step[0] is task:
            self._step = None
            self.watched[task] += time.perf_counter_ns() - step[1]


class UnsupportedEntity(QuotaError):
    """Kafka answers an unknown entity type in a DescribeClientQuotas filter UNSUPPORTED_VERSION."""


def user_name(principal: str) -> str:
    """The user of a quota entity: the name of a "User:NAME" principal."""
    kind, sep, name = principal.partition(":")
    return name if sep else principal


def _sort_key(entity: Entity) -> tuple:
    return tuple((t, n is not None, n or "") for t, n in entity)


def from_json(data: Any) -> dict[Entity, dict[str, float]]:
    """The entities of a quotas.json document (ValueError when it cannot be read)."""
    if not isinstance(data, dict) or not isinstance(data.get("quotas"), list):
        raise ValueError('no "quotas" list')
    out: dict[Entity, dict[str, float]] = {}
    for item in data["quotas"]:
        entity = make_entity(item["entity"].items())
        values = {str(k): float(v) for k, v in item["values"].items()}
        out[entity] = values
    return out
