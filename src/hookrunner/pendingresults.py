"""Results a stopping server could not record, kept in the data dir for its next start.

A stop that meets a store refusing writes (SQLite's lock held by another process, a
PostgreSQL that does not answer) gives up on recording the runs still ending after a few
tries. Their records stay `running`, and the next start took each for interrupted: a deploy
that had succeeded became `failed (interrupted)`, or ran again where its rule retries. The
way each ended is written here instead (one JSON line per attempt, fsynced), and the next
start records it as it was. A result kept before its `run.finished` line and metrics were
given (a stop while the store held back the reads that decide a retry) is marked
`"said": false`: the next start gives them, once it has recorded it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, NamedTuple

from hookrunner.private import private_dir
from hookrunner.startmarks import node_file
from hookrunner.store.base import Finish

_FIELDS = {f.name for f in dataclasses.fields(Finish)}


def pending_path(data: Path, node: str) -> Path:
    return node_file(data, "results", node, ".pending")


class Kept(NamedTuple):
    finish: Finish
    said: bool  # its run.finished line and metrics were given when it was kept


def keep(path: Path, finishes: list[Finish], unsaid: Collection[str] = (),
         make_dir: bool = False) -> None:
    """Append `finishes` durably, those of the runs in `unsaid` marked as not said yet.
    OSError if they cannot be written (a full disk). `make_dir`: make the data dir where it
    was deleted; not with SQLite, whose store went with it (a new dir holding only this file
    stood for the server that had run there), but with PostgreSQL, whose store still has
    the runs."""
    if not finishes:
        return
    text = "".join(_line(f, f.run_id not in unsaid) for f in finishes).encode()
    if make_dir:
        private_dir(path.parent)  # (0700, as every directory hookrunner makes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            # A full disk takes part of a line: cut back, or the next one appended (the next
            # stop's) would be joined to it, and both read as no result.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _line(finish: Finish, said: bool) -> str:
    fields = dataclasses.asdict(finish) | ({} if said else {"said": False})
    return json.dumps(fields, separators=(",", ":")) + "\n"


def read(path: Path) -> dict[tuple[str, int], Kept]:
    """The kept results by (run id, attempt); a line that does not parse (cut short by a
    crash mid-write) is skipped."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    found: dict[tuple[str, int], Kept] = {}
    for line in text.split("\n")[:-1]:
        with contextlib.suppress(ValueError, TypeError):
            fields: Any = json.loads(line)
            said = not isinstance(fields, dict) or fields.pop("said", True) is not False
            if isinstance(fields, dict) and set(fields) <= _FIELDS:
                finish = Finish(**fields)
                if isinstance(finish.attempt, int) and isinstance(finish.run_id, str):
                    found[(finish.run_id, finish.attempt)] = Kept(finish, said)
    return found
