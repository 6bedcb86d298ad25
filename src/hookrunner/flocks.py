"""A server's exclusive flock on a lock file, and how others tell it is held.

The kernel releases an flock when its process dies, so a crash never leaves one stale. It
guards what one server at a time may use: an SQLite database (its `.lock` file next to it)
and, whichever the store, a --data directory (`node.lock`: run logs, work dirs and start
marks, which a second server would share by mistake and prune under the first)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
from pathlib import Path
from typing import IO

from hookrunner.private import PRIVATE_FILE

TRIES, TRY_EVERY = 5, 0.05  # take(): a command's instant look (held) may hold it shared

# A server's exclusive lock: a command's instant shared look (below) is READ.
_FLOCK = re.compile(r"FLOCK\s+\S+\s+WRITE\s+\d+\s+([0-9a-f]+):([0-9a-f]+):(\d+)")


def held(lock: Path) -> bool:
    """Whether a server holds `lock`, read from /proc/locks: trying the lock, even for an
    instant, could make a server starting then refuse to."""
    try:
        st = os.stat(lock)
    except OSError:
        return False
    try:
        locks = Path("/proc/locks").read_text()
    except OSError:  # not Linux, or a hardened /proc: the try below tells
        locks = ""
    for m in _FLOCK.finditer(locks):
        major, minor, inode = int(m[1], 16), int(m[2], 16), int(m[3])
        if (inode == st.st_ino and major == os.major(st.st_dev)
                and minor == os.minor(st.st_dev)):
            return True
    # Not listed: none, or one /proc/locks cannot show (another PID namespace, overlayfs's
    # other device number). Then an instant's try of the lock tells.
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def open_lock(lock: Path) -> IO[str]:
    """The lock file, made private if new (OSError when it cannot be opened)."""
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, PRIVATE_FILE)
    return os.fdopen(fd, "a")


async def take(file: IO[str]) -> bool:
    """Take the exclusive lock, tried for a moment; False when another server holds it."""
    for tried in range(1, TRIES + 1):
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if tried < TRIES:
                await asyncio.sleep(TRY_EVERY)
    return False
