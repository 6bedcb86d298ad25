"""Waits with a time limit that never lose a cancellation, and a lighter hand-off to threads.

Python 3.11's `asyncio.wait_for` returns normally when what it awaits completes in the same
loop step as its task is cancelled: the cancellation is gone. A loop that only ends by being
cancelled (the dispatcher's store listener) then ran on, and the server's stop that awaited it
hung for good (one stop in ~100 in the test suite). `asyncio.timeout` keeps the cancellation;
ruff bans `asyncio.wait_for` in this project (pyproject.toml) so that it stays that way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True when `event` is set within `timeout` seconds, False when the time ran out."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def acquire(lock: asyncio.Lock | asyncio.Semaphore, timeout: float) -> bool:
    """True with `lock` held (a slot of a semaphore) when it was acquired within `timeout`
    seconds."""
    try:
        async with asyncio.timeout(timeout):
            await lock.acquire()
    except TimeoutError:
        return False
    return True


def on_thread(loop: asyncio.AbstractEventLoop, future: asyncio.Future[T],
              fn: Callable[..., T], *args: Any) -> None:
    """Called on a worker thread: `fn(*args)`, whose result or exception settles `future`
    (the loop's) through the loop. What `run_in_executor` does without chaining a
    concurrent Future to the loop's: ~25 Python calls less a hand-off, and a run makes a
    few (its start; its share of the store's commits). Given up before a thread took it
    (the caller cancelled), it does not run, as run_in_executor's would not."""
    if future.done():  # (cancelled: a read of its state, safe under the GIL)
        return
    try:
        result = fn(*args)
    except BaseException as exc:
        _post(loop, _fail, future, exc)
    else:
        _post(loop, _succeed, future, result)


def _post(loop: asyncio.AbstractEventLoop, settle: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: no one waits any more
        loop.call_soon_threadsafe(settle, *args)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # (cancelled meanwhile)
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
