"""History retention (--keep): the store prunes rows; this prunes the per-run files.

Run logs live in `<data>/logs/<run>/` and work dirs in `<data>/work/<run>/`. A directory
untouched since before the cut-off goes once its run is no longer in the store: a run waiting
for its retry, or one of a delivery kept for another run's sake, keeps its files as its
delivery is kept whole.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

PRUNE_EVERY = 60.0  # seconds between prunes, at most
PRUNE_EVERY_MIN = 1.0  # and at least: a `--keep 1ms` pruned in a loop, most of an idle core


def prune_interval(keep: float) -> float:
    """Seconds between prunes: twice per `keep`, so nothing outlives it by more than half."""
    return max(PRUNE_EVERY_MIN, min(PRUNE_EVERY, keep / 2))


RUN_DIR_PREFIX = "run_"  # every run id's (ids.new_id("run")), since the first version


def prune_run_dirs(parents: list[Path], before: float, keep: frozenset[str] = frozenset(),
                   progress: Callable[[int], None] | None = None) -> tuple[int, list[str]]:
    """Remove run directories last modified before `before` (except `keep`): how many went,
    and what could not be done (each parent on its own: one it cannot list spares none).
    `progress` is told the count so far after each one."""
    stale, problems = stale_run_dirs(parents, before, keep)
    removed, failed = remove_run_dirs(stale, progress)
    return removed, problems + failed


def stale_run_dirs(parents: list[Path], before: float,
                   keep: frozenset[str] = frozenset()) -> tuple[list[Path], list[str]]:
    """The run directories last modified before `before`, except `keep` (their names), and
    what could not be read."""
    stale, problems = [], []
    for parent in parents:
        try:
            entries = list(parent.iterdir()) if parent.is_dir() else []
        except OSError as exc:
            problems.append(f"cannot list {parent}: {exc.strerror or exc}")
            continue
        for d in entries:
            if not d.name.startswith(RUN_DIR_PREFIX):
                continue  # no run's (`run_<id>`): an operator's, or another tool's, kept
            try:
                if d.name in keep or d.is_symlink() or not d.is_dir() or _newest_mtime(d) >= before:
                    continue
            except FileNotFoundError:
                continue  # gone meanwhile
            except OSError as exc:
                problems.append(f"cannot read {d}: {exc.strerror or exc}")
                continue
            stale.append(d)
    return stale, problems


def remove_run_dirs(dirs: list[Path], progress: Callable[[int], None] | None = None,
                    ) -> tuple[int, list[str]]:
    """Remove each directory: how many went (counted only once gone: an immutable file keeps
    it), and what would not go."""
    removed, problems = 0, []
    for d in dirs:
        failed = _remove(d)
        if failed:
            problems.append(f"cannot remove {d} ({failed})")
        else:
            removed += 1
            if progress is not None:
                progress(removed)
    return removed, problems


def _remove(d: Path) -> str:
    """Remove the tree; the first thing that would not go, and why ("" when all went)."""
    failed: list[str] = []

    def note(_f: Any, path: str, info: Any) -> None:
        if not isinstance(info[1], FileNotFoundError):  # gone meanwhile is gone
            failed.append(f"{path}: {info[1]}")

    shutil.rmtree(d, onerror=note)  # (3.11 has no onexc)
    return failed[0] if failed and d.exists() else ""


def _newest_mtime(d: Path) -> float:
    newest = d.stat().st_mtime
    for p in d.rglob("*"):
        with contextlib.suppress(OSError):
            newest = max(newest, p.lstat().st_mtime)
    return newest
