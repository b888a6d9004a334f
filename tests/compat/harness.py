"""Running the compatibility harnesses (tests/compat/java, tests/compat/go) against a broker.

Each harness is a program built once per test session that takes a bootstrap address and a list
of scenario names, runs them one after another (a JVM takes seconds to start, so one run does
them all) and prints one JSON line per scenario:
``{"scenario": name, "ok": bool, "seconds": s, "result": {...}}`` or ``"error": "..."``.
The tests assert on those results and on what the broker itself stored (`stored_records`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

import attrs
import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.storage.batch import split_batches
from ringlog.storage.records import decode_records
from tests.conftest import REQUIRE_TOOLS

HERE = os.path.dirname(os.path.abspath(__file__))


def require_tools(*names: str) -> dict[str, str]:
    """Paths of the named executables; skip when one is missing (fail under RINGLOG_REQUIRE_TOOLS=1,
    which CI sets: .ci/run installs them)."""
    found = {name: shutil.which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        message = f"{', '.join(missing)} not installed (.ci/run installs them)"
        if REQUIRE_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    return found  # type: ignore[return-value]


def build(cmd: list[str], cwd: str, what: str, timeout: float, env: dict[str, str] | None = None) -> None:
    """Run a build command; a failure fails the tests with the build's output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"building the {what} harness took over {timeout:.0f} s: {' '.join(cmd)}")
    if proc.returncode != 0:
        pytest.fail(f"building the {what} harness failed ({' '.join(cmd)}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


def compat_broker_config(data_dir: str) -> BrokerConfig:
    # group.initial.rebalance.delay.ms 0: groups form at once instead of after Kafka's 3 s wait
    # group.consumer.heartbeat.interval.ms 500: consumer-protocol (KIP-848) members learn of new
    # assignments at their next heartbeat, 5 s apart by default
    return BrokerConfig(listen_port=0, data_dir=data_dir, group_initial_rebalance_delay_ms=0,
                        group_consumer_heartbeat_interval_ms=500)


@attrs.define
class HarnessRun:
    """The results of one harness run, by scenario, with the run's stderr for diagnosis."""

    what: str
    results: dict[str, dict[str, Any]]
    stderr: str
    broker: BrokerThread

    def result(self, scenario: str) -> dict[str, Any]:
        line = self.results.get(scenario)
        if line is None:
            pytest.fail(f"the {self.what} harness reported nothing for {scenario}; its stderr ends with:\n{self.stderr[-6000:]}")
        if not line.get("ok"):
            pytest.fail(f"{self.what} scenario {scenario} failed:\n{line.get('error')}\n--- stderr (end) ---\n{self.stderr[-6000:]}")
        return line["result"]


def run_harness(what: str, cmd: list[str], broker: BrokerThread, scenarios: Iterable[str], timeout: float,
                cwd: str | None = None, env: dict[str, str] | None = None) -> HarnessRun:
    scenarios = list(scenarios)
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        proc = subprocess.run([*cmd, broker.bootstrap, *scenarios], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, env=full_env)
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        # keep what was reported: the scenarios that finished still get their own verdicts
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = (exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")) + \
            f"\n[the {what} harness was killed after {timeout:.0f} s]"
    results = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["scenario"]] = entry
    return HarnessRun(what, results, stderr, broker)


def wanted_scenarios(request: pytest.FixtureRequest, known: Iterable[str]) -> list[str]:
    """The scenarios of the tests selected in this module (test_<scenario>), in `known`'s order, so
    that `-k` runs only what it needs."""
    module = request.module.__name__
    selected = {item.originalname.removeprefix("test_") for item in request.session.items
                if getattr(item, "module", None) is not None and item.module.__name__ == module}
    return [name for name in known if name in selected]


# --- what the broker stored ----------------------------------------------------------------------


@attrs.frozen
class Stored:
    """One stored record with its batch's header."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    codec: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    batch_base_offset: int

    def as_sent(self, partition: int) -> dict[str, Any]:
        """In the harnesses' report format (hex bytes), to compare with what a client sent."""
        return {
            "p": partition,
            "o": self.offset,
            "k": None if self.key is None else self.key.hex(),
            "v": None if self.value is None else self.value.hex(),
            "h": [[k, None if v is None else v.hex()] for k, v in self.headers],
        }


def stored_records(broker: BrokerThread, topic: str, partition: int) -> list[Stored]:
    """Every record of one partition as the broker stored it, read from its log on the broker's
    own thread (the log object belongs to that thread) and decoded by ringlog's storage code."""

    async def read() -> bytes:
        log = broker.broker.partition_log(topic, partition)
        assert log is not None, f"no log for {topic}-{partition}"
        return log.read_records_bytes(log.log_start_offset, 1 << 30)

    data = broker.call(read)
    out: list[Stored] = []
    for header, batch in split_batches(data):
        for rec in decode_records(batch, header):
            out.append(Stored(
                offset=rec.offset,
                timestamp=rec.timestamp,
                key=rec.key,
                value=rec.value,
                headers=tuple(rec.headers),
                codec=header.compression,
                producer_id=header.producer_id,
                producer_epoch=header.producer_epoch,
                base_sequence=header.base_sequence,
                batch_base_offset=header.base_offset,
            ))
    return out


def stored_batches(broker: BrokerThread, topic: str, partition: int) -> list:
    """Headers of a partition's stored batches."""

    async def read() -> list:
        log = broker.broker.partition_log(topic, partition)
        assert log is not None, f"no log for {topic}-{partition}"
        return list(log.iter_batch_headers(log.log_start_offset))

    return broker.call(read)


def without_timestamps(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "ts"} for r in records]


def by_partition_offset(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (r["p"], r["o"]))
