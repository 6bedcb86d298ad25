"""Store hiccups against a short --lease: a real SQLite store and real processes, with one
fault injected at a time (a renewal that fails once, a claim that took long to get through).
Neither may cost a healthy run its life: the fence is for outages, not for blips."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from hookrunner.dispatch import Dispatcher
from hookrunner.errors import StoreUnavailable
from hookrunner.metrics import Metrics
from hookrunner.settings import Settings
from hookrunner.store.base import Run
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.test_run_logs import arrive, ended

LEASE = 2.0


class Hiccups(SQLiteStore):
    renew_failures = 0  # the next renewals that fail, as in a store hiccup
    claim_delay = 0.0  # seconds a claim seems to have waited for the store
    renewals = 0

    async def renew(self, node: str, run_ids: Sequence[str], lease: float, now: float) -> set[str]:
        self.renewals += 1
        if self.renew_failures:
            self.renew_failures -= 1
            raise StoreUnavailable("injected hiccup")
        return await super().renew(node, run_ids, lease, now)

    hang: asyncio.Event | None = None  # claims wait for it (a pool with no connection free)

    async def claim(self, node: str, limit: int, lease: float, now: float) -> list[Run]:
        if self.hang is not None:
            await self.hang.wait()
        return await super().claim(node, limit, lease, now - self.claim_delay)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Hiccups, Dispatcher]]:
    settings = Settings(data=tmp_path / "data", root=tmp_path, workers=2, node="n1", grace=1.0,
                        lease=LEASE)
    store = Hiccups(settings.store_url)
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    try:
        yield store, dispatcher
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()


async def test_a_renewal_that_fails_once_is_retried_before_the_fence(
    cluster: tuple[Hiccups, Dispatcher],
) -> None:
    """The fence stops a run lease/3 before its lease expires; a renewal lost to a blip is
    tried again at the next round, well before that (rounds are lease/8 with a short lease)."""
    store, dispatcher = cluster
    store.renew_failures = 1
    run_id = await arrive(store, dispatcher, "sleep 2.5")
    assert await ended(store, run_id) == "succeeded"
    assert store.renew_failures == 0 and store.renewals >= 3


async def test_a_claim_that_waited_long_renews_its_leases_before_starting(
    cluster: tuple[Hiccups, Dispatcher],
) -> None:
    """A claim that got through only after most of a lease (an outage, a full pool) must not
    start an action with a lease the fence would end at once."""
    store, dispatcher = cluster
    store.claim_delay = LEASE * 0.75
    t0 = time.monotonic()
    run_id = await arrive(store, dispatcher, "sleep 1.5")
    assert await ended(store, run_id) == "succeeded"
    assert time.monotonic() - t0 >= 1.5
    run = await store.get_run(run_id)
    assert run is not None and run.reason == ""


async def test_a_claim_that_hangs_does_not_hold_up_the_renewals(
    cluster: tuple[Hiccups, Dispatcher],
) -> None:
    """The queue count waits for a claim (they must not overlap), but only briefly: a claim
    stuck in an outage must not stop the running runs' leases from being renewed."""
    store, dispatcher = cluster
    first = await arrive(store, dispatcher, "sleep 3")
    deadline = time.monotonic() + 10
    while (run := await store.get_run(first)) is None or run.status != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    store.hang = asyncio.Event()
    second = await arrive(store, dispatcher, "true")  # its claim hangs, holding the lock
    try:
        assert await ended(store, first) == "succeeded"
    finally:
        store.hang.set()
    assert await ended(store, second) == "succeeded"
