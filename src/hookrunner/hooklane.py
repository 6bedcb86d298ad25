"""The hook lane: a delivery answered by the HTTP protocol itself, without an ASGI cycle.

A POST to `/hooks/{id}` is the one request under load, and uvicorn's ASGI cycle costs a task,
an event, four message dicts and header checks per request (measured: ~4-10 % of the server's
CPU per delivery, within this VM's noise). The protocol (httpproto) takes the plainest such
requests itself: a known hook, a declared body within the hook's `max_body`, no `?wait`, no
`Expect: 100-continue`, no upgrade, and no earlier answer still owed on the connection. It
reads the whole body, runs the same accept path (ingest) and writes the answer in one piece.
Anything else goes the usual way, so both give the same answers, and a request the lane
cannot take loses nothing.

`LaneCycle` stands in for uvicorn's RequestResponseCycle while a lane request is being
answered, with the attributes uvicorn's protocol reads: so a request pipelined behind it
waits its turn, a graceful shutdown lets its answer out first, and a client that leaves is
seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

HOOKS = b"/hooks/"


Parts = tuple[int, list[tuple[bytes, bytes]], bytes]  # an answer's status, headers and body


@dataclass(slots=True)
class Admission:
    """A lane request that passed the checks made on its head (`admitted`, handed back to
    `Lane.answer`), or their refusal, written at once: the body is then read and dropped,
    never held, as on the usual path."""

    admitted: Any = None
    refusal: Parts | None = None


class Lane(Protocol):
    """What the app offers the protocol (app.HookLane)."""

    def admit(self, scope: dict[str, Any], hook_id: str, length: int) -> Admission | None:
        """The head's checks (address, rate, queue room...); None, with nothing counted,
        if the usual path must answer (no such hook, or a body over its `max_body`)."""

    async def answer(self, admitted: Any, body: bytes) -> Parts:
        """The answer to an admitted request; never raises (a bug answers 500)."""

    def out_of_memory(self, admitted: Any) -> Parts:
        """The answer when its body could not even be copied (503, Retry-After)."""


class _Unwatched:
    """uvicorn sets a cycle's `message_event` when the client leaves; nothing waits on it."""

    __slots__ = ()

    def set(self) -> None:
        pass


_UNWATCHED = _Unwatched()


class LaneCycle:
    __slots__ = ("admitted", "body", "disconnected", "keep_alive", "response_complete",
                 "response_started", "scope")

    message_event = _UNWATCHED

    def __init__(self, scope: dict[str, Any], keep_alive: bool, admitted: Any) -> None:
        self.scope = scope
        self.keep_alive = keep_alive
        self.admitted = admitted
        self.body = bytearray()
        self.disconnected = False
        self.response_started = False
        self.response_complete = False


def hook_id_of(path: bytes, query: bytes) -> str | None:
    """The hook of a lane candidate's target (path and query as sent), or None where the
    usual path must decide: an escaped path (`%2F`, dot segments: Starlette's routing and
    the workers' forwarding have their own rules for those), a path below the hook's, or a
    `?wait` (it watches for the client leaving, through ASGI)."""
    if not path.startswith(HOOKS) or b"%" in path:
        return None
    hook = path[len(HOOKS):]
    if not hook or b"/" in hook or hook in (b".", b".."):
        return None
    if query and (b"%" in query or b"ait" in query.lower()) and any(
            name == "wait" for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)):
        return None
    try:
        return hook.decode("ascii")
    except UnicodeDecodeError:
        return None


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's declared Content-Length; None if it is chunked, missing or unclear."""
    length: int | None = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            if length is not None or not value.strip().isdigit():
                return None  # repeated (maybe differently) or not a number: the usual path
            length = int(value)
    return length


def answer_bytes(status_line: bytes, default_headers: list[tuple[bytes, bytes]],
                 headers: list[tuple[bytes, bytes]], keep_alive: bool, body: bytes) -> bytes:
    """The whole answer, as uvicorn writes one (its default headers first)."""
    content = [status_line]
    for name, value in (*default_headers, *headers):
        content += [name, b": ", value, b"\r\n"]
    if not keep_alive:
        content.append(b"connection: close\r\n")
    content += [b"\r\n", body]
    return b"".join(content)
