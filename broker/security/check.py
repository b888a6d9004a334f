"""The ACL check behind RequestContext.authorize: principal and host of the connection, the
audit line of a denial."""
from __future__ import annotations

from typing import Any

from .authorizer import deny_line


def client_host(ctx: Any) -> str:
    session = ctx.session
    if session is not None and session.peer_host:
        return session.peer_host
    host = ctx.peer.rpartition(":")[0]
    return host.strip("[]") or ctx.peer


def authorize(ctx: Any, operation: int, resource_type: int, name: str) -> bool:
    principal = ctx.principal
    host = client_host(ctx)
    if ctx.broker.authorizer.allowed(principal, host, operation, resource_type, name):
        return True
    from ..handlers import HANDLERS

    spec = HANDLERS.get(ctx.api_key)
    deny_line(principal, host, operation, resource_type, name, spec.name if spec else str(ctx.api_key))
    return False
