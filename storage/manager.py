"""All partition logs of one data directory.

Data directory layout::

    .lock                     flock'ed exclusively while a LogManager has the directory open
    .clean_shutdown           written by close() after every log is flushed and checkpointed;
                              removed (and the removal fsynced) as soon as open() has read it, so
                              a crash after that is seen as unclean
    <topic>-<partition>/      one PartitionLog each (storage.log); topic names may contain '-',
                              '.' and '_', the partition is after the LAST '-'
    <topic>-<partition>.<tag>-delete/
                              a deleted partition whose removal may not have finished. <tag> is
                              lowercase hex chosen by the caller (the broker uses the topic id),
                              so a deletion can be told apart from an earlier one of a topic with
                              the same name. Like Kafka's UnifiedLog.logDeleteDirName, the topic
                              part is cut so the name fits NAME_MAX (255) bytes: a 249-character
                              topic plus `.<32 hex>-delete` would not. Such a name never parses
                              as a partition directory (it does not end in `-<digits>`).

Deleting a topic (delete_topic, or the steps detach_topic / mark_topic_deleted / purge_deleted
for a caller that runs the file work in worker threads):
    1. detach: the logs leave the manager and release their files (memory only);
    2. mark: every `<topic>-<p>` directory on disk is renamed to its delete-marked name, then the
       data directory is fsynced. The first rename is the commit point of the deletion;
    3. purge: the marked directories are removed recursively (a crash here leaves them to open()).
open() finds marked directories and lists them in `pending_deletes` without removing them; for
every topic in `deletion_tags` whose tag is on one of them (a crash stopped step 2 part way, or
before the caller recorded the deletion elsewhere) it marks the topic's remaining directories
too instead of opening them, and names the topic in `resumed_deletes`. The caller records those
deletions (the broker: topics.json), then calls purge_deleted(). Nothing is removed before
that, so a crash during start-up repeats the same decisions.

Owner: the broker's event-loop thread (like every PartitionLog); mark_topic_deleted and
purge_deleted touch no manager state and may run in a worker thread.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from .checkpoint import atomic_write, fsync_dir
from .errors import StorageError, StorageIOError
from .log import LogConfig, PartitionLog, RecoveryReport, parse_partition_dir

LOCK_NAME = ".lock"
CLEAN_SHUTDOWN_NAME = ".clean_shutdown"
DELETE_SUFFIX = "-delete"
NAME_MAX = 255  # bytes in one path component (Linux, most file systems)
_TAG = re.compile(r"[0-9a-f]{1,64}")
# `<topic, perhaps cut>-<partition>.<tag>-delete`; the topic part is not needed to finish a deletion
_DELETE_DIR = re.compile(r"^(?P<prefix>.*)-(?P<partition>\d+)\.(?P<tag>[0-9a-f]+)" + re.escape(DELETE_SUFFIX) + "$")


class DataDirLockedError(StorageError):
    """Another process (a second broker) already has this data directory open."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _errno_of(exc: BaseException) -> int | None:
    """The OS error number behind `exc` (an OSError, or a StorageIOError raised from one)."""
    while exc is not None:
        number = getattr(exc, "errno", None)
        if number is not None:
            return number
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def name_fits(name: str) -> bool:
    """Whether `name` can be one directory entry."""
    return len(os.fsencode(name)) <= NAME_MAX


def delete_dir_name(topic: str, partition: int, tag: str) -> str:
    """`<topic>-<partition>.<tag>-delete`, the topic cut (at a character boundary) to fit NAME_MAX."""
    if not _TAG.fullmatch(tag):
        raise ValueError(f"deletion tag {tag!r} is not 1-64 lowercase hex digits")
    suffix = f"-{partition}.{tag}{DELETE_SUFFIX}"
    room = NAME_MAX - len(os.fsencode(suffix))
    prefix = os.fsencode(topic)[:room].decode("utf-8", "ignore")
    return prefix + suffix


def parse_delete_dir(name: str) -> tuple[int, str] | None:
    """(partition, tag) of a delete-marked directory name, None for any other name."""
    m = _DELETE_DIR.match(name)
    return (int(m["partition"]), m["tag"]) if m else None


@attrs.define(eq=False)
class LogManager:
    """One per data dir; owns every PartitionLog in it."""

    data_dir: Path
    default_config: LogConfig
    logs: dict[tuple[str, int], PartitionLog] = attrs.field(factory=dict)
    recovery_reports: list[RecoveryReport] = attrs.field(factory=list)
    topic_configs: dict[str, dict[str, str]] = attrs.field(factory=dict)
    had_clean_shutdown: bool = False
    # delete-marked directories found (or marked) by open(), removed by purge_deleted()
    pending_deletes: list[Path] = attrs.field(factory=list)
    # topics whose interrupted deletion open() carried on (see the module doc)
    resumed_deletes: list[str] = attrs.field(factory=list)
    _lock_fd: int = -1

    @classmethod
    def open(
        cls,
        data_dir: Path,
        default_config: LogConfig,
        *,
        now_ms: int,
        topic_configs: Mapping[str, Mapping[str, str]] = {},
        deletion_tags: Mapping[str, str] = {},
    ) -> "LogManager":
        """Lock and open the data directory. `deletion_tags`: topic -> the tag its deletion
        would carry (the broker: its topic id), to resume an interrupted deletion."""
        data_dir = Path(data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageIOError(f"cannot create data dir {data_dir}: {exc}") from exc
        lock_fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise DataDirLockedError(
                f"data dir {data_dir} is in use by another process (lock {data_dir / LOCK_NAME})"
            ) from None
        manager = cls(data_dir, default_config, topic_configs={k: dict(v) for k, v in topic_configs.items()})
        manager._lock_fd = lock_fd
        try:
            manager._load(now_ms, deletion_tags)
        except BaseException:
            manager._abandon_all()
            raise
        return manager

    def _load(self, now_ms: int, deletion_tags: Mapping[str, str]) -> None:
        marker = self.data_dir / CLEAN_SHUTDOWN_NAME
        clean = marker.exists()
        self.had_clean_shutdown = clean
        live: list[tuple[Path, tuple[str, int]]] = []
        tags: set[str] = set()
        for entry in sorted(self.data_dir.iterdir()):
            if not entry.is_dir():
                continue
            marked = parse_delete_dir(entry.name)
            if marked is not None:
                self.pending_deletes.append(entry)
                tags.add(marked[1])
                continue
            parsed = parse_partition_dir(entry.name)
            if parsed is not None:
                live.append((entry, parsed))
        # A marked directory carrying a topic's tag means its deletion was committed: the rest of
        # its partitions go too, or it would come back with fewer partitions.
        self.resumed_deletes = sorted(t for t, tag in deletion_tags.items() if tag in tags)
        resumed = set(self.resumed_deletes)
        for entry, parsed in live:
            if parsed[0] in resumed:
                target = self.data_dir / delete_dir_name(parsed[0], parsed[1], deletion_tags[parsed[0]])
                _rename(entry, target)
                self.pending_deletes.append(target)
        if resumed:
            fsync_dir(self.data_dir)
        for entry, parsed in live:
            if parsed[0] in resumed:
                continue
            log = PartitionLog.open(entry, self.config_for(parsed[0]), now_ms=now_ms, clean=clean)
            self.logs[parsed] = log
            if log.recovery_report is not None:
                self.recovery_reports.append(log.recovery_report)
        if clean:
            # From here on a crash must be treated as unclean.
            marker.unlink()
            fsync_dir(self.data_dir)

    def config_for(self, topic: str) -> LogConfig:
        overrides = self.topic_configs.get(topic)
        return self.default_config.with_topic_configs(overrides) if overrides else self.default_config

    def set_topic_config(self, topic: str, configs: Mapping[str, str]) -> None:
        """Replace a topic's overrides and apply them live to its open logs."""
        self.topic_configs[topic] = dict(configs)
        config = self.config_for(topic)
        for (t, _p), log in self.logs.items():
            if t == topic:
                log.update_config(config)

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self.logs.get((topic, partition))

    def create(
        self, topic: str, partition: int, config: LogConfig | None = None, *, now_ms: int | None = None
    ) -> PartitionLog:
        """Create (or return the already open) log of a partition."""
        existing = self.logs.get((topic, partition))
        if existing is not None:
            return existing
        log = self.open_new(topic, partition, config, now_ms=now_ms)
        self.adopt(topic, partition, log)
        return log

    def adopt(self, topic: str, partition: int, log: PartitionLog) -> None:
        """Take a log made by open_new into the manager (the owner's thread)."""
        self.logs[(topic, partition)] = log

    def open_new(
        self, topic: str, partition: int, config: LogConfig | None = None, *, now_ms: int | None = None
    ) -> PartitionLog:
        """Open (creating its directory and files) a partition's log without registering it:
        touches nothing of the manager's, so it may run in a worker thread; `adopt` it after.
        Nothing is left on disk when it fails."""
        if not topic or "/" in topic or topic in (".", "..") or partition < 0:
            raise ValueError(f"invalid topic/partition {topic!r}/{partition}")
        name = partition_dir_name(topic, partition)
        if not name_fits(name):
            raise ValueError(f"partition directory name {name!r} is longer than {NAME_MAX} bytes")
        directory = self.data_dir / name
        existed = directory.exists()
        log = None
        failure: tuple[str, int | None] | None = None
        try:
            log = PartitionLog.open(directory, config or self.config_for(topic),
                                    now_ms=_now_ms() if now_ms is None else now_ms)
            fsync_dir(self.data_dir)
        except (OSError, StorageIOError) as exc:
            failure = (str(exc), _errno_of(exc))
        if failure is None:
            assert log is not None
            return log
        # Undo a half-made partition: its directory would be adopted as a topic at the next start.
        # This runs after the except block, which dropped the exception and, with its traceback,
        # the files opened so far: out of descriptors (EMFILE), the removal needs them back.
        if log is not None:
            log.abandon()
            log = None
        if not existed:
            shutil.rmtree(directory, ignore_errors=True)
        message, number = failure
        raise StorageIOError(f"cannot create {directory}: {message}", errno=number)

    def delete_topic(self, topic: str, *, tag: str | None = None) -> None:
        """Remove every partition of `topic` now (the three steps of the module doc in a row)."""
        self.detach_topic(topic)
        self.purge_deleted(self.mark_topic_deleted(topic, tag or uuid.uuid4().hex))

    def delete_partitions(self, topic: str, partitions: Iterable[int]) -> None:
        """Remove these partitions of `topic` now (used to undo a failed creation): each directory
        is renamed to a delete-marked name first, so a crash part way leaves nothing a start-up
        would adopt as a partition."""
        self.remove_detached(topic, self.detach_partitions(topic, partitions))

    def detach_partitions(self, topic: str, partitions: Iterable[int]) -> list[tuple[int, PartitionLog]]:
        """Take these partitions' logs out of the manager and release them (the owner's thread);
        remove_detached then removes their directories (a worker thread)."""
        doomed = [(topic, p) for p in partitions if (topic, p) in self.logs]
        detached = []
        for key in doomed:
            log = self.logs.pop(key)
            log.abandon()
            detached.append((key[1], log))
        return detached

    def remove_detached(self, topic: str, detached: Iterable[tuple[int, PartitionLog]]) -> None:
        """Rename the detached logs' directories to delete-marked names, fsync, remove them."""
        tag = uuid.uuid4().hex
        renamed: list[Path] = []
        for partition, log in detached:
            target = self.data_dir / delete_dir_name(topic, partition, tag)
            _rename(log.directory, target)
            renamed.append(target)
        log = None  # its descriptors close with it, before fsync_dir needs one
        if renamed:
            fsync_dir(self.data_dir)
        self.purge_deleted(renamed)

    def detach_topic(self, topic: str, *, release: bool = True) -> list[PartitionLog]:
        """Take the open logs of `topic` out of the manager and (unless release=False) release
        their files; nothing on disk changes.

        The owning thread must release them (PartitionLog.abandon) before mark_topic_deleted, so
        that no later call on that thread (a flush ending, a clean committing) writes into their
        directories: closed logs refuse. release=False lets a caller do it in slices.
        """
        doomed = [key for key in self.logs if key[0] == topic]
        logs = [self.logs.pop(key) for key in doomed]
        if release:
            for log in logs:
                log.abandon()
        return logs

    def mark_topic_deleted(self, topic: str, tag: str) -> list[Path]:
        """Rename every `<topic>-<p>` directory on disk to its delete-marked name, fsync the data dir.

        Finds the directories by listing the data dir, so calling it again after a failure part
        way (or for partitions that were never opened) marks what is left. Returns every marked
        path of this deletion (`tag`), the ones an earlier failed call renamed too. Raises
        StorageIOError; what was renamed stays renamed (the deletion is committed).
        """
        marked, renamed = [], False
        try:
            entries = sorted(os.scandir(self.data_dir), key=lambda e: e.name)
        except OSError as exc:
            raise StorageIOError(f"cannot list {self.data_dir}: {exc}") from exc
        for entry in entries:
            earlier = parse_delete_dir(entry.name)
            if earlier is not None and earlier[1] == tag:
                marked.append(Path(entry.path))
                continue
            parsed = parse_partition_dir(entry.name)
            if parsed is None or parsed[0] != topic or not entry.is_dir(follow_symlinks=False):
                continue
            target = self.data_dir / delete_dir_name(topic, parsed[1], tag)
            _rename(Path(entry.path), target)
            marked.append(target)
            renamed = True
        if renamed:
            try:
                fsync_dir(self.data_dir)
            except OSError as exc:
                raise StorageIOError(f"cannot sync {self.data_dir}: {exc}") from exc
        return marked

    def purge_deleted(self, paths: Iterable[Path] | None = None) -> None:
        """Remove delete-marked directories: `paths`, or the ones open() found (pending_deletes).

        Errors are ignored: what is left is still marked, and the next open() lists it again.
        """
        if paths is None:
            paths, self.pending_deletes = self.pending_deletes, []
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    def topics(self) -> dict[str, int]:
        """topic -> partition count (highest partition number seen + 1)."""
        out: dict[str, int] = {}
        for topic, partition in self.logs:
            out[topic] = max(out.get(topic, 0), partition + 1)
        return out

    def close(self) -> None:
        """Close every log, then write the clean-shutdown marker and release the lock."""
        if self._lock_fd < 0:
            return
        errors: list[BaseException] = []
        for log in self.logs.values():
            try:
                log.close()
            except StorageError as exc:
                errors.append(exc)
        try:
            if not errors:
                atomic_write(self.data_dir / CLEAN_SHUTDOWN_NAME, b"")
        finally:
            self._release_lock()
        if errors:
            raise errors[0]

    def _abandon_all(self) -> None:
        for log in self.logs.values():
            log.abandon()
        self._release_lock()

    def abandon(self) -> None:
        """Drop everything without flushing or writing the marker (what a crash leaves)."""
        self._abandon_all()

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)  # closing the fd releases the flock


def _rename(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError as exc:
        raise StorageIOError(f"cannot rename {source.name} to {target.name}: {exc}") from exc
