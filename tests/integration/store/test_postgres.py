"""PostgreSQL specifics: migrations once across nodes, outages as StoreUnavailable, reconnects."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import copy
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.types.json import Jsonb

from hookrunner.errors import StoreUnavailable
from hookrunner.redact import ended_spec
from hookrunner.store import sql
from hookrunner.store.base import Finish
from hookrunner.store.postgres import PostgresStore
from tests.integration.store.test_store import LEASE, T0, claimed, delivery, new_run
from tests.pgcluster import free_port

pytestmark = pytest.mark.postgres
Q_CLAIM_LOCK = sql.queries("postgres")["claim_lock"]


async def test_nodes_starting_together_migrate_once(postgres_db: str) -> None:
    """Several stores opening a fresh database at once apply each migration exactly once."""
    stores = [PostgresStore(postgres_db) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        with psycopg.connect(postgres_db) as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert rows == [(v,) for v, _, _ in sql.migrations("postgres")]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_unreachable_server_is_store_unavailable() -> None:
    """Opening a store whose server is down raises StoreUnavailable, not a driver error."""
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout=1.0)
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_pool_replaces_killed_connections(postgres_db: str) -> None:
    """After the server drops every connection, the next call works on a fresh one."""
    store = PostgresStore(postgres_db)
    await store.open()
    try:
        d = delivery()
        await store.accept(d, [new_run(d)])
        with psycopg.connect(postgres_db, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert (await store.counts())["queued"] == 1
    finally:
        await store.close()


async def test_concurrent_claims_across_nodes_hold_keys(postgres_db: str) -> None:
    """Nodes claiming at once never run two runs of one key together, and share the rest."""
    stores = [PostgresStore(postgres_db) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        for i in range(30):
            d = delivery()
            await stores[0].accept(d, [new_run(d, key=f"k{i % 3}"), new_run(d)])
        claims = await asyncio.gather(
            *(s.claim(f"n{i}", 50, LEASE, T0) for i, s in enumerate(stores)))
        claimed = [r for batch in claims for r in batch]
        keyed = [r.concurrency_key for r in claimed if r.concurrency_key]
        assert sorted(keyed) == ["k0", "k1", "k2"]
        assert len(claimed) == len({r.id for r in claimed}) == 33
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_one_server_per_node_name(postgres_db: str) -> None:
    """lock_node: a node name is held by one store until it closes; other names are free."""
    first, second = PostgresStore(postgres_db), PostgresStore(postgres_db)
    await first.open()
    await second.open()
    try:
        assert await first.lock_node("n1") is True
        assert await second.lock_node("n1") is False
        assert await second.lock_node("n2") is True
        await first.close()
        # The server frees a closed session's locks as it notices the close: a moment later.
        for _ in range(50):
            if await second.lock_node("n1"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the node lock was not released when its store closed")
    finally:
        await second.close()


async def test_a_node_lock_lost_with_its_connection_is_taken_again(postgres_db: str) -> None:
    """lock_node re-checks: after its connection dies the lock is re-taken if still free."""
    store = PostgresStore(postgres_db)
    await store.open()
    try:
        assert await store.lock_node("n9") is True
        with psycopg.connect(postgres_db, autocommit=True) as admin:  # kill the lock's session
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks "
                          "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()")
        for _ in range(50):
            if await store.lock_node("n9"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the node lock was not taken again")
        with psycopg.connect(postgres_db, autocommit=True) as admin:
            held = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND granted").fetchone()
        assert held is not None and held[0] == 1
    finally:
        await store.close()


async def _migrated_before(url: str, migration: str) -> None:
    """The database as a version without `migration` (and those after it) left it."""
    every = sql.migrations("postgres")
    names = [name for _, name, _ in every]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sql, "migrations", lambda backend: every[:names.index(migration)])
        before = PostgresStore(url)
        await before.open()
        await before.close()


async def test_a_delivery_from_before_the_query_column_reads_with_an_empty_query(
    postgres_db: str,
) -> None:
    """Migration 0003 adds the query to a database with history; old rows get none."""
    await _migrated_before(postgres_db, "0003_delivery_query.sql")
    with psycopg.connect(postgres_db) as conn:
        conn.execute("INSERT INTO deliveries (id, hook, received_at, headers, body, client_ip, matches)"
                     " VALUES ('d-old', 'gh', 1.0, '[]', '\\x7b7d', '', '[]')")
    store = PostgresStore(postgres_db)
    await store.open()
    try:
        got = await store.get_delivery("d-old")
        assert got is not None and got.query == []
        assert got.verifier is None  # unknown (0008/0009), not the hook's current one
    finally:
        await store.close()


async def test_a_cancel_racing_a_requeue_still_cancels(postgres_db: str) -> None:
    """A node's finish is requeueing the run for a retry (not committed yet) when a cancel
    comes: the cancel waits for it and ends the queued run, instead of reading `running`,
    missing the flag on the now queued row, and letting the retry run."""
    store = PostgresStore(postgres_db)
    await store.open()
    try:
        run = await claimed(store)
        with psycopg.connect(postgres_db, autocommit=False) as finishing:
            finishing.execute(
                "UPDATE runs SET status = 'queued', next_attempt_at = %s, lease_owner = NULL "
                "WHERE id = %s AND status = 'running'", (T0 + 60, run.id))
            cancel = asyncio.ensure_future(store.request_cancel(run.id, T0 + 1))
            await asyncio.sleep(0.5)
            assert not cancel.done()  # waiting for the finish's row lock
            finishing.commit()
        assert await asyncio.wait_for(cancel, 10) == "canceled"
        got = await store.get_run(run.id)
        assert got is not None and got.status == "canceled"
    finally:
        await store.close()


async def test_listings_stuck_on_the_database_leave_connections_for_leases(
        postgres_db: str) -> None:
    """Listings take at most half the pool: with more of them stuck on a lock than the pool
    holds, a lease renewal still gets a connection at once (before: it waited for the pool's
    timeout and failed, and the run would have been stopped), and the listings that waited
    for their share finish once the lock goes."""
    store = PostgresStore(postgres_db, max_size=4, timeout=4.0)
    await store.open()
    try:
        run = await claimed(store)
        with psycopg.connect(postgres_db) as locker:
            locker.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
            listings = [asyncio.create_task(store.list_deliveries()) for _ in range(8)]
            await asyncio.sleep(0.5)
            assert not any(t.done() for t in listings)  # each one on the lock, or in line
            renewed = await asyncio.wait_for(store.renew("n1", [run.id], LEASE, T0 + 1), 2.0)
            assert renewed == {run.id}
            locker.rollback()
        for found in await asyncio.gather(*listings):
            assert [d.id for d in found] == [run.delivery_id]
    finally:
        await store.close()


async def test_a_listing_waiting_past_the_pool_timeout_is_store_unavailable(
        postgres_db: str) -> None:
    """A listing that cannot get its share within the pool's timeout is a 503, as a full
    pool is, and says why."""
    store = PostgresStore(postgres_db, max_size=2, timeout=1.0)
    await store.open()
    try:
        with psycopg.connect(postgres_db) as locker:
            locker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            stuck = asyncio.create_task(store.list_runs())
            await asyncio.sleep(0.3)
            with pytest.raises(StoreUnavailable, match="listings are being read already"):
                await store.list_runs()
            locker.rollback()
        assert await stuck == []
    finally:
        await store.close()



ENDED_SPECS: list[dict[str, Any]] = [
    {"argv": ["a", "tok"], "hidden_paths": [["argv", 1]]},
    {"headers": {"Authorization": "tok", "X": "1"}, "hidden_paths": [["headers", "Authorization"]]},
    {"json": {"a": {"b": ["x", "tok"]}}, "hidden_paths": [["json", "a", "b", 1]]},
    {"json": {"a": None}, "hidden_paths": [["json", "a"]]},
    {"argv": ["a"], "hidden_paths": [["argv", 5], ["nope", "x"], ["argv", -1]]},
    {"argv": ["a", "tok"]},
    {"argv": ["a", "tok"], "hidden_paths": "argv"},
    {"argv": ["a", "tok"], "hidden_paths": [[], "x", None, ["argv", 1]]},
    {"render_error": "in '{{ x }}': the message is hidden"},
]


@pytest.mark.parametrize("spec", ENDED_SPECS)
async def test_the_database_function_ends_a_spec_as_the_python_one_does(
        postgres_db: str, spec: dict[str, Any]) -> None:
    """Migration 0006's hookrunner_ended_spec and redact.ended_spec (SQLite's and the memory
    store's) agree on every shape of path a template makes, and on malformed ones."""
    store = PostgresStore(postgres_db)
    await store.open()  # migrates
    await store.close()
    with psycopg.connect(postgres_db) as conn:
        row = conn.execute("SELECT hookrunner_ended_spec(%s)", (Jsonb(spec),)).fetchone()
    assert row is not None
    assert row[0] == ended_spec(copy.deepcopy(spec))


async def test_a_node_of_the_version_before_reads_deliveries_after_0009(postgres_db: str) -> None:
    """A node not upgraded yet reads deliveries with `SELECT *` as prepared statements: a
    column added to `deliveries` made PostgreSQL refuse them ("cached plan must not change
    result type"), and its runs that read their delivery failed. 0009 adds a table instead."""
    await _migrated_before(postgres_db, "0009_delivery_verifier.sql")
    with psycopg.connect(postgres_db, autocommit=True) as old:  # the old node's connection
        select = "SELECT * FROM deliveries WHERE id = %s"
        for _ in range(3):
            old.execute(select, ("none",), prepare=True)  # prepared on the server
        store = PostgresStore(postgres_db)
        await store.open()  # applies 0009
        try:
            result = await store.accept(delivery(), [])
            assert old.execute(select, (result.delivery_id,), prepare=True).fetchone()
            got = await store.get_delivery(result.delivery_id)
            assert got is not None and got.verifier == "github"
        finally:
            await store.close()


RelayT = TypeVar("RelayT", bound="Relay")


class Relay(abc.ABC):
    """A TCP relay on a loopback port to the real server (`async with` gives its port);
    subclasses say what it does to the connections (`_relay`)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @abc.abstractmethod
    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        """Serve one client connection."""


@contextlib.asynccontextmanager
async def through(kind: type[RelayT], postgres_db: str) -> AsyncIterator[tuple[RelayT, PostgresStore]]:
    """A relay of `kind` to the test's database, and a store open through it."""
    parts = urlsplit(postgres_db)
    relay = kind(parts.port or 5432)
    async with relay as port:
        url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))
        store = PostgresStore(url + "?sslmode=disable")
        await store.open()
        try:
            yield relay, store
        finally:
            await store.close()


class CommitCutter(Relay):
    """A relay that, once armed, cuts the client's connection at a transaction's COMMIT:
    passed on first (the server commits, the client hears a lost connection, as at a server
    crash or a network cut at that moment), or not."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.armed: bool | None = None  # True: pass the COMMIT on; False: drop it
        self.cuts = 0

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        cut = asyncio.Event()

        async def upward() -> None:
            while chunk := await client_r.read(65536):
                if self.armed is not None and b"COMMIT" in chunk:
                    passed, self.armed, self.cuts = self.armed, None, self.cuts + 1
                    cut.set()
                    if passed:
                        server_w.write(chunk)
                        await server_w.drain()
                    client_w.transport.abort()  # no reply reaches the client
                    await asyncio.sleep(0.5)  # while the server commits (or not)
                    break
                server_w.write(chunk)
                await server_w.drain()
            server_w.close()

        async def downward() -> None:
            while chunk := await server_r.read(65536):
                if cut.is_set():
                    return
                client_w.write(chunk)
                await client_w.drain()
            client_w.close()

        with contextlib.suppress(OSError, ConnectionError):
            await asyncio.gather(upward(), downward())


async def test_a_delivery_committed_though_the_reply_was_lost_is_accepted(
        postgres_db: str) -> None:
    """The connection lost at COMMIT after the server committed: the delivery is answered
    as accepted (its runs will run), not 503 (where a sender without a delivery id sends it
    again, and it runs twice); a replay's runs likewise. A COMMIT the server never got still
    raises."""
    async with through(CommitCutter, postgres_db) as (relay, store):
        d = delivery()
        relay.armed = True
        result = await store.accept(d, [new_run(d)])
        assert relay.cuts == 1
        assert not result.duplicate and result.delivery_id == d.id
        assert (await store.get_delivery(d.id)) is not None
        assert (await store.counts())["queued"] == 1

        other = delivery()
        relay.armed = False
        with pytest.raises(StoreUnavailable):
            await store.accept(other, [new_run(other)])
        assert relay.cuts == 2
        assert (await store.get_delivery(other.id)) is None
        assert (await store.counts())["queued"] == 1

        # A replay's runs (add_runs) likewise.
        again = new_run(d)
        relay.armed = True
        await store.add_runs([again])
        assert relay.cuts == 3 and (await store.counts())["queued"] == 2
        lost = new_run(d)
        relay.armed = False
        with pytest.raises(StoreUnavailable):
            await store.add_runs([lost])
        assert relay.cuts == 4 and (await store.get_run(lost.id)) is None


class ClientCut(Relay):
    """A relay whose `cut()` drops the client side of every connection made so far and
    keeps the server side open: the server keeps those sessions (as after a network cut,
    until its keepalive gives up), the client has lost them."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.clients: list[asyncio.StreamWriter] = []
        self.upstreams: list[asyncio.StreamWriter] = []

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        for w in self.upstreams:
            w.transport.abort()

    def cut(self) -> None:
        for w in self.clients:
            w.transport.abort()
        self.clients.clear()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.clients.append(client_w)
        self.upstreams.append(server_w)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while not w.transport.is_closing() and (chunk := await r.read(65536)):
                w.write(chunk)
                await w.drain()

        with contextlib.suppress(OSError, ConnectionError):
            await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))


async def test_a_node_lock_its_own_lost_session_still_holds_is_taken_again(
        postgres_db: str) -> None:
    """A network cut drops the node lock's connection on the node's side; the server keeps
    the session, and the lock with it, until its keepalive gives up (two hours by default).
    The lock was taken for another server's: the node stopped (exit 4), and its restarts
    were refused meanwhile. Its own old session is ended, and the lock taken again."""
    async with through(ClientCut, postgres_db) as (relay, store):
        assert await store.lock_node("n7") is True
        with psycopg.connect(postgres_db, autocommit=True) as admin:
            (old,) = admin.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                                   "AND granted").fetchone() or (None,)
        relay.cut()
        assert await store.lock_node("n7") is True
        with psycopg.connect(postgres_db, autocommit=True) as admin:
            holders = admin.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                                    "AND granted").fetchall()
            assert len(holders) == 1 and holders[0][0] != old
            # Lost again, and meanwhile another server took the name: never taken from
            # it (only this node's own session is ended).
            relay.cut()
            admin.execute("SELECT pg_terminate_backend(%s)", holders[0])
            with psycopg.connect(postgres_db, autocommit=True) as other:
                for _ in range(50):
                    if other.execute("SELECT pg_try_advisory_lock(hashtextextended("
                                     "'hookrunner-node:n7', 0))").fetchone() == (True,):
                        break
                    await asyncio.sleep(0.05)
                assert await store.lock_node("n7") is False
                assert other.execute("SELECT 1").fetchone() == (1,)  # its session lives


async def test_a_database_that_ran_an_earlier_text_of_0008_and_0009_is_repaired(
        postgres_db: str) -> None:
    """0008 and 0009 were edited after development versions had applied them: a database
    those versions migrated had no json twins of the end-of-run functions (every run stayed
    `running`: its end failed) and a `verifier` column instead of `delivery_verifiers`
    (every delivery failed). 0011 repairs both."""
    await _migrated_before(postgres_db, "0011_repair_edited_migrations.sql")
    with psycopg.connect(postgres_db) as conn:  # as those versions left it
        conn.execute("DROP FUNCTION hookrunner_ended_spec(json)")
        conn.execute("DROP FUNCTION hookrunner_ended_key(json, text)")
        conn.execute("DROP TABLE delivery_verifiers")
        conn.execute("ALTER TABLE deliveries ADD COLUMN verifier text")
        conn.execute("INSERT INTO deliveries (id, hook, received_at, headers, body, client_ip,"
                     " matches, verifier) VALUES ('d-old', 'gh', 1.0, '[]', '\\x7b7d', '', '[]',"
                     " 'github')")
    store = PostgresStore(postgres_db)
    await store.open()  # applies 0011
    try:
        old = await store.get_delivery("d-old")
        assert old is not None and old.verifier == "github"
        run = await claimed(store)  # a delivery taken, its run claimed and ended
        assert await store.finish(Finish(run_id=run.id, node="n1", outcome="succeeded",
                                         exit_code=0, reason="", outputs={}, finished_at=T0 + 1))
        got = await store.get_run(run.id)
        assert got is not None and got.status == "succeeded"
    finally:
        await store.close()
    again = PostgresStore(postgres_db)  # and on a database that needed nothing: no change
    await again.open()
    await again.close()


async def test_a_run_canceled_while_a_claim_reads_is_never_claimed(postgres_db: str) -> None:
    """probe: a cancel that committed after the claim's statement took its snapshot, but
    before the claim locked the row: PostgreSQL checks again only the conditions on the row
    itself, the window's subquery not, so the canceled run was returned, started, and in a
    `coalesce` key the other waiting runs were skipped for it. Racing the two for real
    (the probe hit it in 142 of 200 tries): a canceled run is never claimed."""
    a, b = PostgresStore(postgres_db), PostgresStore(postgres_db)
    await a.open()
    await b.open()
    rng = random.Random(7)
    try:
        canceled_and_claimed = tried = 0
        for _ in range(30):
            d = delivery()
            key = f"k-{uuid.uuid4().hex[:8]}"
            runs = [new_run(d, key, "coalesce") for _ in range(200)]
            await a.accept(d, runs)
            newest = runs[-1].id

            async def cancel(run_id: str) -> str | None:
                await asyncio.sleep(rng.uniform(0, 0.006))
                return await b.request_cancel(run_id, T0 + 1)

            got, said = await asyncio.gather(a.claim("n1", 1, LEASE, T0), cancel(newest))
            if said == "canceled":
                tried += 1
                canceled_and_claimed += newest in [r.id for r in got]
                assert await b.attempts(newest) == []
            with psycopg.connect(postgres_db, autocommit=True) as conn:  # the key free again
                conn.execute("UPDATE runs SET status = 'succeeded' WHERE concurrency_key = %s "
                             "AND status IN ('queued', 'running')", (key,))
        assert tried and canceled_and_claimed == 0
    finally:
        await a.close()
        await b.close()


async def test_runs_a_replay_adds_while_a_prune_deletes_its_delivery_are_kept(
        postgres_db: str) -> None:
    """probe: a replay of an old delivery, while a `--keep` prune deleted it: the delete's
    snapshot did not see the replay's runs, it waited for the replay's hold on the row (the
    runs' foreign key), and the cascade then removed the runs the replay had been answered
    for. Here another transaction holds the row the way a replay's insert does."""
    store, replaying = PostgresStore(postgres_db), PostgresStore(postgres_db)
    await store.open()
    await replaying.open()
    try:
        old = delivery(at=T0 - 86_400)
        await store.accept(old, [])
        with psycopg.connect(postgres_db, autocommit=False) as holder:
            holder.execute("SELECT 1 FROM deliveries WHERE id = %s FOR KEY SHARE", (old.id,))
            pruning = asyncio.ensure_future(store.prune(T0))
            await asyncio.sleep(0.3)
            runs = [new_run(old)]
            await replaying.add_runs(runs)  # answered: queued
            holder.rollback()
        await asyncio.wait_for(pruning, 10)
        assert await store.get_delivery(old.id) is not None
        assert await store.known_runs([runs[0].id]) == {runs[0].id}
        assert await store.prune(T0) == 0  # it has a queued run now
    finally:
        await store.close()
        await replaying.close()


async def test_a_takeover_leaves_a_run_whose_lease_was_renewed_since_it_read_it(
        postgres_db: str) -> None:
    """review: node n2 read n1's lease as expired; n1's renewal then went through before
    n2 wrote its decision, which ended (or queued again) a run n1 still ran: both ran it.
    The takeover is written only while the lease is still expired."""
    store = PostgresStore(postgres_db)
    await store.open()
    try:
        run = await claimed(store, "n1", lease=LEASE, at=T0)
        later = T0 + LEASE + 1
        assert [r.id for r in await store.expired(later)] == [run.id]
        assert await store.renew("n1", [run.id], LEASE, later) == {run.id}
        takeover = Finish(run_id=run.id, node="n1", outcome="failed", exit_code=None,
                          reason="interrupted: lease of node n1 expired", outputs={},
                          finished_at=later, attempt=1, expired_by=later)
        assert await store.finish(takeover) is False
        got = await store.get_run(run.id)
        assert got is not None and (got.status, got.lease_owner) == ("running", "n1")
        assert [a.status for a in await store.attempts(run.id)] == ["running"]
        # Expired again, and not renewed: the takeover is written.
        again = later + LEASE + 1
        assert await store.finish(dataclasses.replace(
            takeover, finished_at=again, expired_by=again)) is True
        got = await store.get_run(run.id)
        assert got is not None and got.status == "failed"
    finally:
        await store.close()


async def test_a_node_frozen_in_its_claim_holds_the_others_up_only_briefly(
        postgres_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """probe: a node SIGSTOPped while its claim held the claim lock stopped every other
    node's claims, and so their dispatch and the takeover of its runs, for as long as it
    was frozen (PostgreSQL waits on an idle transaction's client forever). Its session is
    ended past IDLE_IN_TRANSACTION_TIMEOUT; the server's keepalives are the client's."""
    from hookrunner.store import postgres

    monkeypatch.setattr(postgres, "IDLE_IN_TRANSACTION_TIMEOUT", "1s")
    frozen, other = PostgresStore(postgres_db), PostgresStore(postgres_db)
    await frozen.open()
    await other.open()
    try:
        d = delivery()
        run = new_run(d)
        await other.accept(d, [run])
        with contextlib.suppress(StoreUnavailable):
            async with frozen._conn() as conn:
                await conn.execute("BEGIN")
                await conn.execute(Q_CLAIM_LOCK, {"lock": postgres.CLAIM_LOCK})
                cur = await conn.execute("SHOW tcp_keepalives_idle")
                assert (await cur.fetchone() or {}).get("tcp_keepalives_idle") == "5"
                # Frozen here: the other node's claim goes through once the session is ended.
                claimed_runs = await asyncio.wait_for(other.claim("n2", 5, LEASE, T0), 4)
                assert [r.id for r in claimed_runs] == [run.id]
    finally:
        await frozen.close()
        await other.close()
