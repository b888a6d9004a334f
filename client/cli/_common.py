"""Shared plumbing of the networked `ringlog` commands (topics, produce, consume, groups, replay).

* `--bootstrap HOST:PORT[,HOST:PORT...]`: default from the environment variable RINGLOG_BOOTSTRAP,
  else 127.0.0.1:9092.
* security, for every command that connects: `--command-config FILE` (a Java properties file, as
  Kafka's tools take it) and `-X KEY=VALUE` (kcat style, repeatable, applied after the file) set
  Kafka's client properties of client/security.py (security.protocol, sasl.mechanism,
  sasl.username, sasl.password, sasl.jaas.config, ssl.ca.location, ...). They are read and
  checked before the command starts (`command` puts the keyword options in `args.security`);
  an unreadable file, a malformed line, an unknown property or a bad value is one line and
  exit 2.
* errors: a user mistake or a failed operation is ONE line on stderr, ``ringlog <cmd>: <what>``,
  and an exit code, never a traceback:

      0  success
      1  the operation failed (the broker refused it, unknown topic or group, delivery failed,
         damaged data)
      2  usage error (bad flag or value; argparse also exits 2)
      3  the broker cannot be reached (refused, timed out, not a Kafka broker); reported within
         CONNECT_TIMEOUT seconds or so, never a hang
      130 interrupted (Ctrl-C), except `consume`, for which Ctrl-C is the normal way to stop

* output: aligned tables (`format_table`) for people, `--json` for scripts; JSON lines of records
  share one shape with `ringlog log dump` (`record_json`).
* `Progress`: a one-line bar on stderr with the count, rate and ETA, shown when stderr is a
  terminal or with --progress, redrawn at most 10 times a second.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import functools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
ENV_BOOTSTRAP = "RINGLOG_BOOTSTRAP"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

# Seconds to open a TCP connection, and to get a client going (connect, ApiVersions, first
# Metadata, retries included): an unreachable broker is reported within STARTUP_TIMEOUT.
CONNECT_TIMEOUT = 3.0
STARTUP_TIMEOUT = 6.0
# Seconds for an admin request's answer.
REQUEST_TIMEOUT = 15.0


# For "the broker does not support ..." messages.
API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit (consumer groups)",
    9: "OffsetFetch (consumer groups)", 10: "FindCoordinator (consumer groups)",
    11: "JoinGroup (consumer groups)", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
    15: "DescribeGroups", 16: "ListGroups", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId (idempotent producing)", 32: "DescribeConfigs",
    33: "AlterConfigs", 37: "CreatePartitions", 42: "DeleteGroups", 44: "IncrementalAlterConfigs",
}


class CliError(Exception):
    """One line for the user and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


# --- options ----------------------------------------------------------------------------------


def add_bootstrap(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap", "-b", metavar="HOST:PORT", default=None,
        help=f"broker address(es), comma-separated (default ${ENV_BOOTSTRAP} or {DEFAULT_BOOTSTRAP})",
    )
    add_security(p)


def add_security(p: argparse.ArgumentParser) -> None:
    """--command-config and -X: Kafka client properties for TLS and SASL."""
    p.add_argument(
        "--command-config", metavar="FILE", default=None,
        help="Kafka client properties (key=value lines, # comments) such as security.protocol, "
             "sasl.mechanism, sasl.username, sasl.password, ssl.ca.location",
    )
    p.add_argument(
        "-X", dest="client_properties", action="append", type=key_value, default=[], metavar="KEY=VALUE",
        help="one client property (repeatable; after --command-config), e.g. -X security.protocol=SASL_SSL",
    )


def _unescape(text: str, where: str) -> str:
    out, i = [], 0
    simple = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 == len(text):
            out.append(c)
            i += 1
            continue
        n = text[i + 1]
        if n == "u":
            code = text[i + 2:i + 6]
            if len(code) != 4 or any(h not in "0123456789abcdefABCDEF" for h in code):
                raise UsageError(f"{where}: malformed \\u escape")
            out.append(chr(int(code, 16)))
            i += 6
            continue
        out.append(simple.get(n, n))
        i += 2
    return "".join(out)


def parse_properties(text: str, name: str) -> dict[str, str]:
    """A Java properties file: `key=value`, `key: value` or `key value` lines, `#` and `!`
    comments, a backslash at the end of a line continues it, backslash escapes. A line with a
    key but no value is a mistake here (a client property always has one), not an empty value."""
    props: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].lstrip()
        i += 1
        if not line or line[0] in "#!":
            continue
        # continuation: an odd number of backslashes at the end
        while (len(line) - len(line.rstrip("\\"))) % 2 == 1 and i < len(lines):
            line = line[:-1] + lines[i].lstrip()
            i += 1
        where = f"{name} line {number}"
        j = 0
        while j < len(line) and line[j] not in "=: \t\f":
            j += 2 if line[j] == "\\" else 1
        key = _unescape(line[:j], where)
        rest = line[j:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        elif not rest:
            raise UsageError(f"{where}: expected KEY=VALUE, got {lines[number - 1].strip()!r}")
        props[key] = _unescape(rest, where)
    return props


def security_of(args: argparse.Namespace) -> dict[str, Any]:
    """The clients' security keyword options from --command-config and -X (checked; files are
    read here, before the command's event loop starts)."""
    from ringlog.client.errors import InvalidClientConfig
    from ringlog.client.security import SecurityConfig

    props: dict[str, str] = {}
    path = getattr(args, "command_config", None)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"--command-config {path}: {reason}") from None
        props.update(parse_properties(text, f"--command-config {path}"))
    props.update(dict(getattr(args, "client_properties", None) or ()))
    try:
        return SecurityConfig.from_properties(props).options()
    except InvalidClientConfig as exc:
        source = " (--command-config / -X)" if props else ""
        raise UsageError(f"{exc}{source}") from None


def bootstrap_of(args: argparse.Namespace) -> str:
    from ringlog.client.cluster import parse_bootstrap

    value = getattr(args, "bootstrap", None) or os.environ.get(ENV_BOOTSTRAP) or DEFAULT_BOOTSTRAP
    try:
        parse_bootstrap(value)
    except ValueError:
        raise UsageError(f"not a HOST:PORT list: {value!r}") from None
    return value


def add_json(p: argparse.ArgumentParser, what: str = "output") -> None:
    p.add_argument("--json", action="store_true", help=f"JSON {what} for scripts instead of a table")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress", action="store_true",
        help="show the progress bar on stderr even when it is not a terminal",
    )


def key_value(text: str) -> tuple[str, str]:
    """argparse type for k=v."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def positive(text: str) -> int:
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# The largest values of the Kafka wire's fixed-size integer fields. A number that does not fit
# cannot even be encoded into the request, so the argument parser refuses it with a clear line.
INT16_MAX = 2**15 - 1
INT32_MAX = 2**31 - 1


def positive_up_to(limit: int) -> Callable[[str], int]:
    """argparse type for 1..limit (e.g. INT32_MAX for a partition count)."""

    def parse(text: str) -> int:
        value = positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{text} is too large (at most {limit})")
        return value

    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return value


def parse_datetime_ms(text: str) -> int:
    """Milliseconds since the epoch for an ISO 8601 date/time; without a zone it is UTC
    (``2024-05-01``, ``2024-05-01T12:00``, ``2024-05-01T12:00:00.250Z``, ``...+02:00``)."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date/time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def format_ms(ms: int | None) -> str:
    """ISO 8601 UTC with milliseconds ('-' for none or -1)."""
    if ms is None or ms < 0:
        return "-"
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# --- output -----------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = ()) -> str:
    """Columns padded to their widest cell, two spaces apart; columns named in `right` are
    right-aligned (numbers). None prints as '-'. No trailing spaces."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for r in cells:
        parts = [
            f"{c:>{w}}" if h in right else f"{c:<{w}}" for c, w, h in zip(r, widths, headers)
        ]
        out.append("  ".join(parts).rstrip())
    return "\n".join(out) + "\n"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = ()) -> None:
    sys.stdout.write(format_table(headers, rows, right))
    sys.stdout.flush()


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _data_field(obj: dict, name: str, data: bytes | None) -> None:
    if data is None:
        obj[name] = None
        return
    try:
        obj[name] = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        obj[name] = base64.b64encode(data).decode("ascii")
        obj[f"{name}_encoding"] = "base64"


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def record_json(
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    timestamp_type: str | None = None,
) -> str:
    """One record as a JSON line, the shape of `ringlog log dump` (docs/offline-tools.md): UTF-8
    data as strings, anything else base64 with a sibling "<field>_encoding":"base64"."""
    obj: dict = {"topic": topic, "partition": partition, "offset": offset, "timestamp": timestamp}
    if timestamp_type is not None:
        obj["timestamp_type"] = timestamp_type
    _data_field(obj, "key", key)
    _data_field(obj, "value", value)
    hs = []
    for hk, hv in headers:
        h: dict = {"key": hk.decode("utf-8", "replace") if isinstance(hk, (bytes, bytearray)) else hk}
        _data_field(h, "value", hv)
        hs.append(h)
    obj["headers"] = hs
    return _JSON.encode(obj)


# --- progress ---------------------------------------------------------------------------------


def _human(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "--:--"
    s = int(s + 0.5)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    """``[#####.....]  45%  1.2M/2.7M records  310.5k records/s  ETA 00:04`` on stderr.

    `total` may be None (unknown): then the count and rate are shown without bar or ETA. `done`
    counts the unit of `total` (bytes of input, records); `extra(n)` counts records when the
    bar measures bytes."""

    WIDTH = 24
    INTERVAL = 0.1

    def __init__(self, label: str, total: int | None, unit: str, *, enabled: bool) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self.done = 0
        self.records = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    @classmethod
    def for_args(cls, args: argparse.Namespace, label: str, total: int | None, unit: str) -> Progress:
        enabled = bool(getattr(args, "progress", False)) or sys.stderr.isatty()
        return cls(label, total, unit, enabled=enabled)

    def update(self, done: int | None = None, *, add: int = 0, records: int = 0) -> None:
        if done is not None:
            self.done = done
        self.done += add
        self.records += records
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.INTERVAL:
            self._last = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [self.label]
        if self.total:
            frac = min(self.done / self.total, 1.0)
            fill = int(frac * self.WIDTH)
            parts.append("[" + "#" * fill + "." * (self.WIDTH - fill) + "]")
            parts.append(f"{frac * 100:3.0f}%")
            parts.append(f"{_human(self.done)}/{_human(self.total)} {self.unit}")
        else:
            parts.append(f"{_human(self.done)} {self.unit}")
        parts.append(f"{_human(rate)} {self.unit}/s")
        if self.unit != "records" and self.records:
            parts.append(f"{_human(self.records)} records")
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            parts.append(f"ETA {_duration(max(eta, 0.0))}")
        else:
            parts.append(_duration(elapsed))
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        sys.stderr.write("\r\x1b[K" + self.line(now) if sys.stderr.isatty() else self.line(now) + "\n")
        sys.stderr.flush()
        self._drawn = True

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self.total is not None:
            self.done = max(self.done, 0)
        elapsed = now - self.start
        line = self.line(now).rsplit("  ", 1)[0] + f"  in {_duration(elapsed)}"
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K" + line + "\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


# --- running a command ------------------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out = []
        for e in exc.exceptions:
            out += _leaves(e)
        return out
    return [exc]


def describe_failure(exc: BaseException, bootstrap: str | None) -> tuple[str, int] | None:
    """(message, exit code) for an exception a user can meet; None for a bug."""
    import trio

    from ringlog.client.errors import (
        AuthenticationError,
        ClientClosed,
        ConnectionLost,
        CorruptRecord,
        InvalidClientConfig,
        KafkaError,
        NoBrokersAvailable,
        RequestTimedOut,
        SslAuthenticationError,
        UnsupportedApi,
    )

    where = f" at {bootstrap}" if bootstrap else ""
    if isinstance(exc, CliError):
        return exc.message, exc.code
    if isinstance(exc, Unreachable):
        return f"cannot reach a broker{where}: {_reason(exc.__cause__ or exc)}", EXIT_UNREACHABLE
    if isinstance(exc, NoBrokersAvailable):
        return f"cannot reach a broker{where}: {_reason(exc)}", EXIT_UNREACHABLE
    if isinstance(exc, (ConnectionLost, RequestTimedOut, trio.TooSlowError)):
        return f"lost the connection to the broker{where}: {_reason(exc)}", EXIT_UNREACHABLE
    if isinstance(exc, (ConnectionRefusedError, OSError)) and not isinstance(exc, FileNotFoundError):
        return f"cannot reach a broker{where}: {exc.strerror or exc}", EXIT_UNREACHABLE
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename}: no such file or directory", EXIT_USAGE
    if isinstance(exc, InvalidClientConfig):
        return str(exc), EXIT_USAGE
    if isinstance(exc, SslAuthenticationError):
        return f"{exc}", EXIT_FAILED
    if isinstance(exc, AuthenticationError):  # the SASL ones, with the broker's message
        return f"authentication failed{where}: {exc.name}" + (f" ({exc.message})" if getattr(exc, "message", None) else ""), EXIT_FAILED
    if isinstance(exc, UnsupportedApi):
        name = API_NAMES.get(exc.api_key, f"API {exc.api_key}")
        return f"the broker{where} does not support {name}", EXIT_FAILED
    if isinstance(exc, KafkaError):
        return f"the broker refused: {exc.name}" + (f" ({exc.message})" if exc.message else ""), EXIT_FAILED
    if isinstance(exc, ClientClosed):
        return f"client closed: {exc}", EXIT_FAILED
    if isinstance(exc, CorruptRecord):
        # the reason names the offset; the partition comes from the consumer
        place = f" in topic {exc.topic!r} partition {exc.partition}" if exc.topic is not None else ""
        return f"corrupt data{place}: {exc.reason}", EXIT_FAILED
    return None


def _reason(exc: BaseException) -> str:
    """The root cause in a few words: 'connection refused', 'timed out', ..."""
    import trio

    seen = set()
    e: BaseException | None = exc
    best = None
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            best = e.strerror.lower()
        elif isinstance(e, trio.TooSlowError) and best is None:
            best = "timed out"
        elif "FrameTooLarge" in type(e).__name__ or "FrameTooLarge" in str(e):
            best = "it does not answer like a Kafka broker"
        if isinstance(e, BaseExceptionGroup) and e.exceptions:
            e = e.exceptions[0]
            continue
        e = e.__cause__ or e.__context__
    hint = re.search(r"closed the connection [^(]*\(security\.protocol[^)]*\)", str(exc))
    if hint is not None:
        best = hint[0]
    text = str(exc).lower()
    if best is None and "refused" in text:
        best = "connection refused"
    if best is None and ("all attempts to connect" in text or "cannot connect" in text):
        # the client keeps only the text of the underlying OSError
        best = "connection failed (refused or unreachable)"
    return best or _short(exc) or type(exc).__name__


class Unreachable(Exception):
    """A client did not get going within STARTUP_TIMEOUT."""


@contextlib.asynccontextmanager
async def connected(client):
    """``async with connected(Producer(...)) as p``: the client must get going within
    STARTUP_TIMEOUT, so an unreachable or silent address fails in seconds, whatever the client's
    own retry policy. (The deadline is a scope around the whole block, lifted once the client is
    in: a scope may not end while the client's nursery, opened inside it, is still open.)"""
    import trio

    entered = False
    with trio.CancelScope(deadline=trio.current_time() + STARTUP_TIMEOUT) as scope:
        async with client as c:
            scope.deadline = math.inf
            entered = True
            yield c
    if not entered:
        raise Unreachable(f"no answer within {STARTUP_TIMEOUT:g}s")


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:297] + "..."


def error(prog: str, message: str) -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    # The reader of our stdout left (`| head`): point stdout at /dev/null so the interpreter's
    # final flush does not complain either.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def command(prog: str, *, interrupt_code: int = EXIT_INTERRUPTED) -> Callable:
    """Decorate `async def cmd(args) -> int | None`: run it under trio and turn the failures a
    user can meet into one line and an exit code. `prog` may contain {field} from args."""

    def wrap(fn: Callable) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(fn)
        def run(args: argparse.Namespace) -> int:
            import trio

            name = prog.format(**vars(args))
            bootstrap = None
            try:
                bootstrap = bootstrap_of(args) if hasattr(args, "bootstrap") else None
                args.security = security_of(args)
                return int(trio.run(fn, args) or 0)
            except KeyboardInterrupt:
                return interrupt_code
            except BrokenPipeError:
                _silence_stdout()
                return EXIT_OK
            except BaseException as exc:  # noqa: BLE001 - sorted below, bugs re-raised
                leaves = _leaves(exc)
                if any(isinstance(e, KeyboardInterrupt) for e in leaves):
                    return interrupt_code
                if any(isinstance(e, BrokenPipeError) for e in leaves):
                    _silence_stdout()
                    return EXIT_OK
                # the most telling leaf: our own errors first, then Kafka's, then connectivity
                for e in sorted(leaves, key=_rank):
                    found = describe_failure(e, bootstrap)
                    if found is not None:
                        error(name, found[0])
                        return found[1]
                raise

        return run

    return wrap


def _rank(exc: BaseException) -> int:
    from ringlog.client.errors import KafkaError

    if isinstance(exc, CliError):
        return 0
    if isinstance(exc, KafkaError):
        return 1
    return 2

