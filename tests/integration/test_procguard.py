"""Actions run as the server's user, but cannot read its environment (its secrets) through
/proc. The server runs here as root with every capability dropped, as an ordinary user is:
with capabilities, root reads everything anyway, and this machine runs tests as root."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serverproc import Capless

RULES = """
hooks:
  open: {verify: {none: {}}}
rules:
  - name: peek
    hook: open
    run:
      shell:
        argv: [sh, -c, 'cat /proc/$PPID/environ | tr "\\0" "\\n" | grep -c "^SERVER_SECRET="; true']
"""


@pytest.mark.skipif(shutil.which("setpriv") is None or not sys.platform.startswith("linux"),
                    reason="needs Linux and setpriv (util-linux)")
def test_an_action_cannot_read_the_servers_environment(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    server = Capless(tmp_path / "rules", tmp_path / "data", tmp_path,
                     env={"SERVER_SECRET": "s3cret-value"}).start()
    try:
        answer = httpx.post(f"{server.url}/hooks/open?wait=20s", json={}, timeout=30).json()
        (run,) = answer["runs"]
        assert run["status"] == "succeeded", run
        assert "environ: Permission denied" in run["output"], run["output"]
        assert "\n0\n" in run["output"] and "s3cret" not in run["output"], run["output"]
        assert "server.still_dumpable" not in server.output()
    finally:
        server.stop()


def test_the_mark_holds_over_fork_and_is_gone_after_exec() -> None:
    code = """
import os, subprocess, sys
from hookrunner.procguard import dumpable, not_dumpable
assert dumpable() is True
assert not_dumpable() is None
assert dumpable() is False
pid = os.fork()
if pid == 0:
    os._exit(0 if dumpable() is False else 1)
assert os.waitpid(pid, 0)[1] == 0
child = subprocess.run([sys.executable, "-c",
    "from hookrunner.procguard import dumpable; print(dumpable())"], capture_output=True, text=True)
print(child.stdout.strip())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout.strip()) == (0, "True"), out.stderr
