"""Fixtures for cluster mode: a real etcd (Debian's etcd-server) on loopback ports in a temporary
directory, healthy before the test starts; required in CI (RINGLOG_REQUIRE_TOOLS=1)."""
from __future__ import annotations

import pytest

from ringlog.client.cli.etcd_process import EtcdProcess
from tests.conftest import require_tool


@pytest.fixture
def etcd(tmp_path):
    require_tool("etcd")
    with EtcdProcess(str(tmp_path / "etcd")) as server:
        yield server
