"""Reading an ended attempt's log, for the API and the CLI alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hookrunner.store.base import Store


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # none (an attempt that ended within a second), or unreadable now
        return None


async def ended_log(store: Store, path: Path, run_id: str, attempt: int) -> str:
    """The file at `path`, which holds all of a large log; the record's copy where the file
    holds less (a disk that filled up while the run wrote it, another node's run) or there is
    none (a run that ended within a second never had one). Read off the event loop: a log
    may be megabytes."""
    stored = await store.get_log(run_id, attempt)
    if attempt:
        text = await asyncio.to_thread(_read, path)
        if text is not None and (stored is None or len(text) >= len(stored)):
            return text
    return stored or ""
