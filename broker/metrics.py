"""The broker's metrics and health, in one place.

One `BrokerMetrics` per broker instance, with its own prometheus_client `CollectorRegistry` (never
the process-wide default registry, so several brokers in one process do not clash). The
`/metrics` endpoint (broker.http) renders it with `prometheus_client.generate_latest(registry)`.

Two kinds of metrics, chosen to keep the produce/fetch path cheap:

  * event counters and histograms, updated where the event happens, at most once per request,
    per partition of a group-commit round or per fsync round (never per record): plain dicts of
    numbers updated on the broker's Trio thread, with no locks (everything that updates or reads
    them runs on that one thread, including the HTTP endpoint);
  * state gauges (ring occupancy, offsets, sizes, segment counts, consumer lag, connections, disk
    free) computed only when scraped, by reading the broker's own state.

Every metric, its type and labels (docs/operations.md explains what each means):

    counters
      ringlog_topic_records_in_total{topic}            records appended (acknowledged writes)
      ringlog_topic_bytes_in_total{topic}              record-batch bytes appended
      ringlog_topic_bytes_out_total{topic}             record-batch bytes sent to fetchers
      ringlog_requests_total{api,error}                requests answered, by outcome
      ringlog_rejected_requests_total{reason}          frames the broker could not accept
      ringlog_backpressure_events_total{topic,partition,mode}   full-ring events
      ringlog_connections_accepted_total
      ringlog_connections_refused_total{limit}         closed at accept: max.connections(.per.ip)
      ringlog_connections_closed_total{limit}          closed by connections.max.idle.ms /
                                                       socket.request.read.timeout.ms
      ringlog_storage_errors_total{operation}          failed appends / fsyncs / topic deletions
    histograms
      ringlog_request_latency_seconds{api}             request read -> response ready
      ringlog_group_commit_batches                     record batches per group-commit round
      ringlog_fsync_latency_seconds                    one fsync round (all partitions of it)
    gauges (computed at scrape time)
      ringlog_connections
      ringlog_ring_bytes / ringlog_ring_capacity_bytes{topic,partition}
      ringlog_log_start_offset / ringlog_log_end_offset / ringlog_high_watermark /
      ringlog_log_size_bytes / ringlog_log_segments{topic,partition}
      ringlog_consumer_group_committed_offset / ringlog_consumer_group_lag{group,topic,partition}
      ringlog_consumer_group_members{group}
      ringlog_disk_free_bytes / ringlog_disk_total_bytes{path}
      ringlog_ready                                    1 when /health answers 200
    cluster mode only (read from broker.cluster at scrape time; the counters are plain ints the
    cluster code bumps once per ISR write, controller change or election, never per request)
      ringlog_leader_partitions / ringlog_replica_partitions          led / held here
      ringlog_under_replicated_partitions / ringlog_under_min_isr_partitions   of those led here
      ringlog_controller                               1 on the active controller, else 0
      ringlog_offline_partitions                       no live leader (counted by the controller)
      ringlog_replica_lag{topic,partition} / ringlog_replica_max_lag   partitions followed here
      ringlog_isr_shrinks_total / ringlog_isr_expands_total            written by this leader
      ringlog_controller_changes_total / ringlog_leader_elections_total
"""
from __future__ import annotations

import bisect
import dataclasses
import os
import time
import typing
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROUND_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# How long a failed append or fsync keeps /health at 503 ("log dir failed").
STORAGE_ERROR_HOLD_S = 60.0


class _Histogram:
    """Bucket counts per label tuple; observe() is a bisect and two additions."""

    __slots__ = ("buckets", "counts", "sums")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.buckets) + 1)
            self.sums[labels] = 0.0
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] += value

    def family(self, name: str, doc: str, labelnames: list[str]) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, doc, labels=labelnames)
        for labels, counts in list(self.counts.items()):
            cumulative = 0
            points = []
            for bound, n in zip(self.buckets, counts):
                cumulative += n
                points.append((_le(bound), cumulative))
            cumulative += counts[-1]
            points.append(("+Inf", cumulative))
            fam.add_metric(list(labels), points, self.sums[labels])
        return fam


def _le(bound: float) -> str:
    return str(float(bound))


def _counter(name: str, doc: str, labelnames: list[str], values: dict) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=labelnames)
    for labels, value in list(values.items()):
        fam.add_metric(list(labels) if isinstance(labels, tuple) else [labels], value)
    return fam


# --- request outcome: the first Kafka error code in a kio response --------------------------

_PLANS: dict[type, tuple[tuple[int, str], ...]] = {}
_ERROR, _ENTITY, _ENTITIES = 0, 1, 2


def _plan(cls: type) -> tuple[tuple[int, str], ...]:
    """Where the error codes of entity class `cls` are: its error_code fields, nested entities."""
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    hints = typing.get_type_hints(cls)
    items: list[tuple[int, str]] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("kafka_type") == "error_code":
            items.append((_ERROR, f.name))
            continue
        hint = hints.get(f.name)
        args = [a for a in typing.get_args(hint) if a is not Ellipsis and a is not type(None)]
        if dataclasses.is_dataclass(hint):
            items.append((_ENTITY, f.name))
        elif typing.get_origin(hint) is tuple and args and dataclasses.is_dataclass(args[0]):
            items.append((_ENTITIES, f.name))
        elif args and dataclasses.is_dataclass(args[0]):  # Optional[Entity]
            items.append((_ENTITY, f.name))
    # top-level error codes first: they describe the whole request
    items.sort(key=lambda item: item[0] != _ERROR)
    plan = _PLANS[cls] = tuple(items)
    return plan


def first_error(entity: Any) -> int:
    """The first non-zero error code in a kio response entity (0 when there is none)."""
    for kind, name in _plan(type(entity)):
        value = getattr(entity, name)
        if kind == _ERROR:
            if value:
                return int(value)
        elif kind == _ENTITY:
            if value is not None:
                code = first_error(value)
                if code:
                    return code
        else:
            for item in value:
                code = first_error(item)
                if code:
                    return code
    return 0


_ERROR_NAMES: dict[int, str] = {}


def error_name(code: int) -> str:
    """Kafka's name of an error code ("NONE", "UNKNOWN_TOPIC_OR_PARTITION", ...)."""
    name = _ERROR_NAMES.get(code)
    if name is None:
        from kio.schema.errors import ErrorCode

        try:
            name = ErrorCode(code).name.upper()
        except ValueError:
            name = f"ERROR_{code}"
        _ERROR_NAMES[code] = name
    return name


_API_LABELS: dict[str, str] = {}


def api_label(handler_name: str) -> str:
    """Kafka's API name from a handler's name: create_topics -> CreateTopics."""
    label = _API_LABELS.get(handler_name)
    if label is None:
        label = _API_LABELS[handler_name] = "".join(p[:1].upper() + p[1:] for p in handler_name.split("_"))
    return label


# --- health ---------------------------------------------------------------------------------


class Health:
    """Ready / not ready, with the reason: what /health answers.

    Phases: "starting" (with what it is doing: recovering logs, ...), "ready", "stopping".
    Ready also needs: the consumer-group coordinator loaded, the data dir's disk above
    `health.disk.free.min.bytes`, the data dir accessible and no failed append or fsync in the
    last STORAGE_ERROR_HOLD_S seconds.
    """

    def __init__(self, data_dir: str, min_free_bytes: int) -> None:
        self.data_dir = data_dir
        self.min_free_bytes = min_free_bytes
        self.phase = "starting"
        self.detail = "opening the data dir"
        self.broker: Any = None
        self.storage_error: str | None = None
        self.storage_error_at = 0.0

    def starting(self, detail: str) -> None:
        self.phase, self.detail = "starting", detail

    def ready(self) -> None:
        self.phase, self.detail = "ready", ""

    def stopping(self) -> None:
        self.phase, self.detail = "stopping", "shutting down"

    def storage_failed(self, error: BaseException | str) -> None:
        self.storage_error = str(error) or repr(error)
        self.storage_error_at = time.monotonic()

    def check(self) -> tuple[bool, str]:
        """(ready, reason); the reason is "ready" or why not."""
        if self.phase == "starting":
            return False, f"starting: {self.detail}"
        if self.phase != "ready":
            return False, self.detail
        coordinator = getattr(self.broker, "coordinator", None)
        if coordinator is not None:
            if getattr(coordinator, "load_error", None) is not None:
                return False, f"consumer group coordinator failed to load: {coordinator.load_error!r}"
            if getattr(getattr(coordinator, "state", None), "loading", False):
                return False, "starting: loading consumer groups"
        try:
            st = os.statvfs(self.data_dir)
        except OSError as exc:
            return False, f"log dir failed: {self.data_dir}: {exc.strerror or exc}"
        if not os.access(self.data_dir, os.W_OK | os.X_OK):
            return False, f"log dir failed: {self.data_dir} is not writable"
        free = st.f_bavail * st.f_frsize
        if free < self.min_free_bytes:
            return False, (f"disk nearly full: {free} bytes free on {self.data_dir} "
                           f"(health.disk.free.min.bytes {self.min_free_bytes})")
        if self.storage_error is not None and time.monotonic() - self.storage_error_at < STORAGE_ERROR_HOLD_S:
            return False, f"log dir failed: {self.storage_error}"
        return True, "ready"


# --- the metrics ------------------------------------------------------------------------------


class BrokerMetrics:
    """Counters and histograms updated by the broker, gauges read from it when scraped.

    Hot-path methods (all O(1) or O(partitions/topics) of one request or round):
        handled(handler, result, seconds)    one answered request (failed(): closed instead)
        unsupported(key, handlers)           answered UNSUPPORTED_VERSION by the router
        rejected_request(reject, handlers) / rejected(reason)   a frame that was not accepted
        appended(tp, entries, infos)         one partition's share of a group-commit round
        commit_round(batches)                one group-commit round
        fsync(seconds, error=None)           one fsync round
        fetched(topics) -> first error code  one Fetch answer (bytes out per topic)
        backpressure(tp, mode)               a batch met a full ring
        throttled(quota, ms)                 a client quota throttled an answer
        connection_accepted() / connection_refused(limit) / connection_closed(limit)
        storage_failed(operation, error)
    """

    def __init__(self, data_dir: str = ".", min_free_bytes: int = 0) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.health = Health(data_dir, min_free_bytes)
        self.broker: Any = None
        self.records_in: dict[str, int] = {}
        self.bytes_in: dict[str, int] = {}
        self.bytes_out: dict[str, int] = {}
        self.requests: dict[tuple[str, str], int] = {}
        self.rejects: dict[str, int] = {}
        self.backpressure_events: dict[tuple[str, str, str], int] = {}
        self.storage_errors: dict[str, int] = {}
        self.quota_throttled: dict[str, int] = {}        # quota key -> throttled answers
        self.quota_throttle_seconds: dict[str, float] = {}
        self.connections_accepted = 0
        self.connections_refused: dict[str, int] = {}   # limit -> count
        self.connections_closed: dict[str, int] = {}    # limit -> count
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.round_batches = _Histogram(ROUND_BUCKETS)
        self.fsync_latency = _Histogram(FSYNC_BUCKETS)
        self.registry.register(_Collector(self))

    def attach(self, broker: Any) -> None:
        """Read state gauges from `broker` from now on."""
        self.broker = broker
        self.health.broker = broker

    # --- hot path -----------------------------------------------------------------------------

    def handled(self, handler_name: str, result: Any, seconds: float) -> None:
        """A handler returned `result`: a kio response, a RawResponse or NO_RESPONSE."""
        if dataclasses.is_dataclass(result):
            code = first_error(result)
        else:
            code = getattr(result, "error_code", 0) or 0
        self._count(api_label(handler_name), error_name(code), seconds)

    def failed(self, handler_name: str, outcome: str, seconds: float) -> None:
        """A handler closed the connection instead of answering (outcome: CONNECTION_CLOSED,
        UNKNOWN_SERVER_ERROR)."""
        self._count(api_label(handler_name), outcome, seconds)

    def _count(self, api: str, error: str, seconds: float) -> None:
        key = (api, error)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency.observe((api,), seconds)

    def unsupported(self, api_key: int, handlers: Any) -> None:
        """A request answered UNSUPPORTED_VERSION without running a handler."""
        spec = handlers.get(api_key)
        key = (api_label(spec.name) if spec is not None else "unknown", "UNSUPPORTED_VERSION")
        self.requests[key] = self.requests.get(key, 0) + 1

    def rejected_request(self, reject: Any, handlers: Any) -> None:
        """A frame the router could not accept (broker.router.Reject): the connection closes."""
        header = reject.header
        spec = handlers.get(header.api_key) if header is not None else None
        if header is None:
            reason = "unreadable_header"
        elif spec is None:
            reason = "unknown_api_key"
        elif reject.reason.startswith("malformed"):
            reason = "malformed_request"
        else:
            reason = "unsupported_request"
        self.rejected(reason, api_label(spec.name) if spec is not None else None)

    def rejected(self, reason: str, api: str | None = None) -> None:
        """A frame refused before any handler ran (counted as INVALID_REQUEST too)."""
        self.rejects[reason] = self.rejects.get(reason, 0) + 1
        key = (api or "unknown", "INVALID_REQUEST")
        self.requests[key] = self.requests.get(key, 0) + 1

    def appended(self, tp: tuple[str, int], entries: Iterable[Any], infos: list[Any]) -> None:
        if not infos:
            return
        topic = tp[0]
        self.records_in[topic] = self.records_in.get(topic, 0) + infos[-1].last_offset - infos[0].base_offset + 1
        self.bytes_in[topic] = self.bytes_in.get(topic, 0) + sum(e.size for e in entries)

    def commit_round(self, batches: int) -> None:
        self.round_batches.observe((), batches)

    def fsync(self, seconds: float, error: BaseException | None = None) -> None:
        self.fsync_latency.observe((), seconds)
        if error is not None:
            self.storage_failed("fsync", error)

    def fetched(self, topics: Iterable[tuple[str, Iterable[Any]]]) -> int:
        """Count a Fetch answer's bytes per topic; return its first partition error code."""
        error = 0
        for name, parts in topics:
            size = 0
            for s in parts:
                size += s.size
                if s.error and not error:
                    error = int(s.error)
            if size:
                self.bytes_out[name] = self.bytes_out.get(name, 0) + size
        return error

    def backpressure(self, tp: tuple[str, int], mode: str) -> None:
        key = (tp[0], str(tp[1]), mode)
        self.backpressure_events[key] = self.backpressure_events.get(key, 0) + 1

    def throttled(self, quota: str, throttle_ms: int) -> None:
        self.quota_throttled[quota] = self.quota_throttled.get(quota, 0) + 1
        self.quota_throttle_seconds[quota] = self.quota_throttle_seconds.get(quota, 0.0) + throttle_ms / 1000

    def connection_accepted(self) -> None:
        self.connections_accepted += 1

    def connection_refused(self, limit: str = "max.connections") -> None:
        self.connections_refused[limit] = self.connections_refused.get(limit, 0) + 1

    def connection_closed(self, limit: str) -> None:
        self.connections_closed[limit] = self.connections_closed.get(limit, 0) + 1

    def storage_failed(self, operation: str, error: BaseException) -> None:
        self.storage_errors[operation] = self.storage_errors.get(operation, 0) + 1
        self.health.storage_failed(f"{operation}: {error}")

    # --- rendering ----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition (call it on the broker's Trio thread)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def collect(self) -> Iterator[Any]:
        yield _counter("ringlog_topic_records_in", "Records appended to the topic's partitions.",
                       ["topic"], self.records_in)
        yield _counter("ringlog_topic_bytes_in", "Record-batch bytes appended to the topic's partitions.",
                       ["topic"], self.bytes_in)
        yield _counter("ringlog_topic_bytes_out", "Record-batch bytes of the topic sent in Fetch answers.",
                       ["topic"], self.bytes_out)
        yield _counter("ringlog_requests", "Requests answered, by API and the first Kafka error code of the answer.",
                       ["api", "error"], self.requests)
        yield _counter("ringlog_rejected_requests", "Frames the broker could not accept (the connection is closed).",
                       ["reason"], self.rejects)
        yield _counter("ringlog_backpressure_events", "Batches that met a full partition ring (mode block: waited; reject: refused).",
                       ["topic", "partition", "mode"], self.backpressure_events)
        yield _counter("ringlog_storage_errors", "Failed log appends, fsync rounds and topic deletions.",
                       ["operation"], self.storage_errors)
        yield _counter("ringlog_quota_throttled_requests", "Answers throttled by a client quota (throttle_time_ms > 0).",
                       ["quota"], {(k,): v for k, v in self.quota_throttled.items()})
        yield _counter("ringlog_quota_throttle_seconds", "Throttle time handed out by client quotas.",
                       ["quota"], {(k,): v for k, v in self.quota_throttle_seconds.items()})
        yield _counter("ringlog_connections_accepted", "Client connections accepted.", [], {(): self.connections_accepted})
        yield _counter("ringlog_connections_refused",
                       "Client connections closed at once because a connection limit was reached.",
                       ["limit"], self.connections_refused)
        yield _counter("ringlog_connections_closed",
                       "Client connections closed by the idle or the request-read timeout.",
                       ["limit"], self.connections_closed)
        yield self.latency.family("ringlog_request_latency_seconds",
                                  "Time from a request being read to its answer being ready.", ["api"])
        yield self.round_batches.family("ringlog_group_commit_batches",
                                        "Record batches written per group-commit round.", [])
        yield self.fsync_latency.family("ringlog_fsync_latency_seconds",
                                        "Duration of one fsync round (every partition it syncs).", [])
        ok, _ = self.health.check()
        ready = GaugeMetricFamily("ringlog_ready", "1 when /health answers 200 (ready), else 0.")
        ready.add_metric([], 1 if ok else 0)
        yield ready
        broker = self.broker
        if broker is not None:
            yield from _broker_gauges(broker)
        yield from _disk_gauges(self.health.data_dir)


class _Collector:
    def __init__(self, metrics: BrokerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self.metrics.collect()


def _broker_gauges(broker: Any) -> Iterator[Any]:
    conns = GaugeMetricFamily("ringlog_connections", "Open client connections.")
    conns.add_metric([], len(getattr(broker, "connections", ())))
    yield conns

    tp_labels = ["topic", "partition"]
    ring_used = GaugeMetricFamily("ringlog_ring_bytes", "Bytes waiting in the partition's ring for the writer.", labels=tp_labels)
    ring_cap = GaugeMetricFamily("ringlog_ring_capacity_bytes", "Size of the partition's ring.", labels=tp_labels)
    start = GaugeMetricFamily("ringlog_log_start_offset", "First offset still in the partition's log.", labels=tp_labels)
    end = GaugeMetricFamily("ringlog_log_end_offset", "Offset the next appended record gets.", labels=tp_labels)
    hwm = GaugeMetricFamily("ringlog_high_watermark", "Offsets below it are committed and visible to consumers.", labels=tp_labels)
    size = GaugeMetricFamily("ringlog_log_size_bytes", "Bytes of the partition's segment files.", labels=tp_labels)
    segs = GaugeMetricFamily("ringlog_log_segments", "Segments of the partition's log.", labels=tp_labels)
    for (topic, p), part in list(broker.partitions.items()):
        labels = [topic, str(p)]
        plog = part.log
        ring_used.add_metric(labels, part.ring.used)
        ring_cap.add_metric(labels, part.ring.capacity)
        try:
            start.add_metric(labels, plog.log_start_offset)
            end.add_metric(labels, plog.log_end_offset)
            size.add_metric(labels, plog.size_bytes)
            segs.add_metric(labels, plog.segment_count())
        except Exception:  # a log closed under us (topic deleted meanwhile): skip it
            continue
        hwm.add_metric(labels, part.high_watermark)
    yield from (ring_used, ring_cap, start, end, hwm, size, segs)
    yield from _group_gauges(broker)
    node = getattr(broker, "cluster", None)
    if node is not None:
        yield from _cluster_metrics(broker, node)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, doc)
    fam.add_metric([], value)
    return fam


def _cluster_metrics(broker: Any, node: Any) -> Iterator[Any]:
    """Cluster mode: this broker's replicas by role (from each Partition's `replication`, the
    role broker.cluster.replica gives it), the controller's view of offline partitions, and the
    counters the cluster code keeps. Kafka's names in docs/operations.md."""
    leaders = replicas = under_replicated = under_min_isr = 0
    lag = GaugeMetricFamily("ringlog_replica_lag",
                            "Offsets this follower replica is behind the leader's high watermark (as of the "
                            "leader's last Fetch answer).", labels=["topic", "partition"])
    max_lag = 0
    for (topic, p), part in list(broker.partitions.items()):
        role = part.replication
        if role is None or topic not in node.topics:
            continue
        replicas += 1
        if role.is_leader:
            leaders += 1
            if len(role.isr) < len(role.replicas):
                under_replicated += 1
            if len(role.isr) < node.min_insync(topic):
                under_min_isr += 1
        elif role.leader_high_watermark >= 0:
            try:
                behind = max(0, role.leader_high_watermark - part.log.log_end_offset)
            except Exception:  # a log closed under us (topic deleted meanwhile): skip it
                continue
            lag.add_metric([topic, str(p)], behind)
            max_lag = max(max_lag, behind)
    offline = 0
    if node.is_controller:
        live = set(node.brokers) | {node.node_id}
        offline = sum(1 for state in list(node.states.values()) if state.leader not in live)
    yield _gauge("ringlog_leader_partitions", "Partitions this broker leads.", leaders)
    yield _gauge("ringlog_replica_partitions", "Replicas this broker holds (led and followed).", replicas)
    yield _gauge("ringlog_under_replicated_partitions",
                 "Partitions this broker leads whose ISR is smaller than their replica list.", under_replicated)
    yield _gauge("ringlog_under_min_isr_partitions",
                 "Partitions this broker leads whose ISR is below min.insync.replicas (acks=all is refused).",
                 under_min_isr)
    yield _gauge("ringlog_controller", "1 on the broker that is the active controller, else 0.",
                 1 if node.is_controller else 0)
    yield _gauge("ringlog_offline_partitions",
                 "Partitions of the cluster without a live leader (counted by the controller, 0 elsewhere).", offline)
    yield lag
    yield _gauge("ringlog_replica_max_lag", "The largest ringlog_replica_lag of this broker (0 when it follows none).",
                 max_lag)
    manager = node.replicas
    yield _counter("ringlog_isr_shrinks", "ISR shrinks this broker wrote as a partition's leader.", [],
                   {(): manager.isr_shrinks})
    yield _counter("ringlog_isr_expands", "ISR expansions this broker wrote as a partition's leader.", [],
                   {(): manager.isr_expands})
    yield _counter("ringlog_controller_changes", "Changes of the controller this broker has seen (elected or gone).",
                   [], {(): node.controller_changes})
    yield _counter("ringlog_leader_elections", "Partition leaders this broker elected as the controller.", [],
                   {(): node.leader_elections})


def _group_gauges(broker: Any) -> Iterator[Any]:
    coordinator = getattr(broker, "coordinator", None)
    state = getattr(coordinator, "state", None)
    if state is None or getattr(state, "loading", True):
        return
    glabels = ["group", "topic", "partition"]
    committed = GaugeMetricFamily("ringlog_consumer_group_committed_offset",
                                  "The group's committed offset of the partition.", labels=glabels)
    lag = GaugeMetricFamily("ringlog_consumer_group_lag",
                            "High watermark minus the group's committed offset.", labels=glabels)
    members = GaugeMetricFamily("ringlog_consumer_group_members", "Members of the group.", labels=["group"])
    # classic groups and consumer-protocol (KIP-848) ones
    for group_id, group in list(state.groups.items()) + list(getattr(state, "consumer_groups", {}).items()):
        if getattr(group, "state", None) == "Dead":
            continue
        members.add_metric([group_id], len(group.members))
        for topic, p, off, _end, behind in coordinator.lag(group_id):
            if off is None:
                continue
            committed.add_metric([group_id, topic, str(p)], off)
            if behind is not None:
                lag.add_metric([group_id, topic, str(p)], behind)
    yield from (committed, lag, members)


def _disk_gauges(path: str) -> Iterator[Any]:
    free = GaugeMetricFamily("ringlog_disk_free_bytes", "Bytes available to the broker on the data dir's file system.", labels=["path"])
    total = GaugeMetricFamily("ringlog_disk_total_bytes", "Size of the data dir's file system.", labels=["path"])
    try:
        st = os.statvfs(path)
    except OSError:
        return
    label = [os.path.abspath(path)]
    free.add_metric(label, st.f_bavail * st.f_frsize)
    total.add_metric(label, st.f_blocks * st.f_frsize)
    yield free
    yield total
