"""The dispatcher's claim loop in a storm: deliveries pouring in behind a busy key re-claim at
most every CLAIM_GAP, while a freed key is claimed at once. Real SQLite store, real shell
actions, the dispatcher in this process so its claims can be counted."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

from hookrunner.dispatch import CLAIM_GAP, Dispatcher
from hookrunner.metrics import Metrics
from hookrunner.settings import Settings
from hookrunner.store.base import NewDelivery, NewRun
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.store.test_store import status

ids = itertools.count()


class CountingStore(SQLiteStore):
    claims = 0

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        self.claims += 1
        return await super().claim(*args, **kwargs)


async def arrive(store: SQLiteStore, dispatcher: Dispatcher, argv: list[str]) -> str:
    n = next(ids)
    d = NewDelivery(id=f"d-{n}", hook="h", received_at=time.time(), headers=[], body=b"{}",
                    dedup_key=None, event=None, client_ip="", matches=[])
    run = NewRun(id=f"r-{n}", delivery_id=d.id, rule="r", action="shell",
                 spec={"argv": argv}, concurrency_key="k", policy="queue",
                 created_at=time.time())
    await store.accept(d, [run])
    dispatcher.accepted(1)
    return run.id


async def test_a_storm_behind_a_busy_key_is_claimed_at_a_bounded_rate(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path, root=tmp_path, workers=4, node="n1", grace=1.0)
    store = CountingStore(tmp_path / "hookrunner.db")
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    try:
        holder = await arrive(store, dispatcher, ["sleep", "30"])
        while await status(store, holder) != "running":
            await asyncio.sleep(0.01)
        before, started = store.claims, time.monotonic()
        waiting = [await arrive(store, dispatcher, ["true"]) for _ in range(300)]
        elapsed = time.monotonic() - started
        claims = store.claims - before
        # Unpaced, about one claim per two arrivals (150 here); paced, one per CLAIM_GAP.
        assert claims <= elapsed / CLAIM_GAP + 3, (claims, elapsed)
        assert {await status(store, r) for r in waiting} == {"queued"}
        # The holder ends: its key is free, and the queue drains in order.
        await dispatcher.request_cancel(holder)
        for run_id in waiting[:3]:
            deadline = time.monotonic() + 30
            while await status(store, run_id) != "succeeded":
                assert time.monotonic() < deadline, await store.get_run(run_id)
                await asyncio.sleep(0.01)
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()
