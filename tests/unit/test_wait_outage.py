"""A `?wait` whose store goes away after the delivery was journaled still answers 202."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import pytest
from starlette.testclient import TestClient

from hookrunner.app import create_app
from hookrunner.dispatch import wait_for_runs
from hookrunner.errors import StoreUnavailable
from hookrunner.settings import Settings
from hookrunner.store import MEMORY_URL

RULES = """
hooks: {open: {verify: none}}
rules:
  - {name: slow, hook: open, run: {shell: {argv: [sleep, "2"]}}}
"""


def test_a_wait_that_loses_the_store_answers_202_not_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL down for the whole wait: the wait's status reads fail, each tried again
    until its end. The delivery is durable, so its sender hears 202 (a 500 made it send it
    again)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    settings = Settings(rules=tmp_path / "rules", root=tmp_path, data=tmp_path / "data",
                        db=MEMORY_URL, workers=1, admin_token="t",
                        environ={"PATH": "/usr/bin:/bin"})
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=True) as client:
        store = app.state.gateway.store

        async def unreachable(run_id: str) -> Any:
            raise StoreUnavailable("PostgreSQL unavailable: couldn't get a connection")

        monkeypatch.setattr(store, "get_run", unreachable)
        r = client.post("/hooks/open?wait=2s", json={})
        assert r.status_code == 202, r.text
        assert len(r.json()["runs"]) == 1


async def test_a_waiter_reads_its_runs_again_only_when_one_of_them_ended() -> None:
    """Every run's end woke every `?wait` waiter to read its runs from the store: 1,500 idle
    waiters kept a core busy. A notice of other runs' ends reads nothing; the poll does."""
    import asyncio

    from hookrunner.dispatch import wait_for_runs

    reads: list[str] = []

    class Counting:
        async def get_run(self, run_id: str) -> None:
            reads.append(run_id)
            return None  # never ends: the wait times out

    finished = asyncio.Condition()
    ended: set[str] = set()
    settings = Settings(environ={})
    waiting = asyncio.create_task(wait_for_runs(
        Counting(), settings, ["mine"], 1.0, finished, poll=0.5,  # type: ignore[arg-type]
        ended=ended.__contains__))
    await asyncio.sleep(0.05)
    assert reads == ["mine"]
    for i in range(50):  # others' ends
        ended.add(f"other-{i}")
        async with finished:
            finished.notify_all()
        await asyncio.sleep(0)
    assert reads == ["mine"]
    ended.add("mine")
    async with finished:
        finished.notify_all()
    await asyncio.sleep(0.05)
    assert reads == ["mine", "mine"]
    assert await waiting is None


def test_a_wait_through_an_outage_ends_at_its_deadline() -> None:
    """Each read of a PostgreSQL that is down waits out the pool's 5 s: a `?wait=6s` went
    on to a second read with a second left, and answered after 12 s."""

    class Down:
        async def get_run(self, run_id: str) -> Any:
            await asyncio.sleep(5.0)
            raise StoreUnavailable("couldn't get a connection")

    async def waited() -> tuple[Any, float]:
        started = time.monotonic()
        got = await wait_for_runs(Down(), cast(Settings, None), ["r1"], 6.0)  # type: ignore[arg-type]
        return got, time.monotonic() - started

    got, took = asyncio.run(waited())
    assert got is None
    assert took < 6.0 + 1.0, took  # (the deadline, and the loop's slack on a busy machine)
