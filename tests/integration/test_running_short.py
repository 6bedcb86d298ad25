"""Running short of disk or file descriptors, with a real SQLite store (made full by
`max_page_count`), the dispatcher in this process and real processes. A result must not be
lost for want of room for a copy of its output (the next start would take the run for
interrupted, and a retry rule would run a succeeded action again); a full store is not
ready until a write goes through; a run that could not start is queued again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hookrunner import dispatch
from hookrunner.actions.logfile import FileLog
from hookrunner.dispatch import SHORT_LOG, Dispatcher
from hookrunner.errors import StoreUnavailable
from hookrunner.metrics import Metrics
from hookrunner.settings import Settings
from hookrunner.store.base import NewDelivery, NewRun
from hookrunner.store.sqlite import SQLiteStore


async def test_a_result_the_store_refuses_whole_is_written_with_a_shorter_log(
    tmp_path: Path,
) -> None:
    settings = Settings(data=tmp_path, root=tmp_path, workers=1, node="n1", grace=1.0)
    store = SQLiteStore(tmp_path / "hookrunner.db")
    await store.open()
    d = NewDelivery(id="d-1", hook="h", received_at=time.time(), headers=[], body=b"{}",
                    dedup_key=None, event=None, client_ip="", matches=[])
    run = NewRun(id="r-1", delivery_id=d.id, rule="r", action="shell",
                 spec={"argv": ["sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' x; echo; "
                                "echo done"]},
                 created_at=time.time())
    await store.accept(d, [run])
    conn = store._writer._conn  # the writer's own connection: the limit is per connection
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 600_000 // size}")  # room for ~600 KB
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    try:
        deadline = time.monotonic() + 30
        while (got := await store.get_run("r-1")) is None or got.status in ("queued", "running"):
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.05)
        assert (got.status, got.exit_code) == ("succeeded", 0), got
        log = await store.get_log("r-1", 1)
        assert log is not None and log.startswith("[hookrunner] the store refused the whole log")
        assert len(log) < SHORT_LOG + 200 and "done" in log
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()


async def test_a_full_store_is_not_ready_until_a_write_goes_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A claim that finds nothing commits on a full disk too: that said "ok" to /readyz. And
    an idle server must find out by itself when the disk has room again."""
    from hookrunner import logs
    from hookrunner.errors import StoreUnavailable

    monkeypatch.setattr(logs, "_direct", None)  # events through logging, where caplog sees them
    caplog.set_level(logging.INFO, logger="hookrunner")
    store = SQLiteStore(tmp_path / "hookrunner.db")
    await store.open()
    try:
        conn = store._writer._conn
        assert conn is not None
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        big = NewDelivery(id="d-big", hook="h", received_at=time.time(), headers=[],
                          body=b"x" * 100_000, dedup_key=None, event=None, client_ip="", matches=[])
        try:
            await store.accept(big, [])
        except StoreUnavailable as exc:
            assert "full" in str(exc), exc
        else:
            raise AssertionError("the full store took the delivery")
        assert not await store.ping()
        assert await store.claim("n1", 5, 15.0, time.time()) == []  # commits, writes nothing
        assert not await store.ping()  # still full: not ready
        assert "store.available" not in caplog.messages
        conn.execute("PRAGMA max_page_count = 1073741823")  # room again
        assert await store.ping()  # found by its own write, with no delivery to try it
        assert caplog.messages.count("store.available") == 1  # the end of the outage, told
        await store.accept(big, [])
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _dispatching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       store_class: type[SQLiteStore] = SQLiteStore, workers: int = 1,
                       ) -> AsyncIterator[tuple[SQLiteStore, Dispatcher]]:
    """A store and a dispatcher (of one worker); a run that did not start is tried again
    soon, and a result the store refused is written again soon."""
    monkeypatch.setattr(dispatch, "NOT_STARTED_DELAY", 0.3)
    monkeypatch.setattr(dispatch, "RECORD_RETRY_MAX", 0.2)
    settings = Settings(data=tmp_path, root=tmp_path, workers=workers, node="n1", grace=1.0)
    store = store_class(tmp_path / "hookrunner.db")
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    try:
        yield store, dispatcher
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()


async def _accept_one(store: SQLiteStore, argv: list[str], **kw: Any) -> None:
    """Run `r-1` (of delivery `d-1`), a shell action, queued."""
    d = NewDelivery(id="d-1", hook="h", received_at=time.time(), headers=[], body=b"{}",
                    dedup_key=None, event=None, client_ip="", matches=[])
    await store.accept(d, [NewRun(id="r-1", delivery_id=d.id, rule="r", action="shell",
                                  spec={"argv": argv}, created_at=time.time(), **kw)])


async def _first_attempt_ended(store: SQLiteStore, deadline: float) -> None:
    while not (attempts := await store.attempts("r-1")) or attempts[0].status == "running":
        assert time.monotonic() < deadline, attempts
        await asyncio.sleep(0.05)


async def _ended(store: SQLiteStore, deadline: float) -> Any:
    while (got := await store.get_run("r-1")) is None or got.status in ("queued", "running"):
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.05)
    return got


async def _settled(dispatcher: Dispatcher, deadline: float) -> None:
    """Until run r-1's task is over: a gapped log file is settled (removed, or given its end)
    just after the record is stored, so a reader of the store can see the end first."""
    while "r-1" in dispatcher._active:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_run_whose_process_cannot_start_for_want_of_descriptors_is_queued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMFILE under a flood: nothing of the action ran, so it is queued again, as a run whose
    claim a crash cut short, not failed for good."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    # The descriptors are taken behind the dispatcher's back: its room check (which keeps a
    # burst of its own runs from taking them) would hold the run; the start's EMFILE is tested.
    monkeypatch.setattr(dispatch, "fd_room", lambda limit, open_fds: 1000)
    async with _dispatching(tmp_path, monkeypatch) as (store, dispatcher):
        try:
            # Fails its first real attempt, then succeeds: with two attempts by its rule, the
            # one that never started must not count as one of them.
            marker = tmp_path / "ran-once"
            await _accept_one(store, ["sh", "-c", f"test -e {marker} || {{ touch {marker}; exit 1; }}"],
                              max_attempts=2, backoff=0.1, max_backoff=0.1, retry_on=("failed",))
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
            with contextlib.suppress(OSError):
                while True:  # every descriptor taken: the child's pipe cannot be made
                    held.append(os.open(os.devnull, os.O_RDONLY))
            dispatcher.accepted(1)
            deadline = time.monotonic() + 20
            await _first_attempt_ended(store, deadline)
            for fd in held:
                os.close(fd)
            held.clear()
            got = await _ended(store, deadline)
            assert got.status == "succeeded", got
            attempts = await store.attempts("r-1")
            assert [a.status for a in attempts] == ["failed", "failed", "succeeded"], attempts
            assert attempts[0].reason.endswith("; nothing ran: queued again")
            assert "Too many open files" in attempts[0].reason, attempts[0].reason
            assert attempts[1].reason == "exit 1"
        finally:
            for fd in held:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_runs_short_of_what_this_nodes_own_runs_hold_wait_for_them_not_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """audit: under a low descriptor limit, `--workers` runs held the descriptors and the
    runs after them used up their tries (5 s apart) and failed without running: half of a
    burst's accepted runs. A start that fails while this node's own runs are running waits
    for one of them to end, whatever the tries, and the node runs no more at once until runs
    start again."""
    from hookrunner import logs

    monkeypatch.setattr(logs, "_direct", None)  # events through logging, where caplog sees them
    caplog.set_level(logging.INFO, logger="hookrunner")
    monkeypatch.setattr(dispatch, "NOT_STARTED_TRIES", 0)  # an idle shortage: no try at all
    monkeypatch.setattr(dispatch, "fd_room", lambda limit, open_fds: 1000)  # (as above)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    settings = Settings(data=tmp_path, root=tmp_path, workers=4, node="n1", grace=1.0)
    store = SQLiteStore(tmp_path / "hookrunner.db")
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    held: list[int] = []
    d = NewDelivery(id="d-1", hook="h", received_at=time.time(), headers=[], body=b"{}",
                    dedup_key=None, event=None, client_ip="", matches=[])
    try:
        gate = tmp_path / "gate"
        long = [NewRun(id=f"long-{i}", delivery_id=d.id, rule="r", action="shell",
                       spec={"argv": ["sh", "-c", f"while ! test -e {gate}; do sleep 0.05; done"]},
                       created_at=time.time()) for i in range(2)]
        await store.accept(d, long)
        dispatcher.accepted(2)
        deadline = time.monotonic() + 30
        while len(dispatcher._active) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        with contextlib.suppress(OSError):
            while True:  # every descriptor taken, as by the node's own running runs
                held.append(os.open(os.devnull, os.O_RDONLY))
        later = [NewRun(id=f"later-{i}", delivery_id=d.id, rule="r", action="shell",
                        spec={"argv": ["true"]}, created_at=time.time()) for i in range(6)]
        await store.accept(NewDelivery(id="d-2", hook="h", received_at=time.time(), headers=[],
                                       body=b"{}", dedup_key=None, event=None, client_ip="",
                                       matches=[]), later)
        dispatcher.accepted(6)
        while dispatcher.short_cap is None:  # a later run failed to start: fewer at once
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert 1 <= dispatcher.short_cap <= 2, dispatcher.short_cap  # half of those running
        await asyncio.sleep(0.5)  # the later runs wait; none is failed for good meanwhile
        for fd in held:  # the long runs end, and what they held is free again
            os.close(fd)
        held.clear()
        gate.touch()
        for run in [*long, *later]:
            while (got := await store.get_run(run.id)) is None or got.status in ("queued",
                                                                                 "running"):
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.05)
            assert got.status == "succeeded", (got, await store.attempts(run.id))
        busy = [a for r in later for a in await store.attempts(r.id) if a.status == "failed"]
        assert busy and all(a.reason.endswith(dispatch.NOT_STARTED_BUSY) for a in busy), busy
        assert "Too many open files" in busy[0].reason, busy[0].reason
        assert dispatcher.short_cap is None  # runs started again: back to --workers
        assert caplog.messages.count("dispatcher.short_of_resources") == 1
        assert "dispatcher.resources_again" in caplog.messages
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        await dispatcher.stop(grace=1.0)
        await store.close()


class _Descriptors:
    """Descriptors taken behind the dispatcher's back, under a soft limit of 256."""

    def __init__(self) -> None:
        self.held: list[int] = []

    def take(self, until_open: int) -> None:
        while len(os.listdir("/proc/self/fd")) < until_open:
            self.held.append(os.open(os.devnull, os.O_RDONLY))

    def release(self) -> None:
        for fd in self.held:
            os.close(fd)
        self.held.clear()


@contextlib.contextmanager
def _soft_limit_256() -> Iterator[_Descriptors]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken = _Descriptors()
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        yield taken
    finally:
        taken.release()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_runs_wait_for_descriptors_rather_than_take_the_servers_last_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """audit: under a low descriptor limit a burst's runs took every descriptor, and the
    server accepted no connection (/healthz, deliveries) until one ended. A run starts only
    where the descriptors left keep the server an eighth of its limit: here, with one run
    going, no other starts, and none fails, until descriptors are freed. (With none going,
    one is tried: nothing else would free any.)"""
    from hookrunner import logs

    monkeypatch.setattr(logs, "_direct", None)
    caplog.set_level(logging.INFO, logger="hookrunner")
    async with _dispatching(tmp_path, monkeypatch, workers=4) as (store, dispatcher):
        with _soft_limit_256() as taken:
            gate = tmp_path / "gate"
            await _accept_one(store, ["sh", "-c", f"while ! test -e {gate}; do sleep 0.05; done"])
            dispatcher.accepted(1)  # one run going: it will free what it holds
            while await store.attempts("r-1") == []:
                await asyncio.sleep(0.02)
            taken.take(256 - 33)  # a run would eat the reserve
            later = NewRun(id="r-2", delivery_id="d-2", rule="r", action="shell",
                           spec={"argv": ["sh", "-c", "echo ran"]}, created_at=time.time())
            await store.accept(NewDelivery(id="d-2", hook="h", received_at=time.time(),
                                           headers=[], body=b"{}", dedup_key=None, event=None,
                                           client_ip="", matches=[]), [later])
            dispatcher.accepted(1)
            await asyncio.sleep(1.0)
            got = await store.get_run("r-2")
            assert got is not None and got.status == "queued", got
            assert await store.attempts("r-2") == []  # not tried, so no try used up
            assert "dispatcher.few_descriptors" in caplog.messages
            taken.release()
            gate.touch()
            for run_id in ("r-1", "r-2"):
                while (got := await store.get_run(run_id)) is None or got.status in (
                        "queued", "running"):
                    await asyncio.sleep(0.05)
                assert got.status == "succeeded" and len(await store.attempts(run_id)) == 1, got


async def test_with_none_of_its_runs_going_a_node_short_of_room_still_tries_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """audit: what a server holds at rest (with --http-workers, pipes and metrics files)
    left no room under a limit of 64, and with no run going none would ever free any: 437
    accepted runs stayed queued on an idle node."""
    async with _dispatching(tmp_path, monkeypatch, workers=4) as (store, dispatcher):
        with _soft_limit_256() as taken:
            taken.take(256 - 20)  # inside the reserve: no room
            assert dispatcher._fd_room() == 1  # none of its own runs going: one is tried
            await _accept_one(store, ["sh", "-c", "echo ran"])
            dispatcher.accepted(1)
            got = await _ended(store, time.monotonic() + 20)
            assert got.status == "succeeded", (got, await store.attempts("r-1"))


async def test_a_run_that_cannot_get_a_thread_to_spawn_from_is_queued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under systemd's TasksMax (or without memory for a thread's stack) the spawner thread
    could not start: the run failed for good with "can't start new thread", where nothing
    ran and a fork's EAGAIN queues it again."""
    from concurrent.futures import ThreadPoolExecutor

    from hookrunner.actions import process

    monkeypatch.setattr(process, "_SPAWNER", ThreadPoolExecutor(max_workers=4))  # no thread yet
    async with _dispatching(tmp_path, monkeypatch) as (store, dispatcher):
        ran = tmp_path / "ran"
        await _accept_one(store, ["sh", "-c", f"echo ran >> {ran}"])
        threading.stack_size(2**46)  # no thread can map such a stack: pthread_create fails
        try:
            dispatcher.accepted(1)
            deadline = time.monotonic() + 20
            await _first_attempt_ended(store, deadline)
        finally:
            threading.stack_size(0)
        got = await _ended(store, deadline)
        assert got.status == "succeeded", got
        attempts = await store.attempts("r-1")
        assert [a.status for a in attempts] == ["failed", "succeeded"], attempts
        assert "can't start new thread to spawn it" in attempts[0].reason, attempts[0].reason
        assert attempts[0].reason.endswith("; nothing ran: queued again"), attempts[0].reason
        # The refused spawn stayed queued in the pool, and ran at the next one's thread:
        # twice, the first time unwatched.
        await asyncio.sleep(0.3)
        assert ran.read_text() == "ran\n"


async def test_a_run_whose_start_cannot_be_recorded_is_queued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start mark (what tells a crash that the action had started) could not be written,
    on a full disk: the action is not started then, so nothing ran; it was failed for good."""
    import errno

    async with _dispatching(tmp_path, monkeypatch) as (store, dispatcher):
        marks = dispatcher._marks
        real_mark, failures = marks.mark, [1]

        def mark(run_id: str, attempt: int) -> None:  # the disk is full once
            if failures:
                failures.pop()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_mark(run_id, attempt)

        monkeypatch.setattr(marks, "mark", mark)
        await _accept_one(store, ["sh", "-c", "echo ran"])
        dispatcher.accepted(1)
        got = await _ended(store, time.monotonic() + 20)
        attempts = await store.attempts("r-1")
        assert got.status == "succeeded" and [a.status for a in attempts] == ["failed", "succeeded"]
        assert attempts[0].reason.startswith("cannot record the start: [Errno 28]"), attempts[0].reason
        assert attempts[0].reason.endswith("; nothing ran: queued again"), attempts[0].reason


async def test_runs_wait_while_the_disk_is_full_however_long_not_failed_after_five_tries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full disk where the database still had free pages (left by pruning): deliveries were
    stored and answered 202, and every run failed for good after 5 tries without running.
    The marks file's descriptor is /dev/full here: every write is a real ENOSPC."""
    async with _dispatching(tmp_path, monkeypatch) as (store, dispatcher):
        marks = dispatcher._marks
        saved = os.dup(marks._fd)
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            os.dup2(full, marks._fd)
            await _accept_one(store, ["sh", "-c", "echo ran"], max_attempts=1)
            dispatcher.accepted(1)
            deadline = time.monotonic() + 20
            while dispatcher.no_room is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert "No space left on device" in dispatcher.no_room
            await asyncio.sleep(3.0)  # ten times NOT_STARTED_DELAY: past 5 tries by far
            got = await store.get_run("r-1")
            assert got is not None and got.status == "queued", got
            # Claims wait for room: one try, not one per 0.3 s.
            assert len(await store.attempts("r-1")) <= 2
        finally:
            os.dup2(saved, marks._fd)
            os.close(saved)
            os.close(full)
        got = await _ended(store, time.monotonic() + 20)
        assert got.status == "succeeded", got
        assert dispatcher.no_room is None


async def test_a_log_that_fills_the_disk_for_good_says_so_in_the_runs_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Output lost to a full disk was told only by the run's reason: the log (file and
    record) ended mid-line, without a note and without its end. The record now has what the
    file got, a note of what it did not with that output's end (as much as a capped log
    keeps), and the end; the file, lacking them, goes."""
    async with _dispatching(tmp_path, monkeypatch) as (store, dispatcher):
        await _accept_one(store, ["sh", "-c", "echo start; sleep 1.5; head -c 200000 /dev/zero"
                                              " | tr '\\0' y; echo; echo end"])
        dispatcher.accepted(1)
        deadline = time.monotonic() + 20
        log = await _disk_full_for_its_log(dispatcher, deadline)
        got = await _ended(store, deadline)
        assert got.status == "succeeded" and got.reason.startswith("log incomplete: No space"), got
        kept = await store.get_log("r-1", 1)
        assert kept is not None and "start\n" in kept, kept
        assert "[hookrunner] 200005 bytes of output could not be written to the log file here" \
               " (No space left on device); the last 200005 follow\nyyy" in kept, kept[:300]
        assert kept.endswith("yyy\nend\n[hookrunner] succeeded\n"), kept[-300:]  # the end too
        await _settled(dispatcher, deadline)
        assert not log.path.exists()  # the API serves the record, with the note


async def test_a_log_file_that_cannot_be_opened_loses_nothing_and_says_so_as_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A log file that could not be opened (EMFILE under `ulimit -n 128`; here a directory in
    its place) was an `error` event while memory kept the whole output: an operator looking
    for lost output found none. It is a warning now, saying the output was kept."""
    from hookrunner import logs

    monkeypatch.setattr(logs, "_direct", None)  # events through logging, where caplog sees them
    caplog.set_level(logging.INFO, logger="hookrunner")
    (tmp_path / "logs" / "r-1" / "1.log").mkdir(parents=True)  # no file can be opened there
    async with _dispatching(tmp_path, monkeypatch) as (store, dispatcher):
        await _accept_one(store, ["sh", "-c", "echo start; sleep 1.5; echo end"])
        dispatcher.accepted(1)
        got = await _ended(store, time.monotonic() + 20)
        assert got.status == "succeeded" and "log incomplete" not in (got.reason or ""), got
        kept = await store.get_log("r-1", 1)
        assert kept is not None and "\nstart\nend\n[hookrunner] succeeded" in kept, kept
    failed = [r for r in caplog.records if r.getMessage() == "run.log_failed"]
    assert [r.levelno for r in failed] == [logging.WARNING], caplog.text
    assert failed[0].fields["output"] == "kept whole in the run's record", failed[0].fields


async def test_a_log_file_refused_once_then_taking_everything_lost_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """review: its first open refused (EMFILE), the file opened once the output passed what
    memory keeps and took all of it; the run's reason still said `log incomplete`, and the
    event `partly lost`, at error."""
    import errno

    from hookrunner import logs

    monkeypatch.setattr(logs, "_direct", None)  # events through logging, where caplog sees them
    caplog.set_level(logging.INFO, logger="hookrunner")
    opened = FileLog._open
    refused: list[bool] = []

    def first_refused(self: FileLog) -> Any:
        if not refused:
            refused.append(True)
            raise OSError(errno.EMFILE, "Too many open files")
        return opened(self)

    monkeypatch.setattr(FileLog, "_open", first_refused)
    async with _dispatching(tmp_path, monkeypatch) as (store, dispatcher):
        await _accept_one(store, ["sh", "-c", "echo start; sleep 1.5; head -c 100000 /dev/zero"
                                              " | tr '\\0' x; echo; echo end"])
        dispatcher.accepted(1)
        got = await _ended(store, time.monotonic() + 20)
        assert refused and got.status == "succeeded", got
        assert "log incomplete" not in (got.reason or ""), got
        kept = await store.get_log("r-1", 1)
        assert kept is not None and "x" * 100000 + "\nend\n[hookrunner] succeeded" in kept
    failed = [r for r in caplog.records if r.getMessage() == "run.log_failed"]
    assert [r.levelno for r in failed] == [logging.WARNING], caplog.text
    assert failed[0].fields["output"] == "kept whole in the run's record", failed[0].fields


async def test_output_the_memory_missed_before_the_file_opened_is_said_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """review 3: the file refused (EMFILE) until the output passed what memory keeps, so the
    memory missed some; then a follower's open went through. The record was the memory
    alone, without what it missed and without a word, and the event said `kept whole`."""
    import errno

    from hookrunner import logs

    monkeypatch.setattr(logs, "_direct", None)  # events through logging, where caplog sees them
    caplog.set_level(logging.INFO, logger="hookrunner")
    opened = FileLog._open
    refusing = [True]

    def maybe(self: FileLog) -> Any:
        if refusing[0]:
            raise OSError(errno.EMFILE, "Too many open files")
        return opened(self)

    monkeypatch.setattr(FileLog, "_open", maybe)
    async with _dispatching(tmp_path, monkeypatch) as (store, dispatcher):
        await _accept_one(store, ["sh", "-c", "sleep 1.3; head -c 65000 /dev/zero | tr '\\0' a;"
                                              " echo; sleep 0.5; head -c 2000 /dev/zero | tr '\\0'"
                                              " B; echo; sleep 1.5; echo c"])
        dispatcher.accepted(1)
        deadline = time.monotonic() + 20
        while not any(r.getMessage() == "run.started" for r in caplog.records):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.6)  # the a's in memory, the B's past it missed
        refusing[0] = False
        assert dispatcher.live_log("r-1", 1) is not None  # a follower: the file opens now
        got = await _ended(store, deadline)
        kept = await store.get_log("r-1", 1) or ""
    assert "B" * 2000 in kept, kept[-500:]  # from the file, after its note of what it missed
    assert "could not be written to the log file here" in kept, kept[-500:]
    assert got.status == "succeeded" and "log incomplete" in (got.reason or ""), got
    failed = [r for r in caplog.records if r.getMessage() == "run.log_failed"]
    assert [r.levelno for r in failed] == [logging.ERROR], caplog.text


async def _disk_full_for_its_log(dispatcher: Dispatcher, deadline: float) -> FileLog:
    """Once run r-1's log is in its file: every write to it is refused from now on, as by a
    full disk (its descriptor is /dev/full's: a real ENOSPC)."""
    while (log := dispatcher._logs.get("r-1")) is None or not log.on_disk:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    real = log._file
    assert real is not None
    log._file = open("/dev/full", "ab", buffering=0)  # noqa: SIM115 (the log closes it)
    real.close()
    return log


class _FinishRefused(SQLiteStore):
    """A store on the same full disk: it refuses the first two finishes (a real SQLite
    store otherwise), and notes whether the run's log file was still there each time."""

    seen: list[bool] = []  # (set afresh by each test)

    async def finish(self, finish: Any) -> None:
        self.seen.append((self.path.parent / "logs" / finish.run_id / "1.log").exists())
        if len(self.seen) <= 2:
            raise StoreUnavailable("database or disk is full")
        await super().finish(finish)


async def test_a_gapped_log_file_stays_until_the_record_that_replaces_it_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file was removed before the record was stored: with the store on the same full
    disk, the record was cut to its last 64 KiB ("the log file holds more") and the file was
    gone; a follower's open failed meanwhile."""
    _FinishRefused.seen = []
    async with _dispatching(tmp_path, monkeypatch, _FinishRefused) as (store, dispatcher):
        await _accept_one(store, ["sh", "-c", "echo start; sleep 1.5; echo more; echo end"])
        dispatcher.accepted(1)
        deadline = time.monotonic() + 20
        await _disk_full_for_its_log(dispatcher, deadline)
        got = await _ended(store, deadline)
        assert got.status == "succeeded", got
        assert store.seen == [True, True, True]  # there while the record was refused
        kept = await store.get_log("r-1", 1)
        assert kept is not None and "start\nmore\nend\n[hookrunner] succeeded" in kept, kept
        await _settled(dispatcher, deadline)
        assert not (tmp_path / "logs" / "r-1" / "1.log").exists()  # gone once stored


async def test_a_gapped_log_file_whose_record_is_cut_short_gets_its_note_and_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store took only the last 64 KiB of the log (its first try refused): the gapped
    file stayed, and readers were served it, without the note of its gap, its end or the
    result. Once the record is stored, the file gets those."""
    _FinishRefused.seen = []
    async with _dispatching(tmp_path, monkeypatch, _FinishRefused) as (store, dispatcher):
        await _accept_one(store, ["sh", "-c", "echo start; sleep 1.5; head -c 100000 /dev/zero"
                                              " | tr '\\0' y; echo; echo end"])
        dispatcher.accepted(1)
        deadline = time.monotonic() + 20
        await _disk_full_for_its_log(dispatcher, deadline)
        got = await _ended(store, deadline)
        assert got.status == "succeeded", got
        kept = await store.get_log("r-1", 1)
        assert kept is not None and kept.startswith("[hookrunner] the store refused the whole")
        await _settled(dispatcher, deadline)
        text = (tmp_path / "logs" / "r-1" / "1.log").read_text()
        assert text.startswith("[hookrunner] run r-1 rule r attempt 1/1 on node n1\nstart\n")
        assert "[hookrunner] 100005 bytes of output could not be written to the log file here" \
               " (No space left on device); the last 100005 follow\nyyy" in text, text[:300]
        assert text.endswith("yyy\nend\n[hookrunner] succeeded\n"), text[-200:]


class _LongHistory(SQLiteStore):
    """A store whose prune takes as long as a first one of a long history does (97 s for
    1.2M deliveries, measured): the prune itself is the real one, after the wait."""

    pruning = asyncio.Event()

    async def prune(self, before: float, progress: Any = None) -> int:
        self.pruning.set()
        await asyncio.sleep(30)
        return await super().prune(before, progress)


async def test_a_long_prune_holds_up_neither_a_cancel_from_the_shell_nor_the_leases(
    tmp_path: Path,
) -> None:
    """The prune ran inside housekeeping: a cancel from the CLI waited for its end, and on
    PostgreSQL the lease renewals did too, until the fence stopped the node's own runs."""
    settings = Settings(data=tmp_path, root=tmp_path, workers=1, node="n1", grace=1.0,
                        keep=3600.0, lease=3.0)
    store = _LongHistory(tmp_path / "hookrunner.db")
    await store.open()
    d = NewDelivery(id="d-1", hook="h", received_at=time.time(), headers=[], body=b"{}",
                    dedup_key=None, event=None, client_ip="", matches=[])
    await store.accept(d, [NewRun(id="r-1", delivery_id=d.id, rule="r", action="shell",
                                  spec={"argv": ["sleep", "30"]}, created_at=time.time())])
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    try:
        await asyncio.wait_for(store.pruning.wait(), 10)
        deadline = time.monotonic() + 10
        while (got := await store.get_run("r-1")) is None or got.status != "running":
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.05)
        await asyncio.sleep(3.0)  # past the lease: renewed meanwhile, so still its own
        assert (await store.get_run("r-1")).lease_expires > time.time()  # type: ignore[union-attr]
        await store.request_cancel("r-1", time.time())  # as `hookrunner cancel` does
        asked = time.monotonic()
        while (got := await store.get_run("r-1")) is None or got.status == "running":
            assert time.monotonic() - asked < 3, "the cancel waited for the prune"
            await asyncio.sleep(0.05)
        assert got.status == "canceled", got
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()


async def _until_logged(caplog: pytest.LogCaptureFixture, name: str) -> None:
    deadline = time.monotonic() + 10
    while name not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        await asyncio.sleep(0.05)


class _PruneFails(SQLiteStore):
    async def prune(self, before: float, progress: Any = None) -> int:
        raise RuntimeError("no such column: x")  # as a bug, or a database it cannot read


class _PruneFindsTheDiskFull(SQLiteStore):
    async def prune(self, before: float, progress: Any = None) -> int:
        raise StoreUnavailable("SQLite write failed: database or disk is full")


async def _prune_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                         store: SQLiteStore) -> tuple[Dispatcher, dict[str, Any]]:
    """The dispatcher run on `store` until its prune fails, then stopped: the
    `store.prune_failed` line's fields."""
    settings = Settings(data=tmp_path, root=tmp_path, workers=1, node="n1", grace=1.0,
                        keep=3600.0)
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    with caplog.at_level(logging.ERROR, logger="hookrunner"):
        await dispatcher.start()
        await _until_logged(caplog, "store.prune_failed")
        await dispatcher.stop(grace=1.0)  # raised the task's error before
    await store.close()
    failed = next(r for r in caplog.records if r.getMessage() == "store.prune_failed")
    return dispatcher, failed.fields  # type: ignore[attr-defined]


async def test_a_prune_that_fails_is_logged_and_the_stop_still_ends_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The prune task ended silently on such an error, and the stop then raised it, leaving
    the other tasks running and the store open."""
    dispatcher, fields = await _prune_failure(tmp_path, caplog,
                                              _PruneFails(tmp_path / "hookrunner.db"))
    assert all(t.done() for t in dispatcher._tasks)
    assert fields == {"error": "RuntimeError: no such column: x"}


async def test_a_prune_the_full_disk_stops_says_to_free_space(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """probe: a disk the database's growth filled wedged: no prune could write, each round
    said only that it failed, and hooks answered 503 until someone freed space by hand."""
    _, fields = await _prune_failure(tmp_path, caplog,
                                     _PruneFindsTheDiskFull(tmp_path / "hookrunner.db"))
    assert "free some space on the data dir's file system" in fields["then"]


async def test_a_long_prune_of_run_dirs_says_how_far_it_has_got(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run dirs' part of a first prune (a directory walk per run: minutes for a long
    history) said nothing until it ended."""
    monkeypatch.setattr(dispatch, "PRUNE_PROGRESS", 0.0)  # a line after every one
    settings = Settings(data=tmp_path, root=tmp_path, workers=1, node="n1", grace=1.0,
                        keep=3600.0)
    old = time.time() - 7200
    for i in range(5):
        d = settings.logs_dir / f"run_{i}"
        d.mkdir(parents=True)
        os.utime(d, (old, old))
    store = SQLiteStore(tmp_path / "hookrunner.db")
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    with caplog.at_level(logging.INFO, logger="hookrunner"):
        await dispatcher.start()
        await _until_logged(caplog, "store.pruned")
        await dispatcher.stop(grace=1.0)
    await store.close()
    said = [r.fields["run_dirs_so_far"] for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage() == "store.pruning" and "run_dirs_so_far" in r.fields]  # type: ignore[attr-defined]
    assert said == [1, 2, 3, 4, 5]
    pruned = next(r for r in caplog.records if r.getMessage() == "store.pruned")
    assert pruned.fields["run_dirs"] == 5  # type: ignore[attr-defined]
    assert not any(settings.logs_dir.iterdir())


class _SwallowsACancel(SQLiteStore):
    """A store whose wait swallows one cancellation, as psycopg_pool's connection wait does
    when a connection is handed over in the step the task is cancelled (its own wait_for)."""

    swallowed = False

    async def wait_for_work(self, timeout: float) -> bool:
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed = True
            return True
        return False


async def test_a_loop_whose_cancellation_a_library_swallowed_still_ends_at_the_stop(
    tmp_path: Path,
) -> None:
    """stop() cancelled each loop once and awaited it without a bound: the listener ran on
    after losing its cancellation, and the stop never ended."""
    settings = Settings(data=tmp_path, root=tmp_path, workers=1, node="n1", grace=1.0)
    store = _SwallowsACancel(tmp_path / "hookrunner.db")
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    await asyncio.sleep(0.1)  # the listener now waits in the store
    try:
        async with asyncio.timeout(20):  # a hang fails here instead of hanging the suite
            await dispatcher.stop(grace=1.0)
    finally:
        await store.close()
    assert store.swallowed
    assert all(t.done() for t in dispatcher._tasks)


class _Gated:
    """An action whose start waits on a gate (as a terraform run waits for its directory's
    lock, or any run for its delivery's body), then records its start as the real ones do."""

    kind = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.marks_seen: set[tuple[str, int]] | None = None

    def needs_delivery(self, rendered: Any) -> bool:
        return False

    async def run(self, rendered: Any, ctx: Any) -> Any:
        from hookrunner.actions.base import RunResult
        from hookrunner.startmarks import marks_path, read_marks

        await self.gate.wait()
        ctx.starting()
        ctx.starting()  # again: harmless
        self.marks_seen = read_marks(marks_path(ctx.work_dir.parents[2], ctx.node))
        return RunResult("succeeded", exit_code=0)


async def test_a_runs_start_is_recorded_when_its_action_starts_not_when_it_is_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash between the claim and the action's start (under load: a wait for a lock, the
    delivery's body) found a start mark and ended the run `failed (interrupted)`: an
    accepted delivery's action never ran. The mark is written by `ctx.starting()` now."""
    from hookrunner.actions import RUNNERS
    from hookrunner.startmarks import marks_path, read_marks

    gated = _Gated()
    monkeypatch.setitem(RUNNERS, "gated", gated)
    async with _dispatching(tmp_path, monkeypatch) as (store, _):
        d = NewDelivery(id="d-1", hook="h", received_at=time.time(), headers=[], body=b"{}",
                        dedup_key=None, event=None, client_ip="", matches=[])
        await store.accept(d, [NewRun(id="r-1", delivery_id=d.id, rule="r", action="gated",
                                      spec={}, created_at=time.time())])
        deadline = time.monotonic() + 10
        while (got := await store.get_run("r-1")) is None or got.status != "running":
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert read_marks(marks_path(tmp_path, "n1")) == set()  # claimed, running: not started
        gated.gate.set()
        assert (await _ended(store, deadline)).status == "succeeded"
        assert gated.marks_seen == {("r-1", 1)}


class _ClaimFailsTwice(SQLiteStore):
    """A store whose first claims fail with an error that is no outage it knows (as
    PostgreSQL's for a read-only transaction was, before it was taken for one)."""

    failures = 2

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        if _ClaimFailsTwice.failures:
            _ClaimFailsTwice.failures -= 1
            raise RuntimeError("cannot execute UPDATE in a read-only transaction")
        return await super().claim(*args, **kwargs)


async def test_the_claim_loop_outlives_an_error_of_the_store_and_claims_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It ended on the first such error: every later run stayed queued until a restart,
    while the node answered 202 and /readyz 200."""
    monkeypatch.setattr(dispatch, "POLL", 0.2)
    _ClaimFailsTwice.failures = 2
    async with _dispatching(tmp_path, monkeypatch, store_class=_ClaimFailsTwice) as (store, d):
        await _accept_one(store, ["true"])
        got = await _ended(store, time.monotonic() + 20)
        assert got.status == "succeeded" and _ClaimFailsTwice.failures == 0
        assert d.failed_task is None


async def test_a_claim_that_fails_round_after_round_makes_the_node_not_ready_until_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row the claim cannot read (a bug) failed every round in silence but for a log
    line, with /readyz 200: it is a failure /readyz reports once it lasts, until it ends."""
    monkeypatch.setattr(dispatch, "POLL", 0.05)
    _ClaimFailsTwice.failures = 40
    async with _dispatching(tmp_path, monkeypatch, store_class=_ClaimFailsTwice) as (store, d):
        deadline = time.monotonic() + 10
        while d.failed_task is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert d.failed_task.startswith("hookrunner-claim failing (")
        assert "RuntimeError: cannot execute UPDATE in a read-only transaction" in d.failed_task
        await _accept_one(store, ["true"])
        assert (await _ended(store, time.monotonic() + 20)).status == "succeeded"
        assert d.failed_task is None
