"""`ringlog consume TOPIC`: print records, through client.consumer.

Output, one record at a time, flushed after every fetched slice:

* default: the value, then a newline (a null value prints as an empty line);
* --json: one JSON object per line, the shape of `ringlog log dump` (topic, partition, offset,
  timestamp, timestamp_type, key, value, headers; non-UTF-8 data as base64 with
  "<field>_encoding":"base64");
* --format FMT: kcat-style, nothing added: %t topic, %p partition, %o offset, %k key, %s value,
  %K key length, %S value length (-1 for null), %T timestamp (ms), %h headers as k=v,k=v, %%
  a percent sign; escapes \\n \\t \\r \\0 \\\\.

Where it starts (--from): beginning, end (default), an OFFSET (negative: that many before the
end), or an ISO 8601 date/time (the first record at or after it; UTC unless a zone is given).
With --group the group's committed offsets win; --from (beginning or end) only says where to
start in partitions the group has not committed. Offsets are committed as records are printed
(auto-commit) and when consume stops.

It stops on Ctrl-C (exit 0), after --max records, at the end of the partitions with
--exit-at-end/-e, or after --timeout seconds without a new record.
"""
from __future__ import annotations

import argparse
import re
import signal
import sys

from ._common import (
    CONNECT_TIMEOUT,
    EXIT_OK,
    CliError,
    UsageError,
    add_bootstrap,
    bootstrap_of,
    command,
    connected,
    non_negative,
    parse_datetime_ms,
    positive,
    record_json,
    seconds,
)
from .produce import check_topic

_TS_TYPES = {0: "CreateTime", 1: "LogAppendTime"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "consume",
        help="print records of a topic",
        description="Print the records of TOPIC: values one per line by default, JSON lines "
        "with --json, or a kcat-style --format. Runs until Ctrl-C unless --max, --exit-at-end "
        "or --timeout says otherwise.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("topic", metavar="TOPIC")
    add_bootstrap(p)
    p.add_argument("--from", dest="start", default=None, metavar="WHERE",
                   help="beginning | end (default) | OFFSET | -N (N before the end) | ISO-DATETIME")
    p.add_argument("--partition", "-p", action="append", type=non_negative, metavar="N",
                   help="only this partition (repeatable; not with --group)")
    p.add_argument("--group", "-G", metavar="GROUP", help="consume as a member of this group")
    p.add_argument("--max", "-c", type=positive, metavar="N", help="stop after N records")
    p.add_argument("--exit-at-end", "-e", action="store_true",
                   help="stop when every partition is read to its end")
    p.add_argument("--timeout", type=seconds, metavar="SECONDS",
                   help="stop after this many seconds without a new record")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per record")
    out.add_argument("--format", "-F", metavar="FMT", help="kcat-style format, e.g. '%%k=%%s\\n'")
    p.set_defaults(func=_consume)


# --- formats ------------------------------------------------------------------------------------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\"}
_FIELDS = set("tpokKsSThR%")


def compile_format(fmt: str):
    """A function record -> bytes for a kcat-style format string; UsageError when it is bad."""
    pieces: list[bytes | str] = []
    lit = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "\\" and i + 1 < len(fmt) and fmt[i + 1] in _ESCAPES:
            lit.append(_ESCAPES[fmt[i + 1]])
            i += 2
            continue
        if c == "%":
            if i + 1 >= len(fmt):
                raise UsageError("--format ends with a lone %")
            f = fmt[i + 1]
            if f == "%":
                lit.append("%")
            elif f in _FIELDS:
                if lit:
                    pieces.append("".join(lit).encode("utf-8"))
                    lit = []
                pieces.append(f)
            else:
                raise UsageError(f"--format: unknown field %{f} (known: %t %p %o %k %s %K %S %T %h %%)")
            i += 2
            continue
        lit.append(c)
        i += 1
    if lit:
        pieces.append("".join(lit).encode("utf-8"))

    def render(r) -> bytes:
        out = []
        for piece in pieces:
            if isinstance(piece, bytes):
                out.append(piece)
            elif piece == "s":
                out.append(r.value or b"")
            elif piece == "k":
                out.append(r.key or b"")
            elif piece == "t":
                out.append(r.topic.encode("utf-8"))
            elif piece == "p":
                out.append(str(r.partition).encode())
            elif piece == "o":
                out.append(str(r.offset).encode())
            elif piece == "T":
                out.append(str(r.timestamp).encode())
            elif piece == "S":
                out.append(str(-1 if r.value is None else len(r.value)).encode())
            elif piece == "K":
                out.append(str(-1 if r.key is None else len(r.key)).encode())
            elif piece == "h":
                out.append(b",".join(
                    (k.encode("utf-8") if isinstance(k, str) else bytes(k)) + b"=" + (v or b"")
                    for k, v in r.headers))
        return b"".join(out)

    return render


def _render_json(r) -> bytes:
    return (record_json(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers,
                        _TS_TYPES.get(r.timestamp_type)) + "\n").encode("utf-8")


def _render_value(r) -> bytes:
    return (r.value or b"") + b"\n"


# --- where to start -------------------------------------------------------------------------------

_INT = re.compile(r"^-?\d+$")


def parse_start(text: str | None):
    """('beginning'|'end', None) | ('offset', n) | ('relative', n) | ('time', ms)."""
    if text is None or text == "end":
        return ("end", None)
    if text == "beginning":
        return ("beginning", None)
    if _INT.match(text):
        n = int(text)
        return ("relative", -n) if n < 0 else ("offset", n)
    try:
        return ("time", parse_datetime_ms(text))
    except ValueError:
        raise UsageError(
            f"--from {text!r}: expected beginning, end, an offset, -N or an ISO 8601 date/time"
        ) from None


async def _place(consumer, tps, start) -> None:
    kind, arg = start
    if kind == "beginning":
        consumer.seek_to_beginning(*tps)
    elif kind == "end":
        consumer.seek_to_end(*tps)
    elif kind == "offset":
        # an offset outside a partition's log is clamped into it (like kcat), not an error
        first = await consumer.beginning_offsets(tps)
        last = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, min(max(arg, first[tp]), last[tp]))
    elif kind == "relative":
        first = await consumer.beginning_offsets(tps)
        last = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(last[tp] - arg, first[tp]))
    else:
        found = await consumer.offsets_for_times({tp: arg for tp in tps})
        last = None
        for tp in tps:
            hit = found.get(tp)
            if hit is None:
                if last is None:
                    last = await consumer.end_offsets(tps)
                consumer.seek(tp, last[tp])
            else:
                consumer.seek(tp, hit.offset)


async def _at_end(consumer, ends: dict) -> bool:
    """Every assigned partition is read up to its high watermark (as last fetched, or as listed
    when consume started)."""
    tps = consumer.assignment()
    if not tps:
        return False
    for tp in tps:
        pos = await consumer.position(tp)
        hw = consumer.highwater(tp)
        if hw < 0:
            hw = ends.get(tp)
            if hw is None:
                ends.update(await consumer.end_offsets([tp]))
                hw = ends[tp]
        if pos < hw:
            return False
    return True


@command("ringlog consume", interrupt_code=EXIT_OK)
async def _consume(args: argparse.Namespace) -> int:
    import trio

    from ringlog.client.consumer import Consumer, TopicPartition

    bootstrap = bootstrap_of(args)
    start = parse_start(args.start)
    if args.group is not None:
        if args.partition:
            raise UsageError("--partition and --group do not go together (the group assigns partitions)")
        if start[0] not in ("beginning", "end"):
            raise UsageError(
                "with --group, --from takes beginning or end (where to start without a committed "
                "offset); move a group with `ringlog groups reset-offsets`"
            )
    render = _render_json if args.json else compile_format(args.format) if args.format else _render_value
    out = sys.stdout.buffer
    count = 0
    # Ctrl-C or SIGTERM ends the loop, not the program: the consumer then leaves cleanly (the
    # group's final offsets committed, LeaveGroup sent) and the exit code is 0.
    stop = trio.CancelScope()

    async def watch_signals(task_status=trio.TASK_STATUS_IGNORED):
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for _ in signals:
                stop.cancel()
                return

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals)
        async with connected(Consumer(
            bootstrap,
            client_id="ringlog-cli",
            group_id=args.group,
            auto_offset_reset="earliest" if start[0] == "beginning" else "latest",
            enable_auto_commit=args.group is not None,
            connect_timeout_ms=CONNECT_TIMEOUT * 1000,
            request_timeout_ms=15000,
            fetch_max_wait_ms=200,
            **args.security,
        )) as consumer:
            partitions = await check_topic(consumer, args.topic)
            if args.group is not None:
                consumer.subscribe([args.topic])
            else:
                if args.partition:
                    missing = sorted(set(args.partition) - set(partitions))
                    if missing:
                        raise CliError(f"topic {args.topic!r} has no partition {missing[0]} "
                                       f"(partitions 0..{max(partitions)})")
                    partitions = sorted(set(args.partition))
                tps = [TopicPartition(args.topic, p) for p in partitions]
                consumer.assign(tps)
                await _place(consumer, tps, start)
            ends: dict = {}
            last_record = trio.current_time()
            with stop:
                while True:
                    if args.max is not None and count >= args.max:
                        break
                    want = None if args.max is None else args.max - count
                    batch = await consumer.getmany(timeout_ms=200, max_records=want)
                    now = trio.current_time()
                    if batch:
                        last_record = now
                        for recs in batch.values():
                            for r in recs:
                                out.write(render(r))
                                count += 1
                        out.flush()
                    if args.exit_at_end and await _at_end(consumer, ends):
                        break
                    if not batch and args.timeout is not None and now - last_record >= args.timeout:
                        break
        nursery.cancel_scope.cancel()
    return 0
