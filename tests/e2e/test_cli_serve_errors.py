"""`serve` mistakes as a user makes them: one line and the documented exit status (2 bad
usage, 3 cannot start), never a traceback. Each starts the real command."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serverproc import ADMIN_TOKEN, Server, free_port

CLI = [sys.executable, "-m", "hookrunner.cli"]
RULES = """
hooks:
  h:
    verify: {none: {}}
rules:
  - name: r
    hook: h
    run: {shell: {argv: ["true"]}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(RULES)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKRUNNER_")}
    return {**env, "HOOKRUNNER_ADMIN_TOKEN": ADMIN_TOKEN, **extra}


def serve(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`serve` expected to stop by itself (a server that starts would time out here)."""
    port = [] if "HOOKRUNNER_PORT" in env else ["--port", str(free_port())]
    return subprocess.run([*CLI, "serve", *port, *args], cwd=project,
                          env=_env(**env), capture_output=True, text=True, timeout=30)


def one_line(done: subprocess.CompletedProcess[str], code: int, *texts: str) -> str:
    out = done.stdout + done.stderr
    assert done.returncode == code, out
    assert "Traceback" not in out and "Application startup failed" not in out, out
    assert "server.started" not in out, out
    lines = [line for line in out.splitlines()
             if line.startswith("hookrunner:") or " server.refused " in line]
    assert len(lines) == 1, out
    for text in texts:
        assert text in lines[0], out
    return lines[0]


@pytest.mark.parametrize(("args", "env", "texts"), [
    (["--trusted-proxy", "not-a-cidr"], {}, ["--trusted-proxy: 'not-a-cidr' is not an address"]),
    ([], {"HOOKRUNNER_TRUSTED_PROXY": "bad"}, ["HOOKRUNNER_TRUSTED_PROXY: 'bad' is not"]),
    (["--port", "99999"], {}, ["--port: expected a whole number from 0 to 65535, got 99999"]),
    (["--port=-5"], {}, ["--port: expected a whole number from 0 to 65535, got -5"]),
    # probe: argparse said "invalid int value: 'abc'" where the variable's message is the
    # README's; `--port ""` was no empty flag; `--host [::1]` was exit 3 from the resolver.
    (["--port", "abc"], {}, ["hookrunner: --port: expected a whole number from 0 to 65535, "
                             "got 'abc'"]),
    (["--workers", "x"], {}, ["--workers: expected a whole number of at least 1, got 'x'"]),
    (["--http-workers", "1.5"], {}, ["--http-workers: expected a whole number from 1 to 64, "
                                     "got '1.5'"]),
    (["--max-queued", "q"], {}, ["--max-queued: expected a whole number of at least 1"]),
    (["--port", ""], {}, ["--port: empty; leave the flag out for the default"]),
    (["--host", "[::1]"], {}, ["--host: write an IPv6 address without brackets: --host ::1"]),
    # What argparse itself refuses is one line too, not its usage block.
    (["--log-format", "xml"], {}, ["argument --log-format: invalid choice: 'xml'"]),
    # A flag serve does not take: serve's usage error, pointing at serve's own help.
    (["--bogus"], {}, ["hookrunner: serve: unrecognized arguments: --bogus (see `hookrunner "
                       "serve --help`)"]),
    ([], {"HOOKRUNNER_PORT": "abc"},
     ["HOOKRUNNER_PORT: expected a whole number from 0 to 65535, got 'abc'"]),
    ([], {"HOOKRUNNER_GRACE": "soon"}, ["HOOKRUNNER_GRACE: expected a duration"]),
    ([], {"HOOKRUNNER_LOG_CAP": "big"}, ["HOOKRUNNER_LOG_CAP: expected a size like 512KiB"]),
    # The record's copy of a 1 GB log was more than the store takes as one value.
    ([], {"HOOKRUNNER_LOG_CAP": "1100MiB"}, ["HOOKRUNNER_LOG_CAP: must be 1 byte to 256MiB"]),
    (["--lease", "1ms"], {}, ["--lease: must be at least 1s, got 0.001s"]),
    (["--node", "n" * 201], {}, ["--node: at most 200 characters, got 201"]),
    (["--db", "mysql://x/y"], {}, ["--db: expected a postgresql://", "--data DIR"]),
    ([], {"HOOKRUNNER_DB": "/tmp/some.db"}, ["HOOKRUNNER_DB: expected a postgresql://"]),
    # An unescaped '@' in the password: refused before libpq could echo part of it.
    (["--db", "postgresql://u:p@Sup3rS3cret@127.0.0.1/db"], {}, ["--db: the URL has more "
                                                                  "than one '@'", "%40"]),
    # An empty flag (`--host "$BIND"` with BIND unset) is not the default: an empty host
    # listened on every interface.
    (["--node", ""], {}, ["--node: empty; leave the flag out for the default"]),
    (["--pass-env", "A=B"], {}, ["--pass-env: 'A=B' is not an environment variable name"]),
    (["--pass-env", "A-B"], {}, ["--pass-env: 'A-B' is not an environment variable name"]),
    (["--host", ""], {}, ["--host: empty; leave the flag out for the default"]),
    # A repeatable one too: `--trusted-proxy "$LB_NET"` with LB_NET unset trusted no proxy
    # and hid HOOKRUNNER_TRUSTED_PROXY.
    (["--trusted-proxy", ""], {"HOOKRUNNER_TRUSTED_PROXY": "127.0.0.1"},
     ["--trusted-proxy: empty; leave the flag out for the default"]),
    (["--pass-env", " , "], {}, ["--pass-env: empty; leave the flag out for the default"]),
    # `10.0.1.11/8`, meant as one load balancer, trusted all of 10.0.0.0/8.
    (["--trusted-proxy", "10.0.1.11/8"], {}, ["--trusted-proxy: '10.0.1.11/8' has bits set "
                                              "past its prefix: it would trust all of "
                                              "10.0.0.0/8; write 10.0.1.11 for that one "
                                              "address, or 10.0.0.0/8 for the network"]),
    (["--rules", ""], {}, ["--rules: empty"]),
    (["--data", ""], {}, ["--data: empty"]),
    # probe: only spaces were taken: `--data " "` made a directory named " ", `--rules " "`
    # started with no rules, `--host " "` was exit 3.
    (["--data", " "], {}, ["--data: empty"]),
    (["--rules", " \t"], {}, ["--rules: empty"]),
    (["--host", " "], {}, ["--host: empty; leave the flag out for the default"]),
    # A '/' in the password: the host part would end there, and the rest be quoted.
    (["--db", "postgresql://u:Sup3rS3cret/x@127.0.0.1/db"], {},
     ["--db: the URL has an '@' after its host part", "%2F"]),
    # A message names the variable a bad value came from.
    ([], {"HOOKRUNNER_ROOT": "/nonexistent_root"}, ["HOOKRUNNER_ROOT /nonexistent_root: no such"]),
    (["--ssl-certfile", "/nonexist.pem", "--ssl-keyfile", "/nonexist.key"], {},
     ["--ssl-certfile /nonexist.pem: no such file"]),
    (["--ssl-certfile", "/etc/hostname"], {}, ["--ssl-certfile and --ssl-keyfile", "go together"]),
    # Every run would fail on it ("working directory ... is not usable").
    (["--root", "/nonexistent_root"], {}, ["--root /nonexistent_root: no such directory"]),
    ([], {"HOOKRUNNER_SSL_KEYFILE": "/etc/hostname"}, ["go together"]),
])
def test_bad_usage_is_one_line_and_exit_2(project: Path, args: list[str], env: dict[str, str],
                                           texts: list[str]) -> None:
    line = one_line(serve(project, *args, **env), 2, *texts)
    assert "--grace" not in line and "--log-cap" not in line  # no such flags
    assert "Sup3rS3cret" not in line
    assert not (project / ".hookrunner").exists()  # refused before anything was created


@pytest.mark.parametrize(("token", "said"), [
    ("Sup3rS3cret\x01Sup3rS3cret", "character 12 is a control character (U+0001)"),
    ("Sup3rS3cret\nSup3rS3cret\n", "character 12 is a control character (U+000A)"),
    ("Sup3rS3cret\x7fSup3rS3cret", "character 12 is a control character (U+007F)"),
    ("Sup3rS3cret\u2028Sup3rS3cret", "character 12 is whitespace (U+2028)"),
    ("Sup3rS3cret\tSup3rS3cret", "character 12 is a control character (U+0009)"),
])
def test_an_admin_token_no_client_can_send_is_refused_at_start(project: Path, token: str,
                                                                said: str) -> None:
    """probe: HOOKRUNNER_ADMIN_TOKEN with a control character or a newline inside was taken,
    and then every client sending it got a 400 (invalid HTTP request): exit 2 now, without
    quoting the token."""
    line = one_line(serve(project, HOOKRUNNER_ADMIN_TOKEN=token), 2,
                    f"hookrunner: HOOKRUNNER_ADMIN_TOKEN: {said}: an Authorization header "
                    "cannot carry it as a bearer token")
    assert "Sup3rS3cret" not in line
    assert not (project / ".hookrunner").exists()


def test_a_flags_surrounding_spaces_are_dropped_as_a_variables_are(project: Path) -> None:
    """probe: flags were taken with their spaces where variables were stripped: the same
    quoting slip (`--rules "rules "`) named another directory than HOOKRUNNER_RULES did."""
    done = subprocess.run([*CLI, "check", "--rules", " rules "], cwd=project, env=_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("setup", "held"), [
    ("CREATE TABLE users (id); CREATE TABLE posts (id)", " (it holds 'posts', 'users')"),
    ("PRAGMA user_version = 7", " (no tables, but a user_version"),
])
def test_another_programs_sqlite_file_is_refused_and_left_as_it_was(
        project: Path, setup: str, held: str) -> None:
    """probe: a hookrunner.db under --data that was another program's SQLite file was said by
    `runs` to be "from an older hookrunner", and `serve` migrated hookrunner's tables into it
    (switching it to WAL): refused now, serve exit 3, the commands exit 1, the file unchanged."""
    data = project / "data"
    data.mkdir()
    with contextlib.closing(sqlite3.connect(data / "hookrunner.db")) as db:
        db.executescript(setup)
    before = (data / "hookrunner.db").read_bytes()
    said = f"{data / 'hookrunner.db'} is not a hookrunner database{held}"
    one_line(serve(project, "--data", str(data)), 3, "server.refused", said)
    for args in (["runs"], ["delivery", "dlv_x"], ["cancel", "run_x"]):
        done = subprocess.run([*CLI, *args, "--data", str(data)], cwd=project, env=_env(),
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 1 and said in done.stderr, done.stderr
        assert "older hookrunner" not in done.stderr
    assert (data / "hookrunner.db").read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == ["hookrunner.db"]


def test_a_certificate_that_does_not_load_is_exit_3(project: Path) -> None:
    (project / "cert.pem").write_text("not a certificate\n")
    (project / "key.pem").write_text("not a key\n")
    one_line(serve(project, "--ssl-certfile", "cert.pem", "--ssl-keyfile", "key.pem"), 3,
             "server.refused", "cannot load --ssl-certfile cert.pem", "PEM certificate")


def test_a_chain_in_the_wrong_order_or_a_directory_says_so(project: Path) -> None:
    """A chain with the intermediate first read as "key values mismatch" alone; a directory
    given as the certificate said "Is a directory" without naming it."""
    make = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run([*make, "-subj", "/CN=ca", "-keyout", str(project / "ca.key"),
                    "-out", str(project / "ca.pem")], check=True, capture_output=True)
    subprocess.run([*make, "-subj", "/CN=localhost", "-keyout", str(project / "key.pem"),
                    "-out", str(project / "leaf.pem")], check=True, capture_output=True)
    (project / "chain.pem").write_text((project / "ca.pem").read_text()
                                       + (project / "leaf.pem").read_text())
    one_line(serve(project, "--ssl-certfile", "chain.pem", "--ssl-keyfile", "key.pem"), 3,
             "server.refused", "must start with the server's own certificate")
    (project / "certs").mkdir()
    one_line(serve(project, "--ssl-certfile", "certs", "--ssl-keyfile", "key.pem"), 3,
             "server.refused", "cannot read the TLS certificate or key (certs, key.pem)")


def test_an_encrypted_key_is_exit_3_not_a_passphrase_prompt(project: Path) -> None:
    """OpenSSL would ask for the passphrase on the terminal, and the start hang there."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-passout", "pass:x",
                    "-keyout", str(project / "key.pem"), "-out", str(project / "cert.pem"),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    done = serve(project, "--ssl-certfile", "cert.pem", "--ssl-keyfile", "key.pem")
    one_line(done, 3, "server.refused", "--ssl-keyfile key.pem is encrypted")
    assert "pass phrase" not in done.stdout + done.stderr


@pytest.mark.parametrize(("data", "text"), [
    ("/proc/nope", "cannot create --data /proc/nope: No such file or directory"),
    ("a-file", "is not a directory"),
    ("/proc/sys", "--data /proc/sys is not writable by this user"),  # read-only even for root
])
def test_a_data_dir_that_cannot_be_used_is_exit_3(project: Path, data: str, text: str) -> None:
    (project / "a-file").write_text("")
    one_line(serve(project, "--data", data), 3, "server.refused", text)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A data dir on a file system mounted read-only (root may write everywhere else)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("needs to mount a tmpfs (root, outside a locked-down container)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_data_dir_on_a_read_only_file_system_is_said_so(project: Path, read_only: Path) -> None:
    """As root `not writable by this user` was wrong; `runs` said only `unable to open`."""
    data = read_only / "data"
    data.mkdir()
    with contextlib.closing(sqlite3.connect(data / "hookrunner.db")) as db:  # as the store's
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
    subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
    one_line(serve(project, "--data", str(data)), 3, "server.refused",
             f"--data {data} is on a read-only file system")
    done = subprocess.run([*CLI, "runs", "--data", str(data)], cwd=project, env=_env(),
                          capture_output=True, text=True, timeout=30)
    one_line(done, 1, "is on a read-only file system, and SQLite writes beside its database")


def test_an_admin_token_that_cannot_be_written_is_exit_3(project: Path) -> None:
    """A full disk (here: a dangling link where the file goes) when no HOOKRUNNER_ADMIN_TOKEN
    is set: one line, not a traceback from the app's set-up."""
    data = project / ".hookrunner"
    data.mkdir(mode=0o700)
    (data / "admin-token").symlink_to(project / "nowhere" / "token")
    env = {k: v for k, v in _env().items() if k != "HOOKRUNNER_ADMIN_TOKEN"}
    done = subprocess.run([*CLI, "serve", "--port", str(free_port())], cwd=project, env=env,
                          capture_output=True, text=True, timeout=30)
    one_line(done, 3, "server.refused", "cannot write the admin token to")


def test_an_unreachable_postgresql_is_one_line_without_the_password(project: Path) -> None:
    with socket.socket() as s:  # a port that is certainly closed: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"postgresql://hr:s3cret-pw@127.0.0.1:{s.getsockname()[1]}/x"
        done = serve(project, "--db", url)
    line = one_line(done, 3, "server.refused", "cannot reach PostgreSQL at 127.0.0.1:",
                    "Connection refused")
    assert "s3cret-pw" not in done.stdout + done.stderr, line
    assert "pool" not in done.stdout + done.stderr  # no psycopg pool retries
    # A password too short to replace ("p" is in "port"): the message goes, not the password.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        done = serve(project, "--db", f"postgresql://hr:p@127.0.0.1:{s.getsockname()[1]}/x")
    line = one_line(done, 3, "server.refused", "cannot reach PostgreSQL at 127.0.0.1:")
    assert "***" not in line and "it may hold the password" in line, line


def test_a_port_in_use_stops_the_start_before_it_is_announced(project: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run([*CLI, "serve", "--port", str(port)], cwd=project, env=_env(),
                              capture_output=True, text=True, timeout=60)
    one_line(done, 3, "server.refused", f"cannot listen on 127.0.0.1:{port}: Address already in use",
             "choose another port with --port or HOOKRUNNER_PORT")


@pytest.fixture
def running(project: Path) -> Iterator[Server]:
    server = Server(project / "rules", project / "data", project).start()
    yield server
    server.stop()


def test_a_second_server_on_the_same_data_is_one_line(project: Path, running: Server) -> None:
    for extra in ([], ["--http-workers", "2"]):
        done = serve(project, "--data", str(project / "data"), *extra)
        one_line(done, 3, "server.refused", "another server is running with this --data")
    assert httpx.get(running.url + "/readyz").status_code == 200  # the first is untouched


def test_a_refused_second_server_leaves_the_first_ones_token_file(project: Path) -> None:
    """Started by mistake with another HOOKRUNNER_ADMIN_TOKEN: refused, and the running
    server's generated token file is still there to `cat`."""
    env = {k: v for k, v in _env().items() if k != "HOOKRUNNER_ADMIN_TOKEN"}
    first = Server(project / "rules", project / "data", project)
    first.env.pop("HOOKRUNNER_ADMIN_TOKEN")
    first.start()
    try:
        token = (project / "data" / "admin-token").read_text()
        done = subprocess.run([*CLI, "serve", "--port", str(free_port()), "--data",
                               str(project / "data")], cwd=project, capture_output=True,
                              text=True, timeout=30, env={**env, "HOOKRUNNER_ADMIN_TOKEN": "x"})
        one_line(done, 3, "server.refused", "another server is running")
        assert (project / "data" / "admin-token").read_text() == token
    finally:
        first.stop()


def test_port_0_takes_a_free_port_and_logs_which(project: Path) -> None:
    log = project / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*CLI, "serve", "--port", "0"], cwd=project, env=_env(),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"server\.started .*listen=http://127\.0\.0\.1:(\d+)",
                                      log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        port = int(found.group(1))
        assert port > 0
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_sighup_is_made_harmless_before_the_slow_imports() -> None:
    """The window in which a SIGHUP kills `serve` is the interpreter's start alone: importing
    asyncio took ~35 ms, and a SIGHUP in it killed the server (6 of 6 at 45 ms)."""
    probe = ("import signal, sys\n"
             "seen = []\n"
             "def hook(name, args):\n"
             "    if name == 'import' and args[0] == 'asyncio' and not seen:\n"
             "        seen.append(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)\n"
             "sys.addaudithook(hook)\n"
             "sys.argv = ['hookrunner', 'serve']\n"
             "import hookrunner.cli\n"
             "print(seen)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=30, env=_env())
    assert done.stdout.strip() == "[True]", done.stdout + done.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_while_starting_does_not_kill_the_server(project: Path, workers: int) -> None:
    """`systemctl reload` right after a start: from the moment `serve` runs (its first
    instructions make SIGHUP harmless) until the loop takes it as "reload"."""
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--http-workers", str(workers)],
                            cwd=project, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30

        def handled(pid: int) -> bool:
            fields = dict(line.split(":", 1) for line in
                          Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
            return bool((int(fields["SigIgn"], 16) | int(fields["SigCgt"], 16)) & 1)

        while not handled(proc.pid):  # the interpreter's own start is out of our hands
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        hups = 0
        while True:
            proc.send_signal(signal.SIGHUP)
            hups += 1
            assert proc.poll() is None, f"killed by SIGHUP number {hups}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGHUP)  # a reload now
        time.sleep(0.5)
        assert proc.poll() is None
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_pass_env_takes_commas_as_its_variable_does_and_warns_of_unset_names(
    project: Path,
) -> None:
    from hookrunner.settings import load_settings

    flags = {"pass_env": ["FOO,BAR", "BAZ"]}
    assert load_settings(flags, {}, ["pass_env"]).pass_env == ("FOO", "BAR", "BAZ")
    assert load_settings({}, {"HOOKRUNNER_PASS_ENV": "FOO, BAR"}, ["pass_env"]).pass_env == (
        "FOO", "BAR")
    server = Server(project / "rules", project / "data", project,
                    env={"FOO": "1"}, args=["--pass-env", "FOO,NOPE_UNSET_X"]).start()
    try:
        assert re.search(r"server\.pass_env_unset .*names=NOPE_UNSET_X", server.output())
    finally:
        server.stop()


def test_host_double_colon_listens_on_ipv4_and_ipv6(project: Path) -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6 on this machine")
    server = Server(project / "rules", project / "data", project, args=["--host", "::"]).start()
    try:  # start() waited for 127.0.0.1
        assert httpx.get(f"http://[::1]:{server.port}/healthz", timeout=5).status_code == 200
        assert f"listen=http://[::]:{server.port}" in server.output()
    finally:
        server.stop()


def test_a_refused_server_leaves_the_store_unopened(project: Path) -> None:
    """Opening migrates the schema: that happened before the refusal, under an older server
    still running on the data dir (a deploy starting the new version early)."""
    data = project / "data"
    data.mkdir(mode=0o700)
    with open(data / "hookrunner.db.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running server holds it
        one_line(serve(project, "--data", str(data)), 3, "another server is running")
    assert not (data / "hookrunner.db").exists()


def test_a_lock_file_that_cannot_be_opened_is_one_line(project: Path) -> None:
    (project / "data" / "hookrunner.db.lock").mkdir(parents=True)
    one_line(serve(project, "--data", str(project / "data")), 3,
             "cannot open the store", "hookrunner.db.lock: Is a directory")


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's own are 0700), for runs as nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to act as another user")
    if subprocess.run([*NOBODY, *CLI, "--version"], capture_output=True).returncode != 0:
        pytest.skip("this checkout is not readable by other users")
    path = Path(tempfile.mkdtemp(prefix="hookrunner-perm-"))
    path.chmod(0o755)
    (path / "rules").mkdir()
    (path / "rules" / "h.yaml").write_text(RULES)
    yield path
    shutil.rmtree(path)


def test_a_database_file_the_server_cannot_write_is_refused_at_start(shared_dir: Path) -> None:
    """Restored as root: the server started, and answered every hook 503 for good."""
    data = shared_dir / "data"
    data.mkdir(mode=0o700)
    sqlite3.connect(data / "hookrunner.db").close()
    os.chown(data, 65534, 65534)
    done = subprocess.run([*NOBODY, *CLI, "serve", "--port", str(free_port()), "--data",
                           str(data), "--rules", str(shared_dir / "rules"), "--root",
                           str(shared_dir)], env=_env(), capture_output=True, text=True,
                          timeout=30, cwd=shared_dir)
    one_line(done, 3, "hookrunner.db is not writable by this user", "belongs to uid 0")


def test_store_commands_on_a_data_dir_this_user_cannot_read_say_so(shared_dir: Path) -> None:
    data = shared_dir / "data"
    data.mkdir(mode=0o700)
    sqlite3.connect(data / "hookrunner.db").close()
    for args in (["runs"], ["log", "run_x"], ["delivery", "dlv_x"], ["cancel", "run_x"]):
        done = subprocess.run([*NOBODY, *CLI, *args, "--data", str(data)], env=_env(),
                              capture_output=True, text=True, timeout=30, cwd=shared_dir)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr == (f"hookrunner: cannot read {data} (root's): permission denied; "
                               "run this as the server's user (e.g. `sudo -u <user> "
                               "hookrunner ...`)\n"), done.stderr


def test_a_database_emptied_under_its_history_is_refused_not_started_afresh(
    project: Path,
) -> None:
    """0 bytes where runs have started: a new store would forget every queued run and every
    id dedup holds. `runs` said "from an older hookrunner: start serve to upgrade it"."""
    data = project / "data"
    server = Server(project / "rules", data, project).start()
    try:
        assert httpx.post(f"{server.url}/hooks/h", json={}, timeout=30).status_code == 202
    finally:
        server.stop()
    (data / "hookrunner.db").write_bytes(b"")
    for name in ("hookrunner.db-wal", "hookrunner.db-shm"):
        (data / name).unlink(missing_ok=True)
    one_line(serve(project, "--data", str(data)), 3, "hookrunner.db is empty (0 bytes), but a "
             "server has run with", "restore it from a backup, or move")
    done = subprocess.run([*CLI, "runs", "--data", str(data)], cwd=project, env=_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stderr.startswith(
        f"hookrunner: {data / 'hookrunner.db'} is empty (0 bytes)"), done.stderr
    # Removed rather than restored, it is still not a new store where one has run.
    (data / "hookrunner.db").unlink()
    one_line(serve(project, "--data", str(data)), 3, "hookrunner.db does not exist, but a "
             "server has run with", "the file was deleted; restore it from a backup, or move")
    # The store commands say so too (they said "no hookrunner store at ... (is --data right?)").
    for args in (["runs"], ["log", "run_x"], ["delivery", "dlv_x"]):
        done = subprocess.run([*CLI, *args, "--data", str(data)], cwd=project, env=_env(),
                              capture_output=True, text=True, timeout=30)
        one_line(done, 1, "hookrunner.db does not exist, but a server has run with",
                 "the file was deleted; restore it from a backup, or move")
    data.rename(project / "data.old")  # as the message says: a new store
    server.start()
    server.stop()


def _until_logged(server: Server, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while what not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)


@pytest.mark.parametrize(("how", "workers"), [("removed", 1), ("replaced", 1), ("removed", 2)])
def test_a_database_deleted_under_a_running_server_is_saved_and_the_restart_refused(
    project: Path, how: str, workers: int,
) -> None:
    """The server still held the deleted file: it saves it (once, whatever the number of
    processes), refuses the restart that would have started afresh, and the saved copy put
    back keeps every run and every dedup id."""
    (project / "rules" / "h.yaml").write_text(RULES.replace(
        "verify: {none: {}}", "verify: {none: {}}\n    dedup: '{{ payload.at }}'"))
    data = project / "data"
    server = Server(project / "rules", data, project,
                    args=["--http-workers", str(workers)]).start()
    try:
        first = httpx.post(f"{server.url}/hooks/h", json={"at": 1}, timeout=30)
        assert first.status_code == 202, first.text
        assert server.wait_run(first.json()["runs"][0])["status"] == "succeeded"
        (data / "hookrunner.db").unlink()
        if how == "replaced":
            (data / "hookrunner.db").write_bytes(b"")
        for _ in range(2 * workers):  # answered at once: the copy is made meanwhile
            refused = httpx.post(f"{server.url}/hooks/h", json={"at": 2}, timeout=30)
            assert refused.status_code == 503, refused.text
        _until_logged(server, "store.database_saved")
    finally:
        server.stop()
    saved = list(data.glob("hookrunner.db.sav*"))
    assert len(saved) == 1 and saved[0].stat().st_mode & 0o777 == 0o600, saved
    assert ".saved-" in saved[0].name and server.output().count("store.database_saved") == 1
    assert "store.database_not_saved" not in server.output()
    one_line(serve(project, "--data", str(data)), 3,
             "hookrunner.db does not exist" if how == "removed" else "is empty (0 bytes)",
             f"restore it: move {saved[0]} (saved by the server that saw it go)")
    for name in ("hookrunner.db", "hookrunner.db-wal", "hookrunner.db-shm"):
        (data / name).unlink(missing_ok=True)
    saved[0].rename(data / "hookrunner.db")
    server.start()
    try:
        again = httpx.post(f"{server.url}/hooks/h", json={"at": 1}, timeout=30)
        assert again.status_code == 200 and again.json()["delivery_id"] == \
            first.json()["delivery_id"], again.text
        runs = server.admin().get("/api/runs").json()
        assert sorted(r["id"] for r in runs["runs"]) == sorted(first.json()["runs"])
    finally:
        server.stop()


def test_a_database_deleted_just_before_a_stop_is_saved_by_the_stop(project: Path) -> None:
    """A save owed and not yet made (none tried, or one failed on a full disk, the next a
    minute later): the stop closed the only way to the data, and nothing said so."""
    (project / "rules" / "h.yaml").write_text(RULES)
    data = project / "data"
    server = Server(project / "rules", data, project).start()
    first = httpx.post(f"{server.url}/hooks/h", json={}, timeout=30)
    assert first.status_code == 202, first.text
    assert server.wait_run(first.json()["runs"][0])["status"] == "succeeded"
    (data / "hookrunner.db").unlink()
    server.stop()
    (saved,) = data.glob("hookrunner.db.saved-*")
    assert "store.database_saved" in server.output() and "store.database_lost" not in \
        server.output(), server.output()
    with contextlib.closing(sqlite3.connect(saved)) as db:
        assert [row[0] for row in db.execute("SELECT id FROM deliveries")] == [
            first.json()["delivery_id"]]


def test_no_202_of_a_burst_is_missing_from_the_copy_of_a_database_replaced_under_it(
    project: Path,
) -> None:
    """--http-workers 3 under a burst: a worker checked the file before waiting for the write
    lock, then committed into the lost file after the main process had copied it (1-3 of
    such 202s lost in 3 of 4 runs)."""
    (project / "rules" / "h.yaml").write_text(RULES)
    data = project / "data"
    server = Server(project / "rules", data, project, args=["--http-workers", "3"]).start()
    accepted: list[str] = []
    stop = time.monotonic() + 4

    def post() -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop:
                with contextlib.suppress(httpx.HTTPError):
                    r = client.post(f"{server.url}/hooks/h", json={})
                    if r.status_code == 202:
                        accepted.append(r.json()["delivery_id"])

    try:
        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(2)
        # A backup of it restored in its place (another program's file is refused at start).
        other = project / "other.db"
        with contextlib.closing(sqlite3.connect(data / "hookrunner.db")) as live, \
                contextlib.closing(sqlite3.connect(other)) as copy:
            live.backup(copy)
        os.replace(other, data / "hookrunner.db")
        for t in threads:
            t.join()
        _until_logged(server, "store.database_saved")
    finally:
        server.stop()
    (saved,) = data.glob("hookrunner.db.saved-*")
    with contextlib.closing(sqlite3.connect(saved)) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM deliveries")}
    assert accepted and not set(accepted) - stored, sorted(set(accepted) - stored)
    # The lost file's write-ahead log was moved aside: a start on the replacement applied it
    # there ("database disk image is malformed" once the first 202s had been answered).
    assert not (data / "hookrunner.db-wal").exists() and list(data.glob("hookrunner.db-wal.lost-*"))
    server.start()
    try:
        answer = httpx.post(f"{server.url}/hooks/h", json={}, timeout=30)
        assert answer.status_code == 202, answer.text
        assert server.wait_run(answer.json()["runs"][0])["status"] == "succeeded"
    finally:
        server.stop()
    assert "malformed" not in server.output()


def test_a_refused_server_writes_no_token_file_for_nothing(project: Path, running: Server) -> None:
    """The running server has its token from the environment: the refused one generated a
    file anyway, and `cat data/admin-token` then gave a token the running server refused."""
    env = {k: v for k, v in _env().items() if k != "HOOKRUNNER_ADMIN_TOKEN"}
    done = subprocess.run([*CLI, "serve", "--port", str(free_port()), "--data",
                           str(project / "data")], cwd=project, capture_output=True, text=True,
                          timeout=30, env=env)
    one_line(done, 3, "server.refused", "another server is running with this --data")
    assert not (project / "data" / "admin-token").exists()
