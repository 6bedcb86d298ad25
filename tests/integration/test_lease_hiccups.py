"""Store hiccups against a short --lease: a real SQLite store and real processes, with one
fault injected at a time (a renewal that fails once, a claim that took long to get through).
Neither may cost a healthy run its life: the fence is for outages, not for blips."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from hookrunner import dispatch
from hookrunner.dispatch import Dispatcher
from hookrunner.errors import StoreUnavailable
from hookrunner.settings import Settings
from hookrunner.store.base import Finish, Run
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.test_run_logs import arrive, dispatching, ended, until, until_running

LEASE = 2.0


class Hiccups(SQLiteStore):
    shared = True  # as PostgreSQL: leases decide, so renewals and the fence are exercised
    renew_failures = 0  # the next renewals that fail, as in a store hiccup
    finish_failures = 0  # the next writes of a run's result that fail
    claim_delay = 0.0  # seconds a claim seems to have waited for the store
    renewals = 0

    async def renew(self, node: str, run_ids: Sequence[str], lease: float, now: float) -> set[str]:
        self.renewals += 1
        if self.renew_failures:
            self.renew_failures -= 1
            raise StoreUnavailable("injected hiccup")
        return await super().renew(node, run_ids, lease, now)

    hang: asyncio.Event | None = None  # claims wait for it (a pool with no connection free)
    identity_fails = False  # the node's lock connection cannot be made (no slot for it)
    identity_hang = 0.0  # seconds the next identity check hangs (a frozen database)
    expired_asks: list[float]  # each test's own (set where it looks)

    async def lock_node(self, node: str) -> bool:
        if self.identity_hang:
            hang, self.identity_hang = self.identity_hang, 0.0
            await asyncio.sleep(hang)
        if self.identity_fails:
            raise StoreUnavailable("injected: remaining connection slots are reserved")
        return await super().lock_node(node)

    reads_hang = 0.0  # seconds the next cancel-requests read waits (the pool's 5 s wait)

    async def cancel_requests(self, node: str) -> dict[str, str | None]:
        if self.reads_hang:
            hang, self.reads_hang = self.reads_hang, 0.0
            await asyncio.sleep(hang)
        return await super().cancel_requests(node)

    async def expired(self, now: float) -> list[Run]:
        if hasattr(self, "expired_asks"):
            self.expired_asks.append(now)
        return await super().expired(now)

    async def finish(self, result: Finish) -> None:
        if self.finish_failures:
            self.finish_failures -= 1
            raise StoreUnavailable("injected: disk full")
        await super().finish(result)

    claim_failures = 0  # the next claims that fail, as in an outage

    async def claim(self, node: str, limit: int, lease: float, now: float) -> list[Run]:
        if self.hang is not None:
            await self.hang.wait()
        if self.claim_failures:
            self.claim_failures -= 1
            raise StoreUnavailable("injected outage")
        return await super().claim(node, limit, lease, now - self.claim_delay)


class OneServer(Hiccups):
    shared = False  # SQLite as it is: one server per file, nobody to hand a run to


@pytest.fixture(params=[Hiccups])
async def cluster(request: pytest.FixtureRequest,
                  tmp_path: Path) -> AsyncIterator[tuple[Hiccups, Dispatcher]]:
    settings = Settings(data=tmp_path / "data", root=tmp_path, workers=2, node="n1", grace=1.0,
                        lease=LEASE)
    store = request.param(settings.store_url)
    async with dispatching(settings, store) as dispatcher:
        yield store, dispatcher


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


async def test_a_read_that_waits_for_a_connection_does_not_hold_up_the_renewals(
    cluster: tuple[Hiccups, Dispatcher],
) -> None:
    """review: after a PostgreSQL restart of 0.3 s, the rounds' other reads waited the pool's
    5 s for a connection, the renewals behind them, and the fence stopped every run of a
    node with --lease 3s. Renewals go on beside them."""
    store, dispatcher = cluster
    run_id = await arrive(store, dispatcher, "sleep 3")
    await until_running(store, run_id)
    store.reads_hang = LEASE * 1.5  # past the fence (lease/3 before expiry), and the lease
    assert await ended(store, run_id) == "succeeded"
    assert store.reads_hang == 0.0  # the hang happened


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
    await until_running(store, first)
    store.hang = asyncio.Event()
    second = await arrive(store, dispatcher, "true")  # its claim hangs, holding the lock
    try:
        assert await ended(store, first) == "succeeded"
    finally:
        store.hang.set()
    assert await ended(store, second) == "succeeded"


async def test_a_run_the_fence_stopped_in_an_outage_is_not_started_again_after_it(
    cluster: tuple[Hiccups, Dispatcher], tmp_path: Path,
) -> None:
    """probe: the fence stopped a run in a store outage, and a claim failed in it. Once the
    store was back the node took that run, still `running` under its lease, for one a lost
    claim reply had left unstarted, and ran it again under the same attempt whatever its
    retry rule said. It is decided at its lease's expiry instead: not retryable, failed."""
    store, dispatcher = cluster
    starts = tmp_path / "starts"
    run_id = await arrive(store, dispatcher, f"echo started >> {starts}; sleep 30")
    await until_running(store, run_id)
    await until(starts.exists)
    store.renew_failures = store.finish_failures = store.claim_failures = 10_000
    # (the claim loop tries every POLL; the fence stops the run lease/3 before expiry)
    await until(lambda: store.claim_failures < 10_000 and run_id not in dispatcher._active)
    store.renew_failures = store.finish_failures = store.claim_failures = 0
    assert await ended(store, run_id) == "failed"
    run = await store.get_run(run_id)
    assert run is not None and run.attempt == 1
    assert run.reason == "interrupted: lease of node n1 expired"
    assert starts.read_text() == "started\n"


@pytest.mark.parametrize("cluster", [OneServer], indirect=True)
async def test_one_server_never_stops_a_run_for_a_lease_it_could_not_renew(
    cluster: tuple[Hiccups, Dispatcher],
) -> None:
    """A full disk or a locked file for longer than the lease: with one server nobody could
    take the run over, so it runs to its end (and is recorded when the store is back)."""
    store, dispatcher = cluster
    store.renew_failures = 1000
    run_id = await arrive(store, dispatcher, "sleep 3")
    assert await ended(store, run_id) == "succeeded"
    run = await store.get_run(run_id)
    assert run is not None and run.attempt == 1 and run.reason == ""


@pytest.mark.parametrize("cluster", [Hiccups, OneServer], indirect=True)
async def test_a_result_is_written_however_long_the_store_refuses_it(
    cluster: tuple[Hiccups, Dispatcher], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The action ended; writing its result keeps failing (disk full) for longer than the
    old give-up: the result is still recorded once the store takes it, never turned into
    an interrupted run that is failed or run again."""
    monkeypatch.setattr(dispatch, "RECORD_RETRY_MAX", 0.1)
    store, dispatcher = cluster
    store.finish_failures = 12
    run_id = await arrive(store, dispatcher, "echo done")
    assert await ended(store, run_id) == "succeeded"
    assert store.finish_failures == 0
    run = await store.get_run(run_id)
    assert run is not None and run.attempt == 1
    assert [a.status for a in await store.attempts(run_id)] == ["succeeded"]


async def test_a_step_of_the_wall_clock_stops_no_run(
    cluster: tuple[Hiccups, Dispatcher], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NTP stepping the clock a minute ahead mid-run: the fence counts on the monotonic
    clock, and a node never takes its own live run for a dead one."""
    store, dispatcher = cluster
    run_id = await arrive(store, dispatcher, "sleep 2")
    await until_running(store, run_id)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 60)
    assert await ended(store, run_id) == "succeeded"
    run = await store.get_run(run_id)
    assert run is not None and run.attempt == 1 and run.reason == ""


async def test_leases_are_renewed_while_the_identity_lock_cannot_be_held(
    cluster: tuple[Hiccups, Dispatcher],
) -> None:
    """PostgreSQL with no connection slot left for the node's own lock: the renewals were
    skipped with it, and the node fenced its own healthy runs after two thirds of a lease."""
    store, dispatcher = cluster
    store.expired_asks = []
    store.identity_fails = True
    run_id = await arrive(store, dispatcher, "sleep 3")
    assert await ended(store, run_id) == "succeeded"
    run = await store.get_run(run_id)
    assert run is not None and run.attempt == 1 and run.reason == ""
    assert store.expired_asks == []  # no takeover while the node cannot say who it is


async def test_a_renewal_held_up_by_a_hung_store_defers_takeovers_by_a_lease(
    cluster: tuple[Hiccups, Dispatcher], capsys: pytest.CaptureFixture[str],
) -> None:
    """A frozen database holds every node's renewals alike: right after it, other nodes'
    leases look expired while their runs are well. No takeover for a lease after a stall."""
    store, _ = cluster
    store.expired_asks = []
    await asyncio.sleep(LEASE * 1.2)  # a lease of good renewals: takeovers are looked for
    assert store.expired_asks
    store.identity_hang = LEASE * 2
    await asyncio.sleep(LEASE * 2 + 0.2)
    resumed = time.time()
    store.expired_asks.clear()
    await asyncio.sleep(LEASE * 0.8)
    assert store.expired_asks == [], "took over right after the stall"
    await asyncio.sleep(LEASE * 0.6)
    assert store.expired_asks and min(store.expired_asks) >= resumed + LEASE * 0.9


async def test_a_pause_of_the_process_shorter_than_the_lease_stops_no_run(
        tmp_path: Path) -> None:
    """SIGSTOP for 8 s under a 15 s lease: on waking, the fence found the last renewal too
    old and stopped healthy runs before the renewal, woken with it, could go through (and
    the runs then ended `failed`). A frozen event loop stands for the frozen process."""
    lease = 6.0  # (renewals every 2 s, the fence at 4 s: a 3 s freeze lands between)
    settings = Settings(data=tmp_path / "data", root=tmp_path, workers=2, node="n1", grace=1.0,
                        lease=lease)
    store = Hiccups(settings.store_url)
    async with dispatching(settings, store) as dispatcher:
        run_id = await arrive(store, dispatcher, "sleep 6")
        await until_running(store, run_id)
        await asyncio.sleep(lease / 3)  # a renewal round or so in, as a pause falls anywhere
        time.sleep(lease / 2)  # frozen: past the fence's lease - lease/3, within the lease
        assert await ended(store, run_id) == "succeeded"
