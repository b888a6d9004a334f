"""Mistakes and failures a user meets, one row each: `ringlog` run as a subprocess must answer
with a line that says what is wrong (checked as a substring), the documented exit code, and never
a traceback. Brokers are real (the module's BrokerThread on loopback); no mocks."""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from .conftest import ok, ringlog

# --- what a failure must look like ------------------------------------------------------------


def _no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr, p.stderr


def shape_one_line(p: subprocess.CompletedProcess) -> str:
    """A command's own error: exactly one line on stderr, nothing else."""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def shape_usage(p: subprocess.CompletedProcess) -> str:
    """argparse's refusal: its usage block, then one error line."""
    lines = p.stderr.splitlines()
    assert lines and lines[0].startswith("usage: "), p.stderr
    assert all(line.startswith(" ") for line in lines[1:-1]), p.stderr
    return lines[-1]


# --- the situations -----------------------------------------------------------------------------


@attrs.frozen
class Ctx:
    bootstrap: str
    data_dir: Path  # the module broker's
    tmp: Path  # this test's own


@attrs.frozen
class Case:
    id: str
    # returns the arguments of `ringlog`, after preparing what the case needs
    args: Callable[[Ctx], list[str]]
    code: int
    # a substring of the message; {bootstrap} and {tmp} are filled in
    says: str
    shape: Callable[[subprocess.CompletedProcess], str] = shape_one_line


def _create(name: str, *more: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["topics", "create", name, *more, "-b", c.bootstrap]


CASES = [
    # 1. numbers the Kafka wire cannot carry are refused before anything is sent
    Case("partitions-beyond-int32", _create("huge", "--partitions", "99999999999"), 2,
         "argument --partitions/-p: 99999999999 is too large (at most 2147483647)", shape_usage),
    Case("partitions-int32-plus-one", _create("huge", "--partitions", "2147483648"), 2,
         "2147483648 is too large (at most 2147483647)", shape_usage),
    Case("replication-factor-beyond-int16", _create("huge", "--replication-factor", "32768"), 2,
         "argument --replication-factor: 32768 is too large (at most 32767)", shape_usage),
    Case("add-partitions-beyond-int32",
         lambda c: ["topics", "add-partitions", "huge", "--partitions", "99999999999", "-b", c.bootstrap], 2,
         "99999999999 is too large (at most 2147483647)", shape_usage),
    # ... and within int32 the broker's own limit answers, without repeating the topic name
    Case("partitions-over-broker-limit", _create("huge", "--partitions", "2147483647"), 1,
         "ringlog topics create: invalid number of partitions for 'huge': 2147483647 partitions is "
         "more than the limit of 10000"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_error(case: Case, broker, tmp_path) -> None:
    ctx = Ctx(broker.bootstrap, Path(broker.config.data_dir), tmp_path)
    p = ringlog(*case.args(ctx), timeout=60)
    assert p.returncode == case.code, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    _no_traceback(p)
    message = case.shape(p)
    assert case.says.format(bootstrap=ctx.bootstrap, tmp=tmp_path) in message
