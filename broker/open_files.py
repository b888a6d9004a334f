"""The process's open-file limit (RLIMIT_NOFILE): raise it at start-up and say what it allows.

What holds descriptors while the broker runs:
  * every segment of every partition (not only the active one): its .log, .index and .timeindex,
    plus the duplicates CPython's mmap keeps of the two mapped index files: FDS_PER_SEGMENT = 5,
    so a new partition costs 5 and every roll 5 more until retention deletes the old segment;
  * one per client connection;
  * a few for the listener, the event loop, the data-dir lock and a fetch's sendfile region.
With the common default `ulimit -n 1024` that is about 200 segments, which is why `ringlog broker`
raises the soft limit to the hard one before opening anything (what Kafka's start scripts leave
to the operator).
"""
from __future__ import annotations

import errno
import os

import attrs

FDS_PER_SEGMENT = 5


@attrs.frozen
class Raised:
    before: int
    after: int
    hard: int  # -1: unlimited


def raise_soft_limit() -> Raised | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; None where there is no such limit."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # Linux refuses a soft limit above fs.nr_open even when the hard one is unlimited.
        target = _nr_open() or soft
    if soft != resource.RLIM_INFINITY and target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    else:
        target = soft
    return Raised(soft, target, hard)


def _nr_open() -> int | None:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def soft_limit() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def in_use() -> int | None:
    """Descriptors this process has open now (Linux /proc, macOS /dev/fd), None if unknown."""
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(path)) - 1  # listdir's own descriptor
        except OSError:
            continue
    return None


def capacity(limit: int | None, used: int | None, segments: int, partitions: int,
             max_connections: int) -> tuple[bool, str]:
    """(too low for max.connections?, a sentence for the start-up log)."""
    if limit is None or used is None:
        return False, "open-file limit unknown"
    room = max(0, limit - used)
    text = (f"open-file limit {limit:,}, {used:,} in use ({segments:,} segment(s) in {partitions:,} "
            f"partition(s), {FDS_PER_SEGMENT} each): room for about {room // FDS_PER_SEGMENT:,} more "
            f"segments (a new partition is one) or {room:,} connections")
    if room < max_connections:
        return True, text + f", fewer than max.connections {max_connections:,}: raise ulimit -n"
    return False, text


def exhausted(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is the process or the system running out of descriptors."""
    seen = 0
    while exc is not None and seen < 10:
        # OSError, and storage's StorageIOError, which keeps the errno of the failure it reports
        if getattr(exc, "errno", None) in (errno.EMFILE, errno.ENFILE):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
