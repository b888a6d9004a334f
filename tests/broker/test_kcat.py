"""kcat (librdkafka 2.0.x, Debian's) against a live broker: metadata, and produce/consume with
every codec (librdkafka only compresses when Produce 0 is in the advertised range)."""
from __future__ import annotations

import subprocess

import pytest

from ringlog.storage.batch import split_batches
from tests.conftest import require_tool

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def kcat(*args: str, input: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("kcat"), *args], input=input, capture_output=True, timeout=timeout)


def test_metadata_listing(live_broker) -> None:
    out = kcat("-b", live_broker.bootstrap, "-L", "-m", "5")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert f"broker 0 at {live_broker.bootstrap} (controller)" in text


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_roundtrip(live_broker, codec: str) -> None:
    topic = f"kc-{codec}"
    lines = [f"key{i}:value-{codec}-{i}" * (1 + i % 3) for i in range(50)]
    out = kcat("-b", live_broker.bootstrap, "-P", "-t", topic, "-z", codec, "-K", ":",
               "-X", "linger.ms=50", input="\n".join(lines).encode() + b"\n")
    assert out.returncode == 0, out.stderr
    out = kcat("-b", live_broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
               "-f", "%o|%k|%s\n", "-m", "10")
    assert out.returncode == 0, out.stderr
    got = out.stdout.decode().splitlines()
    expected = []
    for i, line in enumerate(lines):
        key, _, value = line.partition(":")
        expected.append(f"{i}|{key}|{value}")
    assert got == expected
    # librdkafka really compressed the batches (it silently falls back to none otherwise; its LZ4
    # feature flag is keyed on FindCoordinator v0 being advertised).
    plog = live_broker.broker.partition_log(topic, 0)
    raw = plog.read_records_bytes(0, 1 << 20)
    codecs = {h.compression for h, _ in split_batches(raw)}
    # (librdkafka sends a batch uncompressed when compressing did not make it smaller)
    assert CODECS.index(codec) in codecs and codecs <= {0, CODECS.index(codec)}
