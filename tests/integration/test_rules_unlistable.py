"""A rules directory (or one of its sub-directories) that cannot be listed is a failed load,
never "fewer rules": its hooks would answer 404 while /readyz said all was well. The server
and `check` run without capabilities (setpriv), so file permissions apply to them though
the tests run as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.serverproc import Capless

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None or not sys.platform.startswith("linux"),
                                reason="needs Linux and setpriv (util-linux)")

CAPLESS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def _hook(name: str) -> str:
    return f"hooks:\n  {name}: {{verify: {{none: {{}}}}}}\n"


@pytest.fixture
def rules(tmp_path: Path) -> Iterator[Path]:
    """`top.yaml` and `team/team.yaml`; the team's directory's permissions given back after."""
    rules = tmp_path / "rules"
    (rules / "team").mkdir(parents=True)
    (rules / "top.yaml").write_text(_hook("top"))
    (rules / "team" / "team.yaml").write_text(_hook("team"))
    yield rules
    (rules / "team").chmod(0o755)


def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_check_fails_on_a_sub_directory_it_cannot_list(rules: Path) -> None:
    (rules / "team").chmod(0)
    done = subprocess.run([*CAPLESS, sys.executable, "-m", "hookrunner.cli", "check",
                           "--rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot list the rules directory {rules / 'team'}: Permission denied" in done.stderr


def _ready(server: Capless) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(server.url + "/readyz", timeout=10).json()
    return answer


def test_a_sub_directory_that_cannot_be_listed_fails_the_reload_and_keeps_its_hooks(
        rules: Path, tmp_path: Path) -> None:
    server = Capless(rules, tmp_path / "data", tmp_path).start()
    try:
        assert httpx.post(f"{server.url}/hooks/team", json={}, timeout=10).status_code == 202
        (rules / "team").chmod(0)  # nothing else changes: the watcher's look itself fails
        _until(lambda: _ready(server)["last_reload"] == "failed")
        # Where, as far as /readyz says (the log says what): the directory, not "see the log".
        assert _ready(server)["reload_errors"] == [f"{rules} (see the log)"], _ready(server)
        assert "cannot list the rules directory" in server.output()
        # The live rules are kept: the team's hook is still served, not a 404.
        assert httpx.post(f"{server.url}/hooks/team", json={}, timeout=10).status_code == 202
        (rules / "team").chmod(0o755)
        _until(lambda: _ready(server)["last_reload"] == "ok")
        # A link to a team's directory that went away: said, not dropped in silence.
        os.symlink(tmp_path / "gone", rules / "other-team")
        _until(lambda: "other-team:1: cannot read" in server.output())
    finally:
        server.stop()


def test_a_directory_that_may_be_entered_but_not_listed_is_left_closed(tmp_path: Path) -> None:
    """Mode --x: kept closed on purpose, a directory of `{file:}` secrets read by their names
    (it held no rules before either): not a failure of the load."""
    rules = tmp_path / "rules"
    (rules / "secrets").mkdir(parents=True)
    (rules / "secrets" / "token").write_text("s3cret-token-value\n")
    (rules / "h.yaml").write_text(
        "hooks:\n  h: {verify: {token: {secret: {file: rules/secrets/token}}}}\n")
    (rules / "secrets").chmod(0o311)
    try:
        done = subprocess.run([*CAPLESS, sys.executable, "-m", "hookrunner.cli", "check",
                               "--rules", str(rules), "--root", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        # Said, though: one made so by mistake would drop its rules without a word.
        assert f"{rules / 'secrets'}: may be entered but not listed" in done.stderr, done.stderr
        server = Capless(rules, tmp_path / "data", tmp_path).start()
        try:
            sent = {"Authorization": "Bearer s3cret-token-value"}
            assert httpx.post(f"{server.url}/hooks/h", json={}, headers=sent,
                              timeout=10).status_code == 202
        finally:
            server.stop()
    finally:
        (rules / "secrets").chmod(0o755)


def test_a_linked_rules_file_that_cannot_be_read_fails_the_reload_and_keeps_its_hooks(
        rules: Path, tmp_path: Path) -> None:
    """probe: a link to a file that exists but cannot be read (a ConfigMap mounted 0400 for
    another user) was skipped with a warning: its hooks answered 404 and /readyz said ok."""
    mounted = tmp_path / "mounted.yaml"
    mounted.write_text(_hook("linked"))
    (rules / "linked.yaml").symlink_to(mounted)
    server = Capless(rules, tmp_path / "data", tmp_path).start()
    try:
        assert httpx.post(f"{server.url}/hooks/linked", json={}, timeout=10).status_code == 202
        mounted.chmod(0)  # a change of its change time: the watcher reloads
        _until(lambda: _ready(server)["last_reload"] == "failed")
        assert "linked.yaml:1: cannot read: Permission denied" in server.output()
        assert httpx.post(f"{server.url}/hooks/linked", json={}, timeout=10).status_code == 202
    finally:
        mounted.chmod(0o644)
        server.stop()
