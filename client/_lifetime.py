"""How the producer, consumer and admin client enter and leave `async with`.

Each client owns one Trio nursery for its background tasks. Trio wraps whatever leaves a nursery
in an ExceptionGroup, so without help an error from inside the client (NoBrokersAvailable while
bootstrapping) or from the caller's own block (TopicAlreadyExistsError) would come out as a group
that only `except*` catches. Callers of a library expect the plain exception, so the nursery is
opened through `open_owned_nursery`, which unwraps a group that holds exactly one real error.
A group with several real errors (a background task crashed while the block raised something
else) stays a group: neither error is more "the" error than the other.

`Lifetime` turns a client's `_lifetime()` async context manager into `__aenter__` / `__aexit__`,
so `async with Producer(...)` and `async with open_producer(...)` stay the same object and
`close()` can end it early.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import trio

__all__ = ["Lifetime", "lone_error", "open_owned_nursery"]


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return False


def lone_error(group: BaseExceptionGroup) -> BaseException | None:
    """The one exception of `group` that is not a cancellation, or None if there are none or
    several.

    Cancelled siblings are dropped on purpose: they are the other tasks being stopped because of
    that one error (or the caller's scope being cancelled at the same moment). Dropping them is
    safe because Trio cancellation is level-triggered: a scope that is still cancelled raises
    Cancelled again at the caller's next checkpoint. Only this level is looked at: a group the
    caller's own block raised stays the caller's group."""
    found: BaseException | None = None
    for exc in group.exceptions:
        if _only_cancelled(exc):
            continue
        if found is not None:
            return None
        found = exc
    return found


@contextlib.asynccontextmanager
async def open_owned_nursery() -> AsyncIterator[trio.Nursery]:
    """A strict nursery whose failure comes out as the plain exception when one error caused it."""
    try:
        async with trio.open_nursery(strict_exception_groups=True) as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        exc = lone_error(group)
        if exc is None:
            raise
        # Re-raise the original object (its traceback and __cause__ stay); raising it inside this
        # handler would make the group its __context__, which is noise in every traceback.
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context
            del exc, context


class Lifetime:
    """`__aenter__` / `__aexit__` over the subclass's `_lifetime()` async context manager."""

    _cm: Any = None

    def _lifetime(self) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError

    async def __aenter__(self):
        cm = self._lifetime()
        value = await cm.__aenter__()
        self._cm = cm
        return value

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        # close() may already have ended the lifetime; leaving the block then has nothing to do
        # and must not hide the block's exception.
        cm, self._cm = self._cm, None
        if cm is None:
            return False
        return bool(await cm.__aexit__(exc_type, exc, tb))
