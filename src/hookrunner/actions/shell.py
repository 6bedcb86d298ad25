"""Kind `shell`: one program with an argv list, never through a shell.

`command: "deploy.sh {{ payload.ref }}"` is split at load time, so a templated value is one
argument whatever it contains (`; rm -rf /`, `$(id)`, newlines, a leading `-`).
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hookrunner.actions import spec
from hookrunner.actions.base import RunContext, RunResult, register
from hookrunner.actions.environment import ID_KEYS, ID_PREFIX
from hookrunner.actions.paths import adds_within, confine, pinned_dir, real, stays_in, written_dir
from hookrunner.actions.process import check_strings, run_process
from hookrunner.actions.values import stringify
from hookrunner.errors import ActionError, ConfigError
from hookrunner.redact import PROGRAM_TEMPLATED

KIND = "shell"
KEYS = ("argv", "command", "env", "cwd", "stdin")
ID_NAMES = frozenset(ID_PREFIX + key.upper() for key in ID_KEYS)  # HOOKRUNNER_RUN_ID, ...
STDIN_SOURCES = ("payload",)

# Jinja2 markup is kept whole while splitting `command`: `{{ a }}` must not become 3 words.
# (The placeholders' own characters, where the command holds them, are kept the same way:
# left as they were, they read as a placeholder of a template that is not there.)
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|[\ue000\ue001]", re.DOTALL)
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


_BLOCK_TAG = re.compile(r"\{%[-+]?\s*(end)?(if|for|with|filter|raw|autoescape|call|macro|block|"
                        r"trans|set)\b(.*?)[-+]?%\}", re.DOTALL)
_RAW = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}.*?\{%[-+]?\s*endraw\s*[-+]?%\}", re.DOTALL)


def split_command(command: str) -> list[str]:
    """`shlex.split`, except that each `{{ ... }}` stays inside the word it appears in."""
    templates: list[str] = []

    def protect(match: re.Match[str]) -> str:
        templates.append(match.group(0))
        return f"\ue000{len(templates) - 1}\ue001"

    words = shlex.split(_TEMPLATE.sub(protect, command))
    words = [_PLACEHOLDER.sub(lambda m: templates[int(m.group(1))], word) for word in words]
    for word in words:
        # `{% if x %}yes{% else %}no way{% endif %}`: split at the space in it, each half
        # failed on its own, with errors naming an `argv` the rule does not have.
        count: dict[str, int] = {}
        for m in _BLOCK_TAG.finditer(_RAW.sub("", word)):
            if m.group(2) == "set" and not m.group(1) and "=" in m.group(3):
                continue  # `{% set x = 1 %}` is no block
            count[m.group(2)] = count.get(m.group(2), 0) + (-1 if m.group(1) else 1)
        if unbalanced := [tag for tag, n in count.items() if n]:
            raise ValueError(f"a {{% {unbalanced[0]} %}} block has a space in it, where the "
                             f"command is split into words ({word!r} is one): quote the "
                             "whole block, or write the command as `argv:`")
    return words


def normalize_shell(raw: Any) -> dict[str, Any]:
    spec_ = spec.check_mapping(raw, KIND)
    spec.check_keys(spec_, KIND, KEYS)
    if ("argv" in spec_) == ("command" in spec_):
        raise ConfigError("shell: exactly one of 'argv' or 'command' is required")
    out: dict[str, Any] = {}
    if "argv" in spec_:
        items = spec_["argv"]
        if not isinstance(items, list) or not items:
            raise ConfigError("shell.argv must be a non-empty list", path=("argv",))
        out["argv"] = [spec.scalar_str(item, ("argv", i), f"shell.argv[{i}]") for i, item in enumerate(items)]
    else:
        command = spec.required_str(spec_, "command", KIND)
        try:
            out["argv"] = split_command(command)
        except ValueError as exc:  # unbalanced quotes
            raise ConfigError(f"shell.command: {exc}", path=("command",)) from None
        if not out["argv"]:
            raise ConfigError("shell.command is empty", path=("command",))
    if templated_program(out["argv"][0]):
        # It must be a file under --root, and under the directory the rule writes before
        # its `{{` (build_invocation): that directory, `scripts/` (True: none, or a run
        # stored before the directory was kept).
        out[PROGRAM_TEMPLATED] = written_dir(out["argv"][0]) or True
    env = spec.str_map(spec_, "env", KIND, names=spec.ENV_NAME)
    if env is not None:
        for name in env:
            if name in ID_NAMES:
                # A run's processes are found by HOOKRUNNER_RUN_ID (cancel, timeout, crash
                # recovery): a rule, let alone a payload, must not set it.
                raise ConfigError(f"shell.env.{name}: the run's identity is hookrunner's own "
                                  f"({', '.join(sorted(ID_NAMES))})", path=("env", name))
        out["env"] = env
    cwd = spec.optional_str(spec_, "cwd", KIND)
    if cwd is not None:
        out["cwd"] = cwd
    if "stdin" in spec_:
        if spec_["stdin"] not in STDIN_SOURCES:
            raise ConfigError("shell.stdin must be 'payload'", path=("stdin",))
        out["stdin"] = spec_["stdin"]
    return out


def templated_program(program: str) -> bool:
    """Whether a value picks the program: a `{{ }}` in it (a `{% if %}` alone only chooses
    between programs the rule writes out)."""
    return "{{" in program


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    stdin: bool  # feed the raw body


def build_invocation(rendered: Mapping[str, Any], *, root: Path, base_env: Mapping[str, str]) -> Invocation:
    """The exact argv, cwd and environment for a rendered spec (touches the file system only
    to resolve paths). `root` is resolved already (by the dispatcher, once per run)."""
    items = rendered.get("argv")
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise ActionError("shell: argv must be a non-empty list")
    argv = [stringify(item) for item in items]
    env = dict(base_env)
    env.update({name: stringify(v) for name, v in (rendered.get("env") or {}).items()
                if name not in ID_NAMES})  # a spec stored before they were refused
    if rendered.get(PROGRAM_TEMPLATED) and ("/" not in argv[0] or (
            argv[0].startswith("/") and not real(Path(argv[0])).is_relative_to(root))):
        # `{{ payload.prog }}` of `touch` or `/usr/bin/touch` ran what the sender named.
        raise ActionError(f"shell: the program is templated, so it must name a file under "
                          f"--root (as scripts/{{{{ ... }}}}.sh does), not a program on PATH "
                          f"or a path outside it: {argv[0][:200]!r}")
    written = rendered.get(PROGRAM_TEMPLATED)
    if written is True and ".." in argv[0].split("/"):
        # `deploy-{{ payload.env }}.sh` (no directory before the `{{`) of `x/../cleanup`
        # ran `cleanup.sh`: the value may name where, but not by leaving and coming back.
        raise ActionError(f"shell: the program is templated, so its value may hold no '..': "
                          f"{argv[0][:200]!r}")
    if isinstance(written, str) and not adds_within(argv[0], written):
        # `scripts/{{ payload.name }}.sh` with `../uploads/x` ran any *.sh under --root.
        raise ActionError(f"shell: the program is templated after {written!r}, so it must "
                          f"stay in that directory, with no '..' in the value: "
                          f"{argv[0][:200]!r}")
    program, argv[0] = argv[0], resolve_program(argv[0], root=root, path=env.get("PATH", ""),
                                                as_written=not written)
    if isinstance(written, str):  # (resolved: a link in that directory may lead out of it;
        # an absolute program under --root is not resolved by resolve_program)
        stays_in(root, real(Path(argv[0]), program), written, program)
    # (A template that renders empty is refused by confine, not taken for --root itself.)
    given = rendered.get("cwd", root)
    cwd = confine(root, "" if given is None else stringify(given)) if "cwd" in rendered else root
    return Invocation(argv=argv, cwd=cwd, env=env, stdin=rendered.get("stdin") == "payload")


def resolve_program(program: str, *, root: Path, path: str, as_written: bool = False) -> str:
    """A name with a `/` is a file under --root (or an absolute path); a bare name is looked
    up on the action's PATH.

    `as_written`: a file under --root is started by its path as the rule writes it (joined to
    --root) once `confine` has checked where it leads, not by that target's path: a link
    `scripts/deploy-staging -> deploy.sh` that reads its `$0` (a multi-call tool) ran as
    `deploy.sh`. A templated program is started by its target, checked (a link swapped
    between the check and the start may not take a payload's choice elsewhere)."""
    if not program:
        raise ActionError("shell: the program name (argv[0]) is empty")
    if program.startswith("/"):
        return program  # explicit program, like a bare name on PATH; not data under root
    if "/" in program:
        if program.endswith("/"):  # (`Path` drops the slash: `x.sh/` ran x.sh)
            raise ActionError(f"shell: the program {program[:200]!r} ends with '/': it names "
                              "a directory, not a file to run")
        resolved = confine(root, program)
        return posixpath.join(root, program) if as_written else str(resolved)
    # Not found: keep the name, so the run fails with "executable not found: NAME".
    return shutil.which(program, path=path) or program


class ShellRunner:
    kind = KIND
    paths = (("cwd", ""),)  # (key, base under --root) of paths a rule names (rules.load)
    # Valid values of the keys it requires, for `check` to read on past a wrong one.
    stand_ins = {"argv": ["true"], "command": "true"}

    def normalize(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return normalize_shell(raw)

    def needs_delivery(self, rendered: Mapping[str, Any]) -> bool:
        return rendered.get("stdin") == "payload"

    def implicit_concurrency_key(self, rendered: Mapping[str, Any]) -> str | None:
        return None

    def refusal(self, rendered: Mapping[str, Any], root: Path) -> str | None:
        try:
            inv = build_invocation(rendered, root=root, base_env={"PATH": os.defpath})
            check_strings(inv.argv, inv.env)
        except ActionError as exc:
            return str(exc)
        return None

    async def run(self, rendered: Mapping[str, Any], ctx: RunContext) -> RunResult:
        inv = build_invocation(rendered, root=ctx.root, base_env=ctx.env)
        if "cwd" not in rendered:  # --root itself: no rule's path to swap
            return await run_process(inv.argv, ctx=ctx, cwd=inv.cwd, env=inv.env,
                                     stdin=ctx.raw_body if inv.stdin else None)
        with pinned_dir(ctx.root, inv.cwd) as cwd:
            result = await run_process(inv.argv, ctx=ctx, cwd=cwd, env=inv.env,
                                       stdin=ctx.raw_body if inv.stdin else None)
        # A start that failed names the directory as the rule does, not its descriptor.
        return replace(result, reason=result.reason.replace(cwd, str(inv.cwd)))


register(ShellRunner())
