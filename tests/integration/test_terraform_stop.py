"""A stopping server and an interrupted Terraform apply: Terraform gets SIGINT alone and the
time its providers need to return (up to INTERRUPT_GRACE_MAX), before anything is killed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.serverproc import Server

RULES = """
hooks:
  infra: {verify: none}
rules:
  - name: apply
    hook: infra
    run: {terraform: {dir: tf, command: apply}}
"""
# Stands for Terraform whose provider is in the middle of a create call: on SIGINT it waits
# 12 s for the call to return (past the 10 s a stopping server gave it), then writes state.
# (The real CLI that `make test` installs offline has no provider that makes such a call.)
FAKE_TERRAFORM = """#!/bin/sh
[ "$1" = apply ] || exit 0
out="{out}"
trap 'echo interrupted >> "$out"; sleep 12; echo state written >> "$out"; exit 1' INT
echo started >> "$out"
sleep 120 &
wait $!
"""


def _fake_terraform(project: Path, tmp_path: Path) -> tuple[Path, Path]:
    """FAKE_TERRAFORM on a PATH dir of its own, and the `tf` dir it applies: (its output
    file, that dir)."""
    out = tmp_path / "terraform.out"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "terraform"
    fake.write_text(FAKE_TERRAFORM.format(out=out))
    fake.chmod(0o755)
    (project / "tf").mkdir()
    (project / "tf" / "main.tf").write_text("")
    return out, bin_dir


def test_a_stopping_server_lets_an_interrupted_apply_record_its_state(
    project: Path, tmp_path: Path,
) -> None:
    """The stop canceled the apply after its grace and gave it 10 s more before killing its
    group (and logging that the store did not answer, which was not so)."""
    out, bin_dir = _fake_terraform(project, tmp_path)
    (project / "rules" / "rules.yaml").write_text(RULES)
    server = Server(project / "rules", project / "data", project,
                    env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOOKRUNNER_GRACE": "1s"}).start()
    assert server.proc is not None
    run_id = httpx.post(f"{server.url}/hooks/infra", json={}).json()["runs"][0]
    deadline = time.monotonic() + 20
    while not (out.exists() and "started" in out.read_text()):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM), server.output()
    assert out.read_text().splitlines() == ["started", "interrupted", "state written"]
    assert "run.result_abandoned" not in server.output()
    assert f"run.finished run_id={run_id}" in server.output()


def test_a_vars_file_a_sigkill_left_is_removed_at_the_next_start(
    project: Path, tmp_path: Path,
) -> None:
    """A rule's vars (a password among them) stayed under --data, 0600, after a SIGKILL of
    the server mid-apply: nothing removed them but pruning the run."""
    out, bin_dir = _fake_terraform(project, tmp_path)
    (project / "rules" / "rules.yaml").write_text(RULES.replace(
        "command: apply}", 'command: apply, vars: {db_password: "{{ payload.pw }}"}}'))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    server = Server(project / "rules", project / "data", project, env=env).start()
    httpx.post(f"{server.url}/hooks/infra", json={"pw": "hunter2"})
    deadline = time.monotonic() + 20
    while not (out.exists() and "started" in out.read_text()):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    left = list((project / "data" / "work").glob("*/*/vars.tfvars.json"))
    assert len(left) == 1 and "hunter2" in left[0].read_text()
    server.kill()
    assert left[0].exists()
    again = Server(project / "rules", project / "data", project, env=env).start()
    try:
        assert not left[0].exists(), again.output()
        assert not list((project / "data" / "work").rglob("vars.tfvars.json"))
    finally:
        again.stop()
