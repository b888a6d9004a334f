"""`ringlog dev-cluster`, `ringlog cluster status` and `ringlog topics create -r`: the commands a
user tries cluster mode with."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import require_tool

from .conftest import describe, wait_until

RINGLOG = [sys.executable, "-m", "ringlog.client.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*RINGLOG, *args], capture_output=True, text=True, timeout=timeout)


def test_dev_cluster_status_and_replicated_topic(tmp_path):
    require_tool("etcd")
    proc = subprocess.Popen([*RINGLOG, "dev-cluster", "--brokers", "2", "--data-dir", str(tmp_path / "dev")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        line = wait_until(lambda: next((x for x in lines if x.startswith("bootstrap: ")), None), timeout=120,
                          what="the bootstrap line")
        bootstrap = line.split(": ", 1)[1]
        assert len(bootstrap.split(",")) == 2
        created = run("topics", "create", "dev", "-p", "2", "-r", "2", "--bootstrap", bootstrap)
        assert created.returncode == 0, created.stderr
        assert all(sorted(r) == [1, 2] for _, r, _ in describe(bootstrap, "dev").values())
        too_many = run("topics", "create", "three", "-r", "3", "--bootstrap", bootstrap)
        assert too_many.returncode == 1 and "only 2 broker(s)" in too_many.stderr
        # changes after creation are refused, not made on one broker alone
        deleted = run("topics", "delete", "dev", "--bootstrap", bootstrap)
        assert deleted.returncode == 1 and "POLICY_VIOLATION" in deleted.stderr, deleted.stderr
        status = wait_until(lambda: (r := run("cluster", "status", "--json", "--bootstrap", bootstrap))
                            .returncode == 0 and r, timeout=30, what="a fully replicated cluster")
        doc = json.loads(status.stdout)
        assert [b["node_id"] for b in doc["brokers"]] == [1, 2]
        assert doc["controller"] in (1, 2) and doc["under_replicated"] == [] and doc["offline"] == []
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, proc.stderr.read()
    # every broker and etcd stopped with it: nothing listens on their ports any more
    etcd_url = next(x for x in lines if x.startswith("etcd: ")).split(": ", 1)[1]
    for hostport in [*bootstrap.split(","), etcd_url.removeprefix("http://")]:
        host, port = hostport.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5).close()


def test_broker_without_etcd_fails_with_one_line(tmp_path):
    from ringlog.client.cli.etcd_process import free_port

    result = run("broker", "--node-id", "1", "--etcd", f"http://127.0.0.1:{free_port()}", "--data-dir",
                 str(tmp_path / "d"), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert "cannot start: cannot join cluster 'ringlog'" in result.stderr and "Traceback" not in result.stderr
    bad = run("broker", "--etcd", "https://h:1", "--data-dir", str(tmp_path / "d"))
    assert bad.returncode == 2 and "only http:// is supported" in bad.stderr
