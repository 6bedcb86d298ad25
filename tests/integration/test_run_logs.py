"""Run logs: kept in memory while a run is young, on disk once it runs longer or is followed,
saved with the run's record either way. Real SQLite store and real processes; the dispatcher
in this process where the test needs to know when the file appears, a real server otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hookrunner import dispatch, startmarks
from hookrunner.api import MAX_LOG_STREAMS
from hookrunner.dispatch import Dispatcher
from hookrunner.metrics import Metrics
from hookrunner.runlog import chunks, ended_log, opened
from hookrunner.settings import Settings
from hookrunner.startmarks import marks_path, read_marks
from hookrunner.store.base import TERMINAL, Finish, NewDelivery, NewRun
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.serverproc import ADMIN_TOKEN, Server, post_github

ids = itertools.count()


def _script_rule(name: str) -> str:
    """Rules with one github hook whose one rule, `name`, runs scripts/<name>.sh."""
    return f"""
hooks:
  github:
    verify: {{github: {{secret: {{env: GITHUB_WEBHOOK_SECRET}}}}}}
rules:
  - {{name: {name}, hook: github, run: {{shell: {{argv: [scripts/{name}.sh]}}}}}}
"""


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Settings, SQLiteStore, Dispatcher]]:
    settings = Settings(data=tmp_path / "data", root=tmp_path, workers=2, node="n1", grace=1.0)
    store = SQLiteStore(settings.store_url)
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    try:
        yield settings, store, dispatcher
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()


async def arrive(store: SQLiteStore, dispatcher: Dispatcher, script: str) -> str:
    n = next(ids)
    d = NewDelivery(id=f"d-{n}", hook="h", received_at=time.time(), headers=[], body=b"{}",
                    dedup_key=None, event=None, client_ip="", matches=[])
    run = NewRun(id=f"r-{n}", delivery_id=d.id, rule="r", action="shell",
                 spec={"argv": ["/bin/sh", "-c", script]}, created_at=time.time())
    await store.accept(d, [run])
    dispatcher.accepted(1)
    return run.id


async def until(check: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def dispatching(settings: Settings, store: SQLiteStore) -> AsyncIterator[Dispatcher]:
    """`store` opened and a dispatcher started on it; both closed after."""
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()


async def until_running(store: SQLiteStore, run_id: str) -> None:
    deadline = time.monotonic() + 10
    while (run := await store.get_run(run_id)) is None or run.status != "running":
        assert time.monotonic() < deadline, "the run never started"
        await asyncio.sleep(0.02)


async def ended(store: SQLiteStore, run_id: str) -> str:
    async def status() -> str:
        run = await store.get_run(run_id)
        assert run is not None
        return run.status

    deadline = time.monotonic() + 20
    while (s := await status()) not in TERMINAL:
        assert time.monotonic() < deadline, s
        await asyncio.sleep(0.01)
    return s


async def test_a_short_runs_log_goes_only_into_the_store(
    running: tuple[Settings, SQLiteStore, Dispatcher],
) -> None:
    settings, store, dispatcher = running
    run_id = await arrive(store, dispatcher, "echo out; echo err >&2")
    assert await ended(store, run_id) == "succeeded"
    log = await store.get_log(run_id, 1)
    assert log is not None
    assert log.startswith(f"[hookrunner] run {run_id} rule r attempt 1/1 on node n1\n")
    assert "out\n" in log and "err\n" in log and log.endswith("[hookrunner] succeeded\n")
    assert not settings.log_path(run_id, 1).exists()
    assert not settings.logs_dir.exists()
    (summary,) = await dispatcher.wait_for([run_id], 1.0) or []
    assert summary["output"] == log


async def test_the_api_serves_the_records_log_where_the_file_holds_less(
    running: tuple[Settings, SQLiteStore, Dispatcher],
) -> None:
    """A disk that filled up while the run wrote its file: the file stops, the record has
    the whole (small) log, and the API (and `hookrunner log`) must not serve the stump; nor
    fail where the file cannot be read."""
    settings, store, dispatcher = running
    run_id = await arrive(store, dispatcher, "echo one; echo two")
    assert await ended(store, run_id) == "succeeded"
    stored = await store.get_log(run_id, 1)
    assert stored is not None and "two" in stored
    path = settings.log_path(run_id, 1)

    async def served(run: str = run_id) -> str:
        """What `hookrunner log` prints; the API's pieces (read as sent) add up to the same."""
        at = settings.log_path(run, 1)
        whole = await ended_log(store, at, run, 1)
        assert b"".join([c async for c in chunks(*await opened(store, at, run, 1))]) == \
            whole.encode()
        return whole

    assert await served() == stored
    path.parent.mkdir(parents=True)
    path.write_text(stored[:10])  # the file as the full disk left it
    assert await served() == stored
    path.write_text(stored + "more than the record kept\n")  # a large log: the file has all
    assert (await served()).endswith("more than the record kept\n")
    # Its bytes as they came (a progress bar's \r too), invalid UTF-8 as U+FFFD, and a
    # character cut by a piece's end whole.
    path.write_bytes(stored.encode() + b"50%\r100%\r\n\xff\n" + "é".encode() * 70_000)
    assert await served() == stored + "50%\r100%\r\n\ufffd\n" + "é" * 70_000

    # Binary output: the file (as the run wrote it) has its NULs; the record's copy has
    # none, and a `�` (3 bytes) for each invalid byte, so it can be the larger in bytes.
    binary = await arrive(store, dispatcher, r"printf 'a\0b\377\376c\n'")
    assert await ended(store, binary) == "succeeded"
    record = await store.get_log(binary, 1)
    assert record is not None and "ab\ufffd\ufffdc\n" in record
    written = settings.log_path(binary, 1)
    written.parent.mkdir(parents=True)
    written.write_bytes(record.replace("ab\ufffd\ufffdc", "a\0b\udcff\udcfec").encode(
        errors="surrogateescape"))
    assert await served(binary) == record.replace("ab\ufffd\ufffdc", "a\0b\ufffd\ufffdc")
    path.unlink()
    path.mkdir()  # unreadable as a file (EISDIR): was a 500
    assert await served() == stored


async def test_a_followed_run_goes_to_disk_at_once_and_stays_there(
    running: tuple[Settings, SQLiteStore, Dispatcher], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "LOG_TO_DISK_AFTER", 60.0)  # only the reader moves it
    settings, store, dispatcher = running
    mark = tmp_path / "printed"
    run_id = await arrive(store, dispatcher, f"echo first; touch {mark}; sleep 30")
    await until(mark.exists)
    path = settings.log_path(run_id, 1)
    await asyncio.sleep(0.2)  # its output is read into the log
    assert not path.exists()
    assert dispatcher.live_log(run_id, 2) is None  # not the attempt under way
    assert dispatcher.live_log(run_id, 1) == path
    assert path.read_text().endswith("first\n")  # what it held so far, at once
    await dispatcher.request_cancel(run_id)
    assert await ended(store, run_id) == "canceled"
    text = path.read_text()
    assert text.endswith("first\n[hookrunner] canceled by request\n")  # one line, saying why
    assert await store.get_log(run_id, 1) == text
    assert dispatcher.live_log(run_id, 1) is None  # over


async def test_a_run_still_going_after_a_while_is_written_to_disk(
    running: tuple[Settings, SQLiteStore, Dispatcher], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "LOG_TO_DISK_AFTER", 0.3)
    settings, store, dispatcher = running
    go = tmp_path / "go"
    run_id = await arrive(store, dispatcher,
                          f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second")
    path = settings.log_path(run_id, 1)
    await until(path.exists)
    await until(lambda: path.read_text().endswith("first\n"))
    go.touch()
    assert await ended(store, run_id) == "succeeded"
    text = path.read_text()
    assert text.endswith("first\nsecond\n[hookrunner] succeeded\n")
    assert await store.get_log(run_id, 1) == text


def test_a_running_run_is_followed_live_over_the_api(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`GET /api/runs/{id}/log` streams a running run's output as it comes, then all of it.
    (Whether the follower or the timer put it on disk is up to this machine's speed; the
    in-process test above pins the follower's part.)"""
    go = project / "go"
    write_script(project, "slow.sh",
                 f"echo first\nwhile [ ! -e {go} ]; do sleep 0.05; done\necho second\n")
    server = make_server(_script_rule("slow"))
    run_id = post_github(server.url, GITHUB_SECRET, {"a": 1}).json()["runs"][0]
    with server.admin() as c:
        deadline = time.monotonic() + 20
        while c.get(f"/api/runs/{run_id}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with c.stream("GET", f"/api/runs/{run_id}/log") as answer:
            assert answer.status_code == 200
            # nginx would otherwise buffer it to the end (its proxy_buffering default).
            assert answer.headers["x-accel-buffering"] == "no"
            got = ""
            chunks = answer.iter_text()
            while "first\n" not in got:
                got += next(chunks)
            assert c.get(f"/api/runs/{run_id}").json()["status"] == "running"
            go.touch()
            got += "".join(chunks)
        assert got.endswith("first\nsecond\n[hookrunner] succeeded\n")
        assert c.get(f"/api/runs/{run_id}/log").text == got
    short = post_github(server.url, GITHUB_SECRET, {"a": 2}, params={"wait": "10s"})
    assert short.status_code == 200
    (summary,) = short.json()["runs"]
    assert summary["output"].endswith("first\nsecond\n[hookrunner] succeeded\n")


class HeldFinishStore(SQLiteStore):
    """Holds each finish until `release` is set: the moment between an action's end and its
    record, stretched."""

    release: asyncio.Event
    held: set[str]

    async def finish(self, result: Finish) -> None:
        self.held.add(result.run_id)
        await self.release.wait()
        await super().finish(result)


async def test_until_its_end_is_recorded_a_run_stays_started_and_followable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An action that ended but whose finish is not committed yet: a crash now must still find
    it started (even after the marks were compacted), and a follower must still get its log."""
    monkeypatch.setattr(startmarks, "COMPACT_AT", 0)  # every mark rewrites the file
    settings = Settings(data=tmp_path / "data", root=tmp_path, workers=2, node="n1", grace=1.0)
    store = HeldFinishStore(settings.store_url)
    store.release, store.held = asyncio.Event(), set()
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    try:
        done = await arrive(store, dispatcher, "echo done")
        await until(lambda: done in store.held)
        later = await arrive(store, dispatcher, "sleep 30")  # its mark compacts the file
        marks = marks_path(settings.data, "n1")
        await until(lambda: (later, 1) in read_marks(marks))
        assert (done, 1) in read_marks(marks)
        path = dispatcher.live_log(done, 1)
        assert path is not None
        assert path.read_text().endswith("done\n[hookrunner] succeeded\n")
        store.release.set()
        assert await ended(store, done) == "succeeded"
        assert dispatcher.live_log(done, 1) is None
    finally:
        store.release.set()
        await dispatcher.stop(grace=1.0)
        await store.close()


def test_a_queued_runs_log_waits_for_it_to_start_then_streams(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Following the run id of a 202 works even while the run waits its turn: the answer
    waits, then streams the run's output to its end. A run canceled before it started ends
    the wait with what is stored (nothing); an attempt that does not exist is a 404."""
    go = project / "go"
    write_script(project, "hold.sh", f"while [ ! -e {go} ]; do sleep 0.05; done\necho held\n")
    server = make_server("""
hooks:
  github:
    verify: {github: {secret: {env: GITHUB_WEBHOOK_SECRET}}}
rules:
  - {name: hold, hook: github, when: payload.hold, run: {shell: {argv: [scripts/hold.sh]}}}
  - {name: next, hook: github, when: not payload.hold, run: {shell: {argv: [echo, next-out]}}}
""", args=["--workers", "1"])
    holder = post_github(server.url, GITHUB_SECRET, {"hold": True}).json()["runs"][0]
    queued = post_github(server.url, GITHUB_SECRET, {"hold": False}).json()["runs"][0]
    doomed = post_github(server.url, GITHUB_SECRET, {"hold": False}).json()["runs"][0]
    with server.admin() as c:
        deadline = time.monotonic() + 20
        while c.get(f"/api/runs/{holder}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert c.get(f"/api/runs/{queued}").json()["status"] == "queued"
        for bad in ("0", "1", "2"):
            missing = c.get(f"/api/runs/{queued}/log", params={"attempt": bad})
            assert missing.status_code == 404 and "error" in missing.json()
        with c.stream("GET", f"/api/runs/{doomed}/log") as answer:
            assert answer.status_code == 200
            assert c.post(f"/api/runs/{doomed}/cancel").status_code == 202
            assert answer.read() == b""
        with c.stream("GET", f"/api/runs/{queued}/log") as answer:
            assert answer.status_code == 200
            assert c.get(f"/api/runs/{queued}").json()["status"] == "queued"
            go.touch()
            got = answer.read().decode()
        assert got.startswith("[hookrunner] run ") and got.endswith("next-out\n[hookrunner] succeeded\n")
        assert c.get(f"/api/runs/{queued}/log?attempt=1").text == got
        assert c.get(f"/api/runs/{queued}/log?attempt=2").status_code == 404


def test_a_client_waiting_for_a_queued_runs_log_does_not_hold_up_a_shutdown(
    make_server: Callable[..., Server], project: Path
) -> None:
    """SIGTERM: the server starts nothing more, so a follower of a queued run is answered
    (with nothing) at once rather than kept until uvicorn gives up on it; the exit is clean."""
    write_script(project, "hold.sh", "sleep 30\n")
    server = make_server(_script_rule("hold"), args=["--workers", "1"], env={"HOOKRUNNER_GRACE": "1s"})
    holder = post_github(server.url, GITHUB_SECRET, {}).json()["runs"][0]
    queued = post_github(server.url, GITHUB_SECRET, {}).json()["runs"][0]
    with server.admin() as c:
        deadline = time.monotonic() + 20
        while c.get(f"/api/runs/{holder}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for bad in ("²", "1" * 5000, "-1", "1.0"):
            assert c.get(f"/api/runs/{queued}/log", params={"attempt": bad}).status_code == 400
        with c.stream("GET", f"/api/runs/{queued}/log") as answer:
            assert answer.status_code == 200
            assert server.proc is not None
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert answer.read() == b""
            assert server.proc.wait(timeout=20) in (143, -signal.SIGTERM)  # re-raised
    assert time.monotonic() - t0 < 6  # the 1 s grace, the record of the canceled run
    out = server.output()
    assert "Traceback" not in out and "CancelledError" not in out, out[-2000:]


def test_a_large_log_is_sent_in_pieces_and_a_page_cuts_the_records_copy_too(
    make_server: Callable[..., Server], project: Path
) -> None:
    """An ended run's log is sent as it is read (not held whole per client), and the run's
    page holds at most its first 2 MiB where it comes from the record (another node's run:
    here the file is gone), as where it comes from the file."""
    write_script(project, "big.sh", "yes 0123456789abcdefghi | head -c 3000000\n")
    server = make_server(_script_rule("big"))
    run_id = post_github(server.url, GITHUB_SECRET, {"a": 1}).json()["runs"][0]
    assert server.wait_run(run_id)["status"] == "succeeded"
    with server.admin() as c:
        answer = c.get(f"/api/runs/{run_id}/log")
        assert answer.headers.get("transfer-encoding") == "chunked", answer.headers
        whole = answer.text
        assert whole.count("0123456789abcdefghi\n") == 3000000 // 20
        for log in (server.data / "logs" / run_id).rglob("*"):
            if log.is_file():
                log.unlink()
        assert c.get(f"/api/runs/{run_id}/log").text == whole  # the record's copy, whole
        page = c.get(f"/runs/{run_id}", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert len(page.content) < 2_300_000, len(page.content)
        assert "cut at 2097152 characters: the full log is at" in page.text



def _reading(server: Server, run_id: str) -> socket.socket:
    """A client following the run's log, its answer's head read; the rest left unread."""
    s, head = server.ask_for_log(run_id)
    assert head.startswith(b"HTTP/1.1 200 "), head
    return s


def _gated_run(server: Server, go: Path) -> str:
    """A delivery's run, once it is running (it runs until `go` exists)."""
    go.unlink(missing_ok=True)
    run_id: str = post_github(server.url, GITHUB_SECRET, {"a": next(ids)}).json()["runs"][0]
    with server.admin() as c:
        deadline = time.monotonic() + 20
        while c.get(f"/api/runs/{run_id}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
    return run_id


def test_a_process_sends_so_many_logs_at_once_and_the_next_reader_hears_503(
    make_server: Callable[..., Server], project: Path
) -> None:
    """1,000 readers of one 10 MiB log at once slowed hook answers to 4-7 s and grew the
    server by ~300 MB: past MAX_LOG_STREAMS answers under way, a reader is answered 503 with
    Retry-After, and one that leaves (or whose answer ends) frees its place."""
    go = project / "go"
    write_script(project, "slow.sh", f"echo first\nwhile [ ! -e {go} ]; do sleep 0.05; done\n")
    server = make_server(_script_rule("slow"))
    for _ in range(2):  # the second time: every place the first one took is free again
        run_id = _gated_run(server, go)
        readers: list[socket.socket] = []
        try:
            readers += [_reading(server, run_id) for _ in range(MAX_LOG_STREAMS)]
            with server.admin() as c:
                refused = c.get(f"/api/runs/{run_id}/log", timeout=10)  # (else: streams)
                assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
                assert refused.json() == {"error": f"{MAX_LOG_STREAMS} run logs are being sent "
                                          "by this server process already, the most at once: "
                                          "retry in 5 s"}
                t0 = time.monotonic()  # hooks are answered meanwhile
                assert post_github(server.url, GITHUB_SECRET, {"a": 0}).status_code == 202
                assert time.monotonic() - t0 < 2
                readers.pop().close()
                deadline = time.monotonic() + 10
                while True:  # its place is free once the server sees it gone
                    with c.stream("GET", f"/api/runs/{run_id}/log") as answer:
                        if answer.status_code == 200:
                            break
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
        finally:
            go.touch()
            for s in readers:
                s.close()
        assert server.wait_run(run_id)["status"] == "succeeded"


def test_a_head_of_a_followed_log_answers_at_once_and_holds_no_place(
    make_server: Callable[..., Server], project: Path
) -> None:
    """probe: HEAD ran the follow to the run's end, sending nothing: the next request on
    its connection waited for the run, and 64 of them held every place."""
    go = project / "go"
    write_script(project, "slow.sh", f"echo first\nwhile [ ! -e {go} ]; do sleep 0.05; done\n")
    server = make_server(_script_rule("slow"))
    run_id = _gated_run(server, go)
    try:
        with server.admin() as c:
            for _ in range(MAX_LOG_STREAMS + 1):  # one connection: each answered at once
                head = c.head(f"/api/runs/{run_id}/log", timeout=5)
                assert head.status_code == 200 and head.content == b""
                assert head.headers["content-type"] == "text/plain; charset=utf-8"
                assert "content-length" not in head.headers
            assert c.get("/healthz", timeout=5).status_code == 200
            assert c.head("/api/runs/run_nope/log", timeout=5).status_code == 404
            with c.stream("GET", f"/api/runs/{run_id}/log") as answer:  # no place taken
                assert answer.status_code == 200
    finally:
        go.touch()
    assert server.wait_run(run_id)["status"] == "succeeded"


def _rest(s: socket.socket, head: bytes) -> bytes:
    """The rest of a chunked answer whose head `head` (and maybe more) was read."""
    got = head
    while not got.endswith(b"\r\n0\r\n\r\n"):
        more = s.recv(65536)
        assert more, got[-200:]
        got += more
    return got


def test_followers_waiting_for_a_queued_run_hold_no_log_slot(
    make_server: Callable[..., Server], project: Path
) -> None:
    """The run ids of a `202` are followed at once (the README says so): 64 CI jobs doing it
    took every slot while their runs waited in the queue, and every other reader, the
    console too, heard 503. A follower takes its slot when its run starts; past the cap it
    waits for one then, and every follower gets the whole log."""
    go = project / "go"
    write_script(project, "slow.sh", f"echo first\nwhile [ ! -e {go} ]; do sleep 0.05; done\n")
    server = make_server(_script_rule("slow"), args=["--workers", "1"])
    running = _gated_run(server, go)
    queued = post_github(server.url, GITHUB_SECRET, {"a": next(ids)}).json()["runs"][0]
    followers: list[tuple[socket.socket, bytes]] = []
    readers: list[socket.socket] = []
    try:
        followers += [server.ask_for_log(queued) for _ in range(MAX_LOG_STREAMS + 36)]
        assert all(head.startswith(b"HTTP/1.1 200 ") for _, head in followers)
        readers += [_reading(server, running) for _ in range(MAX_LOG_STREAMS)]  # every slot
        with server.admin() as c:
            assert c.get(f"/api/runs/{running}/log", timeout=10).status_code == 503
        for s in readers:
            s.close()
        go.touch()  # the queued run starts, and ends: 64 followers send, 36 wait for a slot
        for s, head in followers:
            body = _rest(s, head)
            assert f"run {queued} rule slow attempt 1/1".encode() in body, body[-300:]
            assert b"first\n" in body, body[-300:]
    finally:
        go.touch()
        for s in readers + [s for s, _ in followers]:
            s.close()
    assert server.wait_run(queued)["status"] == "succeeded"


def _abruptly_closed(server: Server, run_id: str, how: int) -> None:
    """A request for the run's log whose client leaves: before the head, after it, or
    mid-body; by a FIN or a reset."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    if how % 2:  # a reset, not a FIN
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.sendall(f"GET /api/runs/{run_id}/log HTTP/1.1\r\nHost: t\r\n"
              f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode())
    if how % 3:
        s.recv(4096 * (how % 3))
    s.close()


def test_log_slots_are_given_back_however_their_clients_leave(
    make_server: Callable[..., Server], project: Path
) -> None:
    """300 requests for the logs of a queued, a running and an ended (3 MB) run, and of none
    (404), whose clients leave at once, after the head or mid-body, by FIN or reset: exactly
    MAX_LOG_STREAMS readers are served afterwards, and the next one hears 503 (no slot
    leaked, none given back twice)."""
    go, big = project / "go", project / "big"
    write_script(project, "slow.sh", f"[ -e {big} ] && yes 0123456789 | head -c 3000000\n"
                 f"echo first\nwhile [ ! -e {go} ]; do sleep 0.05; done\n")
    server = make_server(_script_rule("slow"), args=["--workers", "1"])
    big.touch()
    go.touch()
    ended = post_github(server.url, GITHUB_SECRET, {"a": next(ids)}).json()["runs"][0]
    assert server.wait_run(ended)["status"] == "succeeded"
    big.unlink()
    running = _gated_run(server, go)
    queued = post_github(server.url, GITHUB_SECRET, {"a": next(ids)}).json()["runs"][0]
    try:
        for n in range(300):
            _abruptly_closed(server, (queued, running, ended, "run_gone")[n % 4], n)
        deadline = time.monotonic() + 15
        while True:  # once the server has seen every client gone
            taken = [server.ask_for_log(running) for _ in range(MAX_LOG_STREAMS + 1)]
            statuses = [head.split(b" ")[1] for _, head in taken]
            for s, _ in taken:
                s.close()
            if statuses == [b"200"] * MAX_LOG_STREAMS + [b"503"]:
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(0.2)
    finally:
        go.touch()
    assert server.wait_run(queued)["status"] == "succeeded"
