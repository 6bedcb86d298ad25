"""What `make run` runs with, read from the Makefile, so e2e tests use exactly the demo setup."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPORT = re.compile(r"^export (\w+) \?= (.*)$", re.M)
SERVE = re.compile(r"^\t\$\(BIN\)/hookrunner serve(.*)$", re.M)


def makefile_env() -> dict[str, str]:
    """The Makefile's `export NAME ?= value` demo settings."""
    return {name: value.strip() for name, value in EXPORT.findall((REPO / "Makefile").read_text())}


def makefile_serve_args() -> list[str]:
    """The flags `make run` passes to `hookrunner serve` (e.g. `--pass-env NOTIFY_URL`)."""
    match = SERVE.search((REPO / "Makefile").read_text())
    assert match, "Makefile: no `$(BIN)/hookrunner serve` line in the run target"
    return shlex.split(match.group(1))


def demo_environ(**overrides: str) -> dict[str, str]:
    """This process's environment with the Makefile's demo settings (and overrides) applied."""
    env = {**os.environ, **makefile_env(), **overrides}
    env.pop("TF_CLI_CONFIG_FILE", None)  # may name a missing file: a warning per terraform call
    return env


def hookrunner(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "hookrunner.cli", *args],
        cwd=cwd,
        env=env or demo_environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
