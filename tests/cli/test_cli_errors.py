"""Mistakes and failures a user meets, one row each: `ringlog` run as a subprocess must answer
with a line that says what is wrong (checked as a substring), the documented exit code, and never
a traceback. Brokers are real (the module's BrokerThread on loopback); no mocks."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from .conftest import ROOT, ok, ringlog

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


def shape_broker_log(p: subprocess.CompletedProcess) -> str:
    """`ringlog broker` failing to start: its info lines so far, then one error line, the last."""
    lines = p.stderr.splitlines()
    errors = [line for line in lines if "level=error" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], p.stderr
    return errors[0]


def shape_success(p: subprocess.CompletedProcess) -> str:
    """Not a failure: the answer is stdout, stderr stays empty."""
    assert p.stderr == "", p.stderr
    return p.stdout


# --- the situations -----------------------------------------------------------------------------


@attrs.frozen
class Ctx:
    bootstrap: str
    data_dir: Path  # the module broker's
    tmp: Path  # this test's own


def _first_segment(ctx: Ctx, topic: str, partition: int = 0) -> Path:
    return ctx.data_dir / f"{topic}-{partition}" / "00000000000000000000.log"


def corrupt_first_batch(path: Path) -> None:
    """Flip the last byte of the first batch in a segment, under the running broker.

    Done while the broker runs rather than between a stop and a start: a start after an unclean
    stop scans the logs and cuts a batch whose CRC fails, so nothing corrupt would be served. The
    broker answers Fetch with sendfile from the page cache, which this write goes through."""
    with open(path, "r+b") as f:
        header = f.read(61)
        assert len(header) == 61, "the segment has no batch yet"
        # batch layout: baseOffset int64, batchLength int32 (bytes after these 12), ...; the
        # CRC-32C covers bytes 21 to the end, so the last byte is inside it
        size = 12 + struct.unpack_from(">i", header, 8)[0]
        f.seek(size - 1)
        byte = f.read(1)
        assert len(byte) == 1
        os.pwrite(f.fileno(), bytes([byte[0] ^ 0xFF]), size - 1)


def damaged_topic(ctx: Ctx, topic: str) -> None:
    ok(ringlog("topics", "create", topic, "-p", "1", "-b", ctx.bootstrap))
    ok(ringlog("produce", topic, "-b", ctx.bootstrap, input="one\ntwo\nthree\n"))
    corrupt_first_batch(_first_segment(ctx, topic))


def topics_file(ctx: Ctx, text: str) -> Path:
    data = ctx.tmp / "data"
    data.mkdir()
    (data / "topics.json").write_text(text)
    return data


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


def _existing_then(name: str, *args: str) -> Callable[[Ctx], list[str]]:
    def prepare(c: Ctx) -> list[str]:
        ok(ringlog("topics", "create", name, "-p", "2", "-b", c.bootstrap))
        return [*args, "-b", c.bootstrap]
    return prepare


def _damaged_then(name: str, *args: str) -> Callable[[Ctx], list[str]]:
    def prepare(c: Ctx) -> list[str]:
        damaged_topic(c, name)
        return [*args, "-b", c.bootstrap]
    return prepare


def _broker_on(text: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["broker", "--data-dir", str(topics_file(c, text)), "--listen", "127.0.0.1:0"]


_ADVICE = "restore the file from a backup, or move it aside"

CASES = [
    # 1. numbers the Kafka wire cannot carry are refused before anything is sent
    Case("partitions-beyond-int32", _create("huge", "--partitions", "99999999999"), 2,
         "argument --partitions/-p: 99999999999 is too large (at most 2147483647)", shape_usage),
    Case("partitions-int32-plus-one", _create("huge", "--partitions", "2147483648"), 2,
         "2147483648 is too large (at most 2147483647)", shape_usage),
    Case("replication-factor-beyond-int16", _create("huge", "--replication-factor", "32768"), 2,
         "argument --replication-factor/-r: 32768 is too large (at most 32767)", shape_usage),
    Case("add-partitions-beyond-int32",
         lambda c: ["topics", "add-partitions", "huge", "--partitions", "99999999999", "-b", c.bootstrap], 2,
         "99999999999 is too large (at most 2147483647)", shape_usage),
    # ... and within int32 the broker's own limit answers, without repeating the topic name
    Case("partitions-over-broker-limit", _create("huge", "--partitions", "2147483647"), 1,
         "ringlog topics create: invalid number of partitions for 'huge': 2147483647 partitions is "
         "more than the limit of 10000 per topic (max.partitions.per.topic raises it)"),
    # 2. a batch whose CRC fails names where it is
    Case("consume-bad-crc", _damaged_then("damaged", "consume", "damaged", "--from", "beginning", "-e"), 1,
         "ringlog consume: corrupt data in topic 'damaged' partition 0: CRC-32C mismatch in the batch at offset 0"),
    Case("consume-bad-crc-in-group",
         _damaged_then("damaged-g", "consume", "damaged-g", "--group", "g-damaged", "--from", "beginning", "-e"), 1,
         "ringlog consume: corrupt data in topic 'damaged-g' partition 0: CRC-32C mismatch in the batch at offset 0"),
    # 3. a damaged topics.json: which file, what is wrong, what to do; exit 2
    Case("topics-json-not-json", _broker_on('{"version": 1, "topics": {'), 2,
         "cannot start: {tmp}/data/topics.json: not valid JSON (", shape_broker_log),
    Case("topics-json-empty", _broker_on(""), 2,
         "cannot start: {tmp}/data/topics.json: empty, no JSON in it; " + _ADVICE, shape_broker_log),
    Case("topics-json-bad-entry", _broker_on('{"version": 1, "topics": {"t": {"partitions": 2}}}'), 2,
         "topics.json: topic 't' has no topic_id field; " + _ADVICE, shape_broker_log),
    Case("topics-json-bad-count",
         _broker_on('{"version": 1, "topics": {"t": {"partitions": "many", "topic_id": "x"}}}'), 2,
         "topics.json: topic 't': partitions 'many' is not a number; " + _ADVICE, shape_broker_log),
    Case("topics-json-other-version", _broker_on('{"version": 7, "topics": {}}'), 2,
         "topics.json: format version 7, this broker reads version 1; " + _ADVICE, shape_broker_log),
    # 5. produce --file: the file's problem, not "cannot reach a broker"
    Case("produce-file-is-a-directory", lambda c: ["produce", "t5", "--file", str(c.tmp), "-b", c.bootstrap], 2,
         "ringlog produce: {tmp}: is a directory, not a file of lines"),
    Case("produce-file-missing",
         lambda c: ["produce", "t5", "--file", str(c.tmp / "missing.txt"), "-b", c.bootstrap], 2,
         "ringlog produce: {tmp}/missing.txt: No such file or directory"),
    # 6. --if-exists / --if-not-exists succeed, and say what happened
    Case("delete-if-exists-of-missing-topic",
         lambda c: ["topics", "delete", "never-was", "--if-exists", "-b", c.bootstrap], 0,
         "Topic never-was does not exist; nothing deleted.\n", shape_success),
    Case("create-if-not-exists-of-existing-topic",
         _existing_then("twice", "topics", "create", "twice", "-p", "5", "--if-not-exists"), 0,
         "Topic twice already exists with 2 partitions; nothing created.\n", shape_success),
    # 7. a bad configuration value: one line naming key, value and expectation, exit 2 (every kind of
    # mistake, from a file, a flag or --set, has its row in test_config_errors.py)
    Case("broker-max-connections-negative",
         lambda c: ["broker", "--data-dir", str(c.tmp / "d"), "--listen", "127.0.0.1:0", "--set", "max.connections=-1"],
         2, "ringlog broker: invalid value -1 for configuration max.connections (--set): must be at least 1"),
    # 8. a listener that cannot bind is named
    Case("broker-listen-address-in-use",
         lambda c: ["broker", "--data-dir", str(c.tmp / "d"), "--listen", c.bootstrap], 1,
         'msg="cannot listen on {bootstrap}: address already in use"', shape_broker_log),
    Case("broker-metrics-address-in-use",
         lambda c: ["broker", "--data-dir", str(c.tmp / "d"), "--listen", "127.0.0.1:0",
                    "--metrics-listen", c.bootstrap], 1,
         'msg="cannot listen on {bootstrap} for /metrics and /health (metrics.listen): address already in use"',
         shape_broker_log),
    Case("broker-http-address-in-use",
         lambda c: ["broker", "--data-dir", str(c.tmp / "d"), "--listen", "127.0.0.1:0",
                    "--http-listen", c.bootstrap], 1,
         'msg="cannot listen on {bootstrap} for the HTTP gateway (http.listen): address already in use"',
         shape_broker_log),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_error(case: Case, broker, tmp_path) -> None:
    ctx = Ctx(broker.bootstrap, Path(broker.config.data_dir), tmp_path)
    p = ringlog(*case.args(ctx), timeout=60)
    assert p.returncode == case.code, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    _no_traceback(p)
    message = case.shape(p)
    assert case.says.format(bootstrap=ctx.bootstrap, tmp=tmp_path) in message


def test_the_success_answers_are_whole_lines(broker) -> None:
    # the rows above match substrings; a success message must also be all that is printed
    b = broker.bootstrap
    p = ok(ringlog("topics", "delete", "not-here-either", "--if-exists", "-b", b))
    assert p.stdout == "Topic not-here-either does not exist; nothing deleted.\n"
    ok(ringlog("topics", "create", "here", "-b", b))
    p = ok(ringlog("topics", "create", "here", "--if-not-exists", "-b", b))
    assert p.stdout == "Topic here already exists with 1 partition; nothing created.\n"
    # and a real create or delete still says so
    p = ok(ringlog("topics", "delete", "here", "--if-exists", "-b", b))
    assert p.stdout == "Deleted topic here.\n"
    p = ok(ringlog("topics", "create", "here", "--if-not-exists", "-b", b))
    assert p.stdout == "Created topic here with 1 partition.\n"


# --- Ctrl-C in the examples -----------------------------------------------------------------------


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)


def _has_records(bootstrap: str, topic: str) -> bool:
    p = ringlog("topics", "describe", topic, "--json", "-b", bootstrap)
    if p.returncode != 0:
        return False
    return any(part["end_offset"] for part in json.loads(p.stdout)[0]["partitions"])


def _start_example(name: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / name), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        # a process started in the background may inherit SIGINT as ignored, and Python then never
        # raises KeyboardInterrupt: give the example the terminal's default, as a user's shell does
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _interrupt(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"did not stop on SIGINT\nstdout: {out}\nstderr: {err}") from None
    return out, err


def test_ctrl_c_in_consume_example_is_quiet(broker) -> None:
    b = broker.bootstrap
    ok(ringlog("topics", "create", "ex-events", "-b", b))
    ok(ringlog("produce", "ex-events", "-b", b, input="first\n"))
    proc = _start_example("consume.py", b, "ex-events", "ex-group")
    # running and inside its consume loop: the record was printed (the watchdog ends a hang)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "value=b'first'" in line:
                break
        else:
            raise AssertionError(f"the example ended early: {seen}\n{proc.stderr.read()}")
    finally:
        watchdog.cancel()
    out, err = _interrupt(proc)
    assert "Traceback" not in err, err
    assert err == "", err
    # Ctrl-C is the way to stop a consumer: a normal exit, as for `ringlog consume`
    assert proc.returncode == 0


def test_ctrl_c_in_produce_example_is_quiet(broker) -> None:
    b = broker.bootstrap
    # far more records than it sends before the interrupt, so it is still producing then
    proc = _start_example("produce.py", b, "ex-produce", "100000000")
    try:
        _wait_until(lambda: _has_records(b, "ex-produce"), "the example produced nothing")
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    assert proc.poll() is None, "the example finished before the interrupt"
    out, err = _interrupt(proc)
    assert "Traceback" not in err, err
    assert err == "", err
    assert out == ""  # it was stopped before it could report a total
    assert proc.returncode == 130
