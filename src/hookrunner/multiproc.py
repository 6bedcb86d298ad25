"""`serve --http-workers N`: N processes accept requests on one port.

One Python process tops out at one core, and on the accept path that is the limit (verify,
parse, match, journal). With `--http-workers N` this process becomes a small supervisor, in
the style of gunicorn's arbiter: it binds the port, then forks

- the main process: the whole server as with one process (dispatcher, console, API,
  /metrics, the node's identity), serving only a Unix socket, where the workers forward
  every request that is not a hook;
- N HTTP workers, once the main process serves: each accepts on the port, handles
  `/hooks/{id}` itself (verify, match, journal, answer) and forwards every other request
  to the main process (hookrunner.upstream).

They share the --max-queued budget and a wake pipe (hookrunner.shared), and count metrics in
prometheus_client's multiprocess files. The supervisor never runs an event loop or a thread,
so forking a replacement for a worker that died is safe. SIGHUP is passed to every process
(as RELOAD_SIGNAL; one sent to a child comes up to the supervisor first);
SIGTERM and SIGINT as STOP_SIGNAL, which the children count as stops (a second one cancels
the running runs at once), while the copy of a group-wide signal (a Ctrl-C) each also gets
itself is the same stop. The server's exit status is the main process's. Every child asks
the kernel for SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType

from hookrunner import runtimedir
from hookrunner.errors import StartupRefused
from hookrunner.logs import event, setup_logging
from hookrunner.preflight import listen, tls
from hookrunner.settings import Settings
from hookrunner.shared import MULTIPROC_DIR, RELOAD_SIGNAL, Shared

EXIT_STARTUP = 3
RESPAWN_DELAY = 1.0  # seconds before a worker that died is replaced (no tight crash loop)
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_SIGNAL = signal.SIGUSR2  # a stop the supervisor passes on (commands._server counts them)
MAIN_GONE_SIGNAL = signal.SIGUSR1  # to the workers: the main process died, stop at once


def serve(settings: Settings) -> int:
    swept = runtimedir.sweep()
    runtime, locks = runtimedir.create()
    try:
        return _supervise(settings, runtime, swept)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
        for fd in locks:
            os.close(fd)


def _supervise(settings: Settings, runtime: Path, swept: list[Path]) -> int:
    if "prometheus_client" in sys.modules:  # its value class is chosen at import
        raise RuntimeError("prometheus_client was imported before multiprocess mode was set")
    (runtime / "metrics").mkdir()
    os.environ[MULTIPROC_DIR] = str(runtime / "metrics")
    setup_logging(settings.log_format)
    if swept:
        event("server.runtime_swept", dirs=len(swept), parent=str(swept[0].parent),
              hint="left by --http-workers servers that were killed")
    try:
        # One socket shared by the workers. (A socket each with SO_REUSEPORT was measured no
        # faster, and would let a second server bind the same port without an error.)
        ports = listen(settings.host, settings.port)
    except StartupRefused as exc:
        event("server.refused", logging.ERROR, reason=str(exc))
        return EXIT_STARTUP
    settings = replace(settings, port=ports[0].getsockname()[1])  # --port 0: the one it got
    try:
        settings = _tls_in_memory(settings)
    except StartupRefused as exc:
        event("server.refused", logging.ERROR, reason=str(exc))
        return EXIT_STARTUP
    upstream = _listen_unix(runtime / "main.sock")
    shared = Shared.create(runtime, settings.http_workers)
    shared.budget.enter(0)  # the supervisor's own lock descriptor, to empty a dead worker's slot
    # Imported here, before any fork: each child starts with it all loaded, sharing those
    # pages; frozen, so the children's garbage collector does not write to (and so copy) them.
    from hookrunner.app import create_app  # noqa: F401

    gc.collect()
    gc.freeze()

    supervisor = os.getpid()
    stopping: list[int] = []
    workers: dict[int, int] = {}  # pid -> slot (1..N; the main process has slot 0)
    main = -1

    def forward(sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGHUP:
            stopping.append(sig)
            for port in ports:  # stop taking connections that nobody would answer
                with contextlib.suppress(OSError):
                    port.close()
        # A stop goes on as STOP_SIGNAL, which the children count (one per stop asked of
        # the server); the SIGTERM or SIGINT they get themselves from a whole group's
        # signal (a Ctrl-C, `kill %1`, systemd) is the same stop again.
        passed = STOP_SIGNAL if sig in (signal.SIGTERM, signal.SIGINT) else RELOAD_SIGNAL
        for pid in [main, *workers]:
            if pid > 0:  # never kill(-1, ...): that is every process we may signal
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, passed)

    def fork(body: Callable[[], int]) -> int:
        # Signals wait until the child has its own handlers (it must never run `forward`).
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            return _fork(supervisor, body)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)

    main = fork(lambda: _run(settings, shared, [upstream], slot=0, close=ports))
    os.close(shared.ready_w)  # so the main process's death reads as end of file
    for sig in FORWARDED:
        signal.signal(sig, forward)
    if not _wait_ready(shared):
        _, status = os.waitpid(main, 0)
        return _exit_status(status) or EXIT_STARTUP
    upstream.close()  # only the main process accepts there

    def start_worker(slot: int) -> bool:
        """False when it could not start, or the server is stopping: a worker forked after
        `forward` closed the ports got closed sockets (a traceback, at a stop during the
        start). Decided with the signals held, and the new pid listed before `forward` runs."""
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            if stopping:
                return False
            try:
                pid = _fork(supervisor, lambda: _run(settings, shared, ports, slot=slot))
            except OSError as exc:  # EAGAIN: out of processes or memory for now
                event("server.http_worker_not_started", logging.ERROR, slot=slot, error=str(exc))
                return False
            workers[pid] = slot
            return True
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)

    for slot in range(1, settings.http_workers + 1):
        start_worker(slot)
    event("server.http_workers", processes=settings.http_workers, supervisor_pid=supervisor,
          main_pid=main, worker_pids=",".join(str(p) for p in workers))
    code = 0
    missing: list[int] = []  # slots whose worker could not be started again yet
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG if missing else 0)
        except ChildProcessError:
            break
        if pid == 0:  # nothing exited: retry the missing workers
            time.sleep(RESPAWN_DELAY)
            missing = [slot for slot in missing if not (stopping or start_worker(slot))]
            continue
        slot = workers.pop(pid, -1)  # first: `forward` must not signal a reaped pid
        if pid == main:
            main = -1
        _mark_dead(pid)
        if slot < 0:  # the main process
            code = _exit_status(status)
            if not stopping:
                event("server.main_exited", logging.ERROR, exit_code=code)
            stopping.append(signal.SIGTERM)
            for port in ports:
                with contextlib.suppress(OSError):
                    port.close()
            # Whether it died or stopped: nothing will end the runs the workers' `?wait`s
            # wait for now, so they answer at once (a stop under way is not counted again).
            for worker in list(workers):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, MAIN_GONE_SIGNAL)
            missing = []
            continue
        shared.budget.release(slot)  # its accepts in flight never finished
        if not stopping and main > 0:
            event("server.http_worker_exited", logging.WARNING, pid=pid,
                  exit_code=_exit_status(status), hint="replaced")
            time.sleep(RESPAWN_DELAY)
            if not stopping and not start_worker(slot):
                missing.append(slot)
    return code


def _tls_in_memory(settings: Settings) -> Settings:
    """The certificate and key as the start read and checked them, in memory files every
    process loads: a worker started later (replacing one that died) read the files on disk
    again, and served a renewed certificate beside the old one, died at every start on a
    pair caught half-renewed, or asked for a new key's passphrase on the terminal. Kept out
    of the actions (close-on-exec); a renewal takes a restart, as for one process."""
    if not settings.ssl_certfile:
        return settings
    def held(field: str, path: str) -> str:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise StartupRefused(f"cannot read {settings.given_as(field)} {path}: "
                                 f"{exc.strerror or exc}") from None
        fd = os.memfd_create(f"hookrunner-{field}")  # MFD_CLOEXEC
        os.write(fd, data)
        return f"/proc/self/fd/{fd}"

    key = settings.ssl_keyfile
    kept = replace(settings, ssl_certfile=held("ssl_certfile", settings.ssl_certfile),
                   ssl_keyfile=held("ssl_keyfile", key) if key else key)
    tls(kept)  # what was read is a pair (the files may have changed since the first check)
    return kept


def _exit_status(status: int) -> int:
    """As a shell reports it: a process killed by signal N exited 128+N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


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
        for sig in FORWARDED:  # SIGHUP (reload) is taken once the child's loop runs
            signal.signal(sig, signal.SIG_IGN if sig == signal.SIGHUP else signal.SIG_DFL)
        # A stop passed on before the server takes it (Server.run): as SIGTERM then. So is a
        # worker told its main process is gone (its default action would kill it silently).
        signal.signal(STOP_SIGNAL, _stop_as_sigterm)
        signal.signal(MAIN_GONE_SIGNAL, _stop_as_sigterm)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # blocked around the fork
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


def _stop_as_sigterm(sig: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _die_with_parent(supervisor: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request took effect
        os._exit(1)


def _run(settings: Settings, shared: Shared, sockets: list[socket.socket], slot: int,
         close: list[socket.socket] | None = None) -> int:
    """A child: the main process (slot 0) or an HTTP worker, serving on `sockets`."""
    from hookrunner.app import create_app
    from hookrunner.commands import _server, uvicorn_config

    for sock in close or []:
        sock.close()  # the port stays the workers': the main process never accepts there
    shared.budget.enter(slot)
    app = create_app(settings, shared, worker=slot > 0)
    server = _server(uvicorn_config(app, settings), app, stop_signal=STOP_SIGNAL,
                     main_gone_signal=MAIN_GONE_SIGNAL if slot > 0 else None)
    server.run(sockets=sockets)
    return int(server.exit_code) if server.started else EXIT_STARTUP


def _wait_ready(shared: Shared) -> bool:
    """Until the main process serves (True) or exits first (False: end of file)."""
    return bool(os.read(shared.ready_r, 1))


def _mark_dead(pid: int) -> None:
    with contextlib.suppress(Exception):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
