"""The optional compiled record codec (client/_speedups.c), looked up once.

Without it, or with RINGLOG_NO_SPEEDUPS=1, `speedups` is None and the producer and consumer use
their pure-Python loops, which give the same bytes, records and errors.
"""
from __future__ import annotations

from storage._native import optional_speedups

speedups = optional_speedups("client._speedups")
