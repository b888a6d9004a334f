"""Fixtures of the security tests: a CA with a server and a client certificate, users with
passwords, and brokers with SSL, SASL_PLAINTEXT and SASL_SSL listeners."""
from __future__ import annotations

import attrs
import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.security.store import Credentials
from ringlog.broker.testing import BrokerThread

from .certs import CA

USER, PASSWORD = "alice", "alice-secret"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@attrs.frozen
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str      # a CA that signed nothing the broker uses
    rogue_cert: str    # a client certificate from other_ca
    rogue_key: str


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CA.create(d)
    server_cert, server_key = ca.issue(d, "broker")
    client_cert, client_key = ca.issue(d, "client-app", server=False)
    other = CA.create(d, "other-ca")
    rogue_cert, rogue_key = other.issue(d, "rogue", server=False)
    return Pki(ca.path, server_cert, server_key, client_cert, client_key, other.path, rogue_cert, rogue_key)


def add_users(data_dir: str, users: dict[str, str], iterations: int = 4096) -> None:
    creds = Credentials.load(data_dir)
    for user, password in users.items():
        for mechanism in MECHANISMS:
            creds.add_password(user, mechanism, password, iterations)
    creds.save(data_dir)


def secured_config(data_dir: str, pki: Pki, **more) -> BrokerConfig:
    """Four listeners (one per protocol) on port 0; every mechanism; no failure delay (the tests
    fail on purpose, from one address)."""
    return BrokerConfig(
        data_dir=data_dir,
        listeners="PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
        ssl_certificate_location=pki.server_cert, ssl_key_location=pki.server_key, ssl_ca_location=pki.ca,
        sasl_enabled_mechanisms=",".join(MECHANISMS), connection_failed_authentication_delay_ms=0, **more)


def address(broker: BrokerThread, name: str) -> str:
    spec = next(s for s in broker.broker.listeners if s.name == name)
    return f"{spec.advertised_host}:{spec.advertised_port}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory, pki):
    """One broker with all four listeners and the user alice, shared by a module's tests."""
    data_dir = str(tmp_path_factory.mktemp("secured") / "data")
    import os

    os.makedirs(data_dir)
    add_users(data_dir, {USER: PASSWORD})
    with BrokerThread(secured_config(data_dir, pki, ssl_client_auth="requested")) as b:
        yield b
