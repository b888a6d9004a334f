"""`ringlog log replay`: segments written by a ringlog broker are re-published into another ringlog
broker and into Tansu (a third-party Kafka-compatible broker), and read back with `ringlog
consume`: keys, values, headers and timestamps survive, and so do partition numbers."""
from __future__ import annotations

import json
import subprocess

import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from tests.conftest import tansu_binary

from .conftest import free_port, json_lines, ok, one_error_line, ringlog, wait_port


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A data directory holding topic 'src' (3 partitions, keyed records with headers), written
    by a broker that is then stopped; plus the dump of it, the expected content."""
    data = tmp_path_factory.mktemp("source-data")
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(data))) as b:
        ok(ringlog("topics", "create", "src", "-p", "3", "-b", b.bootstrap))
        lines = "".join(f"user{i % 5}|event {i}\n" for i in range(60))
        ok(ringlog("produce", "src", "-b", b.bootstrap, "-K", "|", "-H", "origin=test", "-H",
                   "bin=\u20ac", "--compression", "gzip", input=lines))
        # a second batch later, so timestamps differ between batches
        ok(ringlog("produce", "src", "-b", b.bootstrap, "-K", "|", input="user1|last\n"))
    dump = json_lines(ok(ringlog("log", "dump", data, "--topic", "src")).stdout)
    assert len(dump) == 61
    return data, dump


def by_partition(rows):
    out = {}
    for r in rows:
        out.setdefault(r["partition"], []).append(r)
    return out


def test_replay_into_ringlog_keeps_everything(source, tmp_path):
    data, dump = source
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "target"))) as t:
        p = ok(ringlog("log", "replay", data, "--topic", "src", "--to", t.bootstrap, "--progress"))
        # keys user0..user4 hash (murmur2) to partitions 0, 1, 2 in a fixed way: a golden table
        assert p.stdout == (
            "SOURCE  TARGET  RECORDS  SOURCE-OFFSETS  TARGET-OFFSETS\n"
            "src-0   src-0        25  0..24           0..24\n"
            "src-1   src-1        12  0..11           0..11\n"
            "src-2   src-2        24  0..23           0..23\n"
            f"replayed 61 records to src at {t.bootstrap}\n"
        )
        counts = {q: len(rs) for q, rs in by_partition(dump).items()}
        err = p.stderr.splitlines()
        assert err[0] == f"ringlog log replay: created topic 'src' with 3 partitions at {t.bootstrap}"
        assert err[-1].startswith("replay  [########################]  100%  61/61 records")
        back = json_lines(ok(ringlog("consume", "src", "-b", t.bootstrap, "--from", "beginning", "-e", "--json")).stdout)
        # same partitions, same order, same offsets (a fresh topic), same keys/values/headers/timestamps
        assert by_partition(back) == by_partition(dump)

        # into a topic with fewer partitions: 2 -> 0, each source partition still in order
        ok(ringlog("topics", "create", "narrow", "-p", "2", "-b", t.bootstrap))
        p = ok(ringlog("log", "replay", data, "--topic", "src", "--to", t.bootstrap, "--to-topic", "narrow", "--json"))
        assert p.stderr == (
            "ringlog log replay: note: 'narrow' has 2 partitions; 2->0 (each source partition "
            "stays in order; shared target partitions interleave)\n"
        )
        summary = json.loads(p.stdout)
        assert summary["records"] == 61 and summary["target"] == {
            "bootstrap": t.bootstrap, "topic": "narrow", "partitions": 2, "created": False}
        assert [(x["source_partition"], x["target_partition"]) for x in summary["partitions"]] == [(0, 0), (1, 1), (2, 0)]
        back = by_partition(json_lines(ok(ringlog("consume", "narrow", "-b", t.bootstrap, "--from", "beginning",
                                                  "-e", "--json")).stdout))
        src = by_partition(dump)

        def strip(rs):
            return [(r["key"], r["value"], r["headers"], r["timestamp"]) for r in rs]

        assert strip(back[1]) == strip(src[1])
        assert strip(back[0]) == strip(src[0]) + strip(src[2])  # replayed one partition after the other

        # --partition and --from pick a slice
        p = ok(ringlog("log", "replay", data, "--topic", "src", "--partition", "1", "--from", "5",
                       "--to", t.bootstrap, "--to-topic", "slice"))
        assert counts[1] == 12
        assert p.stdout == (
            "SOURCE  TARGET   RECORDS  SOURCE-OFFSETS  TARGET-OFFSETS\n"
            "src-1   slice-1        7  5..11           0..6\n"
            f"replayed 7 records to slice at {t.bootstrap}\n"
        )
        # created with 2 partitions: enough for source partition 1
        assert "created topic 'slice' with 2 partitions" in p.stderr


def test_replay_into_tansu(source):
    """The same data into Tansu, a Kafka-compatible broker written in Rust, read back from it."""
    data, dump = source
    binary = tansu_binary()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        bootstrap = f"127.0.0.1:{port}"
        p = ok(ringlog("log", "replay", data, "--topic", "src", "--to", bootstrap, "--to-topic", "copy"))
        assert p.stdout.endswith(f"replayed 61 records to copy at {bootstrap}\n")
        back = json_lines(ok(ringlog("consume", "copy", "-b", bootstrap, "--from", "beginning", "-e", "--json")).stdout)
        expected = {q: [dict(r, topic="copy") for r in rs] for q, rs in by_partition(dump).items()}
        assert by_partition(back) == expected
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_verify_progress_bar(source):
    data, _ = source
    p = ok(ringlog("log", "verify", data, "--progress"))
    # src-0..2 and the __consumer_offsets partition the source broker created
    assert p.stdout.endswith("verified 4 partitions: 4 ok, 0 corrupt, 0 torn tail; 0 warnings\n")
    last = p.stderr.splitlines()[-1]
    assert last.startswith("verify  [########################]  100%  ") and "bytes/s" in last


def test_replay_mistakes(source, tmp_path):
    data, _ = source
    one_error_line(ringlog("log", "replay", tmp_path / "missing", "--topic", "src", "--to", "127.0.0.1:1"), 2,
                   f"ringlog log replay: {tmp_path / 'missing'}: no such file or directory")
    one_error_line(ringlog("log", "replay", data, "--topic", "nope", "--to", "127.0.0.1:1"), 2,
                   f"ringlog log replay: {data}: no partition of topic 'nope'")
    port = free_port()
    one_error_line(ringlog("log", "replay", data, "--topic", "src", "--to", f"127.0.0.1:{port}"), 3,
                   f"ringlog log replay: cannot reach a broker at 127.0.0.1:{port}: connection failed "
                   "(refused or unreachable)")
    p = ringlog("log", "replay", data, "--topic", "src")
    assert p.returncode == 2 and "--to" in p.stderr
