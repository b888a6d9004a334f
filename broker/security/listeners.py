"""Kafka's listeners: `listeners`, `advertised.listeners`, `listener.security.protocol.map`.

A listener is NAME://HOST:PORT. NAME is a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL) or a name that listener.security.protocol.map maps to one ("CLIENT:SASL_SSL"), as in
Kafka. The values stay Kafka's comma-separated strings in BrokerConfig (DescribeConfigs answers
them as set); `parse_listeners` turns them into `ListenerSpec`s and says in one line what is
wrong. An advertised listener is matched to its listener by name; a listener with none advertises
its own address (127.0.0.1 when it listens on every address, the bound port when the port is 0).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class ListenerError(ValueError):
    """One line: which listener and what is wrong with it."""


@attrs.frozen
class ListenerSpec:
    name: str                     # "PLAINTEXT", "CLIENT", ...
    protocol: str                 # one of PROTOCOLS
    host: str
    port: int
    advertised_host: str | None = None
    advertised_port: int | None = None

    @property
    def tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS

    @property
    def sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS


def _split(value: str | list[str] | tuple[str, ...]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [i.strip() for i in items if i.strip()]


def parse_address(text: str) -> tuple[str, str, int]:
    """"NAME://HOST:PORT" -> (NAME, host, port); an empty host is every address (Kafka's
    "PLAINTEXT://:9092"), "[v6]:port" for IPv6."""
    name, sep, rest = text.partition("://")
    if not sep or not name:
        raise ListenerError(f"{text!r} is not NAME://HOST:PORT")
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise ListenerError(f"{text!r} has no port (NAME://HOST:PORT)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenerError(f"{text!r}: the port must be a number from 0 to 65535")
    return name.strip().upper(), host.strip() or "0.0.0.0", int(port)


def parse_protocol_map(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """"CLIENT:SASL_SSL,INTERNAL:PLAINTEXT" -> {name: protocol}; every protocol maps to itself
    unless the map says otherwise (Kafka's default map)."""
    out = {p: p for p in PROTOCOLS}
    if not value:
        return out
    items = [f"{k}:{v}" for k, v in value.items()] if isinstance(value, Mapping) else _split(value)
    for item in items:
        name, sep, protocol = item.partition(":")
        name, protocol = name.strip().upper(), protocol.strip().upper()
        if not sep or not name:
            raise ListenerError(f"listener.security.protocol.map: {item!r} is not NAME:PROTOCOL")
        if protocol not in PROTOCOLS:
            raise ListenerError(f"listener.security.protocol.map: {protocol} is not one of {', '.join(PROTOCOLS)}")
        out[name] = protocol
    return out


def parse_listeners(listeners: str, advertised: str = "", protocol_map: str = "") -> list[ListenerSpec]:
    """The listeners of the three keys, in the order given; ListenerError (one line) when a name
    has no protocol, two listeners share a name or a port, or an advertised name has no listener."""
    protocols = parse_protocol_map(protocol_map)
    specs: list[ListenerSpec] = []
    for text in _split(listeners):
        name, host, port = parse_address(text)
        if name not in protocols:
            raise ListenerError(f"listeners: {name} is neither a security protocol ({', '.join(PROTOCOLS)}) "
                                "nor a name in listener.security.protocol.map")
        if any(s.name == name for s in specs):
            raise ListenerError(f"listeners: the name {name} is used twice; each listener needs its own")
        if port and any(s.port == port for s in specs):
            raise ListenerError(f"listeners: port {port} is used twice")
        specs.append(ListenerSpec(name, protocols[name], host, port))
    if not specs:
        raise ListenerError("listeners: no listener given")
    by_name = {s.name: i for i, s in enumerate(specs)}
    for text in _split(advertised):
        name, host, port = parse_address(text)
        if name not in by_name:
            raise ListenerError(f"advertised.listeners: {name} is not one of the listeners ({', '.join(by_name)})")
        if host == "0.0.0.0" or port == 0:
            raise ListenerError(f"advertised.listeners: {text!r} must name a host and a port clients can reach")
        i = by_name[name]
        specs[i] = attrs.evolve(specs[i], advertised_host=host, advertised_port=port)
    return specs


def check(listeners: Any) -> None:
    """For the config kinds: raise ListenerError when `listeners` does not parse."""
    for text in _split(listeners):
        parse_address(text)


class _ListKind:
    """A Kafka LIST config kept as its comma-joined string: `expected` says the form, `_check`
    parses it (ListenerError on a bad value)."""

    type_name = "list"
    expected = ""

    def _normalize(self, raw: Any) -> Any:
        return raw

    def _check(self, value: str) -> None:
        raise NotImplementedError

    def parse(self, raw: Any) -> str:
        from ringlog.storage.configdef import Invalid

        raw = self._normalize(raw)
        if isinstance(raw, (list, tuple)) and all(isinstance(i, str) for i in raw):
            raw = ",".join(raw)
        if not isinstance(raw, str):
            raise Invalid(f"expected {self.expected}")
        value = ",".join(_split(raw))
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        from ringlog.storage.configdef import Invalid

        if not isinstance(value, str):
            raise Invalid(f"expected {self.expected}")
        try:
            self._check(value)
        except ListenerError as exc:
            raise Invalid(str(exc)) from None

    def text(self, value: Any) -> str:
        return value


class ListenerList(_ListKind):
    """Config kind of `listeners` and `advertised.listeners`: NAME://HOST:PORT,... (or a TOML array)."""

    expected = "NAME://HOST:PORT,NAME://HOST:PORT"

    def _check(self, value: str) -> None:
        check(value)

    def range_doc(self) -> str:
        return "NAME://HOST:PORT,..."


class ProtocolMap(_ListKind):
    """Config kind of listener.security.protocol.map: "NAME:PROTOCOL,NAME:PROTOCOL" (or a table)."""

    expected = "NAME:PROTOCOL,NAME:PROTOCOL"

    def _normalize(self, raw: Any) -> Any:
        return ",".join(f"{k}:{v}" for k, v in raw.items()) if isinstance(raw, Mapping) else raw

    def _check(self, value: str) -> None:
        parse_protocol_map(value)

    def range_doc(self) -> str:
        return "protocols " + ", ".join(PROTOCOLS)
