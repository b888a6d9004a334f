"""Broker resource use per workload, read from /proc/<pid>.

CPU seconds: utime + stime of /proc/<pid>/stat (fields 14 and 15, in clock ticks; they include every
thread of the process, so ringlog's fsync threads and Tansu's tokio workers are counted) taken at the
start and at the end of the workload window.

Peak RSS per workload: VmHWM in /proc/<pid>/status is the peak over the whole process life, not over
one workload, so a background thread samples VmRSS every `interval` seconds while the window is open
and keeps the largest value (plus one sample at each end).
"""
from __future__ import annotations

import os
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, in seconds; 0.0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            data = f.read()
    except OSError:
        return 0.0
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    fields = data[data.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state), so utime (field 14) is fields[11] and stime (15) is fields[12].
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS:") * 1024


def hwm_bytes(pid: int) -> int:
    return _status_kib(pid, "VmHWM:") * 1024


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux: "5" into /proc/<pid>/clear_refs), so a
    later hwm_bytes() is the peak from here on, not over the process's whole life."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


class ResourceWindow:
    """`with ResourceWindow(pid) as w: ...` then w.cpu_s, w.rss_peak_bytes, w.wall_s."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.rss_peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.rss_peak_bytes = max(self.rss_peak_bytes, rss_bytes(self.pid))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "ResourceWindow":
        self._cpu0 = cpu_seconds(self.pid)
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._sample()
        self.cpu_s = cpu_seconds(self.pid) - self._cpu0
        self.wall_s = time.perf_counter() - self._t0

    def as_dict(self) -> dict:
        return {
            "broker_cpu_s": round(self.cpu_s, 3),
            "broker_cpu_util": round(self.cpu_s / self.wall_s, 3) if self.wall_s else 0.0,
            "broker_rss_peak_mib": round(self.rss_peak_bytes / 2**20, 1),
        }
