"""Rules: the model, loading from YAML with line numbers, matching with explanations."""

from __future__ import annotations

from hookrunner.rules.load import load_rules, load_rules_text
from hookrunner.rules.match import (
    ConditionResult,
    RuleResult,
    build_scope,
    concurrency_key,
    evaluate,
    evaluate_rule,
    render_action,
)
from hookrunner.rules.model import Hook, Rule, Ruleset
from hookrunner.rules.report import format_check, format_explain, format_test

__all__ = [
    "ConditionResult", "Hook", "Rule", "RuleResult", "Ruleset", "build_scope", "concurrency_key",
    "evaluate",
    "evaluate_rule", "format_check", "format_explain", "format_test", "load_rules",
    "load_rules_text", "render_action",
]
