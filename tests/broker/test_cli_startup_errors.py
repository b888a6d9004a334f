"""`ringlog broker` start-up mistakes: one clear line on stderr and a non-zero exit, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ringlog.broker.testing import BrokerProcess

RINGLOG = [sys.executable, "-m", "ringlog.client.cli", "broker"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RINGLOG, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def running(tmp_path):
    proc = BrokerProcess(str(tmp_path / "first")).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_port_in_use(running, tmp_path) -> None:
    result = _run("--data-dir", str(tmp_path / "second"), "--listen", running.bootstrap)
    assert result.returncode == 1
    # the line names the listener that could not bind
    assert f"cannot listen on {running.bootstrap}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_data_dir_in_use(running, tmp_path) -> None:
    result = _run("--data-dir", str(tmp_path / "first"), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert "in use by another process" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.path.exists(tmp_path / "first" / ".lock")


def test_bad_listen_value(tmp_path) -> None:
    result = _run("--data-dir", str(tmp_path / "d"), "--listen", "localhost:abc")
    assert result.returncode == 2
    assert result.stderr.strip() == ("ringlog broker: invalid value localhost:abc for configuration listen "
                                     "(--listen): the port abc is not a number (expected HOST:PORT)")
