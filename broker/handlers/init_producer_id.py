"""InitProducerId (22) v0-4: producer ids for idempotent producers.

* no transactional id, no producer id: a new Snowflake producer id (broker.idempotence) at epoch 0.
* v3+ with producer id and epoch (KIP-360 re-initialisation after an error): the same id with the
  next epoch, so the partitions restart its sequences at 0; a new id when the epoch is exhausted.
  An epoch older than one the partitions have seen is a zombie: PRODUCER_FENCED (v4+) or
  INVALID_PRODUCER_EPOCH (older versions, which do not know PRODUCER_FENCED). An id this broker
  never issued: INVALID_PRODUCER_ID_MAPPING.
* a transactional id: the transaction coordinator (broker.txn_runtime) answers: the id's producer
  id with the next epoch (a new id the first time or when the epoch is exhausted), aborting an open
  transaction of the previous producer, which is thereby fenced.
"""
from __future__ import annotations

import datetime
import logging

from kio.schema.errors import ErrorCode

from ..errors import KafkaError
from ..security import authorizer as acl
from . import RequestContext, handler, make

log = logging.getLogger("ringlog.init_producer_id")


@handler(api_key=22, min_version=0, max_version=4)
async def init_producer_id(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()

    def answer(code: ErrorCode, pid: int = -1, epoch: int = -1) -> object:
        return make(Response, throttle_time=datetime.timedelta(0), error_code=code,
                    producer_id=pid, producer_epoch=epoch)

    pid = int(getattr(request, "producer_id", -1))
    epoch = int(getattr(request, "producer_epoch", -1))
    if request.transactional_id is not None:
        if not ctx.authorize(acl.WRITE, acl.TRANSACTIONAL_ID, request.transactional_id):
            return answer(ErrorCode.transactional_id_authorization_failed)
        if ctx.broker.cluster is not None:
            log.info("InitProducerId from %s with transactional id %r refused: transactions are not "
                     "supported in cluster mode yet", ctx.peer, request.transactional_id)
            return answer(ErrorCode.transactional_id_authorization_failed)
        # the transaction coordinator (broker.txn_runtime): epoch bump, fencing of the old producer
        timeout_ms = int(request.transaction_timeout / datetime.timedelta(milliseconds=1))
        code, new_pid, new_epoch = await ctx.broker.txn.init_producer_id(
            request.transactional_id, timeout_ms, pid, epoch)
        if code == ErrorCode.producer_fenced and ctx.api_version < 4:
            code = ErrorCode.invalid_producer_epoch
        if code != ErrorCode.none:
            log.info("InitProducerId from %s for transactional id %r: %s", ctx.peer, request.transactional_id,
                     code.name)
        return answer(code, new_pid, new_epoch)
    if not ctx.may_write_idempotently():
        return answer(ErrorCode.cluster_authorization_failed)
    state = ctx.broker.producer_state
    try:
        new_pid, new_epoch = await state.init_producer_id(pid, epoch)
    except KafkaError as exc:
        code = exc.code
        if code == ErrorCode.producer_fenced and ctx.api_version < 4:
            code = ErrorCode.invalid_producer_epoch
        log.info("InitProducerId from %s (producer %d epoch %d): %s", ctx.peer, pid, epoch, exc)
        return answer(code)
    return answer(ErrorCode.none, new_pid, new_epoch)
