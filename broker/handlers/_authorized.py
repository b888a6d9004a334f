"""Authorized-operations bit fields (KIP-430), for the answers that carry them when asked.

Metadata (include_cluster/topic_authorized_operations), DescribeCluster
(include_cluster_authorized_operations) and DescribeGroups (include_authorized_operations) return
a 32-bit field with bit N set when AclOperation code N is allowed. ringlog has no authorizer, and a
Kafka broker without one reports every operation the resource type supports
(AuthHelper.authorizedOperations -> AclEntry.supportedOperations). An empty field would tell
clients such as the Java AdminClient that nothing at all is allowed. Not asked: Kafka's
"omitted" value, INT32_MIN.
"""
from __future__ import annotations

OMITTED = -(2**31)

# AclOperation codes (org.apache.kafka.common.acl.AclOperation)
READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = 3, 4, 5, 6, 7, 8
CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = 9, 10, 11, 12


def _bits(*operations: int) -> int:
    return sum(1 << op for op in operations)


TOPIC = _bits(READ, WRITE, CREATE, DESCRIBE, DELETE, ALTER, DESCRIBE_CONFIGS, ALTER_CONFIGS)
GROUP = _bits(READ, DESCRIBE, DELETE, DESCRIBE_CONFIGS, ALTER_CONFIGS)
CLUSTER = _bits(CREATE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALTER, DESCRIBE)


def authorized(request: object, flag: str, every: int) -> int:
    """`every` when the request's boolean field `flag` asks for the operations, else OMITTED."""
    return every if getattr(request, flag, False) else OMITTED
