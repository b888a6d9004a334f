"""The direction of imports is part of the design (docs/architecture.md): check it.

The contracts are import-linter's, in pyproject.toml ([tool.importlinter]); import-linter builds
the whole import graph of ringlog.storage, ringlog.client and ringlog.broker (relative imports,
imports inside functions, and chains through other modules all count) and checks every contract
against it. It walks a copy of the three folders laid out as the installed package (ringlog/ with
broker/, client/, storage/ inside): the repository maps them to ringlog.* at install time, which
an import-graph builder walking directories cannot follow. The second test shows the check is
not vacuous: a copy with one forbidden import added fails, and names the import.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("storage", "client", "broker")


def _contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def _lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports over the packages under `root` (first on the path, so a copy shadows the
    installed tree), with the contracts of `root`/pyproject.toml."""
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300,
    )


def _summary(out: str) -> tuple[int, int]:
    m = re.search(r"Contracts: (\d+) kept, (\d+) broken\.", out)
    assert m, out
    return int(m[1]), int(m[2])


def test_import_contracts_hold(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    result = _lint(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # every contract of pyproject.toml ran (a contract import-linter skipped proves nothing)
    assert _summary(out) == (len(_contracts()), 0)


def _copy_tree(dest: Path) -> None:
    """The installed layout: dest/ringlog/{__init__.py, storage/, client/, broker/}."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / "ringlog" / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    shutil.copy(ROOT / "ringlog" / "__init__.py", dest / "ringlog" / "__init__.py")
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _append(path: Path, code: str) -> None:
    with open(path, "a") as f:
        f.write("\n" + code + "\n")


# (file, code appended to it, contracts it breaks, lines the report must contain)
VIOLATIONS = {
    # a relative import, which a walk of absolute names misses
    "relative": ("client/wire/framing.py", "from ..producer import Producer  # noqa: E402,F401",
                 {"wire-sans-io"}, ["ringlog.client.wire.framing -> ringlog.client.producer"]),
    # an import inside a function
    "in-function": ("storage/checkpoint.py", "def _later():\n    import trio  # noqa: F401",
                    {"storage-bottom"}, ["ringlog.storage.checkpoint -> trio"]),
    # no file of broker/coordinator imports trio, but the coordinator reaches it through
    # client.assignors, which it may import
    "transitive": ("client/assignors.py", "from .connection import ApiKey  # noqa: E402,F401",
                   {"coordinator-sans-io", "assignors-pure"},
                   ["ringlog.broker.coordinator.state -> ringlog.client.assignors", "ringlog.client.assignors -> ringlog.client.connection",
                    "ringlog.client.connection -> trio"]),
    # the engine is the broker's, not the client's: through storage.records is no way round
    "through-the-format": ("storage/records.py", "from .log import PartitionLog  # noqa: E402,F401",
                           {"storage-format"}, ["ringlog.storage.records -> ringlog.storage.log"]),
    # only `ringlog broker` may pull in the broker
    "broker-from-client": ("client/consumer.py", "from .cli import broker as _broker  # noqa: E402,F401",
                           {"cli-apart", "broker-command-alone"}, ["ringlog.client.consumer -> ringlog.client.cli.broker"]),
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, case: str) -> None:
    file, code, broken, lines = VIOLATIONS[case]
    _copy_tree(tmp_path)
    _append(tmp_path / "ringlog" / file, code)
    result = _lint(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    names = {c["id"]: c["name"] for c in _contracts()}
    assert _summary(out) == (len(names) - len(broken), len(broken)), out
    flat = "".join(out.split())  # the report wraps and pads contract names
    for contract in broken:
        assert "".join(f"{names[contract]} BROKEN".split()) in flat, out
    for line in lines:
        assert line in out, out
