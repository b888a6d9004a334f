"""`ringlog produce` and `ringlog consume` against a live broker, run as a user runs them."""
from __future__ import annotations

import base64

import pytest

from .conftest import free_port, json_lines, ok, one_error_line, ringlog, strip_timestamps


@pytest.fixture(scope="module")
def b(broker):
    return broker.bootstrap


def test_lines_keys_headers_round_trip_as_json(b):
    ok(ringlog("topics", "create", "kv", "-b", b))
    p = ok(ringlog("produce", "kv", "-b", b, "--key-separator", ":", "--header", "src=cli",
                   "--header", "n=1", input="k1:v1\nno separator\n:empty key\nk2:\nk3:a:b\n"))
    assert p.stdout == "" and p.stderr == ""
    p = ok(ringlog("consume", "kv", "-b", b, "--from", "beginning", "-e", "--json"))
    rows = json_lines(p.stdout)
    assert all(isinstance(r["timestamp"], int) and r["timestamp"] > 0 for r in rows)
    h = [{"key": "src", "value": "cli"}, {"key": "n", "value": "1"}]
    base = {"topic": "kv", "partition": 0, "timestamp_type": "CreateTime", "headers": h}
    assert strip_timestamps(rows) == [
        dict(base, offset=0, key="k1", value="v1"),
        dict(base, offset=1, key=None, value="no separator"),
        dict(base, offset=2, key="", value="empty key"),
        dict(base, offset=3, key="k2", value=""),
        dict(base, offset=4, key="k3", value="a:b"),
    ]
    # default output: values, one per line
    p = ok(ringlog("consume", "kv", "-b", b, "--from", "beginning", "-e"))
    assert p.stdout == "v1\nno separator\nempty key\n\na:b\n"
    # kcat-style format with lengths (-1 for a null key) and escapes
    p = ok(ringlog("consume", "kv", "-b", b, "--from", "1", "--max", "2", "--format",
                   r"%t|%p|%o|%k(%K)=%s(%S)|%h\n"))
    assert p.stdout == "kv|0|1|(-1)=no separator(12)|src=cli,n=1\nkv|0|2|(0)=empty key(9)|src=cli,n=1\n"


def test_non_utf8_values_are_base64_in_json(b):
    ok(ringlog("topics", "create", "bin", "-b", b))
    ok(ringlog("produce", "bin", "-b", b, input=b"\xff\xfe\n\xe2\x82\xac\n", text=False))
    p = ok(ringlog("consume", "bin", "-b", b, "--from", "beginning", "-e", "--json"))
    rows = json_lines(p.stdout)
    assert rows[0]["value"] == base64.b64encode(b"\xff\xfe").decode() and rows[0]["value_encoding"] == "base64"
    assert rows[1]["value"] == "\u20ac" and "value_encoding" not in rows[1]
    # the default output writes the bytes themselves
    p = ok(ringlog("consume", "bin", "-b", b, "--from", "beginning", "-e", text=False))
    assert p.stdout == b"\xff\xfe\n\xe2\x82\xac\n"


@pytest.mark.parametrize("codec,acks", [("gzip", "1"), ("zstd", "all"), ("lz4", "0")])
def test_codecs_and_acks(b, codec, acks):
    topic = f"codec-{codec}"  # created by the broker on first use (auto-creation is on)
    lines = [f"record {i} " + "x" * (i % 50) for i in range(300)]
    ok(ringlog("produce", topic, "-b", b, "--compression", codec, "--acks", acks, input="\n".join(lines) + "\n"))
    p = ok(ringlog("consume", topic, "-b", b, "--from", "beginning", "-e"))
    assert p.stdout.splitlines() == lines


def test_file_with_progress_and_where_to_start(b, tmp_path):
    ok(ringlog("topics", "create", "filed", "-p", "3", "-b", b))
    f = tmp_path / "in.txt"
    f.write_text("".join(f"key{i % 7}\tvalue {i}\n" for i in range(2000)))
    p = ok(ringlog("produce", "filed", "-b", b, "--file", f, "-K", "\t", "--progress"))
    assert p.stdout == ""
    assert "records/s" not in p.stderr  # the bar counts bytes of the file, with records beside
    last = p.stderr.strip().splitlines()
    assert last[-1] == "produced 2000 records to filed"
    assert last[-2].startswith("in.txt  [########################]  100%") and " in 00:0" in last[-2]
    assert "bytes/s" in p.stderr and "ETA" in p.stderr

    p = ok(ringlog("consume", "filed", "-b", b, "--from", "beginning", "-e", "--format", "%k %s\n"))
    got = p.stdout.splitlines()
    assert sorted(got) == sorted(f"key{i % 7} value {i}" for i in range(2000))
    # one key, one partition, in order
    key3 = [line for line in got if line.startswith("key3 ")]
    assert key3 == [f"key3 value {i}" for i in range(2000) if i % 7 == 3]

    # one partition from an offset; -N from the end; an ISO time in the future is the end
    p = ok(ringlog("consume", "filed", "-b", b, "--partition", "0", "--from", "5", "--max", "2", "--format", "%p:%o\n"))
    assert p.stdout == "0:5\n0:6\n"
    p = ok(ringlog("consume", "filed", "-b", b, "-p", "1", "--from", "-3", "-e", "--format", "%o "))
    ends = [int(x) for x in p.stdout.split()]
    assert len(ends) == 3 and ends == list(range(ends[0], ends[0] + 3))
    p = ok(ringlog("consume", "filed", "-b", b, "--from", "2999-01-01T00:00:00Z", "-e"))
    assert p.stdout == ""
    p = ok(ringlog("consume", "filed", "-b", b, "--from", "2000-01-01", "--max", "1", "--format", "%o\n"))
    assert p.stdout == "0\n"
    # end (the default) with nothing new: --timeout stops it
    p = ok(ringlog("consume", "filed", "-b", b, "--timeout", "0.5"))
    assert p.stdout == ""


def test_group_resumes_where_it_stopped(b):
    ok(ringlog("topics", "create", "grouped", "-p", "2", "-b", b))
    ok(ringlog("produce", "grouped", "-b", b, input="".join(f"m{i}\n" for i in range(10))))
    first = ok(ringlog("consume", "grouped", "-b", b, "--group", "readers", "--from", "beginning", "--max", "4"))
    assert len(first.stdout.splitlines()) == 4
    ok(ringlog("produce", "grouped", "-b", b, input="late\n"))
    rest = ok(ringlog("consume", "grouped", "-b", b, "--group", "readers", "-e"))
    # nothing twice, nothing lost: the second run starts at the offsets the first committed
    seen = first.stdout.splitlines() + rest.stdout.splitlines()
    assert sorted(seen) == sorted([f"m{i}" for i in range(10)] + ["late"])


def test_mistakes(b):
    # a broker without auto-creation answers unknown topics as unknown
    one_error_line(ringlog("consume", "no-such-topic", "-b", b, "-e"), 1,
                   "ringlog consume: unknown topic 'no-such-topic'")
    one_error_line(ringlog("consume", "kv", "-b", b, "--from", "yesterday"), 2,
                   "ringlog consume: --from 'yesterday': expected beginning, end, an offset, -N or an "
                   "ISO 8601 date/time")
    one_error_line(ringlog("consume", "kv", "-b", b, "--format", "%x"), 2,
                   "ringlog consume: --format: unknown field %x (known: %t %p %o %k %s %K %S %T %h %%)")
    one_error_line(ringlog("consume", "kv", "-b", b, "--group", "g", "--from", "5"), 2)
    one_error_line(ringlog("consume", "kv", "-b", b, "-p", "9", "-e"), 1,
                   "ringlog consume: topic 'kv' has no partition 9 (partitions 0..0)")
    one_error_line(ringlog("produce", "kv", "-b", b, "--file", "/nonexistent/file"), 2,
                   "ringlog produce: /nonexistent/file: No such file or directory")
    one_error_line(ringlog("produce", "kv", "-b", b, "--partition", "3", input="x\n"), 1,
                   "ringlog produce: topic 'kv' has no partition 3 (partitions 0..0)")
    port = free_port()
    one_error_line(ringlog("produce", "kv", "-b", f"127.0.0.1:{port}", input="x\n"), 3,
                   f"ringlog produce: cannot reach a broker at 127.0.0.1:{port}: connection failed "
                   "(refused or unreachable)")
    one_error_line(ringlog("consume", "kv", "-b", f"127.0.0.1:{port}"), 3)
    p = ringlog("produce", "kv", "-b", b, "--acks", "2")
    assert p.returncode == 2 and "invalid choice" in p.stderr
