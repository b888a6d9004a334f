"""Fixtures for the broker tests: a live broker on 127.0.0.1 port 0 in a background thread, and a
tiny raw Kafka client over client.wire for tests that need exact bytes on the wire."""
from __future__ import annotations

import socket
import struct

import attrs
import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.client.wire import decode_response, encode_request


@pytest.fixture
def broker_config(tmp_path) -> BrokerConfig:
    return BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"))


@pytest.fixture
def live_broker(broker_config):
    with BrokerThread(broker_config) as b:
        yield b


class RawClient:
    """Blocking socket client speaking kio entities through client.wire (for tests only)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.corr = 0

    def send(self, request, client_id: str = "raw") -> int:
        self.corr += 1
        self.sock.sendall(encode_request(request, correlation_id=self.corr, client_id=client_id))
        return self.corr

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        head = self._read_exact(4)
        (size,) = struct.unpack(">i", head)
        return self._read_exact(size)

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the broker")
            buf += chunk
        return bytes(buf)

    def receive(self, request):
        corr, resp = decode_response(self.read_frame(), int(request.__api_key__), int(request.__version__))
        return corr, resp

    def call(self, request):
        corr = self.send(request)
        got, resp = self.receive(request)
        assert got == corr
        return resp

    def is_closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_client(live_broker):
    clients = []

    def connect() -> RawClient:
        c = RawClient(live_broker.host, live_broker.port)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        c.close()


def with_config(config: BrokerConfig, **changes) -> BrokerConfig:
    return attrs.evolve(config, **changes)
