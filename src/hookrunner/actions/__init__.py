"""Action runners. Importing this package registers every kind in `RUNNERS`."""

from __future__ import annotations

from hookrunner.actions import ansible, http, shell, terraform
from hookrunner.actions.base import RUNNERS, RunContext, Runner, RunResult

__all__ = ["RUNNERS", "RunContext", "RunResult", "Runner", "ansible", "http", "shell", "terraform"]
