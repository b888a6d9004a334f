"""POST /ingest/{topic}: NDJSON and text lines in, read back byte-exact by confluent-kafka and
kcat; keys, gzip, JSON arrays, curl; and every bad input's status."""
from __future__ import annotations

import gzip
import json
import subprocess

import pytest

from ringlog.client.partitioner import murmur2_partition
from tests.conftest import require_tool

from .conftest import consume_all, gateway_config

NDJSON = {"Content-Type": "application/x-ndjson"}


def test_ndjson_read_back_byte_exact_by_confluent_kafka_and_kcat(gw) -> None:
    # odd spacing and unicode: the stored value is the line exactly as sent
    lines = [b'{"n": %d,  "msg":"caf\xc3\xa9 \\u00e9", "lvl" :"info"}' % i for i in range(200)]
    r = gw.http.post("/ingest/app-logs", content=b"\n".join(lines) + b"\n", headers=NDJSON)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["records"], body["accepted"], body["dropped"]) == (200, 200, 0)
    assert body["offsets"] == [{"partition": 0, "offset": 0, "count": 200}]
    got = consume_all(gw.bootstrap, "app-logs", 200)
    assert [m.value() for m in got] == lines
    assert all(m.key() is None for m in got)
    out = subprocess.run([require_tool("kcat"), "-b", gw.bootstrap, "-C", "-t", "app-logs", "-e", "-q",
                          "-f", "%s\n"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(b"\n")[:-1] == lines


def test_key_field_partitions_like_kafka_and_text_lines(gw) -> None:
    gw.create_topic("keyed", partitions=4)
    users = [f"user-{i}" for i in range(40)]
    body = "\n".join(json.dumps({"user": {"id": u}, "i": i}) for i, u in enumerate(users))
    r = gw.http.post("/ingest/keyed", params={"key": "user.id"}, content=body, headers=NDJSON)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 40
    got = consume_all(gw.bootstrap, "keyed", 40)
    assert sorted(m.key().decode() for m in got) == sorted(users)
    for m in got:
        assert m.partition() == murmur2_partition(m.key(), 4)
    # text/plain: every line a record, CRLF endings and blank lines fine
    r = gw.http.post("/ingest/plain", content=b"one\r\ntwo\n\nthree", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200 and r.json()["accepted"] == 3
    assert [m.value() for m in consume_all(gw.bootstrap, "plain", 3)] == [b"one", b"two", b"three"]


def test_gzip_and_json_array_and_curl(gw) -> None:
    lines = [json.dumps({"i": i}).encode() for i in range(50)]
    r = gw.http.post("/ingest/gz", content=gzip.compress(b"\n".join(lines)),
                     headers={**NDJSON, "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 50, r.text
    # Fluent Bit's format=json / Logstash's json_batch: one array, one record per element
    r = gw.http.post("/ingest/gz", json=[{"i": 50}, {"i": 51}])
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    out = subprocess.run([require_tool("curl"), "-s", "-w", "\n%{http_code}", "-XPOST", "-H",
                          "Content-Type: application/x-ndjson", "--data-binary", '{"i":52}\n{"i":53}\n',
                          f"{gw.url}/ingest/gz"], capture_output=True, timeout=30)
    text, code = out.stdout.decode().rsplit("\n", 1)
    assert code == "200" and json.loads(text)["accepted"] == 2
    # `Expect: 100-continue` (older curls send it for bodies over 1 KiB): told to go on at once
    big = "".join(json.dumps({"i": 54, "pad": "x" * 100}) + "\n" for _ in range(20))
    out = subprocess.run([require_tool("curl"), "-s", "-v", "-w", "\n%{http_code}", "-XPOST", "-H",
                          "Content-Type: application/x-ndjson", "-H", "Expect: 100-continue", "--data-binary", big,
                          f"{gw.url}/ingest/big"],
                         capture_output=True, timeout=30)
    assert out.stdout.decode().endswith("\n200") and b"HTTP/1.1 100" in out.stderr, out.stderr
    got = consume_all(gw.bootstrap, "gz", 54)
    assert [m.value() for m in got] == lines + [b'{"i":50}', b'{"i":51}', b'{"i":52}', b'{"i":53}']


def test_bad_input_statuses(gw) -> None:
    r = gw.http.post("/ingest/bad", content=b'{"ok":1}\n{"ok":2}\n{"broken"\n', headers=NDJSON)
    assert r.status_code == 400 and r.json()["error"].startswith("line 3: not JSON"), r.text
    r = gw.http.post("/ingest/bad", content=b"x", headers={"Content-Type": "application/xml"})
    assert r.status_code == 415
    r = gw.http.post("/ingest/bad", content=b"x", headers={"Content-Type": "text/plain", "Content-Encoding": "br"})
    assert r.status_code == 415
    r = gw.http.post("/ingest/bad", content=b"x" * 100, headers={**NDJSON, "Content-Encoding": "gzip"})
    assert r.status_code == 400
    r = gw.http.post("/ingest/bad", content=b"x", headers={"Content-Type": "text/plain"}, params={"key": "a"})
    assert r.status_code == 400
    r = gw.http.get("/ingest/bad")
    assert r.status_code == 405
    # an empty body, or only blank lines: nothing to write, nothing refused
    r = gw.http.post("/ingest/empty", content=b"\n \n", headers=NDJSON)
    assert r.status_code == 200 and r.json() == {"records": 0, "accepted": 0, "dropped": 0, "offsets": []}
    # NDJSON whose first line is an array is still one record per line
    r = gw.http.post("/ingest/arrays", content=b"[1,2]\n[3]\n", headers=NDJSON)
    assert r.status_code == 200 and r.json()["accepted"] == 2
    r = gw.http.post("/ingest/bad!name", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 404
    r = gw.http.post("/ingest/bad", content=b"x", headers={"Content-Type": "text/plain"}, params={"partition": "7"})
    assert r.status_code == 404
    # nothing of the refused requests was stored: the topic was created empty, or not at all
    info = gw.thread.broker.metadata.get("bad")
    assert info is None or gw.thread.broker.high_watermark("bad", 0) == 0


@pytest.fixture
def small(tmp_path):
    from ringlog.broker.testing import BrokerThread

    from .conftest import Gateway

    config = gateway_config(tmp_path, http_max_body_bytes=4096, http_max_inflated_bytes=8192,
                            auto_create_topics=False)
    with BrokerThread(config) as b:
        g = Gateway(b)
        yield g
        g.http.close()


def test_size_limits_and_unknown_topic_without_auto_create(small) -> None:
    small.create_topic("t")
    r = small.http.post("/ingest/t", content=b"a\n" * 4000, headers={"Content-Type": "text/plain"})
    assert r.status_code == 413
    bomb = gzip.compress(b"a\n" * 100_000)
    assert len(bomb) < 4096
    r = small.http.post("/ingest/t", content=bomb, headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"})
    assert r.status_code == 413 and "http.max.inflated.bytes" in r.json()["error"]
    r = small.http.post("/ingest/nope", content=b"a", headers={"Content-Type": "text/plain"})
    assert r.status_code == 404 and "auto.create.topics.enable" in r.json()["error"]
    assert small.thread.broker.metadata.get("nope") is None
    r = small.http.post("/ingest/t", content=b"fine", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200
