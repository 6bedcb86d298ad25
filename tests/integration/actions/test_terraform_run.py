"""The terraform runner against the real CLI, with a configuration of variables and outputs only."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
from pathlib import Path

import pytest

from hookrunner.actions import RUNNERS
from hookrunner.errors import ActionError

TF = RUNNERS["terraform"]
MAIN_TF = """
variable "replicas" {
  type = number
  validation {
    condition     = var.replicas < 10
    error_message = "Replicas must be below 10."
  }
}
variable "name" {
  type    = string
  default = "web"
}
variable "token" {
  type      = string
  default   = ""
  sensitive = true
}
output "replicas" { value = var.replicas }
output "name" { value = var.name }
output "workspace" { value = terraform.workspace }
output "token" {
  value     = var.token
  sensitive = true
}
"""

@pytest.fixture(autouse=True)
def _terraform_on_path() -> None:
    # The real CLI is part of the test set-up (`make test` installs one where none is on PATH).
    assert shutil.which("terraform"), "no terraform on PATH: run `make test`, which installs it"


@pytest.fixture(autouse=True)
def _no_cli_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CLI_CONFIG_FILE", raising=False)


@pytest.fixture
def tfdir(harness) -> Path:
    d = harness.root / "terraform" / "scaling"
    d.mkdir(parents=True)
    (d / "main.tf").write_text(MAIN_TF)
    return d


async def test_apply_passes_vars_and_stores_outputs(harness, tfdir: Path) -> None:
    spec = {"dir": "terraform/scaling", "command": "apply", "vars": {"replicas": 3, "token": "t0k"}}
    result = await TF.run(spec, harness.ctx())
    assert result.outcome == "succeeded", harness.log_text()
    assert result.outputs["outputs"] == {
        "replicas": 3,
        "name": "web",
        "workspace": "default",
        "token": "(sensitive)",
    }
    log = harness.log_text()
    assert "Apply complete! Resources: 0 added, 0 changed, 0 destroyed." in log
    assert '"@message"' not in log  # -json lines are made readable
    assert not list(harness.root.rglob("*.tfvars*"))  # vars never land in a file under root
    assert not list(harness.tmp.glob("run.work/*"))  # and their file in the work dir is gone


async def test_a_passed_tf_var_reaches_terraform_and_the_rules_vars_win(
    harness, tfdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --pass-env TF_VAR_token` keeps a secret variable out of the rules and payloads."""
    monkeypatch.setenv("TF_VAR_token", "from-env")
    monkeypatch.setenv("TF_VAR_name", "env-name")
    length = 'output "token_length" { value = nonsensitive(length(var.token)) }\n'
    (tfdir / "main.tf").write_text(MAIN_TF + length)
    ctx = harness.ctx(pass_env=("TF_VAR_token", "TF_VAR_name"))
    spec = {"dir": "terraform/scaling", "command": "apply", "vars": {"replicas": 1, "name": "rule"}}
    result = await TF.run(spec, ctx)
    assert result.outcome == "succeeded", harness.log_text()
    outputs = result.outputs["outputs"]
    assert outputs["token_length"] == len("from-env") and outputs["name"] == "rule"


async def test_plan_runs_nothing_and_reports_changes(harness, tfdir: Path) -> None:
    result = await TF.run(
        {"dir": "terraform/scaling", "command": "plan", "vars": {"replicas": 2}}, harness.ctx()
    )
    assert result.outcome == "succeeded", harness.log_text()
    assert result.outputs["changes"]["operation"] == "plan"
    assert "outputs" not in result.outputs
    assert not (tfdir / "terraform.tfstate").exists()


async def test_each_workspace_value_gets_its_own_state(harness, tfdir: Path) -> None:
    for ws, replicas in (("staging", 1), ("prod", 5), ("staging", 2)):
        spec = {
            "dir": "terraform/scaling",
            "command": "apply",
            "workspace": ws,
            "vars": {"replicas": replicas},
        }
        result = await TF.run(spec, harness.ctx(name=f"{ws}{replicas}"))
        assert result.outcome == "succeeded", harness.log_text(f"{ws}{replicas}")
        assert result.outputs["outputs"]["workspace"] == ws
        assert result.outputs["outputs"]["replicas"] == replicas
    assert sorted(p.name for p in (tfdir / "terraform.tfstate.d").iterdir()) == ["prod", "staging"]
    assert "creating workspace staging" in harness.log_text("staging1")
    assert "creating workspace" not in harness.log_text("staging2")
    # Creating one selected nothing: a person's `terraform apply` in the dir stays on default.
    assert not (tfdir / ".terraform" / "environment").exists()


@pytest.mark.parametrize("ws", ["dev\n", "w" * 91, "../x", "a b", "-help", ""])
async def test_a_workspace_name_terraform_would_refuse_is_refused_first(
    harness, tfdir: Path, ws: str,
) -> None:
    spec = {"dir": "terraform/scaling", "command": "plan", "workspace": ws, "vars": {"replicas": 1}}
    if ws == "":  # no name: the default workspace, as with no `workspace` at all
        assert (await TF.run(spec, harness.ctx())).outcome == "succeeded", harness.log_text()
        return
    with pytest.raises(ActionError, match="invalid workspace name"):
        await TF.run(spec, harness.ctx())


@pytest.mark.parametrize(("ws", "name"), [(0, "0"), (False, "false")])
async def test_a_workspace_value_that_is_falsy_but_given_is_that_workspace_not_default(
    harness, tfdir: Path, ws: object, name: str,
) -> None:
    """probe: a payload's env id `0` (or `false`) applied to `default`, which may hold
    production's state: only no value (none, "") means the default workspace."""
    from hookrunner.actions.terraform import concurrency_key

    spec = {"dir": "terraform/scaling", "command": "plan", "workspace": ws, "vars": {"replicas": 1}}
    assert concurrency_key(spec) == f"terraform:terraform/scaling:{name}"
    assert (await TF.run(spec, harness.ctx())).outcome == "succeeded", harness.log_text()
    assert f"(workspace {name})" in harness.log_text(), harness.log_text()


async def test_failing_apply_is_failed_with_the_reason_in_the_log(harness, tfdir: Path) -> None:
    spec = {"dir": "terraform/scaling", "command": "apply", "vars": {"replicas": 30}}
    result = await TF.run(spec, harness.ctx())
    assert result.outcome == "failed"
    assert result.reason == "apply: exit 1 (Invalid value for variable)"
    log = harness.log_text()
    assert "Error: Invalid value for variable" in log
    assert "  Replicas must be below 10." in log


async def test_var_files_under_root(harness, tfdir: Path) -> None:
    (harness.root / "vars").mkdir()
    (harness.root / "vars" / "prod.tfvars").write_text('replicas = 4\nname = "api"\n')
    spec = {"dir": "terraform/scaling", "command": "apply", "var_files": ["vars/prod.tfvars"]}
    result = await TF.run(spec, harness.ctx())
    assert result.outcome == "succeeded", harness.log_text()
    assert result.outputs["outputs"]["replicas"] == 4
    assert result.outputs["outputs"]["name"] == "api"


@pytest.mark.parametrize(("command", "var_file"),
                         [("plan", True), ("apply", True), ("destroy", True), ("apply", False)])
async def test_the_rules_vars_beat_tfvars_files_and_var_files(
    harness, tfdir: Path, command: str, var_file: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As TF_VAR_ variables, the rule's vars lost to terraform.tfvars, *.auto.tfvars and
    `var_files`: the run record said replicas 6, and 2 was applied (or 30 failed validation)."""
    if command == "destroy":  # (with no state, destroy reads no variable)
        spec = {"dir": "terraform/scaling", "command": "apply", "vars": {"replicas": 1}}
        assert (await TF.run(spec, harness.ctx(name="applied"))).outcome == "succeeded"
    (tfdir / "terraform.tfvars").write_text("replicas = 2\n")
    (tfdir / "a.auto.tfvars").write_text("replicas = 30\n")  # invalid: fails unless beaten
    (harness.root / "vars").mkdir()
    (harness.root / "vars" / "common.tfvars").write_text('replicas = 31\nname = "common"\n')
    monkeypatch.setenv("TF_VAR_replicas", "4")
    spec = {"dir": "terraform/scaling", "command": command, "vars": {"replicas": 6},
            "var_files": ["vars/common.tfvars"] if var_file else []}
    result = await TF.run(spec, harness.ctx(pass_env=("TF_VAR_replicas",)))
    assert result.outcome == "succeeded", harness.log_text()
    if command == "apply":  # what the rule says, and the var file's other values
        assert result.outputs["outputs"]["replicas"] == 6
        assert result.outputs["outputs"]["name"] == ("common" if var_file else "web")
    assert not list(harness.tmp.glob("run.work/*"))


async def test_destroy(harness, tfdir: Path) -> None:
    spec = {"dir": "terraform/scaling", "command": "apply", "vars": {"replicas": 1}}
    assert (await TF.run(spec, harness.ctx(name="a"))).outcome == "succeeded"
    spec["command"] = "destroy"
    result = await TF.run(spec, harness.ctx(name="d"))
    assert result.outcome == "succeeded", harness.log_text("d")
    assert "Destroy complete!" in harness.log_text("d")


async def test_missing_binary_fails_with_a_reason(harness, tfdir: Path) -> None:
    ctx = harness.ctx()
    # A PATH that holds no tofu, whatever this machine has installed.
    ctx = dataclasses.replace(ctx, env={**ctx.env, "PATH": str(tfdir)})
    spec = {"dir": "terraform/scaling", "command": "plan", "binary": "tofu"}
    result = await TF.run(spec, ctx)
    assert (result.outcome, result.reason) == ("failed", "tofu not found on PATH")


async def test_a_failed_init_names_terraforms_error(harness, tfdir: Path) -> None:
    (tfdir / "main.tf").write_text('resource "x" {}\n')  # a resource needs two labels
    result = await TF.run({"dir": "terraform/scaling", "command": "plan"}, harness.ctx())
    assert result.outcome == "failed"
    assert result.reason == "init: exit 1 (Missing name for resource)", result.reason
    log = harness.log_text()
    assert "Error: Missing name for resource" in log and "\n\n" in log  # output as it came


COMPLEX_TF = """
variable "l" { type = list(string) }
variable "m" { type = map(string) }
variable "a" { type = any }
variable "s" { type = string }
output "l" { value = var.l }
output "m" { value = var.m }
output "a" { value = var.a }
output "s" { value = var.s }
"""


async def test_payload_strings_in_list_and_object_vars_are_never_evaluated(harness) -> None:
    """A list or object var in HCL (as TF_VAR_ it was) is an expression: `${...}` in its
    strings would run (`${1+1}` became "2"); they arrive as the literal text, as in a plain
    string var."""
    d = harness.root / "terraform" / "complex"
    d.mkdir(parents=True)
    (d / "main.tf").write_text(COMPLEX_TF)
    values = {"l": ["${1+1}", "%{ if true }T%{ endif }", "$${x}", 'q"b\\c\nd'],
              "m": {"k": "${path.module}", "k2": '${upper("v")}', "${1+1}": "key"},
              "a": {"n": [1, {"z": "${2*3}"}]}, "s": '${file("/etc/passwd")}'}
    result = await TF.run({"dir": "terraform/complex", "command": "apply", "vars": values},
                          harness.ctx())
    assert result.outcome == "succeeded", harness.log_text()
    assert result.outputs["outputs"] == values


async def test_a_run_waiting_for_another_runs_init_of_its_dir_can_be_canceled_or_time_out(
    harness,
) -> None:
    """Runs on two workspaces of one dir take turns at `init`. One whose init hangs (a backend
    that never answers) must not make the other deaf to its cancel or its timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # connections wait in the backlog, never answered
    port = listener.getsockname()[1]
    d = harness.root / "terraform" / "hangs"
    d.mkdir(parents=True)
    (d / "main.tf").write_text('terraform {\n  backend "http" {\n'
                               f'    address = "http://127.0.0.1:{port}/state"\n  }}\n}}\n')
    spec = {"dir": "terraform/hangs", "command": "plan"}
    try:
        hung_ctx = harness.ctx(timeout=60, name="hung")
        hung = asyncio.ensure_future(TF.run(spec, hung_ctx))
        while "terraform init" not in harness.log_text("hung"):
            await asyncio.sleep(0.05)
        waiting_ctx = harness.ctx(timeout=60, name="waiting")
        waiting = asyncio.ensure_future(TF.run({**spec, "workspace": "other"}, waiting_ctx))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        waiting_ctx.cancel.set()
        result = await asyncio.wait_for(waiting, 5)
        assert (result.outcome, result.reason) == ("canceled", "canceled")
        assert "waiting for another run's init of this dir" in harness.log_text("waiting")
        late = await asyncio.wait_for(TF.run(spec, harness.ctx(timeout=0.5, name="late")), 5)
        assert (late.outcome, late.reason) == ("timed_out", "timed out after 0.5s")
        # The same dir and workspace waits for the whole run, whatever its concurrency key:
        # two applies on one state never overlap on a node.
        assert "waiting for another run of this dir and workspace" in harness.log_text("late")
        assert not hung.done()  # the lock is still the hung init's, as it should be
        hung_ctx.cancel.set()
        assert (await asyncio.wait_for(hung, 30)).outcome == "canceled"
    finally:
        listener.close()


async def test_outputs_over_the_cap_are_not_stored(harness) -> None:
    """`output -json` is stored with the run and listed with it: megabytes of it would be in
    every `GET /api/runs` and in memory. Past MAX_OUTPUTS the run says so instead."""
    from hookrunner.actions.terraform import MAX_OUTPUTS

    d = harness.root / "terraform" / "big"
    d.mkdir(parents=True)
    (d / "main.tf").write_text('output "big" {\n'
                               '  value = join("", [for i in range(600) : format("%02048d", i)])\n'
                               '}\noutput "small" { value = "s" }\n')
    result = await TF.run({"dir": "terraform/big", "command": "apply"}, harness.ctx())
    assert result.outcome == "succeeded", result.reason
    note = result.outputs["outputs"]
    assert isinstance(note, str) and note.startswith("not stored: `output -json` is ") \
        and f"over {MAX_OUTPUTS}" in note, note
    assert f"outputs {note}" in harness.log_text()


async def test_init_runs_again_when_the_configuration_changes_and_not_on_every_run(
    harness,
) -> None:
    """A configuration without providers leaves no `.terraform/`; one that gains a module
    needs `init` again, though `.terraform/` exists by then."""
    d = harness.root / "terraform" / "grows"
    d.mkdir(parents=True)
    (d / "main.tf").write_text('output "a" { value = "a" }\n')
    spec = {"dir": "terraform/grows", "command": "apply"}
    first = await TF.run(spec, harness.ctx(name="first"))
    assert first.outcome == "succeeded", first.reason
    assert "terraform init" in harness.log_text("first")
    again = await TF.run(spec, harness.ctx(name="again"))
    assert again.outcome == "succeeded", again.reason
    assert "terraform init" not in harness.log_text("again")
    (d / "m").mkdir()
    (d / "m" / "main.tf").write_text('output "b" { value = "b" }\n')
    (d / "main.tf").write_text('module "m" { source = "./m" }\n'
                               'output "a" { value = module.m.b }\n')
    grown = await TF.run(spec, harness.ctx(name="grown"))
    assert grown.outcome == "succeeded", grown.reason
    assert "terraform init" in harness.log_text("grown")
    assert grown.outputs["outputs"] == {"a": "b"}


async def test_two_runs_of_one_dir_started_together_say_that_one_waits(harness, tfdir: Path) -> None:
    """They took turns, but the second said nothing of its wait when both started at once
    (the first had not taken the turn yet when the second looked)."""
    spec = {"dir": "terraform/scaling", "command": "apply", "vars": {"replicas": "2"}}
    first, second = await asyncio.gather(TF.run(spec, harness.ctx(name="first")),
                                         TF.run(spec, harness.ctx(name="second")))
    assert first.outcome == second.outcome == "succeeded", harness.log_text("second")
    notes = [name for name in ("first", "second")
             if "waiting for another run of this dir and workspace" in harness.log_text(name)]
    assert notes == ["second"], notes


async def test_a_dir_swapped_for_a_link_out_of_root_after_its_check_is_not_entered(
        harness) -> None:
    """The dir is checked once, then entered by each of the run's processes (init, apply,
    output): one swapped for a link out of --root between them ran the rest of the run
    (apply, with the state and the outputs) in the link's target. Each enters the dir
    checked. The swap is made by the run's first process, a wrapper of the real CLI."""
    d = harness.root / "terraform" / "app"
    d.mkdir(parents=True)
    (d / "main.tf").write_text('output "cwd" { value = abspath(path.cwd) }\n')
    outside = harness.root.parent / "outside"
    outside.mkdir()
    (outside / "main.tf").write_text('output "cwd" { value = "outside" }\n')
    wrapper = harness.root / "tf-swap"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = init ] && [ ! -L "{d}" ]; then\n'
        f'  mv "{d}" "{d}-moved" && ln -s "{outside}" "{d}"\n'
        "fi\n"
        f'exec "{shutil.which("terraform")}" "$@"\n')
    wrapper.chmod(0o755)
    spec = {"dir": "terraform/app", "command": "apply", "binary": str(wrapper),
            "workspace": "ws1"}
    result = await TF.run(spec, harness.ctx())
    assert (d).is_symlink(), "the wrapper swapped the dir"
    assert result.outcome == "succeeded", harness.log_text()
    assert result.outputs["outputs"] == {"cwd": str((harness.root / "terraform" /
                                                       "app-moved").resolve())}
    # Nothing of the run's there: not its state, nor what the server keeps of the dir (its
    # init stamp, the selected workspace it puts back).
    assert not (outside / "terraform.tfstate.d").exists()
    assert not (outside / ".terraform").exists()
    moved = harness.root / "terraform" / "app-moved"
    assert (moved / ".terraform" / "hookrunner-init").exists() or \
        any((moved / ".terraform").iterdir())
    assert not (moved / ".terraform" / "environment").exists()  # the default selected again
