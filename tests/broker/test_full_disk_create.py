"""CreateTopics on a full file system: the topic is answered KAFKA_STORAGE_ERROR and nothing of it
is left behind, before and after a restart. The file system is a small tmpfs the test mounts (it
needs root; CI runs as root), so the disk really is full rather than a write being made to fail."""
from __future__ import annotations

import errno
import os
import subprocess

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from tests.conftest import REQUIRE_TOOLS


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if run.returncode != 0:
        if REQUIRE_TOOLS:
            pytest.fail(f"cannot mount a tmpfs: {run.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {run.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path) -> None:
    """Write zeros into `path` until the file system refuses even 4 KiB (an index page)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for step in (1 << 20, 65536, 4096):
            try:
                while True:
                    os.write(fd, b"\0" * step)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _topic_dirs(data_dir: str, topic: str) -> list[str]:
    return sorted(n for n in os.listdir(data_dir) if n.startswith(topic + "-"))


def test_create_topics_on_a_full_disk(small_fs) -> None:
    data_dir = str(small_fs / "data")
    config = BrokerConfig(listen_port=0, data_dir=data_dir)
    filler = small_fs / "filler"
    with BrokerThread(config) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("before", 1, 1)])["before"].result(15)
        _fill(filler)
        futures = admin.create_topics([NewTopic("full", 20, 1)], operation_timeout=10)
        with pytest.raises(Exception) as info:
            futures["full"].result(15)
        error = info.value.args[0]
        assert error.code() == KafkaError.KAFKA_STORAGE_ERROR, error
        assert _topic_dirs(data_dir, "full") == []
        assert "full" not in admin.list_topics(timeout=10).topics
    os.unlink(filler)
    with BrokerThread(config) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        topics = admin.list_topics(timeout=10).topics
        assert "full" not in topics and "before" in topics
        assert _topic_dirs(data_dir, "full") == []
        # with room again the same request works
        admin.create_topics([NewTopic("full", 20, 1)])["full"].result(15)
        assert len(admin.list_topics(timeout=10).topics["full"].partitions) == 20
