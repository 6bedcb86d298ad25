"""The hook lane (hooklane, httpproto) against a real server: a delivery it takes is answered
exactly as one the usual ASGI path takes, in order with the others on its connection."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import Server, read_answers

RULES = """
hooks:
  open:
    verify: {none: {}}
    max_body: 1000
  fenced:
    verify: {none: {}}
    allow_ips: [10.0.0.0/8]
  once:
    verify: {none: {}}
    rate_limit: {rate: 1/h, burst: 1}
rules:
  - name: noted
    hook: open
    when: payload.kind == "run"
    run: {shell: {argv: ["true", "{{ payload.kind }}"]}}
"""
BODY = b'{"kind": "run"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("lane")
    (root / "rules").mkdir()
    (root / "rules" / "lane.yaml").write_text(RULES)
    srv = Server(root / "rules", root / "data", root).start()
    yield srv
    srv.stop()


def lane(body: bytes = BODY, target: bytes = b"/hooks/open", extra: bytes = b"",
         media: bytes = b"application/json") -> bytes:
    """A request the lane takes: a declared length within max_body."""
    return (b"POST " + target + b" HTTP/1.1\r\nHost: t\r\nContent-Type: " + media + b"\r\n"
            + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def chunked(body: bytes = BODY) -> bytes:
    """The same delivery, chunked: the lane leaves it to the usual path."""
    return (b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))


def exchange(server: Server, request: bytes, count: int = 1) -> list[tuple[bytes, bytes]]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(request)
        return read_answers(s, count)


def shape(head: bytes) -> tuple[bytes, list[bytes]]:
    status, *lines = head.split(b"\r\n")
    return status, [line.split(b":")[0].lower() for line in lines]


def test_a_lane_answer_is_the_usual_paths_answer(server: Server) -> None:
    (lane_head, lane_body), = exchange(server, lane())
    (usual_head, usual_body), = exchange(server, chunked())
    assert shape(lane_head) == shape(usual_head) == (
        b"HTTP/1.1 202 Accepted", [b"date", b"content-length", b"content-type"])
    a, b = json.loads(lane_body), json.loads(usual_body)
    assert a.keys() == b.keys() == {"delivery_id", "runs", "status_url"}
    assert len(a["runs"]) == len(b["runs"]) == 1
    with server.admin() as c:
        for doc in (a, b):
            stored = c.get(f"/api/deliveries/{doc['delivery_id']}").json()
            assert stored["payload"] == {"kind": "run"}
            assert [m["rule"] for m in stored["matches"] if m["matched"]] == ["noted"]


def test_refusals_the_lane_leaves_alone_are_answered_as_before(server: Server) -> None:
    (head, body), = exchange(server, lane(target=b"/hooks/nope"))
    assert head.startswith(b"HTTP/1.1 404 ") and b"unknown hook" in body
    (head, body), = exchange(server, lane(body=b'{"kind": "' + b"x" * 1000 + b'"}'))
    assert head.startswith(b"HTTP/1.1 413 ")
    (head, body), = exchange(server, lane(body=b"{not json"))
    assert head.startswith(b"HTTP/1.1 400 ") and b"not valid JSON" in body
    (head, body), = exchange(server, lane(body=b"<x/>", media=b"text/xml"))
    assert head.startswith(b"HTTP/1.1 415 ")


def test_pipelined_requests_are_answered_in_order_whichever_path_takes_them(server: Server) -> None:
    requests = [lane(), b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", chunked(),
                lane(target=b"/hooks/nope"), lane()]
    got = exchange(server, b"".join(requests), len(requests))
    statuses = [head.split(b"\r\n")[0] for head, _ in got]
    assert statuses == [b"HTTP/1.1 202 Accepted", b"HTTP/1.1 200 OK", b"HTTP/1.1 202 Accepted",
                        b"HTTP/1.1 404 Not Found", b"HTTP/1.1 202 Accepted"], statuses
    ids = [json.loads(body)["delivery_id"] for head, body in got if b" 202 " in head]
    assert len(set(ids)) == 3


@pytest.mark.parametrize("request_", [
    lane(extra=b"Connection: close\r\n"),
    lane().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
])
def test_a_connection_asked_closed_is_closed_after_the_answer(server: Server,
                                                               request_: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(request_)
        (head, _), = read_answers(s, 1)
        assert b"\r\nconnection: close" in head.lower() and b" 202 " in head
        assert s.recv(1) == b""


def test_a_client_gone_before_its_answer_still_has_its_delivery_journaled(server: Server) -> None:
    with server.admin() as c:
        before = len(c.get("/api/deliveries", params={"hook": "open", "limit": 1000}).json()["deliveries"])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(lane())  # then reset at once
    (head, _), = exchange(server, lane())  # the server is fine
    assert b" 202 " in head
    with server.admin() as c:
        after = len(c.get("/api/deliveries", params={"hook": "open", "limit": 1000}).json()["deliveries"])
    assert after == before + 6
    assert "http.internal_error" not in server.output() and "Traceback" not in server.output()


def test_a_refusal_of_the_head_is_answered_before_the_body_and_the_body_is_not_kept(
        server: Server) -> None:
    """As on the usual path: a sender refused by address (or rate, or a full queue) is told
    at once, without sending (or the server holding) its body first."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /hooks/fenced HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n")  # and no body yet
        (head, body), = read_answers(s, 1)
        assert head.startswith(b"HTTP/1.1 403 ") and b"address not allowed" in body
        s.sendall(b"x" * 100000)  # dropped as it comes; the connection goes on
        s.sendall(lane())
        (head, _), = read_answers(s, 1)
        assert head.startswith(b"HTTP/1.1 202 "), head


@pytest.mark.parametrize("framing", ["lane", "chunked"])
def test_a_connection_refused_before_its_body_is_closed_once_idle(server: Server, framing: str) -> None:
    """A refusal answered on the head arms the idle clock; the body arriving later stopped
    it, and nothing started it again: the connection stayed open for good (either path)."""
    body = b"x" * 3000
    if framing == "lane":
        head = b"POST /hooks/fenced HTTP/1.1\r\nHost: t\r\nContent-Length: 3000\r\n\r\n"
        rest = body
    else:
        head = b"POST /hooks/fenced HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        rest = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)
        (answer, _), = read_answers(s, 1)
        assert answer.startswith(b"HTTP/1.1 403 "), answer
        s.sendall(rest)  # after the answer
        started = time.monotonic()
        assert s.recv(1) == b""  # closed by the server once idle
        assert time.monotonic() - started < 20


@pytest.mark.parametrize("refused", [
    b"GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n",  # a Host that is no host
    b"GET /healthz HTTP/1.1\r\n\r\n",  # no Host
    b"POST /hooks/open HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
])
def test_nothing_after_a_refused_request_in_the_same_read_is_run(server: Server,
                                                                   refused: bytes) -> None:
    """audit: httptools parses a read whole, so a request behind a refused one ran: a hook
    delivery spent its rate limit's token (and was counted refused, never answered), a GET
    ran its route and then logged a traceback failing to write."""
    behind = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + lane(b"{}", b"/hooks/once")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(refused + behind)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ") and data.count(b"HTTP/1.1") == 1, data
    time.sleep(0.3)
    assert "http.server_error" not in server.output() and "Traceback" not in server.output()


def test_a_rate_limit_token_is_not_spent_by_a_request_behind_a_refused_one(server: Server) -> None:
    """(The hook `once` allows one delivery an hour: the tests above sent it only behind
    refused requests.)"""
    [(head, body)] = exchange(server, lane(b"{}", b"/hooks/once"))
    assert head.startswith(b"HTTP/1.1 202"), head + body


@pytest.mark.parametrize("request_", [lane(), chunked()])  # the lane; the usual path
def test_a_delivery_is_answered_to_a_half_closed_client_whatever_is_queued_behind_it(
        server: Server, request_: bytes) -> None:
    """audit: on the usual path, a half-close after a delivery with a GET pipelined behind it
    closed the connection unanswered, though the delivery was journaled: its sender would
    send it again. The GET, which may wait long (a followed log), is not started."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(request_ + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(3)  # closed after the answer, not by the 5 s keep-alive timer (review)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 202 "), data
    answer = json.loads(data.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])
    assert answer["delivery_id"].startswith("dlv_"), answer
