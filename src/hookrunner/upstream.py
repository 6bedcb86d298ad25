"""An HTTP worker process's way to the main process: everything but hooks is proxied there.

With `--http-workers N`, extra processes share the port to accept hooks (see multiproc).
The console's sessions, the dispatcher's state and /metrics live in the main process, so
every other request is forwarded to it over a Unix socket, streamed both ways (a followed
run log is a long response), with the client's address in X-Forwarded-For.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import logging
import re
from urllib.parse import unquote_to_bytes

import httpx
from starlette.types import Message, Receive, Scope, Send

from hookrunner.auth import bearer_given
from hookrunner.logs import Throttled, event
from hookrunner.rawhttp import ClientGone, TooLarge, disconnected, read_body

# Per-connection headers are not forwarded (RFC 9110 7.6.1); the server frames its own answer
# and dates it. `expect: 100-continue` was answered by this server already.
_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                  b"transfer-encoding", b"upgrade", b"expect"})
_OWN = frozenset({b"date", b"server"})  # this server's uvicorn adds its own
MAX_BODY = 1024 * 1024  # the console's forms and the API's POSTs are tiny; hooks never come here
PROBES = frozenset({"/healthz", "/readyz"})
PROBE_WAIT = 3.0  # seconds: the main process answers /readyz within 2 s whatever its store does
_probe_unanswered_log = Throttled("http.main_not_answering", logging.ERROR, per="path")


def forwardable(scope: Scope) -> bool:
    """Whether the path is one that routes: no route has a `.` or `..` segment, an escaped
    `/` or letter (the routes match the decoded path, where `/hooks%2Fgh` was `/hooks/gh`,
    past a front proxy's rules on the path as sent), or a target that is no path (`OPTIONS
    *`). Such paths are refused in every process alike: httpx would also change them on the
    way to the main process (`/x/../hooks/gh` arrives as `/hooks/gh`, `OPTIONS *` is not
    sent)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    if not raw.startswith(b"/"):
        return False
    path = raw.split(b"?", 1)[0]
    if _NEEDLESS_ESCAPE.search(path):
        return False
    segments = unquote_to_bytes(path).split(b"/")
    return b"." not in segments and b".." not in segments


# An escape of `/` or of a character that needs none (`/hook%73/gh`, `/%61pi/runs`): the
# routes match the decoded path, so it would reach a route a proxy's rule on the path as
# sent keeps out. No client escapes these.
_NEEDLESS_ESCAPE = re.compile(rb"%(2[dDeEfF]|3[0-9]|4[1-9a-fA-F]|5[0-9aA]|5[fF]|6[1-9a-fA-F]"
                              rb"|7[0-9aA]|7[eE])")


class _NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing: `Set-Cookie` passes to the visitor, not into it."""

    def __init__(self) -> None:
        super().__init__(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


class Upstream:
    def __init__(self, socket_path: str, tls: bool) -> None:
        # The main process listens on that socket with the same TLS settings as on the port;
        # the hop never leaves this machine, so its certificate is not checked. No pool
        # bound: a followed log holds its connection for as long as the run goes on.
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(
                uds=socket_path, verify=False, retries=1,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32)),
            base_url="https://hookrunner" if tls else "http://hookrunner",
            timeout=httpx.Timeout(None, connect=5.0), trust_env=False,
            # One client forwards every visitor's requests: it must never keep a cookie (a
            # jar would hand one admin's session to every later request without one).
            cookies=_NoCookies())

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._forward(scope, receive, send)
        except ClientGone:
            return
        except Exception as exc:
            event("http.forward_failed", logging.ERROR, path=scope["path"], error=repr(exc))
            with contextlib.suppress(Exception):  # the answer may have begun already
                await _answer(send, 502, b'{"error":"main process unreachable"}')

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Read (bounded) before forwarding: an unauthenticated client must not make a worker
        # hold a large body.
        given = dict(scope["headers"])
        declared = given.get(b"content-length", b"")
        # A client that sent `Expect: 100-continue` sends its body only once asked for it:
        # an answer that did not ask closes the connection, or the next request on it was
        # read as that body (uvicorn drains a body sent anyway, as the main process's does).
        expects = b"expect" in given
        # An API write without a bearer token is refused whatever it sends (the console's
        # cookie reads the API only): asked of the main process without its body, which is
        # neither asked for (no `100 Continue`) nor read.
        unread = (scope["path"].startswith("/api/") and scope["method"] not in ("GET", "HEAD")
                  and not bearer_given(given.get(b"authorization", b"").decode("latin-1")))
        if not unread and declared.isdigit() and int(declared) > MAX_BODY:
            await _answer(send, 413, b'{"error":"body too large"}', close=expects)
            return
        try:
            body = b"" if unread else await read_body(receive, None, MAX_BODY)
        except TooLarge:
            await _answer(send, 413, b'{"error":"body too large"}', close=expects)
            return
        closes = unread and expects
        # One Host (h11 refuses to send two; uvicorn took the request with both).
        hosts = [v for k, v in scope["headers"] if k == b"host"][:1]
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP and k != b"host"
                   and not (unread and k == b"content-length")]
        headers += [(b"host", h) for h in hosts]
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode("latin-1")))
        # The path exactly as received: no dot-segment or `//host` reinterpretation on the way.
        target = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        url = self._client.base_url.copy_with(raw_path=target + (b"?" + query if query else b""))
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            if scope["path"] in PROBES:
                # A main process that does not answer (hung, stopped) held a health check
                # without end while hooks were still answered 202: it hears 503 in time.
                try:
                    async with asyncio.timeout(PROBE_WAIT):
                        response = await self._client.send(request, stream=True)
                except TimeoutError:
                    _probe_unanswered_log(path=scope["path"], waited_seconds=PROBE_WAIT)
                    await _answer(send, 503, b'{"error":"main process not answering"}')
                    return
            else:
                response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            event("http.forward_failed", logging.ERROR, path=scope["path"], error=repr(exc))
            await _answer(send, 502, b'{"error":"main process unreachable"}')
            return
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw
                                    if k.lower() not in _HOP and k.lower() not in _OWN]
                        + ([(b"connection", b"close")] if closes else [])})
            chunks = response.aiter_raw().__aiter__()
            while True:
                # A followed log may never end by itself: stop when the client leaves.
                step = asyncio.ensure_future(chunks.__anext__())
                await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    return
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()
            await response.aclose()


async def _answer(send: Send, status: int, body: bytes, close: bool = False) -> None:
    """`close`: the body of a request sent with `Expect: 100-continue` was not asked for, so
    its connection cannot carry another request: the next one was read as that body."""
    start: Message = {"type": "http.response.start", "status": status,
                      "headers": [(b"content-type", b"application/json"),
                                  (b"content-length", str(len(body)).encode()),
                                  *([(b"connection", b"close")] if close else [])]}
    await send(start)
    await send({"type": "http.response.body", "body": body})
