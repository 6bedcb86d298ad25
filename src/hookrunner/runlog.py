"""Reading an ended attempt's log, for the API and the CLI alike."""

from __future__ import annotations

import asyncio
import codecs
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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
    """Which copy to serve, decided on their sizes (neither is read here). The record's copy
    is the file's text less its NULs, with one `�` per invalid byte: a whole file has at
    least as many bytes as the record's copy has characters, and one a full disk cut short
    (nearly always) fewer."""
    stored = await store.log_length(run_id, attempt)
    size = _size(path) if attempt else None
    if size is not None and (stored is None or size >= stored):
        return EndedLog(path)
    text = await store.get_log(run_id, attempt) or ""
    if size is not None and not text.startswith(await asyncio.to_thread(_head, path)):
        # The record is no copy of this file: the note of a node that took the attempt
        # over from this one (its output, on this node only, was shorter than the note).
        return EndedLog(path)
    return EndedLog(None, text)


def _head(path: Path) -> str:
    """The file's first characters as the record's copy has them (see locate)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return ""
    text = head.decode(errors="replace").replace("\x00", "")
    # (A character cut at the 256th byte would differ from the record's: left out.)
    return text.rstrip("\ufffd")[:-1] if len(head) == 256 else text


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


async def opened(store: Store, path: Path, run_id: str, attempt: int) -> tuple[EndedLog, IO[bytes] | None]:
    """The copy to send and, for the file, the file opened: everything that may fail on the
    store is done here, before an answer's status is sent."""
    where = await locate(store, path, run_id, attempt)
    if where.path is None:
        return where, None
    try:
        return where, open(where.path, "rb")  # (closed by `chunks`)
    except OSError:  # removed since it was looked at (pruned): the record's copy
        return EndedLog(None, await store.get_log(run_id, attempt) or ""), None


async def chunks(where: EndedLog, f: IO[bytes] | None) -> AsyncIterator[bytes]:
    """`opened`'s copy as UTF-8 pieces of a 64 KiB read each (the API's answer), so a 100 MB
    file is not held whole, nor once per client; the file is closed at the end or when the
    client leaves."""
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
