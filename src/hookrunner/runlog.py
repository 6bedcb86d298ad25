"""Reading an ended attempt's log, for the API and the CLI alike."""

from __future__ import annotations

import asyncio
import codecs
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from hookrunner.store.base import Store

CHUNK = 65536


@dataclass(frozen=True)
class EndedLog:
    """Where an ended attempt's log is read from: `path`, its file, which holds all of a
    large log; else `text`, the record's copy (the file holds less, after a disk filled up
    while the run wrote it; another node's run; or there is no file: a run that ended
    within a second never had one)."""

    path: Path | None
    text: str = ""


def _size(path: Path) -> int | None:
    try:
        found = os.stat(path)
    except OSError:  # none, or unreadable now
        return None
    return found.st_size if stat.S_ISREG(found.st_mode) else None


async def locate(store: Store, path: Path, run_id: str, attempt: int) -> EndedLog:
    """Which copy to serve, decided on their sizes (neither is read here)."""
    stored = await store.log_size(run_id, attempt)
    if attempt:
        size = _size(path)
        # Both in bytes. The record's copy is the file's text less its NULs, with `�` (3
        # bytes) for an invalid byte: a whole file is at least as large unless it holds
        # invalid bytes, and then the record's copy, whole too, is served.
        if size is not None and (stored is None or size >= stored):
            return EndedLog(path)
    return EndedLog(None, await store.get_log(run_id, attempt) or "")


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:  # removed or unreadable since it was looked at
        return None


async def ended_log(store: Store, path: Path, run_id: str, attempt: int) -> str:
    """All of it at once (the CLI's `log`). Read off the event loop: a log may be megabytes."""
    where = await locate(store, path, run_id, attempt)
    if where.path is not None:
        text = await asyncio.to_thread(_read, where.path)
        if text is not None:
            return text
        return await store.get_log(run_id, attempt) or ""
    return where.text


async def ended_chunks(store: Store, path: Path, run_id: str, attempt: int) -> AsyncIterator[bytes]:
    """The same as UTF-8 pieces of at most 64 KiB read as they are sent (the API's answer),
    so a 100 MB log is not held whole, nor once per client."""
    where = await locate(store, path, run_id, attempt)
    try:
        f = open(where.path, "rb") if where.path is not None else None  # noqa: SIM115
    except OSError:  # removed since it was looked at (pruned): the record's copy
        f, where = None, EndedLog(None, await store.get_log(run_id, attempt) or "")
    if f is None:
        for start in range(0, len(where.text), CHUNK):
            yield where.text[start:start + CHUNK].encode()
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield decoder.decode(chunk).encode()
        if rest := decoder.decode(b"", final=True):
            yield rest.encode()
