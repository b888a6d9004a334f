"""Idle and slow sockets must not lock clients out, and running out of file descriptors is an
answer, not a traceback.

Floods come from their own loopback addresses (all of 127.0.0.0/8 is loopback on Linux): the
attacker is one or two addresses, the real client connects from 127.0.0.1 as usual. Every wait is
on something observable: a socket reading EOF, a response, a log line.
"""
from __future__ import annotations

import logging
import os
import resource
import selectors
import socket
import struct
import threading
import time

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest

from ringlog.broker.config import BrokerConfig, apply_settings, parse_per_ip_overrides, validate
from ringlog.broker.connection_limits import PER_IP, TOTAL, ConnectionQuotas, RateLimitedLog, Refusal, resolve_overrides
from ringlog.broker.testing import BrokerProcess, BrokerThread
from ringlog.client.wire import encode_request
from tests.broker.conftest import RawClient
from tests.broker.test_protocol import fetch

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic  # noqa: E402

IDLE_FROM = "127.0.0.3"
LORIS_FROM = "127.0.0.4"
DEFAULT_PER_IP = BrokerConfig().max_connections_per_ip


def _can_bind(address: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


# Linux routes all of 127.0.0.0/8 to loopback; elsewhere only 127.0.0.1 may be configured.
needs_loopback_range = pytest.mark.skipif(
    not all(_can_bind(a) for a in (IDLE_FROM, LORIS_FROM, "127.0.0.5")),
    reason="needs 127.0.0.0/8 on the loopback interface")


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors():
    """The flood's sockets and the broker's ends of them live in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_from(source: str, host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((host, port))
    s.setblocking(False)
    return s


class Sockets:
    """Many client sockets, watched together for the broker closing them."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.opened_at: dict[socket.socket, float] = {}
        self.closed_at: dict[socket.socket, float] = {}

    def open(self, source: str, host: str, port: int, n: int) -> list[socket.socket]:
        out = []
        for _ in range(n):
            # The time before connecting: the broker may accept (and start the socket's clock)
            # before connect() has returned here, so a time taken after it could make a socket
            # closed exactly on time look early.
            started = time.monotonic()
            s = connect_from(source, host, port)
            self.opened_at[s] = started
            self.selector.register(s, selectors.EVENT_READ)
            out.append(s)
        return out

    def _poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed_at[s] = time.monotonic()
                self.selector.unregister(s)

    def wait_closed(self, among, count: int, timeout: float) -> set[socket.socket]:
        """Wait until `count` sockets of `among` have read EOF; return those."""
        among = set(among)
        deadline = time.monotonic() + timeout
        while len(among & self.closed_at.keys()) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(among & self.closed_at.keys())} of {count} sockets closed in {timeout} s"
            self._poll(min(left, 0.5))
        return among & self.closed_at.keys()

    def still_open(self, among) -> list[socket.socket]:
        self._poll(0)
        return [s for s in among if s not in self.closed_at]

    def close(self) -> None:
        for s in self.opened_at:
            s.close()
        self.selector.close()


@pytest.fixture
def sockets():
    group = Sockets()
    yield group
    group.close()


class Trickle:
    """Slow-loris senders: a frame's first byte, then one more byte every `every` seconds (the
    attack's own pace), never the whole frame."""

    def __init__(self, socks: list[socket.socket], every: float) -> None:
        self.socks = socks
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, s: socket.socket, byte: bytes) -> None:
        try:
            s.send(byte)
        except OSError:
            pass  # closed by the broker: that is what is being waited for

    def __enter__(self) -> Trickle:
        # 0x00 0x00 0x10 0x00: a frame of 4096 bytes; after the prefix, payload bytes
        for s in self.socks:
            self._send(s, b"\x00")
        self.thread.start()
        return self

    def _run(self) -> None:
        sent = 1
        while not self.stop.wait(self.every):
            byte = b"\x00\x10\x00"[sent - 1 : sent] if sent < 4 else b"x"
            for s in self.socks:
                self._send(s, byte)
            sent += 1

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


def round_trip(bootstrap: str, topic: str) -> None:
    """A real client's produce and fetch of one record (connecting on 127.0.0.1)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "socket.connection.setup.timeout.ms": 5000})
    p.produce(topic, b"through the flood", partition=0)
    assert p.flush(20) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = c.poll(1)
            if msg is not None and msg.error() is None:
                assert msg.value() == b"through the flood"
                return
        raise AssertionError("the record did not come back")
    finally:
        c.close()


def refusal_lines(caplog, limit: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "ringlog.server" and "refused a connection" in r.getMessage() and limit in r.getMessage()]


def _hard_limit() -> float:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return float("inf") if hard == resource.RLIM_INFINITY else hard


# Both take a few seconds. The full size needs ~7,000 descriptors in this process (the flood's
# ends, the broker's ends of the connections it holds): where the hard limit is lower, the
# bounded size (still more sockets than max.connections) stands in for it.
FLOODS = [
    pytest.param(1200, 100, id="1200-idle-100-slow"),
    pytest.param(5000, 500, id="5000-idle-500-slow", marks=pytest.mark.skipif(
        _hard_limit() < 8000, reason="the hard open-file limit is below 8000")),
]


@needs_loopback_range
@pytest.mark.parametrize("n_idle, n_slow", FLOODS)
def test_a_flood_of_idle_and_slow_sockets_with_default_settings_leaves_room_for_a_client(
        tmp_path, sockets, caplog, n_idle, n_slow) -> None:
    caplog.set_level(logging.INFO, logger="ringlog")
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"))
    assert n_idle > config.max_connections  # more than every slot there is
    with BrokerThread(config) as b:
        idle = sockets.open(IDLE_FROM, b.host, b.port, n_idle)
        slow = sockets.open(LORIS_FROM, b.host, b.port, n_slow)
        with Trickle(slow, every=1.0):
            # Past its max.connections.per.ip, each address's sockets are closed at once.
            sockets.wait_closed(idle, n_idle - DEFAULT_PER_IP, timeout=60)
            sockets.wait_closed(slow, max(0, n_slow - DEFAULT_PER_IP), timeout=60)
            round_trip(b.bootstrap, "real")
            # ... and only those: the idle timeout (10 min) and the read timeout (30 s) are far off.
            assert len(sockets.still_open(idle)) == DEFAULT_PER_IP
            assert len(sockets.still_open(slow)) == min(n_slow, DEFAULT_PER_IP)
        refused = b.broker.metrics.connections_refused
        assert refused == {PER_IP: n_idle - DEFAULT_PER_IP + max(0, n_slow - DEFAULT_PER_IP)}
    # which limit refused whom, without a line per refused socket
    lines = refusal_lines(caplog, PER_IP)
    assert lines and len(lines) <= 4, lines
    assert f"refused a connection from {IDLE_FROM}:" in lines[0]
    assert f"max.connections.per.ip {DEFAULT_PER_IP} reached" in lines[0]


@needs_loopback_range
@pytest.mark.parametrize("n_idle, n_slow", FLOODS)
def test_the_flood_is_reclaimed_by_the_idle_and_read_timeouts(tmp_path, sockets, caplog, n_idle, n_slow) -> None:
    caplog.set_level(logging.DEBUG, logger="ringlog.server")
    idle_s, read_s = 1.5, 1.0
    # One address may take every slot here: max.connections alone is what the flood fills.
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), max_connections_per_ip=n_idle + n_slow,
                          connections_max_idle_ms=int(idle_s * 1000),
                          socket_request_read_timeout_ms=int(read_s * 1000))
    with BrokerThread(config) as b:
        # The slow ones first: they get slots (accept is first come, first served); the idle
        # flood fills the rest and more. Which idle sockets got a slot depends on how fast the
        # broker accepts while slots come back, so the checks below do not assume an order.
        slow = sockets.open(LORIS_FROM, b.host, b.port, n_slow)
        with Trickle(slow, every=0.25):
            idle = sockets.open(IDLE_FROM, b.host, b.port, n_idle)
            sockets.wait_closed(slow, n_slow, timeout=60)
            sockets.wait_closed(idle, n_idle, timeout=60)
        refused = b.broker.metrics.connections_refused.get(TOTAL, 0)
        assert refused > 0
        # every socket was reclaimed, each by its own limit: a trickling socket is not idle, an
        # idle one has no frame begun
        assert b.broker.metrics.connections_closed == {
            "socket.request.read.timeout.ms": n_slow, "connections.max.idle.ms": n_idle - refused}
        assert b.broker.metrics.connections_refused == {TOTAL: refused}
        # ... and none early: every slow socket lived its read timeout; the only idle sockets
        # closed before the idle timeout are the ones refused at accept
        assert min(sockets.closed_at[s] - sockets.opened_at[s] for s in slow) >= read_s
        early = [s for s in idle if sockets.closed_at[s] - sockets.opened_at[s] < idle_s]
        assert len(early) <= refused
        round_trip(b.bootstrap, "after")
    timeouts = [r.getMessage() for r in caplog.records
                if "socket.request.read.timeout.ms" in r.getMessage() and r.levelno == logging.INFO]
    assert timeouts and len(timeouts) <= 4, timeouts  # rate-limited
    assert f"from {LORIS_FROM}:" in timeouts[0]
    assert any("connections.max.idle.ms" in r.getMessage() and f"from {IDLE_FROM}:" in r.getMessage()
               for r in caplog.records if r.levelno == logging.DEBUG)
    lines = refusal_lines(caplog, TOTAL)
    assert lines and f"max.connections {config.max_connections} reached" in lines[0]
    assert f"from {IDLE_FROM}:" in lines[0]


def api_versions(client: RawClient):
    return client.call(ApiVersionsRequest(client_software_name="t", client_software_version="1"))


def test_a_request_in_flight_is_not_idle(tmp_path) -> None:
    """A long-poll fetch outlasting connections.max.idle.ms keeps its connection."""
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), connections_max_idle_ms=300)
    with BrokerThread(config) as b:
        b.call(b.broker.create_topic, "quiet", 1)
        c = RawClient(b.host, b.port)
        try:
            started = time.monotonic()
            response = c.call(fetch("quiet", [(0, 0)], max_wait_ms=1500))  # five idle timeouts
            assert time.monotonic() - started >= 1.4
            assert response.responses[0].partitions[0].error_code == 0
            # once the answer has left, the idle clock runs again
            assert c.is_closed(timeout=10)
        finally:
            c.close()


def test_a_frame_sent_in_pieces_within_the_read_timeout_is_served(tmp_path) -> None:
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), socket_request_read_timeout_ms=1000)
    with BrokerThread(config) as b:
        c = RawClient(b.host, b.port)
        try:
            frame = encode_request(ApiVersionsRequest(client_software_name="t", client_software_version="1"),
                                   correlation_id=7, client_id="pieces")
            pieces = [frame[:2], frame[2:9], frame[9:]]
            for piece in pieces[:-1]:
                c.send_bytes(piece)
                time.sleep(0.25)  # the client's own pace: gaps, under the timeout in total
            c.send_bytes(pieces[-1])
            assert c.read_frame()[:4] == struct.pack(">i", 7)
            assert api_versions(c).error_code == 0
        finally:
            c.close()


def call_from(source: str, host: str, port: int) -> bool:
    """ApiVersions from `source`: True when answered, False when the broker closed at once."""
    c = RawClient.__new__(RawClient)
    c.corr = 0
    c.sock = connect_from(source, host, port)
    c.sock.setblocking(True)
    c.sock.settimeout(10)
    try:
        return api_versions(c).error_code == 0
    except ConnectionError:
        return False
    finally:
        c.close()


@needs_loopback_range
def test_per_ip_limit_and_overrides(tmp_path, sockets, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ringlog")
    config = apply_settings(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data")), {
        "max.connections.per.ip": "2",
        "max.connections.per.ip.overrides": "127.0.0.5:4, 127.0.0.7:0, localhost:3",
    })
    with BrokerThread(validate(config)) as b:
        plain = sockets.open("127.0.0.6", b.host, b.port, 3)
        more = sockets.open("127.0.0.5", b.host, b.port, 5)
        banned = sockets.open("127.0.0.7", b.host, b.port, 1)
        closed = sockets.wait_closed(plain + more + banned, 3, timeout=10)
        assert closed == {plain[2], more[4], banned[0]}
        # "localhost" resolved to 127.0.0.1 at start: 3 there
        local = sockets.open("127.0.0.1", b.host, b.port, 4)
        assert sockets.wait_closed(local, 1, timeout=10) == {local[3]}
        # a slot freed is a slot for the next one (once the broker has seen the close: retry on
        # the refusal, which is observable at once as EOF)
        sockets.selector.unregister(plain[0])
        plain[0].close()
        assert any(call_from("127.0.0.6", b.host, b.port) for _ in range(100))
    lines = refusal_lines(caplog, PER_IP)
    assert lines[0].startswith("refused a connection from 127.0.0.6:")
    assert "max.connections.per.ip 2 reached (127.0.0.6 already has 2 connection(s))" in lines[0]


def test_config_keys() -> None:
    assert parse_per_ip_overrides("host1:100,127.0.0.1:200") == {"host1": 100, "127.0.0.1": 200}
    assert parse_per_ip_overrides(" ::1:5 , [::2]:6,") == {"::1": 5, "::2": 6}
    assert parse_per_ip_overrides("") == {}
    for bad, message in [("host1", "expected HOST:LIMIT"), ("h:x", "is not a number"), ("h:-1", "at least 0")]:
        with pytest.raises(ValueError, match=message):
            apply_settings(BrokerConfig(), {"max.connections.per.ip.overrides": bad})
    with pytest.raises(ValueError, match="0 only with"):
        validate(apply_settings(BrokerConfig(), {"max.connections.per.ip": 0}))
    validate(apply_settings(BrokerConfig(), {"max.connections.per.ip": 0, "max.connections.per.ip.overrides": "a:1"}))
    for key in ("connections.max.idle.ms", "socket.request.read.timeout.ms"):
        with pytest.raises(ValueError, match=key):
            validate(apply_settings(BrokerConfig(), {key: 0}))
        validate(apply_settings(BrokerConfig(), {key: -1}))


def test_quotas_and_rate_limited_log() -> None:
    q = ConnectionQuotas(3, 2, {"10.0.0.9": 0})
    assert q.admit("10.0.0.1") is None and q.admit("10.0.0.1") is None
    assert q.admit("10.0.0.1") == Refusal(PER_IP, 2)
    assert q.admit("10.0.0.9") == Refusal(PER_IP, 0)
    assert q.admit("10.0.0.2") is None
    assert q.admit("10.0.0.3") == Refusal(TOTAL, 3)
    q.release("10.0.0.1")
    q.release("10.0.0.2")
    assert q.by_address == {"10.0.0.1": 1} and q.total == 1
    assert ConnectionQuotas(9, 1).admit("::ffff:10.0.0.1") is None
    assert resolve_overrides({"h": 5, "10.0.0.1": 7}, {"h": ["10.0.0.1", "10.0.0.2"]}) == {"10.0.0.1": 7, "10.0.0.2": 5}

    notes = RateLimitedLog(10.0)
    assert notes.should_log("a", 100.0) == 0
    assert notes.should_log("a", 101.0) is None
    assert notes.should_log("b", 101.0) == 0
    assert notes.should_log("a", 105.0) is None
    assert notes.should_log("a", 110.0) == 2
    assert notes.should_log("a", 121.0) == 0


# --- file descriptors ----------------------------------------------------------------------


def _limit_descriptors(n: int):
    def preexec() -> None:
        # soft and hard: the broker's start-up cannot raise it
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return preexec


def _no_traceback(proc: BrokerProcess) -> None:
    text = "\n".join(proc.lines)
    assert "Traceback" not in text, text[-3000:]


def test_out_of_descriptors_creating_topics_is_an_error_per_topic(tmp_path) -> None:
    data = tmp_path / "data"
    proc = BrokerProcess(str(data), "--set", "max.connections.per.ip=1000", preexec_fn=_limit_descriptors(256))
    with proc:
        assert any("open-file limit 256" in line and "fewer than max.connections" in line for line in proc.lines)
        admin = AdminClient({"bootstrap.servers": proc.bootstrap})
        created, failure = [], None
        for i in range(60):  # 10 partitions hold ~50 descriptors: 256 runs out well before this
            name = f"t{i}"
            try:
                admin.create_topics([NewTopic(name, 10, 1)], request_timeout=15)[name].result(20)
            except KafkaException as exc:
                failure = (name, exc.args[0])
                break
            created.append(name)
        assert failure is not None and created, "the descriptors never ran out"
        name, error = failure
        assert error.name() == "KAFKA_STORAGE_ERROR"
        assert error.str().startswith("too many open files: raise ulimit -n")
        # undone: nothing of the failed topic on disk or in the metadata
        assert not [p for p in os.listdir(data) if p.startswith(f"{name}-")]
        topics = admin.list_topics(timeout=15).topics
        assert name not in topics and set(created) <= set(topics)
        # the same again fails the same way (nothing leaked), and growing a topic too
        fs = admin.create_topics([NewTopic(name, 10, 1)], request_timeout=15)
        with pytest.raises(KafkaException, match="too many open files"):
            fs[name].result(20)
        fs = admin.create_partitions([NewPartitions(created[0], 40)], request_timeout=15)
        with pytest.raises(KafkaException, match="too many open files"):
            fs[created[0]].result(20)
        assert len(admin.list_topics(created[0], timeout=15).topics[created[0]].partitions) == 10
        grown = created[0]
        assert {p for p in os.listdir(data) if p.startswith(f"{grown}-")} == {f"{grown}-{i}" for i in range(10)}
        # still serving: deleting a topic gives its descriptors back, and then creating works
        p = Producer({"bootstrap.servers": proc.bootstrap, "linger.ms": 0})
        p.produce(created[0], b"still here", partition=0)
        assert p.flush(20) == 0
        admin.delete_topics([created[-1]], request_timeout=15)[created[-1]].result(20)
        admin.create_topics([NewTopic(name, 5, 1)], request_timeout=15)[name].result(20)
    _no_traceback(proc)
    assert any("creating topic" in line and "failed, undone" in line for line in proc.lines)


@needs_loopback_range
def test_out_of_descriptors_accepting_is_logged_once_and_recovers(tmp_path) -> None:
    proc = BrokerProcess(str(tmp_path / "data"), "--set", "max.connections.per.ip=1000",
                         preexec_fn=_limit_descriptors(128))
    flood: list[socket.socket] = []
    with proc:
        try:
            # The kernel completes every connect; the broker can take ~110 of them, then accept()
            # fails with EMFILE and the rest wait in the backlog.
            flood = [connect_from(IDLE_FROM, proc.host, proc.port) for _ in range(400)]
            line = proc.wait_line("accepting connections failed: EMFILE")
            assert "raise ulimit -n" in line
        finally:
            for s in flood:
                s.close()
        # once the flood is gone the broker accepts again. Until it has seen every flood
        # connection close, they still count against the descriptor-derived connection limit, and
        # a new one may be refused (reset): retry, for a bounded time.
        deadline = time.monotonic() + 30
        while True:
            c = RawClient(proc.host, proc.port)
            try:
                assert api_versions(c).error_code == 0
                break
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
            finally:
                c.close()
        lines = [line for line in proc.lines if "accepting connections failed" in line]
        assert len(lines) <= 2, lines  # at most one per 10 s, however often accept() failed
    _no_traceback(proc)
