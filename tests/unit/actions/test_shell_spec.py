"""Shell specs: load-time normalization and the argv/env/cwd built from a rendered spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hookrunner.actions.shell import build_invocation, normalize_shell, split_command
from hookrunner.errors import ActionError, ConfigError
from hookrunner.redact import PROGRAM_TEMPLATED
from hookrunner.rules.yamlsrc import parse_yaml


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("deploy.sh a b", ["deploy.sh", "a", "b"]),
        ("deploy.sh 'a b' \"c d\"", ["deploy.sh", "a b", "c d"]),
        ("deploy.sh {{ payload.ref }}", ["deploy.sh", "{{ payload.ref }}"]),
        ("x --ref={{ payload['ref'] }}", ["x", "--ref={{ payload['ref'] }}"]),
        ("x '{{ a }} and {{ b }}'", ["x", "{{ a }} and {{ b }}"]),
        ("x {{ a ~ ' ; ' ~ b }} y", ["x", "{{ a ~ ' ; ' ~ b }}", "y"]),
        ("x {% if a %}1{% endif %}", ["x", "{% if a %}1{% endif %}"]),
        ("x '{% if a %}yes{% else %}no way{% endif %}'", ["x", "{% if a %}yes{% else %}no way{% endif %}"]),
        ("a {% raw %}{% if %}{% endraw %}", ["a", "{% raw %}{% if %}{% endraw %}"]),
        ("x {% set y = 1 %}{{ y }}", ["x", "{% set y = 1 %}{{ y }}"]),
        ("x {% if a % 2 %}odd{% endif %}", ["x", "{% if a % 2 %}odd{% endif %}"]),
        ("x ; rm -rf /", ["x", ";", "rm", "-rf", "/"]),  # no shell: just words
    ],
)
def test_command_is_split_before_templating_keeping_templates_whole(command: str, argv: list[str]) -> None:
    assert split_command(command) == argv


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"argv": ["a", "{{ x }}"]}, {"argv": ["a", "{{ x }}"]}),
        ({"argv": ["sleep", 3]}, {"argv": ["sleep", "3"]}),
        ({"command": "a {{ x }}"}, {"argv": ["a", "{{ x }}"]}),
        ({"argv": ["{{ x }}", "b"]}, {"argv": ["{{ x }}", "b"], "program_templated": True}),
        # review: `{% if %}` choosing between programs the rule writes out picks nothing.
        ({"command": "{% if x %}/bin/true{% else %}/bin/false{% endif %}"},
         {"argv": ["{% if x %}/bin/true{% else %}/bin/false{% endif %}"]}),
        (
            {"argv": ["a"], "env": {"REF": "{{ r }}", "N": 1}, "cwd": "sub", "stdin": "payload"},
            {"argv": ["a"], "env": {"REF": "{{ r }}", "N": "1"}, "cwd": "sub", "stdin": "payload"},
        ),
    ],
)
def test_normalize_accepts(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    assert normalize_shell(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message", "path"),
    [
        ({"argv": ["a"], "shell": True}, "unknown key 'shell'", ("shell",)),
        ({"argv": ["a"], "command": "a"}, "exactly one of", ()),
        ({}, "exactly one of", ()),
        ({"argv": "a b"}, "non-empty list", ("argv",)),
        ({"argv": []}, "non-empty list", ("argv",)),
        ({"argv": ["a", {"b": 1}]}, "argv[1] must be a string", ("argv", 1)),
        ({"argv": ["a", None]}, "argv[1] must be a string", ("argv", 1)),
        ({"argv": ["a", True]}, "argv[1] must be a string", ("argv", 1)),
        ({"command": "a 'unbalanced"}, "shell.command:", ("command",)),
        ({"command": "x {% if payload.a %}yes{% else %}no way{% endif %}"},
         "shell.command: a {% if %} block has a space in it, where the command is split into "
         "words ('{% if payload.a %}yes{% else %}no' is one): quote the whole block", ("command",)),
        ({"command": "x {%- for i in payload.l %}{{ i }} {% endfor %}"}, "{% for %} block",
         ("command",)),
        ({"command": "x {% set y %}b c{% endset %}"}, "{% set %} block", ("command",)),
        ({"command": "   "}, "must not be empty", ("command",)),
        ({"command": ["a"]}, "must be a string", ("command",)),
        ({"argv": ["a"], "env": ["A=1"]}, "env must be a mapping", ("env",)),
        ({"argv": ["a"], "env": {"BAD-NAME": "1"}}, "invalid name", ("env", "BAD-NAME")),
        # Each bad name said at once, not one a `check`.
        ({"argv": ["a"], "env": {"OK": "1", "A=B": "1", "": "1", "1ABC": "1"}},
         "shell.env: invalid names 'A=B', '', '1ABC'", ("env", "A=B")),
        ({"argv": ["a"], "env": {"A": [1]}}, "env.A must be a string", ("env", "A")),
        ({"argv": ["a"], "cwd": 5.5j}, "cwd must be a string", ("cwd",)),
        ({"argv": ["a"], "stdin": "body"}, "stdin must be 'payload'", ("stdin",)),
    ],
)
def test_normalize_rejects(raw: dict[str, Any], message: str, path: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        normalize_shell(raw)
    assert message in err.value.message
    assert err.value.path == path


HOSTILE = ["; rm -rf /", "$(id)", "`id`", "a\nb", "-rf", "--help", "{{ 7*7 }}", "a b", "*", ""]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_rendered_value_stays_one_literal_argument(tmp_path: Path, value: str) -> None:
    inv = build_invocation(
        {"argv": ["echo", value, "end"]}, root=tmp_path, base_env={"PATH": "/bin:/usr/bin"}
    )
    assert inv.argv[1:] == [value, "end"]
    assert inv.argv[0].endswith("/echo")


@pytest.mark.parametrize(
    ("value", "arg"),
    [(7, "7"), (1.5, "1.5"), (True, "true"), (None, "null"), ({"a": [1]}, '{"a": [1]}')],
)
def test_non_string_values_are_stringified(tmp_path: Path, value: Any, arg: str) -> None:
    inv = build_invocation({"argv": ["echo", value]}, root=tmp_path, base_env={"PATH": "/bin"})
    assert inv.argv[1] == arg


def test_program_with_slash_resolves_under_root(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    inv = build_invocation({"argv": ["scripts/x.sh"]}, root=tmp_path, base_env={})
    assert inv.argv[0] == str(tmp_path.resolve() / "scripts" / "x.sh")


def test_program_escaping_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match="outside --root"):
        build_invocation({"argv": ["../x.sh"]}, root=tmp_path, base_env={})


def test_unknown_bare_program_is_left_for_the_process_to_report(tmp_path: Path) -> None:
    inv = build_invocation({"argv": ["no-such-tool-xyz"]}, root=tmp_path, base_env={"PATH": "/bin"})
    assert inv.argv == ["no-such-tool-xyz"]


def test_env_cwd_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    rendered = {"argv": ["x"], "env": {"REF": "main", "N": 3}, "cwd": "sub", "stdin": "payload"}
    inv = build_invocation(rendered, root=tmp_path, base_env={"PATH": "/bin", "HOME": "/h"})
    assert inv.env == {"PATH": "/bin", "HOME": "/h", "REF": "main", "N": "3"}
    assert inv.cwd == tmp_path.resolve() / "sub"
    assert inv.stdin is True


def test_cwd_defaults_to_root_and_may_not_leave_it(tmp_path: Path) -> None:
    assert build_invocation({"argv": ["x"]}, root=tmp_path, base_env={}).cwd == tmp_path.resolve()
    with pytest.raises(ActionError):
        build_invocation({"argv": ["x"], "cwd": "/etc"}, root=tmp_path, base_env={})


def test_numbers_in_arguments_and_env_stay_as_written() -> None:
    """YAML reads 0755 as 493, 3.10 as 3.1 and 12:30 as 750: an argument is text, and the
    action got the number's text instead of what the rule says."""
    data, problems = parse_yaml(
        "argv: [chmod, 0755, 3.10, '12:30', 12:30, 1_000, 1e3, 7, 1.5, 0x1F]\n"
        "env: {UMASK: 0022, N: 42}\n", "r.yaml")
    assert problems == []
    spec = normalize_shell(data)
    assert spec["argv"] == ["chmod", "0755", "3.10", "12:30", "12:30", "1_000", "1e3", "7", "1.5",
                            "0x1F"]
    assert spec["env"] == {"UMASK": "0022", "N": "42"}


def test_a_rule_cannot_set_the_runs_own_variables() -> None:
    """HOOKRUNNER_RUN_ID finds a run's processes at cancel and timeout: a rule setting it
    (from a payload value, even) hid detached processes from them."""
    with pytest.raises(ConfigError, match="HOOKRUNNER_RUN_ID: the run's identity is "):
        normalize_shell({"argv": ["true"], "env": {"HOOKRUNNER_RUN_ID": "{{ payload.id }}"}})
    # A name of the user's own under the prefix is theirs (a rule of an earlier version).
    assert normalize_shell({"argv": ["true"], "env": {"HOOKRUNNER_DEBUG": "1"}})["env"] == {
        "HOOKRUNNER_DEBUG": "1"}
    # A spec stored before that was refused: the run's own values win.
    inv = build_invocation({"argv": ["true"], "env": {"HOOKRUNNER_RUN_ID": "fake", "X": "1"}},
                           root=Path("/"), base_env={"PATH": "/bin", "HOOKRUNNER_RUN_ID": "r1"})
    assert inv.env["HOOKRUNNER_RUN_ID"] == "r1" and inv.env["X"] == "1"


@pytest.mark.parametrize(("program", "refused"), [
    ("touch", True), ("/usr/bin/touch", True), ("scripts/run.sh", False), ("./run.sh", False),
    ("{root}/run.sh", False),  # review: an absolute path under --root is a file under it
])
def test_a_templated_program_must_name_a_file_under_the_root(
        tmp_path: Path, program: str, refused: bool) -> None:
    """audit: `argv: ["{{ payload.prog }}"]` ran any program on PATH, or any absolute path."""
    rendered = {"argv": [program.format(root=tmp_path)], "program_templated": True}
    if refused:
        with pytest.raises(ActionError, match="the program is templated"):
            build_invocation(rendered, root=tmp_path, base_env={"PATH": "/usr/bin:/bin"})
    else:
        inv = build_invocation(rendered, root=tmp_path, base_env={"PATH": "/usr/bin:/bin"})
        assert Path(inv.argv[0]).is_relative_to(tmp_path)
    # A program the rule writes out is looked up as it always was.
    plain = build_invocation({"argv": ["touch"]}, root=tmp_path, base_env={"PATH": "/usr/bin:/bin"})
    assert plain.argv[0].endswith("/touch")


def test_an_env_name_with_a_final_newline_is_refused() -> None:
    """`^...$` let a final newline through: the action got a variable named `A\\n`."""
    with pytest.raises(ConfigError, match="env"):
        normalize_shell({"argv": ["true"], "env": {"A\n": "x"}})
    assert normalize_shell({"argv": ["true"], "env": {"A_1": "x"}})["env"] == {"A_1": "x"}


@pytest.mark.parametrize(("value", "refused"), [
    ("deploy", False), ("a/../deploy", True),
    ("../uploads/x", True), ("../scripts/deploy", True), ("x/../../uploads/x", True),
])
def test_a_templated_program_stays_in_the_directory_the_rule_writes(
        tmp_path: Path, value: str, refused: bool) -> None:
    """`scripts/{{ payload.name }}.sh` with `../uploads/x` ran any *.sh under --root."""
    for d in ("scripts", "uploads", "scripts/a"):
        (tmp_path / d).mkdir(exist_ok=True)
    for f in ("scripts/deploy.sh", "uploads/x.sh"):
        (tmp_path / f).write_text("#!/bin/sh\n")
        (tmp_path / f).chmod(0o755)
    spec = normalize_shell({"argv": ["scripts/{{ payload.name }}.sh"]})
    rendered = {**spec, "argv": [f"scripts/{value}.sh"]}
    # Written from `./` (the review's case: every run was refused), or `./scripts/`.
    for written, program in (("./{{ payload.n }}", "./scripts/deploy.sh"),
                             ("./scripts/{{ payload.n }}", "./scripts/deploy.sh")):
        dotted = normalize_shell({"argv": [written]})
        assert build_invocation({**dotted, "argv": [program]}, root=tmp_path,
                                base_env={"PATH": "/bin"}).argv[0].endswith("scripts/deploy.sh")
    if refused:
        with pytest.raises(ActionError, match="stay in that directory"):
            build_invocation(rendered, root=tmp_path, base_env={"PATH": "/bin"})
    else:
        assert build_invocation(rendered, root=tmp_path, base_env={"PATH": "/bin"}).argv[0] \
            == str(tmp_path / "scripts/deploy.sh")


def test_a_templated_program_keeps_the_name_the_rule_writes(tmp_path: Path) -> None:
    """`scripts/deploy-{{ payload.env }}.sh` of `x/../cleanup` ran `scripts/cleanup.sh`: inside
    `scripts/`, but not a `deploy-` script. A `..` in the value is refused, as for a playbook."""
    (tmp_path / "scripts").mkdir()
    for name in ("deploy-prod.sh", "cleanup.sh"):
        (tmp_path / "scripts" / name).write_text("#!/bin/sh\n")
        (tmp_path / "scripts" / name).chmod(0o755)
    spec = normalize_shell({"argv": ["scripts/deploy-{{ payload.env }}.sh"]})
    with pytest.raises(ActionError, match="stay in that directory"):
        build_invocation({**spec, "argv": ["scripts/deploy-x/../cleanup.sh"]}, root=tmp_path,
                         base_env={"PATH": "/bin"})
    # With no directory before the `{{` (the review's case): `deploy-x/../cleanup.sh`.
    (tmp_path / "deploy-x").mkdir()
    bare = normalize_shell({"argv": ["deploy-{{ payload.env }}.sh"]})
    with pytest.raises(ActionError, match=r"may hold no '\.\.'"):
        build_invocation({**bare, "argv": ["deploy-x/../scripts/cleanup.sh"]}, root=tmp_path,
                         base_env={"PATH": "/bin"})
    assert build_invocation({**spec, "argv": ["scripts/deploy-prod.sh"]}, root=tmp_path,
                            base_env={"PATH": "/bin"}).argv[0] == str(tmp_path / "scripts/deploy-prod.sh")


def test_a_cwd_template_that_renders_empty_is_refused_not_taken_for_root(tmp_path: Path) -> None:
    spec = normalize_shell({"argv": ["true"], "cwd": "{{ payload.dir }}"})
    for empty in ("", None):
        with pytest.raises(ActionError, match="empty"):
            build_invocation({**spec, "cwd": empty}, root=tmp_path, base_env={"PATH": "/bin"})


def test_a_command_holding_the_splitters_own_placeholder_characters_keeps_them() -> None:
    """U+E000/U+E001 mark the templates while a command is split: the command's own were a
    traceback from `check` and a reload that failed with no line."""
    assert split_command("prog \ue0000\ue001 '{{ payload.a }} x'") == [
        "prog", "\ue0000\ue001", "{{ payload.a }} x"]


def test_a_program_that_is_a_link_under_root_starts_by_the_name_the_rule_writes(
        tmp_path: Path) -> None:
    """review: `scripts/deploy -> multi.sh` ran as multi.sh, so a multi-call tool reading
    its `$0` did the wrong thing; the link is still checked to stay under --root."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "multi.sh").write_text("#!/bin/sh\n")
    (tmp_path / "scripts" / "deploy").symlink_to("multi.sh")
    (tmp_path / "scripts" / "out").symlink_to("/bin/true")
    inv = build_invocation({"argv": ["scripts/deploy"]}, root=tmp_path, base_env={})
    assert inv.argv[0] == f"{tmp_path}/scripts/deploy"
    with pytest.raises(ActionError, match="outside --root"):
        build_invocation({"argv": ["scripts/out"]}, root=tmp_path, base_env={})
    # A templated one starts by its checked target (the payload chose it).
    inv = build_invocation({"argv": ["scripts/deploy"], PROGRAM_TEMPLATED: "scripts/"},
                           root=tmp_path, base_env={})
    assert inv.argv[0] == str(tmp_path.resolve() / "scripts" / "multi.sh")


def test_a_program_path_ending_with_a_slash_is_refused(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "x.sh").write_text("#!/bin/sh\n")
    with pytest.raises(ActionError, match="ends with '/'"):
        build_invocation({"argv": ["scripts/x.sh/"]}, root=tmp_path, base_env={})


def test_a_program_through_a_symlink_loop_is_refused_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "a").symlink_to("b")
    (tmp_path / "scripts" / "b").symlink_to("a")
    for spec in ({"argv": ["scripts/a/x"]}, {"argv": ["scripts/a/x"], PROGRAM_TEMPLATED: "scripts/"},
                 {"argv": ["echo"], "cwd": "scripts/a"}):
        with pytest.raises(ActionError, match="symlink loop"):
            build_invocation(spec, root=tmp_path, base_env={"PATH": "/bin"})
