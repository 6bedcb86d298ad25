"""Replay pressed twice replays once (console.once)."""

from __future__ import annotations

import asyncio

from starlette.responses import RedirectResponse, Response

from hookrunner.console.once import WINDOW, Once

KEY = ("session", "dlv_1")


def again(location: str) -> Response:
    return RedirectResponse(location + "&again=1", status_code=303)


async def test_a_press_during_or_just_after_the_first_is_sent_where_the_first_went() -> None:
    now = [100.0]
    replays, done = Once(clock=lambda: now[0]), []

    async def work() -> Response:
        await asyncio.sleep(0.05)  # the repeats arrive meanwhile
        done.append(1)
        return RedirectResponse(f"/d?replayed=run_{len(done)}", status_code=303)

    answers = await asyncio.gather(*(replays.run(KEY, work, again) for _ in range(3)))
    assert done == [1]
    assert sorted(a.headers["location"] for a in answers) == [
        "/d?replayed=run_1", "/d?replayed=run_1&again=1", "/d?replayed=run_1&again=1"]
    now[0] += WINDOW - 0.5
    assert (await replays.run(KEY, work, again)).headers["location"] == "/d?replayed=run_1&again=1"
    assert (await replays.run(("other", "dlv_1"), work, again)).headers["location"] == "/d?replayed=run_2"
    now[0] += 1.0  # past the window: a press of its own
    assert (await replays.run(KEY, work, again)).headers["location"] == "/d?replayed=run_3"


async def test_a_press_whose_first_failed_is_tried_again() -> None:
    replays, tries = Once(), []

    async def work() -> Response:
        tries.append(1)
        await asyncio.sleep(0.02)
        if len(tries) == 1:
            return Response("no rules are loaded", status_code=503)
        return RedirectResponse("/d?replayed=run_2", status_code=303)

    first, repeat = await asyncio.gather(*(replays.run(KEY, work, again) for _ in range(2)))
    assert first.status_code == 503 and repeat.headers["location"] == "/d?replayed=run_2"
    assert len(tries) == 2
