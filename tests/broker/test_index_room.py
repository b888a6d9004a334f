"""The index files' blocks are allocated ahead (fallocate) in a worker thread, not by the append
on the broker's event loop: past the first chunk of each index, the writer asks for the next one
before the round's append. The suite's blocking-call guard (tests/conftest.py) fails this test if
an fallocate runs on the Trio thread."""
from __future__ import annotations

import datetime
import time

from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.storage.records import build_batch
from tests.broker.conftest import RawClient


def test_index_growth_is_allocated_off_the_event_loop(tmp_path) -> None:
    # an entry in each index for every batch: 700 batches pass the first chunk of both (4 KiB:
    # 512 offset entries, 341 time entries)
    config = BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), topic_defaults={"index.interval.bytes": "1"})
    with BrokerThread(config) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("grow", 1, 1)])["grow"].result(10)
        c = RawClient(b.host, b.port)
        try:
            now = int(time.time() * 1000)
            for i in range(700):
                batch = build_batch([(b"k", b"v" * 100, (), now + i)])
                request = ProduceRequest(transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=10),
                                         topic_data=(TopicProduceData(name="grow", partition_data=(
                                             PartitionProduceData(index=0, records=batch),)),))
                assert c.call(request).responses[0].partition_responses[0].error_code == 0
        finally:
            c.close()

        async def entries():
            seg = b.broker.partition_log("grow", 0).active_segment
            return seg.index.entries, seg.time_index.entries

        offsets, times = b.call(entries)
        assert offsets > 512 and times > 341, (offsets, times)
