"""`ssl.principal.mapping.rules`: Kafka's rules that turn a client certificate's subject into
the principal name (SslPrincipalMapper), so ACLs written for a Kafka cluster name the same users.

    RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, RULE:^CN=(.*?),OU=(.*?),O=.*$/$1@$2/, DEFAULT

Rules are tried in order on the whole subject (RFC 2253, "CN=alice,OU=eng,O=example"); the first
whose pattern matches all of it gives the name: the replacement with $1..$n expanded, then
lower- (L) or upper-cased (U). DEFAULT gives the subject as it is. No rule matching fails the
authentication, as in Kafka. Patterns are Java regexes; the common forms (groups, classes,
anchors, lazy quantifiers) mean the same in Python's `re`, which runs them.
"""
from __future__ import annotations

import re
from typing import Any

import attrs

# Kafka's grammar: DEFAULT, or RULE:pattern/replacement/[LU] with \ escaping / and \ inside.
_RULE = r"(DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_SPLITTER = re.compile(r"\s*(" + _RULE + r")\s*(?:,\s*|$)")
_PARSER = re.compile(_RULE)
_BACK_REFERENCE = re.compile(r"\$(\d+)")


class RuleError(ValueError):
    """A rule that does not parse, or a pattern that is not a regex."""


class NoMatchingRule(Exception):
    """No rule applies to the subject: the connection fails authentication."""


@attrs.frozen
class Rule:
    pattern: re.Pattern[str] | None  # None: DEFAULT
    replacement: str = ""
    case: str = ""  # "", "L" or "U"

    def apply(self, subject: str) -> str | None:
        if self.pattern is None:
            return subject
        if self.pattern.fullmatch(subject) is None:
            return None
        result = self.pattern.sub(lambda m: _expand(self.replacement, m), subject)
        return result.lower() if self.case == "L" else result.upper() if self.case == "U" else result


def _expand(replacement: str, m: re.Match[str]) -> str:
    """Java's replacement syntax: $n is group n (a number larger than the groups there are loses
    its last digits until it fits, else is literal, as Kafka's mapper has it), \\x is x."""
    groups = len(m.groups())
    out = []
    i = 0
    while i < len(replacement):
        ch = replacement[i]
        if ch == "\\" and i + 1 < len(replacement):
            out.append(replacement[i + 1])
            i += 2
            continue
        ref = _BACK_REFERENCE.match(replacement, i) if ch == "$" else None
        if ref is None:
            out.append(ch)
            i += 1
            continue
        digits = ref.group(1)
        # the longest prefix of the digits that names a group; the rest is literal
        for cut in range(len(digits), 0, -1):
            n = int(digits[:cut])
            if n <= groups:
                out.append(m.group(n) or "")
                out.append(digits[cut:])
                break
        else:
            out.append(ref.group(0))
        i = ref.end()
    return "".join(out)


def parse_rules(text: str) -> tuple[Rule, ...]:
    """The rules of a `ssl.principal.mapping.rules` value; RuleError names a bad one."""
    rules = []
    for m in _SPLITTER.finditer(text.strip()):
        raw = m.group(1)
        if m.start() == m.end() == len(text.strip()):
            break
        parsed = _PARSER.match(raw)
        if parsed is None or parsed.end() != len(raw):
            rest = raw[parsed.end():] if parsed is not None else raw
            raise RuleError(f"invalid rule `{raw}`, unmatched substring `{rest}`")
        if parsed.group(1) is not None:
            rules.append(Rule(None))
        elif parsed.group(2) is not None:
            try:
                pattern = re.compile(parsed.group(2))
            except re.error as exc:
                raise RuleError(f"invalid rule `{raw}`: {exc}") from None
            rules.append(Rule(pattern, parsed.group(3), parsed.group(4)))
        elif parsed.group(5):
            raise RuleError(f"invalid rule `{raw}`: expected DEFAULT or RULE:pattern/replacement/[LU]")
    return tuple(rules)


def principal_for(rules: tuple[Rule, ...], subject: str) -> str:
    for rule in rules:
        name = rule.apply(subject)
        if name is not None:
            return name
    raise NoMatchingRule(f"no rule of ssl.principal.mapping.rules applies to {subject}")


class PrincipalRules:
    """Config kind of ssl.principal.mapping.rules (a string of rules, checked when read)."""

    type_name = "string"

    def parse(self, raw: Any) -> str:
        from ringlog.storage.configdef import Invalid

        if isinstance(raw, (list, tuple)) and all(isinstance(r, str) for r in raw):
            raw = ",".join(raw)
        if not isinstance(raw, str):
            raise Invalid("expected DEFAULT or RULE:pattern/replacement/[LU], comma-separated")
        value = raw.strip()
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        from ringlog.storage.configdef import Invalid

        if not isinstance(value, str):
            raise Invalid("expected DEFAULT or RULE:pattern/replacement/[LU], comma-separated")
        try:
            parse_rules(value)
        except RuleError as exc:
            raise Invalid(str(exc)) from None

    def text(self, value: Any) -> str:
        return value

    def range_doc(self) -> str:
        return "DEFAULT, RULE:pattern/replacement/[LU]"
