"""SQLite specifics: a second process on the same file, and the file's settings."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from hookrunner.store import sql
from hookrunner.store.base import Finish
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.store.test_store import LEASE, T0, delivery, new_run


async def test_a_second_opener_writes_alongside_the_server(tmp_path: Path) -> None:
    """The CLI's store on the same file cancels and reads while the server accepts."""
    path = tmp_path / "nested" / "hookrunner.db"
    server, cli = SQLiteStore(path), SQLiteStore(path)
    await server.open()
    await cli.open()
    try:
        d = delivery()
        target = new_run(d)
        await server.accept(d, [target])
        more = [delivery() for _ in range(100)]
        results = await asyncio.gather(
            *(server.accept(x, [new_run(x)]) for x in more),
            cli.request_cancel(target.id, T0),
        )
        assert results[-1] == "canceled"
        assert (await cli.counts())["queued"] == 100
        assert len(await server.claim("n1", 200, LEASE, T0)) == 100
    finally:
        await cli.close()
        await server.close()


async def test_file_is_wal_with_migrations_recorded(tmp_path: Path) -> None:
    """open() creates the directory, switches to WAL and records the applied migration."""
    path = tmp_path / "a" / "b" / "hookrunner.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    store = SQLiteStore(path)  # reopening applies nothing twice
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert versions == [(v,) for v, _, _ in sql.migrations("sqlite")]


async def test_a_failing_job_does_not_sink_its_batch(tmp_path: Path) -> None:
    """In one group commit, a failing accept raises alone and the others are committed."""
    store = SQLiteStore(tmp_path / "hookrunner.db")
    await store.open()
    try:
        first = delivery()
        await store.accept(first, [])
        clash = dataclasses.replace(delivery(), id=first.id)  # same primary key
        others = [delivery() for _ in range(20)]
        results = await asyncio.gather(
            *(store.accept(d, [new_run(d)]) for d in [*others[:10], clash, *others[10:]]),
            return_exceptions=True,
        )
        assert isinstance(results[10], sqlite3.IntegrityError)
        assert sum(not isinstance(r, BaseException) for r in results) == 20
        assert (await store.counts())["queued"] == 20
    finally:
        await store.close()


async def test_one_server_per_database_file(tmp_path: Path) -> None:
    """lock_node: a second store on the same file is refused until the first closes."""
    first, second = SQLiteStore(tmp_path / "db"), SQLiteStore(tmp_path / "db")
    await first.open()
    await second.open()
    try:
        assert await first.lock_node("a") is True
        assert await second.lock_node("b") is False
        await first.close()
        assert await second.lock_node("b") is True
    finally:
        await second.close()


async def test_a_delivery_from_before_the_query_column_reads_with_an_empty_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Migration 0003 adds the query to a database with history; old rows get none."""
    path = tmp_path / "hookrunner.db"
    every = sql.migrations("sqlite")
    monkeypatch.setattr(sql, "migrations", lambda backend: every[:2])
    old = SQLiteStore(path)
    await old.open()
    await old.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO deliveries (id, hook, received_at, headers, body, client_ip, matches)"
                     " VALUES ('d-old', 'gh', 1.0, '[]', x'7b7d', '', '[]')")
    monkeypatch.undo()
    store = SQLiteStore(path)
    await store.open()
    try:
        got = await store.get_delivery("d-old")
        assert got is not None and got.query == []
        assert got.verifier is None  # unknown (0008/0009), not the hook's current one
    finally:
        await store.close()


async def test_ping_answers_while_the_reader_is_busy_with_a_long_listing(tmp_path: Path) -> None:
    """/readyz: an admin listing of a long history holds the reader thread for seconds; that
    says nothing about whether the store is up (it made /readyz answer 503)."""
    import time

    path = tmp_path / "odd dir?#%" / "hookrunner.db"  # a path a URI would misread
    path.parent.mkdir()
    store = SQLiteStore(path)
    await store.open()
    try:
        busy = asyncio.ensure_future(store._read(lambda conn: time.sleep(3)))  # the listing
        await asyncio.sleep(0.1)
        assert await asyncio.wait_for(store.ping(), timeout=1.0) is True
        assert sorted(p.name for p in tmp_path.iterdir()) == ["odd dir?#%"]  # no stray file
        await busy
    finally:
        await store.close()



async def test_the_wal_file_shrinks_back_after_a_burst(tmp_path: Path) -> None:
    """The -wal file kept the size of its largest burst (21 MB beside an emptied store)."""
    from hookrunner.store.sqlite import WAL_KEPT

    store = SQLiteStore(str(tmp_path / "data" / "hookrunner.db"))
    await store.open()
    try:
        wal = tmp_path / "data" / "hookrunner.db-wal"
        big = [dataclasses.replace(delivery(), body=bytes(256 * 1024)) for _ in range(80)]
        await asyncio.gather(*(store.accept(d, [new_run(d)]) for d in big))
        assert wal.stat().st_size > WAL_KEPT * 3  # 20 MB in one go: past the checkpoints
        for _ in range(3):  # writes after a checkpoint start the file again, cut to the limit
            d = delivery()
            await store.accept(d, [new_run(d)])
            with sqlite3.connect(tmp_path / "data" / "hookrunner.db") as other:
                other.execute("PRAGMA wal_checkpoint(PASSIVE)")
        assert wal.stat().st_size <= WAL_KEPT, wal.stat().st_size
    finally:
        await store.close()


async def test_pruning_frees_room_without_first_writing_what_it_deletes(tmp_path: Path) -> None:
    """With SQLite's secure_delete on (Debian's build), deleting 8 MB of bodies first wrote
    8 MB of zeroed pages to the -wal file: a prune on a nearly full disk filled it and never
    pruned. The bodies' pages go to the free list as they are."""
    db = tmp_path / "data" / "hookrunner.db"
    store = SQLiteStore(str(db))
    await store.open()
    try:
        bodies = [dataclasses.replace(delivery(), body=bytes(100 * 1024)) for _ in range(80)]
        for d in bodies:
            await store.accept(d, [])
        with sqlite3.connect(db) as other:  # an empty -wal to measure from
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = tmp_path / "data" / "hookrunner.db-wal"
        assert await store.prune(T0 + 1) == 80
        assert wal.stat().st_size < 1024 * 1024, wal.stat().st_size  # not the 8 MB deleted
        with sqlite3.connect(db) as other:
            assert other.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
    finally:
        await store.close()


def _claim_steps(db: Path, now: float) -> int:
    """The SQLite VM steps of the claim's keyed read: its work, without a clock's noise."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0
    with sqlite3.connect(db) as conn:
        conn.set_progress_handler(count, 1)
        conn.execute(sql.queries("sqlite")["claim_keyed"], {"now": now, "per_key": 8}).fetchall()
    return steps


async def test_runs_waiting_for_their_retry_cost_a_claim_nothing(tmp_path: Path) -> None:
    """Whether a key's run waiting for its retry holds it was asked of each run in backoff
    (keyless ones too), on the writer: an HTTP outage's 30,000 retries cost every claim with
    a due keyed run ~36 ms. It is asked of the keys with due runs."""
    db = tmp_path / "data" / "hookrunner.db"
    store = SQLiteStore(str(db))
    await store.open()
    try:
        busy = delivery()
        await store.accept(busy, [new_run(busy, key="busy")])
        assert len(await store.claim("n1", 1, LEASE, T0)) == 1
        for _ in range(3):  # due, behind the running run
            d = delivery()
            await store.accept(d, [new_run(d, key="busy")])
        steps = []
        for n in (50, 500):
            ds = [delivery() for _ in range(n)]
            await asyncio.gather(*(store.accept(d, [new_run(d, key=f"pr-{n}-{i}" if i % 2 else None,
                                                          max_attempts=3)])
                                   for i, d in enumerate(ds)))
            while claimed := await store.claim("n1", 100, LEASE, T0):
                for r in claimed:  # failed: its retry is due in an hour
                    await store.finish(Finish(r.id, "n1", "failed", 1, "", {}, T0,
                                              retry_at=T0 + 3600, attempt=1))
            steps.append(_claim_steps(db, T0 + 1))
        assert steps[1] < steps[0] * 1.2, steps  # 10 times the runs in backoff: not 10 times the work
    finally:
        await store.close()
