"""A throwaway PostgreSQL cluster for tests and benchmarks.

    python -m tests.pgcluster start DIR   # init (once) and start; prints the URL
    python -m tests.pgcluster stop DIR

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user and
every command goes through `runuser -u postgres --`. Listens on 127.0.0.1 only, trust auth.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PG_USER = "postgres"
INSTALL_HINT = "PostgreSQL binaries not found: install them with `apt-get install -y postgresql`"


def find_bin() -> Path:
    """The directory holding initdb and pg_ctl (env HOOKRUNNER_PG_BIN, else the newest)."""
    explicit = os.environ.get("HOOKRUNNER_PG_BIN")
    candidates = [explicit] if explicit else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]),
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path and not explicit:
        candidates.append(str(Path(on_path).parent))
    for c in candidates:
        if (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise RuntimeError(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Cluster:
    dir: Path
    port: int
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            _as_owner([str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", "immediate", "stop"]),
            check=False, capture_output=True,
        )


def start(directory: Path | None = None, port: int | None = None) -> Cluster:
    """Init `directory` if it holds no cluster yet, then start it (if not running)."""
    pg_bin = find_bin()
    d = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="hookrunner-pg-"))
    d.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(d, PG_USER, PG_USER)
        d.chmod(0o700)
        if subprocess.run(_as_owner(["test", "-w", str(d)]), check=False).returncode != 0:
            raise RuntimeError(f"user {PG_USER} cannot reach {d}: make its parents searchable")
    if not (d / "PG_VERSION").exists():
        init = subprocess.run(
            _as_owner([str(pg_bin / "initdb"), "-D", str(d), "-U", PG_USER, "-A", "trust",
                       "--no-sync", "-E", "UTF8"]),
            capture_output=True, text=True,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
    status = subprocess.run(_as_owner([str(pg_bin / "pg_ctl"), "-D", str(d), "status"]),
                            capture_output=True, check=False)
    if status.returncode == 0:  # already running: line 4 of postmaster.pid is its port
        return Cluster(d, int((d / "postmaster.pid").read_text().splitlines()[3]), pg_bin)
    port = port or free_port()
    opts = f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off"
    proc = subprocess.run(
        _as_owner([str(pg_bin / "pg_ctl"), "-D", str(d), "-l", str(d / "server.log"), "-w",
                   "-o", opts, "start"]),
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        log = (d / "server.log").read_text(errors="replace")[-2000:] if (
            d / "server.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {proc.stdout}{proc.stderr}\n{log}")
    return Cluster(d, port, pg_bin)


def stop(directory: Path) -> None:
    Cluster(Path(directory), 0, find_bin()).stop()


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def create_database(url: str) -> str:
    """Create a fresh database on the cluster at `url`; return its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(url, name)


def drop_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    admin = with_database(url, "postgres")
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.pgcluster start|stop DIR", file=sys.stderr)
        return 2
    if argv[0] == "start":
        print(start(Path(argv[1]).resolve()).url)
    else:
        stop(Path(argv[1]).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
