"""Key -> partition mapping, identical to the Java client's default partitioner and librdkafka's
``murmur2_random``: ``(murmur2(key) & 0x7fffffff) % num_partitions`` for a key, and a sticky
partition for records without a key (see StickyPartitioner).

murmur2 here is Kafka's variant of MurmurHash2 (32-bit, seed 0x9747b28c, little-endian words,
the tail mixed in the usual fall-through order), as in
``org.apache.kafka.common.utils.Utils.murmur2`` and librdkafka's ``rd_murmur2``.
"""
from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence

__all__ = ["DefaultPartitioner", "StickyPartitioner", "murmur2", "murmur2_partition"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` as a signed 32-bit int (as Java returns it)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length >> 2
    if n4:
        for k in struct.unpack_from(f"<{n4}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    base = length & ~3
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_partition(key: bytes, num_partitions: int) -> int:
    """The partition of `key` among `num_partitions` (Java: toPositive(murmur2(key)) % n)."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


class StickyPartitioner:
    """Partition choice for records without a key.

    Keyless records stick to one partition until the producer closes the batch being filled for it
    (``batch_closed``), then a different random partition is picked, so keyless traffic forms full
    batches instead of one tiny batch per partition (KIP-480). Only partitions with a leader are
    picked when there are any.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        # topic -> current sticky partition; the producer reads it directly on its per-record path
        self.current: dict[str, int] = {}
        self._rng = rng or random.Random()

    def partition(self, topic: str, partitions: Sequence[int], available: Sequence[int] = ()) -> int:
        p = self.current.get(topic)
        if p is None or p not in partitions:
            p = self._pick(topic, partitions, available, None)
        return p

    def batch_closed(self, topic: str, partition: int, partitions: Sequence[int], available: Sequence[int] = ()) -> None:
        if self.current.get(topic) == partition:
            self._pick(topic, partitions, available, partition)

    def _pick(self, topic: str, partitions: Sequence[int], available: Sequence[int], previous: int | None) -> int:
        pool = list(available) or list(partitions)
        if len(pool) > 1 and previous is not None:
            pool = [x for x in pool if x != previous] or pool
        p = self._rng.choice(pool)
        self.current[topic] = p
        return p


class DefaultPartitioner:
    """murmur2 for keyed records, sticky for keyless ones; a custom `partitioner(key, partitions)`
    may replace the keyed part."""

    def __init__(self, keyed: Callable[[bytes, int], int] | None = None) -> None:
        self.keyed = keyed or murmur2_partition
        self.sticky = StickyPartitioner()

    def __call__(self, topic: str, key: bytes | None, partitions: Sequence[int], available: Sequence[int] = ()) -> int:
        if key is None:
            return self.sticky.partition(topic, partitions, available)
        return partitions[self.keyed(key, len(partitions))]
