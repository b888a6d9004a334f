"""Ingest pipelines: a golden test per stage (pure, no broker), a property test that masking
never leaks a matched value, one-line start-up errors naming the stage, and pipelines applied on
a live broker to HTTP ingest and to Kafka Produce (re-encoded batches read back by
confluent-kafka), with their per-stage metrics."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringlog.broker.pipelines import PipelineError, Rec, compile_pipeline

from .conftest import consume_all

NOW = 1_700_000_000_123


def run(stages: list[dict], lines: list[str], keys: list[bytes | None] | None = None) -> list[bytes | None]:
    pipeline = compile_pipeline("t", {"stages": stages})
    recs = [Rec.from_value(keys[i] if keys else None, line.encode()) for i, line in enumerate(lines)]
    return [r.value() for r in pipeline.run(recs, NOW)]


LOGS = ['{"level":"DEBUG","msg":"a"}', '{"level":"info","msg":"b"}', '{"level":"ERROR","msg":"card 4111111111111111"}',
        'plain text line', '{"level":"warn", "msg":"c"}']


def test_filter_golden() -> None:
    assert run([{"type": "filter", "field": "level", "equals": ["DEBUG"]}], LOGS) == [
        b'{"level":"info","msg":"b"}', b'{"level":"ERROR","msg":"card 4111111111111111"}', b"plain text line",
        b'{"level":"warn", "msg":"c"}']
    assert run([{"type": "filter", "min_level": "WARN"}], LOGS) == [
        b'{"level":"ERROR","msg":"card 4111111111111111"}', b"plain text line", b'{"level":"warn", "msg":"c"}']
    assert run([{"type": "filter", "regex": "text|card", "action": "keep"}], LOGS) == [
        b'{"level":"ERROR","msg":"card 4111111111111111"}', b"plain text line"]
    assert run([{"type": "filter", "field": "msg", "regex": "^[ab]$", "action": "keep"}], LOGS) == [
        b'{"level":"DEBUG","msg":"a"}', b'{"level":"info","msg":"b"}']


def test_mask_golden() -> None:
    lines = ['{"user":{"email":"a@x.io","id":7},"msg":"card 4111111111111111 ok"}', "card 4111111111111111 in text"]
    assert run([{"type": "mask", "fields": ["user.email"]}], lines) == [
        b'{"user":{"email":"***","id":7},"msg":"card 4111111111111111 ok"}', b"card 4111111111111111 in text"]
    assert run([{"type": "mask", "regex": r"\d{16}", "mode": "keep_last", "keep_last": 4}], lines) == [
        b'{"user":{"email":"a@x.io","id":7},"msg":"card ************1111 ok"}', b"card ************1111 in text"]
    # matches only inside strings of a line without escapes: masked in the line, which keeps its
    # spacing; a match outside a string (a number) or a line with escapes: the object is walked
    # (strings only) and written back compact
    keep4 = [{"type": "mask", "regex": r"\d{16}", "mode": "keep_last", "keep_last": 4}]
    assert run(keep4, ['{"a": "4111111111111111",  "b": 1}']) == [b'{"a": "************1111",  "b": 1}']
    assert run(keep4, ['{"n": 4111111111111111, "s": "x 4111111111111111"}']) == [
        b'{"n":4111111111111111,"s":"x ************1111"}']
    assert run(keep4, ['{"s": "\\"4111111111111111"}']) == [b'{"s":"\\"************1111"}']
    out = run([{"type": "mask", "fields": ["user.email", "user.id"], "mode": "hmac", "key": "secret"}], lines)
    first = json.loads(out[0])
    assert re.fullmatch(r"hmac:[0-9a-f]{32}", first["user"]["email"]) and first["user"]["id"].startswith("hmac:")
    # keyed: the same value and key give the same token (joinable), another key another one
    again = run([{"type": "mask", "fields": ["user.email"], "mode": "hmac", "key": "secret"}], lines[:1])
    other = run([{"type": "mask", "fields": ["user.email"], "mode": "hmac", "key": "other"}], lines[:1])
    assert json.loads(again[0])["user"]["email"] == first["user"]["email"] != json.loads(other[0])["user"]["email"]
    assert out[1] == b"card 4111111111111111 in text"  # text has no fields


def test_sample_golden() -> None:
    keys = [f"user-{i % 10}".encode() for i in range(1000)]
    lines = [json.dumps({"level": "INFO", "i": i}) for i in range(1000)]
    kept = run([{"type": "sample", "rate": 0.3, "by": "key"}], lines, keys)
    kept_keys = {json.loads(v)["i"] % 10 for v in kept}
    # by key: each key all in or all out
    assert len(kept) == 100 * len(kept_keys) and 0 < len(kept_keys) < 10
    assert run([{"type": "sample", "rate": 0.3, "by": "key"}], lines, keys) == kept  # deterministic
    levels = [json.dumps({"level": lvl, "i": i}) for i in range(300) for lvl in ("ERROR", "DEBUG", "INFO")]
    out = [json.loads(v) for v in run([{"type": "sample", "rate": 0.5, "seed": 7,
                                        "levels": {"ERROR": 1.0, "DEBUG": 0}}], levels)]
    assert sum(o["level"] == "ERROR" for o in out) == 300
    assert sum(o["level"] == "DEBUG" for o in out) == 0
    assert 100 < sum(o["level"] == "INFO" for o in out) < 200


def test_enrich_golden() -> None:
    assert run([{"type": "enrich", "fields": {"env": "prod"}, "receive_time": "meta.received"}],
               ['{"a":1}', "text stays"]) == [b'{"a":1,"env":"prod","meta":{"received":"2023-11-14T22:13:20.123Z"}}',
                                              b"text stays"]
    assert run([{"type": "enrich", "receive_time": "t", "receive_time_format": "ms"}], ['{"a":1}']) == [
        b'{"a":1,"t":1700000000123}']


SECRET = st.from_regex(r"[0-9]{16}", fullmatch=True)
NOISE = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="0123456789"), max_size=20)


@settings(max_examples=200, deadline=None)
@given(secrets=st.lists(SECRET, min_size=1, max_size=4), noise=st.lists(NOISE, min_size=5, max_size=5),
       mode=st.sampled_from(["fixed", "keep_last", "hmac"]), as_json=st.booleans())
def test_masking_never_leaks_a_matched_value(secrets, noise, mode, as_json) -> None:
    text = noise[0] + "".join(s + noise[(i + 1) % 5] for i, s in enumerate(secrets))
    value = json.dumps({"msg": text, "nested": [{"deep": text}], "n": 1}) if as_json else text
    stage = {"type": "mask", "regex": r"[0-9]{16}", "mode": mode}
    if mode == "hmac":
        stage["key"] = "k"
    out = run([stage], [value])[0].decode()
    for s in secrets:
        assert s not in out
    if as_json:
        obj = json.loads(out)
        assert all(s not in obj["msg"] and s not in obj["nested"][0]["deep"] for s in secrets)


@pytest.mark.parametrize("stages, says", [
    ([{"type": "mask"}], "pipeline 'p', stage 1 (mask): needs fields or regex"),
    ([{"type": "filter", "field": "a"}, {"type": "sample", "rate": 2}], "stage 2 (sample): rate = 2: expected a rate"),
    ([{"type": "explode"}], "stage 1: type = 'explode': expected one of filter, mask, sample, enrich"),
    ([{"type": "mask", "regex": "("}], "stage 1 (mask): regex = '(' is not a valid regular expression"),
    ([{"type": "mask", "fields": ["a"], "mode": "hmac"}], "stage 1 (mask): mode hmac needs key or key_env"),
    ([{"type": "filter", "min_level": "LOUD"}], "stage 1 (filter): min_level 'LOUD': expected a level"),
    ([{"type": "enrich", "fieldz": {}}], "stage 1 (enrich): unknown option fieldz"),
])
def test_bad_stage_is_named(stages, says) -> None:
    with pytest.raises(PipelineError) as info:
        compile_pipeline("p", {"stages": stages})
    assert says in str(info.value)


def test_bad_pipeline_config_stops_the_broker_with_one_line(tmp_path) -> None:
    conf = tmp_path / "broker.toml"
    conf.write_text('[pipelines.web]\nstages = [\n  { type = "filter", field = "level" },\n'
                    '  { type = "mask", mode = "keep_last", keep_last = -1, fields = ["a"] },\n]\n')
    out = subprocess.run([sys.executable, "-m", "ringlog.client.cli", "broker", "--data-dir", str(tmp_path / "d"),
                          "--listen", "127.0.0.1:0", "--config", str(conf)], capture_output=True, timeout=60)
    err = out.stderr.decode().strip()
    assert out.returncode == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "pipeline 'web', stage 2 (mask): keep_last = -1: expected at least 0" in err


def test_pipelines_on_http_ingest_and_kafka_produce(gw) -> None:
    gw.create_topic("sec", configs={"ingest.pipeline": "secure"})
    lines = [{"level": "DEBUG", "msg": "noise"},
             {"level": "INFO", "user": {"email": "a@x.io"}, "msg": "paid with 4111111111111111"},
             {"level": "ERROR", "msg": "plain"}]
    r = gw.http.post("/ingest/sec", content="\n".join(json.dumps(x) for x in lines),
                     headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200 and (r.json()["accepted"], r.json()["dropped"]) == (2, 1), r.text
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": gw.bootstrap, "enable.idempotence": True, "linger.ms": 20})
    for x in lines:
        p.produce("sec", key=b"k", value=json.dumps(x).encode())
    p.produce("sec", key=b"k", value=b"not json 4111111111111111")
    assert p.flush(10) == 0
    got = consume_all(gw.bootstrap, "sec", 5)
    values = [m.value() for m in got]
    assert len(values) == 5 and all(b"4111111111111111" not in v and b"a@x.io" not in v for v in values)
    http_part = [json.loads(v) for v in values[:2]]
    assert http_part[0]["msg"] == "paid with ************1111" and http_part[0]["env"] == "test"
    assert http_part[0]["user"]["email"].startswith("hmac:")
    kafka_part = values[2:]
    assert [json.loads(v)["level"] for v in kafka_part[:2]] == ["INFO", "ERROR"]  # DEBUG dropped
    assert json.loads(kafka_part[0])["user"]["email"] == http_part[0]["user"]["email"]  # joinable
    assert kafka_part[2] == b"not json ************1111"
    # the dropped DEBUG record (offset 2) left a gap in the offsets; the idempotent producer's
    # next batch still lines up with its sequence numbers
    assert [m.offset() for m in got] == [0, 1, 3, 4, 5]
    p.produce("sec", key=b"k", value=b'{"level":"INFO","msg":"after"}')
    assert p.flush(10) == 0
    assert json.loads(consume_all(gw.bootstrap, "sec", 6)[-1].value())["msg"] == "after"
    metrics = gw.http.get("/metrics").text
    assert 'ringlog_pipeline_records_dropped_total{pipeline="secure",stage="1:filter"} 2.0' in metrics
    assert 'ringlog_pipeline_values_masked_total{pipeline="secure",stage="3:mask"}' in metrics
    # a topic naming a pipeline the broker does not have: refused, not stored unmasked
    gw.create_topic("nopipe", configs={"ingest.pipeline": "missing"})
    r = gw.http.post("/ingest/nopipe", content=b'{"a":1}', headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 500 and "missing" in r.json()["error"]


def test_pipeline_on_compressed_produce_batches(gw) -> None:
    from confluent_kafka import Producer

    gw.create_topic("secz", configs={"ingest.pipeline": "secure"})
    for codec in ("gzip", "zstd", "lz4", "snappy"):
        p = Producer({"bootstrap.servers": gw.bootstrap, "compression.type": codec, "linger.ms": 20})
        for i in range(100):
            level = "DEBUG" if i % 4 == 0 else "INFO"
            p.produce("secz", value=json.dumps({"level": level, "codec": codec, "card": f"{4111111111110000 + i}"}).encode())
        assert p.flush(10) == 0
    got = consume_all(gw.bootstrap, "secz", 300)
    values = [json.loads(m.value()) for m in got]
    assert len(values) == 300  # 75 of each codec's 100 (every fourth was DEBUG)
    assert {v["codec"] for v in values} == {"gzip", "zstd", "lz4", "snappy"}
    assert all(v["level"] == "INFO" and v["env"] == "test" and v["card"].startswith("*" * 12) for v in values)
    # the batches kept their codec: the stored bytes are compressed as the producer sent them
    from ringlog.storage.batch import split_batches

    part = gw.thread.broker.partition("secz", 0)
    data = part.read(0, 1 << 24).read_bytes()
    headers = [header for header, _ in split_batches(data)]
    # (librdkafka sends a batch uncompressed when compressing does not make it smaller, which a
    # batch of one or two records lingering alone can be: so codec 0 may appear too)
    assert {h.compression for h in headers if h.records_count} - {0} == {1, 2, 3, 4}
    # a batch whose records were all dropped is kept empty (and so uncompressed)
    assert all(h.compression == 0 for h in headers if not h.records_count)
