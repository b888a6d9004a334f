"""Trio Kafka admin client.

    async with open_admin("127.0.0.1:9092") as admin:
        await admin.create_topics([NewTopic("events", 3)])
        print(await admin.list_topics())

Routing: topic changes (CreateTopics, DeleteTopics, CreatePartitions) go to the controller named in
Metadata (NOT_CONTROLLER refreshes and retries); group requests to the group's coordinator
(FindCoordinator); ListGroups to every broker; configs and DescribeCluster to any broker.

Errors: a failed item raises its KafkaError (the first one met, with the others in
``exc.errors`` when several failed); `create_topics(..., exist_ok=True)` ignores
TOPIC_ALREADY_EXISTS.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import trio

from ._lifetime import Lifetime, open_owned_nursery
from .cluster import BrokerInfo, Cluster, TopicInfo
from .connection import ApiKey
from .consumer import TopicPartition
from .errors import ConnectionLost, KafkaError, NoBrokersAvailable, RequestTimedOut, UnsupportedApi
from .security import SecurityConfig

__all__ = ["Admin", "ClusterDescription", "GroupDescription", "GroupMember", "NewTopic", "open_admin"]

log = logging.getLogger(__name__)

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
_NOT_CONTROLLER = 41
_TOPIC_ALREADY_EXISTS = 36
_COORDINATOR_ERRORS = frozenset({14, 15, 16})
_GROUP_ID_NOT_FOUND = 69


@attrs.frozen
class NewTopic:
    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    configs: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class GroupMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    assignment: tuple[TopicPartition, ...]


@attrs.frozen
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: tuple[GroupMember, ...]
    error_code: int = 0


@attrs.frozen
class ClusterDescription:
    cluster_id: str | None
    controller_id: int
    brokers: tuple[BrokerInfo, ...]


def _raise_errors(errors: dict[Any, KafkaError]) -> None:
    if errors:
        first = next(iter(errors.values()))
        first.errors = errors
        raise first


class Admin(Lifetime):
    def __init__(self, bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092", *, client_id: str = "ringlog-admin",
                 request_timeout_ms: float = 30000, retry_backoff_ms: float = 100, connect_timeout_ms: float = 10000,
                 **security: Any) -> None:
        """Config: client_id, request_timeout_ms, retry_backoff_ms, connect_timeout_ms, and the
        security options of client.security (security_protocol, sasl_mechanism, ...)."""
        self._security = SecurityConfig.from_options(security, "Admin")
        self._bootstrap = bootstrap_servers
        self.client_id = client_id
        self.request_timeout = request_timeout_ms / 1000
        self.retry_backoff = retry_backoff_ms / 1000
        self.connect_timeout = connect_timeout_ms / 1000
        self._nursery: trio.Nursery | None = None
        self.cluster: Cluster | None = None

    @contextlib.asynccontextmanager
    async def _lifetime(self):
        async with open_owned_nursery() as nursery:
            self._nursery = nursery
            try:
                self.cluster = Cluster(nursery, self._bootstrap, client_id=self.client_id,
                                       request_timeout=self.request_timeout, connect_timeout=self.connect_timeout,
                                       retry_backoff=self.retry_backoff, allow_auto_topic_creation=False,
                                       logger=log, security=self._security)
                await self.cluster.refresh()
                yield self
                # Nothing is left to do on a normal exit, so a cancellation that arrived in the
                # block's last line would otherwise never be delivered: deliver it here.
                await trio.lowlevel.checkpoint_if_cancelled()
            finally:
                nursery.cancel_scope.cancel()
                if self.cluster is not None:
                    with trio.CancelScope(shield=True):
                        await self.cluster.aclose()

    # --- plumbing

    async def _to_controller(self, api_key: int, build):
        last: BaseException | None = None
        for attempt in range(10):
            try:
                node = self.cluster.controller_id
                if node < 0 or node not in self.cluster.brokers:
                    await self.cluster.refresh()
                    node = self.cluster.controller_id
                conn = await (self.cluster.connection(node) if node >= 0 else self.cluster.any_connection())
                resp = await conn.request(build(conn.make(api_key)))
            except (ConnectionLost, RequestTimedOut, NoBrokersAvailable) as exc:
                last = exc
            else:
                codes = {int(getattr(r, "error_code", 0)) for r in _items(resp)}
                if _NOT_CONTROLLER not in codes:
                    return resp
                last = KafkaError(_NOT_CONTROLLER)
            await self.cluster.refresh()
            await trio.sleep(self.retry_backoff * (attempt + 1))
        raise last

    async def _to_coordinator(self, group: str, api_key: int, build):
        last: BaseException | None = None
        for attempt in range(10):
            try:
                node = await self.cluster.coordinator(group)
                conn = await self.cluster.connection(node)
                resp = await conn.request(build(conn.make(api_key)))
            except (ConnectionLost, RequestTimedOut, NoBrokersAvailable) as exc:
                last = exc
            else:
                code = int(getattr(resp, "error_code", 0) or 0)
                if code not in _COORDINATOR_ERRORS:
                    return resp
                last = KafkaError(code)
            await trio.sleep(self.retry_backoff * (attempt + 1))
        raise last

    # --- topics

    async def create_topics(self, topics: Iterable[NewTopic | str], *, exist_ok: bool = False,
                            timeout_ms: int = 30000, validate_only: bool = False) -> None:
        topics = [NewTopic(t) if isinstance(t, str) else t for t in topics]

        def build(b):
            return b(topics=[b("CreatableTopic", name=t.name, num_partitions=t.num_partitions,
                               replication_factor=t.replication_factor, assignments=(),
                               configs=[b("CreatableTopicConfig", name=k, value=v) for k, v in t.configs.items()])
                             for t in topics], timeout=timeout_ms, validate_only=validate_only)

        resp = await self._to_controller(ApiKey.CREATE_TOPICS, build)
        errors = {}
        for r in resp.topics:
            if r.error_code and not (exist_ok and r.error_code == _TOPIC_ALREADY_EXISTS):
                errors[r.name] = KafkaError(r.error_code, f"{r.name}: {getattr(r, 'error_message', None) or ''}".rstrip(": "))
        _raise_errors(errors)
        await self.cluster.refresh([t.name for t in topics])

    async def delete_topics(self, names: Iterable[str], *, timeout_ms: int = 30000, missing_ok: bool = False) -> None:
        names = list(names)
        resp = await self._to_controller(ApiKey.DELETE_TOPICS, lambda b: b(topic_names=names, timeout=timeout_ms))
        errors = {r.name: KafkaError(r.error_code, r.name) for r in resp.responses
                  if r.error_code and not (missing_ok and r.error_code == 3)}
        _raise_errors(errors)
        for n in names:
            self.cluster.topics.pop(n, None)
            self.cluster.wanted.discard(n)

    async def list_topics(self, *, internal: bool = False) -> list[str]:
        await self.cluster.refresh(all_topics=True)
        return sorted(t for t, info in self.cluster.topics.items() if internal or not info.is_internal)

    async def describe_topics(self, names: Iterable[str] | None = None) -> dict[str, TopicInfo]:
        if names is None:
            await self.cluster.refresh(all_topics=True)
            return dict(self.cluster.topics)
        names = list(names)
        await self.cluster.refresh(names)
        out = {}
        for n in names:
            info = self.cluster.topics.get(n)
            if info is None or info.error_code:
                raise KafkaError(info.error_code if info else 3, n)
            out[n] = info
        return out

    async def create_partitions(self, counts: Mapping[str, int], *, timeout_ms: int = 30000, validate_only: bool = False) -> None:
        """Grow each topic to `counts[topic]` partitions in total."""
        def build(b):
            return b(topics=[b("CreatePartitionsTopic", name=t, count=n, assignments=None) for t, n in counts.items()],
                     timeout=timeout_ms, validate_only=validate_only)

        resp = await self._to_controller(ApiKey.CREATE_PARTITIONS, build)
        _raise_errors({r.name: KafkaError(r.error_code, r.name) for r in resp.results if r.error_code})
        await self.cluster.refresh(list(counts))

    # --- configs

    async def describe_configs(self, resource_type: int, name: str, keys: Iterable[str] | None = None) -> dict[str, str | None]:
        """Config entries of a topic (resource_type 2, RESOURCE_TOPIC) or broker (4)."""
        conn = await self.cluster.any_connection()
        b = conn.make(ApiKey.DESCRIBE_CONFIGS)
        resp = await conn.request(b(resources=[b("DescribeConfigsResource", resource_type=resource_type, resource_name=name,
                                                 configuration_keys=list(keys) if keys is not None else None)],
                                    include_synonyms=False, include_documentation=False))
        for r in resp.results:
            if r.error_code:
                raise KafkaError(r.error_code, getattr(r, "error_message", None) or name)
            return {c.name: c.value for c in r.configs}
        return {}

    async def describe_topic_config(self, topic: str) -> dict[str, str | None]:
        return await self.describe_configs(RESOURCE_TOPIC, topic)

    async def alter_configs(self, resource_type: int, name: str, configs: Mapping[str, str | None], *, incremental: bool = True) -> None:
        """Set (value) or delete (None) config entries. Incremental uses IncrementalAlterConfigs
        (other entries stay) when the broker has it, else AlterConfigs (which replaces the set)."""
        conn = await self.cluster.any_connection()
        if incremental and conn.supports(ApiKey.INCREMENTAL_ALTER_CONFIGS):
            b = conn.make(ApiKey.INCREMENTAL_ALTER_CONFIGS)
            entries = [b("AlterableConfig", name=k, config_operation=0 if v is not None else 1, value=v) for k, v in configs.items()]
        else:
            b = conn.make(ApiKey.ALTER_CONFIGS)
            entries = [b("AlterableConfig", name=k, value=v) for k, v in configs.items() if v is not None]
        resp = await conn.request(b(resources=[b("AlterConfigsResource", resource_type=resource_type, resource_name=name,
                                                 configs=entries)], validate_only=False))
        for r in resp.responses:
            if r.error_code:
                raise KafkaError(r.error_code, getattr(r, "error_message", None) or name)

    # --- client quotas (KIP-546)

    async def describe_client_quotas(self, entity: Mapping[str, str | None] | None = None, *,
                                     strict: bool = False) -> list[tuple[dict[str, str | None], dict[str, float]]]:
        """(entity, {key: value}) of the quota entities that match: `entity` maps an entity type
        ("user", "client-id") to a name, None for its <default>, or "*" for any name of that
        type; strict leaves out entities with other types too. Nothing: every entity."""
        conn = await self.cluster.any_connection()
        b = conn.make(ApiKey.DESCRIBE_CLIENT_QUOTAS)
        components = []
        for entity_type, name in (entity or {}).items():
            if name == "*":
                components.append(b("ComponentData", entity_type=entity_type, match_type=2, match=None))
            elif name is None:
                components.append(b("ComponentData", entity_type=entity_type, match_type=1, match=None))
            else:
                components.append(b("ComponentData", entity_type=entity_type, match_type=0, match=name))
        resp = await conn.request(b(components=components, strict=strict))
        if resp.error_code:
            raise KafkaError(resp.error_code, resp.error_message or "DescribeClientQuotas")
        return [({e.entity_type: e.entity_name for e in entry.entity}, {v.key: float(v.value) for v in entry.values})
                for entry in resp.entries or ()]

    async def alter_client_quotas(self, alterations: Iterable[tuple[Mapping[str, str | None], Mapping[str, float | None]]],
                                  *, validate_only: bool = False) -> None:
        """Set (a value) or remove (None) quota keys ("producer_byte_rate", "consumer_byte_rate",
        "request_percentage")
        of entities ({"user": "alice"}, {"client-id": None} for the default client id, ...)."""
        conn = await self.cluster.any_connection()
        b = conn.make(ApiKey.ALTER_CLIENT_QUOTAS)
        entries = [b("EntryData", entity=[b("EntityData", entity_type=t, entity_name=n) for t, n in entity.items()],
                     ops=[b("OpData", key=k, value=float(v or 0.0), remove=v is None) for k, v in ops.items()])
                   for entity, ops in alterations]
        resp = await conn.request(b(entries=entries, validate_only=validate_only))
        _raise_errors({tuple((e.entity_type, e.entity_name) for e in r.entity): KafkaError(r.error_code, r.error_message or "")
                       for r in resp.entries if r.error_code})

    # --- groups

    async def list_groups(self) -> list[tuple[str, str]]:
        """(group_id, protocol_type) of every group on every broker."""
        await self.cluster.refresh()
        out = set()
        for node in list(self.cluster.brokers):
            conn = await self.cluster.connection(node)
            b = conn.make(ApiKey.LIST_GROUPS)
            resp = await conn.request(b(states_filter=()))
            if resp.error_code:
                raise KafkaError(resp.error_code, "ListGroups")
            out.update((g.group_id, g.protocol_type) for g in resp.groups)
        return sorted(out)

    async def describe_groups(self, groups: Iterable[str]) -> dict[str, GroupDescription]:
        from .assignors import decode_assignment

        out = {}
        for g in groups:
            resp = await self._to_coordinator(
                g, ApiKey.DESCRIBE_GROUPS, lambda b, g=g: b(groups=[g], include_authorized_operations=False))
            for d in resp.groups:
                if d.group_state == "Dead" or d.error_code == _GROUP_ID_NOT_FOUND:
                    # not a classic group: perhaps one of the consumer protocol (KIP-848)
                    described = await self._describe_consumer_group(g)
                    if described is not None:
                        out[g] = described
                        continue
                if d.error_code and d.error_code not in _COORDINATOR_ERRORS:
                    raise KafkaError(d.error_code, d.group_id)
                members = []
                for m in d.members:
                    tps: tuple[TopicPartition, ...] = ()
                    if d.protocol_type == "consumer" and m.member_assignment:
                        with contextlib.suppress(Exception):
                            tps = tuple(TopicPartition(t, p) for t, p in decode_assignment(bytes(m.member_assignment)).topic_partitions())
                    members.append(GroupMember(m.member_id, getattr(m, "group_instance_id", None), m.client_id, m.client_host, tps))
                out[d.group_id] = GroupDescription(d.group_id, d.group_state, d.protocol_type, d.protocol_data, tuple(members), int(d.error_code))
        return out

    async def _describe_consumer_group(self, group: str) -> GroupDescription | None:
        """A consumer-protocol group through ConsumerGroupDescribe; None if there is none by that
        id, or the coordinator does not serve the API."""
        try:
            resp = await self._to_coordinator(group, ApiKey.CONSUMER_GROUP_DESCRIBE,
                                              lambda b: b(group_ids=[group], include_authorized_operations=False))
        except UnsupportedApi:
            return None
        for d in resp.groups:
            if d.error_code:
                return None
            members = tuple(
                GroupMember(m.member_id, m.instance_id, m.client_id, m.client_host,
                            tuple(TopicPartition(t.topic_name, int(p)) for t in m.assignment.topic_partitions
                                  for p in t.partitions))
                for m in d.members
            )
            return GroupDescription(d.group_id, d.group_state, "consumer", d.assignor_name, members)
        return None

    async def delete_groups(self, groups: Iterable[str]) -> None:
        errors = {}
        for g in groups:
            resp = await self._to_coordinator(g, ApiKey.DELETE_GROUPS, lambda b, g=g: b(groups_names=[g]))
            for r in resp.results:
                if r.error_code:
                    errors[r.group_id] = KafkaError(r.error_code, r.group_id)
        _raise_errors(errors)

    async def list_group_offsets(self, group: str, partitions: Iterable[tuple[str, int]] | None = None) -> dict[TopicPartition, int]:
        """Committed offsets of `group` (all partitions it committed when `partitions` is None)."""
        def build(b):
            if partitions is None:
                topics = None
            else:
                by_topic: dict[str, list[int]] = {}
                for t, p in partitions:
                    by_topic.setdefault(t, []).append(p)
                topics = [b("OffsetFetchRequestTopic", name=t, partition_indexes=ps) for t, ps in by_topic.items()]
            return b(group_id=group, topics=topics, require_stable=False)

        resp = await self._to_coordinator(group, ApiKey.OFFSET_FETCH, build)
        if getattr(resp, "error_code", 0):
            raise KafkaError(resp.error_code, group)
        out = {}
        for t in resp.topics:
            for p in t.partitions:
                if p.error_code:
                    raise KafkaError(p.error_code, f"{t.name}[{p.partition_index}]")
                if p.committed_offset >= 0:
                    out[TopicPartition(t.name, int(p.partition_index))] = int(p.committed_offset)
        return out

    async def alter_group_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit offsets for a group with no active members (as the Java admin does)."""
        def build(b):
            by_topic: dict[str, list] = {}
            for (t, p), o in offsets.items():
                by_topic.setdefault(t, []).append(b("OffsetCommitRequestPartition", partition_index=p, committed_offset=int(o),
                                                    committed_leader_epoch=-1, committed_metadata="", commit_timestamp=-1))
            return b(group_id=group, generation_id=-1, generation_id_or_member_epoch=-1, member_id="",
                     group_instance_id=None, retention_time_ms=-1,
                     topics=[b("OffsetCommitRequestTopic", name=t, partitions=ps) for t, ps in by_topic.items()])

        resp = await self._to_coordinator(group, ApiKey.OFFSET_COMMIT, build)
        _raise_errors({(t.name, p.partition_index): KafkaError(p.error_code, f"{t.name}[{p.partition_index}]")
                       for t in resp.topics for p in t.partitions if p.error_code})

    async def reset_group_offsets(self, group: str, topic: str, to: str | int = "earliest") -> dict[TopicPartition, int]:
        """Set the group's offsets on every partition of `topic` to 'earliest', 'latest' or an offset."""
        parts = await self.cluster.topic_partitions(topic)
        if isinstance(to, int):
            target = {TopicPartition(topic, p): to for p in parts}
        else:
            target = await self.list_offsets({(topic, p): -2 if to == "earliest" else -1 for p in parts})
        await self.alter_group_offsets(group, target)
        return target

    async def list_offsets(self, specs: Mapping[tuple[str, int], int]) -> dict[TopicPartition, int]:
        """Offsets per partition for a timestamp spec (-2 earliest, -1 latest, else ms)."""
        by_node: dict[int, list[tuple[TopicPartition, int]]] = {}
        await self.cluster.refresh({t for t, _p in specs})
        for (t, p), ts in specs.items():
            by_node.setdefault(self.cluster.leader(t, p), []).append((TopicPartition(t, p), ts))
        out = {}
        for node, items in by_node.items():
            if node < 0:
                raise KafkaError(5, str([tp for tp, _ in items]))
            conn = await self.cluster.connection(node)
            b = conn.make(ApiKey.LIST_OFFSETS)
            topics: dict[str, list] = {}
            for tp, ts in items:
                topics.setdefault(tp.topic, []).append(b("ListOffsetsPartition", partition_index=tp.partition, timestamp=ts,
                                                         current_leader_epoch=-1, max_num_offsets=1))
            resp = await conn.request(b(replica_id=-1, isolation_level=0,
                                        topics=[b("ListOffsetsTopic", name=t, partitions=ps) for t, ps in topics.items()]))
            for t in resp.topics:
                for p in t.partitions:
                    if p.error_code:
                        raise KafkaError(p.error_code, f"{t.name}[{p.partition_index}]")
                    out[TopicPartition(t.name, int(p.partition_index))] = int(p.offset)
        return out

    # --- cluster

    async def describe_cluster(self) -> ClusterDescription:
        conn = await self.cluster.any_connection()
        if conn.supports(ApiKey.DESCRIBE_CLUSTER):
            b = conn.make(ApiKey.DESCRIBE_CLUSTER)
            resp = await conn.request(b(include_cluster_authorized_operations=False))
            if resp.error_code:
                raise KafkaError(resp.error_code, getattr(resp, "error_message", None))
            return ClusterDescription(resp.cluster_id, int(resp.controller_id),
                                      tuple(BrokerInfo(int(x.broker_id), x.host, int(x.port), x.rack) for x in resp.brokers))
        await self.cluster.refresh()
        return ClusterDescription(self.cluster.cluster_id, self.cluster.controller_id, tuple(self.cluster.brokers.values()))


def _items(resp) -> list:
    for attr in ("topics", "responses", "results"):
        v = getattr(resp, attr, None)
        if v is not None:
            return list(v)
    return []


def open_admin(bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092", **config: Any) -> Admin:
    return Admin(bootstrap_servers, **config)


