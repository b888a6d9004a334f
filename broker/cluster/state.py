"""The controller's decisions, pure (no I/O, no trio): replica assignment and leader election.

etcd layout under /ringlog/<cluster name>/ (JSON values):

    brokers/<id>              {"host", "port"}          under the broker's lease: gone when it dies
    directories/<id>          the directory.id of the data dir broker <id> last joined with
    controller                {"node_id"}               under the controller's lease
    topics/<name>             {"topic_id", "partitions", "configs", "replicas": [[id, ...], ...]}
    partitions/<topic>/<p>    {"leader", "leader_epoch", "isr", "replicas"}
    security/acls             acls.json's document          (broker.cluster.security)
    security/credentials      credentials.json's document
    security/quotas           quotas.json's document

A partition's state key is only ever changed with a compare-and-swap on its mod_revision (the
ZooKeeper-era Kafka design: the controller elects leaders, the leader shrinks and expands the
ISR), so two writers never both win.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import attrs

NO_LEADER = -1


@attrs.frozen
class TopicRecord:
    name: str
    topic_id: str
    partitions: int
    configs: dict[str, str]
    replicas: tuple[tuple[int, ...], ...]

    def encode(self) -> str:
        return json.dumps({"topic_id": self.topic_id, "partitions": self.partitions, "configs": self.configs,
                           "replicas": [list(r) for r in self.replicas]})

    @classmethod
    def decode(cls, name: str, raw: bytes) -> TopicRecord:
        d = json.loads(raw)
        return cls(name, str(d["topic_id"]), int(d["partitions"]), dict(d.get("configs") or {}),
                   tuple(tuple(int(b) for b in r) for r in d["replicas"]))


@attrs.frozen
class PartitionState:
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    replicas: tuple[int, ...]
    mod_revision: int = 0  # of the etcd key it was read from (0: not stored yet)

    def encode(self) -> str:
        return json.dumps({"leader": self.leader, "leader_epoch": self.leader_epoch,
                           "isr": list(self.isr), "replicas": list(self.replicas)})

    @classmethod
    def decode(cls, raw: bytes, mod_revision: int) -> PartitionState:
        d = json.loads(raw)
        return cls(int(d["leader"]), int(d["leader_epoch"]), tuple(int(b) for b in d["isr"]),
                   tuple(int(b) for b in d["replicas"]), mod_revision)


def assign_replicas(brokers: Iterable[int], partitions: int, replication_factor: int, start: int = 0,
                    first_partition: int = 0) -> list[tuple[int, ...]]:
    """Rack-unaware round robin (Kafka's): partition p's replicas are the brokers from position
    (start + p) on, so leaders spread evenly and no broker holds two replicas of a partition."""
    ids = sorted(set(brokers))
    if replication_factor > len(ids):
        raise ValueError(f"replication factor {replication_factor} is larger than the {len(ids)} live broker(s)")
    n = len(ids)
    return [tuple(ids[(start + p + i) % n] for i in range(replication_factor))
            for p in range(first_partition, first_partition + partitions)]


def initial_state(replicas: Sequence[int], live: set[int]) -> PartitionState:
    alive = tuple(r for r in replicas if r in live)
    return PartitionState(alive[0] if alive else NO_LEADER, 0, alive or tuple(replicas), tuple(replicas))


def decide(state: PartitionState, live: set[int], *, unclean: bool) -> PartitionState | None:
    """The state the controller should write for a partition given the live brokers, or None
    when it is right as it is.

    * a live leader: dead brokers leave the ISR (never the last member: Kafka keeps it, so the
      partition knows which replica may lead when it returns);
    * no live leader: the first live ISR member leads, with the next epoch; none alive: with
      unclean election any live replica leads (the ISR restarts with it, acknowledged records
      may be lost), without it the partition stays offline (leader -1) until an ISR member returns.
    """
    if state.leader in live:
        isr = tuple(r for r in state.isr if r in live) or (state.leader,)
        if isr == state.isr:
            return None
        return attrs.evolve(state, isr=isr)
    candidates = [r for r in state.isr if r in live]
    if candidates:
        isr = tuple(candidates)
        return attrs.evolve(state, leader=candidates[0], leader_epoch=state.leader_epoch + 1, isr=isr)
    if unclean:
        others = [r for r in state.replicas if r in live]
        if others:
            return attrs.evolve(state, leader=others[0], leader_epoch=state.leader_epoch + 1, isr=(others[0],))
    if state.leader == NO_LEADER:
        return None
    # Offline: the ISR keeps its last member(s).
    return attrs.evolve(state, leader=NO_LEADER, leader_epoch=state.leader_epoch + 1)


def forget_replica(state: PartitionState, node: int, live: set[int]) -> PartitionState | None:
    """The state once `node`'s copy is known to be gone (its data dir was replaced), or None when
    the state does not count on it.

    It leaves the ISR, so it can only lead again after catching up as a follower. If it led, the
    next live ISR member leads with the next epoch; when it was the last in-sync copy, the
    partition is offline with an empty ISR: nobody holds every acknowledged record, and only
    unclean election (which says records may be lost) brings it back.
    """
    if node not in state.isr and state.leader != node:
        return None
    isr = tuple(r for r in state.isr if r != node)
    if state.leader != node:
        return attrs.evolve(state, isr=isr)
    candidates = tuple(r for r in isr if r in live)
    if candidates:
        return attrs.evolve(state, leader=candidates[0], leader_epoch=state.leader_epoch + 1, isr=candidates)
    return attrs.evolve(state, leader=NO_LEADER, leader_epoch=state.leader_epoch + 1, isr=isr)


def end_offset_for_epoch(epochs: Sequence[tuple[int, int]], epoch: int, log_end: int) -> tuple[int, int]:
    """OffsetForLeaderEpoch from a leader-epoch cache [(epoch, start offset), ...] ascending:
    (the largest epoch <= `epoch`, the offset where it ended = start of the next epoch, or the
    log end for the newest). (-1, -1) when `epoch` is older than every epoch known."""
    answer = (-1, -1)
    for i, (e, _start) in enumerate(epochs):
        if e > epoch:
            break
        end = epochs[i + 1][1] if i + 1 < len(epochs) else log_end
        answer = (e, end)
    return answer
