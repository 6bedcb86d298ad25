"""Pure matching: which rules of a hook match a delivery, and why.

The rule's verdict comes from evaluating its `when` tree as written (Jinja's own short-circuit
inside an expression; for `all`/`any`, the first child that decides it, a child that fails
deciding only where no other does). The explanation
evaluates every top-level and/or operand of every expression on its own, so it can show each
condition's result and the value of its left side even where the verdict did not need it.
An error (an undefined name, a sandbox refusal) makes the rule not match; it never escapes.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jinja2.exceptions import SecurityError

from hookrunner import bounds, hops
from hookrunner.errors import TemplateError
from hookrunner.redact import REDACTED
from hookrunner.rules.model import Rule, Ruleset, When
from hookrunner.templating import (
    Constant,
    Expression,
    Scope,
    Template,
    describe,
    reads_secret,
    render_tree,
    type_mismatch,
)
from hookrunner.verify.base import Headers

# How a missing header reads (verify.base.Headers): it names the header, never a value.
MISSING_HEADER = Headers.missing_message.split("{", 1)[0]

__all__ = [
    "ConditionResult", "RuleResult", "build_scope", "concurrency_key", "evaluate",
    "evaluate_rule", "render_action",
]


def build_scope(
    *,
    hook: str,
    delivery_id: str | None,
    received_at: float | dt.datetime | str | None,
    headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]],
    query: Mapping[str, str] | None,
    payload: Any,
    event: str | None,
    client_ip: str | None = None,
) -> dict[str, Any]:
    """The names visible to `when` and every template (see the contract's table).

    `headers` is case-insensitive (`headers["x-github-event"]`); `received_at` is an ISO-8601
    UTC string (a unix time or datetime is converted). `client_ip`: the sender's address as
    the server judged it (past --trusted-proxy hops), as allow_ips and the store see it; null
    in a dry run not given one.
    """
    if not isinstance(headers, Headers):
        headers = Headers(headers.items() if isinstance(headers, Mapping) else headers)
    if isinstance(received_at, int | float):
        received_at = dt.datetime.fromtimestamp(received_at, dt.UTC)
    if isinstance(received_at, dt.datetime):
        received_at = received_at.isoformat()
    return Scope(
        payload=payload,
        headers=headers,
        query=dict(query or {}),
        event=event,
        hook=hook,
        delivery_id=delivery_id,
        received_at=received_at,
        client_ip=client_ip,
    )


@dataclass(frozen=True)
class ConditionResult:
    """One top-level operand of one `when` expression, evaluated on its own."""

    source: str  # the operand's text, e.g. `payload.ref == "refs/heads/main"`
    result: bool | None  # None where it failed
    value: str = ""  # the left side's value (or the operand's own), JSON-ish: `"refs/heads/dev"`
    error: str | None = None
    within: str = ""  # enclosing when groups, e.g. `any > not`; "" at the top
    keys: frozenset[str] | None = frozenset()  # header/query keys read (templating.request_keys)

    def hidden(self, secret_headers: frozenset[str] = frozenset()) -> bool:
        return reads_secret(self.keys, secret_headers)

    def to_json(self, secret_headers: frozenset[str] = frozenset()) -> dict[str, Any]:
        """As stored with the delivery: a condition that may show a secret keeps its result,
        not its value (nor an error, unless it is only that a header is missing)."""
        value, error = self.value, self.error
        if self.hidden(secret_headers):
            value = REDACTED
            if error is not None and not error.startswith(MISSING_HEADER):
                error = f"{REDACTED} (the condition reads a secret value)"
        return {"source": self.source, "result": self.result, "value": value,
                "error": error, "within": self.within}


NOT_NEEDED = "(not evaluated: a clause before it decided)"


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    matched: bool
    conditions: list[ConditionResult] = field(default_factory=list)
    error: str | None = None  # why the verdict could not be reached (then matched is False)

    def to_json(self, secret_headers: frozenset[str] = frozenset()) -> dict[str, Any]:
        """`secret_headers`: the hook's verifier's own headers, lower-cased (a `token` hook's
        `X-Shared` need not be named like a secret)."""
        conditions = [c.to_json(secret_headers) for c in self.conditions]
        error = self.error
        if error is not None and any(c["value"] == REDACTED for c in conditions):  # hidden ones
            error = f"{REDACTED} (a condition reads a secret value)"
        return {"rule": self.rule.name, "matched": self.matched, "error": error,
                "conditions": conditions}


def evaluate(
    ruleset: Ruleset, hook_id: str, scope: Mapping[str, Any], *, explain: bool = True
) -> list[RuleResult]:
    """Every rule of the hook, in file order, with its verdict (and explanation)."""
    return [evaluate_rule(rule, scope, explain=explain) for rule in ruleset.rules_for(hook_id)]


def evaluate_rule(rule: Rule, scope: Mapping[str, Any], *, explain: bool = True) -> RuleResult:
    if rule.when is None:
        return RuleResult(rule, True)
    if not explain:
        try:
            return RuleResult(rule, _holds(rule.when, scope))
        except TemplateError as exc:
            return RuleResult(rule, False, [], str(exc))
    conditions: list[ConditionResult] = []
    try:
        matched = _judge(rule.when, scope, "", conditions)
    except TemplateError as exc:
        return RuleResult(rule, False, conditions, str(exc))
    return RuleResult(rule, matched, conditions)


def _holds(when: When, scope: Mapping[str, Any]) -> bool:
    if when.kind == "expr":
        assert isinstance(when.expr, Expression)
        return when.expr.test(scope)
    if when.kind == "not":
        return not _holds(when.children[0], scope)
    # all/any: the first child that decides it settles it; one that fails only where none
    # does (`any` of conditions for two event types: each errs on the other's payload).
    stop = when.kind == "any"
    failed: TemplateError | None = None
    for child in when.children:
        try:
            if _holds(child, scope) is stop:
                return stop
        except TemplateError as exc:
            failed = failed or exc
    if failed is not None:
        raise failed
    return not stop


def _judge(when: When, scope: Mapping[str, Any], within: str, out: list[ConditionResult]) -> bool:
    """Explain every condition into `out`; return the verdict `_holds` gives, taken from the
    explanation's results where they decide it (each render costs ~15 us).

    Every child is explained, then the verdict is settled in order: the first child that
    decides it (or fails) settles it, as `all`/`any` short-circuit would."""
    if when.kind == "expr":
        assert isinstance(when.expr, Expression)
        first = len(out)
        for clause in when.expr.clauses():
            try:
                result, value = clause.evaluate(scope)
                mismatch = type_mismatch(clause, value)
                shown = describe(value) if mismatch is None else f"{describe(value)} {mismatch}"
                out.append(ConditionResult(clause.source, result, shown, None, within,
                                           clause.keys))
            except TemplateError as exc:
                out.append(ConditionResult(clause.source, None, "", str(exc), within,
                                           clause.keys))
        verdict, skipped = when.expr.short_circuit([c.result for c in out[first:]])
        _not_needed(out, (first + i for i in skipped))
        return when.expr.test(scope) if verdict is None else verdict
    inner = f"{within} > {when.kind}" if within else when.kind
    # a top-level list is an implicit `all`: not worth a label
    inner = within if when.kind == "all" and not within else inner
    outcomes: list[bool | TemplateError] = []
    ends: list[int] = []  # where each child's conditions end in `out`
    for child in when.children:
        try:
            outcomes.append(_judge(child, scope, inner, out))
        except TemplateError as exc:
            outcomes.append(exc)
        ends.append(len(out))
    if when.kind == "not":
        return not _settle(outcomes[0])
    stop = when.kind == "any"  # any: the first true settles it; all: the first false
    failed: TemplateError | None = None
    for outcome, end in zip(outcomes, ends, strict=True):
        if isinstance(outcome, TemplateError):  # counts only where no other child decides
            failed = failed or outcome
        elif outcome is stop:
            _not_needed(out, range(end, len(out)))
            return stop
    if failed is not None:
        raise failed
    return not stop


def _not_needed(out: list[ConditionResult], indices: Iterable[int]) -> None:
    """A condition among `indices` that failed did so only where the verdict never evaluates
    it (past what settled an and/or, an `all` or an `any`): the README's own guard
    `payload.pr is defined and payload.pr.merged` showed as an error."""
    for i in indices:
        if out[i].error is not None:
            out[i] = replace(out[i], result=None, error=None, value=NOT_NEEDED)


def _settle(outcome: bool | TemplateError) -> bool:
    if isinstance(outcome, TemplateError):
        raise outcome
    return outcome


def render_action(rule: Rule, scope: Mapping[str, Any]) -> dict[str, Any]:
    """The rule's `run.<kind>` spec rendered for this delivery; raises TemplateError."""
    rendered = render_tree(rule.action, scope)
    assert isinstance(rendered, dict)
    try:
        bounds.check_spec(rendered)  # (stored whole: 100 MB made SQLite refuse the delivery)
    except SecurityError as exc:
        raise TemplateError(f"refused by the sandbox: {exc}") from None
    from hookrunner.actions import RUNNERS  # imports (registers) every runner; not at the top

    for key, base in getattr(RUNNERS[rule.action_kind], "templated_paths", ()):
        value = rendered.get(key)
        if value and not isinstance(rule.action.get(key), Constant) \
                and not within(str(value), base):
            raise TemplateError(f"{key}: a templated {key} must name a path under {base}/ "
                                "(relative, without ..), whatever the payload says")
    for key, base in getattr(RUNNERS[rule.action_kind], "written_paths", ()):
        _stays_written(key, base, rule.action.get(key), rendered.get(key))
    if rule.action_kind == "http":  # a loop's guard: see hookrunner.hops
        rendered[hops.KEY] = hops.of(scope["headers"]) + 1
    return rendered


def _stays_written(key: str, base: str, template: Any, value: Any) -> None:
    """A templated path (each item of a list of them) must stay in the directory its
    template writes before the `{{` (under `base`), as a templated shell program must:
    `deploy-{{ payload.env }}.yml` of `x/../group_vars/all` named a vars file, which Ansible
    printed back. Raises TemplateError."""
    from hookrunner.actions.paths import stays_written, written_dir
    from hookrunner.actions.values import stringify

    pairs = zip(template, value, strict=False) if isinstance(template, list) and \
        isinstance(value, list) else [(template, value)]
    for item, text in pairs:
        # (A `{% if %}` alone only chooses between paths the rule writes out.)
        if isinstance(item, Template) and "{{" in item.source and text is not None and \
                not stays_written(stringify(text), item.source):
            where = posixpath.join(base, written_dir(item.source)).rstrip("/")
            raise TemplateError(f"{key}: a templated {key} must stay in the directory the rule "
                                f"writes before its {{{{ ({f'{where}/' if where else '--root'}), "
                                "with no `..` or leading `/` in the value, whatever the "
                                "payload says")


def within(path: str, base: str) -> bool:
    """Whether `path`, as text, names something under the relative directory `base`, with
    no `..` on the way (even one that stays inside: the rule says where, not the payload)."""
    normal = posixpath.normpath(path)
    return (".." not in path.split("/") and not normal.startswith("/")
            and normal.startswith(base.rstrip("/") + "/"))


def _not_implicit(key: str, source: str) -> None:
    """A rendered key may spell an action's implicit key (`terraform:<dir>:<workspace>`)
    only where the rule writes that start itself: else a payload value chose it, and its
    rule's policy reached another rule's applies (a `replace` canceled them)."""
    from hookrunner.actions import RUNNERS

    for runner in RUNNERS.values():
        prefix = getattr(runner, "implicit_key_prefix", None)
        if prefix and key.startswith(prefix) and not source.startswith(prefix):
            raise TemplateError(
                f"concurrency key {source!r} rendered {key[:80]!r}, which is the "
                f"form of {prefix.rstrip(':')}'s implicit keys (`{prefix}<dir>:<workspace>`): "
                f"only a key the rule writes with `{prefix}` at its start may name one")


def concurrency_key(rule: Rule, scope: Mapping[str, Any],
                    spec: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The key a run of `rule` is held under, for this delivery and its rendered `spec`, and
    whether the action made it from the spec. With `concurrency`: its `key`, rendered, or
    the rule's name. Without: the action's implicit key (terraform's dir + workspace), with
    policy `queue`, or None. (A policy on an implicit key would reach other rules' runs of
    that dir: a `replace` there canceled their applies.) Raises TemplateError."""
    if rule.concurrency is not None:
        given = rule.concurrency.key
        if given is None:
            return rule.name, False
        value = given.render(scope)
        if value is None or (isinstance(value, str) and not value.strip()):
            # (Spaces alone too, as a key written so is refused: a sender's blank field.)
            what = "null (a missing or null value)" if value is None else "empty"
            raise TemplateError(f"concurrency key {given.source!r} rendered {what}")
        # JSON, as in argv, not Python (`True`); an object's keys sorted, so one object
        # is one key whatever order a sender writes it in (as a dedup key is).
        key = (value if isinstance(value, str) else
               json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
        _not_implicit(key, given.source)
        return key, False
    from hookrunner.actions import RUNNERS  # imports (registers) every runner; not at the top

    implicit = RUNNERS[rule.action_kind].implicit_concurrency_key(spec)
    return implicit, implicit is not None
