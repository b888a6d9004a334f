"""SaslHandshake (17) v1 and SaslAuthenticate (36) v0-2: SASL on SASL_PLAINTEXT and SASL_SSL
listeners, as Kafka's SaslServerAuthenticator runs it (broker/security/session.py holds the state).

Both are sequential: the next request on the connection is read only once a step is answered,
so the exchange cannot interleave with anything else. On a listener without SASL both answer
ILLEGAL_SASL_STATE, as Kafka's KafkaApis does. A failed authentication is answered
SASL_AUTHENTICATION_FAILED with Kafka's message, after connection.failed.authentication.delay.ms
(growing with repeated failures from the address), and the connection is then closed.

SaslHandshake v0 (the SASL tokens then travel as bare frames, without SaslAuthenticate) is
advertised but answered UNSUPPORTED_VERSION: librdkafka before 2.x only detects SASL support when
the advertised range starts at 0, and every client since Kafka 1.0 (librdkafka, the Java client,
kafka-python, aiokafka) then uses v1.
"""
from __future__ import annotations

import datetime
import logging

import trio
from kio.schema.errors import ErrorCode

from ringlog.broker.logging_setup import event
from ringlog.broker.security.session import AuthenticationFailed

from . import RequestContext, handler, make

log = logging.getLogger("ringlog.security")


def _sasl_session(ctx: RequestContext):
    session = ctx.session
    return session if session is not None and session.sasl else None


@handler(api_key=17, min_version=1, max_version=1, advertise_min_version=0, sequential=True)
async def sasl_handshake(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    session = _sasl_session(ctx)
    if session is None:
        return Response(error_code=ErrorCode.illegal_sasl_state, mechanisms=())
    mechanisms = tuple(session.state.mechanisms)
    if not session.handshake(request.mechanism):
        log.info("connection %d from %s: SASL mechanism %r requested by client is not enabled (%s); closing",
                 ctx.connection_id, ctx.peer, request.mechanism, ", ".join(mechanisms),
                 extra=event("authentication_failed", peer=ctx.peer, mechanism=request.mechanism,
                             reason="unsupported mechanism"))
        session.failed()
        return Response(error_code=ErrorCode.unsupported_sasl_mechanism, mechanisms=mechanisms)
    return Response(error_code=ErrorCode.none, mechanisms=mechanisms)


@handler(api_key=36, min_version=0, max_version=2, sequential=True)
async def sasl_authenticate(ctx: RequestContext, request) -> object:
    Response = ctx.response_class()
    session = _sasl_session(ctx)
    if session is None:
        return make(Response, error_code=ErrorCode.illegal_sasl_state, auth_bytes=b"",
                    error_message="SaslAuthenticate on a listener without SASL",
                    session_lifetime=datetime.timedelta(0))
    mechanism = session.mechanism
    try:
        reply, complete = await session.authenticate(bytes(request.auth_bytes))
    except AuthenticationFailed as exc:
        state = session.state
        log.info("Failed authentication with %s (%s), mechanism %s", ctx.peer, exc, mechanism,
                 extra=event("authentication_failed", peer=ctx.peer, mechanism=mechanism, reason=str(exc)))
        session.failed()
        if state is not None:
            delay = state.failures.record(session.peer_host)
            if delay:
                await trio.sleep(delay)  # connection.failed.authentication.delay.ms, as Kafka
        return make(Response, error_code=ErrorCode.sasl_authentication_failed, error_message=str(exc),
                    auth_bytes=b"", session_lifetime=datetime.timedelta(0))
    lifetime = session.session_lifetime_ms(ctx.api_version) if complete else 0
    if complete:
        log.info("connection %d from %s: authenticated as %s with %s", ctx.connection_id, ctx.peer,
                 session.principal, session.authenticated_mechanism,
                 extra=event("authenticated", peer=ctx.peer, principal=session.principal,
                             mechanism=session.authenticated_mechanism))
    return make(Response, error_code=ErrorCode.none, error_message=None, auth_bytes=reply,
                session_lifetime=datetime.timedelta(milliseconds=lifetime))
