"""A live broker with the HTTP gateway on 127.0.0.1 port 0 (broker.httpd), in a background thread."""
from __future__ import annotations

import time
from typing import Any

import attrs
import httpx
import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread

PIPELINES = {
    "secure": {"stages": [
        {"type": "filter", "field": "level", "equals": ["DEBUG"], "action": "drop"},
        {"type": "mask", "fields": ["user.email"], "mode": "hmac", "key": "k1"},
        {"type": "mask", "regex": r"\b\d{16}\b", "mode": "keep_last", "keep_last": 4},
        {"type": "enrich", "fields": {"env": "test"}},
    ]},
}


def gateway_config(tmp_path, **overrides: Any) -> BrokerConfig:
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), http_listen_host="127.0.0.1",
                          http_listen_port=0, group_initial_rebalance_delay_ms=0, pipelines=PIPELINES)
    return attrs.evolve(config, **overrides)


class Gateway:
    def __init__(self, thread: BrokerThread) -> None:
        self.thread = thread
        host, port = thread.broker.http_address
        self.url = f"http://{host}:{port}"
        self.address = (host, port)
        self.http = httpx.Client(base_url=self.url, timeout=10)

    @property
    def bootstrap(self) -> str:
        return self.thread.bootstrap

    def create_topic(self, name: str, partitions: int = 1, configs: dict[str, str] | None = None) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})])[name].result(10)


@pytest.fixture
def gw(tmp_path):
    with BrokerThread(gateway_config(tmp_path)) as b:
        g = Gateway(b)
        try:
            yield g
        finally:
            g.http.close()


def consume_all(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Any]:
    """`count` messages of `topic` from the beginning, read by confluent-kafka."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}-{time.monotonic_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append(m)
    finally:
        c.close()
    return out


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
