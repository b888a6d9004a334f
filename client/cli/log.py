"""`ringlog log`: read segment files offline, without a broker (dump, verify, stats), and
re-publish them into a running broker (replay).

PATH is either a partition directory (`<topic>-<partition>`, holding `<base offset>.log` files)
or a data directory holding partition directories. Output is streamed: a dump of a big log is
written record by record, never collected first.

Exit codes: 0 success; 1 damaged data (corrupt batch, torn tail for verify, unreadable file);
2 usage errors, a missing path, or a directory that is not a ringlog directory.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import sys
from pathlib import Path

from ringlog.storage.errors import StorageError
from ringlog.storage.replay import (
    NotALogDirectoryError,
    PartitionDir,
    PartitionStats,
    SegmentCorruptError,
    TornTail,
    classify,
    iter_partition,
    list_segments,
    partition_of,
    partition_stats,
    select_partitions,
)
from ringlog.storage.verify import GAP, TORN_TAIL, verify_partition

from ._common import non_negative

DUMP_FORMAT = """\
output: one JSON object per line, one line per record, in offset order per partition:

  {"topic":"orders","partition":0,"offset":42,"timestamp":1700000000000,
   "timestamp_type":"CreateTime","key":"user-7","value":"{\\"qty\\":3}",
   "headers":[{"key":"trace","value":"abc"}]}

  timestamp       milliseconds since the Unix epoch (-1: none); timestamp_type is
                  "CreateTime" (the producer's) or "LogAppendTime" (the broker's)
  key, value      the bytes as a JSON string when they are valid UTF-8; otherwise
                  base64 (RFC 4648, with padding) and a sibling field says so:
                  "key_encoding":"base64" / "value_encoding":"base64".
                  null means a null key/value (a tombstone), "" an empty one.
  headers         a list (names may repeat) of {"key": name, "value": ...}; a value
                  follows the same rule, with "value_encoding":"base64" when needed.

  Without an *_encoding field the string IS the data (UTF-8). Records of
  transactional batches also carry "producer_id"; a transaction marker (control
  batch) is a line {"topic":...,"offset":...,"timestamp":...,"timestamp_type":...,
  "control":"commit" or "abort","producer_id":N} without key, value or headers.
  Records of aborted transactions are not filtered out. A torn tail (the last segment ends inside a batch after a crash)
  ends the dump with a note on stderr and exit 0; a damaged batch elsewhere stops
  it with an error naming the file, byte position and offset (exit 1).
"""


class _UserError(Exception):
    """A mistake of the user's: one line on stderr, exit 2."""


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="a partition directory or a data directory")
    p.add_argument(
        "--topic", action="append", metavar="TOPIC", help="only this topic (repeatable)"
    )
    p.add_argument(
        "--partition",
        action="append",
        type=non_negative,
        metavar="N",
        help="only this partition number (repeatable)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    log = subparsers.add_parser(
        "log",
        help="read segment files offline (dump, verify, stats)",
        description="Read ringlog segment files directly, without a broker. PATH is a partition "
        "directory (<topic>-<partition>) or a data directory holding them. Exit codes: 0 ok, "
        "1 damaged data, 2 usage error or missing/unknown path.",
    )
    sub = log.add_subparsers(dest="log_command", metavar="ACTION")
    sub.required = True

    dump = sub.add_parser(
        "dump",
        help="print records as JSON lines",
        description="Print every record as one JSON line (streamed).",
        epilog=DUMP_FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_selection(dump)
    dump.add_argument(
        "--from", dest="from_offset", type=non_negative, default=0, metavar="OFFSET",
        help="first offset to print (default 0; per partition)",
    )
    dump.add_argument(
        "--to", dest="to_offset", type=non_negative, default=None, metavar="OFFSET",
        help="stop before this offset (exclusive; per partition)",
    )
    dump.set_defaults(func=_guard(_dump))

    verify = sub.add_parser(
        "verify",
        help="check every batch (framing, CRC-32C, offsets, records)",
        description="Check every batch of every segment: magic 2, framing, CRC-32C, offsets "
        "increasing and contiguous across segments, records decodable. Prints a summary per "
        "partition; a gap in offsets is a warning. Exit 0 when clean, 1 on the first problem of "
        "any partition (named by file, byte position and offset; a torn tail is reported as "
        "'torn tail (recoverable by the broker)').",
    )
    _add_selection(verify)
    verify.add_argument("--progress", action="store_true",
                        help="progress bar on stderr (bytes checked, rate, ETA) even when it is not a terminal")
    verify.set_defaults(func=_guard(_verify))

    stats = sub.add_parser(
        "stats",
        help="segments, sizes, offsets and time range per partition",
        description="Segments, sizes, offsets and time range per partition, read from the batch "
        "headers (fast: record bodies are not decoded; use verify for integrity). Times are UTC.",
    )
    _add_selection(stats)
    stats.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    stats.set_defaults(func=_guard(_stats))

    _register_replay(sub)


# --- plumbing -------------------------------------------------------------------------------


def _guard(func):
    """Turn expected failures into one line on stderr and an exit code, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        prog = f"ringlog log {args.log_command}"
        try:
            return func(args)
        except BrokenPipeError:
            # `ringlog log dump PATH | head`: the reader left. Point stdout at /dev/null so the
            # interpreter's final flush does not complain either.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        except (_UserError, FileNotFoundError, NotADirectoryError, NotALogDirectoryError) as exc:
            _error(prog, _plain(exc))
            return 2
        except SegmentCorruptError as exc:
            _error(prog, str(exc))
            return 1
        except (StorageError, OSError) as exc:
            _error(prog, _plain(exc))
            return 1

    return run


def _plain(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _error(prog: str, message: str) -> None:
    sys.stdout.flush()
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


def _partitions(args: argparse.Namespace) -> list[PartitionDir]:
    """The partitions PATH names, after --topic/--partition; a user error when none match."""
    kind = classify(args.path)
    topics = set(args.topic) if args.topic else None
    numbers = set(args.partition) if args.partition else None
    if kind == "partition":
        part = partition_of(args.path)
        wanted = (topics is None or part.topic in topics) and (numbers is None or part.partition in numbers)
        found = [part] if wanted else []
    else:
        found = select_partitions(args.path, topics, numbers)
    if not found and (topics or numbers):
        wanted = " ".join(
            [f"--topic {t}" for t in sorted(topics or ())] + [f"--partition {n}" for n in sorted(numbers or ())]
        )
        raise _UserError(f"{args.path}: no partition matches {wanted}")
    return found


def _stdout_bytes():
    """stdout as a binary stream: the dump writes UTF-8 whatever the locale says."""
    return getattr(sys.stdout, "buffer", None)


# --- dump -----------------------------------------------------------------------------------


def _data_field(obj: dict, name: str, data: bytes | None) -> None:
    if data is None:
        obj[name] = None
        return
    try:
        obj[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        obj[name] = base64.b64encode(data).decode("ascii")
        obj[f"{name}_encoding"] = "base64"


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def record_to_json(rec) -> str:
    """The dump's JSON line for one ReplayRecord (format: DUMP_FORMAT)."""
    obj: dict = {
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp,
        "timestamp_type": rec.timestamp_type.label,
    }
    if rec.control is not None:  # a transaction marker (format: DUMP_FORMAT)
        obj["control"] = rec.control
        obj["producer_id"] = rec.producer_id
        return _JSON.encode(obj)
    if rec.producer_id >= 0:
        obj["producer_id"] = rec.producer_id
    _data_field(obj, "key", rec.key)
    _data_field(obj, "value", rec.value)
    headers = []
    for hk, hv in rec.headers:
        h: dict = {"key": hk}
        _data_field(h, "value", hv)
        headers.append(h)
    obj["headers"] = headers
    return _JSON.encode(obj)


def _dump(args: argparse.Namespace) -> int:
    parts = _partitions(args)
    binary = _stdout_bytes()

    def torn(t: TornTail) -> None:
        _error("ringlog log dump", f"note: {t.describe()}; the partition's dump ends there")

    for part in parts:
        for rec in iter_partition(part.path, args.from_offset, to_offset=args.to_offset, on_torn_tail=torn,
                                  markers=True):
            line = record_to_json(rec) + "\n"
            if binary is not None:
                binary.write(line.encode("utf-8"))
            else:
                sys.stdout.write(line)
    sys.stdout.flush()
    return 0


# --- verify ---------------------------------------------------------------------------------


def _name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def _verify(args: argparse.Namespace) -> int:
    from ._common import Progress

    parts = _partitions(args)
    # The bar moves a partition at a time, by the bytes of its segments.
    sizes = [sum(s.path.stat().st_size for s in list_segments(p.path)) for p in parts]
    progress = Progress.for_args(args, "verify", sum(sizes) or None, "bytes")
    counts = {"ok": 0, "corrupt": 0, "torn": 0}
    progress_done: list = []
    warnings = 0
    first_problem = None
    out = sys.stdout
    for part in parts:
        r = verify_partition(part.path)
        offsets = (
            f"offsets {r.first_offset}..{r.last_offset}" if r.first_offset is not None else "no batches"
        )
        if r.ok:
            status = "OK"
            counts["ok"] += 1
        elif r.problem.kind == TORN_TAIL:
            status = "TORN"
            counts["torn"] += 1
        else:
            status = "FAIL"
            counts["corrupt"] += 1
        checked = "" if r.ok else " checked before the problem"
        out.write(
            f"{status:<4}  {_name(r.topic, r.partition)}: {r.segments} segments, {r.batches} batches, "
            f"{r.records} records, {offsets}, {r.bytes} bytes{checked}\n"
        )
        for w in r.warnings:
            assert w.kind == GAP
            warnings += 1
            out.write(f"      warning: {w.describe()}\n")
        if r.problem is not None:
            out.write(f"      {'torn tail' if r.recoverable else 'error'}: {r.problem.describe()}\n")
            if first_problem is None:
                first_problem = r.problem
        out.flush()
        progress.update(add=sizes[len(progress_done)])
        progress_done.append(part)
    progress.finish()
    bad = counts["corrupt"] + counts["torn"]
    out.write(
        f"verified {len(parts)} partition{'s' if len(parts) != 1 else ''}: {counts['ok']} ok, "
        f"{counts['corrupt']} corrupt, {counts['torn']} torn tail; {warnings} warning"
        f"{'s' if warnings != 1 else ''}\n"
    )
    out.flush()
    if first_problem is not None:
        _error("ringlog log verify", f"first problem: {first_problem.describe()}")
    return 1 if bad else 0


# --- stats ----------------------------------------------------------------------------------


def format_timestamp(ms: int | None) -> str:
    """ISO 8601 UTC with milliseconds; '-' when there is none."""
    if ms is None:
        return "-"
    try:
        t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _opt(value) -> str:
    return "-" if value is None else str(value)


_COLUMNS = [
    ("PARTITION", "<"),
    ("SEGMENT", "<"),
    ("BASE OFFSET", ">"),
    ("SIZE", ">"),
    ("BATCHES", ">"),
    ("RECORDS", ">"),
    ("FIRST OFFSET", ">"),
    ("LAST OFFSET", ">"),
    ("MIN TIMESTAMP", "<"),
    ("MAX TIMESTAMP", "<"),
]


def _stats_rows(ps: PartitionStats) -> list[list[str]]:
    name = _name(ps.topic, ps.partition)
    rows = [
        [
            name,
            s.name,
            str(s.base_offset),
            str(s.size),
            str(s.batches),
            str(s.records),
            _opt(s.first_offset),
            _opt(s.last_offset),
            format_timestamp(s.min_timestamp),
            format_timestamp(s.max_timestamp),
        ]
        for s in ps.segments
    ]
    n = len(ps.segments)
    rows.append(
        [
            name,
            f"total ({n} segment{'s' if n != 1 else ''})",
            "",
            str(ps.total_size),
            str(ps.batches),
            str(ps.records),
            _opt(ps.first_offset),
            _opt(ps.last_offset),
            format_timestamp(ps.min_timestamp),
            format_timestamp(ps.max_timestamp),
        ]
    )
    return rows


def _torn_json(t: TornTail | None):
    if t is None:
        return None
    return {"file": str(t.file), "position": t.position, "offset": t.offset, "reason": t.reason}


def stats_to_json(ps: PartitionStats) -> dict:
    return {
        "topic": ps.topic,
        "partition": ps.partition,
        "path": str(ps.path),
        "size": ps.total_size,
        "batches": ps.batches,
        "records": ps.records,
        "first_offset": ps.first_offset,
        "last_offset": ps.last_offset,
        "min_timestamp": ps.min_timestamp,
        "max_timestamp": ps.max_timestamp,
        "torn_tail": _torn_json(ps.torn_tail),
        "segments": [
            {
                "name": s.name,
                "base_offset": s.base_offset,
                "size": s.size,
                "batches": s.batches,
                "records": s.records,
                "first_offset": s.first_offset,
                "last_offset": s.last_offset,
                "min_timestamp": s.min_timestamp,
                "max_timestamp": s.max_timestamp,
            }
            for s in ps.segments
        ],
    }


def _stats(args: argparse.Namespace) -> int:
    parts = _partitions(args)
    # Stats are small (one row per segment): gather them to align the table.
    all_stats = [partition_stats(p.path) for p in parts]
    if args.json:
        doc = {"path": str(Path(args.path)), "partitions": [stats_to_json(ps) for ps in all_stats]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    rows = [[c for c, _ in _COLUMNS]]
    for ps in all_stats:
        rows += _stats_rows(ps)
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    for r in rows:
        cells = [f"{cell:{align}{w}}" for cell, (_, align), w in zip(r, _COLUMNS, widths)]
        sys.stdout.write("  ".join(cells).rstrip() + "\n")
    for ps in all_stats:
        if ps.torn_tail is not None:
            sys.stdout.write(f"note: {_name(ps.topic, ps.partition)}: {ps.torn_tail.describe()}\n")
    return 0


# --- replay ---------------------------------------------------------------------------------

REPLAY_HELP = """\
what is kept: keys, values, headers and timestamps (a LogAppendTime record is re-sent with its
append time as its CreateTime; a target topic configured for LogAppendTime stamps its own).
Offsets are the target's own: the table shows both ranges. Control batches (transaction
markers) are not replayed; records of aborted transactions are (the dump's rule).

partitions: source partition P goes to target partition P when the target topic has more than
P partitions; otherwise to P modulo the target's partition count (a note on stderr says so):
each source partition still lands in one target partition, in order, but several may share
one. --by-key instead spreads records by key like any producer (murmur2; keyless records
spread evenly). A missing target topic is created with as many partitions as the source has
(highest partition number + 1), unless --no-create.

delivery: an idempotent producer with acks=all by default, so a retry never duplicates a
record and each partition's order is kept. A torn tail ends a partition's replay (note on
stderr); a damaged batch stops the replay with exit 1 after everything before it is delivered.
"""


def _register_replay(sub) -> None:
    from ._common import add_json, add_progress, add_security

    replay = sub.add_parser(
        "replay",
        help="re-publish a topic's segments into a running broker",
        description="Read the segments of --topic in DATA_DIR (offline, no broker needed there) "
        "and produce their records to the Kafka-compatible broker at --to (ringlog or any "
        "other). Prints a table per source partition (or --json) when done.",
        epilog=REPLAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("path", metavar="DATA_DIR", help="a data directory or one partition directory")
    replay.add_argument("--topic", required=True, metavar="TOPIC", help="the topic to replay")
    replay.add_argument("--partition", action="append", type=non_negative, metavar="N",
                        help="only this source partition (repeatable)")
    replay.add_argument("--from", dest="from_offset", type=non_negative, default=0, metavar="OFFSET",
                        help="first source offset to replay (default 0; per partition)")
    replay.add_argument("--to", dest="bootstrap", required=True, metavar="HOST:PORT",
                        help="the target broker's bootstrap address(es)")
    replay.add_argument("--to-topic", metavar="TOPIC", help="target topic (default: the same name)")
    add_security(replay)
    replay.add_argument("--by-key", action="store_true",
                        help="partition by key in the target instead of keeping partition numbers")
    replay.add_argument("--no-create", action="store_true",
                        help="fail instead of creating a missing target topic")
    replay.add_argument("--acks", choices=("0", "1", "all"), default="all",
                        help="acks of the producer (default all, idempotent)")
    replay.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"),
                        default="none", help="codec of the batches sent to the target")
    add_json(replay, "summary")
    add_progress(replay)
    replay.set_defaults(func=_run_replay)


def _replay_sources(args: argparse.Namespace) -> list[PartitionDir]:
    kind = classify(args.path)
    numbers = set(args.partition) if args.partition else None
    if kind == "partition":
        part = partition_of(args.path)
        found = [part] if part.topic == args.topic and (numbers is None or part.partition in numbers) else []
    else:
        found = select_partitions(args.path, {args.topic}, numbers)
    if not found:
        wanted = f"topic {args.topic!r}" + (
            f" partition {', '.join(map(str, sorted(numbers)))}" if numbers else ""
        )
        raise _UserError(f"{args.path}: no partition of {wanted}")
    return found


def _estimate_records(part: PartitionDir, from_offset: int) -> int:
    """Records at or above from_offset, from the batch headers (a fast estimate for the bar)."""
    total = 0
    for seg in partition_stats(part.path).segments:
        if seg.records == 0 or seg.last_offset is None or seg.last_offset < from_offset:
            continue
        first = seg.first_offset if seg.first_offset is not None else seg.base_offset
        if first >= from_offset:
            total += seg.records
        else:
            total += min(seg.records, seg.last_offset - from_offset + 1)
    return total


class _Replayed:
    __slots__ = ("source", "target", "records", "first_offset", "last_offset", "first", "last")

    def __init__(self, source: int, target: int | None) -> None:
        self.source = source
        self.target = target
        self.records = 0
        self.first_offset: int | None = None
        self.last_offset: int | None = None
        self.first = None  # delivery handles of the first and last record sent
        self.last = None


def _run_replay(args: argparse.Namespace) -> int:
    from ._common import command

    # The offline part's errors (missing path, not a ringlog dir) come first, with log's codes.
    try:
        args._sources = _replay_sources(args)
    except (_UserError, FileNotFoundError, NotADirectoryError, NotALogDirectoryError) as exc:
        _error("ringlog log replay", _plain(exc))
        return 2
    return command("ringlog log replay")(_replay_async)(args)


async def _target_partitions(bootstrap: str, topic: str, want: int, create: bool,
                             security: dict) -> tuple[int, bool]:
    """(partition count of the target topic, created?); creates it with `want` partitions when
    it is missing and `create`."""
    from ringlog.client.admin import Admin
    from ringlog.client.errors import KafkaError

    from ._common import CliError, connected, CONNECT_TIMEOUT

    async with connected(Admin(bootstrap, client_id="ringlog-cli", connect_timeout_ms=CONNECT_TIMEOUT * 1000,
                               **security)) as admin:
        info = await _describe_one(admin, topic)
        if info is not None:
            return len(info), False
        if not create:
            raise CliError(f"unknown topic {topic!r} at {bootstrap} (and --no-create)")
        try:
            await admin.create_topics([_new_topic(topic, want)])
        except KafkaError as exc:
            if exc.code != 36:  # TOPIC_ALREADY_EXISTS: someone else was quicker, fine
                raise
        for _ in range(50):
            info = await _describe_one(admin, topic)
            if info:
                return len(info), True
            import trio

            await trio.sleep(0.1)
        raise CliError(f"created topic {topic!r} at {bootstrap} but it does not show up")


async def _describe_one(admin, topic: str):
    """The target topic's partitions (a dict), or None when it does not exist."""
    from ringlog.client.errors import KafkaError

    try:
        info = (await admin.describe_topics([topic]))[topic]
    except KafkaError as exc:
        if exc.code == 3:  # UNKNOWN_TOPIC_OR_PARTITION
            return None
        raise
    return info.partitions


def _new_topic(name: str, partitions: int):
    from ringlog.client.admin import NewTopic

    return NewTopic(name, partitions)


async def _replay_async(args: argparse.Namespace) -> int:
    import trio

    from ringlog.client.producer import Producer

    from ._common import (
        CONNECT_TIMEOUT,
        CliError,
        Progress,
        bootstrap_of,
        connected,
        print_json,
        print_table,
    )
    from .produce import _Delivery

    bootstrap = bootstrap_of(args)
    sources: list[PartitionDir] = args._sources
    target_topic = args.to_topic or args.topic
    need = max(p.partition for p in sources) + 1
    count, created = await _target_partitions(bootstrap, target_topic, need, not args.no_create, args.security)
    if created:
        print(f"ringlog log replay: created topic {target_topic!r} with {count} partition"
              f"{'s' if count != 1 else ''} at {bootstrap}", file=sys.stderr)

    def target_of(p: int) -> int | None:
        if args.by_key:
            return None
        return p if p < count else p % count

    moved = [p.partition for p in sources if not args.by_key and p.partition >= count]
    if moved:
        print(
            f"ringlog log replay: note: {target_topic!r} has {count} partition{'s' if count != 1 else ''}; "
            + ", ".join(f"{p}->{p % count}" for p in moved)
            + " (each source partition stays in order; shared target partitions interleave)",
            file=sys.stderr,
        )

    total = 0
    for part in sources:
        total += await trio.to_thread.run_sync(_estimate_records, part, args.from_offset)
    progress = Progress.for_args(args, "replay", total or None, "records")
    delivery = _Delivery()
    done: list[_Replayed] = []
    torn: list[TornTail] = []
    acks = "all" if args.acks == "all" else int(args.acks)
    sent = 0
    damage: SegmentCorruptError | None = None
    async with connected(Producer(
        bootstrap,
        client_id="ringlog-replay",
        acks=acks,
        compression_type=args.compression,
        linger_ms=10,
        connect_timeout_ms=CONNECT_TIMEOUT * 1000,
        request_timeout_ms=15000,
        delivery_timeout_ms=120000,
        retries=50,
        **args.security,
    )) as producer:
        for part in sources:
            r = _Replayed(part.partition, target_of(part.partition))
            done.append(r)
            it = iter_partition(part.path, args.from_offset, on_torn_tail=torn.append)

            def chunk(it=it):
                # reading and decoding happen off the event loop, a thousand records at a time
                out = []
                for rec in it:
                    out.append(rec)
                    if len(out) >= 1000:
                        break
                return out

            while True:
                try:
                    recs = await trio.to_thread.run_sync(chunk)
                except SegmentCorruptError as exc:
                    damage = exc
                    break
                if not recs:
                    break
                for rec in recs:
                    h = await producer.send(
                        target_topic, rec.value, rec.key, rec.headers, r.target, rec.timestamp
                    )
                    delivery.add(h)
                    if r.first is None:
                        r.first = h
                        r.first_offset = rec.offset
                    r.last = h
                    r.last_offset = rec.offset
                    r.records += 1
                sent += len(recs)
                progress.update(sent)
            if damage is not None:
                break
        await producer.flush()
        await delivery.finish()
    progress.finish()
    for t in torn:
        print(f"ringlog log replay: note: {t.describe()}; the partition's replay ends there", file=sys.stderr)
    if delivery.failed:
        raise CliError(f"{delivery.failed} of {sent} records were not delivered: {delivery.first_error}")

    def target_range(r: _Replayed) -> tuple[int | None, int | None]:
        if r.first is None:
            return None, None
        a, b = r.first.result().offset, r.last.result().offset
        return (a if a >= 0 else None), (b if b >= 0 else None)

    rows = []
    docs = []
    for r in done:
        t_first, t_last = target_range(r)
        target = "by key" if r.target is None else r.target
        rows.append([
            f"{args.topic}-{r.source}",
            f"{target_topic}-{target}" if r.target is not None else f"{target_topic} (by key)",
            r.records,
            "-" if r.first_offset is None else f"{r.first_offset}..{r.last_offset}",
            "-" if t_first is None else f"{t_first}..{t_last}",
        ])
        docs.append({
            "source_partition": r.source, "target_partition": r.target, "records": r.records,
            "source_first_offset": r.first_offset, "source_last_offset": r.last_offset,
            "target_first_offset": t_first, "target_last_offset": t_last,
        })
    if args.json:
        print_json({
            "source": {"path": str(args.path), "topic": args.topic},
            "target": {"bootstrap": bootstrap, "topic": target_topic, "partitions": count,
                       "created": created},
            "records": sent,
            "partitions": docs,
            "torn_tails": [_torn_json(t) for t in torn],
        })
    else:
        print_table(["SOURCE", "TARGET", "RECORDS", "SOURCE-OFFSETS", "TARGET-OFFSETS"], rows,
                    right=["RECORDS"])
        print(f"replayed {sent} record{'s' if sent != 1 else ''} to {target_topic} at {bootstrap}")
    if damage is not None:
        raise CliError(f"stopped at damaged data: {damage} ({sent} records before it were delivered)")
    return 0
