"""A local etcd server as a child process: for `ringlog dev-cluster` and the cluster tests.

Debian's etcd-server (3.4) on loopback ports in its own data directory. `start()` returns once
GET /health answers {"health":"true"}; `stop()` terminates it (SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_binary() -> str | None:
    return shutil.which("etcd")


class EtcdProcess:
    def __init__(self, data_dir: str, *, client_port: int | None = None, peer_port: int | None = None,
                 name: str = "ringlog-etcd") -> None:
        self.data_dir = data_dir
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(data_dir, "etcd.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 30.0) -> EtcdProcess:
        binary = etcd_binary()
        if binary is None:
            raise FileNotFoundError("etcd is not installed (apt-get install etcd-server)")
        os.makedirs(self.data_dir, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        cmd = [binary, "--name", self.name, "--data-dir", os.path.join(self.data_dir, "etcd"),
               "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", f"{self.name}={peer}", "--log-level", "warn",
               "--logger", "zap"]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.log_path}")
            if self.healthy():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd did not become healthy within {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.05)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
