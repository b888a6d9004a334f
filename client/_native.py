"""Where the optional compiled record codec (client/_speedups.c) is looked up, once.

It is built at install time when a C compiler is there (pyproject: an optional extension). Without
it, or with RINGLOG_NO_SPEEDUPS=1, `speedups` is None and the producer and consumer use their
pure-Python loops, which give the same bytes, records and errors.
"""
from __future__ import annotations

import os
from types import ModuleType

speedups: ModuleType | None
try:
    from client import _speedups as speedups
except ImportError:
    speedups = None
if os.environ.get("RINGLOG_NO_SPEEDUPS") == "1":
    speedups = None
