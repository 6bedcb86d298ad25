"""The stores' new-work signal: an event set by writes (and NOTIFY), awaited with a timeout."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True (and the event cleared) when set within `timeout`; False when the time ran out."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    event.clear()
    return True
