"""Micro-benchmark of the broker's per-batch produce check: validate_batch + check_records.

    python -m tests.bench.records_check [--reps 30] [--batch-bytes 1048576]

For each codec it builds one batch of about `--batch-bytes` of records (200-byte JSON-like
values with varying fields, so the compressors see realistic ratios of 3-6x, not zeros) and
times the check that the Produce handler runs on it, printing the median and the minimum over
`--reps` runs. The same numbers before and after a change to storage/records.py show whether the
check got slower. Not a pytest module: timings on a shared machine are for reading, not asserting.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

from ringlog.storage.batch import CODEC_GZIP, CODEC_LZ4, CODEC_NONE, CODEC_SNAPPY, CODEC_ZSTD, validate_batch
from ringlog.storage.records import build_batch, check_records

CODECS = {"none": CODEC_NONE, "gzip": CODEC_GZIP, "snappy": CODEC_SNAPPY, "lz4": CODEC_LZ4, "zstd": CODEC_ZSTD}


def records(total: int, seed: int = 7):
    rng = random.Random(seed)
    out = []
    size = 0
    n = 0
    while size < total:
        value = (
            '{"user":%d,"event":"%s","ts":%d,"amount":%0.2f,"tags":["%s","%s"],"pad":"%s"}'
            % (
                rng.randrange(10**6),
                rng.choice(("click", "view", "buy", "scroll")),
                1_700_000_000_000 + n,
                rng.random() * 1000,
                rng.choice("abcdefgh"),
                rng.choice("ijklmnop"),
                "x" * rng.randrange(60, 120),
            )
        ).encode()
        key = b"user-%d" % rng.randrange(1000)
        out.append((key, value, (), 1_700_000_000_000 + n))
        size += len(value) + len(key) + 10
        n += 1
    return out


def bench(raw: bytes, reps: int) -> list[float]:
    view = memoryview(raw)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        header = validate_batch(view, from_client=True)
        check_records(view, header)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--batch-bytes", type=int, default=1 << 20)
    ap.add_argument("--codecs", default=",".join(CODECS))
    args = ap.parse_args()
    items = records(args.batch_bytes)
    small = records(16 * 1024)
    print(f"{len(items)} records, ~{args.batch_bytes} bytes uncompressed; {args.reps} reps")
    print(f"{'batch':<16}{'wire bytes':>12}{'median ms':>12}{'min ms':>10}{'MB/s (raw)':>12}")
    cases = [(f"{c} 1MiB", build_batch(items, compression=CODECS[c])) for c in args.codecs.split(",")]
    cases.append(("none 16KiB", build_batch(small)))
    for name, raw in cases:
        bench(raw, 3)  # warm up
        t = bench(raw, args.reps)
        med = statistics.median(t)
        mbps = (args.batch_bytes if "1MiB" in name else 16 * 1024) / med / 1e6
        print(f"{name:<16}{len(raw):>12}{med * 1e3:>12.3f}{min(t) * 1e3:>10.3f}{mbps:>12.0f}")


if __name__ == "__main__":
    main()
