from __future__ import annotations

import socket
import uuid

import trio


def topic_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def all_tasks() -> list:
    """Every task alive in this trio run (walking nurseries from the root task)."""
    out = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        out.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return out


async def wait_until(predicate, timeout: float, what: str = "condition") -> None:
    """Poll `predicate()` until it holds; fail the test after `timeout` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"{what} did not happen within {timeout}s")


def closed_port() -> int:
    """A loopback port nothing listens on (bound once by us, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
