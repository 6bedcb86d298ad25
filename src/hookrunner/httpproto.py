"""uvicorn's httptools protocol with bounds on what a request may hold and how long it takes.

httptools accumulates a header of any size in memory before the app sees it: a client could
send a 1 GB header. Past `MAX_HEAD_BYTES` without the head being complete, this protocol
answers 431, stops reading into the parser (further input is discarded, never buffered) and
closes the connection after a short linger, so the client can still read the answer. A head
that arrives in one read is measured exactly once it is complete.

uvicorn has no deadline for a request to arrive: a client that sends its head or its body a
byte at a time (or stops halfway), or connects and sends nothing, holds a connection (and a
task) forever. A request not received whole `READ_TIMEOUT` after its first byte is answered
408 and its connection closed; a new connection that sends nothing in that time is closed.
The clock stops while the client waits for an earlier answer on the same connection (a
pipelined request, which uvicorn stops reading meanwhile) and starts again after it, so a
408 is never sent in place of another request's answer. One sweep a second per server checks
every connection, so a request costs two timestamps, not a timer of its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qsl

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from hookrunner.clientip import plain
from hookrunner.hooklane import Lane, LaneCycle, answer_bytes, declared_length, hook_id_of
from hookrunner.logs import Throttled, event
from hookrunner.pathprefix import strip

MAX_HEAD_BYTES = 64 * 1024  # GitHub & co. send < 4 KiB; nginx allows 4 x 8 KiB by default
LINGER = 2.0  # seconds a refused connection is drained before it is closed
# An answer given before the body came: the rest is read while it keeps coming, until LINGER
# without a byte, or this long in all (nginx: lingering_timeout 5 s, lingering_time 30 s).
LINGER_MAX = 30.0


def _last_answer(status: bytes, error: bytes, extra: bytes = b"") -> bytes:
    """A whole JSON error answer written straight to the transport, before it is closed."""
    body = b'{"error": "' + error + b'"}'
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n" + extra +
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


REFUSAL = _last_answer(b"431 Request Header Fields Too Large", b"request headers too large")
# httptools stops parsing at the end of the head of a request that asks to switch protocols
# (`Connection: upgrade`: curl --http2 on http://, a WebSocket): its body would never be
# read, and the request would reach the app with an empty one. No protocol is switched to
# here, so such a request with a body is refused before anything sees it (one without is
# answered as plain HTTP/1.1, then its connection closes).
NO_UPGRADE = _last_answer(b"400 Bad Request", b"protocol upgrades are not supported: send the "
                          b"request without Connection: upgrade (plain HTTP/1.1)")
MALFORMED = _last_answer(b"400 Bad Request", b"invalid HTTP request")
# A body that could not be held (bodies at once past the process's memory): as ingest's own
# out-of-memory answer, which a sender retries (httptools made a 400 of the MemoryError).
NO_MEMORY = _last_answer(b"503 Service Unavailable", b"out of memory: try again later",
                         b"retry-after: 5\r\n")
# RFC 9112 3.2: an HTTP/1.1 request without a Host header, any request with several, or
# with a Host that is no `host[:port]`, is a 400. A proxy that dropped it, or smuggled a
# second one, is better told than guessed at; a value with a `/`, `@` or space would be
# written into the console's origin checks and the logs as if it were a host.
NO_HOST = _last_answer(b"400 Bad Request", b"exactly one Host header is required")
BAD_HOST = _last_answer(b"400 Bad Request", b"the Host header is not a host[:port]")
MAX_HOST_SHOWN = 60  # bytes of a refused Host the log line quotes
# RFC 3986's uri-host (an IP literal in brackets, a zone id's `%25` too; or a reg-name /
# IPv4 address, without the sub-delims no host name has: `a,b` is two Hosts folded into
# one) and port; empty is allowed (a target without an authority).
_HOST_VALUE = re.compile(rb"(?:(?:\[[0-9A-Za-z:._~%-]+\]"
                         rb"|(?:[0-9A-Za-z._~-]|%[0-9A-Fa-f]{2})+)(?::[0-9]*)?)?")
READ_TIMEOUT = 60.0  # seconds from a request's first byte until its body is complete
SWEEP_EVERY = 1.0  # seconds between checks of every connection's deadline
LATE = _last_answer(b"408 Request Timeout", b"request not received in time")

# A slow-client flood would log a line per connection: one a second, with a count.
_late_log = Throttled("http.request_timeout", logging.WARNING)
_no_memory_log = Throttled("delivery.rejected", logging.WARNING)  # bodies at once past memory
_malformed_log = Throttled("http.invalid_request", logging.WARNING)
_upgrade_log = Throttled("http.upgrade_refused", logging.WARNING)

HOOKS = b"/hooks/"
CONTINUE = b"HTTP/1.1 100 "


class _OneWrite:
    """The transport as the response cycle of a POST to a hook sees it: the head is held
    until the body follows (a hook answers with both at once), so the answer leaves in one
    write: one syscall and one TCP segment instead of two, for the sender too. `100 Continue`
    is never held (the client waits for it), and closing sends what is held first, then
    closes as the protocol does (`close`: after the rest of the body, see close_after_body)."""

    __slots__ = ("_close", "_held", "_sent", "_transport")

    def __init__(self, transport: asyncio.Transport, close: Callable[[], None]) -> None:
        self._transport = transport
        self._close = close
        self._held: bytes | None = None
        self._sent = False  # the head went out: from here on every write passes straight

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            return  # the client is gone (its connection_lost is on its way): nothing to say
        if self._held is not None:
            data, self._held, self._sent = self._held + data, None, True
        elif not self._sent and not data.startswith(CONTINUE):
            self._held = data
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._held is not None and not self._transport.is_closing():
            self._transport.write(self._held)
            self._held = None
        self._close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True  # until the first request's headers are complete
        self._refused = False
        # When the client started on what it owes: a request's first byte (until it is
        # whole), or the connection itself (until a first byte). None: nothing owed.
        self._reading_since: float | None = None
        self._begun = False  # a request has begun on this connection
        self._eof = False  # the client half-closed after a whole request: answer, then close
        self._held_refusal: bytes | None = None  # written once the earlier answers are
        # The request being answered (`self.cycle` is the newest: one queued behind it, when
        # pipelined).
        self._running: Any = None
        self._linger_end: float | None = None  # close_after_body: when it closes at the latest
        self._last_data = 0.0  # while lingering: when the client last sent something
        # The app's hook lane (hooklane); None behind any wrapper uvicorn put around the app.
        self._lane: Lane | None = getattr(self.app, "hook_lane", None)
        # --path-prefix: a hook's path with it still on is a hook's path here too.
        self._prefix: str = getattr(self.app, "path_prefix", "")

    def _client_shown(self) -> str:
        """The peer as the log names it elsewhere (an IPv4 client of `--host ::` as IPv4)."""
        return plain(self.client[0]) if self.client else ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._reading_since = time.monotonic()
        _sweep_soon(self.server_state)

    def on_message_begin(self) -> None:
        # Once a request is refused, what follows it in the same read (httptools parses a
        # read whole) is not a request: a pipelined hook delivery behind a bad Host spent a
        # rate limit's token and was counted refused, a GET ran its route and failed to
        # write. (Its URL may still gather, within that one read; its head is not acted on.)
        if self._refused:
            return
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._reading_since = time.monotonic()
        self._begun = True

    def on_header(self, name: bytes, value: bytes) -> None:
        # After the head, a field is a chunked body's trailer: uvicorn would add it to the
        # request's headers (the list is the scope's), where a client could slip in an
        # `X-Forwarded-For` or a signature behind its proxy's back. Trailers are dropped.
        if self._in_head and not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        # A head that arrived in one read is only measured here: the exact size counts.
        size = len(self.url) + 4 * len(self.headers) + sum([len(k) + len(v) for k, v in self.headers])
        if size > MAX_HEAD_BYTES:
            self._head_bytes = size
            self._refuse()
            return
        if not _chunked_only(self.headers):
            # A transfer coding other than `chunked` (`gzip`, `gzip, chunked`): httptools
            # would read such a body as plain bytes, or fail on it only after the app had
            # started (and a route that reads no body, a cancel, had acted). Refused before.
            _malformed_log(client=self._client_shown())
            self._refuse(MALFORMED)
            return
        hosts = [i for i, (name, _) in enumerate(self.headers) if name == b"host"]
        if len(hosts) > 1 or (not hosts and self.parser.get_http_version() == "1.1"):
            _malformed_log(client=self._client_shown(), reason="host_header")
            self._refuse(NO_HOST)
            return
        if hosts:
            # llhttp keeps trailing spaces: the app (origin checks, URLs) gets the value bare.
            host = self.headers[hosts[0]][1].strip(b" \t")
            if _HOST_VALUE.fullmatch(host) is None:
                _malformed_log(client=self._client_shown(), reason="host_value",
                               host=host[:MAX_HOST_SHOWN].decode("latin-1"))
                self._refuse(BAD_HOST)
                return
            self.headers[hosts[0]] = (b"host", host)
        upgrade = self.parser.should_upgrade()
        if upgrade and _has_body(self.headers):
            _upgrade_log(client=self._client_shown(),
                         upgrade=(self._get_upgrade() or b"").decode("latin-1")[:40])
            self._refuse(NO_UPGRADE)
            return
        if not upgrade and self._take_lane():
            return
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous and not (self.pipeline and self.pipeline[0][0] is self.cycle):
            self._running = self.cycle  # started at once, not queued behind another
        # A POST to a hook: its answer always has a body to join (uvicorn writes none for
        # HEAD). Only on a cycle made for this request (an upgrade makes none).
        if (self.cycle is not previous and self.cycle is not None
                and self._target().startswith(HOOKS) and self.scope["method"] == "POST"):
            self.cycle.transport = _OneWrite(  # type: ignore[assignment]
                self.transport, self.close_after_body)
        if upgrade and self.cycle is not previous and self.cycle is not None:
            # Answered as plain HTTP/1.1 (`curl --http2` to /healthz, Java's HttpClient); the
            # parser reads nothing after an upgrade request, so the connection then closes.
            self.cycle.keep_alive = False

    def _target(self) -> bytes:
        """The request target as routed: without the path prefix (pathprefix.strip)."""
        if not self._prefix:
            return self.url
        path, mark, query = self.url.partition(b"?")
        return strip(path.decode("latin-1"), self._prefix).encode("latin-1") + mark + query

    def _take_lane(self) -> bool:
        """Whether this request goes the hook lane (see hooklane); if so, its cycle is set."""
        lane = self._lane
        target = self._target()
        if (lane is None or self.expect_100_continue or self.pipeline or self.root_path
                or (self.cycle is not None and not self.cycle.response_complete)
                or self.parser.get_method() != b"POST" or not target.startswith(HOOKS)):
            return False
        parsed = httptools.parse_url(target)
        query: bytes = parsed.query or b""
        hook_id = hook_id_of(parsed.path, query)
        if hook_id is None:
            return False
        length = declared_length(self.headers)
        if length is None:
            return False  # chunked or unclear: the usual path
        version = self.parser.get_http_version()
        scope = cast(dict[str, Any], self.scope)
        scope["method"] = "POST"
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = parsed.path.decode("ascii")
        scope["raw_path"] = parsed.path
        scope["query_string"] = query
        # The head's checks, as on the usual path: a refusal (403, 429, 503...) is answered
        # before the body arrives, and the body is then dropped as it comes, never held.
        admission = lane.admit(scope, hook_id, length)
        if admission is None:
            return False  # unknown hook, or a body over max_body: the usual path answers
        keep_alive = version != "1.0" and self.parser.should_keep_alive()
        cycle = LaneCycle(scope, keep_alive, admission.admitted)
        self.cycle = self._running = cycle  # type: ignore[assignment]
        if admission.refusal is not None:
            self._write_lane_answer(cycle, *admission.refusal)
        return True

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        cycle: Any = self.cycle  # uvicorn's own, or a LaneCycle in its place
        try:
            if type(cycle) is LaneCycle:
                if not cycle.response_complete:  # else refused: dropped as it comes
                    cycle.body += body  # within max_body: its declared length was
            else:
                super().on_body(body)
        except MemoryError:
            cycle.body = bytearray() if type(cycle) is LaneCycle else b""
            path = strip(str(cycle.scope.get("path", "")), self._prefix)
            hook = path.removeprefix("/hooks/") if path.startswith("/hooks/") else None
            # (a hook's as ingest's own out-of-memory line names it)
            _no_memory_log(hook=hook, path=None if hook else path, reason="out of memory")
            self._refuse_body(NO_MEMORY)

    def on_message_complete(self) -> None:
        self._reading_since = None
        if self._refused:
            return
        cycle: Any = self.cycle
        if type(cycle) is LaneCycle:
            if not cycle.response_complete:
                task = self.loop.create_task(self._answer_lane(cycle))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)  # a graceful shutdown waits for it, as for an ASGI cycle
        else:
            super().on_message_complete()
        if (cycle is not None and cycle.response_complete and not self.pipeline
                and self.timeout_keep_alive_task is None and not self.transport.is_closing()):
            # Answered before its body came (a refusal): the keep-alive clock armed then was
            # stopped by the body's arrival, and nothing would start it again.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)

    async def _answer_lane(self, cycle: LaneCycle) -> None:
        assert self._lane is not None
        try:
            try:
                body, cycle.body = bytes(cycle.body), bytearray()
            except MemoryError:  # bodies at once past the memory there is: a sender retries
                cycle.body = bytearray()
                parts = self._lane.out_of_memory(cycle.admitted)
            else:
                parts = await self._lane.answer(cycle.admitted, body)
            if not cycle.disconnected and self.flow.write_paused:
                await self.flow.drain()  # a client that does not read: no answers pile up
            if cycle.disconnected or self.transport.is_closing():
                return  # the client left: journaled all the same (as on the usual path)
            self._write_lane_answer(cycle, *parts)
        except BaseException as exc:  # as uvicorn's cycle: never leave the connection hanging
            if not isinstance(exc, asyncio.CancelledError):
                logging.getLogger("hookrunner").exception("http.internal_error")
            if not cycle.response_complete:
                self.transport.close()
            if isinstance(exc, asyncio.CancelledError):
                raise

    def _write_lane_answer(self, cycle: LaneCycle, status: int,
                           headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        cycle.response_started = True
        self.transport.write(answer_bytes(STATUS_LINE[status], self.server_state.default_headers,
                                          headers, cycle.keep_alive, content))
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.close_after_body()
        self.on_response_complete()

    def close_after_body(self) -> None:
        """Close, once the client has sent what it was sending. An answer given before the
        request's body came (a 413 from its Content-Length, a 403) to a client that asked
        for `Connection: close` closed the socket with the body still arriving: the kernel
        then resets the connection, and a client that writes its whole body before reading
        (Python's urllib, many SDKs) got a broken pipe instead of the answer. So the rest
        of the body is read and dropped after a half-close (the answer is all sent), while
        it keeps coming (see LINGER_MAX), as web servers' lingering close does."""
        if self._in_head or self._reading_since is None or self.transport.is_closing():
            self.transport.close()  # nothing more is on its way
            return
        self._refused = True  # what still comes is read and dropped (data_received)
        now = time.monotonic()
        self._last_data, self._linger_end = now, now + LINGER_MAX
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self._linger_check)

    def timeout_keep_alive_handler(self) -> None:
        # Armed by uvicorn once the answer is out: while lingering, the body still coming
        # (never seen by the parser, so never resetting it) is no idle keep-alive connection.
        if self._linger_end is None:
            super().timeout_keep_alive_handler()

    def _linger_check(self) -> None:
        if self.transport.is_closing() or self._linger_end is None:
            return
        now = time.monotonic()
        quiet = now - self._last_data
        if quiet >= LINGER or now >= self._linger_end:
            self.transport.close()
        else:
            self.loop.call_later(min(LINGER - quiet, self._linger_end - now), self._linger_check)

    def on_response_complete(self) -> None:
        if self._reading_since is not None:  # a pipelined request waited for this answer
            self._reading_since = time.monotonic()
        queued = self.pipeline[-1][0] if self.pipeline else None  # the next to start
        super().on_response_complete()
        if queued is not None and not (self.pipeline and self.pipeline[-1][0] is queued):
            self._running = queued
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete
                             and not self.cycle.disconnected):
            return
        if self._held_refusal is not None and not self.transport.is_closing():
            answer, self._held_refusal = self._held_refusal, None
            self._write_refusal(answer)
        elif self._eof:
            self.transport.close()  # the last answer the half-closed client waited for

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio allows True
        """The client closed its sending side: `shutdown(SHUT_WR)` (`nc -N`), or it left
        (`close()`): both look the same here. A hook delivery sent whole is answered as soon
        as it is journaled (milliseconds), so its answer is still written: a sender that
        only half-closed would otherwise send it again. Anything else that may wait long (a
        `?wait`, a followed log) is treated as gone, as before: kept open, every client
        that left would hold a socket and a task until its wait ran out."""
        if self.scheme == "https":
            return None  # asyncio's TLS closes anyway (and warns, per connection, if asked not to)
        if self._held_refusal is not None:  # earlier answers first, then the refusal, then close
            self._eof = True
            return True
        cycle = self._running
        if (cycle is not None and not cycle.response_complete and self._reading_since is None
                and not self._refused and _answered_soon(cycle.scope, self._prefix)):
            if not all(_answered_soon(c.scope, self._prefix) for c, _ in self.pipeline):
                # A request queued behind it may wait long: it is not started (the client
                # left); the delivery's answer is still written, as the hook lane writes it
                # (it was closed unanswered, though journaled: a sender would send it again),
                # and the connection closes after it.
                for dropped, _ in self.pipeline:
                    dropped.disconnected = True
                self.pipeline.clear()
            self._eof = True
            return True
        return None

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what httptools cannot parse, as JSON like every other error,
        and its log line throttled (a scanner would write one per request)."""
        if self._refused:
            return  # refused already (its head, its transfer coding): answered once
        _malformed_log(client=self._client_shown())
        cycle: Any = self.cycle  # the newest request's (pipelined ones too)
        if self._in_head or cycle is None:
            self._refuse(MALFORMED)  # a head: after the answers of the requests before it
            return
        self._refuse_body(MALFORMED)

    def _refuse_body(self, answer: bytes) -> None:
        """The newest request's body does not parse (a bad chunk size, an unknown transfer
        coding) or cannot be held: that request gets `answer` (after the answers of the
        requests before it; none if its own answer has begun) and the connection closes. Its
        app is told the client left, so it neither waits for the rest of the body nor
        answers as well."""
        cycle: Any = self.cycle
        self._refused = True
        if not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if cycle.response_started:
            self.transport.close()
        elif self.pipeline:
            # Queued behind earlier answers (uvicorn appends to the left): its turn runs no
            # app, so a route that acts without reading its body (a cancel) does not act.
            if self.pipeline[0][0] is cycle:
                self.pipeline[0] = (cycle, _no_app)
            self._held_refusal = answer
        else:
            self._write_refusal(answer)

    def _unsupported_upgrade_warning(self) -> None:
        pass  # refused in on_headers_complete, and logged there

    def _awaiting_an_answer(self) -> bool:
        """The client waits for an earlier request's answer on this connection: a request
        queued behind it (uvicorn reads no further meanwhile), or a head arriving while it
        is being made. (While a request's own body arrives, its cycle is `self.cycle`.)"""
        if self.pipeline:
            return True
        return self._in_head and self.cycle is not None and not self.cycle.response_complete

    def check_deadline(self, now: float) -> None:
        """Past READ_TIMEOUT still reading a request: answer 408 (unless its answer has
        begun, e.g. a 413 while the body still flows) and close; a connection that never
        sent a byte is closed."""
        since = self._reading_since
        if (since is None or now - since < READ_TIMEOUT or self._refused
                or self.transport.is_closing() or self._awaiting_an_answer()):
            return
        self._reading_since = None
        self._refused = True  # whatever still arrives is dropped
        phase = "body" if not self._in_head else "head" if self._begun else "connection"
        _late_log(client=self._client_shown(), phase=phase,
                  seconds=round(now - since, 1))
        cycle = self.cycle if phase == "body" else None  # a head has no cycle of its own yet
        if phase != "connection" and (cycle is None or not cycle.response_started):
            self.transport.write(LATE)
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            if self._linger_end is not None:
                self._last_data = time.monotonic()
            return  # draining: read and dropped
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (self._in_head and not self._refused and self._head_bytes > MAX_HEAD_BYTES
                and not self.transport.is_closing()):
            self._refuse()

    def _refuse(self, answer: bytes = REFUSAL) -> None:
        self._refused = True
        if answer is REFUSAL:
            client = self._client_shown()
            event("http.head_too_large", logging.WARNING, client=client, bytes=self._head_bytes)
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            # An earlier request on this connection is still being answered (pipelined):
            # its answer goes first, and is not cut off by closing.
            self._held_refusal = answer
            return
        self._write_refusal(answer)

    def _write_refusal(self, answer: bytes) -> None:
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER, self.transport.close)


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    """The turn of a pipelined request refused before it started: nothing to do."""


def _answered_soon(scope: Any, prefix: str) -> bool:
    """A hook delivery without `?wait` (as ingest reads it: `%77ait` too): answered once it
    is journaled, in milliseconds."""
    if scope.get("method") != "POST" or not strip(scope.get("path", ""), prefix).startswith("/hooks/"):
        return False
    query = scope.get("query_string", b"").decode("latin-1")
    return all(name != "wait" for name, _ in parse_qsl(query, keep_blank_values=True))


def _chunked_only(headers: list[tuple[bytes, bytes]]) -> bool:
    """No Transfer-Encoding, or exactly `chunked` (over one header or several)."""
    codings = [t.strip().lower() for name, value in headers if name == b"transfer-encoding"
               for t in value.split(b",") if t.strip()]
    return not codings or codings == [b"chunked"]


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0")):
            return True
    return False


_SWEPT: weakref.WeakSet[ServerState] = weakref.WeakSet()  # servers whose sweep is armed


def _sweep_soon(state: ServerState) -> None:
    """Arm the sweep of one server's connections: it re-arms itself while any are open."""
    if state in _SWEPT:
        return
    _SWEPT.add(state)
    loop = asyncio.get_running_loop()

    def sweep() -> None:
        now = time.monotonic()
        for conn in list(state.connections):
            if isinstance(conn, BoundedHttpToolsProtocol):
                try:
                    conn.check_deadline(now)
                except Exception:  # one odd connection must not end the sweep for all
                    logging.getLogger("hookrunner").exception("http.sweep_failed")
        if state.connections:
            loop.call_later(SWEEP_EVERY, sweep)
        else:
            _SWEPT.discard(state)

    loop.call_later(SWEEP_EVERY, sweep)
