"""The broker's security state: listeners, TLS contexts, credentials, the authorizer, and the
delay of failed authentications. Built once at start-up (`SecurityState.open`, in a worker thread:
it reads files), reached by handlers as `ctx.broker.security`.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from .authorizer import Acl, Authorizer
from .listeners import ListenerSpec, parse_listeners
from .principal_rules import parse_rules
from .store import ACLS, QUOTAS, Credentials, StoreError, read_json, write_json
from .tls import TlsContexts

log = logging.getLogger("ringlog.security")

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Failures from one address within this long of each other count together
FAILURE_WINDOW_S = 60.0
FAILURE_DELAY_MAX_S = 5.0
_FAILURE_ENTRIES_MAX = 10_000


def listener_specs(config: Any) -> list[ListenerSpec]:
    """The configured listeners; `listen` (one PLAINTEXT listener) when `listeners` is not set."""
    if config.listeners:
        return parse_listeners(config.listeners, config.advertised_listeners, config.listener_security_protocol_map)
    advertised_host = config.advertised_host
    return [ListenerSpec("PLAINTEXT", "PLAINTEXT", config.listen_host, config.listen_port,
                         advertised_host, config.advertised_port if advertised_host else None)]


class FailureDelay:
    """connection.failed.authentication.delay.ms, doubled for each recent failure from the same
    client address (up to 5 s): a password guesser on one address slows down quickly, a user
    who mistyped once waits Kafka's 100 ms."""

    def __init__(self, base_ms: int) -> None:
        self.base_s = base_ms / 1000
        self._recent: dict[str, tuple[int, float]] = {}

    def record(self, address: str) -> float:
        """Count a failure; the seconds to wait before answering it."""
        now = time.monotonic()
        count, last = self._recent.get(address, (0, now))
        count = count + 1 if now - last < FAILURE_WINDOW_S else 1
        if len(self._recent) >= _FAILURE_ENTRIES_MAX:
            self._recent = {a: e for a, e in self._recent.items() if now - e[1] < FAILURE_WINDOW_S}
        self._recent[address] = (count, now)
        if self.base_s <= 0:
            return 0.0
        return min(FAILURE_DELAY_MAX_S, self.base_s * 2 ** min(count - 1, 16))


class SecurityState:
    def __init__(self, config: Any, listeners: list[ListenerSpec], credentials: Credentials,
                 tls: TlsContexts | None, authorizer: Authorizer | None,
                 quota_entities: dict | None = None) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.listeners = listeners
        self.mechanisms = tuple(m for m in config.sasl_enabled_mechanisms.split(",") if m)
        self.credentials = credentials
        self.tls = tls
        self.authorizer = authorizer
        self.max_reauth_ms = config.connections_max_reauth_ms
        self.max_token_bytes = config.sasl_server_max_receive_size
        self.failures = FailureDelay(config.connection_failed_authentication_delay_ms)
        # certificate subject -> principal name (checked when the config was read)
        self.principal_rules = parse_rules(config.ssl_principal_mapping_rules)
        # the client quota entities of quotas.json (broker.quotas), handed to broker.quotas at start
        self.quota_entities = quota_entities or {}
        self._save_lock = trio.Lock()
        # cluster mode: broker.cluster.security.SharedSecurity (the state lives in etcd), else None
        self.shared: Any = None

    @classmethod
    def open(cls, config: Any) -> SecurityState:
        """Blocking (reads the certificate and security files): at start-up, in a worker thread."""
        listeners = listener_specs(config)
        tls = TlsContexts(config) if any(s.tls for s in listeners) else None
        credentials = Credentials.load(config.data_dir)
        authorizer = None
        if config.authorizer_enabled:
            authorizer = Authorizer(load_acls(config.data_dir), super_users(config.super_users),
                                    config.allow_everyone_if_no_acl_found)
        return cls(config, listeners, credentials, tls, authorizer, load_quotas(config.data_dir))

    async def save_credentials(self) -> None:
        snapshot = self.credentials.snapshot()
        async with self._save_lock:
            await trio.to_thread.run_sync(self.credentials.save, self.data_dir, snapshot)

    async def save_quotas(self, snapshot: dict[str, Any]) -> None:
        """quotas.json from broker.quotas.ClientQuotas.snapshot(), in a worker thread."""
        async with self._save_lock:
            await trio.to_thread.run_sync(write_json, self.data_dir, QUOTAS, snapshot)

    # --- changes (single node: the files; cluster mode: etcd, broker.cluster.security) ---------

    async def change_acls(self, edit: Callable[[list[Acl]], tuple[list[Acl] | None, Any]]) -> Any:
        """`edit(bindings)` -> (the new bindings or None for no change, a result to return)."""
        assert self.authorizer is not None
        authorizer = self.authorizer
        if self.shared is not None:
            def document() -> tuple[Any, Any]:
                new, result = edit(list(authorizer.acls))
                return (acls_json(new) if new is not None else None), result
            return await self.shared.update("acls", document)
        new, result = edit(list(authorizer.acls))
        if new is not None:
            authorizer.replace(new)
            await self.save_acls()
        return result

    async def change_credentials(self, edit: Callable[[Credentials], tuple[bool, Any]]) -> Any:
        """`edit(credentials)` changes them in place -> (changed, a result to return)."""
        if self.shared is not None:
            def document() -> tuple[Any, Any]:
                draft = Credentials(copy.deepcopy(self.credentials.users))
                changed, result = edit(draft)
                return (draft.snapshot() if changed else None), result
            return await self.shared.update("credentials", document)
        changed, result = edit(self.credentials)
        if changed:
            await self.save_credentials()
        return result

    async def change_quotas(self, quotas: Any, edit: Callable[[Any], None]) -> None:
        """`edit(table)` alters a broker.quotas.ClientQuotas in place (the broker's, or a draft
        of it in cluster mode)."""
        if self.shared is not None:
            def document() -> tuple[Any, Any]:
                draft = type(quotas)()
                draft.load(quotas.entities)
                edit(draft)
                return draft.snapshot(), None
            await self.shared.update("quotas", document)
            return
        edit(quotas)
        await self.save_quotas(quotas.snapshot())

    async def save_acls(self) -> None:
        assert self.authorizer is not None
        snapshot = acls_json(self.authorizer.acls)
        async with self._save_lock:
            await trio.to_thread.run_sync(write_json, self.data_dir, ACLS, snapshot)


def super_users(value: str) -> list[str]:
    """Kafka's super.users: "User:alice;User:bob"."""
    return [u.strip() for u in value.split(";") if u.strip()]


def acls_json(acls: list[Acl]) -> dict[str, Any]:
    return {"version": 1, "acls": [a.to_json() for a in acls]}


def load_acls(data_dir: str) -> list[Acl]:
    data = read_json(data_dir, ACLS, {"acls": []})
    try:
        return [Acl.from_json(d) for d in data["acls"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{data_dir}/security/{ACLS}: a binding cannot be read: {exc}") from None


def load_quotas(data_dir: str) -> dict:
    from ..quotas import from_json

    data = read_json(data_dir, QUOTAS, {"version": 1, "quotas": []})
    try:
        return from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"{data_dir}/security/{QUOTAS}: a quota entry cannot be read: {exc}") from None


def config_problem(config: Any) -> str | None:
    """What is wrong with the security keys together (one line), or None."""
    from .listeners import ListenerError

    try:
        listeners = listener_specs(config)
    except ListenerError as exc:
        return str(exc)
    if any(s.tls for s in listeners) and not config.ssl_certificate_location:
        names = ", ".join(s.name for s in listeners if s.tls)
        return f"listener {names} uses TLS and needs ssl.certificate.location (the broker's PEM certificate)"
    if any(s.sasl for s in listeners) and not config.sasl_enabled_mechanisms:
        return "a SASL listener needs at least one of sasl.enabled.mechanisms"
    if config.ssl_client_auth != "none" and not config.ssl_ca_location:
        return f"ssl.client.auth={config.ssl_client_auth} needs ssl.ca.location (the CAs of client certificates)"
    return None
