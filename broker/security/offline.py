"""Changing the security files of a stopped broker's data dir (`ringlog users`, `ringlog acls`),
as Kafka's `kafka-storage format --add-scram` does before the first start. Refused while a broker
has the directory open (it would not see the change, and would write over it)."""
from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

LOCK_NAME = ".lock"  # storage.manager's lock file


class OfflineError(ValueError):
    """One line for the user."""


@contextmanager
def stopped_broker_dir(data_dir: str, create: bool = True) -> Iterator[str]:
    """Hold the data dir's lock for the change (so a broker cannot start meanwhile)."""
    if not os.path.isdir(data_dir):
        if not create:
            raise OfflineError(f"{data_dir}: no such data dir")
        os.makedirs(data_dir, exist_ok=True)
    fd = os.open(os.path.join(data_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OfflineError(f"{data_dir} is in use by a running broker: stop it first "
                                   "(or use --bootstrap-server for SCRAM users)") from None
            raise
        yield data_dir
    finally:
        os.close(fd)
