"""Waits with a time limit that never lose a cancellation.

Python 3.11's `asyncio.wait_for` returns normally when what it awaits completes in the same
loop step as its task is cancelled: the cancellation is gone. A loop that only ends by being
cancelled (the dispatcher's store listener) then ran on, and the server's stop that awaited it
hung for good (one stop in ~100 in the test suite). `asyncio.timeout` keeps the cancellation;
ruff bans `asyncio.wait_for` in this project (pyproject.toml) so that it stays that way.
"""

from __future__ import annotations

import asyncio


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
