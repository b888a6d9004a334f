"""Running a broker for tests and embedding.

* `open_broker(config)` (broker.server): inside a Trio program.
* `BrokerThread(config)`: a broker with its own `trio.run` in a background thread, for synchronous
  third-party clients (confluent-kafka, kafka-python)::

      with BrokerThread(BrokerConfig(listen_port=0, data_dir=tmp)) as b:
          Producer({"bootstrap.servers": b.bootstrap})

* `BrokerProcess(data_dir, *args)`: `ringlog broker --listen 127.0.0.1:0` as a subprocess; the
  bound port is read from its ready line. `kill()` sends SIGKILL (crash tests), `stop()` SIGTERM.
* the pytest fixture `ringlog_broker` (a BrokerThread on a temporary data dir): enable it with
  `pytest_plugins = ["ringlog.broker.testing"]` or import it into a conftest.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import attrs
import trio

from .config import BrokerConfig
from .server import open_broker

READY_RE = re.compile(r"ringlog broker ready on (\S+):(\d+)")

# `ringlog broker ARGS...` without building the other subcommands' parsers: the crash tests only
# depend on the broker.
_ENTRY = (
    "import argparse, sys\n"
    "from client.cli import broker as command\n"
    "parser = argparse.ArgumentParser(prog='ringlog broker')\n"
    "command.register(parser.add_subparsers(dest='command'))\n"
    "args = parser.parse_args(['broker', *sys.argv[1:]])\n"
    "sys.exit(args.func(args))\n"
)


class BrokerThread:
    def __init__(self, config: BrokerConfig | None = None, **overrides: Any) -> None:
        # A data dir this object made itself is removed by stop(); one given by the caller is kept.
        self._own_dir: str | None = None
        if config is None:
            data_dir = overrides.pop("data_dir", None)
            if data_dir is None:
                data_dir = self._own_dir = tempfile.mkdtemp(prefix="ringlog-")
            config = BrokerConfig(listen_port=0, data_dir=data_dir)
        if overrides:
            config = attrs.evolve(config, **overrides)
        self.config = config
        self.broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop_scope: trio.CancelScope | None = None
        self._error: BaseException | None = None

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    def start(self, timeout: float = 30.0) -> BrokerThread:
        self._thread = threading.Thread(target=self._run, name="ringlog-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("broker did not start")
        if self._error is not None:
            raise RuntimeError("broker failed to start") from self._error
        return self

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._stop_scope = scope
                async with open_broker(self.config) as broker:
                    self.broker = broker
                    # Ready once the group coordinator has read __consumer_offsets: before that
                    # it answers COORDINATOR_LOAD_IN_PROGRESS, which real clients retry but a
                    # test's single raw request would take as its answer.
                    with trio.move_on_after(30):
                        await broker.coordinator.loaded.wait()
                    self._ready.set()
                    await trio.sleep_forever()

        try:
            trio.run(main)
        except BaseException as exc:  # reported to start()/stop()
            self._error = exc
        finally:
            self._ready.set()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run async `fn(*args)` on the broker's Trio thread and return its result."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._stop_scope is not None:
            try:
                self._token.run_sync_soon(self._stop_scope.cancel)
            except trio.RunFinishedError:
                pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("broker thread did not stop")
        self._thread = None
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None
        if self._error is not None:
            raise RuntimeError("broker failed") from self._error

    def __enter__(self) -> BrokerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class BrokerProcess:
    """`ringlog broker` in a subprocess listening on 127.0.0.1 port 0."""

    def __init__(self, data_dir: str, *args: str, env: dict[str, str] | None = None,
                 preexec_fn: Any = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.env = env
        self.preexec_fn = preexec_fn  # run in the child before exec (e.g. to lower its ulimit -n)
        self.proc: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self._reader: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BrokerProcess:
        cmd = [sys.executable, "-c", _ENTRY, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir, *self.args]
        env = dict(os.environ)
        env.update(self.env or {})
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                                     preexec_fn=self.preexec_fn)
        ready = threading.Event()

        def drain() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                with self._new_line:
                    self.lines.append(line.rstrip("\n"))
                    self._new_line.notify_all()
                m = READY_RE.search(line)
                if m and not ready.is_set():
                    self.host, self.port = m.group(1), int(m.group(2))
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=drain, daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or not self.port:
            self.kill()
            raise RuntimeError("broker process did not become ready:\n" + "\n".join(self.lines[-30:]))
        return self

    def wait_line(self, text: str, timeout: float = 30.0) -> str:
        """The first log line containing `text`, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        with self._new_line:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    raise TimeoutError(f"no log line with {text!r}:\n" + "\n".join(self.lines[-30:]))
                self._new_line.wait(min(left, 1.0))

    def kill(self) -> None:
        """SIGKILL: a crash, nothing gets flushed or closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the clean shutdown; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixture
    pytest = None

if pytest is not None:

    @pytest.fixture
    def ringlog_broker(tmp_path):
        """A running broker (background thread) on a fresh data dir; `.bootstrap` for clients."""
        with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"))) as b:
            yield b
