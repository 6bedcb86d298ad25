"""`serve --http-workers N`: a supervisor, the main process, N HTTP workers on one port.

Real processes throughout: the server is started as a user would, deliveries are signed
POSTs that land on whichever worker the kernel hands the connection to, and the admin API,
the run log and /metrics are answered by the main process through a worker's forwarding.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.integration.exec_support import HOOKS
from tests.serverproc import ADMIN_TOKEN, Server, post_github

RULES = HOOKS + """  - name: work
    hook: github
    when: event == "push"
    run:
      shell:
        argv: ["scripts/work.sh", "{{ payload.tag }}", "{{ payload.sleep | default(0) }}"]
"""


def children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        kids |= {int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    return kids


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def push(server: Server, tag: str, *, delivery: str | None = None, sleep: float = 0,
         **kw: object) -> httpx.Response:
    return post_github(server.url, GITHUB_SECRET, {"tag": tag, "sleep": sleep},
                       delivery=delivery or f"d-{tag}", **kw)


def script(project: Path) -> None:
    write_script(project, "work.sh", 'echo "tag=$1"; sleep "$2"\n')


def two_workers(make_server: Callable[..., Server], project: Path) -> tuple[Server, int]:
    """A server with `--http-workers 2`, once its three processes are up; and its pid."""
    script(project)
    server = make_server(RULES, args=["--http-workers", "2"])
    assert server.proc is not None
    pid = server.proc.pid
    until(lambda: len(children(pid)) == 3, 10, "main + 2 workers")
    return server, pid


def test_workers_accept_the_main_process_runs_and_answers_admin_requests(
    make_server: Callable[..., Server], project: Path
) -> None:
    server, _ = two_workers(make_server, project)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: push(server, f"t{i}"), range(24)))
    assert [a.status_code for a in answers] == [202] * 24
    runs = [server.wait_run(a.json()["runs"][0]) for a in answers]
    assert {r["status"] for r in runs} == {"succeeded"}
    with server.admin() as c:  # forwarded to the main process by whichever worker took it
        log = c.get(f"/api/runs/{runs[0]['id']}/log").text
        assert "tag=t0" in log
        assert c.get(f"/api/deliveries/{answers[3].json()['delivery_id']}").status_code == 200
        assert httpx.get(server.url + "/api/runs").status_code == 401  # still guarded
        metrics = c.get("/metrics").text
    # Counted in every worker, summed by the main process.
    assert 'hookrunner_deliveries_total{hook="github",outcome="accepted"} 24.0' in metrics
    assert 'hookrunner_runs_finished_total{rule="work",status="succeeded"} 24.0' in metrics
    # A labelled metric with no sample yet is described, as one process describes it.
    assert "# TYPE hookrunner_condition_errors_total counter\n" in metrics
    assert metrics.count("# TYPE hookrunner_deliveries_total counter") == 1
    # Dedup holds across processes: the same sender id, on any worker, runs nothing new.
    again = [push(server, "t5") for _ in range(4)]
    assert {a.status_code for a in again} == {200}
    assert {a.json()["delivery_id"] for a in again} == {answers[5].json()["delivery_id"]}
    # The console: its session lives in the main process, so it holds on every worker.
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        login = browser.post("/login", data={"token": ADMIN_TOKEN, "next": "/"})
        assert login.status_code == 303, login.text
        for _ in range(6):  # new connections: the kernel hands them to either worker
            page = browser.get("/", headers={"Connection": "close"})
            assert page.status_code == 200 and "Log in" not in page.text
    assert "console.login client=127.0.0.1" in server.output()
    # The workers' way to the main process keeps no cookie: the session stays the browser's.
    # (A cookie jar there once handed it to every later request without one.)
    for _ in range(8):
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            assert anonymous.get("/api/runs").status_code == 401
            assert anonymous.get("/", headers={"Accept": "text/html"}).status_code == 303
    # ?wait= on a worker: the answer carries the run's end, read from the store.
    waited = push(server, "waited", params={"wait": "20s"})
    assert waited.status_code == 200, waited.text
    (summary,) = waited.json()["runs"]
    assert summary["status"] == "succeeded" and "tag=waited" in summary["output"]


def test_max_queued_is_one_bound_for_all_workers(
    make_server: Callable[..., Server], project: Path
) -> None:
    script(project)
    server = make_server(RULES, args=["--http-workers", "3", "--workers", "1", "--max-queued", "4"])
    def timed_push(i: int) -> tuple[httpx.Response, float]:
        answer = push(server, f"q{i}", sleep=0.3)
        return answer, time.time()

    with ThreadPoolExecutor(20) as pool:
        timed = list(pool.map(timed_push, range(20)))
    answers = [a for a, _ in timed]
    accepted = [a for a in answers if a.status_code == 202]
    full = [a for a in answers if a.status_code == 503]
    assert len(accepted) + len(full) == 20
    assert full and all(a.headers["Retry-After"] == "5" for a in full)
    # One worker alone could admit 4 (+1 running); three with their own budgets could admit 15.
    docs = [server.wait_run(a.json()["runs"][0], timeout=60) for a in accepted]
    # A run that started before the last 202 was answered may have freed a place (its
    # delivery's created_at is stamped before admission, so it cannot tell).
    last_accept = max(t for a, t in timed if a.status_code == 202)
    started_by_then = sum(1 for d in docs if d["started_at"] <= last_accept)
    assert len(accepted) <= 4 + started_by_then, (len(accepted), started_by_then)
    assert {d["status"] for d in docs} == {"succeeded"}


def test_a_worker_that_dies_is_replaced_and_the_server_stops_cleanly(
    make_server: Callable[..., Server], project: Path
) -> None:
    server, pid = two_workers(make_server, project)
    before = children(pid)
    main = int(re.search(r"server.http_workers .*main_pid=(\d+)", server.output()).group(1))  # type: ignore[union-attr]
    worker = min(before - {main})
    os.kill(worker, signal.SIGKILL)
    until(lambda: len(children(pid)) == 3 and worker not in children(pid), 15, "a replacement")
    answers = [push(server, f"after{i}") for i in range(6)]
    assert [a.status_code for a in answers] == [202] * 6
    assert {server.wait_run(a.json()["runs"][0])["status"] for a in answers} == {"succeeded"}
    assert "server.http_worker_exited" in server.output()
    everyone = children(pid) | {pid}
    server.stop()
    assert server.proc.returncode in (0, 128 + signal.SIGTERM)
    assert not [p for p in everyone if Path(f"/proc/{p}").exists()]
    assert "server.stopped" in server.output()


def test_a_dead_main_process_stops_the_server_at_once_though_a_wait_is_pending(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Killed with a `?wait` pending on a worker: nothing could end the run it waited for,
    yet the worker waited out the grace period (30 s), with the port closed and the
    supervisor, the unit's main process, alive: no restart for that long."""
    server, _ = two_workers(make_server, project)
    main = int(re.search(r"server.http_workers .*main_pid=(\d+)", server.output()).group(1))  # type: ignore[union-attr]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(push, server, "waits", sleep=40, params={"wait": "120s"})
        until(lambda: "run.started" in server.output(), 15, "the run")
        t0 = time.monotonic()
        os.kill(main, signal.SIGKILL)
        assert server.proc is not None
        server.proc.wait(timeout=40)
        took = time.monotonic() - t0
        answer = waiting.result(timeout=40)
    assert took < 10, took  # the default grace is 30 s
    assert answer.status_code == 202, answer.text  # journaled: told, not waited for
    assert "server.main_exited" in server.output()
    server.start()  # the next start stops the dead main process's action (its start marks)
    server.stop()


def test_a_health_check_hears_503_in_time_from_a_main_process_that_does_not_answer(
    make_server: Callable[..., Server], project: Path
) -> None:
    """The main process stopped (SIGSTOP, a hang): a worker forwarded /readyz and waited
    without end, while it went on answering hooks 202 whose runs nothing started."""
    server, _ = two_workers(make_server, project)
    main = int(re.search(r"server.http_workers .*main_pid=(\d+)", server.output()).group(1))  # type: ignore[union-attr]
    os.kill(main, signal.SIGSTOP)
    try:
        for path in ("/readyz", "/healthz"):
            answer = httpx.get(server.url + path, timeout=30)
            assert answer.status_code == 503, answer.text
            assert answer.json() == {"error": "main process not answering"}
    finally:
        os.kill(main, signal.SIGCONT)
    assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
    assert "http.main_not_answering" in server.output()


def test_a_crash_of_the_whole_server_loses_no_accepted_delivery(
    make_server: Callable[..., Server], project: Path
) -> None:
    """SIGKILL of every process (the process group) after deliveries were answered 202, then a
    start on the same data dir with one process: each of them runs."""
    script(project)
    server = make_server(RULES, args=["--http-workers", "2", "--workers", "1"])
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: push(server, f"k{i}", sleep=0.2), range(16)))
    accepted = [a.json()["runs"][0] for a in answers if a.status_code == 202]
    assert len(accepted) == 16
    server.kill()
    again = Server(server.rules, server.data, server.root, env=server.env).start()
    try:
        docs = [again.wait_run(r, timeout=60) for r in accepted]
    finally:
        again.stop()
    # Runs cut off mid-action end `failed (interrupted)` (no retry rule); none is lost.
    assert all(d["status"] in ("succeeded", "failed") for d in docs)
    assert sum(d["status"] == "succeeded" for d in docs) >= len(accepted) - 1


def test_ctrl_c_drains_running_actions_and_admin_posts_are_forwarded(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Ctrl-C reaches every process of the terminal's group (and the supervisor passes it
    on): running actions still get their grace period, and the server stops cleanly."""
    script(project)
    server = make_server(RULES, args=["--http-workers", "2"])
    assert server.proc is not None
    long = push(server, "long", sleep=1.5).json()["runs"][0]
    short = push(server, "short", sleep=30).json()["runs"][0]
    with server.admin() as c:
        until(lambda: c.get(f"/api/runs/{long}").json()["status"] == "running", 10, "a start")
        # An admin POST, forwarded by a worker: cancel the 30 s run.
        assert c.post(f"/api/runs/{short}/cancel").status_code in (200, 202)
        # A body past the forwarding bound is refused by the worker itself.
        too_big = c.post("/api/runs", content=b"x" * (2 * 1024 * 1024))
        assert too_big.status_code == 413
    assert server.wait_run(short)["status"] == "canceled"
    os.killpg(server.proc.pid, signal.SIGINT)
    server.proc.wait(timeout=30)
    out = server.output()
    (finished,) = [line for line in out.splitlines() if f"run.finished run_id={long}" in line]
    assert "status=succeeded" in finished  # drained, not cut off
    assert "server.stopped" in out


def _raw_answer(server: Server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_odd_targets_are_answered_as_one_process_answers_them(
    make_server: Callable[..., Server], project: Path
) -> None:
    """What the forwarding to the main process would change is answered by the worker:
    httpx removes dot segments (`/x/../hooks/github` became a hook there, with httpx's own
    headers and no client address) and cannot send `OPTIONS *`; a second Host header is
    a 400 in the worker (h11 would refuse to forward it)."""
    server, _ = two_workers(make_server, project)
    body = b'{"tag": "odd"}'
    signed = b"sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest().encode()
    with server.admin() as c:
        before = len(c.get("/api/deliveries").json()["deliveries"])
    for path, status in ((b"/hooks/./github", b"404"), (b"/x/../hooks/github", b"404"),
                         (b"/x/%2e%2e/hooks/github", b"404"), (b"/hooks/github/..", b"404")):
        for _ in range(4):  # whichever worker takes the connection
            answer = _raw_answer(server, b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n"
                                 b"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
                                 b"X-Hub-Signature-256: " + signed + b"\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
            assert answer.startswith(b"HTTP/1.1 " + status + b" "), (path, answer)
    with server.admin() as c:
        assert len(c.get("/api/deliveries").json()["deliveries"]) == before
    options = _raw_answer(server, b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
    assert options.startswith(b"HTTP/1.1 404 "), options
    # Wrong tokens on such a path were judged by each worker, with a limit of its own: the
    # server took (workers + 1) times the tries it should. None is judged there now.
    for i in range(25):
        answer = _raw_answer(server, b"GET /api/./runs HTTP/1.1\r\nHost: t\r\n"
                             b"Authorization: Bearer wrong-%d\r\n\r\n" % i)
        assert answer.startswith(b"HTTP/1.1 404 "), answer
    with server.admin() as c:
        assert c.get("/api/runs").status_code == 200  # nothing counted against this address
    twice = _raw_answer(server, b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert twice.startswith(b"HTTP/1.1 400 ") and b"exactly one Host header" in twice, twice
    assert "http.forward_failed" not in server.output()


def test_an_api_write_without_a_token_is_refused_unread_as_one_process_refuses_it(
    make_server: Callable[..., Server], project: Path
) -> None:
    """probe: a worker read an API POST's body (asking for it with `100 Continue`) before
    the main process refused it 401, and answered a large declared one 413 without closing:
    the next request on the connection was read as that body, and never answered."""
    server, _ = two_workers(make_server, project)
    for _ in range(4):  # whichever worker takes the connection
        answer = _raw_answer(server, b"POST /api/runs/run_x/cancel HTTP/1.1\r\nHost: t\r\n"
                             b"Expect: 100-continue\r\nContent-Length: 5000000\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401 "), answer
        assert b"100 Continue" not in answer and b"connection: close" in answer.lower(), answer
        assert b"www-authenticate: bearer" in answer.lower(), answer
    for _ in range(4):  # with a token, a body past the bound, not asked for: refused, closed
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"POST /api/runs/run_x/cancel HTTP/1.1\r\nHost: t\r\n"
                      b"Authorization: Bearer x\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 5000000\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 413 ") and b"connection: close" in data.lower(), data
        assert data.count(b"HTTP/1.1 ") == 1, data  # closed, not the healthz read as body
    # Without `Expect`, a refused body is drained, and the connection serves the next request.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /api/runs/run_x/cancel HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  b"\r\nabcdeGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 401 ") and b"HTTP/1.1 200 " in data, data


def test_the_rules_are_reported_once_not_once_per_process(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Every process loads the rules; only the main one says what it found."""
    server, _ = two_workers(make_server, project)
    assert server.output().count("rules.loaded") == 1, server.output()
    rules = project / "rules" / "rules.yaml"
    rules.write_text(rules.read_text() + "  - name: [\n")  # a YAML error: the reload fails
    until(lambda: "rules.reload_failed" in server.output(), 10, "the failed reload")
    time.sleep(1.5)  # the workers' watchers have looked too (they look every second)
    log = server.output()
    assert log.count("rules.reload_failed") == 1 and log.count("rules.error") == 1, log
    assert push(server, "still").status_code == 202  # the live rules serve on in every process


def test_a_generated_admin_token_is_reported_once(
    make_server: Callable[..., Server], project: Path
) -> None:
    script(project)
    server = make_server(RULES, args=["--http-workers", "2"], env={"HOOKRUNNER_ADMIN_TOKEN": ""})
    assert server.proc is not None
    pid = server.proc.pid
    until(lambda: len(children(pid)) == 3, 10, "main + 2 workers")
    until(lambda: server.output().count("server.http_worker_started") == 2, 10, "both workers")
    assert server.output().count("server.admin_token") == 1, server.output()


def test_a_worker_started_while_the_rules_files_are_broken_serves_the_live_rules(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A failed reload keeps the live rules in every process; a worker replacing one that
    died has none yet, and from the broken files it would answer 404 to half the senders."""
    server, pid = two_workers(make_server, project)
    rules = project / "rules" / "rules.yaml"
    rules.write_text(rules.read_text() + "  - name: [\n")
    until(lambda: "rules.reload_failed" in server.output(), 10, "the failed reload")
    main = int(re.search(r"server.http_workers .*main_pid=(\d+)", server.output()).group(1))  # type: ignore[union-attr]
    for worker in sorted(children(pid) - {main}):  # both: every worker is a replacement
        os.kill(worker, signal.SIGKILL)
        until(lambda w=worker: len(children(pid)) == 3 and w not in children(pid), 15,  # type: ignore[misc]
              "a replacement")
    until(lambda: server.output().count("rules.loaded_copy") == 2, 10, "both on the copy")
    answers = [push(server, f"broken{i}") for i in range(8)]
    assert [a.status_code for a in answers] == [202] * 8
    rules.write_text(rules.read_text().replace("  - name: [\n", ""))  # fixed: loaded by all
    until(lambda: server.output().count("rules.loaded hooks=") >= 2, 10, "the fixed files")
    assert [push(server, f"fixed{i}").status_code for i in range(4)] == [202] * 4


def test_a_replacement_worker_keeps_the_secret_the_others_verify_with(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Broken rules files and a rotated secret meanwhile: every process verifies with the
    new secret (the live rules loaded again with it), a replacement worker too, or a
    delivery's fate depends on the process that took it; also once the file is gone."""
    (project / "sec").write_text("oldsecret\n")
    rules_text = HOOKS_TOKEN = """
hooks:
  t:
    verify: {token: {secret: {file: sec}, header: X-Token}}
rules:
  - {name: echo, hook: t, run: {shell: {argv: ["true"]}}}
"""
    server = make_server(rules_text, args=["--http-workers", "2"])
    assert server.proc is not None
    pid = server.proc.pid
    until(lambda: len(children(pid)) == 3, 10, "main + 2 workers")
    rules = project / "rules" / "rules.yaml"
    rules.write_text(HOOKS_TOKEN + "  - name: [\n")
    until(lambda: "rules.reload_failed" in server.output(), 10, "the failed reload")
    (project / "sec").write_text("newsecret\n")
    main = int(re.search(r"server.http_workers .*main_pid=(\d+)", server.output()).group(1))  # type: ignore[union-attr]

    def replace_workers() -> None:
        for worker in sorted(children(pid) - {main}):
            os.kill(worker, signal.SIGKILL)
            until(lambda w=worker: len(children(pid)) == 3 and w not in children(pid), 15,  # type: ignore[misc]
                  "a replacement")

    def statuses(token: str) -> set[int]:
        return {httpx.post(f"{server.url}/hooks/t", json={}, headers={"X-Token": token},
                           timeout=10).status_code for _ in range(12)}

    replace_workers()
    until(lambda: server.output().count("rules.loaded_copy") >= 2, 10, "both on the copy")
    until(lambda: statuses("newsecret") == {202}, 15, "every process on the new secret")
    assert statuses("oldsecret") == {401}
    (project / "sec").unlink()
    replace_workers()
    until(lambda: server.output().count("rules.loaded_copy") >= 4, 10, "both on the copy")
    # The copy has the secret the live rules verify with: the rotated one.
    assert statuses("newsecret") == {202} and statuses("oldsecret") == {401}


def test_a_replacement_worker_without_a_hooks_secret_refuses_that_hook_alone(
    make_server: Callable[..., Server], project: Path
) -> None:
    """An absolute secret path (not kept in the copy) gone as well as the rules broken: the
    replacement loads the copy with that hook unavailable (503, never 404) and serves the
    others. And a copy that does not load at all: every hook 503 in that process."""
    secret = project / "abs-sec"
    secret.write_text("s3cret\n")
    tmp = project / "tmp"
    tmp.mkdir()
    text = f"""
hooks:
  t:
    verify: {{token: {{secret: {{file: {secret}}}, header: X-Token}}}}
  open:
    verify: {{none: {{}}}}
rules:
  - {{name: echo, hook: [t, open], run: {{shell: {{argv: ["true"]}}}}}}
"""
    server = make_server(text, args=["--http-workers", "2"], env={"TMPDIR": str(tmp)})
    assert server.proc is not None
    pid = server.proc.pid
    until(lambda: len(children(pid)) == 3, 10, "main + 2 workers")
    (project / "rules" / "rules.yaml").write_text(text + "  - name: [\n")
    until(lambda: "rules.reload_failed" in server.output(), 10, "the failed reload")
    secret.unlink()
    main = int(re.search(r"server.http_workers .*main_pid=(\d+)", server.output()).group(1))  # type: ignore[union-attr]

    def replace_workers() -> None:
        for worker in sorted(children(pid) - {main}):
            os.kill(worker, signal.SIGKILL)
            until(lambda w=worker: len(children(pid)) == 3 and w not in children(pid), 15,  # type: ignore[misc]
                  "a replacement")

    replace_workers()
    until(lambda: server.output().count("rules.loaded_copy") >= 2, 10, "both from the copy")
    assert "rules.hook_unavailable" in server.output()
    r = httpx.post(f"{server.url}/hooks/t", json={}, headers={"X-Token": "s3cret"}, timeout=10)
    assert r.status_code == 503 and r.headers["retry-after"] == "60", r.text
    assert httpx.post(f"{server.url}/hooks/open", json={}, timeout=10).status_code == 202
    # The copy itself broken: nothing loads in the replacements, which say "retry".
    (copy,) = tmp.glob("hookrunner-*/rules-copy")
    for f in copy.resolve().glob("*.yaml"):
        f.write_text("hooks: [\n")
    replace_workers()
    until(lambda: server.output().count("rules.copy_failed") >= 2, 10, "both degraded")
    r = httpx.post(f"{server.url}/hooks/open", json={}, timeout=10)
    assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text


def test_a_hook_unavailable_at_the_start_is_reported_once_not_by_every_worker(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Each worker said `rules.loaded_copy` ("the rules files do not load", though they
    do) and repeated the main process's `rules.hook_unavailable`."""
    rules = RULES.replace("hooks:", "hooks:\n  unset:\n    verify: {token: {secret: "
                                    "{env: HR_NEVER_SET_EITHER}}}", 1)
    server = make_server(rules, args=["--http-workers", "2"])
    assert server.proc is not None
    pid = server.proc.pid
    until(lambda: len(children(pid)) == 3, 10, "main + 2 workers")
    for _ in range(6):  # whichever worker takes it: the same answer
        r = httpx.post(f"{server.url}/hooks/unset", json={}, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "60", r.text
    out = server.output()
    assert out.count(" rules.hook_unavailable hook=") == 1 and "rules.loaded_copy" not in out, out


def test_a_killed_servers_private_directory_is_swept_at_the_next_start(
    make_server: Callable[..., Server], project: Path
) -> None:
    """SIGKILL leaves the supervisor's temporary directory (sockets, locks, metrics files):
    the next `--http-workers` server removes it, and nothing it did not make."""
    tmp = project / "tmp"
    tmp.mkdir()
    (tmp / "hookrunner-made-by-someone-else").mkdir()  # no owner.lock: not ours to remove
    script(project)
    server = make_server(RULES, args=["--http-workers", "2"], env={"TMPDIR": str(tmp)})
    (first,) = [d for d in tmp.iterdir() if (d / "owner.lock").exists()]
    server.kill()
    assert first.exists()
    again = make_server(RULES, args=["--http-workers", "2"], env={"TMPDIR": str(tmp)})
    assert not first.exists()
    assert (tmp / "hookrunner-made-by-someone-else").exists()
    assert "server.runtime_swept dirs=1" in again.output()
    (second,) = [d for d in tmp.iterdir() if (d / "owner.lock").exists()]
    again.stop()
    assert not second.exists()  # a clean stop removes its own


def _running(make_server: Callable[..., Server], project: Path, sleep: float) -> tuple[Server, str]:
    """A `--http-workers 2` server with a 60 s grace period, running one run of `sleep` s."""
    script(project)
    server = make_server(RULES, args=["--http-workers", "2"], env={"HOOKRUNNER_GRACE": "60s"})
    run_id = push(server, "long", sleep=sleep).json()["runs"][0]
    with server.admin() as c:
        until(lambda: c.get(f"/api/runs/{run_id}").json()["status"] == "running", 10, "a start")
    return server, run_id


@pytest.mark.parametrize(("to_group", "sig"), [(True, signal.SIGINT), (True, signal.SIGTERM),
                                            (False, signal.SIGINT), (False, signal.SIGTERM)])
def test_a_second_stop_signal_cancels_at_once(
    make_server: Callable[..., Server], project: Path, to_group: bool, sig: int,
) -> None:
    """A Ctrl-C, or a SIGTERM to the whole group (`kill %1`, systemd's default KillMode),
    reaches every process twice (itself, and as the supervisor passes it on): that is one
    stop, which drains. A second one cancels at once, whether it goes to the group or to the
    supervisor alone (`kill PID`), which the children only hear of from the supervisor."""
    server, run_id = _running(make_server, project, sleep=60)

    def stop() -> None:
        assert server.proc is not None
        if to_group:
            os.killpg(server.proc.pid, sig)
        else:
            server.proc.send_signal(sig)

    stop()
    time.sleep(1.0)
    assert server.proc.poll() is None  # draining (canceled at once, it was gone in 0.1 s)
    assert f"run.finished run_id={run_id}" not in server.output()
    started = time.monotonic()
    stop()
    server.proc.wait(timeout=30)
    assert time.monotonic() - started < 15  # the run's stop (SIGTERM, 5 s, SIGKILL), not 60 s
    (finished,) = [line for line in server.output().splitlines()
                   if f"run.finished run_id={run_id}" in line]
    assert "status=canceled" in finished


def test_the_two_copies_of_one_stop_count_once_even_handled_apart(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A signal to the whole group reaches the main process itself and through the
    supervisor; arriving together they may merge into one, but handled apart they were
    counted as two stops, and the running run was canceled at once."""
    server, run_id = _running(make_server, project, sleep=3)
    assert server.proc is not None
    main = int(re.search(r"main_pid=(\d+)", server.output()).group(1))  # type: ignore[union-attr]
    os.kill(main, signal.SIGTERM)  # the group's copy, first
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)  # the supervisor passes it on
    server.proc.wait(timeout=30)
    (finished,) = [line for line in server.output().splitlines()
                   if f"run.finished run_id={run_id}" in line]
    assert "status=succeeded" in finished  # drained, not canceled


def test_a_stop_while_the_workers_are_being_started_is_quiet(project: Path) -> None:
    """SIGTERM the moment the main process is up: the supervisor closed the listening ports
    and went on forking workers, which died on the closed sockets with a traceback (2 tries
    in 10 here). The moment is a race: tried several times."""
    (project / "rules" / "rules.yaml").write_text(RULES)
    for attempt in range(8):
        server = Server(project / "rules", project / f"data-{attempt}", project,
                        env={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET},
                        args=["--http-workers", "2"])
        server.data.mkdir(mode=0o700)
        with open(server.log_path, "ab") as log:
            server.proc = server._spawn(log)
        deadline = time.monotonic() + 30
        while "server.started" not in server.output():
            assert time.monotonic() < deadline and server.proc.poll() is None, server.output()
            time.sleep(0.002)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) in (0, 128 + signal.SIGTERM), server.output()
        out = server.output()
        assert "Traceback" not in out and "Bad file descriptor" not in out, out
        assert "server.stopped" in out


def test_a_sighup_to_any_process_reloads_every_process(
    make_server: Callable[..., Server], project: Path
) -> None:
    """systemd signals the supervisor (its MAINPID), but an operator may signal the main
    process the log names, or a worker: each passes it up, and every process reloads."""
    server, pid = two_workers(make_server, project)
    until(lambda: server.output().count("server.http_worker_started") == 2, 10, "both workers")
    log = server.output()
    main = int(re.search(r"server.http_workers .*main_pid=(\d+)", log).group(1))  # type: ignore[union-attr]
    assert f"supervisor_pid={pid} " in log, log
    worker = min(children(pid) - {main})
    rules = project / "rules" / "rules.yaml"
    for n, target in enumerate((worker, main, pid), start=2):
        loaded = server.output().count("rules.loaded hooks=")
        rules.write_text(RULES.replace("name: work\n", f"name: work{n}\n"))
        os.kill(target, signal.SIGHUP)
        # The main process reloads (it logs; workers are quiet), even for a worker's signal.
        until(lambda c=loaded: server.output().count("rules.loaded hooks=") > c, 10,  # type: ignore[misc]
              f"the main process's reload after a SIGHUP to {target}")
        until(lambda n=n: all(_rule_of(server, push(server, f"t{n}-{i}", delivery=f"s{n}-{i}"))
                              == f"work{n}" for i in range(6)), 10, "every worker's reload")  # type: ignore[misc]
    assert server.proc is not None and server.proc.poll() is None
    assert len(children(pid)) == 3  # no process died of a signal it did not take yet


def _rule_of(server: Server, answer: httpx.Response) -> str:
    assert answer.status_code == 202, answer.text
    with server.admin() as c:
        rule: str = c.get(f"/api/runs/{answer.json()['runs'][0]}").json()["rule"]
    return rule
