"""The stores' new-work signal: an event set by writes (and NOTIFY), awaited with a timeout."""

from __future__ import annotations

import asyncio

from hookrunner import aio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True (and the event cleared) when set within `timeout`; False when the time ran out."""
    if not await aio.wait_event(event, timeout):
        return False
    event.clear()
    return True
