"""A blocking wire client for the transaction APIs (kio entities over client.wire)."""
from __future__ import annotations

import datetime
import time

from kio.schema.add_offsets_to_txn.v3.request import AddOffsetsToTxnRequest
from kio.schema.add_partitions_to_txn.v3.request import AddPartitionsToTxnRequest, AddPartitionsToTxnTopic
from kio.schema.describe_transactions.v0.request import DescribeTransactionsRequest
from kio.schema.end_txn.v3.request import EndTxnRequest
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.list_transactions.v1.request import ListTransactionsRequest
from kio.schema.offset_fetch.v7.request import OffsetFetchRequest, OffsetFetchRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.txn_offset_commit.v3.request import (
    TxnOffsetCommitRequest,
    TxnOffsetCommitRequestPartition,
    TxnOffsetCommitRequestTopic,
)

from ringlog.storage.records import build_batch
from tests.broker.test_idempotence_broker import Wire


class TxnWire(Wire):
    def init_txn(self, tid: str, timeout_ms: int = 60_000, producer_id: int = -1, epoch: int = -1):
        r = self.call(InitProducerIdRequest(transactional_id=tid,
                                            transaction_timeout=datetime.timedelta(milliseconds=timeout_ms),
                                            producer_id=producer_id, producer_epoch=epoch))
        return r.error_code, r.producer_id, r.producer_epoch

    def add_partitions(self, tid: str, pid: int, epoch: int, tps: list[tuple[str, int]]):
        topics: dict[str, list[int]] = {}
        for t, p in tps:
            topics.setdefault(t, []).append(p)
        r = self.call(AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=tid, v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
            v3_and_below_topics=tuple(AddPartitionsToTxnTopic(name=t, partitions=tuple(ps)) for t, ps in topics.items())))
        return {(t.name, int(p.partition_index)): p.partition_error_code
                for t in r.results_by_topic_v3_and_below for p in t.results_by_partition}

    def add_offsets(self, tid: str, pid: int, epoch: int, group: str):
        return self.call(AddOffsetsToTxnRequest(transactional_id=tid, producer_id=pid, producer_epoch=epoch,
                                                group_id=group)).error_code

    def txn_offset_commit(self, tid: str, pid: int, epoch: int, group: str, offsets: dict[tuple[str, int], int]):
        topics: dict[str, list] = {}
        for (t, p), off in offsets.items():
            topics.setdefault(t, []).append(TxnOffsetCommitRequestPartition(
                partition_index=p, committed_offset=off, committed_leader_epoch=-1, committed_metadata=""))
        r = self.call(TxnOffsetCommitRequest(
            transactional_id=tid, group_id=group, producer_id=pid, producer_epoch=epoch, generation_id=-1,
            member_id="", group_instance_id=None,
            topics=tuple(TxnOffsetCommitRequestTopic(name=t, partitions=tuple(ps)) for t, ps in topics.items())))
        return {(t.name, int(p.partition_index)): p.error_code for t in r.topics for p in t.partitions}

    def end_txn(self, tid: str, pid: int, epoch: int, commit: bool):
        return self.call(EndTxnRequest(transactional_id=tid, producer_id=pid, producer_epoch=epoch,
                                       committed=commit)).error_code

    def describe(self, tid: str):
        return self.call(DescribeTransactionsRequest(transactional_ids=(tid,))).transaction_states[0]

    def list_txns(self, states: tuple[str, ...] = ()):
        return self.call(ListTransactionsRequest(state_filters=states, producer_id_filters=(), duration_filter=-1))

    def offset_fetch(self, group: str, tps: list[tuple[str, int]], require_stable: bool = False):
        topics: dict[str, list[int]] = {}
        for t, p in tps:
            topics.setdefault(t, []).append(p)
        r = self.call(OffsetFetchRequest(group_id=group, require_stable=require_stable, topics=tuple(
            OffsetFetchRequestTopic(name=t, partition_indexes=tuple(ps)) for t, ps in topics.items())))
        return {(t.name, int(p.partition_index)): (p.error_code, int(p.committed_offset))
                for t in r.topics for p in t.partitions}

    def produce_txn(self, tid: str | None, topic: str, partition: int, batch: bytes):
        r = self.call(ProduceRequest(
            transactional_id=tid, acks=-1, timeout=datetime.timedelta(seconds=10),
            topic_data=(TopicProduceData(name=topic, partition_data=(
                PartitionProduceData(index=partition, records=batch),)),)))
        p = r.responses[0].partition_responses[0]
        return p.error_code, p.base_offset

    def fetch(self, topic: str, partition: int, offset: int = 0, isolation: int = 1):
        r = self.call(FetchRequest(
            cluster_id=None, replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=1 << 20, isolation_level=isolation,
            session_id=0, session_epoch=-1, rack_id="", forgotten_topics_data=(),
            topics=(FetchTopic(topic=topic, partitions=(FetchPartition(
                partition=partition, current_leader_epoch=-1, fetch_offset=offset, last_fetched_epoch=-1,
                log_start_offset=-1, partition_max_bytes=1 << 20),)),)))
        return r.responses[0].partitions[0]


def txn_batch(pid: int, epoch: int, seq: int, count: int = 3, tag: str = "t", control: bool = False) -> bytes:
    now = int(time.time() * 1000)
    return build_batch([(None, f"{tag}-{seq + i}".encode(), (), now) for i in range(count)],
                       producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=True, control=control)
