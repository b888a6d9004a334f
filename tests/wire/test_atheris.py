"""Coverage-guided fuzzing of the first decoders of untrusted bytes (tests/atheris_harness.py):
frames and requests, record batches, and responses. A bounded run here; RINGLOG_SLOW=1 runs
long ones. Each run starts from seeds of valid input, so the fuzzer begins past the size and CRC
checks instead of having to find them."""
from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from ringlog.client.wire import encode_body
from ringlog.storage.records import build_batch
from tests.conftest import REQUIRE_TOOLS, SLOW
from tests.fuzzkit import broker_request_classes, hostile_frame, random_batch, random_entity

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "atheris_harness.py")
RUNS = 5_000_000 if SLOW else 200_000
SECONDS = 1200 if SLOW else 15


def _seeds(target: str, directory: str) -> None:
    rnd = random.Random(11)
    os.makedirs(directory)
    requests = broker_request_classes()
    for i in range(40):
        if target == "frames":
            data = hostile_frame(rnd, requests)[1]
        elif target == "batches":
            data = bytes([3]) + (random_batch(rnd) if i % 4 else build_batch([(b"k", b"v" * i, (), i)]))
        else:
            from tests.fuzzkit import kio_classes
            classes = [c for c in kio_classes() if c.__name__.endswith("Response")]
            cls = rnd.choice(classes)
            data = b"\x00\x00" + encode_body(random_entity(cls, rnd))  # the key/version prefix is fuzzed
        with open(os.path.join(directory, f"seed-{i}"), "wb") as f:
            f.write(data)


@pytest.mark.parametrize("target", ["frames", "batches", "responses"])
def test_coverage_guided(target: str, tmp_path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        if REQUIRE_TOOLS:
            raise
        pytest.skip("atheris is not installed (pip install -e '.[test]' brings it on x86-64 Linux)")
    corpus = str(tmp_path / "corpus")
    _seeds(target, corpus)
    run = subprocess.run(
        [sys.executable, HARNESS, target, f"-runs={RUNS}", f"-max_total_time={SECONDS}",
         "-rss_limit_mb=1024", "-max_len=4096", corpus],
        cwd=tmp_path, capture_output=True, text=True, timeout=SECONDS + 300)
    tail = run.stderr[-3000:]
    assert run.returncode == 0, tail  # a finding: libFuzzer wrote the input to crash-* in tmp_path
    assert "Done" in tail, tail
    print("\n" + "\n".join(line for line in tail.splitlines() if "DONE" in line or line.startswith("Done")))
