"""Several real `hookrunner serve` nodes on one PostgreSQL database, for the cluster tests.

Every node shares the rules and --root (so scripts and rules are the same everywhere, as in
a real deployment) but has its own --data directory and --node name. Scripts under
<root>/scripts append one line per event to files under <root>/out, which the tests read:
`O_APPEND` writes of one short line from concurrent processes never interleave.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.serverproc import Server, post_github

TEST_LEASE = "2s"
TERMINAL = ("succeeded", "failed", "timed_out", "canceled", "skipped")
HOOK = """
hooks:
  github:
    verify:
      github:
        secret: {env: GITHUB_WEBHOOK_SECRET}
"""
# Each line: `<event> <run id> <node> <attempt> <unix time with ns>`.
RECORD = 'echo "{event} $HOOKRUNNER_RUN_ID $HOOKRUNNER_NODE $HOOKRUNNER_ATTEMPT $(date +%s.%N)"'


class Nodes:
    """The nodes of one cluster test; `stop_all()` stops every node still running."""

    def __init__(self, project: Path, db: str, lease: str = TEST_LEASE) -> None:
        self.project, self.db, self.lease = project, db, lease
        self.nodes: dict[str, Server] = {}
        (project / "out").mkdir(exist_ok=True)

    def rules(self, text: str) -> None:
        (self.project / "rules" / "rules.yaml").write_text(HOOK + text)

    def server(self, name: str, workers: int = 4, args: Sequence[str] = (),
               db: str | None = None) -> Server:
        """A node, not yet started (`db`: another URL of the same database, e.g. a relay)."""
        server = Server(
            self.project / "rules", self.project / f"data-{name}", self.project,
            env={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET},
            args=["--db", db or self.db, "--node", name, "--lease", self.lease,
                  "--workers", str(workers), *args],
        )
        self.nodes[name] = server
        return server

    def start(self, *names: str, workers: int = 4) -> list[Server]:
        """Start nodes together (they migrate the fresh database at the same time)."""
        servers = [self.server(n, workers) for n in names]
        with ThreadPoolExecutor(len(servers)) as pool:
            return list(pool.map(lambda s: s.start(), servers))

    def stop_all(self) -> None:
        for s in self.nodes.values():
            s.stop()

    def lines(self, name: str) -> list[list[str]]:
        path = self.project / "out" / name
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def recording_script(project: Path, name: str, body: str = "", out: str = "events") -> None:
    """A script that appends `start ...` before `body` and `end ...` after it to out/<out>."""
    target = project / "out" / out
    start, end = RECORD.format(event="start"), RECORD.format(event="end")
    write_script(project, name, f'{start} >> "{target}"\n{body}\n{end} >> "{target}"\n')


def post(server: Server, payload: dict[str, Any], **kw: Any) -> httpx.Response:
    return post_github(server.url, GITHUB_SECRET, payload, **kw)


def post_many(servers: Sequence[Server], payloads: Sequence[dict[str, Any]],
              parallel: int = 16) -> list[httpx.Response]:
    """POST each payload to the servers in turn (round robin), `parallel` at a time."""
    def one(i: int) -> httpx.Response:
        return post(servers[i % len(servers)], payloads[i])

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(len(payloads))))


def query(db: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def statuses(db: str, run_ids: Sequence[str]) -> dict[str, str]:
    rows = query(db, "SELECT id, status FROM runs WHERE id = ANY(%s)", [list(run_ids)])
    return {r[0]: r[1] for r in rows}


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        time.sleep(0.1)


def wait_terminal(db: str, run_ids: Sequence[str], timeout: float = 60.0) -> dict[str, str]:
    """Each run's final status, once all of them have ended."""
    found: dict[str, str] = {}

    def done() -> bool:
        found.update(statuses(db, run_ids))
        return len(found) == len(run_ids) and all(s in TERMINAL for s in found.values())

    until(done, timeout, f"{len(run_ids)} runs ended; now {sorted(set(found.values()))}")
    return found


def iter_runs(responses: Sequence[httpx.Response]) -> Iterator[str]:
    for r in responses:
        yield from r.json()["runs"]


def pg_ctl(cluster: Any, *args: str) -> None:
    """Run pg_ctl on a throwaway cluster as its owner (initdb'd as `postgres` under root)."""
    argv = [str(cluster.bin / "pg_ctl"), "-D", str(cluster.dir), *args]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


class Load:
    """Posts deliveries round robin from `parallel` threads until stopped; keeps every answer
    with the time it was sent and received."""

    def __init__(self, servers: Sequence[Server], parallel: int = 6) -> None:
        self.servers, self.parallel = servers, parallel
        self.answers: list[tuple[float, float, httpx.Response]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True)
                         for i in range(parallel)]

    def _loop(self, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            server = self.servers[(i + n) % len(self.servers)]
            sent = time.time()
            try:
                answer = post(server, {"thread": i, "n": n})
            except httpx.HTTPError:  # a connection-level failure counts as "not accepted"
                continue
            finally:
                n += 1
            self.answers.append((sent, time.time(), answer))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=90)


class Relay:
    """A TCP relay from a loopback port to PostgreSQL, for one node: `cut()` drops every
    relayed connection and refuses new ones (that node's network to the database is gone)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._cut = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: str) -> str:
        return db.replace(f":{self.target}/", f":{self.port}/")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self._cut:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._cut = True
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()
        self.listener.close()
