from __future__ import annotations

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
