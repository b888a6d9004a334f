"""tests/bench/http_ingest.py keeps working: a tiny run (figures not checked, only that every
section printed one; the real figures are in docs/performance.md)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_http_ingest_benchmark_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tests.bench.http_ingest", "--seconds", "0.3", "--runs", "1",
                          "--connections", "2"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    for topic in ("plain", "piped", "fields"):
        assert f"median {topic}" in out.stdout
        assert f") {topic}: " in out.stdout and "p99" in out.stdout
