"""Kafka's ACL model (AclAuthorizer / StandardAuthorizer semantics), kept in security/acls.json.

An ACL binding: a resource pattern (resource type, name, LITERAL or PREFIXED) and an entry
(principal "User:NAME" or "User:*", host or "*", operation, ALLOW or DENY). A request is allowed
when the principal is a super user (super.users), or when no DENY binding matches and an ALLOW
binding does; a resource no binding names at all is allowed only with
allow.everyone.if.no.acl.found. As in Kafka, an ALLOW of READ, WRITE, DELETE or ALTER implies
DESCRIBE, and ALTER_CONFIGS implies DESCRIBE_CONFIGS; ALL matches every operation; the literal
name "*" matches every resource of its type.

Codes are Kafka's wire enums (org.apache.kafka.common.{resource,acl}). Every denial is written to
the "ringlog.audit" logger in Kafka's authorizer log wording.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ..logging_setup import event

log = logging.getLogger("ringlog.audit")

# ResourceType
ANY_RESOURCE, TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN, USER = 1, 2, 3, 4, 5, 6, 7
RESOURCE_NAMES = {TOPIC: "Topic", GROUP: "Group", CLUSTER: "Cluster", TRANSACTIONAL_ID: "TransactionalId",
                  DELEGATION_TOKEN: "DelegationToken", USER: "User"}
# PatternType
ANY_PATTERN, MATCH, LITERAL, PREFIXED = 1, 2, 3, 4
PATTERN_NAMES = {LITERAL: "LITERAL", PREFIXED: "PREFIXED"}
# AclOperation
ANY_OP, ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = 1, 2, 3, 4, 5, 6, 7, 8
CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, CREATE_TOKENS, DESCRIBE_TOKENS = 9, 10, 11, 12, 13, 14
OPERATION_NAMES = {ALL: "All", READ: "Read", WRITE: "Write", CREATE: "Create", DELETE: "Delete", ALTER: "Alter",
                   DESCRIBE: "Describe", CLUSTER_ACTION: "ClusterAction", DESCRIBE_CONFIGS: "DescribeConfigs",
                   ALTER_CONFIGS: "AlterConfigs", IDEMPOTENT_WRITE: "IdempotentWrite",
                   CREATE_TOKENS: "CreateTokens", DESCRIBE_TOKENS: "DescribeTokens"}
# AclPermissionType
ANY_PERMISSION, DENY, ALLOW = 1, 2, 3
PERMISSION_NAMES = {DENY: "Deny", ALLOW: "Allow"}
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"

# An ALLOW of the key implies these too (Kafka's AclAuthorizer)
_IMPLIED = {DESCRIBE: (DESCRIBE, READ, WRITE, DELETE, ALTER), DESCRIBE_CONFIGS: (DESCRIBE_CONFIGS, ALTER_CONFIGS)}


def by_name(table: dict[int, str], text: str, what: str) -> int:
    """Kafka's enum names in any case and with or without underscores ("transactional-id" too)."""
    wanted = text.replace("_", "").replace("-", "").lower()
    for code, name in table.items():
        if name.lower() == wanted:
            return code
    raise ValueError(f"unknown {what} {text!r} (expected one of {', '.join(table.values())})")


@attrs.frozen
class Acl:
    resource_type: int
    name: str
    pattern: int          # LITERAL or PREFIXED
    principal: str
    host: str
    operation: int
    permission: int

    def to_json(self) -> dict[str, Any]:
        return {"resource_type": RESOURCE_NAMES[self.resource_type], "name": self.name,
                "pattern": PATTERN_NAMES[self.pattern], "principal": self.principal, "host": self.host,
                "operation": OPERATION_NAMES[self.operation], "permission": PERMISSION_NAMES[self.permission]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Acl:
        return cls(by_name(RESOURCE_NAMES, d["resource_type"], "resource type"), d["name"],
                   by_name(PATTERN_NAMES, d["pattern"], "pattern type"), d["principal"], d["host"],
                   by_name(OPERATION_NAMES, d["operation"], "operation"),
                   by_name(PERMISSION_NAMES, d["permission"], "permission"))

    def describe(self) -> str:
        return (f"(principal={self.principal}, host={self.host}, operation={OPERATION_NAMES[self.operation]}, "
                f"permissionType={PERMISSION_NAMES[self.permission]}) on "
                f"{RESOURCE_NAMES[self.resource_type]}:{PATTERN_NAMES[self.pattern]}:{self.name}")


def invalid_reason(acl: Acl) -> str | None:
    """Why Kafka's CreateAcls would refuse this binding (INVALID_REQUEST), or None."""
    if acl.resource_type not in RESOURCE_NAMES:
        return "the resource type must be one of " + ", ".join(RESOURCE_NAMES.values())
    if acl.pattern not in PATTERN_NAMES:
        return "the pattern type must be LITERAL or PREFIXED"
    if acl.operation not in OPERATION_NAMES:
        return "the operation must be a specific one (not ANY or UNKNOWN)"
    if acl.permission not in PERMISSION_NAMES:
        return "the permission must be ALLOW or DENY"
    if not acl.name:
        return "the resource name must not be empty"
    if acl.resource_type == CLUSTER and acl.name != CLUSTER_NAME:
        return f"the cluster resource is named {CLUSTER_NAME}"
    if acl.pattern == PREFIXED and acl.name == WILDCARD:
        return "a PREFIXED pattern cannot be the wildcard *"
    kind, sep, _ = acl.principal.partition(":")
    if not sep or not kind:
        return f"principal {acl.principal!r} is not TYPE:NAME"
    if not acl.host:
        return "the host must not be empty (* for every host)"
    return None


@attrs.frozen
class AclFilter:
    """DescribeAcls / DeleteAcls filter: None for "any" in each field; `pattern` ANY, MATCH (the
    bindings that would apply to the literal `name`), LITERAL or PREFIXED."""

    resource_type: int = ANY_RESOURCE
    name: str | None = None
    pattern: int = ANY_PATTERN
    principal: str | None = None
    host: str | None = None
    operation: int = ANY_OP
    permission: int = ANY_PERMISSION

    def matches(self, acl: Acl) -> bool:
        if self.resource_type != ANY_RESOURCE and acl.resource_type != self.resource_type:
            return False
        if self.pattern == MATCH:
            if self.name is not None and not _applies(acl, self.name):
                return False
        else:
            if self.pattern != ANY_PATTERN and acl.pattern != self.pattern:
                return False
            if self.name is not None and acl.name != self.name:
                return False
        if self.principal is not None and acl.principal != self.principal:
            return False
        if self.host is not None and acl.host != self.host:
            return False
        if self.operation != ANY_OP and acl.operation != self.operation:
            return False
        return self.permission == ANY_PERMISSION or acl.permission == self.permission


def _applies(acl: Acl, name: str) -> bool:
    if acl.pattern == LITERAL:
        return acl.name == name or acl.name == WILDCARD
    return name.startswith(acl.name)


class Authorizer:
    """The bindings, indexed by resource type; decisions are cached until the bindings change."""

    CACHE_MAX = 100_000

    def __init__(self, acls: Iterable[Acl] = (), super_users: Iterable[str] = (),
                 allow_if_no_acl: bool = False) -> None:
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self.acls: list[Acl] = []
        self._cache: dict[tuple, bool] = {}
        self.replace(acls)

    def replace(self, acls: Iterable[Acl]) -> None:
        self.acls = list(dict.fromkeys(acls))
        self._by_type: dict[int, list[Acl]] = {}
        # literal bindings by (type, name) and prefixed ones by type: a decision looks at the
        # bindings that can apply, not at every binding of the type
        self._literal: dict[tuple[int, str], list[Acl]] = {}
        self._prefixed: dict[int, list[Acl]] = {}
        for acl in self.acls:
            self._by_type.setdefault(acl.resource_type, []).append(acl)
            if acl.pattern == LITERAL:
                self._literal.setdefault((acl.resource_type, acl.name), []).append(acl)
            else:
                self._prefixed.setdefault(acl.resource_type, []).append(acl)
        self._cache.clear()

    def add(self, acls: Iterable[Acl]) -> None:
        self.replace([*self.acls, *acls])

    def remove(self, filters: Iterable[AclFilter]) -> list[list[Acl]]:
        """The bindings each filter matched (and removed)."""
        filters = list(filters)
        matched = [[a for a in self.acls if f.matches(a)] for f in filters]
        gone = {a for group in matched for a in group}
        self.replace([a for a in self.acls if a not in gone])
        return matched

    def describe(self, f: AclFilter) -> list[Acl]:
        return [a for a in self.acls if f.matches(a)]

    def matching(self, resource_type: int, name: str) -> Iterator[Acl]:
        yield from self._literal.get((resource_type, name), ())
        if name != WILDCARD:
            yield from self._literal.get((resource_type, WILDCARD), ())
        for acl in self._prefixed.get(resource_type, ()):
            if name.startswith(acl.name):
                yield acl

    def allowed(self, principal: str, host: str, operation: int, resource_type: int, name: str) -> bool:
        key = (principal, host, operation, resource_type, name)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        result = self._decide(principal, host, operation, resource_type, name)
        if len(self._cache) >= self.CACHE_MAX:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _decide(self, principal: str, host: str, operation: int, resource_type: int, name: str) -> bool:
        if principal in self.super_users:
            return True
        acls = list(self.matching(resource_type, name))
        if not acls:
            return self.allow_if_no_acl
        principals = (principal, "User:*")
        hosts = (host, WILDCARD)

        def entry(a: Acl) -> bool:
            return a.principal in principals and a.host in hosts

        if any(a.permission == DENY and entry(a) and a.operation in (operation, ALL) for a in acls):
            return False
        implied = _IMPLIED.get(operation, (operation,))
        return any(a.permission == ALLOW and entry(a) and (a.operation == ALL or a.operation in implied)
                   for a in acls)

    def allowed_any(self, principal: str, host: str, operation: int, resource_type: int) -> bool:
        """Whether some resource of this type may be acted on (Kafka's authorizeByResourceType,
        used by InitProducerId for idempotent producers): a super user, or an ALLOW binding for
        the principal with no DENY of the wildcard or of every prefix."""
        if principal in self.super_users:
            return True
        principals = (principal, "User:*")
        hosts = (host, WILDCARD)
        acls = [a for a in self._by_type.get(resource_type, ()) if a.principal in principals and a.host in hosts]
        implied = _IMPLIED.get(operation, (operation,))
        if any(a.permission == DENY and a.operation in (operation, ALL) and a.pattern == LITERAL
               and a.name == WILDCARD for a in acls):
            return False
        return any(a.permission == ALLOW and (a.operation == ALL or a.operation in implied) for a in acls)


def deny_line(principal: str, host: str, operation: int, resource_type: int, name: str, api: str) -> None:
    """The audit line of one denial (Kafka's authorizer log wording)."""
    log.info("Principal = %s is Denied Operation = %s from host = %s on resource = %s:LITERAL:%s for request = %s",
             principal, OPERATION_NAMES.get(operation, operation), host, RESOURCE_NAMES.get(resource_type, resource_type),
             name, api, extra=event("authorization_denied", principal=principal, host=host, api=api, resource=name,
                                    operation=OPERATION_NAMES.get(operation, str(operation)),
                                    resource_type=RESOURCE_NAMES.get(resource_type, str(resource_type))))
