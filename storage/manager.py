"""All partition logs of one data directory.

Data directory layout::

    .lock                     flock'ed exclusively while a LogManager has the directory open
    .clean_shutdown           written by close() after every log is flushed and checkpointed;
                              removed (and the removal fsynced) as soon as open() has read it, so
                              a crash after that is seen as unclean
    <topic>-<partition>/      one PartitionLog each (storage.log); topic names may contain '-',
                              '.' and '_', the partition is after the LAST '-'
    <topic>-<partition>.<uuid>-delete/
                              a deleted partition whose removal may not have finished: the rename
                              is the atomic step, the recursive removal is finished on next open

Owner: the broker's event-loop thread (like every PartitionLog).
"""
from __future__ import annotations

import fcntl
import os
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


@attrs.define(eq=False)
class LogManager:
    """One per data dir; owns every PartitionLog in it."""

    data_dir: Path
    default_config: LogConfig
    logs: dict[tuple[str, int], PartitionLog] = attrs.field(factory=dict)
    recovery_reports: list[RecoveryReport] = attrs.field(factory=list)
    topic_configs: dict[str, dict[str, str]] = attrs.field(factory=dict)
    had_clean_shutdown: bool = False
    _lock_fd: int = -1

    @classmethod
    def open(
        cls,
        data_dir: Path,
        default_config: LogConfig,
        *,
        now_ms: int,
        topic_configs: Mapping[str, Mapping[str, str]] = {},
    ) -> "LogManager":
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
            manager._load(now_ms)
        except BaseException:
            manager._abandon_all()
            raise
        return manager

    def _load(self, now_ms: int) -> None:
        marker = self.data_dir / CLEAN_SHUTDOWN_NAME
        clean = marker.exists()
        self.had_clean_shutdown = clean
        for entry in sorted(self.data_dir.iterdir()):
            if not entry.is_dir():
                continue
            if entry.name.endswith(DELETE_SUFFIX):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            parsed = parse_partition_dir(entry.name)
            if parsed is None:
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
        if not topic or "/" in topic or topic in (".", "..") or partition < 0:
            raise ValueError(f"invalid topic/partition {topic!r}/{partition}")
        directory = self.data_dir / f"{topic}-{partition}"
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
            self.logs[(topic, partition)] = log
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

    def delete_topic(self, topic: str) -> None:
        """Remove every partition of `topic`: rename each dir to `<name>.<uuid>-delete`, then remove."""
        self.delete_partitions(topic, [p for t, p in self.logs if t == topic])

    def delete_partitions(self, topic: str, partitions: Iterable[int]) -> None:
        """Remove these partitions of `topic` the same way (used to undo a failed creation)."""
        doomed = [(topic, p) for p in partitions if (topic, p) in self.logs]
        renamed: list[Path] = []
        for key in doomed:
            log = self.logs.pop(key)
            log.abandon()
            target = self.data_dir / f"{log.directory.name}.{uuid.uuid4().hex}{DELETE_SUFFIX}"
            os.rename(log.directory, target)
            renamed.append(target)
        log = None  # its descriptors close with it, before fsync_dir needs one
        if renamed:
            fsync_dir(self.data_dir)
        for path in renamed:
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
