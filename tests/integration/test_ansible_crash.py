"""A server SIGKILLed while a real playbook runs: the next start removes the attempt's
private_data_dir, which holds the whole payload (`extravars.yml`) and the modules' arguments."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.serverproc import Server

RULES = """
hooks:
  an: {verify: none}
rules:
  - name: slow
    hook: an
    run: {ansible: {playbook: slow.yml}}
"""
SLOW_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.command: sleep 120
"""


def test_a_playbooks_dir_a_sigkill_left_is_removed_at_the_next_start(project: Path) -> None:
    """Nothing removed it: the terraform vars file was, at the start after the SIGKILL, but
    the ansible dir, with the payload in it, stayed under --data for good."""
    (project / "rules" / "rules.yaml").write_text(RULES)
    (project / "playbooks").mkdir()
    (project / "playbooks" / "slow.yml").write_text(SLOW_PLAYBOOK)
    server = Server(project / "rules", project / "data", project).start()
    try:
        httpx.post(f"{server.url}/hooks/an", json={"x": "payload-secret-zzz"}).raise_for_status()
        work = project / "data" / "work"
        deadline = time.monotonic() + 60
        # The play is under way once its module's arguments are written.
        while not list(work.glob("*/*/ansible-*/tmp/**/AnsiballZ_*")):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        left = list(work.glob("*/*/ansible-*"))
        assert len(left) == 1
        assert "payload-secret-zzz" in (left[0] / "extravars.yml").read_text()
    finally:
        server.kill()
    assert left[0].exists()
    again = Server(project / "rules", project / "data", project).start()
    try:
        assert not left[0].exists(), again.output()
        assert not list(work.glob("*/*/ansible-*"))
        assert "dispatcher.orphans" in again.output()  # its play was stopped first
    finally:
        again.stop()
