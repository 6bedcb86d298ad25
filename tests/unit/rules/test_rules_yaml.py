"""YAML with line numbers: keys and items know their line; duplicate keys are errors."""

from __future__ import annotations

from typing import Any

import pytest

from hookrunner.rules.yamlsrc import line_of, parse_yaml

DOC = """\
rules:
  - name: a
    run:
      shell:
        argv:
          - one
          - two
  - name: b
    run: {shell: {argv: [x, y]}}
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("rules",), 1),
        (("rules", 0), 2),
        (("rules", 0, "run", "shell", "argv", 1), 7),
        (("rules", 1), 8),
        (("rules", 1, "run", "shell", "argv", 1), 9),
        (("rules", 0, "run", "shell", "argv", 9), 5),  # a missing step: the deepest that exists
        (("rules", 0, "nothing"), 2),
    ],
)
def test_line_of_paths(path: tuple[Any, ...], line: int) -> None:
    """Every mapping key and sequence item is located at its own line."""
    data, problems = parse_yaml(DOC, "f.yaml")
    assert problems == []
    assert line_of(data, path) == line


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    """A key written twice in one mapping is an error naming the first line."""
    _, problems = parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "f.yaml")
    assert [str(p) for p in problems] == [
        "f.yaml:4: duplicate key 'c' (first written at line 3)",
        "f.yaml:5: duplicate key 'a' (first written at line 1)",
    ]


def test_merge_keys_may_be_overridden() -> None:
    """`<<: *anchor` then the same key is an override, not a duplicate."""
    data, problems = parse_yaml("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 3\n", "f.yaml")
    assert problems == [] and data["m"] == {"x": 3, "y": 2}


@pytest.mark.parametrize(
    ("text", "value"),
    [("v: on", "on"), ("v: no", "no"), ("v: true", True), ("v: 2024-01-01", "2024-01-01"),
     ("v: 1.5", 1.5), ("v: null", None)],
)
def test_scalars_follow_yaml_12(text: str, value: Any) -> None:
    """Only true/false are booleans; dates stay strings."""
    data, _ = parse_yaml(text, "f.yaml")
    assert data["v"] == value and type(data["v"]) is type(value)


def test_syntax_error_has_a_line() -> None:
    """A YAML syntax error ends parsing with its line."""
    data, problems = parse_yaml("a: 1\nb: 2\n  c: 3\n", "f.yaml")
    assert data is None and str(problems[0]).startswith("f.yaml:3: YAML syntax error")


def test_an_unclosed_quote_is_placed_where_it_opens_not_past_the_end() -> None:
    data, problems = parse_yaml('a: 1\nb: "open\nc: 3\nd: 4\n', "f.yaml")
    assert data is None and str(problems[0]).startswith("f.yaml:2: YAML syntax error")


@pytest.mark.parametrize(("text", "said"), [
    ("hooks:\n  github:\n    verify: {github: {secret: {env: X}}\n",
     "f.yaml:3: YAML syntax error: the `{` opened here (column 13) is not closed: a `}` is "
     "missing"),
    ("hooks: [\n", "f.yaml:1: YAML syntax error: the `[` opened here (column 8) is not "
     "closed: a `]` is missing"),  # (no hint to quote an item: there is none)
    ("hooks: [", "f.yaml:1: YAML syntax error: the `[` opened here (column 8)"),
    ("a:\n  b: {c: [d, {e: f}\n", "f.yaml:2: YAML syntax error: the `[` opened here "
     "(column 10) is not closed"),  # the innermost
])
def test_an_unclosed_bracket_is_placed_where_it_opens_not_past_the_end(text: str,
                                                                        said: str) -> None:
    """probe: PyYAML's flow parser says `got '<stream end>'`, not "end of stream": a
    half-written file was reported at the line past its last (`hooks: [` with a hint to
    quote an item)."""
    data, problems = parse_yaml(text, "f.yaml")
    assert data is None and [str(p)[:len(said)] for p in problems] == [said], problems
    assert "quoted" not in str(problems[0])


@pytest.mark.parametrize(("text", "said"), [
    ("hooks:\n  a: {verify: none\n  b: {verify: none}\n",
     "f.yaml:3: YAML syntax error: while parsing a flow mapping expected ',' or '}', but got "
     "':' (inside the `{` opened at line 2, column 6: a `}` missing there, or an item here "),
    ("a:\n  - [x,\n  - y\n",
     "f.yaml:3: YAML syntax error: while parsing a flow node expected the node content, but "
     "found '-' (inside the `[` opened at line 2, column 5: a `]` missing there"),
])
def test_an_error_lines_past_an_unclosed_bracket_names_where_it_opened(text: str,
                                                                       said: str) -> None:
    """probe: `a: {verify: none` then more lines was "expected ',' or '}', but got ':'" at
    the next line, without a word of the `{` left open a line before."""
    data, problems = parse_yaml(text, "f.yaml")
    assert data is None and [str(p)[:len(said)] for p in problems] == [said], problems


@pytest.mark.parametrize(("text", "line", "hint"), [
    ("hooks:\n\tgithub: {verify: none}\n", 2, "(YAML indents with spaces, not tabs: replace "
     "the tab with spaces)"),
    ("hooks:\n  github:\n  \tverify: none\n", 3, "(YAML indents with spaces, not tabs"),
    ("hooks:\n  github: {verify:\tnone}\n", 2, "(a tab outside a quoted value is not a "
     "space to YAML: write spaces)"),
])
def test_a_tab_says_yaml_wants_spaces(text: str, line: int, hint: str) -> None:
    """probe: a tab used for indentation gave only PyYAML's "found character '\\t' that
    cannot start any token"."""
    data, problems = parse_yaml(text, "f.yaml")
    assert data is None and len(problems) == 1, problems
    assert str(problems[0]).startswith(f"f.yaml:{line}: YAML syntax error") and \
        hint in str(problems[0]), problems


def test_an_unquoted_colon_in_a_value_says_to_quote_it() -> None:
    data, problems = parse_yaml('when: payload.a == 1 and event: push\n', "f.yaml")
    assert data is None and "must be quoted" in str(problems[0]), problems


def test_deep_nesting_is_an_error_at_a_line_not_a_crash() -> None:
    data, problems = parse_yaml("hooks: {}\nrules: " + "[" * 300 + "]" * 300 + "\n", "a.yaml")
    assert data is None
    (p,) = problems
    assert (p.file, p.line) == ("a.yaml", 2) and "nested too deeply" in p.message


def test_a_control_character_is_an_error_at_its_line_not_a_crash() -> None:
    data, problems = parse_yaml('hooks:\n  h1:\n    description: "a\x01b"\n', "a.yaml")
    assert data is None
    (p,) = problems
    assert p.line == 3 and "control character (#x0001)" in p.message


@pytest.mark.parametrize("odd", ["\u2028", "\u2029", "\x85"])
def test_lines_count_as_an_editor_counts_them_past_unicode_line_separators(odd: str) -> None:
    """YAML takes U+2028, U+2029 and NEL for line breaks; no editor or `grep -n` does."""
    text = f'hooks:\n  h1:\n    description: "x{odd}y"\n    max_body: lots\nrules: []\n'
    data, problems = parse_yaml(text, "a.yaml")
    assert problems == []
    assert line_of(data, ("hooks", "h1", "max_body")) == 4
    crlf = text.replace("\n", "\r\n")
    assert line_of(parse_yaml(crlf, "a.yaml")[0], ("hooks", "h1", "max_body")) == 4


@pytest.mark.parametrize(("text", "line", "value"), [
    ("argv:\n  - x\n  - {{ payload.ref }}\n", 3, {"argv": ["x", "{{ payload.ref }}"]}),
    ("env: {A: {{ payload.a }}}\n", 1, {"env": {"A": "{{ payload.a }}"}}),
    ("dedup: {{payload.id}}\n", 1, {"dedup": "{{payload.id}}"}),
])
def test_a_template_written_unquoted_says_to_quote_it(text: str, line: int, value: Any) -> None:
    """YAML reads `{{ x }}` as a mapping in a mapping: one error saying to quote it (the
    schema's `must be a string, got a mapping` pointed elsewhere), and the text as the value."""
    data, problems = parse_yaml(text, "f.yaml")
    assert data == value
    assert [(p.line, "quote the whole value" in p.message) for p in problems] == [(line, True)]


def test_a_template_unquoted_with_text_after_it_says_to_quote_it() -> None:
    _, problems = parse_yaml("argv:\n  - x\n  - {{ payload.ref }}-suffix\n", "f.yaml")
    (problem,) = problems
    assert problem.line == 3 and "quote the whole value" in problem.message, problem
    # A mapping written on purpose is one.
    data, problems = parse_yaml("env: {A: {B: }}\n", "f.yaml")
    assert data["env"] == {"A": {"B": None}} and not problems


@pytest.mark.parametrize(("text", "said", "written"), [
    # The hint's own `("{{ x | default("a") }}")` was a YAML error (nested double quotes).
    ('dedup: {{ payload.x | default("a") }}\n', "quote the whole value (",
     """'{{ payload.x | default("a") }}'"""),
    ("dedup: {{ payload.x | default('a') }}\n", "quote the whole value (",
     '"{{ payload.x | default(\'a\') }}"'),
    # A when's braces quoted are still an error: it is an expression already.
    ('when: {{ payload.status == "firing" }}\n',
     "not a condition: a `when` is an expression already: write it without the braces (",
     'when: payload.status == "firing"'),
    ("when:\n  not: {{ payload.draft }}\n", "write it without the braces (", "not: payload.draft"),
    ('when: {{ "x" in payload.tags }}\n', "(a `when` is an expression already: write it without "
                                          "{{ }}, ", "when: payload.x == 'a'"),
    ("when: {{ payload.x }} == 1\n", "(a `when` is an expression already: write it without {{ }}, ",
     "when: payload.x == 'a'"),
])
def test_an_unquoted_template_hint_is_itself_valid_yaml(text: str, said: str, written: str) -> None:
    _, problems = parse_yaml(text, "f.yaml")
    (problem,) = problems
    assert said in problem.message and written in problem.message, problem
    data, problems = parse_yaml(written if ": " in written[:6] else f"k: {written}", "f.yaml")
    assert not problems and isinstance(next(iter(data.values())), str), problems


def test_a_backslash_in_a_double_quoted_value_says_to_use_single_quotes() -> None:
    """`when: "\\[skip ci\\]" not in ...`: YAML's `unknown escape character '['` alone."""
    _, problems = parse_yaml('when: "\\[skip ci\\]" not in payload.message\n', "f.yaml")
    (problem,) = problems
    assert "unknown escape character '['" in problem.message, problem
    assert "a backslash starts an escape: put the value in single quotes" in problem.message
    assert '`in` and `==` compare text as it is, `"[skip ci]" in ...`' in problem.message


def test_a_lone_surrogate_is_an_error_at_its_line() -> None:
    """No store holds one: a rule named so failed every delivery it matched with a 500.
    PyYAML does not join an escaped pair either; `\\U0001F600` is the way to write one."""
    text = 'rules:\n  - name: "sur\\ud800x"\n    env: {A: "\\ud83d\\ude00"}\n  - name: ok\n'
    _, problems = parse_yaml(text, "f.yaml")
    assert sorted(p.line for p in problems) == [2, 3], problems
    assert all("lone surrogate" in p.message for p in problems)
    assert parse_yaml('a: "\\U0001F600"\n', "f.yaml") == ({"a": "\U0001F600"}, [])


@pytest.mark.parametrize(("text", "line", "said"), [
    ('rules:\n  - name: r1\n    when event == "push"\n    run: {}\n', 3, "no `:` after its key"),
    ("rules:\n  - name r1\n\n    hook: h\n", 2, "no `: ` after its key"),
])
def test_a_key_without_its_colon_is_said_at_its_own_line(text: str, line: int, said: str) -> None:
    """YAML gave up a line later, and the hint said to quote a `when` that had no colon."""
    _, problems = parse_yaml(text, "f.yaml")
    (problem,) = problems
    assert (problem.line, said in problem.message) == (line, True), problem


@pytest.mark.parametrize("text", [
    'rules:\n  - name: r1\n    when:\n      - event == "push"\n    description: deploy: prod\n',
    "rules:\n  -\n    description: a: b\n",
])
def test_a_value_holding_a_colon_is_still_said_to_need_quotes(text: str) -> None:
    """The line before has no `:` (a list item, a bare `-`), but the `: ` at fault is this
    line's second: the value's, not a key's (the review's case)."""
    _, problems = parse_yaml(text, "f.yaml")
    (problem,) = problems
    assert "must be quoted" in problem.message and problem.line == text.count("\n"), problem
