"""Brokers for the client tests: Tansu (a third-party Kafka-compatible broker, as a subprocess) and
ringlog itself (in a background thread). Tests parametrized over `broker` run against both."""
from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.conftest import tansu_binary


def _free_port() -> int:
    # Tansu needs a port on its command line: ask the kernel for a free one on 127.0.0.1.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("tansu did not start listening")


@pytest.fixture(scope="session")
def tansu_bootstrap():
    binary = tansu_binary()
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def ringlog_bootstrap(tmp_path_factory):
    from ringlog.broker.testing import BrokerThread

    with BrokerThread(data_dir=str(tmp_path_factory.mktemp("ringlog-client"))) as b:
        yield b.bootstrap


@pytest.fixture(params=["tansu", "ringlog"])
def bootstrap(request):
    return request.getfixturevalue(f"{request.param}_bootstrap")
