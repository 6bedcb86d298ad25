"""What an action renders from a secret request value stays out of what is shown: the
implicit terraform concurrency key, an http URL as its log line gives it, a dedup error."""

from __future__ import annotations

from typing import Any

import pytest

from hookrunner import ingest
from hookrunner.redact import HIDDEN_KEY, hidden_values, scrub, shown_key
from hookrunner.rules import load_rules_text
from hookrunner.rules.match import build_scope
from hookrunner.verify.base import Verified

RULES = """
hooks:
  k:
    verify: {token: {secret: "s3cr3t-value", header: X-Shared}}
    dedup: "{{ payload[headers['X-Shared']] }}"
rules:
  - name: tf
    hook: k
    run: {terraform: {command: plan, dir: envs, workspace: "ws-{{ headers['X-Shared'] }}"}}
  - name: plain
    hook: k
    run: {terraform: {command: plan, dir: envs, workspace: "{{ payload.ws }}"}}
  - name: var-only
    hook: k
    run: {terraform: {command: plan, dir: envs, vars: {token: "{{ headers['X-Shared'] }}"}}}
"""


def _scope() -> dict[str, Any]:
    return build_scope(hook="k", delivery_id="dlv_1", received_at=0.0,
                       headers={"X-Shared": "tok-secret-1"}, query={}, payload={"ws": "prod"},
                       event=None)


def test_an_implicit_concurrency_key_made_from_a_secret_is_hidden() -> None:
    ruleset = load_rules_text({"r.yaml": RULES})
    _, runs = ingest.plan_runs(ruleset, "k", _scope(), "dlv_1", 0.0, 60.0)
    tf, plain, var_only = runs
    assert tf.concurrency_key == "terraform:envs:ws-tok-secret-1"  # what it serializes on
    assert tf.spec[HIDDEN_KEY] is True
    assert shown_key(tf.concurrency_key, tf.spec) == "[redacted]"
    assert shown_key(plain.concurrency_key, plain.spec) == "terraform:envs:prod"
    # A var from a secret is hidden; the key, made of the dir and workspace alone, is not.
    assert shown_key(var_only.concurrency_key, var_only.spec) == "terraform:envs:default"


def test_a_url_from_a_secret_is_scrubbed_as_the_http_log_line_writes_it() -> None:
    spec = {"url": "https://API.example.com/deploy/tok-secret-1?env=prod#x",
            "hidden_paths": [["url"]]}
    assert scrub("POST https://api.example.com/deploy/tok-secret-1", hidden_values(spec)) \
        == "POST [redacted]"


def test_a_failing_dedup_template_that_reads_a_secret_logs_no_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ruleset = load_rules_text({"r.yaml": RULES})
    logged: list[dict[str, Any]] = []
    monkeypatch.setattr(ingest, "_dedup_failed_log", lambda **fields: logged.append(fields))
    key = ingest._dedup_key(ruleset.hooks["k"], Verified(), _scope())
    assert key is None  # no sender id to fall back on
    assert logged and "tok-secret-1" not in str(logged), logged
