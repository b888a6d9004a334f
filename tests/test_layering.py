"""The direction of imports is part of the design (docs/architecture.md): check it."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package (or sub-package) -> our packages it must not import
FORBIDDEN = {
    "storage": {"broker", "client", "trio"},
    "client/wire": {"broker", "trio"},
    "broker/coordinator": {"trio"},
    "client": {"broker"},
}
# The one deliberate exception: the `ringlog broker` subcommand starts the broker.
ALLOWED = {("client/cli/broker.py", "broker")}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_import_arrows() -> None:
    problems = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for name in _imports(path) & forbidden:
                if (rel, name) not in ALLOWED:
                    problems.append(f"{rel} imports {name}")
    assert not problems, problems
    # the check itself must see files, or it proves nothing
    assert list((ROOT / "storage").rglob("*.py"))
