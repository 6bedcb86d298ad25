"""Fixtures that start real gateways on loopback ports with temp rules and data dirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Server

GITHUB_SECRET = "it's a secret to everybody"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A --root with a rules dir and a scripts dir."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "scripts").mkdir()
    return tmp_path


def write_script(root: Path, name: str, text: str) -> Path:
    path = root / "scripts" / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


@pytest.fixture
def make_server(project: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(rules: str, **kw: Any) -> Server:
        (project / "rules" / "rules.yaml").write_text(rules)
        env = {"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, **kw.pop("env", {})}
        server = Server(project / "rules", project / "data", project, env=env, **kw).start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()
