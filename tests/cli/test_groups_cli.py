"""`ringlog groups ...` against a live broker with real members (`ringlog consume --group` processes):
the kafka-consumer-groups.sh views as exact tables, reset-offsets plans and their execution."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest

from .conftest import RINGLOG, ROOT, json_lines, ok, one_error_line, ringlog


@pytest.fixture(scope="module")
def b(broker):
    """The module's broker with topic 'gt' (2 partitions) holding 10 keyed records, read to the
    end by group 'readers', then 3 more records that group has not read."""
    bs = broker.bootstrap
    ok(ringlog("topics", "create", "gt", "-p", "2", "-b", bs))
    ok(ringlog("produce", "gt", "-b", bs, "-K", ":", input="".join(f"k{i}:v{i}\n" for i in range(10))))
    p = ok(ringlog("consume", "gt", "-b", bs, "--group", "readers", "--from", "beginning", "-e"))
    assert sorted(p.stdout.split()) == sorted(f"v{i}" for i in range(10))
    ok(ringlog("produce", "gt", "-b", bs, "-K", ":", input="k1:late1\nk2:late2\nk3:late3\n"))
    return bs


def offsets(bs: str, group: str) -> dict[int, int | None]:
    doc = json.loads(ok(ringlog("groups", "describe", group, "--json", "-b", bs)).stdout)
    return {r["partition"]: r["current_offset"] for r in doc["partitions"]}


def test_list_and_describe_golden(b):
    p = ok(ringlog("groups", "list", "-b", b))
    assert p.stdout == (
        "GROUP    STATE  MEMBERS\n"
        "readers  Empty        0\n"
    )
    assert json.loads(ok(ringlog("groups", "list", "--json", "-b", b)).stdout) == [
        {"group": "readers", "protocol_type": "consumer", "state": "Empty", "members": 0}
    ]
    p = ok(ringlog("groups", "describe", "readers", "-b", b))
    assert p.stderr == "Consumer group 'readers' has no active members.\n"
    # keys k0..k9 and k1..k3 hash (murmur2) to fixed partitions: a golden table
    assert p.stdout == (
        "GROUP    TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID\n"
        "readers  gt             0               6               7    1  -            -     -\n"
        "readers  gt             1               4               6    2  -            -     -\n"
    )
    one_error_line(ringlog("groups", "describe", "nobody", "-b", b), 1,
                   "ringlog groups describe: unknown group 'nobody'")


def test_live_member_views_and_reset_refused(b):
    member = subprocess.Popen(
        RINGLOG + ["consume", "gt", "-b", b, "--group", "readers"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        # the member joins (after the coordinator's initial rebalance delay) and reads the 3 late
        # records; wait for its view to show up
        deadline = time.monotonic() + 30
        while True:
            doc = json.loads(ok(ringlog("groups", "describe", "readers", "--members", "--json", "-b", b)).stdout)
            if doc and doc[0]["assignment"]:
                break
            assert time.monotonic() < deadline, "the member never got an assignment"
            time.sleep(0.5)
        member_id = doc[0]["consumer_id"]
        assert member_id.startswith("ringlog-cli-")

        p = ok(ringlog("groups", "describe", "readers", "--members", "--verbose", "-b", b))
        # member ids are "<client id>-<uuid4>": same length every time, so the columns stay put
        assert len(member_id) == 48
        mid = "<member-id>".ljust(48)
        assert p.stdout.replace(member_id, mid) == (
            f"GROUP    CONSUMER-ID{' ' * 37}  HOST        CLIENT-ID    #PARTITIONS  ASSIGNMENT\n"
            f"readers  {mid}  /127.0.0.1  ringlog-cli            2  gt(0,1)\n"
        )
        p = ok(ringlog("groups", "describe", "readers", "--state", "-b", b))
        # the port is an ephemeral one (5 digits on Linux): masked, width kept
        assert re.sub(r"127\.0\.0\.1:\d{5}\b", "127.0.0.1:PPPPP", p.stdout) == (
            "GROUP    COORDINATOR (ID)     ASSIGNMENT-STRATEGY  STATE   #MEMBERS\n"
            "readers  127.0.0.1:PPPPP (0)  range                Stable         1\n"
        )
        one_error_line(
            ringlog("groups", "reset-offsets", "readers", "--topic", "gt", "--to-earliest", "--execute", "-b", b), 1,
            "ringlog groups reset-offsets: group 'readers' is Stable with 1 member: offsets can only be "
            "reset while it has none",
        )
        one_error_line(ringlog("groups", "delete", "readers", "-b", b), 1,
                       "ringlog groups delete: group 'readers' has active members; stop them first")
    finally:
        # Ctrl-C is how a user stops consume: it commits, leaves the group and exits 0
        member.send_signal(signal.SIGINT)
        out, err = member.communicate(timeout=30)
    assert member.returncode == 0, err
    assert sorted(out.split()) == ["late1", "late2", "late3"]
    assert offsets(b, "readers") == {0: 7, 1: 6}
    assert json.loads(ok(ringlog("groups", "list", "--json", "-b", b)).stdout)[0]["state"] == "Empty"


def test_reset_offsets_plan_and_execute(b):
    # whatever the test before left: put the group at known offsets first
    ok(ringlog("groups", "reset-offsets", "readers", "--topic", "gt", "--to-latest", "--execute", "-b", b))
    p = ok(ringlog("groups", "reset-offsets", "readers", "--topic", "gt", "--to-earliest", "-b", b))
    assert p.stdout == (
        "GROUP    TOPIC  PARTITION  CURRENT-OFFSET  NEW-OFFSET\n"
        "readers  gt             0               7           0\n"
        "readers  gt             1               6           0\n"
    )
    assert p.stderr == "ringlog groups reset-offsets: dry run: nothing changed; add --execute to apply\n"
    assert offsets(b, "readers") == {0: 7, 1: 6}  # a dry run changes nothing

    p = ok(ringlog("groups", "reset-offsets", "readers", "--topic", "gt:1", "--shift-by", "-3", "--execute", "-b", b))
    assert p.stdout == (
        "GROUP    TOPIC  PARTITION  CURRENT-OFFSET  NEW-OFFSET\n"
        "readers  gt             1               6           3\n"
    ) and p.stderr == ""
    # offsets are clamped into the log; --all-topics takes what the group committed
    doc = json.loads(ok(ringlog("groups", "reset-offsets", "readers", "--all-topics", "--to-offset", "100",
                                "--execute", "--json", "-b", b)).stdout)
    assert [(r["partition"], r["current_offset"], r["new_offset"]) for r in doc["partitions"]] == [(0, 7, 7), (1, 3, 6)]
    doc = json.loads(ok(ringlog("groups", "reset-offsets", "readers", "--topic", "gt", "--to-datetime",
                                "2000-01-01T00:00:00Z", "--execute", "--json", "-b", b)).stdout)
    assert doc["executed"] and [r["new_offset"] for r in doc["partitions"]] == [0, 0]
    assert offsets(b, "readers") == {0: 0, 1: 0}
    # the group now re-reads everything from the start
    p = ok(ringlog("consume", "gt", "-b", b, "--group", "readers", "-e"))
    assert len(p.stdout.split()) == 13

    one_error_line(ringlog("groups", "reset-offsets", "readers", "--topic", "nope", "--to-latest", "-b", b), 1,
                   "ringlog groups reset-offsets: unknown topic 'nope'")
    one_error_line(ringlog("groups", "reset-offsets", "readers", "--topic", "gt:7", "--to-latest", "-b", b), 1,
                   "ringlog groups reset-offsets: topic 'gt' has no partition 7")
    p = ringlog("groups", "reset-offsets", "readers", "--topic", "gt", "-b", b)
    assert p.returncode == 2 and "one of the arguments --to-earliest" in p.stderr


def test_delete(b):
    ok(ringlog("consume", "gt", "-b", b, "--group", "short-lived", "--from", "beginning", "--max", "1"))
    p = ok(ringlog("groups", "delete", "short-lived", "-b", b))
    assert p.stdout == "Deleted group short-lived.\n"
    one_error_line(ringlog("groups", "delete", "short-lived", "-b", b), 1,
                   "ringlog groups delete: unknown group 'short-lived'")
    assert "short-lived" not in [g["group"] for g in json.loads(ok(ringlog("groups", "list", "--json", "-b", b)).stdout)]
