"""The http runner against a real HTTP server on a loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gzip
import json
import re
import ssl
import struct
import subprocess
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hookrunner.actions import RUNNERS
from hookrunner.errors import ActionError
from hookrunner.templating import compile_template, render_tree

HTTP = RUNNERS["http"]


def _rendered(raw: dict[str, Any], **payload: Any) -> Any:
    """The action as a delivery of `payload` renders it (the runner's own keys too)."""
    def compiled(tree: Any) -> Any:
        if isinstance(tree, str):
            return compile_template(tree)
        if isinstance(tree, dict):
            return {k: compiled(v) for k, v in tree.items()}
        return [compiled(v) for v in tree] if isinstance(tree, list) else tree

    return render_tree(compiled(HTTP.normalize(raw)), {"payload": payload})


class Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        if self.path.startswith("/slow"):
            time.sleep(3)
        if self.path.startswith("/stall"):  # the head and a little, then nothing for a while
            self.send_response(500 if "fail" in self.path else 200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            time.sleep(8)  # far past the tests' timeout, even on a loaded machine
            self.close_connection = True
            return
        if self.path.startswith("/reflect-json"):  # as PHP's json_encode writes it: `\/`
            out = json.dumps(dict(self.headers)).replace("/", "\\/").encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if self.path.startswith("/reflect") or "/reflect" in self.path:  # a debug endpoint
            out = (f"{self.command} {self.path}\n{self.headers}").encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if self.path.startswith(("/gzip", "/bomb", "/double", "/redirect")):
            self._encoded()
            return
        status = 500 if self.path.startswith(("/fail", "/cut-fail")) else 200
        out = b"x" * 200_000 if self.path.startswith("/big") else b"answer:" + body
        self.send_response(status)
        self.send_header("Content-Length", str(len(out) + (100 if "/cut" in self.path else 0)))
        self.end_headers()
        self.wfile.write(out)  # /cut: 100 bytes short, then the connection closes
        if "/cut" in self.path:
            self.close_connection = True

    def _encoded(self) -> None:
        """Answers that ignore `Accept-Encoding: identity`, and a redirect."""
        if self.path == "/redirect-short":  # a body that breaks off after its head
            self.send_response(302)
            self.send_header("Location", "https://ok.example/next")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"short")
            self.close_connection = True
            return
        if self.path.startswith("/redirect-same"):  # http -> https; `-rel`: a trailing `/`
            self.send_response(301)
            self.send_header("Location", f"{self.path}/" if "-rel" in self.path else
                             f"https://{self.headers['Host']}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/redirect"):
            self.send_response(303 if self.path != "/redirect" else 302)
            self.send_header("Location", {"/redirect-del": "https://pay.example/done?id=\x7f",
                                          "/redirect-idna": "https://xn--/"}.get(
                self.path, "https://other.example/next?token=s3cret"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = {"/gzip": gzip.compress(b"hello, gzip\n"), "/bomb": _bomb(),
                "/double": gzip.compress(gzip.compress(b"twice\n")),
                "/gzip-members": gzip.compress(b"part1 ") + gzip.compress(b"part2\n"),
                "/gzip-cut": gzip.compress(" ".join(map(str, range(3000))).encode())[:-30],
                # 2 MB of members that unpack to nothing: each a decompressor on the loop
                "/gzip-empty": gzip.compress(b"x") + gzip.compress(b"") * 100_000,
                # one member of empty deflate blocks (a flush each): 2 MB unpacking to 1 byte
                "/gzip-blocks": _empty_blocks(),
                }[self.path]
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip, gzip" if self.path == "/double" else "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        pass


BOMB_MB = 200


@functools.cache
def _empty_blocks() -> bytes:
    """One gzip member: "y", then 400,000 empty stored deflate blocks (5 bytes each), then
    a last empty one: valid, and 2 MB that unpack to one byte."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = packer.compress(b"y") + packer.flush(zlib.Z_SYNC_FLUSH)  # ends byte-aligned
    deflated = start + b"\x00\x00\x00\xff\xff" * 400_000 + b"\x01\x00\x00\xff\xff"
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return head + deflated + struct.pack("<II", zlib.crc32(b"y"), 1)


@functools.cache
def _bomb() -> bytes:
    """~200 KB of gzip that unpacks to 200 MB of zeros."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    mb = bytes(1024 * 1024)
    return b"".join([*(packer.compress(mb) for _ in range(BOMB_MB)), packer.flush()])


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


async def test_post_json_succeeds_and_logs_the_answer(harness, server: str) -> None:
    spec = HTTP.normalize({"url": f"{server}/ok?token=abc", "headers": {"X-Run": "1"}, "json": {"a": [1]}})
    result = await HTTP.run(spec, harness.ctx())
    assert (result.outcome, result.outputs) == ("succeeded", {"status": 200})
    (req,) = Handler.seen
    assert (req["method"], req["path"], req["headers"]["X-Run"]) == ("POST", "/ok?token=abc", "1")
    assert json.loads(req["body"]) == {"a": [1]}
    log = harness.log_text()
    assert log == f'[hookrunner] POST {server}/ok\n[hookrunner] HTTP 200 OK\nanswer:{{"a":[1]}}\n'
    assert "token=abc" not in log


async def test_a_url_kept_in_the_environment_is_logged_without_its_path(harness, server: str) -> None:
    """`{env: NOTIFY_URL}` holds a secret URL: Slack's and Teams' tokens are in the path."""
    ctx = harness.ctx()
    ctx = dataclasses.replace(ctx, env={**ctx.env, "NOTIFY_URL": f"{server}/services/T0KEN-s3cret",
                                        "API_TOKEN": "Bearer tok-s3cret"})
    spec = HTTP.normalize({"url": {"env": "NOTIFY_URL"}, "json": {},
                           "headers": {"Authorization": {"env": "API_TOKEN"}, "X-Run": "1"}})
    result = await HTTP.run(spec, ctx)
    assert result.outcome == "succeeded"
    assert Handler.seen[0]["path"] == "/services/T0KEN-s3cret"
    assert Handler.seen[0]["headers"]["Authorization"] == "Bearer tok-s3cret"
    assert Handler.seen[0]["headers"]["X-Run"] == "1"
    log = harness.log_text()
    assert log.startswith(f"[hookrunner] POST {server}/... ($NOTIFY_URL)\n"), log
    assert "s3cret" not in log


async def test_an_environment_value_that_is_not_utf8_fails_the_run_plainly(
        harness, server: str) -> None:
    """Bytes that are not UTF-8 (an env file's) reach Python as lone surrogates: a plain
    failure naming the variable, not an internal error with a traceback, and nothing sent."""
    ctx = harness.ctx()
    ctx = dataclasses.replace(ctx, env={**ctx.env, "API_TOKEN": "tok\udcff\udcfe-s3cret",
                                        "NOTIFY_URL": f"{server}/ok\udcff"})
    header = HTTP.normalize({"url": f"{server}/ok", "headers": {"X-K": {"env": "API_TOKEN"}}})
    with pytest.raises(ActionError, match=r"^http: header X-K: API_TOKEN is not valid UTF-8$"):
        await HTTP.run(header, ctx)
    url = HTTP.normalize({"url": {"env": "NOTIFY_URL"}})
    with pytest.raises(ActionError, match=r"^http: url: NOTIFY_URL is not valid UTF-8$"):
        await HTTP.run(url, ctx)
    assert Handler.seen == []


async def test_body_is_sent_as_is(harness, server: str) -> None:
    result = await HTTP.run({"url": f"{server}/ok", "method": "PUT", "body": "plain text"}, harness.ctx())
    assert result.outcome == "succeeded"
    assert Handler.seen[0]["body"] == b"plain text"


async def test_500_is_failed(harness, server: str) -> None:
    result = await HTTP.run({"url": f"{server}/fail", "method": "GET"}, harness.ctx())
    assert (result.outcome, result.reason, result.outputs) == ("failed", "HTTP 500", {"status": 500})
    assert "[hookrunner] HTTP 500 Internal Server Error" in harness.log_text()


async def test_a_2xx_answer_whose_body_breaks_off_is_the_status_not_a_failure(
    harness, server: str,
) -> None:
    """The endpoint acted on the request and said so; only the body broke off. As a failure,
    a retry rule sent a non-idempotent request again."""
    result = await HTTP.run(HTTP.normalize({"url": f"{server}/cut", "json": {}}), harness.ctx())
    assert (result.outcome, result.outputs) == ("succeeded", {"status": 200}), result
    assert "the answer's body broke off: RemoteProtocolError" in harness.log_text()
    failed = await HTTP.run(HTTP.normalize({"url": f"{server}/cut-fail", "json": {}}),
                            harness.ctx())
    assert (failed.outcome, failed.reason, failed.outputs) == ("failed", "HTTP 500", {"status": 500})


async def test_large_answer_is_cut_in_the_log(harness, server: str) -> None:
    result = await HTTP.run({"url": f"{server}/big", "method": "GET"}, harness.ctx())
    assert result.outcome == "succeeded"
    assert harness.log_text().endswith("x" * 100 + "\n[hookrunner] response body cut at 65536 bytes\n")


async def test_timeout(harness, server: str) -> None:
    result = await HTTP.run({"url": f"{server}/slow"}, harness.ctx(timeout=0.5))
    assert (result.outcome, result.reason) == ("timed_out", "timed out after 0.5s")


async def test_a_body_that_stalls_after_its_status_ends_by_the_status_at_the_timeout(
    harness, server: str,
) -> None:
    """The endpoint acted and said 200; the body then stalls past the rule's timeout. As
    `timed_out`, a retry rule sent the request again."""
    # A timeout the status surely arrives within (a client's set-up takes 0.1 s of CPU).
    result = await HTTP.run({"url": f"{server}/stall"}, harness.ctx(timeout=2.5))
    assert (result.outcome, result.outputs) == ("succeeded", {"status": 200}), result
    assert "the answer's body had not ended when the timeout (2.5s) ran out: the status " \
        "decides" in harness.log_text()
    result = await HTTP.run({"url": f"{server}/stall-fail"}, harness.ctx(timeout=2.5))
    assert (result.outcome, result.reason) == ("failed", "HTTP 500"), result
    ctx = harness.ctx()
    seen = harness.log_text().count("HTTP 200")
    task = asyncio.ensure_future(HTTP.run({"url": f"{server}/stall"}, ctx))
    deadline = time.monotonic() + 10
    while harness.log_text().count("HTTP 200") == seen:  # its status is in
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    ctx.cancel.set()  # the operator's, or the server's stop: the endpoint has acted all the same
    result = await asyncio.wait_for(task, 2)
    assert (result.outcome, result.outputs) == ("succeeded", {"status": 200}), result


async def test_cancel(harness, server: str) -> None:
    ctx = harness.ctx()
    task = asyncio.ensure_future(HTTP.run({"url": f"{server}/slow"}, ctx))
    await asyncio.sleep(0.3)
    ctx.cancel.set()
    result = await asyncio.wait_for(task, 2)
    assert result.outcome == "canceled"


async def test_connection_refused_is_failed(harness) -> None:
    result = await HTTP.run({"url": "http://127.0.0.1:9/x"}, harness.ctx())
    assert result.outcome == "failed"
    # httpx says only "All connection attempts failed": the system's reason is added.
    assert result.reason == "request failed: ConnectError: All connection attempts failed " \
                            "(connection refused)", result.reason


async def test_non_http_url_is_refused(harness) -> None:
    with pytest.raises(ActionError):
        await HTTP.run({"url": "file:///etc/passwd"}, harness.ctx())


@pytest.mark.parametrize(("url", "said"), [
    ("http://[::1", "not an http\\(s\\) URL"), ("http://127.0.0.1:99999/", "not an http\\(s\\) URL"),
    ("http://127.0.0.1/\r\nX-In: 1", "the URL holds a line break or another control character"),
])
async def test_a_url_that_is_not_valid_is_a_clear_failure(harness, url: str, said: str) -> None:
    """A URL from a payload is anyone's: refused as an action error (the run fails with it),
    never an internal error with a traceback."""
    with pytest.raises(ActionError, match=said):
        await HTTP.run({"url": url}, harness.ctx())


async def test_credentials_in_the_url_and_an_authorization_header_are_refused(
    harness, server: str,
) -> None:
    """httpx would send the URL's credentials and drop the rule's header, silently."""
    url = server.replace("http://", "http://u:pw@") + "/ok"
    with pytest.raises(ActionError, match="carries credentials and the rule sets an Authorization"):
        await HTTP.run({"url": url, "headers": {"authorization": "Bearer x"}}, harness.ctx())
    assert Handler.seen == []
    result = await HTTP.run({"url": url}, harness.ctx(name="alone"))  # credentials alone are fine
    assert result.outcome == "succeeded"


async def test_a_connection_reset_says_so(harness) -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def reset_one() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    thread = threading.Thread(target=reset_one, daemon=True)
    thread.start()
    try:
        result = await HTTP.run({"url": f"http://127.0.0.1:{port}/"}, harness.ctx())
    finally:
        thread.join(5)
        listener.close()
    assert result.outcome == "failed"
    assert "closed or reset" in result.reason or "broke the HTTP protocol" in result.reason, result.reason


async def test_header_values_go_as_utf8_and_an_invalid_one_is_a_clear_failure(
    harness, server: str,
) -> None:
    result = await HTTP.run({"url": f"{server}/ok", "headers": {"X-Val": "é ü 日本"}}, harness.ctx())
    assert result.outcome == "succeeded", harness.log_text()
    (req,) = Handler.seen
    assert req["headers"]["X-Val"].encode("latin-1").decode() == "é ü 日本"
    with pytest.raises(ActionError, match="header X-Val holds a line break") as info:
        await HTTP.run({"url": f"{server}/ok", "headers": {"X-Val": "a\r\nX-In: 1 s3cret"}},
                       harness.ctx(name="two"))
    assert "s3cret" not in str(info.value)
    for odd in ("\x85", "\u2028"):  # Unicode's line breaks too, as the README says
        with pytest.raises(ActionError, match="header X-Val holds a line break"):
            await HTTP.run({"url": f"{server}/ok", "headers": {"X-Val": f"a{odd}b"}},
                           harness.ctx(name="odd"))


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[str, str]]:
    """An https server whose certificate no system CA signed (an internal service)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", str(cert)
    httpd.shutdown()
    httpd.server_close()


async def test_an_internal_ca_is_trusted_when_the_rule_names_its_bundle(harness, tls_server) -> None:
    url, cert = tls_server
    refused = await HTTP.run(HTTP.normalize({"url": f"{url}/ok"}), harness.ctx(name="system"))
    assert refused.outcome == "failed" and "CERTIFICATE_VERIFY_FAILED" in refused.reason
    # audit: OpenSSL's error kind was read as errno 1 and said "(operation not permitted)".
    assert "not permitted" not in refused.reason, refused.reason
    trusted = await HTTP.run(HTTP.normalize({"url": f"{url}/ok", "ca": cert}), harness.ctx(name="ca"))
    assert trusted.outcome == "succeeded", harness.log_text("ca")
    with pytest.raises(ActionError, match="ca: cannot load"):
        await HTTP.run(HTTP.normalize({"url": f"{url}/ok", "ca": "/nonexistent.pem"}), harness.ctx())


async def test_a_header_value_is_sent_without_surrounding_spaces_and_never_quoted_in_an_error(
    harness, server: str,
) -> None:
    """An env file's trailing space in a token is no reason to fail, and h11's refusal of a
    value (it quotes the value) never reaches the run's reason or log."""
    result = await HTTP.run({"url": f"{server}/ok", "headers": {"Authorization": " Bearer s3cret \t"}},
                            harness.ctx())
    assert result.outcome == "succeeded", harness.log_text()
    (req,) = Handler.seen
    assert req["headers"]["Authorization"] == "Bearer s3cret"
    with pytest.raises(ActionError, match="header X-Val holds a line break or another control") as info:
        await HTTP.run({"url": f"{server}/ok", "headers": {"X-Val": "s3cret\x01"}}, harness.ctx(name="ctl"))
    assert "s3cret" not in str(info.value)
    ctx = harness.ctx(name="name")
    result = await HTTP.run({"url": f"{server}/ok", "headers": {"X Bad": "s3cret"}}, ctx)
    assert result.outcome == "failed" and "could not be sent" in result.reason, result.reason
    assert "s3cret" not in result.reason and "s3cret" not in harness.log_text(name="name")


async def test_an_answer_is_asked_for_unpacked_and_one_packed_anyway_is_unpacked_within_the_cap(
        harness, server: str) -> None:
    """httpx unpacked each network read whole: a 200 KB gzip answer took 200 MB of the
    server's memory before the log's cap applied (a thousand times that, gigabytes, froze it).
    The log shows at most its cap of the unpacked body; a body packed twice is not shown."""
    result = await HTTP.run({"url": f"{server}/gzip", "method": "GET"}, harness.ctx(name="gz"))
    assert result.outcome == "succeeded"
    assert Handler.seen[0]["headers"]["Accept-Encoding"] == "identity"
    assert harness.log_text("gz").endswith("HTTP 200 OK\nhello, gzip\n")
    _bomb()  # made before measuring
    tracemalloc.start()
    try:
        bomb = await HTTP.run({"url": f"{server}/bomb", "method": "GET"}, harness.ctx(name="bomb"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert bomb.outcome == "succeeded"
    assert peak < 16 * 1024 * 1024, peak  # the cap and a read or two, not 200 MB
    log = harness.log_text("bomb")
    assert log.count("\0") == 64 * 1024 and "response body cut at 65536 bytes" in log
    double = await HTTP.run({"url": f"{server}/double", "method": "GET"}, harness.ctx(name="two"))
    assert double.outcome == "succeeded"
    assert "the answer's body is gzip, gzip-encoded: not shown" in harness.log_text("two")
    # A rule asking for a packing of its own is given the body as it comes, unpacked too.
    own = await HTTP.run({"url": f"{server}/gzip", "method": "GET",
                          "headers": {"Accept-Encoding": "gzip"}}, harness.ctx(name="own"))
    assert own.outcome == "succeeded" and harness.log_text("own").endswith("hello, gzip\n")
    assert Handler.seen[-1]["headers"]["Accept-Encoding"] == "gzip"
    # Members one after another are one text; a stream cut short says so.
    await HTTP.run({"url": f"{server}/gzip-members", "method": "GET"}, harness.ctx(name="m"))
    assert harness.log_text("m").endswith("HTTP 200 OK\npart1 part2\n"), harness.log_text("m")
    await HTTP.run({"url": f"{server}/gzip-cut", "method": "GET"}, harness.ctx(name="cut"))
    assert "the answer's gzip body ended before its end" in harness.log_text("cut")


async def test_an_answer_that_unpacks_to_nothing_for_long_is_let_go(harness, server: str) -> None:
    """Endless empty gzip members (or deflate blocks) never reached the log's cap: the loop
    unpacked them, a decompressor per member, until the rule's timeout (1 h by default)."""
    many = await HTTP.run({"url": f"{server}/gzip-empty", "method": "GET"}, harness.ctx(name="e"))
    assert many.outcome == "succeeded"
    log = harness.log_text("e")
    assert "HTTP 200 OK\nx\n" in log, log
    assert "the answer's body has more than 100 gzip members: not shown further" in log, log
    blocks = await HTTP.run({"url": f"{server}/gzip-blocks", "method": "GET"},
                            harness.ctx(name="b"))
    assert blocks.outcome == "succeeded"
    assert ("the answer's gzip body unpacks to less than 65536 bytes in its first 1048576: "
            "not shown further") in harness.log_text("b"), harness.log_text("b")


async def test_a_redirect_names_where_it_points_without_its_query(harness, server: str) -> None:
    result = await HTTP.run({"url": f"{server}/redirect", "method": "GET"}, harness.ctx())
    assert (result.outcome, result.reason) == ("failed", "HTTP 302")
    log = harness.log_text()
    assert "[hookrunner] Location: https://other.example/next\n" in log and "s3cret" not in log


@pytest.mark.parametrize("path", ["/redirect-same/T0KEN-s3cret", "/redirect-same-rel/T0KEN-s3cret"])
async def test_a_redirect_of_a_url_kept_in_the_environment_hides_its_path(
        harness, server: str, path: str) -> None:
    """An http -> https or trailing-slash redirect of `{env: NOTIFY_URL}` points at the same
    secret path: its Location line showed it, where the request's line shows `/...`."""
    ctx = harness.ctx()
    ctx = dataclasses.replace(ctx, env={**ctx.env, "NOTIFY_URL": f"{server}{path}"})
    result = await HTTP.run(HTTP.normalize({"url": {"env": "NOTIFY_URL"}, "json": {}}), ctx)
    assert (result.outcome, result.reason) == ("failed", "HTTP 301")
    log = harness.log_text()
    assert "s3cret" not in log, log
    host = server.removeprefix("http://")
    assert (f"[hookrunner] Location: https://{host}/...\n" if "-rel" not in path
            else "[hookrunner] Location: /...\n") in log, log


@pytest.mark.parametrize("path", ["/redirect-del", "/redirect-idna"])
async def test_a_redirect_whose_location_is_no_url_is_judged_by_its_status(
        harness, server: str, path: str) -> None:
    """httpx reads a 3xx's Location even when it does not follow it: one it could not parse
    raised with the status unseen, and the run was retried (a POST sent again each time)."""
    result = await HTTP.run({"url": f"{server}{path}", "method": "POST", "json": {}},
                            harness.ctx(name=path[1:]))
    assert (result.outcome, result.reason, result.final) == ("failed", "HTTP 303", True)
    assert result.outputs == {"status": 303}
    assert "its Location is not a valid URL" in harness.log_text(path[1:])


async def test_a_redirect_whose_body_breaks_off_says_so(harness, server: str) -> None:
    result = await HTTP.run({"url": f"{server}/redirect-short", "method": "GET"}, harness.ctx())
    assert (result.outcome, result.reason) == ("failed", "HTTP 302")
    log = harness.log_text()
    assert "the answer's body broke off" in log and "not a valid URL" not in log, log


async def test_an_endpoint_that_echoes_the_request_does_not_put_its_secrets_in_the_log(
        harness, server: str) -> None:
    """The stored action shows the rule's Authorization `[redacted]`; an endpoint echoing
    the request put it in the run's log (and a `?wait` answer) in clear."""
    host = server.removeprefix("http://")
    spec = {"url": f"http://deploy:pw-1234567@{host}/reflect", "method": "GET",
            "headers": {"X-Api-Key": "key-abcdef123", "X-Trace": "visible-trace"}}
    result = await HTTP.run(spec, harness.ctx(name="echo"))
    log = harness.log_text("echo")
    assert result.outcome == "failed" and "visible-trace" in log, log
    assert "key-abcdef123" not in log and "pw-1234567" not in log, log
    assert "X-Api-Key: [redacted]" in log and "Authorization: Basic [redacted]" in log, log
    assert "User-Agent: hookrunner/" in log, log  # an endpoint can tell who calls


async def test_a_non_http_endpoint_echoing_the_request_puts_none_of_it_in_the_reason(
        harness) -> None:
    """probe: h11 quotes what it received (`illegal status line: bytearray(b'POST /T0001/
    secret...')`): a TCP echo put an `{env:}` URL's secret path and query in the run's
    reason, its log, a `?wait` answer and the server's log line."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def echo_one() -> None:
        conn, _ = listener.accept()
        conn.sendall(conn.recv(65536))
        conn.close()

    thread = threading.Thread(target=echo_one, daemon=True)
    thread.start()
    ctx = harness.ctx(name="tcpecho")
    ctx = dataclasses.replace(ctx, env={
        **ctx.env, "NOTIFY_URL": f"http://127.0.0.1:{port}/T0001/SlackSecretPart123?token=QuerySecret42"})
    spec = HTTP.normalize({"url": {"env": "NOTIFY_URL"}, "headers": {"X-Api-Key": "key-abcdef123"}})
    try:
        result = await HTTP.run(spec, ctx)
    finally:
        thread.join(5)
        listener.close()
    log = harness.log_text("tcpecho")
    assert result.outcome == "failed", result
    assert "(what was received is not shown)" in result.reason, result.reason
    for secret in ("SlackSecretPart123", "QuerySecret42", "key-abcdef123"):
        assert secret not in result.reason and secret not in log, (secret, result.reason, log)


async def test_the_loop_guards_count_is_sent_whatever_header_a_stored_spec_holds(
        harness, server: str) -> None:
    """probe: a rule's own `X-Hookrunner-Hops: 1` was sent instead of the count, and a
    self-posting rule made 522 runs in 4 s; such a rule is refused now (test_http_spec),
    and a spec stored before that still sends the count."""
    spec = {"url": f"{server}/reflect", "headers": {"x-hookrunner-hops": "1"}, "hops": 7}
    await HTTP.run(spec, harness.ctx(name="hops"))
    log = harness.log_text("hops")
    assert "X-Hookrunner-Hops: 7" in log and "hops: 1" not in log.lower(), log


async def test_an_echo_in_json_or_through_a_proxy_does_not_put_secrets_in_the_log(
        harness, server: str) -> None:
    """A key with a `/` echoed as JSON writes it `\\/` (PHP), and a proxy's credentials go
    as Proxy-Authorization: both were in the log, and a `?wait` answer, in clear."""
    key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    result = await HTTP.run({"url": f"{server}/reflect-json", "headers": {"X-Api-Key": key}},
                            harness.ctx(name="json"))
    log = harness.log_text("json")
    assert result.outcome == "failed" and "[redacted]" in log, log
    assert "K7MDENG" not in log, log
    ctx = harness.ctx(name="proxy")
    proxy = server.replace("http://", "http://puser:proxysecretpw@")
    ctx = dataclasses.replace(ctx, env={**ctx.env, "http_proxy": proxy})
    await HTTP.run({"url": "http://service.example/reflect"}, ctx)
    log = harness.log_text("proxy")
    assert "Proxy-Authorization: Basic [redacted]" in log, log
    assert "proxysecretpw" not in log and "cHVzZXI6cHJveHlzZWNyZXRwdw" not in log, log


async def test_what_came_before_a_timeout_is_all_in_the_log_with_a_secret_header(
        harness, server: str) -> None:
    """The last bytes, held back in case a secret began there, were dropped: the attempt's
    log was closed before the cut-off read wrote them (`ERROR: disk full` lost its end)."""
    result = await HTTP.run({"url": f"{server}/stall-fail",
                             "headers": {"X-Api-Key": "key-abcdefghijklmnop"}},
                            harness.ctx(timeout=2.5))
    assert (result.outcome, result.reason) == ("failed", "HTTP 500"), result
    log = harness.log_text()
    assert "partial" in log and log.index("partial") < log.index("had not ended"), log


async def test_json_null_is_sent_as_json(harness, server: str) -> None:
    """A payload's `null` forwarded (`json: "{{ payload.data }}"`): httpx read `json=None`
    as no body, and sent none, with no Content-Type."""
    assert (await HTTP.run({"url": f"{server}/ok", "json": None}, harness.ctx())).outcome \
        == "succeeded"
    assert Handler.seen[0]["body"] == b"null"
    assert Handler.seen[0]["headers"]["Content-Type"] == "application/json"


async def test_a_url_the_client_cannot_send_is_refused_before_any_attempt(harness) -> None:
    """`http://xn--/` passed hookrunner's own checks and failed each attempt the same way
    (and `hookrunner test` did not say so): a refusal now, which is not retried."""
    rendered = {"url": "http://xn--/x", "method": "GET"}
    assert "not a URL the client can send" in (HTTP.refusal(rendered, harness.root) or "")
    with pytest.raises(ActionError, match="not a URL the client can send"):
        await HTTP.run(rendered, harness.ctx())


@pytest.mark.parametrize(("value", "refused"), [
    ("/echo/ok", False),
    ("@localhost:{port}/echo", True),  # the rule's host as a user name, another host
    ("1:{port}/echo", True),  # review: 127.0.0.11, another host, with the rule's headers
    ("/../../admin", True),
    ("/%2e%2e/admin", True),
    ("/builds/..%2F..%2Fadmin", True),  # the README's one-segment idiom, decoded by some
])
async def test_a_value_templated_after_the_host_cannot_change_the_host_or_climb_the_path(
        harness, server: str, value: str, refused: bool) -> None:
    """`url: "http://host:port{{ payload.path }}"` with a path of `@evil/` went to `evil`,
    with the rule's secret headers; `{{ id | urlencode }}` keeps `/`, so `../..` reached
    another path of the endpoint."""
    host, port = server.rsplit(":", 1)
    # The rule writes the host (and port) and lets the template go on, `http://host{{ path }}`.
    written = host if value.startswith("1:") else server
    rendered = _rendered({"url": written + "{{ payload.path }}", "headers": {"X-Key": "s3cret"}},
                         path=value.format(port=port))
    if refused:
        with pytest.raises(ActionError, match=r"changed the scheme or host|has a `\.\.` segment"):
            await HTTP.run(rendered, harness.ctx())
        assert Handler.seen == []
    else:
        assert (await HTTP.run(rendered, harness.ctx())).outcome == "succeeded"
        assert Handler.seen[0]["path"] == "/echo/ok"


async def test_spaces_around_a_url_are_no_part_of_it(harness, server: str) -> None:
    """An env file's or a template's space: the trailing one went into the path (`/ok%20`),
    a leading one failed with httpx's "missing an 'http://' protocol"."""
    result = await HTTP.run({"url": f"  {server}/ok \n"}, harness.ctx())
    assert result.outcome == "succeeded", harness.log_text()
    assert Handler.seen[0]["path"] == "/ok"


async def test_a_proxy_passed_to_the_action_is_used_and_no_proxy_respected(
        harness, server: str) -> None:
    """A team behind an egress proxy passes it as curl reads it (`--pass-env http_proxy`);
    the server's own environment is never read."""
    ctx = harness.ctx(name="proxied")
    ctx = dataclasses.replace(ctx, env={**ctx.env, "http_proxy": server,
                                        "NO_PROXY": "direct.example"})
    result = await HTTP.run({"url": "http://service.example/ok?token=abc"}, ctx)
    assert result.outcome == "succeeded", harness.log_text("proxied")
    assert Handler.seen[0]["path"] == "http://service.example/ok?token=abc"  # a proxy's request
    assert f"through the proxy {server} ($http_proxy)" in harness.log_text("proxied")
    bypass = dataclasses.replace(ctx, env={**ctx.env, "NO_PROXY": "127.0.0.1"})
    direct = await HTTP.run({"url": f"{server}/ok"}, bypass)
    assert direct.outcome == "succeeded" and Handler.seen[1]["path"] == "/ok"


def test_trust_is_loaded_once_and_a_changed_bundle_again(tmp_path) -> None:
    """A context cost ~30 ms of CPU, made for every run: most of an http run's cost."""
    from hookrunner.actions.http import trust

    assert trust(None, tmp_path) is trust(None, tmp_path)
    assert trust(None, tmp_path).cert_store_stats()["x509_ca"] > 0  # the system's, or certifi's
    cert = tmp_path / "ca.pem"
    for name in ("first", "second"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", f"/CN={name}", "-keyout", str(tmp_path / "k.pem"),
                        "-out", str(cert)], check=True, capture_output=True)
        loaded = trust("ca.pem", tmp_path)
        assert trust("ca.pem", tmp_path) is loaded
        assert [c["subject"] for c in loaded.get_ca_certs()] == [((("commonName", name),),)]


async def test_a_templated_port_is_digits(harness, server: str) -> None:
    host, port = server.rsplit(":", 1)
    url = host + ":{{ payload.port }}/ok"
    assert (await HTTP.run(_rendered({"url": url}, port=port), harness.ctx())).outcome == \
        "succeeded"
    assert (await HTTP.run(_rendered({"url": url}, port=int(port)), harness.ctx(name="n"))
            ).outcome == "succeeded"  # a payload's number
    with pytest.raises(ActionError, match="changed the scheme or host"):
        await HTTP.run(_rendered({"url": url}, port=f"{port}@evil.example"), harness.ctx(name="b"))
    # audit: a port of `8080/admin?` (or `8080#`) took the rule's path away, to any path of
    # that host with the rule's headers; one that starts with the rule's own text after it
    # (`8080/okX/admin?`, `8080/ok?admin=1&x=`) passed, read as a prefix.
    for port_value in (f"{port}/admin?", f"{port}#", f"{port}/admin?x=/ok", f"{port}/okX/admin?",
                       f"{port}/ok?admin=1&x=", f"{port}/ok/admin?"):
        with pytest.raises(ActionError, match=r"changed the scheme or host that the rule "
                                              r"writes out \(http://127\.0\.0\.1:\{\{…\}\}/ok\)"):
            await HTTP.run(_rendered({"url": url}, port=port_value), harness.ctx(name="c"))
    assert [seen["path"] for seen in Handler.seen] == ["/ok", "/ok"]
    # What the rule writes next is checked up to its next template, and a query it writes
    # (a token) is not quoted.
    url = host + ":{{ payload.port }}/v1/{{ payload.x }}?key=s3cret"
    assert (await HTTP.run(_rendered({"url": url}, port=port, x="ok"),
                           harness.ctx(name="d"))).outcome == "succeeded"
    assert Handler.seen[-1]["path"] == "/v1/ok?key=s3cret"
    for port_value, x in ((f"{port}/x?", "ok"), (f"{port}/v1/admin?", "")):
        with pytest.raises(ActionError, match=r"\(http://127\.0\.0\.1:\{\{…\}\}/v1/\): ") as refused:
            await HTTP.run(_rendered({"url": url}, port=port_value, x=x), harness.ctx(name="e"))
        assert "s3cret" not in str(refused.value)
    assert len(Handler.seen) == 3


@pytest.mark.parametrize(("value", "why"), [
    ("", "its port is empty"), ("0", "its port 0 is not from 1 to 65535"),
    ("65536", "its port 65536 is not from 1 to 65535"), (" 80", "its port ' 80' is not a number"),
    ("+80", "its port '+80' is not a number"), (None, "its port 'null' is not a number"),
    ("١٨", "its port '١٨' is not a number"),
])
async def test_a_templated_port_that_is_no_port_says_so(harness, server: str, value: Any,
                                                        why: str) -> None:
    """Each was refused as `not an http(s) URL: http:<not a valid URL>` (the URL is not shown:
    it may hold credentials), naming neither the port nor its value; an empty one, or 0, was
    sent to port 80."""
    url = server.rsplit(":", 1)[0] + ":{{ payload.port }}/ok"
    with pytest.raises(ActionError) as refused:
        await HTTP.run(_rendered({"url": url}, port=value), harness.ctx())
    assert str(refused.value).startswith(f"http: not an http(s) URL ({why}): "), refused.value
    assert Handler.seen == []


async def test_a_path_value_that_moves_the_port_names_the_port_it_made(
        harness, server: str) -> None:
    url = server + "{{ payload.path }}"
    for path, port in ((".evil.example/x", ".evil.example"), (":18531/api", ":18531")):
        with pytest.raises(ActionError, match=re.escape(
                f"not an http(s) URL (its port '{server.rsplit(':', 1)[1]}{port}' is not a "
                "number)")):
            await HTTP.run(_rendered({"url": url}, path=path), harness.ctx(name=path[:3]))
    assert Handler.seen == []


@pytest.mark.parametrize(("url", "values", "refused"), [
    # A part of the host before the rule's text, as the port: no `/`, `?`, `#`, nor a port.
    ("http://127.0.0.{{ payload.a }}/ok", {"a": "1:{port}/okX/admin?"}, True),
    ("http://127.0.0.{{ payload.a }}/ok", {"a": "1:{port}"}, True),
    ("http://{{ payload.a }}.0.0.1:{port}/ok", {"a": "127.0.0.1:{port}/okX/admin?#"}, True),
    ("http://{{ payload.a }}.0.0.1:{port}/ok", {"a": "127"}, False),
    # A path's template right after the host: the rule's query after it is no prefix to keep.
    ("http://127.0.0.1:{port}{{ payload.a }}?key=s3cret", {"a": "/ok"}, False),
    ("http://127.0.0.1:{port}{{ payload.a }}/ok", {"a": ""}, False),
    # review: a port's template with a path's right after it (`:{{ port }}{{ path }}`) was
    # read as one port, and refused every path; the port is still digits.
    ("http://127.0.0.1:{{ payload.p }}{{ payload.a }}", {"p": "{port}", "a": "/ok"}, False),
    ("http://127.0.0.1:{{ payload.p }}{{ payload.a }}", {"p": "{port}/admin?", "a": "/ok"},
     True),
    # review: a template ending the host may not add labels: `127.0.0.{{ a }}` of
    # `1.nip.io` (`api-{{ region }}` of `x.attacker.example`) named another domain.
    ("http://127.0.0.{{ payload.a }}:{port}/ok", {"a": "1.nip.io"}, True),
    ("http://127.0.0.{{ payload.a }}:{port}/ok", {"a": "1"}, False),
    # review 2: IDNA's full stops are dots to the client; a name's end after a letter; a
    # path's digits right after the port's were the port; the rule's text after the path.
    ("http://127.0.0.{{ payload.a }}:{port}/ok", {"a": "1\u3002nip\u3002io"}, True),
    ("http://127.0.0.{{ payload.a }}:{port}/ok", {"a": "1\uff0enip\uff0eio"}, True),
    ("http://127.0.0.1{{ payload.a }}:{port}/ok", {"a": ".nip.io"}, True),
    ("http://127.0.0.1:{{ payload.p }}{{ payload.a }}", {"p": "", "a": "{port}/ok"}, True),
    ("http://127.0.0.1:{{ payload.p }}{{ payload.a }}", {"p": "{head}", "a": "{tail}/ok"}, True),
    ("http://127.0.0.1:{{ payload.p }}{{ payload.a }}/ok", {"p": "{port}", "a": "/v1"}, False),
])
async def test_a_value_in_the_host_ends_where_the_rules_text_after_it_starts(
        harness, server: str, url: str, values: dict[str, str], refused: bool) -> None:
    """A value is read as a value of its place, not as text that the rule's next text has
    to follow: `api-{{ region }}/deploy` with a region of `eu/deployX/admin?` passed."""
    port = server.rsplit(":", 1)[1]
    rendered = _rendered({"url": url.replace("{port}", port), "headers": {"X-Key": "s3cret"}},
                         **{k: v.format(port=port, head=port[:2], tail=port[2:])
                            for k, v in values.items()})
    if refused:
        with pytest.raises(ActionError, match="changed the scheme or host"):
            await HTTP.run(rendered, harness.ctx())
        assert Handler.seen == []
    else:
        assert (await HTTP.run(rendered, harness.ctx())).outcome == "succeeded", harness.log_text()
        assert Handler.seen[0]["path"] in ("/ok", "/ok?key=s3cret", "/v1/ok")


@pytest.mark.parametrize(("proxy", "said"), [
    ("socks5://127.0.0.1:1080", r"\$https_proxy names a socks5 proxy: only http:// and https://"),
    ("http://[bad", r"\$https_proxy is not a proxy URL"),
])
async def test_a_proxy_that_cannot_be_used_is_refused_before_sending(
        harness, proxy: str, said: str) -> None:
    """A SOCKS proxy was an internal error with a traceback (no socksio), at every retry."""
    ctx = harness.ctx()
    ctx = dataclasses.replace(ctx, env={**ctx.env, "https_proxy": proxy})
    with pytest.raises(ActionError, match=said):
        await HTTP.run({"url": "https://service.example/"}, ctx)


async def test_a_proxy_without_a_scheme_is_http_as_for_curl(harness, server: str) -> None:
    ctx = harness.ctx()
    ctx = dataclasses.replace(ctx, env={**ctx.env, "HTTP_PROXY": server.removeprefix("http://")})
    assert (await HTTP.run({"url": "http://service.example/ok"}, ctx)).outcome == "succeeded"
    assert Handler.seen[0]["path"] == "http://service.example/ok"


def test_the_servers_ssl_cert_file_does_not_decide_trust(tmp_path, monkeypatch) -> None:
    """`SSL_CERT_FILE` is the server's environment, not the action's (review: the default
    context read it, and one certificate there failed every public endpoint)."""
    from hookrunner.actions import http

    monkeypatch.setenv("SSL_CERT_FILE", "/dev/null")
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    http._system_trust.cache_clear()
    try:
        context = http._system_trust()
        system = ssl.get_default_verify_paths().openssl_cafile  # OpenSSL's, not the variable's
        with_system = ssl.create_default_context(cafile=system)
        assert context.cert_store_stats()["x509_ca"] == with_system.cert_store_stats()["x509_ca"] > 0
    finally:
        http._system_trust.cache_clear()


@pytest.mark.parametrize(("template", "values"), [
    # Templates side by side after the host (review: the pieces between were empty, and the
    # value went to another port with the rule's headers).
    ("{host}{{{{ payload.a }}}}{{{{ payload.b }}}}", {"a": ":{port}", "b": "/echo"}),
    # A template in the scheme turned the pinning off.
    ("http{{{{ payload.s }}}}://127.0.0.1:{port}/x", {"s": "://localhost:{port}/#"}),
])
async def test_templates_side_by_side_or_in_the_scheme_keep_the_rules_host(
        harness, server: str, template: str, values: dict[str, str]) -> None:
    host, port = server.rsplit(":", 1)
    rendered = _rendered({"url": template.format(host=host, port=port),
                          "headers": {"X-Key": "s3cret"}},
                         **{k: v.format(port=port, head=port[:2], tail=port[2:])
                            for k, v in values.items()})
    with pytest.raises(ActionError, match=r"changed the scheme or host that the rule writes out "
                                          r"\(http[^)]*127\.0\.0\.1[^)]*\)"):
        await HTTP.run(rendered, harness.ctx())
    assert Handler.seen == []
