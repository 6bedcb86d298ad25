"""The store commands (`runs`, `cancel`, `replay`) as a user types them, against no server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "hookrunner.cli"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_a_wrong_data_dir_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    for args in (["runs"], ["cancel", "run_x"], ["replay", "dlv_x", "--rules", str(tmp_path)]):
        done = _run(*args, "--data", str(tmp_path / "typo"), cwd=tmp_path)
        assert done.returncode == 1, (args, done.stderr)
        assert "no hookrunner store at" in done.stderr and "is --data right?" in done.stderr
    assert not (tmp_path / "typo").exists()  # nothing was created


def test_an_unknown_status_filter_is_a_usage_error(tmp_path: Path) -> None:
    done = _run("runs", "--status", "bogus", "--data", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "--status must be one of queued, running" in done.stderr


def test_dry_runs_need_no_secrets_in_the_shell(tmp_path: Path) -> None:
    """`explain`/`test` verify no signature, so an unset secret variable must not stop them."""
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SECRET")}
    done = subprocess.run(
        [*CLI, "explain", "--rules", str(repo / "rules"), "--hook", "github",
         "--payload", str(repo / "examples/payloads/github-push.json"),
         "--header", "X-GitHub-Event: push"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "redeploy-on-push" in done.stdout and "matched" in done.stdout
