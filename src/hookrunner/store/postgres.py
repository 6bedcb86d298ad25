"""The multi-node store: PostgreSQL through psycopg 3 and an async connection pool.

Why psycopg 3: it is the maintained PostgreSQL driver with native asyncio, a pool package
(`psycopg_pool`) that replaces dead connections by itself, LISTEN/NOTIFY as an async
iterator, and the same API in sync form should a tool need it. asyncpg is fast but
async-only and needs its own pool and notification plumbing.

Cluster-wide correctness:
- migrations run under `pg_advisory_lock`, so nodes starting together apply them once;
- `claim` takes `pg_advisory_xact_lock(CLAIM_LOCK)`: claim decisions are serialized across
  the cluster (a claim is a few statements long), so a concurrency key is free or busy for
  every node at once; candidates are still read `FOR UPDATE SKIP LOCKED` so a claim never
  waits on a row another transaction (a cancel) is changing;
- `accept`, `add_runs`, `request_cancel` and `finish` end with `NOTIFY hookrunner_runs`;
  each store LISTENs on a dedicated connection and `wait_for_work` wakes on it.
Connection loss surfaces as `StoreUnavailable` (the HTTP layer answers 503); the pool checks
each connection before lending it and reconnects when the server is back.

Listings (the admin API's, the console's, the CLI's) take at most half the pool at once: a
burst of them, or a few slow ones, would otherwise hold every connection while hooks waited
for one (503s) and lease renewals failed (runs stopped early, run again elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from hookrunner.aio import acquire
from hookrunner.concurrency import decide
from hookrunner.errors import DeliveryGone, StoreUnavailable
from hookrunner.logs import event
from hookrunner.store import sql
from hookrunner.store._rows import (
    CANCELED_BEFORE_RETRY,
    CANCELED_BEFORE_START,
    CANCELED_INSTEAD_OF_RETRY,
    DELIVERY_FILTERS,
    RUN_FILTERS,
    attempt_from_row,
    delivery_from_row,
    delivery_params,
    dumps,
    listing,
    repoint_params,
    run_from_row,
    run_params,
    supersede_params,
)
from hookrunner.store._wake import wait_event
from hookrunner.store.base import (
    KNOWN_CHUNK,
    RUN_STATUSES,
    AcceptResult,
    Attempt,
    Claimed,
    Delivery,
    Finish,
    NewDelivery,
    NewRun,
    Run,
    Skipped,
    skipped,
)

DEFAULT_POOL_MIN = 1
DEFAULT_POOL_MAX = 10
DEFAULT_POOL_TIMEOUT = 5.0  # seconds to wait for a connection before StoreUnavailable
DEFAULT_CONNECT_TIMEOUT = 5  # seconds, libpq connect_timeout
# psycopg_pool retries a lost connection with doubling delays for `reconnect_timeout` (300 s
# by default), so after a long outage a node kept answering 503 for about as long again.
# Giving up early frees the slot; the next request grows the pool with an immediate attempt.
DEFAULT_RECONNECT_TIMEOUT = 2.0  # seconds
# A network cut leaves sockets open: without these a call could wait for the kernel's
# retransmission limit (~15 min). libpq drops a connection after 10 s of unacknowledged
# data, or an idle one after 5 + 3 * 2 s without keepalive answers.
TCP_TIMEOUTS: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                                "keepalives_count": 3, "tcp_user_timeout": 10_000}
LISTEN_RETRY = 1.0  # seconds between attempts to re-establish LISTEN
CHANNEL = "hookrunner_runs"
# Advisory lock keys: any constant unlikely to collide with another application's.
MIGRATE_LOCK = 0x686F6F6B_6D6967  # "hookmig"
CLAIM_LOCK = 0x686F6F6B_636C6D  # "hookclm"
PRUNE_CHUNK = 200  # deliveries deleted per transaction when pruning
# seconds a lost commit's read-back waits for a connection: the sender is waiting
COMMIT_CHECK_WAIT = 2.0
ORPHAN_LOCK_TRIES = 40  # tries, 50 ms apart, to take the node lock an ended session held
PER_KEY_WINDOW = 20  # runs of a `queue` key read per claim, besides its newest
Q = sql.queries("postgres")

Conn = psycopg.AsyncConnection[DictRow]


# How long a statement of the pool's waits for a lock: a table locked by hand (`LOCK TABLE`,
# `VACUUM FULL`, a migration run elsewhere) held a delivery's answer for as long, past a
# sender's 10 s timeout (a sender without a delivery id then sent it again: run twice).
# Past it, hooks answer 503 with Retry-After.
LOCK_TIMEOUT = "5s"
# A transaction the server waits on its client for, ended past this: a node frozen (SIGSTOP,
# a VM paused) in the middle of a claim held the claim lock, and every other node stopped
# dispatching, and taking its runs over, for as long as the freeze lasted.
IDLE_IN_TRANSACTION_TIMEOUT = "5s"
# The server's own keepalives (its default waits two hours): a node's machine that lost power
# or its network holding a transaction or its node lock is found gone as the client finds
# the server gone (TCP_TIMEOUTS). Ignored on a Unix socket.
SERVER_KEEPALIVES = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 2,
                     "tcp_keepalives_count": 3}


async def _session_keepalives(conn: psycopg.AsyncConnection[Any]) -> None:
    for name, value in SERVER_KEEPALIVES.items():
        await conn.execute(f"SET {name} = {int(value)}")


async def _bounded_lock_waits(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    await conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'")
    await _session_keepalives(conn)


class _Connection(psycopg.AsyncConnection[DictRow]):
    """The pool's connections. A pool that cannot connect says only "couldn't get a
    connection after 5.00 sec"; this keeps why the last try failed (a password changed,
    no connection slot left) for the StoreUnavailable that operators read."""

    last_refusal = ""

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
        try:
            connection = await super().connect(conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            said = " ".join(str(exc).split())  # libpq's lines, as one
            _Connection.last_refusal = said[:300]
            raise
        _Connection.last_refusal = ""
        return connection


def _holds_nul(params: dict[str, Any]) -> bool:
    """A value from a URL (`/runs/a%00b`, `?hook=%00`) with a NUL in it: PostgreSQL text
    cannot hold one (a 500 and a traceback); SQLite just finds no such row."""
    return any(isinstance(v, str) and "\x00" in v for v in params.values())


# The readiness probe's write (see PostgresStore.ping): a delivery of 32 KiB, rolled back.
PROBE = NewDelivery(id="dlv_readiness_probe", hook="-", received_at=0.0, headers=[],
                    body=bytes(32768), dedup_key=None, event=None, client_ip="",
                    matches=[])

class PostgresStore:
    shared = True  # see Store.shared

    def __init__(
        self, url: str, min_size: int = DEFAULT_POOL_MIN, max_size: int = DEFAULT_POOL_MAX,
        timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        self.url = url
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url, min_size=min_size, max_size=max_size, timeout=timeout, open=False,
            reconnect_timeout=DEFAULT_RECONNECT_TIMEOUT,
            check=AsyncConnectionPool.check_connection, connection_class=_Connection,
            configure=_bounded_lock_waits,
            kwargs={"autocommit": True, "row_factory": dict_row,
                    "connect_timeout": DEFAULT_CONNECT_TIMEOUT, **TCP_TIMEOUTS},
        )
        self._timeout = timeout
        self._listing_slots = max(1, max_size // 2)
        self._listings = asyncio.Semaphore(self._listing_slots)
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._node_conn: psycopg.AsyncConnection[Any] | None = None
        self._node_locked = False
        self._node_backend: int | None = None  # the server's pid of the session holding it
        self._writes_failing = False  # the last write transaction failed (see ping)
        self.trouble: str | None = None  # why the last ping failed, in words /readyz may show

    async def open(self, migrate: bool = True) -> None:
        try:
            await self._pool.open(wait=True, timeout=self._timeout)
        except psycopg.OperationalError as exc:
            await self._pool.close()
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
        try:
            async with self._conn(refusal_is_outage=False) as conn:
                await self._migrate(conn, migrate)
        except StoreUnavailable:
            await self._pool.close()
            raise
        except psycopg.Error as exc:  # no right to create tables, a read-only server
            await self._pool.close()
            why = (str(exc).strip().splitlines() or [""])[0]
            raise StoreUnavailable(f"cannot set up the schema: {type(exc).__name__}: {why}") \
                from None
        self._listener = asyncio.create_task(self._listen(), name="hookrunner-pg-listen")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._node_conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._node_conn.close()  # releases the node lock
            self._node_conn, self._node_locked = None, False
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _conn(self, timeout: float | None = None,
                    refusal_is_outage: bool = True) -> AsyncIterator[Conn]:
        try:
            async with self._pool.connection(timeout=timeout) as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            why = f" (the last connection attempt: {_Connection.last_refusal})" \
                if _Connection.last_refusal else ""
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}{why}") from exc
        except (psycopg.OperationalError,  # lost connections, a full disk, timeouts
                psycopg.errors.IdleInTransactionSessionTimeout) as exc:  # (this node froze)
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from exc
        except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege) as exc:
            # A failover onto a server still read-only, a role's write grant taken away:
            # nothing can be stored until it is put right, as in an outage (a 503 to senders
            # rather than a 500, and the loops try again rather than end). Not at the start,
            # whose schema set-up says what the role lacks.
            if not refusal_is_outage:
                raise
            what = "read-only" if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction) \
                else "permission denied"
            raise StoreUnavailable(f"PostgreSQL refuses the request ({what}): "
                                   f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"
                                   ) from exc

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        try:
            async with self._conn() as conn, conn.transaction():
                yield conn
        except StoreUnavailable:
            self._writes_failing = True  # (a full tablespace, a statement timeout): see ping
            raise

    @contextlib.asynccontextmanager
    async def _listing(self) -> AsyncIterator[float]:
        """A listing's share of the pool (see the module's doc), waited for within the pool's
        own timeout; past it the caller gets a 503 like any other full pool. Yields what is
        left of that timeout, for the wait for a connection."""
        deadline = time.monotonic() + self._timeout
        if not await acquire(self._listings, self._timeout):
            raise StoreUnavailable(f"PostgreSQL busy: {self._listing_slots} listings are being "
                                   f"read already (at most half the pool, so that hooks and "
                                   f"runs keep theirs)")
        try:
            yield max(0.001, deadline - time.monotonic())
        finally:
            self._listings.release()

    async def _rows(self, query: str, params: dict[str, Any]) -> list[DictRow]:
        return await self._query(Q[query], params)

    async def _query(self, sql: str, params: dict[str, Any],
                     timeout: float | None = None) -> list[DictRow]:
        if _holds_nul(params):  # no text column holds NUL: nothing matches (psycopg refuses it)
            return []
        async with self._conn(timeout) as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    @staticmethod
    async def _migrate(conn: Conn, migrate: bool = True) -> None:
        if not migrate:  # the CLI: read only (no lock to wait on, no DDL a read-only role lacks)
            try:
                cur = await conn.execute(Q["applied_migrations"])
                applied = {row["version"] for row in await cur.fetchall()}
            except psycopg.errors.UndefinedTable:
                applied = set()
            except psycopg.Error as exc:
                raise StoreUnavailable(f"cannot read the schema version: {exc}") from None
            problem = sql.schema_problem("postgres", applied)
            if problem is not None:
                raise StoreUnavailable(problem)
            return
        # Another node's migration, or one waiting for the tables' users: as long as it takes.
        await conn.execute("SET lock_timeout = 0")
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        try:
            cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            row = await cur.fetchone()
            if not (row and next(iter(row.values()))):  # a current schema needs no CREATE right
                await conn.execute(Q["create_migrations_table"])
            cur = await conn.execute(Q["applied_migrations"])
            applied = {row["version"] for row in await cur.fetchall()}
            newer = sql.newer_schema("postgres", applied)
            if newer is not None:
                raise StoreUnavailable(newer)
            missing = [m for m in sql.migrations("postgres") if m[0] not in applied]
            names = ",".join(name for _, name, _ in missing)
            if missing and applied:
                event("store.migrating", pending=names, hint=sql.MIGRATING_HINT)
            for version, name, script in missing:
                try:
                    async with conn.transaction():
                        for statement in sql.statements(script):
                            await conn.execute(statement.encode())
                        await conn.execute(Q["record_migration"],
                                           {"version": version, "name": name, "now": time.time()})
                except psycopg.errors.InsufficientPrivilege as exc:
                    why = (str(exc).strip().splitlines() or [""])[0]
                    # ALTER TABLE and CREATE INDEX need the table's owner; a new function
                    # or table needs CREATE on the schema.
                    need = ("to own the tables (run this start once as the role that created "
                            "them)") if "must be owner" in why else (
                        "CREATE on the schema, to add its tables, indexes and functions")
                    raise StoreUnavailable(
                        f"cannot apply migration {name} ({why}): the role needs {need}; the "
                        "README's 'Running several nodes' shows a role that owns the "
                        "database; nothing of it was applied") from None
            if missing:
                event("store.migrated", applied=names)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
            await _bounded_lock_waits(conn)  # as the pool sets it

    async def lock_node(self, node: str) -> bool:
        # A session-level advisory lock on a connection of its own, held until close (or
        # until that connection drops, when the node is likely gone anyway).
        if self._node_conn is not None and self._node_locked:
            try:  # still held while its connection lives: check that it does
                await self._node_conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                with contextlib.suppress(psycopg.Error):
                    await self._node_conn.close()
                self._node_conn, self._node_locked = None, False  # the lock went with it
        if self._node_conn is None:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=DEFAULT_CONNECT_TIMEOUT,
                    **TCP_TIMEOUTS)
                try:
                    await _session_keepalives(conn)
                except psycopg.Error:
                    await conn.close()
                    raise
                self._node_conn = conn
            except psycopg.Error as exc:
                raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from exc
        key = f"hookrunner-node:{node}"
        try:
            cur = await self._node_conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))
            row = await cur.fetchone()
            if not (row and row[0]) and self._node_backend is not None:
                row = (await self._release_own_orphan(self._node_conn, key, node),)
        except psycopg.Error as exc:
            self._node_conn = None
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from exc
        self._node_locked = bool(row and row[0])
        if self._node_locked:
            self._node_backend = self._node_conn.info.backend_pid
        return self._node_locked

    async def _release_own_orphan(self, conn: psycopg.AsyncConnection[Any], key: str,
                                  node: str) -> bool:
        """Where the lock is held by this node's own earlier connection, which the client
        side dropped (a network cut) while the server keeps its session (until its
        keepalive gives up: two hours by default): that session ended, and the lock taken
        again (True). It was taken for another server's: the node stopped (exit 4), and its
        restarts were refused meanwhile."""
        cur = await conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND classid::bigint = (hashtextextended(%(k)s, 0) >> 32) & 4294967295"
            " AND objid::bigint = hashtextextended(%(k)s, 0) & 4294967295", {"k": key})
        if [r[0] for r in await cur.fetchall()] != [self._node_backend]:
            return False
        await conn.execute("SELECT pg_terminate_backend(%s)", (self._node_backend,))
        for _ in range(ORPHAN_LOCK_TRIES):  # (released as that session exits)
            cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                     (key,))
            row = await cur.fetchone()
            if row and row[0]:
                event("store.node_lock_recovered", logging.WARNING, node=node,
                      ended_session=self._node_backend,
                      note="this node's lock was held by its own earlier connection, which "
                           "it had lost (a network cut): that session was ended")
                return True
            await asyncio.sleep(0.05)
        return False

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=DEFAULT_CONNECT_TIMEOUT,
                    **TCP_TIMEOUTS)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._wake.set()  # whatever happened while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error:
                pass  # the server went away: the dispatcher's poll covers the gap
            await asyncio.sleep(LISTEN_RETRY)

    async def wait_for_work(self, timeout: float) -> bool:
        return await wait_event(self._wake, timeout)

    async def ping(self) -> bool:
        """Reachable, and, after a write failed, writable: a full tablespace or a statement
        timeout fails every delivery while `SELECT 1` goes through, and a load balancer
        must hear it (as from SQLite's ping). The probe is a delivery's insert, undone."""
        self.trouble = None
        probing = False  # reached: the probe's write is what failed
        try:
            async with self._conn() as conn:
                if not self._writes_failing:
                    await conn.execute("SELECT 1")
                    return True
                probing = True
                async with conn.transaction(force_rollback=True):
                    await conn.execute(Q["insert_delivery"], delivery_params(PROBE))
        except (StoreUnavailable, psycopg.OperationalError) as exc:
            # Reached, but refusing: said (/readyz: "unreachable" sent one to the network).
            cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
            if isinstance(cause, psycopg.errors.ReadOnlySqlTransaction):
                self.trouble = "writes refused: read-only"
            elif isinstance(cause, psycopg.errors.InsufficientPrivilege):
                self.trouble = "writes refused: permission denied"
            elif probing:
                self.trouble = "writes fail"
            return False
        self._writes_failing = False
        return True

    async def accept(self, delivery: NewDelivery, runs: Sequence[NewRun]) -> AcceptResult:
        committing = False
        try:
            async with self._tx() as conn:
                cur = await conn.execute(Q["insert_delivery"], delivery_params(delivery))
                if await cur.fetchone() is None:  # (hook, dedup_key) seen: name the original
                    cur = await conn.execute(Q["find_delivery_by_key"], {
                        "hook": delivery.hook, "dedup_key": delivery.dedup_key})
                    row = await cur.fetchone()
                    assert row is not None  # the conflicting row is committed and visible
                    cur = await conn.execute(Q["run_ids_of_delivery"],
                                             {"delivery_id": row["id"]})
                    return AcceptResult(row["id"], True, [r["id"] for r in await cur.fetchall()])
                await self._insert_runs(conn, runs)
                committing = True
        except StoreUnavailable as exc:
            # The connection lost at COMMIT (a server crash, a cut network): the delivery may
            # be stored though the reply never came. Answered 503, its runs ran all the same,
            # and a sender without a delivery id sent it again: run twice. The id is this
            # node's own, so finding it says the commit went through.
            if not committing or not await self._stored_after_all(
                    Q["get_delivery"], {"id": delivery.id}):
                raise
            event("delivery.commit_recovered", logging.WARNING, hook=delivery.hook, delivery_id=delivery.id,
                  error=str(exc), note="the store's reply to the commit was lost; the "
                                       "delivery was found stored, so it is answered as accepted")
        self._writes_failing = False  # a delivery went in (another write says less: see ping)
        return AcceptResult(delivery.id, False, [r.id for r in runs])

    async def _stored_after_all(self, query: str, params: dict[str, Any]) -> bool:
        """Whether what a commit whose reply was lost wrote is stored (`query` finds it by
        this node's own id): False where the store cannot say within a short wait (the 503
        then stands)."""
        try:  # (the query too: a cut network holds it for tcp_user_timeout)
            async with asyncio.timeout(COMMIT_CHECK_WAIT):
                rows = await self._query(query, params,
                                         timeout=min(self._timeout, COMMIT_CHECK_WAIT))
        except (StoreUnavailable, TimeoutError):
            return False
        return bool(rows)

    @staticmethod
    async def _insert_runs(conn: Conn, runs: Sequence[NewRun]) -> None:
        if runs:
            now = time.time()
            async with conn.cursor() as cur:
                await cur.executemany(Q["insert_run"], [run_params(r, now) for r in runs])
            await conn.execute(Q["notify"])  # delivered at commit

    async def add_runs(self, runs: Sequence[NewRun]) -> None:
        committing = False
        try:
            async with self._tx() as conn:
                await self._insert_runs(conn, runs)
                committing = True
        except psycopg.errors.ForeignKeyViolation:  # the delivery: pruned since it was read
            raise DeliveryGone(runs[0].delivery_id if runs else "") from None
        except StoreUnavailable:
            # As accept's: a replay answered 503 though its runs went in was replayed again.
            if not (committing and runs and await self._stored_after_all(
                    Q["known_runs"], {"ids": [runs[0].id]})):
                raise

    async def claim(self, node: str, limit: int, lease: float, now: float) -> Claimed:
        async with self._tx() as conn:
            await conn.execute(Q["claim_lock"], {"lock": CLAIM_LOCK})
            window = {"now": now, "limit": limit, "per_key": PER_KEY_WINDOW}
            rows = []
            for query in ("claim_keyless", "claim_keyed"):
                rows += await (await conn.execute(Q[query], window)).fetchall()
            candidates = sorted((run_from_row(r) for r in rows), key=lambda r: r.seq)
            keys = sorted({c.concurrency_key for c in candidates if c.concurrency_key})
            running: list[Run] = []
            later: list[Run] = []
            if keys:
                cur = await conn.execute(Q["running_keyed"], {"keys": keys})
                running = [run_from_row(r) for r in await cur.fetchall()]
                cur = await conn.execute(Q["claim_later"], {"now": now, "keys": keys})
                later = [run_from_row(r) for r in await cur.fetchall()]
            decision = decide(candidates, running, limit, later)
            for r in decision.claim:
                r.status, r.attempt, r.started_at, r.finished_at, r.exit_code, r.reason = (
                    "running", r.attempt + 1, now, None, None, "")
                r.lease_owner, r.lease_expires = node, now + lease
            ended = [skipped(r, why) for r, why, _ in decision.skip]
            for newest in supersede_params(decision, now):  # (a row each it ended)
                cur = await conn.execute(Q["supersede_waiting"], newest)
                ended += [Skipped(row["id"], row["rule"], row["delivery_id"], row["attempt"],
                                  row["reason"]) for row in await cur.fetchall()]
            async with conn.cursor() as c:
                for query, params in (
                    ("skip_run", [{"id": r.id, "reason": why, "superseded_by": sup, "now": now}
                                  for r, why, sup in decision.skip]),
                    ("flag_cancel", [{"id": r.id, "by": by} for r, by in decision.cancel]),
                    ("repoint_superseded", repoint_params(decision)),
                    ("start_run", [{"id": r.id, "now": now, "node": node,
                                    "lease_expires": r.lease_expires} for r in decision.claim]),
                    ("insert_attempt", [{"run_id": r.id, "attempt": r.attempt, "node": node,
                                         "now": now} for r in decision.claim]),
                ):
                    if params:
                        await c.executemany(Q[query], params)
            if decision.cancel:
                await conn.execute(Q["notify"])  # other nodes poll cancel_requests on wake
        return Claimed(decision.claim, ended)

    async def renew(self, node: str, run_ids: Sequence[str], lease: float, now: float) -> set[str]:
        # A connection waited for a little only: the dispatcher tries again at its next round
        # (lease/8), each try asking the pool for a new connection at once. Waiting the pool's
        # 5 s after a restart of PostgreSQL let a short lease's runs be stopped by the fence.
        rows = await self._query(Q["renew"], {"ids": list(run_ids), "node": node,
                                              "lease_expires": now + lease},
                                 timeout=min(self._timeout, max(0.5, lease / 8)))
        return {r["id"] for r in rows}

    async def finish(self, result: Finish) -> bool:
        params = {
            "run_id": result.run_id, "node": result.node, "outcome": result.outcome,
            "exit_code": result.exit_code, "reason": result.reason,
            "outputs": dumps(result.outputs), "finished_at": result.finished_at,
            "retry_at": result.retry_at, "log": result.log, "attempt": result.attempt,
            "replaced_by": result.replaced_by, "expired_by": result.expired_by,
        }
        async with self._tx() as conn:
            # Guarded by owner and status: a node that lost its lease cannot undo another's.
            if result.retry_at is None:
                applied = (await conn.execute(Q["finish_run"], params)).rowcount
            else:  # one of the two applies: queued again, or canceled if a cancel was asked for
                applied = (await conn.execute(Q["requeue_run"], params)).rowcount
                applied += (await conn.execute(Q["cancel_retry"], {
                    **params, "cancel_reason": CANCELED_INSTEAD_OF_RETRY})).rowcount
            # After the run's row is locked and written: it reads the run's superseded_by.
            # (Not for a takeover that found the lease renewed: the attempt still runs.)
            if applied or result.expired_by is None:
                await conn.execute(Q["finish_attempt"], params)
            await conn.execute(Q["notify"])  # its key is free now, or it is queued again
        return applied > 0

    async def expired(self, now: float) -> list[Run]:
        return [run_from_row(r) for r in await self._rows("expired", {"now": now})]

    async def release_node(self, node: str) -> list[Run]:
        return [run_from_row(r) for r in await self._rows("running_on_node", {"node": node})]

    async def request_cancel(self, run_id: str, now: float) -> str | None:
        if _holds_nul({"id": run_id}):
            return None
        async with self._tx() as conn:
            # The row first: a finish that is requeueing it commits before this reads its
            # status (otherwise the cancel saw `running`, its flag then missed `queued`, and
            # the retry ran anyway).
            await conn.execute(Q["lock_run"], {"id": run_id})
            await conn.execute(Q["cancel_queued"],
                               {"id": run_id, "now": now, "reason": CANCELED_BEFORE_START,
                               "retry_reason": CANCELED_BEFORE_RETRY})
            await conn.execute(Q["flag_cancel"], {"id": run_id, "by": None})
            cur = await conn.execute(Q["run_status"], {"id": run_id})
            row = await cur.fetchone()
            await conn.execute(Q["notify"])
        return None if row is None else str(row["status"])

    async def cancel_requests(self, node: str) -> dict[str, str | None]:
        return {r["id"]: r["superseded_by"] for r in await self._rows("cancel_requests", {"node": node})}

    async def get_run(self, run_id: str) -> Run | None:
        rows = await self._rows("get_run", {"id": run_id})
        return run_from_row(rows[0]) if rows else None

    async def list_runs(
        self, status: str | None = None, limit: int = 50, delivery_id: str | None = None,
        rule: str | None = None, before: str | None = None,
    ) -> list[Run]:
        params = {"status": status, "limit": limit, "delivery_id": delivery_id, "rule": rule,
                  "before": before}
        sql = listing(Q["list_runs"], RUN_FILTERS, params, lambda name: f"%({name})s")
        async with self._listing() as left:
            rows = await self._query(sql, params, left)
        return [run_from_row(r) for r in rows]

    async def attempts(self, run_id: str) -> list[Attempt]:
        return [attempt_from_row(r) for r in await self._rows("attempts", {"run_id": run_id})]

    async def get_log(self, run_id: str, attempt: int) -> str | None:
        rows = await self._rows("get_log", {"run_id": run_id, "attempt": attempt})
        return rows[0]["log"] if rows else None

    async def log_length(self, run_id: str, attempt: int) -> int | None:
        rows = await self._rows("log_length", {"run_id": run_id, "attempt": attempt})
        return rows[0]["size"] if rows else None

    async def get_log_head(self, run_id: str, attempt: int, chars: int) -> tuple[str, bool] | None:
        rows = await self._rows("get_log_head", {"run_id": run_id, "attempt": attempt,
                                                 "chars": chars})
        return (rows[0]["head"], bool(rows[0]["more"])) if rows and rows[0]["head"] is not None \
            else None

    async def _with_run_ids(self, rows: list[DictRow]) -> list[Delivery]:
        ids: dict[str, list[str]] = {r["id"]: [] for r in rows}
        if ids:
            for r in await self._rows("run_ids_of_deliveries", {"ids": list(ids)}):
                ids[r["delivery_id"]].append(r["id"])
        return [delivery_from_row(r, ids[r["id"]]) for r in rows]

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        found = await self._with_run_ids(await self._rows("get_delivery", {"id": delivery_id}))
        return found[0] if found else None

    async def list_deliveries(self, hook: str | None = None, limit: int = 50,
                              before: str | None = None) -> list[Delivery]:
        params = {"hook": hook, "limit": limit, "before": before}
        sql = listing(Q["list_deliveries"], DELIVERY_FILTERS, params, lambda name: f"%({name})s")
        async with self._listing() as left:
            return await self._with_run_ids(await self._query(sql, params, left))

    async def queued(self) -> int:
        return int((await self._rows("count_queued", {}))[0]["n"])

    async def counts(self) -> dict[str, int]:
        out = dict.fromkeys(RUN_STATUSES, 0)
        out.update({r["status"]: r["n"] for r in await self._rows("counts", {})})
        return out

    async def next_due(self) -> float | None:
        rows = await self._rows("next_due", {})
        return None if rows[0]["due"] is None else float(rows[0]["due"])

    async def known_runs(self, run_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(run_ids), KNOWN_CHUNK):
            rows = await self._rows("known_runs", {"ids": list(run_ids[i:i + KNOWN_CHUNK])})
            found.update(r["id"] for r in rows)
        return found

    async def prune(self, before: float, progress: Callable[[int], None] | None = None) -> int:
        params = {"before": before, "chunk": PRUNE_CHUNK}
        total = 0
        while True:  # chunked: no long transaction holding locks on a busy cluster
            async with self._tx() as conn:
                ids = [r["id"] for r in await (await conn.execute(Q["prune_lock"], params)
                                               ).fetchall()]
                n = (await conn.execute(Q["prune"], {**params, "ids": ids})).rowcount if ids else 0
            total += n
            if len(ids) < PRUNE_CHUNK:
                return total
            if progress is not None:
                progress(total)
