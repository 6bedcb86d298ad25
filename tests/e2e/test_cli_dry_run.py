"""`hookrunner test`, `explain` and `check` as a user runs them: subprocesses, real files.

`test` and `explain` evaluate and render only: no script, playbook, terraform or HTTP call runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.demo_env import REPO, demo_environ, hookrunner

RULES = """
hooks:
  ops:
    verify:
      hmac: {secret: {env: OPS_SECRET}, header: X-Signature}
rules:
  - name: touch
    hook: ops
    run:
      shell: {argv: ["scripts/touch.sh", "{{ payload.marker }}"]}
  - name: play
    hook: ops
    when: payload.kind == "scale"
    run:
      ansible:
        playbook: scale_up.yml
        extravars: {marker_file: "{{ payload.marker }}.ansible", replicas: "{{ payload.replicas }}"}
  - name: apply
    hook: ops
    when: payload.kind == "scale"
    run:
      terraform:
        dir: tf
        command: apply
        workspace: "{{ payload.env }}"
        vars: {replicas: "{{ payload.replicas }}"}
  - name: notify
    hook: ops
    when: payload.kind == "scale"
    run:
      http:
        url: "TARGET/notify"
        json: {text: "scaling to {{ payload.replicas }}"}
  - name: never
    hook: ops
    when: payload.kind == "other"
    run:
      shell: {argv: ["scripts/touch.sh", "never"]}
"""


class Counter(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[str]:
    Counter.hits.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def project(tmp_path: Path, target: str) -> Path:
    """A --root with one rule of each kind, each of which would leave a trace if it ran."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ops.yaml").write_text(RULES.replace("TARGET", target))
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "touch.sh"
    script.write_text('#!/bin/sh\ntouch "$1"\n')
    script.chmod(0o755)
    (tmp_path / "playbooks").mkdir()
    shutil.copy(REPO / "playbooks" / "scale_up.yml", tmp_path / "playbooks" / "scale_up.yml")
    (tmp_path / "tf").mkdir()
    (tmp_path / "tf" / "main.tf").write_text(
        'variable "replicas" {}\noutput "replicas" { value = var.replicas }\n'
    )
    return tmp_path


def write_payload(path: Path, payload: object) -> str:
    path.write_text(json.dumps(payload))
    return str(path)


def test_test_prints_matching_rules_and_rendered_actions_and_runs_nothing(project: Path) -> None:
    marker = project / "marker"
    payload = write_payload(
        project / "p.json", {"kind": "scale", "marker": str(marker), "replicas": 3, "env": "staging"}
    )
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    done = hookrunner(
        "test", "--hook", "ops", "--payload", payload, cwd=project, env=demo_environ(OPS_SECRET="s")
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("4 of 5 rule(s) match\n")
    assert re.search(r"^✗ never  \(rules/ops\.yaml:\d+\)\n    not matched$", out, re.M), out
    sections = {s.split("  ", 1)[0]: s for s in out.split("\n\n")[1:]}
    assert f"    run: shell\n      argv:\n      - scripts/touch.sh\n      - {marker}" in sections["✓ touch"]
    assert (
        f"    run: ansible\n      playbook: scale_up.yml\n      extravars:\n"
        f"        marker_file: {marker}.ansible\n        replicas: 3"
    ) in sections["✓ play"]
    assert (
        "    run: terraform\n      dir: tf\n      command: apply\n      workspace: staging\n"
        "      vars:\n        replicas: 3"
    ) in sections["✓ apply"]
    assert "    run: http\n" in sections["✓ notify"]
    assert "/notify" in sections["✓ notify"] and "text: scaling to 3" in sections["✓ notify"]
    # Nothing ran: no marker, no ansible marker, no terraform init or state, no HTTP request.
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    assert not marker.exists() and not Path(f"{marker}.ansible").exists()
    assert Counter.hits == []


def test_test_shows_a_template_error_instead_of_an_action_and_exits_1(project: Path) -> None:
    """Exit 1, so that a CI check of rules against sample payloads catches it."""
    payload = write_payload(project / "p.json", {"kind": "scale", "replicas": 3, "env": "staging"})
    done = hookrunner(
        "test", "--hook", "ops", "--payload", payload, cwd=project, env=demo_environ(OPS_SECRET="s")
    )
    assert done.returncode == 1, done.stderr
    assert "! the action cannot be rendered: 'dict object' has no attribute 'marker'" in done.stdout


def test_test_and_explain_take_query_parameters(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        'hooks: {h: {verify: {none: {}}}}\n'
        'rules: [{name: prod, hook: h, when: \'query.env == "prod"\', '
        'run: {shell: {argv: [echo, "{{ query.env }}"]}}}]\n')
    payload = write_payload(tmp_path / "p.json", {})
    base = ["--rules", str(tmp_path / "rules"), "--hook", "h", "--payload", payload]
    done = hookrunner("test", *base, "--query", "env=prod", "--query", "x=")
    assert done.returncode == 0 and "1 of 1 rule(s) match" in done.stdout, done.stdout
    assert "- prod" in done.stdout
    done = hookrunner("explain", *base)
    assert done.returncode == 0 and "✗ prod" in done.stdout, done.stdout
    done = hookrunner("test", *base, "--query", "env")
    assert done.returncode == 2 and "--query 'env': expected 'name=value'" in done.stderr


def test_test_gives_header_names_in_lower_case_as_the_server_does(tmp_path: Path) -> None:
    """audit: `{{ headers }}` and `headers.keys()` wrote `X-Foo` in a dry run where the server
    writes `x-foo`, as HTTP/1.1 names arrive (the README says so)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        'hooks: {h: {verify: {none: {}}}}\n'
        'rules: [{name: r, hook: h, run: {shell: {argv: [echo, "{{ headers }}", '
        '"{{ headers.keys() | list }}", "{{ headers[\'X-FOO\'] }}"]}}}]\n')
    payload = write_payload(tmp_path / "p.json", {})
    done = hookrunner("test", "--rules", str(tmp_path / "rules"), "--hook", "h", "--payload",
                      payload, "--header", "X-Foo: a")
    assert done.returncode == 0, done.stdout + done.stderr
    # (With the content type senders send, and the body's length, as the server has them.)
    assert ('{"x-foo": "a", "content-type": "application/json", "content-length": "2"}'
            in done.stdout), done.stdout
    assert '["x-foo", "content-type", "content-length"]' in done.stdout, done.stdout
    assert "X-Foo" not in done.stdout, done.stdout


def test_a_client_ip_the_hooks_allow_ips_refuses_is_said_and_test_exits_1(tmp_path: Path) -> None:
    """A dry run from an address the server answers 403 said "1 of 1 rule(s) match"."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        'hooks: {h: {verify: {none: {}}, allow_ips: [192.30.252.0/22]}}\n'
        'rules: [{name: any, hook: h, run: {shell: {argv: ["true"]}}}]\n')
    payload = write_payload(tmp_path / "p.json", {})
    base = ["--rules", str(tmp_path / "rules"), "--hook", "h", "--payload", payload]
    outside = hookrunner("test", *base, "--client-ip", "127.0.0.1")
    assert outside.returncode == 1 and "1 of 1 rule(s) match" in outside.stdout, outside.stdout
    assert "127.0.0.1 is not in hook 'h''s allow_ips: the server answers a request from it " \
           "403" in outside.stderr, outside.stderr
    explained = hookrunner("explain", *base, "--client-ip", "127.0.0.1")
    assert explained.returncode == 0 and "allow_ips" in explained.stderr
    inside = hookrunner("test", *base, "--client-ip", "192.30.252.7")
    assert inside.returncode == 0 and "allow_ips" not in inside.stderr, inside.stderr


@pytest.mark.parametrize(
    ("hook", "payload_file", "expected"),
    [
        (
            "github",
            "github-push.json",
            ["run: shell", "- octocat/hello-world", "concurrency: 'deploy-octocat/hello-world' (coalesce)"],
        ),
        ("monitoring", "monitoring-overloaded.json", ["run: shell", "run: ansible", "replicas: 4"]),
        ("alertmanager", "alertmanager-overloaded.json", ["run: ansible", "playbook: scale_up.yml"]),
        ("grafana", "grafana-alert.json", ["run: terraform", "workspace: staging", "replicas: '6'"]),
        (
            "stripe",
            "stripe-invoice-payment-failed.json",
            ["run: http", "env: NOTIFY_URL", "49.00 EUR due (attempt 2)"],
        ),
    ],
)
def test_test_renders_each_shipped_example(hook: str, payload_file: str, expected: list[str]) -> None:
    headers = ["--header", "X-GitHub-Event: push"] if hook == "github" else []
    done = hookrunner("test", "--hook", hook, "--payload", f"examples/payloads/{payload_file}", *headers)
    assert done.returncode == 0, done.stderr
    assert "! the action cannot be rendered" not in done.stdout
    for text in expected:
        assert text in done.stdout, done.stdout


def test_explain_shows_every_rule_with_each_condition_and_its_value(tmp_path: Path) -> None:
    payload = json.loads((REPO / "examples/payloads/monitoring-overloaded.json").read_text())
    ok = write_payload(tmp_path / "ok.json", {**payload, "monitoring_status": "ok"})
    done = hookrunner("explain", "--hook", "monitoring", "--payload", ok)
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"^✓ log-every-alert  \(rules/monitoring\.yaml:\d+\)  matched\n"
        r"    \(no when: matches every delivery\)$",
        done.stdout,
        re.M,
    ), done.stdout
    assert re.search(
        r"^✗ scale-up-when-overloaded  \(rules/monitoring\.yaml:\d+\)  not matched\n"
        r'    ✗ payload\.monitoring_status == "overloaded"  "ok"$',
        done.stdout,
        re.M,
    ), done.stdout


def test_explain_splits_and_conditions_and_shows_the_value_that_failed(tmp_path: Path) -> None:
    push = json.loads((REPO / "examples/payloads/github-push.json").read_text())
    dev = write_payload(tmp_path / "dev.json", {**push, "ref": "refs/heads/dev"})
    done = hookrunner("explain", "--hook", "github", "--payload", dev, "--header", "X-GitHub-Event: push")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"✗ redeploy-on-push  \(rules/github\.yaml:\d+\)  not matched", lines[0])
    assert re.fullmatch(r'    ✓ event == "push" +"push"', lines[1])
    assert re.fullmatch(r'    ✗ payload\.ref == "refs/heads/main" +"refs/heads/dev"', lines[2])


def test_check_passes_on_the_shipped_rules_with_the_makefile_env() -> None:
    done = hookrunner("check")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"ok: \d+ hook\(s\), \d+ rule\(s\) from \d+ file\(s\)\n", done.stdout)


def test_check_without_the_secrets_checks_the_rest(tmp_path: Path) -> None:
    """A CI job has none of the hooks' secrets: `check` failed on every one of them, with
    nothing to say that the rest was fine; `--without-secrets` checks the rest."""
    bare = {k: v for k, v in demo_environ().items() if not k.endswith(("_SECRET", "_TOKEN"))}
    done = hookrunner("check", env=bare)
    assert done.returncode == 1 and "is not set or empty" in done.stderr, done.stderr
    assert "`check --without-secrets` checks the rest" in done.stderr
    done = hookrunner("check", "--without-secrets", env=bare)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(" (secrets not read)\n"), done.stdout
    rules = tmp_path / "rules"  # and what is wrong besides is still said
    shutil.copytree(REPO / "rules", rules)
    (rules / "x.yaml").write_text("rules:\n  - name: x\n    hook: github\n    run: {nope: {}}\n")
    done = hookrunner("check", "--without-secrets", "--rules", str(rules), env=bare)
    assert done.returncode == 1 and f"{rules / 'x.yaml'}:4: " in done.stderr, done.stderr
    assert "is not set" not in done.stderr and "--without-secrets` checks" not in done.stderr


def test_check_reports_file_and_line_of_each_error_in_a_broken_copy(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    grafana = rules / "grafana.yaml"
    text = grafana.read_text()
    assert "        command: apply\n" in text
    grafana.write_text(text.replace("        command: apply\n", "        command: deploy\n"))
    line = grafana.read_text().splitlines().index("        command: deploy") + 1
    done = hookrunner("check", "--rules", str(rules))
    assert done.returncode == 1, done.stdout
    assert f"{grafana}:{line}: " in done.stderr, done.stderr
    assert "terraform.command must be one of plan, apply, destroy" in done.stderr


def test_a_condition_past_what_python_compiles_is_a_line_not_a_traceback(tmp_path: Path) -> None:
    """200 `or` terms (generated rules) or 80 nested parentheses: Python's parser limits.
    `check`, `test` and `explain` printed a traceback; `serve` an error with no line."""
    rules = tmp_path / "rules"
    rules.mkdir()
    chain = " or ".join(["payload.a == 1"] * 200)
    deep = "(" * 80 + "payload.a" + ")" * 80
    (rules / "r.yaml").write_text(f"""hooks: {{h: {{verify: {{none: {{}}}}}}}}
rules:
  - name: long
    hook: h
    when: '{chain}'
    run: {{shell: {{argv: ["true"]}}}}
  - name: deep
    hook: h
    run: {{shell: {{argv: ["echo", "{{{{ {deep} }}}}"]}}}}
""")
    done = hookrunner("check", "--rules", str(rules))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{rules / 'r.yaml'}:5: rule 'long': when: too long or too deeply nested" in done.stderr
    assert f"{rules / 'r.yaml'}:9: rule 'deep': run.shell.argv[1]: too long or too deeply" \
        in done.stderr, done.stderr


HEADER_RULES = """
hooks:
  h:
    verify:
      token: {secret: {file: secrets/token}}
rules:
  - name: by-header
    hook: h
    when: headers["X-Foo"] == "a"
    run: {shell: {argv: ["true"]}}
"""


@pytest.fixture
def secret_project(tmp_path: Path) -> Path:
    """Rules whose secret is a `{file: ...}` relative to --root."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "h.yaml").write_text(HEADER_RULES)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("t0ken\n")
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def test_check_resolves_file_secrets_against_root(secret_project: Path) -> None:
    """As `serve --root X` would: from another directory only --root finds the secret."""
    rules = str(secret_project / "rules")
    elsewhere = secret_project / "elsewhere"
    done = hookrunner("check", "--rules", rules, "--root", str(secret_project), cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    done = hookrunner("check", "--rules", rules, cwd=elsewhere)
    assert done.returncode == 1 and "secrets/token" in done.stderr, done.stderr
    env = {**demo_environ(), "HOOKRUNNER_ROOT": str(secret_project)}
    assert hookrunner("check", "--rules", rules, cwd=elsewhere, env=env).returncode == 0


def test_dry_run_command_line_mistakes_are_usage_errors(secret_project: Path) -> None:
    payload = write_payload(secret_project / "p.json", {})
    base = ["--hook", "h", "--rules", str(secret_project / "rules")]
    for args, text in (
        (["--payload", payload, "--header", "NoColon"], "--header 'NoColon': expected 'Name: value'"),
        (["--payload", "nofile.json"], "cannot read --payload nofile.json: no such file"),
        (["--payload", str(secret_project)], f"cannot read --payload {secret_project}: is a directory"),
    ):
        for command in ("test", "explain"):
            done = hookrunner(command, *base, *args, cwd=secret_project)
            assert done.returncode == 2, (args, done.stderr)
            assert done.stderr == f"hookrunner: {text}\n"


def test_explain_says_which_header_the_request_lacks(secret_project: Path) -> None:
    payload = write_payload(secret_project / "p.json", {})
    done = hookrunner("explain", "--hook", "h", "--payload", payload, cwd=secret_project)
    assert done.returncode == 0, done.stderr
    assert "the request has no header 'X-Foo'" in done.stdout
    assert "hookrunner." not in done.stdout  # no internal type names


def test_check_names_what_is_wrong_without_internal_type_names(tmp_path: Path) -> None:
    (tmp_path / "rules").write_text("")
    done = hookrunner("check", "--rules", str(tmp_path / "rules"))
    assert done.returncode == 1
    # The directory is named once: no `rules:0:` in front (the line of no file).
    assert f"\n{tmp_path / 'rules'}:0:" not in "\n" + done.stderr
    assert f"the rules directory {tmp_path / 'rules'} is not a directory" in done.stderr, done.stderr
    (tmp_path / "rules").unlink()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        'hooks: {h: {verify: {none: {}}}}\n'
        'rules: [{name: r, hook: h, run: {shell: {argv: ["a", {b: 1}]}}}]\n')
    done = hookrunner("check", "--rules", str(tmp_path / "rules"))
    assert done.returncode == 1
    assert "run.shell.argv[1] must be a string, got a mapping" in done.stderr, done.stderr


def test_test_shows_the_arguments_the_process_gets(tmp_path: Path) -> None:
    """Each argument one text, JSON for what is not text (as the server runs it), not YAML that
    reads as several arguments; the scope as the server's: a `dlv_` id, a Content-Type."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        'hooks: {h: {verify: {none: {}}}}\n'
        'rules: [{name: r, hook: h, when: \'delivery_id is match("dlv_") and '
        'headers["Content-Type"] == "application/json"\', '
        'run: {shell: {argv: [echo, "{{ payload.nul }}", "{{ payload.obj }}", "{{ payload.list }}"],'
        ' env: {OBJ: "{{ payload.obj }}"}}}}]\n')
    payload = write_payload(tmp_path / "p.json", {"nul": None, "obj": {"a": 1}, "list": ["a", "b"]})
    done = hookrunner("test", "--rules", str(tmp_path / "rules"), "--hook", "h", "--payload", payload)
    assert done.returncode == 0 and "1 of 1 rule(s) match" in done.stdout, done.stdout
    for line in ("- 'null'", """- '{"a": 1}'""", """- '["a", "b"]'""", """OBJ: '{"a": 1}'"""):
        assert line in done.stdout, done.stdout


REFUSED_RULES = """
hooks:
  ops:
    verify: none
rules:
  - name: outside
    hook: ops
    run:
      shell: {argv: ["scripts/touch.sh", "x"], cwd: "{{ payload.dir }}"}
  - name: limit
    hook: ops
    run:
      ansible: {playbook: scale_up.yml, limit: "{{ payload.hosts }}"}
  - name: workspace
    hook: ops
    run:
      terraform: {dir: tf, command: apply, workspace: "{{ payload.env }}"}
  - name: header
    hook: ops
    run:
      http: {url: "TARGET/notify", headers: {X-Env: "{{ payload.env }}"}}
  - name: port
    hook: ops
    run:
      http: {url: "http://127.0.0.1:{{ payload.port }}/deploy"}
  - name: fine
    hook: ops
    run:
      http: {url: {env: NOTIFY_URL}, headers: {Authorization: {env: CI_TOKEN}}}
"""


def test_test_says_which_actions_the_server_would_refuse_and_exits_1(
        project: Path, target: str) -> None:
    """A path outside --root, a limit naming a file, a bad workspace name, a header with a
    line break: rendered fine, but the server's runner refuses each before starting it; the
    dry run says so with the runner's own reason. `{env: ...}` values are not read (the
    CLI's environment is not the server's), so they are no refusal."""
    (project / "rules" / "ops.yaml").write_text(REFUSED_RULES.replace("TARGET", target))
    payload = write_payload(project / "p.json",
                            {"dir": "../", "hosts": "@/etc/passwd", "env": "a\nb",
                             "port": "8080/deployX/admin?"})
    done = hookrunner("test", "--hook", "ops", "--payload", payload, cwd=project,
                      env=demo_environ())
    assert done.returncode == 1, done.stderr
    sections = {s.split("  ", 1)[0]: s for s in done.stdout.split("\n\n")[1:]}
    refused = "    ! the server would refuse to run it: "
    assert f"{refused}path '../' is outside --root" in sections["✓ outside"], done.stdout
    assert f"{refused}ansible: limit names a file" in sections["✓ limit"], done.stdout
    assert f"{refused}terraform: invalid workspace name 'a\\nb'" in sections["✓ workspace"]
    assert (f"{refused}http: header X-Env holds a line break or another control character"
            in sections["✓ header"]), done.stdout
    # A port that starts with the rule's text after it (`/deploy`) is no port (audit).
    assert (f"{refused}http: a templated value changed the scheme or host that the rule "
            "writes out (http://127.0.0.1:{{…}}/deploy): http://127.0.0.1:8080/deployX/admin"
            in sections["✓ port"]), done.stdout
    assert "!" not in sections["✓ fine"], done.stdout
    assert Counter.hits == []


def test_test_leaves_files_not_there_yet_to_checks_warnings(project: Path) -> None:
    """A CA bundle that only the server has (an absolute path), a playbook or terraform dir
    a deploy brings later: `check` warns of them; a dry run is no refusal (exit 0)."""
    (project / "rules" / "ops.yaml").write_text("""
hooks:
  ops:
    verify: none
rules:
  - name: ca
    hook: ops
    run:
      http: {url: "https://internal.example/notify", ca: /etc/hookrunner/no-such-ca.pem}
  - name: later-playbook
    hook: ops
    run:
      ansible: {playbook: later.yml}
  - name: later-dir
    hook: ops
    run:
      terraform: {dir: later, command: apply}
""")
    payload = write_payload(project / "p.json", {})
    done = hookrunner("test", "--hook", "ops", "--payload", payload, cwd=project,
                      env=demo_environ())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "refuse" not in done.stdout, done.stdout


def test_test_says_what_the_server_would_do_with_the_body_and_its_resend(tmp_path: Path) -> None:
    """audit (a differential of `test` against a server): a body past max_body was shown
    matching (the server answers 413); a gzip body was 'not valid UTF-8' (the server: 415);
    the dedup key, a retry's `on` and `max_backoff`, and the default timeout went unsaid."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        'hooks: {h: {verify: {none: {}}, max_body: 64, dedup: "{{ payload.id }}",'
        ' allow_ips: [10.0.0.0/8]}}\n'
        'rules: [{name: r, hook: h, run: {shell: {argv: ["true"]}},'
        ' retry: {attempts: 3, backoff: 90s, max_backoff: 10m, on: [timed_out]}}]\n')
    rules = str(tmp_path / "rules")
    small = write_payload(tmp_path / "small.json", {"id": "evt-1"})
    done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", small)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retry: 3 attempts, backoff 90s (at most 10m), on: timed_out" in done.stdout
    assert "timeout: 1h (the default)" in done.stdout
    assert "delivery key for duplicates: 'evt-1'" in done.stdout, done.stdout
    # The server's default, where it is set as the server's is (a 2 s default said 1h).
    done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", small,
                      env={**demo_environ(), "HOOKRUNNER_DEFAULT_TIMEOUT": "2s"})
    assert "timeout: 2s (the default)" in done.stdout, done.stdout + done.stderr
    assert "has allow_ips, and no --client-ip was given" in done.stderr, done.stderr
    big = write_payload(tmp_path / "big.json", {"id": "x" * 100})
    done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", big)
    assert done.returncode == 1 and "past the max_body of hook 'h' (64)" in done.stderr, done.stderr
    (tmp_path / "big.txt").write_text("not json " * 20)  # too large before it is unparseable
    done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", str(tmp_path / "big.txt"))
    assert done.returncode == 1 and "past the max_body" in done.stderr, done.stderr
    # Refused for a header, as a body past max_body is for its size: exit 1 (not 2, a usage
    # error blaming the payload file), naming the header.
    for header, said in (("Content-Encoding: gzip", "content encoding 'gzip' is not supported"),
                         ("Content-Type: text/xml", "unsupported content type 'text/xml'")):
        done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", small,
                          "--header", header)
        assert done.returncode == 1, done.stderr
        assert f"hookrunner: --header '{header}': {said}" in done.stderr, done.stderr
        assert "(the server answers it 415, and journals and runs nothing)" in done.stderr
        assert "--payload" not in done.stderr, done.stderr
    # Labels on several lines, read as the server reads them (one list; one type).
    done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", small, "--header",
                      "Content-Encoding: identity", "--header", "Content-Encoding: gzip")
    assert done.returncode == 1, done.stderr
    assert ("hookrunner: --header 'Content-Encoding: identity, gzip': content encoding 'gzip' "
            "is not supported") in done.stderr, done.stderr
    done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", small, "--header",
                      "Content-Type: application/json", "--header", "Content-Type: text/xml")
    assert done.returncode == 1, done.stderr
    assert done.stderr.endswith("\nhookrunner: --header: Content-Type is given more than once, "
                                "with different values: send one (the server answers it 400, "
                                "and journals and runs nothing)\n"), done.stderr
    no_id = write_payload(tmp_path / "no-id.json", {"other": 1})
    done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", no_id)
    assert "the hook's dedup fails for this delivery" in done.stdout, done.stdout
    assert "dedup_template_failed" not in done.stderr, done.stderr
    # A verifier that has no delivery id at all: not "the headers given carry none".
    (tmp_path / "rules" / "a.yaml").write_text(
        'hooks: {h: {verify: {hmac: {secret: {env: HOME}, header: X-Sig}}}}\n'
        'rules: [{name: r, hook: h, run: {shell: {argv: ["true"]}}}]\n')
    done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", small)
    assert ("delivery key for duplicates: none (every resend runs again): the hmac verifier has "
            "no delivery id; give the hook a `dedup:` template") in done.stdout, done.stdout


def _one_hook(project: Path, verify: str, rules: str) -> None:
    (project / "rules" / "ops.yaml").write_text(
        f"hooks:\n  h:\n    verify: {verify}\nrules:\n{rules}")


def test_a_payload_past_max_body_is_read_only_that_far(tmp_path: Path) -> None:
    """probe: `--payload /dev/zero` was read whole before its size was compared with max_body,
    growing until a MemoryError traceback; now max_body + 1 bytes are read, then the 413 said."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        'hooks: {h: {verify: {none: {}}, max_body: 64}}\n'
        'rules: [{name: r, hook: h, run: {shell: {argv: ["true"]}}}]\n')
    rules = str(tmp_path / "rules")
    for command in ("test", "explain"):
        done = hookrunner(command, "--rules", rules, "--hook", "h", "--payload", "/dev/zero")
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr == ("hookrunner: the body is more than 64 bytes, past the max_body of "
                               "hook 'h' (64): the server answers it 413, and journals and runs "
                               "nothing\n"), done.stderr
    (tmp_path / "big.json").write_bytes(b" " * 100_000)  # a file's size is said exactly
    done = hookrunner("test", "--rules", rules, "--hook", "h", "--payload", str(tmp_path / "big.json"))
    assert done.returncode == 1 and "the body is 100000 bytes, past" in done.stderr, done.stderr


def test_test_and_explain_share_the_servers_one_second_for_a_delivery(project: Path) -> None:
    """The server gives all the conditions and templates of a delivery 1 s together; `test`
    and `explain` gave each its own, and showed as matching rules the server refused."""
    rules = "".join(f'  - name: r{i}\n    hook: h\n    when: payload.s is match("(a|aa)+$")\n'
                    f'    run: {{shell: {{argv: [scripts/touch.sh]}}}}\n' for i in range(40))
    _one_hook(project, "none", rules)
    payload = write_payload(project / "p.json", {"s": "a" * 40 + "b"})
    for mode in ("explain", "test"):
        done = hookrunner(mode, "--hook", "h", "--payload", payload, cwd=project)
        assert "the delivery's templates took longer than 1.0 s" in done.stdout, done.stdout


def test_a_header_byte_that_is_not_utf8_is_read_as_the_server_reads_it(project: Path) -> None:
    """One character (latin-1), as the server reads it: it was a lone surrogate here."""
    _one_hook(project, "none", '  - name: r\n    hook: h\n    when: headers["X-Name"] == "café"\n'
                               '    run: {shell: {argv: [scripts/touch.sh, "{{ headers[\'X-Name\'] }}"]}}\n')
    payload = write_payload(project / "p.json", {})
    header = os.fsdecode(b"X-Name: caf\xe9")
    done = hookrunner("test", "--hook", "h", "--payload", payload, "--header", header, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("1 of 1 rule(s) match") and "- café" in done.stdout, done.stdout
    utf8 = hookrunner("test", "--hook", "h", "--payload", payload, "--header", "X-Name: café",
                      cwd=project)
    assert utf8.returncode == 0 and "- café" in utf8.stdout, utf8.stdout + utf8.stderr


def test_an_event_type_the_server_cleans_is_cleaned_here_too(project: Path) -> None:
    """A Slack interaction's `type` with a NUL (`\\u0000` in the form's JSON): the server
    stores (and renders) it with U+FFFD; `test` said the action could not be rendered."""
    _one_hook(project, "{slack: {secret: {env: SLACK_SECRET}}}",
              '  - name: r\n    hook: h\n    run: {shell: {argv: [scripts/touch.sh, "{{ event }}"]}}\n')
    payload = project / "p.form"
    payload.write_text("payload=%7B%22type%22%3A%22a%5Cu0000b%22%7D&x=1")
    done = hookrunner("test", "--hook", "h", "--payload", str(payload), "--header",
                      "Content-Type: application/x-www-form-urlencoded", cwd=project,
                      env=demo_environ(SLACK_SECRET="slack-signing-secret"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "- a\ufffdb" in done.stdout, done.stdout


@pytest.mark.parametrize(("args", "answer"), [
    (["--header", "X-Hookrunner-Hops: 11"], "508 (loop detected"),
    (["--query", "wait=abc"], "400 (wait: "),
    (["--query", "wait=1s", "--query", "wait=2s"], "400 (wait: given more than once)"),
])
def test_a_request_the_server_refuses_for_its_head_exits_1(
        project: Path, args: list[str], answer: str) -> None:
    _one_hook(project, "none", "  - name: r\n    hook: h\n    run: {shell: {argv: [scripts/touch.sh]}}\n")
    payload = write_payload(project / "p.json", {})
    done = hookrunner("test", "--hook", "h", "--payload", payload, *args, cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"the server answers this request {answer}" in done.stderr, done.stderr
