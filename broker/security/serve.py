"""The listener side of security: binding each configured listener, and turning an accepted
socket into the stream and Session its connection runs with (TLS handshake, certificate
principal). broker.server calls these from small hooks."""
from __future__ import annotations

import logging
import ssl
from typing import Any

import attrs
import trio

from ..logging_setup import event
from .listeners import ListenerSpec
from .session import ANONYMOUS, Session
from .state import SecurityState
from .principal_rules import NoMatchingRule, principal_for
from .tls import principal_name

log = logging.getLogger("ringlog.security")


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


async def open_listeners(state: SecurityState) -> list[tuple[ListenerSpec, list[trio.SocketListener]]]:
    """Bind every listener; each spec comes back with its advertised address filled in (its own
    address, 127.0.0.1 for a wildcard host, the bound port for port 0)."""
    out = []
    try:
        for spec in state.listeners:
            sockets = await trio.open_tcp_listeners(spec.port, host=spec.host)
            bound = sockets[0].socket.getsockname()
            host = spec.advertised_host or ("127.0.0.1" if _wildcard(spec.host) else spec.host)
            port = spec.advertised_port or bound[1]
            out.append((attrs.evolve(spec, advertised_host=host, advertised_port=port), sockets))
            log.info("listener %s (%s) on %s:%d, advertised %s:%d", spec.name, spec.protocol, bound[0], bound[1],
                     host, port, extra=event("listener", listener=spec.name, protocol=spec.protocol,
                                             port=bound[1], advertised=f"{host}:{port}"))
    except BaseException:
        for _, sockets in out:
            for s in sockets:
                s.socket.close()
        raise
    return out


async def secure(state: SecurityState | None, spec: ListenerSpec, stream: trio.SocketStream, host: str,
                 peer: str, timeout_s: float) -> tuple[trio.abc.Stream, Session] | None:
    """The stream to serve and its Session; None (logged, after the failed-authentication delay)
    when the TLS handshake fails or does not finish within `timeout_s`."""
    if state is None or not spec.tls:
        return stream, Session(spec, state, host)
    assert state.tls is not None
    reason = None
    with trio.move_on_after(timeout_s) as scope:
        try:
            tls_stream = state.tls.wrap(stream)
            await tls_stream.do_handshake()
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            reason = str(cause) if isinstance(cause, ssl.SSLError) else "the client closed the connection"
        except Exception as exc:  # a bug here must cost this connection only, never the listener
            log.exception("TLS set-up of the connection from %s failed", peer)
            reason = repr(exc)
    if scope.cancelled_caught:
        reason = f"not finished within {timeout_s:.0f} s"
    if reason is not None:
        await _ssl_failed(state, spec, host, peer, f"SSL handshake failed: {reason}", reason)
        return None
    principal = ANONYMOUS
    if not spec.sasl:
        subject = principal_name(tls_stream.getpeercert())
        if subject is not None:
            try:
                principal = f"User:{principal_for(state.principal_rules, subject)}"
            except NoMatchingRule as exc:
                await _ssl_failed(state, spec, host, peer, f"SSL: {exc}", str(exc))
                await trio.aclose_forcefully(tls_stream)
                return None
    return tls_stream, Session(spec, state, host, principal)


async def _ssl_failed(state: SecurityState, spec: ListenerSpec, host: str, peer: str, what: str,
                      reason: str) -> None:
    """A TLS connection that fails authentication: logged, then the failed-authentication delay
    (as Kafka applies it) before the caller drops it."""
    log.info("Failed authentication with %s (%s)", peer, what,
             extra=event("authentication_failed", peer=peer, listener=spec.name, mechanism="SSL", reason=reason))
    delay = state.failures.record(host)
    if delay:
        await trio.sleep(delay)
