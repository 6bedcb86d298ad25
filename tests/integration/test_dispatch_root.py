"""--root as the dispatcher sees it: resolved once when its path has no symlink, per run when
it has one, so a deploy that switches `current -> releases/N` is picked up by the next run.
Real SQLite store, real processes, the dispatcher in this process."""

from __future__ import annotations

import os
from pathlib import Path

from hookrunner.dispatch import Dispatcher
from hookrunner.metrics import Metrics
from hookrunner.settings import Settings
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.conftest import write_script
from tests.integration.test_run_logs import arrive, ended


async def run_script(tmp_path: Path, root: Path, switch: Path | None = None) -> list[str]:
    """Run `scripts/which.sh` under `root` twice, pointing the `switch` link (if any) at
    releases/2 in between; each run's log."""
    settings = Settings(data=tmp_path / "data", root=root, workers=1, node="n1", grace=1.0)
    store = SQLiteStore(settings.store_url)
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    logs = []
    try:
        for _ in range(2):
            run_id = await arrive(store, dispatcher, "scripts/which.sh")
            assert await ended(store, run_id) == "succeeded"
            logs.append(await store.get_log(run_id, 1) or "")
            if switch is not None:
                tmp = switch.with_name("next")
                tmp.symlink_to(tmp_path / "releases" / "2")
                os.replace(tmp, switch)
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()
    return logs


def releases(tmp_path: Path) -> None:
    for n in ("1", "2"):
        (tmp_path / "releases" / n / "scripts").mkdir(parents=True)
        write_script(tmp_path / "releases" / n, "which.sh", f"echo release {n}; pwd\n")


async def test_a_root_behind_a_symlink_follows_the_switch(tmp_path: Path) -> None:
    releases(tmp_path)
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "releases" / "1")
    first, second = await run_script(tmp_path, current, switch=current)
    assert f"release 1\n{tmp_path}/releases/1\n" in first
    assert f"release 2\n{tmp_path}/releases/2\n" in second


async def test_a_plain_root_runs_in_itself(tmp_path: Path) -> None:
    releases(tmp_path)
    root = tmp_path / "releases" / "1"
    for log in await run_script(tmp_path, root):
        assert f"release 1\n{root}\n" in log
