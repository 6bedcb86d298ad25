"""Matching: verdicts over when forms, explanations, errors that never escape, rendering."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from hookrunner.errors import TemplateError
from hookrunner.rules import (
    build_scope,
    concurrency_key,
    evaluate,
    format_check,
    format_explain,
    format_test,
    load_rules_text,
    render_action,
)
from hookrunner.rules.match import NOT_NEEDED
from hookrunner.rules.model import Ruleset

PAYLOAD = {"ref": "refs/heads/dev", "repository": {"full_name": "acme/api"}, "replicas": 4,
           "ip": "10.0.0.7", "evil": "{{ 7*7 }}"}


def scope(payload: Any = None, event: str | None = "push") -> dict[str, Any]:
    return build_scope(hook="gh", delivery_id="dlv_1", received_at=0.0,
                       headers=[("X-GitHub-Event", "push")], query={"q": "1"},
                       payload=PAYLOAD if payload is None else payload, event=event)


def ruleset_with(when: str, run: str = "{shell: {argv: [x]}}", extra: str = "") -> Ruleset:
    text = (
        "hooks:\n  gh:\n    verify: {none: {}}\n  other:\n    verify: {none: {}}\n"
        f"rules:\n  - name: r\n    hook: gh\n{textwrap.indent(when, '    ')}"
        f"    run: {run}\n{extra}"
        "  - {name: elsewhere, hook: other, run: {shell: {argv: [x]}}}\n"
    )
    return load_rules_text({"r.yaml": text})


WHEN_CASES = [
    ("", True),  # no when: every delivery
    ('when: event == "push"\n', True),
    ('when: payload.ref == "refs/heads/main"\n', False),
    ('when: headers["x-github-event"] == "push" and query.q == "1"\n', True),
    ('when: hook == "gh" and delivery_id == "dlv_1"\n', True),
    ('when: received_at is match("1970-01-01T00:00:00")\n', True),
    ('when: payload.ref is glob("refs/heads/*")\n', True),
    ('when: payload.ip is in_cidr("10.0.0.0/24")\n', True),
    ('when:\n  - event == "push"\n  - payload.replicas > 3\n', True),  # a list: all
    ('when:\n  - event == "push"\n  - payload.replicas > 9\n', False),
    ('when:\n  any:\n    - payload.replicas > 9\n    - event == "push"\n', True),
    ('when:\n  any:\n    - payload.replicas > 9\n    - event == "tag"\n', False),
    ('when:\n  not: event == "tag"\n', True),
    ('when:\n  not:\n    all: [event == "push", payload.replicas == 4]\n', False),
    ('when:\n  all:\n    - any: [event == "tag", payload.replicas == 4]\n'
     '    - not: {any: [payload.ref == "x", payload.ref == "y"]}\n', True),
    ('when:\n  any:\n    - event == "push"\n    - payload.nothing == 1\n', True),  # short-circuit
    ('when: payload.evil == "{{ 7*7 }}"\n', True),  # payload values are never templates
]


@pytest.mark.parametrize(("when", "matched"), WHEN_CASES)
def test_when_forms(when: str, matched: bool) -> None:
    """Strings, lists (all), and nested all/any/not mappings decide the verdict."""
    [result] = evaluate(ruleset_with(when), "gh", scope())
    assert (result.matched, result.error) == (matched, None)


@pytest.mark.parametrize(
    "when",
    [
        "when: payload.nothing == 1\n",
        "when: query.nothing\n",
        'when:\n  all:\n    - event == "push"\n    - payload.nothing\n',
        "when: payload.ref.upper.x\n",
    ],
)
def test_condition_errors_mean_no_match_and_are_recorded(when: str) -> None:
    """An undefined name in a condition fails that rule for this delivery, never the request."""
    [result] = evaluate(ruleset_with(when), "gh", scope())
    assert result.matched is False
    assert result.error is not None and ("undefined" in result.error
                                         or "no attribute" in result.error)


@pytest.mark.parametrize("when", [
    'when: not payload.source_ip is in_cidr("10.0.0.0/8")\n',
    'when:\n  not: payload.sourec_ip is in_cidr("10.0.0.0/8")\n',  # a misspelt field
    'when: not payload.ip.octets is in_cidr("10.0.0.0/8")\n',  # a step past a text
])
@pytest.mark.parametrize("explain", [True, False])
def test_a_deny_rule_of_in_cidr_does_not_match_a_delivery_without_the_field(
        when: str, explain: bool) -> None:
    """`in_cidr` of a missing value is an error of the condition, as the README says: it was
    silently false, so `not ... is in_cidr(...)` matched (ran) every delivery without it."""
    [result] = evaluate(ruleset_with(when), "gh", scope(), explain=explain)
    assert result.matched is False
    assert result.error is not None and "has no attribute" in result.error, result.error
    # With the field, it decides as written.
    [inside] = evaluate(ruleset_with(when.replace("sourec_ip", "ip").replace("source_ip", "ip")
                                     .replace(".octets", "")), "gh", scope(), explain=explain)
    assert (inside.matched, inside.error) == (False, None)


def test_explain_reports_each_clause_and_left_value() -> None:
    """Each top-level operand has its own result and the value of its left side."""
    rs = ruleset_with('when: event == "push" and payload.ref == "refs/heads/main" and '
                      "payload.missing is defined\n")
    [result] = evaluate(rs, "gh", scope())
    got = [(c.source, c.result, c.value, c.error) for c in result.conditions]
    assert got == [
        ('event == "push"', True, '"push"', None),
        ('payload.ref == "refs/heads/main"', False, '"refs/heads/dev"', None),
        ("payload.missing is defined", False, "undefined", None),
    ]
    assert result.to_json()["conditions"][1] == {
        "source": 'payload.ref == "refs/heads/main"', "result": False,
        "value": '"refs/heads/dev"', "error": None, "within": "",
    }


def test_explain_labels_groups_and_records_clause_errors() -> None:
    """Conditions inside any/not say so; a clause that fails shows its error."""
    rs = ruleset_with('when:\n  any:\n    - event == "tag"\n    - not: payload.nothing == 1\n')
    [result] = evaluate(rs, "gh", scope())
    assert result.matched is False and result.error is not None
    first, second = result.conditions
    assert (first.within, first.result) == ("any", False)
    assert (second.within, second.result) == ("any > not", None)
    assert second.error is not None and "nothing" in second.error


@pytest.mark.parametrize("when", [
    "when: payload.pull_request is defined and payload.pull_request.merged\n",
    "when:\n  - payload.pull_request is defined\n  - payload.pull_request.merged\n",
    'when:\n  any:\n    - event == "push"\n    - not: payload.nothing == 1\n',
    'when: event == "push" or payload.nothing.deeper\n',
    # Mixed: `and` binds closer than `or`.
    'when: payload.pr is defined and payload.pr.merged or event == "push"\n',
    'when: event == "push" or payload.nope.x and payload.zero\n',
    'when: event == "tag" and payload.nope.x or event == "push" or payload.nope.y\n',
])
def test_a_clause_the_verdict_never_evaluates_is_not_shown_as_an_error(when: str) -> None:
    """The README's own guard showed its second clause as an error on every push."""
    [result] = evaluate(ruleset_with(when), "gh", scope(), explain=True)
    assert result.error is None and result.matched == ("push" in when), result
    assert not [c for c in result.conditions if c.error], result.conditions
    skipped = [c for c in result.conditions if c.value == NOT_NEEDED]
    assert skipped and all(c.result is None for c in skipped), result.conditions
    assert any(x.lstrip().startswith("- ") for x in format_explain([result]).splitlines())


@pytest.mark.parametrize(("when", "matched", "failed"), [
    # One rule for two events: each alternative errs on the other's payload. The one that
    # errs came first and vetoed the one that held.
    ('when:\n  any:\n    - payload.pull_request.merged == true\n    - event == "push"\n',
     True, False),
    ('when:\n  any:\n    - payload.nothing == 1\n    - not: payload.nothing == 2\n    - '
     'payload.replicas == 4\n', True, False),
    # None holds: the error is the verdict, as before (a typo must show).
    ('when:\n  any:\n    - payload.nothing == 1\n    - event == "tag"\n', False, True),
    # all: a child that is false decides, wherever the one that errs is.
    ('when:\n  all:\n    - payload.nothing == 1\n    - event == "tag"\n', False, False),
    ('when:\n  all:\n    - payload.nothing == 1\n    - event == "push"\n', False, True),
])
def test_a_failing_child_of_all_or_any_counts_only_where_no_other_decides(
        when: str, matched: bool, failed: bool) -> None:
    for explain in (True, False):
        [result] = evaluate(ruleset_with(when), "gh", scope(), explain=explain)
        assert (result.matched, result.error is not None) == (matched, failed), (explain, result)
    [result] = evaluate(ruleset_with(when), "gh", scope())
    if matched:  # the failing alternative is still shown, with its error
        assert any(c.error and ("nothing" in c.error or "pull_request" in c.error)
                   for c in result.conditions), result.conditions


@pytest.mark.parametrize(("when", "payload", "value"), [
    # `payload.merged == "true"` on a JSON true: a silent no-match, now said.
    ('when: payload.merged == "true"\n', {"merged": True},
     'true (a boolean, compared with a string: never equal)'),
    ('when: payload.count != "3"\n', {"count": 3}, '3 (a number, compared with a string: never equal)'),
    ('when: payload.on == 2\n', {"on": True}, 'true'),  # true == 1 holds: no "never"
    ('when: payload.on == "yes"\n', {"on": True}, 'true (a boolean, compared with a string: never equal)'),
    ('when: payload.count == 3.0\n', {"count": 3}, '3'),  # numbers are numbers
    ('when: payload.on == 1\n', {"on": True}, 'true'),  # Python's true == 1 holds: no note
    ('when: payload.name == "x"\n', {"name": "y"}, '"y"'),
    ('when: payload.name == none\n', {"name": None}, 'null'),
    ('when: payload.name is defined and payload.name == "x"\n', {}, NOT_NEEDED),
])
def test_an_explanation_says_when_a_comparison_can_never_hold(
        when: str, payload: dict[str, Any], value: str) -> None:
    [result] = evaluate(ruleset_with(when), "gh", scope(payload))
    assert result.conditions[-1].value == value, result.conditions


def test_a_literal_in_a_field_shows_the_field() -> None:
    """`"[deploy]" in payload.message` showed "[deploy]": the message is what the author
    needs to see."""
    rs = ruleset_with('when: \'"[deploy]" in payload.msg or "dba" not in payload.teams\'\n')
    [result] = evaluate(rs, "gh", scope({"msg": "fix things", "teams": ["dba"]}))
    assert [c.value for c in result.conditions] == ['"fix things"', '["dba"]']


def test_a_mapped_field_is_shown_as_the_list_that_was_tested() -> None:
    """`"dba" in payload.alerts | map(...)` showed `[]`: the `in` had used up the map's
    items before the explanation showed them. The verdicts were right, and stay so."""
    rs = ruleset_with("when: '\"dba\" in payload.alerts | map(attribute=\"team\", default=\"\")'\n")
    for teams, matched in ((["web", None, "dba"], True), (["web"], False)):
        alerts = [{"team": t} if t else {} for t in teams]
        [result] = evaluate(rs, "gh", scope({"alerts": alerts}))
        shown = '["web", "", "dba"]' if matched else '["web"]'
        assert (result.matched, result.conditions[0].value) == (matched, shown), result
    # A map is a list (as Ansible makes it): compared with a list, clause by clause as for
    # the whole `when`.
    for when in ("payload.teams | map(attribute='name') == ['dba']",
                 "payload.teams | map(attribute='name') is sequence"):
        rs = ruleset_with(f'when: "{when}"\n')
        [result] = evaluate(rs, "gh", scope({"teams": [{"name": "dba"}]}))
        assert result.matched, (when, result)


def test_a_comparison_reading_a_secret_header_shows_no_kind() -> None:
    rs = load_rules_text({"r.yaml": "hooks:\n  gh:\n    verify: {token: {secret: s, header: X-Key}}\n"
                          "rules:\n  - {name: r, hook: gh, when: 'headers[\"X-Key\"] == \"no\"', "
                          "run: {shell: {argv: [x]}}}\n"})
    [result] = evaluate(rs, "gh", build_scope(hook="gh", delivery_id="d", received_at=0.0,
                                              headers=[("X-Key", "s")], query={}, payload={},
                                              event=None))
    assert result.to_json(frozenset({"x-key"}))["conditions"][0]["value"] == "[redacted]"


def test_evaluate_without_explanations() -> None:
    """explain=False gives verdicts only."""
    [result] = evaluate(ruleset_with('when: event == "push"\n'), "gh", scope(), explain=False)
    assert result.matched and result.conditions == []


def test_render_action_keeps_native_values_and_payload_literal() -> None:
    """Rendered specs are plain data; `{{ payload.x }}` keeps its type; payloads stay data."""
    rs = ruleset_with("", run='{shell: {argv: [deploy, "{{ payload.replicas }}", '
                      '"r={{ payload.replicas }}", "{{ payload.evil }}"], '
                      'env: {REPO: "{{ payload.repository.full_name }}"}}}',
                      extra='    concurrency: {key: "deploy-{{ payload.repository.full_name }}"}\n')
    rule = rs.rules[0]
    assert render_action(rule, scope()) == {
        "argv": ["deploy", 4, "r=4", "{{ 7*7 }}"], "env": {"REPO": "acme/api"},
    }
    assert concurrency_key(rule, scope(), render_action(rule, scope())) == ("deploy-acme/api", False)


@pytest.mark.parametrize(("inventory", "env", "ok"), [
    ("inventories/{{ payload.env }}.ini", "prod", True),
    ("inventories/{{ payload.env }}", "prod/hosts.yml", True),
    ("inventories/{{ payload.env }}.ini", "../secrets/gh", False),
    ("inventories/{{ payload.env }}", "../../etc/passwd", False),
    ("inventories/{{ payload.env }}", "", False),  # the directory itself: every script in it
    ("{{ payload.env }}", "/srv/root/inventories/x.ini", False),  # absolute: not as written
    ("inv/hosts.ini", "../anything", True),  # literal: the operator's own choice
    ("inventories/sub/{{ payload.env }}", "../x.ini", False),  # stays inside, but not as written
])
def test_a_templated_inventory_stays_under_inventories(inventory: str, env: str, ok: bool) -> None:
    rule = ruleset_with("", run=f'{{ansible: {{playbook: p.yml, inventory: "{inventory}"}}}}').rules[0]
    payload = {**PAYLOAD, "env": env}
    if ok:
        assert render_action(rule, scope(payload))["inventory"]
    else:
        with pytest.raises(TemplateError, match="a templated inventory must name a path under "
                           "inventories/"):
            render_action(rule, scope(payload))


@pytest.mark.parametrize(("playbook", "env", "ok"), [
    ("deploy-{{ payload.env }}.yml", "prod", True),
    ("deploy-{{ payload.env }}.yml", "x/../group_vars/all", False),  # a vars file, printed
    ("deploy-{{ payload.env }}.yml", "x/../which", False),  # another playbook: no `deploy-`
    ("app/{{ payload.env }}", "x/..", False),  # `..` even where it stays inside
    ("app/{{ payload.env }}.yml", "prod", True),
    ("app/{{ payload.env }}.yml", "eu/prod", True),  # below the written directory
    ("app/{{ payload.env }}.yml", "../site", False),
    ("app/{{ payload.env }}", "", False),  # the directory itself
    ("{{ payload.env }}", "/srv/root/playbooks/x.yml", False),  # absolute: not as written
    ("{% if payload.env %}a.yml{% else %}b.yml{% endif %}", "x", True),  # the rule's own
    ("../outside/x.yml", "", True),  # literal: the operator's choice (refused at run time)
])
def test_a_templated_playbook_stays_in_the_directory_the_rule_writes(
        playbook: str, env: str, ok: bool) -> None:
    """`deploy-{{ payload.env }}.yml` of `x/../group_vars/all` named a vars file, which
    Ansible printed back line by line, and of `x/../which` a playbook without the prefix."""
    rule = ruleset_with("", run=f'{{ansible: {{playbook: "{playbook}"}}}}').rules[0]
    payload = {**PAYLOAD, "env": env}
    if ok:
        assert render_action(rule, scope(payload))["playbook"]
    else:
        with pytest.raises(TemplateError, match=r"a templated playbook must stay in the "
                           r"directory the rule writes before its \{\{ \(playbooks/"):
            render_action(rule, scope(payload))


@pytest.mark.parametrize(("key", "value", "env", "ok"), [
    ("dir", "tf/envs/{{ payload.env }}", "staging", True),
    ("dir", "tf/envs/{{ payload.env }}", "../basic", False),  # applied tf/basic
    ("dir", "tf/envs/{{ payload.env }}", "", False),  # the directory itself
    ("dir", "{{ payload.env }}", "tf/x", True),
    ("dir", "{{ payload.env }}", "/etc", False),
    ("var_files", "[common.tfvars, 'tf/vars/{{ payload.env }}.tfvars']", "prod", True),
    ("var_files", "[common.tfvars, 'tf/vars/{{ payload.env }}.tfvars']", "../../x/y", False),
    ("var_files", "'tf/vars/{{ payload.env }}.tfvars'", "a/../b", False),  # one string
])
def test_a_templated_terraform_path_stays_in_the_directory_the_rule_writes(
        key: str, value: str, env: str, ok: bool) -> None:
    """`dir: tf/envs/{{ payload.env }}` of `../basic` applied tf/basic."""
    given = f'dir: "{value}"' if key == "dir" else f"dir: tf/app, {key}: {value}"
    run = f"{{terraform: {{command: apply, {given}}}}}"
    rule = ruleset_with("", run=run).rules[0]
    payload = {**PAYLOAD, "env": env}
    if ok:
        assert render_action(rule, scope(payload))[key]
    else:
        with pytest.raises(TemplateError, match=f"a templated {key} must stay in the directory"):
            render_action(rule, scope(payload))


def test_an_ansible_limit_written_as_a_list_loads_and_renders_as_one() -> None:
    """`limit: [web1, web2]` was a load error (`must be a string, got a list`)."""
    run = '{ansible: {playbook: p.yml, limit: [web1, "web-{{ payload.replicas }}"]}}'
    assert render_action(ruleset_with("", run=run).rules[0], scope())["limit"] == ["web1", "web-4"]


def test_render_errors_are_template_errors() -> None:
    """An undefined name while rendering an action raises TemplateError for that run."""
    rs = ruleset_with("", run='{shell: {argv: ["{{ payload.nothing }}"]}}',
                      extra='    concurrency: {key: "{{ payload.nope }}"}\n')
    with pytest.raises(TemplateError, match="nothing"):
        render_action(rs.rules[0], scope())
    with pytest.raises(TemplateError, match="nope"):
        concurrency_key(rs.rules[0], scope(), {})


@pytest.mark.parametrize(("value", "key"), [
    (True, "true"), ({"b": 1, "a": [True, None]}, '{"a": [true, null], "b": 1}'),
    ([1, "a", None], '[1, "a", null]'), (7, "7"), ("x", "x")])
def test_a_key_from_a_value_that_is_not_text_is_its_json(value: Any, key: str) -> None:
    """As the same value is written in argv (`True` and `{'b': 1, ...}` were stored)."""
    rule = ruleset_with("", extra='    concurrency: {key: "{{ payload.v }}"}\n').rules[0]
    assert concurrency_key(rule, scope({"v": value}), {}) == (key, False)


def test_a_key_from_a_null_value_says_null() -> None:
    rule = ruleset_with("", extra='    concurrency: {key: "{{ payload.v }}"}\n').rules[0]
    with pytest.raises(TemplateError, match="rendered null"):
        concurrency_key(rule, scope({"v": None}), {})


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_a_key_from_a_blank_value_says_empty(blank: str) -> None:
    """Spaces alone were a key of their own, where a key written so is a `check` error."""
    rule = ruleset_with("", extra='    concurrency: {key: "{{ payload.v }}"}\n').rules[0]
    with pytest.raises(TemplateError, match="rendered empty"):
        concurrency_key(rule, scope({"v": blank}), {})


def test_no_concurrency_means_no_key() -> None:
    """A rule without concurrency has no key of its own."""
    rule = ruleset_with("").rules[0]
    assert concurrency_key(rule, scope(), render_action(rule, scope())) == (None, False)


def test_a_policy_without_a_key_holds_the_rules_name_and_only_a_rule_without_one_the_implicit_key(
) -> None:
    """`concurrency: {policy: ...}` alone keys on the rule's name, for terraform too: on its
    implicit dir + workspace key the policy would reach other rules' runs of that dir (a
    `replace` canceled their applies). A terraform rule without `concurrency` queues on it."""
    rule = ruleset_with("", extra="    concurrency: {policy: skip}\n").rules[0]
    assert concurrency_key(rule, scope(), render_action(rule, scope())) == ("r", False)
    tf = ruleset_with("", run='{terraform: {dir: tf/x, command: apply, workspace: '
                      '"{{ payload.replicas }}"}}',
                      extra="    concurrency: {policy: coalesce}\n").rules[0]
    assert concurrency_key(tf, scope(), render_action(tf, scope())) == ("r", False)
    bare = ruleset_with("", run="{terraform: {dir: tf/x, command: apply, workspace: "
                        '"{{ payload.replicas }}"}}').rules[0]
    assert concurrency_key(bare, scope(), render_action(bare, scope())) == \
        ("terraform:tf/x:4", True)
    own = ruleset_with("", run="{terraform: {dir: tf/x, command: apply}}",
                       extra="    concurrency: {key: mine}\n").rules[0]
    assert concurrency_key(own, scope(), render_action(own, scope())) == ("mine", False)


def test_a_payload_cannot_render_a_key_that_is_terraforms_implicit_one() -> None:
    """probe: `key: "{{ payload.repo }}"` with repo `terraform:tf/slow:default` put a
    `replace` rule's run on the key of another rule's applies, and canceled one mid-apply.
    A key the rule writes as `terraform:...` itself may still name one (the author's call)."""
    rule = ruleset_with("", extra='    concurrency: {key: "{{ payload.v }}", policy: replace}\n'
                        ).rules[0]
    with pytest.raises(TemplateError, match="form of terraform's implicit keys"):
        concurrency_key(rule, scope({"v": "terraform:tf/slow:default"}), {})
    assert concurrency_key(rule, scope({"v": "tf/slow"}), {}) == ("tf/slow", False)
    own = ruleset_with("", extra='    concurrency: {key: "terraform:tf/{{ payload.v }}:default"}\n'
                       ).rules[0]
    assert concurrency_key(own, scope({"v": "slow"}), {}) == ("terraform:tf/slow:default", False)


def test_headers_in_scope_are_case_insensitive() -> None:
    """`headers["X-GitHub-Event"]` works whatever case the request used."""
    s = build_scope(hook="gh", delivery_id=None, received_at=None,
                    headers={"x-github-event": "ping"}, query=None, payload={}, event=None)
    [result] = evaluate(ruleset_with('when: headers["X-GitHub-Event"] == "ping"\n'), "gh", s)
    assert result.matched


def test_report_texts() -> None:
    """check, test and explain print what an operator needs."""
    rs = ruleset_with('when: event == "push" and payload.replicas > 3\n',
                      run='{shell: {argv: [deploy, "{{ payload.ref }}"]}}')
    assert format_check(rs).endswith("ok: 2 hook(s), 2 rule(s) from 1 file(s)")
    results = evaluate(rs, "gh", scope())
    text = format_test(results, scope())
    assert "1 of 1 rule(s) match" in text and "✓ r  (r.yaml:7)" in text
    assert "- refs/heads/dev" in text
    explained = format_explain(results)
    assert '✓ event == "push"' in explained and "4" in explained
    failing = evaluate(ruleset_with('when: payload.ref == "main"\n'), "gh", scope())
    assert '✗ payload.ref == "main"  "refs/heads/dev"' in format_explain(failing)
    # A condition's error is shown once, on its line, not again as the rule's.
    erring = format_explain(evaluate(ruleset_with('when: payload.nope == "x"\n'), "gh", scope()))
    assert erring.count("has no attribute 'nope'") == 1, erring
