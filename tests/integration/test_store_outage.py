"""The embedded store refusing writes under a running server: a lock held by another process,
the data directory deleted. Hooks answer 503 with Retry-After in time, /readyz says so, and
nothing is answered 202 that is not stored."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.serverproc import Server

RULES = """
hooks:
  open: {verify: {none: {}}}
rules:
  - {name: r, hook: open, run: {shell: {argv: ["true"]}}}
"""


def _post(server: Server) -> tuple[int, dict[str, str], float]:
    t0 = time.monotonic()
    r = httpx.post(f"{server.url}/hooks/open", json={"x": 1}, timeout=30)
    return r.status_code, dict(r.headers), time.monotonic() - t0


def _ready(server: Server) -> int:
    return httpx.get(f"{server.url}/readyz", timeout=10).status_code


def test_a_lock_held_by_another_process_is_a_timely_503_and_readyz_says_so(
    make_server: Callable[..., Server], project: Path,
) -> None:
    server = make_server(RULES)
    assert _post(server)[0] == 202 and _ready(server) == 200
    holder = sqlite3.connect(project / "data" / "hookrunner.db", timeout=10, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        status, headers, took = _post(server)
        assert status == 503 and headers.get("retry-after") == "5"
        assert took < 9, took  # before a sender's usual 10 s timeout
        assert _ready(server) == 503
    finally:
        holder.execute("COMMIT")
        holder.close()
    deadline = time.monotonic() + 15
    while _post(server)[0] != 202:
        assert time.monotonic() < deadline
    while _ready(server) != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_deleted_data_dir_is_a_503_never_a_202_into_a_lost_file(
    make_server: Callable[..., Server], project: Path,
) -> None:
    server = make_server(RULES)
    assert _post(server)[0] == 202
    shutil.rmtree(project / "data")
    for _ in range(3):
        status, headers, _ = _post(server)
        assert status == 503 and headers.get("retry-after") == "5"
    assert _ready(server) == 503
    assert "was removed" in server.output()
    # Nowhere to save a copy of it: said, and no half copy (the directory is gone too).
    deadline = time.monotonic() + 10
    while "store.database_not_saved" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)
