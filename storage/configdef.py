"""Declarative settings: attrs fields that carry their configuration key, type, range and doc.

A settings class declares each field with `setting(key, kind, default, doc=...)`: the key is
Kafka's name where Kafka has one, the kind (Integer, Real, Boolean, Text, Choice, CommaList, or a
class of the caller's with the same methods) says what the value may be. From that one declaration
come the parsing of a value from any source (a TOML value, a `--set` string, a flag, a topic
config string sent over the Kafka API), the range check (also when the class is built directly),
the value's Kafka text form, and the documentation tables.

storage.log.LogConfig declares the topic configs the storage engine applies this way, and
broker.config builds the broker's keys on the same functions, so a value is refused with the
same kind of message wherever it comes from: one line naming the key, the value and what is
expected, in Kafka's words ("invalid value -1 for configuration max.connections: must be at
least 1"). Pure and synchronous; imports nothing of ours (storage sits below every package).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import attrs

METADATA = "ringlog.setting"

_INTEGER = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_MISSING = object()


class Invalid(Exception):
    """Raised by a kind: what is wrong with a value, without the key ("must be at least 1")."""


class SettingError(ValueError):
    """A refused key or value. str() is the whole message, one line; `source` says where the value
    came from ("in broker.toml", "--set", "--max-connections") when there is more than one place."""

    def __init__(self, key: str, problem: str, *, value: Any = _MISSING, source: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.value = value
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        if self.value is _MISSING:
            return f"{self.key}{where}: {self.problem}"
        return f"invalid value {show(self.value)} for configuration {self.key}{where}: {self.problem}"


class UnknownKeyError(SettingError):
    """A key no setting has; `hint` is the known key it is most likely a typo of."""

    def __init__(self, key: str, *, source: str | None = None, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(key, "unknown configuration key", source=source)

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        hint = f"; did you mean {self.hint}?" if self.hint else ""
        return f"unknown configuration key {self.key}{where}{hint}"


def show(value: Any) -> str:
    """A value as a user wrote it: TOML spellings for booleans, lists and tables; strings bare
    (as Kafka shows them) unless empty or spaced, so that the message stays unambiguous."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value and " " not in value else repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


class Kind(Protocol):
    """What a setting's value may be. `parse` takes a value from any source (TOML types or a
    string) and returns the Python value; `check` the range of a Python value; both raise
    Invalid. `text` is the value in Kafka's string form; `type_name` Kafka's ConfigDef type
    (int, long, short, double, boolean, string, list) or a word for the docs; `range_doc` the
    allowed values for the docs ("" when any value of the type is)."""

    type_name: str

    def parse(self, raw: Any) -> Any: ...

    def check(self, value: Any) -> None: ...

    def text(self, value: Any) -> str: ...

    def range_doc(self) -> str: ...


@attrs.frozen
class Cap:
    """An upper bound on a size in bytes known only on the machine that runs, such as its memory."""

    name: str                      # "the machine's physical memory"
    limit: Callable[[], int | None]  # None: unknown here, no bound


@attrs.frozen
class Integer:
    low: int | None = None
    high: int | None = None
    bits: int = 64                 # 16, 32, 64: Kafka's SHORT, INT, LONG (the wire's bounds)
    # Values outside [low, high] that mean something: {-1: "never"}
    special: Mapping[int, str] = attrs.field(factory=dict)
    cap: Cap | None = None
    why: str = ""                  # appended to a range refusal: "(producer ids hold 10 bits of it)"

    @property
    def type_name(self) -> str:
        return {16: "short", 32: "int", 64: "long"}[self.bits]

    def _bounds(self) -> tuple[int, int]:
        top = (1 << (self.bits - 1)) - 1
        low = -top - 1 if self.low is None else max(self.low, -top - 1)
        high = top if self.high is None else min(self.high, top)
        return low, high

    def parse(self, raw: Any) -> int:
        if isinstance(raw, bool):
            raise Invalid("expected an integer")
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str) and _INTEGER.fullmatch(raw.strip()):
            value = int(raw.strip())
        else:
            raise Invalid("expected an integer")
        self.check(value)
        return value

    def _or_special(self) -> str:
        return "".join(f", or {v} ({meaning})" for v, meaning in self.special.items())

    def check(self, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("expected an integer")
        if value in self.special:
            return
        low, high = self._bounds()
        why = f" {self.why}" if self.why else ""
        if not low <= value <= high:
            if self.low is not None and self.high is not None:
                wanted = f"must be between {low} and {high}"
            elif value < low:
                wanted = f"must be at least {low}"
            else:
                wanted = f"must be at most {high}"
            raise Invalid(f"{wanted}{self._or_special()}{why}")
        if self.cap is not None:
            limit = self.cap.limit()
            if limit is not None and value > limit:
                raise Invalid(f"must be at most {limit} ({limit / 2**30:.1f} GiB), {self.cap.name}")

    def text(self, value: Any) -> str:
        return str(value)

    def range_doc(self) -> str:
        low, high = self._bounds()
        if self.cap is not None:
            text = f"{low} to {self.cap.name}" if self.low is not None else f"up to {self.cap.name}"
        elif self.low is not None and self.high is not None:
            text = f"{low} to {high}"
        elif self.low is not None:
            text = f"at least {low}"
        elif self.high is not None:
            text = f"at most {high}"
        else:
            text = ""
        for v, meaning in self.special.items():
            text += f"; {v}: {meaning}"
        return text


@attrs.frozen
class Real:
    low: float | None = None
    high: float | None = None
    type_name: str = "double"

    def parse(self, raw: Any) -> float:
        if isinstance(raw, bool):
            raise Invalid("expected a number")
        if isinstance(raw, (int, float)):
            value = float(raw)
        elif isinstance(raw, str) and _REAL.fullmatch(raw.strip()):
            value = float(raw.strip())
        else:
            raise Invalid("expected a number")
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Invalid("expected a number")
        if self.low is not None and self.high is not None and not self.low <= value <= self.high:
            raise Invalid(f"must be between {self.low:g} and {self.high:g}")
        if self.low is not None and value < self.low:
            raise Invalid(f"must be at least {self.low:g}")
        if self.high is not None and value > self.high:
            raise Invalid(f"must be at most {self.high:g}")

    def text(self, value: Any) -> str:
        return repr(float(value))

    def range_doc(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g} to {self.high:g}"
        return f"at least {self.low:g}" if self.low is not None else ""


@attrs.frozen
class Boolean:
    """true or false: a TOML boolean or the strings, in any case (Kafka's ConfigDef takes both)."""

    type_name: str = "boolean"

    def parse(self, raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise Invalid("expected true or false")

    def check(self, value: Any) -> None:
        if not isinstance(value, bool):
            raise Invalid("expected true or false")

    def text(self, value: Any) -> str:
        return "true" if value else "false"

    def range_doc(self) -> str:
        return "true, false"


@attrs.frozen
class Text:
    nonempty: bool = False
    type_name: str = "string"

    def parse(self, raw: Any) -> str:
        if not isinstance(raw, str):
            raise Invalid("expected a string")
        value = raw.strip()
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        if not isinstance(value, str):
            raise Invalid("expected a string")
        if self.nonempty and not value:
            raise Invalid("must not be empty")

    def text(self, value: Any) -> str:
        return value

    def range_doc(self) -> str:
        return "not empty" if self.nonempty else ""


@attrs.frozen
class Choice:
    values: tuple[str, ...]
    # Compare without case and store in the spelling of `values` (log levels); Kafka's enums
    # (message.timestamp.type) are case-sensitive, so off by default.
    fold_case: bool = False
    type_name: str = "string"

    def parse(self, raw: Any) -> str:
        if isinstance(raw, str):
            text = raw.strip()
            for v in self.values:
                if text == v or self.fold_case and text.lower() == v.lower():
                    return v
        raise Invalid(f"expected one of {', '.join(self.values)}")

    def check(self, value: Any) -> None:
        if value not in self.values:
            raise Invalid(f"expected one of {', '.join(self.values)}")

    def text(self, value: Any) -> str:
        return value

    def range_doc(self) -> str:
        return ", ".join(self.values)


@attrs.frozen
class CommaList:
    """Kafka's LIST: a comma-separated string, or a TOML array of strings. The value is kept as
    the comma-joined string, items stripped and (for `allowed` ones) deduplicated, in the order
    given: DescribeConfigs answers what was set, as Kafka does ("delete,compact" stays so)."""

    allowed: tuple[str, ...] | None = None
    nonempty: bool = False
    type_name: str = "list"

    def parse(self, raw: Any) -> str:
        if isinstance(raw, str):
            items = raw.split(",")
        elif isinstance(raw, (list, tuple)) and all(isinstance(i, str) for i in raw):
            items = list(raw)
        else:
            raise Invalid("expected a comma-separated list")
        parts = [i.strip() for i in items if i.strip()]
        if self.allowed is not None:
            parts = list(dict.fromkeys(parts))
        value = ",".join(parts)
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        if not isinstance(value, str):
            raise Invalid("expected a comma-separated list")
        parts = [p for p in value.split(",") if p]
        if self.allowed is not None:
            bad = [p for p in parts if p not in self.allowed]
            if bad:
                raise Invalid(f"{bad[0]} is not one of {', '.join(self.allowed)}")
        if self.nonempty and not parts:
            raise Invalid(f"must name at least one of {', '.join(self.allowed or ())}")

    def text(self, value: Any) -> str:
        return value

    def range_doc(self) -> str:
        return "any of " + ", ".join(self.allowed) if self.allowed else ""


@attrs.frozen
class Setting:
    """What a field's metadata holds: its key and everything needed to parse and document it."""

    key: str
    kind: Any                       # a Kind
    doc: str
    aliases: tuple[str, ...] = ()   # other accepted names (Kafka's synonyms, older spellings)
    flag: str | None = None         # the command-line flag of a broker key
    kafka: bool = True              # False: ringlog's own key, Kafka has none
    default_doc: str | None = None  # the docs' default when the value alone does not say it
    # Topic configs: the broker key that sets this config's default for every topic
    # (Kafka's "synonym", e.g. log.retention.ms for retention.ms), and its other spellings.
    synonym: str | None = None
    synonym_aliases: tuple[str, ...] = ()
    # Attributes set together from one value ("listen" -> listen_host, listen_port); the kind
    # then parses to a tuple. Empty: just this field.
    spans: tuple[str, ...] = ()

    def parse(self, raw: Any, source: str | None = None) -> Any:
        """The Python value of `raw`, or SettingError naming this key and the value."""
        if raw is None:
            raise SettingError(self.key, "a value is required", source=source)
        try:
            return self.kind.parse(raw)
        except Invalid as exc:
            raise SettingError(self.key, str(exc), value=raw, source=source) from None

    def text(self, value: Any) -> str:
        return self.kind.text(value)


def setting(key: str, kind: Any, default: Any = attrs.NOTHING, *, doc: str,
            factory: Callable[[], Any] | None = None, check: bool = True, **more: Any) -> Any:
    """An attrs field declared as configuration key `key` (see Setting for `more`). Building the
    class directly checks the range too (`check=False` for fields whose kind parses to
    something else, like the parts of a spanned setting)."""
    spec = Setting(key, kind, doc, **more)

    def validate(_instance: Any, _attribute: Any, value: Any) -> None:
        try:
            kind.check(value)
        except Invalid as exc:
            raise SettingError(key, str(exc), value=value) from None

    return attrs.field(
        default=attrs.Factory(factory) if factory is not None else default,
        validator=validate if check and not spec.spans else None,
        metadata={METADATA: spec},
    )


def settings(cls: type) -> Iterator[tuple[attrs.Attribute, Setting]]:
    """(attribute, Setting) of every declared field of `cls`, in declaration order."""
    for a in attrs.fields(cls):
        spec = a.metadata.get(METADATA)
        if spec is not None:
            yield a, spec


def by_key(cls: type) -> dict[str, tuple[attrs.Attribute, Setting]]:
    """Every key and alias of `cls` -> (attribute, Setting)."""
    out: dict[str, tuple[attrs.Attribute, Setting]] = {}
    for a, spec in settings(cls):
        for name in (spec.key, *spec.aliases):
            out[name] = (a, spec)
    return out


def default_value(a: attrs.Attribute) -> Any:
    d = a.default
    return d.factory() if isinstance(d, attrs.Factory) else d  # type: ignore[attr-defined]


def apply(instance: Any, values: Mapping[str, Any], *, strict: bool = True,
          sources: Mapping[str, str] | None = None) -> Any:
    """A copy of `instance` with `values` (key -> raw value from any source) parsed and applied.

    Unknown keys raise SettingError unless not `strict` (then they are skipped); every value is
    parsed by its field's kind, so the first bad one raises with its key and value."""
    known = by_key(type(instance))
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        source = (sources or {}).get(key)
        if key not in known:
            if strict:
                raise UnknownKeyError(key, source=source, hint=suggest(key, list(known)))
            continue
        a, spec = known[key]
        value = spec.parse(raw, source)
        if spec.spans:
            changes.update(zip(spec.spans, value))
        else:
            changes[a.name] = value
    return attrs.evolve(instance, **changes)


def texts(instance: Any) -> dict[str, str]:
    """key -> value in Kafka's string form, for every declared (unspanned) field."""
    return {spec.key: spec.text(getattr(instance, a.name)) for a, spec in settings(type(instance)) if not spec.spans}


def suggest(key: str, known: Sequence[str]) -> str | None:
    """The known key `key` is most likely a typo of, if one is close."""
    import difflib

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return close[0] if close else None
