"""Execution control on a real server: concurrency policies, timeouts, retries, cancel, ?wait=.

The scripts record their own start/end times and pids; overlap and survival are measured from
those records, never assumed from sleeps.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.integration.exec_support import (
    HOOKS,
    alive,
    fire,
    none_alive,
    overlap,
    record,
    rule,
    run_doc,
    setup,
    started,
    wait_for,
)
from tests.serverproc import Server, github_signature, post_github


def test_queue_runs_one_at_a_time_per_key_in_arrival_order_while_keys_overlap(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`queue`: runs of one key never overlap and start in arrival order; other keys run alongside."""
    records = setup(project)
    server = make_server(HOOKS + rule("deploy", records,
                                      '    concurrency: {key: "env-{{ payload.env }}", policy: queue}\n'))
    order = ["a", "b", "a", "b", "a", "a"]
    ids = [fire(server, env=env, sleep=0.3, tag=f"{env}{i}") for i, env in enumerate(order)]
    docs = [server.wait_run(r) for r in ids]
    assert {d["status"] for d in docs} == {"succeeded"}
    assert {d["concurrency_key"] for d in docs} == {"env-a", "env-b"}
    recs = {r: record(records, r) for r in ids}
    for env in ("a", "b"):
        mine = [recs[r] for r, e in zip(ids, order, strict=True) if e == env]
        assert all(x is not None and x.end is not None for x in mine)
        starts = [x.start for x in mine if x]
        assert starts == sorted(starts), f"key env-{env} ran out of arrival order"
        for x, y in itertools.pairwise(mine):
            assert x is not None and y is not None and x.end is not None
            assert y.start >= x.end, f"key env-{env} overlapped"
    a = [recs[r] for r, e in zip(ids, order, strict=True) if e == "a"]
    b = [recs[r] for r, e in zip(ids, order, strict=True) if e == "b"]
    assert any(overlap(x, y) for x in a for y in b if x and y), "different keys never overlapped"


def test_skip_with_a_static_key_drops_new_runs_while_one_runs(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`skip` with a key that is no template: a run arriving while one runs ends `skipped`."""
    records = setup(project)
    server = make_server(HOOKS + rule("sync", records, "    concurrency: {key: sync, policy: skip}\n"))
    first = fire(server, sleep=5, tag="first")  # outlasts the next POST on a loaded machine
    started(records, first)
    second = fire(server, tag="second")
    skipped = server.wait_run(second)
    assert skipped["status"] == "skipped" and first in skipped["reason"]
    assert skipped["concurrency_key"] == "sync" and record(records, second) is None
    assert server.wait_run(first)["status"] == "succeeded"
    third = fire(server, tag="third")  # the key is free again
    assert server.wait_run(third)["status"] == "succeeded"


def test_replace_cancels_the_running_tree_and_runs_the_new_one(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`replace`: the running run ends `canceled` with every process of it gone; the new one runs."""
    records = setup(project)
    server = make_server(HOOKS + rule("build", records,
                                      '    concurrency: {key: "{{ payload.branch }}", policy: replace}\n'))
    old = fire(server, branch="main", sleep=60, child=1, tag="old")
    old_rec = started(records, old)
    wait_for("the grandchild pid", lambda: (record(records, old) or old_rec).children)
    old_rec = record(records, old) or old_rec
    assert all(alive(p) for p in old_rec.pids)
    new = fire(server, branch="main", sleep=0, tag="new")
    canceled = server.wait_run(old)
    assert canceled["status"] == "canceled"
    assert (canceled["reason"], canceled["superseded_by"]) == (f"canceled: replaced by run {new}", new)
    assert none_alive(old_rec.pids)
    assert server.wait_run(new)["status"] == "succeeded"
    new_rec = record(records, new)
    assert new_rec is not None and old_rec.end is None
    assert new_rec.start >= canceled["finished_at"] - 0.05  # after the old tree was gone


def test_coalesce_finishes_the_running_one_then_runs_only_the_newest(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`coalesce`: the running run finishes; of those that waited only the newest runs, the
    others end `skipped`, each naming the newer run that superseded it."""
    records = setup(project)
    server = make_server(HOOKS + rule("deploy", records,
                                      "    concurrency: {key: deploy, policy: coalesce}\n"))
    running = fire(server, sleep=6, tag="running")  # outlasts 4 POSTs on a loaded machine
    started(records, running)
    waiting = [fire(server, tag=f"w{i}") for i in range(4)]
    assert server.wait_run(running)["status"] == "succeeded"
    docs = [server.wait_run(r) for r in waiting]
    assert docs[-1]["status"] == "succeeded"
    for i, doc in enumerate(docs[:-1]):
        assert doc["status"] == "skipped", doc
        assert doc["superseded_by"] in waiting[i + 1:], doc
        assert doc["superseded_by"] in doc["reason"]
        assert record(records, waiting[i]) is None
    first, last = record(records, running), record(records, waiting[-1])
    assert first is not None and last is not None and first.end is not None
    assert last.start >= first.end
    # Each run that never started still ends in the log (they were only in delivery.accepted).
    for run_id in waiting[:-1]:
        ends = [x for x in server.output().splitlines() if f"run.finished run_id={run_id}" in x]
        assert len(ends) == 1 and "status=skipped" in ends[0], ends


def test_a_key_holds_across_a_crash_and_restart(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Runs queued behind a key before a SIGKILL wait their turn after the restart: the
    interrupted run's processes are stopped first, then the queue goes on in order."""
    records = setup(project)
    server = make_server(HOOKS + rule("deploy", records,
                                      "    concurrency: {key: deploy, policy: queue}\n"))
    holder = fire(server, sleep=60, child=1, tag="holder")
    behind = [fire(server, sleep=0.3, tag=f"b{i}") for i in range(3)]
    holder_rec = started(records, holder)
    holder_rec = wait_for("the grandchild", lambda: (r := record(records, holder)) and r.children and r)
    server.kill()
    assert all(alive(p) for p in holder_rec.pids)  # a crash leaves the action running
    server.start()
    doc = server.wait_run(holder)
    assert doc["status"] == "failed" and doc["reason"].startswith("interrupted"), doc
    assert none_alive(holder_rec.pids)
    recs = []
    for r in behind:
        assert server.wait_run(r)["status"] == "succeeded"
        recs.append(record(records, r))
    for x, y in itertools.pairwise(recs):
        assert x is not None and y is not None and x.end is not None and y.start >= x.end
    first = recs[0]
    assert first is not None and first.start >= doc["finished_at"] - 0.05


def test_timeout_ends_timed_out_with_the_whole_tree_gone(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`timeout`: the run ends `timed_out` and no process of it (grandchild included) survives."""
    records = setup(project)
    server = make_server(HOOKS + rule("slow", records, "    timeout: 1s\n"))
    run_id = fire(server, sleep=60, child=1)
    rec = wait_for("the grandchild", lambda: (r := record(records, run_id)) and r.children and r)
    doc = server.wait_run(run_id)
    assert doc["status"] == "timed_out" and "timed out after 1s" in doc["reason"]
    with server.admin() as c:
        log = c.get(f"/api/runs/{run_id}/log").text
    # One line says it, the last (it was `timed out after 1s`, then `timed_out: timed out...`).
    assert log.endswith("\n[hookrunner] timed out after 1s\n") and log.count("timed") == 1, log
    assert none_alive(rec.pids)
    assert rec.end is None and doc["finished_at"] - doc["started_at"] >= 1.0


def test_retry_records_each_attempt_with_exit_code_and_log(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`retry: {attempts: 3, backoff: 100ms}` on a failing script: three attempts, each with its
    exit code and its own log; `on: [timed_out]` does not retry a plain failure."""
    records = setup(project)
    server = make_server(HOOKS
                         + rule("flaky", records, "    retry: {attempts: 3, backoff: 100ms}\n")
                         + rule("only-timeouts", records,
                                "    retry: {attempts: 3, backoff: 100ms, on: [timed_out]}\n"))
    flaky = fire(server, rule="flaky", exit=3)
    doc = server.wait_run(flaky)
    assert doc["status"] == "failed" and doc["attempt"] == 3 and doc["exit_code"] == 3
    attempts = doc["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [(a["status"], a["exit_code"]) for a in attempts] == [("failed", 3)] * 3
    starts = [a["started_at"] for a in attempts]
    ends = [a["finished_at"] for a in attempts]
    for prev_end, nxt in zip(ends, starts[1:], strict=False):
        assert nxt - prev_end >= 0.1 * 0.8  # backoff 100ms, then 200ms, +-20 % jitter
    with server.admin() as c:
        for n in (1, 2, 3):
            log = c.get(f"/api/runs/{flaky}/log", params={"attempt": n}).text
            assert f"attempt {n} of flaky" in log and f"attempt {n}/3" in log
    assert [record(records, flaky, n) is not None for n in (1, 2, 3, 4)] == [True] * 3 + [False]

    plain = fire(server, rule="only-timeouts", exit=1)
    doc = server.wait_run(plain)
    assert doc["status"] == "failed" and doc["attempt"] == 1 and len(doc["attempts"]) == 1


def test_queue_keeps_a_failed_runs_place_until_its_retry_has_ended(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`queue` is in order: run 1's first attempt fails while run 2 of its key waits; run 2
    starts only once run 1's retry has ended, not during its backoff, and says meanwhile that
    it waits for run 1."""
    records = setup(project)
    # Its first attempt fails where asked (a migration that met a lock), the next succeeds.
    write_script(project, "first_fails.sh",
                 '[ "$2" = 1 ] && [ "$HOOKRUNNER_ATTEMPT" = 1 ] && code=1\n'
                 'exec "$(dirname "$0")/rec.sh" "$1" "${code:-0}" "$3"\n')
    server = make_server(HOOKS + """
  - name: migrate
    hook: github
    run:
      shell:
        argv: [scripts/first_fails.sh, "0.3", "{{ payload.fail | default(0) }}", "{{ payload.tag }}"]
        env: {RECORDS: "@records"}
    concurrency: {key: db-migrate}
    retry: {attempts: 2, backoff: 1s}
""".replace("@records", str(records)))
    first = fire(server, fail=1, tag="one")
    started(records, first)
    second = fire(server, tag="two")
    # Meanwhile run 2 says it waits for run 1, in its backoff as in its attempts.
    wait_for("run 1's backoff", lambda: run_doc(server, first)["status"] == "queued")
    assert run_doc(server, second)["waiting"] == {"for": "concurrency key", "held_by": first}
    doc = server.wait_run(first)
    assert (doc["status"], doc["attempt"]) == ("succeeded", 2), doc
    assert server.wait_run(second)["status"] == "succeeded"
    failed, retried, after = record(records, first), record(records, first, 2), record(records, second)
    assert failed and retried and after and failed.end and retried.end and after.end
    assert after.start >= retried.end, "run 2 started before run 1's retry ended"
    assert retried.start - failed.end >= 1 * 0.8  # the backoff was waited out, run 2 unstarted


def test_an_action_refused_for_what_it_says_is_not_retried(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A path outside --root from the payload, or a template error: every attempt of the
    same stored action would be refused the same, so the rule's retries are not spent on
    it (one attempt, and the reason says why). A script that fails is retried as before."""
    retry = "    retry: {attempts: 3, backoff: 100ms}\n"
    server = make_server(HOOKS + f"""
  - name: outside
    hook: github
    when: payload.case == "outside"
    run: {{shell: {{argv: ["true"], cwd: "{{{{ payload.dir }}}}"}}}}
{retry}
  - name: typo
    hook: github
    when: payload.case == "typo"
    run: {{shell: {{argv: ["true", "{{{{ payload.nosuch.field }}}}"]}}}}
{retry}
  - name: fails
    hook: github
    when: payload.case == "fails"
    run: {{shell: {{argv: ["false"]}}}}
{retry}""")
    ids = {}
    for case in ("outside", "typo", "fails"):
        answer = post_github(server.url, GITHUB_SECRET, {"case": case, "dir": "../"})
        assert answer.status_code == 202, answer.text
        (ids[case],) = answer.json()["runs"]
    for case in ("outside", "typo"):
        doc = server.wait_run(ids[case])
        assert (doc["status"], doc["attempt"], len(doc["attempts"])) == ("failed", 1, 1), doc
        assert doc["reason"].endswith("(not retried: every attempt of this action would be "
                                      "refused the same)"), doc["reason"]
    assert "is outside --root" in server.wait_run(ids["outside"])["reason"]
    assert server.wait_run(ids["typo"])["reason"].startswith("template error: ")
    doc = server.wait_run(ids["fails"])
    assert (doc["status"], doc["attempt"]) == ("failed", 3), doc


def test_cancel_over_the_api_stops_the_tree(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`POST /api/runs/{id}/cancel` on a running run: `canceled`, every process of it gone."""
    records = setup(project)
    server = make_server(HOOKS + rule("long", records))
    run_id = fire(server, sleep=60, child=1)
    rec = wait_for("the grandchild", lambda: (r := record(records, run_id)) and r.children and r)
    with server.admin() as c:
        answer = c.post(f"/api/runs/{run_id}/cancel")
        assert answer.status_code == 202 and answer.json() == {"id": run_id, "status": "running"}
        assert c.post("/api/runs/run_nope/cancel").status_code == 404
    doc = server.wait_run(run_id)
    assert doc["status"] == "canceled" and doc["reason"] == "canceled by request"
    assert none_alive(rec.pids)


def test_a_queued_run_canceled_over_the_api_ends_in_the_log(
    make_server: Callable[..., Server], project: Path
) -> None:
    """It never starts, so no run.finished: its cancel is its only line (it had none)."""
    records = setup(project)
    server = make_server(HOOKS + rule("long", records, "    concurrency: {key: k}\n"))
    first = fire(server, sleep=60)
    waiting = fire(server, sleep=0)
    wait_for("the first run", lambda: record(records, first))
    with server.admin() as c:
        answer = c.post(f"/api/runs/{waiting}/cancel")
        assert answer.json() == {"id": waiting, "status": "canceled"}, answer.text
        c.post(f"/api/runs/{waiting}/cancel")  # again: it did nothing, so no line
        c.post(f"/api/runs/{first}/cancel")
        c.post(f"/api/runs/{first}/cancel")
    lines = [x for x in server.output().splitlines() if f"run_id={waiting}" in x]
    assert len(lines) == 1 and "run.cancel_requested" in lines[0] and "status=canceled" in lines[0]
    server.wait_run(first)
    assert len([x for x in server.output().splitlines()
                if f"run.cancel_requested run_id={first}" in x and "then=\"stopping it\"" in x]) == 1


def test_cancel_from_the_cli_is_picked_up_by_the_server(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`hookrunner cancel RUN` on the same --data, no server involved: the running server sees
    the request, and the run ends `canceled` with its tree gone; a queued run is canceled at once."""
    records = setup(project)
    server = make_server(HOOKS + rule("long", records,
                                      "    concurrency: {key: one, policy: queue}\n"))
    running = fire(server, sleep=60, child=1)
    queued = fire(server, sleep=0)
    rec = wait_for("the grandchild", lambda: (r := record(records, running)) and r.children and r)

    def cli_cancel(run_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hookrunner.cli", "cancel", run_id, "--data", str(server.data)],
            capture_output=True, text=True, timeout=30, env=server.env)

    out = cli_cancel(queued)
    assert out.returncode == 0 and f"{queued}: canceled (was queued)" in out.stdout, out.stderr
    doc = run_doc(server, queued)
    assert doc["status"] == "canceled" and doc["reason"] == "canceled before it started"

    out = cli_cancel(running)
    assert out.returncode == 0 and f"{running}: cancel requested (running;" in out.stdout, out.stderr
    doc = server.wait_run(running, timeout=10)
    assert doc["status"] == "canceled"
    assert none_alive(rec.pids)
    assert record(records, queued) is None
    missing = cli_cancel("run_nope")
    assert missing.returncode == 1 and "no run" in missing.stderr


def test_wait_answers_with_status_exit_code_and_output_tail(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`?wait=10s` answers 200 once the runs ended; a run outlasting `?wait=1s` answers 202;
    a malformed wait is a 400 and queues nothing."""
    records = setup(project)
    server = make_server(HOOKS + rule("job", records))
    r = post_github(server.url, GITHUB_SECRET, {"exit": 4, "tag": "waited"},
                    params={"wait": "10s"})
    assert r.status_code == 200, r.text
    (run,) = r.json()["runs"]
    assert run["status"] == "failed" and run["exit_code"] == 4
    assert "attempt 1 of job tag waited" in run["output"]
    assert r.json()["delivery_id"] and r.json()["status_url"]

    slow = post_github(server.url, GITHUB_SECRET, {"sleep": 3}, params={"wait": "1s"})
    assert slow.status_code == 202 and len(slow.json()["runs"]) == 1
    assert isinstance(slow.json()["runs"][0], str)

    # No rule matched: nothing to wait for, so it is done at once.
    unmatched = post_github(server.url, GITHUB_SECRET, {"rule": "none-such"},
                            params={"wait": "10s"})
    assert unmatched.status_code == 200 and unmatched.json()["runs"] == [], unmatched.text
    for zero in ("0", "0s", "0ms"):  # no wait asked for: answered as without ?wait
        unmatched = post_github(server.url, GITHUB_SECRET, {"rule": "none-such"},
                                params={"wait": zero})
        assert unmatched.status_code == 202 and unmatched.json()["runs"] == [], unmatched.text

    with httpx.Client() as c:
        for bad in ("soon", "-1s", "10x", ["1s", "3s"]):  # the last: which one was meant?
            body = b'{"tag": "never"}'
            answer = c.post(f"{server.url}/hooks/github", params={"wait": bad}, content=body,
                            headers={"X-Hub-Signature-256": github_signature(GITHUB_SECRET, body),
                                     "Content-Type": "application/json",
                                     "X-GitHub-Event": "push"})
            assert answer.status_code == 400 and "wait" in answer.json()["error"]
            if isinstance(bad, list):
                assert answer.json()["error"] == "wait: given more than once"
    with server.admin() as c:
        runs = c.get("/api/runs").json()["runs"]
    assert len(runs) == 2  # the bad requests queued nothing


def test_a_skip_run_never_drops_the_waiting_runs_of_other_rules_on_its_key(
    make_server: Callable[..., Server], project: Path
) -> None:
    """An automatic deploy (`skip`) and a forced one (`replace`) share a key: the forced one
    cancels the running deploy, and an automatic one arriving just after it is skipped,
    not the replacement (it was: nothing ran on the key). Queued runs of the key are not
    dropped by a skip run either."""
    records = setup(project)
    server = make_server(HOOKS
                         + rule("auto", records, "    concurrency: {key: K, policy: skip}\n")
                         + rule("force", records, "    concurrency: {key: K, policy: replace}\n")
                         + rule("migrate", records, "    concurrency: {key: K, policy: queue}\n"))
    running = fire(server, rule="auto", sleep=60, tag="running")
    started(records, running)
    forced = fire(server, rule="force", sleep=5, tag="forced")  # holds K past the next POST
    late = fire(server, rule="auto", tag="late")
    assert server.wait_run(running)["status"] == "canceled"
    assert server.wait_run(forced)["status"] == "succeeded"
    assert server.wait_run(late)["status"] == "skipped"
    # A queue run holds the key; two more queue runs wait; a skip run arriving is skipped
    # and the two still run, in order.
    first = fire(server, rule="migrate", sleep=6, tag="m1")  # holds K past three POSTs
    started(records, first)
    queued = [fire(server, rule="migrate", tag=f"m{i}") for i in (2, 3)]
    assert server.wait_run(fire(server, rule="auto", tag="auto"))["status"] == "skipped"
    docs = [server.wait_run(r) for r in [first, *queued]]
    assert [d["status"] for d in docs] == ["succeeded"] * 3, docs
    recs = [record(records, r) for r in [first, *queued]]
    assert all(r is not None and r.end is not None for r in recs)
    assert recs[0].start < recs[1].start < recs[2].start  # type: ignore[union-attr]


def test_a_run_replaced_twice_while_it_stops_names_the_run_that_replaced_it_last(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A ignores SIGTERM (5 s to SIGKILL); B replaces it, then C replaces B before A is gone:
    A's reason named B, which never ran, while its superseded_by named C."""
    write_script(project, "stubborn.sh", "trap '' TERM\nsleep \"$1\"\n")
    server = make_server(HOOKS + """
  - name: deploy
    hook: github
    run: {shell: {argv: ["scripts/stubborn.sh", "{{ payload.sleep }}"]}}
    concurrency: {key: deploy, policy: replace}
""")
    a = fire(server, sleep=60)
    wait_for("A running", lambda: run_doc(server, a)["status"] == "running")
    b = fire(server, sleep=0)
    time.sleep(1)
    c = fire(server, sleep=0)
    doc_a = server.wait_run(a, timeout=30)
    assert doc_a["status"] == "canceled" and doc_a["superseded_by"] == c, doc_a
    assert doc_a["reason"] == f"canceled: replaced by run {c}", doc_a
    doc_b = server.wait_run(b)
    assert (doc_b["status"], doc_b["superseded_by"]) == ("skipped", c), doc_b
    assert server.wait_run(c)["status"] == "succeeded"
