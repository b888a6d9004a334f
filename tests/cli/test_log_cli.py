"""`ringlog log dump|verify|stats`, run as a user runs them: a separate process, exact output and
exit codes checked."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringlog.storage.batch import CODEC_GZIP, CODEC_SNAPPY, CODEC_ZSTD, HEADER_SIZE, set_base_offset
from ringlog.storage.records import build_batch
from tests.storage.test_replay import T0, make_batch, write_partition, write_segment

_SCRIPT = Path(sys.executable).with_name("ringlog")
if _SCRIPT.exists():
    RINGLOG = [str(_SCRIPT)]
else:  # an environment without the console script: same entry point
    RINGLOG = [sys.executable, "-c", "import sys; from client.cli import main; sys.exit(main())"]

ROOT = Path(__file__).resolve().parents[2]


def run(*args, stdin=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        RINGLOG + ["log", *map(str, args)], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def rec(topic, partition, o, **over):
    base = {
        "topic": topic,
        "partition": partition,
        "offset": o,
        "timestamp": T0 + o,
        "timestamp_type": "CreateTime",
        "key": f"k{o}",
        "value": f"v{o}",
        "headers": [{"key": "h", "value": str(o)}],
    }
    base.update(over)
    return base


@pytest.fixture
def data_dir(tmp_path):
    write_partition(tmp_path / "orders.eu-west-0", [[2, 3], [1, 2]])
    write_partition(tmp_path / "orders.eu-west-1", [[2]])
    write_partition(tmp_path / "audit-0", [[1]])
    (tmp_path / "recovery-point-offset-checkpoint").write_text("0\n3\n")
    return tmp_path


# --- dump -----------------------------------------------------------------------------------


def test_dump_partition_dir_exact_line(data_dir):
    p = run("dump", data_dir / "orders.eu-west-1")
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout == (
        '{"topic":"orders.eu-west","partition":1,"offset":0,"timestamp":1700000000000,'
        '"timestamp_type":"CreateTime","key":"k0","value":"v0","headers":[{"key":"h","value":"0"}]}\n'
        '{"topic":"orders.eu-west","partition":1,"offset":1,"timestamp":1700000000001,'
        '"timestamp_type":"CreateTime","key":"k1","value":"v1","headers":[{"key":"h","value":"1"}]}\n'
    )


def test_dump_data_dir_in_partition_order(data_dir):
    p = run("dump", data_dir)
    assert p.returncode == 0, p.stderr
    assert lines(p.stdout) == (
        [rec("audit", 0, 0)]
        + [rec("orders.eu-west", 0, o) for o in range(8)]
        + [rec("orders.eu-west", 1, o) for o in range(2)]
    )


def test_dump_filters_and_offsets(data_dir):
    p = run("dump", data_dir, "--topic", "orders.eu-west", "--partition", "0", "--from", "3", "--to", "6")
    assert p.returncode == 0, p.stderr
    assert [(r["partition"], r["offset"]) for r in lines(p.stdout)] == [(0, 3), (0, 4), (0, 5)]
    p = run("dump", data_dir, "--partition", "1", "--partition", "0", "--topic", "audit")
    assert [(r["topic"], r["offset"]) for r in lines(p.stdout)] == [("audit", 0)]


def test_dump_binary_null_and_empty_fields(tmp_path):
    part = tmp_path / "bin-0"
    items = [
        (b"\xff\xfe", b"caf\xc3\xa9 \xe2\x98\x95", [("bin", b"\x00\x80"), ("none", None), ("empty", b"")], T0),
        (None, None, [], T0 + 1),
        (b"", b"", [], T0 + 2),
    ]
    write_segment(part, 0, [build_batch(items, compression=CODEC_SNAPPY)])
    p = run("dump", part)
    assert p.returncode == 0, p.stderr
    got = lines(p.stdout)
    assert got[0]["key"] == base64.b64encode(b"\xff\xfe").decode() == "//4="
    assert got[0]["key_encoding"] == "base64"
    assert got[0]["value"] == "café ☕" and "value_encoding" not in got[0]
    assert got[0]["headers"] == [
        {"key": "bin", "value": "AIA=", "value_encoding": "base64"},
        {"key": "none", "value": None},
        {"key": "empty", "value": ""},
    ]
    assert (got[1]["key"], got[1]["value"]) == (None, None)
    assert (got[2]["key"], got[2]["value"]) == ("", "")
    assert "key_encoding" not in got[1] and "key_encoding" not in got[2]
    # Text is written as UTF-8, not \u escapes.
    assert "café ☕" in p.stdout


def test_dump_compressed_torn_tail_is_a_note_and_exit_0(tmp_path):
    part = tmp_path / "t-0"
    paths = write_partition(part, [[2], [3, 2]], codecs=[CODEC_GZIP, CODEC_ZSTD])
    data = paths[-1].read_bytes()
    paths[-1].write_bytes(data[:-7])
    p = run("dump", part)
    assert p.returncode == 0
    assert [r["offset"] for r in lines(p.stdout)] == [0, 1, 2, 3, 4]
    start = len(make_batch(2, 3, codec=CODEC_ZSTD))
    assert p.stderr == (
        f"ringlog log dump: note: {paths[-1]}: position {start} (offset 5): torn tail (recoverable by the "
        f"broker): batch declares {len(data) - start} bytes, only {len(data) - start - 7} remain; "
        "the partition's dump ends there\n"
    )


def test_dump_flipped_byte_exit_1_after_the_good_records(tmp_path):
    part = tmp_path / "t-0"
    paths = write_partition(part, [[2, 2], [3]])
    data = bytearray(paths[0].read_bytes())
    pos = len(make_batch(0, 2))
    data[pos + HEADER_SIZE + 1] ^= 0x01
    paths[0].write_bytes(data)
    p = run("dump", part)
    assert p.returncode == 1
    assert [r["offset"] for r in lines(p.stdout)] == [0, 1]
    assert p.stderr.startswith(f"ringlog log dump: {paths[0]}: position {pos} (offset 2): CRC-32C mismatch")
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_dump_into_a_closed_pipe_is_quiet(tmp_path):
    part = tmp_path / "big-0"
    batch = bytearray(build_batch([(b"k", b"x" * 200, [], T0)] * 100))
    with open(write_segment(part, 0, []), "wb") as f:
        for i in range(300):
            set_base_offset(batch, i * 100)
            f.write(batch)
    cmd = " ".join(RINGLOG) if _SCRIPT.exists() else None
    if cmd is None:
        pytest.skip("needs the ringlog console script")
    p = subprocess.run(
        f"{cmd} log dump {part} | head -n 1", shell=True, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0
    assert json.loads(p.stdout)["offset"] == 0
    assert p.stderr == ""


# --- user mistakes --------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["dump", "verify", "stats"])
def test_missing_path(tmp_path, action):
    p = run(action, tmp_path / "nope")
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == f"ringlog log {action}: {tmp_path / 'nope'}: no such file or directory\n"


@pytest.mark.parametrize("action", ["dump", "verify", "stats"])
def test_not_a_ringlog_dir(tmp_path, action):
    (tmp_path / "notes.txt").write_text("hello")
    p = run(action, tmp_path)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == (
        f"ringlog log {action}: {tmp_path}: not a ringlog directory (no <base offset>.log segments, "
        "no <topic>-<partition> subdirectories)\n"
    )
    p = run(action, tmp_path / "notes.txt")
    assert p.returncode == 2
    assert p.stderr == (
        f"ringlog log {action}: {tmp_path / 'notes.txt'}: not a directory (give a partition or data directory)\n"
    )


def test_filter_matching_nothing(data_dir):
    p = run("dump", data_dir, "--topic", "nope", "--partition", "4")
    assert p.returncode == 2
    assert p.stderr == f"ringlog log dump: {data_dir}: no partition matches --topic nope --partition 4\n"


def test_usage_errors_exit_2(data_dir):
    for args in (["dump", data_dir, "--from", "-1"], ["dump", data_dir, "--from", "x"], ["dump"], []):
        p = run(*args)
        assert p.returncode == 2, args
        assert "Traceback" not in p.stderr and p.stderr.strip().splitlines()[-1].startswith("ringlog log")


def test_dump_help_documents_the_format():
    p = run("dump", "--help")
    assert p.returncode == 0
    for word in ('"key_encoding":"base64"', '"value_encoding":"base64"', "null", "LogAppendTime", "torn tail"):
        assert word in p.stdout


# --- verify ---------------------------------------------------------------------------------


def test_verify_clean(data_dir):
    p = run("verify", data_dir)
    sizes = {n: sum(f.stat().st_size for f in (data_dir / n).glob("*.log")) for n in ("audit-0", "orders.eu-west-0", "orders.eu-west-1")}
    assert (p.returncode, p.stderr) == (0, "")
    assert p.stdout == (
        f"OK    audit-0: 1 segments, 1 batches, 1 records, offsets 0..0, {sizes['audit-0']} bytes\n"
        f"OK    orders.eu-west-0: 2 segments, 4 batches, 8 records, offsets 0..7, {sizes['orders.eu-west-0']} bytes\n"
        f"OK    orders.eu-west-1: 1 segments, 1 batches, 2 records, offsets 0..1, {sizes['orders.eu-west-1']} bytes\n"
        "verified 3 partitions: 3 ok, 0 corrupt, 0 torn tail; 0 warnings\n"
    )


def test_verify_corrupt_names_file_position_offset(data_dir):
    seg = data_dir / "orders.eu-west-0" / f"{5:020d}.log"
    data = bytearray(seg.read_bytes())
    pos = len(make_batch(5, 1, codec=CODEC_SNAPPY))
    data[pos + 40] ^= 0xFF  # maxTimestamp of the second batch: covered by the CRC
    seg.write_bytes(data)
    p = run("verify", data_dir)
    assert p.returncode == 1
    out = p.stdout.splitlines()
    assert out[1].startswith("FAIL  orders.eu-west-0: 2 segments, 3 batches, 6 records, offsets 0..5, ")
    assert out[1].endswith(" bytes checked before the problem")
    assert out[2].startswith(f"      error: {seg}: position {pos} (offset 6): CRC-32C mismatch")
    assert out[4] == "verified 3 partitions: 2 ok, 1 corrupt, 0 torn tail; 0 warnings"
    assert p.stderr.startswith(f"ringlog log verify: first problem: {seg}: position {pos} (offset 6): CRC-32C")
    assert p.stderr.count("\n") == 1


def test_verify_torn_tail(tmp_path):
    part = tmp_path / "t-0"
    (path,) = write_partition(part, [[1, 2]])
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    start = len(make_batch(0, 1))
    p = run("verify", part)
    assert p.returncode == 1
    problem = (
        f"{path}: position {start} (offset 1): torn tail (recoverable by the broker): batch declares "
        f"{len(data) - start} bytes, only {len(data) - start - 1} remain"
    )
    assert p.stdout == (
        f"TORN  t-0: 1 segments, 1 batches, 1 records, offsets 0..0, {len(data) - 1} bytes checked before the problem\n"
        f"      torn tail: {problem}\n"
        "verified 1 partition: 0 ok, 0 corrupt, 1 torn tail; 0 warnings\n"
    )
    assert p.stderr == f"ringlog log verify: first problem: {problem}\n"


def test_verify_gap_warns_exit_0(tmp_path):
    part = tmp_path / "t-0"
    write_segment(part, 0, [make_batch(0, 2)])
    second = write_segment(part, 4, [make_batch(4, 1)])
    p = run("verify", part)
    assert (p.returncode, p.stderr) == (0, "")
    assert p.stdout.splitlines()[1] == (
        f"      warning: {second}: position 0 (offset 4): gap: offsets 2..3 are missing (expected 2, found 4)"
    )
    assert p.stdout.splitlines()[-1] == "verified 1 partition: 1 ok, 0 corrupt, 0 torn tail; 1 warning"


# --- stats ----------------------------------------------------------------------------------


def test_stats_table(data_dir):
    # Make the second partition end with a torn tail: stats still shows it, with a note.
    seg = data_dir / "orders.eu-west-1" / f"{0:020d}.log"
    whole = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(make_batch(2, 1)[:20])
    s0 = [p.stat().st_size for p in sorted((data_dir / "orders.eu-west-0").glob("*.log"))]
    a0 = (data_dir / "audit-0" / f"{0:020d}.log").stat().st_size
    p = run("stats", data_dir)
    assert (p.returncode, p.stderr) == (0, "")
    z = f"{0:020d}.log"
    f5 = f"{5:020d}.log"
    t = lambda ms: f"2023-11-14T22:13:20.{ms:03d}Z"  # noqa: E731
    rows = [
        ["PARTITION", "SEGMENT", "BASE OFFSET", "SIZE", "BATCHES", "RECORDS", "FIRST OFFSET", "LAST OFFSET", "MIN TIMESTAMP", "MAX TIMESTAMP"],
        ["audit-0", z, "0", str(a0), "1", "1", "0", "0", t(0), t(0)],
        ["audit-0", "total (1 segment)", "", str(a0), "1", "1", "0", "0", t(0), t(0)],
        ["orders.eu-west-0", z, "0", str(s0[0]), "2", "5", "0", "4", t(0), t(4)],
        ["orders.eu-west-0", f5, "5", str(s0[1]), "2", "3", "5", "7", t(5), t(7)],
        ["orders.eu-west-0", "total (2 segments)", "", str(sum(s0)), "4", "8", "0", "7", t(0), t(7)],
        ["orders.eu-west-1", z, "0", str(whole + 20), "1", "2", "0", "1", t(0), t(1)],
        ["orders.eu-west-1", "total (1 segment)", "", str(whole + 20), "1", "2", "0", "1", t(0), t(1)],
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(10)]
    left = {0, 1, 8, 9}
    expected = [
        "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]
    expected.append(
        f"note: orders.eu-west-1: {seg}: position {whole} (offset 2): torn tail (recoverable by the broker): "
        f"batch declares {len(make_batch(2, 1))} bytes, only 20 remain"
    )
    assert p.stdout.splitlines() == expected


def test_stats_json(data_dir):
    p = run("stats", data_dir / "orders.eu-west-0", "--json")
    assert (p.returncode, p.stderr) == (0, "")
    doc = json.loads(p.stdout)
    (part,) = doc["partitions"]
    assert (part["topic"], part["partition"], part["records"], part["batches"]) == ("orders.eu-west", 0, 8, 4)
    assert (part["first_offset"], part["last_offset"]) == (0, 7)
    assert (part["min_timestamp"], part["max_timestamp"]) == (T0, T0 + 7)
    assert part["torn_tail"] is None
    assert [(s["name"], s["base_offset"], s["first_offset"], s["last_offset"]) for s in part["segments"]] == [
        (f"{0:020d}.log", 0, 0, 4),
        (f"{5:020d}.log", 5, 5, 7),
    ]
    assert part["size"] == sum(s["size"] for s in part["segments"])
