"""The store commands (`runs`, `cancel`, `replay`) as a user types them, against no server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from hookrunner.store.postgres import PostgresStore
from tests.integration.store.test_store import claimed
from tests.serverproc import Server

CLI = [sys.executable, "-m", "hookrunner.cli"]


def _run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                          env={**os.environ, **env})


def test_a_wrong_data_dir_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    for args in (["runs"], ["cancel", "run_x"], ["replay", "dlv_x", "--rules", str(tmp_path)]):
        done = _run(*args, "--data", str(tmp_path / "typo"), cwd=tmp_path)
        assert done.returncode == 1, (args, done.stderr)
        assert "no hookrunner store at" in done.stderr and "is --data right?" in done.stderr
    assert not (tmp_path / "typo").exists()  # nothing was created


def test_a_data_dir_that_is_a_file_is_said_so_as_serve_says_it(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    for args in (["runs"], ["log", "run_x"], ["delivery", "dlv_x"]):
        done = _run(*args, "--data", str(tmp_path / "afile"), cwd=tmp_path)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr == f"hookrunner: --data {tmp_path / 'afile'} is not a directory\n"


def test_an_unknown_status_filter_is_a_usage_error(tmp_path: Path) -> None:
    """probe: the message did not quote the value refused."""
    done = _run("runs", "--status", "bogus", "--data", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "--status must be one of queued, running" in done.stderr
    assert done.stderr.endswith(", skipped, got 'bogus'\n"), done.stderr


def test_dry_runs_need_no_secrets_in_the_shell(tmp_path: Path) -> None:
    """`explain`/`test` verify no signature, so an unset secret variable must not stop them."""
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SECRET")}
    done = subprocess.run(
        [*CLI, "explain", "--rules", str(repo / "rules"), "--hook", "github",
         "--payload", str(repo / "examples/payloads/github-push.json"),
         "--header", "X-GitHub-Event: push"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "redeploy-on-push" in done.stdout and "matched" in done.stdout


def test_dry_runs_pass_over_secret_files_they_cannot_read_or_that_are_empty(tmp_path: Path) -> None:
    """An operator's shell, where the server's secret files are root's or not filled in."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "a-directory").mkdir()  # unreadable as a file, even for root
    (rules / "r.yaml").write_text(
        "hooks:\n  a: {verify: {github: {secret: {file: empty}}}}\n"
        "  b: {verify: {github: {secret: {file: a-directory}}}}\n"
        "rules:\n  - {name: r, hook: [a, b], run: {shell: {argv: [echo, '{{ event }}']}}}\n")
    (tmp_path / "p.json").write_text("{}")
    for command in ("test", "explain"):
        done = _run(command, "--rules", str(rules), "--root", str(tmp_path), "--hook", "a",
                    "--payload", str(tmp_path / "p.json"), cwd=tmp_path)
        assert done.returncode == 0 and "r" in done.stdout, (command, done.stderr)
    done = _run("check", "--rules", str(rules), "--root", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1 and "secret file empty is empty" in done.stderr, done.stderr
    assert "secret file a-directory is not a regular file" in done.stderr


def test_a_dry_run_of_a_handshake_says_the_server_runs_nothing(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("hooks:\n  slack: {verify: {slack: {secret: {env: UNSET_X}}}}\n"
                                  "rules:\n  - {name: all, hook: slack, run: {shell: {argv: [x]}}}\n")
    (tmp_path / "uv.json").write_text('{"type": "url_verification", "challenge": "abc"}')
    (tmp_path / "ssl.txt").write_text("ssl_check=1&token=x")
    for command in ("test", "explain"):
        done = _run(command, "--rules", str(rules), "--hook", "slack", "--payload",
                    str(tmp_path / "uv.json"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout == ('url_verification is a handshake: the server answers it with '
                               '{"challenge": "abc"} and journals and runs nothing '
                               '(no rule is matched)\n')
    done = _run("test", "--rules", str(rules), "--hook", "slack", "--payload",
                str(tmp_path / "ssl.txt"), "--header",
                "Content-Type: application/x-www-form-urlencoded", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("ssl_check is a handshake"), done


def test_a_db_that_is_not_postgresql_is_a_usage_error_and_creates_nothing(tmp_path: Path) -> None:
    for args in (["runs"], ["cancel", "run_x"], ["replay", "dlv_x", "--rules", str(tmp_path)]):
        done = _run(*args, "--db", str(tmp_path / "typo.db"), cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert "--db: expected a postgresql://... (or postgres://...) URL" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_postgresql_database_without_a_store_is_an_error_not_a_new_store(
    tmp_path: Path, postgres_db: str
) -> None:
    for args in (["runs"], ["cancel", "run_x"]):
        done = _run(*args, "--db", postgres_db, cwd=tmp_path)
        assert done.returncode == 1, (args, done.stderr)
        assert "no hookrunner store in PostgreSQL at" in done.stderr, done.stderr
    with psycopg.connect(postgres_db) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)  # nothing was created


def test_a_data_flag_with_a_db_variable_says_which_store_it_reads(tmp_path: Path) -> None:
    """`runs --data X` with HOOKRUNNER_DB exported read PostgreSQL without a word."""
    with socket.socket() as s:  # a port that is certainly closed
        s.bind(("127.0.0.1", 0))
        url = f"postgresql://u:pw-x@127.0.0.1:{s.getsockname()[1]}/db"
        done = _run("runs", "--data", str(tmp_path), cwd=tmp_path, HOOKRUNNER_DB=url)
        quiet = _run("runs", cwd=tmp_path, HOOKRUNNER_DB=url)
    assert done.stderr.startswith("hookrunner: using the PostgreSQL store of HOOKRUNNER_DB "
                                  "(127.0.0.1:"), done.stderr
    assert "not --data" in done.stderr and "pw-x" not in done.stderr
    assert "using the PostgreSQL store" not in quiet.stderr  # no --data given: nothing to say


@pytest.mark.parametrize("password", ["SeKr1t%ZZXYZ", "SeKr1t XYZ", "SeKr1tXYZ"])
def test_a_password_given_as_an_option_is_never_printed(tmp_path: Path, password: str) -> None:
    """libpq quotes a malformed option's value: `?password=` was printed whole."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"postgresql://hr@127.0.0.1:{s.getsockname()[1]}/hr?password={password}"
        done = _run("runs", "--db", url, cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("hookrunner: "), done
    assert "SeKr1t" not in done.stdout + done.stderr, done.stderr


def test_runs_limit_below_1_is_a_usage_error(tmp_path: Path) -> None:
    for limit in ("0", "-1"):
        done = _run("runs", "--limit", limit, "--data", str(tmp_path), cwd=tmp_path)
        assert done.returncode == 2 and f"--limit: must be at least 1, got {limit}" in done.stderr
    # Past SQLite's integers: a one-line usage error, not a traceback.
    for limit in ("99999999999999999999999", "9223372036854775808"):
        done = _run("runs", "--limit", limit, "--data", str(tmp_path), cwd=tmp_path)
        assert done.returncode == 2 and "--limit: must be at most 1000000000" in done.stderr
        assert "Traceback" not in done.stderr


def test_variables_of_serve_flags_do_not_break_other_commands(tmp_path: Path) -> None:
    env = {"HOOKRUNNER_PORT": "abc", "HOOKRUNNER_LOG_FORMAT": "xml", "HOOKRUNNER_TRUSTED_PROXY": "x"}
    done = _run("runs", "--data", str(tmp_path / "typo"), cwd=tmp_path, **env)
    assert done.returncode == 1 and "no hookrunner store at" in done.stderr, done.stderr
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text("hooks: {h: {verify: {none: {}}}}\n")
    done = _run("check", cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr


def test_replay_without_rules_explains_which_rules_it_matches_against(tmp_path: Path) -> None:
    done = _run("replay", "dlv_x", "--data", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "does not exist (give it with --rules DIR)" in done.stderr
    assert "replay matches the delivery against the rules in --rules rules" in done.stderr
    assert "the server's rules directory" in done.stderr


def test_replay_from_anywhere_matches_against_the_rules_the_server_serves(tmp_path: Path) -> None:
    """"Against the current rules": a shell outside the server's directory, giving only
    --data, read its own ./rules before (exit 1, nothing queued). It reads the rules the
    server on that --data serves; a --rules or HOOKRUNNER_RULES given still wins."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "rules").mkdir(parents=True)
    (project / "rules" / "h.yaml").write_text(CANCEL_RULES)
    elsewhere.mkdir()
    data = str(project / "data")
    server = Server(project / "rules", project / "data", project).start()
    try:
        delivery = httpx.post(f"{server.url}/hooks/h", json={}, timeout=30).json()["delivery_id"]
        done = _run("replay", delivery, "--data", data, cwd=elsewhere)
        assert done.returncode == 0, done.stderr
        assert done.stderr == (f"hookrunner: reading the rules of the server on --data {data}: "
                               f"--rules {project / 'rules'} --root {project} (give --rules to "
                               "read others)\n")
        replayed = re.fullmatch(r"replayed \S+: 1 run\(s\) queued: (\S+)\n", done.stdout)
        assert replayed, done.stdout
        assert server.wait_run(replayed[1])["status"] == "succeeded"
        explained = _run("explain", "--delivery", delivery, "--data", data, cwd=elsewhere)
        assert explained.returncode == 0, explained.stderr
        assert f"against the rules in {project / 'rules'}:" in explained.stdout
    finally:
        server.stop()
    # Where ./rules is the server's directory, nothing needs saying; the record outlives the
    # server (the last one's rules), and a --rules or its variable given is read instead.
    done = _run("replay", delivery, "--data", data, cwd=project)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    (elsewhere / "other").mkdir()
    (elsewhere / "other" / "o.yaml").write_text("hooks: {o: {verify: {none: {}}}}\n")
    for given in (["--rules", "other"], []):
        done = _run("replay", delivery, "--data", data, *given, cwd=elsewhere,
                    **({} if given else {"HOOKRUNNER_RULES": "other"}))
        assert done.returncode == 1 and "hook 'h' is not defined in the rules" in done.stderr
        assert "reading the rules of the server" not in done.stderr
    # The server's files broken (it serves the rules it loaded last): said so, not "point it
    # at the server's rules directory", which it had read.
    (project / "rules" / "broke.yaml").write_text("x: [\n")
    done = _run("replay", delivery, "--data", data, cwd=elsewhere)
    assert done.returncode == 1 and "broke.yaml" in done.stderr, done.stderr
    assert "the server's rules files have the errors above" in done.stderr
    assert "point it at the server's rules directory" not in done.stderr


def test_replay_from_a_shell_gives_runs_the_servers_default_timeout(tmp_path: Path) -> None:
    """probe: with the server started with HOOKRUNNER_DEFAULT_TIMEOUT=2s, a replay through the
    API timed out at 2 s, the same replay from a shell ran under the shell's default (1h). The
    server records its default in serving.json; a HOOKRUNNER_DEFAULT_TIMEOUT set in the shell
    still wins, and is said where it differs."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\n"
        "rules: [{name: slow, hook: h, run: {shell: {argv: [sleep, '30']}}}]\n")
    data = tmp_path / "data"
    server = Server(tmp_path / "rules", data, tmp_path,
                    env={"HOOKRUNNER_DEFAULT_TIMEOUT": "2s"}).start()
    try:
        delivery = httpx.post(f"{server.url}/hooks/h", json={}, timeout=30).json()["delivery_id"]
        shell = {k: v for k, v in os.environ.items() if k != "HOOKRUNNER_DEFAULT_TIMEOUT"}
        done = subprocess.run([*CLI, "replay", delivery, "--data", str(data)], cwd=tmp_path,
                              env=shell, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        replayed = re.fullmatch(r"replayed \S+: 1 run\(s\) queued: (\S+)\n", done.stdout)
        assert replayed, done.stdout
        started = time.monotonic()
        assert server.wait_run(replayed[1])["status"] == "timed_out"
        assert time.monotonic() - started < 20
        done = _run("replay", delivery, "--data", str(data), cwd=tmp_path,
                    HOOKRUNNER_DEFAULT_TIMEOUT="5m")
        assert done.returncode == 0, done.stderr
        assert done.stderr == ("hookrunner: note: a rule without `timeout` gets "
                               "HOOKRUNNER_DEFAULT_TIMEOUT's 5m, not the 2s of the server on "
                               f"--data {data}\n"), done.stderr
        run_id = done.stdout.split()[-1]
        with contextlib.closing(sqlite3.connect(data / "hookrunner.db")) as db:  # the shell's 5m
            assert db.execute("SELECT timeout FROM runs WHERE id = ?", (run_id,)).fetchone() \
                == (300.0,)
        with server.admin() as c:
            assert c.post(f"/api/runs/{run_id}/cancel").status_code == 202
    finally:
        server.stop()


CANCEL_RULES = """
hooks:
  h:
    verify: {none: {}}
rules:
  - name: slow
    hook: h
    when: payload.slow | default(false)
    run: {shell: {argv: ["sleep", "30"]}}
    concurrency: {key: one}
  - name: quick
    hook: h
    when: not (payload.slow | default(false))
    run: {shell: {argv: ["true"]}}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(CANCEL_RULES)
    started = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    yield started
    started.stop()


def test_cancel_says_what_it_did(tmp_path: Path, server: Server) -> None:
    def post(payload: dict[str, bool]) -> str:
        answer = httpx.post(f"{server.url}/hooks/h", json=payload, timeout=30)
        run: str = answer.json()["runs"][0]
        return run

    def cancel(run_id: str) -> str:
        done = _run("cancel", run_id, "--data", str(tmp_path / "data"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    quick = post({})
    assert server.wait_run(quick)["status"] == "succeeded"
    assert cancel(quick) == f"{quick}: already succeeded: nothing to cancel\n"

    running, waiting = post({"slow": True}), post({"slow": True})  # one key: the second waits
    deadline = time.monotonic() + 30
    with server.admin() as api:
        while api.get(f"/api/runs/{running}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert cancel(waiting) == f"{waiting}: canceled (was queued)\n"
    assert cancel(running) == (f"{running}: cancel requested (running; the server stops it "
                               "within a second)\n")
    assert server.wait_run(running, timeout=10)["status"] == "canceled"
    assert cancel(waiting) == f"{waiting}: already canceled: nothing to cancel\n"
    done = _run("cancel", "run_nope", "--data", str(tmp_path / "data"), cwd=tmp_path)
    assert done.returncode == 1 and "no run 'run_nope'" in done.stderr

    # The server died with the run running: no server will stop it "within a second".
    orphan = post({"slow": True})
    with server.admin() as api:
        while api.get(f"/api/runs/{orphan}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    server.kill()
    assert cancel(orphan) == (
        f"{orphan}: cancel requested (running when its server stopped, and no server runs on "
        "this --data now: the next start stops what is left of it, and it is not run again)\n")
    server.start()
    doc = server.wait_run(orphan, timeout=30)
    # Canceled, as asked, whatever the rule's retries (it said `failed (interrupted)` before).
    assert doc["status"] == "canceled" and len(doc["attempts"]) == 1, doc
    assert doc["reason"].startswith("canceled by request (interrupted: node "), doc


def test_runs_reads_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """A listing takes no write lock (it waited out the busy timeout behind a writer)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(CANCEL_RULES)
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    try:
        httpx.post(f"{server.url}/hooks/h", json={}, timeout=30)
    finally:
        server.stop()
    writer = sqlite3.connect(tmp_path / "data" / "hookrunner.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        done = _run("runs", "--data", str(tmp_path / "data"), cwd=tmp_path)
        took = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert done.returncode == 0 and "quick" in done.stdout, done.stderr
    assert took < 8, took  # not the 10 s busy timeout
    # Times in UTC, as the logs give them, whatever the shell's zone.
    zoned = _run("runs", "--data", str(tmp_path / "data"), cwd=tmp_path, TZ="America/New_York")
    shown = re.search(r"  (\d{4}-\d\d-\d\dT\d\d:\d\d):\d\dZ  ", zoned.stdout)
    assert shown, zoned.stdout
    near = {time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - s)) for s in range(0, 600, 30)}
    assert shown.group(1) in near, (shown.group(1), near)


def test_a_write_the_store_refuses_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`cancel` (and `replay`) write: a lock held past the busy timeout, or a full disk."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(CANCEL_RULES)
    Server(tmp_path / "rules", tmp_path / "data", tmp_path).start().stop()  # makes the store
    writer = sqlite3.connect(tmp_path / "data" / "hookrunner.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        done = _run("cancel", "run_x", "--data", str(tmp_path / "data"), cwd=tmp_path)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert done.returncode == 1, done
    assert done.stderr.startswith("hookrunner: SQLite write failed: database is locked"), done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_a_full_disk_is_named_and_the_store_still_read_where_it_can_be(tmp_path: Path) -> None:
    """Every store command said only `disk I/O error` (SQLite found no room for its -shm
    file). Reads go on from the file alone where it holds every commit and no server is on
    it; a write, or a store with a -wal file to read, names the full disk, as `serve` does."""
    from tests.integration.test_store_outage import _fill, _small_disk

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(CANCEL_RULES)
    with _small_disk(tmp_path / "disk", "2m") as data:
        server = Server(tmp_path / "rules", data, tmp_path).start()
        try:
            accepted = httpx.post(f"{server.url}/hooks/h", json={}, timeout=30).json()
        finally:
            server.stop()
        _fill(data)
        run_id, store = accepted["runs"][0], ["--data", str(data)]
        listed = _run("runs", *store, cwd=tmp_path)
        assert listed.returncode == 0 and run_id in listed.stdout, listed.stderr
        assert _run("log", run_id, *store, cwd=tmp_path).returncode == 0
        full = f"the file system of {data} is full (0 KiB free)"
        for args in (["cancel", run_id],
                     ["replay", accepted["delivery_id"], "--rules", str(tmp_path / "rules")]):
            done = _run(*args, *store, cwd=tmp_path)
            assert done.returncode == 1 and full in done.stderr, (args, done.stderr)
            assert "free some space, then try again" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
        # A -wal file a killed writer left: a read from the file alone would miss it.
        (data / "filler").unlink()
        subprocess.run([sys.executable, "-c", WAL_LEFT, str(data / "hookrunner.db")], check=True)
        (data / "hookrunner.db-shm").unlink()
        _fill(data)
        done = _run("runs", *store, cwd=tmp_path)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert f"disk I/O error, as {full}: free some space, then try again" in done.stderr


# A transaction left in the -wal file, as by a server killed before its checkpoint.
WAL_LEFT = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("INSERT INTO schema_migrations VALUES (-2, 'left in the wal', 0)")
os._exit(0)
"""


@pytest.mark.postgres
async def test_cancel_on_postgresql_says_when_the_runs_node_is_gone(
    tmp_path: Path, postgres_db: str
) -> None:
    """Its lease has run out: no node stops it "within a second"; the one that takes it over
    ends it (and does not retry it)."""
    store = PostgresStore(postgres_db)
    await store.open()
    try:
        run = await claimed(store, "gone-node", 15.0, time.time() - 60)  # its lease ran out
    finally:
        await store.close()
    done = _run("cancel", run.id, "--db", postgres_db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "its node gone-node has stopped renewing its lease" in done.stdout, done.stdout


def test_runs_shows_a_reason_with_terminal_escapes_escaped(tmp_path: Path) -> None:
    """A reason can quote a payload's value (a program path a template made): its ESC and BEL
    must not reach the operator's terminal as they are. A rule name with spaces is quoted,
    so the columns stay columns for `awk`."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text("""
hooks: {h: {verify: {none: {}}}}
rules:
  - name: 'esc "q" name'
    hook: h
    run: {shell: {argv: ["scripts/{{ payload.script }}"]}}
""")
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    try:
        answer = httpx.post(f"{server.url}/hooks/h?wait=20s",
                            json={"script": "x\x1b]0;pwned\x07\x1b[31mRED"}, timeout=30)
        assert answer.json()["runs"][0]["status"] == "failed", answer.text
    finally:
        server.stop()
    done = _run("runs", "--data", str(tmp_path / "data"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout, done.stdout
    assert "x\\u001b]0;pwned\\u0007\\u001b[31mRED" in done.stdout, done.stdout
    assert '  "esc \\"q\\" name"  attempt=1' in done.stdout, done.stdout


LOG_RULES = r"""
hooks: {h: {verify: {none: {}}}}
rules:
  - name: echo
    hook: h
    run:
      shell:
        argv: ['/bin/sh', '-c', 'printf ''hello\033[31mred\n''; echo "$0"', '{{ payload.x }}']
  - name: big
    hook: h
    run: {shell: {argv: ["/bin/sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; echo END"]}}
  - name: slow
    hook: h
    when: payload.slow | default(false)
    run: {shell: {argv: ["/bin/sh", "-c", "echo first; sleep 30"]}}
"""


def test_runs_filters_and_log_shows_a_runs_output(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(LOG_RULES)
    data = str(tmp_path / "data")
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    try:
        answer = httpx.post(f"{server.url}/hooks/h?wait=20s", json={"x": "a;b"}, timeout=30)
        echo, big = (r["id"] for r in answer.json()["runs"])
        delivery = answer.json()["delivery_id"]
        other = httpx.post(f"{server.url}/hooks/h?wait=20s", json={"x": "c"}, timeout=30).json()

        listed = _run("runs", "--rule", "echo", "--data", data, cwd=tmp_path).stdout.splitlines()
        assert len(listed) == 2 and all("  echo  " in line for line in listed), listed
        listed = _run("runs", "--delivery", delivery, "--data", data, cwd=tmp_path).stdout
        assert sorted(line.split()[0] for line in listed.splitlines()) == sorted([echo, big])
        assert other["delivery_id"] not in listed

        shown = _run("log", echo, "--data", data, cwd=tmp_path)
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        # Not a terminal: the output as the action wrote it, between hookrunner's notes.
        assert "\nhello\x1b[31mred\na;b\n[hookrunner] succeeded\n" in shown.stdout, shown.stdout
        assert shown.stdout.startswith(f"[hookrunner] run {echo} rule echo attempt 1/1")
        whole = _run("log", big, "--data", data, cwd=tmp_path).stdout  # past what memory keeps
        assert "x" * 300000 + "END\n" in whole, len(whole)

        slow = httpx.post(f"{server.url}/hooks/h", json={"slow": True}, timeout=30).json()
        with server.admin() as api:
            slow_run = next(r for r in slow["runs"]
                            if api.get(f"/api/runs/{r}").json()["rule"] == "slow")
        deadline = time.monotonic() + 20
        while "first" not in (live := _run("log", slow_run, "--data", data, cwd=tmp_path)).stdout:
            assert time.monotonic() < deadline, live
            time.sleep(0.2)
        assert live.returncode == 0 and "is still running (on node " in live.stderr, live.stderr
        with server.admin() as api:
            api.post(f"/api/runs/{slow_run}/cancel")
        assert server.wait_run(slow_run)["status"] == "canceled"
    finally:
        server.stop()
    for args, said in ((["log", echo, "--attempt", "2"], f"run {echo} has 1 attempt(s)"),
                       (["log", "run_nope"], "no run 'run_nope'"),
                       # (probe: "no runs of delivery ..." and exit 0, for one pruned too)
                       (["runs", "--delivery", "dlv_nope"], "no delivery 'dlv_nope' is stored")):
        done = _run(*args, "--data", data, cwd=tmp_path)
        assert done.returncode == 1 and said in done.stderr, (args, done.stderr)


def test_log_of_an_attempt_its_killed_server_never_saved_says_so(tmp_path: Path) -> None:
    """Killed before the output was saved anywhere (it is kept in memory for its first
    second): `log` printed nothing and exited 0, as if the action had printed nothing; then
    (probe) the log was empty, with no line saying how the attempt ended: the restart's
    record says both now."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(LOG_RULES)
    data = str(tmp_path / "data")
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    slow = httpx.post(f"{server.url}/hooks/h", json={"slow": True, "x": ""}, timeout=30).json()
    with server.admin() as api:
        slow_run = next(r for r in slow["runs"] if api.get(f"/api/runs/{r}").json()["rule"] == "slow")
        deadline = time.monotonic() + 20
        while api.get(f"/api/runs/{slow_run}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    server.kill()
    server.start()  # recovers it: failed (interrupted)
    try:
        assert server.wait_run(slow_run)["status"] == "failed"
    finally:
        server.stop()
    done = _run("log", slow_run, "--data", data, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.startswith(
        "[hookrunner] its output, kept in memory for its first second, was lost when its "
        "server stopped\n[hookrunner] failed: interrupted: node "), done
    assert done.stdout.endswith(" restarted\n") and done.stdout.count("\n") == 2, done


def test_log_of_a_run_whose_server_was_killed_says_it_stopped(tmp_path: Path) -> None:
    """`runs` said `running ... (its server has stopped)`, and `log` that the run was still
    running, with its output so far: none, for one killed within its first second."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(LOG_RULES)
    data = str(tmp_path / "data")
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    with server.admin() as api:
        def post_slow() -> str:
            runs = httpx.post(f"{server.url}/hooks/h", json={"slow": True, "x": ""},
                              timeout=30).json()["runs"]
            return next(r for r in runs if api.get(f"/api/runs/{r}").json()["rule"] == "slow")

        slow = [post_slow()]
        deadline = time.monotonic() + 20
        while "first" not in _run("log", slow[0], "--data", data, cwd=tmp_path).stdout:
            assert time.monotonic() < deadline  # the first one's output is in its log file
            time.sleep(0.2)
        slow.append(post_slow())
        while api.get(f"/api/runs/{slow[1]}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    server.kill()  # the second within its first second: its output is in memory only
    try:
        listed = _run("runs", "--rule", "slow", "--data", data, cwd=tmp_path).stdout
        assert listed.count("(its server has stopped)") == 2, listed
        for run_id, output in zip(slow, ("first\n", None), strict=True):
            done = _run("log", run_id, "--data", data, cwd=tmp_path)
            assert done.returncode == 0, done
            assert done.stdout.endswith(output) if output else done.stdout == "", done
            assert "still running" not in done.stderr, done.stderr
            assert done.stderr.startswith(f"hookrunner: run {run_id} is marked running, but its "
                                          "server has stopped"), done.stderr
            assert "the next start of the server ends it failed (interrupted)" in done.stderr
        assert "its output below is what its log file held" in \
            _run("log", slow[0], "--data", data, cwd=tmp_path).stderr
        assert "it left no output in its log file" in \
            _run("log", slow[1], "--data", data, cwd=tmp_path).stderr
    finally:
        server.start()  # stops their `sleep`s, and ends them failed (interrupted)
        try:
            assert [server.wait_run(r)["status"] for r in slow] == ["failed", "failed"]
        finally:
            server.stop()


def test_log_on_a_terminal_shows_control_characters_escaped() -> None:
    from hookrunner.commands import _for_terminal

    assert _for_terminal("a\x1b[31mb\n\tc\x07\n") == "a\\u001b[31mb\n\tc\\u0007\n"


def test_output_cut_short_by_its_reader_is_no_traceback(tmp_path: Path) -> None:
    """`hookrunner test ... | head -1`, `hookrunner log RUN | head`: the reader leaves."""
    repo = Path(__file__).resolve().parents[2]
    command = " ".join([*CLI, "test", "--rules", str(repo / "rules"), "--root", str(repo),
                        "--hook", "github", "--payload",
                        str(repo / "examples/payloads/github-push.json"),
                        "--header", "'X-GitHub-Event: push'"])
    for _ in range(3):  # the reader leaves at a different moment each time
        done = subprocess.run(["bash", "-c", f"{command} | head -c 1 >/dev/null; "
                               "echo \"status=${PIPESTATUS[0]}\""],
                              capture_output=True, text=True, timeout=60)
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
        assert done.stdout.strip() in ("status=0", "status=141"), done.stdout


def test_a_dry_run_without_the_event_header_says_why_event_is_null(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    args = ["explain", "--rules", str(repo / "rules"), "--root", str(repo), "--payload"]
    done = _run(*args, str(repo / "examples/payloads/github-push.json"), "--hook", "github",
                cwd=tmp_path)
    assert done.returncode == 0 and "`event` is null: this sender's event type is read from " \
        "its X-GitHub-Event header, which the request given lacks (add a header with " \
        "--header)" in done.stderr, done.stderr
    done = _run(*args, str(repo / "examples/payloads/github-push.json"), "--hook", "github",
                "--header", "X-GitHub-Event: push", cwd=tmp_path)
    assert "`event` is null" not in done.stderr, done.stderr
    done = _run(*args, str(repo / "examples/payloads/monitoring-overloaded.json"),
                "--hook", "monitoring", cwd=tmp_path)  # hmac: no event type to carry
    assert "`event` is null" not in done.stderr, done.stderr


def test_replay_of_one_rule_runs_only_that_rules_action(tmp_path: Path) -> None:
    """Fixing one failed action of a delivery re-runs that one, not every rule it matched."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(LOG_RULES)
    data = str(tmp_path / "data")
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    try:
        answer = httpx.post(f"{server.url}/hooks/h?wait=20s", json={"x": "a"}, timeout=30).json()
        delivery = answer["delivery_id"]
        with server.admin() as c:
            r = c.post(f"/api/deliveries/{delivery}/replay?rule=echo")
            assert r.status_code == 202 and len(r.json()["runs"]) == 1, r.text
            assert c.get(f"/api/runs/{r.json()['runs'][0]}").json()["rule"] == "echo"
            r = c.post(f"/api/deliveries/{delivery}/replay?rule=nope")
            assert r.status_code == 409 and "its rules: big, echo, slow" in r.text, r.text
            assert c.post(f"/api/deliveries/{delivery}/replay?rule=").status_code == 400
            # It takes no body: a large one is refused before anything is replayed.
            r = c.post(f"/api/deliveries/{delivery}/replay", content=b"x" * 100_000)
            assert r.status_code == 413, r.text
    finally:
        server.stop()
    done = _run("replay", delivery, "--rule", "big", "--rules", str(tmp_path / "rules"),
                "--data", data, cwd=tmp_path)
    assert done.returncode == 0 and "1 run(s) queued" in done.stdout, done
    done = _run("replay", delivery, "--rule", "slow", "--rules", str(tmp_path / "rules"),
                "--data", data, cwd=tmp_path)  # its `when` does not hold for this payload
    assert done.stdout == "" and "does not match the delivery now" in done.stderr  # one line
    assert done.returncode == 1  # `replay --rule X ID && ...` must not read it as done
    done = _run("replay", delivery, "--rule", "nope", "--rules", str(tmp_path / "rules"),
                "--data", data, cwd=tmp_path)
    assert done.returncode == 1 and "no rule 'nope' for hook 'h'" in done.stderr, done.stderr
    assert f"(read from --rules {tmp_path / 'rules'})" in done.stderr, done.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "o.yaml").write_text("hooks: {o: {verify: {none: {}}}}\n")
    done = _run("replay", delivery, "--data", data, "--rules", "other", cwd=tmp_path)
    assert done.stderr == ("hookrunner: hook 'h' is not defined in the rules (removed since, or "
                           "these are not the server's rules) (read from --rules other)\n"), done
    done = _run("replay", delivery, "--rule", "big", "--rule", "echo", "--rules",
                str(tmp_path / "rules"), "--data", data, cwd=tmp_path)
    assert done.returncode == 2 and "more than once" in done.stderr, done.stderr
    # A long log cut short by its reader: no traceback (141, or 0 where Python's write ended
    # with the part the pipe took, as `cat` may).
    big = next(line.split()[0] for line in _run("runs", "--rule", "big", "--status",
                                                 "succeeded", "--data", data,
                                                 cwd=tmp_path).stdout.splitlines())
    piped = subprocess.run(["bash", "-c", " ".join([*CLI, "log", big, "--data", data])
                            + " | head -c 10 >/dev/null; echo ${PIPESTATUS[0]}"],
                           capture_output=True, text=True, timeout=60)
    assert piped.stdout.strip() in ("0", "141") and "Traceback" not in piped.stderr, piped


def test_an_empty_filter_is_a_usage_error(tmp_path: Path) -> None:
    """`--rule "$RULE"` with RULE unset listed nothing, as if there were no runs."""
    for flag in ("--rule", "--delivery"):
        done = _run("runs", flag, "", "--data", str(tmp_path), cwd=tmp_path)
        assert done.returncode == 2 and "must not be empty" in done.stderr, done.stderr


def test_a_queued_run_says_what_it_waits_for(tmp_path: Path) -> None:
    """On call: why is this run not running? Its key's holder, its retry's time."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text("""
hooks: {h: {verify: {none: {}}}}
rules:
  - name: keyed
    hook: h
    when: not (payload.fail | default(false))
    run: {shell: {argv: [sleep, "{{ payload.sleep }}"]}}
    concurrency: {key: K}
  - name: failing
    hook: h
    when: payload.fail | default(false)
    run: {shell: {argv: ["false"]}}
    retry: {attempts: 2, backoff: 1h}
""")
    data = str(tmp_path / "data")
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    try:
        holder = httpx.post(f"{server.url}/hooks/h", json={"sleep": 30}, timeout=30).json()["runs"][0]
        waiter = httpx.post(f"{server.url}/hooks/h", json={"sleep": 0}, timeout=30).json()["runs"][0]
        retrying = httpx.post(f"{server.url}/hooks/h", json={"fail": True},
                              timeout=30).json()["runs"][0]
        with server.admin() as c:
            deadline = time.monotonic() + 20
            while (c.get(f"/api/runs/{holder}").json()["status"] != "running"
                   or c.get(f"/api/runs/{retrying}").json()["attempt"] != 1
                   or c.get(f"/api/runs/{retrying}").json()["status"] != "queued"):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert c.get(f"/api/runs/{waiter}").json()["waiting"] == {
                "for": "concurrency key", "held_by": holder}
            waiting = c.get(f"/api/runs/{retrying}").json()["waiting"]
            # 1h backoff less its 20 % jitter: at least 2,880 s away
            assert waiting["for"] == "retry" and waiting["at"] > time.time() + 2800, waiting
            assert "waiting" not in c.get(f"/api/runs/{holder}").json()
            assert f"its concurrency key, held by {holder}" in c.get(f"/runs/{waiter}").text
        listed = _run("runs", "--data", data, cwd=tmp_path).stdout
        line = next(x for x in listed.splitlines() if x.startswith(waiter))
        assert f"waiting for its concurrency key, held by {holder}" in line, line
        line = next(x for x in listed.splitlines() if x.startswith(retrying))
        assert "waiting for retry at 20" in line, line
        # What its failed attempt took, as the README says of `took=` (it said `-`).
        assert re.search(r"  took=[\d.]+m?s  delivery=", line), line
        line = next(x for x in listed.splitlines() if x.startswith(holder))
        assert re.search(r"  took=[\d.]+m?s\+  delivery=", line), line  # one word: so far
        with server.admin() as c:
            c.post(f"/api/runs/{holder}/cancel")
        server.wait_run(waiter)
    finally:
        server.stop()
    # With no server on the data dir, that is what a queued run waits for first.
    listed = _run("runs", "--data", data, cwd=tmp_path).stdout
    line = next(x for x in listed.splitlines() if x.startswith(retrying))
    assert "waiting for a server: none runs on this --data (then retry at 20" in line, line
    # Its cancel said "was queued", and the run "canceled while waiting for its next attempt".
    done = _run("cancel", retrying, "--data", data, cwd=tmp_path)
    assert done.stdout == f"{retrying}: canceled (was waiting for its next attempt)\n", done


def test_a_dry_run_shows_typed_numbers_written_in_yaml_s_other_forms(tmp_path: Path) -> None:
    """`json: {v: 3.10, m: 0755}` keeps YAML's numbers (3.1, 493); `test` crashed on them."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n  - name: web\n    hook: h\n"
        "    run: {http: {url: 'http://127.0.0.1:9/x', json: {v: 3.10, m: 0755}}}\n")
    (tmp_path / "p.json").write_text("{}")
    done = _run("test", "--rules", str(tmp_path / "rules"), "--root", str(tmp_path),
                "--hook", "h", "--payload", str(tmp_path / "p.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "v: 3.1\n" in done.stdout and "m: 493\n" in done.stdout, done.stdout


def test_delivery_shows_a_stored_delivery_without_a_token(tmp_path: Path) -> None:
    """On call, from the shell: the payload and headers behind `delivery=dlv_...`."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(LOG_RULES)
    data = str(tmp_path / "data")
    server = Server(tmp_path / "rules", tmp_path / "data", tmp_path).start()
    try:
        answer = httpx.post(f"{server.url}/hooks/h?wait=20s", json={"x": "a\x1b[31m"},
                            headers={"X-Api-Key": "s3cret-key"}, timeout=30).json()
    finally:
        server.stop()
    done = _run("delivery", answer["delivery_id"], "--data", data, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "s3cret-key" not in done.stdout and "\x1b" not in done.stdout, done.stdout
    doc = json.loads(done.stdout)
    assert doc["payload"] == {"x": "a\x1b[31m"} and doc["hook"] == "h"
    assert sorted(doc["runs"]) == sorted(r["id"] for r in answer["runs"])
    assert dict((k.lower(), v) for k, v in doc["headers"])["x-api-key"] == "[redacted]"
    done = _run("delivery", "dlv_nope", "--data", data, cwd=tmp_path)
    assert done.returncode == 1 and "no delivery 'dlv_nope'" in done.stderr


def test_a_duration_across_a_clock_step_is_not_shown_negative() -> None:
    from hookrunner.commands import _took

    assert _took(10.0, 12.34) == "2.3s" and _took(None, 3.0) == "-"
    assert _took(1e9, 1.0) == "? (the clock moved back meanwhile)"  # was `-999999999.0s`


EXPLAINED_RULES = """
hooks:
  h: {verify: {none: {}}}
rules:
  - name: main-only
    hook: h
    when:
      all:
        - payload.ref == "refs/heads/main"
        - query.env == "prod"
    run: {shell: {argv: ["true"]}}
  - name: tok
    hook: h
    when: '"token" in query and query.token == "abc"'
    run: {shell: {argv: ["true"]}}
"""


def test_explain_reads_a_stored_delivery_against_the_rules_as_they_are_now(tmp_path: Path) -> None:
    """Why did that delivery not deploy, and would it with the fixed rule? Without copying
    its payload out of the API into a file, and with its query and headers as received."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(EXPLAINED_RULES)
    server = Server(rules, tmp_path / "data", tmp_path).start()
    try:
        answer = httpx.post(f"{server.url}/hooks/h?env=prod", json={"ref": "refs/heads/dev"},
                            headers={"X-GitHub-Event": "push"}, timeout=30).json()
        secret = httpx.post(f"{server.url}/hooks/h?token=abc", json={}, timeout=30).json()
    finally:
        server.stop()
    dlv = answer["delivery_id"]
    assert answer["runs"] == []
    store = ["--data", str(tmp_path / "data"), "--rules", str(rules)]
    done = _run("explain", "--delivery", dlv, *store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{dlv} (hook h) against the rules in {rules}:"
    assert "main-only" in lines[1] and "not matched" in lines[1]
    assert '"refs/heads/dev"' in lines[2] and lines[2].lstrip().startswith("✗")
    assert lines[3].lstrip().startswith("✓") and '"prod"' in lines[3]
    (rules / "r.yaml").write_text(EXPLAINED_RULES.replace("refs/heads/main", "refs/heads/dev"))
    done = _run("explain", "--delivery", dlv, *store, cwd=tmp_path)
    assert done.returncode == 0 and " matched" in done.stdout.splitlines()[1], done.stdout
    assert "note:" not in done.stderr
    done = _run("explain", "--delivery", "dlv_nope", *store, cwd=tmp_path)
    assert done.returncode == 1 and "no delivery 'dlv_nope'" in done.stderr
    # It ran `tok` on arrival; the token was not stored, so now it cannot match: said so.
    assert len(secret["runs"]) == 1
    done = _run("explain", "--delivery", secret["delivery_id"], *store, cwd=tmp_path)
    assert done.returncode == 0 and 'query.token == "abc"  "[redacted]"' in done.stdout
    assert "note: [redacted] is a secret-looking header or query value" in done.stderr


@pytest.mark.parametrize(("args", "said"), [
    (["--delivery", "dlv_x", "--hook", "h"], "--delivery takes the request as it was received: "
                                             "leave out --hook"),
    (["--hook", "h", "--data", "d"], "--data and --db only go with --delivery"),
    (["--hook", "h"], "the following arguments are required: --payload (or --delivery ID)"),
    (["--delivery", "dlv_x", "--hook", ""], "argument --hook: must not be empty"),
    (["--hook", "h", "--payload", "p.json", "--data", ""], "--data and --db only go with --delivery"),
    (["--delivery", ""], "argument --delivery: must not be empty"),
    ([], "the following arguments are required: --hook, --payload (or --delivery ID)"),
])
def test_explain_takes_a_payload_or_a_delivery_not_both(tmp_path: Path, args: list[str],
                                                        said: str) -> None:
    done = _run("explain", *args, cwd=tmp_path)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert "leave the flag out" not in done.stderr


@pytest.mark.parametrize("args", [
    ["test", "--hook", "", "--payload", "p.json"],
    ["test", "--hook", "h", "--payload", ""],
    ["cancel", ""], ["log", ""], ["delivery", ""], ["replay", ""], ["runs", "--status", ""],
    ["check", "--root", "no-such-dir"], ["test", "--root", "p.json", "--hook", "h",
                                         "--payload", "p.json"],
])
def test_an_empty_argument_or_a_root_that_is_no_directory_is_a_usage_error(
        tmp_path: Path, args: list[str]) -> None:
    """Exit 2, as for any flag whose value cannot be right: `--payload ''` said `is a
    directory`, `cancel ''` `no run ''` (exit 1), and `check --root /nope` exit 1 where
    `serve` says exit 2."""
    (tmp_path / "p.json").write_text("{}")
    done = _run(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "must not be empty" in done.stderr or "no such directory" in done.stderr \
        or "not a directory" in done.stderr, done.stderr
