"""Which requests the hook lane takes (the rest go the usual ASGI way), and its answers."""

from __future__ import annotations

import pytest

from hookrunner.hooklane import answer_bytes, declared_length, hook_id_of


@pytest.mark.parametrize(("path", "query", "hook"), [
    (b"/hooks/github", b"", "github"),
    (b"/hooks/gh-1.x_y", b"token=abc", "gh-1.x_y"),
    (b"/hooks/github", b"waiting=1&await=2", "github"),  # only `wait` itself is a wait
])
def test_plain_hook_targets_are_taken(path: bytes, query: bytes, hook: str) -> None:
    assert hook_id_of(path, query) == hook


@pytest.mark.parametrize(("path", "query"), [
    (b"/hooks/", b""),
    (b"/hooks/a/b", b""),  # below a hook: Starlette's 404
    (b"/hooks/..", b""),
    (b"/hooks/.", b""),
    (b"/hooks/git%68ub", b""),  # escaped: decoded by the usual path, as before
    (b"/hooks/%2e%2e", b""),
    (b"/hook/github", b""),
    (b"/hooks/github", b"wait=5s"),  # ?wait watches for the client leaving (ASGI)
    (b"/hooks/github", b"x=1&wait="),
    (b"/hooks/github", b"%77ait=5s"),
    (b"/hooks/github", b"w%61it=5s"),  # escaped so that no `ait` shows
    (b"/hooks/github", b"wa%69t=5s"),
    (b"/hooks/github", b"%77%61%69%74=5s"),
    (b"/hooks/github", b"WAIT=1&wait=2"),
    (b"/hooks/gh\xc3\xa9", b""),
])
def test_everything_else_goes_the_usual_way(path: bytes, query: bytes) -> None:
    assert hook_id_of(path, query) is None


def test_only_a_single_plain_content_length_is_taken() -> None:
    assert declared_length([(b"host", b"t"), (b"content-length", b"5400")]) == 5400
    assert declared_length([(b"content-length", b"0")]) == 0
    assert declared_length([(b"host", b"t")]) is None  # no body declared: the usual path
    assert declared_length([(b"transfer-encoding", b"chunked")]) is None
    assert declared_length([(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]) is None
    assert declared_length([(b"content-length", b"5"), (b"content-length", b"5")]) is None
    assert declared_length([(b"content-length", b"-1")]) is None
    assert declared_length([(b"content-length", b"0x10")]) is None


def test_the_answer_is_written_as_uvicorn_writes_one() -> None:
    status = b"HTTP/1.1 202 Accepted\r\n"
    date = [(b"date", b"Sun, 29 Nov 2026 15:00:00 GMT")]
    headers = [(b"content-length", b"2"), (b"content-type", b"application/json")]
    assert answer_bytes(status, date, headers, True, b"{}") == (
        b"HTTP/1.1 202 Accepted\r\ndate: Sun, 29 Nov 2026 15:00:00 GMT\r\ncontent-length: 2\r\n"
        b"content-type: application/json\r\n\r\n{}")
    assert answer_bytes(status, [], headers, False, b"{}") == (
        b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\ncontent-type: application/json\r\n"
        b"connection: close\r\n\r\n{}")
