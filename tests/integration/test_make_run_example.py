"""`make run` as a user runs it: the shipped rules, playbooks and scripts, every path left to
its default (relative to the working directory), and the monitoring delivery that
`examples/send.sh` sends. Both of its rules must run to success, the Ansible one included.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.serverproc import Server

REPO = Path(__file__).resolve().parents[2]
# The Makefile's demo secrets: every shipped hook needs its secret to load.
DEMO_ENV = {
    "GITHUB_WEBHOOK_SECRET": "demo-github-secret",
    "MONITORING_SECRET": "demo-monitoring-secret",
    "GRAFANA_SECRET": "demo-grafana-secret",
    "STRIPE_SECRET": "whsec_ZGVtby1zdHJpcGUtc2VjcmV0",
    "ALERTMANAGER_TOKEN": "demo-alertmanager-token",
    "NOTIFY_URL": "http://127.0.0.1:9/notify",
}


class DefaultPathsServer(Server):
    """`hookrunner serve` started in `root` with no --rules, --data or --root."""

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "hookrunner.cli", "serve", "--port", str(self.port),
             "--pass-env", "NOTIFY_URL"],
            cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_the_monitoring_example_runs_its_playbook_with_relative_default_paths(
    tmp_path: Path,
) -> None:
    for name in ("rules", "playbooks", "examples", "terraform"):  # a copy: the checkout stays clean
        shutil.copytree(REPO / name, tmp_path / name)
    server = DefaultPathsServer(tmp_path / "rules", tmp_path / ".hookrunner", tmp_path,
                                env=DEMO_ENV).start()
    try:
        body = (tmp_path / "examples" / "payloads" / "monitoring-overloaded.json").read_bytes()
        signature = hmac.new(b"demo-monitoring-secret", body, hashlib.sha256).hexdigest()
        answer = httpx.post(
            f"{server.url}/hooks/monitoring", params={"wait": "120s"}, content=body, timeout=150,
            headers={"Content-Type": "application/json", "X-Signature": f"sha256={signature}"})
        assert answer.status_code == 200, answer.text
        runs = {run["rule"]: run for run in answer.json()["runs"]}
        assert set(runs) == {"log-every-alert", "scale-up-when-overloaded"}
        for run in runs.values():
            assert run["status"] == "succeeded", run["output"]
        assert (tmp_path / ".hookrunner" / "hookrunner.db").is_file()
    finally:
        server.stop()
