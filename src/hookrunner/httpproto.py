"""uvicorn's httptools protocol with a bound on the request head (request line + headers).

httptools accumulates a header of any size in memory before the app sees it: a client could
send a 1 GB header. Past `MAX_HEAD_BYTES` without the head being complete, this protocol
answers 431, stops reading into the parser (further input is discarded, never buffered) and
closes the connection after a short linger, so the client can still read the answer. A head
that arrives in one read is measured exactly once it is complete.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hookrunner.logs import event

MAX_HEAD_BYTES = 64 * 1024  # GitHub & co. send < 4 KiB; nginx allows 4 x 8 KiB by default
LINGER = 2.0  # seconds a refused connection is drained before it is closed
BODY = b'{"error": "request headers too large"}'
REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + BODY
)


HOOKS = b"/hooks/"
CONTINUE = b"HTTP/1.1 100 "


class _OneWrite:
    """The transport as the response cycle of a POST to a hook sees it: the head is held
    until the body follows (a hook answers with both at once), so the answer leaves in one
    write: one syscall and one TCP segment instead of two, for the sender too. `100 Continue`
    is never held (the client waits for it), and closing sends what is held first."""

    __slots__ = ("_held", "_sent", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._sent = False  # the head went out: from here on every write passes straight

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held, self._sent = self._held + data, None, True
        elif not self._sent and not data.startswith(CONTINUE):
            self._held = data
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True  # until the first request's headers are complete
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        # A head that arrived in one read is only measured here: the exact size counts.
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if size > MAX_HEAD_BYTES:
            self._head_bytes = size
            self._refuse()
            return
        previous = self.cycle
        super().on_headers_complete()
        # A POST to a hook: its answer always has a body to join (uvicorn writes none for
        # HEAD). Only on a cycle made for this request (an upgrade makes none).
        if (self.cycle is not previous and self.cycle is not None
                and self.url.startswith(HOOKS) and self.scope["method"] == "POST"):
            self.cycle.transport = _OneWrite(self.transport)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # draining: read and dropped
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (self._in_head and not self._refused and self._head_bytes > MAX_HEAD_BYTES
                and not self.transport.is_closing()):
            self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        client = self.client[0] if self.client else ""
        event("http.head_too_large", logging.WARNING, client=client, bytes=self._head_bytes)
        self.transport.write(REFUSAL)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER, self.transport.close)
