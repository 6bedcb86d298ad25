"""Hostile input against a real server: each gets a clear answer, nothing runs that should not,
and the server stays up.

Every test runs with a canary: a delivery accepted before the hostile requests whose action
waits for the test to end. After the test the server must still answer /healthz and the canary
must still run to success, so no hostile request broke the accept path or the dispatcher.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.serverproc import ADMIN_TOKEN, Server, post_github, read_answers

MAX_BODY = 64 * 1024
SLOW_TOTAL = 64 * 1024 * 1024  # what the slow sender would send if never stopped
SLOW_CHUNK = 16 * 1024
SLOW_PAUSE = 0.002  # seconds between chunks: a slow sender, not a flood
AFTER_413 = 32 * 1024 * 1024  # bytes the sender pushes in total, ignoring the 413

RULES = f"""
hooks:
  open:
    verify: {{none: {{}}}}
    max_body: {MAX_BODY}
  roomy:
    verify: {{none: {{}}}}
  odd:
    verify: {{none: {{}}}}
    dedup: "{{{{ payload.kind }}}}{{{{ '%c' % payload.n }}}}"
  github:
    verify:
      github:
        secret: {{env: GITHUB_WEBHOOK_SECRET}}
rules:
  - name: canary
    hook: open
    when: payload.kind | default("") == "canary"
    run: {{shell: {{argv: ["scripts/canary.sh", "{{{{ payload.go }}}}"]}}}}
  - name: args
    hook: open
    when: payload.kind | default("") == "args"
    run:
      shell:
        argv: ["scripts/args.sh", "--", "{{{{ payload.value }}}}", "{{{{ payload.other }}}}"]
  - name: command-string
    hook: open
    when: payload.kind | default("") == "command"
    run:
      shell:
        command: scripts/args.sh -- {{{{ payload.value }}}} "x {{{{ payload.other }}}}"
  - name: ls-after-separator
    hook: open
    when: payload.kind | default("") == "ls"
    run: {{shell: {{argv: ["ls", "-d", "--", "{{{{ payload.path }}}}"]}}}}
  - name: cwd-from-payload
    hook: open
    when: payload.kind | default("") == "cwd"
    run: {{shell: {{argv: ["pwd"], cwd: "{{{{ payload.dir }}}}"}}}}
  - name: program-from-payload
    hook: open
    when: payload.kind | default("") == "program"
    run: {{shell: {{argv: ["{{{{ payload.program }}}}"]}}}}
  - name: playbook-from-payload
    hook: open
    when: payload.kind | default("") == "playbook"
    run: {{ansible: {{playbook: "{{{{ payload.playbook }}}}"}}}}
  - name: terraform-dir-from-payload
    hook: open
    when: payload.kind | default("") == "terraform"
    run: {{terraform: {{dir: "{{{{ payload.dir }}}}", command: plan}}}}
  - name: number-from-payload
    hook: open
    when: payload.kind | default("") == "float"
    run: {{shell: {{argv: ["scripts/args.sh", "{{{{ payload.value | float }}}}"]}}}}
  - name: key-from-payload
    hook: open
    when: payload.kind | default("") == "lookup"
    run: {{shell: {{argv: ["scripts/args.sh", "{{{{ payload[payload.key] }}}}"]}}}}
  - name: big-number
    hook: open
    when: payload.kind | default("") == "big"
    run: {{shell: {{argv: ["scripts/args.sh", "{{{{ payload.n + 1 }}}}"]}}}}
  - name: big-number-in-when
    hook: open
    when: payload.kind | default("") == "bigwhen" and payload.n * 10 > 5
    run: {{shell: {{argv: ["true"]}}}}
  - name: sequences
    hook: open
    when: payload.kind | default("") == "sequences"
    run:
      shell:
        argv: ["scripts/args.sh", "{{{{ payload.commits | map(attribute='id') }}}}",
               "t={{{{ (1, 2) }}}}", "{{{{ payload.commits[0].keys() }}}}", "a{{# note #}}b"]
        env: {{IDS: "{{{{ payload.commits | map(attribute='id') | unique }}}}"}}
  - name: header-values
    hook: open
    when: payload.kind | default("") == "header"
    run: {{shell: {{argv: ["scripts/args.sh", "{{{{ headers['X-Author'] }}}}"]}}}}
  - name: nul-from-template
    hook: open
    when: payload.kind | default("") == "nul"
    run: {{shell: {{argv: ["scripts/args.sh", "x{{{{ '%c' % 0 }}}}y"]}}}}
  - name: unstorable-key
    hook: odd
    when: payload.kind | default("") == "key"
    run: {{shell: {{argv: ["true"]}}}}
    concurrency: {{key: "{{{{ '%c' % payload.n }}}}"}}
  - name: unstorable-env
    hook: odd
    when: payload.kind | default("") == "env" and ('%c' % payload.n) != "x"  # explained too
    run: {{shell: {{argv: ["true"], env: {{A: "{{{{ '%c' % payload.n }}}}"}}}}}}
"""

CANARY = """i=0
while [ ! -e "$1" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
test -e "$1"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile")
    (root / "rules").mkdir()
    (root / "scripts").mkdir()
    (root / "playbooks").mkdir()
    (root / "rules" / "hostile.yaml").write_text(RULES)
    write_script(root, "canary.sh", CANARY)
    write_script(root, "args.sh", "printf '[%s]\\n' \"$@\"; echo \"argc=$#\"\n")
    srv = Server(root / "rules", root / "data", root,
                 env={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}).start()
    yield srv
    srv.stop()


def _post(server: Server, payload: Any, content_type: str = "application/json",
          hook: str = "open", **kw: Any) -> httpx.Response:
    body = payload if isinstance(payload, bytes | Iterator) else json.dumps(payload).encode()
    return httpx.post(f"{server.url}/hooks/{hook}", content=body,
                      headers={"Content-Type": content_type, **kw.pop("headers", {})},
                      timeout=60, **kw)


@pytest.fixture(autouse=True)
def canary(server: Server, tmp_path: Path) -> Iterator[None]:
    go = tmp_path / "go"
    r = _post(server, {"kind": "canary", "go": str(go)})
    assert r.status_code == 202, r.text
    (run_id,) = r.json()["runs"]
    yield
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    go.touch()
    assert server.wait_run(run_id)["status"] == "succeeded"


def _run_of(server: Server, r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 202, r.text
    (run_id,) = r.json()["runs"]
    return server.wait_run(run_id)


def _log(server: Server, run_id: str) -> str:
    with server.admin() as c:
        return c.get(f"/api/runs/{run_id}/log").text


# ---- bodies ----

@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"kind": "args", ', "application/json", 400),  # truncated JSON
        (b"{'single': 'quotes'}", "application/json", 400),
        (b"NaN-ish garbage", "text/plain", 400),
        (b"<xml/>", "application/xml", 415),
        (b"\x00\x01\x02", "application/octet-stream", 415),
        (b'{"a": "\xff\xfe"}', "application/json", 400),  # invalid UTF-8
        (b"payload=%7B%22a%22%3A", "application/x-www-form-urlencoded", 400),  # broken JSON
        (b"[" * 100_000, "application/json", 400),  # deep nesting
        (b'{"a":' * 100_000, "application/json", 400),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),  # deep but well-formed
        (b'{"kind": "args", "a": NaN}', "application/json", 400),  # not JSON, though Python's
        (b'{"kind": "args", "a": 1e999999}', "application/json", 400),  # parser takes both
    ],
    ids=["truncated", "quotes", "garbage", "xml", "binary", "utf8", "form-payload", "brackets",
         "objects", "balanced", "nan", "overflow"],
)
def test_a_body_the_hook_cannot_parse_gets_a_clear_4xx(
    server: Server, body: bytes, content_type: str, status: int
) -> None:
    r = _post(server, body, content_type, hook="roomy")  # 1 MiB max_body
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}


@pytest.mark.parametrize("content_type", ["application/json; charset=windows-1252",
                                          "application/x-www-form-urlencoded; charset=cp1252"])
def test_bytes_windows_1252_leaves_undefined_are_accepted_not_a_500(
    server: Server, content_type: str
) -> None:
    """0x81 under a windows-1252 label: Python's codec refused it, and the hook answered 500
    with a traceback in the log."""
    body = b'{"kind": "none", "a": "\x81"}' if "json" in content_type else b"kind=none&a=%81\x9d"
    r = _post(server, body, content_type, hook="roomy")
    assert r.status_code == 202, r.text
    assert "Traceback" not in server.output()


def test_a_huge_body_sent_slowly_is_cut_off_at_max_body_without_buffering_it(
    server: Server,
) -> None:
    """A chunked upload (no Content-Length) that would be 64 MiB: 413 arrives once just over
    64 KiB is read, while the client is still sending; a client that then pushes 32 MiB more
    does not grow the server's memory by anything like that."""
    assert server.proc is not None
    rss_before = _rss_kib(server.proc.pid)
    head = (b"POST /hooks/open HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    frame = b"%x\r\n" % SLOW_CHUNK + b" " * SLOW_CHUNK + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)
        while sent < SLOW_TOTAL:
            readable, _, _ = select.select([s], [], [], SLOW_PAUSE)
            if readable:
                break
            s.sendall(frame)
            sent += SLOW_CHUNK
        answer = _read_head(s)
        answered_at = sent
        # A sender that ignores the 413 and keeps going: what it sends is dropped, not kept.
        while sent < AFTER_413:
            s.sendall(frame)
            sent += SLOW_CHUNK
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert answered_at < 8 * 1024 * 1024, f"the server let {answered_at} bytes in first"
    grown = _rss_kib(server.proc.pid) - rss_before
    assert grown < 8 * 1024, f"server RSS grew by {grown} KiB after {sent} bytes were sent"


def test_a_declared_oversize_body_is_refused_before_it_is_sent(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /hooks/open HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n{")
        assert _read_head(s).startswith(b"HTTP/1.1 413 ")


# ---- headers ----

def _raw(server: Server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(request)
        return _read_head(s)


def test_expect_100_continue_is_answered_before_the_body_is_sent(server: Server) -> None:
    """A client that waits for `100 Continue` gets it at once (a hook's answer is written in
    one piece, but nothing before it is held back), then the whole answer."""
    body = b'{"kind": "none"}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /hooks/open HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert _read_head(s) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        answer = _read_head(s)
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 202 "), answer
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(rest) < length:
            rest += s.recv(65536)
    assert json.loads(rest)["runs"] == []


@pytest.mark.parametrize("path, length, status", [("/hooks/open", 1_000_000_000, b"413"),
                                                   ("/hooks/nosuch", 10, b"404"),
                                                   ("/api/runs/x/cancel", 100_000, b"401"),
                                                   ("/logout", 100_000, b"401")])
def test_an_answer_before_an_expected_body_closes_the_connection(
        server: Server, path: str, length: int, status: bytes) -> None:
    """Refused on its head (`Expect: 100-continue`, no `100` sent), the client sends no
    body; the connection stayed open, reading the next request as that body: swallowed, no
    answer for 60 s. Now the answer says `Connection: close` and the connection ends. (The
    admin API's and the console's refusals without a token too.)"""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (path.encode(), length))
        answer = b""
        while chunk := s.recv(65536):  # to its end: the server closes
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 " + status), answer
    assert b"connection: close" in head, answer


def test_every_path_not_served_answers_the_same_404(server: Server) -> None:
    """A dot segment or `OPTIONS *` said `not found`, other paths `Not Found`. A `%2F` was
    routed as a `/`, an escaped letter as the letter: `/hooks%2fopen` and `/hook%73/open`
    journaled a delivery, `/api%2Fruns` reached the API, past a front proxy's rules on the
    path as sent."""
    bodies = set()
    journaled = _deliveries(server)
    for target in (b"GET /no/such", b"GET /x/%2e%2e/api/runs", b"OPTIONS *",
                   b"POST /hooks%2fopen", b"POST /hooks/open%2F", b"GET /api%2Fruns",
                   b"GET /api/runs%2f", b"POST /hook%73/open", b"POST /%68ooks/open",
                   b"POST /hooks/op%65n", b"GET /%61pi/runs"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(target + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 404 "), answer
        bodies.add(answer.partition(b"\r\n\r\n")[2])
    assert bodies == {b'{"error":"Not Found"}'}, bodies
    assert _deliveries(server) == journaled


def _deliveries(server: Server) -> int:
    with server.admin() as c:
        return len(c.get("/api/deliveries", params={"hook": "open", "limit": 1000}).json()["deliveries"])


def test_an_upgrade_request_is_refused_and_never_journaled(server: Server) -> None:
    """No protocol is switched to, and httptools reads no body past an upgrade request's head
    (curl --http2 on http://, a WebSocket): it was accepted with an empty payload. Now it
    is refused with a reason, and a request before it on the connection is answered."""
    body = b'{"kind": "none", "important": "data"}'
    plain = (b"POST /hooks/open HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(body)) + body
    upgrades = [
        (b"POST /hooks/open HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
         b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: %d\r\n\r\n"
         % len(body)) + body,
        (b"POST /hooks/open HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
         b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
         b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
         b"Content-Length: %d\r\n\r\n" % len(body)) + body,
    ]
    before = _deliveries(server)
    for upgrade in upgrades:
        for requests in ([upgrade], [plain, upgrade]):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(b"".join(requests))
                answers = read_answers(s, len(requests))
            *first, (head, refused) = answers
            assert [h.split(b" ")[1] for h, _ in first] == [b"202"] * len(first), answers
            assert head.startswith(b"HTTP/1.1 400 "), answers
            assert b"Connection: upgrade" in json.loads(refused)["error"].encode(), refused
    assert _deliveries(server) == before + 2  # the plain ones only
    assert "http.upgrade_refused" in server.output()
    # Without a body nothing is lost: answered as HTTP/1.1 (curl --http2, Java's HttpClient).
    for upgrade in (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk",
                    b"Connection: Upgrade\r\nUpgrade: websocket"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + upgrade + b"\r\n\r\n")
            (head, answer), = read_answers(s, 1)
            assert head.startswith(b"HTTP/1.1 200 ") and b"ok" in answer, head
            assert s.recv(1) == b""  # then closed: nothing after an upgrade request is read
    assert "Unsupported upgrade" not in server.output() and "WebSocket library" not in server.output()


def test_chunked_trailer_fields_are_not_request_headers(server: Server) -> None:
    """A trailer is not part of the head: it neither signs a request nor is stored with it."""
    body = json.dumps({"ref": "x"}).encode()
    signature = post_github(server.url, GITHUB_SECRET, body).request.headers["X-Hub-Signature-256"]
    chunked = b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    signed_in_trailer = (b"POST /hooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + chunked
                         + b"X-Hub-Signature-256: " + signature.encode() + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(signed_in_trailer)
        (head, _), = read_answers(s, 1)
    assert head.startswith(b"HTTP/1.1 401 "), head
    trailer = (b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"X-Forwarded-For: 10.1.2.3\r\n"
               b"X-Trailing: yes\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(trailer)
        (head, answer), = read_answers(s, 1)
    assert head.startswith(b"HTTP/1.1 202 "), head
    with server.admin() as c:
        stored = c.get(f"/api/deliveries/{json.loads(answer)['delivery_id']}").json()
    names = {k.lower() for k, _ in stored["headers"]}
    assert "x-trailing" not in names and "x-forwarded-for" not in names, stored["headers"]
    assert stored["payload"] == {"ref": "x"}


def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(server: Server) -> None:
    """`nc -N`, shutdown(SHUT_WR): the delivery is journaled, so its 202 must reach the
    sender (which would otherwise send it again)."""
    body = b'{"kind": "none"}'
    request = (b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    for count in (1, 1, 2, 3):  # several pipelined in one write too
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(request * count)
            s.shutdown(socket.SHUT_WR)
            answers = read_answers(s, count)
            for head, answer in answers:
                assert head.startswith(b"HTTP/1.1 202 ") and b"delivery_id" in answer, head
            assert s.recv(1) == b""  # then the server closes
    assert "http.internal_error" not in server.output()
    # Half a request, then EOF: closed at once, nothing journaled.
    before = _deliveries(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request[:-3])
        s.shutdown(socket.SHUT_WR)
        assert s.recv(65536) == b""
    assert _deliveries(server) == before


def test_a_request_httptools_cannot_parse_gets_a_json_400_and_one_log_line(server: Server) -> None:
    for _ in range(5):
        answer = _raw(server, b"GARBAGE\r\n\r\n")
        head = answer.partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 400 ") and b"application/json" in head, answer
    assert "Invalid HTTP request received." not in server.output()
    assert server.output().count("http.invalid_request") >= 1
    # Behind a delivery on the same connection: the delivery's answer first, then the 400.
    body = b'{"kind": "none"}'
    plain = (b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(body)) + body
    for tail in (b"GARBAGE\r\n\r\n", b"GARBAGE\r\n\r\n", b""):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(plain + tail)
            s.shutdown(socket.SHUT_WR)
            answers = read_answers(s, 2 if tail else 1)
        assert answers[0][0].startswith(b"HTTP/1.1 202 "), answers
        if tail:
            assert answers[1][0].startswith(b"HTTP/1.1 400 "), answers


@pytest.mark.parametrize("method", [b"HEAD", b"GET", b"PUT"])
def test_a_hook_asked_with_another_method_answers_405_at_once(server: Server, method: bytes) -> None:
    """Whatever the method, the answer is sent whole (HEAD's has no body) and the connection
    stays usable."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        for _ in range(2):
            s.sendall(method + b" /hooks/open HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
            head = _read_head(s)
            assert head.startswith(b"HTTP/1.1 405 "), head
            if method != b"HEAD":
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n\r\n")[0].split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                rest = head.split(b"\r\n\r\n", 1)[1]
                while len(rest) < length:
                    rest += s.recv(65536)


def test_conflicting_duplicate_framing_headers_are_a_400(server: Server) -> None:
    """Two Content-Length values, or Content-Length with chunked (request smuggling)."""
    two_lengths = (b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 2\r\nContent-Length: 30\r\n\r\n{}")
    assert _raw(server, two_lengths).startswith(b"HTTP/1.1 400 ")
    smuggle = (b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert _raw(server, smuggle).startswith(b"HTTP/1.1 400 ")


def test_labels_sent_on_several_lines_are_all_read_and_never_journaled_when_refused(
        server: Server) -> None:
    """`Content-Encoding: identity` then `gzip` was read as identity: a gzip body parsed as
    text (400 not UTF-8; 202 with a body that only looked plain). A second, different
    Content-Type was never looked at."""
    import gzip

    journaled = _deliveries(server)
    head = b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    for headers, body, status in (
            (b"Content-Type: application/json\r\nContent-Encoding: identity\r\n"
             b"Content-Encoding: gzip\r\n", gzip.compress(b"{}"), 415),
            (b"Content-Type: application/json\r\nContent-Encoding: identity\r\n"
             b"Content-Encoding: gzip\r\n", b"{}", 415),
            (b"Content-Type: application/json\r\nContent-Type: text/xml\r\n", b"{}", 400),
            (b"Content-Type: text/xml\r\nContent-Type: application/json\r\n", b"{}", 400)):
        answer = _raw(server, head + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"], answer
    assert _deliveries(server) == journaled
    both = (b"Content-Type: application/json\r\ncontent-type: application/json\r\n"
            b"Content-Encoding: identity\r\nContent-Encoding: identity\r\n")
    answer = _raw(server, head + both + b"Content-Length: 2\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]


def test_duplicate_signature_headers_are_judged_by_the_first(server: Server) -> None:
    """A second signature header cannot rescue a bad first one, nor spoil a good one."""
    body = json.dumps({"ref": "x"}).encode()
    good = post_github(server.url, GITHUB_SECRET, body).request.headers["X-Hub-Signature-256"]
    bad = "sha256=" + "0" * 64
    url = f"{server.url}/hooks/github"
    for first, second, status in ((bad, good, 401), (good, bad, 202)):
        headers = [("Content-Type", "application/json"), ("X-Hub-Signature-256", first),
                   ("X-Hub-Signature-256", second)]
        assert httpx.post(url, content=body, headers=headers, timeout=30).status_code == status


@pytest.mark.parametrize(
    "header",
    [b"X-Big: " + b"a" * (1024 * 1024),  # one absurd header
     b"".join(b"X-Many-%d: v\r\n" % i for i in range(20_000)).rstrip(b"\r\n"),  # many headers
     b"X-Medium: " + b"a" * (100 * 1024)],  # arrives in one read: measured once complete
    ids=["1MiB-header", "20000-headers", "100KiB-header"],
)
def test_absurd_headers_get_431_and_are_never_journaled(server: Server, header: bytes) -> None:
    answer = _raw(server, b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                          b"\r\n" + header + b"\r\nContent-Length: 2\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"request headers too large" in answer


def test_a_10kb_delivery_id_is_accepted_and_deduplicated_on_its_whole_value(
    server: Server,
) -> None:
    long_id = secrets.token_hex(5 * 1024)  # 10 KiB of hex
    first = post_github(server.url, GITHUB_SECRET, {"n": 1}, delivery=long_id)
    assert first.status_code == 202, first.text
    again = post_github(server.url, GITHUB_SECRET, {"n": 1}, delivery=long_id)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    # Ids that differ only at the very end are different deliveries (hashed, not truncated).
    other = post_github(server.url, GITHUB_SECRET, {"n": 1}, delivery=long_id[:-1] + "x")
    assert other.status_code == 202
    with server.admin() as c:
        stored = c.get(first.json()["status_url"]).json()
    assert stored["dedup_key"].startswith("sha256:") and len(stored["dedup_key"]) < 100


# ---- payload values in actions ----

EVIL = "; touch /tmp/pwned-{tag} $(touch /tmp/pwned-{tag}) `id` {{{{ 7*7 }}}} {{% raw %}}"


def test_payload_values_stay_one_literal_argument_after_the_separator(server: Server) -> None:
    """Shell metacharacters, a newline, Jinja markup and a leading '-' are each one argv item,
    passed to the program as is: never through a shell, never templated again."""
    tag = secrets.token_hex(4)
    value, other = EVIL.format(tag=tag), "-rf /\nsecond line"
    for kind in ("args", "command"):
        run = _run_of(server, _post(server, {"kind": kind, "value": value, "other": other}))
        assert run["status"] == "succeeded", run
        log = _log(server, run["id"])
        expected_other = other if kind == "args" else f"x {other}"
        assert f"[--]\n[{value}]\n[{expected_other}]\nargc=3" in log, log
    assert not Path(f"/tmp/pwned-{tag}").exists()


def test_utf8_header_values_are_read_as_utf8_and_other_bytes_as_received(server: Server) -> None:
    """HTTP servers decode header bytes as latin-1; a UTF-8 name in a header reached templates
    and the store as `JÃ¼rgen`. A value that is no UTF-8 (byte 0xE9 alone) stays as received."""
    body = json.dumps({"kind": "header"}).encode()
    request = (b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"X-Author: J\xc3\xbcrgen \xe2\x9c\x93\r\nX-Latin: caf\xe9\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request)
        (head, answer), = read_answers(s, 1)
    assert head.startswith(b"HTTP/1.1 202 "), head
    (run_id,) = json.loads(answer)["runs"]
    assert server.wait_run(run_id)["status"] == "succeeded"
    assert "[J\u00fcrgen \u2713]" in _log(server, run_id)
    with server.admin() as c:
        stored = c.get(f"/api/deliveries/{json.loads(answer)['delivery_id']}").json()
    values = dict(stored["headers"])
    assert values["x-author"] == "J\u00fcrgen \u2713" and values["x-latin"] == "caf\u00e9", values


def test_a_templated_cwd_inside_root_is_entered(server: Server) -> None:
    """Entered through a descriptor of the directory checked (paths.pinned_dir): the process
    is where the rule said, and says so by the directory's own path."""
    run = _run_of(server, _post(server, {"kind": "cwd", "dir": "scripts"}))
    assert run["status"] == "succeeded", run
    assert str(server.root.resolve() / "scripts") + "\n" in _log(server, run["id"])


def test_a_leading_dash_after_the_separator_is_an_operand_not_an_option(server: Server) -> None:
    """`ls -d -- --version` looks for a file named --version instead of printing a version."""
    run = _run_of(server, _post(server, {"kind": "ls", "path": "--version"}))
    assert run["status"] == "failed" and run["exit_code"] != 0
    log = _log(server, run["id"])
    assert "--version" in log and "GNU coreutils" not in log


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"kind": "cwd", "dir": ".."}, "outside --root"),
        ({"kind": "cwd", "dir": "/etc"}, "outside --root"),
        ({"kind": "cwd", "dir": "scripts/../../.."}, "outside --root"),
        ({"kind": "program", "program": "../../bin/sh"}, "so its value may hold no '..'"),
        # audit: a templated program of `touch` or `/usr/bin/touch` ran what the sender named.
        ({"kind": "program", "program": "touch"}, "the program is templated, so it must name "
                                                  "a file under --root"),
        ({"kind": "program", "program": "/usr/bin/touch"}, "not a program on PATH or a "
                                                           "path outside it: '/usr/bin/touch'"),
        # (Refused when the action is rendered: a templated path stays where the rule writes.)
        ({"kind": "playbook", "playbook": "../rules/hostile.yaml"},
         "must stay in the directory the rule writes before its {{ (playbooks/)"),
        ({"kind": "playbook", "playbook": "/etc/passwd"},
         "must stay in the directory the rule writes before its {{ (playbooks/)"),
        ({"kind": "terraform", "dir": "../.."},
         "must stay in the directory the rule writes before its {{ (--root)"),
        ({"kind": "terraform", "dir": "/"},
         "must stay in the directory the rule writes before its {{ (--root)"),
    ],
    ids=["cwd-dotdot", "cwd-absolute", "cwd-nested-dotdot", "program-dotdot", "program-on-path",
         "program-absolute", "playbook-dotdot", "playbook-absolute", "terraform-dotdot",
         "terraform-absolute"],
)
def test_paths_from_the_payload_cannot_leave_the_root(
    server: Server, payload: dict[str, str], reason: str
) -> None:
    run = _run_of(server, _post(server, payload))
    assert run["status"] == "failed", run
    assert reason in run["reason"], run["reason"]


@pytest.mark.parametrize("key", ["__class__", "__globals__", "__init__", "mro"])
def test_a_payload_chosen_attribute_is_refused_at_render(server: Server, key: str) -> None:
    """`payload[payload.key]` is allowed by `check`; what the key names is decided at render,
    where the sandbox refuses internals and a missing key fails the run, never leaks."""
    run = _run_of(server, _post(server, {"kind": "lookup", "key": key}))
    assert run["status"] == "failed", run
    assert run["reason"].startswith("template error"), run["reason"]
    assert "<class" not in _log(server, run["id"]) + run["reason"]


def test_sandbox_escapes_in_rules_files_are_refused_by_check(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "evil.yaml").write_text(
        "hooks:\n  h:\n    verify: {none: {}}\n"            # lines 1-3
        "rules:\n"                                          # 4
        "  - name: a\n    hook: h\n"                        # 5-6
        "    when: payload.__class__ is defined\n"          # 7
        "    run: {shell: {argv: [echo]}}\n"                # 8
        "  - name: b\n    hook: h\n"                        # 9-10
        "    run: {shell: {argv: [echo, \"{{ payload.__globals__ }}\"]}}\n"  # 11
        "  - name: c\n    hook: h\n"                        # 12-13
        "    run: {shell: {argv: [echo, \"{{ cycler.__init__ }}\"]}}\n"      # 14
        "  - name: d\n    hook: h\n"                        # 15-16
        "    run: {shell: {argv: [echo, \"{{ ''.__class__.__mro__[1] }}\"]}}\n"  # 17
    )
    done = subprocess.run([sys.executable, "-m", "hookrunner.cli", "check", "--rules", str(rules)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 1, done
    path = str(rules / "evil.yaml")
    for line, name in ((7, "__class__"), (11, "__globals__"), (14, "__init__"), (17, "__mro__")):
        assert any(e.startswith(f"{path}:{line}:") and name in e
                   for e in done.stderr.splitlines()), done.stderr


# ---- helpers ----

def _read_head(s: socket.socket) -> bytes:
    """Read until the end of a response head (or EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("value", ["nan", "-inf", "1e999"])
def test_a_template_that_makes_a_non_finite_number_fails_its_run_and_the_api_stillread_answers(
    server: Server, value: str,
) -> None:
    """`'nan' | float` is a float JSON has no word for: the run fails with a template error
    rather than storing a value that every listing of runs would then fail to write."""
    r = _post(server, {"kind": "float", "value": value})
    run = _run_of(server, r)
    assert run["status"] == "failed"
    assert "template error" in run["reason"] and "finite" in run["reason"], run["reason"]
    with server.admin() as c:
        assert c.get(f"/api/runs/{run['id']}").status_code == 200
        assert c.get(f"/api/deliveries/{r.json()['delivery_id']}").status_code == 200
        assert c.get("/api/runs").status_code == 200


@pytest.mark.parametrize("query", ["x=%00", "%00=1", "a=1&b=x%00y"])
def test_a_nul_in_the_query_string_is_a_400_and_nothing_is_journaled(
    server: Server, query: str,
) -> None:
    """The query is stored with the delivery; PostgreSQL text cannot hold NUL, so such a
    request is refused on every store alike, before anything is journaled."""
    with server.admin() as c:
        before = len(c.get("/api/deliveries", params={"limit": 1000}).json()["deliveries"])
    r = httpx.post(f"{server.url}/hooks/open?{query}", content=b'{"kind": "args"}',
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "NUL" in r.json()["error"], r.text
    with server.admin() as c:
        after = len(c.get("/api/deliveries", params={"limit": 1000}).json()["deliveries"])
    assert after == before


def test_a_deep_body_is_shown_and_a_legacy_charset_one_decoded(server: Server) -> None:
    """940 levels parse (the parser gives up near 1,000: a 400), but the API's JSON writer
    failed on them with a 500; a legacy-charset body showed as base64 only."""
    deep = b'{"kind": "other", "v":' + b"[" * 939 + b"]" * 939 + b"}"
    chunked = iter([deep[:100], deep[100:]])
    for r in (_post(server, deep), _post(server, deep, params={"wait": "1s"}),
              _post(server, chunked)):
        assert r.status_code in (200, 202), r.text  # no rule matches: `?wait` says 200
        with server.admin() as c:
            shown = c.get(f"/api/deliveries/{r.json()['delivery_id']}")
        assert shown.status_code == 200 and shown.json()["payload"].startswith('{"kind"')
    r = _post(server, b"[" * 5_000 + b"]" * 5_000)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"], r.text
    latin = '{"kind": "other", "v": "café"}'.encode("latin-1")
    r = _post(server, latin, content_type="application/json; charset=iso-8859-1")
    assert r.status_code == 202, r.text
    with server.admin() as c:
        doc = c.get(f"/api/deliveries/{r.json()['delivery_id']}").json()
    assert doc["payload"] == {"kind": "other", "v": "café"}, doc  # was base64 only
    # `curl -d '{...}'` sends a form: shown as the form fields the rules saw, not as JSON.
    r = _post(server, b'{"kind": "other"}', content_type="application/x-www-form-urlencoded")
    with server.admin() as c:
        doc = c.get(f"/api/deliveries/{r.json()['delivery_id']}").json()
    assert doc["payload"] == {'{"kind": "other"}': ""}, doc


BIG = int("9" * 4300)  # the longest number JSON parsing takes; one more digit is a 400


def test_a_number_too_long_to_write_fails_its_run_and_loses_no_delivery(server: Server) -> None:
    """`payload.n + 1` on a 4300-digit number cannot be written out (Python's limit); once
    it was a 500 that lost the whole delivery, every other rule's run with it."""
    run = _run_of(server, _post(server, {"kind": "big", "n": BIG}))
    assert run["status"] == "failed" and "more than 4300 digits" in run["reason"], run["reason"]
    # A condition that never decides (the `and` is false) still shows its value: no 500.
    r = _post(server, {"kind": "other", "n": BIG})
    assert r.status_code == 202 and r.json()["runs"] == [], r.text
    with server.admin() as c:
        doc = c.get(f"/api/deliveries/{r.json()['delivery_id']}").json()
    shown = [cond["value"] for m in doc["matches"] if m["rule"] == "big-number-in-when"
             for cond in m["conditions"]]
    assert any("more than 4300 digits" in v for v in shown), shown


def test_sequences_print_as_json_lists_never_as_python_objects(server: Server) -> None:
    r = _post(server, {"kind": "sequences", "commits": [{"id": "a1"}, {"id": "b2"}, {"id": "a1"}]})
    run = _run_of(server, r)
    assert run["status"] == "succeeded", run
    printed = [x for x in _log(server, run["id"]).splitlines() if not x.startswith("[hookrunner]")]
    assert printed[:4] == ['[["a1", "b2", "a1"]]', "[t=[1, 2]]", '[["id"]]', "[ab]"], printed
    assert run["spec"]["env"]["IDS"] == ["a1", "b2"], run["spec"]  # stored native; given as JSON


def test_a_nul_byte_made_by_a_template_fails_the_run_with_a_reason(server: Server) -> None:
    run = _run_of(server, _post(server, {"kind": "nul"}))
    assert run["status"] == "failed"
    assert "renders a NUL character or a lone surrogate" in run["reason"], run["reason"]


@pytest.mark.parametrize("kind", ["key", "env"])
def test_a_template_making_text_that_cannot_be_stored_fails_its_run_not_the_delivery(
    server: Server, kind: str,
) -> None:
    """A lone surrogate or a NUL from `'%c' % n` in a concurrency key or a dedup template
    (SQLite), or anywhere in the action (PostgreSQL's jsonb): a 500, the delivery lost."""
    for n in (0xD800, 0):
        r = _post(server, {"kind": kind, "n": n}, hook="odd")
        run = _run_of(server, r)
        assert run["status"] == "failed" and "cannot be stored" in run["reason"], run
        assert "'%c' % payload.n" in run["reason"], run  # names the template
        with server.admin() as c:
            doc = c.get(f"/api/deliveries/{r.json()['delivery_id']}").json()
        assert doc["dedup_key"] is None, doc  # the dedup template failed: no sender id either
    assert "delivery.dedup_template_failed" in server.output()


def _close_waits(port: int) -> int:
    """Server sockets on `port` whose client has closed while the server has not (CLOSE_WAIT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                local, state = line.split()[1], line.split()[3]
                if int(local.rsplit(":", 1)[1], 16) == port and state == "08":
                    count += 1
    return count


def test_clients_that_leave_a_wait_or_a_followed_log_free_their_sockets(
    server: Server, tmp_path: Path
) -> None:
    """A client that closes (FIN) while its `?wait` or followed log has no answer yet is gone:
    its socket and task are freed at once, not when the wait runs out (each held a file
    descriptor: enough of them and the server could accept nothing)."""
    go = tmp_path / "go-late"
    r = _post(server, {"kind": "canary", "go": str(go)})
    (run_id,) = r.json()["runs"]
    body = json.dumps({"kind": "canary", "go": str(go)}).encode()
    waits = (b"POST /hooks/open?wait=60s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(body)) + body
    # `%77ait` is `wait` once decoded: as much a wait.
    encoded = waits.replace(b"?wait=", b"?%77ait=")
    follow = (b"GET /api/runs/" + run_id.encode() + b"/log HTTP/1.1\r\nHost: t\r\n"
              b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n\r\n")
    try:
        for request in [waits] * 8 + [encoded] * 4 + [follow] * 8:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(request)
                time.sleep(0.05)
        deadline = time.monotonic() + 5
        while _close_waits(server.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _close_waits(server.port) == 0
    finally:
        go.touch()
    assert server.wait_run(run_id)["status"] == "succeeded"


@contextlib.contextmanager
def _short_of_memory(tmp_path: Path, spare: int) -> Iterator[Server]:
    """A server with a hook taking 64 MiB bodies, left `spare` bytes of address space."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "hooks:\n  big: {verify: none, max_body: 64MiB}\n"
        "rules:\n  - {name: r, hook: big, run: {shell: {argv: [\"true\"]}}}\n")
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    try:
        assert server.proc is not None
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        size = int(next(line for line in status.splitlines() if line.startswith("VmSize")).split()[1])
        subprocess.run(["prlimit", f"--pid={server.proc.pid}", f"--as={size * 1024 + spare}"],
                       check=True)
        yield server
        small = httpx.post(f"{server.url}/hooks/big", json={"small": 1}, timeout=30)
        assert small.status_code == 202, small.text  # and the server goes on
    finally:
        server.stop()


def test_a_body_past_the_memory_there_is_is_a_503_to_retry_and_the_server_goes_on(
    tmp_path: Path,
) -> None:
    """Large bodies at once past the process's memory (an address-space limit here, a cgroup's
    memory limit in production) were a 500, which GitHub does not retry, or a connection
    closed without an answer."""
    with _short_of_memory(tmp_path, 60 * 2**20) as server:
        body = json.dumps({"x": ["a" * 100] * 300_000}).encode()  # 30 MiB, and its copies
        r = httpx.post(f"{server.url}/hooks/big", content=body, timeout=60,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert r.json() == {"error": "out of memory: try again later"}
        # The same on the usual path (a `?wait` is not the hook lane's), before the journal.
        waited = httpx.post(f"{server.url}/hooks/big?wait=1s", content=body, timeout=60,
                            headers={"Content-Type": "application/json"})
        assert waited.status_code == 503, waited.text
    assert 'delivery.rejected hook=big reason="out of memory"' in server.output()
    assert "Traceback" not in server.output()


def test_a_body_that_cannot_be_held_while_it_arrives_is_a_503_not_a_400(tmp_path: Path) -> None:
    """audit: bodies at once past the memory there is failed while they were read (the hook
    lane holds a body as it comes); httptools made a 400 of the MemoryError, which no sender
    retries."""
    with _short_of_memory(tmp_path, 20 * 2**20) as server:
        body = b'{"x": "' + b"a" * (48 * 2**20) + b'"}'  # past the 20 MiB left, as it comes
        r = httpx.post(f"{server.url}/hooks/big", content=body, timeout=60,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert r.json() == {"error": "out of memory: try again later"}
    assert 'hook=big reason="out of memory"' in server.output()
    assert "http.invalid_request" not in server.output()
