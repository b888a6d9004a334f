"""Where the optional compiled loops of the record format (storage/_speedups.c) are looked up.

Built at install time when a C compiler is there (pyproject: an optional extension). Without it,
or with RINGLOG_NO_SPEEDUPS=1, `speedups` is None and storage.records runs its pure-Python
loops, which give the same results and errors.
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


speedups = optional_speedups("ringlog.storage._speedups")
