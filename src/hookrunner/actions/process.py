"""Starting and stopping processes: the only code in hookrunner that does either.

(ansible-runner spawns `ansible-playbook` itself through pexpect; `actions.ansible` stops it
with the helpers here.)

Each action process starts a session of its own, so its process group is its whole tree
(unless a descendant starts yet another session). Stdout and stderr are merged and streamed
into the run log as they arrive. A deadline or the run's cancel event stops the group:
SIGTERM, a grace period, SIGKILL; the leader is always reaped. When the leader exits by
itself, whatever it left running in its group is stopped the same way: a run owns its group.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hookrunner import aio
from hookrunner.actions import spawn
from hookrunner.actions.base import Outcome, RunContext, RunResult
from hookrunner.errors import ActionError

GRACE_PERIOD = 5.0  # seconds between SIGTERM and SIGKILL
# The longest a run_process `interrupt` may give a leader before its group is stopped: a
# stopping server waits this much more for its canceled runs (dispatch._drain_runs).
INTERRUPT_GRACE_MAX = 20.0
LINGER = 0.5  # after the leader exits, seconds its output may still arrive before sweeping
DRAIN_AFTER_KILL = 1.0  # seconds to read what is left after SIGKILL before giving up
POLL_INTERVAL = 0.05  # seconds between checks whether a group has gone
STOP_BY_LOOK = 0.1  # seconds between looks at RunContext.stop_by while a leader is waited for
READ_CHUNK = 64 * 1024
# A process that cannot start for want of these may start later (EMFILE under a flood).
SHORT_OF = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})
MAX_ARG_STRLEN = 128 * 1024  # Linux: bytes of one argument or NAME=value, its NUL included
_ARG_MAX = os.sysconf("SC_ARG_MAX")  # all of them, with their pointers (a stack limit's 1/4)
_QUICK_ROOM = min(MAX_ARG_STRLEN, _ARG_MAX)  # strings that add up to less pass both

OutputHandler = Callable[[bytes], None]

_PROC = Path("/proc")


# --- signalling helpers (also used by actions.ansible) ------------------------------------


def signal_process(pid: int, sig: int) -> bool:
    """Send `sig` to one process; False if it is gone (or not ours)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a whole process group; False if the group is empty."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _proc_stats() -> list[tuple[int, str, int, int]]:
    """(pid, state, ppid, pgrp) of every process, from /proc; [] where there is none."""
    rows: list[tuple[int, str, int, int]] = []
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return rows
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name is in parentheses and may itself contain spaces or ')'.
        fields = raw[raw.rfind(")") + 2 :].split()
        rows.append((int(entry.name), fields[0], int(fields[1]), int(fields[2])))
    return rows


def is_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie waiting to be reaped by someone else."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return raw[raw.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    """True if some live (non-zombie) process is still in group `pgid`."""
    if not signal_group(pgid, 0):
        return False  # the common case, decided without reading all of /proc
    if _PROC.is_dir():
        return any(pgrp == pgid and state not in ("Z", "X") for _, state, _, pgrp in _proc_stats())
    return signal_group(pgid, 0)


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (by parent links, so across sessions); [] without /proc."""
    children: dict[int, list[int]] = {}
    for child, state, parent, _ in _proc_stats():
        if state not in ("Z", "X"):
            children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _left_the_group(pgid: int) -> list[int]:
    """The live descendants of the group's leader (`pgid`) in another process group that
    carry no HOOKRUNNER_RUN_ID (so nothing would find them later)."""
    left = []
    for pid in descendants(pgid):
        try:
            if os.getpgid(pid) != pgid and b"\0HOOKRUNNER_RUN_ID=" not in b"\0" + Path(
                    f"/proc/{pid}/environ").read_bytes():
                left.append(pid)
        except OSError:  # gone meanwhile
            pass
    return left


class _Pinned:
    """Processes held by pidfds: a signal never reaches another that took one's pid."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.fds: list[int] = []
        self.pids: set[int] = set()
        self.add(pids)

    def add(self, pids: Iterable[int]) -> list[int]:
        """Pins those of `pids` not pinned yet; returns their pidfds."""
        added = []
        for pid in pids:
            if pid not in self.pids:
                with contextlib.suppress(OSError):  # gone already
                    added.append(os.pidfd_open(pid))
                    self.pids.add(pid)
        self.fds += added
        return added

    def send(self, sig: int, fds: Iterable[int] | None = None) -> None:
        for fd in self.fds if fds is None else fds:
            with contextlib.suppress(OSError):  # exited meanwhile
                signal.pidfd_send_signal(fd, sig)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.pids = set()


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL each pid and the group it leads, if any."""
    for pid in pids:
        signal_group(pid, signal.SIGKILL)
        signal_process(pid, signal.SIGKILL)


def grace_left(stop_by: Callable[[], float | None], seconds: float) -> float:
    """`seconds` of a stop's grace, or what is left of it before the run's processes must be
    gone (`RunContext.stop_by`: a lease its node could not renew); 0 once that time is past."""
    by = stop_by()
    return seconds if by is None else max(0.0, min(seconds, by - time.monotonic()))


async def wait_within(future: asyncio.Future[Any], seconds: float,
                      stop_by: Callable[[], float | None]) -> None:
    """Wait up to `seconds` for `future`, never past `stop_by`, which is looked at again as
    it waits (a lease may be lost while a canceled run is given its grace)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while not future.done() and (left := grace_left(stop_by, until - loop.time())) > 0:
        await asyncio.wait({future}, timeout=min(left, STOP_BY_LOOK))


# --- running ------------------------------------------------------------------------------


def deadline_for(ctx: RunContext) -> float | None:
    """The event-loop time at which `ctx.timeout` runs out, counted from now."""
    if ctx.timeout is None:
        return None
    return asyncio.get_running_loop().time() + ctx.timeout


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def stopped(ctx: RunContext) -> RunResult:
    """The end of a run that was waiting (for a lock, an HTTP answer) when its cancel or its
    deadline came."""
    # Not noted here: the run's closing line (the dispatcher's) says how it ended and why,
    # `canceled by request`, `timed out after 1s` (a line here made two).
    if ctx.cancel.is_set():
        return RunResult("canceled", reason="canceled")
    return RunResult("timed_out", reason=f"timed out after {format_seconds(ctx.timeout or 0.0)}")


def exit_reason(returncode: int) -> str:
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def _start_failure(argv: Sequence[str], cwd: Path | str, env: Mapping[str, str],
                   exc: OSError) -> str:
    if exc.filename is not None and str(exc.filename) == str(cwd):
        return f"working directory {cwd} is not usable: {exc.strerror}"
    if exc.errno == errno.E2BIG:
        # Name what is too long (not its value: it may be a secret); Linux takes at most
        # MAX_ARG_STRLEN bytes per argument or NAME=value, and about a quarter of the stack
        # limit for all of them.
        longest = [f"argument {i}" for i, a in enumerate(argv)
                   if len(os.fsencode(a)) >= MAX_ARG_STRLEN]
        longest += [f"environment variable {k}" for k, v in env.items()
                    if len(os.fsencode(f"{k}={v}")) >= MAX_ARG_STRLEN]
        what = (f"{', '.join(longest)} is over {MAX_ARG_STRLEN // 1024} KiB, the most Linux "
                "takes for one" if longest else "the arguments and environment together are "
                "too large")
        return f"cannot start {argv[0]}: {what}"
    if isinstance(exc, FileNotFoundError):
        return _not_found(argv[0])
    if isinstance(exc, PermissionError):
        if os.path.isdir(argv[0]):
            return f"not executable: {argv[0]} is a directory"
        return f"not executable: {argv[0]}"
    if exc.errno == errno.ENOEXEC:  # no `#!` line (or a byte-order mark before it), or empty
        return (f"cannot start {argv[0]}: it is no program the system can run: a script needs "
                "a `#!` line first (`#!/bin/sh`), with nothing before it")
    return f"cannot start {argv[0]}: {exc.strerror or exc}"


def _not_found(program: str) -> str:
    """ENOENT from exec: the program, or (it is there) the interpreter its `#!` line names."""
    if "/" not in program:  # a bare name not on PATH (resolve_program kept it as written)
        return f"executable not found: {program}"
    try:
        fd = os.open(program, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # never a FIFO's wait
        try:
            first = os.read(fd, 256) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        finally:
            os.close(fd)
    except OSError:
        return f"executable not found: {program}"
    first = first.split(b"\n", 1)[0] + b"\n"
    if not first.startswith(b"#!"):
        return f"cannot start {program}: a file it needs (a shared library?) is missing"
    interpreter = re.split(rb"[ \t]+", first[2:].strip(b" \t\n"))[0]  # the kernel's split
    shown = interpreter.decode(errors="replace").replace("\r", "")
    if interpreter.endswith(b"\r"):
        return (f"cannot start {program}: its #! line ends with a carriage return (Windows line "
                f"endings: convert the file, e.g. with dos2unix), so its interpreter "
                f"{shown}\\r is not found")
    return f"cannot start {program}: the interpreter its #! line names is not found: {shown}"


async def run_process(
    argv: Sequence[str],
    *,
    ctx: RunContext,
    cwd: Path | str,
    env: Mapping[str, str],
    stdin: bytes | None = None,
    on_output: OutputHandler | None = None,
    deadline: float | None = None,
    interrupt: tuple[signal.Signals, float] | None = None,
) -> RunResult:
    """Run `argv` to the end, its deadline, or the run's cancel event.

    `interrupt`: on a cancel or timeout, send this signal to the leader alone and give it
    this long to end by itself before the group is stopped (a program that must stop its own
    children in order: Terraform, whose providers die mid-call from a SIGTERM to the group).

    Output goes to `on_output` (default: `ctx.log.write`). `deadline` is an event-loop time
    shared by several processes of one run (see `deadline_for`); default: `ctx.timeout` from now.
    Failing to start is a failed result, not an exception.
    """
    if not argv:
        return RunResult("failed", reason="empty argv")
    if ctx.cancel.is_set():  # (not noted: see stopped())
        return RunResult("canceled", reason="canceled")
    loop = asyncio.get_running_loop()
    if deadline is None:
        deadline = deadline_for(ctx)
    try:
        # The start mark is written just before the process starts (`before`), on the
        # thread that starts it: written on the loop, a crash while the start waited its
        # turn for a spawner thread (30 ms in a burst) left a mark of a process that never
        # was, and the next start failed the run as interrupted instead of running it.
        proc = await _Child.start(argv, cwd=cwd, env=env, with_stdin=stdin is not None,
                                  before=ctx.starting)
    except OSError as exc:
        reason = _start_failure(argv, cwd, env, exc)
        ctx.log.note(reason)
        return RunResult("failed", reason=reason, not_started=exc.errno in SHORT_OF)

    pump = proc.read_output(on_output or ctx.log.write)
    if stdin is not None:
        proc.feed(stdin)
    waiter = asyncio.ensure_future(proc.wait())
    canceller = asyncio.ensure_future(ctx.cancel.wait())
    stopped: Outcome | None = None
    reason = ""
    try:
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        await asyncio.wait({waiter, canceller}, timeout=timeout, return_when="FIRST_COMPLETED")
        if not waiter.done() and proc.has_exited():
            # It ended by itself as the deadline or the cancel came, in the same turn of the
            # loop (its exit not yet seen): its own outcome, not a stop (a timed_out was
            # retried and ran a finished deploy again; a cancel said `canceled` of one done).
            await waiter
        if not waiter.done():
            if canceller.done():
                stopped, reason = "canceled", "canceled"  # (not noted: see stopped())
            else:
                stopped = "timed_out"  # (not noted either)
                reason = f"timed out after {format_seconds(ctx.timeout or 0.0)}"
            # Found while the leader runs (its pid is not another's yet), held by pidfds.
            left = _Pinned(_left_the_group(proc.pid) if not waiter.done() else [])
            try:
                if left.fds:
                    ctx.log.note(f"stopping {len(left.fds)} process(es) of the run that left "
                                 "its process group and its environment")
                if interrupt is not None:
                    await _interrupt_leader(proc.pid, waiter, *interrupt, ctx)
                await _stop_group(proc.pid, waiter, pump, ctx.stop_by, left)
            finally:
                left.close()
        else:
            if not pump.done():  # mostly it is: the output ends as the leader exits
                await asyncio.wait({pump}, timeout=LINGER)
            if group_alive(proc.pid):
                ctx.log.note("stopping processes the action left running")
                await _stop_group(proc.pid, waiter, pump, ctx.stop_by)
    finally:
        if proc.returncode is None:  # we were cancelled ourselves: leave nothing behind
            signal_group(proc.pid, signal.SIGKILL)
            proc.reap()
        for task in (canceller, pump):
            if not task.done():
                task.cancel()
        # A process outside the group may still hold the pipe: stop reading it either way.
        proc.close()

    rc = proc.returncode
    assert rc is not None
    if stopped is not None:
        return RunResult(stopped, exit_code=rc if rc >= 0 else None, reason=reason)
    if rc == 0:
        return RunResult("succeeded", exit_code=0)
    return RunResult("failed", exit_code=rc if rc >= 0 else None, reason=exit_reason(rc))


class _Child:
    """A started action process: its output read into a sink on the loop, its exit awaitable.

    Started with `posix_spawn` on a thread (hookrunner.actions.spawn), where glibc has it,
    else with `subprocess.Popen` (vfork) on the loop. Not the event loop's own spawn: under
    uvloop that forks the whole server, measured at 1.7 ms of CPU per process against 0.25 ms
    with a 50 MB heap, which was the largest cost per run. The exit is watched
    through a pidfd, so nothing polls and no other code's SIGCHLD handling is involved.

    The output pipe is read with `add_reader` on a descriptor this class alone owns and closes
    once: uvloop's pipe transport closes its descriptor twice (a second close can hit a
    descriptor another thread just opened), and a stream reader costs more per read.
    """

    def __init__(self, pid: int, output_fd: int, stdin_fd: int | None,
                 popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self._fd = output_fd
        self._stdin_fd = stdin_fd  # our end of its stdin pipe, if it reads one (until closed)
        self._feeding = memoryview(b"")  # what is still to be written to it
        self._popen = popen  # the fallback's handle: it must do the reaping itself
        self._returncode: int | None = None

    @classmethod
    async def start(cls, argv: Sequence[str], *, cwd: Path | str, env: Mapping[str, str],
                    with_stdin: bool, before: Callable[[], None] | None = None) -> _Child:
        """`before`: called just before the process starts (on the thread that starts it);
        what it raises is raised here, and nothing starts."""
        check_strings(argv, env)
        read_end, write_end = os.pipe()
        child_in, our_in = os.pipe() if with_stdin else (_devnull(), None)
        popen: subprocess.Popen[bytes] | None = None
        try:
            if spawn.AVAILABLE:
                pid = await _posix_spawn(argv, cwd=str(cwd), env=env, stdin_fd=child_in,
                                         output_fd=write_end, before=before)
            else:
                if before is not None:
                    before()
                popen = subprocess.Popen(
                    list(argv), cwd=str(cwd), env=dict(env), stdin=child_in,
                    stdout=write_end, stderr=subprocess.STDOUT,
                    start_new_session=True,  # own session = own process group, killable as one
                )
                pid = popen.pid
        except BaseException:
            os.close(read_end)
            if our_in is not None:
                os.close(our_in)
            raise
        finally:
            os.close(write_end)  # the child has its copy: EOF comes when the group is done
            if our_in is not None:
                os.close(child_in)
        os.set_blocking(read_end, False)
        return cls(pid, read_end, our_in, popen)

    def read_output(self, sink: OutputHandler) -> asyncio.Future[None]:
        """Feed the output to `sink` as it arrives; the future resolves at end of output."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        fd = self._fd

        def readable() -> None:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            try:
                if data:
                    sink(data)
                    return
            except Exception as exc:  # a sink that fails stops the reading, as an error
                self.close_output()
                if not done.done():
                    done.set_exception(exc)
                return
            # Only the output: a child may close its stdout and go on reading its stdin.
            self.close_output()
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, readable)
        return done

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def has_exited(self) -> bool:
        """Whether the leader has exited, looked at now, without reaping it: the waiter does
        that (where no pidfd is, a thread blocked in waitpid, which a reap here would leave
        to find no child, and to record its end as exit 0)."""
        if self._returncode is not None:
            return True
        if self._popen is not None:
            return self._popen.poll() is not None
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except OSError:
            return False

    def _reap(self, block: bool) -> int | None:
        """Collect the exit status if the process has exited (or wait for it: `block`)."""
        if self._returncode is None:
            if self._popen is not None:
                self._returncode = self._popen.wait() if block else self._popen.poll()
            else:
                try:
                    pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
                except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): as Popen does
                    if self._returncode is None:
                        self._returncode = 0
                else:
                    if pid:
                        self._returncode = os.waitstatus_to_exitcode(status)
        return self._returncode

    async def wait(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): a thread waits instead
            await asyncio.to_thread(self._reap, True)
        else:
            exited: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(fd, readable)
            try:
                await exited
            finally:
                loop.remove_reader(fd)
                os.close(fd)
        code = self._reap(True)  # at once: it has exited
        assert code is not None
        return code

    def feed(self, data: bytes) -> None:
        """Write `data` to stdin from the loop as the child reads it, then close it. A child
        that exits or closes stdin without reading it all ends the feed (EPIPE: its
        business); so does the run's end (`close`), even where a process it left behind
        holds the pipe without reading (a thread blocked in write() would stay for good)."""
        fd = self._stdin_fd
        assert fd is not None
        os.set_blocking(fd, False)
        self._feeding = memoryview(data)
        if self._feed_some():
            self._stop_feeding(registered=False)
        else:
            asyncio.get_running_loop().add_writer(fd, self._feed_more)

    def _feed_some(self) -> bool:
        """Write what the pipe takes now; True when the feed is over (all written, or the
        child stopped reading: EPIPE)."""
        fd = self._stdin_fd
        assert fd is not None
        try:
            while self._feeding:
                self._feeding = self._feeding[os.write(fd, self._feeding):]
        except BlockingIOError:
            return False
        except OSError:
            pass  # EPIPE: it stopped reading
        return True

    def _feed_more(self) -> None:
        if self._stdin_fd is not None and self._feed_some():
            self._stop_feeding(registered=True)

    def _stop_feeding(self, *, registered: bool) -> None:
        """Close stdin, its writer removed first (a closed number may be reused at once)."""
        fd, self._stdin_fd, self._feeding = self._stdin_fd, None, memoryview(b"")
        if fd is None:
            return
        if registered:
            with contextlib.suppress(Exception):  # the loop may be closing already
                asyncio.get_running_loop().remove_writer(fd)
        os.close(fd)

    def reap(self) -> None:
        """Collect the exit status of a leader that was just SIGKILLed (no zombie left)."""
        until = time.monotonic() + 1.0
        with contextlib.suppress(OSError):
            while self._reap(False) is None and time.monotonic() < until:
                time.sleep(0.01)

    def close(self) -> None:
        """At the run's end: stop reading the output (a process outside the group may still
        hold the pipe) and stop feeding stdin (one may hold it unread)."""
        self.close_output()
        # Still feeding at the end (a process it left holds stdin unread), or never fed.
        self._stop_feeding(registered=self._stdin_fd is not None and bool(self._feeding))

    def close_output(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(Exception):  # the loop may be closing already
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


def check_strings(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """What no process can be given, as the run's reason (a template can render a NUL:
    `'%c' % 0`); the value is not quoted, as it may be a secret."""
    # Most runs pass every check by far: told from the joined text in a few calls (a
    # character is at most 4 bytes, and every string adds at most 10 to the total).
    text, names = "".join(argv) + "".join(env.values()), "".join(env)
    if ("\0" not in text and "\0" not in names and "=" not in names and "" not in env
            and 4 * (len(text) + len(names)) + 10 * (len(argv) + len(env)) <= _QUICK_ROOM):
        return
    codec, errors = spawn.FS_CODEC  # (os.fsencode's bytes, in one call)
    total = 0
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise ActionError(f"argument {i} of the command contains a NUL byte")
        size = len(arg.encode(codec, errors)) + 1
        if size > MAX_ARG_STRLEN:  # (every attempt would fail with E2BIG: refused, once)
            raise ActionError(f"argument {i} is over {MAX_ARG_STRLEN // 1024} KiB, the most "
                              "Linux takes for one (give a large value on stdin: `stdin: "
                              "payload`)")
        total += size + 8
    for name, value in env.items():
        if "\0" in name or "=" in name or not name:
            raise ActionError(f"environment variable name {name!r} is not valid")
        if "\0" in value:
            raise ActionError(f"environment variable {name} contains a NUL byte")
        size = len(name.encode(codec, errors)) + len(value.encode(codec, errors)) + 2
        if size > MAX_ARG_STRLEN:
            raise ActionError(f"environment variable {name} is over {MAX_ARG_STRLEN // 1024} "
                              "KiB, the most Linux takes for one")
        total += size + 8
    if total > _ARG_MAX:
        raise ActionError(f"the arguments and environment together are {total // 1024} KiB, "
                          f"more than this machine takes ({_ARG_MAX // 1024} KiB)")


_SPAWNER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hookrunner-spawn")


async def _posix_spawn(argv: Sequence[str], *, cwd: str, env: Mapping[str, str],
                       stdin_fd: int, output_fd: int,
                       before: Callable[[], None] | None = None) -> int:
    """Start a process with the GIL released (see hookrunner.actions.spawn); its pid.
    `before` is called on the same thread just before it (see _Child.start).

    On its own threads, so spawning never waits behind other work on the default executor."""
    call = spawn.Spawn(argv, cwd=cwd, env=env, stdin_fd=stdin_fd, output_fd=output_fd)
    # `spawned` only says whether a thread took the work (see below); `started` has its pid.
    spawned: concurrent.futures.Future[int] = concurrent.futures.Future()
    loop = asyncio.get_running_loop()
    started: asyncio.Future[int] = loop.create_future()

    def begin() -> int:
        if before is not None:
            before()
        return call.call()

    def work() -> None:  # a spawner thread
        if spawned.set_running_or_notify_cancel():  # (not if given up below)
            aio.on_thread(loop, started, begin)

    try:
        _SPAWNER.submit(work)
    except RuntimeError as exc:
        # No thread to spawn from (a TasksMax, no memory for a stack): as a fork's EAGAIN,
        # nothing ran. The work is queued all the same, for the next thread: cancelled, it
        # never runs (it would start the action later, unwatched, on descriptors closed by
        # then). Unless a busy thread took it meanwhile: then its result stands.
        if spawned.cancel():
            raise OSError(errno.EAGAIN, f"{exc} to spawn it") from None
    cancelled = False
    # Cancelled while it starts (even twice): the process starts all the same, and the
    # caller's descriptors are in use until it has; it must not be left running unwatched.
    while not started.done():
        try:
            await asyncio.shield(started)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        with contextlib.suppress(OSError):
            orphan = started.result()
            signal_group(orphan, signal.SIGKILL)
            os.waitpid(orphan, 0)
        raise asyncio.CancelledError
    return started.result()


_DEVNULL: int | None = None


def _devnull() -> int:
    """One /dev/null descriptor kept open for every child's stdin (as Popen does)."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


async def _interrupt_leader(pid: int, waiter: asyncio.Future[int], sig: signal.Signals,
                            grace: float, ctx: RunContext) -> None:
    """`sig` to the group's leader alone; up to `grace` (INTERRUPT_GRACE_MAX at most, and
    never past `ctx.stop_by`) for it to exit by itself."""
    grace = min(grace, INTERRUPT_GRACE_MAX)
    left = grace_left(ctx.stop_by, grace)
    ctx.log.note(f"sent {sig.name} to {pid}: waiting up to {format_seconds(round(left, 1))} for "
                 "it to stop its work itself" + ("" if left == grace else
                 " (the run's lease could not be renewed: it is killed before that expires)"))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    await wait_within(waiter, grace, ctx.stop_by)


async def _stop_group(pgid: int, waiter: asyncio.Future[int], pump: asyncio.Future[None],
                      stop_by: Callable[[], float | None], left: _Pinned | None = None) -> None:
    """SIGTERM the group, wait up to the grace period (never past `stop_by`, see RunContext)
    for it to go, SIGKILL, reap the leader.
    `left` (the leader's descendants that left the group, `setsid`, and cleared their
    environment, `env -i`) go the same way: those that kept it are the dispatcher's to find
    by their HOOKRUNNER_RUN_ID (and to log), but these survived a timeout or a cancel."""
    if left is None:
        left = _Pinned([])
        try:
            return await _stop_group(pgid, waiter, pump, stop_by, left)
        finally:
            left.close()
    loop = asyncio.get_running_loop()
    signal_group(pgid, signal.SIGTERM)
    signal_group(pgid, signal.SIGCONT)  # a stopped member runs its handler (else only KILL)
    left.send(signal.SIGTERM)
    left.send(signal.SIGCONT)
    until = loop.time() + GRACE_PERIOD
    while grace_left(stop_by, until - loop.time()) > 0 and not (
            waiter.done() and not group_alive(pgid)):
        await asyncio.sleep(POLL_INTERVAL)
        if not waiter.done():
            # One started meanwhile (`trap 'setsid env -i cmd &' TERM`) is found only while
            # the leader, its ancestor, runs: looked for again each turn, not once.
            fresh = left.add(_left_the_group(pgid))
            left.send(signal.SIGTERM, fresh)
            left.send(signal.SIGCONT, fresh)
    if not waiter.done():
        left.add(_left_the_group(pgid))
    left.send(signal.SIGKILL)
    signal_group(pgid, signal.SIGKILL)
    await waiter
    # SIGKILL is sent, not yet done: on a busy machine a member may still be running for a
    # moment. The run ends once its tree is gone, not merely doomed.
    until = loop.time() + DRAIN_AFTER_KILL
    while group_alive(pgid) and loop.time() < until:
        await asyncio.sleep(POLL_INTERVAL / 5)
    await asyncio.wait({pump}, timeout=max(0.0, until - loop.time()))
