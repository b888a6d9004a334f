"""Where the optional compiled loops (storage/_speedups.c, client/_speedups.c) are looked up.

Both are built at install time when a C compiler is there (pyproject: optional extensions).
Without them, or with RINGLOG_NO_SPEEDUPS=1, the lookup gives None and the callers run their
pure-Python loops, which give the same results and errors.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType


def optional_speedups(name: str) -> ModuleType | None:
    if os.environ.get("RINGLOG_NO_SPEEDUPS") == "1":
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


speedups = optional_speedups("storage._speedups")
