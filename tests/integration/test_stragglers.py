"""A canceled or timed-out run leaves no process behind, not even one that left its process
group for a session of its own: real processes, found afterwards by pid."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hookrunner import orphans
from hookrunner.actions.process import is_alive
from hookrunner.dispatch import Dispatcher
from hookrunner.settings import Settings
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.test_run_logs import arrive, dispatching, ended


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, Dispatcher]]:
    settings = Settings(data=tmp_path / "data", root=tmp_path, workers=2, node="n1", grace=1.0,
                        environ={"PATH": "/usr/bin:/bin"})
    store = SQLiteStore(settings.store_url)
    async with dispatching(settings, store) as dispatcher:
        yield store, dispatcher


async def _pid(path: Path) -> int:
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, "the detached process never started"
        await asyncio.sleep(0.02)
    return int(path.read_text())


async def test_a_canceled_run_stops_a_process_that_started_its_own_session(
    running: tuple[SQLiteStore, Dispatcher], tmp_path: Path,
) -> None:
    store, dispatcher = running
    pidfile = tmp_path / "detached.pid"
    run_id = await arrive(store, dispatcher,
                          f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' & sleep 300")
    detached = await _pid(pidfile)
    assert await dispatcher.request_cancel(run_id) is not None
    assert await ended(store, run_id) == "canceled"
    deadline = time.monotonic() + 5
    while is_alive(detached):
        assert time.monotonic() < deadline, "the detached process outlived its canceled run"
        await asyncio.sleep(0.05)
    log = await store.get_log(run_id, 1) or ""
    assert "outside its process group" in log


async def test_a_run_that_ends_by_itself_leaves_a_deliberately_detached_process_alone(
    running: tuple[SQLiteStore, Dispatcher], tmp_path: Path,
) -> None:
    """`setsid cmd &` is how a script starts something meant to outlive it (a service): only
    a cancel or a timeout stops everything carrying the run's id."""
    store, dispatcher = running
    pidfile = tmp_path / "service.pid"
    run_id = await arrive(store, dispatcher, f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' &")
    service = await _pid(pidfile)
    try:
        assert await ended(store, run_id) == "succeeded"
        await asyncio.sleep(0.3)
        assert is_alive(service)
    finally:
        os.kill(service, signal.SIGKILL)


async def test_what_a_straggler_starts_while_it_is_being_stopped_is_stopped_too(
    running: tuple[SQLiteStore, Dispatcher], tmp_path: Path,
) -> None:
    """A detached loop that answers SIGTERM by starting another process, and ignores it:
    the process it starts during the stop's grace carries the run's id too, and must not
    outlive the run (it did: only the pids of one look were killed)."""
    store, dispatcher = running
    pidfile, spawned = tmp_path / "loop.pid", tmp_path / "spawned.pid"
    script = tmp_path / "loop.sh"
    script.write_text(f"trap 'sleep 300 & echo $! >> {spawned}' TERM\necho $$ > {pidfile}\n"
                      "while true; do sleep 0.1; done\n")
    # Detached from the run's output too (which closes when the run ends: a write to it
    # would end the loop with SIGPIPE before its trap).
    run_id = await arrive(store, dispatcher, f"setsid bash {script} >/dev/null 2>&1 & sleep 300")
    await _pid(pidfile)
    assert await dispatcher.request_cancel(run_id) is not None
    assert await ended(store, run_id) == "canceled"
    assert spawned.exists(), "the loop's TERM trap never ran"
    late = [int(p) for p in spawned.read_text().split()]
    assert not any(is_alive(p) for p in late), late
    assert orphans.find_all({"n1": [run_id]}) == {}


async def test_a_straggler_that_cannot_be_killed_is_named_not_passed_over(
    running: tuple[SQLiteStore, Dispatcher], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process stuck in the kernel outlives SIGKILL; here, one that ignores SIGTERM with no
    SIGKILL rounds left stands in for it. The run's log says so, and so does the server's."""
    store, dispatcher = running
    monkeypatch.setattr(orphans, "KILL_ROUNDS", 0)
    pidfile = tmp_path / "stuck.pid"
    script = tmp_path / "stuck.sh"
    script.write_text(f"trap '' TERM\necho $$ > {pidfile}\nwhile true; do sleep 0.1; done\n")
    run_id = await arrive(store, dispatcher, f"setsid bash {script} >/dev/null 2>&1 & sleep 300")
    stuck = await _pid(pidfile)
    try:
        assert await dispatcher.request_cancel(run_id) is not None
        assert await ended(store, run_id) == "canceled"
        log = await store.get_log(run_id, 1) or ""
        assert "process(es) of the run survived SIGKILL: " in log and str(stuck) in log, log
    finally:
        os.kill(stuck, signal.SIGKILL)


DETACH = "setsid sh -c 'echo $$ > $PIDFILE; exec sleep 300' >/dev/null 2>&1 </dev/null &"
SERVICE_RULES = """
hooks:
  h: {verify: {none: {}}}
rules:
  - name: service
    hook: h
    when: payload.kind == "service"
    run:
      shell:
        argv: [sh, -c, "DETACH"]
        env: {PIDFILE: "{{ payload.pidfile }}"}
  - name: long
    hook: h
    when: payload.kind == "long"
    run:
      shell:
        argv: [sh, -c, "DETACH sleep 300"]
        env: {PIDFILE: "{{ payload.pidfile }}"}
""".replace("DETACH", DETACH)


def test_a_restart_leaves_the_services_of_ended_runs_and_stops_those_of_interrupted_ones(
    tmp_path: Path,
) -> None:
    """review: every start stopped the detached processes of every attempt started since
    the last one, a succeeded run's service too, after a clean stop as after a crash; only
    an interrupted run's are the start's to stop."""
    import httpx

    from tests.serverproc import Server

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(SERVICE_RULES)
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    service_pid, child_pid = tmp_path / "service.pid", tmp_path / "child.pid"
    service = child = 0
    try:
        answer = httpx.post(f"{server.url}/hooks/h?wait=20s", timeout=30,
                            json={"kind": "service", "pidfile": str(service_pid)}).json()
        assert answer["runs"][0]["status"] == "succeeded", answer
        service = asyncio.run(_pid(service_pid))
        for restart in (server.stop, server.kill):  # a clean stop, then a crash
            restart()
            server.start()
            assert is_alive(service), f"the service was stopped by the start after {restart}"
        run_id = httpx.post(f"{server.url}/hooks/h", timeout=30,
                            json={"kind": "long", "pidfile": str(child_pid)}).json()["runs"][0]
        child = asyncio.run(_pid(child_pid))
        server.kill()
        server.start()
        deadline = time.monotonic() + 10
        while is_alive(child):
            assert time.monotonic() < deadline, "the interrupted run's process outlived the start"
            time.sleep(0.05)
        assert server.wait_run(run_id)["reason"].startswith("interrupted"), run_id
        assert is_alive(service)
        assert "dispatcher.orphans" in server.output()
    finally:
        server.stop()
        for pid in (service, child):
            if pid and is_alive(pid):
                os.kill(pid, signal.SIGKILL)


RETRIED_RULES = """
hooks:
  h: {verify: {none: {}}}
rules:
  - name: twice
    hook: h
    retry: {attempts: 2, backoff: 0s}
    run:
      shell:
        argv:
          - sh
          - -c
          - |
            if [ "$HOOKRUNNER_ATTEMPT" = 1 ]; then
              PIDFILE=$FIRST; DETACH
              exit 1
            fi
            PIDFILE=$SECOND; DETACH sleep 300
        env: {FIRST: "{{ payload.first }}", SECOND: "{{ payload.second }}"}
""".replace("DETACH", "export PIDFILE; " + DETACH)


def test_an_interrupted_retry_leaves_what_its_ended_first_attempt_detached(tmp_path: Path) -> None:
    """review: processes were matched by run, not attempt: attempt 1's service was stopped
    with the interrupted attempt 2's processes."""
    import httpx

    from tests.serverproc import Server

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RETRIED_RULES)
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    first_pid, second_pid = tmp_path / "first.pid", tmp_path / "second.pid"
    first = second = 0
    try:
        run_id = httpx.post(f"{server.url}/hooks/h", timeout=30, json={
            "first": str(first_pid), "second": str(second_pid)}).json()["runs"][0]
        first, second = asyncio.run(_pid(first_pid)), asyncio.run(_pid(second_pid))
        server.kill()
        server.start()
        deadline = time.monotonic() + 10
        while is_alive(second):
            assert time.monotonic() < deadline, "attempt 2's process outlived the start"
            time.sleep(0.05)
        assert is_alive(first), "attempt 1 ended: what it detached is not the start's to stop"
        doc = server.wait_run(run_id)
        assert [a["status"] for a in doc["attempts"]] == ["failed", "failed"], doc
        assert doc["reason"].startswith("interrupted"), doc
    finally:
        server.stop()
        for pid in (first, second):
            if pid and is_alive(pid):
                os.kill(pid, signal.SIGKILL)
