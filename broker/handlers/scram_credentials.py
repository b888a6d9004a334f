"""DescribeUserScramCredentials (50) and AlterUserScramCredentials (51) v0 (KIP-554): SCRAM users
managed by Kafka admin clients. Describing needs DESCRIBE on the cluster, altering ALTER (when the
authorizer is on). The broker never sees a password: an upsertion carries the salt, the
iterations and the salted password, from which the stored keys are derived; the credentials file
is saved in a worker thread before the answer leaves (in cluster mode: written to etcd and
applied here first, broker.cluster.security). Kafka's bounds and messages.
"""
from __future__ import annotations

import datetime
import logging

from kio.schema.errors import ErrorCode

from ..errors import KafkaError
from ..logging_setup import event
from ..security import authorizer as acl
from ..security.scram import MAX_ITERATIONS, MIN_ITERATIONS, from_salted_password
from . import RequestContext, handler, make, nested

log = logging.getLogger("ringlog.security")
ZERO = datetime.timedelta(0)
# ScramMechanism wire codes
MECHANISM_CODES = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
CODE_OF = {v: k for k, v in MECHANISM_CODES.items()}


@handler(api_key=50, min_version=0, max_version=0)
async def describe_user_scram_credentials(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Result = nested(Response, "DescribeUserScramCredentialsResult")
    Info = nested(Response, "CredentialInfo")
    if not ctx.authorize(acl.DESCRIBE, acl.CLUSTER, acl.CLUSTER_NAME):
        return make(Response, throttle_time=ZERO, error_code=ErrorCode.cluster_authorization_failed,
                    error_message="Cluster authorization failed.", results=())
    creds = ctx.broker.security.credentials
    if request.users is None or len(request.users) == 0:
        users = sorted(u for u in creds.users if any(m in CODE_OF for m in creds.users[u]))
        wanted, counts = users, {u: 1 for u in users}
    else:
        wanted = list(dict.fromkeys(u.name for u in request.users))
        counts = {u: sum(1 for x in request.users if x.name == u) for u in wanted}
    results = []
    for user in wanted:
        infos = tuple(make(Info, mechanism=CODE_OF[m], iterations=i)
                      for m, i in creds.mechanisms(user).items() if m in CODE_OF)
        if counts[user] > 1:
            code, message, infos = ErrorCode.duplicate_resource, f"Cannot describe SCRAM credentials for the same user twice in a single request: {user}", ()
        elif not infos:
            code, message = ErrorCode.resource_not_found, f"Attempt to describe a user credential that does not exist: {user}"
        else:
            code, message = ErrorCode.none, None
        results.append(make(Result, user=user, error_code=code, error_message=message, credential_infos=infos))
    return make(Response, throttle_time=ZERO, error_code=ErrorCode.none, error_message=None, results=tuple(results))


@handler(api_key=51, min_version=0, max_version=0)
async def alter_user_scram_credentials(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    Result = nested(Response, "AlterUserScramCredentialsResult")
    names = [d.name for d in request.deletions] + [u.name for u in request.upsertions]
    if not ctx.authorize(acl.ALTER, acl.CLUSTER, acl.CLUSTER_NAME):
        return make(Response, throttle_time=ZERO, results=tuple(
            make(Result, user=n, error_code=ErrorCode.cluster_authorization_failed,
                 error_message="Cluster authorization failed.") for n in dict.fromkeys(names)))
    creds = ctx.broker.security.credentials
    errors: dict[str, tuple[ErrorCode, str]] = {}
    seen: set[tuple[str, int]] = set()

    def refuse(user: str, code: ErrorCode, message: str) -> None:
        errors.setdefault(user, (code, message))

    for op in [*request.deletions, *request.upsertions]:
        mechanism = int(op.mechanism)
        if not op.name:
            refuse(op.name, ErrorCode.unacceptable_credential, "Username must not be empty")
        elif mechanism not in MECHANISM_CODES:
            refuse(op.name, ErrorCode.unsupported_sasl_mechanism, "Unknown SCRAM mechanism")
        elif (op.name, mechanism) in seen:
            refuse(op.name, ErrorCode.duplicate_resource, "A user credential cannot be altered twice in the same request")
        seen.add((op.name, mechanism))
    for d in request.deletions:
        if d.name not in errors and creds.scram(d.name, MECHANISM_CODES[int(d.mechanism)]) is None:
            refuse(d.name, ErrorCode.resource_not_found, "Attempt to delete a user credential that does not exist")
    for u in request.upsertions:
        if u.name in errors:
            continue
        if int(u.iterations) < MIN_ITERATIONS:
            refuse(u.name, ErrorCode.unacceptable_credential, "Too few iterations")
        elif int(u.iterations) > MAX_ITERATIONS:
            refuse(u.name, ErrorCode.unacceptable_credential, "Too many iterations")
        elif not u.salt or not u.salted_password:
            refuse(u.name, ErrorCode.unacceptable_credential, "Salt and salted password must not be empty")
    def edit(creds) -> tuple[bool, None]:
        changed = False
        # Kafka applies every operation of a user whose operations are all acceptable
        for d in request.deletions:
            if d.name not in errors:
                changed |= creds.delete(d.name, MECHANISM_CODES[int(d.mechanism)])
        for u in request.upsertions:
            if u.name not in errors:
                mechanism = MECHANISM_CODES[int(u.mechanism)]
                credential = from_salted_password(mechanism, bytes(u.salted_password), bytes(u.salt), int(u.iterations))
                creds.set(u.name, mechanism, credential.to_json())
                changed = True
        return changed, None

    try:
        await ctx.broker.security.change_credentials(edit)
    except KafkaError as exc:  # cluster mode: etcd did not take it (retriable)
        errors = {n: (exc.code, exc.message) for n in names}
    results = []
    for user in dict.fromkeys(names):
        code, message = errors.get(user, (ErrorCode.none, None))
        if code == ErrorCode.none:
            log.info("%s altered the SCRAM credentials of %s", ctx.principal, user,
                     extra=event("scram_altered", principal=ctx.principal, user=user))
        results.append(make(Result, user=user, error_code=code, error_message=message))
    return make(Response, throttle_time=ZERO, results=tuple(results))
