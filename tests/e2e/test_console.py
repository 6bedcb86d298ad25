"""The web console in a real headless Chromium against a real `hookrunner serve` subprocess:
login, the deliveries list (live), a delivery's condition results, a run's live log, replay,
cancel and the rules page. Screenshots land in test-artifacts/e2e/."""

from __future__ import annotations

import itertools
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from hookrunner.api import MAX_LOG_STREAMS
from tests.e2e.conftest import shot
from tests.serverproc import ADMIN_TOKEN, Server, github_signature, post_github

SECRET = "e2e-github-secret"

RULES = """
hooks:
  github:
    verify:
      github:
        secret: {env: GITHUB_WEBHOOK_SECRET}
    description: Pushes of octo/app.
rules:
  - name: deploy
    hook: github
    description: Deploys main; waits for the test's gate file between steps.
    when: event == "push" and payload.ref == "refs/heads/main"
    run:
      shell:
        argv: ["scripts/deploy.sh", "{{ payload.after }}"]
  - name: long-job
    hook: github
    when: event == "push" and payload.ref == "refs/heads/long"
    run:
      shell:
        argv: ["scripts/long.sh"]
  - name: bidi-hold
    hook: github
    when: event == "push" and payload.ref == "refs/heads/bidi"
    concurrency: {key: bidi}
    run: {shell: {argv: ["sleep", "3"]}}
  - name: bidi-play
    hook: github
    when: event == "push" and payload.ref == "refs/heads/bidi"
    concurrency: {key: bidi}
    run: {ansible: {playbook: "{{ payload.name }}"}}
  - name: flaky
    hook: github
    when: event == "push" and payload.ref == "refs/heads/flaky"
    retry: {attempts: 2, backoff: 5s}
    run:
      shell:
        argv: ["scripts/flaky.sh"]
"""

# Prints a line, then holds until the test opens its gate: the test sees output of a run that
# is provably still running, without guessing at timing.
DEPLOY = """#!/bin/sh
echo "deploying $1"
printf '\033[1;32mstep 1 of 3: fetch\033[0m\a\n'
printf 'artifact: evil\u202etxt.exe\n'  # which would read evilexe.txt
printf '\033[3'  # an escape cut in two: its rest comes after the gate, in another chunk
n=0
while [ ! -e "{gates}/$1" ]; do
  n=$((n + 1)); [ $n -gt 600 ] && echo "gate never opened" && exit 3
  sleep 0.05
done
printf '1mgate open\033[0m\n'
echo "step 2 of 3: migrate"
sleep 0.2
echo "step 3 of 3: done"
"""
LONG = """#!/bin/sh
echo "long job started"
sleep 300
echo "long job finished"
"""
FLAKY = """#!/bin/sh
[ "$HOOKRUNNER_ATTEMPT" = 1 ] && echo "ERROR: disk full on /var" && exit 3
echo "attempt $HOOKRUNNER_ATTEMPT: space freed"
"""

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gates: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("console")
    (root / "rules").mkdir()
    (root / "rules" / "rules.yaml").write_text(RULES)
    (root / "scripts").mkdir()
    for name, text in (("deploy.sh", DEPLOY.format(gates=gates)), ("long.sh", LONG),
                       ("flaky.sh", FLAKY)):
        (root / "scripts" / name).write_text(text)
        (root / "scripts" / name).chmod(0o755)
    srv = Server(root / "rules", root / "data", root, env={"GITHUB_WEBHOOK_SECRET": SECRET}).start()
    yield srv
    srv.stop()


def login(page: Page, server: Server, path: str = "/") -> None:
    page.goto(server.url + path)
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-submit")
    expect(page.locator("#logout")).to_be_visible()


def push(server: Server, gates: Path, ref: str = "refs/heads/main", *, open_gate: bool = True
         ) -> dict[str, Any]:
    """Send a signed push; its deploy run passes the gate at once unless open_gate is False."""
    commit = f"c{next(_ids):04d}{int(time.time() * 1000) % 100000}"
    if open_gate:
        (gates / commit).touch()
    r = post_github(server.url, SECRET, {"ref": ref, "after": commit,
                                         "repository": {"full_name": "octo/app"}},
                    delivery=f"gh-{commit}")
    assert r.status_code == 202, r.text
    doc: dict[str, Any] = r.json()
    doc["commit"] = commit
    return doc


def api_run(server: Server, run_id: str) -> dict[str, Any]:
    with server.admin() as c:
        doc: dict[str, Any] = c.get(f"/api/runs/{run_id}").json()
        return doc


def mark_page(page: Page) -> None:
    """Tag this document, so a later check can prove the page updated without reloading."""
    page.evaluate("window.__noReload = 'still here'")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload") == "still here"


def test_login_refuses_a_wrong_token_and_admits_the_admin_token(
    page: Page, context: BrowserContext, server: Server
) -> None:
    page.goto(server.url + "/rules")
    expect(page).to_have_url(f"{server.url}/login?next=%2Frules")
    page.fill("#token", "not-the-token")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("not the admin token")
    assert context.cookies() == []
    shot(page, "01-login-refused")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-submit")
    expect(page).to_have_url(f"{server.url}/rules")  # back where the login was asked for
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in cookie["value"]
    page.click("#logout")
    expect(page).to_have_url(f"{server.url}/login")
    # The old session is over on the server too, not just forgotten by the browser.
    r = httpx.get(server.url + "/api/runs", cookies={cookie["name"]: cookie["value"]})
    assert r.status_code == 401


def test_deliveries_list_shows_new_deliveries_live_with_their_runs(
    page: Page, server: Server, gates: Path
) -> None:
    first = push(server, gates)
    server.wait_run(first["runs"][0])
    login(page, server)
    row = page.locator(f"tr[data-id='{first['delivery_id']}']")
    expect(row).to_contain_text("github")
    expect(row).to_contain_text("push")
    expect(row).to_contain_text("127.0.0.1")
    expect(row).to_contain_text("deploy · succeeded")
    mark_page(page)
    # A keyboard user on a row's link keeps it while rows arrive above (every refresh put
    # the focus back on the page's body: the rows were swapped whole).
    focused = row.locator("a").last
    focused.focus()
    later = push(server, gates, ref="refs/heads/dev")
    expect(page.locator(f"tr[data-id='{later['delivery_id']}']")).to_contain_text("none")
    expect(focused).to_be_focused()
    assert_not_reloaded(page)
    shot(page, "02-deliveries")
    page.select_option("select[name=status]", "none")
    page.click("#filters button[type=submit]")
    expect(page.locator(f"tr[data-id='{later['delivery_id']}']")).to_be_visible()
    expect(page.locator(f"tr[data-id='{first['delivery_id']}']")).to_have_count(0)


def test_delivery_detail_shows_each_condition_result_and_value(
    page: Page, server: Server, gates: Path
) -> None:
    miss = push(server, gates, ref="refs/heads/dev")
    login(page, server, f"/deliveries/{miss['delivery_id']}")
    deploy = page.locator("section.rule-eval[data-rule='deploy']")
    expect(deploy).to_contain_text("no match")
    ref_row = deploy.locator("tr", has_text='payload.ref == "refs/heads/main"')
    expect(ref_row.locator("td.result")).to_have_text("false")
    expect(ref_row).to_contain_text('"refs/heads/dev"')
    event_row = deploy.locator("tr", has_text='event == "push"')
    expect(event_row.locator("td.result")).to_have_text("true")
    expect(page.locator("#payload")).to_contain_text('"ref": "refs/heads/dev"')
    expect(page.locator("#headers")).to_contain_text("[redacted]")  # the signature header
    expect(page.locator("#headers")).not_to_contain_text("sha256=")
    shot(page, "03-delivery-no-match")


def test_run_log_streams_while_the_run_is_still_running(
    page: Page, server: Server, gates: Path
) -> None:
    held = push(server, gates, open_gate=False)
    (run_id,) = held["runs"]
    log_reads: list[str] = []
    page.on("request", lambda r: log_reads.append(r.url) if f"/api/runs/{run_id}/log" in r.url else None)
    login(page, server, f"/runs/{run_id}")
    mark_page(page)
    log = page.locator("#log")
    # Streamed: the colour escapes are dropped, the bell is shown as a control picture.
    expect(log).to_contain_text("step 1 of 3: fetch\u2407")
    assert "[1;32m" not in log.inner_text() and "\x1b" not in log.inner_text()
    expect(log).to_contain_text("artifact: evil<U+202E>txt.exe")  # as the finished page has it
    # The script cannot pass its gate until this test opens it: it is running right now.
    assert api_run(server, run_id)["status"] == "running"
    expect(page.locator("#run-status")).to_have_text("running")
    assert "step 2" not in log.inner_text()
    assert "\u241b" not in log.inner_text()  # the half escape is held, not shown as ␛[3
    expect(page.locator("#cancel")).to_be_visible()
    shot(page, "04-run-streaming")
    (gates / held["commit"]).touch()
    expect(log).to_contain_text("step 3 of 3: done")
    expect(log).to_contain_text("gate open\nstep 2 of 3")
    assert "\u241b" not in log.inner_text() and "[31m" not in log.inner_text()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#run-exit")).to_have_text("0")
    expect(page.locator("#cancel")).to_have_count(0)
    expect(page.locator("#attempts tbody tr").first).to_contain_text("succeeded")
    expect(page.locator("#log-state")).to_have_text("finished")
    assert len(log_reads) == 1, log_reads  # read once to its end, not again from the start
    assert_not_reloaded(page)
    expect(page.locator("#spec")).to_contain_text("scripts/deploy.sh")
    shot(page, "05-run-finished")
    page.reload()  # the finished log, rendered by the server this time
    expect(log).to_contain_text("step 1 of 3: fetch\u2407")
    expect(log).to_contain_text("artifact: evil<U+202E>txt.exe")
    assert "[1;32m" not in log.inner_text() and "\x1b" not in log.inner_text()


def _log_reader(server: Server, run_id: str) -> socket.socket:
    """A client following the run's log (it holds one of the server's 64 log slots)."""
    s, head = server.ask_for_log(run_id)
    assert head.startswith(b"HTTP/1.1 200 "), head
    return s


def test_a_run_log_the_server_refuses_is_said_and_asked_for_again(
    page: Page, server: Server, gates: Path
) -> None:
    """With its 64 log slots taken the server answers the page's log request 503: the page
    took that for the whole log, never asked again, and showed the run finished with its
    output cut where the page was made. It says why and asks again after Retry-After."""
    held = push(server, gates, open_gate=False)
    (run_id,) = held["runs"]
    until_running = time.monotonic() + 15
    while api_run(server, run_id)["status"] != "running":
        assert time.monotonic() < until_running
        time.sleep(0.05)
    log_reads: list[int] = []
    page.on("response", lambda r: log_reads.append(r.status)
            if f"/api/runs/{run_id}/log" in r.url else None)
    readers = [_log_reader(server, run_id) for _ in range(MAX_LOG_STREAMS)]
    try:
        login(page, server, f"/runs/{run_id}")
        mark_page(page)
        state = page.locator("#log-state")
        expect(state).to_contain_text(f"log not sent: {MAX_LOG_STREAMS} run logs are being sent")
        expect(state).to_contain_text("asking again in 5 s")
        expect(page.locator("#run-status")).to_have_text("running")
        shot(page, "11-run-log-refused")
    finally:
        for s in readers:
            s.close()
    expect(state).to_have_text("streaming…")  # asked again, once a slot was free
    (gates / held["commit"]).touch()
    expect(page.locator("#log")).to_contain_text("step 3 of 3: done")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(state).to_have_text("finished")
    assert log_reads[0] == 503 and log_reads[-1] == 200, log_reads
    assert_not_reloaded(page)


def test_replay_button_queues_a_new_run_of_the_delivery(
    page: Page, server: Server, gates: Path
) -> None:
    hit = push(server, gates)
    server.wait_run(hit["runs"][0])
    login(page, server, f"/deliveries/{hit['delivery_id']}")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    page.click("#replay")
    expect(page.locator("#notice")).to_have_text("Replay queued 1 run.")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    new = page.locator("#runs tr.highlight")
    new_id = new.get_attribute("data-id")
    assert new_id is not None and new_id != hit["runs"][0]
    assert server.wait_run(new_id)["delivery_id"] == hit["delivery_id"]
    mark_page(page)
    expect(new.locator(".c-status")).to_have_text("succeeded")  # the page follows its runs
    assert_not_reloaded(page)
    shot(page, "06-replayed")
    new.locator("a").first.click()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#log")).to_contain_text("step 3 of 3: done")


def test_a_double_click_on_replay_replays_once(page: Page, server: Server, gates: Path) -> None:
    """Two clicks sent the form twice: two replays, and for a deploy rule two deploys."""
    hit = push(server, gates)
    server.wait_run(hit["runs"][0])
    login(page, server, f"/deliveries/{hit['delivery_id']}")
    # The form's submissions counted, and kept from leaving the page, so it can be looked at.
    page.evaluate("""() => { window.submits = 0; document.getElementById("replay").form
        .addEventListener("submit", (e) => { window.submits++; e.preventDefault(); }); }""")
    page.dblclick("#replay")
    expect(page.locator("#replay")).to_be_disabled()
    assert page.evaluate("window.submits") == 1
    page.reload()
    # The second click may come once the first one's page is there, with its own button.
    page.click("#replay", no_wait_after=True)
    page.click("#replay")
    expect(page.locator("#notice")).to_contain_text("it replayed once")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    with server.admin() as c:
        runs = c.get("/api/runs", params={"delivery": hit["delivery_id"]}).json()["runs"]
    assert len(runs) == 2, runs


def test_a_run_page_says_how_a_run_ended_while_the_store_refuses_its_result(
    page: Page, server: Server, gates: Path
) -> None:
    """The store still reads but refuses writes (here a lock another process holds): the
    open page shows how the attempt ended, then the recorded result once it is written."""
    held = push(server, gates, open_gate=False)
    (run_id,) = held["runs"]
    login(page, server, f"/runs/{run_id}")
    mark_page(page)
    expect(page.locator("#run-status")).to_have_text("running")
    expect(page.locator("#run-unrecorded")).to_be_hidden()
    holder = sqlite3.connect(server.data / "hookrunner.db", timeout=10, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        (gates / held["commit"]).touch()
        expect(page.locator("#run-unrecorded")).to_contain_text("succeeded, exit 0")
        expect(page.locator("#run-unrecorded")).to_contain_text("not recorded yet")
        expect(page.locator("#run-status")).to_have_text("running")
        shot(page, "09-run-unrecorded")
    finally:
        holder.execute("COMMIT")
        holder.close()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#run-unrecorded")).to_be_hidden()
    expect(page.locator("#run-unrecorded-label")).to_be_hidden()
    assert_not_reloaded(page)


def test_a_run_waiting_for_its_retry_shows_the_failed_attempt_then_follows_the_next(
    page: Page, server: Server, gates: Path
) -> None:
    """The pane stayed empty for the whole backoff, though the API had the failed output."""
    login(page, server, "/rules")
    (run_id,) = push(server, gates, ref="refs/heads/flaky")["runs"]
    deadline = time.monotonic() + 15
    while (run := api_run(server, run_id))["status"] != "queued" or run["attempt"] != 1:
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    page.goto(f"{server.url}/runs/{run_id}")
    mark_page(page)
    log = page.locator("#log")
    expect(log).to_contain_text("ERROR: disk full on /var")
    expect(page.locator("#log-state")).to_contain_text("queued: waiting for retry at")
    expect(page.locator("#cancel")).to_be_visible()
    shot(page, "10-run-waiting-for-retry")
    expect(log).to_contain_text("attempt 2: space freed")  # the next attempt, when it starts
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(log).not_to_contain_text("ERROR")
    assert_not_reloaded(page)


def test_what_the_live_run_page_writes_is_shown_as_the_server_writes_it(
    page: Page, server: Server
) -> None:
    """A run watched while it waits: its reason, written by the script when it ended, put a
    payload's bidi override in the page raw (`playbooks/siteexe.yml` for site<U+202E>lmy.exe),
    and "Waiting for" and "Node" stayed as they were when the page was made."""
    login(page, server, "/rules")
    r = post_github(server.url, SECRET, {"ref": "refs/heads/bidi", "after": "b1",
                                         "name": "site\u202elmy.exe"},
                    delivery=f"gh-bidi-{time.time()}")
    assert r.status_code == 202, r.text
    _held, watched = r.json()["runs"]
    page.goto(f"{server.url}/runs/{watched}")
    mark_page(page)
    expect(page.locator("#run-waiting")).to_contain_text("its concurrency key, held by")
    expect(page.locator("#run-status")).to_have_text("failed", timeout=20_000)
    expect(page.locator("#run-reason")).to_contain_text("site<U+202E>lmy.exe")
    expect(page.locator("#attempts tbody")).to_contain_text("site<U+202E>lmy.exe")
    expect(page.locator("#run-waiting")).to_be_hidden()
    expect(page.locator("#run-node")).not_to_have_text("—")
    assert_not_reloaded(page)
    shot(page, "11-run-ended-live-bidi")


def test_a_senders_very_long_values_do_not_widen_the_pages(page: Page, server: Server) -> None:
    """One value without spaces (a 20,000-character header, a 5,000-character query value,
    a 3,000-character event type) made the delivery page 144,000 pixels wide, and the
    deliveries list's run and delivery columns start 25,000 pixels to the right."""
    body = json.dumps({"ref": "refs/heads/none", "x": "Z" * 5000}).encode()
    r = httpx.post(f"{server.url}/hooks/github", params={"a": "L" * 5000}, content=body,
                   headers={"Content-Type": "application/json", "X-GitHub-Event": "E" * 3000,
                            "X-Hub-Signature-256": github_signature(SECRET, body),
                            "X-Long": "H" * 20000, "X-GitHub-Delivery": f"gh-wide-{time.time()}"},
                   timeout=30)
    assert r.status_code == 202, r.text
    login(page, server, f"/deliveries/{r.json()['delivery_id']}")
    for path in (f"/deliveries/{r.json()['delivery_id']}", "/"):
        page.goto(server.url + path)
        expect(page.locator("main")).to_contain_text("E" * 50)
        wide, view = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert wide <= view + 2, (path, wide, view)
    shot(page, "12-long-values")


def test_cancel_button_stops_a_long_run(page: Page, server: Server, gates: Path) -> None:
    long = push(server, gates, ref="refs/heads/long")
    (run_id,) = long["runs"]
    login(page, server, f"/runs/{run_id}")
    expect(page.locator("#log")).to_contain_text("long job started")
    page.click("#cancel")
    expect(page.locator("#run-status")).to_have_text("canceled")
    assert api_run(server, run_id)["status"] == "canceled"
    expect(page.locator("#log")).not_to_contain_text("long job finished")
    shot(page, "07-run-canceled")


def test_rules_page_lists_hooks_and_rules_with_their_source_lines(page: Page, server: Server) -> None:
    login(page, server, "/rules")
    expect(page.locator("#reload-ok")).to_contain_text("1 hooks, 5 rules")
    expect(page.locator("#hook-github")).to_contain_text("rules.yaml:3")
    expect(page.locator("#hook-github")).to_contain_text("1 MiB")
    expect(page.locator("#hook-github")).to_contain_text("Pushes of octo/app.")
    expect(page.locator("#rule-deploy")).to_contain_text("rules.yaml:9")
    expect(page.locator("#rule-deploy")).to_contain_text("Deploys main; waits")
    expect(page.locator("#rule-deploy")).to_contain_text('payload.ref == "refs/heads/main"')
    expect(page.locator("#rule-long-job")).to_contain_text("rules.yaml:16")
    shot(page, "08-rules")
