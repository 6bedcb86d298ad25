"""A real RunContext (FileLog in tmp_path, base environment, root and work dirs) for runners."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hookrunner.actions.base import RunContext
from hookrunner.actions.environment import base_env
from hookrunner.actions.logfile import FileLog


@dataclass
class Harness:
    tmp: Path
    root: Path
    logs: list[FileLog] = field(default_factory=list)

    def ctx(
        self,
        *,
        timeout: float | None = 30.0,
        cap: int = 1024 * 1024,
        raw_body: bytes = b"",
        payload: Any = None,
        pass_env: tuple[str, ...] = (),
        name: str = "run",
    ) -> RunContext:
        log = FileLog(self.tmp / f"{name}.log", cap)
        self.logs.append(log)
        work = self.tmp / f"{name}.work"
        work.mkdir(exist_ok=True)
        ids = {
            "run_id": name,
            "delivery_id": "d1",
            "hook": "h",
            "rule": "r",
            "attempt": 1,
            "node": "test",
        }
        return RunContext(
            run_id=name,
            delivery_id="d1",
            hook="h",
            rule="r",
            attempt=1,
            node="test",
            root=self.root,
            work_dir=work,
            env=base_env(os.environ, pass_env, ids),
            timeout=timeout,
            cancel=asyncio.Event(),
            log=log,
            raw_body=raw_body,
            payload=payload,
        )

    def script(self, relpath: str, body: str) -> Path:
        """An executable /bin/sh script under root."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return path

    def log_text(self, name: str = "run") -> str:
        return (self.tmp / f"{name}.log").read_text()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    root = tmp_path / "root"
    root.mkdir()
    h = Harness(tmp=tmp_path, root=root)
    yield h
    for log in h.logs:
        log.close()


@pytest.fixture(params=["posix_spawn", "popen"])
def starter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way a process is started: glibc's posix_spawn on a thread, and the Popen fallback
    used where glibc lacks it."""
    from hookrunner.actions import spawn

    if request.param == "posix_spawn" and not spawn.AVAILABLE:
        pytest.skip("this libc has no posix_spawn_file_actions_addclosefrom_np")
    monkeypatch.setattr(spawn, "AVAILABLE", request.param == "posix_spawn")
    return str(request.param)
