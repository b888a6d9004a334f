"""`ringlog bench` end to end on a tiny plan (ringlog only), plus the report's pure parts.

The smoke run starts a real `ringlog broker` (fsync never) and drives it with the real
confluent-kafka harness: the machine limits, a produce/consume run, single-record requests, the
latency workload (unpaced, then at 50%) and a kill -9 recovery of a small data directory. It checks
that every section produced numbers, not what the numbers are (they depend on the machine).
Bounded: about 30 s on 2 cores; output goes to tmp_path only.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re

import pytest

pytest.importorskip("confluent_kafka")

from ringlog.client.bench import report, runner, workloads  # noqa: E402
from ringlog.client.cli import main  # noqa: E402

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def test_quick_bench_against_ringlog(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["bench", "--quick", "--systems", "ringlog-never", "--sizes", "1024", "--runs", "1",
            "--output", str(out), "--tmp-dir", str(tmp_path)]
    if not HAVE_MATPLOTLIB:
        argv.append("--no-plots")
    assert main(argv) == 0
    stdout = capsys.readouterr().out

    results = json.loads((out / "bench-results.json").read_text())
    assert results["errors"] == []
    (p,) = results["produce"]
    assert p["system"] == "ringlog-never" and p["size"] == 1024
    assert p["median"]["records_s"] > 0 and p["median"]["errors"] == 0
    assert p["median"]["broker_cpu_s"] > 0 and p["median"]["broker_rss_peak_mib"] > 10
    (c,) = results["consume"]
    assert c["median"]["complete"] and c["median"]["records"] == p["median"]["records"]
    (s,) = results["single"]
    assert s["median"]["requests_s"] > 0
    fractions = sorted(r["fraction"] for r in results["latency"])
    assert fractions == [0.5, 1.0]
    half = next(r for r in results["latency"] if r["fraction"] == 0.5)
    for key in ("ack_ms", "e2e_ms"):
        assert all(math.isfinite(v) and v > 0 for v in half["median"][key].values()), half["median"][key]
    assert half["median"]["target_rate"] == pytest.approx(0.5 * half["max_rate"])
    rec = results["recovery"]
    assert rec["runs"] and rec["median"]["ready_s"] > 0 and rec["runs"][-1]["nothing_lost"]
    for name in ("page_cache_write", "fdatasync_1mib", "fdatasync_4kib", "loopback_tcp"):
        assert results["limits"][name]["median"]["mb_s"] > 0

    md = (out / "performance.md").read_text()
    assert report.BEGIN in md and report.END in md
    assert re.search(r"\| 1 KiB \| [\d,]+ \([\d.,]+\) \|", md), md  # a throughput row with figures
    assert "ringlog bench --quick" in md
    # every goal is reported with a verdict, none asserted
    for line in ("page-cache write rate", "fdatasync rate", "p99 produce latency", "recovery"):
        assert re.search(rf"^(PASS\*?|MISS|n/a)\s.*{line}", stdout, re.M), stdout
    if HAVE_MATPLOTLIB:
        for png in ("bench-throughput.png", "bench-latency.png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The page can be rewritten from the saved results without measuring again.
    again = tmp_path / "again"
    assert main(["bench", "--from-results", str(out / "bench-results.json"), "--output", str(again),
                 "--no-plots"]) == 0
    assert (again / "performance.md").read_text() == md


def test_markdown_block_is_replaced_and_the_rest_kept(tmp_path):
    page = tmp_path / "performance.md"
    report.write_markdown(page, "first body\n")
    text = page.read_text()
    assert text.startswith("# ringlog performance") and "first body" in text
    page.write_text(text + "\n## Client library\n\nhand-written section\n")
    report.write_markdown(page, "second body\n")
    text = page.read_text()
    assert "second body" in text and "first body" not in text
    assert text.count(report.BEGIN) == 1 and "## Client library\n\nhand-written section" in text


def test_percentiles_and_medians():
    values = list(range(1, 1001))
    p = workloads.percentiles(values)
    assert (p["p50"], p["p95"], p["p99"], p["p99.9"], p["max"]) == (500, 950, 990, 999, 1000)
    assert math.isnan(workloads.percentiles([])["p99"])
    m = runner.median_of([{"a": 1, "b": {"x": 5}, "ok": True}, {"a": 3, "b": {"x": 1}, "ok": True},
                          {"a": 2, "b": {"x": 3}, "ok": False}])
    assert m == {"a": 2, "b": {"x": 3}, "ok": False}


def test_goals_judge_ratios():
    plan = {"sizes": [1024], "systems": ["ringlog-interval", "tansu"]}

    def row(system, rate, mb=1.0):
        return {"system": system, "size": 1024, "partitions": 1, "producers": 1,
                "median": {"records_s": rate, "mb_s": mb}}

    results = {"plan": plan, "produce": [row("ringlog-interval", 200.0), row("tansu", 100.0)],
               "consume": [row("ringlog-interval", 50.0), row("tansu", 100.0)]}
    (g,) = [g for g in report.goals(results) if "Tansu" in g["goal"]]
    assert g["status"] == "MISS" and "produce 1 KiB 2.00x" in g["figures"] and "consume 1 KiB 0.50x" in g["figures"]


@pytest.mark.parametrize("args,message", [
    (["--kafka-heap", "lots"], "--kafka-heap 'lots': give a JVM size"),
    (["--kafka-classpath", "/nonexistent/kafka_2.13-4.4.0.jar"], "names 1 missing file(s)"),
])
def test_kafka_system_bad_settings_are_one_line_errors(tmp_path, capsys, monkeypatch, args, message):
    # checked before any broker starts; java must be there for the checks past the first
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)
    assert main(["bench", "--systems", "kafka", "--no-plots", "--output", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
