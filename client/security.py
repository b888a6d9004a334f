"""The client's side of Kafka security: TLS and SASL settings, the TLS context, PLAIN and SCRAM.

Settings are Kafka's client properties, as librdkafka and the Java client name them; the
producer, consumer and admin client take them as keyword options with underscores
(``security_protocol="SASL_SSL"``), the CLI as properties (``--command-config FILE``, ``-X k=v``):

  security.protocol                      PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
  sasl.mechanism                         PLAIN (default), SCRAM-SHA-256, SCRAM-SHA-512
  sasl.username, sasl.password           the SASL user (librdkafka's names)
  sasl.jaas.config                       the Java client's way: username="..." password="..." of
                                         a PlainLoginModule / ScramLoginModule line
  ssl.ca.location                        CA certificates (PEM) the broker's certificate is checked
                                         against; unset: the system's CAs
  ssl.certificate.location               a client certificate (PEM), for ssl.client.auth
  ssl.key.location, ssl.key.password     its private key (PEM), and the key's password
  ssl.endpoint.identification.algorithm  https (default): the certificate must name the host
                                         connected to; none (or empty): only the chain is checked

`SecurityConfig` checks names and values when a client is built, without touching files; the
TLS context is built from the files once per client, in a worker thread (`load_ssl_context`).

SASL (KIP-152) runs on each new connection right after ApiVersions and before anything else:
SaslHandshake v1 names the mechanism, then SaslAuthenticate (v0-2) carries the tokens. The
mechanisms here are sans-IO: `PlainClient` (RFC 4616) sends one token; `ScramClient` (RFC 5802,
RFC 7677) sends client-first, gets server-first (nonce, salt, iterations), sends client-final
with the proof and checks the server's signature in server-final, refusing the exchange when it
does not match (a broker that does not know the password cannot pass for one that does).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import ssl
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import InvalidClientConfig, SaslAuthenticationFailedError

__all__ = [
    "MECHANISMS",
    "PROPERTIES",
    "PROTOCOLS",
    "PlainClient",
    "ScramClient",
    "SecurityConfig",
    "load_ssl_context",
    "sasl_client",
]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SCRAM_HASH = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# Kafka's ScramMechanism minimum: a server asking for fewer iterations is refused (a weak hash)
SCRAM_MIN_ITERATIONS = 4096
_ENDPOINT = ("https", "none", "")

# Kafka property -> keyword option of the clients.
PROPERTIES = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",  # librdkafka's spelling
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "sasl.jaas.config": "sasl_jaas_config",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
    "ssl.endpoint.identification.algorithm": "ssl_endpoint_identification_algorithm",
}
OPTIONS = frozenset(PROPERTIES.values())

_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def _jaas(text: str) -> tuple[str | None, str | None]:
    """username and password of a Java sasl.jaas.config line."""
    found = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _JAAS_OPTION.findall(text)}
    if "LoginModule" not in text or "username" not in found or "password" not in found:
        raise InvalidClientConfig('sasl.jaas.config: expected a LoginModule with username="..." password="..."')
    return found["username"], found["password"]


@attrs.frozen
class SecurityConfig:
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = attrs.field(default=None, repr=False)
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: str | None = attrs.field(default=None, repr=False)
    ssl_endpoint_identification_algorithm: str = "https"

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], owner: str = "client") -> SecurityConfig:
        """From the clients' keyword options; an unknown name is a TypeError, as for any keyword
        argument, a bad value an InvalidClientConfig naming the Kafka property."""
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise TypeError(f"{owner}() got an unexpected keyword argument {unknown[0]!r}")
        values = {k: v for k, v in options.items() if v is not None}
        jaas = values.pop("sasl_jaas_config", None)
        if jaas is not None:
            user, password = _jaas(str(jaas))
            values.setdefault("sasl_username", user)
            values.setdefault("sasl_password", password)
        protocol = str(values.get("security_protocol", "PLAINTEXT")).upper()
        if protocol not in PROTOCOLS:
            raise InvalidClientConfig(f"security.protocol: {values['security_protocol']!r} is not one of "
                                      f"{', '.join(PROTOCOLS)}")
        values["security_protocol"] = protocol
        mechanism = str(values.get("sasl_mechanism", "PLAIN")).upper()
        if mechanism not in MECHANISMS:
            raise InvalidClientConfig(f"sasl.mechanism: {values['sasl_mechanism']!r} is not one of "
                                      f"{', '.join(MECHANISMS)}")
        values["sasl_mechanism"] = mechanism
        endpoint = str(values.get("ssl_endpoint_identification_algorithm", "https")).lower()
        if endpoint not in _ENDPOINT:
            raise InvalidClientConfig(f"ssl.endpoint.identification.algorithm: "
                                      f"{values['ssl_endpoint_identification_algorithm']!r} is not https or none")
        values["ssl_endpoint_identification_algorithm"] = endpoint or "none"
        for name in ("sasl_username", "sasl_password", "ssl_ca_location", "ssl_certificate_location",
                     "ssl_key_location", "ssl_key_password"):
            if name in values and not isinstance(values[name], str):
                raise InvalidClientConfig(f"{_property(name)}: expected a string, not {type(values[name]).__name__}")
        config = cls(**values)
        if config.sasl and (not config.sasl_username or config.sasl_password is None):
            raise InvalidClientConfig(f"security.protocol={protocol} needs sasl.username and sasl.password")
        if config.ssl_key_location and not config.ssl_certificate_location:
            raise InvalidClientConfig("ssl.key.location needs ssl.certificate.location (the client certificate)")
        return config

    @classmethod
    def from_properties(cls, properties: Mapping[str, str]) -> SecurityConfig:
        """From Kafka properties (``{"security.protocol": "SASL_SSL", ...}``); an unknown
        property is an InvalidClientConfig."""
        options = {}
        for key, value in properties.items():
            option = PROPERTIES.get(key)
            if option is None:
                raise InvalidClientConfig(f"unknown property {key!r} (known: {', '.join(sorted(PROPERTIES))})")
            options[option] = value
        return cls.from_options(options)

    def options(self) -> dict[str, Any]:
        """The keyword options that make this config (for passing it on to a client)."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


def _property(option: str) -> str:
    return next(k for k, v in PROPERTIES.items() if v == option)


def load_ssl_context(config: SecurityConfig) -> ssl.SSLContext:
    """The client TLS context from the config's files. Blocking file reads: call it in a worker
    thread. A missing or unreadable file is an InvalidClientConfig naming the property."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.ssl_ca_location)
    except FileNotFoundError:
        raise InvalidClientConfig(f"ssl.ca.location: {config.ssl_ca_location}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise InvalidClientConfig(f"ssl.ca.location: cannot load {config.ssl_ca_location}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.ssl_endpoint_identification_algorithm == "none":
        ctx.check_hostname = False  # the chain is still verified
    if config.ssl_certificate_location:
        try:
            ctx.load_cert_chain(config.ssl_certificate_location, config.ssl_key_location or None,
                                password=config.ssl_key_password or None)
        except FileNotFoundError as exc:
            raise InvalidClientConfig(f"ssl.certificate.location/ssl.key.location: "
                                      f"{exc.filename or config.ssl_certificate_location}: no such file") from None
        except (ssl.SSLError, OSError) as exc:
            raise InvalidClientConfig(f"cannot load the client certificate {config.ssl_certificate_location} "
                                      f"with key {config.ssl_key_location or config.ssl_certificate_location}: {exc}") from None
    return ctx


# --- SASL mechanisms (sans-IO) ----------------------------------------------------------------


class PlainClient:
    """RFC 4616: one message, "authzid NUL user NUL password" (no authzid)."""

    mechanism = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        self._token = b"\x00" + username.encode("utf-8") + b"\x00" + password.encode("utf-8")

    def first(self) -> bytes:
        return self._token


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _fail(message: str) -> SaslAuthenticationFailedError:
    return SaslAuthenticationFailedError(58, message)


class ScramClient:
    """RFC 5802 / RFC 7677 client, without channel binding (gs2 header "n,,", as Kafka's):

        c = ScramClient("SCRAM-SHA-256", user, password)
        send(c.first())
        salt, iterations = c.server_first(reply)          # checks the nonce and iteration count
        salted = c.salted_password(salt, iterations)       # PBKDF2: a worker thread's job
        send(c.final(salted))
        c.verify(reply)                                    # the server's signature, or an error
    """

    def __init__(self, mechanism: str, username: str, password: str, nonce: str | None = None) -> None:
        self.mechanism = mechanism
        self.hash = _SCRAM_HASH[mechanism]
        self._password = password
        self._nonce = nonce or base64.b64encode(os.urandom(24)).decode()
        self._first_bare = f"n={_saslname(username)},r={self._nonce}"
        self._server_first = ""
        self._server_nonce = ""
        self._auth_message = b""
        self._server_key = b""

    def first(self) -> bytes:
        return ("n,," + self._first_bare).encode("utf-8")

    def server_first(self, token: bytes) -> tuple[bytes, int]:
        try:
            text = bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            raise _fail("SCRAM server-first message is not UTF-8") from None
        attributes = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        if "e" in attributes:
            raise _fail(f"SCRAM server error: {attributes['e']}")
        nonce, salt, iterations = attributes.get("r", ""), attributes.get("s"), attributes.get("i", "")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise _fail("Invalid server nonce: does not start with client nonce")
        try:
            salt_bytes = base64.b64decode(salt or "", validate=True)
            count = int(iterations)
        except ValueError:
            raise _fail("malformed SCRAM server-first message") from None
        if not salt_bytes:
            raise _fail("malformed SCRAM server-first message: no salt")
        if count < SCRAM_MIN_ITERATIONS:
            raise _fail(f"Requested iterations {count} is less than the minimum {SCRAM_MIN_ITERATIONS} "
                        f"for {self.mechanism}")
        self._server_first = text
        self._server_nonce = nonce
        return salt_bytes, count

    def salted_password(self, salt: bytes, iterations: int) -> bytes:
        return hashlib.pbkdf2_hmac(self.hash, self._password.encode("utf-8"), salt, iterations)

    def final(self, salted: bytes) -> bytes:
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={self._server_nonce}"
        self._auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode("utf-8")
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        signature = hmac.digest(stored_key, self._auth_message, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self._server_key = hmac.digest(salted, b"Server Key", self.hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode("utf-8")

    def verify(self, token: bytes) -> None:
        """Check server-final ("v=" the server's signature); raise when it is wrong or missing."""
        try:
            text = bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            raise _fail("SCRAM server-final message is not UTF-8") from None
        if text.startswith("e="):
            raise _fail(f"SCRAM server error: {text[2:]}")
        if not text.startswith("v="):
            raise _fail("malformed SCRAM server-final message")
        try:
            signature = base64.b64decode(text[2:].split(",", 1)[0], validate=True)
        except ValueError:
            raise _fail("malformed SCRAM server-final message") from None
        expected = hmac.digest(self._server_key, self._auth_message, self.hash)
        if not hmac.compare_digest(signature, expected):
            raise _fail("Invalid server signature in server final message: the broker does not know this "
                        "user's credentials")


def sasl_client(config: SecurityConfig) -> PlainClient | ScramClient:
    assert config.sasl_username is not None and config.sasl_password is not None
    if config.sasl_mechanism == "PLAIN":
        return PlainClient(config.sasl_username, config.sasl_password)
    return ScramClient(config.sasl_mechanism, config.sasl_username, config.sasl_password)
