"""`prune_run_dirs`: the per-run directories retention removes, counted only once gone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hookrunner.retention import prune_interval, prune_run_dirs

OLD = time.time() - 7200


def _run_dir(parent: Path, name: str, mtime: float) -> Path:
    d = parent / name
    d.mkdir(parents=True)
    (d / "1.log").write_text("x")
    for p in (d / "1.log", d):
        os.utime(p, (mtime, mtime))
    return d


def test_old_dirs_go_new_ones_kept_ones_and_links_stay(tmp_path: Path) -> None:
    logs, work = tmp_path / "logs", tmp_path / "work"
    old = _run_dir(logs, "run_old", OLD)
    new = _run_dir(logs, "run_new", time.time())
    running = _run_dir(work, "run_busy", OLD)
    target = _run_dir(tmp_path / "elsewhere", "t", OLD)
    (logs / "run_link").symlink_to(target)  # never followed out of the data dir
    removed, problems = prune_run_dirs([logs, work, tmp_path / "missing"], time.time() - 3600,
                                       frozenset({"run_busy"}))
    assert (removed, problems) == (1, [])
    assert not old.exists() and new.exists() and running.exists() and target.exists()


def test_only_run_directories_are_pruned(tmp_path: Path) -> None:
    """A directory no run id names (an operator's notes, another tool's) is left alone."""
    logs = tmp_path / "logs"
    others = [_run_dir(logs, name, OLD) for name in ("notarun", "ünïcode", "runs-backup")]
    _run_dir(logs, "run_old", OLD)
    assert prune_run_dirs([logs], time.time() - 3600) == (1, [])
    assert all(d.exists() for d in others)


def test_a_parent_that_is_not_a_directory_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("")
    _run_dir(tmp_path / "work", "run_old", OLD)
    assert prune_run_dirs([tmp_path / "logs", tmp_path / "work"], time.time()) == (1, [])


@pytest.mark.parametrize(("keep", "every"), [
    (30 * 86400.0, 60.0),  # a minute at most
    (60.0, 30.0),  # twice per --keep
    (0.001, 1.0),  # a second at least: `--keep 1ms` pruned in a loop, most of an idle core
])
def test_prunes_are_twice_per_keep_within_a_second_and_a_minute(keep: float, every: float) -> None:
    assert prune_interval(keep) == every
