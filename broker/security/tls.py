"""TLS for SSL and SASL_SSL listeners: a server SSLContext from PEM files, reloaded on SIGHUP.

Files (librdkafka's names, which the configuration also accepts in Kafka's PEM spelling,
ssl.keystore.location / ssl.truststore.location with ssl.keystore.type = PEM):
  ssl.certificate.location  the broker's certificate chain (PEM); may hold the key too
  ssl.key.location          its private key (PEM), ssl.key.password when it is encrypted
  ssl.ca.location           the CAs client certificates are checked against
  ssl.client.auth           required | requested | none (Kafka's key and values)

`TlsContexts.reload()` builds a new context from the files and swaps it in: connections that are
open keep the session they have, new ones get the new certificate. A reload that fails (a missing
or broken file) keeps the old context and says why, so a bad edit cannot take the listener down.

Under TLS the record bytes of a Fetch cannot go from the segment file to the socket with sendfile:
they must pass through the TLS stream to be encrypted. `send_region_copy` reads the file region in
bounded chunks in a worker thread (the page cache usually has them; a cold read may take a disk
seek, which must not stall the event loop) and writes each through the stream.
"""
from __future__ import annotations

import logging
import os
import ssl
from typing import Any

import trio

log = logging.getLogger("ringlog.security")

CLIENT_AUTH = ("required", "requested", "none")
_VERIFY = {"required": ssl.CERT_REQUIRED, "requested": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
# Bytes of a file region read per worker-thread call when sending it through TLS: large enough
# that the thread hop is a small part of the cost, small enough to bound the memory per connection.
COPY_CHUNK = 1024 * 1024


class TlsConfigError(ValueError):
    """One line naming the file and what is wrong with it."""


def build_context(certificate: str | None, key: str | None, ca: str | None, client_auth: str = "none",
                  key_password: str | None = None) -> ssl.SSLContext:
    if not certificate:
        raise TlsConfigError("an SSL or SASL_SSL listener needs ssl.certificate.location (the broker's PEM certificate)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certificate, key or None, password=key_password or None)
    except FileNotFoundError as exc:
        raise TlsConfigError(f"ssl.certificate.location/ssl.key.location: {exc.filename or certificate}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"cannot load the certificate {certificate} with key {key or certificate}: {exc}") from None
    ctx.verify_mode = _VERIFY[client_auth]
    if client_auth != "none":
        if not ca:
            raise TlsConfigError(f"ssl.client.auth={client_auth} needs ssl.ca.location (the CAs of client certificates)")
        try:
            ctx.load_verify_locations(cafile=ca)
        except FileNotFoundError:
            raise TlsConfigError(f"ssl.ca.location: {ca}: no such file") from None
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(f"ssl.ca.location: cannot load {ca}: {exc}") from None
    return ctx


class TlsContexts:
    """The current server context, built from the configuration's files."""

    def __init__(self, config: Any) -> None:
        self._config = config
        self.context = self._build()
        self.reloads = 0

    def _build(self) -> ssl.SSLContext:
        c = self._config
        return build_context(c.ssl_certificate_location, c.ssl_key_location, c.ssl_ca_location,
                             c.ssl_client_auth, c.ssl_key_password)

    async def reload(self) -> bool:
        """Rebuild from the files (in a worker thread: it reads them); False, logged, when it fails."""
        try:
            context = await trio.to_thread.run_sync(self._build)
        except TlsConfigError as exc:
            log.error("TLS reload failed, keeping the certificate in use: %s", exc)
            return False
        self.context = context
        self.reloads += 1
        log.info("TLS certificates reloaded from %s", self._config.ssl_certificate_location)
        return True

    def wrap(self, stream: trio.abc.Stream) -> trio.SSLStream:
        return trio.SSLStream(stream, self.context, server_side=True)


def principal_name(cert: dict | None) -> str | None:
    """The client certificate's subject as Kafka names it (X500Principal.getName(), RFC 2253:
    the most specific part first, "CN=alice,OU=eng,O=example"); None without a certificate."""
    if not cert or not cert.get("subject"):
        return None
    parts = []
    for rdn in reversed(cert["subject"]):
        parts.append("+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(parts)


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "stateOrProvinceName": "ST", "localityName": "L", "streetAddress": "STREET", "domainComponent": "DC",
          "userId": "UID"}


def _escape(value: str) -> str:
    out = "".join("\\" + ch if ch in ',+"\\<>;=' else ch for ch in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


async def send_region_copy(stream: trio.abc.SendStream, region: Any) -> None:
    """Send `region.length` bytes of `region`'s file from `region.position` by reading them.

    A file that ends early (truncated under us) would corrupt the frame, so that closes the
    connection, as with sendfile."""
    fd = region.fileno()
    offset = region.position
    remaining = region.length
    while remaining > 0:
        n = min(remaining, COPY_CHUNK)
        data = await trio.to_thread.run_sync(os.pread, fd, n, offset)
        if not data:
            raise trio.BrokenResourceError("segment file ended before the announced length")
        await stream.send_all(data)
        offset += len(data)
        remaining -= len(data)


async def receive_drained(stream: trio.SSLStream, max_bytes: int) -> bytes:
    """`stream.receive_some`, plus every TLS record the same socket read already brought in.

    SSLStream returns one TLS record (at most 16 KiB) per call, so a connection producing at
    full speed would go round its read loop, and SSLStream's locking and retries, sixteen times
    for 256 KiB. The records left in the TLS object's buffers are decrypted here without another
    trip through the transport; anything the TLS object needs beyond them (more bytes, a
    renegotiation, the peer's close) is left to the next receive_some.
    """
    data = await stream.receive_some(max_bytes)
    tls = getattr(stream, "_ssl_object", None)
    incoming = getattr(stream, "_incoming", None)
    if not data or tls is None or incoming is None:
        return data
    chunks = [data]
    size = len(data)
    while size < max_bytes and (incoming.pending or tls.pending()):
        try:
            more = tls.read(max_bytes - size)
        except ssl.SSLError:  # wants more bytes, or the peer closed: receive_some's business
            break
        if not more:
            break
        chunks.append(more)
        size += len(more)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
