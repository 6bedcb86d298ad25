"""The SQLite writer: group commit of queued jobs over one write connection.

A job is a function of the connection. Jobs queue up on the event loop; one flusher takes
every job waiting (up to `max_batch`), runs them in one transaction, commits once, then
resolves every job's future. While one batch waits on fsync, the next requests pile up, so
the batch size follows the load without a timer: one request alone commits at once, 200 at
once share a handful of commits. A caller hears back only after the commit, so an answered
accept is durable.

Where each step runs, and why: the jobs' statements run on the event loop thread itself,
because a job is a few microseconds of SQLite work and handing each statement to a thread
made both threads wait for Python's GIL on every row (measured: batches of 5-8 under load
instead of dozens). Only the two steps that may block run on the I/O thread: `BEGIN
IMMEDIATE` (it may wait for another process's write lock, e.g. the CLI) and `COMMIT` (the
fsync). Two hand-offs per batch instead of one per statement.

Between the processes of one server (`--http-workers`), SQLite's own wait for the write
lock is a sleep-and-retry (1, 2, 5, 10... ms): two busy writers measured no faster than one.
So there each transaction first takes an exclusive `flock` on `lock_path`, which the kernel
hands over the moment the other side commits. It is taken only by those processes (a
stalled one is a stalled server either way); the CLI and a one-process server rely on
SQLite's wait and its `busy_timeout`, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from hookrunner import aio
from hookrunner.errors import StoreUnavailable
from hookrunner.logs import event, settle_throttled

T = TypeVar("T")

DEFAULT_MAX_BATCH = 256  # jobs per transaction; bounds one commit's latency
SAVE_AGAIN_AFTER = 60.0  # seconds between tries to save a lost database file


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    grows: bool = False  # it adds rows (a delivery): its commit shows there is room


class Writer:
    def __init__(
        self, connect: Callable[[], sqlite3.Connection], max_batch: int = DEFAULT_MAX_BATCH,
        lock_path: str | None = None, db_path: str | None = None, save_lost: bool = False,
    ) -> None:
        self._connect = connect
        self._max_batch = max_batch
        self._lock_path = lock_path
        self._db_path = db_path  # checked before each batch: see _same_file
        self._db_id: tuple[int, int] | None = None
        self._save_lost = save_lost  # save a lost database file (the server's main process)
        self._saved = False  # it was saved: see _save
        self._saving: asyncio.Task[None] | None = None
        self._save_again_at = 0.0  # monotonic: after a failed save
        self.failing = False  # the last batch failed (readiness reads it)
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._io: ThreadPoolExecutor | None = None
        self._pending: list[_Job] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0  # transactions committed (tests and metrics read it)
        self.jobs = 0  # jobs committed
        self.refusal = "the SQLite store is not open"  # what a write hears without a connection

    def start(self) -> None:
        self._io = ThreadPoolExecutor(1, thread_name_prefix="hookrunner-sqlite-io")
        try:
            self._conn = self._io.submit(self._connect).result()
            if self._db_path is not None:
                st = os.stat(self._db_path)
                self._db_id = (st.st_dev, st.st_ino)
            if self._lock_path is not None:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                        0o600)
        except BaseException:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._io.shutdown()
            self._io = None
            raise

    async def aclose(self) -> None:
        """Commit what is queued, then close the connection."""
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._flusher)
        if self._pending:  # left by a flusher that was cancelled between batches
            await self._flush()
        if self._saving is not None:  # the last copy of a lost database: let it finish
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._saving)
        await self._last_save()
        conn, io = self._conn, self._io
        self._conn = self._io = None
        if conn is not None and io is not None:
            await asyncio.get_running_loop().run_in_executor(io, conn.close)
        if io is not None:
            io.shutdown()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def run(self, fn: Callable[[sqlite3.Connection], T], grows: bool = False) -> T:
        """`fn` in the next batch's transaction. `grows`: it adds rows, so its commit shows
        the store takes writes again (an update in place goes through on a full disk)."""
        if self._conn is None:
            raise StoreUnavailable(self.refusal)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Job(fn, future, grows))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="hookrunner-sqlite-flush")
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            # Shielded: a batch, once begun, always ends in COMMIT or ROLLBACK and settles
            # its callers, even if this task is cancelled (loop shutdown, a cancelled close).
            await asyncio.shield(self._commit(batch))

    async def _blocking(self, sql: str) -> None:
        assert self._conn is not None and self._io is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._io.submit(aio.on_thread, loop, done, self._step, sql)  # (two a batch)
        await done

    def _step(self, sql: str) -> None:
        """BEGIN IMMEDIATE under the write lock; COMMIT (or ROLLBACK) releases it."""
        assert self._conn is not None
        begin = sql == "BEGIN IMMEDIATE"
        if begin and self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._conn.execute(sql)
        except BaseException:
            if begin:
                self._unlock()
            raise
        if not begin:
            self._unlock()

    def _same_file(self) -> None:
        """The database file is still the one opened: if its directory was deleted (or the
        file replaced), SQLite goes on writing to an unlinked inode that no restart will
        see, and a 202 would promise what is already lost. OSError: the caller's refusal.
        Checked under the write lock (after BEGIN IMMEDIATE): a process that checked before
        waiting for the lock committed into the lost file after it had been saved. What this
        connection still holds is then saved beside it, meanwhile (see _save)."""
        if self._db_id is not None:
            try:
                st = os.stat(self._db_path or "")
            except FileNotFoundError:
                raise _FileLost("removed", self._db_path) from None
            if (st.st_dev, st.st_ino) != self._db_id:
                raise _FileLost("replaced", self._db_path)

    async def _last_save(self) -> None:
        """At the stop, a lost database not saved yet (one failed save waits a minute for
        the next: space freed meanwhile, a stop then closed the only way to its data) is
        saved now, whatever the wait; failing that, said as what it is."""
        if not self._save_lost or self._saved or self._conn is None:
            return
        try:
            self._same_file()
        except _FileLost as exc:
            how = exc.how
        except OSError:
            return
        else:
            return
        await self._save(f"{how}, at the stop", last=True)
        if not self._saved:
            event("store.database_lost", logging.CRITICAL, path=self._db_path,
                  hint="the database file was removed or replaced, and its copy could not "
                       "be saved: its deliveries, queued runs and delivery ids are gone; "
                       "restore it from a backup (with no -wal or -shm file beside it)")

    def _start_save(self, how: str) -> None:
        """A save in the background (a large database takes seconds, and the batch waiting
        on this check must hear its 503 now): once it succeeds, not again; after a failure,
        tried again a minute later at the earliest (a disk full until space is freed)."""
        if not self._save_lost or self._saved or self._db_path is None:
            return
        if self._saving is not None and not self._saving.done():
            return
        if time.monotonic() < self._save_again_at:
            return
        self._saving = asyncio.get_running_loop().create_task(
            self._save(how), name="hookrunner-sqlite-save")

    async def _save(self, how: str, last: bool = False) -> None:
        """Copy the lost database, which only this open connection still reaches, to a new
        private file beside it: a restart would otherwise start on a new, empty store and
        forget every queued run and every delivery id that dedup holds. Written under a
        temporary name, made durable, then renamed: a `.saved-` file is always whole."""
        conn, io, db_path = self._conn, self._io, self._db_path
        if conn is None or io is None or db_path is None:
            return
        target = saved_path(db_path, time.time())
        partial = target.replace(".saved-", ".saving-")
        try:
            await asyncio.get_running_loop().run_in_executor(io, _copy_into, conn, partial,
                                                             target, self._lock_fd)
        except (OSError, sqlite3.Error) as exc:
            self._save_again_at = time.monotonic() + SAVE_AGAIN_AFTER
            event("store.database_not_saved", logging.ERROR, path=db_path, how=how,
                  error=str(exc), then=None if last else
                  f"tried again in {SAVE_AGAIN_AFTER:.0f} s at the earliest")
            return
        self._saved = True
        # The lost file's write-ahead log is still beside its path: a restart would apply it
        # to whatever file is there now (a replacement read as "malformed", yet answering
        # 202 at first). Moved aside, as a restore needs anyway.
        moved = await asyncio.get_running_loop().run_in_executor(io, _move_stale_sidecars,
                                                                 db_path, target)
        event("store.database_saved", logging.WARNING, path=db_path, how=how,
              saved=target, moved_aside=",".join(moved) or None,
              hint=f"stop the server, then move {target} to {db_path} "
                   "(with no -wal or -shm file beside it) and start it again")

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    async def _commit(self, batch: list[_Job]) -> None:
        conn = self._conn
        if conn is None:
            _settle(batch, [(False, StoreUnavailable("the SQLite store is closed"))] * len(batch))
            return
        try:
            await self._blocking("BEGIN IMMEDIATE")
            self._same_file()
            try:
                # Optimistic: no savepoints (they cost ~15% per job). If a job fails, the
                # batch is rolled back and replayed with one savepoint per job; jobs are
                # functions of the database state, so replaying them is safe.
                outcomes = _apply(conn, batch, isolate=False)
            except _JobFailed:
                await self._blocking("ROLLBACK")
                await self._blocking("BEGIN IMMEDIATE")
                outcomes = _apply(conn, batch, isolate=True)
            await self._blocking("COMMIT")
        except (sqlite3.Error, OSError) as exc:  # OSError: the lock file (e.g. ENOLCK)
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            if _disk_full(exc):
                # Rolled back before the write-ahead log reached its auto-checkpoint size
                # (1,000 pages), no checkpoint would ever run: the log's committed pages
                # kept the disk full though the database had free pages inside (a prune on
                # a nearly full disk left every hook a 503 until a restart). One now moves
                # them in, and the next write starts the log over in the room it has.
                # PASSIVE: it waits for no reader (this is the event loop's thread).
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            with contextlib.suppress(OSError):
                self._unlock()  # whichever step failed, the lock is not held past the batch
            if isinstance(exc, _FileLost):  # (once rolled back: VACUUM takes no transaction)
                self._start_save(exc.how)
            self.failing = True
            error = StoreUnavailable(f"SQLite write failed: {exc}")
            _settle(batch, [(False, error)] * len(batch))
            return
        if any(job.grows and ok for job, (ok, _) in zip(batch, outcomes, strict=True)):
            # Only a batch that added rows says writes go through: on a full disk a claim
            # that found nothing, or a lease renewed in place, commits all the same (and
            # /readyz said "ok" after each one).
            if self.failing:  # the outage ends here, whoever saw it (a hook, the dispatcher)
                settle_throttled()
                event("store.available", store="sqlite")
            self.failing = False
        self.commits += 1
        self.jobs += len(batch)
        _settle(batch, outcomes)


def _apply(conn: sqlite3.Connection, batch: list[_Job], isolate: bool) -> list[tuple[bool, Any]]:
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


def _copy_into(conn: sqlite3.Connection, partial: str, target: str, lock_fd: int | None) -> None:
    """VACUUM INTO an empty file made 0600 first (as the database is), fsync'd, renamed to
    `target` and its directory synced. O_EXCL: another copy is never written over. Under the
    processes' write lock (`--http-workers`), so no commit of theirs lands after the copy."""
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    if lock_fd is not None:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        conn.execute("VACUUM INTO ?", (partial,))  # (it does not sync what it writes)
        _fsync(partial)
        if os.path.exists(target):
            raise FileExistsError(f"{target} exists")
        os.rename(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)  # never a half copy left to be taken for a whole one
        raise
    finally:
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
    _fsync(os.path.dirname(target) or ".")


def _move_stale_sidecars(db_path: str, target: str) -> list[str]:
    """Rename `-wal` and `-shm` beside `db_path` to `.lost-<time>` where they are the very
    files this process has open (so they belong to the lost database, not to a pair copied
    in); what was moved. Linux's /proc/self/fd tells which files are open."""
    stamp = target.rsplit(".saved-", 1)[-1]
    open_ids: set[tuple[int, int]] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                if os.readlink(f"/proc/self/fd/{fd}").startswith(db_path + "-"):
                    st = os.fstat(int(fd))
                    open_ids.add((st.st_dev, st.st_ino))
    moved = []
    for suffix in ("-wal", "-shm"):
        path = db_path + suffix
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in open_ids:
                os.rename(path, f"{path}.lost-{stamp}")
                moved.append(os.path.basename(path))
    return moved


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def saved_path(db_path: str, now: float) -> str:
    """Where a lost database is saved: `hookrunner.db.saved-20261130T071500Z`."""
    return f"{db_path}.saved-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}"


def _disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL: "database or disk is full"."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class _FileLost(OSError):
    """The database file was removed or replaced under the open connection (see _same_file)."""

    def __init__(self, how: str, path: str | None) -> None:
        super().__init__(f"the database file {path} was {how}")
        self.how = how


class _JobFailed(Exception):
    """A job failed in a batch run without savepoints: replay the batch isolated."""


def _settle(batch: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
    for job, (ok, value) in zip(batch, outcomes, strict=True):
        # A caller cancelled meanwhile (client gone) still had its job committed.
        if job.future.done():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
