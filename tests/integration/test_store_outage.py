"""The embedded store refusing writes under a running server: a lock held by another process,
the data directory deleted. Hooks answer 503 with Retry-After in time, /readyz says so, and
nothing is answered 202 that is not stored."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

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
    # (The delivery's run may write its start mark or log while this deletes: again, then.)
    deadline = time.monotonic() + 10
    while (project / "data").exists():
        assert time.monotonic() < deadline
        shutil.rmtree(project / "data", ignore_errors=True)
    for _ in range(3):
        status, headers, _ = _post(server)
        assert status == 503 and headers.get("retry-after") == "5"
    assert _ready(server) == 503
    assert "was removed" in server.output()
    # Nowhere to save a copy of it: said, and no half copy (the directory is gone too); or,
    # where the server saw the file go before rmtree had emptied its directory (a loaded
    # machine), a copy saved there, which rmtree then took too.
    deadline = time.monotonic() + 10
    while not any(f"store.database_{what} " in server.output() for what in ("not_saved", "saved")):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)


@contextlib.contextmanager
def _small_disk(where: Path, size: str) -> Iterator[Path]:
    """A file system of its own for --data (tmpfs: as root, as the tests run)."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(directory: Path) -> Path:
    """Take every free block of directory's file system; the file that does it."""
    filler = directory / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def test_a_full_disk_is_told_by_readyz_before_a_delivery_fails_and_refuses_a_start(
    project: Path, tmp_path: Path,
) -> None:
    """/readyz said ok on a full disk until the first delivery failed (a balancer kept sending
    to it); a start there died of SIGBUS with nothing logged, or printed a traceback."""
    (project / "rules" / "rules.yaml").write_text(RULES)
    with _small_disk(tmp_path / "disk", "8m") as disk:
        # --data is the file system's root: the test's server log, beside it, is not on it.
        server = Server(project / "rules", disk, project).start()
        try:
            assert _post(server)[0] == 202 and _ready(server) == 200
            filler = _fill(disk)
            assert _ready(server) == 503  # no delivery has failed yet
            ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
            assert ready["store"] == "unreachable (disk full)", ready
            filler.unlink()
            deadline = time.monotonic() + 10
            while _ready(server) != 200:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.2)
            assert _post(server)[0] == 202
        finally:
            server.stop()
        _fill(disk)
        refused = Server(project / "rules", disk, project)
        with pytest.raises(RuntimeError, match="exited 3"):
            refused.start()
        out = refused.output()
        assert "server.refused" in out and "is full (" in out and "free some space" in out, out
        assert "Traceback" not in out


@pytest.mark.postgres
def test_postgresql_refusing_writes_is_told_by_readyz_until_a_write_goes_through(
    make_server: Callable[..., Server], postgres_db: str,
) -> None:
    """A full tablespace (or a statement timeout) failed every delivery with 503 while
    /readyz said ok: its check was `SELECT 1`, and a load balancer kept sending. After a
    failed write it tries a delivery's insert, undone."""
    import psycopg

    server = make_server(RULES, args=["--db", postgres_db])
    assert _post(server)[0] == 202 and _ready(server) == 200
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
                  USING ERRCODE = 'disk_full'; END $$;
            CREATE TRIGGER refuse_all BEFORE INSERT ON deliveries FOR EACH ROW EXECUTE FUNCTION refuse();
        """)
        try:
            status, headers, _ = _post(server)
            assert status == 503 and headers.get("retry-after") == "5"
            assert _ready(server) == 503
            time.sleep(2)  # housekeeping writes meanwhile (they go through): still not ready
            assert _ready(server) == 503  # the probe's write is refused too
        finally:
            conn.execute("DROP TRIGGER refuse_all ON deliveries; DROP FUNCTION refuse()")
    assert _ready(server) == 200  # without a delivery first: the probe's write went through
    assert _post(server)[0] == 202


@pytest.mark.postgres
def test_postgresql_gone_read_only_is_a_503_and_the_node_runs_again_once_it_takes_writes(
    make_server: Callable[..., Server], postgres_db: str,
) -> None:
    """A failover onto a server still read-only: deliveries were a 500 with /readyz ok, and
    the claim loop ended on the error, so after the store took writes again every accepted
    run stayed queued until a restart."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    server = make_server(RULES, args=["--db", postgres_db])
    assert _post(server)[0] == 202 and _ready(server) == 200
    name = conninfo_to_dict(postgres_db)["dbname"]

    def settle(read_only: str) -> None:
        # (From another database: a session of this one is read-only too, once it is.)
        with psycopg.connect(make_conninfo(postgres_db, dbname="postgres"), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {read_only}')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))

    settle("on")
    try:
        deadline = time.monotonic() + 20
        while (status := _post(server))[0] != 503:
            assert status[0] in (202, 503) and time.monotonic() < deadline, status
        assert status[1].get("retry-after") == "5"
        time.sleep(1.5)  # the claim loop and housekeeping meet the error meanwhile
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["store"] == "unreachable (writes refused: read-only)", ready.text
    finally:
        settle("off")
    deadline = time.monotonic() + 30
    while (answer := httpx.post(f"{server.url}/hooks/open", json={"x": 2}, timeout=30)
           ).status_code != 202:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    assert server.wait_run(answer.json()["runs"][0], timeout=20)["status"] == "succeeded"
    assert "dispatcher.task_failed" not in server.output()


@pytest.mark.postgres
def test_a_pool_that_cannot_connect_says_why(
    make_server: Callable[..., Server], postgres_db: str,
) -> None:
    """A password changed (or no connection slot left) while serving: senders got 503 and
    the log said only "couldn't get a connection after 5.00 sec"; libpq's reason was in a
    driver line apart. The refusal now carries it."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    role = f"hr_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    parts = urlsplit(postgres_db)
    as_role = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
    server = make_server(RULES, args=["--db", as_role])
    assert _post(server)[0] == 202
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} NOLOGIN")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = %s", (role,))
        try:
            deadline = time.monotonic() + 30
            while "the last connection attempt" not in server.output():
                assert time.monotonic() < deadline, server.output()[-3000:]
                assert _post(server)[0] == 503
            assert f'role \\"{role}\\" is not permitted to log in' in server.output() or \
                f'role "{role}" is not permitted to log in' in server.output()
        finally:
            conn.execute(f"ALTER ROLE {role} LOGIN")
    deadline = time.monotonic() + 30
    while _post(server)[0] != 202:
        assert time.monotonic() < deadline


@pytest.mark.postgres
def test_a_postgresql_table_locked_by_hand_is_a_timely_503(
    make_server: Callable[..., Server], postgres_db: str,
) -> None:
    """`LOCK TABLE deliveries` (or VACUUM FULL) for 30 s held a delivery's answer 29 s, past
    a sender's 10 s timeout: a sender without a delivery id sent it again and it ran twice."""
    import psycopg

    server = make_server(RULES, args=["--db", postgres_db])
    assert _post(server)[0] == 202
    with psycopg.connect(postgres_db) as holder:  # a transaction: the lock lasts until its end
        holder.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
        status, headers, took = _post(server)
        assert status == 503 and headers.get("retry-after") == "5", (status, headers)
        assert took < 9, took
        holder.rollback()
    assert _post(server)[0] == 202


@pytest.mark.postgres
def test_an_ended_log_the_store_cannot_give_is_a_503_not_a_broken_answer(
    make_server: Callable[..., Server], postgres_db: str,
) -> None:
    """The log's copy is chosen before the answer's status is sent: a store error while
    choosing it was a 200 cut off mid-answer (and a traceback in the server's log)."""
    import psycopg

    server = make_server(RULES, args=["--db", postgres_db])
    r = httpx.post(f"{server.url}/hooks/open", json={"x": 1}, timeout=30)
    run_id = r.json()["runs"][0]
    assert server.wait_run(run_id)["status"] == "succeeded"
    with server.admin() as c, psycopg.connect(postgres_db) as holder:
        holder.execute("LOCK TABLE attempts IN ACCESS EXCLUSIVE MODE")
        answer = c.get(f"/api/runs/{run_id}/log")
        assert answer.status_code == 503, (answer.status_code, answer.text)
        holder.rollback()
        assert "[hookrunner] succeeded" in c.get(f"/api/runs/{run_id}/log").text
    assert "Exception in ASGI application" not in server.output()


@pytest.mark.postgres
def test_a_node_starting_while_a_table_is_locked_by_hand_waits_for_it(
    make_server: Callable[..., Server], postgres_db: str,
) -> None:
    """With the pool's 5 s lock_timeout a start during `VACUUM FULL` (or a hand lock) was
    refused: settling the runs left running gave up. It tries again, for up to a minute."""
    import threading

    import psycopg

    first = make_server(RULES, args=["--db", postgres_db])  # the schema, made
    first.stop()
    holder = psycopg.connect(postgres_db)
    holder.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
    releaser = threading.Timer(8.0, holder.rollback)
    releaser.start()
    try:
        server = make_server(RULES, args=["--db", postgres_db])
        assert "dispatcher.start_waiting_for_store" in server.output(), server.output()
        assert _post(server)[0] == 202
    finally:
        releaser.join()
        holder.close()


def _gated_rules(project: Path, gate: Path) -> str:
    """Rules whose run waits for `gate` to exist, then prints `done` and exits 3."""
    (project / "scripts" / "gated.sh").write_text(
        f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\necho done\nexit 3\n")
    (project / "scripts" / "gated.sh").chmod(0o755)
    return RULES.replace('argv: ["true"]', 'argv: ["scripts/gated.sh"]')


def _gated_run_running(server: Server, c: httpx.Client) -> str:
    """A delivery posted, its run's id once that run is running."""
    assert _post(server)[0] == 202
    run_id: str = c.get("/api/runs").json()["runs"][0]["id"]
    deadline = time.monotonic() + 15
    while c.get(f"/api/runs/{run_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return run_id


def test_a_run_that_ended_while_the_store_refuses_writes_shows_how_it_ended(
    make_server: Callable[..., Server], project: Path,
) -> None:
    """The store still reads (a lock, a full disk) but refuses the result: the run stays
    `running` in the store, and the API and console say how it ended until it is written."""
    gate = project / "gate"
    server = make_server(_gated_rules(project, gate))
    with server.admin() as c:
        run_id = _gated_run_running(server, c)
        holder = sqlite3.connect(project / "data" / "hookrunner.db", timeout=10, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            gate.touch()
            deadline = time.monotonic() + 30
            while "unrecorded" not in (doc := c.get(f"/api/runs/{run_id}").json()):
                assert time.monotonic() < deadline, doc
                time.sleep(0.2)
            assert doc["status"] == "running"
            assert doc["unrecorded"]["status"] == "failed" and doc["unrecorded"]["exit_code"] == 3
            assert "refuses to record" in doc["unrecorded"]["note"]
            page = c.get(f"/runs/{run_id}", headers={"Accept": "text/html"})
            assert page.status_code == 200 and "not recorded yet" in page.text
        finally:
            holder.execute("COMMIT")
            holder.close()
    run = server.wait_run(run_id, timeout=30)
    assert run["status"] == "failed" and run["exit_code"] == 3 and "unrecorded" not in run


def test_a_result_the_store_refused_while_stopping_is_recorded_as_it_ended_at_the_next_start(
    make_server: Callable[..., Server], project: Path,
) -> None:
    """A stop that meets SQLite's write lock held by another process gives up on recording
    the runs that had ended: the next start took them for interrupted, so a run whose action
    had ended (here: exit 3) became `failed (interrupted)`, and one that had succeeded was
    run again where its rule retries. Their results are kept in the data dir instead."""
    gate = project / "gate"
    server = make_server(_gated_rules(project, gate), env={"HOOKRUNNER_GRACE": "1s"})
    with server.admin() as c:
        run_id = _gated_run_running(server, c)
        deadline = time.monotonic() + 15
        holder = sqlite3.connect(project / "data" / "hookrunner.db", timeout=10,
                                 isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            gate.touch()
            while "unrecorded" not in (doc := c.get(f"/api/runs/{run_id}").json()):
                assert time.monotonic() < deadline + 30, doc
                time.sleep(0.2)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(timeout=60)
        finally:
            holder.execute("COMMIT")
            holder.close()
    abandoned = next(x for x in server.output().splitlines() if "run.result_abandoned" in x)
    assert run_id in abandoned and "records them as they ended" in abandoned, abandoned
    assert list((project / "data").glob("results-*.pending"))
    (project / "data" / "results-old-host.pending").write_text("{}\n")  # another host name's
    server.start()
    run = server.wait_run(run_id)
    assert run["status"] == "failed" and run["exit_code"] == 3, run
    assert "interrupted" not in run["reason"], run
    assert f"run.result_recovered run_id={run_id}" in server.output()
    assert not list((project / "data").glob("results-*.pending"))
    with server.admin() as c:
        log = c.get(f"/api/runs/{run_id}/log").text
    assert "\ndone\n" in log and "failed: exit 3" in log, log
    assert log.count("\n[hookrunner] ") == 1, log  # its own end line only, not a restart's too
