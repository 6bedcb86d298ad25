"""Clauses decided without rendering (hookrunner.fastclause) agree with their render:
same truth, same left value, and where the render fails the fast path stands aside. So do
templates that are a single path (`{{ payload.ref }}`): same value, or the render's error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookrunner.bounds import MAX_TEXT
from hookrunner.errors import TemplateError
from hookrunner.rules import build_scope
from hookrunner.templating import ENV, Clause, Template, _parse_expression

KEYS = ["ref", "a", "n", "action", "x-y", "_id", "items"]  # items: a dict method too
scalars = (st.none() | st.booleans() | st.integers(-3, 3) | st.integers()
           | st.floats(allow_nan=True, allow_infinity=True)  # json.loads takes NaN, Infinity
           | st.sampled_from(["", "push", "refs/tags/v1", "main", "10.0.0.7", "a*b", "é", -0.0]))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=12)
payloads = st.dictionaries(st.sampled_from(KEYS), json_values, min_size=1, max_size=6)


def _step(key: str) -> str:
    return f".{key}" if key.replace("_", "").isalnum() else f"[{json.dumps(key)}]"


literals = st.sampled_from(['"push"', '"main"', '""', "1", "0", "1.5", "2.5e-1", "1e400", "-1",
                            "true", "false", "none", "True", "None", '["push", "main"]',
                            "[1, 2]", "[1e400]", '("a", 1)', "()", '"refs"', '"é"', "10**30"])
OPS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
TESTS = ["match", "search", "glob", "in_cidr"]
ARGS = ["refs/tags/v.*", "ma", "a*", "10.0.0.0/8", "x["]


def _path_into(draw: st.DrawFn, payload: dict[str, Any], fewest: int = 1) -> str:
    """A path from a name of the scope (mostly `payload`) that mostly exists in `payload`."""
    name = draw(st.sampled_from(["payload"] * 6 + ["event", "headers", "hook", "nothing"]))
    node: Any = payload if name == "payload" else None
    keys: list[str] = []
    for _ in range(draw(st.integers(fewest, 4))):
        if isinstance(node, dict) and node and draw(st.integers(0, 4)):
            key = draw(st.sampled_from(sorted(node)))
        else:
            key = draw(st.sampled_from(KEYS))
        node = node.get(key) if isinstance(node, dict) else None
        keys.append(key)
        if not isinstance(node, dict) and draw(st.integers(0, 3)):
            break  # mostly stop on a scalar: a path on into one decides nothing
    return name + "".join(_step(k) for k in keys)


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A payload and a clause on it, whose path mostly exists (else nothing is decided)."""
    payload = draw(payloads)
    return _clause_on(draw, _path_into(draw, payload)), payload


@st.composite
def cases_on_scalars(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A clause whose path reaches a scalar of the payload: the fast path's own ground."""
    keys = draw(st.lists(st.sampled_from(KEYS[:-1]), min_size=1, max_size=3))
    nested: Any = draw(scalars)
    for key in reversed(keys):
        nested = {key: nested}
    payload = {**draw(payloads), **nested}
    path = "payload" + "".join(_step(k) for k in keys)
    return _clause_on(draw, path, _jinja_literal(nested_value(payload, keys))), payload


def _clause_on(draw: st.DrawFn, path: str, same: str | None = None) -> str:
    """A comparison with a literal (half the time `same`, the reached value's own, if given)
    or a text test, on `path`, under 0-3 `not`s."""
    if draw(st.booleans()):
        literal = same if same is not None and draw(st.booleans()) else draw(literals)
        clause = f"{path} {draw(st.sampled_from(OPS))} {literal}"
    else:
        clause = f"{path} is {draw(st.sampled_from(TESTS))}({json.dumps(draw(st.sampled_from(ARGS)))})"
    return "not " * draw(st.integers(0, 3)) + clause


@st.composite
def comparisons_on_scalars(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A comparison of a payload scalar with a literal of its own type: equal, or near it,
    so that every operator is decided both ways (other types mostly raise: not decided)."""
    key = draw(st.sampled_from(KEYS[:-1]))
    value = draw(st.none() | st.booleans() | st.integers(0, 10**20) | st.text(max_size=4)
                 | st.floats(0, 1e30, allow_nan=False, allow_infinity=False))
    near: Any = value
    if isinstance(value, str):
        near = draw(st.sampled_from([value, value + "a", value[:-1], "a" + value]))
    elif isinstance(value, int) and not isinstance(value, bool):
        near = draw(st.sampled_from([value, value + 1, max(0, value - 1)]))
    elif isinstance(value, float):
        near = draw(st.sampled_from([value, value * 2, value / 2]))
    literal = _jinja_literal(near)
    if literal is None:
        literal = "none"
    op = draw(st.sampled_from(OPS[:6]))
    return "not " * draw(st.integers(0, 2)) + f"payload.{key} {op} {literal}", {key: value}


def nested_value(payload: dict[str, Any], keys: list[str]) -> Any:
    value: Any = payload
    for key in keys:
        value = value[key]
    return value


def _jinja_literal(value: Any) -> str | None:
    """The value as a Jinja literal (equal to it when rendered), where one exists."""
    if value is None or isinstance(value, bool):
        return {None: "none", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str) and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return None

def scope(payload: dict[str, Any]) -> dict[str, Any]:
    return build_scope(hook="gh", delivery_id="d", received_at=0.0,
                       headers=[("X-GitHub-Event", "push")], query={}, payload=payload,
                       event="push")


def rendered(source: str, sc: dict[str, Any]) -> tuple[bool, Any] | TemplateError:
    clause = Clause(source, _parse_expression(source))
    clause._fast = None  # the render alone: the definition
    try:
        return clause.evaluate(sc)
    except TemplateError as exc:
        return exc


@settings(max_examples=600, deadline=None)
@given(cases() | cases_on_scalars() | comparisons_on_scalars())
def test_the_fast_path_agrees_with_the_render(case: tuple[str, dict[str, Any]]) -> None:
    source, payload = case
    try:
        clause = Clause(source, _parse_expression(source))
    except Exception:
        return  # not a clause the loader would accept
    sc = scope(payload)
    fast = clause._fast.evaluate(sc) if clause._fast is not None else None
    if fast is None:
        return
    expected = rendered(source, sc)
    assert not isinstance(expected, TemplateError), (source, payload, fast, expected)
    assert fast == expected and type(fast[1]) is type(expected[1]), (source, payload)


@pytest.mark.parametrize("source", [
    'event == "push"', 'payload.ref is match("refs/tags/v.*")', 'not payload.a == 1',
    'payload.action in ["opened", "reopened"]', 'payload["x-y"].n != 2',
    'payload.repository.name is glob("app-*")', 'payload.n >= 3',
    'payload.action not in ["closed", "merged"]', 'not not payload.n > 3',
])
def test_the_common_forms_take_the_fast_path(source: str) -> None:
    payload = {"ref": "refs/tags/v2", "a": 1, "action": "opened", "x-y": {"n": 2}, "n": 4,
               "repository": {"name": "app-web"}}
    sc = scope(payload)
    clause = Clause(source, _parse_expression(source))
    assert clause._fast is not None
    fast = clause.evaluate(sc)
    assert sc.context is None  # type: ignore[attr-defined]  # no Jinja context was built
    assert fast == rendered(source, scope(payload))


@pytest.mark.parametrize("source, payload", [
    ('payload.missing == 1', {}),  # undefined: the render's error, with its text
    ('payload.items == 1', {"items": 1}),  # Jinja finds the dict method first
    ('payload.n < "a"', {"n": 1}),  # a TypeError, reported by the render
    ('payload.n == 1', {"n": [1]}),  # not a scalar
    ('headers.x == 1', {}),  # not a JSON object
])
def test_anything_unsure_is_left_to_the_render(source: str, payload: dict[str, Any]) -> None:
    clause = Clause(source, _parse_expression(source))
    assert clause._fast is not None
    assert clause._fast.evaluate(scope(payload)) is None
    expected = rendered(source, scope(payload))
    if isinstance(expected, TemplateError):
        with pytest.raises(TemplateError, match=str(expected).split(" (in")[0][:20]):
            clause.evaluate(scope(payload))
    else:
        assert clause.evaluate(scope(payload)) == expected


@pytest.mark.parametrize("source", [
    "payload.a", "payload.a == payload.b", "payload.a | length == 1", "1 < payload.a < 3",
    "payload.a == -1", 'payload.a is defined', "range(3) == 1",
    "payload.a < 1e400", "payload.a in [1, 1e400]",  # Jinja renders `inf`: a NameError
])
def test_other_forms_always_render(source: str) -> None:
    assert Clause(source, _parse_expression(source))._fast is None
    assert "match" in ENV.tests


@st.composite
def path_templates(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A payload and a `{{ path }}` into it, which mostly exists."""
    payload = draw(payloads)
    return "{{ " + _path_into(draw, payload, fewest=0) + " }}", payload


def template_rendered(source: str, sc: dict[str, Any]) -> Any:
    """What the Jinja render alone gives: the definition."""
    template = Template(source)
    template._fast = None
    try:
        return template.render(sc)
    except TemplateError as exc:
        return exc


@settings(max_examples=600, deadline=None)
@given(path_templates())
def test_a_path_template_renders_what_jinja_renders(case: tuple[str, dict[str, Any]]) -> None:
    source, payload = case
    template = Template(source)
    assert template._fast is not None, source
    try:
        got = template.render(scope(payload))
    except TemplateError as exc:
        got = exc
    expected = template_rendered(source, scope(payload))
    if isinstance(expected, TemplateError):
        assert isinstance(got, TemplateError) and str(got) == str(expected), (source, payload)
    else:
        assert got == expected and type(got) is type(expected), (source, payload, got)


def test_a_path_template_to_a_scalar_builds_no_jinja_context() -> None:
    sc = scope({"head_commit": {"id": "abc"}, "n": 3, "f": 1.5, "t": True, "z": None})
    for source, value in [("{{ payload.head_commit.id }}", "abc"), ("{{ payload['n'] }}", 3),
                          ("{{ payload.f }}", 1.5), ("{{ payload.t }}", True),
                          ("{{ payload.z }}", None), ("{{ event }}", "push")]:
        assert Template(source).render(sc) == value
    assert sc.context is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("source, payload", [
    ("{{ payload.missing }}", {}),  # undefined: the render's error
    ("{{ payload.items }}", {"items": 1}),  # the dict method, as Jinja finds it first
    ("{{ payload.n }}", {"n": [1, {"a": 2}]}),  # not a scalar: the render's copy
    ("{{ payload.n }}", {"n": float("nan")}),  # not finite: the render's error
    ("{{ payload.n }}", {"n": "x" * (MAX_TEXT + 1)}),  # too long: the render's error
    ("{{ payload.n }}", {"n": "a\x00b"}),  # not storable: the render's error
    ("{{ payload.n }}", {"n": 10**5000}),  # past Python's digits: the render's error
    ("{{ headers.x }}", {}),  # not a JSON object
])
def test_a_path_template_leaves_what_it_is_unsure_of_to_the_render(
    source: str, payload: dict[str, Any],
) -> None:
    expected = template_rendered(source, scope(payload))
    try:
        got = Template(source).render(scope(payload))
    except TemplateError as exc:
        got = exc
    assert type(got) is type(expected) and str(got) == str(expected)
