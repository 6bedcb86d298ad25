"""The sandboxed Jinja2 environment: native rendering, strictness, extra tests, escapes."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from hookrunner.errors import ConfigError, TemplateError
from hookrunner.rules.match import build_scope
from hookrunner.rules.yamlsrc import parse_yaml
from hookrunner.templating import (
    Constant,
    compile_expression,
    compile_template,
    describe,
    render_tree,
    to_plain,
)

SCOPE: dict[str, Any] = {
    "payload": {
        "replicas": 3,
        "ref": "refs/heads/main",
        "repository": {"full_name": "acme/api"},
        "tags": ["a", "b"],
        "flag": True,
        "evil": "{{ 7*7 }}",
        "_links": {"self": "x"},
        "ip": "10.1.2.3",
    },
    "event": "push",
    "headers": {"X-GitHub-Event": "push"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ payload.replicas }}", 3),  # a single expression keeps its native type
        ("{{payload.replicas}}", 3),
        ("{{- payload.replicas -}}", 3),
        ("{{ payload.flag }}", True),
        ("{{ payload.tags }}", ["a", "b"]),
        ("{{ payload.repository }}", {"full_name": "acme/api"}),
        ("{{ payload.missing | default(2) }}", 2),
        ("{{ none }}", None),
        ("n={{ payload.replicas }}", "n=3"),  # anything around it makes a string
        (" {{ payload.replicas }}", " 3"),
        ("{{ payload.replicas }}{{ payload.replicas }}", "33"),
        ("{{ payload.replicas }}\n", "3\n"),  # a block scalar's newline is kept
        ("deploy-{{ payload.repository.full_name }}", "deploy-acme/api"),
        ("{% if payload.flag %}yes{% endif %}", "yes"),
        ("{{ payload.evil }}", "{{ 7*7 }}"),  # payload values are data, never templates
        ("x {{ payload.evil }}", "x {{ 7*7 }}"),
        ("{{ payload._links.self }}", "x"),  # a single underscore is a legal payload key
        ("{{ '}}' }}", "}}"),
        # Inside a longer string, JSON's values read as JSON, as a whole-value one does as an
        # argument: never Python's True / None / {'k': ...}.
        ("--force={{ payload.flag }}", "--force=true"),
        ("e={{ none }}", "e=null"),
        ("t={{ payload.tags }}", 't=["a", "b"]'),
        ("r={{ payload.repository }}", 'r={"full_name": "acme/api"}'),
        ("{{ payload.flag }}-{{ payload.replicas }}", "true-3"),
        ("{{ payload.flag | string }}", "True"),  # asked for explicitly: Jinja's own text
        # `~` joins as `{{ }}{{ }}` does; `urlencode` spells as JSON (`?v=None` was sent).
        ("{{ 'x' ~ payload.flag ~ none ~ payload.tags }}", 'xtruenull["a", "b"]'),
        ("?v={{ none | urlencode }}&f={{ payload.flag | urlencode }}", "?v=null&f=true"),
        ("{{ {'a': none, 'b': [1]} | urlencode }}", "a=null&b=%5B1%5D"),
        ("{{ [['a', true], ['b', 2]] | urlencode }}", "a=true&b=2"),
        ("{{ [['tag', 'a'], ['tag', 'b']] | urlencode }}", "tag=a&tag=b"),  # names may repeat
        ("{{ {'x': none}.items() | urlencode }}", "x=null"),
        ("{{ {'ids': payload.tags | map('upper'), 't': (1, none)} | urlencode }}",
         "ids=%5B%22A%22%2C+%22B%22%5D&t=%5B1%2C+null%5D"),  # was <generator object ...>
        ("{{ payload.tags | tojson | urlencode }}", "%5B%22a%22%2C%20%22b%22%5D"),
        ("x{{ payload.missing | default(none) | default('', true) }}", "x"),
        ("a{# a comment #}b", "ab"),  # as it is beside a `{{ }}`
    ],
)
def test_template_renders(text: str, expected: Any) -> None:
    """Templates render to native values when they are one expression, else to strings."""
    assert compile_template(text).render(SCOPE) == expected


@pytest.mark.parametrize("text", ["plain", "a { b } c", "{# not a comment here", "#} {#", ""])
def test_string_without_jinja_is_a_constant(text: str) -> None:
    """A string without `{{`, `{%` or a whole comment is not parsed by Jinja at all."""
    compiled = compile_template(text)
    assert isinstance(compiled, Constant)
    assert compiled.render({}) == text


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('payload.ref is match("refs/heads/")', True),
        ('payload.ref is match("heads")', False),  # match is anchored at the start
        ('payload.ref is search("heads")', True),
        ('payload.ref is glob("refs/heads/*")', True),
        ('payload.ref is glob("refs/tags/*")', False),
        ('payload.replicas is match("3")', True),  # numbers are matched as their text
        ('payload.ip is in_cidr("10.0.0.0/8")', True),
        ('payload.ip is in_cidr("192.168.0.0/16")', False),
        ('payload.ip is in_cidr(["192.168.0.0/16", "10.1.0.0/16"])', True),
        ('payload.ref is in_cidr("10.0.0.0/8")', False),  # not an address
        ('"::1" is in_cidr("::1/128")', True),
        ('event == "push" and payload.replicas > 2', True),
        ('payload.missing is defined', False),
        ('payload.apply_infra | default(false)', False),
        ('headers["X-GitHub-Event"] == "push"', True),
    ],
)
def test_expression_and_extra_tests(expr: str, expected: bool) -> None:
    """Conditions evaluate with the extra tests match, search, glob and in_cidr."""
    assert compile_expression(expr).test(SCOPE) is expected


@pytest.mark.parametrize(
    "text",
    [
        "{{ payload.missing }}",
        "x-{{ payload.missing }}",
        "{{ nothing }}",
        "{{ [payload.missing] }}",
        "{{ payload.missing.deeper }}",
        "{{ payload.replicas + 'a' }}",
        "{{ payload.ref is match(payload.ref[0:0] ~ '(') }}",  # a bad regex at render time
    ],
)
def test_render_failures_raise_template_error(text: str) -> None:
    """An undefined name is an error of that run, never an empty string."""
    with pytest.raises(TemplateError):
        compile_template(text).render(SCOPE)


def test_a_number_python_will_not_read_is_an_error_of_int_not_zero() -> None:
    """`replicas: "{{ payload.replicas | int }}"` scaled to 0 on a 4,301-digit number."""
    scope = {**SCOPE, "payload": {"r": "1" + "0" * 4300, "s": "1" + "0" * 4299}}
    with pytest.raises(TemplateError, match=r"`\| int` of a number of 4301 digits"):
        compile_template("{{ payload.r | int }}").render(scope)
    assert compile_template("{{ payload.s | int }}").render(scope) == 10 ** 4299
    assert compile_template("{{ 'x' | int(0) }}").render(scope) == 0  # a default the rule gives


@pytest.mark.parametrize("value", ["six", "", "6 pods", "0x10", None, [3]])
@pytest.mark.parametrize("name", ["int", "float"])
def test_int_and_float_of_what_is_no_number_is_an_error_unless_given_a_default(
        name: str, value: Any) -> None:
    """`replicas: "{{ payload.commonLabels.replicas | int }}"` with a label "six" (labels are
    text) scaled to zero, and `payload.x | int < 3` held for it: Jinja's silent 0."""
    scope = {**SCOPE, "payload": {"r": value}}
    with pytest.raises(TemplateError, match=rf"`\| {name}` of .+: not a number\. Give the "
                                            rf"number to use then, `\| {name}\(0"):
        compile_template(f"{{{{ payload.r | {name} }}}}").render(scope)
    with pytest.raises(TemplateError, match="not a number"):
        compile_expression(f"payload.r | {name} < 3").test(scope)
    assert compile_template(f"{{{{ payload.r | {name}(7) }}}}").render(scope) == 7
    assert compile_template(f"{{{{ payload.r | {name}(default=7) }}}}").render(scope) == 7


@pytest.mark.parametrize(("value", "as_int", "as_float"), [
    ("6", 6, 6.0), (" 6 ", 6, 6.0), ("2.5", 2, 2.5), (True, 1, 1.0), (4, 4, 4.0), ("-3", -3, -3.0)])
def test_int_and_float_of_numbers_are_jinjas(value: Any, as_int: int, as_float: float) -> None:
    scope = {**SCOPE, "payload": {"r": value}}
    assert compile_template("{{ payload.r | int }}").render(scope) == as_int
    assert compile_template("{{ payload.r | float }}").render(scope) == as_float
    assert compile_template("{{ '10' | int(base=16) }}").render(scope) == 16


@pytest.mark.parametrize(("expr", "holds"), [
    ('payload.alerts | selectattr("labels.severity", "equalto", "critical")', False),
    ('payload.alerts | selectattr("labels.severity", "equalto", "warning")', True),
    ('payload.alerts | rejectattr("labels.severity", "equalto", "warning")', False),
    ('payload.alerts | map(attribute="labels.severity") | select("equalto", "page")', False),
    ('not (payload.alerts | selectattr("labels.severity", "equalto", "critical"))', True),
    ('payload.ok and payload.alerts | selectattr("labels.severity", "equalto", "critical")', False)])
def test_a_condition_takes_what_select_gives_by_its_items(expr: str, holds: bool) -> None:
    """An empty selection held (a generator is always true), so every alert group paged."""
    scope = {**SCOPE, "payload": {"ok": True, "alerts": [{"labels": {"severity": "warning"}}]}}
    assert compile_expression(expr).test(scope) is holds
    assert compile_template("{% if " + expr + " %}y{% else %}n{% endif %}").render(scope) == \
        ("y" if holds else "n")


def test_a_selection_is_a_list_that_can_be_used_twice() -> None:
    """`| length` of a selection was a TypeError, and `{% if sel %}` (a variable holding one)
    left nothing for the loop after it; an iterator that remains says to add `| list`."""
    scope = {**SCOPE, "payload": {"a": [1, 2], "alerts": [{"status": "firing"}]}}
    assert compile_expression('payload.a | select("equalto", 1) | length > 0').test(scope)
    assert compile_template(
        '{% set sel = payload.alerts | selectattr("status", "equalto", "firing") %}'
        '{% if sel %}{% for a in sel %}[{{ a.status }}]{% endfor %}{% endif %}'
    ).render(scope) == "[firing]"
    assert compile_expression("payload.a | map('string') == ['1', '2']").test(scope)
    with pytest.raises(TemplateError, match=r"add `\| list` before it"):
        compile_expression("payload.a | unique | length > 0").test(scope)
    with pytest.raises(TemplateError, match=r"items given one at a time .*add `\| list`"):
        compile_expression("payload.a | unique").test(scope)
    with pytest.raises(TemplateError, match=r"no attribute 'team'"):  # an error, not a 500
        compile_expression('payload.alerts | selectattr("team", "equalto", "db")').test(scope)


@pytest.mark.parametrize("expr", ["payload.keys", "payload.get", "payload.replicas and payload.values"])
def test_a_condition_whose_value_is_a_method_is_an_error(expr: str) -> None:
    """`payload.keys` of a payload without `keys` is the mapping's method: it held."""
    with pytest.raises(TemplateError, match=r"a function, not a value: a key named like a "
                                            r"method takes brackets, \['\w+'\], not \.\w+"):
        compile_expression(expr).test(SCOPE)


@pytest.mark.parametrize("text", ["false", "False", "no", "off", "0", " true ", "YES", "on", "1"])
def test_a_condition_whose_value_is_boolean_text_is_an_error(text: str) -> None:
    """`payload.apply_infra | default(false)` held for a sender's "false" (any text but "")."""
    scope = {**SCOPE, "payload": {"flag": text}}
    with pytest.raises(TemplateError, match=r"the condition's value is the text '.+', not a "
                                            r"boolean.*convert it \(\| bool\)"):
        compile_expression("payload.flag | default(false)").test(scope)
    assert compile_expression(f"payload.flag == {text!r}").test(scope)  # as the error says


@pytest.mark.parametrize("expr", [
    "payload.flag | default(false) and payload.ok == 1",  # `a and b` gives b when a is text
    "payload.ok == 1 and payload.flag", "payload.flag or payload.ok == 2", "not payload.flag",
    "payload.ok == 1 if payload.flag else false"])
def test_yes_no_text_is_an_error_wherever_it_is_taken_for_yes_or_no(expr: str) -> None:
    """interface.md's gate with its operands swapped still applied for "false"."""
    scope = {**SCOPE, "payload": {"flag": "false", "ok": 1}}
    with pytest.raises(TemplateError, match=r"the text 'false', not a boolean"):
        compile_expression(expr).test(scope)


@pytest.mark.parametrize(("source", "rendered"), [
    ("{% if payload.flag | bool %}--force{% endif %}", ""), ("{{ payload.flag or 'x' }}", "false"),
    ("{{ (payload.flag | bool) and 'yes' or 'no' }}", "no"), ("{% if payload.ref %}ok{% endif %}", "ok")])
def test_a_template_takes_text_for_yes_or_no_only_where_it_is_converted(
        source: str, rendered: str) -> None:
    """`{% if payload.force %}--force{% endif %}` added --force for "false"; a value that
    is text is still text (`or` picking a value is no yes/no test)."""
    scope = {**SCOPE, "payload": {"flag": "false", "ref": "refs/heads/main"}}
    assert compile_template(source).render(scope) == rendered
    for refused in ("{% if payload.flag %}--force{% endif %}", "{{ 'a' if payload.flag else 'b' }}",
                    "{% for x in [1] if payload.flag %}{{ x }}{% endfor %}",
                    "{{ not payload.flag }}"):
        with pytest.raises(TemplateError, match=r"a yes/no test got the text 'false'"):
            compile_template(refused).render(scope)


@pytest.mark.parametrize("text", ["", "refs/heads/main", "falsey", "2", "n"])
def test_other_text_keeps_its_truth(text: str) -> None:
    """`when: payload.merged_at` (set or not) is a common idiom; only yes/no words err."""
    scope = {**SCOPE, "payload": {"flag": text}}
    assert compile_expression("payload.flag").test(scope) is bool(text)


@pytest.mark.parametrize(("value", "truth"), [
    ("true", True), ("Yes", True), ("on", True), ("1", True), (" false ", False), ("NO", False),
    ("off", False), ("0", False), (True, True), (False, False), (None, False), ("", False), (1, True),
    (0, False), (1.0, True)])
def test_the_bool_filter_reads_what_senders_write(value: Any, truth: bool) -> None:
    scope = {**SCOPE, "payload": {"flag": value}}
    assert compile_expression("payload.flag | bool").test(scope) is truth
    assert compile_template("{{ payload.flag | bool }}").render(scope) is truth


@pytest.mark.parametrize(("value", "shown"), [
    ("maybe", "'maybe'"), ("treu", "'treu'"), (2, "a number"), ([True], "a list"), ({}, "an object")])
def test_the_bool_filter_refuses_what_is_no_boolean(value: Any, shown: str) -> None:
    """Ansible's `bool` calls all other text false: a typo'd "treu" skipped the deploy silently."""
    scope = {**SCOPE, "payload": {"flag": value}}
    with pytest.raises(TemplateError, match=rf"`\| bool` reads true/false.*this value is {re.escape(shown)}"):
        compile_expression("payload.flag | bool").test(scope)
    with pytest.raises(TemplateError, match="no attribute 'missing'"):
        compile_expression("payload.missing | bool").test(scope)


@pytest.mark.parametrize(
    "expr", ["payload.missing == 1", "nothing", "payload.missing", "not payload.missing",
             # Jinja's own tests look at a value without touching it: these held, or failed,
             # in silence (`payload.pull_requets is not none` matched every delivery).
             "payload.missing is not none", "payload.missing is none", "payload.missing is string",
             "payload.missing is mapping", "payload.missing is true", "payload.missing is false",
             "payload.missing is callable", "payload.replicas is sameas(payload.missing)",
             "payload.missing is in([1])"]
)
def test_undefined_in_condition_is_an_error(expr: str) -> None:
    """A condition over an undefined name raises rather than being false."""
    with pytest.raises(TemplateError):
        compile_expression(expr).test(SCOPE)


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ lipsum.__globals__ }}",
        "{{ payload['__class__'] }}",
        "{{ payload | attr('__class__') }}",
        "{% for c in ().__class__.__base__.__subclasses__() %}{% endfor %}",
    ],
)
def test_sandbox_escapes_refused_at_check(text: str) -> None:
    """Obvious escapes through dunder names are refused at compile (check) time."""
    with pytest.raises(ConfigError, match="not allowed"):
        compile_template(text)


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        ("{{ x | attr(n) }}", {"x": "", "n": "__class__"}),
        ("{{ x[n] }}", {"x": "", "n": "__class__"}),
        ("{{ x.append(1) }}", {"x": []}),
        ("{{ lipsum() }}", {}),
        ("{{ cycler }}", {}),
        ("{{ 'a' * 100000000 }}", {}),
        ("{{ 2 ** 100000000 }}", {}),
        ("{{ range(10000000) | list }}", {}),
        ("{{ x.encode() }}", {"x": "nan"}),  # audit: bytes became the argument `b'nan'`
    ],
)
def test_sandbox_refuses_at_render(text: str, scope: dict[str, Any]) -> None:
    """What cannot be seen statically is refused by the sandbox when rendering."""
    with pytest.raises(TemplateError):
        compile_template(text).render(scope)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ payload.x ", "template syntax error"),
        ("{% if %}", "template syntax error"),
        ("{{ x | nosuchfilter }}", "unknown filter 'nosuchfilter'"),
        ("{{ x is nosuchtest }}", "unknown test 'nosuchtest'"),
        ("{{ x is match('(') }}", "bad argument to test 'match'"),
        ("{{ x is in_cidr('10.0.0.300/8') }}", "bad argument to test 'in_cidr'"),
        ("{{ x < 1e400 }}", "too large for a float"),  # would render as the name `inf`
    ],
)
def test_template_compile_errors(text: str, message: str) -> None:
    """Compile errors are ConfigErrors with Jinja's message."""
    with pytest.raises(ConfigError, match=message):
        compile_template(text)


@pytest.mark.parametrize("expr", ["", "a ==", "a b", "a }} {{ b", "x | nosuch", "a in [1e999]"])
def test_expression_compile_errors(expr: str) -> None:
    """A malformed condition is a ConfigError."""
    with pytest.raises(ConfigError):
        compile_expression(expr)


@pytest.mark.parametrize(
    ("expr", "clauses"),
    [
        ('event == "push"', [('event == "push"', True, "push")]),
        (
            'event == "push" and payload.ref == "refs/heads/dev"',
            [('event == "push"', True, "push"),
             ('payload.ref == "refs/heads/dev"', False, "refs/heads/main")],
        ),
        (
            "payload.flag or (payload.replicas > 5 and payload.flag)",
            [("payload.flag", True, True),
             ("(payload.replicas > 5 and payload.flag)", False, False)],
        ),
        (
            'not payload.ref is match("x") and payload.apply | default(false)',
            [('not payload.ref is match("x")', True, "refs/heads/main"),
             ("payload.apply | default(false)", False, False)],
        ),
        (
            'payload.flag or event == "tag" and payload.replicas',
            [("payload.flag", True, True), ('event == "tag"', False, "push"),
             ("payload.replicas", True, 3)],
        ),
        # a conditional expression is not split: its `and` is not a top-level operand
        ("1 if payload.flag and event else 0", [("1 if payload.flag and event else 0", True, 1)]),
    ],
)
def test_clauses_report_each_operand(expr: str, clauses: list[tuple[str, bool, Any]]) -> None:
    """Explanations split on the top-level and/or and report the left operand's value."""
    got = [(c.source, *c.evaluate(SCOPE)) for c in compile_expression(expr).clauses()]
    assert got == clauses


def test_render_tree_renders_nested_specs() -> None:
    """render_tree turns a tree of compiled leaves into plain JSON-able data."""
    tree = {
        "argv": [compile_template("deploy"), compile_template("{{ payload.replicas }}")],
        "env": {"REF": compile_template("{{ payload.ref }}")},
        "check": True,
        "n": 2,
    }
    assert render_tree(tree, SCOPE) == {
        "argv": ["deploy", 3], "env": {"REF": "refs/heads/main"}, "check": True, "n": 2,
    }


@pytest.mark.parametrize(
    ("value", "text"), [("a", '"a"'), (3, "3"), (None, "null"), ({"k": [1]}, '{"k": [1]}')]
)
def test_describe(value: Any, text: str) -> None:
    """Values in explanations read like JSON."""
    assert describe(value) == text


@pytest.mark.parametrize(
    "source", ["{{ payload[payload.key] }}", "x-{{ payload[payload.key] }}", "{{ payload.items }}"]
)
def test_a_function_is_never_rendered_as_a_value(source: str) -> None:
    """A payload key naming a dict method must fail the run, not print a memory address."""
    with pytest.raises(TemplateError, match="is a function, not a value"):
        compile_template(source).render({"payload": {"key": "items"}})


@pytest.mark.parametrize(("source", "secret"), [
    ('headers["X-GitHub-Event"] == "push"', False),
    ('query.env == "prod"', False),
    ('headers.get("X-Event") == 1', False),
    ('payload.a == 1 and event == "push"', False),
    ('headers.authorization.split(" ")[1] == "x"', True),
    ('headers["Authorization"] | replace("Bearer ", "")', True),
    ('headers["X-Api-Key"] | lower == "k"', True),
    ("query.token[:12]", True),
    ('headers.get("X-Api-Key") == 1', True),
    ("headers[payload.k]", True),  # a computed key: could be any header
    ('"token" in query and query', True),  # the whole query
    ("headers", True),
    # Found in review: the object's methods read every value.
    ("(query.items() | first)[1] == 'q'", True),
    ("headers.items() | map('last') | join", True),
    ("payload.x in headers.values()", True),
    ("headers.copy() is defined", True),
    # Found by a probe: the Headers' own methods too (taken for a header named `as_dict`).
    ('headers.as_dict()["x-api-key"] != "nope"', True),
    ("headers.as_utf8().get('X-Api-Key')", True),
    ("headers.keys() | join", True),
    # A membership test of a literal name reads no value.
    ("'Authorization' in headers", False),
    ("'token' not in query", False),
])
def test_which_conditions_read_a_secret_value(source: str, secret: bool) -> None:
    """Their stored explanation keeps the result but not the value (rules.match)."""
    from hookrunner.templating import _parse_expression, reads_secret, request_keys

    assert reads_secret(request_keys(_parse_expression(source))) is secret


def test_a_verifiers_own_header_is_secret_whatever_its_name() -> None:
    from hookrunner.templating import _parse_expression, reads_secret, request_keys

    keys = request_keys(_parse_expression('headers["X-Shared"][:8] == "x"'))
    assert keys == frozenset({"x-shared"})
    assert not reads_secret(keys) and reads_secret(keys, frozenset({"x-shared"}))


def test_a_payload_key_named_like_a_dict_method_is_the_key() -> None:
    """Jira sends `changelog.items`: the list, not `dict.items`; without such a key the
    name is still the method, and an explanation shows no Python repr of it."""
    scope = {"payload": {"changelog": {"items": [{"field": "status"}]}, "keys": 2}}
    assert compile_expression("payload.changelog.items | length == 1").test(scope) is True
    assert compile_expression("payload.keys == 2").test(scope) is True
    assert compile_template("{{ payload.changelog.items[0].field }}").render(scope) == "status"
    assert compile_template("{{ payload.changelog.keys() | list }}").render(scope) == ["items"]
    assert describe({}.values) == "(a function, not a value)"


@pytest.mark.parametrize(("expr", "expected"), [
    ("payload.pull_request is defined and payload.pull_request.merged", False),
    ("(payload.pull_request | default({})).merged | default(false)", False),
    ("payload.replicas is defined", True),
])
def test_the_idioms_for_a_field_that_may_be_missing(expr: str, expected: bool) -> None:
    assert compile_expression(expr).test(SCOPE) is expected


@pytest.mark.parametrize("expr", ["payload.pull_request.merged", "payload.pull_request.x == 1",
                                  "payload.pull_requets.merged_by is not none",
                                  "payload.pull_request.merged | default(false)",
                                  "not payload.ab.c is string"])
def test_a_path_through_a_missing_value_is_an_error_naming_it(expr: str) -> None:
    """Strict all the way: a lenient path let `payload.typo.x is not none` match every
    delivery, in silence."""
    with pytest.raises(TemplateError, match="has no attribute"):
        compile_expression(expr).test(SCOPE)


@pytest.mark.parametrize("expr", ["'X-Api-Key' in headers", "'k' in query", "'t' in headers.get('X', '')"])
def test_a_literal_looked_up_in_the_request_shows_no_request_value(expr: str) -> None:
    """`'X-Api-Key' in headers` would show every header (a token among them)."""
    scope = {**SCOPE, "headers": {"X-Api-Key": "s3cret"}, "query": {"k": "s3cret"}}
    (clause,) = compile_expression(expr).clauses()
    assert "s3cret" not in repr(clause.evaluate(scope))


def test_a_rendered_number_is_a_plain_number_whatever_yaml_read() -> None:
    """The rules' WrittenFloat (`3.10`) reached stored specs: it neither copies nor pickles
    (the memory store's deepcopy failed) nor dumps as YAML (ansible's extravars)."""
    data, _ = parse_yaml("json: {v: 3.10, m: 0755}\n", "r.yaml")
    rendered = render_tree({"json": dict(data["json"])}, SCOPE)
    assert type(rendered["json"]["v"]) is float and type(rendered["json"]["m"]) is int
    assert copy.deepcopy(rendered) == {"json": {"v": 3.1, "m": 493}}


def test_urlencode_of_a_list_that_is_not_pairs_says_what_it_takes() -> None:
    with pytest.raises(TemplateError, match=r"list of \[name, value\] pairs.*tojson"):
        compile_template("{{ payload.tags | urlencode }}").render(SCOPE)


@pytest.mark.parametrize("text", [
    "{{ '%c' % 0 }}", "x{{ '%c' % 55296 }}y", "{{ ['%c' % 0] }}", "{{ {('%c' % 0): 1} }}",
    "{{ 'a' ~ ('%c' % 56320) }}",
])
def test_text_no_store_can_hold_is_a_template_error(text: str) -> None:
    """A NUL (PostgreSQL text) or a lone surrogate (not UTF-8) in a run, a key or a dedup
    failed the whole delivery with a 500: it fails that template instead, naming it."""
    with pytest.raises(TemplateError, match="cannot be stored") as caught:
        render_tree({"argv": [compile_template(text)]}, SCOPE)
    assert text in str(caught.value)
    assert render_tree({"argv": [compile_template("{{ '%c' % 233 }}😀")]}, SCOPE) == {
        "argv": ["é😀"]}  # other text, and whole surrogate pairs, are text


def test_a_value_too_deep_to_template_says_so() -> None:
    deep: Any = 1
    for _ in range(2_000):
        deep = [deep]
    with pytest.raises(TemplateError, match="nested too deeply"):
        compile_template("x{{ payload.v }}").render({"payload": {"v": deep}})


@pytest.mark.parametrize("source", [
    "payload.a and payload.b or payload.c", "payload.a or payload.b and payload.c",
    "not payload.a or payload.b and not payload.c or payload.a",
    "payload.a and payload.b and payload.c or payload.b",
])
def test_mixed_and_or_is_read_from_its_clauses_as_jinja_does(source: str) -> None:
    """`and` binds closer than `or`: the verdict and what is never evaluated follow."""
    import itertools

    expr = compile_expression(source)
    for a, b, c in itertools.product([True, False], repeat=3):
        scope = {"payload": {"a": a, "b": b, "c": c}}
        truths: list[bool | None] = [cl.evaluate(scope)[0] for cl in expr.clauses()]
        verdict, skipped = expr.short_circuit(truths)
        assert verdict == expr.test(scope), (a, b, c)
        # Exactly the clauses Jinja never reads: each one made to fail when read tells.
        read = []
        clauses = [cl.source for cl in expr.clauses()]
        for i in range(len(clauses)):
            parts = [f"(payload.read.x and ({c}))" if j == i else c for j, c in enumerate(clauses)]
            probe = parts[0] + "".join(f" {op} {p}" for op, p in zip(expr._ops or [], parts[1:],
                                                                     strict=True))
            try:
                compile_expression(probe).test(scope)
            except TemplateError:
                read.append(i)
        assert skipped == [i for i in range(len(truths)) if i not in read], (a, b, c)


def test_an_explanation_shows_text_no_store_can_hold_as_json_not_python() -> None:
    """Python's repr (`{'\\x00': 1, 'b': None}`) was shown once to_plain refused it."""
    assert describe({"\x00": 1, "b": None}) == '{"\\u0000": 1, "b": null}'
    assert describe("\ud800x") == '"\ufffdx"'


def test_an_explanation_of_a_value_too_deep_to_write_says_so() -> None:
    deep: Any = 1
    for _ in range(2_000):
        deep = {"a": deep}
    assert describe(deep) == "(nested too deeply to show)"  # was Python's repr


@pytest.mark.parametrize(("expr", "payload"), [("payload.v > 90", {"v": "97.5"}),
                                               ("payload.v <= 90", {"v": None}),
                                               ("90 < payload.v", {"v": "1"})])
def test_a_number_compared_with_text_says_to_convert_it(expr: str, payload: Any) -> None:
    with pytest.raises(TemplateError, match=r"convert it, `\| float`, `\| int`"):
        compile_expression(expr).test({**SCOPE, "payload": payload})


@pytest.mark.parametrize("expr", ['payload.tags is match("a")', 'payload.tags is glob("a*")',
                                  'payload.meta is search("x")', 'payload.tags is in_cidr("10.0.0.0/8")'])
def test_a_text_test_on_a_list_or_object_says_to_test_its_items(expr: str) -> None:
    """`payload.tags is glob("prod*")` was silently false: the author meant its items."""
    with pytest.raises(TemplateError, match=r"^`is \w+` tests text, and this value is (a list|an object): "
                                            r"test its items"):
        compile_expression(expr).test({**SCOPE, "payload": {"tags": ["a"], "meta": {"x": 1}}})


@pytest.mark.parametrize("value", ["203.0.113.9, 10.0.0.1", "10.0.0.1 10.0.0.2", "10.0.0.1,::1",
                                   "junk, 203.0.113.9", "10.0.0.1;10.0.0.2", "10.0.0.1,",
                                   "web-1, web-2", "203.0.113.9, 10.0.0.1, " + "x, " * 100_000])
def test_in_cidr_of_several_items_says_to_test_the_items(value: str) -> None:
    """`headers["X-Forwarded-For"] is in_cidr(...)` on a proxied request was silently false,
    and a deny rule, `not ... is in_cidr(...)`, let a listed address through behind a junk
    item the client wrote first. Any separator makes it a list: a sender's text is not read
    further (a megabyte of it was parsed on the event loop)."""
    with pytest.raises(TemplateError, match=r"^`is in_cidr` tests one address, and this value holds "
                                            r"several items"):
        compile_expression('payload.ip is in_cidr("10.0.0.0/8")').test({**SCOPE, "payload": {"ip": value}})
    # The hint's form works on such a value.
    items = compile_template('{{ payload.ip.split(",") | map("trim") | select("in_cidr", "10.0.0.0/8") '
                             '| list }}')
    assert items.render({**SCOPE, "payload": {"ip": "203.0.113.9, 10.0.0.1"}}) == ["10.0.0.1"]


@pytest.mark.parametrize(("value", "inside"), [
    ("10.1.2.3", True), (" 10.1.2.3 ", True), ("10.1.2.3:443", True), ("::ffff:10.1.2.3", True),
    ("[::ffff:10.1.2.3]:443", True), ("203.0.113.9", False), ("web-1", False), ("", False),
    ("10.1.2.3:$(id)", False), ("[10.1.2.3]x", False), ("10.1.2.3:", False),  # no port after it
    ("x" * 1_000_000, False),
])
def test_in_cidr_reads_one_address_as_allow_ips_does(value: str, inside: bool) -> None:
    """A port (as some proxies write a hop) and a dual-stack `::ffff:` form were never in the
    network, where allow_ips read them as the address; text that is no address is simply
    false."""
    assert compile_expression('payload.ip is in_cidr("10.0.0.0/8")').test(
        {**SCOPE, "payload": {"ip": value}}) is inside


@pytest.mark.parametrize("name", ["upper", "lower", "title", "capitalize"])
def test_a_case_filter_of_null_says_to_give_a_default(name: str) -> None:
    """`| upper` of a null field made "NONE" (`deploy.sh NONE`), in silence."""
    with pytest.raises(TemplateError, match=rf"^`\| {name}` of null .* give a default first"):
        compile_template(f"{{{{ payload.env | {name} }}}}").render({**SCOPE, "payload": {"env": None}})
    assert compile_template(f'{{{{ payload.env | default("", true) | {name} }}}}').render(
        {**SCOPE, "payload": {"env": None}}) == ""
    assert compile_template(f"{{{{ payload.env | {name} }}}}").render(
        {**SCOPE, "payload": {"env": "prod env"}}) != ""


def test_the_request_headers_are_written_as_a_json_object() -> None:
    """`{{ headers }}` (webhook's entire-headers) gave the class's Python repr, and `| tojson`
    failed every run while `check` passed it."""
    scope = build_scope(hook="h", delivery_id="d", received_at=0, query={}, payload={}, event=None,
                        headers=[("X-GitHub-Event", "push"), ("Accept", "*/*"), ("x-github-event", "2")])
    assert compile_template("{{ headers }}").render(scope) == {"X-GitHub-Event": "push", "Accept": "*/*"}
    assert compile_template("h={{ headers }}").render(scope) == \
        'h={"X-GitHub-Event": "push", "Accept": "*/*"}'
    assert json.loads(compile_template("{{ headers | tojson }}").render(scope)) == {
        "X-GitHub-Event": "push", "Accept": "*/*"}
    assert compile_template('{{ {"h": headers} }}').render(scope) == {"h": {"X-GitHub-Event": "push",
                                                                          "Accept": "*/*"}}
    assert json.loads(compile_template("{{ headers | string }}").render(scope))["Accept"] == "*/*"
    assert compile_template("{{ headers | urlencode }}").render(scope) == \
        "X-GitHub-Event=push&Accept=%2A%2F%2A"


def test_from_json_reads_json_sent_as_text_inside_a_field() -> None:
    """webhook's parse-parameters-as-json: a form field beside others, or a query parameter."""
    scope = build_scope(hook="h", delivery_id="d", received_at=0, headers=[], event=None,
                        query={"j": '{"a": [1, 2]}'},
                        payload={"data": '{"state": "passed", "n": 1.5}', "bad": "{x", "nan": "NaN", "n": 3})
    assert compile_template("{{ payload.data | from_json }}").render(scope) == {"state": "passed", "n": 1.5}
    assert compile_template("{{ query.j | from_json }}").render(scope) == {"a": [1, 2]}
    assert compile_expression('(payload.data | from_json).state == "passed"').test(scope) is True
    # What one render parses is bounded: its values take ~20 times their text's memory.
    big = {"big": "[" + ",".join(["0"] * 300_000) + "]"}  # quick to parse: 600K characters
    with pytest.raises(TemplateError, match=r"`\| from_json` of more than 1000000 characters"):
        compile_template("{{ (payload.big | from_json | length) + (payload.big | from_json | length) }}"
                         ).render({**scope, "payload": big})
    for field, message in [("bad", r"^`\| from_json`: the text is not valid JSON: Expecting property"),
                           ("nan", r"^`\| from_json`: the text is not valid JSON: NaN"),
                           ("n", r"^`\| from_json` reads JSON text, and this value is a number")]:
        with pytest.raises(TemplateError, match=message):
            compile_template(f"{{{{ payload.{field} | from_json }}}}").render(scope)


@pytest.mark.parametrize(("text", "said"), [
    ("payload.x | lenght > 1", "unknown filter 'lenght': did you mean 'length'?"),
    ('payload.x is matches("a")', "unknown test 'matches': did you mean 'match'?"),
    ("payload.x | qqqzzz", "unknown filter 'qqqzzz' (the filters: abs,"),
    # Named as a string, they were looked up only when a delivery came.
    ('payload.x | map("uper") | list', "unknown filter 'uper' named in `map`: did you mean 'upper'?"),
    ("payload.x | map('regex_replace', ':.*', '') | join(',')",
     "unknown filter 'regex_replace' named in `map`"),
    ('payload.x | select("qqq", "x") | list', "unknown test 'qqq' named in `select` (the tests:"),
    ('payload.x | reject("odd_") | list', "unknown test 'odd_' named in `reject`: did you mean 'odd'?"),
    ('payload.x | selectattr("a", "equals", 1) | list',
     "unknown test 'equals' named in `selectattr`: did you mean 'equalto'?"),
    ('payload.x | rejectattr("a", "nonee") | list',
     "unknown test 'nonee' named in `rejectattr`: did you mean 'none'?"),
])
def test_an_unknown_filter_or_test_says_which_was_meant_or_lists_them(text: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_expression(text)
    assert said in str(caught.value), caught.value


def test_hookrunners_own_filters_and_tests_are_neither_listed_nor_a_rules_to_use() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_expression("payload.x | qqqzzz")
    assert "hookrunner_" not in str(caught.value)
    for text in ("payload.x | hookrunner_tested", "payload.x is hookrunner_zz",
                 'payload.x | select("hookrunner_zz") | list'):
        with pytest.raises(ConfigError, match="is reserved"):
            compile_expression(text)


@pytest.mark.parametrize(("text", "said"), [
    # A pattern or network named in a selection was compiled only when a delivery came.
    ('payload.x | select("match", "(") | list', "bad argument to test 'match': missing )"),
    ('payload.x | rejectattr("a", "search", "[") | list', "bad argument to test 'search'"),
    ('payload.x | selectattr("ip", "in_cidr", "10.0.0.0/33") | list',
     "bad argument to test 'in_cidr'"),
    ('payload.x | select("search") | list', "test 'search' takes one argument: a pattern"),
    ('payload.x | select("glob", "a", "b") | list', "test 'glob' takes one argument"),
])
def test_a_pattern_named_in_a_selection_is_checked_at_load(text: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_expression(text)
    assert said in str(caught.value), caught.value


def test_a_word_boundary_jinja_made_a_backspace_is_refused_at_load() -> None:
    r"""`is search('\bfoo\b')` searched for backspaces (Jinja's reading of `\b` in a
    string) and never matched, silently."""
    for text in (r'payload.x is search("\bfoo")', r'payload.x is match("a\b")',
                 r'payload.x | select("search", "\bdb\b") | list'):
        with pytest.raises(ConfigError, match=r"holds a backspace character.* write \\\\b"):
            compile_expression(text)
    expr = compile_expression(r'payload.x is search("\\bfoo\\b")')
    assert expr.test({"payload": {"x": "a foo b"}})
    assert not expr.test({"payload": {"x": "afoob"}})


def test_a_selection_without_a_test_keeps_jinjas_truth() -> None:
    """`[a, b, c] | select` drops the empty ones: the commonest use, whatever text the items
    are ("1", "yes" included), so it is not held to the yes/no rule of conditions."""
    scope = {"payload": {"a": [0, 1, None, "", "x", [], [2], "0", "false"]}}
    assert compile_template("{{ payload.a | select | list }}").render(scope) == [
        1, "x", [2], "0", "false"]
    assert compile_template("{{ payload.a | reject | list }}").render(scope) == [0, None, "", []]
    assert compile_template('{{ payload.b | selectattr("k") | map(attribute="k") | join(",") }}'
                            ).render({"payload": {"b": [{"k": "on"}, {"k": ""}]}}) == "on"


@pytest.mark.parametrize(("text", "said"), [
    # The nearest Jinja name was wrong (`replace` is literal) or there was none.
    ('payload.x | regex_replace(":.*", "")', "unknown filter 'regex_replace': there are no "
     "regex filters here: test with `is search(...)` or `is match(...)`; for a literal "
     "replacement, `| replace(a, b)`"),
    ('payload.x | regex_search("a")', "unknown filter 'regex_search': there are no regex"),
    ('payload.x | regex_findall("a")', "unknown filter 'regex_findall': there are no regex"),
    ('payload.x | map("regex_replace", "a", "b") | list',
     "unknown filter 'regex_replace' named in `map`: there are no regex filters"),
    ('payload.x | split(",")', 'unknown filter \'split\': use the method: `payload.x.split(",")`'),
    ('payload.x | ternary("a", "b")', 'unknown filter \'ternary\': write `"a" if x else "b"`'),
    ("payload.x | combine(payload.y)", "unknown filter 'combine': write `dict(a, **b)`"),
    ("payload.x | flatten", "unknown filter 'flatten': not available"),
    ("payload.x | to_json", "unknown filter 'to_json': write `| tojson`"),
    ("payload.x | to_yaml", "unknown filter 'to_yaml': not available: `| tojson`"),
    ("payload.x | from_yaml", "unknown filter 'from_yaml': not available: `| from_json`"),
    ("payload.x | b64decode", "unknown filter 'b64decode': not available: decode in the action"),
    ("payload.x | hash('sha1')", "unknown filter 'hash': not available: hash in the action"),
    ("payload.x | dict2items", "unknown filter 'dict2items': write `| items`"),
    ("payload.x | items2dict", "unknown filter 'items2dict': write `dict(pairs)`"),
    ("payload.x | mandatory", "unknown filter 'mandatory': not needed"),
    ("payload.x | quote", "unknown filter 'quote': not needed: no shell runs the action"),
    ('payload.x | select("regex", "a") | list',
     "unknown test 'regex' named in `select`: write `is search(...)`"),
])
def test_an_ansible_filter_says_what_to_write_here(text: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_expression(text)
    assert str(caught.value).startswith(said), caught.value


@pytest.mark.parametrize(("text", "value"), [  # what those hints say to write
    ('payload.s.split(",")', ["a", "b"]),
    ('"up" if payload.f else "down"', "down"),
    ("dict(payload.a, **payload.b)", {"k": 1, "j": 3}),
    ("payload.a | items | list", [["k", 1], ["j", 2]]),
    ("payload.a | dictsort", [["j", 2], ["k", 1]]),
    ("dict(payload.pairs)", {"k": "v"}),
    ("payload.a | tojson(indent=2)", '{\n  "j": 2,\n  "k": 1\n}'),
    ('payload.s is search(",b")', True),
    ('payload.s | replace(",", " ")', "a b"),
])
def test_what_the_ansible_hints_say_works(text: str, value: Any) -> None:
    payload = {"s": "a,b", "f": False, "a": {"k": 1, "j": 2}, "b": {"j": 3},
               "pairs": [["k", "v"]]}
    assert to_plain(compile_template(f"{{{{ {text} }}}}").render({"payload": payload})) == value


@pytest.mark.parametrize("text", [
    'payload.x | map("upper") | list', "payload.x | map(attribute='labels.instance') | list",
    'payload.x | select("odd") | list', "payload.x | select | list",
    'payload.x | selectattr("a") | list', 'payload.x | rejectattr("a", "none") | list',
    "payload.x | map(payload.f) | list",  # (a name the payload gives: judged per render)
])
def test_a_filter_or_test_named_right_in_map_or_select_compiles(text: str) -> None:
    compile_expression(text)
