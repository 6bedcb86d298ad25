"""Ansible, Terraform and HTTP actions through signed webhooks on a real `hookrunner serve`.

One server for the module (real uvicorn subprocess, SQLite, ansible-runner, the terraform CLI
on PATH, an HTTP target on a loopback port started here). Each delivery is an HMAC-signed POST;
`payload.action` picks the rule. Terraform configurations hold variables and outputs only.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serverproc import Server

SECRET = "ops-hmac-secret"
PASSED_PASSWORD = "passed-pw-s3cret"  # serve --pass-env TF_VAR_db_password
RUN_TIMEOUT = 90.0

PROBE_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Scale when the payload says so
      when: webhook.monitoring_status == "overloaded"
      ansible.builtin.copy:
        dest: "{{ marker }}"
        content: "{{ webhook.service }} replicas={{ replicas }} {{ webhook.monitoring_status }}\\n"
        mode: "0600"
    - name: Otherwise say why not
      when: webhook.monitoring_status != "overloaded"
      ansible.builtin.debug:
        msg: "not scaling: status is {{ webhook.monitoring_status }}"
"""

FAILING_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.fail:
        msg: "refusing to scale {{ webhook.service }}"
"""

SAYING_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug: {msg: "WHICH ran"}
"""

MAIN_TF = """
variable "replicas" {
  type = number
  validation {
    condition     = var.replicas < 10
    error_message = "Replicas must be below 10."
  }
}
variable "service" { type = string }
output "replicas" { value = var.replicas }
output "service" { value = var.service }
output "workspace" { value = terraform.workspace }
"""

# An output echoing a variable the run's action shows [redacted] for its name.
CREDS_TF = """
variable "db_password" { type = string }
output "pw" { value = var.db_password }
output "pw_len" { value = length(var.db_password) }
"""

RULES = """
hooks:
  ops:
    verify:
      hmac:
        secret: {env: OPS_SECRET}
        header: X-Signature
        prefix: "sha256="
rules:
  - name: play
    hook: ops
    when: payload.action == "play"
    run:
      ansible:
        playbook: probe.yml
        extravars: {replicas: "{{ payload.replicas }}", marker: "{{ payload.marker }}"}
  - name: play-fail
    hook: ops
    when: payload.action == "play-fail"
    run:
      ansible: {playbook: failing.yml}
  - name: play-env
    hook: ops
    when: payload.action == "play-env"
    run:
      ansible: {playbook: "deploy-{{ payload.env }}.yml"}
  - name: apply
    hook: ops
    when: payload.action == "apply"
    run:
      terraform:
        dir: tf/app
        command: apply
        workspace: "{{ payload.env | default('default') }}"
        vars: {replicas: "{{ payload.replicas }}", service: "{{ payload.service }}"}
  - name: apply-env
    hook: ops
    when: payload.action == "apply-env"
    run:
      terraform: {dir: "tf/envs/{{ payload.env }}", command: apply}
  - name: apply-secret
    hook: ops
    when: payload.action == "apply-secret"
    run:
      terraform:
        dir: tf/app
        command: apply
        workspace: hidden
        vars: {replicas: 1, service: "{{ headers['X-Api-Key'] }}"}
  - name: apply-password
    hook: ops
    when: payload.action == "apply-password"
    run:
      terraform:
        dir: tf/creds
        command: apply
        vars: {db_password: "{{ payload.pw }}"}
  - name: apply-passed-password
    hook: ops
    when: payload.action == "apply-passed-password"
    run:
      terraform: {dir: tf/creds, command: apply}
  - name: plan
    hook: ops
    when: payload.action == "plan"
    run:
      terraform:
        dir: tf/app
        command: plan
        workspace: "{{ payload.env }}"
        vars: {replicas: "{{ payload.replicas }}", service: "{{ payload.service }}"}
  - name: notify
    hook: ops
    when: payload.action == "notify"
    run:
      http:
        url: "TARGET/{{ payload.path }}"
        method: POST
        headers: {X-Hookrunner-Delivery: "{{ delivery_id }}"}
        json: {text: "{{ payload.service }} is {{ payload.state }}", replicas: "{{ payload.replicas }}"}
  - name: notify-retried
    hook: ops
    when: payload.action == "notify-retried"
    retry: {attempts: 3, backoff: 100ms, max_backoff: 5s}
    run:
      http: {url: "TARGET/{{ payload.path }}", json: {n: 1}}
"""


class Target(BaseHTTPRequestHandler):
    """Records each request; `/fail` answers 500, `/status/N?after=S` N with Retry-After S."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append({"path": self.path, "headers": dict(self.headers), "body": body,
                              "at": time.monotonic()})
        if self.path.startswith("/status/"):  # /status/429?after=1: that status, Retry-After 1
            status, _, after = self.path.removeprefix("/status/").partition("?after=")
            self.send_response(int(status))
            if after:
                self.send_header("Retry-After", after)
            self.end_headers()
            return
        failing = self.path == "/fail"
        self.send_response(500 if failing else 200)
        self.end_headers()
        self.wfile.write(b"target is down\n" if failing else b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    (root / "playbooks").mkdir()
    (root / "playbooks" / "probe.yml").write_text(PROBE_PLAYBOOK)
    (root / "playbooks" / "failing.yml").write_text(FAILING_PLAYBOOK)
    for name in ("deploy-prod.yml", "which.yml"):
        (root / "playbooks" / name).write_text(SAYING_PLAYBOOK.replace("WHICH", name))
    (root / "playbooks" / "group_vars").mkdir()
    (root / "playbooks" / "group_vars" / "all.yml").write_text("db_password: hunter2-SECRET\n")
    (root / "tf" / "app").mkdir(parents=True)
    (root / "tf" / "app" / "main.tf").write_text(MAIN_TF)
    (root / "tf" / "envs" / "staging").mkdir(parents=True)
    (root / "tf" / "envs" / "staging" / "main.tf").write_text('output "env" { value = "staging" }\n')
    (root / "tf" / "creds").mkdir()
    (root / "tf" / "creds" / "main.tf").write_text(CREDS_TF)
    return root


@pytest.fixture(scope="module")
def server(root: Path, target: str) -> Iterator[Server]:
    assert shutil.which("terraform"), "these tests need a terraform CLI on PATH (make setup installs one)"
    rules = root.parent / "rules"
    rules.mkdir()
    (rules / "ops.yaml").write_text(RULES.replace("TARGET", target))
    srv = Server(rules, root.parent / "data", root, args=["--pass-env", "TF_VAR_db_password"],
                 env={"OPS_SECRET": SECRET, "TF_VAR_db_password": PASSED_PASSWORD}).start()
    yield srv
    srv.stop()


def deliver(server: Server, payload: dict[str, Any]) -> list[str]:
    """A signed delivery; its run ids."""
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    r = httpx.post(
        f"{server.url}/hooks/ops",
        content=body,
        timeout=30,
        headers={"Content-Type": "application/json", "X-Signature": sig},
    )
    assert r.status_code == 202, r.text
    runs: list[str] = r.json()["runs"]
    return runs


def run_one(server: Server, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Deliver, wait for its one run to end: (run record, its log)."""
    (run_id,) = deliver(server, payload)
    run = server.wait_run(run_id, timeout=RUN_TIMEOUT)
    with server.admin() as c:
        return run, c.get(f"/api/runs/{run_id}/log").text


def state_outputs(state: Path) -> dict[str, Any]:
    return {k: v["value"] for k, v in json.loads(state.read_text())["outputs"].items()}


def test_playbook_sees_the_payload_as_webhook(server: Server, root: Path) -> None:
    marker = root.parent / "scaled"
    run, log = run_one(
        server,
        {
            "action": "play",
            "monitoring_status": "overloaded",
            "service": "api",
            "replicas": 4,
            "marker": str(marker),
        },
    )
    assert run["status"] == "succeeded", log
    assert marker.read_text() == "api replicas=4 overloaded\n"
    assert "PLAY RECAP" in log
    assert run["outputs"]["stats"]["changed"] == {"localhost": 1}


def test_playbook_condition_on_the_payload_can_hold_back_the_task(server: Server, root: Path) -> None:
    marker = root.parent / "not-scaled"
    run, log = run_one(
        server,
        {"action": "play", "monitoring_status": "ok", "service": "api", "replicas": 4, "marker": str(marker)},
    )
    assert run["status"] == "succeeded", log
    assert "not scaling: status is ok" in log
    assert not marker.exists()


def test_failing_playbook_fails_the_run_with_the_reason_in_its_log(server: Server) -> None:
    run, log = run_one(server, {"action": "play-fail", "service": "api"})
    assert (run["status"], run["exit_code"]) == ("failed", 2)
    assert run["reason"].startswith("exit 2 (task ") and "failed on localhost)" in run["reason"]
    assert "refusing to scale api" in log


def test_a_templated_playbook_stays_in_the_directory_the_rule_writes(server: Server) -> None:
    """`deploy-{{ payload.env }}.yml` of `x/../group_vars/all` ran the vars file, and Ansible
    printed its lines (a password) in the log; `x/../which` ran a playbook without the rule's
    `deploy-` prefix."""
    run, log = run_one(server, {"action": "play-env", "env": "prod"})
    assert run["status"] == "succeeded" and "deploy-prod.yml ran" in log, log
    for env in ("x/../group_vars/all", "x/../which"):
        run, log = run_one(server, {"action": "play-env", "env": env})
        assert run["status"] == "failed", log
        assert "a templated playbook must stay in the directory the rule writes" in run["reason"]
        assert "hunter2" not in log and "which.yml ran" not in log, log


def test_apply_stores_outputs_made_of_payload_values(server: Server, root: Path) -> None:
    run, log = run_one(server, {"action": "apply", "replicas": 3, "service": "api"})
    assert run["status"] == "succeeded", log
    assert run["outputs"]["outputs"] == {"replicas": 3, "service": "api", "workspace": "default"}
    assert run["outputs"]["changes"]["operation"] == "apply"
    assert "Apply complete!" in log
    assert state_outputs(root / "tf/app/terraform.tfstate")["replicas"] == 3


def test_an_output_made_of_a_secret_header_is_stored_redacted(server: Server) -> None:
    """A terraform output equal to a variable rendered from a secret header was stored and
    shown in clear, while the rendered action showed the variable `[redacted]`."""
    body = json.dumps({"action": "apply-secret"}).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    r = httpx.post(f"{server.url}/hooks/ops", content=body, timeout=30, headers={
        "Content-Type": "application/json", "X-Signature": sig, "X-Api-Key": "tok-from-header"})
    assert r.status_code == 202, r.text
    run = server.wait_run(r.json()["runs"][0], timeout=RUN_TIMEOUT)
    assert run["status"] == "succeeded", run
    assert run["outputs"]["outputs"] == {"replicas": 1, "service": "[redacted]",
                                         "workspace": "hidden"}
    assert run["spec"]["vars"]["service"] == "[redacted]"


def test_an_output_echoing_a_var_named_as_a_secret_is_stored_redacted(server: Server) -> None:
    """`vars: {db_password: ...}` shows `[redacted]` in the run's action: an output equal to
    it was stored and shown in clear beside it."""
    run, log = run_one(server, {"action": "apply-password", "pw": "hunter2hunter2"})
    assert run["status"] == "succeeded", log
    assert run["spec"]["vars"]["db_password"] == "[redacted]"
    assert run["outputs"]["outputs"] == {"pw": "[redacted]", "pw_len": 14}
    with server.admin() as c:
        assert "hunter2hunter2" not in c.get(f"/api/runs/{run['id']}").text


def test_a_templated_dir_stays_in_the_directory_the_rule_writes(server: Server, root: Path) -> None:
    """`dir: tf/envs/{{ payload.env }}` of `../creds` applied tf/creds."""
    run, log = run_one(server, {"action": "apply-env", "env": "staging"})
    assert (run["status"], run["outputs"].get("outputs")) == ("succeeded", {"env": "staging"}), log
    run, log = run_one(server, {"action": "apply-env", "env": "../creds"})
    assert run["status"] == "failed", log
    assert "a templated dir must stay in the directory the rule writes before its {{ (tf/envs/)" \
        in run["reason"], run["reason"]
    assert "terraform apply" not in log and "Apply complete" not in log, log


def test_an_output_echoing_a_passed_var_named_as_a_secret_is_stored_redacted(
        server: Server) -> None:
    """`--pass-env TF_VAR_db_password` keeps a password out of the rules: an output equal to
    it was stored in clear, where the same value given in the rule's `vars` is `[redacted]`."""
    run, log = run_one(server, {"action": "apply-passed-password"})
    assert run["status"] == "succeeded", log
    assert run["outputs"]["outputs"] == {"pw": "[redacted]", "pw_len": len(PASSED_PASSWORD)}
    with server.admin() as c:
        assert PASSED_PASSWORD not in c.get(f"/api/runs/{run['id']}").text


def test_each_payload_env_gets_its_own_workspace_and_state(server: Server, root: Path) -> None:
    staging, prod = (
        deliver(server, {"action": "apply", "env": env, "replicas": n, "service": "web"})[0]
        for env, n in (("staging", 2), ("prod", 5))
    )
    for run_id, env, n in ((staging, "staging", 2), (prod, "prod", 5)):
        run = server.wait_run(run_id, timeout=RUN_TIMEOUT)
        assert run["status"] == "succeeded", run
        assert run["outputs"]["outputs"] == {"replicas": n, "service": "web", "workspace": env}
        state = root / "tf/app/terraform.tfstate.d" / env / "terraform.tfstate"
        assert state_outputs(state) == {"replicas": n, "service": "web", "workspace": env}
    # The vars' file (under --data, never --root) goes with the run.
    assert not list((root.parent / "data" / "work").rglob("*.tfvars.json"))


def test_plan_reports_changes_and_writes_no_state(server: Server, root: Path) -> None:
    run, log = run_one(server, {"action": "plan", "env": "preview", "replicas": 7, "service": "api"})
    assert run["status"] == "succeeded", log
    assert run["outputs"]["changes"]["operation"] == "plan"
    assert "outputs" not in run["outputs"]
    assert "terraform plan (workspace preview)" in log
    state = root / "tf/app/terraform.tfstate.d/preview/terraform.tfstate"
    assert not state.exists(), state.read_text()


def test_failing_apply_fails_the_run_with_the_reason_in_its_log(server: Server) -> None:
    run, log = run_one(server, {"action": "apply", "env": "broken", "replicas": 12, "service": "api"})
    assert run["status"] == "failed", log
    assert run["reason"] == "apply: exit 1 (Invalid value for variable)", run["reason"]
    assert "Replicas must be below 10." in log
    assert "outputs" not in run["outputs"]


def test_http_action_posts_the_templated_json(server: Server) -> None:
    Target.received.clear()
    (run_id,) = deliver(
        server, {"action": "notify", "path": "hook", "service": "api", "state": "degraded", "replicas": 3}
    )
    run = server.wait_run(run_id, timeout=RUN_TIMEOUT)
    assert (run["status"], run["outputs"]) == ("succeeded", {"status": 200}), run
    (request,) = Target.received
    assert request["path"] == "/hook"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Hookrunner-Delivery"] == run["delivery_id"]
    assert json.loads(request["body"]) == {"text": "api is degraded", "replicas": 3}


def test_a_reason_quoting_a_huge_payload_value_keeps_its_start_and_end(server: Server) -> None:
    """A 300 KB path made a 300,078-character reason, in every listing of runs."""
    path = "a" * 150_000 + "z" * 150_000 + "END"
    run, _ = run_one(server, {"action": "notify", "path": path, "service": "s", "state": "x",
                                "replicas": 1})
    assert run["status"] == "failed", run["reason"][:300]
    reason = run["reason"]
    assert len(reason) <= 1024, len(reason)
    assert reason.startswith("http: not a URL the client can send") and reason.endswith("zzzEND")
    assert "characters cut]..." in reason
    with server.admin() as c:
        listed = c.get("/api/runs", params={"rule": "notify"}).json()
    assert all(len(r["reason"] or "") <= 1024 for r in listed["runs"]), listed


def test_http_500_fails_the_run_with_the_answer_in_its_log(server: Server) -> None:
    run, log = run_one(
        server, {"action": "notify", "path": "fail", "service": "api", "state": "down", "replicas": 1}
    )
    assert (run["status"], run["reason"], run["outputs"]) == ("failed", "HTTP 500", {"status": 500}), log
    assert "HTTP 500" in log and "target is down" in log


def test_an_http_4xx_is_not_retried_and_a_retry_after_is_waited_for(server: Server) -> None:
    """A 404 comes back the same for the same request: one attempt, the reason says why. A
    429's Retry-After (1 s) is waited for, not the rule's 100 ms backoff; a 503 without one
    is retried at the backoff."""
    Target.received.clear()
    run, log = run_one(server, {"action": "notify-retried", "path": "status/404"})
    assert (run["status"], len(run["attempts"])) == ("failed", 1), run
    assert run["reason"] == ("HTTP 404 (not retried: the same request would get the same 4xx"
                             " answer; only a 5xx, 408, 425 or 429 is retried)"), run
    Target.received.clear()
    run, log = run_one(server, {"action": "notify-retried", "path": "status/429?after=1"})
    assert (run["status"], len(run["attempts"])) == ("failed", 3), run
    assert run["reason"] == "HTTP 429", run
    assert "[hookrunner] Retry-After: 1s" in log, log
    times = [r["at"] for r in Target.received]
    assert len(times) == 3 and all(b - a >= 0.95 for a, b in itertools.pairwise(times)), times
    Target.received.clear()
    run, _ = run_one(server, {"action": "notify-retried", "path": "status/503"})
    assert (run["status"], run["reason"], len(run["attempts"])) == ("failed", "HTTP 503", 3), run
    times = [r["at"] for r in Target.received]
    assert len(times) == 3 and times[-1] - times[0] < 2, times
