"""Small state files written atomically, and the per-partition checkpoint.

atomic_write: write `<path>.tmp`, fsync it, rename over `<path>`, fsync the directory. A reader
sees either the old file or the new one, never a mix, even after a power loss.

Partition checkpoint (`<partition dir>/ringlog.checkpoint`), UTF-8 text, one `key value` per line::

    ringlog-partition-checkpoint 1
    recovery-point 1234
    log-start-offset 100

- recovery-point: every batch below this offset was fsynced; segments wholly below it are trusted
  on an unclean start (no CRC scan). Only ever lowered by truncation, raised by flushes.
- log-start-offset: the first offset a reader may ask for (DeleteRecords, retention).

A missing or unreadable checkpoint is not an error: the log is then recovered from its first
segment, and the log start offset is the first segment's base offset.
"""
from __future__ import annotations

import os
from pathlib import Path

import attrs

CHECKPOINT_NAME = "ringlog.checkpoint"
TMP_SUFFIX = ".tmp"
_MAGIC = "ringlog-partition-checkpoint"
_VERSION = 1


def fsync_dir(directory: Path) -> None:
    """fsync a directory so created, renamed and removed entries in it survive a power loss."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: tmp + fsync + rename + fsync of the directory."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@attrs.frozen
class PartitionCheckpoint:
    recovery_point: int
    log_start_offset: int

    def encode(self) -> bytes:
        return (
            f"{_MAGIC} {_VERSION}\n"
            f"recovery-point {self.recovery_point}\n"
            f"log-start-offset {self.log_start_offset}\n"
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> "PartitionCheckpoint | None":
        """Parse; None for anything malformed (the caller then recovers everything)."""
        try:
            lines = data.decode("utf-8").splitlines()
            if not lines or lines[0].split() != [_MAGIC, str(_VERSION)]:
                return None
            values: dict[str, int] = {}
            for line in lines[1:]:
                key, _, value = line.partition(" ")
                values[key] = int(value)
            rp, lso = values["recovery-point"], values["log-start-offset"]
        except (UnicodeDecodeError, ValueError, KeyError):
            return None
        if rp < 0 or lso < 0:
            return None
        return cls(rp, lso)


def read_partition_checkpoint(directory: Path) -> PartitionCheckpoint | None:
    try:
        data = (Path(directory) / CHECKPOINT_NAME).read_bytes()
    except FileNotFoundError:
        return None
    return PartitionCheckpoint.decode(data)


def write_partition_checkpoint(directory: Path, checkpoint: PartitionCheckpoint) -> None:
    atomic_write(Path(directory) / CHECKPOINT_NAME, checkpoint.encode())
