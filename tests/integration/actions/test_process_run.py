"""run_process with real processes: exit codes, timeouts and cancels that leave no survivor."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from hookrunner.actions import process
from hookrunner.actions.process import is_alive, run_process
from hookrunner.errors import ActionError

# Every test here runs with each way of starting a process.
pytestmark = pytest.mark.usefixtures("starter")


def read_pids(path: Path, count: int, timeout: float = 5.0) -> list[int]:
    """Wait until the script has written `count` pids, one a line."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            pids = [int(x) for x in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.02)
    raise AssertionError(f"script did not write {count} pids to {path}")


async def wait_pids(path: Path, count: int) -> list[int]:
    return await asyncio.to_thread(read_pids, path, count)


async def test_output_and_exit_code_3_is_a_failure(harness) -> None:
    script = harness.script("fail.sh", "echo to-stdout\necho to-stderr >&2\nexit 3\n")
    ctx = harness.ctx()
    result = await run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert (result.outcome, result.exit_code, result.reason) == ("failed", 3, "exit 3")
    assert harness.log_text() == "to-stdout\nto-stderr\n"


async def test_exit_0_succeeds(harness) -> None:
    ctx = harness.ctx()
    result = await run_process(["true"], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert (result.outcome, result.exit_code, result.reason) == ("succeeded", 0, "")


async def test_death_by_signal_is_named(harness) -> None:
    ctx = harness.ctx()
    result = await run_process(["sh", "-c", "kill -9 $$"], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert (result.outcome, result.exit_code, result.reason) == (
        "failed",
        None,
        "killed by SIGKILL",
    )


async def test_missing_executable_is_a_failed_result(harness) -> None:
    ctx = harness.ctx()
    result = await run_process(["/nonexistent/tool"], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.outcome == "failed"
    assert result.reason == "executable not found: /nonexistent/tool"
    assert "[hookrunner] executable not found: /nonexistent/tool" in harness.log_text()


async def test_a_script_whose_interpreter_is_missing_says_so(harness) -> None:
    """The script is there; exec says ENOENT for its #! interpreter (a file saved with Windows
    line endings: `#!/bin/bash\r`): "executable not found" sent people looking for the
    script."""
    ctx = harness.ctx()
    crlf, other = harness.root / "crlf.sh", harness.root / "other.py"
    crlf.write_bytes(b"#!/bin/bash\r\necho hi\r\n")
    other.write_bytes(b"#!/usr/bin/python9 -u\nprint(1)\n")
    for script in (crlf, other):
        script.chmod(0o755)
    result = await run_process([str(crlf)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.reason == (f"cannot start {crlf}: its #! line ends with a carriage return "
                             "(Windows line endings: convert the file, e.g. with dos2unix), so "
                             "its interpreter /bin/bash\\r is not found"), result.reason
    result = await run_process([str(other)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.reason == (f"cannot start {other}: the interpreter its #! line names is not "
                             "found: /usr/bin/python9"), result.reason


async def test_an_argument_or_variable_too_long_for_linux_is_named_not_quoted(harness) -> None:
    """E2BIG ("Argument list too long") says which one, without its value (maybe a secret),
    before the start: a refusal every attempt would meet (it was retried per the rule)."""
    ctx = harness.ctx()
    big = "x" * 200_000
    with pytest.raises(ActionError, match=r"^argument 2 is over 128 KiB, the most Linux "
                                          r"takes for one \(give a large value on stdin"):
        await run_process(["echo", "a", big], ctx=ctx, cwd=harness.root, env=ctx.env)
    env = {**ctx.env, "TF_VAR_s": big}
    with pytest.raises(ActionError, match=r"^environment variable TF_VAR_s is over 128 KiB"):
        await run_process(["echo"], ctx=ctx, cwd=harness.root, env=env)
    many = {**ctx.env, **{f"V{i}": "y" * 1500 for i in range(2000)}}  # 3 MB in all
    with pytest.raises(ActionError, match=r"^the arguments and environment together are \d+ "
                                          r"KiB, more than this machine takes"):
        await run_process(["echo"], ctx=ctx, cwd=harness.root, env=many)
    assert big not in harness.log_text()


async def test_missing_cwd_is_a_failed_result(harness) -> None:
    ctx = harness.ctx()
    missing = harness.root / "nope"
    result = await run_process(["true"], ctx=ctx, cwd=missing, env=ctx.env)
    assert result.outcome == "failed"
    assert result.reason.startswith(f"working directory {missing} is not usable")


async def test_timeout_kills_the_whole_tree(harness) -> None:
    pidfile = harness.root / "pids"
    script = harness.script(
        "tree.sh",
        f"sleep 60 & echo $! >> {pidfile}\n(sleep 60; echo never) & echo $! >> {pidfile}\n"
        f"echo $$ >> {pidfile}\necho started\nsleep 60\n",
    )
    ctx = harness.ctx(timeout=1.0)
    started = time.monotonic()
    result = await run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.outcome == "timed_out"
    assert result.reason == "timed out after 1s"
    assert time.monotonic() - started < 4
    pids = read_pids(pidfile, 3)
    assert [pid for pid in pids if is_alive(pid)] == []
    # Not noted here: the run's closing line says it (the dispatcher's; a line here made two).
    assert harness.log_text() == "started\n"


def _late_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The event loop busy for 0.4 s just as the deadline or cancel is seen (a slow turn on a
    loaded server): a process that exits meanwhile has not been seen to exit yet."""
    real_wait = asyncio.wait

    async def wait(aws, *, timeout=None, return_when=asyncio.ALL_COMPLETED):  # type: ignore[no-untyped-def]
        done, pending = await real_wait(aws, timeout=timeout, return_when=return_when)
        time.sleep(0.4)  # the point: a blocked loop
        return done, pending

    monkeypatch.setattr(process.asyncio, "wait", wait)


async def test_an_exit_seen_late_at_the_deadline_is_the_runs_own_outcome(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It ended by itself before it was stopped: succeeded (a `timed_out` was retried and ran
    a finished deploy again)."""
    _late_loop(monkeypatch)
    ctx = harness.ctx(timeout=0.3)
    result = await run_process(["sh", "-c", "sleep 0.45; echo done"], ctx=ctx, cwd=harness.root,
                               env=ctx.env)
    assert (result.outcome, result.exit_code, result.reason) == ("succeeded", 0, "")
    assert harness.log_text() == "done\n"


async def test_an_exit_seen_late_at_a_cancel_is_the_runs_own_outcome(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _late_loop(monkeypatch)
    ctx = harness.ctx(timeout=None)
    asyncio.get_running_loop().call_later(0.3, ctx.cancel.set)
    result = await run_process(["sh", "-c", "sleep 0.45; exit 3"], ctx=ctx, cwd=harness.root,
                               env=ctx.env)
    assert (result.outcome, result.exit_code, result.reason) == ("failed", 3, "exit 3")


async def test_an_exit_code_is_never_lost_to_a_reap_without_pidfd(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pidfd_open (an old kernel, a container's seccomp profile) a thread waits in
    waitpid: a look at the exit that reaped it first left that thread to find no child and
    record exit 0, so a failed run was `succeeded` (1 in ~600 at a timeout's edge)."""
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    seen = set()
    for i in range(300):
        ctx = harness.ctx(timeout=0.0005 + (i % 12) * 0.0005)  # at the exit's own moment
        result = await run_process(["sh", "-c", "exit 3"], ctx=ctx, cwd=harness.root, env=ctx.env)
        seen.add((result.outcome, result.exit_code))
    assert ("succeeded", 0) not in seen, seen


async def test_a_timeout_stops_a_child_that_left_the_group_and_its_environment(harness) -> None:
    """`setsid env -i ...`: out of the group, and without HOOKRUNNER_RUN_ID to be found by
    later; still a child of the running leader, so it goes with the run."""
    pidfile = harness.root / "pids"
    script = harness.script(
        "detach.sh", f"setsid env -i sh -c 'echo $$ >> {pidfile}; exec sleep 60' &\n"
                     "echo started\nsleep 60\n")
    ctx = harness.ctx(timeout=1.0)
    await _times_out_leaving_none(harness, script, ctx, pidfile)
    assert "stopping 1 process(es) of the run that left its process group" in harness.log_text()


async def _times_out_leaving_none(harness, script: Path, ctx: Any, pidfile: Path) -> None:
    """The script's run times out, and the one process it wrote to `pidfile` is gone soon."""
    result = await run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.outcome == "timed_out"
    (pid,) = read_pids(pidfile, 1)
    deadline = time.monotonic() + 5
    while is_alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not is_alive(pid), "a process of the run outlived it"


async def test_a_timeout_stops_what_a_term_trap_starts_out_of_the_group_and_its_environment(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review: the leader's TERM trap starts `setsid env -i sleep` during the stop's grace:
    it was looked for once, before the SIGTERM, and outlived the run (reparented to init)."""
    monkeypatch.setattr(process, "GRACE_PERIOD", 1.0)
    pidfile = harness.root / "pids"
    script = harness.script(
        "trap.sh", f"trap 'setsid env -i sh -c \"echo \\$\\$ >> {pidfile}; exec sleep 60\" "
                   "</dev/null >/dev/null 2>&1 &' TERM\necho started\n"
                   "while :; do sleep 0.1; done\n")
    await _times_out_leaving_none(harness, script, harness.ctx(timeout=0.5), pidfile)


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "GRACE_PERIOD", 0.5)
    pidfile = harness.root / "pids"
    script = harness.script(
        "stubborn.sh",
        f"sh -c 'trap \"\" TERM; echo $$ >> {pidfile}; while :; do sleep 0.1; done' &\nsleep 60\n",
    )
    ctx = harness.ctx(timeout=0.5)
    task = asyncio.ensure_future(run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env))
    (stubborn,) = await wait_pids(pidfile, 1)
    result = await task
    assert result.outcome == "timed_out"
    assert not is_alive(stubborn)


async def test_cancel_kills_the_whole_tree(harness) -> None:
    pidfile = harness.root / "pids"
    script = harness.script("tree.sh", f"sleep 60 & echo $! >> {pidfile}\necho $$ >> {pidfile}\nsleep 60\n")
    ctx = harness.ctx(timeout=None)
    task = asyncio.ensure_future(run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env))
    pids = await wait_pids(pidfile, 2)
    ctx.cancel.set()
    result = await asyncio.wait_for(task, 4)
    assert (result.outcome, result.reason) == ("canceled", "canceled")
    assert [pid for pid in pids if is_alive(pid)] == []
    # The run's closing line says it, and why (the dispatcher's): not a line of its own before.
    assert "[hookrunner] canceled" not in harness.log_text()


async def test_processes_left_behind_after_a_normal_exit_are_stopped(harness) -> None:
    pidfile = harness.root / "pids"
    script = harness.script("daemonize.sh", f"sleep 60 >/dev/null 2>&1 &\necho $! >> {pidfile}\nexit 0\n")
    ctx = harness.ctx()
    result = await run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.outcome == "succeeded"
    assert not is_alive(read_pids(pidfile, 1)[0])
    assert "[hookrunner] stopping processes the action left running" in harness.log_text()


async def test_output_is_in_the_log_while_the_process_runs(harness) -> None:
    ctx = harness.ctx()
    argv = ["sh", "-c", "echo first; sleep 1; echo second"]
    task = asyncio.ensure_future(run_process(argv, ctx=ctx, cwd=harness.root, env=ctx.env))
    for _ in range(80):
        await asyncio.sleep(0.01)
        if (harness.tmp / "run.log").exists() and harness.log_text() == "first\n":
            break
    assert harness.log_text() == "first\n"
    assert not task.done()
    assert (await task).outcome == "succeeded"
    assert harness.log_text() == "first\nsecond\n"


async def test_log_is_capped_keeping_its_start_and_its_end(harness) -> None:
    ctx = harness.ctx(cap=1000)
    argv = ["sh", "-c", 'i=0; while [ $i -lt 500 ]; do echo "line $i"; i=$((i+1)); done;'
            ' echo "the end: why it failed" >&2']
    result = await run_process(argv, ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.outcome == "succeeded"
    ctx.log.note("succeeded")  # as the dispatcher's last note and close: the end is written
    ctx.log.close()  # type: ignore[attr-defined]
    data = (harness.tmp / "run.log").read_bytes()
    out = b"".join(b"line %d\n" % i for i in range(500)) + b"the end: why it failed\n"
    assert out[749:750] == b"\n"  # the start ends on a line
    assert data.startswith(out[:750] + b"[hookrunner] output past 1000 bytes: after its first"
                           b" 750, only its last 250 bytes are kept"), data
    dropped = len(out) - 1000
    assert data.endswith(b"\n[hookrunner] %d bytes of output dropped here; the last 250 follow\n"
                         % dropped + out[-250:] + b"[hookrunner] succeeded\n"), data


async def test_stdin_bytes_reach_the_process(harness) -> None:
    ctx = harness.ctx()
    body = b'{"big": "' + b"x" * 200_000 + b'"}'
    result = await run_process(["wc", "-c"], ctx=ctx, cwd=harness.root, env=ctx.env, stdin=body)
    assert result.outcome == "succeeded"
    assert harness.log_text().strip() == str(len(body))


@pytest.mark.parametrize("script", [
    "cat > {out}",  # its output pipe ends at once: cat writes to a file
    "exec >/dev/null 2>&1; sleep 0.3; cat > {out}",  # sends its output elsewhere, then reads
])
async def test_stdin_arrives_whole_when_the_output_ends_first(harness, script: str) -> None:
    """The end of the output is not the end of the run: stdin is fed on (it was cut at one
    pipe buffer, 64 KiB, and the run still succeeded)."""
    ctx = harness.ctx()
    out = harness.root / "payload.bin"
    body = b"z" * 1_000_000
    result = await run_process(["sh", "-c", script.format(out=out)], ctx=ctx, cwd=harness.root,
                               env=ctx.env, stdin=body)
    assert result.outcome == "succeeded", result
    assert out.stat().st_size == len(body)


async def _descriptors_after_a_first_run(harness) -> int:
    """Open descriptors once the spawner's own (made on its first use) are open."""
    ctx = harness.ctx(name="first")
    ctx.log.close()
    await run_process(["true"], ctx=ctx, cwd=harness.root, env=ctx.env, stdin=b"")
    return len(os.listdir("/proc/self/fd"))


async def test_stdin_not_read_by_the_process_ends_the_feed(harness) -> None:
    ctxs = [harness.ctx(name=f"run{i}") for i in range(2)]  # each opens its log
    fds = await _descriptors_after_a_first_run(harness)
    for ctx, argv in zip(ctxs, (["true"], ["sh", "-c", "head -c 100000 >/dev/null; exec 0<&-"
                                           "; sleep 0.2"]), strict=True):
        result = await run_process(argv, ctx=ctx, cwd=harness.root, env=ctx.env,
                                   stdin=b"y" * 4_000_000)
        assert result.outcome == "succeeded", (argv, result)
        assert len(os.listdir("/proc/self/fd")) == fds


async def test_stdin_held_unread_by_a_process_left_behind_is_let_go_at_the_end(harness) -> None:
    """A detached daemon (setsid, so not stopped with the group) keeps the stdin pipe open
    and never reads it: the feed ends with the run, and nothing of it stays open here."""
    ctx = harness.ctx()
    pidfile = harness.root / "daemon.pid"
    fds = await _descriptors_after_a_first_run(harness)
    body = b"x" * 4_000_000  # far past a pipe's buffer
    # Through fd 3: sh gives a background job /dev/null for stdin, before its own redirections.
    script = f"exec 3<&0; setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' <&3 & sleep 0.3"
    started = time.monotonic()
    result = await run_process(["sh", "-c", script], ctx=ctx, cwd=harness.root, env=ctx.env,
                               stdin=body)
    try:
        assert result.outcome == "succeeded", result
        assert time.monotonic() - started < 10
        assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        os.kill(int(pidfile.read_text()), 9)


async def test_already_canceled_run_starts_nothing(harness) -> None:
    ctx = harness.ctx()
    ctx.cancel.set()
    marker = harness.root / "ran"
    result = await run_process(["touch", str(marker)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.outcome == "canceled"
    assert not marker.exists()


async def test_being_cancelled_as_a_task_kills_the_group(harness) -> None:
    pidfile = harness.root / "pids"
    script = harness.script("tree.sh", f"echo $$ >> {pidfile}\nsleep 60\n")
    ctx = harness.ctx()
    task = asyncio.ensure_future(run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env))
    (pid,) = await wait_pids(pidfile, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not is_alive(pid):
            break
        await asyncio.sleep(0.02)
    assert not is_alive(pid)


def test_env_is_exactly_what_was_given(harness) -> None:
    """A sanity check of the harness: the server's secrets never reach the base env."""
    os.environ["HOOKRUNNER_TEST_SECRET"] = "s3cret"
    try:
        ctx = harness.ctx()
        assert "HOOKRUNNER_TEST_SECRET" not in ctx.env
    finally:
        del os.environ["HOOKRUNNER_TEST_SECRET"]


async def test_an_interrupt_lets_the_leader_stop_its_children_before_the_group_is_stopped(
    harness,
) -> None:
    """Terraform's way: a cancel sent SIGTERM to the whole group, and its providers died in
    the middle of a call (a resource created then was never recorded). With `interrupt`, the
    leader alone gets the signal and the time to end its children's work itself."""
    import signal

    script = harness.script("leader.sh", (
        "sh -c 'trap \"\" INT TERM; sleep 0.5; echo child finished its call' &\n"
        "child=$!\n"
        "trap 'echo leader interrupted; wait $child; echo leader done; exit 130' INT\n"
        "echo started\n"
        "wait $child; sleep 30\n"))
    ctx = harness.ctx()
    task = asyncio.ensure_future(run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env,
                                             interrupt=(signal.SIGINT, 10.0)))
    deadline = time.monotonic() + 10
    while "started" not in harness.log_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    ctx.cancel.set()
    result = await task
    log = harness.log_text()
    assert result.outcome == "canceled", log
    assert "sent SIGINT to" in log
    assert log.index("leader interrupted") < log.index("child finished its call") \
        < log.index("leader done"), log


async def test_a_stop_ends_by_the_time_the_run_must_be_gone_whatever_its_grace(harness) -> None:
    """A lease lost while a canceled Terraform has its 10 s to stop (stop_by, set during that
    wait): the group is killed by then, not after the interrupt's and the group's graces
    (another node may start the run when the lease expires)."""
    import dataclasses
    import signal

    script = harness.script("stubborn.sh", "trap '' INT TERM\necho started\nsleep 60 & wait $!\n"
                                           "sleep 60\n")
    bound: list[float | None] = [None]
    ctx = dataclasses.replace(harness.ctx(), stop_by=lambda: bound[0])
    task = asyncio.ensure_future(run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env,
                                             interrupt=(signal.SIGINT, 10.0)))
    deadline = time.monotonic() + 10
    while "started" not in harness.log_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    ctx.cancel.set()
    await asyncio.sleep(0.3)
    bound[0] = time.monotonic() + 0.5
    result = await task
    assert result.outcome == "canceled"
    assert time.monotonic() - bound[0] < 1.0, "stopped long after it had to be gone"


async def test_a_script_without_its_first_line_or_a_directory_says_what_is_wrong(harness) -> None:
    """A script without `#!` (or with a byte-order mark before it) failed with "Exec format
    error" alone; a directory as the program with "not executable"."""
    ctx = harness.ctx()
    plain = harness.root / "plain.sh"
    plain.write_bytes(b"\xef\xbb\xbf#!/bin/sh\necho hi\n")
    plain.chmod(0o755)
    result = await run_process([str(plain)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert "a script needs a `#!` line first" in result.reason, result.reason
    (harness.root / "adir").mkdir()
    result = await run_process([str(harness.root / "adir")], ctx=ctx, cwd=harness.root,
                               env=ctx.env)
    assert result.reason.endswith("adir is a directory"), result.reason


async def test_a_stopped_process_gets_its_sigterm_handled(harness) -> None:
    """SIGTERM went without SIGCONT: a stopped process could not run its handler, and was
    killed 5 s later every time."""
    ctx = harness.ctx(timeout=1.0)
    script = harness.root / "stops.sh"
    script.write_text("#!/bin/bash\ntrap 'echo handled; exit 0' TERM\nkill -STOP $$\nsleep 30\n")
    script.chmod(0o755)
    result = await run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.outcome == "timed_out"
    assert "handled" in harness.log_text()  # its trap ran: not killed 5 s later instead


async def test_the_start_mark_is_written_as_the_process_starts_not_while_it_waits(
        harness, starter: str) -> None:
    """Written on the loop before the start waited for a spawner thread (busy in a burst):
    a crash in that wait left the mark of a process that never was, and the next start
    failed the run as interrupted instead of running it. Now the spawner writes it, just
    before the start. (The Popen way starts on the loop, right after the mark.)"""
    import dataclasses
    import threading

    marks: list[str] = []
    out = harness.tmp / "ran"
    ctx = dataclasses.replace(harness.ctx(), starting=lambda: marks.append(
        threading.current_thread().name))
    release = threading.Event()
    busy = [process._SPAWNER.submit(release.wait, 30) for _ in range(4)]  # every thread
    try:
        task = asyncio.ensure_future(run_process(["sh", "-c", f"echo x > {out}"], ctx=ctx,
                                                 cwd=harness.root, env=ctx.env))
        await asyncio.sleep(0.3)
        if starter == "posix_spawn":
            assert marks == [] and not out.exists()  # waiting: no mark, no process
        release.set()
        result = await task
    finally:
        release.set()
        for b in busy:
            b.result(timeout=30)
    assert result.outcome == "succeeded" and out.exists()
    assert len(marks) == 1
    if starter == "posix_spawn":
        assert marks[0].startswith("hookrunner-spawn")
