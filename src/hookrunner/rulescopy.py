"""A copy of the rules files the main process last loaded, for `--http-workers`.

Every process loads the rules from the files. A reload that fails keeps the live rules in
each process, but an HTTP worker started after it (one replacing a worker that died) has no
live rules yet: from the broken files it would serve none, and answer 404 while the others
answer 202. It loads this copy instead: the rules the main process serves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

Stat = tuple[str, int, float, int]  # (path, inode, mtime, size) as the reload saw each file


def save(rules_dir: Path, loaded: Sequence[Stat], dest: Path,
         stat: Callable[[Path], Stat | None]) -> bool:
    """Copy the files of a load that succeeded into `dest` (replacing the last copy), unless
    one changed since it was read: then a reload follows, and its copy. Whether it did."""
    tmp = dest.with_name(dest.name + ".new")
    old = dest.with_name(dest.name + ".old")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        for seen in loaded:
            path = Path(seen[0])
            data = path.read_bytes()
            if stat(path) != seen:
                return False
            target = tmp / os.path.relpath(path, rules_dir)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.write_bytes(data)
        shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        return True
    except OSError:
        return False  # a worker started later loads the files themselves, as before
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
