"""Parsing and matching off the event loop where slow (offload)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from hookrunner.offload import BIG_BODY, SLOW, Offload, offloaded

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("offload_test")


def test_only_big_bodies_and_recently_slow_hooks_leave_the_loop() -> None:
    assert not offloaded(BIG_BODY, 0.0, 100.0)
    assert offloaded(BIG_BODY + 1, 0.0, 100.0)
    assert offloaded(10, 160.0, 100.0)
    assert not offloaded(10, 100.0, 100.0)


def _where() -> str:
    return threading.current_thread().name


async def test_a_slow_hook_is_matched_on_the_thread_until_it_is_fast_for_a_while() -> None:
    offload = Offload()
    assert await offload.run("h", 10, _where) == threading.current_thread().name  # the loop's

    def slow() -> str:
        time.sleep(SLOW * 2)
        return _where()

    assert await offload.run("h", 10, slow) == threading.current_thread().name
    # One slow delivery is as often a garbage collection: a fast one after it clears it.
    assert await offload.run("h", 10, _where) == threading.current_thread().name
    assert await offload.run("h", 10, slow) == threading.current_thread().name
    assert await offload.run("h", 10, slow) == threading.current_thread().name  # 2 in a row
    assert (await offload.run("h", 10, _where)).startswith("hookrunner-match")
    assert await offload.run("other", 10, _where) == threading.current_thread().name
    assert (await offload.run("other", BIG_BODY + 1, _where)).startswith("hookrunner-match")


async def test_the_thread_sees_the_context_and_raises_what_the_work_raises() -> None:
    offload = Offload()
    VAR.set("budget")
    assert await offload.run("h", BIG_BODY + 1, VAR.get) == "budget"

    def fails() -> None:
        raise MemoryError

    with pytest.raises(MemoryError):
        await offload.run("h", BIG_BODY + 1, fails)


async def test_the_loop_answers_while_the_thread_works() -> None:
    offload = Offload()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def busy() -> int:
        end = time.monotonic() + 0.3
        n = 0
        while time.monotonic() < end:  # Python work holding the GIL, as a rule's render does
            n += 1
        return n

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0)
    before = ticks
    await offload.run("h", BIG_BODY + 1, busy)
    ticker.cancel()
    assert ticks - before > 10  # the loop went on meanwhile (on the loop itself: ~0)


async def test_on_the_thread_the_budgets_count_its_cpu_time_not_its_waits() -> None:
    """review: on the wall clock, a slow rule's 1 s budget ran out while its thread waited
    for the GIL behind a busy loop, and rules that matched on an idle server failed."""
    from hookrunner import bounds

    def busy_then_waiting() -> tuple[float, float]:
        clock = bounds.clock()
        start = clock()
        end = time.thread_time() + 0.05
        while time.thread_time() < end:  # 50 ms of CPU
            pass
        worked = clock() - start
        time.sleep(0.1)  # waiting (for the GIL, say): a fifth of it counts
        return worked, clock() - start

    offload = Offload()
    worked, waited = await offload.run("h", BIG_BODY + 1, busy_then_waiting)
    assert 0.05 <= worked < 0.1 and 0.1 / bounds.WAIT_FACTOR <= waited < 0.1, (worked, waited)
    assert await offload.run("other", 10, bounds.clock) is time.monotonic
    assert bounds.clock() is time.monotonic  # the loop's context is left as it was


async def test_one_very_slow_delivery_is_enough() -> None:
    """review: a rule slow for some payloads only (sorting a list sent), between fast
    deliveries, was never slow twice in a row, and each slow one held the loop."""
    from hookrunner.offload import VERY_SLOW

    offload = Offload()

    def very_slow() -> None:
        time.sleep(VERY_SLOW * 1.2)

    await offload.run("h", 10, very_slow)
    assert (await offload.run("h", 10, _where)).startswith("hookrunner-match")


async def test_a_hook_found_slow_is_said_once_however_many_deliveries_see_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """audit: deliveries of big bodies matched together on the thread each saw the hook
    found slow, and each logged `hook.slow_match` (9 lines in a second)."""
    from hookrunner import offload as module

    said: list[str] = []
    monkeypatch.setattr(module, "event", lambda name, *a, **kw: said.append(name))
    offload = Offload()

    def very_slow() -> None:  # CPU time: what the thread's clock counts
        end = time.thread_time() + module.VERY_SLOW * 1.2
        while time.thread_time() < end:
            pass

    await asyncio.gather(*(offload.run("h", BIG_BODY + 1, very_slow) for _ in range(4)))
    assert said == ["hook.slow_match"]
    await offload.run("h", 10, very_slow)  # slow still, within its 60 s: nothing new to say
    assert said == ["hook.slow_match"]
