"""Docs that state facts the code decides are checked against the code."""
from __future__ import annotations

import re
from pathlib import Path

from broker.handlers import load_handlers

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
