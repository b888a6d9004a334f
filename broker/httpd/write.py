"""Writing records that arrived over HTTP: the same path as a Kafka Produce.

Records become RecordBatch v2 batches (storage.records.build_batch), are checked by the Produce
handler's own validation (framing, CRC-32C, size limits: handlers.produce._validate_partition),
go into the partition's ring with `Partition.submit(block=False)` -- a full ring raises
ingest.RingFull at once, which the HTTP layer answers 503 with Retry-After, never making the
caller wait -- and are acknowledged when the writer's group commit has made them durable under
the topic's flush policy (written; fsynced too with flush policy "always").
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from kio.schema.errors import ErrorCode

from ringlog.storage.records import build_batch

from ..errors import KafkaError
from ..handlers.produce import _validate_partition
from ..ingest import PendingAppend

# Bytes a record adds to its key and value inside a batch (length varints, attributes,
# deltas), an upper bound good enough to cut batches below max.message.bytes.
_RECORD_OVERHEAD = 32
_BATCH_OVERHEAD = 61

Item = tuple[bytes | None, bytes | None, Sequence[Any], int]   # key, value, headers, timestamp ms

# cluster mode: how long an HTTP write waits for the ISR (Produce's default request.timeout.ms)
_REPLICATION_WAIT_S = 30.0


@attrs.define
class Accepted:
    """One partition's share of an HTTP write, queued; `wait()` for its offsets."""

    partition: int
    count: int
    entry: PendingAppend
    # cluster mode: the partition, to wait until its ISR holds the records (as Produce acks=all)
    replicated: Any = None

    async def wait(self) -> int:
        """The first record's offset once durable (in cluster mode: once the ISR holds it);
        raises what the writer failed with."""
        await self.entry.done.wait()
        if self.entry.error is not None:
            raise self.entry.error
        if self.replicated is not None:
            part, cluster = self.replicated
            refusal = await cluster.wait_replicated(part, self.entry.infos[-1].last_offset + 1, _REPLICATION_WAIT_S)
            if refusal is not None:
                raise KafkaError(refusal, f"{part.topic}-{part.index}: not replicated")
        return int(self.entry.infos[0].base_offset)


def batches_for(items: Sequence[Item], max_batch_bytes: int) -> bytes:
    """`items` as whole batches, each kept under `max_batch_bytes` where a record allows."""
    out = bytearray()
    start = 0
    size = _BATCH_OVERHEAD
    for i, (key, value, headers, _) in enumerate(items):
        rec = _RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
        if headers:
            rec += sum(len(k) + len(v or b"") + 8 for k, v in headers)
        if i > start and size + rec > max_batch_bytes:
            out += build_batch(items[start:i])
            start, size = i, _BATCH_OVERHEAD
        size += rec
    if start < len(items):
        out += build_batch(items[start:])
    return bytes(out)


async def submit(broker: Any, topic: str, partition: int, items: Sequence[Item]) -> Accepted:
    """Validate `items` as Produce does and queue them into the partition's ring without waiting
    for room: ingest.RingFull when it is full, KafkaError / StorageError when refused."""
    part = broker.partition(topic, partition)
    if part is None:  # deleted meanwhile
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{topic}-{partition} does not exist")
    replicated = None
    if broker.cluster is not None:  # cluster mode: only the leader takes records, acks=all rules
        refusal = broker.cluster.produce_refusal(part, -1)
        if refusal is not None:
            raise KafkaError(refusal, f"{topic}-{partition} is led by another broker" if refusal == ErrorCode.not_leader_or_follower
                             else f"{topic}-{partition} has fewer in-sync replicas than min.insync.replicas")
        replicated = (part, broker.cluster)
    config = broker.log_config_for(topic)
    records = batches_for(items, config.max_message_bytes)
    entry = await _validate_partition(broker, part.tp, records, config, broker.config.record_validation == "full")
    await part.submit(entry, block=False)
    return Accepted(partition, len(items), entry, replicated)
