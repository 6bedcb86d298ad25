"""hookrunner.aio: waits with a time limit that keep a cancellation.

The race is made exactly: the awaited thing completes and the task is cancelled before the
task runs again. Python 3.11's `asyncio.wait_for` returned normally there, so the dispatcher's
listener loop never ended and the server's stop hung."""

from __future__ import annotations

import asyncio

import pytest

from hookrunner import aio
from hookrunner.store._wake import wait_event as store_wait_event


async def test_wait_event_says_whether_the_event_was_set_in_time() -> None:
    event = asyncio.Event()
    assert await aio.wait_event(event, 0.01) is False
    event.set()
    assert await aio.wait_event(event, 0.01) is True
    assert event.is_set()  # left as it is: the caller decides


async def test_the_stores_wait_clears_the_event_it_was_woken_by() -> None:
    event = asyncio.Event()
    event.set()
    assert await store_wait_event(event, 0.01) is True
    assert not event.is_set()
    assert await store_wait_event(event, 0.01) is False


@pytest.mark.parametrize("wait", [aio.wait_event, store_wait_event])
async def test_a_cancel_in_the_step_the_event_is_set_is_kept(wait: object) -> None:
    event = asyncio.Event()
    task = asyncio.create_task(wait(event, 10))  # type: ignore[operator]
    await asyncio.sleep(0)  # the task now waits on the event
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_acquire_takes_the_lock_or_says_it_could_not() -> None:
    lock = asyncio.Lock()
    assert await aio.acquire(lock, 0.01) is True and lock.locked()
    assert await aio.acquire(lock, 0.01) is False and lock.locked()
    lock.release()
    assert not lock.locked()


async def test_a_cancel_in_the_step_the_lock_is_freed_is_kept_and_leaves_it_free() -> None:
    lock = asyncio.Lock()
    await lock.acquire()
    task = asyncio.create_task(aio.acquire(lock, 10))
    await asyncio.sleep(0)  # the task now waits for the lock
    lock.release()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not lock.locked()  # not taken for a task that is gone


async def test_work_on_a_thread_settles_the_loops_future_with_its_result_or_error() -> None:
    """aio.on_thread, as the store's commits and a run's start hand work to their threads:
    the result, the exception as raised, and a future given up meanwhile left as it is."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        ran_on: list[str] = []

        def work(x: int) -> int:
            ran_on.append(threading.current_thread().name)
            return x * 2

        done: asyncio.Future[int] = loop.create_future()
        pool.submit(aio.on_thread, loop, done, work, 21)
        assert await done == 42 and ran_on != [threading.current_thread().name]

        def boom() -> None:
            raise OSError(28, "No space left on device")

        failed: asyncio.Future[None] = loop.create_future()
        pool.submit(aio.on_thread, loop, failed, boom)
        with pytest.raises(OSError, match="No space"):
            await failed

        given_up: asyncio.Future[int] = loop.create_future()
        given_up.cancel()
        pool.submit(aio.on_thread, loop, given_up, work, 1).result()
        await asyncio.sleep(0.05)  # the settling call ran, and let the cancel stand
        assert given_up.cancelled()


def test_work_whose_loop_closed_meanwhile_ends_quietly() -> None:
    loop = asyncio.new_event_loop()
    future: asyncio.Future[int] = loop.create_future()
    loop.close()
    aio.on_thread(loop, future, lambda: 1)  # no RuntimeError from the closed loop
    assert not future.done()


async def test_work_given_up_before_a_thread_took_it_does_not_run() -> None:
    """As with run_in_executor: a BEGIN IMMEDIATE queued behind a long copy on the store's
    thread, whose caller was cancelled meanwhile (a shutdown), must not take the write lock
    with no one left to commit."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    ran: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        busy = threading.Event()
        pool.submit(busy.wait, 5)  # the thread is busy with earlier work
        queued: asyncio.Future[None] = loop.create_future()
        pool.submit(aio.on_thread, loop, queued, ran.append, 1)
        queued.cancel()
        busy.set()
    assert ran == []
