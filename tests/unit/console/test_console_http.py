"""The console in-process (Starlette TestClient, memory store): login, sessions, CSRF, and
what the session cookie may and may not do."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from hookrunner.app import create_app
from hookrunner.auth import COOKIE
from hookrunner.console.forms import MAX_FORM
from hookrunner.settings import Settings

TOKEN = "unit-admin-token"
RULES = """
hooks:
  h:
    verify: {none: {}}
rules:
  - name: wait
    hook: h
    when: payload.kind == "wait"
    run: {shell: {argv: ["sleep", "30"]}}
  - name: quick
    hook: h
    when: payload.kind == "quick"
    run: {shell: {argv: ["true"]}}
  - name: broken
    hook: h
    when: payload.kind == "broken"
    run: {shell: {argv: ["false"]}}
  - name: typo
    hook: h
    when: 'payload.nosuch.deep > 0 if payload.kind == "typo" else false'
    run: {shell: {argv: ["true"]}}
  - name: retried
    hook: h
    when: payload.kind == "retried"
    run:
      shell:
        argv:
          - sh
          - -c
          - printf "attempt %s \\033[31mred\\033[0m evil\\342\\200\\256txt\\n" $HOOKRUNNER_ATTEMPT;
            [ $HOOKRUNNER_ATTEMPT -gt 1 ]
    retry: {attempts: 2, backoff: 0s}
  - name: flaky
    hook: h
    when: payload.kind == "flaky"
    run: {shell: {argv: ["sh", "-c", "echo 'ERROR: disk full on /var'; exit 3"]}}
    retry: {attempts: 3, backoff: 10m}
  - name: second-hangs
    hook: h
    when: payload.kind == "second-hangs"
    run:
      shell:
        argv: [sh, -c, 'echo "attempt $HOOKRUNNER_ATTEMPT"; [ $HOOKRUNNER_ATTEMPT = 1 ] || sleep 30; exit 1']
    retry: {attempts: 2, backoff: 0s}
"""


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    settings = Settings(rules=tmp_path / "rules", root=tmp_path, data=tmp_path / "data", db="memory:",
                        admin_token=TOKEN, environ=dict(os.environ), grace=1.0)
    # A browser: it asks for HTML (a script that does not is answered 401, see below).
    with TestClient(create_app(settings), follow_redirects=False,
                    headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}) as c:
        yield c


def log_in(c: TestClient) -> str:
    """Log in; return the CSRF token of the session."""
    r = c.post("/login", data={"token": TOKEN, "next": "/"})
    assert r.status_code == 303, r.text
    page = c.get("/")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m is not None
    return m.group(1)


def deliver(c: TestClient, kind: str) -> dict[str, object]:
    r = c.post("/hooks/h", json={"kind": kind})
    assert r.status_code == 202, r.text
    doc: dict[str, object] = r.json()
    return doc


def wait_status(c: TestClient, run_id: str, status: str) -> None:
    deadline = time.monotonic() + 15
    auth = {"Authorization": f"Bearer {TOKEN}"}
    while (got := c.get(f"/api/runs/{run_id}", headers=auth).json()["status"]) != status:
        assert time.monotonic() < deadline, f"run {run_id} still {got}"
        time.sleep(0.05)


def test_console_pages_redirect_to_login_remembering_where_to_go(client: TestClient) -> None:
    r = client.get("/rules?x=1")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Frules%3Fx%3D1"


def test_api_without_credentials_is_401_json_not_a_redirect(client: TestClient) -> None:
    r = client.get("/api/runs")
    assert r.status_code == 401 and r.json() == {"error": "admin token required"}


@pytest.mark.parametrize("headers", [
    {"Accept": "*/*"},  # curl, httpx, requests
    {"Accept": "application/json"},
    {"Accept": "text/html", "Authorization": "Bearer wrong"},  # a token was sent: it is wrong
    {"Accept": "*/*", "Authorization": "Basic dXNlcjpwdw=="},  # a script: the bearer hint
])
def test_the_console_answers_a_script_or_a_wrong_token_401_not_a_login_form(
    client: TestClient, headers: dict[str, str],
) -> None:
    r = client.get("/", headers=headers)
    assert r.status_code == 401 and r.json() == {"error": "admin token required"}
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/", headers={**headers, "Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_browser_behind_a_proxys_basic_auth_is_sent_to_the_login_form(client: TestClient) -> None:
    """nginx's auth_basic forwards `Authorization: Basic`: it is no (wrong) admin token."""
    r = client.get("/rules", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Frules"


def test_login_and_static_files_need_no_session(client: TestClient) -> None:
    assert client.get("/login").status_code == 200
    css = client.get("/static/console.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    for other in ("/static/console.css/", "/static/", "/static/nope.css"):
        assert client.get(other).status_code == 404, other


def test_a_method_login_does_not_take_is_405_naming_both_it_does(client: TestClient) -> None:
    refused = client.put("/login")
    assert refused.status_code == 405
    assert {m.strip() for m in refused.headers["allow"].split(",")} >= {"GET", "POST"}


def test_static_files_are_the_ones_read_at_the_start_and_their_urls_carry_a_hash(
    client: TestClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upgrade in place replaced console.js under a running server, which then served the
    new script with the old pages; a browser could keep the old one under the new pages."""
    from hookrunner.console import static

    page = client.get("/login").text
    assert static.url("console.js") in page and static.url("console.css") in page
    assert re.search(r'src="/static/console\.js\?v=[0-9a-f]{10}"', page)

    def no_disk(*_: object, **__: object) -> None:
        raise AssertionError("a static file was read from disk at a request")

    monkeypatch.setattr(Path, "open", no_disk)
    monkeypatch.setattr(Path, "read_bytes", no_disk)
    monkeypatch.setattr(os, "stat", no_disk)
    served = client.get(static.url("console.js"))
    assert served.status_code == 200
    monkeypatch.undo()
    assert served.content == (static.DIRECTORY / "console.js").read_bytes()
    assert served.headers["content-type"].startswith("text/javascript")
    again = client.get("/static/console.js", headers={"If-None-Match": served.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/static/console.js", headers={"If-None-Match": "*"}).status_code == 304
    assert client.head("/static/console.css").status_code == 200


@pytest.mark.parametrize("given", ["wrong", "", TOKEN + "x", TOKEN[:-1]])
def test_a_wrong_token_is_refused_without_a_cookie(client: TestClient, given: str) -> None:
    r = client.post("/login", data={"token": given, "next": "/"})
    assert r.status_code == 401
    assert "not the admin token" in r.text
    assert "set-cookie" not in r.headers
    assert client.get("/").status_code == 303


def test_the_right_token_gives_an_httponly_strict_session_cookie(client: TestClient) -> None:
    r = client.post("/login", data={"token": TOKEN, "next": "/rules"})
    assert r.status_code == 303 and r.headers["location"] == "/rules"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie
    assert client.get("/rules").status_code == 200
    assert client.get("/api/runs").status_code == 200  # the console's scripts read the API


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "rules"])
def test_login_never_redirects_off_site(client: TestClient, target: str) -> None:
    r = client.post("/login", data={"token": TOKEN, "next": target})
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_login_posted_from_another_origin_is_refused(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused, logged, and saying which origins were compared (a proxy that drops the port
    of the public URL: the operator must see that from the page or the log)."""
    from hookrunner import logs

    monkeypatch.setattr(logs, "_direct", None)
    caplog.set_level(logging.WARNING, logger="hookrunner")
    r = client.post("/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    assert "the form came from https://evil.example, and this server is testserver" in r.text
    refused = [rec for rec in caplog.records if rec.getMessage() == "console.login_refused"]
    assert refused and refused[0].fields["reason"] == "another origin"  # type: ignore[attr-defined]


def test_an_oversized_form_is_refused(client: TestClient) -> None:
    r = client.post("/login", data={"token": "x" * (MAX_FORM + 1)})
    assert r.status_code == 413


def test_logout_ends_the_session_on_the_server(client: TestClient) -> None:
    csrf = log_in(client)
    sid = client.cookies[COOKIE]
    r = client.post("/logout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    client.cookies.set(COOKIE, sid)  # a copy of the cookie kept by someone is dead too
    assert client.get("/").status_code == 303


def test_logout_without_the_csrf_token_is_refused(client: TestClient) -> None:
    log_in(client)
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("csrf", [None, "", "forged"])
def test_cancel_without_the_sessions_csrf_token_is_refused(client: TestClient, csrf: str | None) -> None:
    log_in(client)
    (run_id,) = deliver(client, "wait")["runs"]  # type: ignore[misc]
    data = {} if csrf is None else {"csrf": csrf}
    r = client.post(f"/runs/{run_id}/cancel", data=data)
    assert r.status_code == 403 and "reload and try again" in r.text
    assert client.get(f"/api/runs/{run_id}").json()["status"] in ("queued", "running")
    client.post(f"/api/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {TOKEN}"})


def test_cancel_with_the_csrf_token_cancels_the_run(client: TestClient) -> None:
    csrf = log_in(client)
    (run_id,) = deliver(client, "wait")["runs"]  # type: ignore[misc]
    r = client.post(f"/runs/{run_id}/cancel", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/runs/{run_id}"
    wait_status(client, run_id, "canceled")


def test_csrf_token_in_a_header_is_accepted(client: TestClient) -> None:
    csrf = log_in(client)
    (run_id,) = deliver(client, "wait")["runs"]  # type: ignore[misc]
    r = client.post(f"/runs/{run_id}/cancel", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 303
    wait_status(client, run_id, "canceled")


def test_a_console_post_from_another_origin_is_refused_even_with_the_token(client: TestClient) -> None:
    csrf = log_in(client)
    d = deliver(client, "quick")
    r = client.post(f"/deliveries/{d['delivery_id']}/replay", data={"csrf": csrf},
                    headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


def test_replay_with_the_csrf_token_queues_new_runs_and_shows_them(client: TestClient) -> None:
    csrf = log_in(client)
    d = deliver(client, "quick")
    r = client.post(f"/deliveries/{d['delivery_id']}/replay", data={"csrf": csrf})
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith(f"/deliveries/{d['delivery_id']}?replayed=run_")
    new_run = location.rsplit("=", 1)[1]
    assert new_run not in d["runs"]  # type: ignore[operator]
    page = client.get(location)
    assert "Replay queued 1 run." in page.text and f'data-id="{new_run}"' in page.text


def test_replay_of_an_unknown_delivery_is_a_404_page(client: TestClient) -> None:
    csrf = log_in(client)
    r = client.post("/deliveries/dlv_nope/replay", data={"csrf": csrf})
    assert r.status_code == 404


def test_the_session_cookie_cannot_change_anything_through_the_api(client: TestClient) -> None:
    """The API's POSTs check no CSRF token, so only a bearer token may drive them."""
    log_in(client)
    (run_id,) = deliver(client, "wait")["runs"]  # type: ignore[misc]
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 401
    r = client.post(f"/api/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 202


def test_a_bearer_token_drives_the_console_without_a_session(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/", headers=auth).status_code == 200
    (run_id,) = deliver(client, "wait")["runs"]  # type: ignore[misc]
    assert client.post(f"/runs/{run_id}/cancel", headers=auth).status_code == 303
    wait_status(client, run_id, "canceled")


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    log_in(client)
    for path in ("/", "/rules", "/login"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"


def test_hostile_payloads_are_escaped_in_the_pages(client: TestClient) -> None:
    log_in(client)
    r = client.post("/hooks/h", json={"kind": "<script>alert(1)</script>"},
                    headers={"X-Evil": '"><img src=x onerror=alert(1)>'})
    page = client.get(f"/deliveries/{r.json()['delivery_id']}").text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_control_characters_and_bidi_overrides_are_shown_not_obeyed(client: TestClient) -> None:
    """A payload value and a query value with a terminal escape, a bell, a right-to-left
    override and an isolate: shown as their pictures and code points, never raw."""
    log_in(client)
    tricky = "\x1b[31mRED\x07 evil\u202etxt.exe a\u2066b"
    r = client.post("/hooks/h", params={"q": tricky}, json={"kind": tricky})
    page = client.get(f"/deliveries/{r.json()['delivery_id']}").text
    for raw in ("\x1b", "\x07", "\u202e", "\u2066"):
        assert raw not in page, repr(raw)
    assert "␛[31mRED␇ evil&lt;U+202E&gt;txt.exe a&lt;U+2066&gt;b" in page  # the query's
    # The payload is shown as its JSON, which escapes the controls itself.
    assert "\\u001b[31mRED\\u0007 evil&lt;U+202E&gt;txt.exe a&lt;U+2066&gt;b" in page


def test_bad_filters_are_reported_not_fatal(client: TestClient) -> None:
    log_in(client)
    r = client.get("/?status=bogus&since=yesterday&limit=x")
    assert r.status_code == 200
    assert "unknown status" in r.text and "expected a duration" in r.text
    # A well-formed one past the longest says so, not "expected a duration like 15m".
    r = client.get("/?since=100000d")
    assert "since: a duration is at most 36500d (a hundred years), got &#39;100000d&#39;" in r.text


def test_filters_pick_deliveries_by_run_status(client: TestClient) -> None:
    log_in(client)
    quick = deliver(client, "quick")
    none = deliver(client, "nothing")
    wait_status(client, quick["runs"][0], "succeeded")  # type: ignore[index]
    ok = client.get("/fragments/deliveries?status=succeeded").text
    empty = client.get("/fragments/deliveries?status=none").text
    assert quick["delivery_id"] in ok and none["delivery_id"] not in ok
    assert none["delivery_id"] in empty and quick["delivery_id"] not in empty


def test_a_status_filter_finds_runs_behind_many_newer_deliveries(
    client: TestClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The filter starts from the runs with that status, not from the newest deliveries:
    one failure behind more newer deliveries than are scanned is still listed."""
    from hookrunner.console import deliveries

    monkeypatch.setattr(deliveries, "SCAN_LIMIT", 3)
    log_in(client)
    failed = deliver(client, "broken")
    wait_status(client, failed["runs"][0], "failed")  # type: ignore[index]
    newer = [deliver(client, "quick") for _ in range(5)]
    for d in newer:
        wait_status(client, d["runs"][0], "succeeded")  # type: ignore[index]
    page = client.get("/fragments/deliveries?status=failed").text
    assert failed["delivery_id"] in page
    assert not any(d["delivery_id"] in page for d in newer)
    assert failed["delivery_id"] not in client.get(
        "/fragments/deliveries?status=failed&hook=other").text


def test_a_form_another_site_sent_is_refused_even_with_the_token(client: TestClient) -> None:
    """Sec-Fetch-Site: cross-site (what a browser sends for a form posted from another site)
    is refused like a foreign Origin, a guard beside the CSRF token."""
    csrf = log_in(client)
    (run_id,) = deliver(client, "wait")["runs"]  # type: ignore[misc]
    r = client.post(f"/runs/{run_id}/cancel", data={"csrf": csrf},
                    headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert client.get(f"/api/runs/{run_id}").json()["status"] in ("queued", "running")
    r = client.post(f"/runs/{run_id}/cancel", data={"csrf": csrf},
                    headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303


def test_api_answers_are_never_cached_or_sniffed(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/api/runs", "/api/deliveries", "/api/runs/nope"):
        r = client.get(path, headers=auth)
        assert r.headers["cache-control"] == "no-store", path
        assert r.headers["x-content-type-options"] == "nosniff", path


def test_readyz_answers_in_time_when_the_store_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database that accepts no connection (PostgreSQL's pool waits 5 s for one) must not
    make a probe with a 3 s timeout time out: /readyz says unreachable within 2 s."""
    import asyncio

    from hookrunner.store.memory import MemoryStore

    async def hangs(self: MemoryStore) -> bool:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:  # as psycopg: cancelling a hung query takes seconds
            await asyncio.sleep(5)
            raise
        return True

    monkeypatch.setattr(MemoryStore, "ping", hangs)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    settings = Settings(rules=tmp_path / "rules", root=tmp_path, data=tmp_path / "data",
                        db="memory:", admin_token=TOKEN, environ=dict(os.environ), grace=1.0)
    with TestClient(create_app(settings)) as c:
        t0 = time.monotonic()
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["store"] == "unreachable"
        assert time.monotonic() - t0 < 4.5  # its 2 s bound, not the store's 5 s hang


def test_readyz_is_not_ready_once_the_server_stops_taking_work(tmp_path: Path) -> None:
    """A SIGTERM's drain, or a node whose name another server took: no more work for it."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    settings = Settings(rules=tmp_path / "rules", root=tmp_path, data=tmp_path / "data",
                        db="memory:", admin_token=TOKEN, environ=dict(os.environ), grace=1.0)
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").status_code == 200
        c.app.state.gateway.dispatcher.begin_stop_threadsafe()  # type: ignore[attr-defined]
        deadline = time.monotonic() + 5
        while (r := c.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert r.status_code == 503 and r.json()["stopping"] is True


def test_each_attempt_links_to_its_own_output(client: TestClient) -> None:
    """The page follows the last attempt; why the first one failed is one click away."""
    log_in(client)
    (run_id,) = deliver(client, "quick")["runs"]  # type: ignore[misc]
    wait_status(client, run_id, "succeeded")
    page = client.get(f"/runs/{run_id}").text
    assert f'href="/runs/{run_id}?attempt=1"' in page  # the console's view of it (below)
    assert client.get(f"/api/runs/{run_id}/log?attempt=1").status_code == 200  # by the cookie


def test_a_replay_whose_when_errs_says_so(client: TestClient) -> None:
    csrf = log_in(client)
    d = deliver(client, "typo")
    r = client.post(f"/deliveries/{d['delivery_id']}/replay", data={"csrf": csrf})
    assert r.status_code == 303 and "erred=typo" in r.headers["location"]
    page = client.get(r.headers["location"])
    assert "Replay matched no rule" in page.text
    assert "could not be evaluated" in page.text and "typo" in page.text
    crafted = client.get(f"/deliveries/{d['delivery_id']}?replayed=&erred=Call%20us%20now")
    assert "Call us now" not in crafted.text


def test_a_store_outage_is_a_503_page_not_a_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from hookrunner.errors import StoreUnavailable

    log_in(client)
    d = deliver(client, "quick")
    store = client.app.state.gateway.store  # type: ignore[attr-defined]

    async def down(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("PostgreSQL unavailable: connection refused")

    for name in ("list_deliveries", "get_delivery", "get_run", "list_runs"):
        monkeypatch.setattr(store, name, down)
    for path in ("/", "/fragments/deliveries", f"/deliveries/{d['delivery_id']}",
                 f"/runs/{d['runs'][0]}"):  # type: ignore[index]
        r = client.get(path)
        assert r.status_code == 503, (path, r.status_code)
        assert r.headers["retry-after"] == "5" and "database cannot be reached" in r.text
    # The API (a script): the same outage as JSON.
    r = client.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "*/*"})
    assert (r.status_code, r.json(), r.headers["retry-after"]) == (
        503, {"error": "store unavailable"}, "5")


def test_an_earlier_attempts_output_is_shown_as_the_page_shows_output(client: TestClient) -> None:
    """Its link opened the API's raw text: a terminal escape and a bidi override as they came
    (`evil<U+202E>txt` read `eviltxt` reversed), and no console around it."""
    log_in(client)
    run_id = str(deliver(client, "retried")["runs"][0])  # type: ignore[index]
    wait_status(client, run_id, "succeeded")
    latest = client.get(f"/runs/{run_id}").text
    assert f'href="/runs/{run_id}?attempt=1"' in latest and "attempt 2" in latest
    first = client.get(f"/runs/{run_id}?attempt=1")
    assert first.status_code == 200
    assert "Output of attempt 1" in first.text and "attempt 1 red evil&lt;U+202E&gt;txt" in first.text
    assert "\x1b" not in first.text and "\u202e" not in first.text
    for odd in ("0", "3", "x", "9" * 20):  # not an attempt of this run: the latest one
        assert "attempt 2 red" in client.get(f"/runs/{run_id}?attempt={odd}").text


def wait_run(c: TestClient, run_id: str, check: Callable[[dict[str, Any]], bool]) -> None:
    deadline = time.monotonic() + 15
    auth = {"Authorization": f"Bearer {TOKEN}"}
    while not check(doc := c.get(f"/api/runs/{run_id}", headers=auth).json()):
        assert time.monotonic() < deadline, f"run {run_id}: {doc}"
        time.sleep(0.05)


def test_a_run_waiting_for_its_retry_shows_the_output_of_the_attempt_that_failed(
    client: TestClient,
) -> None:
    """The pane was empty for the whole backoff (the page waited for the next attempt), though
    the API showed why the first one failed."""
    log_in(client)
    run_id = str(deliver(client, "flaky")["runs"][0])  # type: ignore[index]
    wait_run(client, run_id, lambda r: r["status"] == "queued" and r["attempt"] == 1)
    for path in (f"/runs/{run_id}", f"/runs/{run_id}?attempt=1"):
        page = client.get(path).text
        log = page[page.index('<pre class="log" id="log">'):page.index("<h2>Attempts")]
        assert "ERROR: disk full on /var\n[hookrunner] failed: exit 3" in log, path
        assert 'data-live="true"' in page and 'id="cancel"' in page, path  # the next one is followed
        assert "retry at" in page
    client.post(f"/api/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {TOKEN}"})


def test_an_earlier_attempts_page_of_a_run_still_going_offers_cancel(client: TestClient) -> None:
    log_in(client)
    run_id = str(deliver(client, "second-hangs")["runs"][0])  # type: ignore[index]
    wait_run(client, run_id, lambda r: r["status"] == "running" and r["attempt"] == 2)
    page = client.get(f"/runs/{run_id}?attempt=1").text
    log = page[page.index('<pre class="log" id="log">'):page.index("<h2>Attempts")]
    assert "Output of attempt 1" in page and "attempt 1/2 on node" in log and "exit 1" in log
    assert 'data-live="false"' in page and 'id="cancel"' in page
    client.post(f"/api/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {TOKEN}"})
    wait_status(client, run_id, "canceled")
    assert 'id="cancel"' not in client.get(f"/runs/{run_id}?attempt=1").text


def test_a_login_sent_multipart_or_as_json_is_a_415_and_no_try(client: TestClient) -> None:
    """probe: read as url-encoded, the right token sent so was "not the admin token", and
    the try counted against the address."""
    for kw in ({"files": {"token": (None, TOKEN)}}, {"json": {"token": TOKEN}}):
        r = client.post("/login", **kw)  # type: ignore[arg-type]
        assert r.status_code == 415, kw
        assert "must be sent url-encoded (application/x-www-form-urlencoded)" in r.text
        assert "set-cookie" not in r.headers
    r = client.post("/login", content=f"token={TOKEN}".encode(),
                    headers={"Content-Type": "Application/X-WWW-Form-Urlencoded; charset=utf-8"})
    assert r.status_code == 303
