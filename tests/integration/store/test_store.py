"""Every backend keeps the semantics of `hookrunner.store.base`: memory, SQLite, PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from hookrunner.errors import DeliveryGone
from hookrunner.redact import HIDDEN_KEY
from hookrunner.store import open_store, sql
from hookrunner.store.base import KNOWN_CHUNK, LISTED_SPEC, Finish, NewDelivery, NewRun, Store

T0 = 1_000.0
LEASE = 30.0
Reopen = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Reopen]:
    """A factory of opened stores over one backing database (memory: the same object)."""
    opened: list[Store] = []
    if request.param == "memory":
        target = "memory:"
    elif request.param == "sqlite":
        target = str(tmp_path / "data" / "hookrunner.db")
    else:
        target = request.getfixturevalue("postgres_db")
    shared: Store | None = None

    async def make() -> Store:
        nonlocal shared
        if request.param == "memory" and shared is not None:
            return shared
        store = open_store(target)
        await store.open()
        opened.append(store)
        shared = store
        return store

    yield make
    for s in opened:
        await s.close()


@pytest.fixture
async def store(backend: Reopen) -> Store:
    return await backend()


def delivery(hook: str = "gh", key: str | None = None, at: float = T0) -> NewDelivery:
    return NewDelivery(
        id=f"d-{uuid.uuid4().hex[:10]}", hook=hook, received_at=at,
        headers=[("X-Event", "push"), ("X-Sig", "[redacted]")], body=b"\x00{\"a\": 1}\xff",
        dedup_key=key, event="push", client_ip="192.0.2.1", matches=[{"rule": "r", "ok": True}],
        query=[("env", "prod"), ("env", "é b"), ("token", "[redacted]"), ("wait", "")],
        verifier="github",
    )


def new_run(d: NewDelivery, key: str | None = None, policy: str = "queue", at: float = T0,
            **kw: Any) -> NewRun:
    return NewRun(
        id=f"r-{uuid.uuid4().hex[:10]}", delivery_id=d.id, rule="r", action="shell",
        spec=kw.pop("spec", {"argv": ["echo", "hi"]}), concurrency_key=key,
        policy=policy,  # type: ignore[arg-type]
        created_at=at, **kw,
    )


async def enqueue(store: Store, key: str | None = None, policy: str = "queue",
                  at: float = T0, **kw: Any) -> str:
    d = delivery()
    r = new_run(d, key, policy, at, **kw)
    await store.accept(d, [r])
    return r.id


async def claimed(store: Store, node: str = "n1", lease: float = LEASE, at: float = T0,
                  attempts: int = 3) -> NewRun:
    """A retryable run, accepted and claimed by `node` at `at`."""
    d = delivery()
    run = new_run(d, max_attempts=attempts)
    await store.accept(d, [run])
    await store.claim(node, 5, lease, at)
    return run


async def status(store: Store, run_id: str) -> str:
    run = await store.get_run(run_id)
    assert run is not None
    return run.status


async def test_accept_stores_delivery_and_runs(store: Store) -> None:
    """An accepted delivery reads back byte for byte, with its queued runs."""
    d = delivery(key="k1")
    runs = [new_run(d), new_run(d, timeout=5.0, max_attempts=3, retry_on=("failed",))]
    result = await store.accept(d, runs)
    assert (result.delivery_id, result.duplicate) == (d.id, False)
    assert result.run_ids == [r.id for r in runs]
    got = await store.get_delivery(d.id)
    assert got is not None
    assert (got.body, got.headers, got.matches) == (d.body, d.headers, d.matches)
    assert got.query == d.query  # in order, repeats kept
    assert got.verifier == "github"  # the one that checked it, whatever the hook has now
    assert got.run_ids == result.run_ids
    run = await store.get_run(runs[1].id)
    assert run is not None
    assert (run.status, run.attempt, run.hook, run.spec) == ("queued", 0, "gh", runs[1].spec)
    assert (run.timeout, run.max_attempts, run.retry_on) == (5.0, 3, ("failed",))
    assert await store.get_run("nope") is None
    assert [x.id for x in await store.list_deliveries(hook="gh")] == [d.id]
    assert await store.list_deliveries(hook="other") == []


async def test_dedup_returns_the_original_delivery(store: Store) -> None:
    """A second delivery with the same (hook, key) writes nothing and names the first."""
    first = delivery(key="k")
    r1 = new_run(first)
    await store.accept(first, [r1])
    again = delivery(key="k")
    result = await store.accept(again, [new_run(again)])
    assert (result.delivery_id, result.duplicate, result.run_ids) == (first.id, True, [r1.id])
    assert await store.get_delivery(again.id) is None
    other_hook = delivery(hook="gl", key="k")
    assert not (await store.accept(other_hook, [])).duplicate
    assert not (await store.accept(delivery(key=None), [])).duplicate
    assert not (await store.accept(delivery(key=None), [])).duplicate
    assert (await store.counts())["queued"] == 1


async def test_dedup_survives_a_restart(backend: Reopen) -> None:
    """A delivery id seen before a restart is still a duplicate after it."""
    store = await backend()
    first = delivery(key="k")
    await store.accept(first, [])
    await store.close()
    store = await backend()
    result = await store.accept(delivery(key="k"), [])
    assert (result.delivery_id, result.duplicate) == (first.id, True)


async def test_group_commit_under_concurrent_accepts(store: Store) -> None:
    """200 concurrent accepts all commit, one row each; SQLite shares transactions."""
    before = getattr(store, "commits", None)
    pairs = [(d, new_run(d)) for d in (delivery(key=f"k{i}") for i in range(200))]
    results = await asyncio.gather(*(store.accept(d, [r]) for d, r in pairs))
    assert not any(r.duplicate for r in results)
    assert (await store.counts())["queued"] == 200
    assert len(await store.list_deliveries(limit=1000)) == 200
    if before is not None:
        assert getattr(store, "commits") - before < 200  # noqa: B009 - backend-specific


async def test_dedup_inside_one_batch(store: Store) -> None:
    """Identical keys accepted at once: exactly one is new, all name the same delivery."""
    ds = [delivery(key="same") for _ in range(30)]
    results = await asyncio.gather(*(store.accept(d, [new_run(d)]) for d in ds))
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.delivery_id for r in results}) == 1
    assert (await store.counts())["queued"] == 1


async def test_claim_order_limit_and_due_time(store: Store) -> None:
    """Claims take due runs in arrival order, at most `limit`, and record an attempt."""
    ids = [await enqueue(store) for _ in range(3)]
    later = await enqueue(store, at=T0 + 100)
    claimed = await store.claim("n1", 2, LEASE, T0 + 1)
    assert [r.id for r in claimed] == ids[:2]
    c = claimed[0]
    assert (c.status, c.attempt, c.lease_owner, c.lease_expires) == ("running", 1, "n1",
                                                                     T0 + 1 + LEASE)
    assert [r.id for r in await store.claim("n2", 5, LEASE, T0 + 1)] == ids[2:]
    assert await store.claim("n2", 5, LEASE, T0 + 1) == []
    assert await store.next_due() == T0 + 100
    assert [r.id for r in await store.claim("n2", 5, LEASE, T0 + 100)] == [later]
    attempts = await store.attempts(ids[0])
    assert [(a.attempt, a.node, a.status, a.started_at) for a in attempts] == [
        (1, "n1", "running", T0 + 1)]
    # Shared (PostgreSQL): a starting node recovers its own runs. Not shared (SQLite, one
    # server per database): every run left running, whatever node name it ran under.
    assert {r.id for r in await store.release_node("n1")} == (
        set(ids[:2]) if store.shared else {*ids, later})


async def finish(store: Store, run_id: str, node: str = "n1", outcome: str = "succeeded",
                 at: float = T0 + 5, retry_at: float | None = None,
                 log: str | None = None) -> None:
    await store.finish(Finish(run_id=run_id, node=node, outcome=outcome, exit_code=0,
                              reason="", outputs={"x": 1}, finished_at=at, retry_at=retry_at,
                              log=log))


async def test_a_finish_says_whether_it_decided_the_run(store: Store) -> None:
    """Nodes that each saw a dead node's lease expire each ended its run: the record held the
    first's, but each counted it in its metric and logged it (twice the failures)."""
    for retry_at in (None, T0 + 50):
        run = await claimed(store, "dead")
        ended = Finish(run_id=run.id, node="dead", outcome="failed", exit_code=None,
                       reason="interrupted", outputs={}, finished_at=T0 + 20,
                       retry_at=retry_at, attempt=1)
        assert await store.finish(ended) is True
        assert await store.finish(ended) is False  # decided already, by another node
        assert await status(store, run.id) == ("failed" if retry_at is None else "queued")


async def test_queue_runs_one_at_a_time_in_order(store: Store) -> None:
    """queue: the second run of a key waits until the first finished."""
    a, b = await enqueue(store, "k"), await enqueue(store, "k")
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0)] == [a]
    assert await store.claim("n2", 5, LEASE, T0) == []  # the key holds across nodes
    await finish(store, a)
    assert [r.id for r in await store.claim("n2", 5, LEASE, T0 + 6)] == [b]


async def test_a_long_backlog_on_one_key_does_not_hide_other_keys(store: Store) -> None:
    """Claims read a few runs per key: 600 waiting behind a busy key never starve key B."""
    first = await enqueue(store, "a")
    assert [r.id for r in await store.claim("n1", 1, LEASE, T0)] == [first]
    d = delivery()
    await store.accept(d, [new_run(d, "a") for _ in range(600)])
    b = await enqueue(store, "b")
    assert [r.id for r in await store.claim("n1", 7, LEASE, T0)] == [b]


async def test_a_busy_keys_policy_is_its_newest_due_runs_even_behind_a_queue(store: Store) -> None:
    """A busy `queue` key's waiting runs are not even read by a claim, but a newer run of
    another policy makes the key that policy's at once; one still waiting out a retry
    backoff (not due) does not."""
    first = await enqueue(store, "k")
    await store.claim("n1", 1, LEASE, T0)
    queued = [await enqueue(store, "k") for _ in range(3)]
    assert await store.claim("n1", 5, LEASE, T0) == []
    assert {await status(store, r) for r in queued} == {"queued"}
    await enqueue(store, "k", "coalesce", at=T0 + 100)  # not due yet: the key stays `queue`
    assert await store.claim("n1", 5, LEASE, T0) == []
    assert {await status(store, r) for r in queued} == {"queued"}
    newest = await enqueue(store, "k", "coalesce")
    assert await store.claim("n1", 5, LEASE, T0) == []
    assert {await status(store, r) for r in queued} == {"skipped"}
    await finish(store, first)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 1)] == [newest]


@pytest.mark.parametrize("policy", ["coalesce", "replace"])
async def test_a_long_wait_list_still_runs_only_the_newest(store: Store, policy: str) -> None:
    """coalesce/replace: 50 runs waiting behind a busy key: only the newest ever runs."""
    first = await enqueue(store, "k", policy)
    await store.claim("n1", 1, LEASE, T0)
    d = delivery()
    waiting = [new_run(d, "k", policy) for _ in range(50)]
    await store.accept(d, waiting)
    ran = []
    for i in range(4):
        await finish(store, first if i == 0 else ran[-1])
        ran += [r.id for r in await store.claim("n1", 5, LEASE, T0 + i + 1)]
        if not ran:
            break
    assert ran == [waiting[-1].id]
    assert {await status(store, r.id) for r in waiting[:-1]} == {"skipped"}


async def test_skip_drops_new_runs_while_one_runs(store: Store) -> None:
    """skip: a run arriving while its key runs ends skipped, naming the running run."""
    a = await enqueue(store, "k", "skip")
    await store.claim("n1", 5, LEASE, T0)
    b = await enqueue(store, "k", "skip")
    claimed = await store.claim("n1", 5, LEASE, T0)
    assert claimed == []
    run = await store.get_run(b)
    assert run is not None
    assert (run.status, run.reason) == ("skipped", f"skipped: run {a} was running")
    # Told to the dispatcher, which logs the end of a run that never starts.
    assert [(r.id, r.reason) for r in claimed.skipped] == [(b, f"skipped: run {a} was running")]


async def test_a_skip_run_behind_a_newer_queue_run_is_skipped_while_its_key_runs(
        store: Store) -> None:
    """A key's newest waiting run is `queue`, so the key has nothing to decide while it
    runs, except a new `skip` run that came before it: that one ends `skipped` now, rather
    than waiting and then running ahead of the older queued work (as the memory store did)."""
    a1 = await enqueue(store, "k", "queue")
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0)] == [a1]
    d = delivery()
    # (Behind a backlog deeper than the runs a claim reads of a `queue` key, too: review.)
    ahead = [new_run(d, "k", "queue") for _ in range(25)]
    b1, a2 = new_run(d, "k", "skip"), new_run(d, "k", "queue")
    await store.accept(d, [*ahead, b1, a2])
    claimed = await store.claim("n1", 5, LEASE, T0)
    assert claimed == []
    assert [(r.id, r.reason) for r in claimed.skipped] == [(b1.id, f"skipped: run {a1} was running")]
    d2 = delivery()
    b2 = new_run(d2, "k", "skip")
    await store.accept(d2, [b2, new_run(d2, "k", "queue")])
    assert [r.id for r in (await store.claim("n1", 5, LEASE, T0)).skipped] == [b2.id]
    await finish(store, a1)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 1)] == [ahead[0].id]


async def test_replace_cancels_the_running_run(store: Store) -> None:
    """replace: the running run is asked to cancel; the newest waiting run runs after it."""
    a = await enqueue(store, "k", "replace")
    await store.claim("n1", 5, LEASE, T0)
    b, c = await enqueue(store, "k", "replace"), await enqueue(store, "k", "replace")
    assert await store.claim("n2", 5, LEASE, T0) == []
    assert await store.cancel_requests("n1") == {a: c}  # replaced by the newest waiting run
    run_a = await store.get_run(a)
    assert run_a is not None and run_a.superseded_by == c
    await store.request_cancel(a, T0 + 1)  # a cancel request later keeps what replaced it
    assert await store.cancel_requests("n1") == {a: c}
    run_b = await store.get_run(b)
    assert run_b is not None
    assert (run_b.status, run_b.superseded_by) == ("skipped", c)
    await finish(store, a, outcome="canceled")
    assert [r.id for r in await store.claim("n2", 5, LEASE, T0 + 6)] == [c]
    run_a = await store.get_run(a)
    assert run_a is not None and (run_a.status, run_a.superseded_by) == ("canceled", c)


@pytest.mark.parametrize("policy", ["coalesce", "replace"])
async def test_runs_skipped_in_a_burst_name_the_run_that_ran_not_a_chain(
    store: Store, policy: str,
) -> None:
    """Arrivals in several claims while one run holds the key: each claim skips the waiting
    runs for its newest, which the next claim skips in turn. Every skipped run (and the
    replaced one) ends naming the run that ran, as does its reason."""
    first = await enqueue(store, "k", policy)
    await store.claim("n1", 5, LEASE, T0)
    skipped_ids: list[str] = []
    for wave in range(3):
        skipped_ids += [await enqueue(store, "k", policy) for _ in range(3)]
        assert await store.claim("n1", 5, LEASE, T0 + wave) == []
    last = await enqueue(store, "k", policy)
    await finish(store, first, outcome="canceled" if policy == "replace" else "succeeded")
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 6)] == [last]
    for run_id in skipped_ids:
        run = await store.get_run(run_id)
        assert run is not None
        assert (run.status, run.superseded_by, run.reason) == (
            "skipped", last, f"skipped: superseded by run {last}"), run_id
    if policy == "replace":
        run = await store.get_run(first)
        assert run is not None and (run.status, run.superseded_by) == ("canceled", last)


async def test_a_replaced_run_names_its_newest_replacer_even_one_after_the_dispatcher_looked(
    store: Store,
) -> None:
    """The dispatcher reads whom the replaced run's cancel came from, then writes its result;
    a newer arrival meanwhile replaces that replacer (a cluster's other node claims it). The
    result names the run `superseded_by` holds at the write, in the run and its attempt."""
    first = await enqueue(store, "k", "replace")
    await store.claim("n1", 5, LEASE, T0)
    second = await enqueue(store, "k", "replace")
    assert await store.claim("n2", 5, LEASE, T0 + 1) == []  # flags `first`, replaced by `second`
    seen = (await store.get_run(first)).superseded_by  # type: ignore[union-attr]
    assert seen == second
    third = await enqueue(store, "k", "replace")
    assert await store.claim("n2", 5, LEASE, T0 + 2) == []  # `second` skipped, `first` by `third`
    reason = f"canceled: replaced by run {seen}; log incomplete: No space left on device"
    await store.finish(Finish(run_id=first, node="n1", outcome="canceled", exit_code=None,
                              reason=reason, outputs={}, finished_at=T0 + 3, replaced_by=seen))
    run = await store.get_run(first)
    assert run is not None and (run.status, run.superseded_by) == ("canceled", third)
    assert run.reason == f"canceled: replaced by run {third}; log incomplete: No space left on device"
    (attempt,) = await store.attempts(first)
    assert attempt.reason == run.reason
    assert [r.id for r in await store.claim("n2", 5, LEASE, T0 + 4)] == [third]


async def test_a_run_waiting_for_its_retry_names_the_run_that_ran_after_a_burst(
    store: Store,
) -> None:
    """Superseded while it waited for its retry, by a run that was superseded in turn."""
    old = await enqueue(store, "k", "coalesce", max_attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    await finish(store, old, outcome="failed", at=T0 + 1, retry_at=T0 + 100)
    # Nothing runs between attempts: a new skip run takes the key (a queue one would wait).
    holder = await enqueue(store, "k", "skip")
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 2)] == [holder]
    interim = await enqueue(store, "k", "coalesce")
    assert await store.claim("n1", 5, LEASE, T0 + 3) == []
    assert (await store.get_run(old)).superseded_by == interim  # type: ignore[union-attr]
    last = await enqueue(store, "k", "coalesce")
    assert await store.claim("n1", 5, LEASE, T0 + 4) == []
    await finish(store, holder, at=T0 + 5)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 6)] == [last]
    for run_id in (old, interim):
        run = await store.get_run(run_id)
        assert run is not None
        assert (run.status, run.superseded_by, run.reason) == (
            "skipped", last, f"skipped: superseded by run {last}"), run_id


async def test_a_replaced_run_that_finished_first_names_no_replacement(store: Store) -> None:
    """The cancel came too late: it succeeded, and says nothing about being replaced."""
    a = await enqueue(store, "k", "replace")
    await store.claim("n1", 5, LEASE, T0)
    await enqueue(store, "k", "replace")
    await store.claim("n2", 5, LEASE, T0)
    await finish(store, a, outcome="succeeded")
    run_a = await store.get_run(a)
    assert run_a is not None and (run_a.status, run_a.superseded_by) == ("succeeded", None)


async def test_coalesce_runs_only_the_newest_waiting(store: Store) -> None:
    """coalesce: the running run finishes, then only the newest waiting run runs."""
    a = await enqueue(store, "k", "coalesce")
    await store.claim("n1", 5, LEASE, T0)
    b, c = await enqueue(store, "k", "coalesce"), await enqueue(store, "k", "coalesce")
    assert await store.claim("n1", 5, LEASE, T0) == []
    assert await store.cancel_requests("n1") == {}
    await finish(store, a)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 6)] == [c]
    run_b = await store.get_run(b)
    assert run_b is not None
    assert (run_b.status, run_b.superseded_by) == ("skipped", c)


@pytest.mark.parametrize("policy", ["replace", "coalesce"])
async def test_a_newer_run_supersedes_an_older_one_waiting_for_its_retry(
    store: Store, policy: str
) -> None:
    """The older run failed and waits out its backoff when the newer one arrives: it is
    skipped, superseded by the newer run, and never runs after it (nor cancels it)."""
    old = await enqueue(store, "k", policy, max_attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    await finish(store, old, outcome="failed", at=T0 + 1, retry_at=T0 + 20)
    new = await enqueue(store, "k", policy, at=T0 + 2)
    claimed = await store.claim("n1", 5, LEASE, T0 + 2)
    assert [r.id for r in claimed] == [new]
    run_old = await store.get_run(old)
    assert run_old is not None
    assert (run_old.status, run_old.superseded_by) == ("skipped", new)
    assert run_old.reason == f"skipped: superseded by run {new}"
    assert [(r.id, r.attempt, r.reason) for r in claimed.skipped] == [
        (old, 1, f"skipped: superseded by run {new}")]  # for the dispatcher's log line
    assert await store.claim("n1", 5, LEASE, T0 + 30) == []  # its retry time: nothing
    assert await store.cancel_requests("n1") == {}


async def test_a_queue_key_waits_for_an_older_run_waiting_for_its_retry(store: Store) -> None:
    """`queue` is in order: a run waiting for its retry keeps its place, and the key's later
    runs (more than a claim reads of a key) wait until it has ended; other keys do not."""
    old = await enqueue(store, "k", "queue", max_attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    await finish(store, old, outcome="failed", at=T0 + 1, retry_at=T0 + 20)
    new = [await enqueue(store, "k", "queue", at=T0 + 2) for _ in range(25)]
    other = await enqueue(store, "other", "queue", at=T0 + 2)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 2)] == [other]
    assert await store.claim("n1", 5, LEASE, T0 + 3) == []
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 30)] == [old]
    await finish(store, old, outcome="failed", at=T0 + 31, retry_at=T0 + 40)
    assert await store.claim("n1", 5, LEASE, T0 + 32) == []  # its third attempt: still first
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 40)] == [old]
    await finish(store, old, at=T0 + 41)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 41)] == new[:1]


async def test_a_canceled_retry_frees_its_queue_key_at_once(store: Store) -> None:
    old = await enqueue(store, "k", "queue", max_attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    await finish(store, old, outcome="failed", at=T0 + 1, retry_at=T0 + 20)
    new = await enqueue(store, "k", "queue", at=T0 + 2)
    assert await store.claim("n1", 5, LEASE, T0 + 2) == []
    assert await store.request_cancel(old, T0 + 3) == "canceled"
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 3)] == [new]


async def test_a_new_skip_run_does_not_wait_for_a_retry_of_its_key(store: Store) -> None:
    """A new `skip` run decides only for itself: the key runs nothing, so it runs, ahead of
    an older run's retry (which then waits for it) and of the `queue` runs after it."""
    old = await enqueue(store, "k", "queue", max_attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    await finish(store, old, outcome="failed", at=T0 + 1, retry_at=T0 + 20)
    skip = await enqueue(store, "k", "skip", at=T0 + 2)
    queued = await enqueue(store, "k", "queue", at=T0 + 2)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 2)] == [skip]
    await finish(store, skip, at=T0 + 3)
    assert await store.claim("n1", 5, LEASE, T0 + 3) == []  # behind the retry
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 20)] == [old]
    await finish(store, old, at=T0 + 21)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 21)] == [queued]


async def test_a_run_asked_to_cancel_is_not_retried(store: Store) -> None:
    """The cancel was asked for, but the attempt ended (failed, or its node died) before the
    server stopped it: it ends canceled, and no further attempt starts."""
    a = await enqueue(store, max_attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    assert await store.request_cancel(a, T0 + 1) == "running"
    await finish(store, a, outcome="failed", at=T0 + 2, retry_at=T0 + 3)
    run = await store.get_run(a)
    assert run is not None and run.status == "canceled", run
    assert run.reason == ("canceled by request (not retried: its attempt ended, or was being "
                          "stopped, or its node stopped, as the cancel came)")
    assert run.finished_at == T0 + 2
    attempts = await store.attempts(a)
    assert [(x.attempt, x.status) for x in attempts] == [(1, "failed")]
    assert await store.claim("n1", 5, LEASE, T0 + 10) == []


async def test_a_replaced_run_whose_attempt_failed_is_not_retried(store: Store) -> None:
    a = await enqueue(store, "k", "replace", max_attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    c = await enqueue(store, "k", "replace")
    await store.claim("n1", 5, LEASE, T0)
    assert await store.cancel_requests("n1") == {a: c}
    await finish(store, a, outcome="failed", at=T0 + 2, retry_at=T0 + 3)
    run_a = await store.get_run(a)
    assert run_a is not None
    assert (run_a.status, run_a.reason) == ("canceled", f"canceled: replaced by run {c}")
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 10)] == [c]


async def test_lease_renew_and_expiry(store: Store) -> None:
    """Only the owner renews; a lease not renewed in time shows up as expired."""
    a, b = await enqueue(store), await enqueue(store)
    await store.claim("n1", 2, LEASE, T0)
    assert await store.renew("n1", [a], LEASE, T0 + 20) == {a}
    assert await store.renew("n2", [b], LEASE, T0 + 20) == set()
    assert await store.expired(T0 + 29) == []
    assert [r.id for r in await store.expired(T0 + 31)] == [b]
    assert {r.id for r in await store.expired(T0 + 51)} == {a, b}


async def test_finish_with_retry_requeues_for_the_next_attempt(store: Store) -> None:
    """A retry goes back to queued at retry_at and its next claim is attempt 2."""
    a = await enqueue(store, max_attempts=2)
    await store.claim("n1", 1, LEASE, T0)
    await finish(store, a, outcome="failed", retry_at=T0 + 60)
    run = await store.get_run(a)
    assert run is not None
    assert (run.status, run.next_attempt_at, run.attempt) == ("queued", T0 + 60, 1)
    assert await store.claim("n1", 1, LEASE, T0 + 30) == []
    again = await store.claim("n2", 1, LEASE, T0 + 60)
    assert [(r.id, r.attempt) for r in again] == [(a, 2)]
    await finish(store, a, node="n2", at=T0 + 61)
    done = await store.get_run(a)
    assert done is not None
    assert (done.status, done.finished_at, done.outputs) == ("succeeded", T0 + 61, {"x": 1})
    assert [(x.attempt, x.node, x.status) for x in await store.attempts(a)] == [
        (1, "n1", "failed"), (2, "n2", "succeeded")]


async def test_a_node_that_lost_its_lease_cannot_finish(store: Store) -> None:
    """After another node re-ran an expired run, the old node's late finish changes nothing."""
    a = await enqueue(store, max_attempts=2)
    await store.claim("n1", 1, LEASE, T0)
    (dead,) = await store.expired(T0 + 31)
    await finish(store, a, node="n1", outcome="failed", retry_at=T0 + 31)  # the decider
    await store.claim("n2", 1, LEASE, T0 + 31)
    await finish(store, a, node="n1", outcome="failed")  # late, from the dead node
    assert await status(store, a) == "running"
    assert dead.lease_owner == "n1"


async def test_request_cancel(store: Store) -> None:
    """Queued: canceled at once. Running: flagged for its node. Unknown: None."""
    a, b = await enqueue(store), await enqueue(store, at=T0 + 10)
    await store.claim("n1", 1, LEASE, T0)
    assert await store.request_cancel(b, T0 + 1) == "canceled"
    assert await status(store, b) == "canceled"
    assert await store.request_cancel(a, T0 + 1) == "running"
    assert await store.cancel_requests("n1") == {a: None}  # requested, not replaced
    assert await store.cancel_requests("n2") == {}
    assert await store.request_cancel("nope", T0) is None


async def test_a_cancel_between_attempts_says_so(store: Store) -> None:
    """A run waiting for its retry did run: "before it started" would be wrong."""
    a = await enqueue(store, max_attempts=3)
    b = await enqueue(store)
    await store.claim("n1", 2, LEASE, T0)
    await finish(store, a, outcome="failed", retry_at=T0 + 60)
    assert await store.request_cancel(a, T0 + 1) == "canceled"
    run = await store.get_run(a)
    assert run is not None and run.reason == "canceled while waiting for its next attempt"
    await finish(store, b)
    c = await enqueue(store, at=T0 + 100)
    assert await store.request_cancel(c, T0 + 2) == "canceled"
    run = await store.get_run(c)
    assert run is not None and run.reason == "canceled before it started"


async def test_logs_are_stored_per_attempt_with_its_finish(store: Store) -> None:
    """An attempt's log is saved with its finish, by its own node only, and reads back on any
    node; a finish without a log (an interrupted run) leaves the stored one alone."""
    a = await enqueue(store, max_attempts=2)
    await store.claim("n1", 1, LEASE, T0)
    assert await store.get_log(a, 1) is None
    await finish(store, a, outcome="failed", retry_at=T0 + 10, log="hello\nworld\n")
    assert await store.get_log(a, 1) == "hello\nworld\n"
    assert await store.get_log(a, 2) is None
    await store.claim("n2", 1, LEASE, T0 + 10)
    await finish(store, a, node="n1", log="late, from the old node")  # not its attempt
    assert await store.get_log(a, 2) is None
    await finish(store, a, node="n2", log=None)
    assert await store.get_log(a, 2) is None
    assert await store.get_log(a, 1) == "hello\nworld\n"


async def test_a_saved_log_is_measured_and_its_head_read_in_the_store(store: Store) -> None:
    """What serves a large log without holding it whole: its length in characters, and its
    first characters (a page's worth) with whether more follow."""
    a = await enqueue(store)
    await store.claim("n1", 1, LEASE, T0)
    assert await store.log_length(a, 1) is None and await store.get_log_head(a, 1, 4) is None
    log = "héllo\n✓ done\n"
    await finish(store, a, log=log)
    assert await store.log_length(a, 1) == len(log)
    assert await store.get_log_head(a, 1, 4) == ("héll", True)
    assert await store.get_log_head(a, 1, len(log)) == (log, False)
    assert await store.log_length(a, 2) is None and await store.get_log_head(a, 2, 4) is None


async def test_a_rendered_action_comes_back_as_it_was_written(store: Store) -> None:
    """PostgreSQL's JSONB sorted an object's keys and read numbers as numerics (1e16 came
    back as 10000000000000000, -0.0 as 0.0): the action got other JSON than was rendered."""
    spec = {"url": "https://h/x", "json": {"zeta": [1, 2], "u": "é", "alpha": 1e16,
                                          "neg": -0.0, "huge": 1.7976931348623157e308,
                                          "lit": {"b": 1, "a": 2}}}
    run_id = await enqueue(store, spec=spec)
    claimed_runs = await store.claim("n1", 1, LEASE, T0)
    assert [json.dumps(r.spec) for r in claimed_runs] == [json.dumps(spec)]
    stored = await store.get_run(run_id)
    assert stored is not None and json.dumps(stored.spec) == json.dumps(spec)
    await finish(store, run_id)  # and as the record of how it ran, once it ended
    ended = await store.get_run(run_id)
    assert ended is not None and ended.status == "succeeded"
    assert json.dumps(ended.spec) == json.dumps(spec)


async def test_counts_next_due_and_list_runs(store: Store) -> None:
    """Counts cover every status; list_runs filters and returns the newest first."""
    assert await store.next_due() is None
    a, b = await enqueue(store), await enqueue(store, at=T0 + 5)
    await store.claim("n1", 1, LEASE, T0)
    counts = await store.counts()
    assert (counts["queued"], counts["running"], counts["failed"]) == (1, 1, 0)
    assert await store.next_due() == T0 + 5
    assert [r.id for r in await store.list_runs()] == [b, a]
    assert [r.id for r in await store.list_runs(status="running")] == [a]
    assert [r.id for r in await store.list_runs(limit=1)] == [b]
    assert await store.list_runs(rule="other") == []


async def test_listings_page_with_a_cursor_through_ties_and_filters(store: Store) -> None:
    """`before` (the last id of a page) lists what comes after it, newest first, every item
    once, deliveries received at the same instant included; a cursor no longer stored (or
    never) lists nothing."""
    ds = [delivery(hook="gh" if i % 3 else "gl", at=T0 + i // 2) for i in range(9)]
    for d in ds:
        await store.accept(d, [new_run(d)])
    whole = [d.id for d in await store.list_deliveries(limit=100)]
    assert len(whole) == 9
    paged: list[str] = []
    before = None
    while page := await store.list_deliveries(limit=2, before=before):
        paged += [d.id for d in page]
        before = page[-1].id
    assert paged == whole
    gh = [d.id for d in await store.list_deliveries(hook="gh", limit=100)]
    assert [d.id for d in await store.list_deliveries(hook="gh", limit=100, before=gh[1])] == gh[2:]
    runs = [r.id for r in await store.list_runs(limit=100)]
    assert [r.id for r in await store.list_runs(limit=3, before=runs[2])] == runs[3:6]
    assert [r.id for r in await store.list_runs(rule="r", limit=100, before=runs[7])] == runs[8:]
    assert await store.list_deliveries(before="d-none") == []
    assert await store.list_runs(before="r-none") == []


@pytest.mark.parametrize("hidden_key", [True, False])
async def test_a_listing_carries_a_large_action_as_its_size_only(
    store: Store, hidden_key: bool,
) -> None:
    """An action forwarding a whole payload made each listing megabytes (and the server's
    memory with it); the run itself still has it whole."""
    d = delivery()
    big_spec = {"url": "http://x/", "json": {"all": "é" * LISTED_SPEC}, HIDDEN_KEY: hidden_key}
    big = dataclasses.replace(new_run(d, "k"), spec=big_spec)
    small = new_run(d)
    await store.accept(d, [big, small])
    listed = {r.id: r for r in await store.list_runs()}
    size = listed[big.id].spec["omitted_bytes"]
    assert size > LISTED_SPEC and listed[big.id].spec == {"omitted_bytes": size,
                                                          HIDDEN_KEY: hidden_key}
    assert listed[big.id].concurrency_key == "k" and listed[big.id].status == "queued"
    assert listed[small.id].spec == {"argv": ["echo", "hi"]}
    whole = await store.get_run(big.id)
    assert whole is not None and whole.spec == big_spec


async def test_prune_deletes_only_finished_deliveries(store: Store) -> None:
    """Prune removes deliveries whose runs all ended before the cut, and frees their key."""
    d_old = delivery(key="old")
    r_old = new_run(d_old)
    await store.accept(d_old, [r_old])
    active = await enqueue(store)
    await store.claim("n1", 1, LEASE, T0)  # claims r_old (first in order)
    await finish(store, r_old.id, at=T0 + 5)
    assert await store.prune(T0 + 5) == 0
    assert await store.prune(T0 + 10) == 1
    assert await store.get_delivery(d_old.id) is None
    assert await store.get_run(r_old.id) is None
    assert await status(store, active) == "queued"
    assert not (await store.accept(delivery(key="old"), [])).duplicate
    # What retention asks before it removes run dirs: the pruned run is no longer known.
    assert await store.known_runs([r_old.id, active, "run_never"]) == {active}


async def test_known_runs_goes_past_one_query(store: Store) -> None:
    d = delivery()
    runs = [new_run(d) for _ in range(KNOWN_CHUNK + 3)]
    await store.accept(d, runs)
    ids = [r.id for r in runs]
    assert await store.known_runs([*ids, "run_gone"]) == set(ids)
    assert await store.known_runs([]) == set()


async def test_prune_removes_a_history_longer_than_one_chunk(store: Store) -> None:
    """Pruning goes in chunks (short transactions) but removes everything that is due."""
    for _ in range(450):
        await store.accept(delivery(at=T0), [])
    keep = delivery(at=T0 + 100)
    await store.accept(keep, [])
    assert await store.prune(T0 + 50) == 450
    assert [d.id for d in await store.list_deliveries(limit=10)] == [keep.id]


async def test_wait_for_work_wakes_on_accept(store: Store) -> None:
    """A waiting dispatcher wakes when a run is queued, and times out otherwise."""
    while await store.wait_for_work(0.3):
        pass  # PostgreSQL wakes once when its LISTEN connection is (re)established
    assert await store.wait_for_work(0.05) is False
    waiter = asyncio.create_task(store.wait_for_work(5))
    await asyncio.sleep(0.05)
    await enqueue(store)
    assert await asyncio.wait_for(waiter, 5) is True
    assert await store.ping() is True


async def test_queued_is_the_queued_count_of_counts(store: Store) -> None:
    """What --max-queued reads twice a second: an index lookup, the same number as counts()."""
    await enqueue(store)
    await enqueue(store)
    await enqueue(store, at=T0 + 100)  # waiting for a retry time is still queued
    await store.claim("n1", 1, LEASE, T0)
    assert await store.queued() == (await store.counts())["queued"] == 2


async def test_ids_and_filters_with_a_nul_find_nothing(store: Store) -> None:
    """From a URL (`/runs/a%00b`, `?hook=%00`): PostgreSQL text cannot hold NUL, and the
    driver's refusal was a 500 with a traceback; every store answers "no such thing"."""
    await enqueue(store)
    assert await store.get_run("a\x00b") is None
    assert await store.get_delivery("a\x00b") is None
    assert await store.attempts("a\x00b") == []
    assert await store.get_log("a\x00b", 1) is None
    assert await store.request_cancel("a\x00b", T0) is None
    assert await store.list_runs(rule="\x00") == []
    assert await store.list_runs(delivery_id="x\x00") == []
    assert await store.list_deliveries(hook="\x00") == []


async def test_a_new_attempt_does_not_show_the_last_ones_reason(store: Store) -> None:
    """`running, attempt 2 (exit 1)` read as a failure of the attempt under way."""
    a = await enqueue(store, max_attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    await store.finish(Finish(run_id=a, node="n1", outcome="failed", exit_code=1,
                              reason="exit 1", outputs={}, finished_at=T0 + 1, retry_at=T0 + 2))
    (run,) = await store.claim("n1", 5, LEASE, T0 + 3)
    assert (run.attempt, run.reason) == (2, "")
    stored = await store.get_run(a)
    assert stored is not None and (stored.status, stored.reason) == ("running", "")
    assert [x.reason for x in await store.attempts(a)] == ["exit 1", ""]


async def test_a_run_being_replaced_names_the_newest_replacement(store: Store) -> None:
    """b replaced a, then c superseded b before a had stopped: a names c, the run that runs."""
    a = await enqueue(store, "k", "replace")
    await store.claim("n1", 5, LEASE, T0)
    b = await enqueue(store, "k", "replace")
    await store.claim("n1", 5, LEASE, T0)
    assert await store.cancel_requests("n1") == {a: b}
    c = await enqueue(store, "k", "replace")
    await store.claim("n1", 5, LEASE, T0)
    assert await store.cancel_requests("n1") == {a: c}
    run_b = await store.get_run(b)
    assert run_b is not None and (run_b.status, run_b.superseded_by) == ("skipped", c)


async def test_a_finish_sent_again_does_not_end_the_next_attempt(store: Store) -> None:
    """Its first commit went through, but its answer was lost (a dropped connection): the
    dispatcher sends it again, after the run was claimed for its next attempt."""
    a = await enqueue(store, max_attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    first = Finish(run_id=a, node="n1", outcome="failed", exit_code=1, reason="exit 1",
                   outputs={}, finished_at=T0 + 1, retry_at=T0 + 1, attempt=1)
    await store.finish(first)
    (run,) = await store.claim("n1", 5, LEASE, T0 + 2)
    assert run.attempt == 2
    await store.finish(first)  # again
    got = await store.get_run(a)
    assert got is not None and (got.status, got.attempt) == ("running", 2)
    assert [(x.attempt, x.status) for x in await store.attempts(a)] == [(1, "failed"), (2, "running")]


async def test_a_delivery_stored_unredacted_is_shown_redacted(store: Store) -> None:
    """An older version redacted fewer names (or none): what it stored in clear is hidden
    as it is read, whatever the backend."""
    d = dataclasses.replace(delivery(), headers=[("X-Api-Key", "s3cret-h"), ("X-Event", "push")],
                            query=[("token", "s3cret-q"), ("env", "prod")])
    await store.accept(d, [])
    got = await store.get_delivery(d.id)
    assert got is not None
    assert got.headers == [("X-Api-Key", "[redacted]"), ("X-Event", "push")]
    assert got.query == [("token", "[redacted]"), ("env", "prod")]
    (listed,) = [x for x in await store.list_deliveries(None, 10) if x.id == d.id]
    assert "s3cret" not in repr(listed)


async def test_runs_added_to_a_delivery_pruned_meanwhile_say_so(store: Store) -> None:
    """A replay reads the delivery, then adds its runs: a prune between the two leaves the
    runs nothing to belong to (a foreign key failure was a 500)."""
    d = delivery()
    await store.accept(d, [])
    await store.prune(T0 + 10)
    assert await store.get_delivery(d.id) is None
    with pytest.raises(DeliveryGone):
        await store.add_runs([new_run(d)])


SECRET = "s3cret-token-value"


async def secret_run(store: Store, policy: str = "queue", attempts: int = 1) -> str:
    """A run whose argv and concurrency key were rendered from a secret request header."""
    d = delivery()
    run = dataclasses.replace(
        new_run(d, SECRET, policy, max_attempts=attempts),
        spec={"argv": ["deploy", SECRET, "--env", "prod"], "hidden_paths": [["argv", 1]],
              HIDDEN_KEY: True})
    await store.accept(d, [run])
    return run.id


async def kept(store: Store, run_id: str) -> tuple[Any, str | None]:
    run = await store.get_run(run_id)
    assert run is not None
    return run.spec["argv"], run.concurrency_key


SCRUBBED = (["deploy", "[redacted]", "--env", "prod"], "[redacted]")


async def test_an_ended_run_keeps_no_value_rendered_from_a_secret(store: Store) -> None:
    """The real value stays while the run may run (queued, running, waiting for its retry),
    and is gone from its spec and key once it ends, however it ends."""
    ran = await secret_run(store, attempts=2)
    assert await kept(store, ran) == (["deploy", SECRET, "--env", "prod"], SECRET)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0)] == [ran]
    await finish(store, ran, outcome="failed", retry_at=T0 + 6)
    assert await kept(store, ran) == (["deploy", SECRET, "--env", "prod"], SECRET)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 7)] == [ran]
    await finish(store, ran, at=T0 + 8)
    assert await status(store, ran) == "succeeded"
    assert await kept(store, ran) == SCRUBBED

    canceled = await secret_run(store)
    assert await store.request_cancel(canceled, T0 + 9) == "canceled"
    assert await kept(store, canceled) == SCRUBBED


async def test_a_skipped_or_superseded_run_keeps_no_value_rendered_from_a_secret(
        store: Store) -> None:
    """skip: the run that finds its key busy; coalesce: the runs the newest supersedes."""
    running = await secret_run(store, "skip")
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0)] == [running]
    skipped = await secret_run(store, "skip")
    assert await store.claim("n1", 5, LEASE, T0 + 1) == []
    assert await status(store, skipped) == "skipped"
    assert await kept(store, skipped) == SCRUBBED
    assert await kept(store, running) == (["deploy", SECRET, "--env", "prod"], SECRET)
    await finish(store, running, at=T0 + 2)

    first = await secret_run(store, "coalesce")
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 2)] == [first]
    older, newest = await secret_run(store, "coalesce"), await secret_run(store, "coalesce")
    await finish(store, first, at=T0 + 3)
    assert [r.id for r in await store.claim("n1", 5, LEASE, T0 + 4)] == [newest]
    assert await status(store, older) == "skipped"
    assert await kept(store, older) == SCRUBBED
    assert await kept(store, first) == SCRUBBED


async def test_a_run_canceled_instead_of_its_retry_keeps_no_value_rendered_from_a_secret(
        store: Store) -> None:
    run = await secret_run(store, attempts=3)
    await store.claim("n1", 5, LEASE, T0)
    assert await store.request_cancel(run, T0 + 1) == "running"
    await finish(store, run, outcome="failed", retry_at=T0 + 6)
    assert await status(store, run) == "canceled"
    assert await kept(store, run) == SCRUBBED


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_migration_0006_redacts_what_runs_that_had_ended_kept(
    kind: str, tmp_path: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs that ended before the upgrade lose the values rendered from secrets they kept;
    a run that may still run keeps them."""
    target = str(tmp_path / "hookrunner.db") if kind == "sqlite" else \
        request.getfixturevalue("postgres_db")
    every = sql.migrations(kind)
    assert every[5][1] == "0006_ended_runs.sql"
    monkeypatch.setattr(sql, "migrations", lambda backend: every[:5])
    # That version's insert, without what later migrations add (0008 SQLite's verifier
    # column, 0009 PostgreSQL's delivery_verifiers table).
    insert = sql.queries(kind)["insert_delivery"]
    old_insert = insert.split("), v AS (")[0] + ")\nSELECT id FROM d;" if kind == "postgres" \
        else re.sub(r",\s*(?::verifier|verifier)\b", "", insert)
    monkeypatch.setitem(sql.queries(kind), "insert_delivery", old_insert)
    old = open_store(target)
    await old.open()
    ended, queued = await secret_run(old), await secret_run(old)
    await old.close()
    raw = f"UPDATE runs SET status = 'failed' WHERE id = '{ended}'"  # the test's own id
    if kind == "sqlite":
        with sqlite3.connect(target) as conn:
            conn.execute(raw)
    else:
        with psycopg.connect(target) as conn:
            conn.execute(raw.encode())
    monkeypatch.undo()
    store = open_store(target)
    await store.open()
    try:
        assert await kept(store, ended) == SCRUBBED
        assert await kept(store, queued) == (["deploy", SECRET, "--env", "prod"], SECRET)
    finally:
        await store.close()
