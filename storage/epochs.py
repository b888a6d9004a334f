"""The leader-epoch checkpoint of one partition: which leader epoch began at which offset.

File `leader-epoch-checkpoint` in the partition directory, Kafka's text format::

    0                 version
    3                 number of entries
    0 0               epoch start-offset, ascending in both
    2 1180
    5 4211

Written whole to a temporary file, fsynced and renamed over the old one (then the directory
fsynced), so a crash leaves the old or the new file, never a mix: call `write` from a worker
thread. Every batch also carries the epoch of the leader that wrote it (partitionLeaderEpoch),
so the file is a shortcut, not the only record: `load` reads it, drops entries at or past the
log end (a tail lost in a crash), and scans the batch headers from the last entry on for epochs
written after the last checkpoint. Owner: the broker's replica manager (broker.cluster.replica).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FILE = "leader-epoch-checkpoint"
VERSION = 0

Entries = list[tuple[int, int]]


def encode(entries: Sequence[tuple[int, int]]) -> bytes:
    lines = [str(VERSION), str(len(entries)), *(f"{e} {o}" for e, o in entries)]
    return ("\n".join(lines) + "\n").encode("ascii")


def decode(data: bytes) -> Entries:
    """ValueError for anything but a well-formed, ascending checkpoint."""
    lines = data.decode("ascii").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or lines[0] != str(VERSION):
        raise ValueError("not a version 0 leader-epoch checkpoint")
    count = int(lines[1])
    if count != len(lines) - 2:
        raise ValueError(f"says {count} entries, has {len(lines) - 2}")
    out: Entries = []
    for line in lines[2:]:
        epoch_text, offset_text = line.split(" ")
        entry = (int(epoch_text), int(offset_text))
        if entry[0] < 0 or entry[1] < 0 or (out and (entry[0] <= out[-1][0] or entry[1] < out[-1][1])):
            raise ValueError(f"entry {line!r} is not ascending")
        out.append(entry)
    return out


def read(directory: str | os.PathLike) -> Entries | None:
    """The checkpoint's entries; None when there is none or it cannot be trusted."""
    try:
        return decode((Path(directory) / FILE).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def write(directory: str | os.PathLike, entries: Sequence[tuple[int, int]]) -> None:
    """Replace the checkpoint atomically (worker thread: it fsyncs)."""
    directory = Path(directory)
    tmp = directory / (FILE + ".tmp")
    with open(tmp, "wb") as f:
        f.write(encode(entries))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / FILE)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clip(entries: Sequence[tuple[int, int]], log_end: int) -> Entries:
    """Entries that still describe the log after it was cut to `log_end`: an epoch that began at
    or after the end has no batch left (the newest one may still start exactly at the end when
    the log is empty from there: it is kept only if it begins below the end)."""
    return [(e, o) for e, o in entries if o < log_end]


def load(plog: Any) -> Entries:
    """The partition's epochs: the checkpoint clipped to the log, plus what the batch headers
    after its last entry add (file work: worker thread, or start-up)."""
    entries = clip(read(plog.directory) or [], plog.log_end_offset)
    start = plog.log_start_offset
    # the epoch the log start falls in, and those after it
    entries = [x for x in entries if x[1] < start][-1:] + [x for x in entries if x[1] >= start]
    scan_from = entries[-1][1] if entries else plog.log_start_offset
    for header in plog.iter_batch_headers(scan_from):
        epoch = header.partition_leader_epoch
        if epoch >= 0 and (not entries or epoch > entries[-1][0]):
            entries.append((epoch, header.base_offset))
    return entries
