"""The README's examples end to end: `make run`'s server on the shipped rules, `examples/send.sh`.

The server runs as `make run` starts it: the shipped rules, the Makefile's demo secrets and
serve flags, and no --rules, --data or --root, so every path is its default, relative to the
working directory (a relative data dir once broke the Ansible example). That directory is a
copy of the repository's example files (rules/, examples/, playbooks/, terraform/), not the
checkout itself: `terraform apply` writes state next to its configuration, and tests must not
leave state in (or race other runs on) the working tree.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.demo_env import REPO, demo_environ, makefile_serve_args
from tests.serverproc import Server, free_port

COPIED = ("rules", "examples", "playbooks", "terraform")
GENERATED = shutil.ignore_patterns(".terraform", "terraform.tfstate.d", "*.tfstate*", ".terraform.lock.hcl")
RUN_TIMEOUT = 90.0
RECEIVER_START = 10.0


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    for name in COPIED:
        shutil.copytree(REPO / name, root / name, ignore=GENERATED)
    return root


def test_the_receiver_explains_itself() -> None:
    """`--help` prints its usage (it crashed, reading `--help` as the port)."""
    done = subprocess.run([sys.executable, str(REPO / "examples/scripts/notify-receiver.py"),
                           "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "usage:" in done.stdout and "[port]" in done.stdout, done


@pytest.fixture(scope="module")
def receiver(root: Path) -> Iterator[tuple[str, Path]]:
    """The shipped examples/scripts/notify-receiver.py on a free port: (url, its output file)."""
    port = free_port()
    out = root.parent / "receiver.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "examples/scripts/notify-receiver.py"), str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + RECEIVER_START
    while "listening" not in out.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/notify", out
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def env(receiver: tuple[str, Path]) -> dict[str, str]:
    return demo_environ(NOTIFY_URL=receiver[0])


@pytest.fixture(scope="module")
def server(root: Path, env: dict[str, str]) -> Iterator[Server]:
    srv = Server(root / "rules", root / ".hookrunner", root, env=env, args=makefile_serve_args(),
                 default_paths=True).start()
    yield srv
    srv.stop()


def send(server: Server, env: dict[str, str], hook: str, payload: str) -> tuple[int, dict[str, Any]]:
    """Run `examples/send.sh HOOK PAYLOAD` as the README does; (HTTP status, JSON answer)."""
    done = subprocess.run(
        ["sh", "examples/send.sh", hook, payload, "-w", "\n%{http_code}"],
        cwd=REPO,
        env={**env, "HOOKRUNNER_URL": server.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body)


def run_log(server: Server, run_id: str) -> str:
    with server.admin() as c:
        return c.get(f"/api/runs/{run_id}/log").text


def succeeded(server: Server, run_id: str) -> dict[str, Any]:
    run = server.wait_run(run_id, timeout=RUN_TIMEOUT)
    assert run["status"] == "succeeded", (run, run_log(server, run_id))
    return run


def test_github_push_redeploys_the_pushed_commit(server: Server, env: dict[str, str]) -> None:
    status, answer = send(server, env, "github", "examples/payloads/github-push.json")
    assert status == 202, answer
    (run_id,) = answer["runs"]
    assert succeeded(server, run_id)["rule"] == "redeploy-on-push"
    log = run_log(server, run_id)
    assert (
        "deploying octocat/hello-world at 0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c (ref refs/heads/main)"
        in log
    )
    assert "deployed" in log


def test_a_query_after_the_hooks_name_waits_for_the_runs(server: Server, env: dict[str, str]) -> None:
    """`examples/send.sh 'github?wait=30s' ...`, as the README's `?wait=` section shows (any
    curl: `--url-query` needs 7.87)."""
    status, answer = send(server, env, "github?wait=30s", "examples/payloads/github-push.json")
    assert status == 200, answer
    (run,) = answer["runs"]
    assert run["status"] == "succeeded" and "deploying octocat/hello-world" in run["output"], run


def test_github_pushes_to_one_repository_coalesce_and_never_overlap(
    server: Server, env: dict[str, str]
) -> None:
    """Rapid pushes: the newest always deploys, older waiting ones are superseded, none overlap."""
    run_ids = []
    for _ in range(3):
        status, answer = send(server, env, "github", "examples/payloads/github-push.json")
        assert status == 202, answer
        run_ids += answer["runs"]
    succeeded(server, run_ids[-1])
    runs = [server.wait_run(r, timeout=RUN_TIMEOUT) for r in run_ids]
    for run in runs:
        assert run["status"] in ("succeeded", "skipped"), run
        if run["status"] == "skipped":
            assert "superseded by run" in run["reason"], run
    spans = sorted((r["started_at"], r["finished_at"]) for r in runs if r["status"] == "succeeded")
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans)), spans


def test_monitoring_alert_records_it_and_runs_the_scale_up_playbook(
    server: Server, env: dict[str, str]
) -> None:
    status, answer = send(server, env, "monitoring", "examples/payloads/monitoring-overloaded.json")
    assert status == 202, answer
    runs = {succeeded(server, r)["rule"]: r for r in answer["runs"]}
    assert set(runs) == {"log-every-alert", "scale-up-when-overloaded"}
    assert "alert status: overloaded" in run_log(server, runs["log-every-alert"])
    log = run_log(server, runs["scale-up-when-overloaded"])
    assert '"msg": "scaling api to 4 replicas"' in log and "PLAY RECAP" in log


def test_alertmanager_alert_scales_up_through_ansible(server: Server, env: dict[str, str]) -> None:
    status, answer = send(server, env, "alertmanager", "examples/payloads/alertmanager-overloaded.json")
    assert status == 202, answer
    (run_id,) = answer["runs"]
    run = succeeded(server, run_id)
    assert run["rule"] == "scale-up-on-alert"
    assert '"msg": "scaling api to 4 replicas"' in run_log(server, run_id)
    assert run["outputs"]["stats"]["failures"] == {}


def test_alertmanager_rejects_a_wrong_token(server: Server, env: dict[str, str]) -> None:
    status, answer = send(
        server,
        {**env, "ALERTMANAGER_TOKEN": "not-the-token"},
        "alertmanager",
        "examples/payloads/alertmanager-overloaded.json",
    )
    assert (status, answer) == (401, {"error": "verification failed"})


def test_grafana_alert_applies_terraform_in_the_env_workspace(
    server: Server, env: dict[str, str], root: Path
) -> None:
    status, answer = send(server, env, "grafana", "examples/payloads/grafana-alert.json")
    assert status == 202, answer
    (run_id,) = answer["runs"]
    run = succeeded(server, run_id)
    assert run["rule"] == "apply-scaling-on-grafana-alert"
    assert run["outputs"]["outputs"] == {
        "service": "api",
        "replicas": 6,
        "environment": "staging",
        "reason": "api CPU above 85% for 5m",
    }
    assert (root / "terraform/scaling/terraform.tfstate.d/staging/terraform.tfstate").is_file()
    assert "Apply complete!" in run_log(server, run_id)


def test_stripe_payment_failed_notifies_the_url_and_dedups_the_event(
    server: Server, env: dict[str, str], receiver: tuple[str, Path]
) -> None:
    status, answer = send(server, env, "stripe", "examples/payloads/stripe-invoice-payment-failed.json")
    assert status == 202, answer
    (run_id,) = answer["runs"]
    run = succeeded(server, run_id)
    assert (run["rule"], run["outputs"]) == ("notify-payment-failed", {"status": 200})
    received = receiver[1].read_text()
    assert "POST /notify application/json" in received
    body = json.loads(received.split("POST /notify application/json\n", 1)[1].splitlines()[0])
    assert body == {
        "text": "Payment failed: invoice DEMO-0042 for billing@example.com, 49.00 EUR due (attempt 2)",
        "event": "evt_1QdemoPaymentFailed0001",
        "invoice": "in_1QdemoInvoice000001",
        "customer": "cus_DemoCustomer01",
        "amount_due": 4900,
        "currency": "eur",
    }
    # Stripe retries a delivery with the same event id: it runs nothing again.
    again, dup = send(server, env, "stripe", "examples/payloads/stripe-invoice-payment-failed.json")
    assert (again, dup) == (200, {"duplicate": True, "delivery_id": answer["delivery_id"],
                                  "runs": answer["runs"],
                                  "status_url": f"/api/deliveries/{answer['delivery_id']}"})


# interface.md's rules example, verbatim (but for two comments cut to the line length):
# acceptance drives the product with it, on the shipped playbooks/ and terraform/.
CONTRACT_RULES = """
hooks:
  github:                                   # served at POST /hooks/github
    verify:
      github:
        secret: {env: GITHUB_WEBHOOK_SECRET}   # or {file: /run/secrets/gh}; a list means any of them
    allow_ips: [192.30.252.0/22]            # optional
    max_body: 5MiB                          # optional

  monitoring:
    verify:
      hmac:                                 # generic HMAC
        secret: {env: MONITORING_SECRET}
        header: X-Signature
        algorithm: sha256                   # sha1 | sha256 | sha512
        encoding: hex                       # hex | base64
        prefix: "sha256="                   # optional
        timestamp_header: X-Timestamp       # optional: sign "{timestamp}.{body}" and reject outside tolerance
        tolerance: 5m                       # every timestamped verifier takes `tolerance`

rules:
  - name: redeploy-on-push
    hook: github
    when: event == "push" and payload.ref == "refs/heads/main"
    run:
      shell:
        argv: ["scripts/redeploy.sh", "{{ payload.repository.full_name }}", "{{ payload.after }}"]
        env: {DEPLOY_REF: "{{ payload.ref }}"}
    timeout: 10m
    concurrency: {key: "deploy-{{ payload.repository.full_name }}", policy: coalesce}
    retry: {attempts: 3, backoff: 30s}

  - name: scale-up-when-overloaded
    hook: monitoring
    when: payload.monitoring_status == "overloaded"
    run:
      ansible:
        playbook: scale_up.yml              # under <root>/playbooks/
        extravars: {replicas: "{{ payload.replicas | default(2) }}"}

  - name: apply-scaling
    hook: monitoring
    when: payload.monitoring_status == "overloaded" and payload.apply_infra | default(false)
    run:
      terraform:
        dir: terraform/scaling               # under <root>
        command: apply                       # plan | apply | destroy
        workspace: "{{ payload.env | default('default') }}"
        vars: {replicas: "{{ payload.replicas }}"}
"""


def test_the_contracts_rules_example_runs_on_the_shipped_playbook_and_terraform(
    root: Path, tmp_path: Path
) -> None:
    """probe: its apply-scaling failed every run ("No value for required variable"):
    terraform/scaling required `service`, which the example does not pass."""
    import hashlib
    import hmac

    import httpx

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "contract.yaml").write_text(CONTRACT_RULES)
    secret = "contract-monitoring-secret"
    env = {"MONITORING_SECRET": secret, "GITHUB_WEBHOOK_SECRET": "contract-github-secret"}
    server = Server(tmp_path / "rules", tmp_path / "data", root, env=env).start()
    try:
        body = json.dumps({"monitoring_status": "overloaded", "apply_infra": True,
                           "replicas": 3, "env": "contract"}).encode()
        stamp = str(int(time.time()))
        signature = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        answer = httpx.post(f"{server.url}/hooks/monitoring", content=body, timeout=30, headers={
            "Content-Type": "application/json", "X-Timestamp": stamp,
            "X-Signature": "sha256=" + signature.hexdigest()})
        assert answer.status_code == 202, answer.text
        runs = {(run := succeeded(server, run_id))["rule"]: run for run_id in answer.json()["runs"]}
        assert sorted(runs) == ["apply-scaling", "scale-up-when-overloaded"]
        assert runs["apply-scaling"]["outputs"]["outputs"]["replicas"] == 3
        assert "scaling service to 3 replicas" in run_log(server, runs["scale-up-when-overloaded"]["id"])
    finally:
        server.stop()
