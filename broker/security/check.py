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


def authorize(ctx: Any, operation: int, resource_type: int, name: str, audit: bool = True) -> bool:
    principal = ctx.principal
    host = client_host(ctx)
    if ctx.broker.authorizer.allowed(principal, host, operation, resource_type, name):
        return True
    if not audit:
        return False
    from ..handlers import HANDLERS

    spec = HANDLERS.get(ctx.api_key)
    api = "".join(w.capitalize() for w in spec.name.split("_")) if spec else str(ctx.api_key)
    deny_line(principal, host, operation, resource_type, name, api)
    return False


def error_code(resource_type: int):
    """Kafka's *_AUTHORIZATION_FAILED code of a resource type."""
    from kio.schema.errors import ErrorCode

    from .authorizer import GROUP, TOPIC, TRANSACTIONAL_ID

    return {TOPIC: ErrorCode.topic_authorization_failed, GROUP: ErrorCode.group_authorization_failed,
            TRANSACTIONAL_ID: ErrorCode.transactional_id_authorization_failed}.get(
                resource_type, ErrorCode.cluster_authorization_failed)


def denial(resource_type: int, name: str):
    """The KafkaError of a denied resource, with Kafka's message."""
    from ..errors import KafkaError
    from .authorizer import CLUSTER, GROUP, TOPIC, TRANSACTIONAL_ID

    text = {TOPIC: "Topic authorization failed.", GROUP: f"Not authorized to access group: {name}",
            TRANSACTIONAL_ID: "Transactional Id authorization failed.",
            CLUSTER: "Cluster authorization failed."}.get(resource_type, "Authorization failed.")
    return KafkaError(error_code(resource_type), text)


def may_create_topic(ctx: Any, name: str) -> bool:
    from .authorizer import CLUSTER, CLUSTER_NAME, CREATE, TOPIC

    authorizer = ctx.broker.authorizer
    if authorizer.allowed(ctx.principal, client_host(ctx), CREATE, CLUSTER, CLUSTER_NAME):
        return True
    return authorize(ctx, CREATE, TOPIC, name)


def may_write_idempotently(ctx: Any) -> bool:
    from .authorizer import CLUSTER, CLUSTER_NAME, IDEMPOTENT_WRITE, TOPIC, WRITE

    authorizer = ctx.broker.authorizer
    host = client_host(ctx)
    if authorizer.allowed(ctx.principal, host, IDEMPOTENT_WRITE, CLUSTER, CLUSTER_NAME):
        return True
    if authorizer.allowed_any(ctx.principal, host, WRITE, TOPIC):
        return True
    return authorize(ctx, IDEMPOTENT_WRITE, CLUSTER, CLUSTER_NAME)


# DescribeConfigs / AlterConfigs resource types (ConfigResource.Type)
_CONFIG_TOPIC, _CONFIG_BROKER = 2, 4


def config_resource(config_type: int, name: str) -> tuple[int, str]:
    """The ACL resource of a config resource: the topic, or the cluster for a broker's configs."""
    from .authorizer import CLUSTER, CLUSTER_NAME, TOPIC

    return (TOPIC, name) if config_type == _CONFIG_TOPIC else (CLUSTER, CLUSTER_NAME)
