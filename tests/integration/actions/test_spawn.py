"""What an action process starts with, whichever way it is started (posix_spawn or Popen):
its own session, exactly the given cwd, environment and stdin, no inherited descriptor, no
signal ignored or blocked that Python itself ignores or blocks."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from hookrunner.actions import spawn
from hookrunner.actions.process import run_process

each_starter = pytest.mark.usefixtures("starter")
# Tests of the posix_spawn path itself; the Popen fallback has no such path to test.
needs_posix_spawn = pytest.mark.skipif(
    not spawn.AVAILABLE, reason="this libc has no posix_spawn_file_actions_addclosefrom_np")

PROBE = """
import json, os
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0), "cwd": os.getcwd(),
    "env": dict(os.environ), "stdin": os.readlink("/proc/self/fd/0"),
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
}))
"""


@each_starter
async def test_child_gets_its_own_session_cwd_env_and_nothing_else(harness, tmp_path: Path) -> None:
    leaked = os.open(tmp_path / "leak", os.O_WRONLY | os.O_CREAT)
    os.set_inheritable(leaked, True)  # what a careless library might leave open
    try:
        work = harness.root / "sub"
        work.mkdir()
        ctx = harness.ctx()
        env = {"ONLY": "this", "PATH": "/usr/bin:/bin"}
        result = await run_process([sys.executable, "-c", PROBE], ctx=ctx, cwd=work, env=env)
    finally:
        os.close(leaked)
    assert result.outcome == "succeeded", harness.log_text()
    seen = json.loads(harness.log_text())
    assert seen["sid"] == seen["pgid"] == seen["pid"]  # leader of a new session and group
    assert seen["cwd"] == str(work)
    assert {k: v for k, v in seen["env"].items() if k != "LC_CTYPE"} == env  # Python may add LC_CTYPE
    assert seen["stdin"] == "/dev/null"
    assert leaked not in seen["fds"]
    assert seen["fds"][:3] == [0, 1, 2] and len(seen["fds"]) <= 4  # + the listing's own


@each_starter
async def test_sigpipe_and_sigxfsz_are_back_to_default_and_nothing_is_blocked(
    harness, starter: str
) -> None:
    # exec: the process the action started reads its own masks (exec keeps them). Reading
    # the shell's own from a child caught bash mid-wait, with its signals blocked.
    script = harness.script("sig.sh", "exec grep -E '^Sig(Ign|Blk):' /proc/self/status\n")
    ctx = harness.ctx()
    result = await run_process([str(script)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert result.outcome == "succeeded", harness.log_text()
    masks = dict(line.split(":\t") for line in harness.log_text().splitlines())
    ignored = int(masks["SigIgn"], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} ignored in the child"
    if starter == "posix_spawn":  # sets the mask itself; Popen passes on its caller's mask
        assert int(masks["SigBlk"], 16) == 0


@each_starter
async def test_bare_name_is_found_on_the_childs_path_never_in_its_cwd(harness) -> None:
    harness.script("tool", "echo ran-from-cwd\n")
    bindir = harness.root / "bin"
    harness.script("bin/other", "echo ran-from-path\n")
    ctx = harness.ctx()
    env = {"PATH": str(bindir)}
    missing = await run_process(["tool"], ctx=ctx, cwd=harness.root, env=env)
    assert (missing.outcome, missing.reason) == ("failed", "executable not found: tool")
    found = await run_process(["other"], ctx=harness.ctx(name="two"), cwd=harness.root, env=env)
    assert found.outcome == "succeeded"
    assert harness.log_text("two") == "ran-from-path\n"
    assert "ran-from-cwd" not in harness.log_text()


@each_starter
async def test_start_failures_name_their_cause(harness) -> None:
    script = harness.script("ok.sh", "true\n")
    plain = harness.root / "plain.txt"
    plain.write_text("not a program\n")
    ctx = harness.ctx()
    gone = await run_process([str(script)], ctx=ctx, cwd=harness.root / "nope", env=ctx.env)
    assert gone.outcome == "failed" and "nope" in gone.reason
    assert "executable not found" not in gone.reason
    denied = await run_process([str(plain)], ctx=ctx, cwd=harness.root, env=ctx.env)
    assert (denied.outcome, denied.reason) == ("failed", f"not executable: {plain}")


@needs_posix_spawn
def test_spawn_refuses_a_bare_name_not_on_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        spawn.Spawn(["no-such-tool"], cwd=str(tmp_path), env={"PATH": str(tmp_path)},
                    stdin_fd=0, output_fd=1)
    assert caught.value.errno == errno.ENOENT and caught.value.filename == "no-such-tool"


@needs_posix_spawn
def test_spawn_gives_the_process_the_bytes_os_fsencode_makes(tmp_path: Path) -> None:
    """The argv and environment are encoded with str.encode and the file system's codec
    (not os.fsencode, four Python calls a string): non-ASCII text and the surrogate escapes
    of a file name that is not UTF-8 reach the process as os.fsencode's bytes."""
    arg, value = "é-\udcff-ü", "\udce9t\u00e9"
    read_end, write_end = os.pipe()
    try:
        pid = spawn.Spawn(["/bin/sh", "-c", 'printf "%s|%s|%s" "$1" "$K" "$PWD"', "sh", arg],
                          cwd=str(tmp_path), env={"K": value, "PATH": "/bin:/usr/bin"},
                          stdin_fd=0, output_fd=write_end).call()
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as out:
        got = out.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == b"|".join([os.fsencode(arg), os.fsencode(value), os.fsencode(str(tmp_path))])


@needs_posix_spawn
def test_spawn_refuses_what_popen_refuses(tmp_path: Path) -> None:
    for argv, env in ((["/bin/echo", "a\0b"], {}), (["/bin/echo"], {"K": "v\0w"}),
                      (["/bin/echo"], {"K=J": "v"}), (["/bin/echo"], {"K\0": "v"})):
        with pytest.raises(ValueError):
            spawn.Spawn(argv, cwd=str(tmp_path), env=env, stdin_fd=0, output_fd=1)


@needs_posix_spawn
async def test_cancelled_twice_while_starting_leaves_no_process(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = spawn.Spawn.call

    def slow_call(self: spawn.Spawn) -> int:
        time.sleep(0.3)  # the start is still under way when the cancels come
        return original(self)

    monkeypatch.setattr(spawn.Spawn, "call", slow_call)
    marker = f"hookrunner-test-{os.getpid()}-{time.monotonic_ns()}"
    ctx = harness.ctx()
    task = asyncio.create_task(
        run_process(["/bin/sleep", "30"], ctx=ctx, cwd=harness.root,
                    env={**ctx.env, "MARKER": marker}))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Had the task not waited for the start, the descriptors it closed could be reused by
    # now (here: by these files) and handed to a process nobody watches.
    reused = [os.open(harness.tmp / f"reuse{i}", os.O_RDWR | os.O_CREAT) for i in range(8)]
    await asyncio.sleep(0.5)  # past the slowed start
    for fd in reused:
        os.close(fd)
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in environ:
                left.append(int(entry.name))
    assert left == []
