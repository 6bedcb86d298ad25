"""Which attempts this node has started, in a small append-only file in the data dir.

After a crash, the dispatcher tells the runs this node had claimed apart by it: one whose
action never started is queued again at once (it never ran), one that started is retried per
its rule or ends `failed (interrupted)`. Run logs told the same before they were deferred
(hookrunner.actions.logfile); this costs one append per attempt and no inode.

Lines are `<run id> <attempt>`, and `<run id> <attempt> end` once the attempt's end is
recorded; the file keeps only the attempts still running each time it outgrows COMPACT_AT
(rewritten, then renamed into place). It is written without fsync, as the logs were: it
survives the server's crash, not the machine's.

The next start stops the processes of the attempts that have no end line (a crash's, and on
PostgreSQL one another node took over): not those of attempts that ended, whose detached
processes (`setsid`: a service a script started, meant to outlive it) are left as a run that
ends leaves them. (An end line is read as nothing by a version before it: they stopped
every attempt's.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
from collections import Counter
from pathlib import Path

COMPACT_AT = 1024 * 1024  # bytes: ~35,000 attempts between rewrites
END = "end"  # the word of an attempt's end line
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def node_file(data: Path, prefix: str, node: str, suffix: str) -> Path:
    """One file per node name, so nodes sharing a data dir never read each other's."""
    return data / f"{prefix}-{_UNSAFE.sub('_', node)}{suffix}"


def marks_path(data: Path, node: str) -> Path:
    return node_file(data, "started", node, ".marks")


def read_marks(path: Path) -> set[tuple[str, int]]:
    """The attempts recorded as started in `path` (none if it does not exist). A line that
    is not whole (no newline yet) or does not parse is skipped."""
    return read_all(path)[0]


def read_all(path: Path) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """The attempts started, and of them those with more starts than ends: an attempt queued
    again under its number (its process could not start) may start again before the first
    try's end line is written."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return set(), set()
    started: set[tuple[str, int]] = set()
    open_: Counter[tuple[str, int]] = Counter()
    for line in text.split("\n")[:-1]:
        run_id, _, rest = line.partition(" ")
        attempt, _, word = rest.partition(" ")
        if not (run_id and attempt.isdigit()) or word not in ("", END):
            continue
        mark = (run_id, int(attempt))
        if word == END:
            open_[mark] -= 1
        else:
            started.add(mark)
            open_[mark] += 1
    return started, {mark for mark, n in open_.items() if n > 0}


class StartMarks:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.existed = path.exists()  # a version that keeps marks ran on this data dir
        # From before this process: the crash's evidence; and of those, the attempts whose
        # end was not recorded (their processes are the ones to stop).
        self.recorded, self.unended = read_all(path)
        self._live: Counter[tuple[str, int]] = Counter()  # starts less ends, per attempt
        self._fd = -1
        self._size = 0
        # Marks are written by the threads that start processes, just before each start
        # (hookrunner.actions.process), ends by the event loop.
        self._lock = threading.RLock()

    def open(self) -> None:
        """Start a fresh file (call once what `recorded` says has been acted on)."""
        with self._lock:
            self._rewrite()

    def mark(self, run_id: str, attempt: int) -> None:
        """Record that `attempt` of `run_id` starts now. OSError if it cannot be written."""
        with self._lock:
            self._append(f"{run_id} {attempt}\n")
            self._live[(run_id, attempt)] += 1
            if self._size > COMPACT_AT:
                with contextlib.suppress(OSError):  # the old file goes on growing meanwhile
                    self._rewrite()

    def probe(self) -> None:
        """Whether a mark can be written now: OSError (ENOSPC) if not. An empty line, which
        read_marks skips."""
        with self._lock:
            if os.write(self._fd, b"\n") != 1:
                raise OSError(errno.ENOSPC, "start marks full")
            self._size += 1

    def done(self, run_id: str, attempt: int) -> None:
        """Record that the attempt's end is recorded (best effort: without it, the next start
        stops what the attempt left running, as it did before end lines)."""
        mark = (run_id, attempt)
        with self._lock:
            if mark not in self._live:  # it never started (a template error, a refusal)
                return
            self._live[mark] -= 1
            if self._live[mark] <= 0:
                del self._live[mark]
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    self._append(f"{run_id} {attempt} {END}\n")

    def _append(self, text: str) -> None:
        """One line, whole or not at all (OSError then)."""
        line = text.encode()
        try:
            if os.write(self._fd, line) != len(line):  # O_APPEND: one write, never interleaved
                raise OSError(errno.ENOSPC, "start mark cut short")
        except OSError:
            # A full disk takes part of a line: cut back, or the next write (a probe's
            # newline, the next mark) would complete it into an attempt that never started.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _rewrite(self) -> None:
        """Replace the file with the live marks (the caller holds the lock). Written through
        the descriptor kept afterwards, then renamed: it either switches over whole or not
        at all."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = "".join(f"{run_id} {attempt}\n" * n
                       for (run_id, attempt), n in sorted(self._live.items())).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "start marks cut short")
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            raise
        self.close()
        self._fd, self._size = fd, len(data)
