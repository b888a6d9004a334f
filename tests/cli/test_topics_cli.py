"""`ringlog topics ...` against a live broker, run as a user runs it: exact tables, JSON, errors."""
from __future__ import annotations

import json
import time

from .conftest import json_lines, ok, one_error_line, ringlog

# The module's broker starts empty; tests below build on each other's topics in file order only
# where a comment says so.


def test_create_list_describe_golden(broker):
    b = broker.bootstrap
    p = ok(ringlog("topics", "create", "orders", "--partitions", "3", "--config", "retention.ms=60000",
                   "--config", "cleanup.policy=compact", "-b", b))
    assert p.stdout == "Created topic orders with 3 partitions.\n" and p.stderr == ""
    ok(ringlog("topics", "create", "audit", "--partitions", "1", "-b", b))
    # a few records so the offsets columns say something
    ok(ringlog("produce", "audit", "-b", b, input="one\ntwo\n"))

    p = ok(ringlog("topics", "list", "-b", b))
    assert p.stdout == (
        "TOPIC   PARTITIONS\n"
        "audit            1\n"
        "orders           3\n"
    )
    p = ok(ringlog("topics", "describe", "orders", "audit", "-b", b))
    assert p.stdout == (
        "TOPIC   PARTITIONS  CONFIGS\n"
        "audit            1  -\n"
        "orders           3  cleanup.policy=compact,retention.ms=60000\n"
        "\n"
        "TOPIC   PARTITION  LEADER  REPLICAS  ISR  START-OFFSET  END-OFFSET\n"
        "audit           0       0  0         0               0           2\n"
        "orders          0       0  0         0               0           0\n"
        "orders          1       0  0         0               0           0\n"
        "orders          2       0  0         0               0           0\n"
    )
    doc = json.loads(ok(ringlog("topics", "describe", "orders", "--json", "-b", b)).stdout)
    assert doc == [{
        "name": "orders", "internal": False,
        "configs": {"cleanup.policy": "compact", "retention.ms": "60000"},
        "partitions": [
            {"partition": i, "leader": 0, "replicas": [0], "isr": [0], "start_offset": 0, "end_offset": 0}
            for i in range(3)
        ],
    }]
    listed = json.loads(ok(ringlog("topics", "list", "--json", "-b", b)).stdout)
    assert {"name": "orders", "partitions": 3, "internal": False} in listed


def test_alter_add_partitions_delete(broker):
    b = broker.bootstrap
    ok(ringlog("topics", "create", "events", "-p", "2", "-c", "retention.ms=1000", "-b", b))
    p = ok(ringlog("topics", "alter", "events", "--config", "retention.ms=5000", "--config",
                   "max.message.bytes=2000000", "-b", b))
    assert p.stdout == "Altered topic events: retention.ms=5000, max.message.bytes=2000000.\n"
    ok(ringlog("topics", "alter", "events", "--delete-config", "max.message.bytes", "-b", b))
    p = ok(ringlog("topics", "add-partitions", "events", "--partitions", "4", "-b", b))
    assert p.stdout == "Topic events now has 4 partitions (was 2).\n"
    doc = json.loads(ok(ringlog("topics", "describe", "events", "--json", "-b", b)).stdout)
    assert doc[0]["configs"] == {"retention.ms": "5000"}
    assert [p["partition"] for p in doc[0]["partitions"]] == [0, 1, 2, 3]

    p = ok(ringlog("topics", "delete", "events", "-b", b))
    assert p.stdout == "Deleted topic events.\n"
    one_error_line(ringlog("topics", "describe", "events", "-b", b), 1,
                   "ringlog topics describe: unknown topic 'events'")
    # --if-exists makes a repeated delete a success, without it it is an error
    one_error_line(ringlog("topics", "delete", "events", "-b", b), 1,
                   "ringlog topics delete: unknown topic 'events'")
    ok(ringlog("topics", "delete", "events", "--if-exists", "-b", b))


def test_user_mistakes_are_one_line(broker):
    b = broker.bootstrap
    ok(ringlog("topics", "create", "dup", "-b", b))
    one_error_line(ringlog("topics", "create", "dup", "-b", b), 1,
                   "ringlog topics create: topic 'dup' already exists")
    ok(ringlog("topics", "create", "dup", "--if-not-exists", "-b", b))
    one_error_line(ringlog("topics", "add-partitions", "dup", "--partitions", "1", "-b", b), 1,
                   "ringlog topics add-partitions: topic 'dup' already has 1 partition; "
                   "--partitions is the new total and must be more")
    one_error_line(ringlog("topics", "alter", "dup", "--config", "no.such.key=1", "-b", b), 1,
                   "ringlog topics alter: invalid config for 'dup': Unknown topic config name: no.such.key")
    one_error_line(ringlog("topics", "alter", "nope", "--config", "retention.ms=1", "-b", b), 1,
                   "ringlog topics alter: unknown topic 'nope'")
    line = one_error_line(ringlog("topics", "create", "bad", "--config", "retention.ms=abc", "-b", b), 1)
    assert line.startswith("ringlog topics create: invalid config for 'bad': ")
    # argparse's own errors: usage plus one error line, exit 2
    p = ringlog("topics", "create", "x", "--partitions", "0", "-b", b)
    assert p.returncode == 2 and "must be at least 1" in p.stderr and "Traceback" not in p.stderr
    p = ringlog("topics", "create", "x", "--config", "novalue", "-b", b)
    assert p.returncode == 2 and "expected KEY=VALUE" in p.stderr
    p = ringlog("topics", "frobnicate")
    assert p.returncode == 2 and "invalid choice" in p.stderr


def test_bootstrap_from_environment(broker):
    p = ok(ringlog("topics", "create", "from-env", "-p", "2", env={"RINGLOG_BOOTSTRAP": broker.bootstrap}))
    assert p.stdout == "Created topic from-env with 2 partitions.\n"
    names = [t["name"] for t in json.loads(ok(ringlog("topics", "list", "--json", env={"RINGLOG_BOOTSTRAP": broker.bootstrap})).stdout)]
    assert "from-env" in names
    # the flag wins over the environment
    p = ringlog("topics", "list", "-b", broker.bootstrap, env={"RINGLOG_BOOTSTRAP": "127.0.0.1:1"})
    ok(p)


def test_unreachable_broker_fails_fast():
    from .conftest import free_port

    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    p = ringlog("topics", "list", "-b", f"127.0.0.1:{port}")
    elapsed = time.monotonic() - t0
    one_error_line(p, 3, f"ringlog topics list: cannot reach a broker at 127.0.0.1:{port}: "
                         "connection failed (refused or unreachable)")
    assert elapsed < 10
    p = ringlog("topics", "list", "-b", "not a host:port:x")
    one_error_line(p, 2)
