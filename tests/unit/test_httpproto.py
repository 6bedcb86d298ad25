"""A hook's answer goes out in one write: the head is held until the body follows."""

from __future__ import annotations

from typing import Any

from hookrunner.httpproto import _OneWrite


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def one_write(recorder: Recorder) -> Any:
    return _OneWrite(recorder, recorder.close)  # type: ignore[arg-type]


def test_head_and_body_leave_in_one_write_and_later_writes_pass() -> None:
    t = Recorder()
    w = one_write(t)
    w.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n")
    assert t.writes == []
    w.write(b"{}")
    assert t.writes == [b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"]
    w.write(b"more")  # never held again
    assert t.writes[-1] == b"more"


def test_100_continue_is_never_held() -> None:
    t = Recorder()
    w = one_write(t)
    w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert t.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    w.write(b"HTTP/1.1 200 OK\r\n\r\n")
    w.write(b"")  # an empty body still sends the head
    assert t.writes[1:] == [b"HTTP/1.1 200 OK\r\n\r\n"]


def test_closing_sends_a_held_head_first_and_the_rest_is_delegated() -> None:
    t = Recorder()
    w = one_write(t)
    w.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    w.close()
    assert t.writes == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"] and t.closed
    assert w.is_closing()
