"""Produce records with ringlog's Trio client.

    python examples/produce.py 127.0.0.1:9092 events 1000
"""
from __future__ import annotations

import sys

try:
    import trio

    from ringlog.client import NewTopic, open_admin, open_producer
except ImportError as exc:  # a fresh clone, nothing installed yet
    sys.exit(f"cannot import {exc.name}: install ringlog first, from the repository root: "
             "python3 -m venv .venv && .venv/bin/pip install -e . (then run this with .venv/bin/python)")


async def main(bootstrap: str, topic: str, count: int) -> None:
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 3)], exist_ok=True)
    async with open_producer(bootstrap, compression_type="zstd", linger_ms=5) as producer:
        # send() only queues the record; the handles resolve when the broker acknowledges
        handles = [await producer.send(topic, f"record {i}".encode(), key=f"user-{i % 10}".encode())
                   for i in range(count)]
        await producer.flush()
        last = handles[-1].result()
        print(f"sent {count} records; last went to {last.topic}[{last.partition}] at offset {last.offset}")


if __name__ == "__main__":
    bootstrap = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
    topic = sys.argv[2] if len(sys.argv) > 2 else "events"
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    # Ctrl-C stops it without a traceback, exit status 130 as for any program a SIGINT ended. The
    # KeyboardInterrupt can arrive wrapped in the client's exception groups: hence except*.
    interrupted = False
    try:
        trio.run(main, bootstrap, topic, count)
    except* KeyboardInterrupt:
        interrupted = True
    if interrupted:
        sys.exit(130)
