"""kcat, confluent-kafka, kafka-python and aiokafka over SSL, SASL_PLAINTEXT and SASL_SSL with
PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512: records go round, wrong passwords and untrusted
certificates are refused with the clients' usual errors."""
from __future__ import annotations

import itertools
import logging
import ssl

import pytest

from tests.conftest import require_tool

from . import clients
from .conftest import MECHANISMS, PASSWORD, USER, address

CASES = [("SSL", None)] + [(p, m) for p in ("SASL_PLAINTEXT", "SASL_SSL") for m in MECHANISMS]
_topics = itertools.count()


def _topic(client: str, protocol: str, mechanism: str | None) -> str:
    return f"rt-{client}-{protocol}-{mechanism or 'none'}-{next(_topics)}".lower()


PYTHON_CLIENTS = {
    "confluent": (clients.confluent_settings, clients.confluent_round_trip),
    "kafka-python": (clients.kafka_python_settings, clients.kafka_python_round_trip),
    "aiokafka": (clients.aiokafka_settings, clients.aiokafka_round_trip),
}


@pytest.mark.parametrize("client", PYTHON_CLIENTS)
@pytest.mark.parametrize("protocol,mechanism", CASES)
def test_python_client_round_trip(secured, pki, client, protocol, mechanism):
    make_settings, round_trip = PYTHON_CLIENTS[client]
    settings = make_settings(protocol, pki, mechanism, USER, PASSWORD)
    got = round_trip(address(secured, protocol), _topic(client, protocol, mechanism), settings)
    assert got == clients.RECORDS


@pytest.mark.parametrize("protocol,mechanism", CASES)
def test_kcat_round_trip(secured, pki, protocol, mechanism):
    binary = require_tool("kcat")
    args = clients.kcat_args(protocol, pki, mechanism, USER, PASSWORD)
    got = clients.kcat_round_trip(binary, address(secured, protocol), _topic("kc", protocol, mechanism), args)
    assert got == clients.RECORDS


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password_confluent(secured, pki, mechanism):
    settings = clients.confluent_settings("SASL_PLAINTEXT", pki, mechanism, USER, "not-the-password")
    error = clients.confluent_auth_error(address(secured, "SASL_PLAINTEXT"), settings)
    assert "Authentication failed" in error
    expected = ("Invalid username or password" if mechanism == "PLAIN"
                else f"invalid credentials with SASL mechanism {mechanism}")
    assert expected in error


def test_unknown_user_looks_like_a_wrong_password(secured, pki):
    settings = clients.confluent_settings("SASL_PLAINTEXT", pki, "SCRAM-SHA-256", "mallory", PASSWORD)
    error = clients.confluent_auth_error(address(secured, "SASL_PLAINTEXT"), settings)
    assert "invalid credentials with SASL mechanism SCRAM-SHA-256" in error


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_wrong_password_kafka_python(secured, pki, mechanism, caplog):
    """kafka-python logs the broker's SaslAuthenticationFailedError on each try and gives up
    bootstrapping when bootstrap_timeout_ms runs out."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    settings = clients.kafka_python_settings("SASL_PLAINTEXT", pki, mechanism, USER, "nope")
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=address(secured, "SASL_PLAINTEXT"), max_block_ms=6000, bootstrap_timeout_ms=6000,
                      **settings)
    assert "SaslAuthenticationFailedError" in caplog.text
    assert "Authentication failed" in caplog.text


def test_wrong_password_aiokafka(secured, pki, caplog):
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    settings = clients.aiokafka_settings("SASL_SSL", pki, "SCRAM-SHA-256", USER, "nope")

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=address(secured, "SASL_SSL"), **settings)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(KafkaError):
        asyncio.run(run())
    # aiokafka logs the broker's answer and gives up bootstrapping
    assert "Authentication failed during authentication due to invalid credentials" in caplog.text


def test_untrusted_broker_certificate_is_refused(secured, pki):
    settings = clients.confluent_settings("SSL", pki, None, USER, PASSWORD)
    settings["ssl.ca.location"] = pki.other_ca
    error = clients.confluent_auth_error(address(secured, "SSL"), settings)
    assert "certificate verify failed" in error or "SSL handshake failed" in error


def test_untrusted_client_certificate_is_refused(tmp_path, pki, caplog):
    """ssl.client.auth=required: a client certificate from another CA, or none, fails the handshake
    (the broker logs it); one from ssl.ca.location gets through."""
    import socket

    from ringlog.broker.testing import BrokerThread

    from .conftest import secured_config

    caplog.set_level(logging.INFO, logger="ringlog.security")
    config = secured_config(str(tmp_path / "data"), pki, ssl_client_auth="required")
    with BrokerThread(config) as b:
        bootstrap = address(b, "SSL")
        good = clients.confluent_settings("SSL", pki, None, USER, PASSWORD)
        good.update({"ssl.certificate.location": pki.client_cert, "ssl.key.location": pki.client_key})
        assert clients.confluent_round_trip(bootstrap, "mtls", good) == clients.RECORDS
        assert "SSL handshake failed" not in caplog.text
        rogue = dict(good, **{"ssl.certificate.location": pki.rogue_cert, "ssl.key.location": pki.rogue_key})
        error = clients.confluent_auth_error(bootstrap, rogue, timeout=3)
        assert "brokers are down" in error or "SSL" in error, error
        assert "SSL handshake failed" in caplog.text
        host, port = bootstrap.split(":")
        context = ssl.create_default_context(cafile=pki.ca)  # no client certificate at all
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"\x00\x00\x00\x01")
                    if tls.recv(1) == b"":  # TLS 1.3 reports the refusal on the first read
                        raise ConnectionError("closed by the broker")
