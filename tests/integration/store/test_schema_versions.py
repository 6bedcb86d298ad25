"""A database's schema against this version's: newer is refused (a downgrade would write rows
the newer version misreads), and an older one is migrated by a server's start, never by the
CLI (every other test's fresh store shows a server's migrations)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from hookrunner.errors import StoreUnavailable
from hookrunner.store import open_store
from tests import pgcluster
from tests.serverproc import Server

CLI = [sys.executable, "-m", "hookrunner.cli"]


async def _made(target: str) -> None:
    store = open_store(target)
    await store.open()
    await store.close()


def _sql(target: str, statement: str) -> list[tuple[int, ...]]:
    if target.startswith("postgresql"):
        with psycopg.connect(target, autocommit=True) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []
    with sqlite3.connect(target, isolation_level=None) as conn:
        return conn.execute(statement).fetchall()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "data" / "hookrunner.db")
    url: str = request.getfixturevalue("postgres_db")
    return url


async def test_a_schema_a_newer_version_migrated_is_refused(target: str) -> None:
    await _made(target)
    _sql(target, "INSERT INTO schema_migrations (version, name, applied_at) "
                 "VALUES (999, '0999_future.sql', 0)")
    for migrate in (True, False):
        store = open_store(target)
        with pytest.raises(StoreUnavailable, match="upgraded by a newer hookrunner \\(schema "
                                                   "version 999; this version knows up to"):
            await store.open(migrate=migrate)


async def test_the_cli_does_not_migrate_an_older_schema(target: str) -> None:
    await _made(target)
    (newest,), = _sql(target, "SELECT max(version) FROM schema_migrations")
    _sql(target, f"DELETE FROM schema_migrations WHERE version = {newest}")
    store = open_store(target)
    with pytest.raises(StoreUnavailable, match=r"from an older hookrunner .* start `hookrunner "
                                               r"serve` of this version once"):
        await store.open(migrate=False)
    assert _sql(target, "SELECT max(version) FROM schema_migrations") == [(newest - 1,)]


def test_runs_on_a_newer_schema_says_why_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "hookrunner.db"
    asyncio.run(_made(str(db)))
    _sql(str(db), "INSERT INTO schema_migrations (version, name, applied_at) "
                  "VALUES (999, '0999_future.sql', 0)")
    done = subprocess.run([*CLI, "runs", "--data", str(data)], capture_output=True, text=True,
                          timeout=60, env=os.environ)
    assert done.returncode == 1, done
    assert "upgraded by a newer hookrunner (schema version 999" in done.stderr, done.stderr


def _refused_start(db: str, root: Path, data: str) -> tuple[int, str]:
    """`serve` on `db` (expected to refuse): its exit status and all it printed."""
    done = subprocess.run([*CLI, "serve", "--db", db, "--data", str(root / data),
                           "--rules", str(root / "rules"), "--root", str(root), "--port", "0",
                           "--node", "least-privilege"],
                          capture_output=True, text=True, timeout=60, env=os.environ)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.postgres
def test_runs_works_for_a_role_that_may_only_read_and_write_rows(postgres_db: str) -> None:
    """A least-privilege ops role (no CREATE on the schema, PostgreSQL 15's default for
    non-owners): the CLI reads the schema version, it does not take the migration lock or
    run DDL (it crashed with a traceback)."""
    asyncio.run(_made(postgres_db))
    role = "hr_ops_" + os.urandom(4).hex()
    _sql(postgres_db, f"CREATE ROLE {role} LOGIN")
    _sql(postgres_db, f"GRANT USAGE ON SCHEMA public TO {role}")
    _sql(postgres_db, f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        parts = urlsplit(postgres_db)
        url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
        done = subprocess.run([*CLI, "runs", "--db", url], capture_output=True, text=True,
                              timeout=60, env=os.environ)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    finally:
        _sql(postgres_db, f"DROP OWNED BY {role}")
        _sql(postgres_db, f"DROP ROLE {role}")


@pytest.mark.postgres
def test_serve_starts_for_a_role_that_may_only_read_and_write_rows_on_a_current_schema(
    postgres_db: str, tmp_path: Path,
) -> None:
    """A current schema needs no CREATE right (its table was created at every start), and a
    database the server cannot set up is one line, not a traceback."""
    asyncio.run(_made(postgres_db))
    role = "hr_app_" + os.urandom(4).hex()
    _sql(postgres_db, f"CREATE ROLE {role} LOGIN")
    _sql(postgres_db, f"GRANT USAGE ON SCHEMA public TO {role}")
    _sql(postgres_db, f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
    _sql(postgres_db, f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\n"
        "rules:\n  - {name: r, hook: h, run: {shell: {argv: [\"true\"]}}}\n")
    parts = urlsplit(postgres_db)
    url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
    try:
        server = Server(tmp_path / "rules", tmp_path / "data", tmp_path,
                        args=["--db", url, "--node", "least-privilege"]).start()
        server.stop()
        # 0011 repairs only what a development version left broken: on a sound database it
        # changes nothing, and needs no right this role lacks.
        _sql(postgres_db, "DELETE FROM schema_migrations WHERE version = 11")
        server = Server(tmp_path / "rules", tmp_path / "data", tmp_path,
                        args=["--db", url, "--node", "least-privilege"]).start()
        server.stop()
        assert "applied=0011_repair_edited_migrations.sql" in server.output()
        # An upgrade whose migration needs CREATE (0006: functions): it names itself and the
        # right (the later ones pending too).
        (newest, name), = _sql(postgres_db, "SELECT version, name FROM schema_migrations "
                                            "WHERE name = '0006_ended_runs.sql'")
        _sql(postgres_db, f"DELETE FROM schema_migrations WHERE version >= {newest}")
        code, out = _refused_start(url, tmp_path, "d1")
        assert code == 3 and "Traceback" not in out, out
        assert f"store.migrating pending={name}," in out, out
        assert f"cannot apply migration {name} (permission denied for schema public): the role " \
               "needs CREATE on the schema" in out, out
        assert _sql(postgres_db, "SELECT max(version) FROM schema_migrations") == [(newest - 1,)]
        # With CREATE, an index on a table it does not own: the right it lacks is ownership.
        _sql(postgres_db, f"GRANT CREATE ON SCHEMA public TO {role}")
        _sql(postgres_db, f"DELETE FROM schema_migrations WHERE version >= {newest - 1}")
        code, out = _refused_start(url, tmp_path, "d1")
        assert code == 3 and "(must be owner of table" in out, out
        assert "the role needs to own the tables (run this start once as the role that created" \
            in out, out
        # A fresh database it may not create tables in: refused in one line.
        fresh = pgcluster.create_database(postgres_db)
        try:
            _sql(fresh, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            bare = urlunsplit(urlsplit(fresh)._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
            code, out = _refused_start(bare, tmp_path, "d2")
            assert code == 3 and "Traceback" not in out, out
            assert "cannot set up the schema: InsufficientPrivilege" in out, out
        finally:
            pgcluster.drop_database(fresh)
    finally:
        _sql(postgres_db, f"DROP OWNED BY {role}")
        _sql(postgres_db, f"DROP ROLE {role}")


def test_an_upgrade_says_it_migrates_before_it_does(tmp_path: Path) -> None:
    """A large database's migrations take minutes with the port closed: the log said
    nothing until they ended."""
    data = tmp_path / "data"
    asyncio.run(_made(str(data / "hookrunner.db")))
    # One that can be applied again (an index IF NOT EXISTS; a column added cannot be).
    (newest, name), = _sql(str(data / "hookrunner.db"), "SELECT version, name FROM schema_migrations "
                                                       "WHERE name = '0007_superseded_index.sql'")
    _sql(str(data / "hookrunner.db"), f"DELETE FROM schema_migrations WHERE version = {newest}")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text("hooks: {h: {verify: {none: {}}}}\n")
    server = Server(tmp_path / "rules", data, tmp_path).start()
    server.stop()
    lines = server.output().splitlines()
    migrating = next(i for i, line in enumerate(lines) if "store.migrating" in line)
    migrated = next(i for i, line in enumerate(lines) if "store.migrated" in line)
    assert migrating < migrated and f"pending={name}" in lines[migrating], lines
    # A new database is created, not upgraded: nothing to warn of.
    fresh = Server(tmp_path / "rules", tmp_path / "fresh", tmp_path).start()
    fresh.stop()
    assert "store.migrating" not in fresh.output()
    # A newer schema is refused with nothing to apply: no `store.migrating` before it (read
    # as a downgrade being migrated).
    _sql(str(data / "hookrunner.db"), "INSERT INTO schema_migrations (version, name, "
                                      "applied_at) VALUES (999, '0999_future.sql', 0)")
    done = subprocess.run([*CLI, "serve", "--data", str(data), "--rules", str(tmp_path / "rules"),
                           "--root", str(tmp_path), "--port", "0"],
                          capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 3 and "upgraded by a newer hookrunner" in done.stderr
    assert "store.migrating" not in done.stderr + done.stdout, done.stderr


@pytest.mark.parametrize("migrate", [False, True])
@pytest.mark.parametrize(("at", "size"), [(4096, 8 * 4096), (100, 4096 - 100), (0, 8192)])
async def test_a_damaged_sqlite_file_is_said_to_be_damaged_not_older(
        tmp_path: Path, migrate: bool, at: int, size: int) -> None:
    """`runs` told a corrupted file "from an older hookrunner": start `serve` to upgrade it.
    (The pages after the first; the first page's rest from its b-tree header on, which may be
    all there is on it, the schema's own rows being on a page of their own; the header.)"""
    db = tmp_path / "hookrunner.db"
    await _made(str(db))
    with open(db, "r+b") as f:
        f.seek(at)
        f.write(os.urandom(size))
    store = open_store(str(db))
    # (Random bytes: SQLite's word for them varies, "string or blob too big" once in CI.)
    with pytest.raises(StoreUnavailable, match=r"(malformed|not a database|too big|unsupported "
                                               r"file format) \(the file is damaged: restore "
                                               r"it from a backup"):
        await store.open(migrate=migrate)


async def test_a_table_damaged_after_the_start_is_said_to_be_damaged_on_reading(
        tmp_path: Path) -> None:
    """A page of `runs` overwritten: reads raised sqlite3.DatabaseError (only OperationalError
    was the store's fault), so the API answered 500 and `serve` refused with a traceback that
    cut off SQLite's own words."""
    db = tmp_path / "hookrunner.db"
    await _made(str(db))
    with sqlite3.connect(db) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xa5" * page_size)
    store = open_store(str(db))
    await store.open()
    try:
        with pytest.raises(StoreUnavailable, match=r"malformed \(the file is damaged: restore it"):
            await store.list_runs()
    finally:
        await store.close()
