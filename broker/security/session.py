"""Per-connection security: the listener, the principal, and the SASL exchange (KIP-368 sessions).

A connection on a SASL listener starts locked: until SaslAuthenticate completes, only ApiVersions,
SaslHandshake and SaslAuthenticate are served (Kafka's SaslServerAuthenticator); anything else
closes the connection. With connections.max.reauth.ms > 0 a session ends after that long (the
client is told in SaslAuthenticate's session_lifetime_ms); after it has ended, a request other than
a new SaslHandshake/SaslAuthenticate closes the connection, as Kafka's broker does. A failed
authentication is answered SASL_AUTHENTICATION_FAILED with Kafka's message, after a delay that
grows with the failures from that client address, and the connection is closed.

Connections of PLAINTEXT and SSL listeners have `locked = False` for their whole life, so the
read loop's one attribute test is all they pay.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from .listeners import ListenerSpec
from .scram import ScramError, ScramServer, parse_plain

if TYPE_CHECKING:
    from .state import SecurityState

log = logging.getLogger("ringlog.security")

ANONYMOUS = "User:ANONYMOUS"
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
_BEFORE_AUTH = frozenset({API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE})
_REAUTH = frozenset({SASL_HANDSHAKE, SASL_AUTHENTICATE})


class AuthenticationFailed(Exception):
    """str() is the error_message for SaslAuthenticate (Kafka's wording)."""


class Session:
    def __init__(self, listener: ListenerSpec | None, state: SecurityState | None, peer_host: str = "",
                 principal: str = ANONYMOUS) -> None:
        self.listener = listener
        self.state = state
        self.peer_host = peer_host
        self.principal = principal
        self.sasl = listener is not None and listener.sasl
        self.authenticated = not self.sasl
        self.locked = self.sasl
        self.mechanism: str | None = None      # chosen by SaslHandshake
        self.authenticated_mechanism: str | None = None
        self._scram: ScramServer | None = None
        self.expires_at: float | None = None   # time.monotonic() when the session ends
        self.close_after_response = False

    @property
    def advertised(self) -> tuple[str, int] | None:
        listener = self.listener
        if listener is None or listener.advertised_host is None:
            return None
        return listener.advertised_host, listener.advertised_port  # type: ignore[return-value]

    def refusal(self, api_key: int, name: str) -> str | None:
        """Why a request of `api_key` may not be served now (the connection then closes), or None."""
        if self.close_after_response:
            # after a failure only the answer is sent; nothing is served while the close waits
            return "a request after a failed SASL authentication"
        if not self.authenticated:
            if api_key in _BEFORE_AUTH:
                return None
            return f"Unexpected Kafka request of type {name} during SASL handshake."
        if self.expires_at is not None and time.monotonic() >= self.expires_at and api_key not in _REAUTH:
            return f"SASL session of {self.principal} expired (connections.max.reauth.ms); re-authentication required"
        return None

    # --- SaslHandshake ---------------------------------------------------------------------

    def handshake(self, mechanism: str) -> bool:
        """True when `mechanism` is enabled; then SaslAuthenticate runs it."""
        assert self.state is not None
        if mechanism not in self.state.mechanisms:
            return False
        if self.authenticated_mechanism is not None and mechanism != self.authenticated_mechanism:
            # Kafka: re-authentication must use the mechanism of the first authentication
            return False
        self.mechanism = mechanism
        self._scram = ScramServer(mechanism) if mechanism.startswith("SCRAM-") else None
        return True

    # --- SaslAuthenticate ------------------------------------------------------------------

    async def authenticate(self, token: bytes) -> tuple[bytes, bool]:
        """One step: (bytes for the client, whether the exchange is complete), or
        AuthenticationFailed with the message for the client."""
        state = self.state
        mechanism = self.mechanism
        if state is None or mechanism is None:
            raise AuthenticationFailed("Unexpected Kafka request of type SASL_AUTHENTICATE during SASL handshake.")
        if len(token) > state.max_token_bytes:
            raise AuthenticationFailed(f"Authentication failed: SASL token of {len(token)} bytes is larger than "
                                       f"{state.max_token_bytes}")
        try:
            if mechanism == "PLAIN":
                _, user, password = parse_plain(token)
                ok = await trio.to_thread.run_sync(state.credentials.check_plain, user, password)
                if not ok:
                    raise AuthenticationFailed("Authentication failed: Invalid username or password")
                self._complete(user)
                return b"", True
            scram = self._scram
            assert scram is not None
            if scram.user is None:
                user = scram.parse_first(token)
                credential = state.credentials.scram(user, mechanism)
                if credential is None:
                    raise ScramError("Authentication failed: Invalid user credentials")
                return scram.server_first(credential), False
            final = scram.final(token)
            self._complete(scram.user)
            return final, True
        except ScramError as exc:
            # PLAIN's messages and the authorization-id one pass through, as in Kafka
            if mechanism == "PLAIN" or "different from username" in str(exc):
                raise AuthenticationFailed(str(exc)) from None
            # Kafka sends no detail of a SCRAM failure: it could tell whether the user exists
            raise AuthenticationFailed(
                f"Authentication failed during {self._what()} due to invalid credentials with SASL mechanism {mechanism}"
            ) from exc

    def _what(self) -> str:
        return "re-authentication" if self.authenticated_mechanism is not None else "authentication"

    def _complete(self, user: str) -> None:
        principal = f"User:{user}"
        if self.authenticated_mechanism is not None and principal != self.principal:
            raise AuthenticationFailed(f"Cannot change principals during re-authentication from {self.principal}: {principal}")
        self.principal = principal
        self.authenticated_mechanism = self.mechanism
        self.mechanism = None
        self._scram = None
        self.authenticated = True

    def session_lifetime_ms(self, version: int) -> int:
        """After a complete exchange: connections.max.reauth.ms when set and the client can
        re-authenticate (SaslAuthenticate v1+), else 0 (no expiry)."""
        assert self.state is not None
        lifetime = self.state.max_reauth_ms
        if lifetime > 0 and version >= 1:
            self.expires_at = time.monotonic() + lifetime / 1000
            self.locked = True
            return lifetime
        self.expires_at = None
        self.locked = False
        return 0

    def failed(self) -> None:
        """After a failure: answer, then close (Kafka closes the connection)."""
        self.close_after_response = True
        self.authenticated = False   # nothing read after this is served
        self.locked = True
        self.mechanism = None
        self._scram = None
