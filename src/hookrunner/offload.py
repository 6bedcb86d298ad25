"""Parsing and matching off the event loop, where they are slow.

A delivery's body is parsed and its hook's rules matched and rendered on the event loop:
~50-100 µs for ordinary rules and bodies, where a hand-off to a thread would cost as much
again. But a rule whose conditions sort or map a long list takes up to the delivery's
template budget (bounds.DELIVERY_SECONDS), and a body of megabytes takes a while to parse:
on the loop every other request waited behind that, probes included (an audit's burst of
such deliveries held /readyz for 6 s). That work goes to a thread of its own instead, where
the loop gets the GIL back every switch interval: for a body past BIG_BODY, and for every
delivery of a hook whose last STRIKES ones in a row took SLOW or more (or one VERY_SLOW), until SLOW_FOR after
the last slow one. In a row: one slow delivery is as often a garbage collection or the CPU
taken by another process (the benchmark's hook was sent to the thread that way, and each of
its deliveries then paid ~75 µs for the hand-off).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from hookrunner import bounds
from hookrunner.logs import event

T = TypeVar("T")

BIG_BODY = 256 * 1024  # bytes: json.loads of it takes ~2-5 ms here
SLOW = 0.01  # seconds one delivery's parse and match took
SLOW_FOR = 60.0  # seconds a hook stays slow after its last slow delivery
STRIKES = 2  # slow deliveries in a row that make a hook slow
# ... or one this slow: no garbage collection of a server's heap takes it, and a rule that
# is this slow for some payloads only (sorting a list sent) would never be slow twice in a
# row between fast ones.
VERY_SLOW = 0.1


def offloaded(body_size: int, slow_until: float, now: float) -> bool:
    """Whether a delivery is parsed and matched on the thread (see the module's doc)."""
    return body_size > BIG_BODY or now < slow_until


class Offload:
    """One process's record of its slow hooks, and the one thread their work runs on (one:
    the GIL lets no two run at once anyway, and a flood of them takes no more threads)."""

    def __init__(self) -> None:
        self._slow_until: dict[str, float] = {}  # hook ids are configured: bounded
        self._strikes: dict[str, int] = {}  # slow deliveries in a row, per hook
        # Hooks just found slow, not yet said (`hook.slow_match`, by the loop): once for each
        # time (deliveries matched together on the thread each saw it found slow: 9 lines).
        self._found_slow: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, hook_id: str, body_size: int, work: Callable[[], T]) -> T:
        """`work()`, on the loop or on the thread; its exceptions are raised here."""
        now = time.monotonic()
        slow_until = self._slow_until.get(hook_id, 0.0)
        pool = self._executor() if offloaded(body_size, slow_until, now) else None
        try:
            if pool is None:
                return self._timed(hook_id, work, time.monotonic)
            context = contextvars.copy_context()  # the render budget is in context variables
            return await asyncio.get_running_loop().run_in_executor(
                pool, context.run, self._on_thread, hook_id, work)
        finally:
            if self._found_slow and hook_id in self._found_slow:
                self._found_slow.discard(hook_id)
                event("hook.slow_match", logging.WARNING, hook=hook_id,
                      note=f"{STRIKES} deliveries in a row took {SLOW * 1000:.0f} ms or more to "
                           f"parse and match, or one {VERY_SLOW * 1000:.0f} ms: its deliveries "
                           f"are matched off the event loop for {SLOW_FOR:.0f} s")

    def _executor(self) -> ThreadPoolExecutor | None:
        if self._pool is None:
            pool = ThreadPoolExecutor(1, thread_name_prefix="hookrunner-match")
            try:
                pool.submit(int).result()  # its thread starts now, so a failure shows here
            except RuntimeError:  # no thread to be had (a memory limit): the loop does it
                return None
            self._pool = pool
        return self._pool

    def _on_thread(self, hook_id: str, work: Callable[[], T]) -> T:
        # Waiting for the GIL while the loop serves others is no work of the rule's: its
        # budgets count this thread's CPU time here (bounds), and so does its slowness.
        bounds.use_thread_clock()
        return self._timed(hook_id, work, time.thread_time)

    def _timed(self, hook_id: str, work: Callable[[], T], clock: Callable[[], float]) -> T:
        started = clock()
        try:
            return work()
        finally:
            took = clock() - started
            if took >= SLOW:
                strikes = self._strikes[hook_id] = self._strikes.get(hook_id, 0) + 1
                if strikes >= STRIKES or took >= VERY_SLOW:
                    now = time.monotonic()
                    if self._slow_until.get(hook_id, 0.0) <= now:
                        self._found_slow.add(hook_id)
                    self._slow_until[hook_id] = now + SLOW_FOR
            elif self._strikes:
                self._strikes.pop(hook_id, None)


OFFLOAD = Offload()  # one per process: each HTTP worker process has its own
