"""History retention (--keep): the store prunes rows; this prunes the per-run files.

Run logs live in `<data>/logs/<run>/` and work dirs in `<data>/work/<run>/`; a directory
untouched since before the cut-off belongs to a run that ended before it.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path


def prune_run_dirs(parents: list[Path], before: float, keep: frozenset[str] = frozenset()) -> int:
    """Remove run directories last modified before `before` (except `keep`); return how many."""
    removed = 0
    for parent in parents:
        if not parent.is_dir():
            continue
        for d in parent.iterdir():
            try:
                if d.name not in keep and d.is_dir() and _newest_mtime(d) < before:
                    shutil.rmtree(d, ignore_errors=True)
                    removed += 1
            except OSError:
                continue  # vanished or unreadable: try again next time
    return removed


def _newest_mtime(d: Path) -> float:
    newest = d.stat().st_mtime
    for p in d.rglob("*"):
        with contextlib.suppress(OSError):
            newest = max(newest, p.lstat().st_mtime)
    return newest
