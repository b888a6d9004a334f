"""ringlog's storage engine: RecordBatch v2 segments, mmap'd indexes, partition logs, recovery.

Synchronous and free of any event loop: the broker owns each log from one thread and moves only
FlushToken.sync() to a worker thread.
"""
from __future__ import annotations

from .checkpoint import atomic_write
from .errors import (
    BatchTooLargeError,
    CorruptBatchError,
    InvalidBatchError,
    OffsetOutOfRangeError,
    StorageError,
    StorageIOError,
    UnsupportedMagicError,
)
from .log import (
    AppendInfo,
    FileRegion,
    FlushToken,
    LogConfig,
    PartitionLog,
    ReadResult,
    RecoveryReport,
    RetentionReport,
    parse_partition_dir,
)
from .manager import DataDirLockedError, LogManager
from .segment import SegmentFile

__all__ = [
    "AppendInfo",
    "BatchTooLargeError",
    "CorruptBatchError",
    "DataDirLockedError",
    "FileRegion",
    "FlushToken",
    "InvalidBatchError",
    "LogConfig",
    "LogManager",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "ReadResult",
    "RecoveryReport",
    "RetentionReport",
    "SegmentFile",
    "StorageError",
    "StorageIOError",
    "UnsupportedMagicError",
    "atomic_write",
    "parse_partition_dir",
]
