"""Helpers shared by the benchmarks: servers on loopback ports, signed bodies, wrk, /proc.

Every helper is bounded: servers are stopped by the caller's `with`, wrk runs for a fixed
duration, and waits have deadlines. Nothing here asserts timing: the scripts print figures.
(`cluster.py`, for the 3-node PostgreSQL figures, is meant to reuse `start_hookrunner`,
`run_wrk` and `ProcessSampler` with `--db`.)
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
GITHUB_SECRET = "bench-only-github-secret"  # a benchmark secret, never a real one
# The github hook every benchmark serves, and a rule that never matches (journal only).
HOOK = """
hooks:
  github:
    verify:
      github:
        secret: {env: GITHUB_WEBHOOK_SECRET}
    max_body: 5MiB
"""
NO_MATCH_RULE = HOOK + """
rules:
  - name: release-tags-only
    hook: github
    when: event == "push" and payload.ref is match("refs/tags/v.*")
    run:
      shell:
        argv: ["true"]
"""
BODY_SIZE = 5 * 1024 + 300  # ~5.4 KB, as the ceilings in findings.md were measured with
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
SAMPLE_EVERY = 0.05  # seconds between process-tree samples
WRK_LUA = BENCH / "wrk_count.lua"


# --- bodies -------------------------------------------------------------------------------


def github_push(size: int = BODY_SIZE, ref: str = "refs/heads/main", **extra: Any) -> bytes:
    """A GitHub push payload padded with commits to about `size` bytes (never less)."""
    doc: dict[str, Any] = {
        "ref": ref,
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "repository": {"id": 1296269, "name": "hello-world", "full_name": "octocat/hello-world",
                       "private": False, "html_url": "https://github.com/octocat/hello-world",
                       "default_branch": "main"},
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "sender": {"login": "octocat", "id": 1, "type": "User"},
        "commits": [],
        **extra,
    }
    n = 0
    while len(json.dumps(doc)) < size:
        n += 1
        doc["commits"].append({
            "id": hashlib.sha1(str(n).encode()).hexdigest(),
            "message": f"Commit {n}: tidy the deploy script and its tests",
            "author": {"name": "The Octocat", "email": "octocat@example.com"},
            "timestamp": "2026-11-28T12:00:00Z",
            "added": [], "removed": [], "modified": [f"src/module_{n}.py"],
        })
    return json.dumps(doc).encode()


def github_signature(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(body: bytes, secret: str = GITHUB_SECRET) -> dict[str, str]:
    """Signed push headers without X-GitHub-Delivery, so repeated bodies never dedup."""
    return {"Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-Hub-Signature-256": github_signature(body, secret)}


# --- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Proc:
    """A server subprocess on a loopback port; `stop()` is SIGTERM, then SIGKILL."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def spawn(name: str, argv: Sequence[str], log: Path, ready_url: str, port: int, *,
          env: dict[str, str] | None = None, cwd: Path | None = None,
          ready_status: int = 200) -> Proc:
    """Start `argv` in its own session and wait until `ready_url` answers `ready_status`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    p = Proc(name, proc, port, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited {proc.returncode}:\n{p.output()}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as r:
                if r.status == ready_status:
                    return p
        except urllib.error.HTTPError as exc:
            if exc.code == ready_status:
                return p
        except OSError:
            pass
        time.sleep(0.1)
    p.stop()
    raise RuntimeError(f"{name} did not become ready:\n{p.output()}")


def start_hookrunner(workdir: Path, rules: str, *, args: Sequence[str] = (),
                     env: dict[str, str] | None = None, name: str = "hookrunner") -> Proc:
    """`hookrunner serve` with `rules` written to `workdir/rules`, data in `workdir/data`,
    `--root workdir`. Pass `--db postgresql://...` in `args` for the shared store."""
    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    (workdir / "rules" / "bench.yaml").write_text(rules)
    port = free_port()
    full_env = {**os.environ, "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
                "HOOKRUNNER_ADMIN_TOKEN": "bench-admin-token", **(env or {})}
    argv = [PYTHON, "-m", "hookrunner.cli", "serve", "--rules", str(workdir / "rules"),
            "--data", str(workdir / "data"), "--root", str(workdir), "--port", str(port), *args]
    return spawn(name, argv, workdir / f"{name}.log", f"http://127.0.0.1:{port}/readyz", port,
                 env=full_env, cwd=workdir)


def start_bare(workdir: Path) -> Proc:
    """The ceiling: Starlette on uvicorn that only verifies, parses and answers 202."""
    port = free_port()
    env = {**os.environ, "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}
    argv = [PYTHON, str(BENCH / "bare_app.py"), "--port", str(port)]
    return spawn("bare", argv, workdir / "bare.log", f"http://127.0.0.1:{port}/healthz", port,
                 env=env)


def start_floor(workdir: Path) -> Proc:
    """The floor: the least a durable gateway does per delivery in Python (floor_app.py)."""
    port = free_port()
    env = {**os.environ, "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}
    argv = [PYTHON, str(BENCH / "floor_app.py"), "--port", str(port),
            "--db", str(workdir / "floor.db")]
    return spawn("floor", argv, workdir / "floor.log", f"http://127.0.0.1:{port}/healthz", port,
                 env=env)


@contextlib.contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if not keep:
            subprocess.run(["rm", "-rf", str(path)], check=False)


def count_rows(db: Path, table: str, where: str = "1") -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()
        return int(row[0])


def ids_in(db: Path, table: str, ids: Sequence[str]) -> int:
    """How many of `ids` are rows of `table` (by primary key `id`)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.execute("CREATE TEMP TABLE want (id TEXT PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO want VALUES (?)", [(i,) for i in ids])
        row = conn.execute(f"SELECT count(*) FROM want JOIN {table} USING (id)").fetchone()
        return int(row[0])


# --- wrk ----------------------------------------------------------------------------------


def require_tools(*tools: str) -> str | None:
    """A line saying which of `tools` is not on PATH and how to get it, or None: checked
    before any server starts, so a fresh machine gets an answer, not a traceback."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return None
    return (f"{', '.join(missing)} not found on PATH: `make bench` installs it, or "
            f"apt-get install {' '.join(missing)}")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    statuses: dict[int, int]
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    delivery_ids: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(url: str, body: bytes, headers: dict[str, str], *, connections: int = 32,
            threads: int = 1, duration: float = 10.0, scratch: Path) -> WrkResult:
    """POST `body` with `headers` for `duration` seconds; count statuses and 202 delivery ids."""
    scratch.mkdir(parents=True, exist_ok=True)
    body_file, ids_file, out_file = scratch / "body", scratch / "ids", scratch / "result.json"
    body_file.write_bytes(body)
    ids_file.unlink(missing_ok=True)
    env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_IDS": str(ids_file),
           "BENCH_RESULT": str(out_file),
           "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items())}
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s",
            "-s", str(WRK_LUA), url]
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                   timeout=duration + 60)
    doc = json.loads(out_file.read_text())
    ids = ids_file.read_text().split() if ids_file.exists() else []
    return WrkResult(requests=doc["requests"], seconds=doc["duration_us"] / 1e6,
                     statuses={int(k): v for k, v in doc["statuses"].items()},
                     p50_ms=doc["p50_us"] / 1000, p99_ms=doc["p99_us"] / 1000,
                     errors=doc["errors"], delivery_ids=ids)


# --- /proc --------------------------------------------------------------------------------


def server_pids(pid: int) -> list[int]:
    """The server's own processes: `pid` and its direct children (with `--http-workers`, the
    supervisor, the main process and the HTTP workers), not the actions they start."""
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            pids += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    # Forked server processes keep the supervisor's command line; actions have their own,
    # except for the moment between vfork and exec: an action caught then (sharing the
    # server's memory, so its VmHWM is the server's) still has it a moment later only if it
    # is a server process.
    own = _cmdline(pid)
    same = [p for p in pids[1:] if _cmdline(p) == own]
    if same:
        time.sleep(0.02)
        same = [p for p in same if _cmdline(p) == own]
    return [pid, *same]


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def peak_rss_mb(pid: int) -> float:
    """The server's peak resident set (VmHWM), in MiB; with several processes, their sum
    (pages they share are counted in each: an upper bound)."""
    total = 0.0
    for p in server_pids(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    if not total:
        raise RuntimeError(f"no VmHWM for pid {pid}")
    return total


def pss_mb(pid: int) -> float:
    """The server's proportional set size now (shared pages split between its processes)."""
    total = 0.0
    for p in server_pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
    return total


def cpu_seconds(pid: int, pids: Sequence[int] | None = None) -> float:
    """User + system CPU time the server has used so far (all threads of all its own
    processes, not its actions). Pass `pids` (from `server_pids`) to count a fixed set."""
    total = 0.0
    for p in pids or server_pids(pid):
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{p}/stat").read_text()
            fields = raw[raw.rfind(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat):
    the difference over a run shows what everything together used, actions included."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq + steal
    return busy / tick, (busy + idle + iowait) / tick


def load_average() -> float:
    """The 1-minute load average: other work on the machine lowers every figure."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2:].split()
        if fields[0] not in (b"Z", b"X"):
            out[int(entry.name)] = int(fields[1])
    return out


def tree_size(pid: int) -> int:
    """Live processes in the tree rooted at `pid`, itself included (0 if it is gone)."""
    parents = _parents()
    if pid not in parents:
        return 0
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    count, todo = 0, [pid]
    while todo:
        count += 1
        todo.extend(children.get(todo.pop(), []))
    return count


class ProcessSampler:
    """Samples the size of a process tree every `every` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, every: float = SAMPLE_EVERY) -> None:
        self.pid, self.every = pid, every
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_size(self.pid))
            self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- figures ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}"
