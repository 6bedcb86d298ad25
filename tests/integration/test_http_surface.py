"""The HTTP surface against a real server: auth challenges, routing, what a stored delivery
keeps (query, redacted headers) and shows, and the modes of what it writes to disk."""

from __future__ import annotations

import base64
import html
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import write_script
from tests.nginxproc import Nginx
from tests.serverproc import ADMIN_TOKEN, Server, post_github

RULES = """
hooks:
  open: {verify: {none: {}}}
  basic: {verify: {basic: {username: ops, password: {env: BASIC_PW}}}}
  tok: {verify: {token: {secret: {env: TOK}}}}
  shared: {verify: {token: {secret: {env: TOK}, header: X-Shared}}}
  gh:
    verify: {github: {secret: {env: TOK}}}
    dedup: "{{ payload.head_commit.id }}"
  keyed:
    verify: {token: {secret: {env: TOK}, header: X-Shared}}
    dedup: "{{ headers['X-Shared'] }}-{{ payload.n }}"
  pair:
    verify: {github: {secret: {env: TOK}}}
    dedup: "{{ payload.a }}-{{ payload.b }}"
rules:
  - {name: any, hook: open, run: {shell: {argv: ["true"]}}}
  - {name: prod, hook: open, when: 'query.env == "prod"', run: {shell: {argv: ["true"]}}}
  - name: keyed
    hook: open
    when: ['headers["X-Api-Key"] == "other"', 'query.sig ~ "x" == "no"', 'headers', 'query',
           'headers.get("X-Auth-Token") | lower == "x"', 'query.sig[:3] == "q"',
           'headers["X-Event-Key"] == "repo:push"', "'X-Api-Key' in headers"]
    run: {shell: {argv: ["true"]}}
  - name: shared
    hook: shared
    when: ['headers["X-Shared"][:3] == "tok"', 'headers["X-Missing-Token"] == "x"']
    run: {shell: {argv: ["true"]}}
  - name: renders-secret
    hook: shared
    when: payload.render | default(false)
    run:
      shell:
        argv: [sh, -c, 'test $(printf %s "$1$3$FROM_HEADER" | md5sum | cut -c1-12) = 5b6385654c6b
                        && echo "ran for $2"', sh,
               "{{ headers['X-Shared'] }}", "{{ payload.ref }}", "{{ query.token | default('') }}"]
        env: {FROM_HEADER: "{{ headers['X-Shared'] | lower }}", REF: "{{ payload.ref }}"}
  - name: fails-on-secret
    hook: shared
    when: payload.fail | default(false)
    run: {shell: {argv: ["echo", "{{ payload[headers['X-Shared']] }}"]}}
  - {name: typo, hook: tok, when: 'payload.nothing.here == 1', run: {shell: {argv: ["true"]}}}
  - name: sleeper
    hook: open
    when: payload.sleep | default(false)
    run: {shell: {argv: ["sleep", "{{ payload.sleep }}"]}}
  - name: clones
    hook: open
    when: payload.repo | default(false)
    run: {shell: {argv: ["true", "{{ payload.repo }}"]}}
  - name: key-and-path-from-secret
    hook: keyed
    concurrency: {key: "k-{{ headers['X-Shared'] }}"}
    run: {shell: {argv: ["true"], cwd: "/x/{{ headers['X-Shared'] }}"}}
  - name: fails-plainly
    hook: shared
    when: payload.fail | default(false)
    run: {shell: {argv: ["echo", "{{ payload.nothing.here }}"]}}
  - name: program-from-secret
    hook: open
    when: payload.paths | default(false)
    run: {shell: {argv: ["scripts/{{ headers['X-Api-Key'] }}.sh"]}}
  - name: cwd-from-secret
    hook: open
    when: payload.paths | default(false)
    run: {shell: {argv: ["true"], cwd: "work/{{ headers['X-Api-Key'] }}"}}
  - name: url-from-secret
    hook: open
    when: payload.paths | default(false)
    run: {http: {url: "{{ headers['X-Api-Key'] }}"}}
"""
ENV = {"BASIC_PW": "pw-1", "TOK": "tok-1"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_refused_basic_or_bearer_hook_names_its_scheme(make_server: Callable[..., Server]) -> None:
    server = make_server(RULES, env=ENV)
    for headers in ({}, {"Authorization": _basic("ops", "wrong")}):
        r = httpx.post(f"{server.url}/hooks/basic", json={}, headers=headers)
        assert r.status_code == 401 and r.json() == {"error": "verification failed"}
        assert r.headers["www-authenticate"] == 'Basic realm="hookrunner"'
    good = httpx.post(f"{server.url}/hooks/basic", json={},
                      headers={"Authorization": _basic("ops", "pw-1")})
    assert good.status_code == 202 and "www-authenticate" not in good.headers
    r = httpx.post(f"{server.url}/hooks/tok", json={}, headers={"Authorization": "Bearer no"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="hookrunner"'


def test_the_admin_api_takes_the_bearer_scheme_in_any_case(make_server: Callable[..., Server]) -> None:
    server = make_server(RULES, env=ENV)
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = httpx.get(f"{server.url}/api/runs", headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"})
        assert r.status_code == 200, scheme
    refused = httpx.get(f"{server.url}/api/runs", headers={"Authorization": "bearer nope"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"


def test_two_authorization_headers_are_a_400_whatever_their_order(
        make_server: Callable[..., Server]) -> None:
    """probe: the first one counted, so the order decided, and a wrong first was a guess."""
    server = make_server(RULES, env=ENV)
    for pair in (("Bearer wrong", f"Bearer {ADMIN_TOKEN}"), (f"Bearer {ADMIN_TOKEN}", "Bearer x")):
        r = httpx.get(f"{server.url}/api/runs",
                      headers=[("Authorization", pair[0]), ("Authorization", pair[1])])
        assert r.status_code == 400, pair
        assert r.json() == {"error": "more than one Authorization header: send one"}
    ok = httpx.get(f"{server.url}/api/runs", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200


def test_a_trailing_slash_is_a_404_never_a_redirect(make_server: Callable[..., Server]) -> None:
    server = make_server(RULES, env=ENV)
    forged = {"Host": "evil.example"}
    for method, path in (("POST", "/hooks/open/"), ("GET", "/api/runs/"), ("GET", "/rules/")):
        r = httpx.request(method, server.url + path, headers={
            **forged, "Authorization": f"Bearer {ADMIN_TOKEN}"}, json={} if method == "POST" else None)
        assert r.status_code == 404, (path, r.status_code)
        assert "location" not in r.headers and r.json() == {"error": "Not Found"}


def test_a_path_nothing_serves_is_a_404_without_the_token_too(make_server: Callable[..., Server]) -> None:
    """A sender's URL with a slash too many (`//hooks/open`) heard "admin token required",
    and nothing was logged; the admin API's paths still need the token."""
    server = make_server(RULES, env=ENV)
    for path in ("//hooks/open", "/webhooks/open", "/api/nope"):
        r = httpx.post(server.url + path, json={})
        assert (r.status_code, r.json()) == (404, {"error": "Not Found"}), path
    assert httpx.get(server.url + "/api/runs").status_code == 401
    assert httpx.post(server.url + "/api/runs/run_x/cancel").status_code == 401
    assert "http.not_found" in server.output() and "path=//hooks/open" in server.output()
    assert httpx.post(server.url + "/hooks/renamed", json={}).status_code == 404
    # The client's text, cut as the log cuts it (a probe's 60 KB id came back whole).
    long_id = httpx.post(server.url + "/hooks/" + "x" * 60_000, json={})
    assert long_id.json() == {"error": f"unknown hook '{'x' * 100}'"}
    time.sleep(1.2)  # (a throttled line)
    assert any('reason="unknown hook" client=127.0.0.1' in x for x in server.output().splitlines())
    digest = httpx.get(server.url + "/readyz").json()["rules_digest"]  # (compared across nodes)
    assert re.fullmatch(r"[0-9a-f]{16}", digest) and f"digest={digest}" in server.output()


def test_a_post_to_a_wrong_path_under_hooks_is_logged_and_counted(make_server: Callable[..., Server]) -> None:
    """A sender's trailing slash (`/hooks/open/`), a path below a hook's, an escaped letter:
    each a 404 that was neither logged nor counted, so the commonest misconfiguration of a
    sender failed unseen. The log names the path as sent, not its decoded form."""
    server = make_server(RULES, env=ENV)
    host, port = server.url.removeprefix("http://").split(":")
    for path in ("/hooks/open/", "/hook%73/open", "/hooks/open/extra", "/hooks/"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                         "Connection: close\r\n\r\n{}".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 404 ") and answer.endswith(b'{"error":"Not Found"}'), path
        said = re.compile(r"\bhttp\.not_found\b.*path=" + re.escape(path) + r"(\s|$)", re.M)
        deadline = time.monotonic() + 10
        while not said.search(server.output()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert said.search(server.output()), path
        time.sleep(1.1)  # (one line a second at most)
    assert httpx.get(server.url + "/hooks/open/").status_code == 404  # a GET is only answered
    metrics = httpx.get(server.url + "/metrics").text
    assert "hookrunner_unknown_hook_requests_total 4.0" in metrics


SECRETS = {"X-Gitlab-Token": "gl-s3cret", "X-Api-Key": "api-s3cret", "X-Auth-Token": "auth-s3cret",
           "Stripe-Signature": "t=1,v1=sig-s3cret", "Cookie": "sid=cookie-s3cret"}


def _stored_bytes(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data.glob("hookrunner.db*") if p.is_file())


def test_a_delivery_keeps_its_query_for_replay_and_hides_secrets(
    make_server: Callable[..., Server], project: Path,
) -> None:
    """The query is stored as sent (`wait` too) and a replay, over the API or the CLI,
    matches on it as the original did; secret-looking headers and query parameters are
    redacted before they are stored, whatever the hook's verifier."""
    server = make_server(RULES, env=ENV)
    r = httpx.post(f"{server.url}/hooks/open?env=prod&sig=q-s3cret&wait=10s", json={"a": 1},
                   headers={**SECRETS, "X-Event-Key": "repo:push"})
    assert r.status_code == 200, r.text
    delivery_id = r.json()["delivery_id"]
    with server.admin() as c:
        doc = c.get(f"/api/deliveries/{delivery_id}").json()
        assert doc["matched"] == ["any", "prod"]
        assert doc["verifier"] == "none"  # the one that checked it, as stored
        # The explanation of a rule that compares secret values shows none of them.
        keyed = next(m for m in doc["matches"] if m["rule"] == "keyed")
        values = [c["value"] for c in keyed["conditions"]]
        # Whatever it derived from a secret (lower-cased, a slice) is hidden with it; the
        # condition reading an ordinary header still shows its value.
        assert values == ["[redacted]"] * 6 + ['"repo:push"', '"X-Api-Key"'], values
        assert [c["result"] for c in keyed["conditions"]] == [
            False, False, True, True, False, False, True, True]
        assert doc["query"] == [["env", "prod"], ["sig", "[redacted]"], ["wait", "10s"]]
        headers = {k.lower(): v for k, v in doc["headers"]}
        assert all(headers[name.lower()] == "[redacted]" for name in SECRETS)
        assert headers["x-event-key"] == "repo:push"
        replayed = c.post(f"/api/deliveries/{delivery_id}/replay")
        assert replayed.status_code == 202
        assert [m["rule"] for m in replayed.json()["matches"] if m["matched"]] == ["any", "prod"]
        assert len(replayed.json()["runs"]) == 2
        page = c.get(f"/deliveries/{delivery_id}").text
        assert 'id="query"' in page and "prod" in page
    cli = subprocess.run(
        [sys.executable, "-m", "hookrunner.cli", "replay", delivery_id,
         "--rules", str(project / "rules"), "--data", str(project / "data")],
        capture_output=True, text=True, env={**os.environ, **ENV})
    assert cli.returncode == 0 and "2 run(s) queued" in cli.stdout, cli.stderr
    stored = _stored_bytes(project / "data")
    for secret in [*SECRETS.values(), "q-s3cret"]:
        assert secret.encode() not in stored, secret
    # The verifier's own header is a secret whatever its name; a missing header is just that.
    shared = httpx.post(f"{server.url}/hooks/shared", json={}, headers={"X-Shared": "tok-1"})
    assert shared.status_code == 202, shared.text
    with server.admin() as c:
        doc = c.get(f"/api/deliveries/{shared.json()['delivery_id']}").json()
    conditions = doc["matches"][0]["conditions"]
    assert conditions[0]["value"] == "[redacted]" and "tok-1" not in str(doc["matches"])
    assert conditions[1]["error"].startswith("the request has no header 'X-Missing-Token'")


def test_a_dedup_template_that_does_not_apply_falls_back_to_the_senders_id(
    make_server: Callable[..., Server],
) -> None:
    """GitHub's `ping` has no `head_commit`: the delivery id still dedups it (it turned dedup
    off); values that are not text are keyed as JSON (`true` is not the string "True")."""
    server = make_server(RULES, env=ENV)
    first = post_github(server.url, "tok-1", {"zen": "x"}, event="ping", delivery="D1", hook="gh")
    again = post_github(server.url, "tok-1", {"zen": "x"}, event="ping", delivery="D1", hook="gh")
    assert first.status_code == 202 and again.status_code == 200, (first.text, again.text)
    dlv = first.json()["delivery_id"]
    assert again.json() == {"duplicate": True, "delivery_id": dlv, "runs": [],
                            "status_url": f"/api/deliveries/{dlv}"}
    assert "delivery.dedup_template_failed" in server.output()
    keyed_true = post_github(server.url, "tok-1", {"head_commit": {"id": True}}, delivery="D2", hook="gh")
    keyed_text = post_github(server.url, "tok-1", {"head_commit": {"id": "True"}}, delivery="D3",
                             hook="gh")
    assert keyed_true.status_code == keyed_text.status_code == 202
    # Two events whose key field is null, empty or false are two events (the second was
    # dropped as a duplicate): the sender's ids key them.
    for n, value in enumerate((None, [], {}, False)):
        a = post_github(server.url, "tok-1", {"head_commit": {"id": value}}, delivery=f"E{n}a",
                        hook="gh")
        b = post_github(server.url, "tok-1", {"head_commit": {"id": value}}, delivery=f"E{n}b",
                        hook="gh")
        assert a.status_code == b.status_code == 202, (value, b.text)
    # ... so is a null part of a longer key (`42-null`).
    for d in ("F1", "F2"):
        r = httpx.post(f"{server.url}/hooks/keyed", headers={"X-Shared": "tok-1",
                       "X-GitHub-Delivery": d}, json={"n": None})
        assert r.status_code == 202, r.text
    # ... and a key of nothing but the template's own text: every part empty or spaces
    # (`-`, ` - `), or a whole key of spaces.
    for n, (hook, body) in enumerate((("pair", {"a": "", "b": ""}), ("pair", {"a": " ", "b": "\t"}),
                                      ("gh", {"head_commit": {"id": "   "}}))):
        for d in (f"G{n}a", f"G{n}b"):
            r = post_github(server.url, "tok-1", body, delivery=d, hook=hook)
            assert r.status_code == 202, (body, r.text)
    assert post_github(server.url, "tok-1", {"a": "x", "b": ""}, delivery="H1", hook="pair"
                       ).status_code == 202
    assert post_github(server.url, "tok-1", {"a": "x", "b": ""}, delivery="H2", hook="pair"
                       ).status_code == 200  # `x-` is the event's own: a duplicate
    # A key kept as its digest (past 200 characters) and a key that is that digest's text
    # are two keys.
    long = post_github(server.url, "tok-1", {"head_commit": {"id": "x" * 300}}, delivery="L1",
                       hook="gh")
    with server.admin() as c:
        digest = c.get(long.json()["status_url"]).json()["dedup_key"]
    assert digest.startswith("sha256:")
    mimic = post_github(server.url, "tok-1", {"head_commit": {"id": digest}}, delivery="L2",
                        hook="gh")
    assert mimic.status_code == 202, mimic.text


def test_a_wait_retry_of_an_accepted_delivery_waits_for_its_runs(
    make_server: Callable[..., Server], project: Path,
) -> None:
    """A sender whose `?wait` timed out retries: it got a bare duplicate at once, with no
    word of how the runs it started ended."""
    write_script(project, "slow.sh", "sleep 1; echo done\n")
    server = make_server(RULES + """
  - name: slow
    hook: gh
    when: payload.slow | default(false)
    run: {shell: {argv: [scripts/slow.sh]}}
""", env=ENV)
    body = {"slow": True, "head_commit": {"id": "W1"}}
    first = post_github(server.url, "tok-1", body, delivery="W1", hook="gh")
    assert first.status_code == 202, first.text
    again = post_github(server.url, "tok-1", body, delivery="W1", hook="gh",
                        params={"wait": "20s"})
    assert again.status_code == 200, again.text
    doc = again.json()
    assert doc["duplicate"] is True and doc["delivery_id"] == first.json()["delivery_id"]
    assert [r["status"] for r in doc["runs"]] == ["succeeded"]
    assert "output" not in doc["runs"][0]  # their ends, not their output: a key may be guessed


# The action's check that it got the values (by digest: its text is shown, the values not).
SECRET_CHECK = ('test $(printf %s "$1$3$FROM_HEADER" | md5sum | cut -c1-12) = 5b6385654c6b'
                ' && echo "ran for $2"')


def test_values_rendered_from_secret_headers_are_hidden_where_runs_are_shown(
    make_server: Callable[..., Server],
) -> None:
    """The action runs with the verifier header's value; the API, the console and a failed
    render's stored reason never show it (or what a template derived from it)."""
    server = make_server(RULES, env=ENV)
    r = httpx.post(f"{server.url}/hooks/shared?wait=10s&token=q-t0k", headers={"X-Shared": "tok-1"},
                   json={"render": True, "ref": "main"})
    assert r.status_code == 200, r.text
    run = r.json()["runs"][0]
    assert run["status"] == "succeeded" and "ran for main" in run["output"]  # with the values
    with server.admin() as c:
        shown = c.get(f"/api/runs/{run['id']}").json()
        page = c.get(f"/runs/{run['id']}").text
    assert shown["spec"] == {
        "argv": ["sh", "-c", SECRET_CHECK, "sh", "[redacted]", "main", "[redacted]"],
        "env": {"FROM_HEADER": "[redacted]", "REF": "main"},
    }, shown["spec"]
    assert "tok-1" not in page and "q-t0k" not in page and "hidden_paths" not in page

    r = httpx.post(f"{server.url}/hooks/shared?wait=10s", headers={"X-Shared": "tok-1"},
                   json={"fail": True})
    assert r.status_code == 200 and "tok-1" not in r.text, r.text
    runs = {x["rule"]: x for x in r.json()["runs"]}
    hidden, plain = runs["fails-on-secret"], runs["fails-plainly"]
    assert hidden["status"] == plain["status"] == "failed"
    assert "the message is hidden" in hidden["reason"], hidden
    assert "nothing" in plain["reason"] and "hidden" not in plain["reason"], plain
    with server.admin() as c:
        listing = c.get("/api/runs?limit=100").text
    assert "tok-1" not in listing and "tok-1" not in server.output()

    # A concurrency key, an error quoting a rendered path, a dedup key: the same rule.
    r = httpx.post(f"{server.url}/hooks/keyed?wait=10s", headers={"X-Shared": "tok-1"}, json={"n": 1})
    assert r.status_code == 200, r.text
    run = r.json()["runs"][0]
    assert run["reason"] == "path '[redacted]' is outside --root", run
    again = httpx.post(f"{server.url}/hooks/keyed", headers={"X-Shared": "tok-1"}, json={"n": 1})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    with server.admin() as c:
        shown = c.get(f"/api/runs/{run['id']}").json()
        log = c.get(f"/api/runs/{run['id']}/log").text
        page = c.get(f"/runs/{run['id']}").text
        delivery = c.get(f"/api/deliveries/{r.json()['delivery_id']}").json()
        deliveries = c.get("/api/deliveries").text
    assert shown["concurrency_key"] == "[redacted]" and shown["spec"]["cwd"] == "[redacted]"
    assert delivery["dedup_key"].startswith("sha256:")
    for text in (str(shown), log, page, str(delivery), deliveries, server.output()):
        assert "tok-1" not in text, text


@pytest.mark.parametrize("value", ["Zm9v//tok-secret-9", "../tok-secret-9",
                                   "cb.example/tok-secret-9?t=x#y"])
def test_a_secret_is_hidden_where_a_reason_quotes_it_resolved(
    make_server: Callable[..., Server], value: str,
) -> None:
    """An error quotes a program or cwd as a path resolved (`a//b` as `a/b`, `../x` as `x`),
    and a URL that is no http(s) URL up to its `?`: a value from a secret header showed in
    the run's reason, the API and the log in those forms."""
    server = make_server(RULES, env=ENV)
    r = httpx.post(f"{server.url}/hooks/open?wait=10s", headers={"X-Api-Key": value},
                   json={"paths": True})
    assert r.status_code == 200, r.text
    runs = {x["rule"]: x for x in r.json()["runs"]}
    for rule in ("program-from-secret", "cwd-from-secret", "url-from-secret"):
        assert runs[rule]["status"] == "failed" and "[redacted]" in runs[rule]["reason"], runs[rule]
    with server.admin() as c:
        listing = c.get("/api/runs?limit=100").text
    for text in (r.text, listing, server.output()):
        assert "tok-secret-9" not in text, text


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_data_dir_database_and_logs_are_private(make_server: Callable[..., Server], project: Path,
                                                   tmp_path: Path) -> None:
    """What hookrunner creates under --data is its owner's alone (0700 / 0600), the SQLite
    -wal and -shm files and run logs included; a data dir the operator made open is left so,
    with a warning."""
    data = tmp_path / "made" / "data"  # hookrunner creates it (Server makes only its own dir)
    (project / "rules" / "rules.yaml").write_text(RULES + """
  - {name: slow, hook: open, when: payload.slow, run: {shell: {argv: [sh, -c, "sleep 1.5; echo x"]}}}
""")
    server = Server(project / "rules", tmp_path / "srv" / "unused", project, env=ENV,
                    args=["--data", str(data)])
    server.start()
    try:
        r = httpx.post(f"{server.url}/hooks/open", json={"slow": True}, params={"wait": "20s"})
        assert r.status_code == 200, r.text
        assert list((data / "logs").rglob("*.log"))  # a run going past a second is on disk
        assert _mode(data) == 0o700
        files = list(data.rglob("*"))
        assert {p.name for p in files} >= {"hookrunner.db", "hookrunner.db-wal", "hookrunner.db-shm"}
        for p in files:
            assert _mode(p) == (0o700 if p.is_dir() else 0o600), (p, oct(_mode(p)))
        assert "data_dir_not_private" not in server.output()
    finally:
        server.stop()
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    server = Server(project / "rules", open_dir, project, env=ENV)
    server.start()
    server.stop()
    assert _mode(open_dir) == 0o755  # never chmod-ed behind the operator's back
    assert "server.data_dir_not_private" in server.output()
    assert _mode(open_dir / "hookrunner.db") == 0o600
    # Said once by a server of several processes, not by each HTTP worker too.
    workers = Server(project / "rules", open_dir, project, env=ENV, args=["--http-workers", "2"])
    workers.start()
    workers.stop()
    assert workers.output().count("server.data_dir_not_private") == 1, workers.output()


def test_a_listing_refuses_parameters_it_does_not_take(make_server: Callable[..., Server]) -> None:
    """`?status=` on deliveries, or a paging parameter, used to give the unfiltered list."""
    server = make_server(RULES, env=ENV)
    with server.admin() as c:
        r = c.get("/api/deliveries", params={"status": "failed"})
        assert r.status_code == 400
        assert r.json() == {
            "error": "unknown parameter 'status'; this endpoint takes hook, limit, before"}
        assert c.get("/api/runs", params={"offset": "100"}).status_code == 400
        # Given twice: which would count? (The last did, silently.)
        r = c.get("/api/runs?status=failed&status=succeeded")
        assert r.status_code == 400 and r.json() == {"error": "status is given more than once"}
        # One run, one delivery, a log: they take nothing else either.
        posted = httpx.post(f"{server.url}/hooks/open", json={}, timeout=30).json()
        run = server.wait_run(posted["runs"][0])
        for path in (f"/api/runs/{run['id']}?foo=1", f"/api/runs/{run['id']}/log?foo=1",
                     f"/api/deliveries/{run['delivery_id']}?foo=1",
                     f"/api/runs/{run['id']}/log?attempt=1&attempt=1"):
            r = c.get(path)
            assert r.status_code == 400 and "error" in r.json(), (path, r.text)
        assert c.get(f"/api/runs/{run['id']}/log?attempt=1").status_code == 200
        assert c.get("/api/runs", params={"status": "failed", "limit": "5"}).status_code == 200
        # An empty filter matched nothing; a bad limit silently became 50 (or 1).
        for params in ({"status": ""}, {"rule": ""}, {"delivery": " "}, {"limit": ""},
                       {"limit": "abc"}, {"limit": "0"}, {"limit": "-5"}, {"limit": "1e9"},
                       {"limit": "\uff13"}):
            r = c.get("/api/runs", params=params)
            assert r.status_code == 400 and "error" in r.json(), (params, r.text)
        assert c.get("/api/deliveries", params={"hook": ""}).status_code == 400
        r = c.post(f"/api/runs/{run['id']}/cancel?x=1")  # a change too: nothing done
        assert r.status_code == 400 and "takes no parameters" in r.json()["error"], r.text
        # Each says what leaving it out does.
        assert c.get("/api/runs", params={"limit": ""}).json() == {
            "error": "limit is empty: leave it out for the default, 50"}
        assert c.get("/api/runs", params={"rule": ""}).json() == {
            "error": "rule is empty: leave it out for no filter by it"}
        assert c.get("/api/runs", params={"limit": "9" * 5000}).status_code == 200  # at most 1000


def test_a_replay_says_which_rules_matched_on_arrival_and_do_not_now(
        make_server: Callable[..., Server], project: Path) -> None:
    """A rule deciding on a secret-looking header matched on arrival; the header is stored
    `[redacted]`, so a replay queued nothing and said `0 run(s) queued`, exit 0."""
    server = make_server("""
hooks:
  open: {verify: {none: {}}}
rules:
  - {name: with-key, hook: open, when: 'headers["X-Api-Key"] | default("") == "k1"',
     run: {shell: {argv: ["true"]}}}
  - {name: always, hook: open, when: 'payload.all | default(false)', run: {shell: {argv: ["true"]}}}
""")
    posted = httpx.post(f"{server.url}/hooks/open", json={}, headers={"X-Api-Key": "k1"}).json()
    assert len(posted["runs"]) == 1
    delivery_id = posted["delivery_id"]
    with server.admin() as c:
        answer = c.post(f"/api/deliveries/{delivery_id}/replay").json()
        assert (answer["runs"], answer["no_longer_matched"]) == ([], ["with-key"])
        assert "stored as [redacted]" in answer["note"]
        page = c.post(f"/deliveries/{delivery_id}/replay", follow_redirects=True).text
        assert "with-key matched it on arrival and does not now" in page, page
    cli = subprocess.run(
        [sys.executable, "-m", "hookrunner.cli", "replay", delivery_id,
         "--rules", str(project / "rules"), "--data", str(project / "data")],
        capture_output=True, text=True)
    assert cli.returncode == 1 and "0 run(s) queued" in cli.stdout, (cli.stdout, cli.stderr)
    assert "rule with-key matched this delivery when it arrived and does not now" in cli.stderr
    assert "stored as [redacted]" in cli.stderr
    # Against rules where it is gone (renamed, or not the server's): said too.
    renamed = project / "renamed"
    renamed.mkdir()
    (renamed / "r.yaml").write_text((project / "rules" / "rules.yaml").read_text()
                                   .replace("with-key", "with-key-2"))
    cli = subprocess.run(
        [sys.executable, "-m", "hookrunner.cli", "replay", delivery_id,
         "--rules", str(renamed), "--data", str(project / "data")],
        capture_output=True, text=True)
    assert cli.returncode == 1 and "rule with-key matched this delivery when it arrived and " \
        "is not in --rules" in cli.stderr, cli.stderr
    # A rule on the payload alone that no longer matches: no note about redacted values,
    # though the delivery has one (every signed delivery has: its signature header).
    payload_only = httpx.post(f"{server.url}/hooks/open", json={"all": True},
                              headers={"Authorization": "Bearer s3cret"}).json()
    changed = project / "changed"
    changed.mkdir()
    (changed / "r.yaml").write_text((project / "rules" / "rules.yaml").read_text()
                                    .replace("payload.all", "payload.none"))
    cli = subprocess.run(
        [sys.executable, "-m", "hookrunner.cli", "replay", payload_only["delivery_id"],
         "--rules", str(changed), "--data", str(project / "data")],
        capture_output=True, text=True)
    assert cli.returncode == 1 and "rule always matched this delivery when it arrived and " \
        "does not now" in cli.stderr, cli.stderr
    assert "redacted" not in cli.stderr, cli.stderr


def test_listings_page_back_through_the_whole_history(make_server: Callable[..., Server],
                                                      project: Path) -> None:
    """The newest 1,000 were all the API, the console or `hookrunner runs` could list: an
    older delivery could only be found by its id. Each pages on with `before`."""
    server = make_server(RULES, env=ENV)
    posted = [httpx.post(f"{server.url}/hooks/open", json={"n": i}, timeout=30).json()
              for i in range(7)]
    newest_first = [p["delivery_id"] for p in reversed(posted)]
    runs_newest_first = [p["runs"][0] for p in reversed(posted)]
    with server.admin() as c:
        for path, key, expected in (("/api/deliveries", "deliveries", newest_first),
                                    ("/api/runs", "runs", runs_newest_first)):
            seen: list[str] = []
            params = {"limit": "3"}
            while True:
                page = c.get(path, params=params).json()
                seen += [item["id"] for item in page[key]]
                if page["next"] is None:
                    break
                assert page["next"] == seen[-1]
                params = {"limit": "3", "before": page["next"]}
            assert seen == expected, (path, page)
            whole = c.get(path, params={"limit": "7"}).json()  # a full page, and no more
            assert [item["id"] for item in whole[key]] == expected and whole["next"] is None
        r = c.get("/api/deliveries", params={"before": "dlv_gone"})
        assert r.status_code == 400 and "dlv_gone" in r.json()["error"], r.text
        assert c.get("/api/runs", params={"before": "run_gone"}).status_code == 400
        # The console: an "older" link on a full page, the rest behind it, none after.
        first = c.get("/", params={"limit": "4"}).text
        assert re.findall(r'<tr data-id="([^"]+)"', first) == newest_first[:4]
        older = re.search(r'href="/\?([^"]*)" id="older"', first)
        assert older is not None, first
        second = c.get("/?" + html.unescape(older.group(1))).text
        assert re.findall(r'<tr data-id="([^"]+)"', second) == newest_first[4:]
        assert 'id="older"' not in second and "Newest" in second
    cli = [sys.executable, "-m", "hookrunner.cli", "runs", "--data", str(project / "data")]
    page = subprocess.run([*cli, "--limit", "5"], capture_output=True, text=True, check=True)
    assert f"--before {runs_newest_first[4]}" in page.stderr
    rest = subprocess.run([*cli, "--limit", "5", "--before", runs_newest_first[4]],
                          capture_output=True, text=True, check=True)
    assert [line.split()[0] for line in rest.stdout.splitlines()] == runs_newest_first[5:]
    assert "older runs" not in subprocess.run([*cli, "--limit", "7"], capture_output=True,
                                              text=True, check=True).stderr
    gone = subprocess.run([*cli, "--before", "run_gone"], capture_output=True, text=True)
    assert gone.returncode == 1 and "run_gone" in gone.stderr


def test_the_console_pages_a_run_status_filter_by_run_without_gaps_or_repeats(
        make_server: Callable[..., Server]) -> None:
    """With a run status filter rows come in run order, and a replay puts an old delivery
    first: paging by delivery then skipped the nine between (review)."""
    server = make_server("""
hooks:
  open: {verify: {none: {}}}
rules:
  - {name: fails, hook: open, run: {shell: {argv: ["false"]}}}
""")
    posted = [httpx.post(f"{server.url}/hooks/open", json={"n": i}, timeout=30).json()
              for i in range(10)]
    with server.admin() as c:
        assert c.post(f"/api/deliveries/{posted[0]['delivery_id']}/replay").status_code == 202
        posted += [httpx.post(f"{server.url}/hooks/open", json={"n": i}, timeout=30).json()
                   for i in range(10, 14)]
        runs = [r for p in posted for r in p["runs"]]
        for run_id in runs:
            assert server.wait_run(run_id)["status"] == "failed"
        shown: list[str] = []
        query = "status=failed&limit=5"
        for _ in range(10):
            page = c.get(f"/?{query}").text
            shown += re.findall(r'<tr data-id="([^"]+)"', page)
            older = re.search(r'href="/\?([^"]*)" id="older"', page)
            if older is None:
                break
            query = html.unescape(older.group(1))
    ids = [p["delivery_id"] for p in posted]
    # By their newest failed run: the four last, the replayed first one, then the rest.
    assert shown == [*reversed(ids[10:]), ids[0], *reversed(ids[1:10])], shown


def test_the_console_behind_a_tls_terminating_proxy(make_server: Callable[..., Server]) -> None:
    """nginx rewrites Host and terminates TLS: with it in --trusted-proxy, the login is
    taken from the public origin (X-Forwarded-Host), the cookie is Secure
    (X-Forwarded-Proto), and the log names the browser, not the proxy."""
    server = make_server(RULES, env=ENV, args=["--trusted-proxy", "127.0.0.1/32"])
    proxied = {"Host": "127.0.0.1:1", "Origin": "https://hooks.example.com",
               "X-Forwarded-Host": "hooks.example.com", "X-Forwarded-Proto": "https",
               "X-Forwarded-For": "203.0.113.9"}
    r = httpx.post(server.url + "/login", data={"token": ADMIN_TOKEN, "next": "/rules"},
                   headers=proxied)
    assert r.status_code == 303 and r.headers["location"] == "/rules", r.text
    assert "secure" in r.headers["set-cookie"].lower()
    assert "console.login client=203.0.113.9" in server.output()
    # Another origin is still refused, and says what a proxy must send.
    r = httpx.post(server.url + "/login", data={"token": ADMIN_TOKEN},
                   headers={**proxied, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "X-Forwarded-Host" in r.text
    # A proxy that sends no X-Forwarded-Proto: the form's https page still makes it Secure;
    # a plain-http login is not.
    without_proto = {k: v for k, v in proxied.items() if k != "X-Forwarded-Proto"}
    r = httpx.post(server.url + "/login", data={"token": ADMIN_TOKEN}, headers=without_proto)
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
    r = httpx.post(server.url + "/login", data={"token": ADMIN_TOKEN},
                   headers={**without_proto, "Origin": "http://hooks.example.com"})
    assert r.status_code == 303 and "secure" not in r.headers["set-cookie"].lower()


def test_console_login_guessing_is_slowed_and_logged_once_a_second(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(RULES, env=ENV)
    started = time.monotonic()
    with httpx.Client() as c:
        statuses = [c.post(server.url + "/login", data={"token": "guess"}).status_code
                    for _ in range(30)]
    took = time.monotonic() - started
    # A burst of 20, then a try a second: 10 more tries within 5 s meet a 429 (on a loaded
    # machine they may take longer, and each find the try the second gave back).
    assert statuses[:20] == [401] * 20, statuses
    assert 429 in statuses[20:] or took > 5, (statuses, took)
    out = server.output()
    seconds = int(time.monotonic() - started)  # a loaded machine takes seconds for 30
    for reason in ("wrong token", "too many tries"):  # each the first at once, then 1 a second
        lines = [x for x in out.splitlines() if "console.login_refused" in x and reason in x]
        assert 1 <= len(lines) <= 2 + seconds, out


def test_a_console_button_pressed_without_a_session_goes_to_the_login_form(
    make_server: Callable[..., Server],
) -> None:
    """After a restart the page's session is gone: its Cancel leads to the login form and
    back to the page, not to a JSON 401."""
    server = make_server(RULES, env=ENV)
    r = httpx.post(server.url + "/runs/run_x/cancel", data={"csrf": "stale"},
                   headers={"Accept": "text/html", "Referer": server.url + "/runs/run_x"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fruns%2Frun_x"
    r = httpx.post(server.url + "/runs/run_x/cancel", data={"csrf": "stale"},
                   headers={"Accept": "text/html", "Referer": "https://evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F"
    r = httpx.post(server.url + "/runs/run_x/cancel", data={"csrf": "stale"})  # a script
    assert r.status_code == 401


def test_a_proxys_own_basic_auth_is_no_admin_token_guess(
    make_server: Callable[..., Server], tmp_path: Path,
) -> None:
    """nginx's auth_basic forwards `Authorization: Basic ...`: each page load was a wrong
    admin token (a 401, never the login form; after 20 the form itself answered 429)."""
    server = make_server(RULES, env=ENV)
    (tmp_path / "htpasswd").write_text("ops:{PLAIN}pw\n")
    location = f"""
        location / {{
            auth_basic "ops";
            auth_basic_user_file {tmp_path}/htpasswd;
            proxy_set_header Host $http_host;
            proxy_pass http://hookrunner;
        }}"""
    nginx = Nginx(tmp_path / "nginx", f"127.0.0.1:{server.port}", location).start()
    try:
        with httpx.Client(base_url=nginx.url, auth=("ops", "pw"), timeout=30) as c:
            for _ in range(25):
                r = c.get("/rules", headers={"Accept": "text/html"})
                assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Frules"
            api = c.get("/api/runs")  # a script still hears which token it needs
            assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"
            r = c.post("/login", data={"token": ADMIN_TOKEN, "next": "/rules"},
                       headers={"Origin": nginx.url})
            assert r.status_code == 303, r.text
            assert c.get("/rules", headers={"Accept": "text/html"}).status_code == 200
    finally:
        nginx.stop()
    assert "admin.token_refused" not in server.output()


def test_replay_pressed_twice_replays_once(make_server: Callable[..., Server]) -> None:
    """A double click (or a browser's retry) sent the Replay form twice at once: both
    answered 303, with runs of their own (a deploy rule deployed twice)."""
    server = make_server(RULES, env=ENV)
    delivery = httpx.post(f"{server.url}/hooks/open", json={}, timeout=30).json()["delivery_id"]

    def run_count() -> int:
        with server.admin() as api:
            return len(api.get("/api/runs", params={"delivery": delivery}).json()["runs"])

    first = run_count()
    assert first > 0
    with httpx.Client(base_url=server.url, timeout=30, headers={"Accept": "text/html"}) as c:
        login = c.post("/login", data={"token": ADMIN_TOKEN}, headers={"Origin": server.url})
        assert login.status_code == 303
        csrf = re.findall(r'name="csrf" value="([^"]+)"', c.get(f"/deliveries/{delivery}").text)[0]

        def press(_: int) -> httpx.Response:
            with httpx.Client(base_url=server.url, timeout=30, cookies=c.cookies) as one:
                return one.post(f"/deliveries/{delivery}/replay", data={"csrf": csrf})

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(press, range(3)))
        assert [r.status_code for r in answers] == [303] * 3
        locations = sorted(r.headers["location"] for r in answers)
        assert locations[1:] == [locations[0] + "&again=1"] * 2, locations
        # The second click of a double click can land on the page the first one led to.
        assert press(0).headers["location"] == locations[1]
        assert run_count() == 2 * first  # one replay
        page = c.get(locations[1]).text
        assert "Replay was pressed again within 5 s (a double click?): it replayed once." in page
    with server.admin() as api:  # the API replays each time it is asked, as documented
        for _ in range(2):
            assert api.post(f"/api/deliveries/{delivery}/replay").status_code == 202
    assert run_count() == 4 * first


BOOLEAN_TEXT_RULES = """
hooks:
  monitoring: {verify: {none: {}}}
rules:
  - name: apply-scaling          # interface.md's own gate
    hook: monitoring
    when: payload.apply_infra | default(false)
    run: {shell: {argv: [echo, applied]}}
  - name: apply-converted
    hook: monitoring
    when: payload.apply_infra | default(false) | bool
    run: {shell: {argv: [echo, converted]}}
  - name: apply-swapped          # the gate first: `a and b` is b where a is any text
    hook: monitoring
    when: payload.apply_infra | default(false) and payload.apply_infra is defined
    run: {shell: {argv: [echo, swapped]}}
"""


def test_a_condition_of_boolean_text_never_holds_by_being_text(
        make_server: Callable[..., Server]) -> None:
    """`"apply_infra": "false"` (Grafana and Alertmanager labels are always text) ran
    `terraform apply`: any text but "" was true. Such text is an error of the condition now,
    saying what to write, and `| bool` reads it."""
    server = make_server(BOOLEAN_TEXT_RULES)

    def rules_run(body: dict[str, Any]) -> list[str]:
        r = httpx.post(f"{server.url}/hooks/monitoring", json=body)
        assert r.status_code == 202, r.text
        return sorted(server.wait_run(run_id)["rule"] for run_id in r.json()["runs"])

    assert rules_run({"apply_infra": "false"}) == []
    assert rules_run({"apply_infra": "no"}) == []
    assert rules_run({"apply_infra": "true"}) == ["apply-converted"]
    assert rules_run({"apply_infra": True}) == ["apply-converted", "apply-scaling",
                                                "apply-swapped"]
    assert rules_run({}) == []
    assert rules_run({"apply_infra": "soon"}) == ["apply-scaling", "apply-swapped"]  # no yes/no
    line = next(x for x in server.output().splitlines()
                if "rule.condition_error" in x and "rule=apply-scaling" in x)
    assert "the condition's value is the text 'false', not a boolean" in line, line
    assert "compare it (== " in line and "or convert it (| bool)" in line, line
    assert any("rule=apply-converted" in x and "'soon'" in x for x in server.output().splitlines()
               if "rule.condition_error" in x)


def test_a_when_that_errs_is_logged_and_counted(make_server: Callable[..., Server]) -> None:
    """It never matches; without a line or a metric nobody would know (webhook logs these)."""
    server = make_server(RULES, env=ENV)
    for _ in range(3):
        r = httpx.post(f"{server.url}/hooks/tok", json={}, headers={"Authorization": "Bearer tok-1"})
        assert r.status_code == 202 and r.json()["runs"] == [], r.text
    assert server.output().count("rule.condition_error") == 1  # once a minute per rule
    line = next(x for x in server.output().splitlines() if "rule.condition_error" in x)
    assert "rule=typo" in line and "hook=tok" in line and "nothing" in line, line
    assert "/rules/rules.yaml:" in line, line  # where the rule is written
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'hookrunner_condition_errors_total{rule="typo"} 3.0' in metrics


def _rule_of(server: Server, run_id: str) -> str:
    with server.admin() as c:
        rule: str = c.get(f"/api/runs/{run_id}").json()["rule"]
    return rule


def _exchange(port: int, request: bytes) -> bytes:
    """Everything the server writes until it closes the connection (at most 10 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_a_body_that_does_not_parse_gets_one_400_and_the_connection_closes(
    make_server: Callable[..., Server],
) -> None:
    """A bad chunk size or an unknown transfer coding in the body of a signed hook, the
    login form or a route that reads no body: one answer per request, the connection
    closed, nothing left open on the server (no signature needed to cause it)."""
    server = make_server(RULES, env=ENV)
    assert server.proc is not None
    fds = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    head = b"Host: x\r\nContent-Type: application/json\r\n"
    bad = {
        "chunk size": b"POST /hooks/gh HTTP/1.1\r\n" + head
        + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        "coding": b"POST /hooks/gh HTTP/1.1\r\n" + head + b"Transfer-Encoding: gzip\r\n\r\nabc",
        "login": b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "no body read": b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    }
    for what, request in [*bad.items()] * 5:
        answer = _exchange(server.port, request)
        assert answer.count(b"HTTP/1.1 ") == 1, (what, answer)
        assert answer.startswith(b"HTTP/1.1 400 ") and b"invalid HTTP request" in answer, answer
    # Pipelined behind good requests: their answers first, in order, then the 400, then the
    # close; and the bad one's route never runs (a cancel that reads no body would act).
    good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = _exchange(server.port, good + good + bad["login"])
    assert answer.count(b"HTTP/1.1 ") == 3 and answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.index(b"HTTP/1.1 400 ") > answer.rindex(b'{"status":"ok"}'), answer
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{server.proc.pid}/fd")) > fds:
        assert time.monotonic() < deadline, "connections left open"
        time.sleep(0.1)
    posted = httpx.post(f"{server.url}/hooks/open", json={"sleep": 30}, timeout=30).json()
    slow = next(r for r in posted["runs"] if _rule_of(server, r) == "sleeper")
    cancel = (f"POST /api/runs/{slow}/cancel HTTP/1.1\r\nHost: x\r\n"
              f"Authorization: Bearer {ADMIN_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
              "zz\r\n").encode()
    answer = _exchange(server.port, good + cancel)
    assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 400 " in answer, answer
    # Alone on its connection too: its route reads the body before it acts.
    answer = _exchange(server.port, cancel)
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 400 "), answer
    coded = cancel.replace(b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip")
    answer = _exchange(server.port, coded)
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 400 "), answer
    # A coding before `chunked` was read as plain bytes, and the delivery journaled.
    gzip_chunked = (b"POST /hooks/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    b"\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    for request in (gzip_chunked, gzip_chunked.replace(
            b"Transfer-Encoding: gzip, chunked",
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked")):
        answer = _exchange(server.port, request)
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1, answer
    time.sleep(1.5)  # a cancel is acted on within a second
    with server.admin() as c:
        assert c.get(f"/api/runs/{slow}").json()["status"] in ("queued", "running")
        c.post(f"/api/runs/{slow}/cancel")
    assert server.wait_run(slow)["status"] == "canceled"
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10  # no connection holds up the stop
    assert "Traceback" not in server.output(), server.output()


def test_an_http_1_1_request_needs_exactly_one_host_header(
    make_server: Callable[..., Server],
) -> None:
    """RFC 9112: none or two, or a value that is no host[:port], is a 400 that says so, on
    the hook lane and elsewhere, and the connection closes; HTTP/1.0 needs none."""
    server = make_server(RULES, env=ENV)
    body = b'{"a": 1}'
    hook = (b"POST /hooks/open HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n")
    for request in (hook + b"\r\n" + body,
                    hook + b"Host: a\r\nHost: b\r\n\r\n" + body,
                    b"GET /healthz HTTP/1.1\r\n\r\n"):
        answer = _exchange(server.port, request)
        assert answer.count(b"HTTP/1.1 ") == 1, answer
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"exactly one Host header is required" in answer, answer
    answer = _exchange(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"ok"' in answer, answer
    answer = _exchange(server.port, hook.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 202 "), answer
    # Two are refused in any version, and so is a value that is no host[:port].
    answer = _exchange(server.port, b"GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"exactly one Host" in answer, answer
    for host in (b"evil.example/x", b"user@h", b"h:80:80", b"a b", b"[::1", b"h:8o", b"\xc3\xa9",
                 b"a,b", b":80", b"h;x"):
        for request in (hook + b"Host: " + host + b"\r\n\r\n" + body,
                        b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"):
            answer = _exchange(server.port, request)
            assert answer.count(b"HTTP/1.1 ") == 1, answer
            assert answer.startswith(b"HTTP/1.1 400 ") and b"not a host[:port]" in answer, answer
    for host in (b"[::1]:8080", b"hooks.example.com", b"127.0.0.1:1", b"", b"ex%41mple:",
                 b"[fe80::1%25eth0]:80", b"my_host.internal.:8080", b"spaced.example \t"):
        answer = _exchange(server.port, hook + b"Host: " + host + b"\r\n\r\n" + body)
        assert answer.startswith(b"HTTP/1.1 202 "), (host, answer)
    assert "http.invalid_request" in server.output() and "reason=host_header" in server.output()
    assert "reason=host_value host=" in server.output()  # one line a second: the last refused


def test_an_admin_token_with_non_ascii_characters_works_for_the_api(
    make_server: Callable[..., Server],
) -> None:
    """curl sends it as UTF-8, as the console's login form does; the API compared the
    header's latin-1 reading of those bytes, and refused it."""
    token = "pässwort-ü"
    server = make_server(RULES, env={**ENV, "HOOKRUNNER_ADMIN_TOKEN": token})
    ok = httpx.get(f"{server.url}/api/runs", timeout=30,
                   headers={"Authorization": f"Bearer {token}".encode()})
    assert ok.status_code == 200, ok.text
    wrong = httpx.get(f"{server.url}/api/runs", timeout=30,
                      headers={"Authorization": "Bearer pässwort-u".encode()})
    assert wrong.status_code == 401


def test_ipv4_clients_of_a_dual_stack_listener_are_their_ipv4_addresses(
    make_server: Callable[..., Server],
) -> None:
    """`--host ::` sees an IPv4 client as ::ffff:127.0.0.1: an IPv4 allow list refused it,
    and the history named it so."""
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6 on this machine")
    rules = RULES.replace("  open: {verify: {none: {}}}",
                          "  open: {verify: {none: {}}, allow_ips: [127.0.0.0/8]}")
    server = make_server(rules, env=ENV, args=["--host", "::"])
    answer = httpx.post(f"{server.url}/hooks/open", json={}, timeout=30)
    assert answer.status_code == 202, answer.text
    with server.admin() as c:
        doc = c.get(f"/api/deliveries/{answer.json()['delivery_id']}").json()
    assert doc["client_ip"] == "127.0.0.1"


def test_a_refused_console_login_says_when_to_try_again(make_server: Callable[..., Server]) -> None:
    server = make_server(RULES, env=ENV)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for _ in range(30):
            r = c.post("/login", data={"token": "wrong"}, headers={"Origin": server.url})
            if r.status_code == 429:
                break
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "1"
        assert "Too many tries: wait 1 s." in r.text


def test_wrong_admin_tokens_count_with_login_tries_and_a_right_one_costs_none(
    make_server: Callable[..., Server],
) -> None:
    """A bearer token is a try at the admin token as the login form's is: 20 wrong ones at
    once, then one a second per address, counted together. While the address must wait no
    try is judged (a right one would say it was right); a right token never costs a try."""
    server = make_server(RULES, env=ENV)
    right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert all(c.get("/api/runs", headers=right).status_code == 200 for _ in range(30))
        refused = c.get("/api/runs")  # no token: no try
        assert refused.status_code == 401
        assert refused.headers["cache-control"] == "no-store"
        assert refused.headers["x-content-type-options"] == "nosniff"
        statuses = []
        for _ in range(40):
            statuses.append(c.get("/api/runs", headers={"Authorization": "Bearer wrong"}))
            if statuses[-1].status_code == 429:
                break
        assert [r.status_code for r in statuses[:19]] == [401] * 19
        throttled = statuses[-1]
        assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
        assert "too many wrong admin tokens" in throttled.json()["error"]
        assert c.get("/api/runs", headers=right).status_code == 429  # not judged meanwhile
        login = c.post("/login", data={"token": ADMIN_TOKEN}, headers={"Origin": server.url})
        assert login.status_code == 429  # the login form shares the count
        assert c.get("/api/runs").status_code == 401  # a request without a token is no try
    time.sleep(1.2)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/api/runs", headers=right).status_code == 200
    # Guessing over the API is logged as the form's is: a line a second per reason, counted.
    lines = [line for line in server.output().splitlines() if "admin.token_refused" in line]
    assert any('reason="wrong token"' in line for line in lines), lines
    assert any('reason="too many tries"' in line for line in lines), lines
    assert len(lines) <= 6 and ADMIN_TOKEN not in server.output()


def test_a_short_chosen_admin_token_is_warned_about(make_server: Callable[..., Server]) -> None:
    server = make_server(RULES, env={**ENV, "HOOKRUNNER_ADMIN_TOKEN": "abc"})
    assert "server.admin_token_short length=3" in server.output(), server.output()[-2000:]


def test_a_token_as_a_urls_user_name_is_hidden_where_runs_are_shown(
    make_server: Callable[..., Server],
) -> None:
    """`git clone https://<token>@github.com/...`: the user name is the credential."""
    server = make_server(RULES, env=ENV)
    repo = "https://ghp_S3CR3T@github.com/o/r.git"
    r = httpx.post(f"{server.url}/hooks/open?wait=10s", json={"repo": repo}, timeout=30)
    run = next(x for x in r.json()["runs"] if x["rule"] == "clones")
    assert run["status"] == "succeeded"
    with server.admin() as c:
        shown = c.get(f"/api/runs/{run['id']}").json()
        page = c.get(f"/runs/{run['id']}").text
    assert shown["spec"]["argv"] == ["true", "https://[redacted]@github.com/o/r.git"]
    assert "ghp_S3CR3T" not in page


CLIENT_IP_RULES = """
hooks:
  ops: {verify: none}
rules:
  - name: office-or-token
    hook: ops
    when:
      any:
        - client_ip is in_cidr("203.0.113.0/24")
        - headers["X-Token"] | default("") == "let-me-in"
    run: {shell: {argv: [scripts/who.sh, "{{ client_ip }}"]}}
"""


def test_conditions_and_templates_see_the_senders_address_and_a_replay_keeps_it(
    make_server: Callable[..., Server], project: Path,
) -> None:
    """webhook's ip-whitelist inside a rule (an address or a token): allow_ips alone cannot
    say "or". `client_ip` is the address as judged past --trusted-proxy hops."""
    write_script(project, "who.sh", 'echo "from=$1"\n')
    server = make_server(CLIENT_IP_RULES, args=["--trusted-proxy", "127.0.0.1/32"])
    office = httpx.post(f"{server.url}/hooks/ops", json={},
                        headers={"X-Forwarded-For": "203.0.113.7"})
    elsewhere = httpx.post(f"{server.url}/hooks/ops", json={},
                           headers={"X-Forwarded-For": "198.51.100.1"})
    token = httpx.post(f"{server.url}/hooks/ops", json={},
                       headers={"X-Forwarded-For": "198.51.100.1", "X-Token": "let-me-in"})
    assert [len(r.json()["runs"]) for r in (office, elsewhere, token)] == [1, 0, 1]
    with server.admin() as c:
        assert server.wait_run(office.json()["runs"][0])["status"] == "succeeded"
        assert "from=203.0.113.7" in c.get(f"/api/runs/{office.json()['runs'][0]}/log").text
        # A replay is judged on the address stored with the delivery, not the replayer's.
        replayed = c.post(f"/api/deliveries/{office.json()['delivery_id']}/replay").json()
        assert [m["rule"] for m in replayed["matches"] if m["matched"]] == ["office-or-token"]
        assert c.post(f"/api/deliveries/{elsewhere.json()['delivery_id']}/replay").json()["runs"] == []
    # A dry run takes the address as a flag; without it, client_ip is null (and no match here).
    (project / "body.json").write_text("{}")
    base = [sys.executable, "-m", "hookrunner.cli", "explain", "--rules", str(project / "rules"),
            "--hook", "ops", "--payload", str(project / "body.json")]
    given = subprocess.run([*base, "--client-ip", "203.0.113.9"], capture_output=True, text=True)
    shown = '✓ [any] client_ip is in_cidr("203.0.113.0/24")           "203.0.113.9"'
    assert given.returncode == 0 and shown in given.stdout, given.stdout + given.stderr
    unknown = subprocess.run(base, capture_output=True, text=True)
    assert unknown.returncode == 0 and "✗ office-or-token" in unknown.stdout, unknown.stdout
    bad = subprocess.run([*base, "--client-ip", "web-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--client-ip 'web-1': not an IP address" in bad.stderr


QUERY_TOKEN_RULES = """
hooks:
  url-only:
    verify: {token: {secret: {env: URL_TOKEN}, query: k}}
rules:
  - name: prod
    hook: url-only
    when: [query.env == "prod", query.k | length > 3]
    run: {shell: {argv: [scripts/ok.sh]}}
"""


def test_a_token_in_the_query_verifies_and_is_never_stored(
    make_server: Callable[..., Server], project: Path,
) -> None:
    """A sender that can only put its secret in the URL (webhook's `url` source with a match
    rule): the token verifier reads it, and it is redacted as the verifier's header would be,
    though `k` does not look secret by its name."""
    write_script(project, "ok.sh", "echo ok\n")
    secret = "url-t0ken-5ecret"
    server = make_server(QUERY_TOKEN_RULES, env={"URL_TOKEN": secret})
    url = f"{server.url}/hooks/url-only"
    assert httpx.post(f"{url}?env=prod", json={}).status_code == 401
    assert httpx.post(f"{url}?env=prod&k=wrong", json={}).status_code == 401
    assert httpx.post(f"{url}?env=prod", json={}, headers={"Authorization": f"Bearer {secret}"}
                      ).status_code == 401  # the header does not stand in for it
    r = httpx.post(f"{url}?env=prod&k={secret}", json={})
    assert r.status_code == 202 and len(r.json()["runs"]) == 1, r.text
    assert server.wait_run(r.json()["runs"][0])["status"] == "succeeded"
    with server.admin() as c:
        doc = c.get(f"/api/deliveries/{r.json()['delivery_id']}").json()
    assert doc["query"] == [["env", "prod"], ["k", "[redacted]"]]
    assert [cond["value"] for cond in doc["matches"][0]["conditions"]] == ['"prod"', "[redacted]"]
    assert secret.encode() not in _stored_bytes(project / "data")
    assert "delivery.accepted" in server.output() and secret not in server.output()


def test_a_dedup_template_failing_on_json_sent_as_a_form_says_so(
    make_server: Callable[..., Server],
) -> None:
    """`curl -d '{...}'` without a Content-Type sends a form: the `dedup` template finds no
    field, and its log line gives the same hint as a failing condition's."""
    server = make_server("""
hooks:
  open:
    verify: none
    dedup: "{{ payload.id }}"
rules: []
""")
    r = httpx.post(f"{server.url}/hooks/open", content=b'{"id": "abc"}', timeout=30,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 202, r.text
    line = next(x for x in server.output().splitlines() if "delivery.dedup_template_failed" in x)
    assert "the body was read as form fields" in line, line


def test_json_sent_as_a_form_is_said_where_the_delivery_is_looked_at(
    make_server: Callable[..., Server], project: Path,
) -> None:
    """The hint was only in a log line (throttled): the API's delivery, its console page and
    `explain --delivery` showed only "'dict object' has no attribute 'ref'"."""
    server = make_server("""
hooks:
  open: {verify: none}
rules:
  - {name: main, hook: open, when: 'payload.ref == "main"', run: {shell: {argv: ["true"]}}}
""")
    r = httpx.post(f"{server.url}/hooks/open", content=b'{"ref": "main"}', timeout=30,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 202 and r.json()["runs"] == [], r.text
    delivery = r.json()["delivery_id"]
    with server.admin() as c:
        assert "read as form fields" in c.get(f"/api/deliveries/{delivery}").json()["hint"]
        assert 'id="hint"' in c.get(f"/deliveries/{delivery}").text
    done = subprocess.run([sys.executable, "-m", "hookrunner.cli", "explain", "--delivery", delivery,
                           "--data", str(project / "data"), "--rules", str(project / "rules")],
                          capture_output=True, text=True, cwd=project)
    assert "note: the body was read as form fields" in done.stderr, done.stdout + done.stderr


def test_a_request_refused_for_its_method_or_query_is_counted_and_said(
    make_server: Callable[..., Server],
) -> None:
    """A sender set up with GET, or `?wait=30sec`, was refused for ever in silence."""
    server = make_server(RULES, env=ENV)
    assert httpx.get(f"{server.url}/hooks/open").status_code == 405
    assert httpx.post(f"{server.url}/hooks/open?wait=30sec", json={}).status_code == 400
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'hookrunner_deliveries_total{hook="open",outcome="rejected_request"} 2.0' in metrics
    time.sleep(1.2)  # (a throttled line: the held-back count follows)
    lines = [x for x in server.output().splitlines()
             if "delivery.rejected" in x and "hook=open" in x]
    assert lines and 'reason="use POST" client=127.0.0.1' in lines[0], lines


def test_a_trusted_proxy_network_of_every_address_is_warned_of(
    make_server: Callable[..., Server],
) -> None:
    """`--trusted-proxy 0.0.0.0/0` believes every peer's X-Forwarded-For: any client picks
    its own address for allow_ips and the rate limits. Served, and said at the start."""
    server = make_server(RULES, env=ENV, args=["--trusted-proxy", "0.0.0.0/0",
                                               "--trusted-proxy", "10.0.0.0/8",
                                               "--trusted-proxy", "::ffff:0:0/96"])
    lines = [line for line in server.output().splitlines() if "server.trusts_every_peer" in line]
    assert len(lines) == 2 and "trusted_proxy=0.0.0.0/0" in lines[0], server.output()
    assert "trusted_proxy=::ffff:0:0/96" in lines[1], server.output()  # every IPv4 address
