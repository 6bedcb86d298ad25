"""The accept path's own plumbing: exact payload numbers, plain-ASGI request reading, the
--max-queued budget across processes, and events written without a LogRecord."""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any

import pytest
from starlette.requests import Request

from hookrunner import logs
from hookrunner.budget import QueueBudget
from hookrunner.payload import parse_body
from hookrunner.rawhttp import ClientGone, TooLarge, headers_of, query_of, read_body, url_of
from hookrunner.verify.base import Headers


def test_payload_numbers_stay_exact() -> None:
    """A faster JSON parser (orjson) was tried here and dropped: it turns integers past 64 bits
    into floats, which would change a sender's ids."""
    doc = parse_body(b'{"id": 123456789012345678901234567890, "x": 1.5}', "application/json")
    assert doc == {"id": 123456789012345678901234567890, "x": 1.5}


def scope(**kw: Any) -> dict[str, Any]:
    base = {"type": "http", "method": "POST", "scheme": "http", "path": "/hooks/gh",
            "root_path": "", "query_string": b"", "server": ("127.0.0.1", 8080),
            "headers": [(b"host", b"example.com:8443"), (b"x-a", b"1"), (b"X-A", b"2")]}
    return {**base, **kw}


@pytest.mark.parametrize("kw", [
    {}, {"query_string": b"wait=3s&a=%20b"}, {"headers": []}, {"scheme": "https", "headers": []},
    {"server": ("10.0.0.1", 80), "headers": []}, {"root_path": "/gw"},
])
def test_url_and_query_as_starlette_builds_them(kw: dict[str, Any]) -> None:
    s = scope(**kw)
    request = Request(s)
    assert url_of(s, headers_of(s)) == str(request.url)
    assert query_of(s) == dict(request.query_params)


def test_headers_first_value_and_all_values() -> None:
    h = headers_of(scope())
    assert h.get("X-A") == "1" and h.get_all("x-a") == ["1", "2"]
    assert Headers([("A", "1")]).get("a") == "1" and "a" in Headers([("A", "1")])


async def test_read_body_bounds_and_disconnects() -> None:
    def feeder(*messages: dict[str, Any]) -> Any:
        queue = list(messages)

        async def receive() -> dict[str, Any]:
            return queue.pop(0)
        return receive

    parts = feeder({"type": "http.request", "body": b"ab", "more_body": True},
                   {"type": "http.request", "body": b"cd", "more_body": False})
    assert await read_body(parts, None, 10) == b"abcd"
    with pytest.raises(TooLarge):
        await read_body(feeder(), "11", 10)  # declared: refused before reading
    with pytest.raises(TooLarge):
        await read_body(feeder({"type": "http.request", "body": b"x" * 11}), None, 10)
    with pytest.raises(ClientGone):
        await read_body(feeder({"type": "http.disconnect"}), None, 10)


def test_budget_admits_up_to_the_bound_and_counts_refreshes() -> None:
    b = QueueBudget()
    assert b.admit(3, limit=4) and b.queued == 3
    assert not b.admit(2, limit=4)  # 3 + 2 > 4
    b.accepted(3, reserved=3)
    assert b.queued == 3
    b.refresh(store_queued=1, journaled_before_count=b.journaled())
    assert b.queued == 1
    empty = QueueBudget()
    assert empty.admit(50, limit=4)  # an empty queue admits any delivery


def test_shared_budget_is_one_bound_across_forked_processes() -> None:
    b = QueueBudget(shared=True)
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            admitted = sum(b.admit(1, limit=10) for _ in range(100))
            os._exit(admitted)
        pids.append(pid)
    admitted = sum(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids)
    assert admitted == 10 and b.queued == 10


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_direct_events_write_the_formatters_line(fmt: str) -> None:
    logs.setup_logging(fmt)
    handler = logs.LOGGER.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.stream = out
    try:
        logs.event("delivery.accepted", hook="gh", note="two words", n=3)
        direct = out.getvalue()
        logs.LOGGER.log(logging.INFO, "delivery.accepted",
                        extra={"fields": {"hook": "gh", "note": "two words", "n": 3}})
        through_logging = out.getvalue()[len(direct):]
    finally:
        logs.LOGGER.handlers[:] = []
        logs._direct = None
    if fmt == "json":
        a, b = json.loads(direct), json.loads(through_logging)
        assert abs(a.pop("ts") - b.pop("ts")) < 5 and a == b
    else:
        assert direct.split(" ", 1)[1] == through_logging.split(" ", 1)[1]
        assert 'note="two words" n=3' in direct
