"""What hookrunner keeps under --data (payloads in the database, run logs, the admin token) is
for its owner alone: directories it creates are 0700, files 0600.

Only what hookrunner creates: a directory the operator made is left as it is (the server
warns when others can read it), and nothing is chmod-ed behind anyone's back. Modes are
given at creation (mkdir/open), never set by a umask, which would reach the actions too.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> None:
    """`mkdir -p path`, each directory it creates being 0700."""
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            d.mkdir(mode=PRIVATE_DIR)


def private_file(path: Path) -> None:
    """Create `path` empty and 0600 unless it exists (e.g. before SQLite opens it: its -wal
    and -shm files take the database file's mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE))


def open_to_others(path: Path) -> int | None:
    """The permission bits of `path` when its group or others may read or enter it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None
