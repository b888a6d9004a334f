"""DescribeClientQuotas (48) and AlterClientQuotas (49) v0-1 (KIP-546): the client quotas of
broker.quotas, managed by Kafka admin clients (`kafka-configs --entity-type users|clients`).

Describing needs DESCRIBE_CONFIGS on the cluster, altering ALTER_CONFIGS (when the authorizer is
on), as in Kafka. A filter Kafka refuses is answered with its error and message for the whole
request (INVALID_REQUEST, or UNSUPPORTED_VERSION for an unknown entity type); an alteration is
checked per entity with Kafka's rules and messages (unknown or unenforced key, value not > 0,
a fractional byte rate, empty or duplicate entity, a key twice), and an entity with a refused
operation changes nothing. validate_only checks without changing. The changed table is saved to
`security/quotas.json` in a worker thread before the answer leaves (in cluster mode: written to
etcd and applied here first, broker.cluster.security); a request_percentage quota
installs the handler-time instrument (sync_task_time), the last one removed takes it out.
"""
from __future__ import annotations

import datetime
import logging

from kio.schema.errors import ErrorCode

from ..errors import KafkaError
from ..logging_setup import event
from ..quotas import QuotaError, UnsupportedEntity, check_value, make_entity
from ..security import authorizer as acl
from . import RequestContext, handler, make, nested

log = logging.getLogger("ringlog.security")
ZERO = datetime.timedelta(0)


@handler(api_key=48, min_version=0, max_version=1)
async def describe_client_quotas(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    if not ctx.authorize(acl.DESCRIBE_CONFIGS, acl.CLUSTER, acl.CLUSTER_NAME):
        return make(Response, throttle_time=ZERO, error_code=ErrorCode.cluster_authorization_failed,
                    error_message="Cluster authorization failed.", entries=None)
    components = [(c.entity_type, int(c.match_type), c.match) for c in request.components]
    try:
        found = ctx.broker.quotas.describe(components, bool(request.strict))
    except UnsupportedEntity as exc:
        return make(Response, throttle_time=ZERO, error_code=ErrorCode.unsupported_version,
                    error_message=str(exc), entries=None)
    except QuotaError as exc:
        return make(Response, throttle_time=ZERO, error_code=ErrorCode.invalid_request,
                    error_message=str(exc), entries=None)
    Entry = nested(Response, "EntryData")
    Entity = nested(Response, "EntityData")
    Value = nested(Response, "ValueData")
    entries = tuple(
        make(Entry, entity=tuple(make(Entity, entity_type=t, entity_name=n) for t, n in entity),
             values=tuple(make(Value, key=k, value=v) for k, v in sorted(values.items())))
        for entity, values in found)
    return make(Response, throttle_time=ZERO, error_code=ErrorCode.none, error_message=None, entries=entries)


@handler(api_key=49, min_version=0, max_version=1)
async def alter_client_quotas(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Entry = nested(Response, "EntryData")
    Entity = nested(Response, "EntityData")

    def answer(entry, code: ErrorCode, message: str | None):
        return make(Entry, error_code=code, error_message=message,
                    entity=tuple(make(Entity, entity_type=e.entity_type, entity_name=e.entity_name)
                                 for e in entry.entity))

    if not ctx.authorize(acl.ALTER_CONFIGS, acl.CLUSTER, acl.CLUSTER_NAME):
        return make(Response, throttle_time=ZERO, entries=tuple(
            answer(e, ErrorCode.cluster_authorization_failed, "Cluster authorization failed.")
            for e in request.entries))
    quotas = ctx.broker.quotas
    results = []
    accepted: list[tuple[object, dict[str, float | None]]] = []
    seen: set[object] = set()
    for entry in request.entries:
        try:
            entity = make_entity((e.entity_type, e.entity_name) for e in entry.entity)
            if entity in seen:
                raise QuotaError(f"Ignoring duplicate entity {_show(entity)}")
            seen.add(entity)
            ops: dict[str, float | None] = {}
            for op in entry.ops:
                if op.key in ops:
                    raise QuotaError(f"Duplicate quota key {op.key} not updating quota for this entity {_show(entity)}")
                if op.remove:
                    ops[op.key] = None
                else:
                    check_value(op.key, float(op.value))
                    ops[op.key] = float(op.value)
        except QuotaError as exc:
            results.append(answer(entry, ErrorCode.invalid_request, str(exc)))
            continue
        accepted.append((entity, ops))
        results.append(answer(entry, ErrorCode.none, None))
    if accepted and not request.validate_only:
        def edit(table) -> None:
            for entity, ops in accepted:
                table.alter(entity, ops)

        try:
            await ctx.broker.security.change_quotas(quotas, edit)
        except KafkaError as exc:  # cluster mode: etcd did not take it (retriable)
            return make(Response, throttle_time=ZERO, entries=tuple(
                answer(e, exc.code, exc.message) for e in request.entries))
        for entity, ops in accepted:
            log.info("%s altered the client quotas of %s: %s", ctx.principal, _show(entity),
                     ", ".join(f"{k}={'removed' if v is None else f'{v:g}'}" for k, v in ops.items()),
                     extra=event("client_quotas_altered", principal=ctx.principal, entity=_show(entity)))
        sync_task_time(quotas)
    return make(Response, throttle_time=ZERO, entries=tuple(results))


def sync_task_time(quotas) -> None:
    """Install the handler-time instrument (broker.quotas.TaskTime) while a request_percentage
    quota exists, and remove it when none is left (it times every task step meanwhile)."""
    import trio

    timer = quotas.task_time
    if quotas.request_on and not timer.installed:
        trio.lowlevel.add_instrument(timer)
        timer.installed = True
    elif not quotas.request_on and timer.installed:
        trio.lowlevel.remove_instrument(timer)
        timer.installed = False


def _show(entity) -> str:
    return ", ".join(f"{t}={'<default>' if n is None else n}" for t, n in entity)
