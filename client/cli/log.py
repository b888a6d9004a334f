"""`ringlog log`: read segment files offline, without a broker (dump, verify, stats).

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

from storage.errors import StorageError
from storage.replay import (
    NotALogDirectoryError,
    PartitionDir,
    PartitionStats,
    SegmentCorruptError,
    TornTail,
    classify,
    iter_partition,
    partition_of,
    partition_stats,
    select_partitions,
)
from storage.verify import GAP, TORN_TAIL, verify_partition

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

  Without an *_encoding field the string IS the data (UTF-8). Control batches
  (transaction markers) are skipped; records of aborted transactions are not
  filtered out. A torn tail (the last segment ends inside a batch after a crash)
  ends the dump with a note on stderr and exit 0; a damaged batch elsewhere stops
  it with an error naming the file, byte position and offset (exit 1).
"""


class _UserError(Exception):
    """A mistake of the user's: one line on stderr, exit 2."""


def _offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an offset: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"offsets are not negative: {text}")
    return value


def _partition_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a partition number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"partition numbers are not negative: {text}")
    return value


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="a partition directory or a data directory")
    p.add_argument(
        "--topic", action="append", metavar="TOPIC", help="only this topic (repeatable)"
    )
    p.add_argument(
        "--partition",
        action="append",
        type=_partition_number,
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
        "--from", dest="from_offset", type=_offset, default=0, metavar="OFFSET",
        help="first offset to print (default 0; per partition)",
    )
    dump.add_argument(
        "--to", dest="to_offset", type=_offset, default=None, metavar="OFFSET",
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
        for rec in iter_partition(part.path, args.from_offset, to_offset=args.to_offset, on_torn_tail=torn):
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
    parts = _partitions(args)
    counts = {"ok": 0, "corrupt": 0, "torn": 0}
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
