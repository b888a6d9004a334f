"""SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them, and PLAIN (RFC 4616).

Only what a server needs: deriving the stored credential from a password (or from the salted
password AlterUserScramCredentials carries), and the server side of the exchange. Channel
binding is not offered (Kafka does not either): a client that asks for it ("p=") is refused.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

import attrs

MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# Kafka's ScramMechanism bounds
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
DEFAULT_ITERATIONS = 4096
NONCE_BYTES = 24


class ScramError(Exception):
    """The exchange failed; str() is safe to send to the client (it says nothing of the user)."""


@attrs.frozen
class ScramCredential:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {"salt": _b64(self.salt), "iterations": self.iterations,
                "stored_key": _b64(self.stored_key), "server_key": _b64(self.server_key)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ScramCredential:
        return cls(_unb64(d["salt"]), int(d["iterations"]), _unb64(d["stored_key"]), _unb64(d["server_key"]))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode(), validate=True)


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(MECHANISMS[mechanism], password.encode("utf-8"), salt, iterations)


def from_salted_password(mechanism: str, salted: bytes, salt: bytes, iterations: int) -> ScramCredential:
    h = MECHANISMS[mechanism]
    client_key = hmac.digest(salted, b"Client Key", h)
    return ScramCredential(salt, iterations, hashlib.new(h, client_key).digest(),
                           hmac.digest(salted, b"Server Key", h))


def make_credential(mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS,
                    salt: bytes | None = None) -> ScramCredential:
    """CPU work (PBKDF2): call it in a worker thread from the broker."""
    salt = os.urandom(32) if salt is None else salt
    return from_salted_password(mechanism, salted_password(mechanism, password, salt, iterations), salt, iterations)


def _attributes(message: str) -> list[tuple[str, str]]:
    out = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM message")
        out.append((part[0], part[2:]))
    return out


def _saslname(name: str) -> str:
    # RFC 5802: "=" and "," in a user name travel as =3D and =2C; any other "=" is an error
    out, i = [], 0
    while i < len(name):
        if name[i] == "=":
            code = name[i:i + 3]
            if code == "=2C":
                out.append(",")
            elif code == "=3D":
                out.append("=")
            else:
                raise ScramError("malformed user name in SCRAM message")
            i += 3
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


class ScramServer:
    """One exchange: `first(token)` -> (user, server-first) once the caller looked the user up
    with `begin(credential)`, then `final(token)` -> server-final, or ScramError."""

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self.hash = MECHANISMS[mechanism]
        self.user: str | None = None
        self._gs2 = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._credential: ScramCredential | None = None

    def parse_first(self, token: bytes) -> str:
        """The user name of the client-first message (RFC 5802 section 7)."""
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        flag, sep, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not sep or not sep2 or flag not in ("n", "y"):
            # "p=...": channel binding, which the server does not offer
            raise ScramError("malformed or channel-bound SCRAM client-first message")
        attributes = _attributes(bare)
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r" or not attributes[1][1]:
            raise ScramError("malformed SCRAM client-first message")
        user = _saslname(attributes[0][1])
        if authzid:
            if not authzid.startswith("a=") or _saslname(authzid[2:]) != user:
                raise ScramError("Authentication failed: Client requested an authorization id that is different from username")
        if not user:
            raise ScramError("malformed SCRAM client-first message")
        self.user = user
        self._gs2 = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = attributes[1][1] + base64.b64encode(os.urandom(NONCE_BYTES)).decode()
        return user

    def server_first(self, credential: ScramCredential) -> bytes:
        self._credential = credential
        self._server_first = f"r={self._nonce},s={_b64(credential.salt)},i={credential.iterations}"
        return self._server_first.encode()

    def final(self, token: bytes) -> bytes:
        """Check the client's proof; the server-final message (v=signature) when it holds."""
        credential = self._credential
        if credential is None:
            raise ScramError("SCRAM client-final message before client-first")
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ScramError("Authentication failed: Invalid client final message")
        attributes = dict(_attributes(without_proof))
        try:
            binding = base64.b64decode(attributes.get("c", ""), validate=True)
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("Authentication failed: Invalid client final message") from None
        if binding != self._gs2.encode():
            raise ScramError("Authentication failed: Invalid client final message")
        # Kafka's test (ScramSaslServer): the nonce must end with the server's. librdkafka before
        # 2.1 sends its own nonce in front of the whole server nonce, and Kafka brokers accept it.
        if not attributes.get("r", "").endswith(self._nonce):
            raise ScramError("Invalid client nonce in the final client message.")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(credential.stored_key, auth_message, self.hash)
        if len(proof) != len(signature):
            raise ScramError("Invalid client credentials")
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(hashlib.new(self.hash, client_key).digest(), credential.stored_key):
            raise ScramError("Invalid client credentials")
        server_signature = hmac.digest(credential.server_key, auth_message, self.hash)
        return f"v={_b64(server_signature)}".encode()


# --- PLAIN ------------------------------------------------------------------------------------

# A PLAIN password is kept as a salted PBKDF2-SHA-256 hash, never as itself.
PLAIN_HASH = "sha256"


def make_plain(password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> dict[str, Any]:
    salt = os.urandom(32) if salt is None else salt
    digest = hashlib.pbkdf2_hmac(PLAIN_HASH, password.encode("utf-8"), salt, iterations)
    return {"salt": _b64(salt), "iterations": iterations, "hash": _b64(digest)}


def check_plain(stored: dict[str, Any], password: str) -> bool:
    """CPU work (PBKDF2): call it in a worker thread from the broker."""
    digest = hashlib.pbkdf2_hmac(PLAIN_HASH, password.encode("utf-8"), _unb64(stored["salt"]), int(stored["iterations"]))
    return hmac.compare_digest(digest, _unb64(stored["hash"]))


def parse_plain(token: bytes) -> tuple[str, str, str]:
    """RFC 4616 message "authzid NUL authcid NUL passwd" -> (authzid, user, password)."""
    parts = token.split(b"\x00")
    if len(parts) != 3:
        raise ScramError(f"Invalid SASL/PLAIN response: expected 3 tokens, got {len(parts)}")
    try:
        authzid, user, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise ScramError("Invalid SASL/PLAIN response: not UTF-8") from None
    if not user:
        raise ScramError("Authentication failed: username not specified")
    if not password:
        raise ScramError("Authentication failed: password not specified")
    if authzid and authzid != user:
        raise ScramError("Authentication failed: Client requested an authorization id that is different from username")
    return authzid, user, password
