"""Start a real `hookrunner serve` (uvicorn) as a subprocess on a free loopback port."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ADMIN_TOKEN = "test-admin-token"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Server:
    """One gateway process. `start()` waits for /readyz; `kill()` is SIGKILL (a crash)."""

    def __init__(self, rules: Path, data: Path, root: Path, *, env: dict[str, str] | None = None,
                 args: list[str] | None = None, port: int | None = None,
                 default_paths: bool = False,
                 limits: dict[int, tuple[int, int]] | None = None) -> None:
        """`default_paths`: started in `root` without --rules, --data or --root, as `make run`
        does (then `rules` and `data` must be root/rules and root/.hookrunner). `limits`:
        resource limits it starts with (`resource.RLIMIT_NOFILE: (soft, hard)`)."""
        self.limits = limits or {}
        self.rules, self.data, self.root = rules, data, root
        self.default_paths = default_paths
        self.port = port or free_port()
        self.env = {**os.environ, "HOOKRUNNER_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
        self.env.pop("TF_CLI_CONFIG_FILE", None)
        if default_paths:  # the defaults, whatever the developer's shell sets
            for name in ("RULES", "DATA", "ROOT", "DB"):
                self.env.pop(f"HOOKRUNNER_{name}", None)
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        scheme = "https" if "--ssl-certfile" in self.args else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.log_path, "ab") as log:
            self.proc = self._spawn(log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1, verify=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()  # never left running behind a failed test (it was, for the whole session)
        raise RuntimeError(f"server did not become ready:\n{self.output()}")

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        paths = [] if self.default_paths else [
            "--rules", str(self.rules), "--data", str(self.data), "--root", str(self.root)]
        return subprocess.Popen(
            [sys.executable, "-m", "hookrunner.cli", "serve", *paths, "--port", str(self.port),
             *self.args],
            cwd=self.root if self.default_paths else None,
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=self._limit if self.limits else None,
        )

    def _limit(self) -> None:
        import resource

        for which, values in self.limits.items():
            resource.setrlimit(which, values)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def ask_for_log(self, run_id: str) -> tuple[socket.socket, bytes]:
        """A raw client asking for the run's log, and its answer's head; the rest left unread
        (a follower holding one of the server's 64 log slots, where the head says 200)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        s.sendall(f"GET /api/runs/{run_id}/log HTTP/1.1\r\nHost: t\r\n"
                  f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        return s, head

    def wait_run(self, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the API until the run ends; return its record."""
        deadline = time.monotonic() + timeout
        with self.admin() as c:
            while True:
                doc: dict[str, Any] = c.get(f"/api/runs/{run_id}").json()
                if doc.get("status") in ("succeeded", "failed", "timed_out", "canceled", "skipped"):
                    return doc
                if time.monotonic() > deadline:
                    raise AssertionError(f"run {run_id} still {doc.get('status')}: {doc}")
                time.sleep(0.1)


def post_github(url: str, secret: str, payload: dict[str, Any] | bytes, *, event: str = "push",
                delivery: str | None = None, hook: str = "github", **kw: Any) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "X-Hub-Signature-256": github_signature(secret, body)}
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    return httpx.post(f"{url}/hooks/{hook}", content=body, headers=headers, timeout=60, **kw)


def read_answers(s: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """Read `count` whole HTTP answers (head, body) off a raw connection."""
    data, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, (out, data)
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(data) < length:
            chunk = s.recv(65536)
            assert chunk, (out, head, data)
            data += chunk
        out.append((head, data[:length]))
        data = data[length:]
    return out


class Capless(Server):
    """A server without capabilities (setpriv): file permissions and /proc's owner checks
    apply to it though it runs as root (as the tests do in CI)."""

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m",
             "hookrunner.cli", "serve", "--rules", str(self.rules), "--data", str(self.data),
             "--root", str(self.root), "--port", str(self.port), *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
