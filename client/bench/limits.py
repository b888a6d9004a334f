"""The machine's own limits, measured with the simplest possible code, to compare brokers against.

* Sequential write into the page cache: 1 MiB `os.write` calls into a new file, no sync; the rate a
  log writer with fsync "never" can at best reach.
* Sequential write with fdatasync: the same, each block followed by `os.fdatasync` (1 MiB blocks: the
  producer's batches are up to ~1 MB, so one group commit writes about this much; and 4 KiB blocks,
  syncs per second, the bound on single-record requests with fsync "always").
* Loopback TCP bandwidth: one process sends 1 MiB buffers to another over 127.0.0.1.

All three run in the directory the brokers' data directories live in (same file system), are
bounded by a byte budget and a time budget, and delete what they wrote.
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import time
from pathlib import Path

MIB = 2**20


def disk_write(directory: str | os.PathLike, *, block: int = MIB, sync: bool = False,
               max_bytes: int = 1024 * MIB, duration_s: float = 3.0) -> dict:
    """Sequential write rate in `directory`; with `sync`, an fdatasync after every block."""
    path = Path(directory) / f"limit-{os.getpid()}-{time.monotonic_ns()}.bin"
    buf = os.urandom(block)
    written = 0
    blocks = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        t0 = time.perf_counter()
        deadline = t0 + duration_s
        while written < max_bytes and time.perf_counter() < deadline:
            written += os.write(fd, buf)
            blocks += 1
            if sync:
                os.fdatasync(fd)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {
        "block_bytes": block,
        "sync": sync,
        "bytes": written,
        "seconds": round(elapsed, 4),
        "mb_s": written / elapsed / 1e6,
        "ops_s": blocks / elapsed,
    }


def _tcp_sender(port: int, duration_s: float, max_bytes: int) -> None:
    buf = b"\0" * MIB
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        deadline = time.perf_counter() + duration_s
        while sent < max_bytes and time.perf_counter() < deadline:
            s.sendall(buf)
            sent += len(buf)


def loopback_tcp(*, duration_s: float = 2.0, max_bytes: int = 16 * 1024 * MIB) -> dict:
    """Bandwidth of one TCP stream over 127.0.0.1 between two processes."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(30)
        ctx = multiprocessing.get_context("spawn")
        sender = ctx.Process(target=_tcp_sender, args=(port, duration_s, max_bytes), daemon=True)
        sender.start()
        try:
            conn, _ = server.accept()
        except TimeoutError:
            sender.kill()
            raise
        buf = bytearray(MIB)
        view = memoryview(buf)
        received = 0
        t0 = None
        with conn:
            conn.settimeout(duration_s + 30)
            while True:
                n = conn.recv_into(view)
                if t0 is None:
                    t0 = time.perf_counter()
                if n == 0:
                    break
                received += n
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
        sender.join(10)
        if sender.is_alive():
            sender.kill()
    return {"bytes": received, "seconds": round(elapsed, 4), "mb_s": received / elapsed / 1e6 if elapsed else 0.0}


def settle_disk() -> None:
    """Write back every dirty page before a measurement.

    The kernel lets a writer fill the page cache at memory speed only until dirty pages pass its
    threshold, then makes it wait for the disk. Without this, each produce run would pay for the
    previous runs' bytes (a 100 KiB run fell from 820 to 430 MB/s from its third repetition on),
    while the page-cache limit, whose file is deleted before it is written back, never pays."""
    os.sync()


def measure_all(directory: str | os.PathLike, *, runs: int, duration_s: float, max_bytes: int) -> dict:
    """Every limit `runs` times, each disk measurement from a settled page cache.
    Returns {name: [run dicts]}."""
    out: dict[str, list[dict]] = {"page_cache_write": [], "fdatasync_1mib": [], "fdatasync_4kib": [],
                                  "loopback_tcp": []}
    for _ in range(runs):
        settle_disk()
        out["page_cache_write"].append(disk_write(directory, sync=False, max_bytes=max_bytes,
                                                  duration_s=duration_s))
        settle_disk()
        out["fdatasync_1mib"].append(disk_write(directory, sync=True, max_bytes=max_bytes,
                                                duration_s=duration_s))
        settle_disk()
        out["fdatasync_4kib"].append(disk_write(directory, block=4096, sync=True, max_bytes=max_bytes,
                                                duration_s=duration_s))
        out["loopback_tcp"].append(loopback_tcp(duration_s=duration_s))
    return out
