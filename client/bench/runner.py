"""The benchmark plan and the loop that runs it.

Order of work (all on one machine, in one run):
  1. machine limits (disk write with and without fdatasync in the brokers' temporary directory,
     loopback TCP);
  2. for each produce configuration (record size, partitions, producers): one fresh broker per
     system, all started side by side; the repetitions are interleaved across systems
     (run 1 of every system, then run 2, ...) so that a change of load on the machine during the
     run hits every system alike. Each repetition produces into a new topic, then consumes it back;
  3. single-record requests and the latency sweep, again with fresh brokers side by side; the
     sweep's rates are fractions of each system's own maximum for the same workload (the latency
     producer and consumer, unpaced: 1 KiB, 1 partition, linger.ms=0), measured first;
  4. recovery after kill -9 (ringlog, fsync never; Tansu runs in memory and has nothing to recover).
Every measurement is repeated `runs` times; the report quotes medians.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from . import limits, machine, workloads
from .brokers import (DEFAULT_SYSTEMS, BrokerStartError, RinglogBroker, discard, dir_bytes, ensure_topic, log_bytes,
                      make_system)

KIB = 1024
MIB = 2**20
GIB = 2**30
SECTIONS = ("limits", "produce", "single", "latency", "recovery")
LATENCY_SIZE = 1 * KIB


@dataclass
class Plan:
    systems: list[str] = field(default_factory=lambda: list(DEFAULT_SYSTEMS))
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    runs: int = 3
    sizes: list[int] = field(default_factory=lambda: [100, 1 * KIB, 10 * KIB, 100 * KIB])
    # (size, partitions, producers) beyond the size sweep (which is 1 partition, 1 producer). One
    # producer process tops out near 1M rec/s of 100 B (the Python loop around produce()), so
    # small records also run with 4 producers to load the broker rather than the client.
    variants: list[tuple[int, int, int]] = field(
        default_factory=lambda: [(100, 8, 1), (100, 1, 4), (1 * KIB, 8, 1), (10 * KIB, 8, 1), (1 * KIB, 1, 4),
                                 (1 * KIB, 8, 4)])
    produce_s: float = 2.0
    produce_max_bytes: int = 1 * GIB
    consume_timeout_s: float = 60.0
    single_s: float = 2.0
    single_size: int = 100
    latency_fractions: list[float] = field(default_factory=lambda: [0.10, 0.25, 0.50, 0.75])
    latency_s: float = 2.5
    latency_warmup_s: float = 0.5
    recovery_bytes: int = int(2.5 * GIB)
    recovery_extra_bytes: int = 128 * MIB
    limits_s: float = 2.0
    limits_max_bytes: int = 2 * GIB

    @classmethod
    def quick(cls, **overrides: Any) -> "Plan":
        plan = cls(runs=1, sizes=[1 * KIB, 100 * KIB], variants=[], produce_s=1.0,
                   produce_max_bytes=256 * MIB, consume_timeout_s=30.0, single_s=1.0,
                   latency_fractions=[0.50], latency_s=1.5, latency_warmup_s=0.3,
                   recovery_bytes=100 * MIB, recovery_extra_bytes=8 * MIB, limits_s=0.5,
                   limits_max_bytes=512 * MIB)
        for k, v in overrides.items():
            setattr(plan, k, v)
        return plan


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median_of(runs: list[dict]) -> dict:
    """Per-key median over the runs (nested dicts key by key; non-numbers from the first run)."""
    if not runs:
        return {}
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(first, bool):
            out[key] = all(values)
        elif isinstance(first, (int, float)):
            out[key] = statistics.median(v for v in values if isinstance(v, (int, float)))
        elif isinstance(first, dict):
            out[key] = median_of([v for v in values if isinstance(v, dict)])
        else:
            out[key] = first
    return out


# Harness failures (a broker that died, a client that timed out) are recorded here, logged with the
# broker's last output, and the run goes on with the next measurement; the CLI exits non-zero.
ERRORS: list[dict] = []
RECOVERABLE = (workloads.WorkloadError, BrokerStartError, TimeoutError, OSError, RuntimeError)


def _record_error(where: str, exc: BaseException, broker: Any = None) -> None:
    tail = broker.tail(15) if broker is not None else ""
    ERRORS.append({"where": where, "error": f"{type(exc).__name__}: {exc}", "broker_output": tail})
    log(f"ERROR in {where}: {type(exc).__name__}: {exc}" + (f"\n{tail}" if tail else ""))


class _SideBySide:
    """Fresh brokers of every system, running at the same time."""

    def __init__(self, systems: list[str], workdir: str, partitions: int) -> None:
        self.workdir = workdir
        self.partitions = partitions
        self.brokers: dict[str, Any] = {s: make_system(s, workdir, partitions=partitions) for s in systems}
        # Start (and later stop) them concurrently: a Python broker takes a second or more to
        # start, and the brokers are idle while the others start.
        with ThreadPoolExecutor(len(systems)) as pool:
            futures = [pool.submit(b.start) for b in self.brokers.values()]
        try:
            for f in futures:
                f.result()
        except BaseException:
            self.close()
            raise

    def alive(self, system: str) -> Any:
        """The system's broker; one that died is replaced by a fresh one (after logging why)."""
        b = self.brokers[system]
        if not b.alive():
            _record_error(f"{system} broker", RuntimeError(f"exited with {b.proc.returncode}"), b)
            discard(b)
            b = self.brokers[system] = make_system(system, self.workdir, partitions=self.partitions).start()
        return b

    def close(self) -> None:
        if self.brokers:
            with ThreadPoolExecutor(len(self.brokers)) as pool:
                list(pool.map(discard, self.brokers.values()))
        self.brokers.clear()

    def __enter__(self) -> "_SideBySide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(plan: Plan, *, workdir: str | None = None, command: str = "ringlog bench") -> dict:
    t_start = time.perf_counter()
    ERRORS.clear()
    tmp = tempfile.TemporaryDirectory(prefix="ringlog-bench-", dir=workdir)
    wd = tmp.name
    results: dict[str, Any] = {"machine": machine.describe(), "command": command, "plan": asdict(plan),
                               "workdir": wd}
    try:
        if "limits" in plan.sections:
            results["limits"] = _limits(plan, wd)
        if "produce" in plan.sections:
            results["produce"], results["consume"] = _produce_consume(plan, wd)
        if "single" in plan.sections or "latency" in plan.sections:
            results["single"], results["latency"] = _single_latency(plan, wd)
        if "recovery" in plan.sections and any(s.startswith("ringlog") for s in plan.systems):
            try:
                results["recovery"] = _recovery(plan, wd)
            except RECOVERABLE as exc:
                _record_error("recovery", exc)
    finally:
        tmp.cleanup()
    if "kafka" in plan.systems:
        from . import kafka_ref

        results["kafka"] = kafka_ref.describe()
    results["errors"] = list(ERRORS)
    results["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    log(f"done in {results['elapsed_s']} s")
    return results


def _limits(plan: Plan, wd: str) -> dict:
    log("machine limits: disk write (page cache, fdatasync) and loopback TCP")
    raw = limits.measure_all(wd, runs=plan.runs, duration_s=plan.limits_s, max_bytes=plan.limits_max_bytes)
    out = {name: {"runs": runs, "median": median_of(runs)} for name, runs in raw.items()}
    for name, v in out.items():
        log(f"  {name}: {v['median']['mb_s']:.0f} MB/s")
    return out


def _produce_consume(plan: Plan, wd: str) -> tuple[list[dict], list[dict]]:
    configs = [(size, 1, 1) for size in plan.sizes] + [v for v in plan.variants if v not in
                                                        [(s, 1, 1) for s in plan.sizes]]
    produce_rows: list[dict] = []
    consume_rows: list[dict] = []
    for size, partitions, producers in configs:
        runs_p: dict[str, list[dict]] = {s: [] for s in plan.systems}
        runs_c: dict[str, list[dict]] = {s: [] for s in plan.systems}
        with _SideBySide(plan.systems, wd, partitions) as side:
            for r in range(plan.runs):
                for system in plan.systems:
                    topic = f"bench-{size}-{partitions}p-{producers}w-r{r}"
                    b = None
                    try:
                        b = side.alive(system)
                        ensure_topic(b.bootstrap, topic, partitions)
                        limits.settle_disk()  # no run pays for the previous runs' dirty pages
                        p = workloads.produce(b.bootstrap, topic, partitions=partitions, size=size,
                                              producers=producers, duration_s=plan.produce_s,
                                              max_bytes=plan.produce_max_bytes, broker_pid=b.pid)
                        c = workloads.consume(b.bootstrap, topic, partitions=partitions, expected=p["records"],
                                              timeout_s=plan.consume_timeout_s, broker_pid=b.pid)
                    except RECOVERABLE as exc:
                        _record_error(f"{system} produce/consume {topic}", exc, b)
                        continue
                    runs_p[system].append(p)
                    runs_c[system].append(c)
                    log(f"{system:17s} size={size:<6d} partitions={partitions} producers={producers} "
                        f"run {r + 1}: produce {p['records_s']:,.0f} rec/s {p['mb_s']:.1f} MB/s | "
                        f"consume {c['records_s']:,.0f} rec/s {c['mb_s']:.1f} MB/s")
        for system in plan.systems:
            if not runs_p[system]:
                continue
            key = {"system": system, "size": size, "partitions": partitions, "producers": producers}
            produce_rows.append({**key, "runs": runs_p[system], "median": median_of(runs_p[system])})
            consume_rows.append({**key, "runs": runs_c[system], "median": median_of(runs_c[system])})
    return produce_rows, consume_rows


def _interleaved(side: "_SideBySide", systems: list[str], runs: int, topic_of: Callable[[int], str], what: str,
                 measure: Callable[[Any, str, str], dict], describe: Callable[[dict, int], str]) -> dict[str, list[dict]]:
    """`runs` repetitions of `measure(broker, topic, system)` on each system in turn, each on a new
    one-partition topic (`topic_of(run)`), logging `describe(result, run)`. A failed run is
    recorded and left out."""
    out: dict[str, list[dict]] = {s: [] for s in systems}
    for r in range(runs):
        for system in systems:
            topic = topic_of(r)
            b = None
            try:
                b = side.alive(system)
                ensure_topic(b.bootstrap, topic, 1)
                res = measure(b, topic, system)
            except RECOVERABLE as exc:
                _record_error(f"{system} {what} {topic}", exc, b)
                continue
            out[system].append(res)
            log(f"{system:17s} {describe(res, r)}")
    return out


def _single_latency(plan: Plan, wd: str) -> tuple[list[dict], list[dict]]:
    single_rows: list[dict] = []
    latency_rows: list[dict] = []
    with _SideBySide(plan.systems, wd, 1) as side:
        if "single" in plan.sections:
            runs_s = _interleaved(
                side, plan.systems, plan.runs, lambda r: f"bench-single-r{r}", "single",
                lambda b, topic, system: workloads.single(b.bootstrap, topic, size=plan.single_size,
                                                          duration_s=plan.single_s, max_records=1_000_000,
                                                          broker_pid=b.pid),
                lambda res, r: f"single-record requests run {r + 1}: {res['requests_s']:,.0f} req/s")
            for system in [x for x in plan.systems if runs_s[x]]:
                single_rows.append({"system": system, "size": plan.single_size, "runs": runs_s[system],
                                    "median": median_of(runs_s[system])})
        if "latency" in plan.sections:
            # The maximum: the latency workload unpaced, `runs` times, median.
            runs_m = _interleaved(
                side, plan.systems, plan.runs, lambda r: f"bench-latency-max-r{r}", "latency",
                lambda b, topic, system: workloads.latency(b.bootstrap, topic, size=LATENCY_SIZE, rate=None,
                                                           duration_s=plan.latency_s,
                                                           warmup_s=plan.latency_warmup_s, broker_pid=b.pid),
                lambda res, r: f"latency workload unpaced run {r + 1}: {res['delivered_rate']:,.0f} rec/s")
            max_rates = {s: median_of(runs_m[s])["delivered_rate"] for s in plan.systems if runs_m[s]}
            for system in max_rates:
                latency_rows.append({"system": system, "fraction": 1.0, "max_rate": max_rates[system],
                                     "size": LATENCY_SIZE, "runs": runs_m[system],
                                     "median": median_of(runs_m[system])})
            for fraction in plan.latency_fractions:
                runs_l = _interleaved(
                    side, list(max_rates), plan.runs, lambda r: f"bench-latency-{int(fraction * 100)}-r{r}",
                    "latency",
                    lambda b, topic, system: workloads.latency(
                        b.bootstrap, topic, size=LATENCY_SIZE, rate=max(1.0, fraction * max_rates[system]),
                        duration_s=plan.latency_s, warmup_s=plan.latency_warmup_s, broker_pid=b.pid),
                    lambda res, r: f"latency at {fraction:.0%} of max ({res['target_rate']:,.0f} rec/s) run {r + 1}: "
                                f"ack p50 {res['ack_ms']['p50']:.2f} p99 {res['ack_ms']['p99']:.2f} ms, "
                                f"e2e p99 {res['e2e_ms']['p99']:.2f} ms")
                for system in [x for x in max_rates if runs_l[x]]:
                    latency_rows.append({"system": system, "fraction": fraction, "max_rate": max_rates[system],
                                         "size": LATENCY_SIZE, "runs": runs_l[system],
                                         "median": median_of(runs_l[system])})
    return single_rows, latency_rows


def _recovery(plan: Plan, wd: str) -> dict:
    """Write `recovery_bytes` with fsync never, kill -9, time the restart to the ready line; repeat
    (with a little more data written before each further kill)."""
    from confluent_kafka import Consumer, TopicPartition

    partitions = 4
    size = 100 * KIB
    data_dir = tempfile.mkdtemp(prefix="recovery-", dir=wd)
    args = ("--num-partitions", str(partitions))
    b = RinglogBroker(data_dir, "never", extra_args=args).start()
    empty_ready_s = b.ready_s
    runs: list[dict] = []
    acked = 0
    try:
        topic = "bench-recovery"
        ensure_topic(b.bootstrap, topic, partitions)
        log(f"recovery: writing {plan.recovery_bytes / MIB:,.0f} MiB with fsync never")
        # Time budget: generous for a slow disk (20 MB/s), but bounded.
        budget = min(600.0, 30.0 + plan.recovery_bytes / 20e6)
        w = workloads.produce(b.bootstrap, topic, partitions=partitions, size=size, producers=1,
                              duration_s=budget, max_bytes=plan.recovery_bytes, broker_pid=b.pid)
        acked += w["records"]
        written = {"records": w["records"], "mb_s": w["mb_s"], "seconds": w["seconds"]}
        for r in range(plan.runs):
            if r > 0:
                extra = workloads.produce(b.bootstrap, topic, partitions=partitions, size=size, producers=1,
                                          duration_s=30.0, max_bytes=plan.recovery_extra_bytes, broker_pid=b.pid)
                acked += extra["records"]
            b.kill9()
            on_disk = dir_bytes(data_dir)
            segments = log_bytes(data_dir)
            b = RinglogBroker(data_dir, "never", extra_args=args).start(timeout=300)
            c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "bench-recovery-check"})
            try:
                total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                            for p in range(partitions))
            except Exception as exc:  # the check is a bonus: keep the timing, note the failure
                _record_error("recovery high-watermark check", exc, b)
                total = -1
            finally:
                c.close()
            runs.append({"ready_s": b.ready_s, "data_dir_bytes": on_disk, "segment_bytes": segments,
                         "records_after": total,
                         "records_acked": acked, "nothing_lost": total >= acked})
            log(f"recovery run {r + 1}: {segments / GIB:.2f} GiB of segments ({on_disk / GIB:.2f} GiB on disk), ready after {b.ready_s:.2f} s "
                f"(empty start {empty_ready_s:.2f} s), {total}/{acked} records")
    finally:
        discard(b)
    return {"system": "ringlog-never", "empty_start_s": empty_ready_s, "written": written, "runs": runs,
            "median": median_of(runs)}
