"""Consumer-group partition assignors and the ConsumerProtocol encoding.

Pure functions and values, no I/O: the group leader (a client) runs an assignor over the members'
subscriptions and hands the coordinator one assignment blob per member in SyncGroup. The broker
never runs an assignor; it only stores and forwards these blobs (and may decode them for lag
reports and DescribeGroups tooling).

Wire formats: Kafka's ConsumerProtocolSubscription / ConsumerProtocolAssignment, never flexible,
each an i16 version followed by the body of that version. The bodies are kio's entities
(kio.schema.consumer_protocol_subscription / _assignment, generated from Kafka's message JSON),
read and written by kio's own codec; only the version prefix and the tolerance below are ours.

ConsumerProtocolSubscription (the JoinGroup protocol metadata of protocol type "consumer")
    version 0..3 (we write 3); topics, user_data, owned_partitions (v1+), generation_id (v2+),
    rack_id (v3+)
ConsumerProtocolAssignment (the SyncGroup assignment blob)
    version 0..3 (the same body in every version; we write 0 for maximal reach);
    assigned_partitions, user_data

Reading is as tolerant as Kafka's own ConsumerProtocol: a version above 3 (a newer client's) is
read as 3 and its trailing fields ignored, and a blob that ends where an older version's body
ends reads as that version's fields (some clients announce a version and stop early).

`EMPTY_ASSIGNMENT` is the encoded assignment with no partitions (10 bytes). Coordinators send it
instead of a zero-length blob, which librdkafka rejects.

Assignors (all deterministic: the same input always gives the same output):
  * RangeAssignor ("range"): per topic, members subscribed to it in sorted order each get a
    contiguous range; the first `partitions % members` get one extra. Eager.
  * RoundRobinAssignor ("roundrobin"): all subscribed partitions sorted by (topic, partition) are
    dealt to the sorted members in turn, skipping members not subscribed to the topic. Eager.
  * CooperativeStickyAssignor ("cooperative-sticky"): keeps each member's previously owned
    partitions where that stays balanced, moves as few as possible, and (cooperative protocol)
    never hands a partition straight from one member to another in one round: a partition
    changing owner is left out of the new owner's assignment so the old owner revokes it first;
    the follow-up rebalance gives it to the new owner.
"""
from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Mapping, Sequence
from importlib import import_module

import attrs
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError
from kio.static.primitive import i32

# --- the ConsumerProtocol codec (kio's entities) -----------------------------------------------


class ProtocolDecodeError(ValueError):
    """The blob is not a valid ConsumerProtocol message."""


_MAX_VERSION = 3
_SUBSCRIPTION = {v: import_module(f"kio.schema.consumer_protocol_subscription.v{v}") for v in range(_MAX_VERSION + 1)}
_ASSIGNMENT = {v: import_module(f"kio.schema.consumer_protocol_assignment.v{v}") for v in range(_MAX_VERSION + 1)}
_VERSION = struct.Struct(">h")


def _write(version: int, entity) -> bytes:
    out = io.BytesIO()
    out.write(_VERSION.pack(version))
    entity_writer(type(entity))(out, entity)
    return out.getvalue()


def _read(schemas: dict, blob: bytes, name: str, missing_tail: bytes = b""):
    """(version, entity) of a blob: the entity of min(version, 3), or of the newest older version
    whose body ends exactly where the blob does, or (`missing_tail`) of a blob that ends just
    before those bytes."""
    if len(blob) < 2:
        raise ProtocolDecodeError(f"{name} of {len(blob)} bytes has no version")
    (version,) = _VERSION.unpack_from(blob, 0)
    if version < 0:
        raise ProtocolDecodeError(f"negative {name} version {version}")
    error: Exception | None = None
    for v in range(min(version, _MAX_VERSION), -1, -1):
        cls = getattr(schemas[v], "ConsumerProtocol" + name.title())
        try:
            entity, size = entity_reader(cls)(blob, 2)
        except (SerialError, ValueError, IndexError) as exc:  # kio: BufferUnderflow, UnexpectedNull, ...
            error = error or exc
            continue
        # The declared version's body may be followed by anything (fields of later versions);
        # an older version's only counts when the blob ends with it.
        if v == min(version, _MAX_VERSION) or 2 + size == len(blob):
            return version, entity
    if missing_tail:
        try:
            return _read(schemas, blob + missing_tail, name)
        except ProtocolDecodeError:
            pass
    raise ProtocolDecodeError(f"bad {name} (version {version}): {error}") from None


def _topic_partitions(entries) -> dict[str, tuple[int, ...]]:
    """kio's (topic, partitions) entries as a mapping; a topic listed twice gets the union."""
    out: dict[str, set[int]] = {}
    for e in entries:
        out.setdefault(e.topic, set()).update(int(p) for p in e.partitions)
    return {t: tuple(sorted(ps)) for t, ps in out.items()}


def _entries(module, tps: Mapping[str, Sequence[int]]) -> tuple:
    return tuple(module.data.TopicPartition(topic=t, partitions=tuple(i32(p) for p in sorted(tps[t])))
                 for t in sorted(tps))


def _freeze_tps(tps: Mapping[str, Iterable[int]] | None) -> dict[str, tuple[int, ...]]:
    if not tps:
        return {}
    return {t: tuple(sorted(set(ps))) for t, ps in tps.items() if ps}


# --- messages ----------------------------------------------------------------------------------


@attrs.frozen
class Subscription:
    """What a member sends in JoinGroup: the topics it wants and what it owns now."""

    topics: tuple[str, ...] = attrs.field(converter=lambda ts: tuple(sorted(set(ts))), default=())
    user_data: bytes | None = None
    # topic -> partitions the member owns now (cooperative protocol; v1+)
    owned_partitions: Mapping[str, tuple[int, ...]] = attrs.field(converter=_freeze_tps, factory=dict)
    generation_id: int = -1
    rack_id: str | None = None
    version: int = 3

    def encode(self) -> bytes:
        return encode_subscription(self)


@attrs.frozen
class Assignment:
    """What a member receives in SyncGroup: its partitions."""

    partitions: Mapping[str, tuple[int, ...]] = attrs.field(converter=_freeze_tps, factory=dict)
    user_data: bytes | None = None
    version: int = 0

    def encode(self) -> bytes:
        return encode_assignment(self)

    def topic_partitions(self) -> list[tuple[str, int]]:
        return [(t, p) for t in sorted(self.partitions) for p in self.partitions[t]]


def encode_subscription(sub: Subscription) -> bytes:
    version = max(0, min(sub.version, _MAX_VERSION))
    module = _SUBSCRIPTION[version]
    fields: dict = {"topics": sub.topics, "user_data": sub.user_data}
    if version >= 1:
        fields["owned_partitions"] = _entries(module, sub.owned_partitions)
    if version >= 2:
        fields["generation_id"] = i32(sub.generation_id)
    if version >= 3:
        fields["rack_id"] = sub.rack_id
    return _write(version, module.ConsumerProtocolSubscription(**fields))


def decode_subscription(blob: bytes) -> Subscription:
    """Decode any version; fields of versions above 3 (appended by newer clients) are ignored."""
    version, e = _read(_SUBSCRIPTION, bytes(blob), "subscription")
    return Subscription(
        topics=e.topics,
        user_data=e.user_data,
        owned_partitions=_topic_partitions(getattr(e, "owned_partitions", ())),
        generation_id=int(getattr(e, "generation_id", -1)),
        rack_id=getattr(e, "rack_id", None),
        version=version,
    )


def encode_assignment(assignment: Assignment) -> bytes:
    version = max(0, min(assignment.version, _MAX_VERSION))
    module = _ASSIGNMENT[version]
    return _write(version, module.ConsumerProtocolAssignment(
        assigned_partitions=_entries(module, assignment.partitions), user_data=assignment.user_data))


def decode_assignment(blob: bytes) -> Assignment:
    """Decode an assignment blob; a zero-length blob (Kafka's "no assignment") is empty."""
    if not blob:
        return Assignment()
    # An assignment that stops after its partitions has no user data (as this module always read
    # it): the null the blob leaves out is put back for kio.
    version, e = _read(_ASSIGNMENT, bytes(blob), "assignment", missing_tail=b"\xff\xff\xff\xff")
    return Assignment(partitions=_topic_partitions(e.assigned_partitions), user_data=e.user_data, version=version)


EMPTY_ASSIGNMENT: bytes = encode_assignment(Assignment())

# --- assignors ---------------------------------------------------------------------------------

EAGER = "eager"
COOPERATIVE = "cooperative"


def _member_order(member_id: str, subscriptions: Mapping[str, Subscription]) -> tuple:
    return (member_id,)


def _subscribed_topics(
    partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription]
) -> dict[str, list[str]]:
    """topic -> sorted member ids subscribed to it (topics unknown to the cluster are skipped)."""
    out: dict[str, list[str]] = {}
    for member in sorted(subscriptions):
        for topic in subscriptions[member].topics:
            if partitions_per_topic.get(topic, 0) > 0:
                out.setdefault(topic, []).append(member)
    return out


def _to_assignments(
    members: Iterable[str], owned: Mapping[str, Iterable[tuple[str, int]]], user_data: Mapping[str, bytes | None] | None = None
) -> dict[str, Assignment]:
    out: dict[str, Assignment] = {}
    for m in members:
        tps: dict[str, list[int]] = {}
        for t, p in owned.get(m, ()):
            tps.setdefault(t, []).append(p)
        out[m] = Assignment(partitions=tps, user_data=(user_data or {}).get(m))
    return out


class RangeAssignor:
    name = "range"
    rebalance_protocols = (EAGER,)

    def subscription(self, topics: Iterable[str], owned: Mapping[str, Iterable[int]] | None = None,
                     generation_id: int = -1) -> Subscription:
        return Subscription(topics=tuple(topics), owned_partitions=dict(owned or {}), generation_id=generation_id)

    def assign(
        self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription]
    ) -> dict[str, Assignment]:
        result: dict[str, list[tuple[str, int]]] = {m: [] for m in subscriptions}
        for topic, members in sorted(_subscribed_topics(partitions_per_topic, subscriptions).items()):
            n = partitions_per_topic[topic]
            per, extra = divmod(n, len(members))
            start = 0
            for i, m in enumerate(members):
                count = per + (1 if i < extra else 0)
                result[m].extend((topic, p) for p in range(start, start + count))
                start += count
        return _to_assignments(subscriptions, result)


class RoundRobinAssignor:
    name = "roundrobin"
    rebalance_protocols = (EAGER,)

    def subscription(self, topics: Iterable[str], owned: Mapping[str, Iterable[int]] | None = None,
                     generation_id: int = -1) -> Subscription:
        return Subscription(topics=tuple(topics), owned_partitions=dict(owned or {}), generation_id=generation_id)

    def assign(
        self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription]
    ) -> dict[str, Assignment]:
        members = sorted(subscriptions)
        result: dict[str, list[tuple[str, int]]] = {m: [] for m in members}
        if not members:
            return {}
        subscribed = _subscribed_topics(partitions_per_topic, subscriptions)
        i = 0
        for topic in sorted(subscribed):
            wanted = set(subscribed[topic])
            for p in range(partitions_per_topic[topic]):
                # advance the ring to the next member subscribed to this topic
                while members[i % len(members)] not in wanted:
                    i += 1
                result[members[i % len(members)]].append((topic, p))
                i += 1
        return _to_assignments(members, result)


class CooperativeStickyAssignor:
    """Balanced, sticky, and safe for the cooperative rebalance protocol.

    Ownership claims come from each subscription's owned_partitions and generation_id (for
    subscriptions older than v2 the generation is read from a 4-byte user_data, as Kafka's Java
    assignor writes it). Of members claiming the same partition the highest generation wins; an
    equal claim is void. Claims of members whose generation is below the group's newest are
    stale and ignored (they lost their partitions in a rebalance they missed).
    """

    name = "cooperative-sticky"
    rebalance_protocols = (COOPERATIVE, EAGER)

    def subscription(self, topics: Iterable[str], owned: Mapping[str, Iterable[int]] | None = None,
                     generation_id: int = -1) -> Subscription:
        return Subscription(
            topics=tuple(topics),
            owned_partitions=dict(owned or {}),
            generation_id=generation_id,
            user_data=struct.pack(">i", generation_id),
        )

    @staticmethod
    def _generation(sub: Subscription) -> int:
        if sub.version >= 2 or sub.generation_id != -1:
            return sub.generation_id
        if sub.user_data is not None and len(sub.user_data) == 4:
            return struct.unpack(">i", sub.user_data)[0]
        return -1

    def assign(
        self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Subscription]
    ) -> dict[str, Assignment]:
        members = sorted(subscriptions)
        if not members:
            return {}
        eligible: dict[tuple[str, int], list[str]] = {}
        for topic, subs in _subscribed_topics(partitions_per_topic, subscriptions).items():
            for p in range(partitions_per_topic[topic]):
                eligible[(topic, p)] = subs
        generations = {m: self._generation(subscriptions[m]) for m in members}
        newest = max(generations.values())

        # 1. previous owners, resolving conflicting and stale claims
        claims: dict[tuple[str, int], tuple[int, str | None]] = {}
        for m in members:
            gen = generations[m]
            if gen < newest:
                continue
            for topic, parts in subscriptions[m].owned_partitions.items():
                for p in parts:
                    tp = (topic, p)
                    if tp not in eligible or m not in eligible[tp]:
                        continue
                    prev = claims.get(tp)
                    if prev is None or gen > prev[0]:
                        claims[tp] = (gen, m)
                    elif gen == prev[0]:
                        claims[tp] = (gen, None)  # two owners, same generation: nobody keeps it
        previous_owner = {tp: owner for tp, (_, owner) in claims.items() if owner is not None}

        owned: dict[str, list[tuple[str, int]]] = {m: [] for m in members}
        for tp in sorted(previous_owner):
            owned[previous_owner[tp]].append(tp)

        # 2. unassigned partitions go to the least loaded eligible member
        for tp in sorted(eligible):
            if tp in previous_owner:
                continue
            target = min(eligible[tp], key=lambda m: (len(owned[m]), m))
            owned[target].append(tp)

        # 3. move partitions while some member could take one from a member with 2+ more. Each
        # move strictly lowers the sum of squared loads, so this ends; it moves the fewest
        # partitions needed and prefers moving ones that were not owned before.
        owner = {tp: m for m, tps in owned.items() for tp in tps}
        # First only partitions that nobody owned move (no revocation needed), along chains: a
        # member two or more above another hands one partition to the next member of a path
        # that ends at the lighter one, so every member in between keeps its load (the greedy
        # placement of step 2 can leave an imbalance that no single move of an unowned partition
        # fixes, and moving an owned one instead would revoke it and leave it unassigned for a
        # round). Only what that cannot balance moves owned partitions (withheld, step 4).
        while self._move_along_a_chain(owned, owner, eligible, previous_owner):
            pass
        while True:
            best: tuple | None = None
            for tp, src in owner.items():
                for dst in eligible[tp]:
                    gap = len(owned[src]) - len(owned[dst])
                    if gap >= 2:
                        key = (gap, previous_owner.get(tp) != src, -len(owned[dst]), tp, dst)
                        if best is None or key > best[0]:
                            best = (key, tp, src, dst)
            if best is None:
                break
            _, tp, src, dst = best
            owned[src].remove(tp)
            owned[dst].append(tp)
            owner[tp] = dst

        # 4. cooperative: a partition moving between two live owners is withheld this round
        for tp, new_owner in list(owner.items()):
            prev = previous_owner.get(tp)
            if prev is not None and prev != new_owner:
                owned[new_owner].remove(tp)

        gen_bytes = {m: None for m in members}
        return _to_assignments(members, owned, gen_bytes)

    @staticmethod
    def _move_along_a_chain(owned: dict[str, list[tuple[str, int]]], owner: dict[tuple[str, int], str],
                            eligible: Mapping[tuple[str, int], list[str]],
                            previous_owner: Mapping[tuple[str, int], str]) -> bool:
        """One chain of moves of not-previously-owned partitions from the heaviest member that
        has one to a member at least two lighter; False when there is none. Each chain lowers
        the sum of squared loads, so repeating it ends."""
        for src in sorted(owned, key=lambda m: (-len(owned[m]), m)):
            # breadth-first over "member -> member it can hand an unowned partition to"
            came_from: dict[str, tuple[str, tuple[str, int]] | None] = {src: None}
            frontier = [src]
            while frontier:
                nxt = []
                for member in frontier:
                    for tp in sorted(owned[member]):
                        if previous_owner.get(tp) == member:
                            continue
                        for dst in eligible[tp]:
                            if dst in came_from:
                                continue
                            came_from[dst] = (member, tp)
                            if len(owned[src]) - len(owned[dst]) >= 2:
                                while came_from[dst] is not None:
                                    giver, moved = came_from[dst]
                                    owned[giver].remove(moved)
                                    owned[dst].append(moved)
                                    owner[moved] = dst
                                    dst = giver
                                return True
                            nxt.append(dst)
                frontier = nxt
        return False


ASSIGNORS: dict[str, type] = {
    RangeAssignor.name: RangeAssignor,
    RoundRobinAssignor.name: RoundRobinAssignor,
    CooperativeStickyAssignor.name: CooperativeStickyAssignor,
}


def get_assignor(name: str):
    """An assignor instance by its protocol name ("range", "roundrobin", "cooperative-sticky")."""
    try:
        return ASSIGNORS[name]()
    except KeyError:
        raise ValueError(f"unknown assignor {name!r}; known: {', '.join(sorted(ASSIGNORS))}") from None
