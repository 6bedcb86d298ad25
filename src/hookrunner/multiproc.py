"""`serve --http-workers N`: N processes accept requests on one port.

One Python process tops out at one core, and on the accept path that is the limit (verify,
parse, match, journal). With N > 1 this process becomes a small supervisor, in the style of
gunicorn's arbiter: it binds the port, then forks

- the main process: the whole server as with one process (dispatcher, console, API,
  /metrics, the node's identity), also accepting on the port, and listening on a Unix
  socket for the workers' forwarded requests;
- N-1 HTTP workers, forked once the main process serves: each accepts on the same port,
  handles `/hooks/{id}` itself (verify, match, journal, answer) and forwards every other
  request to the main process (hookrunner.upstream).

They share the --max-queued budget and a wake pipe (hookrunner.shared), and count metrics in
prometheus_client's multiprocess files. The supervisor never runs an event loop or a thread,
so forking a replacement for a worker that died is safe. SIGTERM/SIGINT/SIGHUP are passed to
every process; the server's exit status is the main process's. Every child asks the kernel
for SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from hookrunner.logs import event, setup_logging
from hookrunner.settings import Settings
from hookrunner.shared import MULTIPROC_DIR, Shared

EXIT_STARTUP = 3
RESPAWN_DELAY = 1.0  # seconds before a worker that died is replaced (no tight crash loop)
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def serve(settings: Settings) -> int:
    runtime = Path(tempfile.mkdtemp(prefix="hookrunner-"))
    try:
        return _supervise(settings, runtime)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def _supervise(settings: Settings, runtime: Path) -> int:
    if "prometheus_client" in sys.modules:  # its value class is chosen at import
        raise RuntimeError("prometheus_client was imported before multiprocess mode was set")
    (runtime / "metrics").mkdir()
    os.environ[MULTIPROC_DIR] = str(runtime / "metrics")
    setup_logging(settings.log_format)
    try:
        # One socket shared by the workers. (A socket each with SO_REUSEPORT was measured no
        # faster, and would let a second server bind the same port without an error.)
        port = _listen_tcp(settings.host, settings.port)
    except OSError as exc:
        event("server.refused", reason=f"cannot listen on {settings.host}:{settings.port}: "
              f"{exc.strerror or exc}")
        return EXIT_STARTUP
    upstream = _listen_unix(runtime / "main.sock")
    shared = Shared.create(str(runtime / "main.sock"))
    # Imported here, before any fork: each child starts with it all loaded, sharing those
    # pages; frozen, so the children's garbage collector does not write to (and so copy) them.
    from hookrunner.app import create_app  # noqa: F401

    gc.collect()
    gc.freeze()

    supervisor = os.getpid()
    stopping: list[int] = []

    def forward(sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGHUP:
            stopping.append(sig)
        for pid in [main, *workers]:
            if pid > 0:  # never kill(-1, ...): that is every process we may signal
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    workers: dict[int, int] = {}  # pid -> slot
    main = _fork(supervisor, lambda: _run(settings, shared, [upstream], worker=False))
    os.close(shared.ready_w)  # so the main process's death reads as end of file
    for sig in FORWARDED:
        signal.signal(sig, forward)
    if not _wait_ready(shared):
        _, status = os.waitpid(main, 0)
        return os.waitstatus_to_exitcode(status) or EXIT_STARTUP
    upstream.close()  # only the main process accepts there

    def start_worker(slot: int) -> None:
        pid = _fork(supervisor, lambda: _run(settings, shared, [port], worker=True))
        workers[pid] = slot

    for slot in range(settings.http_workers):
        start_worker(slot)
    event("server.http_workers", processes=settings.http_workers, main_pid=main,
          worker_pids=",".join(str(p) for p in workers))
    code = 0
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        _mark_dead(pid)
        if pid == main:
            code = os.waitstatus_to_exitcode(status)
            if not stopping:
                event("server.main_exited", exit_code=code)
            for worker in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGTERM)
            stopping.append(signal.SIGTERM)
            main = -1
        elif pid in workers:
            slot = workers.pop(pid)
            if not stopping and main > 0:
                event("server.http_worker_exited", pid=pid,
                      exit_code=os.waitstatus_to_exitcode(status), hint="replaced")
                time.sleep(RESPAWN_DELAY)
                if not stopping:
                    start_worker(slot)
    # -SIGTERM as the exit status of a server stopped by a signal is the usual 128+15 below.
    return 128 - code if code < 0 else code


def _listen_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def _listen_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _fork(supervisor: int, body: Callable[[], int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(supervisor)
        code = body()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return 0  # not reached


def _die_with_parent(supervisor: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request took effect
        os._exit(1)


def _run(settings: Settings, shared: Shared, sockets: list[socket.socket], worker: bool) -> int:
    from hookrunner.app import create_app
    from hookrunner.commands import _server, uvicorn_config

    app = create_app(settings, shared, worker=worker)
    server = _server(uvicorn_config(app, settings), app)
    server.run(sockets=sockets)
    return 0 if server.started else EXIT_STARTUP


def _wait_ready(shared: Shared) -> bool:
    """Until the main process serves (True) or exits first (False: end of file)."""
    return bool(os.read(shared.ready_r, 1))


def _mark_dead(pid: int) -> None:
    with contextlib.suppress(Exception):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
