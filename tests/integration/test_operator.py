"""What operators rely on: hot reload, readiness, metrics, structured logs, retention."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from hookrunner.dispatch import LOG_TO_DISK_AFTER
from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.serverproc import Server, post_github

HOOK = """
hooks:
  github:
    verify:
      github:
        secret: {env: GITHUB_WEBHOOK_SECRET}
"""
RULE = """
rules:
  - name: {name}
    hook: github
    run:
      shell:
        argv: ["scripts/ok.sh"]
"""


def _until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def _rule_names(server: Server) -> list[str]:
    r = post_github(server.url, GITHUB_SECRET, {"x": 1})
    assert r.status_code == 202
    with server.admin() as c:
        d = c.get(r.json()["status_url"]).json()
    return sorted(m["rule"] for m in d["matches"])


def test_rules_reload_on_change_and_a_broken_edit_keeps_the_live_rules(
    make_server: Callable[..., Server], project: Path
) -> None:
    write_script(project, "ok.sh", "exit 0\n")
    server = make_server(HOOK + RULE.format(name="first"))
    assert _rule_names(server) == ["first"]
    rules_file = project / "rules" / "rules.yaml"

    rules_file.write_text(HOOK + RULE.format(name="second"))
    _until(lambda: _rule_names(server) == ["second"])

    rules_file.write_text(HOOK + RULE.format(name="third") + "    timeout: soon\n")
    _until(lambda: httpx.get(server.url + "/readyz").json()["last_reload"] == "failed")
    ready = httpx.get(server.url + "/readyz").json()
    # /readyz needs no token: it says where, the log says what (a message quotes rule text).
    assert ready["reload_errors"], ready
    assert all(re.fullmatch(r".*rules\.yaml:\d+", e) for e in ready["reload_errors"]), ready
    assert "soon" not in json.dumps(ready)
    assert "timeout" in server.output()
    assert _rule_names(server) == ["second"]  # still the last good rules
    assert "rules.error" in server.output() and "rules.yaml:" in server.output()

    # SIGHUP reloads too (here: after fixing the file without waiting for the watcher).
    rules_file.write_text(HOOK + RULE.format(name="fourth"))
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    _until(lambda: _rule_names(server) == ["fourth"])
    assert httpx.get(server.url + "/readyz").json()["last_reload"] == "ok"


def test_rules_files_truncated_in_place_keep_the_live_rules(
    make_server: Callable[..., Server], project: Path
) -> None:
    """probe: `for f in rules/*.yaml; do : > $f; done` reloaded as 0 hooks and 0 rules: every
    hook answered 404 and /readyz said ok."""
    write_script(project, "ok.sh", "exit 0\n")
    server = make_server(HOOK + RULE.format(name="first"))
    assert _rule_names(server) == ["first"]
    (project / "rules" / "rules.yaml").write_text("")
    _until(lambda: httpx.get(server.url + "/readyz").json()["last_reload"] == "failed")
    assert "every rules file is empty now" in server.output()
    assert _rule_names(server) == ["first"]  # still served, not a 404


def test_metrics_count_deliveries_by_outcome_and_runs_by_status(
    make_server: Callable[..., Server], project: Path
) -> None:
    write_script(project, "ok.sh", "exit 0\n")
    server = make_server(HOOK + RULE.format(name="count-me"))
    run_id = post_github(server.url, GITHUB_SECRET, {"a": 1}, delivery="m-1").json()["runs"][0]
    assert post_github(server.url, GITHUB_SECRET, {"a": 1}, delivery="m-1").status_code == 200
    assert post_github(server.url, "wrong", {"a": 1}).status_code == 401
    server.wait_run(run_id)
    text = httpx.get(server.url + "/metrics").text
    assert 'hookrunner_deliveries_total{hook="github",outcome="accepted"} 1.0' in text
    assert 'hookrunner_deliveries_total{hook="github",outcome="duplicate"} 1.0' in text
    assert 'hookrunner_deliveries_total{hook="github",outcome="rejected_signature"} 1.0' in text
    assert 'hookrunner_runs_finished_total{rule="count-me",status="succeeded"} 1.0' in text
    assert "hookrunner_run_duration_seconds_count" in text
    assert "hookrunner_run_start_delay_seconds_count 1.0" in text
    assert "hookrunner_queue_depth" in text and "hookrunner_reload_failures_total 0.0" in text
    # Every status, from the store (skipped and canceled-before-start never "finish" here).
    until = time.monotonic() + 10
    while 'hookrunner_runs_stored{status="succeeded"} 1.0' not in text:
        assert time.monotonic() < until, text
        time.sleep(0.2)
        text = httpx.get(server.url + "/metrics").text
    assert 'hookrunner_runs_stored{status="skipped"} 0.0' in text
    assert "hookrunner_rules_reload_failed 0.0" in text
    rules = project / "rules" / "rules.yaml"
    rules.write_text(rules.read_text() + "  - name: [\n")  # the state, for an alert: failed
    while "hookrunner_rules_reload_failed 1.0" not in text:
        assert time.monotonic() < until + 10, text
        time.sleep(0.2)
        text = httpx.get(server.url + "/metrics").text
    assert "hookrunner_reload_failures_total 1.0" in text


def test_json_logs_have_one_event_per_decision_and_no_secrets(
    make_server: Callable[..., Server], project: Path
) -> None:
    write_script(project, "ok.sh", 'test -z "$(cat)" || exit 0; exit 3\n')
    rules = HOOK + RULE.format(name="logged") + '        stdin: payload\n'
    server = make_server(rules, args=["--log-format", "json"])
    run_id = post_github(server.url, GITHUB_SECRET, {"a": 1}, delivery="gh-guid-1").json()["runs"][0]
    post_github(server.url, "forged-secret", {"a": 1})
    server.wait_run(run_id)
    failing = post_github(server.url, GITHUB_SECRET, b"").json()["runs"][0]
    assert server.wait_run(failing)["status"] == "failed"
    server.stop()
    events = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    for expected in ("server.started", "delivery.accepted", "delivery.rejected", "run.started",
                     "run.finished", "server.stopped"):
        assert expected in names, names
    finished = next(e for e in events if e["event"] == "run.finished")
    assert finished["run_id"] == run_id and finished["status"] == "succeeded"
    assert finished["level"] == "info"
    # A failing action is a warning: a log filtered to warnings still shows it.
    failed = next(e for e in events if e["event"] == "run.finished" and e["run_id"] == failing)
    assert failed["level"] == "warning" and failed["exit_code"] == 3, failed
    # One delivery can be followed through the log both ways, with the sender's own id.
    accepted = next(e for e in events if e["event"] == "delivery.accepted")
    started = next(e for e in events if e["event"] == "run.started")
    assert started["delivery_id"] == finished["delivery_id"] == accepted["delivery_id"]
    assert run_id in accepted["runs"] and accepted["sender_id"] == "gh-guid-1"
    assert isinstance(finished["seconds"], float)
    rejected = next(e for e in events if e["event"] == "delivery.rejected")
    assert rejected["reason"] == "signature mismatch"
    assert GITHUB_SECRET not in server.output() and "forged-secret" not in server.output()


def test_keep_prunes_old_history_and_its_files(make_server: Callable[..., Server], project: Path) -> None:
    # Long enough for its log to be written to disk (a shorter run's is only in the store).
    write_script(project, "ok.sh", f"sleep {LOG_TO_DISK_AFTER + 0.5}; echo hello\n")
    server = make_server(HOOK + RULE.format(name="old"), args=["--keep", "2s"])
    first = post_github(server.url, GITHUB_SECRET, {"a": 1}).json()
    server.wait_run(first["runs"][0])
    assert (project / "data" / "logs" / first["runs"][0]).is_dir()
    with server.admin() as c:
        _until(lambda: c.get(first["status_url"]).status_code == 404, timeout=20)
        assert c.get(f"/api/runs/{first['runs'][0]}").status_code == 404
    _until(lambda: not (project / "data" / "logs" / first["runs"][0]).exists(), timeout=10)
    # Newer history is still there, and the server keeps accepting.
    second = post_github(server.url, GITHUB_SECRET, {"a": 2}).json()
    assert server.wait_run(second["runs"][0])["status"] == "succeeded"


def test_keep_spares_the_files_of_a_run_waiting_for_its_retry(
    make_server: Callable[..., Server], project: Path,
) -> None:
    """Its delivery is kept whole while it waits, so its first attempt's log dir stays too,
    however old: a prune that removed a later delivery's files spared it."""
    write_script(project, "ok.sh", f"sleep {LOG_TO_DISK_AFTER + 0.5}; echo out; "
                                   "test -n \"$FAIL\" && exit 1; exit 0\n")
    server = make_server(HOOK + """
rules:
  - name: retried
    hook: github
    when: payload.fail is defined
    retry: {attempts: 2, backoff: 5m}
    run: {shell: {argv: ["scripts/ok.sh"], env: {FAIL: "1"}}}
  - name: once
    hook: github
    when: payload.fail is not defined
    run: {shell: {argv: ["scripts/ok.sh"]}}
""", args=["--keep", "2s"])
    waiting = post_github(server.url, GITHUB_SECRET, {"fail": 1}).json()["runs"][0]
    with server.admin() as c:
        _until(lambda: c.get(f"/api/runs/{waiting}").json()["attempt"] == 1
               and c.get(f"/api/runs/{waiting}").json()["status"] == "queued", timeout=20)
        time.sleep(2.5)  # its files are now older than --keep
        later = post_github(server.url, GITHUB_SECRET, {"a": 1}).json()
        server.wait_run(later["runs"][0])
        _until(lambda: not (project / "data" / "logs" / later["runs"][0]).exists(), timeout=20)
        assert (project / "data" / "logs" / waiting).is_dir()
        assert c.get(f"/api/runs/{waiting}").json()["status"] == "queued"


def test_cli_runs_and_replay_work_on_the_store_of_a_running_server(
    make_server: Callable[..., Server], project: Path
) -> None:
    write_script(project, "ok.sh", "echo replayed-ok\n")
    server = make_server(HOOK + RULE.format(name="again"))
    first = post_github(server.url, GITHUB_SECRET, {"a": 1}).json()
    server.wait_run(first["runs"][0])
    env = {**os.environ, "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}
    base = [sys.executable, "-m", "hookrunner.cli"]
    where = ["--data", str(project / "data")]
    out = subprocess.run([*base, "replay", first["delivery_id"], "--rules", str(project / "rules"), *where],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "1 run(s) queued" in out
    new_run = out.strip().split()[-1]
    assert new_run.startswith("run_") and new_run != first["runs"][0]
    done = server.wait_run(new_run, timeout=10)  # the server picks it up by itself
    assert done["status"] == "succeeded" and done["delivery_id"] == first["delivery_id"]
    listing = subprocess.run([*base, "runs", "--limit", "5", *where], capture_output=True, text=True,
                             env=env, check=True).stdout
    assert new_run in listing and first["runs"][0] in listing and "succeeded" in listing
    missing = subprocess.run([*base, "replay", "dlv_nope", "--rules", str(project / "rules"), *where],
                             capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and "no delivery" in missing.stderr


def _waiting_for_its_retry(server: Server) -> str:
    """A run of a failing rule with a long backoff, once its first attempt has ended."""
    run_id: str = post_github(server.url, GITHUB_SECRET, {"a": 1}).json()["runs"][0]
    with server.admin() as c:
        _until(lambda: c.get(f"/api/runs/{run_id}").json()["attempt"] == 1
               and c.get(f"/api/runs/{run_id}").json()["status"] == "queued")
    return run_id


def test_a_run_canceled_while_it_waits_for_its_retry_took_what_its_attempt_took(
    make_server: Callable[..., Server], project: Path
) -> None:
    """`took=` (and the console's Duration) counted up to the cancel: 22.9s for an attempt
    of 0.008 s that failed and waited for its retry."""
    write_script(project, "ok.sh", "exit 1\n")
    server = make_server(HOOK + RULE.format(name="flaky")
                         + "    retry: {attempts: 3, backoff: 1h}\n")
    run_id = _waiting_for_its_retry(server)
    with server.admin() as c:
        time.sleep(2.5)
        assert c.post(f"/api/runs/{run_id}/cancel").status_code == 202
        assert server.wait_run(run_id)["status"] == "canceled"
        page = c.get(f"/runs/{run_id}").text
    took = re.search(r"took=(\d+\.\d)s", subprocess.run(
        [sys.executable, "-m", "hookrunner.cli", "runs", "--data", str(project / "data")],
        capture_output=True, text=True, check=True).stdout)
    assert took is not None and float(took.group(1)) < 2.0, took
    duration = re.search(r'id="run-duration">([^<]*)<', page)
    assert duration is not None and re.fullmatch(r"\d+ms", duration.group(1)), duration
    assert int(duration.group(1)[:-2]) < 2000, duration  # the attempt's, not up to the cancel


def test_a_run_skipped_for_a_newer_one_while_it_waits_for_its_retry_took_what_its_attempt_took(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A `replace` rule's newer run ends an older one that waits for its retry as `skipped`:
    `took=` counted its wait too (1.1s for an attempt of 0.2s)."""
    write_script(project, "ok.sh", "exit 1\n")
    server = make_server(HOOK + RULE.format(name="flaky")
                         + "    retry: {attempts: 3, backoff: 1h}\n"
                         + "    concurrency: {key: one, policy: replace}\n")
    run_id = _waiting_for_its_retry(server)
    time.sleep(2.5)
    post_github(server.url, GITHUB_SECRET, {"a": 2})
    assert server.wait_run(run_id)["status"] == "skipped"
    line = next(line for line in subprocess.run(
        [sys.executable, "-m", "hookrunner.cli", "runs", "--data", str(project / "data")],
        capture_output=True, text=True, check=True).stdout.splitlines() if run_id in line)
    took = re.search(r"took=(\d+\.\d)s|took=(\d+)ms", line)
    assert took is not None and float(took.group(1) or 0) < 2.0, line


def test_a_second_server_on_the_same_data_dir_refuses_and_leaves_the_first_alone(
    make_server: Callable[..., Server], project: Path
) -> None:
    """Start-up recovers a node's interrupted runs, so a second server must not share it."""
    write_script(project, "ok.sh", "sleep 2; echo done\n")
    first = make_server(HOOK + RULE.format(name="long"))
    run_id = post_github(first.url, GITHUB_SECRET, {"a": 1}).json()["runs"][0]
    second = Server(project / "rules", project / "data", project,
                    env={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET})
    try:
        second.start()
        raise AssertionError("the second server started")
    except RuntimeError as exc:
        assert "another server is running with this --data" in str(exc)
    assert first.wait_run(run_id)["status"] == "succeeded"


def test_api_replays_count_against_max_queued_and_report_condition_errors(
        make_server: Callable[..., Server]) -> None:
    """A replay queues runs as a hook would: past --max-queued it is a 503 with Retry-After,
    and it is logged; a `when` that errs on replay is logged and counted as on ingest."""
    rules = """
hooks: {h: {verify: {none: {}}}}
rules:
  - name: slow
    hook: h
    when: payload.kind == "slow"
    concurrency: {key: k}
    run: {shell: {argv: ["sleep", "5"]}}
  - name: typo
    hook: h
    when: payload.kind == "slow" and payload.nosuch.deep > 0
    run: {shell: {argv: ["true"]}}
"""
    server = make_server(rules, args=["--max-queued", "2", "--workers", "1"])
    first = httpx.post(f"{server.url}/hooks/h", json={"kind": "slow"}, timeout=30).json()
    with server.admin() as c:
        answer = c.post(f"/api/deliveries/{first['delivery_id']}/replay")  # queued: 1
        assert answer.status_code == 202, answer.text
        assert answer.json()["hook"] == "h"  # (and its condition error's log line names it)
        assert httpx.post(f"{server.url}/hooks/h", json={"kind": "slow"}, timeout=30).status_code == 202
        answer = c.post(f"/api/deliveries/{first['delivery_id']}/replay")  # queued: 2, full
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] and "queue full" in answer.json()["error"]
        metrics = c.get("/metrics").text
    assert f"delivery.replayed delivery_id={first['delivery_id']} via=api" in server.output()
    # Two deliveries and the replay that went through (the refused one matched nothing).
    assert 'hookrunner_condition_errors_total{rule="typo"} 3.0' in metrics, metrics


def test_metrics_show_the_limits_and_how_long_the_oldest_due_run_has_waited(
        make_server: Callable[..., Server]) -> None:
    """A stuck queue is seen before it fills: the oldest due run's wait grows while a run
    holds the only worker, and goes back to 0 once nothing waits."""
    rules = """
hooks: {h: {verify: {none: {}}}}
rules:
  - name: slow
    hook: h
    run: {shell: {argv: ["sleep", "{{ payload.s }}"]}}
"""
    server = make_server(rules, args=["--max-queued", "7", "--workers", "1"])
    held = httpx.post(f"{server.url}/hooks/h", json={"s": 30}, timeout=30).json()["runs"][0]
    waiting = httpx.post(f"{server.url}/hooks/h", json={"s": 0}, timeout=30).json()["runs"][0]

    def oldest(c: httpx.Client) -> float:
        text = c.get("/metrics").text
        assert "hookrunner_queue_limit 7.0" in text and "hookrunner_workers 1.0" in text, text
        return float(re.findall(r"^hookrunner_queue_oldest_seconds (\S+)$", text, re.M)[0])

    with server.admin() as c:
        _until(lambda: oldest(c) >= 1.0)
        assert c.post(f"/api/runs/{held}/cancel").status_code == 202
        server.wait_run(waiting)
        _until(lambda: oldest(c) == 0.0)


def test_a_keep_shorter_than_a_day_is_warned_about(make_server: Callable[..., Server]) -> None:
    rules = "hooks: {h: {verify: {none: {}}}}\nrules: []\n"
    server = make_server(rules, args=["--keep", "10m"], env={"HOOKRUNNER_WORKER": "3"})
    assert "server.keep_short" in server.output() and "keep_seconds=600" in server.output()
    # A misspelled variable in a unit's environment file was ignored without a word.
    assert "server.unknown_variable variable=HOOKRUNNER_WORKER hint=\"no setting reads it: " \
           "did you mean HOOKRUNNER_WORKERS?\"" in server.output(), server.output()


def test_condition_errors_count_stored_deliveries_and_body_refusals_are_logged(
        make_server: Callable[..., Server]) -> None:
    """A duplicate is not a delivery: its rule's `when` error was counted (and logged with an
    id that names nothing). A refused body said nothing in the log."""
    rules = """
hooks: {h: {verify: {none: {}}, dedup: "{{ payload.id }}", max_body: 100}}
rules:
  - name: typo
    hook: h
    when: payload.nosuch.deep > 0
    run: {shell: {argv: ["true"]}}
"""
    server = make_server(rules)
    for _ in range(2):
        assert httpx.post(f"{server.url}/hooks/h", json={"id": "same"}, timeout=30).status_code in (200, 202)
    with server.admin() as c:
        metrics = c.get("/metrics").text
    assert 'hookrunner_condition_errors_total{rule="typo"} 1.0' in metrics, metrics
    bad = httpx.post(f"{server.url}/hooks/h", content=b'{"kind":', timeout=30,
                     headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
    xml = httpx.post(f"{server.url}/hooks/h", content=b"<a/>", timeout=30,
                     headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415
    big = httpx.post(f"{server.url}/hooks/h", content=b"x" * 500, timeout=30,
                     headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    time.sleep(1.5)  # one line a second per hook: the held-back refusal's line comes after it
    # A body too large and one that does not parse are counted apart: neither is said
    # under the other's reason.
    rejected = [x for x in server.output().splitlines() if "delivery.rejected" in x]
    assert any("unsupported content type" in x for x in rejected), rejected
    assert any("body too large" in x and "count=1 " in x for x in rejected), rejected
    bad = httpx.post(f"{server.url}/hooks/h", content=b'{"kind":', timeout=30,
                     headers={"Content-Type": "application/json"})
    out = server.output()
    assert "delivery.rejected" in out and "body is not valid JSON" in out, out[-2000:]


def test_a_start_with_rules_that_do_not_load_asks_senders_to_retry(project: Path) -> None:
    """A restart after a bad edit: every hook answered 404 (`unknown hook`), which tells a
    sender the hook does not exist; a 503 with Retry-After has it deliver again, and once
    the file is fixed the delivery goes through."""
    write_script(project, "ok.sh", "exit 0\n")
    rules_file = project / "rules" / "rules.yaml"
    rules_file.write_text(HOOK + RULE.format(name="first") + "    bogus: 1\n")
    server = Server(project / "rules", project / "data", project,
                    env={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET})
    server.data.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(server.log_path, "ab") as log:
        server.proc = server._spawn(log)
    try:
        _until(lambda: _answers(server.url + "/healthz"))
        assert httpx.get(server.url + "/readyz").status_code == 503
        r = post_github(server.url, GITHUB_SECRET, {"x": 1})
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        assert "no rules are loaded" in r.json()["error"]
        assert "delivery.no_rules" in server.output()
        assert re.search(r"delivery\.no_rules .*client=127\.0\.0\.1", server.output())
        rules_file.write_text(HOOK + RULE.format(name="first"))
        _until(lambda: post_github(server.url, GITHUB_SECRET, {"x": 2}).status_code == 202)
    finally:
        server.stop()


def test_a_hook_whose_secret_is_unset_at_the_start_is_unavailable_alone(
    make_server: Callable[..., Server],
) -> None:
    """A new hook whose variable is missing from the unit's environment: a restart loaded no
    rules at all, and every hook answered 503 until the next restart."""
    server = make_server(HOOK + """
  stripe:
    verify: {stripe: {secret: {env: HR_NEVER_SET}}}
  closed:
    verify: {stripe: {secret: {env: HR_NEVER_SET}}}
    allow_ips: [10.9.9.0/24]
""" + RULE.format(name="first").replace("argv: [\"scripts/ok.sh\"]", "argv: [\"true\"]"))
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200, ready.text
    # Where, not why: /readyz needs no token.
    assert sorted(ready.json()["unavailable_hooks"]) == ["closed", "stripe"], ready.text
    assert ready.json()["unavailable_hooks"]["stripe"].endswith("rules/rules.yaml:9"), ready.text
    refused = httpx.post(server.url + "/hooks/stripe", json={}, timeout=10)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "60", refused.text
    assert "this hook is unavailable" in refused.json()["error"]
    assert "HR_NEVER_SET" not in refused.text  # the why is the operator's, not the sender's
    # An address the hook does not allow learns nothing of its state.
    assert httpx.post(server.url + "/hooks/closed", json={}, timeout=10).status_code == 403
    assert post_github(server.url, GITHUB_SECRET, {"x": 1}).status_code == 202
    out = server.output()
    assert "rules.hook_unavailable" in out and "HR_NEVER_SET is not set" in out, out
    # Each refusal names its client, and each hook has its own count.
    assert re.search(r"delivery\.hook_unavailable count=1 hook=stripe .*client=127\.0\.0\.1",
                     out), out
    assert 'outcome="rejected_unavailable"' in httpx.get(server.url + "/metrics").text
    with server.admin() as c:
        page = c.get("/rules").text
    assert "Unavailable hooks" in page and "HR_NEVER_SET" in page


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_runs_ended_counts_a_retried_run_once_by_how_it_ended(
    make_server: Callable[..., Server], project: Path
) -> None:
    """runs_finished counts attempts: an alert on its failures pages for every retry that
    then succeeded. runs_ended counts each run once, when nothing more is to come."""
    write_script(project, "flaky.sh", '[ "$HOOKRUNNER_ATTEMPT" -gt 1 ]\n')
    server = make_server(HOOK + RULE.format(name="flaky").replace("ok.sh", "flaky.sh")
                         + "    retry: {attempts: 2, backoff: 0s}\n")
    run_id = post_github(server.url, GITHUB_SECRET, {"a": 1}).json()["runs"][0]
    assert server.wait_run(run_id)["status"] == "succeeded"
    text = httpx.get(server.url + "/metrics").text
    assert 'hookrunner_runs_finished_total{rule="flaky",status="failed"} 1.0' in text
    assert 'hookrunner_runs_finished_total{rule="flaky",status="succeeded"} 1.0' in text
    assert 'hookrunner_runs_ended_total{rule="flaky",status="succeeded"} 1.0' in text
    assert 'hookrunner_runs_ended_total{rule="flaky",status="failed"}' not in text


def test_a_cancel_asked_just_before_a_failing_attempt_ends_counts_the_run_canceled(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A cancel reaches a node within half a second; an attempt that failed first was about
    to be retried: the store ended the run canceled, but the metric never counted it, and
    the log said `retry_in=30`."""
    write_script(project, "cancel-me.sh",
                 f'"{sys.executable}" -m hookrunner.cli cancel "$HOOKRUNNER_RUN_ID" '
                 f'--data "{project / "data"}" >/dev/null\nexit 1\n')
    server = make_server(HOOK + RULE.format(name="doomed").replace("ok.sh", "cancel-me.sh")
                         + "    retry: {attempts: 3, backoff: 30s}\n")
    run_id = post_github(server.url, GITHUB_SECRET, {"a": 1}).json()["runs"][0]
    doc = server.wait_run(run_id)
    assert (doc["status"], doc["attempt"]) == ("canceled", 1), doc
    text = httpx.get(server.url + "/metrics").text
    assert 'hookrunner_runs_ended_total{rule="doomed",status="canceled"} 1.0' in text, text
    line = next(x for x in server.output().splitlines()
                if "run.finished" in x and run_id in x)
    assert "retry_in" not in line, line


def test_a_queued_run_canceled_over_the_api_counts_as_ended_canceled(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A run canceled before it started ended in the store (runs_stored said so), but
    runs_ended never counted it: an alert adding up its `canceled` series came short."""
    go = project / "go"
    write_script(project, "hold.sh", f"while [ ! -e {go} ]; do sleep 0.05; done\n")
    server = make_server(HOOK + RULE.format(name="held").replace("ok.sh", "hold.sh")
                         + "    concurrency: {key: one, policy: queue}\n")
    first, second = (post_github(server.url, GITHUB_SECRET, {"n": i}).json()["runs"][0]
                     for i in range(2))
    with server.admin() as c, ThreadPoolExecutor(4) as pool:  # at once: counted once
        answers = list(pool.map(lambda _: c.post(f"/api/runs/{second}/cancel"), range(4)))
        assert {(a.status_code, a.json()["status"]) for a in answers} == {(202, "canceled")}
        go.touch()
    assert server.wait_run(first)["status"] == "succeeded"
    text = httpx.get(server.url + "/metrics").text
    assert 'hookrunner_runs_ended_total{rule="held",status="canceled"} 1.0' in text, text
    assert 'hookrunner_runs_ended_total{rule="held",status="succeeded"} 1.0' in text, text


def test_requests_to_an_unknown_hook_are_logged_and_counted(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A sender still posting to a renamed hook was invisible: no line, no metric."""
    write_script(project, "ok.sh", "exit 0\n")
    server = make_server(HOOK + RULE.format(name="r"))
    for _ in range(3):
        assert httpx.post(f"{server.url}/hooks/old-name", json={}).status_code == 404
    assert "hookrunner_unknown_hook_requests_total 3.0" in httpx.get(server.url + "/metrics").text
    _until(lambda: any("delivery.rejected" in x and "hook=old-name" in x
                       and 'reason="unknown hook"' in x for x in server.output().splitlines()))


def test_json_sent_as_a_form_is_named_in_the_condition_error(
        make_server: Callable[..., Server]) -> None:
    """`curl -d '{...}'` without a Content-Type posts a form whose one field's name is the
    JSON: the rule cannot match, and its condition error says why and what to send."""
    rules = """
hooks: {monitoring: {verify: {none: {}}}}
rules:
  - name: scale
    hook: monitoring
    when: payload.monitoring_status == "overloaded"
    run: {shell: {argv: ["true"]}}
"""
    server = make_server(rules)
    answer = httpx.post(f"{server.url}/hooks/monitoring", timeout=30,
                        content=b'{"monitoring_status": "overloaded"}',
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 202 and answer.json()["runs"] == []
    _until(lambda: "rule.condition_error" in server.output(), 10)
    line = next(x for x in server.output().splitlines() if "rule.condition_error" in x)
    assert "hint=" in line and "-H 'Content-Type: application/json'" in line, line


def test_the_open_files_limit_is_raised_and_one_too_low_is_warned_about(project: Path) -> None:
    """systemd's default soft limit (1,024) is met by a burst of connections and runs: the
    server raises its soft limit to the hard one, and warns where even that is too low."""
    import resource

    rules = project / "rules"
    (rules / "rules.yaml").write_text(
        "hooks: {open: {verify: {none: {}}}}\n"
        "rules: [{name: limit, hook: open, run: {shell: {argv: [sh, -c, 'ulimit -n']}}}]\n")
    raised = Server(rules, project / "data", project,
                    limits={resource.RLIMIT_NOFILE: (100, 4096)}).start()
    try:
        assert raised.proc is not None
        limits = Path(f"/proc/{raised.proc.pid}/limits").read_text()
        assert re.search(r"Max open files\s+4096\s+4096", limits), limits
        r = httpx.post(f"{raised.url}/hooks/open?wait=10s", json={})
        assert "\n4096\n" in r.json()["runs"][0]["output"], r.text  # actions get it too
        assert "server.limit_low" not in raised.output()
    finally:
        raised.stop()
    low = Server(rules, project / "data2", project, args=["--workers", "64"],
                 limits={resource.RLIMIT_NOFILE: (64, 64)}).start()
    low.stop()
    line = next(x for x in low.output().splitlines() if "server.limit_low" in x)
    assert "open files limit 64 (hard 64) is low for --workers 64" in line, line
    assert "LimitNOFILE=" in line, line


def test_the_console_shows_the_verifier_that_checked_a_delivery_not_the_hooks_current_one(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A delivery taken while hook `dd` was briefly `none` read `verified: token` (`✓ token`
    in the list) once the hook was changed back: forged deliveries looked signed."""
    hook = "hooks:\n  dd:\n    verify: {verify}\n"
    server = make_server(hook.format(verify="{none: {}}"), env={"DD_TOKEN": "dd-token-1"})
    unsigned = httpx.post(f"{server.url}/hooks/dd", json={}).json()["delivery_id"]
    (project / "rules" / "rules.yaml").write_text(
        hook.format(verify="{token: {secret: {env: DD_TOKEN}}}"))
    _until(lambda: httpx.post(f"{server.url}/hooks/dd", json={}).status_code == 401)
    signed = httpx.post(f"{server.url}/hooks/dd", json={},
                        headers={"Authorization": "Bearer dd-token-1"}).json()["delivery_id"]
    with server.admin() as c:
        assert "(verified: none)" in c.get(f"/deliveries/{unsigned}").text
        assert "(verified: token)" in c.get(f"/deliveries/{signed}").text
        rows = c.get("/fragments/deliveries").text
    row = {d: rows[rows.index(f'data-id="{d}"'):].split("</tr>")[0] for d in (unsigned, signed)}
    assert '<span class="muted">none</span>' in row[unsigned] and "ok-mark" not in row[unsigned]
    assert '<span class="ok-mark">✓</span> token' in row[signed]
