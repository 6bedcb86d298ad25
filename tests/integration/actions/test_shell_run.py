"""The shell runner end to end: literal arguments, the action's environment, stdin payload."""

from __future__ import annotations

import os

import pytest

from hookrunner.actions import RUNNERS
from hookrunner.errors import ActionError

SHELL = RUNNERS["shell"]


async def test_hostile_values_arrive_as_literal_single_arguments(harness) -> None:
    harness.script("scripts/args.sh", 'for a in "$@"; do printf "[%s]\\n" "$a"; done\n')
    spec = SHELL.normalize({"command": "scripts/args.sh {{ v }} -x"})
    rendered = {"argv": [spec["argv"][0], "; rm -rf / $(id) `id`\nnext", "-x"]}
    ctx = harness.ctx()
    result = await SHELL.run(rendered, ctx)
    assert result.outcome == "succeeded"
    assert harness.log_text() == "[; rm -rf / $(id) `id`\nnext]\n[-x]\n"


async def test_environment_is_the_base_plus_rule_env_and_no_server_secret(
    harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "s3cret")
    ctx = harness.ctx()
    result = await SHELL.run({"argv": ["env"], "env": {"DEPLOY_REF": "main"}}, ctx)
    assert result.outcome == "succeeded"
    lines = set(harness.log_text().splitlines())
    assert {"DEPLOY_REF=main", "HOOKRUNNER_RUN_ID=run", "HOOKRUNNER_ATTEMPT=1"} <= lines
    assert not any(line.startswith("GITHUB_WEBHOOK_SECRET") for line in lines)


async def test_stdin_payload_is_the_raw_body(harness) -> None:
    body = b'{"ref": "refs/heads/main",  "odd spacing": true}\n'
    ctx = harness.ctx(raw_body=body)
    result = await SHELL.run({"argv": ["cat"], "stdin": "payload"}, ctx)
    assert result.outcome == "succeeded"
    assert (harness.tmp / "run.log").read_bytes() == body


async def test_cwd_under_root(harness) -> None:
    (harness.root / "work").mkdir()
    ctx = harness.ctx()
    assert (await SHELL.run({"argv": ["pwd"], "cwd": "work"}, ctx)).outcome == "succeeded"
    assert harness.log_text().strip() == os.path.realpath(harness.root / "work")


async def test_path_outside_root_is_an_action_error(harness) -> None:
    with pytest.raises(ActionError):
        await SHELL.run({"argv": ["../../bin/sh"]}, harness.ctx())


async def test_missing_program_fails_with_a_reason(harness) -> None:
    result = await SHELL.run({"argv": ["scripts/missing.sh"]}, harness.ctx())
    assert result.outcome == "failed"
    assert result.reason.startswith("executable not found:")


@pytest.mark.parametrize(("rendered", "why"), [
    ({"argv": ["echo", "a\0b"]}, "argument 1 of the command contains a NUL byte"),
    ({"argv": ["echo"], "env": {"X": "a\0b"}}, "environment variable X contains a NUL byte"),
])
async def test_a_nul_byte_a_template_made_is_a_clear_error(harness, rendered, why) -> None:
    """A template can render one (`'%c' % 0`); no process can take it."""
    with pytest.raises(ActionError, match=why):
        await SHELL.run(rendered, harness.ctx())
