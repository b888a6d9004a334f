"""Helpers for the CLI tests: run `ringlog` as a user does (a separate process), and a live broker
(background thread, port 0) per test module."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread

_SCRIPT = Path(sys.executable).with_name("ringlog")
RINGLOG = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from client.cli import main; sys.exit(main())"
]
ROOT = Path(__file__).resolve().parents[2]


def ringlog(*args, input: str | bytes | None = None, env: dict | None = None, timeout: float = 30,
            text: bool = True) -> subprocess.CompletedProcess:
    """Run `ringlog ARGS`; RINGLOG_BOOTSTRAP is removed unless `env` sets it."""
    e = {k: v for k, v in os.environ.items() if k != "RINGLOG_BOOTSTRAP"}
    e["PYTHONPATH"] = str(ROOT)
    e.update(env or {})
    if isinstance(input, str) and not text:
        input = input.encode()
    return subprocess.run(
        RINGLOG + [str(a) for a in args], input=input, capture_output=True, text=text,
        timeout=timeout, env=e, cwd=ROOT,
    )


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


def one_error_line(p: subprocess.CompletedProcess, code: int, expected: str | None = None) -> str:
    """The command failed with `code` and said so in exactly one line, no traceback."""
    assert p.returncode == code, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    if expected is not None:
        assert lines[0] == expected
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def strip_timestamps(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timestamp"} for r in rows]


def normalize(text: str, bootstrap: str) -> str:
    return text.replace(bootstrap, "HOST:PORT")


PORT_RE = re.compile(r"127\.0\.0\.1:\d+")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker for the whole module (fresh data dir); tests use their own topic names. Groups
    form at once (no initial rebalance delay): every `consume --group` would wait for it."""
    data = tmp_path_factory.mktemp("broker-data")
    config = BrokerConfig(listen_port=0, data_dir=str(data), group_initial_rebalance_delay_ms=0)
    with BrokerThread(config) as b:
        yield b
