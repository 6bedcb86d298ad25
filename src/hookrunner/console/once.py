"""A console Replay pressed twice (a double click, a browser's retry) replays once.

A replay of a delivery that a session asks for while its previous one is under way or within
WINDOW seconds of its end is taken for the same press: it waits for that one and is sent
where it was (its new runs), so an accidental double click on a deploy does not deploy
twice. (A one-time value in the form would not do: the second click of a double click can
land on the page the first one led to, with a fresh form.)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.responses import Response

WINDOW = 5.0  # seconds after a replay in which the same session's next one of it is a repeat
KEEP = 1000  # replays remembered, the oldest forgotten first

Key = tuple[str, ...]


@dataclass
class _Sent:
    # Where its answer sent the browser (None: it failed, and a repeat may try again).
    answer: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    ended: float = math.inf  # (under way: never too old)


class Once:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sent: OrderedDict[Key, _Sent] = OrderedDict()

    async def run(self, key: Key, work: Callable[[], Awaitable[Response]],
                  again: Callable[[str], Response]) -> Response:
        """`work`'s answer, or for a repeat of `key`, `again` of the location the first
        one's redirect (303) named."""
        while (first := self._sent.get(key)) is not None:
            if self._clock() - first.ended > WINDOW:
                del self._sent[key]
                break
            location = await asyncio.shield(first.answer)
            if location is not None:
                return again(location)
        mine = self._sent[key] = _Sent()
        while len(self._sent) > KEEP:
            self._sent.popitem(last=False)
        location = None
        try:
            answer = await work()
            if answer.status_code == 303:
                location = answer.headers["location"]
            return answer
        finally:
            mine.ended = self._clock()
            if location is None and self._sent.get(key) is mine:
                del self._sent[key]  # refused (no rules, queue full, store down): no replay
            mine.answer.set_result(location)
