"""The key tables of docs/configuration.md, generated from the configuration schema.

    python -m ringlog.broker.config_docs            rewrite the generated tables of docs/configuration.md
    python -m ringlog.broker.config_docs --check    exit 1 when they differ from the schema

The tables sit between `<!-- generated: NAME -->` and `<!-- end: NAME -->` markers; the prose
around them is written by hand. tests/test_docs.py fails when they are out of date, so a key
added to broker.config or to the topic catalogue cannot be left out of the docs.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ringlog.storage.configdef import Setting, default_value

from .config import OWN_SETTINGS, TOPIC_DEFAULT_KEYS
from .topic_configs import TOPIC_CONFIGS

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

_UNITS_BYTES = ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))
_UNITS_MS = ((86_400_000, "days", "day"), (3_600_000, "h", "h"), (60_000, "min", "min"), (1000, "s", "s"))


def _human(key: str, value: Any) -> str:
    """ "(8 MiB)" or "(7 days)" after a round size or duration, else ""."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return ""
    if "bytes" in key:
        for size, unit in _UNITS_BYTES:
            if value >= size and value % size == 0:
                return f" ({value // size} {unit})"
    if key.endswith(".ms"):
        for size, plural, one in _UNITS_MS:
            if value >= size and value % size == 0:
                n = value // size
                return f" ({n} {one if n == 1 else plural})"
    if key.endswith(".minutes") and value % 1440 == 0:
        return f" ({value // 1440} days)"
    return ""


def _default(key: str) -> tuple[str, str, bool]:
    """(text, human form, whether the text is a value rather than prose) of a broker key's default."""
    attribute, spec = OWN_SETTINGS[key]
    if spec.default_doc is not None:
        return spec.default_doc, "", False
    value = default_value(attribute)
    return spec.text(value), _human(key, value), True


def default_text(key: str) -> str:
    """A broker key's default as --help shows it."""
    text, human, _ = _default(key)
    return text + human


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _names(spec: Setting) -> str:
    mark = "" if spec.kafka else " †"
    also = f" (also {', '.join(_code(a) for a in spec.aliases)})" if spec.aliases else ""
    return f"{_code(spec.key)}{mark}{also}"


def _flag(spec: Setting) -> str:
    if not spec.flag:
        return ""
    if spec.kind.type_name == "boolean":
        return f"`{spec.flag}` / `--no-{spec.flag.removeprefix('--')}`"
    return _code(spec.flag)


def broker_table() -> str:
    rows = ["| key | flag | type | default | range | meaning |", "|---|---|---|---|---|---|"]
    for key, (_, spec) in OWN_SETTINGS.items():
        text, human, is_value = _default(key)
        default = (_code(text) if is_value else text) + human
        rows.append("| " + " | ".join(_cell(c) for c in (
            _names(spec), _flag(spec), spec.kind.type_name, default, spec.kind.range_doc(), spec.doc)) + " |")
    return "\n".join(rows)


def topic_table() -> str:
    rows = ["| topic config | broker key (default of every topic) | type | default | range | meaning |",
            "|---|---|---|---|---|---|"]
    by_topic: dict[str, list[str]] = {}
    for broker_key, topic in TOPIC_DEFAULT_KEYS.items():
        by_topic.setdefault(topic, []).append(broker_key)
    for name, entry in TOPIC_CONFIGS.items():
        spec = entry.setting
        keys = by_topic.get(name, [])
        if keys:
            broker_keys = _code(keys[0]) + (f" (also {', '.join(_code(k) for k in keys[1:])})" if keys[1:] else "")
        elif spec.synonym:
            # a broker setting of its own sets this default (message.max.bytes, fsync, ...)
            broker_keys = _code(spec.synonym)
        else:
            broker_keys = ""
        mark = "" if spec.kafka else " †"
        default = _code(entry.default) + _human(name, spec.parse(entry.default)) if entry.default else "(empty)"
        rows.append("| " + " | ".join(_cell(c) for c in (
            _code(name) + mark, broker_keys, spec.kind.type_name, default, spec.kind.range_doc(), spec.doc)) + " |")
    return "\n".join(rows)


TABLES = {"broker-keys": broker_table, "topic-configs": topic_table}


def render(text: str) -> str:
    """`text` (the docs) with every generated table replaced by the schema's."""
    for name, make in TABLES.items():
        begin, end = f"<!-- generated: {name} -->", f"<!-- end: {name} -->"
        head, found, rest = text.partition(begin)
        if not found:
            raise ValueError(f"{DOC.name} has no {begin} marker")
        _, found, tail = rest.partition(end)
        if not found:
            raise ValueError(f"{DOC.name} has no {end} marker")
        text = f"{head}{begin}\n{make()}\n{end}{tail}"
    return text


def documented_keys(text: str) -> set[str]:
    """Every key (and alias) the generated tables of `text` name: the first column of the broker
    table, the broker-key column of the topic table."""
    import re

    keys: set[str] = set()
    for name, column in (("broker-keys", 0), ("topic-configs", 1)):
        block = text.split(f"<!-- generated: {name} -->", 1)[1].split(f"<!-- end: {name} -->", 1)[0]
        for line in block.strip().splitlines()[2:]:
            cell = line.strip("|").split(" | ")[column]
            keys.update(re.findall(r"`([^`]+)`", cell))
    return keys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    current = DOC.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{DOC} is out of date: run python -m ringlog.broker.config_docs", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
