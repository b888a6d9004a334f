"""LogManager (data dir lock, partition dirs, topic deletion, clean marker) and checkpoint files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import ringlog.storage.checkpoint as checkpoint_module
from ringlog.storage import DataDirLockedError, LogConfig, LogManager, atomic_write, parse_partition_dir
from ringlog.storage.checkpoint import PartitionCheckpoint, read_partition_checkpoint
from ringlog.storage.manager import NAME_MAX, delete_dir_name, name_fits, parse_delete_dir, partition_dir_name
from ringlog.storage.records import build_batch

NOW = 1_700_000_000_000
MAX_TOPIC_NAME_LENGTH = 249  # Kafka's limit (broker.metadata); storage takes any name that fits


def batch(i: int) -> bytes:
    return build_batch([(None, b"v%d" % i, [], NOW)])


def test_second_manager_on_same_dir_is_refused(tmp_path: Path) -> None:
    first = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    with pytest.raises(DataDirLockedError, match="in use"):
        LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    first.close()
    LogManager.open(tmp_path, LogConfig(), now_ms=NOW).close()


def test_partition_dirs_and_topic_names(tmp_path: Path) -> None:
    m = LogManager.open(tmp_path / "data", LogConfig(), now_ms=NOW)
    for topic, parts in [("a-b-c", 3), ("x.y_z", 2), ("__consumer_offsets", 1)]:
        for p in range(parts):
            m.create(topic, p).append(batch(p), now_ms=NOW)
    assert m.create("a-b-c", 1) is m.get("a-b-c", 1)  # idempotent
    assert m.get("nope", 0) is None
    (tmp_path / "data" / "not-a-partition-dir").mkdir()
    (tmp_path / "data" / "stray-file-0").write_text("a file, not a dir")
    m.close()
    m = LogManager.open(tmp_path / "data", LogConfig(), now_ms=NOW)
    assert m.topics() == {"a-b-c": 3, "x.y_z": 2, "__consumer_offsets": 1}
    log = m.get("a-b-c", 2)
    assert log is not None and log.log_end_offset == 1
    assert (tmp_path / "data" / "not-a-partition-dir").exists()  # unknown things are left alone
    m.close()


def test_delete_topic(tmp_path: Path) -> None:
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    for p in range(2):
        m.create("gone", p).append(batch(p), now_ms=NOW)
    keep = m.create("gone-2", 0)  # a topic whose name extends the deleted one
    keep.append(batch(0), now_ms=NOW)
    reader = m.get("gone", 0).read(0, 100)  # type: ignore[union-attr]
    m.delete_topic("gone")
    assert m.topics() == {"gone-2": 1}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["gone-2-0"]
    # a region read before the deletion still reads the (now unlinked) file
    assert reader.read_bytes() == batch(0)
    m.close()


def test_leftover_delete_dirs_are_listed_then_purged(tmp_path: Path) -> None:
    doomed = tmp_path / "t-0.0123456789abcdef-delete"      # an older, random-id marked dir
    cut = tmp_path / ("t" * 200 + "-7." + "ab" * 16 + "-delete")  # a marked dir whose topic was cut
    for d in (doomed, cut):
        d.mkdir()
        (d / f"{0:020d}.log").write_bytes(b"junk")
    stray = tmp_path / "backup-delete"  # ends like one but is not ours: left alone
    stray.mkdir()
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    assert m.topics() == {} and sorted(m.pending_deletes) == sorted([doomed, cut])
    assert doomed.exists()  # removal waits for the caller (who may still have to record the deletion)
    m.purge_deleted()
    assert not doomed.exists() and not cut.exists() and stray.exists()
    m.close()


LONG = "t" * MAX_TOPIC_NAME_LENGTH


def test_delete_marked_names_fit_and_never_parse_as_partitions() -> None:
    tag = "0123456789abcdef" * 2
    # the last: 2-byte characters, and a cut that falls inside one
    for topic, partition in [(LONG, 0), (LONG, 99999), ("a-b", 3), ("é" * 124, 3)]:
        assert name_fits(partition_dir_name(topic, partition))
        name = delete_dir_name(topic, partition, tag)
        assert len(os.fsencode(name)) <= NAME_MAX
        assert parse_delete_dir(name) == (partition, tag)
        assert parse_partition_dir(name) is None
    assert delete_dir_name("a-b", 3, tag) == f"a-b-3.{tag}-delete"  # short names are not cut
    assert not name_fits(partition_dir_name(LONG, 100000))
    with pytest.raises(ValueError):
        delete_dir_name("t", 0, "not hex")


def test_delete_topic_with_the_longest_legal_name(tmp_path: Path) -> None:
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    for p in (0, 1, 99999):
        m.create(LONG, p).append(batch(p), now_ms=NOW)
    with pytest.raises(ValueError, match="longer than 255"):
        m.create(LONG, 100000)
    m.create("kept", 0)
    m.delete_topic(LONG)
    assert m.topics() == {"kept": 1}
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["kept-0"]
    m.close()


def test_a_crash_after_marking_leaves_marked_dirs_that_open_does_not_load(tmp_path: Path) -> None:
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    for p in (0, 1, 99999):
        m.create(LONG, p).append(batch(p), now_ms=NOW)
    tag = "ab" * 16
    m.detach_topic(LONG)
    marked = m.mark_topic_deleted(LONG, tag)
    assert len(marked) == 3 and all(path.exists() for path in marked)
    m.abandon()  # the crash: purge never ran
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    assert m.logs == {} and sorted(m.pending_deletes) == sorted(marked)
    m.purge_deleted()
    assert list(p for p in tmp_path.iterdir() if p.is_dir()) == []
    m.close()


def test_open_finishes_a_deletion_that_a_crash_interrupted(tmp_path: Path) -> None:
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    for p in range(4):
        m.create("half", p).append(batch(p), now_ms=NOW)
    m.create("other", 0).append(batch(0), now_ms=NOW)
    m.abandon()
    tag, other_tag = "1" * 32, "2" * 32
    # the crash came after two of the four renames
    for p in range(2):
        os.rename(tmp_path / f"half-{p}", tmp_path / delete_dir_name("half", p, tag))
    tags = {"half": tag, "other": other_tag}
    for _ in range(2):  # the second time: a crash during the first start-up changes nothing
        m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW, deletion_tags=tags)
        assert m.resumed_deletes == ["half"] and m.topics() == {"other": 1}
        assert sorted(p.name for p in m.pending_deletes) == sorted(delete_dir_name("half", p, tag) for p in range(4))
        m.abandon()
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW, deletion_tags=tags)
    m.purge_deleted()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["other-0"]
    m.close()


def test_a_recreated_topic_is_not_taken_by_the_deletion_of_its_namesake(tmp_path: Path) -> None:
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    m.create("t", 0).append(batch(0), now_ms=NOW)
    old_tag, new_tag = "a" * 32, "b" * 32
    m.detach_topic("t")
    m.mark_topic_deleted("t", old_tag)  # then a crash before the purge ...
    m.create("t", 0)  # ... after the name was used again
    m.abandon()
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW, deletion_tags={"t": new_tag})
    assert m.resumed_deletes == [] and m.topics() == {"t": 1}
    assert m.get("t", 0).log_end_offset == 0  # type: ignore[union-attr]
    m.purge_deleted()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["t-0"]
    m.close()


def test_topic_configs_apply(tmp_path: Path) -> None:
    m = LogManager.open(
        tmp_path, LogConfig(), now_ms=NOW, topic_configs={"fast": {"ringlog.flush.policy": "always"}}
    )
    assert m.create("fast", 0).config.flush_policy == "always"
    assert m.create("slow", 0).config.flush_policy == "never"
    m.set_topic_config("slow", {"retention.ms": "5"})
    assert m.get("slow", 0).config.retention_ms == 5  # type: ignore[union-attr]
    m.close()


def test_failed_open_releases_the_lock(tmp_path: Path) -> None:
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    m.create("t", 0)
    m.close()
    with pytest.raises(ValueError):
        LogManager.open(tmp_path, LogConfig(), now_ms=NOW, topic_configs={"t": {"retention.ms": "x"}})
    LogManager.open(tmp_path, LogConfig(), now_ms=NOW).close()  # not left locked


def test_atomic_write_replaces_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["state"]

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write(target, b"three")
    monkeypatch.undo()
    assert target.read_bytes() == b"two"  # the old content stays whole
    assert [p.name for p in tmp_path.iterdir()] == ["state"]


def test_partition_checkpoint_format(tmp_path: Path) -> None:
    cp = PartitionCheckpoint(recovery_point=42, log_start_offset=7)
    assert PartitionCheckpoint.decode(cp.encode()) == cp
    assert cp.encode().decode().splitlines()[0] == "ringlog-partition-checkpoint 1"
    for bad in [b"", b"junk", b"ringlog-partition-checkpoint 1\nrecovery-point x\n", b"\xff\xfe"]:
        assert PartitionCheckpoint.decode(bad) is None
    assert read_partition_checkpoint(tmp_path) is None
    (tmp_path / "ringlog.checkpoint").write_bytes(b"garbage")
    assert read_partition_checkpoint(tmp_path) is None


def test_garbage_checkpoint_means_full_recovery(tmp_path: Path) -> None:
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    log = m.create("t", 0)
    for i in range(3):
        log.append(batch(i), now_ms=NOW)
    m.abandon()
    (tmp_path / "t-0" / "ringlog.checkpoint").write_bytes(b"\x00" * 10)
    os.remove(tmp_path / "t-0" / f"{0:020d}.timeindex")
    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    [report] = m.recovery_reports
    assert report.segments_scanned == 1 and report.batches_scanned == 3
    assert m.get("t", 0).log_end_offset == 3  # type: ignore[union-attr]
    m.close()


def test_create_out_of_descriptors_leaves_nothing_behind(tmp_path: Path) -> None:
    """EMFILE while creating a partition: a StorageIOError that says so, no directory left, and
    the descriptors it had opened are free again."""
    import errno
    import resource

    from ringlog.storage import StorageIOError

    m = LogManager.open(tmp_path, LogConfig(), now_ms=NOW)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    if in_use is None:
        pytest.skip("needs /proc/self/fd")
    made = []
    try:
        # room for a few partitions (5 descriptors each), then EMFILE part-way through one
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 13, hard))
        with pytest.raises(StorageIOError) as info:
            for p in range(10):
                m.create("t", p)
                made.append(p)
        assert info.value.errno == errno.EMFILE
        assert made, "not even one partition fitted"
        failed = len(made)
        assert not (tmp_path / f"t-{failed}").exists()
        m.delete_partitions("t", made)
        assert not [d for d in tmp_path.iterdir() if d.name.startswith("t-")]
        # everything it held is back: the same partitions fit again
        for p in made:
            m.create("t", p)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    m.close()
