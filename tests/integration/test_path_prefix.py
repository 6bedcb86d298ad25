"""`--path-prefix`: hookrunner behind a real nginx that serves it at /hookrunner/ with the
README's `location` block (which strips the prefix). Hooks, the API and the console work
there, and every URL hookrunner writes (links, forms, redirects, the cookie's path,
`status_url`) starts with the prefix; a request that still has the prefix is served too."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.nginxproc import Nginx, readme_location
from tests.serverproc import ADMIN_TOKEN, Server, github_signature, post_github, read_answers
from tests.signers import twilio_signature

PREFIX = "/hookrunner"
TWILIO_SECRET = "twilio-auth-token"
RULES = """
hooks:
  github:
    verify:
      github:
        secret: {env: GITHUB_WEBHOOK_SECRET}
  tw:
    verify:
      twilio:
        secret: {env: TWILIO_SECRET}
rules:
  - name: deploy
    hook: github
    when: event == "push"
    run:
      shell:
        argv: ["scripts/deploy.sh", "{{ payload.after }}"]
"""
# Every URL a page holds: links, forms, scripts, styles, and the list's refresh URL.
URL_ATTRIBUTE = re.compile(r'\b(?:href|action|src|data-rows-url)="([^"]*)"')


@pytest.fixture
def proxied(make_server: Callable[..., Server], project: Path,
            tmp_path: Path) -> Iterator[tuple[Server, Nginx]]:
    write_script(project, "deploy.sh", 'echo "deploying $1"\n')
    server = make_server(RULES, args=["--path-prefix", f"{PREFIX}/", "--trusted-proxy", "127.0.0.1"],
                         env={"TWILIO_SECRET": TWILIO_SECRET})
    nginx = Nginx(tmp_path / "nginx", f"127.0.0.1:{server.port}", readme_location(PREFIX)).start()
    yield server, nginx
    nginx.stop()


def _post_twilio(url: str, form: bytes, *, signed: str | None = None,
                 headers: dict[str, str] | None = None) -> httpx.Response:
    """A Twilio form post to `url`, signed for `signed` (default: `url` itself)."""
    return httpx.post(url, content=form, timeout=30, headers={
        "Content-Type": "application/x-www-form-urlencoded", **(headers or {}),
        "X-Twilio-Signature": twilio_signature(TWILIO_SECRET, signed or url, form)})


def own_urls(html: str) -> list[str]:
    return [u for u in URL_ATTRIBUTE.findall(html) if u.startswith("/")]


def assert_prefixed(html: str) -> None:
    urls = own_urls(html)
    assert urls, html
    assert all(u.startswith(PREFIX + "/") for u in urls), [u for u in urls if not u.startswith(PREFIX)]


def test_a_hook_behind_the_proxy_answers_with_a_status_url_under_the_prefix(
        proxied: tuple[Server, Nginx]) -> None:
    server, nginx = proxied
    r = post_github(nginx.url + PREFIX, GITHUB_SECRET, {"after": "abc123"}, delivery="d-1")
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["status_url"] == f"{PREFIX}/api/deliveries/{answer['delivery_id']}"
    (run_id,) = answer["runs"]
    assert server.wait_run(run_id)["status"] == "succeeded"
    token = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    delivery = httpx.get(nginx.url + answer["status_url"], headers=token, timeout=30)
    assert delivery.status_code == 200 and delivery.json()["id"] == answer["delivery_id"]
    log = httpx.get(f"{nginx.url}{PREFIX}/api/runs/{run_id}/log", headers=token, timeout=30)
    assert "deploying abc123" in log.text
    # A duplicate's answer names the same place.
    again = post_github(nginx.url + PREFIX, GITHUB_SECRET, {"after": "abc123"}, delivery="d-1")
    assert again.status_code == 200 and again.json()["status_url"] == answer["status_url"]


def test_the_console_behind_the_proxy_links_redirects_and_scopes_its_cookie_under_the_prefix(
        proxied: tuple[Server, Nginx]) -> None:
    server, nginx = proxied
    run_id = post_github(nginx.url + PREFIX, GITHUB_SECRET, {"after": "c0ffee"}).json()["runs"][0]
    server.wait_run(run_id)
    html = {"Accept": "text/html"}
    with httpx.Client(base_url=nginx.url, timeout=30, headers=html) as browser:
        first = browser.get(f"{PREFIX}/runs/{run_id}")
        assert first.status_code == 303
        assert first.headers["location"] == f"{PREFIX}/login?next=%2Fhookrunner%2Fruns%2F{run_id}"
        form = browser.get(first.headers["location"])
        assert form.status_code == 200
        assert_prefixed(form.text)
        assert f'value="{PREFIX}/runs/{run_id}"' in form.text  # where the login leads
        for url in own_urls(form.text):
            if "/static/" in url:
                assert browser.get(url).status_code == 200, url
        login = browser.post(f"{PREFIX}/login", headers={"Origin": nginx.url},
                             data={"token": ADMIN_TOKEN, "next": f"{PREFIX}/runs/{run_id}"})
        assert login.status_code == 303, login.text
        assert login.headers["location"] == f"{PREFIX}/runs/{run_id}"
        cookie = login.headers["set-cookie"]
        assert "Path=/hookrunner;" in cookie or cookie.endswith("Path=/hookrunner"), cookie
        run_page = browser.get(login.headers["location"])
        assert run_page.status_code == 200 and "deploying c0ffee" in run_page.text
        assert_prefixed(run_page.text)
        pages = [browser.get(f"{PREFIX}/"), browser.get(f"{PREFIX}/rules")]
        delivery = re.search(r'href="(/hookrunner/deliveries/[^"]+)"', run_page.text)
        assert delivery is not None
        pages.append(browser.get(delivery.group(1)))
        for page in pages:
            assert page.status_code == 200, page.url
            assert_prefixed(page.text)
        assert f"POST {PREFIX}/hooks/github" in pages[1].text  # where senders post
        rows = re.search(r'data-rows-url="([^"]+)"', pages[0].text)
        assert rows is not None and browser.get(rows.group(1).replace("&amp;", "&")).status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', run_page.text)
        assert csrf is not None
        replay = browser.post(delivery.group(1) + "/replay", data={"csrf": csrf.group(1)},
                              headers={"Origin": nginx.url})
        assert replay.status_code == 303
        assert replay.headers["location"].startswith(f"{PREFIX}/deliveries/"), replay.headers
        replayed = browser.get(replay.headers["location"])
        assert replayed.status_code == 200 and "Replay" in replayed.text
        assert_prefixed(replayed.text)
        missing = browser.get(f"{PREFIX}/deliveries/dlv_nope")
        assert missing.status_code == 404
        assert_prefixed(missing.text)
        # Back to the login only under the prefix: another app's path, a `..` out of it
        # (escaped, or with a backslash, which browsers read as a slash) go to its root.
        for target in ("/other-app/admin", f"{PREFIX}/../other", f"{PREFIX}/%2e%2e/other",
                       f"{PREFIX}/..\\other", f"{PREFIX}x/y", "//evil.example/"):
            there = browser.get(f"{PREFIX}/login", params={"next": target})
            assert there.status_code == 303 and there.headers["location"] == f"{PREFIX}/", target
        out = browser.post(f"{PREFIX}/logout", data={"csrf": csrf.group(1)}, headers={"Origin": nginx.url})
        assert out.status_code == 303 and out.headers["location"] == f"{PREFIX}/login"
        assert "Path=/hookrunner" in out.headers["set-cookie"]
        assert browser.get(f"{PREFIX}/rules").status_code == 303  # logged out


def test_a_stale_session_cookie_with_a_wider_path_does_not_lock_the_console_out(
        proxied: tuple[Server, Nginx]) -> None:
    """A cookie of the same name set for `/` (this console served at the root before, or
    another app on the host): a browser sends both, the longer path's first. The live
    session counts, whichever comes first."""
    _, nginx = proxied
    login = httpx.post(f"{nginx.url}{PREFIX}/login", headers={"Origin": nginx.url},
                       data={"token": ADMIN_TOKEN, "next": f"{PREFIX}/rules"}, timeout=30)
    assert login.status_code == 303
    live = login.cookies["hookrunner_session"]
    for cookies in (f"hookrunner_session={live}; hookrunner_session=stale",
                    f"hookrunner_session=stale; hookrunner_session={live}", f"hookrunner_session={live}"):
        page = httpx.get(f"{nginx.url}{PREFIX}/rules", timeout=30,
                         headers={"Accept": "text/html", "Cookie": cookies})
        assert page.status_code == 200, cookies
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
    assert httpx.get(f"{nginx.url}{PREFIX}/rules", timeout=30, headers={
        "Accept": "text/html", "Cookie": "hookrunner_session=stale"}).status_code == 303
    # A form sent without a session, from another origin: back to the console's root after.
    refused = httpx.post(f"{nginx.url}{PREFIX}/deliveries/dlv_x/replay", timeout=30,
                         headers={"Accept": "text/html", "Referer": "https://elsewhere.example/x"})
    assert refused.status_code == 303
    assert refused.headers["location"] == f"{PREFIX}/login?next=%2Fhookrunner%2F"
    both = f"hookrunner_session=stale; hookrunner_session={live}"
    out = httpx.post(f"{nginx.url}{PREFIX}/logout", data={"csrf": csrf.group(1)}, timeout=30,
                     headers={"Origin": nginx.url, "Cookie": both})
    assert out.status_code == 303
    assert httpx.get(f"{nginx.url}{PREFIX}/rules", timeout=30, headers={
        "Accept": "text/html", "Cookie": f"hookrunner_session={live}"}).status_code == 303


def test_a_hook_with_the_prefix_still_on_is_answered_as_without_it(proxied: tuple[Server, Nginx]) -> None:
    """A sender that half-closes (`nc -N`) still gets its answer, and a `twilio` hook with no
    `url:` checks the URL under the prefix, which is the one its sender signed."""
    server, _ = proxied
    body = b'{"after": "half"}'
    request = (b"POST %s/hooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"X-GitHub-Event: push\r\nX-Hub-Signature-256: %s\r\nContent-Length: %d\r\n\r\n"
               % (PREFIX.encode(), github_signature(GITHUB_SECRET, body).encode(), len(body))) + body
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            ((head, answer),) = read_answers(s, 1)
            assert head.startswith(b"HTTP/1.1 202 ") and b"delivery_id" in answer, head
    r = _post_twilio(f"{server.url}{PREFIX}/hooks/tw", b"CallSid=CA1&From=%2B15550001")
    assert r.status_code == 202, r.text


def test_a_twilio_hook_without_url_checks_the_public_url_a_trusted_proxy_names(
        proxied: tuple[Server, Nginx]) -> None:
    """Twilio signs the public URL: through the README's nginx (which sets X-Forwarded-Host
    and -Proto) a hook with no `url:` checks that one, not the one nginx connected to."""
    server, nginx = proxied
    form = b"CallSid=CA2&From=%2B15550002"
    r = _post_twilio(f"{nginx.url}{PREFIX}/hooks/tw", form)
    assert r.status_code == 202, r.text
    # TLS ended at the proxy: the scheme it names is the one signed.
    https = "https://hooks.example.com/hookrunner/hooks/tw"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com"}
    for signed, status in ((https, 202), (f"{server.url}{PREFIX}/hooks/tw", 401)):
        r = _post_twilio(f"{server.url}{PREFIX}/hooks/tw", form, signed=signed, headers=forwarded)
        assert r.status_code == status, (signed, r.text)
    assert "URL checked: https://hooks.example.com/hookrunner/hooks/tw" in server.output()


def test_paths_with_the_prefix_still_on_are_served_the_same(proxied: tuple[Server, Nginx]) -> None:
    server, _ = proxied
    assert "server.started" in server.output() and f"path_prefix={PREFIX}" in server.output()
    for path in ("/healthz", f"{PREFIX}/healthz", f"{PREFIX}/readyz"):
        assert httpx.get(server.url + path, timeout=30).status_code == 200, path
    r = post_github(server.url + PREFIX, GITHUB_SECRET, {"after": "d00d"})
    assert r.status_code == 202, r.text
    assert server.wait_run(r.json()["runs"][0])["status"] == "succeeded"
    token = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.get(f"{server.url}{PREFIX}/api/runs", headers=token, timeout=30).status_code == 200
    # Only the prefix as a whole path segment is taken off.
    assert httpx.get(f"{server.url}{PREFIX}x/healthz", headers=token, timeout=30).status_code == 404
    assert httpx.get(f"{server.url}{PREFIX}", headers={"Accept": "text/html"},
                     timeout=30).status_code == 303  # the console, to its login


def test_serve_refuses_a_prefix_that_clashes_with_its_own_paths(
        make_server: Callable[..., Server]) -> None:
    with pytest.raises(RuntimeError) as refused:
        make_server(RULES, args=["--path-prefix", "/api"])
    assert "--path-prefix: '/api' starts with /api, one of hookrunner's own paths" in str(refused.value)
    with pytest.raises(RuntimeError) as refused:
        make_server(RULES, env={"HOOKRUNNER_PATH_PREFIX": "hookrunner"})
    assert "HOOKRUNNER_PATH_PREFIX: expected a path starting with '/'" in str(refused.value)


def test_http_workers_forward_the_console_and_api_under_the_prefix(
        make_server: Callable[..., Server], project: Path, tmp_path: Path) -> None:
    """With `--http-workers`, a worker takes the prefix off for itself and forwards the path
    as sent: the main process takes it off once, so each path answers as with one process."""
    write_script(project, "deploy.sh", 'echo "deploying $1"\n')
    server = make_server(RULES, args=["--path-prefix", PREFIX, "--http-workers", "2",
                                      "--trusted-proxy", "127.0.0.1"])
    nginx = Nginx(tmp_path / "nginx", f"127.0.0.1:{server.port}", readme_location(PREFIX)).start()
    try:
        token = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        run_ids = []
        for i in range(6):  # new connections: the kernel spreads them over the processes
            r = post_github(nginx.url + PREFIX, GITHUB_SECRET, {"after": f"w{i}"})
            assert r.status_code == 202 and r.json()["status_url"].startswith(f"{PREFIX}/api/"), r.text
            run_ids.append(r.json()["runs"][0])
        for run_id in run_ids:
            assert server.wait_run(run_id)["status"] == "succeeded"
        for base in (nginx.url + PREFIX, server.url + PREFIX, server.url):
            for _ in range(4):
                assert httpx.get(f"{base}/api/runs/{run_ids[0]}", headers=token,
                                 timeout=30).json()["id"] == run_ids[0]
                login = httpx.get(f"{base}/", headers={"Accept": "text/html"}, timeout=30)
                assert login.status_code == 303
                assert login.headers["location"] == f"{PREFIX}/login?next=%2Fhookrunner%2F"
        # The prefix twice is not the prefix once: it is taken off once, whoever answers.
        for _ in range(4):
            assert httpx.get(f"{server.url}{PREFIX}{PREFIX}/api/runs", headers=token,
                             timeout=30).status_code == 404
    finally:
        nginx.stop()
