"""Bad configuration, one row each: the real `ringlog broker` started with it (from a TOML file,
`--set`, a flag, or a mix) must stop with exactly one line on stderr that names the key, the
value and what is expected, exit code 2, and no traceback. Every row fails before a socket is
opened, so a row that did start a broker would show as a timeout."""
from __future__ import annotations

import subprocess
from pathlib import Path

import attrs
import pytest

from ringlog.broker.config import BrokerConfig, physical_memory

from .conftest import ringlog

MEMORY = physical_memory()
TOO_BIG = str(2 * MEMORY) if MEMORY else "0"


@attrs.frozen
class Case:
    id: str
    args: list[str]            # after `ringlog broker --data-dir D --listen 127.0.0.1:0`
    says: str                  # a substring of the one line; {file} is the TOML file's path
    toml: str | None = None    # written to {file} and passed as --config when given


def file(id: str, toml: str, says: str, *more: str) -> Case:
    return Case(id, list(more), says, toml)


def sets(id: str, *pairs: str, says: str) -> Case:
    return Case(id, [a for p in pairs for a in ("--set", p)], says)


def flag(id: str, *args: str, says: str) -> Case:
    return Case(id, list(args), says)


CASES = [
    # --- unknown keys: a typo never becomes a silent topic default
    file("file-unknown-log-key", "log.retension.ms = 5\n",
         "unknown configuration key log.retension.ms (in {file}); did you mean log.retention.ms?"),
    file("file-unknown-quoted-key", '"no.such.key" = 1\n', "unknown configuration key no.such.key (in {file})"),
    sets("set-unknown-log-key", "log.retension.ms=5",
         says="unknown configuration key log.retension.ms (--set); did you mean log.retention.ms?"),
    sets("set-unknown-key", "max.conections=5",
         says="unknown configuration key max.conections (--set); did you mean max.connections?"),
    # --- wrong types
    file("file-decimal-for-int", "num.partitions = 2000.9\n",
         "invalid value 2000.9 for configuration num.partitions (in {file}): expected an integer"),
    file("file-bool-for-int", "num.partitions = true\n",
         "invalid value true for configuration num.partitions (in {file}): expected an integer"),
    file("file-list-for-int", "num.partitions = [1, 2]\n",
         "invalid value [1, 2] for configuration num.partitions (in {file}): expected an integer"),
    file("file-word-for-int", 'num.partitions = "abc"\n',
         "invalid value abc for configuration num.partitions (in {file}): expected an integer"),
    file("file-int-for-bool", "auto.create.topics.enable = 1\n",
         "invalid value 1 for configuration auto.create.topics.enable (in {file}): expected true or false"),
    file("file-unknown-nested-key", "[message.max]\nbytes.x = 1\n",
         "unknown configuration key message.max.bytes.x (in {file})"),
    sets("set-decimal-for-int", "num.partitions=2000.9",
         says="invalid value 2000.9 for configuration num.partitions (--set): expected an integer"),
    sets("set-bool-for-int", "max.connections=true",
         says="invalid value true for configuration max.connections (--set): expected an integer"),
    sets("set-word-for-int", "max.connections=abc",
         says="invalid value abc for configuration max.connections (--set): expected an integer"),
    sets("set-yes-for-bool", "auto.create.topics.enable=yes",
         says="invalid value yes for configuration auto.create.topics.enable (--set): expected true or false"),
    sets("set-topic-default-wrong-type", "log.retention.ms=soon",
         says="invalid value soon for configuration log.retention.ms (--set): expected an integer"),
    flag("flag-word-for-int", "--max-connections", "abc",
         says="invalid value abc for configuration max.connections (--max-connections): expected an integer"),
    flag("flag-decimal-for-int", "--num-partitions", "2000.9",
         says="invalid value 2000.9 for configuration num.partitions (--num-partitions): expected an integer"),
    flag("flag-not-a-choice", "--fsync", "sometimes",
         says="invalid value sometimes for configuration fsync (--fsync): expected one of always, interval, never"),
    flag("flag-log-level", "--log-level", "LOUD",
         says="invalid value LOUD for configuration log.level (--log-level): expected one of DEBUG, INFO"),
    # --- out of range
    sets("set-max-connections-minus-one", "max.connections=-1",
         says="invalid value -1 for configuration max.connections (--set): must be at least 1"),
    sets("set-max-connections-zero", "max.connections=0",
         says="invalid value 0 for configuration max.connections (--set): must be at least 1"),
    file("file-max-connections-zero", '"max.connections" = 0\n',
         "invalid value 0 for configuration max.connections (in {file}): must be at least 1"),
    flag("flag-max-connections-zero", "--max-connections", "0",
         says="invalid value 0 for configuration max.connections (--max-connections): must be at least 1"),
    sets("set-negative-ms", "socket.request.read.timeout.ms=-2",
         says="invalid value -2 for configuration socket.request.read.timeout.ms (--set): "
              "must be at least 1, or -1 (never)"),
    file("file-negative-ms", "connections.max.idle.ms = -5\n",
         "invalid value -5 for configuration connections.max.idle.ms (in {file}): must be at least 1, or -1 (never)"),
    sets("set-negative-topic-default", "log.retention.ms=-5",
         says="invalid value -5 for configuration log.retention.ms (--set): must be at least 0, or -1 (keep for ever)"),
    file("file-bad-cleanup-policy", 'log.cleanup.policy = "compacted"\n',
         "invalid value compacted for configuration log.cleanup.policy (in {file}): compacted is not one of compact, "
         "delete"),
    sets("set-ring-beyond-memory", f"ring.bytes.per.partition={TOO_BIG}",
         says=f"invalid value {TOO_BIG} for configuration ring.bytes.per.partition (--set): must be at most "
              f"{MEMORY} ("),
    flag("flag-ring-beyond-memory", "--ring-bytes", TOO_BIG,
         says=f"configuration ring.bytes.per.partition (--ring-bytes): must be at most {MEMORY} ("),
    file("file-ring-beyond-memory", f"ring.bytes.per.partition = {TOO_BIG}\n",
         f"configuration ring.bytes.per.partition (in {{file}}): must be at most {MEMORY} ("),
    sets("set-node-id-beyond-worker-bits", "node.id=1024",
         says="invalid value 1024 for configuration node.id (--set): must be between 0 and 1023"),
    flag("flag-port-out-of-range", "--listen", "127.0.0.1:65536",
         says="invalid value 127.0.0.1:65536 for configuration listen (--listen): the port must be between 0 and 65535"),
    file("file-port-out-of-range", 'listen = "127.0.0.1:70000"\n',
         "invalid value 127.0.0.1:70000 for configuration listen (in {file}): the port must be between 0 and 65535"),
    flag("flag-advertised-port-zero", "--advertise", "kafka.example:0",
         says="configuration advertise (--advertise): the port must be between 1 and 65535"),
    flag("flag-metrics-port-out-of-range", "--metrics-listen", "127.0.0.1:99999",
         says="configuration metrics.listen (--metrics-listen): the port must be between 0 and 65535"),
    flag("flag-port-not-a-number", "--listen", "localhost:abc",
         says="configuration listen (--listen): the port abc is not a number (expected HOST:PORT)"),
    # --- one key written twice
    file("file-dotted-and-quoted", 'message.max.bytes = 1\n"message.max.bytes" = 2\n',
         'message.max.bytes is given twice in {file}, as message.max.bytes and as "message.max.bytes": keep one'),
    file("file-key-and-alias", 'data.dir = "a"\nlog.dirs = "b"\n',
         "data.dir (in {file}): given twice, as data.dir and as log.dirs; keep one"),
    # --- files that cannot be read
    file("file-not-toml", "num.partitions = \n", "{file}: not valid TOML: "),
    file("file-key-beginning-another", "max.connections = 10\nmax.connections.per.ip = 5\n",
         "{file}: not valid TOML: Cannot overwrite a value"),
    Case("file-missing", ["--config", "/nonexistent/broker.toml"],
         "cannot read the configuration file /nonexistent/broker.toml: No such file or directory"),
    sets("set-without-equals", "max.connections", says="--set expects KEY=VALUE, got 'max.connections'"),
    # --- values that contradict each other, and absurd partition counts
    sets("num-partitions-above-topic-cap", "num.partitions=20000",
         says="num.partitions 20000 is more than max.partitions.per.topic 10000: lower it, or raise "
              "max.partitions.per.topic"),
    file("mix-file-partitions-flag-cap", "num.partitions = 5\n",
         "num.partitions 5 is more than max.partitions.per.topic 4", "--set", "max.partitions.per.topic=4"),
    sets("offsets-partitions-above-topic-cap", "max.partitions.per.topic=3", "offsets.topic.num.partitions=4",
         says="offsets.topic.num.partitions 4 is more than max.partitions.per.topic 3"),
    sets("topic-cap-above-broker-cap", "max.partitions.per.broker=50",
         says="max.partitions.per.topic 10000 is more than max.partitions.per.broker 50: no topic could reach it"),
    sets("decompressed-below-message-max", "message.max.decompressed.bytes=1000",
         says="message.max.decompressed.bytes 1000 is less than message.max.bytes 1048588: it must be at least that"),
    sets("per-ip-zero-without-overrides", "max.connections.per.ip=0",
         says="max.connections.per.ip 0 would refuse every connection"),
    # --- mixes: every source is checked, whichever wins
    file("mix-good-file-bad-set", '"max.connections" = 10\n',
         "invalid value -1 for configuration max.connections (--set): must be at least 1",
         "--set", "max.connections=-1"),
    file("mix-bad-file-good-flag", '"max.connections" = "many"\n',
         "invalid value many for configuration max.connections (in {file}): expected an integer",
         "--max-connections", "10"),
    file("mix-good-file-bad-flag", "num.partitions = 2\n",
         "invalid value x for configuration message.max.bytes (--message-max-bytes): expected an integer",
         "--message-max-bytes", "x", "--set", "log.retention.ms=5"),
]


def _args(case: Case, tmp: Path) -> tuple[list[str], str]:
    path = tmp / "broker.toml"
    args = ["broker", "--data-dir", str(tmp / "data"), "--listen", "127.0.0.1:0"]
    if case.toml is not None:
        path.write_text(case.toml)
        args += ["--config", str(path)]
    return args + case.args, str(path)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path, str]]:
    """Every row's `ringlog broker`, run side by side (each is a fresh interpreter that spends
    most of its time importing; one after the other they would take a minute)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(case: Case):
        tmp = tmp_path_factory.mktemp(case.id)
        args, path = _args(case, tmp)
        return case.id, (ringlog(*args, timeout=60), tmp, path)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_configuration(case: Case, outcomes) -> None:
    if "memory" in case.id and MEMORY is None:
        pytest.skip("this system does not report its physical memory")
    p, tmp, path = outcomes[case.id]
    assert p.returncode == 2, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("ringlog broker: "), lines[0]
    assert case.says.format(file=path) in lines[0]
    # no attrs repr or Python type names leak into the message
    assert "BrokerConfig(" not in lines[0] and "<class" not in lines[0]
    # refused before the data directory was even created
    assert not (tmp / "data").exists()


# --- what is accepted, and which source wins ------------------------------------------------------


def _build(tmp_path: Path, toml: str, *args: str) -> BrokerConfig:
    import argparse

    from ringlog.client.cli import broker as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    (tmp_path / "b.toml").write_text(toml)
    return command.build_config(parser.parse_args(["broker", "--config", str(tmp_path / "b.toml"), *args]))


def test_accepted_spellings(tmp_path: Path) -> None:
    c = _build(tmp_path, '"max.connections" = "1000"\nauto.create.topics.enable = "false"\n'
                         'log.cleanup.policy = ["delete", "compact"]\nlisteners = "PLAINTEXT://127.0.0.1:0"\n'
                         'log.segment.ms = 60000\nlog.level = "debug"\n[max.connections.per]\nip = 7\n')
    assert c.max_connections == 1000 and c.auto_create_topics is False
    assert c.topic_defaults == {"cleanup.policy": "delete,compact", "segment.ms": "60000"}
    assert (c.log_level, c.max_connections_per_ip) == ("DEBUG", 7)
    # Kafka's listeners key is its own setting (broker/security/listeners.py), one PLAINTEXT listener here
    from ringlog.broker.security.state import listener_specs

    assert [(s.protocol, s.host, s.port) for s in listener_specs(c)] == [("PLAINTEXT", "127.0.0.1", 0)]
    # the topic defaults reach the storage engine
    assert c.log_config().segment_ms == 60000 and c.log_config().cleanup_policy == "delete,compact"


def test_file_then_flags_then_set(tmp_path: Path) -> None:
    toml = '"message.max.bytes" = 2000\nnum.partitions = 2\nbackpressure = "reject"\n'
    c = _build(tmp_path, toml, "--message-max-bytes", "3000", "--num-partitions", "3",
               "--set", "message.max.bytes=4000")
    assert (c.message_max_bytes, c.num_partitions, c.backpressure) == (4000, 3, "reject")
    c = _build(tmp_path, toml, "--no-auto-create", "--set", "auto.create.topics.enable=TRUE")
    assert c.auto_create_topics is True
    assert _build(tmp_path, toml, "--no-auto-create").auto_create_topics is False


def test_running_broker_takes_the_keys(tmp_path: Path) -> None:
    """A good configuration through the real command: the broker starts with the file's values."""
    from ringlog.broker.testing import BrokerProcess

    path = tmp_path / "broker.toml"
    path.write_text('"log.retention.ms" = 60000\n"max.partitions.per.topic" = 7\n')
    proc = BrokerProcess(str(tmp_path / "data"), "--config", str(path)).start()
    try:
        p = ringlog("topics", "create", "eight", "-p", "8", "-b", proc.bootstrap)
        assert p.returncode == 1 and "8 partitions is more than the limit of 7 per topic" in p.stderr, p.stderr
        p = ringlog("topics", "create", "seven", "-p", "7", "-b", proc.bootstrap)
        assert p.returncode == 0, p.stderr
    finally:
        proc.stop()


def test_help_lists_every_flag_with_its_key() -> None:
    p = ringlog("broker", "--help")
    assert p.returncode == 0
    for key, flag_name in [("max.connections", "--max-connections"), ("ring.bytes.per.partition", "--ring-bytes"),
                           ("auto.create.topics.enable", "--no-auto-create")]:
        assert flag_name in p.stdout and key in p.stdout

