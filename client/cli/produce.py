"""`ringlog produce TOPIC`: one record per input line (stdin or --file), through client.producer.

Lines are split on "\\n" only (a "\\r" stays part of the value); an empty line is an empty value.
With --key-separator S a line is split at the first S into key and value; a line without S has
a null key and the whole line as its value (kcat -K does the same). Every --header k=v is added
to every record. Input is read in chunks from a worker thread, so typing lines into a terminal
sends each one as soon as it is entered, and a large file streams through a bounded buffer.
"""
from __future__ import annotations

import argparse
import os
import stat
import sys

from ._common import (
    CliError,
    CONNECT_TIMEOUT,
    Progress,
    UsageError,
    add_bootstrap,
    add_progress,
    bootstrap_of,
    command,
    connected,
    key_value,
    non_negative,
)

COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")
ACKS = ("0", "1", "all", "-1")
_CHUNK = 1 << 20
# Seconds to wait for a topic's metadata before calling it unknown.
TOPIC_WAIT = 3.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "produce",
        help="produce records from stdin or a file, one per line",
        description="Produce one record per input line (stdin, or --file) to TOPIC. Prints "
        "nothing on success unless --progress (or stderr is a terminal, for --file); a failed "
        "delivery is one line on stderr and exit 1.",
    )
    p.add_argument("topic", metavar="TOPIC")
    add_bootstrap(p)
    p.add_argument("--file", "-f", metavar="FILE", help="read lines from FILE instead of stdin")
    p.add_argument("--key-separator", "-K", metavar="S",
                   help="split each line at the first S into key and value")
    p.add_argument("--header", "-H", action="append", type=key_value, default=[], metavar="K=V",
                   help="add this header to every record (repeatable)")
    p.add_argument("--partition", "-p", type=non_negative, metavar="N",
                   help="produce to this partition (default: by key, keyless records spread)")
    p.add_argument("--acks", choices=ACKS, default="all",
                   help="0: fire and forget, 1: leader wrote it, all: durable (default; idempotent)")
    p.add_argument("--compression", "-z", choices=COMPRESSION, default="none", help="batch codec")
    p.add_argument("--linger-ms", type=non_negative, default=5, metavar="MS",
                   help="wait this long to fill a batch (default 5)")
    add_progress(p)
    p.set_defaults(func=_produce)


def _split_records(lines: list[bytes], sep: bytes | None):
    for line in lines:
        if sep is not None:
            k, found, v = line.partition(sep)
            if found:
                yield k, v
                continue
        yield None, line


class _Delivery:
    """Watches delivery handles without keeping one per record forever: the oldest handles are
    checked as records go, so memory stays bounded by what the producer has buffered."""

    def __init__(self) -> None:
        self.pending: list = []
        self.failed = 0
        self.first_error: BaseException | None = None
        self.delivered = 0

    def add(self, handle) -> None:
        self.pending.append(handle)
        if len(self.pending) >= 4096:
            self.reap()

    def reap(self) -> None:
        keep = []
        for h in self.pending:
            if not h.done():
                keep.append(h)
                continue
            self._check(h)
        self.pending = keep

    def _check(self, h) -> None:
        try:
            h.result()
            self.delivered += 1
        except Exception as exc:  # noqa: BLE001 - a delivery error is data here
            self.failed += 1
            if self.first_error is None:
                self.first_error = exc

    async def finish(self) -> None:
        for h in self.pending:
            try:
                await h
                self.delivered += 1
            except Exception as exc:  # noqa: BLE001
                self.failed += 1
                if self.first_error is None:
                    self.first_error = exc
        self.pending = []


async def check_topic(producer_or_consumer, topic: str) -> list[int]:
    """The topic's partitions; CliError 'unknown topic' within TOPIC_WAIT seconds."""
    from ringlog.client.errors import KafkaError

    try:
        return await producer_or_consumer.cluster.topic_partitions(topic, timeout=TOPIC_WAIT)
    except KafkaError as exc:
        if exc.code == 3:
            raise CliError(f"unknown topic {topic!r}") from None
        if exc.code == 17:
            raise CliError(f"invalid topic name {topic!r}") from None
        raise


async def _read(fd: int, name: str) -> bytes:
    """The next chunk of the input. A read error names the input: left as a bare OSError it
    would be reported as the broker being unreachable."""
    import trio

    try:
        return await trio.to_thread.run_sync(os.read, fd, _CHUNK, abandon_on_cancel=True)
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None


@command("ringlog produce")
async def _produce(args: argparse.Namespace) -> int:
    import trio

    from ringlog.client.producer import Producer

    bootstrap = bootstrap_of(args)
    sep = args.key_separator.encode("utf-8") if args.key_separator is not None else None
    if sep == b"":
        raise UsageError("--key-separator must not be empty")
    headers = [(k, v.encode("utf-8")) for k, v in args.header]
    if args.file is not None and args.file != "-":
        try:
            fd = os.open(args.file, os.O_RDONLY)
        except OSError as exc:
            raise UsageError(f"{args.file}: {exc.strerror}") from None
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            # open() accepts a directory; only the first read fails, and an OSError from there
            # would read as a network failure
            os.close(fd)
            raise UsageError(f"{args.file}: is a directory, not a file of lines")
        total = (st.st_size if stat.S_ISREG(st.st_mode) else 0) or None
        label = os.path.basename(args.file)
        source = args.file
    else:
        fd = sys.stdin.fileno()
        total = None
        label = source = "stdin"
    progress = Progress.for_args(args, label, total, "bytes") if args.file else Progress(label, None, "bytes", enabled=args.progress)
    acks = "all" if args.acks in ("all", "-1") else int(args.acks)
    delivery = _Delivery()
    count = 0
    try:
        async with connected(Producer(
            bootstrap,
            client_id="ringlog-cli",
            acks=acks,
            compression_type=args.compression,
            linger_ms=args.linger_ms,
            connect_timeout_ms=CONNECT_TIMEOUT * 1000,
            request_timeout_ms=15000,
            delivery_timeout_ms=60000,
            retries=20,
            **args.security,
        )) as producer:
            partitions = await check_topic(producer, args.topic)
            if args.partition is not None and args.partition not in partitions:
                raise CliError(f"topic {args.topic!r} has no partition {args.partition} "
                               f"(partitions 0..{max(partitions)})")
            rest = b""
            done_bytes = 0
            while True:
                chunk = await _read(fd, source)
                if not chunk:
                    break
                done_bytes += len(chunk)
                data = rest + chunk
                lines = data.split(b"\n")
                rest = lines.pop()
                for key, value in _split_records(lines, sep):
                    delivery.add(await producer.send(args.topic, value, key, headers, args.partition))
                    count += 1
                progress.update(done_bytes, records=len(lines))
            if rest:
                # the last line without its newline
                for key, value in _split_records([rest], sep):
                    delivery.add(await producer.send(args.topic, value, key, headers, args.partition))
                    count += 1
                progress.update(done_bytes, records=1)
            await producer.flush()
            await delivery.finish()
    finally:
        if fd != sys.stdin.fileno():
            os.close(fd)
    progress.finish()
    if delivery.failed:
        raise CliError(
            f"{delivery.failed} of {count} records were not delivered: {delivery.first_error}"
        )
    if progress.enabled:
        print(f"produced {count} records to {args.topic}", file=sys.stderr)
    return 0
