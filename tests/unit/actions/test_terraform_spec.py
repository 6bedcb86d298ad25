"""Terraform specs: normalization, the concurrency key, environment, argv and output parsing."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from hookrunner.actions.terraform import (
    JsonLines,
    build_env,
    command_argv,
    concurrency_key,
    normalize_terraform,
    readable_outputs,
    remove_vars,
    vars_json,
    write_vars,
)
from hookrunner.errors import ActionError, ConfigError


def test_normalize_accepts_a_full_spec() -> None:
    raw = {
        "dir": "terraform/scaling",
        "command": "apply",
        "workspace": "{{ payload.env }}",
        "vars": {"replicas": "{{ payload.replicas }}", "n": 2},
        "var_files": "vars/a.tfvars",
        "binary": "tofu",
    }
    assert normalize_terraform(raw) == {
        **raw,
        "vars": {"replicas": "{{ payload.replicas }}", "n": "2"},
        "var_files": ["vars/a.tfvars"],
    }


def test_literal_bools_lists_and_mappings_in_vars_keep_their_type() -> None:
    """probe: `check` refused `vars: {zones: [a, b]}` ("must be a string, got a list"),
    though a template's list went through as one, as the README says JSON passes it."""
    raw = {"dir": "d", "command": "plan",
           "vars": {"zones": ["a", "{{ payload.z }}"], "tags": {"team": "ops"}, "on": True,
                    "n": 2, "name": "{{ payload.name }}"}}
    normalized = normalize_terraform(raw)
    assert normalized["vars"] == {"zones": ["a", "{{ payload.z }}"], "tags": {"team": "ops"},
                                  "on": True, "n": "2", "name": "{{ payload.name }}"}
    assert list(normalized["vars"]) == ["zones", "tags", "on", "n", "name"]  # as written
    assert json.loads(vars_json({"zones": ["a", "b"], "on": True})) == \
        {"zones": ["a", "b"], "on": True}
    with pytest.raises(ConfigError, match="invalid name") as err:
        normalize_terraform({**raw, "vars": {"a b": [1]}})
    assert err.value.path == ("vars", "a b")


@pytest.mark.parametrize(
    ("raw", "message", "path"),
    [
        ({"command": "plan"}, "'dir' is required", ("dir",)),
        ({"dir": "d"}, "'command' is required", ("command",)),
        ({"dir": "d", "command": "import"}, "must be one of plan, apply, destroy", ("command",)),
        ({"dir": "d", "command": "plan", "backend": "s3"}, "unknown key 'backend'", ("backend",)),
        ({"dir": "d", "command": "plan", "vars": {"a b": 1}}, "invalid name", ("vars", "a b")),
        ({"dir": "d", "command": "plan", "vars": [1]}, "must be a mapping", ("vars",)),
        ({"dir": "d", "command": "plan", "binary": "/tmp/tf"}, "terraform or tofu", ("binary",)),
        ({"dir": "d", "command": "plan", "var_files": [{}]}, "must be a string", ("var_files", 0)),
    ],
)
def test_normalize_rejects(raw: dict[str, Any], message: str, path: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        normalize_terraform(raw)
    assert message in err.value.message
    assert err.value.path == path


@pytest.mark.parametrize(
    ("rendered", "key"),
    [
        ({"dir": "terraform/scaling"}, "terraform:terraform/scaling:default"),
        ({"dir": "./terraform/scaling/", "workspace": "prod"}, "terraform:terraform/scaling:prod"),
        ({"dir": "terraform/scaling", "workspace": ""}, "terraform:terraform/scaling:default"),
    ],
)
def test_concurrency_key_is_dir_and_workspace(rendered: dict[str, Any], key: str) -> None:
    assert concurrency_key(rendered) == key


def test_env_carries_the_automation_flags_and_what_was_passed() -> None:
    # `base` is the action's environment: only names the operator passed (--pass-env).
    base = {"PATH": "/bin", "TF_CLI_CONFIG_FILE": "/etc/tf.rc", "TF_VAR_db_password": "pw"}
    assert build_env(base, "prod") == {
        "PATH": "/bin",
        "TF_CLI_CONFIG_FILE": "/etc/tf.rc",
        "TF_VAR_db_password": "pw",
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        "TF_WORKSPACE": "prod",
    }


def test_vars_go_in_a_private_json_file_that_goes_with_the_runs_empty_dirs(tmp_path: Path) -> None:
    work = tmp_path / "work" / "run1" / "1"
    variables = {"replicas": 3, "tags": {"a": "b"}, "name": "${1+1}", "db_password": "pw"}
    path = write_vars(work, variables)
    assert path.is_absolute() and path.name.endswith(".tfvars.json")  # Terraform reads JSON
    assert json.loads(path.read_text()) == variables  # typed, and no template escapes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {stat.S_IMODE(d.stat().st_mode) for d in (work, work.parent)} == {0o700}
    remove_vars(path)
    assert list(tmp_path.iterdir()) == [tmp_path / "work"]  # the run's dirs go, work/ stays


def test_rendered_var_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match="invalid variable name"):
        write_vars(tmp_path / "w", {"a=b": 1})
    assert not (tmp_path / "w").exists()


def test_command_argv() -> None:
    assert command_argv("/tf", "plan", []) == ["/tf", "plan", "-input=false", "-no-color", "-json"]
    assert command_argv("/tf", "destroy", [])[-1] == "-auto-approve"


def test_json_lines_become_readable_across_chunk_boundaries() -> None:
    out: list[bytes] = []
    parser = JsonLines(out.append)
    lines = [
        {"@message": "Terraform 1.11.4", "type": "version"},
        {"@message": "Plan: 1 to add", "type": "change_summary", "changes": {"add": 1}},
        {
            "@message": "Error: Bad",
            "type": "diagnostic",
            "diagnostic": {"severity": "error", "summary": "Bad", "detail": "why\n\nwhere"},
        },
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines) + b"not json"
    for i in range(0, len(data), 7):
        parser.feed(data[i : i + 7])
    parser.flush()
    assert b"".join(out).decode() == (
        "Terraform 1.11.4\nPlan: 1 to add\nError: Bad\n  why\n\n  where\nnot json\n"
    )
    assert parser.errors == ["Bad"]
    assert parser.changes == {"add": 1}


def test_sensitive_outputs_are_not_stored() -> None:
    raw = json.dumps({"a": {"sensitive": False, "value": [1]}, "s": {"sensitive": True, "value": "x"}})
    assert readable_outputs(raw.encode()) == {"a": [1], "s": "(sensitive)"}
