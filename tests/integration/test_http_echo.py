"""An http action whose endpoint echoes the request (a debug endpoint, a proxy's error page),
on a real server: what the stored action shows `[redacted]` is `[redacted]` in the run's
log, the API's and a `?wait` answer's, whatever the reason it is hidden."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.serverproc import Server

TOKEN = "tok-shared-0123456789"
RULES = """
hooks:
  tok: {verify: {token: {secret: {env: TOK}, header: X-Shared}}}
rules:
  - name: sec-hdr
    hook: tok
    when: payload.kind == "shdr"
    run: {http: {url: "ECHO/h", headers: {X-Forward: "{{ query.token }}"}}}
  - name: sec-http
    hook: tok
    when: payload.kind == "shttp"
    run: {http: {url: "ECHO/t/{{ query.token }}", json: {echo: "{{ query.token }}"}}}
  - name: sec-named
    hook: tok
    when: payload.kind == "named"
    run: {http: {url: "ECHO/n?api_token={{ payload.v }}", json: {password: "{{ payload.v }}"}}}
  - name: short
    hook: tok
    when: payload.kind == "short"
    run: {http: {url: "ECHO/s", json: {echo: "{{ query.token }}", flag: true}}}
"""


class Echo(BaseHTTPRequestHandler):
    """Answers with the request as it came: its line, headers and body, as JSON."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        out = json.dumps({"path": self.path, "headers": list(self.headers.items()),
                          "body": body}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def _run(server: Server, kind: str, value: str) -> tuple[dict[str, str], str, str]:
    """One delivery's one run: its record and its log from the API, and the `?wait` answer."""
    r = httpx.post(f"{server.url}/hooks/tok", params={"wait": "20s", "token": value},
                   headers={"X-Shared": TOKEN}, json={"kind": kind, "v": value}, timeout=30)
    assert r.status_code == 200, r.text
    (run,) = r.json()["runs"]
    assert run["status"] == "succeeded", run
    with server.admin() as c:
        log = c.get(f"/api/runs/{run['id']}/log").text
        shown = c.get(f"/api/runs/{run['id']}").json()
    return shown, log, r.text


@pytest.mark.parametrize(("kind", "value"), [
    ("shttp", "QQsecretplain77"),  # audit: in the path and the JSON body
    ("shttp", 'QQ"secret sp77'),  # sent as `%22`/`%20` in the path, as `\"` in a JSON echo
    ("shdr", "QQsecret sp"),  # audit: a header that reads a secret query value
    ("named", "pw-named-4242"),  # hidden for its name: `?api_token=`, a `password` key
])
def test_what_the_stored_action_hides_is_hidden_where_an_endpoint_echoes_it(
        make_server: Callable[..., Server], echo: str, kind: str, value: str) -> None:
    server = make_server(RULES.replace("ECHO", echo), env={"TOK": TOKEN})
    shown, log, answer = _run(server, kind, value)
    assert "[redacted]" in json.dumps(shown["spec"]), shown["spec"]
    assert '"path": ' in log and "[redacted]" in log, log  # the echo is in the log
    for text in (log, answer):
        for form in (value, json.dumps(value)[1:-1], httpx.URL(f"http://h/{value}").raw_path[1:].decode()):
            assert form not in text, (form, text)


def test_a_short_value_from_a_secret_is_left_in_an_echoed_answer(
        make_server: Callable[..., Server], echo: str) -> None:
    """Under 8 characters (`true`, a region) a value is anyone's text: replaced in an echoed
    answer, it would garble every `true` of it."""
    server = make_server(RULES.replace("ECHO", echo), env={"TOK": TOKEN})
    _, log, _ = _run(server, "short", "true")
    assert '\\"flag\\":true' in log and "[redacted]" not in log.partition("HTTP 200")[2], log
