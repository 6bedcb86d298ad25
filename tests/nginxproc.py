"""A real nginx (Debian's package) as a reverse proxy in front of a test server, with the
README's `location` block for a path prefix: what the README tells users to paste is what
the tests go through."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.serverproc import free_port

README = Path(__file__).resolve().parents[1] / "README.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
START_TIMEOUT = 15.0


def readme_location(prefix: str) -> str:
    """The README's nginx `location` block for a path prefix (its upstream named `hookrunner`)."""
    blocks = re.findall(r"```nginx\n(.*?)```", README.read_text(), re.DOTALL)
    (block,) = [b for b in blocks if b.lstrip(" ").startswith(f"location {prefix}/")]
    return block


class Nginx:
    """nginx in the foreground, listening on a free loopback port, proxying to `upstream`."""

    def __init__(self, directory: Path, upstream: str, locations: str) -> None:
        self.dir = directory
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        # As root, nginx's workers would switch to `nobody`, who cannot enter pytest's 0700
        # temporary directories.
        user = "user root;" if os.geteuid() == 0 else ""
        temp = " ".join(f"{kind}_temp_path {directory}/{kind};"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (directory / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    {temp}
    upstream hookrunner {{ server {upstream}; }}
    server {{
        listen 127.0.0.1:{self.port};
{locations}
    }}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        if not Path(NGINX).exists():
            pytest.fail(f"{NGINX} is missing: `make test` installs it (its system-deps target "
                        "runs `apt-get install nginx`)", pytrace=False)
        conf = str(self.dir / "nginx.conf")
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", conf,
             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {self.errors()}")
            try:
                httpx.get(self.url + "/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start: {self.errors()}")

    def errors(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGQUIT)  # a graceful stop, workers included
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
