"""Transaction APIs: AddPartitionsToTxn (24) v0-3, AddOffsetsToTxn (25) v0-3, EndTxn (26) v0-3,
TxnOffsetCommit (28) v0-3, DescribeTransactions (65) v0, ListTransactions (66) v0-1.

InitProducerId with a transactional id is in init_producer_id.py, FindCoordinator(key_type=1) in
groups.py. The rules live in broker.txn.state and broker.txn_runtime; these handlers convert.
PRODUCER_FENCED is answered as INVALID_PRODUCER_EPOCH to request versions older than the ones
that know it (v2 of AddPartitionsToTxn, AddOffsetsToTxn and EndTxn), as Kafka does.
"""
from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode

from ..coordinator import CommitEntry, CommitRequest
from ..security import authorizer as acl
from ..txn import records as trec
from . import RequestContext, handler, make, nested
from .groups import _partition_exists

ZERO = datetime.timedelta(0)


def _fenced_for(code: ErrorCode, version: int, first_version: int) -> ErrorCode:
    if code == ErrorCode.producer_fenced and version < first_version:
        return ErrorCode.invalid_producer_epoch
    return code


@handler(api_key=24, min_version=0, max_version=3)
async def add_partitions_to_txn(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    TopicResult = nested(Response, "AddPartitionsToTxnTopicResult")
    PartResult = nested(Response, "AddPartitionsToTxnPartitionResult")
    broker = ctx.broker
    tid = request.v3_and_below_transactional_id
    wanted = [(t.name, int(p)) for t in request.v3_and_below_topics for p in t.partitions]
    exists = _partition_exists(ctx)
    unknown = {(topic, p) for topic, p in wanted if not exists(topic, p)}
    denied = ctx.denied(acl.WRITE, acl.TOPIC, (topic for topic, _ in wanted))
    if not ctx.authorize(acl.WRITE, acl.TRANSACTIONAL_ID, tid):
        codes = {tp: ErrorCode.transactional_id_authorization_failed for tp in wanted}
    elif denied:  # Kafka's answer: the refused topics, every other partition not attempted
        codes = {tp: ErrorCode.topic_authorization_failed if tp[0] in denied else ErrorCode.operation_not_attempted
                 for tp in wanted}
    elif unknown:
        codes = {tp: ErrorCode.unknown_topic_or_partition if tp in unknown else ErrorCode.operation_not_attempted
                 for tp in wanted}
    else:
        code = await broker.txn.add_partitions(tid, int(request.v3_and_below_producer_id),
                                               int(request.v3_and_below_producer_epoch), wanted)
        code = _fenced_for(code, ctx.api_version, 2)
        codes = {tp: code for tp in wanted}
    by_topic: dict[str, list] = {}
    for (topic, p), code in codes.items():
        by_topic.setdefault(topic, []).append(make(PartResult, partition_index=p, partition_error_code=code))
    return make(Response, throttle_time=ZERO, results_by_topic_v3_and_below=tuple(
        make(TopicResult, name=name, results_by_partition=tuple(parts)) for name, parts in by_topic.items()))


@handler(api_key=25, min_version=0, max_version=3)
async def add_offsets_to_txn(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    txn = ctx.broker.txn
    if not ctx.authorize(acl.WRITE, acl.TRANSACTIONAL_ID, request.transactional_id):
        return ctx.refused(acl.TRANSACTIONAL_ID)
    if not ctx.authorize(acl.READ, acl.GROUP, request.group_id):
        return ctx.refused(acl.GROUP)
    if (error := await txn.ensure_ready()) is None and ctx.broker.coordinator.state.loading:
        error = ErrorCode.coordinator_load_in_progress
    if error is None:
        error = await txn.add_partitions(request.transactional_id, int(request.producer_id),
                                         int(request.producer_epoch), [txn.offsets_partition(request.group_id)])
    return make(Response, throttle_time=ZERO, error_code=_fenced_for(error, ctx.api_version, 2))


@handler(api_key=26, min_version=0, max_version=3)
async def end_txn(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    if not ctx.authorize(acl.WRITE, acl.TRANSACTIONAL_ID, request.transactional_id):
        return ctx.refused(acl.TRANSACTIONAL_ID)
    code = await ctx.broker.txn.end_txn(request.transactional_id, int(request.producer_id),
                                        int(request.producer_epoch), bool(request.committed))
    return make(Response, throttle_time=ZERO, error_code=_fenced_for(code, ctx.api_version, 2))


@handler(api_key=28, min_version=0, max_version=3)
async def txn_offset_commit(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Topic = nested(Response, "TxnOffsetCommitResponseTopic")
    Partition = nested(Response, "TxnOffsetCommitResponsePartition")
    broker = ctx.broker
    txn = broker.txn
    pid, epoch = int(request.producer_id), int(request.producer_epoch)
    wanted = [(t.name, p) for t in request.topics for p in t.partitions]
    denied = ctx.denied(acl.READ, acl.TOPIC, (name for name, _ in wanted))
    error = None
    if not ctx.authorize(acl.WRITE, acl.TRANSACTIONAL_ID, request.transactional_id):
        error = ErrorCode.transactional_id_authorization_failed
    elif not ctx.authorize(acl.READ, acl.GROUP, request.group_id):
        error = ErrorCode.group_authorization_failed
    else:
        error = await txn.ensure_ready()
    if error is None:
        error = txn.state.verify_offsets(request.transactional_id, pid, epoch,
                                         txn.offsets_partition(request.group_id))
        if error == ErrorCode.producer_fenced:
            error = ErrorCode.invalid_producer_epoch
    results: list[tuple[str, int, ErrorCode]]
    if error is not None:
        results = [(name, int(p.partition_index), error) for name, p in wanted]
    elif denied:
        results = [(name, int(p.partition_index), ErrorCode.topic_authorization_failed if name in denied
                    else ErrorCode.operation_not_attempted) for name, p in wanted]
    else:
        req = CommitRequest(
            group_id=request.group_id,
            generation_id=int(getattr(request, "generation_id", -1)),
            member_id=getattr(request, "member_id", "") or "",
            group_instance_id=getattr(request, "group_instance_id", None),
            offsets=tuple(CommitEntry(topic=name, partition=int(p.partition_index), offset=int(p.committed_offset),
                                      leader_epoch=int(getattr(p, "committed_leader_epoch", -1)),
                                      metadata=p.committed_metadata) for name, p in wanted),
        )
        coordinator = broker.coordinator
        reply = await coordinator.execute(coordinator.state.commit, req, _partition_exists(ctx),
                                          transactional=(pid, epoch))
        results = list(reply.partitions)
    by_topic: dict[str, list] = {}
    for topic, partition, code in results:
        by_topic.setdefault(topic, []).append(make(Partition, partition_index=partition, error_code=code))
    return make(Response, throttle_time=ZERO,
                topics=tuple(make(Topic, name=name, partitions=tuple(parts)) for name, parts in by_topic.items()))


@handler(api_key=65, min_version=0, max_version=0)
async def describe_transactions(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    State = nested(Response, "TransactionState")
    TopicData = nested(Response, "TopicData")
    txn = ctx.broker.txn
    out = []
    denied = ctx.denied(acl.DESCRIBE, acl.TRANSACTIONAL_ID, request.transactional_ids)
    for tid in request.transactional_ids:
        meta = txn.state.describe(tid) if txn.loaded.is_set() and tid not in denied else None
        if meta is None:
            code = (ErrorCode.transactional_id_authorization_failed if tid in denied
                    else ErrorCode.coordinator_load_in_progress if not txn.loaded.is_set()
                    else ErrorCode.transactional_id_not_found)
            out.append(make(State, error_code=code, transactional_id=tid, transaction_state="",
                            transaction_timeout=ZERO, transaction_start_time=_start_time(-1), producer_id=-1,
                            producer_epoch=-1, topics=()))
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, p in sorted(meta.partitions):
            by_topic.setdefault(topic, []).append(p)
        start = _start_time(meta.start_ms)
        out.append(make(State, error_code=ErrorCode.none, transactional_id=tid,
                        transaction_state=trec.STATE_NAMES[meta.state],
                        transaction_timeout=datetime.timedelta(milliseconds=meta.timeout_ms),
                        transaction_start_time=start, producer_id=meta.producer_id,
                        producer_epoch=meta.producer_epoch,
                        topics=tuple(make(TopicData, topic=t, partitions=tuple(ps)) for t, ps in by_topic.items())))
    return make(Response, throttle_time=ZERO, transaction_states=tuple(out))


def _start_time(ms: int) -> datetime.datetime:
    # -1 (no transaction open) is what Kafka sends; kio encodes a datetime, so -1 ms after 1970
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


@handler(api_key=66, min_version=0, max_version=1)
async def list_transactions(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    State = nested(Response, "TransactionState")
    txn = ctx.broker.txn
    if not txn.loaded.is_set():
        return make(Response, throttle_time=ZERO, error_code=ErrorCode.coordinator_load_in_progress,
                    unknown_state_filters=(), transaction_states=())
    filters = tuple(request.state_filters or ())
    known = set(trec.STATE_NAMES.values())
    unknown = tuple(f for f in filters if f not in known)
    metas = txn.state.list([f for f in filters if f in known], [int(p) for p in request.producer_id_filters or ()])
    if filters and not [f for f in filters if f in known]:
        metas = []
    duration = int(getattr(request, "duration_filter", -1))
    if duration >= 0:
        now = ctx.now_ms()
        metas = [m for m in metas if m.start_ms >= 0 and now - m.start_ms > duration]
    visible = ctx.authorized(acl.DESCRIBE, acl.TRANSACTIONAL_ID, {m.transactional_id for m in metas}, audit=False)
    metas = [m for m in metas if m.transactional_id in visible]
    return make(Response, throttle_time=ZERO, error_code=ErrorCode.none, unknown_state_filters=unknown,
                transaction_states=tuple(make(State, transactional_id=m.transactional_id, producer_id=m.producer_id,
                                              transaction_state=trec.STATE_NAMES[m.state]) for m in metas))
