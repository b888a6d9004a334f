"""Docs that state facts the code decides are checked against the code."""
from __future__ import annotations

import re
from pathlib import Path

from ringlog.broker.handlers import load_handlers

ROOT = Path(__file__).resolve().parent.parent


def test_compatibility_table_matches_the_handler_registry() -> None:
    text = (ROOT / "docs" / "compatibility.md").read_text()
    table = text.split("## APIs", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[int(cells[1])] = (cells[2], cells[3])

    def window(lo: int, hi: int) -> str:
        return str(lo) if lo == hi else f"{lo}-{hi}"

    expected = {
        key: (window(spec.advertise_min_version, spec.max_version), window(spec.min_version, spec.max_version))
        for key, spec in load_handlers().items()
    }
    assert rows == expected


def test_readme_commands_are_the_ci_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    assert test_command.strip() in ci


def test_configuration_tables_are_the_schema() -> None:
    from ringlog.broker.config import all_keys
    from ringlog.broker.config_docs import documented_keys, render

    text = (ROOT / "docs" / "configuration.md").read_text()
    # every key with its type, default, range and meaning, exactly as the schema declares them
    assert render(text) == text, "docs/configuration.md is out of date: run python -m ringlog.broker.config_docs"
    # and the tables name exactly the keys a TOML file or --set accepts, aliases included
    assert documented_keys(text) == set(all_keys())
    # the flags shown are the ones `ringlog broker` has
    from ringlog.client.cli.broker import _flag_settings

    for spec, _ in _flag_settings():
        assert f"`{spec.flag}`" in text
