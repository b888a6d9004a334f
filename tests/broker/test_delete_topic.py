"""DeleteTopics end to end: the longest legal names, many partitions, restarts, and a crash at each
step of a deletion (all or nothing after the next start-up)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ringlog.broker.config import BrokerConfig
from ringlog.broker.metadata import MAX_TOPIC_NAME_LENGTH
from ringlog.broker.server import _open_storage
from ringlog.broker.testing import BrokerThread
from ringlog.storage.manager import delete_dir_name
from ringlog.storage.records import build_batch

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaException, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

T = 15  # seconds per admin call
LONG = "L" * MAX_TOPIC_NAME_LENGTH
NOW = 1_700_000_000_000


def outcome(future) -> str | None:
    try:
        future.result(T)
    except KafkaException as exc:
        return exc.args[0].name()
    return None


def config_for(tmp_path: Path) -> BrokerConfig:
    return BrokerConfig(listen_port=0, data_dir=str(tmp_path / "data"), auto_create_topics=False)


def entries(config: BrokerConfig) -> set[str]:
    return set(os.listdir(config.data_dir))


def leftovers(config: BrokerConfig, topic: str) -> list[str]:
    """Directory entries of `topic` or of any deletion: live, marked, cut to fit."""
    return sorted(e for e in entries(config) if e.startswith(topic[:100]) or e.endswith("-delete"))


def produce(bootstrap: str, topic: str, partitions: range) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    for partition in partitions:
        p.produce(topic, value=b"v%d" % partition, partition=partition)
    assert p.flush(T) == 0


def test_delete_a_topic_with_a_249_character_name_and_many_partitions(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    with BrokerThread(config) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        for f in admin.create_topics([NewTopic(LONG, 64, 1), NewTopic("kept", 1, 1)]).values():
            assert outcome(f) is None
        produce(b.bootstrap, LONG, range(64))
        produce(b.bootstrap, "kept", range(1))
        assert len(leftovers(config, LONG)) == 64
        assert outcome(admin.delete_topics([LONG], operation_timeout=T)[LONG]) is None
        assert b.broker.metadata.get(LONG) is None
        assert leftovers(config, LONG) == []  # the answer comes after the files are gone
        assert LONG not in admin.list_topics(timeout=T).topics
    with BrokerThread(config) as b:  # the same data dir
        assert b.broker.metadata.get(LONG) is None and b.broker.partition_log(LONG, 0) is None
        assert leftovers(config, LONG) == []
        assert b.broker.partition_log("kept", 0).log_end_offset == 1
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        assert LONG not in admin.list_topics(timeout=T).topics


def test_a_topic_is_created_again_right_after_its_delete(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    with BrokerThread(config) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        assert outcome(admin.create_topics([NewTopic(LONG, 3, 1)])[LONG]) is None
        produce(b.bootstrap, LONG, range(3))
        old_id = b.broker.metadata.get(LONG).topic_id
        assert outcome(admin.delete_topics([LONG], operation_timeout=T)[LONG]) is None
        assert outcome(admin.create_topics([NewTopic(LONG, 2, 1)])[LONG]) is None
        info = b.broker.metadata.get(LONG)
        assert info.partitions == 2 and info.topic_id != old_id
        assert b.broker.partition_log(LONG, 0).log_end_offset == 0  # starts empty
        produce(b.bootstrap, LONG, range(2))
        assert outcome(admin.delete_topics(["never-was"], operation_timeout=T)["never-was"]) == "UNKNOWN_TOPIC_OR_PART"
    with BrokerThread(config) as b:
        info = b.broker.metadata.get(LONG)
        assert info.partitions == 2 and info.topic_id != old_id
        assert [b.broker.partition_log(LONG, p).log_end_offset for p in range(2)] == [1, 1]
        assert leftovers(config, LONG) == [f"{LONG}-0", f"{LONG}-1"]


@pytest.mark.parametrize("then", ["retry", "restart"])
def test_a_delete_that_fails_part_way_is_finished_by_a_retry_or_a_restart(tmp_path: Path, then: str) -> None:
    config = config_for(tmp_path)
    with BrokerThread(config) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        assert outcome(admin.create_topics([NewTopic(LONG, 3, 1)])[LONG]) is None
        produce(b.bootstrap, LONG, range(3))
        # A non-empty directory where partition 1's marked name goes: its rename fails (ENOTEMPTY)
        # after partition 0's succeeded, the way an I/O error part way would.
        blocker = Path(config.data_dir) / delete_dir_name(LONG, 1, b.broker.metadata.get(LONG).topic_id.hex)
        blocker.mkdir()
        (blocker / "in-the-way").write_bytes(b"")
        assert outcome(admin.delete_topics([LONG], operation_timeout=T)[LONG]) == "KAFKA_STORAGE_ERROR"
        assert b.broker.metadata.get(LONG) is not None  # listed still, so a retry can finish it
        assert b.broker.metrics.storage_errors == {"delete": 1}
        assert len([e for e in leftovers(config, LONG) if e.endswith("-delete")]) == 2  # partition 0, blocker
        (blocker / "in-the-way").unlink()
        blocker.rmdir()
        if then == "retry":
            assert outcome(admin.delete_topics([LONG], operation_timeout=T)[LONG]) is None
            assert b.broker.metadata.get(LONG) is None and leftovers(config, LONG) == []
    with BrokerThread(config) as b:  # the first rename committed the deletion: start-up finishes it
        assert b.broker.metadata.get(LONG) is None and b.broker.partition_log(LONG, 2) is None
        assert leftovers(config, LONG) == []


def test_a_partition_count_whose_directory_names_cannot_fit_is_refused(tmp_path: Path) -> None:
    """`<topic>-<partition>` must fit 255 bytes: a 249-character name allows partitions 0-99999.

    CreateTopics/CreatePartitions stop at 10000 partitions before this; the embedding API (and an
    auto-created topic under a large num.partitions) goes through Broker.create_topic directly."""
    from ringlog.broker.errors import KafkaError

    config = config_for(tmp_path)
    with BrokerThread(config) as b:
        async def code(operation, *args) -> str | None:
            try:
                await operation(*args)
            except KafkaError as exc:
                return exc.code.name
            return None

        assert b.call(code, b.broker.create_topic, LONG, 100001) == "invalid_partitions"
        assert b.broker.metadata.get(LONG) is None and leftovers(config, LONG) == []
        assert b.call(code, b.broker.create_topic, LONG, 1) is None
        assert b.call(code, b.broker.create_partitions, LONG, 100001) == "invalid_partitions"
        assert b.broker.metadata.get(LONG).partitions == 1 and leftovers(config, LONG) == [f"{LONG}-0"]


# --- a crash at each step ---------------------------------------------------------------------

# Broker.delete_topic's steps on disk, in its order; a crash after any prefix of them.
STEPS = ["nothing", "detached", "one dir marked", "all dirs marked", "topic store written", "purged"]
PRESENT_UNTIL = STEPS.index("one dir marked")  # the first rename commits the deletion
DOOMED_PARTITIONS = 3


def _populate(config: BrokerConfig) -> None:
    logs, metadata = _open_storage(config)
    for name, count in ((LONG, DOOMED_PARTITIONS), ("kept", 2)):
        for p in range(count):  # logs first, then the store: Broker.create_topic's order
            logs.create(name, p).append(build_batch([(None, b"v%d" % p, [], NOW)]), now_ms=NOW)
        metadata.add(name, count)
    logs.close()


def _crash_after(config: BrokerConfig, step: int) -> None:
    logs, metadata = _open_storage(config)
    tag = metadata.get(LONG).topic_id.hex
    marked = []
    if step >= STEPS.index("detached"):
        logs.detach_topic(LONG)
    if step == STEPS.index("one dir marked"):
        data = Path(config.data_dir)
        os.rename(data / f"{LONG}-1", data / delete_dir_name(LONG, 1, tag))
    if step >= STEPS.index("all dirs marked"):
        marked = logs.mark_topic_deleted(LONG, tag)
    if step >= STEPS.index("topic store written"):
        metadata.remove(LONG, save=False)
        metadata.write(metadata.encode())
    if step >= STEPS.index("purged"):
        logs.purge_deleted(marked)
    logs.abandon()  # kill -9: nothing closed, no clean-shutdown marker


@pytest.mark.parametrize("step", range(len(STEPS)), ids=STEPS)
def test_a_crash_at_any_step_of_a_delete_leaves_the_topic_whole_or_gone(tmp_path: Path, step: int) -> None:
    config = config_for(tmp_path)
    _populate(config)
    topic_id = None
    for restart in range(2):  # and a second start-up finds the same
        if restart == 0:
            logs, metadata = _open_storage(config)
            topic_id = metadata.get(LONG).topic_id
            logs.close()
            _crash_after(config, step)
        logs, metadata = _open_storage(config)
        try:
            for p in range(2):
                assert logs.get("kept", p).log_end_offset == 1
            if step < PRESENT_UNTIL:
                info = metadata.get(LONG)
                assert info is not None and info.partitions == DOOMED_PARTITIONS and info.topic_id == topic_id
                assert [logs.get(LONG, p).log_end_offset for p in range(DOOMED_PARTITIONS)] == [1] * DOOMED_PARTITIONS
                assert len(leftovers(config, LONG)) == DOOMED_PARTITIONS
            else:
                assert metadata.get(LONG) is None
                assert LONG not in logs.topics()
                assert leftovers(config, LONG) == []
        finally:
            logs.close()
