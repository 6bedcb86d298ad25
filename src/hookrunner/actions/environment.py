"""The environment an action starts with: never the server's own (it holds the hooks' secrets)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

KEPT_NAMES = ("PATH", "HOME", "LANG", "TZ")
KEPT_PREFIXES = ("LC_",)
ID_PREFIX = "HOOKRUNNER_"
# The run identity every action sees, as `ids` keys: run_id -> HOOKRUNNER_RUN_ID, ...
ID_KEYS = ("run_id", "delivery_id", "hook", "rule", "attempt", "node")

# The interpreter's bin dir holds ansible-playbook (and ansible-runner needs it on PATH).
VENV_BIN = os.path.dirname(sys.executable)


def base_env(
    server_env: Mapping[str, str], pass_env: Sequence[str], ids: Mapping[str, Any]
) -> dict[str, str]:
    """PATH, HOME, LANG, LC_*, TZ, the `--pass-env` names, and HOOKRUNNER_<ID> for each id.

    `ids` keys are either the `ID_KEYS` (run_id, delivery_id, ...) or the full variable names
    (HOOKRUNNER_RUN_ID, ...); values are stringified.
    """
    env = {
        name: value
        for name, value in server_env.items()
        if name in KEPT_NAMES or name.startswith(KEPT_PREFIXES) or name in pass_env
    }
    env["PATH"] = with_path_entry(env.get("PATH") or os.defpath, VENV_BIN)
    for key, value in ids.items():
        if value is not None:
            env[key if key.startswith(ID_PREFIX) else ID_PREFIX + key.upper()] = str(value)
    return env


def with_path_entry(path: str, entry: str, *, first: bool = False) -> str:
    """`path` with `entry` moved to the end (or to the front if `first`), once. (Left where
    it was, a server started from an activated venv gave a play's `pip` and `python3` as
    the venv's, where the README says the machine's.)"""
    parts = [p for p in path.split(os.pathsep) if p and p != entry]
    return os.pathsep.join([entry, *parts] if first else [*parts, entry])
