"""The private temporary directory of a `--http-workers` server, and sweeping up those of
servers that were killed (SIGKILL, OOM) before they could remove their own.

A directory is in use while some process holds the flock on its `owner.lock`: the
supervisor takes it before anything else is made there, and its children inherit it, so a
directory stays while any process of its server lives. Only `hookrunner-*` directories of
this user with that file are looked at (one made by hand so would be taken for a server's).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "hookrunner-"
OWNER = "owner.lock"


def create() -> tuple[Path, tuple[int, int]]:
    """A new directory and the descriptors holding its locks (close them once it is
    removed): its `owner.lock`'s, and the directory's own. A /tmp cleaner (systemd-tmpfiles
    ages /tmp by 10 days on Fedora and RHEL) leaves a directory alone while a process holds
    a flock on it (tmpfiles.d(5)); it removed a long-running server's metrics files, shared
    lock and rules copy (/metrics answered 500)."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX))
    held = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Locked before it gets its name: a sweep never finds it unlocked.
        fd = os.open(path / (OWNER + ".new"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except BaseException:
        os.close(held)
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(path / (OWNER + ".new"), path / OWNER)
    except BaseException:
        os.close(fd)
        os.close(held)
        raise
    return path, (fd, held)


def sweep(parent: Path | None = None) -> list[Path]:
    """Remove the directories in `parent` (the temporary dir) left by servers that are gone;
    those removed."""
    parent = Path(parent or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = [e for e in parent.iterdir() if e.name.startswith(PREFIX)]
    except OSError:
        return removed
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.is_symlink() or entry.stat().st_uid != os.getuid():
                continue
            fd = os.open(entry / OWNER, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: in use
                shutil.rmtree(entry)
                removed.append(entry)
            finally:
                os.close(fd)
    return removed
