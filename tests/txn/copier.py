"""The copier of test_exactly_once as a process of its own (so it can be killed with -9):
`python -m tests.txn.copier BOOTSTRAP` copies `cin` to `cout` in transactions, printing the
number of input records each committed transaction covered."""
from __future__ import annotations

import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

PARTITIONS = 4
TID = "copier"
GROUP = "copier-group"


class Processor:
    """One instance of the copier: a read_committed consumer of `cin` (manually assigned, offsets
    in the group) and a transactional producer to `cout`."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False,
                                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                                  "fetch.wait.max.ms": 50, "reconnect.backoff.max.ms": 200})
        self.partitions = [TopicPartition("cin", p) for p in range(PARTITIONS)]
        self.producer = self._new_producer()
        self.rewind()

    def _new_producer(self) -> Producer:
        deadline = time.monotonic() + 60
        while True:
            producer = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": TID, "linger.ms": 5,
                                 "transaction.timeout.ms": 10_000, "reconnect.backoff.max.ms": 200})
            try:
                producer.init_transactions(10)
                return producer
            except KafkaException:
                assert time.monotonic() < deadline, "init_transactions never succeeded"

    def rewind(self) -> None:
        """Back to the committed offsets (after an aborted transaction, or at start)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                committed = self.consumer.committed(self.partitions, timeout=5)
                break
            except KafkaException:
                assert time.monotonic() < deadline, "could not read the committed offsets"
        self.consumer.assign([TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                              for tp in committed])

    def step(self) -> int:
        """Copy what one poll returns in one transaction; the records committed (0 on failure)."""
        msgs = [m for m in self.consumer.consume(500, timeout=0.2) if not m.error()]
        if not msgs:
            return 0
        try:
            self.producer.begin_transaction()
            for m in msgs:
                self.producer.produce("cout", key=m.key(), value=b"out-" + m.value(), partition=m.partition())
            positions = self.consumer.position(self.consumer.assignment())
            self.producer.send_offsets_to_transaction(positions, self.consumer.consumer_group_metadata(), 10)
            self.producer.commit_transaction(10)
            return len(msgs)
        except KafkaException as exc:
            error = exc.args[0]
            try:
                if error.fatal():
                    raise exc
                self.producer.abort_transaction(10)
            except KafkaException:
                self.producer = self._new_producer()  # fenced or stuck: a new instance
            self.rewind()
            return 0


def main() -> None:
    processor = Processor(sys.argv[1])
    while True:
        copied = processor.step()
        if copied:
            print(copied, flush=True)


if __name__ == "__main__":
    main()
