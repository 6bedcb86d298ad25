"""The verdict taken from the explanation's clause results equals the whole expression's
(short-circuit included), for and/or chains, nested all/any/not, and failing operands."""

from __future__ import annotations

import textwrap
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hookrunner.errors import TemplateError
from hookrunner.rules import build_scope, load_rules_text
from hookrunner.rules.match import _holds, evaluate_rule

# Operands: true, false, or failing (undefined name, a comparison of undefined), and ones
# whose truth depends on an earlier guard.
OPERANDS = [
    'payload.a == 1', 'payload.a == 2', 'payload.missing == 1', 'payload.b is defined',
    'payload.b.c == 3', 'payload.n is match("x.*")', 'not payload.a == 1', 'payload.s',
    'payload.empty', '"y" in payload.s',
]
PAYLOADS = [
    {"a": 1, "b": {"c": 3}, "n": "xyz", "s": "yep", "empty": ""},
    {"a": 2, "n": "abc", "s": "", "empty": []},
    {"a": 1, "b": None, "n": 5, "s": "y"},
    {"a": 2, "b": {"c": 3}, "n": "x", "s": "no", "empty": "0"},  # yes/no text: an error
]


def rule_with(when: str) -> Any:
    text = ("hooks:\n  gh:\n    verify: {none: {}}\n"
            f"rules:\n  - name: r\n    hook: gh\n{textwrap.indent(when, '    ')}"
            "    run: {shell: {argv: [x]}}\n")
    return load_rules_text({"r.yaml": text}).rules[0]


def outcome(rule: Any, payload: dict[str, Any]) -> tuple[bool, bool]:
    """(matched, failed) as the explanation-reusing path decides it."""
    result = evaluate_rule(rule, scope(payload))
    return result.matched, result.error is not None


def reference(rule: Any, payload: dict[str, Any]) -> tuple[bool, bool]:
    """(matched, failed) from the whole expressions alone (the definition)."""
    try:
        return _holds(rule.when, scope(payload)), False
    except TemplateError:
        return False, True


def scope(payload: dict[str, Any]) -> dict[str, Any]:
    return build_scope(hook="gh", delivery_id="d", received_at=0.0, headers=[], query={},
                       payload=payload, event="push")


chain = st.lists(st.sampled_from(OPERANDS), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(chain, st.sampled_from([" and ", " or "]), st.sampled_from(PAYLOADS))
def test_and_or_chains(operands: list[str], joiner: str, payload: dict[str, Any]) -> None:
    rule = rule_with(f"when: '{joiner.join(operands)}'\n")
    assert outcome(rule, payload) == reference(rule, payload)


@settings(max_examples=100, deadline=None)
@given(st.lists(chain, min_size=1, max_size=3), st.sampled_from(["all", "any", "not"]),
       st.sampled_from(PAYLOADS))
def test_nested_groups(groups: list[list[str]], kind: str, payload: dict[str, Any]) -> None:
    children = groups[:1] if kind == "not" else groups
    items = "".join(f"    - '{' and '.join(g)}'\n" for g in children)
    body = f"    {kind}:\n" + textwrap.indent(items, "  ") if kind != "not" else (
        f"    not: '{' or '.join(children[0])}'\n")
    rule = rule_with("when:\n" + body.replace("    ", "  ", 1))
    assert outcome(rule, payload) == reference(rule, payload)


def test_mixed_and_or_uses_the_whole_expression() -> None:
    rule = rule_with("when: 'payload.a == 2 or payload.a == 1 and payload.s'\n")
    assert outcome(rule, PAYLOADS[0]) == (True, False)
    assert outcome(rule, PAYLOADS[1]) == (True, False)
