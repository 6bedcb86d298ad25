"""The core promise end to end: a signed push -> rule -> durable queue -> a real process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.serverproc import Server, post_github

RULES = """
hooks:
  github:
    verify:
      github:
        secret: {env: GITHUB_WEBHOOK_SECRET}
rules:
  - name: redeploy
    hook: github
    when: event == "push" and payload.ref == "refs/heads/main"
    run:
      shell:
        argv: ["scripts/deploy.sh", "{{ payload.repository.full_name }}", "{{ payload.after }}"]
        env: {DEPLOY_REF: "{{ payload.ref }}"}
"""

PUSH = {"ref": "refs/heads/main", "after": "abc123", "repository": {"full_name": "octo/app"}}


def test_signed_push_runs_the_rule_with_templated_arguments(
    make_server: Callable[..., Server], project: Path
) -> None:
    write_script(project, "deploy.sh", 'echo "repo=$1 commit=$2 ref=$DEPLOY_REF argc=$#"\n')
    server = make_server(RULES)
    r = post_github(server.url, GITHUB_SECRET, PUSH, delivery="d-1")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status_url"] == f"/api/deliveries/{body['delivery_id']}"
    (run_id,) = body["runs"]
    run = server.wait_run(run_id)
    assert run["status"] == "succeeded" and run["exit_code"] == 0
    assert run["rule"] == "redeploy" and run["delivery_id"] == body["delivery_id"]
    with server.admin() as c:
        log = c.get(f"/api/runs/{run_id}/log").text
    assert "repo=octo/app commit=abc123 ref=refs/heads/main argc=2" in log


def test_shell_metacharacters_in_payload_stay_one_argument(
    make_server: Callable[..., Server], project: Path
) -> None:
    marker = project / "pwned"
    write_script(project, "deploy.sh", 'printf "%s|" "$@"; echo "argc=$#"\n')
    server = make_server(RULES)
    evil = f"x; touch {marker}; $(touch {marker}) `touch {marker}` {{{{ 7*7 }}}}"
    r = post_github(server.url, GITHUB_SECRET, {**PUSH, "after": evil, "repository": {"full_name": "-rf"}})
    run = server.wait_run(r.json()["runs"][0])
    assert run["status"] == "succeeded"
    with server.admin() as c:
        log = c.get(f"/api/runs/{run['id']}/log").text
    assert f"-rf|{evil}|argc=2" in log
    assert not marker.exists()


def test_non_matching_push_is_journaled_with_no_runs(
    make_server: Callable[..., Server], project: Path
) -> None:
    write_script(project, "deploy.sh", "exit 0\n")
    server = make_server(RULES)
    r = post_github(server.url, GITHUB_SECRET, {**PUSH, "ref": "refs/heads/dev"})
    assert r.status_code == 202 and r.json()["runs"] == []
    with server.admin() as c:
        d = c.get(r.json()["status_url"]).json()
    assert d["hook"] == "github" and d["payload"]["ref"] == "refs/heads/dev"
    assert any(m["rule"] == "redeploy" and not m["matched"] for m in d["matches"])
    # The signature header is redacted in what is stored.
    assert dict((k.lower(), v) for k, v in d["headers"])["x-hub-signature-256"] == "[redacted]"


def test_error_answers(
    make_server: Callable[..., Server], project: Path
) -> None:
    write_script(project, "deploy.sh", "exit 0\n")
    server = make_server(RULES)
    bad = post_github(server.url, "wrong secret", PUSH)
    assert bad.status_code == 401 and bad.json() == {"error": "verification failed"}
    assert GITHUB_SECRET not in bad.text
    assert post_github(server.url, GITHUB_SECRET, PUSH, hook="nope").status_code == 404
    assert httpx.get(f"{server.url}/hooks/github").status_code == 405
    broken = post_github(server.url, GITHUB_SECRET, b'{"ref": ')
    assert broken.status_code == 400 and "error" in broken.json()
    huge = post_github(server.url, GITHUB_SECRET, b"[" + b" " * (2 * 1024 * 1024) + b"]")
    assert huge.status_code == 413
    assert httpx.get(f"{server.url}/api/runs").status_code == 401
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_duplicate_delivery_runs_once_even_across_restart(
    make_server: Callable[..., Server], project: Path
) -> None:
    write_script(project, "deploy.sh", "echo ran >> \"$HOOKRUNNER_RUN_ID.ran\"\n")
    server = make_server(RULES)
    first = post_github(server.url, GITHUB_SECRET, PUSH, delivery="same-id")
    assert first.status_code == 202
    # A forged request with the same id must not count as seen (it never verified).
    forged = post_github(server.url, "forged", PUSH, delivery="other-id")
    assert forged.status_code == 401
    again = post_github(server.url, GITHUB_SECRET, PUSH, delivery="same-id")
    assert again.status_code == 200
    assert again.json() == {"duplicate": True, "delivery_id": first.json()["delivery_id"],
                            "runs": first.json()["runs"],
                            "status_url": f"/api/deliveries/{first.json()['delivery_id']}"}
    server.wait_run(first.json()["runs"][0])
    server.stop()
    server.start()
    third = post_github(server.url, GITHUB_SECRET, PUSH, delivery="same-id")
    assert third.status_code == 200 and third.json()["duplicate"] is True
    assert post_github(server.url, GITHUB_SECRET, PUSH, delivery="other-id").status_code == 202


def test_sigkill_loses_no_accepted_delivery(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Deliveries answered 202 before a SIGKILL all run after a restart on the same data dir."""
    done = project / "done"
    done.mkdir()
    write_script(project, "deploy.sh", f'sleep 0.2; touch "{done}/$2"\n')
    server = make_server(RULES, args=["--workers", "2"])
    accepted = []
    for i in range(40):
        r = post_github(server.url, GITHUB_SECRET, {**PUSH, "after": f"c{i}"})
        assert r.status_code == 202
        accepted.append(f"c{i}")
    server.kill()  # most of them are still queued, two are running
    server.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        missing = [c for c in accepted if not (done / c).exists()]
        if not missing:
            break
        time.sleep(0.2)
    with server.admin() as c:
        runs = c.get("/api/runs", params={"limit": 100}).json()["runs"]
    statuses = {r["status"] for r in runs}
    # Runs that were running when the process died are failed (interrupted): no retry rule.
    interrupted = [r for r in runs if r["reason"].startswith("interrupted")]
    assert len(runs) == 40 and statuses <= {"succeeded", "failed"}, json.dumps(runs)[:2000]
    assert all(r["status"] == "failed" for r in interrupted)
    assert len([c for c in accepted if (done / c).exists()]) >= 40 - len(interrupted)
    assert len(interrupted) <= 2


def test_the_api_redacts_secret_looking_values_of_a_rendered_action(
    make_server: Callable[..., Server], project: Path
) -> None:
    write_script(project, "deploy.sh", "exit 0\n")
    rules = RULES.replace('env: {DEPLOY_REF: "{{ payload.ref }}"}',
                          'env: {DEPLOY_REF: "{{ payload.ref }}", API_TOKEN: "{{ payload.token }}"}')
    server = make_server(rules)
    r = post_github(server.url, GITHUB_SECRET, {**PUSH, "token": "tok-123"})
    run_id = r.json()["runs"][0]
    server.wait_run(run_id)
    with server.admin() as c:
        one = c.get(f"/api/runs/{run_id}").json()
        listed = c.get("/api/runs").json()["runs"][0]
    for doc in (one, listed):
        assert doc["spec"]["env"] == {"DEPLOY_REF": "refs/heads/main", "API_TOKEN": "[redacted]"}
    assert "tok-123" not in json.dumps(one)
