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
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hookrunner.verify.secrets import SecretUnavailable, read_secret_file

# (path, inode, mtime ns, ctime ns, size) as the reload saw each file
Stat = tuple[str, int, int, int, int]


ROOT = ".root"  # in a copy: the `{file:}` secrets under --root that its load read


def save(rules_dir: Path, loaded: Sequence[Stat], dest: Path,
         stat: Callable[[Path], Stat | None],
         secrets: Mapping[Path, Stat | None], root: Path | None,
         texts: Sequence[tuple[str, str]] = ()) -> bool:
    """Copy the files of a load that succeeded into a new version, and point the link `dest`
    at it (a worker reading the copy meanwhile keeps the version it opened: the one before
    is kept until the next copy). Skipped if a file changed since it was read: a reload
    follows, and its copy. Whether it copied. `texts`: the rules files' (path, text) as the
    live rules were loaded from them, written instead of what the files hold now (the live
    rules loaded again with rotated secrets while the files do not load: reload)."""
    if not loaded and not texts:  # nothing listed (or the listing failed): no copy of no rules
        return False
    version = dest.with_name(f"{dest.name}.{time.time_ns()}")
    try:
        version.mkdir(mode=0o700)
        for seen in loaded:
            path = Path(seen[0])
            data = path.read_bytes()
            if stat(path) != seen:
                shutil.rmtree(version, ignore_errors=True)
                return False
            target = version / os.path.relpath(path, rules_dir)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.write_bytes(data)
        for name, text in texts:
            target = version / os.path.relpath(name, rules_dir)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.write_text(text, encoding="utf-8")
        for path, read in secrets.items():  # as the load read them (else: skip the copy)
            if root is None or read is None or not _under(path, root):
                continue  # an absolute path elsewhere is read from where it is
            try:  # (as the load reads one: a FIFO hung the start, /dev/zero ate the memory)
                data = read_secret_file(path, "secret", str(path))
            except SecretUnavailable:  # not a secret the load took: the copy goes without
                continue
            if stat(path) != read:
                shutil.rmtree(version, ignore_errors=True)
                return False
            target = version / ROOT / os.path.relpath(path, root)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.write_bytes(data)
            target.chmod(0o600)
        link = dest.with_name(dest.name + ".link")
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(version.name)
        previous = os.readlink(dest) if dest.is_symlink() else None
        os.replace(link, dest)  # atomic: a worker sees the old version or the new one
    except OSError:
        shutil.rmtree(version, ignore_errors=True)
        return False  # a worker started later loads the files themselves, as before
    for old in dest.parent.glob(f"{dest.name}.*"):
        if old.name not in (version.name, previous, f"{dest.name}.link"):
            shutil.rmtree(old, ignore_errors=True)
    return True


def _under(path: Path, root: Path) -> bool:
    return not os.path.relpath(path, root).startswith("..")
