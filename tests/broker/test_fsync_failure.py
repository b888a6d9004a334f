"""A failed fsync under `--fsync always`: the producer gets an error, the batches leave the log,
the high watermark does not move, and a retry of the same idempotent batch is stored once."""
from __future__ import annotations

import errno

from kio.schema.errors import ErrorCode

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.storage import log as storage_log
from ringlog.storage.records import build_batch, iter_records

from .conftest import RawClient
from .test_protocol import fetch, part, produce


def test_failed_fsync_is_not_acknowledged_and_leaves_no_trace(tmp_path, monkeypatch) -> None:
    real_sync = storage_log.FlushToken.sync
    failures = {"left": 0}

    def flaky_sync(self) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise storage_log.StorageIOError(f"fsync failed: {OSError(errno.EIO, 'I/O error')}")
        real_sync(self)

    monkeypatch.setattr(storage_log.FlushToken, "sync", flaky_sync)
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"), fsync="always")
    with BrokerThread(config) as b:
        b.call(b.broker.create_topic, "t", 1)
        c = RawClient(b.host, b.port)
        first = build_batch([(b"k0", b"kept", (), 1)], producer_id=7, producer_epoch=0, base_sequence=0)
        assert part(c.call(produce("t", 0, first))).error_code == ErrorCode.none

        second = build_batch([(b"k1", b"retried", (), 2)], producer_id=7, producer_epoch=0, base_sequence=1)
        failures["left"] = 1
        failed = part(c.call(produce("t", 0, second)))
        assert failed.error_code != ErrorCode.none
        assert b.broker.high_watermark("t", 0) == 1
        assert b.broker.partition_log("t", 0).log_end_offset == 1

        # the client retries the very same batch: stored once, right after the first
        retried = part(c.call(produce("t", 0, second)))
        assert retried.error_code == ErrorCode.none and retried.base_offset == 1
        resp = c.call(fetch("t", [(0, 0)]))
        values = [r.value for r in iter_records(resp.responses[0].partitions[0].records)]
        assert values == [b"kept", b"retried"]
        c.close()
