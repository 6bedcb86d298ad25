"""A request must arrive whole in time: a real uvicorn server with hookrunner's protocol, on a
loopback socket, with the deadline shortened for the test (the default is a minute)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from hookrunner import httpproto
from hookrunner.httpproto import BoundedHttpToolsProtocol
from hookrunner.rawhttp import ClientGone, read_body
from tests.serverproc import free_port

DEADLINE = 1.0


class App:
    """Reads the whole body, then answers 202; remembers how each read ended."""

    def __init__(self) -> None:
        self.ends: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":  # an answer that takes longer than the deadline
            await asyncio.sleep(DEADLINE * 2.5)
        try:
            body = await read_body(receive, None, 1 << 20)
        except ClientGone:
            self.ends.append("gone")
            return
        self.ends.append(f"read {len(body)}")
        await send({"type": "http.response.start", "status": 202,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, App]]:
    monkeypatch.setattr(httpproto, "READ_TIMEOUT", DEADLINE)
    monkeypatch.setattr(httpproto, "SWEEP_EVERY", 0.1)
    app = App()
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=BoundedHttpToolsProtocol,
                            ws="none", lifespan="off", log_config=None, timeout_keep_alive=30)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve()), daemon=True)
    thread.start()
    until = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < until, "uvicorn did not start"
        time.sleep(0.02)
    yield port, app
    srv.should_exit = True
    thread.join(10)


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def _read_all(s: socket.socket) -> tuple[bytes, float]:
    """Everything until the server closes, and when it closed."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data, time.monotonic()


HEAD = b"POST /hooks/x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"


def test_a_head_that_never_completes_gets_408_and_the_connection_closes(
    server: tuple[int, App],
) -> None:
    port, app = server
    with _connect(port) as s:
        t0 = time.monotonic()
        s.sendall(HEAD)  # no blank line: the head never ends
        data, closed = _read_all(s)
    assert data.startswith(b"HTTP/1.1 408 ") and data.endswith(b'"request not received in time"}')
    assert DEADLINE <= closed - t0 < DEADLINE + 3
    assert app.ends == []  # the app never saw it


def test_a_body_that_stalls_gets_408_and_the_app_hears_the_client_went(
    server: tuple[int, App],
) -> None:
    port, app = server
    with _connect(port) as s:
        t0 = time.monotonic()
        s.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b"{" * 10)
        data, closed = _read_all(s)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert DEADLINE <= closed - t0 < DEADLINE + 3
    until = time.monotonic() + 5
    while not app.ends and time.monotonic() < until:
        time.sleep(0.02)
    assert app.ends == ["gone"]


def test_a_slow_sender_that_finishes_in_time_and_an_idle_connection_are_left_alone(
    server: tuple[int, App],
) -> None:
    port, app = server
    with _connect(port) as s:
        s.sendall(HEAD + b"Content-Length: 4\r\n\r\n")
        for byte in b"[12]":
            time.sleep(DEADLINE / 8)
            s.sendall(bytes([byte]))
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 202 ")
        time.sleep(DEADLINE * 1.5)  # idle between requests: no request is being read
        s.sendall(HEAD + b"Content-Length: 2\r\n\r\n{}")
        assert s.recv(65536).startswith(b"HTTP/1.1 202 ")
    assert app.ends == ["read 4", "read 2"]


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    server: tuple[int, App],
) -> None:
    port, app = server
    with _connect(port) as s:
        t0 = time.monotonic()
        data, closed = _read_all(s)
    assert data == b"" and DEADLINE <= closed - t0 < DEADLINE + 3
    assert app.ends == []


def test_a_pipelined_request_waits_for_the_answer_before_it_and_never_takes_its_place(
    server: tuple[int, App],
) -> None:
    """A slow answer (2.5 deadlines) with a stalled request queued behind it: the slow one
    gets its own answer; the stalled one's clock starts only once that answer is out, and
    then ends in a 408."""
    port, app = server
    with _connect(port) as s:
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
                  + HEAD + b"Content-Length: 10\r\n\r\n12345")
        t0 = time.monotonic()
        data, closed = _read_all(s)
    first, _, rest = data.partition(b"{}")
    assert first.startswith(b"HTTP/1.1 202 "), data
    assert rest.startswith(b"HTTP/1.1 408 "), data
    assert DEADLINE * 2.5 + DEADLINE <= closed - t0 < DEADLINE * 2.5 + DEADLINE + 3
    assert app.ends[0] == "read 2"
