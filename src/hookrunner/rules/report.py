"""Text for `hookrunner check`, `test` and `explain`. Formatting only: nothing here runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from hookrunner.actions.values import stringify
from hookrunner.errors import ConfigErrors, TemplateError
from hookrunner.redact import OWN_CHECKS
from hookrunner.rules.match import RuleResult, concurrency_key, render_action
from hookrunner.rules.model import Ruleset
from hookrunner.units import format_duration

__all__ = ["DryRunReport", "dry_run_report", "format_check", "format_explain", "format_test"]

YES, NO, ERR, SKIPPED = "✓", "✗", "!", "-"


def format_check(result: Ruleset | ConfigErrors) -> str:
    """Errors as `file:line: message` and a count; or warnings and a one-line summary."""
    if isinstance(result, ConfigErrors):
        lines = [str(e) for e in result.errors]
        return "\n".join([*(f"warning: {w}" for w in result.warnings), *lines,
                          f"{len(lines)} error(s)"])
    lines = [f"warning: {w}" for w in result.warnings]
    lines.append(f"ok: {len(result.hooks)} hook(s), {len(result.rules)} rule(s) from "
                 f"{len(result.files)} file(s)")
    return "\n".join(lines)


def _numbers(value: Any) -> Any:
    """YAML's `0755`/`3.10` as the numbers a typed value (json, extravars) holds: the rules'
    WrittenInt/WrittenFloat, which safe_dump cannot write (the stored spec is JSON: plain)."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def _dump(value: Any, indent: str) -> list[str]:
    text = yaml.safe_dump(_numbers(value), sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=100)
    return [indent + line for line in text.rstrip("\n").splitlines()]


def _as_run(kind: str, action: dict[str, Any]) -> dict[str, Any]:
    """A shell action's arguments and environment as the process gets them: each one text
    (`{"a": 1}`, `null`, `["a", "b"]` are JSON), not YAML that reads as several arguments."""
    shown = {k: v for k, v in action.items() if k not in OWN_CHECKS}  # an action's own notes
    if kind != "shell":
        return shown
    if isinstance(shown.get("argv"), list):
        shown["argv"] = [stringify(v) for v in shown["argv"]]
    if isinstance(shown.get("env"), dict):
        shown["env"] = {k: stringify(v) for k, v in shown["env"].items()}
    return shown


def _header(r: RuleResult) -> str:
    mark = YES if r.matched else NO
    return f"{mark} {r.rule.name}  ({r.rule.source})"


UNRENDERABLE = "the action cannot be rendered"
REFUSED = "the server would refuse to run it"
# Why a rendered action would be refused before it starts (actions.base.Runner.refusal).
Refusal = Callable[[str, Mapping[str, Any]], "str | None"]


@dataclass(frozen=True)
class DryRunReport:
    text: str
    unrenderable: int  # matching rules whose action cannot be rendered, or would be refused


def format_test(results: Sequence[RuleResult], scope: Mapping[str, Any]) -> str:
    """Which rules match, and each matching rule's rendered action. Runs nothing."""
    return dry_run_report(results, scope).text


Rendered = tuple[dict[str, Any], "str | None"] | TemplateError  # an action and its key


def render_matched(results: Sequence[RuleResult], scope: Mapping[str, Any]) -> list[Rendered]:
    """Each matching rule's action and concurrency key, or why it cannot be rendered, in the
    order of `results`' matching rules."""
    out: list[Rendered] = []
    for r in results:
        if r.matched:
            try:
                action = render_action(r.rule, scope)
                out.append((action, concurrency_key(r.rule, scope, action)[0]))
            except TemplateError as exc:
                out.append(exc)
    return out


def dry_run_report(results: Sequence[RuleResult], scope: Mapping[str, Any],
                   refusal: Refusal | None = None,
                   default_timeout: float | None = None,
                   rendered: Sequence[Rendered] | None = None) -> DryRunReport:
    """`rendered`: render_matched's, where it was made apart (within the server's budget
    for a delivery's templates, which the refusals' file reads must not spend)."""
    if not results:
        return DryRunReport("no rules for this hook", 0)
    renders = iter(render_matched(results, scope) if rendered is None else rendered)
    matched = [r for r in results if r.matched]
    lines = [f"{len(matched)} of {len(results)} rule(s) match"]
    failed = 0
    for r in results:
        lines.append("")
        lines.append(_header(r))
        if not r.matched:
            lines.append(f"    not matched: {r.error}" if r.error else "    not matched")
            continue
        rule = r.rule
        made = next(renders)
        if isinstance(made, TemplateError):
            lines.append(f"    {ERR} {UNRENDERABLE}: {made}")
            failed += 1
            continue
        action, key = made
        lines.append(f"    run: {rule.action_kind}")
        lines += _dump(_as_run(rule.action_kind, action), "      ")
        refused = refusal(rule.action_kind, action) if refusal is not None else None
        if refused:
            lines.append(f"    {ERR} {REFUSED}: {refused}")
            failed += 1
        if key is not None:
            policy = rule.concurrency.policy if rule.concurrency is not None else "queue"
            lines.append(f"    concurrency: {key!r} ({policy})")
        if rule.action_kind == "ansible":
            lines.append("    (and the extra var `webhook`: the payload, as every ansible run "
                         "gets it)")
        if rule.timeout is not None:
            lines.append(f"    timeout: {format_duration(rule.timeout)}")
        elif default_timeout is not None:
            lines.append(f"    timeout: {format_duration(default_timeout)} (the default)")
        if rule.retry.attempts > 1:
            retry = rule.retry
            lines.append(f"    retry: {retry.attempts} attempts, backoff "
                         f"{format_duration(retry.backoff)} (at most "
                         f"{format_duration(retry.max_backoff)}), on: {', '.join(retry.on)}")
    return DryRunReport("\n".join(lines), failed)


def format_explain(results: Sequence[RuleResult]) -> str:
    """Every rule of the hook, each condition with its result and the value it looked at."""
    if not results:
        return "no rules for this hook"
    lines: list[str] = []
    for r in results:
        if lines:
            lines.append("")
        verdict = "matched" if r.matched else "not matched"
        lines.append(f"{_header(r)}  {verdict}")
        if r.rule.when is None:
            lines.append("    (no when: matches every delivery)")
        # The rule's error is most often one condition's, shown on that condition's line.
        if r.error and all(c.error != r.error for c in r.conditions):
            lines.append(f"    {ERR} {r.error}")
        texts = [(f"[{c.within}] " if c.within else "") + c.source for c in r.conditions]
        width = max(map(len, texts), default=0)
        for c, text in zip(r.conditions, texts, strict=True):
            mark = (ERR if c.error else SKIPPED) if c.result is None else YES if c.result else NO
            detail = f"error: {c.error}" if c.error else c.value
            lines.append(f"    {mark} {text.ljust(width)}  {detail}")
    return "\n".join(lines)
