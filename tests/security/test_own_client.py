"""ringlog's own client (client/) and CLI against secured listeners: records go round over SSL,
SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and SASL_SSL; a wrong password is
SASL_AUTHENTICATION_FAILED at once; an untrusted broker certificate, or a client certificate the
broker does not trust, is an SslAuthenticationError; a session lifetime (KIP-368) is renewed on
the same connection; the CLI takes --command-config and -X."""
from __future__ import annotations

import itertools
import os

import attrs

import pytest
import trio

from ringlog.broker.testing import BrokerThread
from ringlog.client import Admin, Consumer, NewTopic, Producer
from ringlog.client.errors import (
    IllegalSaslStateError,
    InvalidClientConfig,
    SaslAuthenticationFailedError,
    SslAuthenticationError,
    UnsupportedSaslMechanismError,
)
from ringlog.client.security import ScramClient
from tests.cli.conftest import json_lines, ok, one_error_line, ringlog

from .conftest import MECHANISMS, PASSWORD, USER, add_users, address, secured_config

CASES = [("SSL", None)] + [(p, m) for p in ("SASL_PLAINTEXT", "SASL_SSL") for m in MECHANISMS]
RECORDS = [f"record-{i}".encode() for i in range(5)]
_topics = itertools.count()


def _options(protocol: str, pki, mechanism: str | None = None, password: str = PASSWORD, **more) -> dict:
    options: dict = {"security_protocol": protocol}
    if "SSL" in protocol:
        options["ssl_ca_location"] = pki.ca
    if mechanism:
        options.update(sasl_mechanism=mechanism, sasl_username=USER, sasl_password=password)
    return {**options, **more}


async def _round_trip(bootstrap: str, topic: str, options: dict) -> list[bytes]:
    with trio.fail_after(15):
        async with Admin(bootstrap, **options) as admin:
            await admin.create_topics([NewTopic(topic, 1)])
        async with Producer(bootstrap, linger_ms=0, **options) as producer:
            for value in RECORDS:
                await producer.send(topic, value)
        async with Consumer(bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100, **options) as consumer:
            consumer.assign([(topic, 0)])
            return [(await consumer.getone()).value for _ in RECORDS]


@pytest.mark.parametrize("protocol,mechanism", CASES)
async def test_round_trip(secured, pki, protocol, mechanism):
    topic = f"own-{protocol}-{mechanism or 'none'}-{next(_topics)}".lower()
    got = await _round_trip(address(secured, protocol), topic, _options(protocol, pki, mechanism))
    assert got == RECORDS


async def test_client_certificate_and_no_hostname_check(secured, pki):
    options = _options("SSL", pki, ssl_certificate_location=pki.client_cert, ssl_key_location=pki.client_key,
                       ssl_endpoint_identification_algorithm="none")
    # "localhost" is named by the certificate; the check is off anyway, the chain still counts
    bootstrap = address(secured, "SSL").replace("127.0.0.1", "localhost")
    assert await _round_trip(bootstrap, f"own-cert-{next(_topics)}", options) == RECORDS


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_wrong_password_fails_at_once(secured, pki, mechanism):
    start = trio.current_time()
    with pytest.raises(SaslAuthenticationFailedError) as info:
        async with Producer(address(secured, "SASL_PLAINTEXT"), **_options("SASL_PLAINTEXT", pki, mechanism, "wrong")):
            pass
    assert info.value.code == 58 and not info.value.retriable
    assert ("Invalid username or password" if mechanism == "PLAIN"
            else f"invalid credentials with SASL mechanism {mechanism}") in str(info.value)
    assert trio.current_time() - start < 3  # one attempt, not retries until a timeout


async def test_untrusted_broker_certificate(secured, pki):
    with pytest.raises(SslAuthenticationError, match="certificate is not trusted"):
        async with Consumer(address(secured, "SASL_SSL"),
                            **_options("SASL_SSL", pki, "PLAIN", ssl_ca_location=pki.other_ca)):
            pass


async def test_untrusted_client_certificate(secured, pki):
    # the broker asks for certificates (ssl.client.auth=requested) and checks the ones it gets
    options = _options("SSL", pki, ssl_certificate_location=pki.rogue_cert, ssl_key_location=pki.rogue_key)
    with trio.fail_after(10), pytest.raises(SslAuthenticationError, match="TLS with 127.0.0.1"):
        async with Admin(address(secured, "SSL"), **options):
            pass


@pytest.fixture(scope="module")
def limited(tmp_path_factory, pki):
    """A broker whose SASL sessions last 1 s (connections.max.reauth.ms) and that does not
    enable PLAIN."""
    data_dir = str(tmp_path_factory.mktemp("limited") / "data")
    os.makedirs(data_dir)
    add_users(data_dir, {USER: PASSWORD, "bob": "bob-secret"})
    config = attrs.evolve(secured_config(data_dir, pki), sasl_enabled_mechanisms="SCRAM-SHA-256,SCRAM-SHA-512",
                          connections_max_reauth_ms=1000)
    with BrokerThread(config) as broker:
        yield broker


async def test_sasl_against_the_wrong_listener_or_mechanism(limited, pki):
    with pytest.raises(IllegalSaslStateError):
        async with Admin(address(limited, "PLAINTEXT"), **_options("SASL_PLAINTEXT", pki, "SCRAM-SHA-256")):
            pass
    with pytest.raises(UnsupportedSaslMechanismError, match="it enables: SCRAM-SHA-256, SCRAM-SHA-512"):
        async with Admin(address(limited, "SASL_PLAINTEXT"), **_options("SASL_PLAINTEXT", pki, "PLAIN")):
            pass


async def test_session_lifetime_is_renewed(limited, pki):
    """Sessions of 1 s, used for 2.4 s by a producer and by a consumer whose long-poll fetches
    (500 ms) are in flight when re-authentication starts: no connection is lost."""
    bootstrap = address(limited, "SASL_SSL")
    options = _options("SASL_SSL", pki, "SCRAM-SHA-256")
    topic = "own-reauth"
    got: list[bytes] = []
    with trio.fail_after(15):
        async with Admin(bootstrap, **options) as admin:
            await admin.create_topics([NewTopic(topic, 1)])
        async with Producer(bootstrap, linger_ms=0, **options) as producer, \
                Consumer(bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=500, **options) as consumer:
            consumer.assign([(topic, 0)])
            for i in range(12):
                await producer.send_and_wait(topic, b"%d" % i)
                got.append((await consumer.getone()).value)
                await trio.sleep(0.2)
            for client in (producer, consumer):
                conns = list(client.cluster._conns.values())
                # without re-authentication the broker closes a connection on its first request
                # after the session ended, and the client would reconnect (a new Connection)
                assert conns and all(c.session_lifetime_ms == 1000 and not c.is_closed for c in conns)
                assert max(c.reauthentications for c in conns) >= 2
    assert got == [b"%d" % i for i in range(12)]


async def test_password_changed_while_connected(limited, pki):
    """bob's password changes on the broker: the next re-authentication fails and closes the
    connection, and connecting again raises the refusal instead of retrying."""
    bootstrap = address(limited, "SASL_PLAINTEXT")
    options = dict(_options("SASL_PLAINTEXT", pki, "SCRAM-SHA-512"), sasl_username="bob", sasl_password="bob-secret")

    async def change_password():
        limited.broker.security.credentials.add_password("bob", "SCRAM-SHA-512", "changed", 4096)

    with trio.fail_after(10):
        async with Admin(bootstrap, **options) as admin:
            conns = [c for c in admin.cluster._conns.values() if not c.is_closed]
            assert conns
            await trio.to_thread.run_sync(limited.call, change_password)
            for conn in conns:
                await conn.closed.wait()  # within a session lifetime (1 s)
            assert all(c.reauthentications == 0 for c in conns)
            with pytest.raises(SaslAuthenticationFailedError):
                await admin.list_topics()


def test_scram_client_refuses_a_wrong_server_signature():
    client = ScramClient("SCRAM-SHA-256", USER, PASSWORD, nonce="abc")
    first = client.first()
    assert first == b"n,,n=alice,r=abc"
    salt, iterations = client.server_first(b"r=abcdef,s=c2FsdA==,i=4096")
    client.final(client.salted_password(salt, iterations))
    with pytest.raises(SaslAuthenticationFailedError, match="Invalid server signature"):
        client.verify(b"v=" + b"A" * 44)
    with pytest.raises(SaslAuthenticationFailedError, match="does not start with client nonce"):
        ScramClient("SCRAM-SHA-256", USER, PASSWORD, nonce="abc").server_first(b"r=xyz,s=c2FsdA==,i=4096")
    with pytest.raises(SaslAuthenticationFailedError, match="less than the minimum"):
        ScramClient("SCRAM-SHA-256", USER, PASSWORD, nonce="abc").server_first(b"r=abcd,s=c2FsdA==,i=1")


def test_bad_options_fail_when_the_client_is_built(pki):
    with pytest.raises(InvalidClientConfig, match="security.protocol"):
        Producer("127.0.0.1:1", security_protocol="TLS")
    with pytest.raises(InvalidClientConfig, match="sasl.mechanism"):
        Consumer("127.0.0.1:1", **_options("SASL_SSL", pki, "GSSAPI"))
    with pytest.raises(TypeError, match="sasl_passwd"):
        Admin("127.0.0.1:1", sasl_passwd="x")


# --- the CLI --------------------------------------------------------------------------------


def test_cli_produce_consume_over_sasl_ssl(secured, pki, tmp_path):
    config = tmp_path / "client.properties"
    config.write_text(
        "# SASL_SSL with SCRAM\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism = SCRAM-SHA-512\n"
        f"ssl.ca.location: {pki.ca}\n"
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n'
        f'    username="{USER}" password="{PASSWORD}";\n')
    bootstrap = address(secured, "SASL_SSL")
    common = ["--bootstrap", bootstrap, "--command-config", config]
    ok(ringlog("topics", "create", "own-cli", "--partitions", "1", *common))
    ok(ringlog("produce", "own-cli", *common, input="one\ntwo\nthree\n"))
    # -X after the file: kcat's style, and the later setting wins
    out = ok(ringlog("consume", "own-cli", "--from", "beginning", "--max", "3", "--json", *common,
                     "-X", "sasl.mechanism=SCRAM-SHA-256")).stdout
    assert [r["value"] for r in json_lines(out)] == ["one", "two", "three"]
    # a wrong password: the broker's refusal in one line
    line = one_error_line(ringlog("topics", "list", *common, "-X", "sasl.password=nope"), 1)
    assert "SASL_AUTHENTICATION_FAILED" in line and "invalid credentials" in line


def test_cli_bad_command_config(tmp_path, secured):
    config = tmp_path / "bad.properties"
    config.write_text("security.protocol=SASL_SSL\nsasl.mechanism\n")
    line = one_error_line(ringlog("topics", "list", "-b", address(secured, "SASL_SSL"), "--command-config", config), 2)
    assert line == f"ringlog topics list: --command-config {config} line 2: expected KEY=VALUE, got 'sasl.mechanism'"
    one_error_line(ringlog("produce", "t", "--command-config", tmp_path / "missing"), 2,
                   f"ringlog produce: --command-config {tmp_path / 'missing'}: No such file or directory")
    line = one_error_line(ringlog("groups", "list", "-X", "security.protocol=TLS"), 2)
    assert "security.protocol: 'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" in line
    line = one_error_line(ringlog("cluster", "status", "-X", "sasl.mechansim=PLAIN"), 2)
    assert "unknown property 'sasl.mechansim'" in line
