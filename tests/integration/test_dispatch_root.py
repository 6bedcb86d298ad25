"""--root as the dispatcher sees it: resolved once when its path has no symlink (nor `..`),
per run otherwise, so a deploy that switches `current -> releases/N` is picked up by the
next run. Real SQLite store, real processes, the dispatcher in this process."""

from __future__ import annotations

import os
from pathlib import Path

from hookrunner.dispatch import Dispatcher
from hookrunner.metrics import Metrics
from hookrunner.settings import Settings
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.conftest import write_script
from tests.integration.test_run_logs import arrive, ended


async def run_script(tmp_path: Path, root: Path, switch: Path | None = None,
                     to: Path | None = None) -> tuple[Path | None, list[str]]:
    """Run `scripts/which.sh` under `root` twice, pointing the `switch` link (if any) at `to`
    (default releases/2) in between: the root the dispatcher fixed at start (None: per run),
    and each run's log."""
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
                tmp.symlink_to(to or tmp_path / "releases" / "2")
                os.replace(tmp, switch)
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()
    return dispatcher._fixed_root, logs


def releases(tmp_path: Path) -> Path:
    """Two releases whose script prints its number and the directory it runs in; their
    parent, resolved (the expected `pwd`s)."""
    for n in ("1", "2"):
        (tmp_path / "releases" / n / "scripts").mkdir(parents=True)
        write_script(tmp_path / "releases" / n, "which.sh", f"echo release {n}; pwd -P\n")
    return (tmp_path / "releases").resolve()


async def test_a_root_behind_a_symlink_follows_the_switch(tmp_path: Path) -> None:
    real = releases(tmp_path)
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "releases" / "1")
    fixed, (first, second) = await run_script(tmp_path, current, switch=current)
    assert fixed is None
    assert f"release 1\n{real}/1\n" in first
    assert f"release 2\n{real}/2\n" in second


async def test_a_root_with_dot_dot_after_a_symlink_is_resolved_per_run(tmp_path: Path) -> None:
    """`x/../1` with `x` a symlink: the kernel takes `..` after following `x`, so where the
    root is moves with `x` (a lexical `..` would have pinned releases/1)."""
    real = releases(tmp_path)
    other = tmp_path / "other"
    (other / "2").mkdir(parents=True)
    (other / "1" / "scripts").mkdir(parents=True)
    write_script(other / "1", "which.sh", "echo other 1; pwd -P\n")
    link = tmp_path / "releases" / "x"
    link.symlink_to(tmp_path / "releases" / "2")
    fixed, (first, second) = await run_script(tmp_path, link / ".." / "1", switch=link,
                                              to=other / "2")
    assert fixed is None
    assert f"release 1\n{real}/1\n" in first
    assert f"other 1\n{other.resolve()}/1\n" in second


async def test_a_plain_root_is_resolved_once_and_runs_in_itself(tmp_path: Path) -> None:
    real = releases(tmp_path)
    root = real / "1"
    fixed, logs = await run_script(tmp_path, root)
    assert fixed == root
    for log in logs:
        assert f"release 1\n{root}\n" in log
