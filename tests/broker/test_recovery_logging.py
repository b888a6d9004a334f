"""What start-up and retention log: one line per partition that recovery changed, one summary,
one line per retention round that deleted something (the records, not the text)."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.server import _open_storage
from ringlog.broker.testing import BrokerThread
from ringlog.storage.records import build_batch

NOW = 1_700_000_000_000


class Records(logging.Handler):
    """Collects the broker's log records; wait_for() blocks until one matches (no polling)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def of(self, event: str) -> list[logging.LogRecord]:
        with self._changed:
            return [r for r in self.records if getattr(r, "event", None) == event]

    def wait_for(self, event: str, timeout: float = 15.0) -> list[logging.LogRecord]:
        with self._changed:
            self._changed.wait_for(lambda: self.of(event), timeout)
        return self.of(event)


@pytest.fixture
def records():
    logger = logging.getLogger("ringlog")
    handler, level = Records(), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def fields(record: logging.LogRecord) -> dict:
    return record.event_fields  # type: ignore[attr-defined]


def test_a_torn_tail_found_on_a_clean_start_is_logged_once(tmp_path: Path, records: Records) -> None:
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), auto_create_topics=False)
    logs, metadata = _open_storage(config)
    for name, count in (("torn", 1), ("whole", 3)):
        for p in range(count):
            for i in range(4):
                logs.create(name, p).append(build_batch([(None, b"v%d" % i, [], NOW)]), now_ms=NOW)
        metadata.add(name, count)
    logs.close()  # a clean shutdown: the next start trusts every segment
    segment = tmp_path / "data" / "torn-0" / f"{0:020d}.log"
    os.truncate(segment, segment.stat().st_size - 5)  # e.g. a disk that lost the last write
    records.records.clear()
    with BrokerThread(config):
        pass
    [warning] = [r for r in records.records if r.levelno >= logging.WARNING]
    assert warning.event == "log_recovered"  # type: ignore[attr-defined]
    assert warning.getMessage().startswith("recovered torn-0: cut ")
    f = fields(warning)
    assert (f["topic"], f["partition"], f["clean_shutdown"], f["truncated_offset"]) == ("torn", 0, True, 3)
    assert f["truncated_bytes"] > 0 and "torn" in f["reason"]
    [summary] = records.of("recovery")
    assert fields(summary)["clean_shutdown"] is True
    assert (fields(summary)["partitions"], fields(summary)["repaired"], fields(summary)["scanned"]) == (4, 1, 1)


def test_a_retention_deletion_is_logged_once_per_round_and_partition(tmp_path: Path, records: Records) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), retention_check_interval_ms=100)
    with BrokerThread(config) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("aged", 1, 1, config={"segment.bytes": "1024"})])["aged"].result(15)
        hour_ago = int(time.time() * 1000) - 3_600_000
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
        for i in range(40):
            p.produce("aged", value=b"x" * 100, partition=0, timestamp=hour_ago)
            p.flush(15)  # one batch each, so that segments roll
        plog = b.broker.partition_log("aged", 0)
        segments, size = plog.segment_count(), plog.size_bytes
        assert segments > 2 and records.of("retention_deleted") == []  # the default 7 days keeps them
        # Now everything is past retention at once: one round deletes every segment.
        res = ConfigResource("topic", "aged", incremental_configs=[
            ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)])
        [f] = admin.incremental_alter_configs([res]).values()
        f.result(15)
        [deleted] = records.wait_for("retention_deleted")
    assert deleted.levelno == logging.INFO
    d = fields(deleted)
    assert (d["topic"], d["partition"], d["segments_deleted"], d["bytes_deleted"]) == ("aged", 0, segments, size)
    assert (d["base_offset"], d["end_offset"], d["log_start_offset"], d["reasons"]) == (0, 40, 40, "retention.ms")
    assert deleted.getMessage().startswith(
        f"retention deleted {segments} segment(s) of aged-0: {size} bytes, offsets 0-39 (retention.ms)")
