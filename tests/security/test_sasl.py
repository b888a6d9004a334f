"""The SASL exchange on the wire: the pre-authentication gate, Kafka's errors and the closed
connection, the failure delay per address, session lifetime and re-authentication (KIP-368), the
listener protocols' Metadata addresses, and a fuzz of the tokens that never crashes the broker
nor authenticates."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.request import MetadataRequest
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from tests.broker.conftest import RawClient

from .conftest import PASSWORD, USER, add_users

METADATA_ALL = MetadataRequest(topics=None, allow_auto_topic_creation=False,
                               include_topic_authorized_operations=False)


def _config(data_dir: str, **more) -> BrokerConfig:
    return BrokerConfig(data_dir=data_dir, listeners="PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
                        sasl_enabled_mechanisms="PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
                        **{"connection_failed_authentication_delay_ms": 0, **more})


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("sasl") / "data")
    os.makedirs(data_dir)
    add_users(data_dir, {USER: PASSWORD})
    with BrokerThread(_config(data_dir)) as b:
        yield b


def _client(broker, name: str = "SASL_PLAINTEXT") -> RawClient:
    spec = next(s for s in broker.broker.listeners if s.name == name)
    return RawClient(spec.advertised_host, spec.advertised_port)


def _auth(c: RawClient, token: bytes):
    return c.call(SaslAuthenticateRequest(auth_bytes=token))


def plain(c: RawClient, user: str = USER, password: str = PASSWORD):
    assert c.call(SaslHandshakeRequest(mechanism="PLAIN")).error_code == ErrorCode.none
    return _auth(c, f"\0{user}\0{password}".encode())


def scram(c: RawClient, mechanism: str = "SCRAM-SHA-256", password: str = PASSWORD):
    """A client side of RFC 5802, written out here so the test does not trust the broker's code."""
    h = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    assert c.call(SaslHandshakeRequest(mechanism=mechanism)).error_code == ErrorCode.none
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={USER},r={nonce}"
    reply = _auth(c, f"n,,{first_bare}".encode())
    assert reply.error_code == ErrorCode.none
    server_first = reply.auth_bytes.decode()
    attrs = dict(p.split("=", 1) for p in server_first.split(","))
    assert attrs["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac(h, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", h)
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.new(h, client_key).digest(), auth_message, h)
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    final = _auth(c, f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    if final.error_code == ErrorCode.none:
        server_key = hmac.digest(salted, b"Server Key", h)
        expected = base64.b64encode(hmac.digest(server_key, auth_message, h)).decode()
        assert final.auth_bytes.decode() == f"v={expected}"  # the broker proves it knows the key
    return final


def test_requests_before_authentication_close_the_connection(sasl_broker):
    c = _client(sasl_broker)
    c.send(METADATA_ALL)
    assert c.is_closed()


def test_plain_and_scram_authenticate_then_requests_are_served(sasl_broker):
    c = _client(sasl_broker)
    assert plain(c).error_code == ErrorCode.none
    assert c.call(METADATA_ALL).brokers[0].port == _client_port(sasl_broker, "SASL_PLAINTEXT")
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        c = _client(sasl_broker)
        assert scram(c, mechanism).error_code == ErrorCode.none
        assert c.call(METADATA_ALL).cluster_id == sasl_broker.broker.cluster_id


def _client_port(broker, name: str) -> int:
    return next(s.advertised_port for s in broker.broker.listeners if s.name == name)


def test_metadata_answers_the_listener_the_client_came_in_on(sasl_broker):
    c = _client(sasl_broker, "PLAINTEXT")
    assert c.call(METADATA_ALL).brokers[0].port == _client_port(sasl_broker, "PLAINTEXT")


@pytest.mark.parametrize("how", ["plain", "scram"])
def test_a_wrong_password_gets_kafkas_error_and_a_closed_connection(sasl_broker, how):
    c = _client(sasl_broker)
    reply = plain(c, password="wrong") if how == "plain" else scram(c, password="wrong")
    assert reply.error_code == ErrorCode.sasl_authentication_failed
    assert reply.error_message == ("Authentication failed: Invalid username or password" if how == "plain" else
                                   "Authentication failed during authentication due to invalid credentials with "
                                   "SASL mechanism SCRAM-SHA-256")
    assert c.is_closed()


def test_an_unknown_mechanism_is_refused_with_the_enabled_ones(sasl_broker):
    c = _client(sasl_broker)
    reply = c.call(SaslHandshakeRequest(mechanism="GSSAPI"))
    assert reply.error_code == ErrorCode.unsupported_sasl_mechanism
    assert set(reply.mechanisms) == {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
    assert c.is_closed()


def test_sasl_on_a_plaintext_listener_is_an_illegal_state(sasl_broker):
    c = _client(sasl_broker, "PLAINTEXT")
    assert c.call(SaslHandshakeRequest(mechanism="PLAIN")).error_code == ErrorCode.illegal_sasl_state


def test_failures_from_one_address_are_delayed_more_and_more(tmp_path):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    add_users(data_dir, {USER: PASSWORD})
    with BrokerThread(_config(data_dir, connection_failed_authentication_delay_ms=50)) as b:
        took = []
        for _ in range(4):
            c = _client(b)
            started = time.monotonic()
            assert plain(c, password="wrong").error_code == ErrorCode.sasl_authentication_failed
            took.append(time.monotonic() - started)
        # 50, 100, 200, 400 ms: each at least its delay
        assert all(t >= 0.05 * 2 ** i for i, t in enumerate(took)), took


def test_sessions_end_and_clients_reauthenticate(tmp_path):
    """connections.max.reauth.ms: told in session_lifetime_ms; after it a request closes the
    connection unless the client authenticated again on it (KIP-368), as librdkafka does."""
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    add_users(data_dir, {USER: PASSWORD})
    with BrokerThread(_config(data_dir, connections_max_reauth_ms=300)) as b:
        c = _client(b)
        reply = plain(c)
        assert reply.error_code == ErrorCode.none
        assert reply.session_lifetime.total_seconds() * 1000 == 300
        deadline = time.monotonic() + 0.1  # well inside the session, which began before plain() returned
        while time.monotonic() < deadline:
            c.call(METADATA_ALL)  # served while the session lasts
        assert plain(c).error_code == ErrorCode.none  # re-authentication on the same connection
        reauthenticated = time.monotonic()
        with pytest.raises(ConnectionError):  # served until the new session runs out, then closed
            while time.monotonic() - reauthenticated < 5:
                c.call(METADATA_ALL)
        assert 0.2 <= time.monotonic() - reauthenticated < 5
        # librdkafka re-authenticates by itself before the session ends
        from confluent_kafka import Producer

        spec = next(s for s in b.broker.listeners if s.name == "SASL_PLAINTEXT")
        p = Producer({"bootstrap.servers": f"127.0.0.1:{spec.advertised_port}", "security.protocol": "SASL_PLAINTEXT",
                      "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER, "sasl.password": PASSWORD})
        delivered = []
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            p.produce("reauth", b"x", on_delivery=lambda err, msg: delivered.append(err))
            p.flush(5)
        assert delivered and all(err is None for err in delivered)


@settings(max_examples=int(os.environ.get("RINGLOG_SASL_FUZZ", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mechanism=st.sampled_from(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
       tokens=st.lists(st.one_of(
           st.binary(max_size=64),
           st.sampled_from([b"n,,n=alice,r=abc", b"p=tls-unique,,n=alice,r=x", b"n,a=bob,n=alice,r=x",
                            b"c=biws,r=abc,p=AAAA", b"\0alice\0", b"\0\0", b"alice\0alice\0x\0y",
                            b"n,,n=al=ZZice,r=x", b"\xff\xfe", b"n,,n=alice,r=", b"c=biws,p=" + b"A" * 100]),
           # larger than sasl.server.max.receive.size (generated cheaply: hypothesis is slow at big binaries)
           st.integers(524_289, 600_000).map(lambda n: b"n,,n=alice,r=" + b"x" * n)), min_size=1, max_size=3))
def test_fuzzed_sasl_tokens_never_authenticate_nor_crash(sasl_broker, mechanism, tokens):
    c = _client(sasl_broker)
    try:
        assert c.call(SaslHandshakeRequest(mechanism=mechanism)).error_code == ErrorCode.none
        for token in tokens:
            try:
                reply = _auth(c, token)
            except (ConnectionError, OSError):
                break
            if reply.error_code != ErrorCode.none:
                # failed: the broker closes (half a second after its answer, or at once when
                # anything else arrives, which the next lines check)
                assert reply.error_code == ErrorCode.sasl_authentication_failed
                break
            assert reply.session_lifetime.total_seconds() == 0 or mechanism != "PLAIN"
            assert mechanism != "PLAIN", "a fuzzed PLAIN token authenticated"
        # whatever happened, the session is not authenticated: a request closes the connection
        try:
            c.send(METADATA_ALL)
            assert c.is_closed()
        except (ConnectionError, OSError):
            pass
    finally:
        c.close()
    healthy = _client(sasl_broker)
    assert plain(healthy).error_code == ErrorCode.none  # the broker still serves everyone else
    healthy.close()
