"""Consume a topic as a member of a consumer group with ringlog's Trio client.

    python examples/consume.py 127.0.0.1:9092 events my-group
"""
from __future__ import annotations

import sys

try:
    import trio

    from ringlog.client import open_consumer
except ImportError as exc:  # a fresh clone, nothing installed yet
    sys.exit(f"cannot import {exc.name}: install ringlog first, from the repository root: "
             "python3 -m venv .venv && .venv/bin/pip install -e . (then run this with .venv/bin/python)")


class Listener:
    async def on_partitions_assigned(self, partitions):
        print("assigned:", sorted(partitions))

    async def on_partitions_revoked(self, partitions):
        print("revoked:", sorted(partitions))


async def main(bootstrap: str, topic: str, group: str) -> None:
    async with open_consumer(bootstrap, group_id=group, auto_offset_reset="earliest",
                             partition_assignment_strategy=["cooperative-sticky"]) as consumer:
        consumer.subscribe([topic], listener=Listener())
        async for record in consumer:  # Ctrl-C cancels cleanly; offsets are committed on exit
            print(f"{record.topic}[{record.partition}]@{record.offset} key={record.key!r} value={record.value!r}")


if __name__ == "__main__":
    bootstrap = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
    topic = sys.argv[2] if len(sys.argv) > 2 else "events"
    group = sys.argv[3] if len(sys.argv) > 3 else "example-group"
    # Ctrl-C is how this example stops: exit quietly. Trio raises the KeyboardInterrupt inside
    # whichever task was running, so it can arrive wrapped in the client's exception groups, which
    # a plain `except KeyboardInterrupt` would let through as a traceback.
    try:
        trio.run(main, bootstrap, topic, group)
    except* KeyboardInterrupt:
        pass
