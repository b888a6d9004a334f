"""Apache Kafka itself, as a reference: a single-node KRaft server run from Maven's jars.

Used by `ringlog bench --systems ...,kafka` (the Kafka system beside ringlog and Tansu) and by the
differential tests (tests/compat/test_differential*.py), which send the same raw requests to it and
to ringlog. Both take the broker's classpath from the Maven project tests/compat/kafka-broker (its
pom names the Kafka release): `build_classpath(pom_dir)` runs `mvn dependency:build-classpath`
there, or a classpath built before is given as a string.

One combined broker+controller node (`process.roles=broker,controller`, node.id 1) with a static
quorum of itself (`controller.quorum.voters`), both listeners on loopback ports picked free, the
log dir formatted with `kafka.tools.StorageTool format` and a random cluster id, then `kafka.Kafka
server.properties`. Settings a one-node cluster needs (replication factor 1 of the internal
topics, no initial rebalance delay) are set; callers add or override any key with `overrides`.
It is ready when Metadata over the PLAINTEXT listener lists node 1: the broker has registered with
its controller and is unfenced, so topics can be created.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

from ..wire import FrameDecoder, decode_response, encode_request, request_class
from .brokers import BrokerStartError, _Process, free_port

NODE_ID = 1
DEFAULT_HEAP = "1g"

# A one-node cluster: internal topics with one replica, no rebalance delay, small segments so the
# log rolls in tests as ringlog's does.
BASE_PROPERTIES = {
    "process.roles": "broker,controller",
    "node.id": str(NODE_ID),
    "controller.listener.names": "CONTROLLER",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "inter.broker.listener.name": "PLAINTEXT",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "log.segment.bytes": str(1 << 20),
}

# Kafka's own log goes to stderr, warnings and above only (the pipe is drained into `lines`).
LOG4J2 = """status = warn
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
"""


def random_cluster_id() -> str:
    """A cluster id of Kafka's form (Uuid.randomUuid().toString(): 16 bytes, URL-safe base64,
    never starting with "-", which a command line would take for an option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def build_classpath(pom_dir: str, *, mvn: str | None = None, offline: bool = False, timeout: float = 600) -> str:
    """The broker's classpath from the Maven project in `pom_dir` (resolving its jars; `offline`
    uses only the local repository)."""
    mvn = mvn or shutil.which("mvn")
    if mvn is None:
        raise BrokerStartError("Apache Kafka's classpath needs Maven (mvn) on the PATH")
    out = os.path.join(pom_dir, "target", "classpath.txt")
    cmd = [mvn, "-B", "-q", *(["-o"] if offline else []), "dependency:build-classpath", f"-Dmdep.outputFile={out}"]
    try:
        res = subprocess.run(cmd, cwd=pom_dir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BrokerStartError(f"mvn dependency:build-classpath took over {timeout:.0f} s in {pom_dir}") from exc
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise BrokerStartError(f"mvn dependency:build-classpath failed in {pom_dir}:\n{tail}")
    with open(out) as f:
        return f.read().strip()


def write_properties(path: str, props: dict[str, str]) -> None:
    with open(path, "w") as f:
        for key, value in props.items():
            f.write(f"{key}={value}\n")


def _call(host: str, port: int, request, timeout: float = 2.0):
    """One request on a new connection; its decoded answer."""
    decoder = FrameDecoder()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(encode_request(request, correlation_id=1, client_id="ringlog-kafka-ref"))
        while (frame := decoder.next_frame()) is None:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            decoder.feed(chunk)
    _corr, resp = decode_response(frame, int(request.__api_key__), int(request.__version__))
    return resp


def _registered(host: str, port: int) -> bool:
    Md = request_class(3, 12)
    try:
        md = _call(host, port, Md(topics=(), allow_auto_topic_creation=False, include_topic_authorized_operations=False))
    except (OSError, ConnectionError, ValueError):
        return False
    return any(int(b.node_id) == NODE_ID for b in md.brokers)


class KafkaBroker(_Process):
    """A single-node Apache Kafka (KRaft) in a subprocess; `start()` formats a fresh log dir under
    `workdir` (a temporary one when None) and waits until it is ready."""

    name = "kafka"

    def __init__(self, classpath: str, workdir: str | None = None, *, java: str | None = None,
                 heap: str = DEFAULT_HEAP, overrides: dict[str, str] | None = None) -> None:
        super().__init__()
        self.classpath = classpath
        self.java = java or shutil.which("java") or "java"
        self.heap = heap
        self.overrides = dict(overrides or {})
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="kafka-ref-")
        self.data_dir = os.path.join(self.workdir, "data")
        self.cluster_id = random_cluster_id()
        self.ready_s = 0.0
        self.properties: dict[str, str] = {}

    def jvm(self, main: str, *args: str) -> list[str]:
        return [self.java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={os.path.join(self.workdir, 'log4j2.properties')}",
                "-cp", self.classpath, main, *args]

    def _configure(self, port: int, controller_port: int) -> str:
        props = dict(BASE_PROPERTIES)
        props.update({
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{controller_port}",
            "log.dirs": self.data_dir,
        })
        props.update(self.overrides)
        self.properties = props
        path = os.path.join(self.workdir, "server.properties")
        write_properties(path, props)
        with open(os.path.join(self.workdir, "log4j2.properties"), "w") as f:
            f.write(LOG4J2)
        return path

    def _format(self, path: str, timeout: float) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        cmd = self.jvm("kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}", f"--config={path}")
        # format is a short JVM run: a smaller heap than the broker's
        cmd = [c if not c.startswith(("-Xms", "-Xmx")) else c[:4] + "256m" for c in cmd]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise BrokerStartError(f"kafka-storage format took over {timeout:.0f} s") from exc
        if res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            raise BrokerStartError(f"kafka-storage format failed:\n{tail}")

    def start(self, timeout: float = 120.0, attempts: int = 3) -> "KafkaBroker":
        for _ in range(attempts):
            port, controller_port = free_port(), free_port()
            while controller_port == port:
                controller_port = free_port()
            path = self._configure(port, controller_port)
            t0 = time.perf_counter()
            self._format(path, timeout)
            self._spawn(self.jvm("kafka.Kafka", path))
            deadline = t0 + timeout
            while self.alive() and time.perf_counter() < deadline:
                if _registered(self.host, port) and self.alive():
                    self.port = port
                    self.ready_s = time.perf_counter() - t0
                    return self
                time.sleep(0.1)
            # died (a port taken between picking and binding) or too slow: once more on new ports
            self.kill9()
        raise BrokerStartError(f"Apache Kafka did not become ready:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "KafkaBroker":
        return self.start()


# `ringlog bench`: the classpath and heap of the Kafka system, set once by the command (configure)
_BENCH: dict[str, str | None] = {"classpath": None, "heap": DEFAULT_HEAP}


def configure(classpath: str, heap: str = DEFAULT_HEAP) -> None:
    _BENCH["classpath"], _BENCH["heap"] = classpath, heap


def bench_broker(workdir: str, partitions: int) -> KafkaBroker:
    """The benchmark's Kafka: the properties above with Kafka's defaults otherwise (flushing left to
    the OS page cache, as Kafka ships), auto-created topics with `partitions`."""
    if not _BENCH["classpath"]:
        raise BrokerStartError("Apache Kafka's classpath is not set (ringlog bench --kafka-classpath)")
    return KafkaBroker(str(_BENCH["classpath"]), workdir, heap=str(_BENCH["heap"]),
                       overrides={"num.partitions": str(partitions)})


def kafka_version(classpath: str) -> str | None:
    """The release of the kafka_2.13 jar on `classpath`."""
    for jar in classpath.split(os.pathsep):
        m = re.fullmatch(r"kafka_2\.13-(.+)\.jar", os.path.basename(jar))
        if m:
            return m.group(1)
    return None


def describe() -> dict[str, str | None]:
    """What the benchmark's report says of its Kafka."""
    return {"version": kafka_version(str(_BENCH["classpath"] or "")), "heap": _BENCH["heap"]}
