"""What in a playbook asks for input: ansible-runner gives the play a terminal and nothing
answers, so a run that reaches it waits until its timeout (1 h by default). `check` warns."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

PAUSE_MODULES = frozenset({"pause", "ansible.builtin.pause", "ansible.legacy.pause"})
TASK_LISTS = ("pre_tasks", "tasks", "post_tasks", "handlers")
BLOCK_LISTS = ("block", "rescue", "always")
MAX_BYTES = 1024 * 1024  # a playbook is read only this far


def prompts(playbook: Path, given: Collection[str]) -> list[str]:
    """Each prompt of the playbook's own plays, as `what (line N)`: a `vars_prompt` variable
    not in `given` (the rule's extravars: a variable given is not asked for), a `pause`
    without `seconds` or `minutes`. Included files and roles are not read; a playbook that
    cannot be read or parsed has none here (its runs say why)."""
    try:
        with playbook.open("rb") as f:
            text = f.read(MAX_BYTES)
        plays = yaml.compose(text, Loader=yaml.SafeLoader)  # (nodes: `!unsafe` needs no constructor)
    except (OSError, yaml.YAMLError, ValueError):
        return []
    found: list[str] = []
    for play in plays.value if isinstance(plays, yaml.SequenceNode) else []:
        if not isinstance(play, yaml.MappingNode):
            continue
        for key, value in play.value:
            if key.value == "vars_prompt" and isinstance(value, yaml.SequenceNode):
                for item in value.value:
                    name = _get(item, "name")
                    if isinstance(name, yaml.ScalarNode) and name.value not in given:
                        found.append(f"vars_prompt {name.value!r} (line {item.start_mark.line + 1})")
            elif key.value in TASK_LISTS:
                found += _pauses(value)
    return found


def _pauses(tasks: Any) -> list[str]:
    found: list[str] = []
    for task in tasks.value if isinstance(tasks, yaml.SequenceNode) else []:
        if not isinstance(task, yaml.MappingNode):
            continue
        for key, value in task.value:
            if key.value in BLOCK_LISTS:
                found += _pauses(value)
            elif key.value in PAUSE_MODULES and not _timed(value) and \
                    not _timed(_get(task, "args")):
                found.append(f"a pause without seconds or minutes (line {task.start_mark.line + 1})")
    return found


def _timed(args: Any) -> bool:
    """Whether a pause's arguments (a mapping, or `seconds=5` text) give it a time."""
    if isinstance(args, yaml.ScalarNode):
        return "seconds=" in args.value or "minutes=" in args.value
    return _get(args, "seconds") is not None or _get(args, "minutes") is not None


def _get(node: Any, name: str) -> Any:
    """The value node of `name` in a mapping node, or None."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == name:
                return value
    return None
