"""Server-side assignors of the consumer group protocol (KIP-848): `uniform` and `range`.

An assignor maps every member to a set of partitions, `(topic_id, partition)` pairs, from the
members' subscriptions and the subscribed topics' metadata. Both are pure functions of their input
(members are visited in member id order), so a recomputation from the same state gives the same
target assignment.

* `uniform` (Kafka's UniformAssignor, the default): spreads every subscribed partition as evenly
  as the subscriptions allow and is sticky: a member keeps the partitions of its previous target
  that it still subscribes to, up to its fair share, so that a rebalance moves as few partitions
  as possible. When every member subscribes to the same topics the counts differ by at most one.
* `range` (Kafka's RangeAssignor): per topic, the members subscribed to it (by member id) get
  consecutive ranges of partitions, the first `partitions % members` one more; members that
  subscribe to the same topics get the same partition numbers of each (co-partitioning).
"""
from __future__ import annotations

import heapq
import uuid
from collections.abc import Callable, Mapping

import attrs

TopicPartition = tuple[uuid.UUID, int]


@attrs.frozen
class MemberSpec:
    subscribed: frozenset[str]                # topic names
    current: frozenset[TopicPartition] = frozenset()  # the member's previous target


Topics = Mapping[str, tuple[uuid.UUID, int]]   # name -> (topic id, partition count)
Assignment = dict[str, frozenset[TopicPartition]]
Assignor = Callable[[Mapping[str, MemberSpec], Topics], Assignment]


def _subscribers(members: Mapping[str, MemberSpec], topics: Topics) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for mid in sorted(members):
        for name in members[mid].subscribed:
            if name in topics:
                out.setdefault(name, []).append(mid)
    return out


def uniform(members: Mapping[str, MemberSpec], topics: Topics) -> Assignment:
    subscribers = _subscribers(members, topics)
    result: dict[str, set[TopicPartition]] = {mid: set() for mid in members}
    if not members:
        return {}
    # partition -> members that may own it
    eligible: dict[TopicPartition, list[str]] = {}
    for name, mids in subscribers.items():
        tid, count = topics[name]
        for p in range(count):
            eligible[(tid, p)] = mids
    subs = {frozenset(s.subscribed & topics.keys()) for s in members.values()}
    if len(subs) == 1:
        _uniform_homogeneous(members, eligible, result)
    else:
        _uniform_general(members, eligible, result)
    return {mid: frozenset(tps) for mid, tps in result.items()}


def _uniform_homogeneous(
    members: Mapping[str, MemberSpec], eligible: dict[TopicPartition, list[str]], result: dict[str, set[TopicPartition]]
) -> None:
    """Everyone subscribes to the same topics: quotas of base or base + 1, sticky within them."""
    base, extra = divmod(len(eligible), len(members))
    kept = {mid: sorted(tp for tp in members[mid].current if tp in eligible) for mid in members}
    # the members keeping the most get the `extra` larger quotas, which moves the fewest partitions
    by_kept = sorted(members, key=lambda mid: (-len(kept[mid]), mid))
    quota = {mid: base + (1 if i < extra else 0) for i, mid in enumerate(by_kept)}
    taken: set[TopicPartition] = set()
    for mid in sorted(members):
        for tp in kept[mid][: quota[mid]]:
            if tp not in taken:
                taken.add(tp)
                result[mid].add(tp)
    free = [tp for tp in sorted(eligible) if tp not in taken]
    for mid in sorted(members):
        while len(result[mid]) < quota[mid] and free:
            result[mid].add(free.pop(0))


def _uniform_general(
    members: Mapping[str, MemberSpec], eligible: dict[TopicPartition, list[str]], result: dict[str, set[TopicPartition]]
) -> None:
    """Different subscriptions: keep what is still valid, give the rest to the least loaded
    eligible member (topics with the fewest subscribers first), then, topic by topic, move a
    partition from its most to its least loaded subscriber while they differ by two or more."""
    owner: dict[TopicPartition, str] = {}
    for mid in sorted(members):
        for tp in sorted(members[mid].current):
            if tp in eligible and mid in eligible[tp] and tp not in owner:
                owner[tp] = mid
                result[mid].add(tp)
    by_topic: dict[uuid.UUID, list[TopicPartition]] = {}
    for tp in sorted(eligible):
        by_topic.setdefault(tp[0], []).append(tp)
    order = sorted(by_topic, key=lambda tid: (len(eligible[by_topic[tid][0]]), tid))
    for tid in order:
        subscribers = eligible[by_topic[tid][0]]
        heap = [(len(result[m]), m) for m in subscribers]
        heapq.heapify(heap)
        for tp in by_topic[tid]:
            if tp in owner:
                continue
            count, mid = heapq.heappop(heap)
            owner[tp] = mid
            result[mid].add(tp)
            heapq.heappush(heap, (count + 1, mid))
    moved = True
    while moved:  # each move lowers the sum of squared counts, so this ends
        moved = False
        for tid in order:
            subscribers = eligible[by_topic[tid][0]]
            while True:
                holders = [m for m in subscribers if any(tp[0] == tid for tp in result[m])]
                if not holders:
                    break
                donor = max(holders, key=lambda m: (len(result[m]), m))
                to = min(subscribers, key=lambda m: (len(result[m]), m))
                if len(result[to]) + 1 >= len(result[donor]):
                    break
                tp = min(t for t in result[donor] if t[0] == tid)
                result[donor].discard(tp)
                result[to].add(tp)
                moved = True


def range_(members: Mapping[str, MemberSpec], topics: Topics) -> Assignment:
    result: dict[str, set[TopicPartition]] = {mid: set() for mid in members}
    for name, mids in _subscribers(members, topics).items():
        tid, count = topics[name]
        base, extra = divmod(count, len(mids))
        start = 0
        for i, mid in enumerate(mids):
            n = base + (1 if i < extra else 0)
            result[mid].update((tid, p) for p in range(start, start + n))
            start += n
    return {mid: frozenset(tps) for mid, tps in result.items()}


ASSIGNORS: dict[str, Assignor] = {"uniform": uniform, "range": range_}

# group.consumer.assignors takes Kafka's class names as well as the assignors' names
CLASS_NAMES = {
    "org.apache.kafka.coordinator.group.assignor.UniformAssignor": "uniform",
    "org.apache.kafka.coordinator.group.assignor.RangeAssignor": "range",
}


def assignor_names(setting: str) -> tuple[str, ...]:
    """The configured assignors' names, in order (the first is the default)."""
    names = [CLASS_NAMES.get(p.strip(), p.strip()) for p in setting.split(",") if p.strip()]
    return tuple(dict.fromkeys(n for n in names if n in ASSIGNORS)) or ("uniform", "range")
