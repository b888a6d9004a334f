"""Cluster mode: this broker's membership, the controller election and the metadata in etcd.

`ClusterNode(broker)` is started by the server when etcd.endpoints is set (`broker.cluster`):

  1. registration: a lease of broker.session.timeout.ms (whole seconds) renewed every third of
     it, and `brokers/<id>` under it, created only if absent (a second broker with the same id is
     refused; a restarted one waits until its old key's lease ran out); then the data dir's
     directory.id (meta.properties) is compared with the one etcd has for this node: a replaced
     data dir takes this node out of every ISR before it takes any role;
  2. one watch over the cluster's whole prefix (layout in broker.cluster.state), applied in one
     task in revision order: live brokers, the controller, topics (created locally on every
     broker, with the topic id etcd holds) and each partition's state, which gives the local
     replica its role (broker.cluster.replica);
  3. election: when no controller key exists, every broker tries to create it under its lease in
     a txn (compare create_revision == 0); one wins. The controller creates the state of new
     partitions and, when the broker set changes, writes new leaders and ISRs
     (broker.cluster.state.decide) with compare-and-swap on each key's mod_revision.

Topics are created in etcd by the broker that gets the CreateTopics (or the auto-creation), with a
round-robin assignment over the live brokers (what ZooKeeper-era Kafka's admin path does); the
call returns once this broker has applied the topic and the controller its partition states.
`__consumer_offsets` is a cluster topic too (created by the group coordinator, see
broker.coordinator_runtime; `coordinator_of` answers FindCoordinator); the leadership of its
partitions is handed to the coordinator as it changes. `__transaction_state` stays local.
ACLs, credentials and client quotas are documents under `security/` (broker.cluster.security).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio
from kio.schema.errors import ErrorCode

from ..coordinator import OFFSETS_TOPIC
from ..errors import KafkaError
from ..logging_setup import event
from ..metadata import TopicInfo, is_internal
from .etcd import EtcdClient, EtcdError, KeyValue, WatchEvent, cmp_create_revision, cmp_mod_revision, op_put
from .replica import LeaderReplication, ReplicaManager
from .security import SharedSecurity
from .state import NO_LEADER, PartitionState, TopicRecord, assign_replicas, decide, forget_replica, initial_state

if TYPE_CHECKING:
    from ..core import Broker
    from ..partition import Partition

log = logging.getLogger("ringlog.cluster")

CREATE_WAIT_S = 15.0
META_FILE = "meta.properties"  # Kafka's name and keys: node.id, directory.id, version


class ClusterJoinError(Exception):
    """The broker cannot join its cluster (etcd unreachable, its node id taken): a start-up failure."""


def load_directory_id(data_dir: str, node_id: int) -> str:
    """The id of this data dir, made at its first start in cluster mode and kept in
    meta.properties (blocking: run in a worker thread). A data dir another node id made is
    refused, as Kafka refuses it."""
    path = os.path.join(data_dir, META_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            props = dict(line.strip().split("=", 1) for line in f if "=" in line and not line.startswith("#"))
    except FileNotFoundError:
        props = {}
    if props:
        stored = props.get("node.id", "")
        if stored != str(node_id):
            raise ClusterJoinError(f"data dir {data_dir} belongs to node id {stored or '(none)'}, not {node_id}; "
                                   f"start it with --node-id {stored} or use another data dir")
        if props.get("directory.id"):
            return props["directory.id"]
    directory_id = str(uuid.uuid4())
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"version=1\nnode.id={node_id}\ndirectory.id={directory_id}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return directory_id


def _flag(value: Any) -> bool:
    return str(value).strip().lower() == "true"


class ClusterNode:
    def __init__(self, broker: Broker) -> None:
        cfg = broker.config
        self.broker = broker
        self.node_id = broker.node_id
        self.etcd = EtcdClient(cfg.etcd_endpoints)
        self.prefix = f"/ringlog/{cfg.cluster_name}/"
        self.ttl_s = max(2, math.ceil(cfg.broker_session_timeout_ms / 1000))
        self.lease = 0
        self.directory_id = ""
        self.brokers: dict[int, tuple[str, int]] = {}
        # node id -> listener name -> advertised (host, port), from each broker's registration
        self.endpoints: dict[int, dict[str, tuple[str, int]]] = {}
        self.controller_id = -1
        self.is_controller = False
        self.controller_changes = 0  # controller key changes applied (metrics)
        self.leader_elections = 0  # leaders this broker wrote as controller (metrics)
        self.topics: dict[str, TopicRecord] = {}
        self.states: dict[tuple[str, int], PartitionState] = {}
        self.replicas = ReplicaManager(self)
        self._changed = trio.Event()
        # ACLs, credentials and client quotas live in etcd (broker.cluster.security)
        self.security = SharedSecurity(self)
        if broker.security is not None:
            broker.security.shared = self.security
        # producer ids are unique cluster-wide (the Snowflake worker id is the node id), so a
        # new leader may re-initialise (KIP-360) an id another broker handed out
        broker.producer_state.allocator.accept_foreign_ids = True

    # --- queries for the handlers ----------------------------------------------------------------

    def key(self, *parts: Any) -> str:
        return self.prefix + "/".join(str(p) for p in parts)

    def live_brokers(self, listener: str | None = None) -> list[tuple[int, str, int]]:
        """(node id, host, port) of every live broker; with a listener name, each broker's
        address on that listener (as Kafka answers Metadata: the listener the request came in
        on), its first listener's where it has no such listener."""
        known = dict(self.brokers)
        known.setdefault(self.node_id, (self.broker.host, self.broker.port))
        out = []
        for b, address in sorted(known.items()):
            if listener is not None:
                address = self.endpoints.get(b, {}).get(listener, address)
            out.append((b, *address))
        return out

    def manages(self, topic: str) -> bool:
        return topic in self.topics

    def partition_view(self, topic: str, index: int) -> tuple[ErrorCode, int, int, tuple, tuple, tuple] | None:
        """(error, leader, leader epoch, replicas, isr, offline replicas) for Metadata; None for a
        topic that is not in the cluster (internal ones: this broker answers alone)."""
        if topic not in self.topics:
            return None
        state = self.states.get((topic, index))
        if state is None:
            replicas = self.topics[topic].replicas[index] if index < len(self.topics[topic].replicas) else ()
            return ErrorCode.leader_not_available, NO_LEADER, -1, replicas, (), ()
        offline = tuple(r for r in state.replicas if r not in self.brokers and r != self.node_id)
        error = ErrorCode.leader_not_available if state.leader == NO_LEADER else ErrorCode.none
        return error, state.leader, state.leader_epoch, state.replicas, state.isr, offline

    def coordinator_of(self, group_id: str, listener: str | None) -> tuple[int, str, int] | None:
        """(node id, host, port) of the leader of the group's `__consumer_offsets` partition, its
        group coordinator; None while that partition has no live leader (or the topic is missing)."""
        from ..coordinator_runtime import partition_for

        record = self.topics.get(OFFSETS_TOPIC)
        if record is None:
            return None
        state = self.states.get((OFFSETS_TOPIC, partition_for(group_id, record.partitions)))
        if state is None or state.leader == NO_LEADER:
            return None
        for b, host, port in self.live_brokers(listener):
            if b == state.leader:
                return b, host, port
        return None

    def topic_setting(self, topic: str, key: str, default: str) -> str:
        record = self.topics.get(topic)
        if record is not None and key in record.configs:
            return record.configs[key]
        return self.broker.config.topic_defaults.get(key, default)

    def min_insync(self, topic: str) -> int:
        try:
            return int(self.topic_setting(topic, "min.insync.replicas", "1"))
        except ValueError:
            return 1

    def leader_error(self, part: Partition) -> ErrorCode | None:
        """NOT_LEADER_OR_FOLLOWER unless this broker leads the partition (None for local topics)."""
        if part.topic not in self.topics:
            return None
        if not isinstance(part.replication, LeaderReplication):
            return ErrorCode.not_leader_or_follower
        return None

    def produce_refusal(self, part: Partition, acks: int) -> ErrorCode | None:
        error = self.leader_error(part)
        if error is None and acks == -1 and part.topic in self.topics:
            if len(part.replication.isr) < self.min_insync(part.topic):
                return ErrorCode.not_enough_replicas
        return error

    async def wait_replicated(self, part: Partition, end: int, timeout_s: float) -> ErrorCode | None:
        """acks=all: until the high watermark reaches `end` (the ISR holds the batch); the error to
        answer otherwise (leadership lost, the ISR below min.insync.replicas, the timeout)."""
        if part.topic not in self.topics:
            return None
        with trio.move_on_after(timeout_s):
            while True:
                role = part.replication
                if not isinstance(role, LeaderReplication):
                    return ErrorCode.not_leader_or_follower
                if part.high_watermark >= end:
                    return None
                if len(role.isr) < self.min_insync(part.topic):
                    return ErrorCode.not_enough_replicas_after_append
                event_ = trio.Event()
                part.waiters.add(event_)
                try:
                    await event_.wait()
                finally:
                    part.waiters.discard(event_)
        return ErrorCode.request_timed_out

    async def wait_changed(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            await self._changed.wait()

    # --- lifetime --------------------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self.directory_id = await trio.to_thread.run_sync(load_directory_id, self.broker.config.data_dir,
                                                              self.node_id)
        except OSError as exc:
            raise ClusterJoinError(f"cannot read or write {META_FILE} in the data dir: {exc}") from None
        try:
            await self._register()
            await self._claim_directory()
            await self.security.seed()
            kvs, revision = await self.etcd.get_prefix(self.prefix)
        except EtcdError as exc:
            raise ClusterJoinError(f"cannot join cluster {self.broker.config.cluster_name!r}: {exc}") from None
        async with trio.open_nursery() as nursery:
            await nursery.start(self.replicas.run)
            await self._apply([WatchEvent("PUT", kv) for kv in kvs])
            nursery.start_soon(self._keepalive)
            nursery.start_soon(self._watch, revision + 1)
            if self.controller_id < 0:
                await self._campaign()
            log.info("joined cluster %s as node %d: %d broker(s), controller %d", self.prefix,
                     self.node_id, len(self.brokers), self.controller_id,
                     extra=event("cluster_joined", node_id=self.node_id, controller=self.controller_id))
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                # A clean stop gives up membership (and the controller) at once, so that other
                # brokers take over without waiting for the session timeout.
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    try:
                        await self.etcd.lease_revoke(self.lease)
                    except EtcdError as exc:
                        log.warning("giving up the etcd lease failed: %s", exc)

    async def _register(self) -> None:
        """Create brokers/<id> under a new lease; wait out an old lease of the same id (a restart)
        for up to two session timeouts, then refuse (another live broker has this id)."""
        self.lease = await self.etcd.lease_grant(self.ttl_s)
        key = self.key("brokers", self.node_id)
        value = json.dumps({"host": self.broker.host, "port": self.broker.port,
                            "listeners": {spec.name: [spec.advertised_host, spec.advertised_port]
                                          for spec in getattr(self.broker, "listeners", ()) if spec.advertised_host}})
        deadline = trio.current_time() + 2 * self.ttl_s + 1
        while True:
            result = await self.etcd.txn([cmp_create_revision(key, 0)], [op_put(key, value, self.lease)])
            if result.succeeded:
                return
            if trio.current_time() > deadline:
                raise ClusterJoinError(f"node id {self.node_id} is already registered in {self.prefix} by a live broker")
            await trio.sleep(0.25)

    async def _claim_directory(self) -> None:
        """Before taking any role: if the cluster knew this node with another data dir (this one
        was wiped or replaced), its replicas hold nothing the cluster counted on. They leave every
        ISR (and any leadership) first, so they rejoin as empty followers and never lead, nor make
        the other replicas truncate to, data this broker lost."""
        key = self.key("directories", self.node_id)
        known = await self.etcd.get(key)
        if known is not None and known.value.decode(errors="replace") != self.directory_id:
            log.warning("node %d joined before with another data dir (directory.id %s, now %s): its replicas "
                        "leave every ISR and start over as followers", self.node_id,
                        known.value.decode(errors="replace"), self.directory_id,
                        extra=event("data_dir_replaced", node_id=self.node_id))
            await self._leave_every_isr()
        if known is None or known.value.decode(errors="replace") != self.directory_id:
            await self.etcd.put(key, self.directory_id)

    async def _leave_every_isr(self) -> None:
        brokers, _ = await self.etcd.get_prefix(self.key("brokers") + "/")
        live = set()
        for kv in brokers:
            try:
                live.add(int(kv.key.rsplit("/", 1)[1]))
            except ValueError:
                pass
        states, _ = await self.etcd.get_prefix(self.key("partitions") + "/")
        for kv in states:
            # compare-and-swap against the controller and the leaders; re-read on a conflict
            while kv is not None:
                try:
                    new = forget_replica(PartitionState.decode(kv.value, kv.mod_revision), self.node_id, live)
                except (ValueError, KeyError, TypeError):
                    break
                if new is None:
                    break
                result = await self.etcd.txn([cmp_mod_revision(kv.key, kv.mod_revision)], [op_put(kv.key, new.encode())])
                if result.succeeded:
                    log.info("%s: node %d out of the ISR (now leader %d epoch %d ISR %s)", kv.key[len(self.prefix):],
                             self.node_id, new.leader, new.leader_epoch, list(new.isr))
                    break
                kv = await self.etcd.get(kv.key)

    async def _keepalive(self) -> None:
        interval = self.ttl_s / 3
        while True:
            await trio.sleep(interval)
            try:
                ttl = await self.etcd.lease_keepalive(self.lease)
            except EtcdError as exc:
                # Keep serving what we lead with the epoch we know; membership changes wait for etcd.
                log.warning("etcd lease renewal failed: %s", exc)
                continue
            if ttl <= 0:
                log.warning("our etcd lease expired (paused or cut off for longer than %d s); registering again",
                            self.ttl_s)
                try:
                    await self._register()
                    if self.controller_id < 0 or self.is_controller:
                        self.is_controller = False
                        await self._campaign()
                except (EtcdError, ClusterJoinError) as exc:
                    log.warning("registering again failed: %s", exc)

    async def _campaign(self) -> None:
        key = self.key("controller")
        result = await self.etcd.txn([cmp_create_revision(key, 0)],
                                     [op_put(key, f'{{"node_id": {self.node_id}}}', self.lease)])
        if result.succeeded:
            log.info("node %d is the controller", self.node_id, extra=event("controller_elected", node_id=self.node_id))

    # --- applying etcd's changes (one task, revision order) ------------------------------------------

    async def _on_events(self, events: list[WatchEvent], revision: int) -> None:
        await self._apply(events)

    async def _watch(self, start: int) -> None:
        """The watch, and a full re-read when it cannot go on (its revision was compacted, or
        etcd refused it): what vanished meanwhile is applied as deleted."""
        while True:
            try:
                await self.etcd.watch(self.prefix, start, self._on_events)
            except EtcdError as exc:
                log.warning("etcd watch ended (%s); reading the cluster state again", exc)
            while True:
                try:
                    kvs, revision = await self.etcd.get_prefix(self.prefix)
                    break
                except EtcdError as exc:
                    log.warning("reading the cluster state failed: %s", exc)
                    await trio.sleep(1.0)
            present = {kv.key for kv in kvs}
            known = {self.key("brokers", b) for b in self.brokers} | {self.key("partitions", *tp) for tp in self.states}
            if self.controller_id >= 0:
                known.add(self.key("controller"))
            gone = [WatchEvent("DELETE", KeyValue(k, b"", 0, revision, 0, 0)) for k in sorted(known - present)]
            await self._apply(gone + [WatchEvent("PUT", kv) for kv in kvs])
            start = revision + 1

    async def _apply(self, events: list[WatchEvent]) -> None:
        touched: set[tuple[str, int]] = set()
        membership = False
        campaign = False
        for ev in events:
            rel = ev.kv.key[len(self.prefix):]
            kind, _, rest = rel.partition("/")
            try:
                if kind == "brokers":
                    node = int(rest)
                    if ev.type == "PUT":
                        d = ev.kv.json()
                        self.brokers[node] = (str(d["host"]), int(d["port"]))
                        self.endpoints[node] = {str(name): (str(h), int(p))
                                                for name, (h, p) in (d.get("listeners") or {}).items()}
                    else:
                        self.brokers.pop(node, None)
                        self.endpoints.pop(node, None)
                    membership = True
                elif kind == "controller":
                    was = self.controller_id
                    if ev.type == "PUT":
                        self.controller_id = int(ev.kv.json()["node_id"])
                        self.is_controller = self.controller_id == self.node_id and ev.kv.lease == self.lease
                        if self.is_controller:
                            membership = True  # a new controller looks at everything once
                    else:
                        self.controller_id, self.is_controller = -1, False
                        campaign = True
                    if self.controller_id != was:  # (a watch's re-read puts the same key again)
                        self.controller_changes += 1
                elif kind == "topics":
                    if ev.type == "PUT":
                        record = TopicRecord.decode(rest, ev.kv.value)
                        self.topics[rest] = record
                        await self._create_local(record)
                        touched.update((rest, p) for p in range(record.partitions))
                elif kind == "partitions":
                    topic, _, index = rest.rpartition("/")
                    tp = (topic, int(index))
                    if ev.type == "PUT":
                        self.states[tp] = PartitionState.decode(ev.kv.value, ev.kv.mod_revision)
                    else:
                        self.states.pop(tp, None)
                    touched.add(tp)
                elif kind == "security":
                    await self.security.apply(rest, ev.kv, ev.type != "PUT")
            except (ValueError, KeyError, TypeError) as exc:
                log.error("ignoring a malformed etcd key %s: %r", ev.kv.key, exc)
        for tp in sorted(touched):
            await self._apply_role(tp)
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        if campaign:
            await self._campaign()
        if self.is_controller and (membership or touched):
            await self._reconcile()

    async def _create_local(self, record: TopicRecord) -> None:
        if self.broker.metadata.get(record.name) is not None:
            return
        try:
            await self.broker.create_topic(record.name, record.partitions, record.configs or None, local=True,
                                           topic_id=uuid.UUID(record.topic_id))
        except KafkaError as exc:
            if exc.code != ErrorCode.topic_already_exists:
                log.error("could not create the cluster's topic %s here: %s", record.name, exc.message)

    async def _apply_role(self, tp: tuple[str, int]) -> None:
        part = self.broker.partition(*tp)
        state = self.states.get(tp)
        if part is None or state is None or self.node_id not in state.replicas:
            return
        if state.leader == self.node_id:
            await self.replicas.become_leader(part, state)
        else:
            self.replicas.become_follower(part, state)
        if tp[0] == OFFSETS_TOPIC:  # the group coordinator moves with the partition's leadership
            self.broker.coordinator.on_role(tp[1], state.leader == self.node_id, state.leader_epoch)

    # --- the controller ----------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        live = set(self.brokers)
        for name, record in list(self.topics.items()):
            unclean = _flag(self.topic_setting(name, "unclean.leader.election.enable", "false"))
            for p, replicas in enumerate(record.replicas):
                if not self.is_controller:
                    return
                key = self.key("partitions", name, p)
                state = self.states.get((name, p))
                try:
                    if state is None:
                        new = initial_state(replicas, live)
                        await self.etcd.txn([cmp_create_revision(key, 0)], [op_put(key, new.encode())])
                        continue
                    new = decide(state, live, unclean=unclean)
                    if new is not None:
                        result = await self.etcd.txn([cmp_mod_revision(key, state.mod_revision)], [op_put(key, new.encode())])
                        if result.succeeded:
                            if new.leader != NO_LEADER and new.leader_epoch != state.leader_epoch:
                                self.leader_elections += 1
                            log.info("%s-%d: leader %d epoch %d ISR %s (was leader %d, ISR %s)", name, p, new.leader,
                                     new.leader_epoch, list(new.isr), state.leader, list(state.isr),
                                     extra=event("leader_elected", topic=name, partition=p, leader=new.leader,
                                                 leader_epoch=new.leader_epoch))
                except EtcdError as exc:
                    log.warning("controller: writing the state of %s-%d failed: %s", name, p, exc)

    async def write_isr(self, tp: tuple[str, int], epoch: int, isr: tuple[int, ...]) -> bool:
        """The leader's ISR change, compare-and-swap on the state it knows; False when the state
        moved on (another leader epoch, or the controller changed it first)."""
        state = self.states.get(tp)
        if state is None or state.leader != self.node_id or state.leader_epoch != epoch:
            return False
        new = PartitionState(state.leader, state.leader_epoch, isr, state.replicas)
        key = self.key("partitions", *tp)
        result = await self.etcd.txn([cmp_mod_revision(key, state.mod_revision)], [op_put(key, new.encode())])
        return result.succeeded

    # --- topic creation --------------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int, configs: Mapping[str, str] | None,
                           replication_factor: int | None, *, validate_only: bool) -> TopicInfo:
        rf = replication_factor if replication_factor and replication_factor > 0 else \
            self.broker.config.default_replication_factor
        live = [b for b, _, _ in self.live_brokers()]
        if rf > len(live):
            raise KafkaError(ErrorCode.invalid_replication_factor,
                             f"Unable to replicate the partition {rf} time(s): The target replication factor of {rf} "
                             f"cannot be reached because only {len(live)} broker(s) are registered.")
        replicas = assign_replicas(live, partitions, rf, start=random.randrange(len(live)))
        topic_id = uuid.uuid4()
        if validate_only:
            return TopicInfo(name=name, partitions=partitions, topic_id=topic_id, configs=dict(configs or {}))
        record = TopicRecord(name, str(topic_id), partitions, dict(configs or {}), tuple(replicas))
        key = self.key("topics", name)
        try:
            result = await self.etcd.txn([cmp_create_revision(key, 0)], [op_put(key, record.encode())])
        except EtcdError as exc:
            raise KafkaError(ErrorCode.request_timed_out, f"etcd is unavailable: {exc}") from None
        if not result.succeeded:
            raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
        with trio.move_on_after(CREATE_WAIT_S):
            while not (self.broker.metadata.get(name) is not None
                       and all((name, p) in self.states for p in range(partitions))):
                await self._changed.wait()
        info = self.broker.metadata.get(name)
        if info is None:
            raise KafkaError(ErrorCode.request_timed_out, f"topic {name!r} was stored but is not applied yet")
        return info
