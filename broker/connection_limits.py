"""Who may open a connection, and log lines about those refused, without I/O.

`ConnectionQuotas` counts the open connections in total and per client address and decides at
accept time (Kafka's ConnectionQuotas): over `max.connections.per.ip` (or the address's entry in
`max.connections.per.ip.overrides`) or over `max.connections`, the new connection is refused and
closed at once. The per-address limit is checked first so that the log names the limit that
matters: a flood from one host is that host's problem, not the broker's.

`RateLimitedLog` decides which of many similar events get a log line: the first at once, then at
most one per interval, which tells how many were left out. A flood of refused connections or of
failing accept() calls must not become a flood of log lines (the log is on the same disk and the
same event loop).

Both take time as an argument; the Trio layer (broker.server) owns the sockets and the clock.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

import attrs

PER_IP = "max.connections.per.ip"
TOTAL = "max.connections"


def normalize_address(host: str) -> str:
    """The key an address is counted under: an IPv4-mapped IPv6 address counts as its IPv4."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


@attrs.frozen
class Refusal:
    limit: str    # the configuration key that refused: PER_IP or TOTAL
    value: int    # its value (for this address, for PER_IP)


class ConnectionQuotas:
    """Open connections per address and in total. Owned by the listener's event loop."""

    def __init__(self, max_connections: int, per_ip: int, overrides: Mapping[str, int] | None = None) -> None:
        self.max_connections = max_connections
        self.per_ip = per_ip
        # address -> limit; hostnames of the configured overrides are resolved by the caller
        self.overrides: dict[str, int] = {normalize_address(k): v for k, v in (overrides or {}).items()}
        self.total = 0
        self.by_address: dict[str, int] = {}

    def limit_for(self, address: str) -> int:
        return self.overrides.get(address, self.per_ip)

    def admit(self, address: str) -> Refusal | None:
        """Count a new connection from `address` in, or say which limit refuses it."""
        held = self.by_address.get(address, 0)
        limit = self.overrides.get(address, self.per_ip)
        if held >= limit:
            return Refusal(PER_IP, limit)
        if self.total >= self.max_connections:
            return Refusal(TOTAL, self.max_connections)
        self.by_address[address] = held + 1
        self.total += 1
        return None

    def release(self, address: str) -> None:
        held = self.by_address[address] - 1
        if held:
            self.by_address[address] = held
        else:
            del self.by_address[address]  # a scan of many one-off addresses must not grow the dict
        self.total -= 1


def hostnames(overrides: Mapping[str, int]) -> list[str]:
    """The override keys that are names to resolve rather than addresses."""
    out = []
    for host in overrides:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            out.append(host)
    return out


def resolve_overrides(overrides: Mapping[str, int], resolved: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Overrides keyed by address. A hostname's limit applies to every address it resolved to
    (`resolved`: hostname -> addresses); an address named directly wins, as the more specific
    entry."""
    out: dict[str, int] = {}
    for host, limit in overrides.items():
        for address in resolved.get(host, ()):
            out.setdefault(normalize_address(address), limit)
    for host, limit in overrides.items():
        if host not in resolved:
            out[normalize_address(host)] = limit
    return out


class RateLimitedLog:
    """At most one line per key per `interval` seconds; the others are counted."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def should_log(self, key: str, now: float) -> int | None:
        """None: stay quiet (the event is counted). Otherwise log now: the value is how many
        events of this key were left out since the last line."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._skipped.pop(key, 0)
