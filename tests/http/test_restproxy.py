"""Confluent REST Proxy v2 on the gateway: topics metadata, produce in the json and binary
embedded formats (read back by confluent-kafka), REST Proxy's error bodies, and the consumer
instances API reading records that Kafka clients produced."""
from __future__ import annotations

import base64
import json
import time

from confluent_kafka import Producer

from .conftest import consume_all, wait_for

JSON_V2 = {"Content-Type": "application/vnd.kafka.json.v2+json"}
BINARY_V2 = {"Content-Type": "application/vnd.kafka.binary.v2+json"}
ACCEPT_JSON = {"Accept": "application/vnd.kafka.json.v2+json"}
ACCEPT_BINARY = {"Accept": "application/vnd.kafka.binary.v2+json"}


def test_topics_metadata(gw) -> None:
    gw.create_topic("meta", partitions=3, configs={"retention.ms": "1234"})
    r = gw.http.get("/topics")
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.kafka.v2+json"
    assert "meta" in r.json() and not any(t.startswith("__") for t in r.json())
    t = gw.http.get("/topics/meta").json()
    assert t["name"] == "meta" and t["configs"]["retention.ms"] == "1234"
    assert [p["partition"] for p in t["partitions"]] == [0, 1, 2]
    assert t["partitions"][0]["replicas"] == [{"broker": 0, "leader": True, "in_sync": True}]
    assert len(gw.http.get("/topics/meta/partitions").json()) == 3
    assert gw.http.get("/topics/meta/partitions/2").json()["partition"] == 2
    r = gw.http.get("/topics/missing")
    assert r.status_code == 404 and r.json() == {"error_code": 40401, "message": "Topic not found."}
    r = gw.http.get("/topics/meta/partitions/9")
    assert r.status_code == 404 and r.json()["error_code"] == 40402


def test_produce_json_binary_and_plain_json(gw) -> None:
    gw.create_topic("rp", partitions=2)
    r = gw.http.post("/topics/rp", headers=JSON_V2, json={"records": [
        {"key": "k1", "value": {"a": 1, "b": [1, 2]}}, {"value": "text"}, {"value": 3, "partition": 1}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["key_schema_id"] is None and body["value_schema_id"] is None
    assert all(o["error_code"] is None and o["error"] is None for o in body["offsets"])
    assert body["offsets"][2]["partition"] == 1
    raw = bytes(range(256))
    r = gw.http.post("/topics/rp/partitions/0", headers=BINARY_V2, json={"records": [
        {"key": base64.b64encode(b"bk").decode(), "value": base64.b64encode(raw).decode()}]})
    assert r.status_code == 200 and r.json()["offsets"][0]["partition"] == 0, r.text
    # plain application/json: REST Proxy takes an omitted embedded format as binary
    r = gw.http.post("/topics/rp/partitions/0", headers={"Content-Type": "application/json"},
                     json={"records": [{"value": base64.b64encode(b"plain").decode()}]})
    assert r.status_code == 200, r.text
    got = {(m.partition(), m.offset()): (m.key(), m.value()) for m in consume_all(gw.bootstrap, "rp", 5)}
    p0 = body["offsets"][0]
    assert got[(p0["partition"], p0["offset"])] == (b'"k1"', b'{"a":1,"b":[1,2]}')
    assert (b'"bk"', raw) not in got.values() and (b"bk", raw) in got.values()
    assert (None, b"plain") in got.values() and (None, b"3") in got.values() and (None, b'"text"') in got.values()


def test_rest_proxy_error_bodies(gw) -> None:
    gw.create_topic("errs")
    r = gw.http.post("/topics/errs", headers={"Content-Type": "application/vnd.kafka.avro.v2+json"},
                     json={"records": [{"value": 1}]})
    assert r.status_code == 415 and r.json()["error_code"] == 415
    r = gw.http.post("/topics/errs", headers=JSON_V2, content=b"{not json")
    assert r.status_code == 400 and r.json()["error_code"] == 400
    r = gw.http.post("/topics/errs", headers=JSON_V2, json={"nope": []})
    assert r.status_code == 422 and r.json()["error_code"] == 422
    r = gw.http.post("/topics/errs", headers=BINARY_V2, json={"records": [{"value": "%%%"}]})
    assert r.status_code == 422 and "base64" in r.json()["message"]
    r = gw.http.post("/topics/errs/partitions/5", headers=JSON_V2, json={"records": [{"value": 1}]})
    assert r.status_code == 404 and r.json()["error_code"] == 40402
    r = gw.http.post("/topics/bad!topic", headers=JSON_V2, json={"records": [{"value": 1}]})
    assert r.status_code == 404 and r.json()["error_code"] == 40401
    r = gw.http.get("/nowhere")
    assert r.status_code == 404 and r.json()["error_code"] == 404


def _poll_records(gw, base: str, want: int, accept: dict, timeout: float = 20.0) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        r = gw.http.get(f"{base}/records", params={"timeout": 500}, headers=accept)
        assert r.status_code == 200, r.text
        out += r.json()
    return out


def test_consumer_instances_read_what_kafka_clients_produced(gw) -> None:
    gw.create_topic("cons", partitions=2)
    p = Producer({"bootstrap.servers": gw.bootstrap})
    for i in range(30):
        p.produce("cons", key=f"k{i}".encode(), value=json.dumps({"i": i}).encode())
    assert p.flush(10) == 0
    r = gw.http.post("/consumers/g1", headers={"Content-Type": "application/vnd.kafka.v2+json"},
                     json={"name": "c1", "format": "json", "auto.offset.reset": "earliest", "auto.commit.enable": "false"})
    assert r.status_code == 200, r.text
    assert r.json()["instance_id"] == "c1" and r.json()["base_uri"].endswith("/consumers/g1/instances/c1")
    r = gw.http.post("/consumers/g1", json={"name": "c1"})
    assert r.status_code == 409 and r.json()["error_code"] == 40902
    base = "/consumers/g1/instances/c1"
    r = gw.http.post(f"{base}/subscription", json={"topics": ["cons"]})
    assert r.status_code == 204
    assert gw.http.get(f"{base}/subscription").json() == {"topics": ["cons"]}
    r = gw.http.get(f"{base}/records", headers=ACCEPT_BINARY)
    assert r.status_code == 406 and r.json()["error_code"] == 40601
    records = _poll_records(gw, base, 30, ACCEPT_JSON)
    assert sorted(rec["value"]["i"] for rec in records) == list(range(30))
    # keys that are not JSON (k0, k1, ...) come back as text
    assert {rec["key"] for rec in records} == {f"k{i}" for i in range(30)}
    wait_for(lambda: len(gw.http.get(f"{base}/assignments").json()["partitions"]) == 2, what="assignment")
    # commit what was read (no body: the positions), then read them back
    r = gw.http.post(f"{base}/offsets")
    assert r.status_code == 200, r.text
    ends = {rec["partition"]: max(x["offset"] for x in records if x["partition"] == rec["partition"]) + 1
            for rec in records}
    got = gw.http.request("GET", f"{base}/offsets", json={"partitions": [
        {"topic": "cons", "partition": 0}, {"topic": "cons", "partition": 1}]}).json()["offsets"]
    assert {o["partition"]: o["offset"] for o in got} == ends
    # the committed offsets are the group's, as a Kafka consumer of the group sees them
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": gw.bootstrap, "group.id": "g1"})
    try:
        committed = c.committed([TopicPartition("cons", 0), TopicPartition("cons", 1)], timeout=10)
    finally:
        c.close()
    assert {tp.partition: tp.offset for tp in committed} == ends
    r = gw.http.delete(base)
    assert r.status_code == 204
    r = gw.http.get(f"{base}/records", headers=ACCEPT_JSON)
    assert r.status_code == 404 and r.json()["error_code"] == 40403


def test_consumer_binary_manual_assignment_and_explicit_commit(gw) -> None:
    gw.create_topic("man")
    r = gw.http.post("/ingest/man", content=b"a\nb\nc", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200
    assert gw.http.post("/consumers/g2", json={"name": "m", "auto.offset.reset": "earliest"}).status_code == 200
    base = "/consumers/g2/instances/m"
    assert gw.http.post(f"{base}/assignments", json={"partitions": [{"topic": "man", "partition": 0}]}).status_code == 204
    r = gw.http.post(f"{base}/subscription", json={"topics": ["man"]})
    assert r.status_code == 409 and r.json()["error_code"] == 40903
    records = _poll_records(gw, base, 3, ACCEPT_BINARY)
    assert [base64.b64decode(rec["value"]) for rec in records] == [b"a", b"b", b"c"]
    assert [rec["offset"] for rec in records] == [0, 1, 2]
    r = gw.http.post(f"{base}/offsets", json={"offsets": [{"topic": "man", "partition": 0, "offset": 2}]})
    assert r.status_code == 200, r.text
    got = gw.http.request("GET", f"{base}/offsets", json={"partitions": [{"topic": "man", "partition": 0}]}).json()
    assert got["offsets"] == [{"topic": "man", "partition": 0, "offset": 2, "metadata": ""}]
    # seek: to an offset, to the beginning, to the end; only assigned partitions
    assert gw.http.post(f"{base}/positions", json={"offsets": [{"topic": "man", "partition": 0, "offset": 1}]}
                        ).status_code == 204
    assert [base64.b64decode(r["value"]) for r in _poll_records(gw, base, 2, ACCEPT_BINARY)] == [b"b", b"c"]
    assert gw.http.post(f"{base}/positions/beginning", json={"partitions": [{"topic": "man", "partition": 0}]}
                        ).status_code == 204
    assert [r["offset"] for r in _poll_records(gw, base, 3, ACCEPT_BINARY)] == [0, 1, 2]
    assert gw.http.post(f"{base}/positions/end", json={"partitions": [{"topic": "man", "partition": 0}]}
                        ).status_code == 204
    assert gw.http.get(f"{base}/records", params={"timeout": 0}, headers=ACCEPT_BINARY).json() == []
    r = gw.http.post(f"{base}/positions", json={"offsets": [{"topic": "other", "partition": 0, "offset": 0}]})
    assert r.status_code == 409 and r.json()["error_code"] == 40903
    assert gw.http.delete(base).status_code == 204


def test_large_produce_body_is_decoded_off_the_event_loop(gw) -> None:
    # over 256 KiB: parsed in a worker thread, answered the same way
    records = [{"value": base64.b64encode(b"v" * 1000 + str(i).encode()).decode()} for i in range(300)]
    r = gw.http.post("/topics/big", headers=BINARY_V2, json={"records": records})
    assert r.status_code == 200 and len(r.json()["offsets"]) == 300, r.text
    assert [o["offset"] for o in r.json()["offsets"]] == list(range(300))
    r = gw.http.post("/topics/big", headers=BINARY_V2, json={"records": records + [{"value": "%"}]})
    assert r.status_code == 422 and "base64" in r.json()["message"]
