"""Backpressure, crash and shutdown on a real server: nothing answered 202 is ever lost.

Deliveries come from many client threads at once; the scripts record each start, so "ran"
is what the processes themselves wrote down.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookrunner.dispatch import LOG_TO_DISK_AFTER
from hookrunner.store.base import NewDelivery, NewRun
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.integration.exec_support import (
    HOOKS,
    alive,
    all_records,
    fire,
    none_alive,
    record,
    rule,
    run_doc,
    setup,
    started,
    wait_for,
)
from tests.serverproc import Server, github_signature, post_github

BURST = 300
CLIENTS = 16


def post(client: httpx.Client, server: Server, payload: dict[str, Any], delivery: str,
         wait: str | None = None) -> tuple[int, dict[str, Any], float, httpx.Headers]:
    """(status, body, time answered, headers); status 0 when the server did not answer.

    One client shared by the sending threads: a client per request spends more CPU on its TLS
    context than the server spends on the delivery."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
               "X-GitHub-Delivery": delivery,
               "X-Hub-Signature-256": github_signature(GITHUB_SECRET, body)}
    try:
        r = client.post(f"{server.url}/hooks/github", content=body, headers=headers,
                        params={"wait": wait} if wait else None)
    except httpx.HTTPError:
        return 0, {}, time.time(), httpx.Headers()
    return r.status_code, r.json(), time.time(), r.headers


def client() -> httpx.Client:
    return httpx.Client(timeout=30, limits=httpx.Limits(max_connections=CLIENTS))


def settled(server: Server) -> list[dict[str, Any]] | None:
    """All runs once none is queued or running, else None."""
    with server.admin() as c:
        runs: list[dict[str, Any]] = c.get("/api/runs", params={"limit": 1000}).json()["runs"]
    return None if any(r["status"] in ("queued", "running") for r in runs) else runs


def test_past_max_queued_hooks_answer_503_and_every_accepted_delivery_runs(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`--max-queued 5 --workers 1`: a concurrent burst gets 503 + Retry-After past the bound,
    never more queued than the bound, and every delivery answered 202 runs."""
    records = setup(project)
    server = make_server(HOOKS + rule("slow", records), args=["--max-queued", "5", "--workers", "1"])
    with ThreadPoolExecutor(20) as pool, client() as c:
        answers = list(pool.map(lambda i: post(c, server, {"sleep": 0.3, "tag": f"t{i}"}, f"bp-{i}"),
                                range(20)))
    accepted = [a for a in answers if a[0] == 202]
    full = [a for a in answers if a[0] == 503]
    assert len(accepted) + len(full) == 20, [a[0] for a in answers]
    assert full and all(a[3].get("Retry-After") == "5" and a[1] == {"error": "queue full"}
                        for a in full)
    # Logged, but not a line per refusal: the first at once, then one a second with a count.
    logged = [line for line in server.output().splitlines()
              if "delivery.rejected" in line and "queue full" in line]
    assert 1 <= len(logged) <= 3 and "count=1" in logged[0], logged
    run_ids = [a[1]["runs"][0] for a in accepted]
    docs = [server.wait_run(r) for r in run_ids]
    assert {d["status"] for d in docs} == {"succeeded"}
    recs = [record(records, r) for r in run_ids]
    assert all(rec is not None for rec in recs)  # none lost
    # The bound, measured: by the last 202, at most 5 were waiting, plus those already claimed.
    last_accept = max(a[2] for a in accepted)
    claimed_by_then = sum(1 for d in docs if d["started_at"] <= last_accept)
    assert len(accepted) <= 5 + claimed_by_then
    # Once drained, the hook accepts again.
    after = fire(server, tag="after")
    assert server.wait_run(after)["status"] == "succeeded"


def test_a_small_max_queued_admits_one_delivery_after_another_when_none_waits(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`--max-queued 2 --workers 1`, deliveries sent one after another, each waited for: the
    queue never holds anything, so none may be refused (runs the dispatcher claimed since the
    last count of the store count as gone, not as queued)."""
    records = setup(project)
    server = make_server(HOOKS + rule("quick", records), args=["--max-queued", "2", "--workers", "1"])
    with client() as c:
        answers = [post(c, server, {"sleep": 0, "tag": f"q{i}"}, f"seq-{i}", wait="10s")
                   for i in range(8)]
    assert [a[0] for a in answers] == [200] * 8, [(a[0], a[1]) for a in answers]
    assert all(a[1]["runs"][0]["status"] == "succeeded" for a in answers)


def test_sigkill_mid_burst_loses_no_accepted_delivery(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A burst of deliveries from concurrent clients, a SIGKILL of the server in the middle, a
    restart on the same data dir: every delivery answered 202 ran at least once. Runs that were
    running at the kill end `failed` (interrupted) without a retry rule, and are retried with one;
    senders redelivering what got no answer are told it was a duplicate when it was journaled."""
    records = setup(project)
    server = make_server(HOOKS + rule("plain", records, when="payload.n % 2 == 0")
                         + rule("retried", records, "    retry: {attempts: 3, backoff: 100ms}\n",
                                when="payload.n % 2 == 1"),
                         args=["--workers", "8"])
    answers: dict[int, tuple[int, dict[str, Any]]] = {}

    def payload(i: int) -> dict[str, Any]:
        return {"sleep": 0.05, "tag": f"t{i}", "n": i}  # odd n: the rule with retry
    lock = threading.Lock()
    killed = threading.Event()

    def send(i: int) -> None:
        status, body, _, _ = post(sender, server, payload(i), f"burst-{i}")
        with lock:
            answers[i] = (status, body)
            if not killed.is_set() and sum(1 for s, _ in answers.values() if s == 202) >= BURST // 3:
                killed.set()
                server.kill()

    with ThreadPoolExecutor(CLIENTS) as pool, client() as sender:
        list(pool.map(send, range(BURST)))
    assert killed.is_set()
    lost_answers = [i for i, (s, _) in answers.items() if s != 202]
    assert lost_answers, "the kill landed after the burst"
    assert all(answers[i][0] == 0 for i in lost_answers)  # no answer at all, never an error

    server.start()
    # The senders redeliver what got no answer (same delivery id).
    with ThreadPoolExecutor(CLIENTS) as pool, client() as sender:
        again = dict(zip(lost_answers, pool.map(
            lambda i: post(sender, server, payload(i), f"burst-{i}"), lost_answers), strict=True))
    for i, (status, body, _, _) in again.items():
        assert status in (200, 202), body
        answers[i] = (status, body)
    runs = wait_for("the queue to drain", lambda: settled(server), timeout=120)

    by_id = {r["id"]: r for r in runs}
    recs = all_records(records)
    ran = {name.split(".")[0] for name in recs}
    delivered: dict[str, list[str]] = {}  # delivery id -> its run ids
    with server.admin() as c:
        for status, body in answers.values():
            dlv = body["delivery_id"]
            if status == 202:
                delivered[dlv] = body["runs"]
            else:  # journaled before the kill, answered as a duplicate now
                assert status == 200 and body["duplicate"] is True
                delivered[dlv] = c.get(f"/api/deliveries/{dlv}").json()["runs"]
    assert len(delivered) == BURST  # every delivery journaled exactly once
    interrupted = {"plain": 0, "retried": 0}
    for run_ids in delivered.values():
        assert len(run_ids) == 1
        for run_id in run_ids:
            run = by_id[run_id]
            if run["rule"] == "retried":
                assert run["status"] == "succeeded" and run_id in ran, run
                if run["attempt"] > 1:
                    interrupted["retried"] += 1
                    doc = run_doc(server, run_id)
                    assert doc["attempts"][0]["reason"].startswith("interrupted"), doc
            elif run["status"] == "failed":
                assert run["reason"].startswith("interrupted"), run
                interrupted["plain"] += 1
            else:
                assert run["status"] == "succeeded" and run_id in ran, run
    print(f"burst {BURST}: {BURST - len(lost_answers)} answered before the kill, "
          f"{len(lost_answers)} redelivered, interrupted {interrupted}")


def test_sigterm_drains_within_grace_then_cancels_cleanly(
    make_server: Callable[..., Server], project: Path
) -> None:
    """SIGTERM: the server stops taking work at once (the listener closes, queued runs stay
    queued even while a `?wait=` request is still being answered), lets running runs finish
    within `HOOKRUNNER_GRACE` counted from the signal, then cancels the rest with their process
    trees; the waiting request gets their final status, and what stayed queued runs after the
    restart."""
    records = setup(project)
    # The short run must outlast the set-up below and end within the grace: on a loaded
    # machine the set-up took over a second (it ended first, and `waiting` ran).
    server = make_server(HOOKS + rule("job", records), args=["--workers", "2"],
                         env={"HOOKRUNNER_GRACE": "8s"})
    short = fire(server, sleep=4, tag="short")
    waited: list[tuple[int, dict[str, Any], float, httpx.Headers]] = []
    with client() as c:
        holder = threading.Thread(target=lambda: waited.append(
            post(c, server, {"sleep": 60, "child": 1, "tag": "long"}, "long", wait="30s")))
        holder.start()
        long_rec = wait_for("the long run and its grandchild", lambda: next(
            (r for r in all_records(records).values() if r.tag == "long" and r.children), None))
        waiting = fire(server, tag="waiting")
        started(records, short)
        assert run_doc(server, waiting)["status"] == "queued"
        # A `?wait` whose run is queued behind them: it will not start before the restart.
        queued_wait: list[tuple[int, dict[str, Any], float, httpx.Headers]] = []
        queued_holder = threading.Thread(target=lambda: queued_wait.append(
            post(c, server, {"sleep": 0, "tag": "queued-wait"}, "queued-wait", wait="30s")))
        queued_holder.start()
        wait_for("the queued ?wait run", lambda: _run_count(server) >= 4)
        assert server.proc is not None
        sent = time.time()
        server.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                httpx.get(f"{server.url}/healthz", timeout=1)
            except httpx.HTTPError:
                return True
            return False

        wait_for("the listener to close", refused)
        holder.join(timeout=30)
        queued_holder.join(timeout=30)
    # It hears 202 with its run id as soon as the server stops (not a 500 when shutdown gives
    # up on the request); the run stays queued and runs after the restart.
    (status, body, answered, _), = queued_wait
    assert status == 202 and len(body["runs"]) == 1, (status, body)
    assert answered - sent < 4.0, answered - sent  # at once, not at the grace's end
    queued_run = body["runs"][0]
    # uvicorn re-raises the signal once shut down, so the exit status says "by SIGTERM".
    assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    (status, body, answered, _), = waited
    assert status == 200 and body["runs"][0]["status"] == "canceled", body
    long = body["runs"][0]["id"]
    assert none_alive(long_rec.pids)
    short_rec = record(records, short)
    assert short_rec is not None and short_rec.end is not None  # finished within the grace
    assert record(records, waiting) is None  # never claimed while stopping

    server.start()
    doc = server.wait_run(long)
    assert doc["status"] == "canceled" and doc["reason"] == "canceled: server shutting down"
    assert doc["finished_at"] - sent >= 8.0  # it had the whole grace period
    print(f"SIGTERM -> long run canceled after {doc['finished_at'] - sent:.2f}s, "
          f"?wait answered after {answered - sent:.2f}s (grace 8s)")
    assert server.wait_run(short)["status"] == "succeeded"
    assert server.wait_run(waiting)["status"] == "succeeded"
    assert server.wait_run(queued_run)["status"] == "succeeded"


def _run_count(server: Server) -> int:
    with server.admin() as c:
        return len(c.get("/api/runs").json()["runs"])


def _claimed_before_a_crash(project: Path, records: Path, node: str, exit_code: int = 0,
                            sleep: float = 0, **retry: Any) -> str:
    """A run this node had claimed when it died: journaled and claimed in the store, with no
    process ever started (the window between a claim and its start)."""
    d = NewDelivery(id="dlv_crashed", hook="github", received_at=time.time(), headers=[],
                    body=b"{}", dedup_key=None, event="push", client_ip="127.0.0.1",
                    matches=[])
    r = NewRun(id="run_crashed", delivery_id=d.id, rule="claimed", action="shell",
               spec={"argv": ["scripts/rec.sh", str(sleep), str(exit_code), "after"],
                     "env": {"RECORDS": str(records), "CHILD": "0"}},
               created_at=time.time(), **retry)

    async def crash() -> None:
        store = SQLiteStore(project / "data" / "hookrunner.db")
        await store.open()
        await store.accept(d, [r])
        assert [c.id for c in await store.claim(node, 1, 30.0, time.time())] == [r.id]
        await store.close()

    (project / "data").mkdir(exist_ok=True)
    asyncio.run(crash())
    return r.id


def test_a_claimed_run_that_never_started_is_queued_again_at_restart(
    make_server: Callable[..., Server], project: Path
) -> None:
    """No start mark for it: the restarted node runs it now, whatever its rule's retries."""
    records = setup(project)
    run_id = _claimed_before_a_crash(project, records, "n1")
    (project / "data" / "started-n1.marks").write_text("")  # kept by the server that died
    server = make_server(HOOKS + rule("claimed", records), args=["--node", "n1"])
    doc = server.wait_run(run_id)
    assert doc["status"] == "succeeded", doc
    assert [(a["attempt"], a["status"]) for a in doc["attempts"]] == [(1, "failed"), (2, "succeeded")]
    assert doc["attempts"][0]["reason"] == (
        "interrupted: node n1 restarted before its action started; queued again")
    assert record(records, run_id, attempt=2) is not None


def test_an_attempt_a_crash_cut_short_before_its_start_is_not_one_of_the_rules_retries(
    make_server: Callable[..., Server], project: Path
) -> None:
    """review: `retry: {attempts: 2}` gave one real try after a crash before the start (the
    attempt that never started was counted), where a start that failed for want of a
    descriptor is not counted."""
    records = setup(project)
    run_id = _claimed_before_a_crash(project, records, "n1", exit_code=3, max_attempts=2,
                                     retry_on=("failed",), backoff=0.1)
    (project / "data" / "started-n1.marks").write_text("")
    server = make_server(HOOKS + rule("claimed", records), args=["--node", "n1"])
    doc = server.wait_run(run_id)
    assert [(a["attempt"], a["status"]) for a in doc["attempts"]] == [
        (1, "failed"), (2, "failed"), (3, "failed")], doc
    assert sorted(all_records(records)) == [f"{run_id}.2", f"{run_id}.3"]


def test_an_attempt_that_never_started_is_not_counted_when_the_next_one_is_interrupted(
    make_server: Callable[..., Server], project: Path
) -> None:
    """review: the same, where the attempt after it is itself cut short by a crash: it was
    `failed` after one real try of a rule with `retry: {attempts: 2}`."""
    records = setup(project)
    run_id = _claimed_before_a_crash(project, records, "n1", sleep=30, max_attempts=2,
                                     retry_on=("failed",), backoff=0.1)
    (project / "data" / "started-n1.marks").write_text("")
    server = make_server(HOOKS + rule("claimed", records), args=["--node", "n1"])
    rec = started(records, run_id, attempt=2)
    server.kill()
    os.kill(rec.pid, signal.SIGKILL)
    server.start()
    wait_for("attempt 3", lambda: record(records, run_id, attempt=3))
    with server.admin() as c:
        doc = c.get(f"/api/runs/{run_id}").json()
    assert [(a["attempt"], a["reason"]) for a in doc["attempts"][:2]] == [
        (1, "interrupted: node n1 restarted before its action started; queued again"),
        (2, "interrupted: node n1 restarted")], doc


def test_with_no_start_marks_at_all_a_claimed_run_is_taken_for_started(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A data dir restored from a backup, or new (a container's without a volume): no marks
    file says which runs never started, and taking them all for never started ran a
    running deploy twice, its record saying it never started. Now: interrupted, per its
    rule (here none: failed), as a run marked started is."""
    records = setup(project)
    run_id = _claimed_before_a_crash(project, records, "n1")
    assert not list((project / "data").glob("started-*"))
    server = make_server(HOOKS + rule("claimed", records), args=["--node", "n1"])
    doc = server.wait_run(run_id)
    assert (doc["status"], doc["reason"]) == ("failed", "interrupted: node n1 restarted"), doc
    assert all_records(records) == {}


def test_a_claimed_run_whose_processes_are_still_there_is_taken_for_started(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Its processes are proof it started, whatever the marks say (a marks line lost)."""
    records = setup(project)
    run_id = _claimed_before_a_crash(project, records, "n1")
    (project / "data" / "started-n1.marks").write_text("")  # no line for it
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True, env={
        "PATH": os.environ["PATH"], "HOOKRUNNER_RUN_ID": run_id, "HOOKRUNNER_NODE": "n1"})
    try:
        server = make_server(HOOKS + rule("claimed", records), args=["--node", "n1"])
        doc = server.wait_run(run_id)
        assert (doc["status"], doc["reason"]) == ("failed", "interrupted: node n1 restarted")
        assert orphan.wait(timeout=15) is not None  # stopped at the start, as orphans are
    finally:
        orphan.kill()
        orphan.wait()
    assert all_records(records) == {}


def test_a_claimed_run_marked_started_is_not_run_again_at_restart(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Its start mark says its action had started: without a retry rule it ends `failed`
    (interrupted), and nothing runs it a second time."""
    records = setup(project)
    run_id = _claimed_before_a_crash(project, records, "n1")
    (project / "data" / "started-n1.marks").write_text(f"{run_id} 1\n")
    server = make_server(HOOKS + rule("claimed", records), args=["--node", "n1"])
    doc = server.wait_run(run_id)
    assert (doc["status"], doc["reason"]) == ("failed", "interrupted: node n1 restarted"), doc
    assert [a["attempt"] for a in doc["attempts"]] == [1]
    # Its end is a `run.finished` line too, as every attempt's is (log alerts match on it).
    assert any("run.finished" in x and run_id in x and "status=failed" in x
               for x in server.output().splitlines()), server.output()
    assert all_records(records) == {}
    # The marks were acted on: the file starts afresh, so a later restart does not read them.
    assert (project / "data" / "started-n1.marks").read_text() == ""


def test_a_claimed_run_with_a_log_file_but_no_start_mark_is_queued_again_at_restart(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A run waiting to start (a terraform directory's lock) has its log file after a second:
    the restart took that for a start, and the run that never ran ended `failed`."""
    records = setup(project)
    run_id = _claimed_before_a_crash(project, records, "n1")
    (project / "data" / "started-n1.marks").write_text("")  # a version that keeps marks ran
    log = project / "data" / "logs" / run_id / "1.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"[hookrunner] run {run_id} rule claimed attempt 1/1 on node n1\n")
    server = make_server(HOOKS + rule("claimed", records), args=["--node", "n1"])
    doc = server.wait_run(run_id)
    assert doc["status"] == "succeeded", doc
    assert doc["attempts"][0]["reason"] == (
        "interrupted: node n1 restarted before its action started; queued again")


def test_a_log_file_tells_a_start_where_no_marks_were_kept(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A data dir of a version from before the marks: its log file is the evidence."""
    records = setup(project)
    run_id = _claimed_before_a_crash(project, records, "n1")
    log = project / "data" / "logs" / run_id / "1.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("started\n")
    server = make_server(HOOKS + rule("claimed", records), args=["--node", "n1"])
    doc = server.wait_run(run_id)
    assert (doc["status"], doc["reason"]) == ("failed", "interrupted: node n1 restarted"), doc


def test_sqlite_recovers_runs_left_by_the_same_data_dir_under_another_node_name(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`--node` defaults to the host name, which a new container changes. One server uses a
    SQLite data dir, so what it left running is this start's to recover, under any name:
    its marks read, its processes stopped, its concurrency key freed."""
    records = setup(project)
    never = _claimed_before_a_crash(project, records, "old-host")
    (project / "data" / "started-old-host.marks").write_text("")  # kept by the server that died
    key = "    concurrency: {key: k}\n"
    server = make_server(HOOKS + rule("claimed", records) + rule("held", records, key),
                         args=["--node", "old-host"])
    assert server.wait_run(never)["status"] == "succeeded"
    held = fire(server, rule="held", sleep=30)
    rec = started(records, held)
    server.kill()  # the action lives on, in a session of its own
    assert alive(rec.pid)
    server.args = ["--node", "new-host"]
    (project / "data" / "started-older-host.marks").write_text("")  # an earlier start's
    server.start()
    doc = server.wait_run(held)
    assert (doc["status"], doc["reason"]) == (
        "failed", "interrupted: node old-host restarted (as node new-host)"), doc
    assert none_alive(rec.pids)  # stopped first thing
    assert "dispatcher.orphans" in server.output()
    after = fire(server, rule="held", sleep=0)  # the key is free again
    assert server.wait_run(after)["status"] == "succeeded"
    assert sorted(p.name for p in (project / "data").glob("started-*")) == ["started-new-host.marks"]


def test_a_run_killed_in_its_first_second_is_not_run_again(
    make_server: Callable[..., Server], project: Path
) -> None:
    """SIGKILL while a young run's log is still only in memory: its start mark alone tells the
    restarted node that it started, so without a retry rule it ends `failed` (interrupted) and
    starts no second time."""
    records = setup(project)
    server = make_server(HOOKS + rule("young", records), args=["--node", "n1"])
    run_id = fire(server, sleep=30)
    first = started(records, run_id)
    server.kill()
    assert time.time() - first.start < LOG_TO_DISK_AFTER
    assert not (project / "data" / "logs" / run_id).exists()  # the marks are the only evidence
    server.start()
    doc = server.wait_run(run_id)
    assert (doc["status"], doc["reason"]) == ("failed", "interrupted: node n1 restarted"), doc
    assert [a["attempt"] for a in doc["attempts"]] == [1]
    with server.admin() as api:  # (probe: it was empty, saying nothing of how it ended)
        assert api.get(f"/api/runs/{run_id}/log").text == (
            "[hookrunner] its output, kept in memory for its first second, was lost when its "
            "server stopped\n[hookrunner] failed: interrupted: node n1 restarted\n")
    assert none_alive(first.pids)
    assert set(all_records(records)) == {f"{run_id}.1"}
    # Ended for good by the crash: what an alert on runs_ended's failures must see.
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    assert 'hookrunner_runs_ended_total{rule="young",status="failed"} 1.0' in metrics


def test_the_log_of_an_attempt_its_server_died_in_ends_as_its_record_says(
    make_server: Callable[..., Server], project: Path
) -> None:
    """It stopped at the action's last output, where every other ended attempt's log closes
    with `[hookrunner] <how it ended>`: the restart that decides it writes that line, in the
    file and in the record's copy, for an attempt retried too."""
    records = setup(project)
    server = make_server(HOOKS + rule("once", records)
                         + rule("twice", records, "    retry: {attempts: 2, backoff: 1h}\n"),
                         args=["--node", "n1"])
    runs = [fire(server, rule=name, sleep=60) for name in ("once", "twice")]
    logs = [project / "data" / "logs" / run_id / "1.log" for run_id in runs]
    wait_for("their logs on disk", lambda: all(b" tag \n" in _read(log) for log in logs))
    server.kill()
    server.start()
    closed = "attempt 1 of {} tag \n[hookrunner] failed: interrupted: node n1 restarted\n"
    for run_id, log, name in zip(runs, logs, ("once", "twice"), strict=True):
        attempt = wait_for(f"{run_id}'s first attempt to end", lambda r=run_id: next(
            (a for a in run_doc(server, r)["attempts"] if a["status"] != "running"), None))
        assert attempt["reason"] == "interrupted: node n1 restarted", attempt
        with server.admin() as c:
            shown = c.get(f"/api/runs/{run_id}/log", params={"attempt": 1}).text
        assert shown.endswith(closed.format(name)) and shown.count("[hookrunner] failed") == 1, shown
        assert _read(log).decode() == shown
    assert run_doc(server, runs[1])["status"] == "queued"  # its retry waits its backoff
    server.stop()

    async def stored() -> str | None:  # the copy other nodes read
        store = SQLiteStore(project / "data" / "hookrunner.db")
        await store.open()
        try:
            return await store.get_log(runs[0], 1)
        finally:
            await store.close()

    assert (asyncio.run(stored()) or "").endswith(closed.format("once"))


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGTERM),
                                     (signal.SIGTERM, signal.SIGINT)])
def test_a_second_stop_signal_of_any_kind_cancels_the_running_runs_at_once(
    make_server: Callable[..., Server], project: Path, signals: tuple[int, int],
) -> None:
    """`systemctl stop` twice, or `kill` then Ctrl-C: as a second Ctrl-C (only a second
    SIGINT counted; the server's own log line says either does)."""
    records = setup(project)
    server = make_server(HOOKS + rule("job", records), env={"HOOKRUNNER_GRACE": "60s"})
    run_id = fire(server, sleep=60)
    started(records, run_id)
    assert server.proc is not None
    server.proc.send_signal(signals[0])
    time.sleep(0.5)
    assert server.proc.poll() is None  # draining
    server.proc.send_signal(signals[1])
    assert server.proc.wait(timeout=20) in (130, -signal.SIGTERM)
    assert "Traceback" not in server.output()
    finished = [line for line in server.output().splitlines()
                if f"run.finished run_id={run_id}" in line]
    assert len(finished) == 1 and "status=canceled" in finished[0], server.output()[-2000:]


def test_a_second_ctrl_c_cancels_the_running_runs_at_once(
    make_server: Callable[..., Server], project: Path
) -> None:
    """The first Ctrl-C drains (the run keeps its grace period); a second one cancels it at
    once, cleanly and recorded, instead of waiting out the grace period."""
    records = setup(project)
    server = make_server(HOOKS + rule("job", records), env={"HOOKRUNNER_GRACE": "60s"})
    run_id = fire(server, sleep=60, child=1)
    first = wait_for("the grandchild", lambda: (r := record(records, run_id)) and r.children and r)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert server.proc.poll() is None  # draining: the run has its grace period
    server.proc.send_signal(signal.SIGINT)
    # The run's SIGTERM, at most 5 s to SIGKILL: not 60 s.
    assert server.proc.wait(timeout=20) == 130
    finished = [line for line in server.output().splitlines()
                if f"run.finished run_id={run_id}" in line]
    assert len(finished) == 1 and "status=canceled" in finished[0], server.output()[-2000:]
    assert none_alive(first.pids)


def test_a_sighup_while_running_actions_drain_at_a_stop_does_not_cut_them_short(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`systemctl reload` during a `stop`: once the loop no longer takes SIGHUP as "reload",
    its default action would kill the server, and the draining runs with it."""
    records = setup(project)
    server = make_server(HOOKS + rule("job", records), env={"HOOKRUNNER_GRACE": "30s"})
    run_id = fire(server, rule="job", sleep=2)
    started(records, run_id)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGHUP)
    assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    rec = record(records, run_id)
    assert rec is not None and rec.end is not None  # it ran to its end
    server.start()
    assert server.wait_run(run_id)["status"] == "succeeded"


def test_a_run_a_stop_cuts_short_is_retried_per_its_rule_as_after_a_crash(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A planned stop (an upgrade) cancels what outlives the grace period: with `retry`, the
    run ended canceled for good, where a crash would have had it retried."""
    write_script(project, "once.sh",
                 'echo "attempt $HOOKRUNNER_ATTEMPT"\n'
                 'if [ "$HOOKRUNNER_ATTEMPT" = 1 ]; then sleep 60; fi\n')
    server = make_server(HOOKS + """
  - name: retried
    hook: github
    when: payload.retry
    run: {shell: {argv: ["scripts/once.sh"]}}
    retry: {attempts: 2, backoff: 1h}
  - name: once
    hook: github
    when: not payload.retry
    run: {shell: {argv: ["scripts/once.sh"]}}
""", env={"HOOKRUNNER_GRACE": "1s"})
    retried = post_github(server.url, GITHUB_SECRET, {"retry": True}).json()["runs"][0]
    once = post_github(server.url, GITHUB_SECRET, {"retry": False}).json()["runs"][0]
    with server.admin() as c:
        wait_for("both running", lambda: all(
            c.get(f"/api/runs/{r}").json()["status"] == "running" for r in (retried, once)))
    server.stop()
    server.start()
    doc = server.wait_run(retried)
    assert doc["status"] == "succeeded" and doc["attempt"] == 2, doc  # no 1h backoff: not its fault
    assert doc["attempts"][0]["status"] == "canceled"
    assert doc["attempts"][0]["reason"] == ("canceled: server shutting down; queued again: its "
                                            "rule retries, as after a crash")
    doc = server.wait_run(once)
    assert (doc["status"], doc["reason"]) == ("canceled", "canceled: server shutting down")


def test_ctrl_c_twice_says_130_even_where_sigint_was_inherited_ignored(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A shell's background job starts with SIGINT ignored: uvicorn's re-raise of it at the
    end then did nothing, and the server said 0 after two Ctrl-Cs."""
    records = setup(project)
    server = make_server(HOOKS + rule("job", records))
    server.stop()
    assert server.proc is not None
    with open(server.log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hookrunner.cli", "serve", "--rules", str(server.rules),
             "--data", str(server.data), "--root", str(server.root), "--port", str(server.port)],
            env=server.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for("ready", lambda: _ready(server.url))
        run_id = fire(server, sleep=30)
        started(records, run_id)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_cancel_asked_while_a_stop_cuts_a_retrying_run_short_is_not_a_requeue(
    make_server: Callable[..., Server], project: Path
) -> None:
    """The stop's grace runs out, the run ignores SIGTERM for 5 s, and meanwhile an operator
    cancels it: the store ends it canceled, and the log must not say it was queued again."""
    write_script(project, "stubborn.sh", "trap '' TERM\nsleep 40\n")
    server = make_server(HOOKS + """
  - name: stubborn
    hook: github
    run: {shell: {argv: ["scripts/stubborn.sh"]}}
    retry: {attempts: 3}
""", env={"HOOKRUNNER_GRACE": "1s"})
    run_id = post_github(server.url, GITHUB_SECRET, {}).json()["runs"][0]
    with server.admin() as c:
        wait_for("running", lambda: c.get(f"/api/runs/{run_id}").json()["status"] == "running")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(2.5)  # past the grace: its SIGTERM is sent, SIGKILL in 5 s
    done = subprocess.run([sys.executable, "-m", "hookrunner.cli", "cancel", run_id,
                           "--data", str(server.data)], capture_output=True, text=True,
                          env=server.env, timeout=30)
    assert done.returncode == 0, done.stderr
    server.proc.wait(timeout=30)
    (finished,) = [line for line in server.output().splitlines()
                   if f"run.finished run_id={run_id}" in line]
    assert "queued again" not in finished and "status=canceled" in finished, finished
    server.start()
    assert server.wait_run(run_id)["status"] == "canceled"
