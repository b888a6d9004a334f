"""CreateAcls (30), DescribeAcls (29), DeleteAcls (31) v1-3: Kafka's ACL admin API
(broker/security/authorizer.py holds the model), so kafka-acls-style admin clients work.

Kafka's rules: creating and deleting need ALTER on the cluster, describing DESCRIBE; without an
authorizer (authorizer.enabled = false) every answer is SECURITY_DISABLED ("No Authorizer is
configured on the broker"). The bindings are saved (security/acls.json, in a worker thread)
before the answer leaves; in cluster mode they are written to etcd and applied by every broker
(broker.cluster.security), and the answer leaves once this broker applied the change.
"""
from __future__ import annotations

import datetime
import logging

from kio.schema.errors import ErrorCode

from ..errors import KafkaError
from ..logging_setup import event
from ..security import authorizer as acl
from ..security.authorizer import Acl, AclFilter, invalid_reason
from . import RequestContext, handler, make, nested

log = logging.getLogger("ringlog.security")
ZERO = datetime.timedelta(0)
NO_AUTHORIZER = "No Authorizer is configured on the broker"


def _filter(f) -> AclFilter:
    return AclFilter(int(f.resource_type_filter), f.resource_name_filter, int(f.pattern_type_filter),
                     f.principal_filter, f.host_filter, int(f.operation), int(f.permission_type))


def _filter_problem(f: AclFilter) -> str | None:
    if f.resource_type == 0 or f.pattern == 0 or f.operation == 0 or f.permission == 0:
        return "the filter has an UNKNOWN field"
    return None


@handler(api_key=30, min_version=1, max_version=3)
async def create_acls(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Result = nested(Response, "AclCreationResult")
    authorizer = ctx.broker.authorizer

    def results(code, message=None):
        return make(Response, throttle_time=ZERO,
                    results=tuple(make(Result, error_code=code, error_message=message) for _ in request.creations))

    if authorizer is None:
        return results(ErrorCode.security_disabled, NO_AUTHORIZER)
    if not ctx.authorize(acl.ALTER, acl.CLUSTER, acl.CLUSTER_NAME):
        return results(ErrorCode.cluster_authorization_failed, "Cluster authorization failed.")
    answers, new = [], []
    for c in request.creations:
        binding = Acl(int(c.resource_type), c.resource_name, int(c.resource_pattern_type), c.principal, c.host,
                      int(c.operation), int(c.permission_type))
        problem = invalid_reason(binding)
        if problem:
            answers.append(make(Result, error_code=ErrorCode.invalid_request, error_message=problem))
            continue
        new.append(binding)
        answers.append(make(Result, error_code=ErrorCode.none, error_message=None))
    if new:
        try:
            await ctx.broker.security.change_acls(lambda acls: ([*acls, *new], None))
        except KafkaError as exc:  # cluster mode: etcd did not take it (retriable)
            return results(exc.code, exc.message)
        for binding in new:
            log.info("%s created ACL %s", ctx.principal, binding.describe(),
                     extra=event("acl_created", principal=ctx.principal, acl=binding.describe()))
    return make(Response, throttle_time=ZERO, results=tuple(answers))


@handler(api_key=29, min_version=1, max_version=3)
async def describe_acls(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Resource = nested(Response, "DescribeAclsResource")
    Description = nested(Response, "AclDescription")
    authorizer = ctx.broker.authorizer

    def answer(code, message=None, resources=()):
        return make(Response, throttle_time=ZERO, error_code=code, error_message=message, resources=resources)

    if authorizer is None:
        return answer(ErrorCode.security_disabled, NO_AUTHORIZER)
    if not ctx.authorize(acl.DESCRIBE, acl.CLUSTER, acl.CLUSTER_NAME):
        return answer(ErrorCode.cluster_authorization_failed, "Cluster authorization failed.")
    f = _filter(request)
    problem = _filter_problem(f)
    if problem:
        return answer(ErrorCode.invalid_request, problem)
    grouped: dict[tuple[int, str, int], list[Acl]] = {}
    for binding in authorizer.describe(f):
        grouped.setdefault((binding.resource_type, binding.name, binding.pattern), []).append(binding)
    resources = tuple(
        make(Resource, resource_type=rtype, resource_name=name, pattern_type=pattern, acls=tuple(
            make(Description, principal=b.principal, host=b.host, operation=b.operation, permission_type=b.permission)
            for b in bindings))
        for (rtype, name, pattern), bindings in grouped.items())
    return answer(ErrorCode.none, None, resources)


@handler(api_key=31, min_version=1, max_version=3)
async def delete_acls(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    FilterResult = nested(Response, "DeleteAclsFilterResult")
    Matching = nested(Response, "DeleteAclsMatchingAcl")
    authorizer = ctx.broker.authorizer

    def results(code, message):
        return make(Response, throttle_time=ZERO, filter_results=tuple(
            make(FilterResult, error_code=code, error_message=message, matching_acls=()) for _ in request.filters))

    if authorizer is None:
        return results(ErrorCode.security_disabled, NO_AUTHORIZER)
    if not ctx.authorize(acl.ALTER, acl.CLUSTER, acl.CLUSTER_NAME):
        return results(ErrorCode.cluster_authorization_failed, "Cluster authorization failed.")
    filters = [_filter(f) for f in request.filters]
    problems = [_filter_problem(f) for f in filters]
    valid = [f for f, p in zip(filters, problems) if p is None]

    def edit(acls: list[Acl]) -> tuple[list[Acl] | None, list[list[Acl]]]:
        matched = [[a for a in acls if f.matches(a)] for f in valid]
        gone = {a for group in matched for a in group}
        return ([a for a in acls if a not in gone] if gone else None), matched

    try:
        removed = await ctx.broker.security.change_acls(edit)
    except KafkaError as exc:  # cluster mode: etcd did not take it (retriable)
        return results(exc.code, exc.message)
    out, matched = [], iter(removed)
    for problem in problems:
        if problem:
            out.append(make(FilterResult, error_code=ErrorCode.invalid_request, error_message=problem, matching_acls=()))
            continue
        bindings = next(matched)
        for b in bindings:
            log.info("%s deleted ACL %s", ctx.principal, b.describe(),
                     extra=event("acl_deleted", principal=ctx.principal, acl=b.describe()))
        out.append(make(FilterResult, error_code=ErrorCode.none, error_message=None, matching_acls=tuple(
            make(Matching, error_code=ErrorCode.none, error_message=None, resource_type=b.resource_type,
                 resource_name=b.name, pattern_type=b.pattern, principal=b.principal, host=b.host,
                 operation=b.operation, permission_type=b.permission) for b in bindings)))
    return make(Response, throttle_time=ZERO, filter_results=tuple(out))
