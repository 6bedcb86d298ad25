"""The SQLite writer: one thread owns the write connection and group-commits queued jobs.

A job is a function of the connection. The thread takes every job waiting in the queue (up
to `max_batch`), runs them in one `BEGIN IMMEDIATE` transaction (a failing job rolls back
alone), commits once, then resolves every job's future. While one batch waits on fsync,
the next requests pile up in the queue, so the batch size follows the load without a
timer: one request alone commits at once, 200 at once share a handful of commits. A job's
caller hears back only after the commit, so an answered accept is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from hookrunner.errors import StoreUnavailable

T = TypeVar("T")

DEFAULT_MAX_BATCH = 256  # jobs per transaction; bounds one commit's latency


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class Writer:
    def __init__(
        self, connect: Callable[[], sqlite3.Connection], max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        self._connect = connect
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.commits = 0  # transactions committed (tests and metrics read it)
        self.jobs = 0  # jobs committed

    def start(self) -> None:
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="hookrunner-sqlite-writer", daemon=True
        )
        self._thread.start()
        ready.result()  # re-raises a failed connect

    def stop(self) -> None:
        """Finish the queued jobs, then close the connection."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            raise StoreUnavailable("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
        return await future

    def _main(self, ready: Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # handed to the opener
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            stopping = False
            while not stopping:
                item = self._queue.get()
                if item is _STOP:
                    break
                batch: list[_Job] = [item]
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)
                self._commit(conn, batch)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        try:
            try:
                # Optimistic: no savepoints (they cost ~15% per job). If a job fails, the
                # batch is rolled back and replayed with one savepoint per job; jobs are
                # functions of the database state, so replaying them is safe.
                outcomes = self._apply(conn, batch, isolate=False)
            except _JobFailed:
                conn.execute("ROLLBACK")
                outcomes = self._apply(conn, batch, isolate=True)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            error = StoreUnavailable(f"SQLite write failed: {exc}")
            _settle(batch, [(False, error)] * len(batch))
            return
        self.commits += 1
        self.jobs += len(batch)
        _settle(batch, outcomes)

    @staticmethod
    def _apply(
        conn: sqlite3.Connection, batch: list[_Job], isolate: bool
    ) -> list[tuple[bool, Any]]:
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[tuple[bool, Any]] = []
        for job in batch:
            if isolate:
                conn.execute("SAVEPOINT job")
            try:
                outcomes.append((True, job.fn(conn)))
            except sqlite3.OperationalError:
                raise  # disk full, I/O error, locked: the whole batch fails
            except Exception as exc:  # handed to the job's caller
                if not isolate:
                    raise _JobFailed from exc
                conn.execute("ROLLBACK TO job")
                outcomes.append((False, exc))
            if isolate:
                conn.execute("RELEASE job")
        return outcomes


class _JobFailed(Exception):
    """A job failed in a batch run without savepoints: replay the batch isolated."""


def _settle(batch: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand the results to their event loops: one cross-thread wake-up per loop and batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for job, (ok, value) in zip(batch, outcomes, strict=True):
        by_loop.setdefault(job.loop, []).append((job.future, ok, value))
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, results)


def _resolve(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        # A caller cancelled meanwhile (client gone) still had its job committed.
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
